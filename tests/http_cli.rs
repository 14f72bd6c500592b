//! `csipd fetch` and `csipd cert` as an installer runs them: the built binary against
//! `openssl s_server` (CCM8 only, client certificate required) and on files.

#[path = "common/test_pki.rs"]
mod test_pki;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use test_pki::{SServer, TempDir, make_ca, make_leaf};

fn csipd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(args)
        .output()
        .expect("run csipd")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn fetch_over_ccm8_with_flags_and_with_the_config_file() {
    let dir = TempDir::new("cli-fetch");
    let ca = make_ca(dir.path(), "ca");
    let server = make_leaf(dir.path(), &ca, "server");
    let device = make_leaf(dir.path(), &ca, "device");
    let ca_path = ca.cert.to_str().unwrap();
    let s = SServer::start(
        &server,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-CCM8",
            "-Verify",
            "1",
            "-CAfile",
            ca_path,
            "-www",
        ],
    );
    let (cert, key) = (device.cert.to_str().unwrap(), device.key.to_str().unwrap());
    let out = csipd(&[
        "fetch",
        "/dcap",
        "--url",
        &s.url(),
        "--cert",
        cert,
        "--key",
        key,
        "--ca",
        ca_path,
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "connection: TLSv1.2 ECDHE-ECDSA-AES128-CCM8 (TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("status: 200"), "{stderr}");
    assert!(
        stdout.contains("Cipher is ECDHE-ECDSA-AES128-CCM8"),
        "{stdout}"
    );

    // Same through the UCI configuration.
    let config = dir.path().join("csipd.uci");
    std::fs::write(
        &config,
        format!(
            "config server 'utility'\n\toption dcap_url '{}/dcap'\n\toption cert '{cert}'\n\toption key '{key}'\n\toption ca '{ca_path}'\n",
            s.url()
        ),
    )
    .unwrap();
    let out = csipd(&["fetch", "/dcap", "--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("ECDHE-ECDSA-AES128-CCM8"));

    // Without the CA the server is not trusted: a clear error, exit 1.
    let out = csipd(&[
        "fetch",
        "/dcap",
        "--url",
        &s.url(),
        "--cert",
        cert,
        "--key",
        key,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("server certificate rejected"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cert_request_selfsigned_and_show() {
    let dir = TempDir::new("cli-cert");
    let key = dir.path().join("device.key");
    let csr = dir.path().join("device.csr");
    let (key_s, csr_s) = (key.to_str().unwrap(), csr.to_str().unwrap());
    let out = csipd(&[
        "cert",
        "request",
        "--key",
        key_s,
        "--csr",
        csr_s,
        "--cn",
        "NMI4102000001",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("new P-256 key, mode 0600"));
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // openssl agrees: a valid, self-consistent P-256 request with our CN.
    let check = Command::new("openssl")
        .args([
            "req", "-in", csr_s, "-noout", "-verify", "-subject", "-text",
        ])
        .output()
        .unwrap();
    let report = text(&check.stdout) + &text(&check.stderr);
    assert!(check.status.success(), "{report}");
    assert!(
        report.contains("CN = NMI4102000001") || report.contains("CN=NMI4102000001"),
        "{report}"
    );
    assert!(
        report.contains("prime256v1") || report.contains("P-256"),
        "{report}"
    );

    let cert = dir.path().join("lab.crt");
    let cert_s = cert.to_str().unwrap();
    let out = csipd(&[
        "cert",
        "selfsigned",
        "--key",
        key_s,
        "--cert",
        cert_s,
        "--cn",
        "lab",
        "--days",
        "5",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("lab servers only"));

    let out = csipd(&["cert", "show", "--cert", cert_s, "--key", key_s]);
    let shown = text(&out.stdout);
    assert!(out.status.success(), "{shown}");
    let lfdi = csipd::pki::lfdi_of_cert_file(&cert).unwrap();
    let sfdi = csipd::sep2::sfdi(&lfdi).unwrap();
    assert!(shown.contains(&format!("LFDI:        {lfdi}")), "{shown}");
    assert!(shown.contains(&format!("SFDI:        {sfdi}")), "{shown}");
    assert!(shown.contains("subject:     CN=lab"), "{shown}");
    assert!(shown.contains("key type:    EC P-256"), "{shown}");
    assert!(shown.contains("key matches: yes"), "{shown}");
    // The LFDI is SHA-256 over the DER, as `openssl x509 -fingerprint -sha256` shows it.
    let fp = Command::new("openssl")
        .args(["x509", "-in", cert_s, "-noout", "-fingerprint", "-sha256"])
        .output()
        .unwrap();
    let fingerprint: String = text(&fp.stdout)
        .split('=')
        .nth(1)
        .unwrap()
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    assert_eq!(&fingerprint[..40], lfdi);

    // Another key: mismatch reported, exit 1.
    let other = dir.path().join("other.key");
    let other_s = other.to_str().unwrap();
    assert!(
        csipd(&[
            "cert", "request", "--key", other_s, "--csr", csr_s, "--cn", "x"
        ])
        .status
        .success()
    );
    let out = csipd(&["cert", "show", "--cert", cert_s, "--key", other_s]);
    assert_eq!(out.status.code(), Some(1));
    let shown = text(&out.stdout);
    assert!(shown.contains("key matches: NO"), "{shown}");
    assert!(shown.contains("does not belong to certificate"), "{shown}");

    let out = csipd(&["cert", "show", "--cert", key_s]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("device.key: no certificate in the file"),
        "{stderr}"
    );
    assert!(!stderr.contains("usage:"), "{stderr}");
}
