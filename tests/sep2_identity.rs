//! LFDI/SFDI of a certificate generated here with the `openssl` command, compared with
//! `openssl x509 -outform DER | sha256sum` computed independently.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use csipd::sep2::{identity_from_pem, lfdi_from_der, lfdi_from_pem, sfdi};

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sep2-identity-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(cmd: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        out.status.success(),
        "`{cmd}` failed (is openssl installed? run `bash tests/setup.sh`): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn lfdi_matches_openssl_sha256_of_the_der_certificate() {
    let dir = work_dir();
    let key = dir.join("device.key");
    let cert = dir.join("device.pem");
    // A P-256 self-signed device certificate, as CSIP-AUS uses.
    run(&format!(
        "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
         -keyout {} -out {} -days 1 -subj /CN=csipd-test-device 2>/dev/null",
        key.display(),
        cert.display()
    ));
    let sha = run(&format!(
        "openssl x509 -in {} -outform DER | sha256sum",
        cert.display()
    ));
    let sha = String::from_utf8(sha).unwrap();
    let expected = sha[..40].to_ascii_uppercase();

    let pem = std::fs::read(&cert).unwrap();
    let lfdi = lfdi_from_pem(&pem).unwrap();
    assert_eq!(lfdi, expected);
    assert_eq!(lfdi.len(), 40);

    // The DER form gives the same LFDI.
    let der = run(&format!("openssl x509 -in {} -outform DER", cert.display()));
    assert_eq!(lfdi_from_der(&der).unwrap(), expected);

    // SFDI: first 9 hex digits → decimal, ×10, + check digit; computed here directly.
    let head = u64::from_str_radix(&expected[..9], 16).unwrap();
    let digit_sum: u64 = head.to_string().bytes().map(|b| u64::from(b - b'0')).sum();
    let want_sfdi = head * 10 + (10 - digit_sum % 10) % 10;
    assert_eq!(sfdi(&lfdi).unwrap(), want_sfdi);

    // A PEM holding the private key first and then the certificate still finds the
    // certificate; a key alone is an error, not an identity.
    let mut key_then_cert = std::fs::read(&key).unwrap();
    key_then_cert.extend_from_slice(&pem);
    let id = identity_from_pem(&key_then_cert).unwrap();
    assert_eq!((id.lfdi.as_str(), id.sfdi), (expected.as_str(), want_sfdi));
    let key_only = std::fs::read(&key).unwrap();
    assert!(lfdi_from_pem(&key_only).is_err());
}
