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

const THREE_MISTAKES: &str = "\
config csipd 'main'
	option log_level 'info'
config server 'utility'
	option dcap_url 'https://csip.example.com.au/dcap'
	option cert '/etc/csipd/client.crt'
	option key '/etc/csipd/client.key'
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
    assert_eq!(
        lines,
        [
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
            format!("{file}: 2 errors, 1 warning"),
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
