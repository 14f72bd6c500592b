//! `csipd check-config` run as a real process on real files.

use std::path::PathBuf;
use std::process::{Command, Output};

fn check_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_csipd"))
        .arg("check-config")
        .args(args)
        .output()
        .expect("run csipd")
}

/// Writes `text` to a file unique to this test under target/ and returns its path.
fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_cli");
    std::fs::create_dir_all(&dir).expect("create test dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path
}

/// Three mistakes in the text, and a certificate and key that are not there yet.
const THREE_MISTAKES: &str = "\
config csipd 'main'
	option log_level 'info'
config server 'utility'
	option dcap_url 'https://csip.example.com.au/dcap'
	option cert '/nonexistent/csipd/client.crt'
	option key '/nonexistent/csipd/client.key'
	option nmi 'QB00000000'
config limits 'fixed'
	option export_limit_w '5 kW'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '192.168.1.50'
config device 'inverter1'
	option role 'inverter'
	option transport 'rtu'
	option baud '9600'
	option unti_id '3'
config control 'site'
	option cycle_s '1'
";

#[test]
fn three_mistakes_give_three_located_messages_and_exit_2() {
    let path = write_config("three_mistakes", THREE_MISTAKES);
    let file = path.to_str().expect("utf-8 path");
    let out = check_config(&[file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "stdout:\n{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    // The missing files are reported in the same run as the text's mistakes (fixing
    // the text first must not uncover them only on the next run).
    assert_eq!(
        lines,
        [
            format!(
                "{file}:5: error: server cert '/nonexistent/csipd/client.crt': certificate \
                 /nonexistent/csipd/client.crt: No such file or directory (os error 2)"
            ),
            format!(
                "{file}:6: error: server key '/nonexistent/csipd/client.key': key \
                 /nonexistent/csipd/client.key: No such file or directory (os error 2)"
            ),
            format!(
                "{file}:9: error: option 'export_limit_w' must be a whole number of watts, \
                 got \"5 kW\""
            ),
            format!(
                "{file}:16: error: device 'inverter1' uses transport rtu but has no option \
                 'path' (the serial port, e.g. /dev/ttyUSB0)"
            ),
            format!(
                "{file}:18: warning: unknown option 'unti_id' in device section (ignored); \
                 did you mean 'unit_id'?"
            ),
            format!("{file}: 4 errors, 1 warning"),
        ]
    );
}

#[test]
fn the_shipped_default_file_passes() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/files/etc/config/csipd");
    let out = check_config(&[file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout:\n{stdout}");
    assert!(!stdout.contains("error"), "{stdout}");
    assert!(
        stdout.ends_with(&format!("{file}: ok (2 warnings)\n")),
        "{stdout}"
    );
}

#[test]
fn a_syntax_error_names_line_and_column() {
    let path = write_config("syntax", "config csipd 'main'\noption log_level \"info\n");
    let file = path.to_str().expect("utf-8 path");
    let out = check_config(&[file]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().next(),
        Some(
            format!(
                "{file}:2: error: unterminated double quote; expected a closing \" before the \
                 end of the file"
            )
            .as_str()
        )
    );
}

#[test]
fn a_missing_file_exits_2() {
    let out = check_config(&["/nonexistent/csipd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("/nonexistent/csipd: cannot read: "));
}

/// A key file that is no key and a CA bundle without certificates: each is an error
/// at its own option's line, reported beside an unrelated error in the text; a file
/// option whose value is already wrong (a relative path) is not reported twice.
#[test]
fn key_and_ca_problems_are_errors_at_their_own_lines() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_cli_files");
    std::fs::create_dir_all(&dir).unwrap();
    let key = csipd::pki::generate_p256_key().unwrap();
    let cert = csipd::pki::self_signed(&key, "dev", 365, std::time::SystemTime::now()).unwrap();
    std::fs::write(dir.join("device.pem"), cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("junk.pem"), "not a key\n").unwrap();
    let text = |key: &str| {
        format!(
            "config csipd 'main'\n\toption log_level 'verbose'\n\
             config server 'utility'\n\toption dcap_url 'https://127.0.0.1:8443/dcap'\n\
             \toption nmi 'QB00000000'\n\toption cert '{}'\n\toption key '{key}'\n\
             \toption ca '{}'\n",
            dir.join("device.pem").display(),
            dir.join("junk.pem").display(),
        )
    };
    let path = write_config(
        "files-bad",
        &text(&dir.join("junk.pem").display().to_string()),
    );
    let out = check_config(&[path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    let errors: Vec<&str> = stdout.lines().filter(|l| l.contains(": error: ")).collect();
    assert_eq!(errors.len(), 3, "{stdout}");
    assert!(
        errors[0].contains(":2: error: option 'log_level'"),
        "{stdout}"
    );
    assert!(
        errors[1].contains(":7: error: server key '") && errors[1].contains("not an unencrypted"),
        "{stdout}"
    );
    assert!(
        errors[2].contains(":8: error: server ca '") && errors[2].contains("no certificate"),
        "{stdout}"
    );

    let path = write_config("files-relative", &text("device.key"));
    let out = check_config(&[path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line7: Vec<&str> = stdout.lines().filter(|l| l.contains(":7: ")).collect();
    assert_eq!(line7.len(), 1, "{stdout}");
    assert!(line7[0].contains("must be an absolute path"), "{stdout}");
}

#[test]
fn extra_arguments_are_a_usage_error() {
    let out = check_config(&["a", "b"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("usage: csipd check-config"));
}

/// A config naming an expired certificate, and one whose key belongs to another
/// certificate: both are errors at the `cert` option's line; a good pair passes.
#[test]
fn certificate_problems_are_errors_at_the_cert_line() {
    use std::time::{Duration, SystemTime};
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("config_cli_cert");
    std::fs::create_dir_all(&dir).unwrap();
    let key = csipd::pki::generate_p256_key().unwrap();
    let other_key = csipd::pki::generate_p256_key().unwrap();
    csipd::pki::write_private_key(&dir.join("device.key"), &key).unwrap();
    csipd::pki::write_private_key(&dir.join("other.key"), &other_key).unwrap();
    let now = SystemTime::now();
    let month_ago = now - Duration::from_secs(30 * 86_400);
    let pem = |cert: openssl::x509::X509| cert.to_pem().unwrap();
    let expired = csipd::pki::self_signed(&key, "expired", 1, month_ago).unwrap();
    let valid = csipd::pki::self_signed(&key, "valid", 365, now).unwrap();
    std::fs::write(dir.join("expired.pem"), pem(expired)).unwrap();
    std::fs::write(dir.join("valid.pem"), pem(valid)).unwrap();

    let config_with = |cert: &str, key: &str| {
        format!(
            "config server 'utility'\n\toption dcap_url 'https://127.0.0.1:8443/dcap'\n\
             \toption nmi 'QB00000000'\n\toption cert '{}'\n\toption key '{}'\n",
            dir.join(cert).display(),
            dir.join(key).display()
        )
    };
    let expired_path = write_config("cert-expired", &config_with("expired.pem", "device.key"));
    let out = check_config(&[expired_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(&format!("{}:4: error:", expired_path.display()))
            && stdout.contains("expired"),
        "{stdout}"
    );

    let mismatch_path = write_config("cert-mismatch", &config_with("valid.pem", "other.key"));
    let out = check_config(&[mismatch_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(":4: error:") && stdout.contains("does not belong"),
        "{stdout}"
    );

    let good_path = write_config("cert-good", &config_with("valid.pem", "device.key"));
    let out = check_config(&[good_path.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `option utility_price_export` (CSIP-AUS v1.3 pricing drives the negative-price rule):
/// a bad value and a missing utility server are errors at the option's line.
#[test]
fn utility_price_export_is_checked_with_file_and_line() {
    let text = "\
config price 'feed_in'
	option enabled '1'
	option utility_price_export '1'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '192.168.1.50'
";
    let path = write_config("utility_price_export", text);
    let file = path.to_str().expect("utf-8 path");
    let out = check_config(&[file]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "stdout:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "{file}:3: error: option 'utility_price_export' takes the price from the \
             utility's 2030.5 server, but none is configured"
        )),
        "{stdout}"
    );
    let bad = write_config(
        "utility_price_export_bad",
        &text.replace(
            "utility_price_export '1'",
            "utility_price_export 'sometimes'",
        ),
    );
    let bad = bad.to_str().expect("utf-8 path");
    let stdout = String::from_utf8_lossy(&check_config(&[bad]).stdout).into_owned();
    assert!(
        stdout.contains(&format!(
            "{bad}:3: error: option 'utility_price_export' must be a boolean"
        )),
        "{stdout}"
    );
}
