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
