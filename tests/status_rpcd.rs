//! The rpcd exec plugin run the way rpcd runs it: `PLUGIN list` and
//! `echo ARGS | PLUGIN call METHOD` from a shell, both through the shell wrapper in
//! files/usr/libexec/rpcd/csipd and through a symlink named .../rpcd/csipd to the binary,
//! against a running status server.

mod status_common;

use serde_json::Value;
use status_common::*;
use std::path::PathBuf;
use std::process::Command;

const WRAPPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/files/usr/libexec/rpcd/csipd");

/// Runs `sh -c SCRIPT` with $PLUGIN set; returns exit code and stdout parsed as JSON.
fn shell(plugin: &str, script: &str, status_url: &str) -> (i32, Value) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("PLUGIN", plugin)
        .env("CSIPD_BIN", env!("CARGO_BIN_EXE_csipd"))
        .env("CSIPD_STATUS_URL", status_url)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        stdout.trim_end().lines().count(),
        1,
        "exactly one line of JSON from {script}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}): {stdout}"));
    assert!(v.is_object(), "ubus needs an object: {stdout}");
    (out.status.code().unwrap_or(-1), v)
}

fn symlinked_plugin() -> (PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("csipd-rpcd-test-{}", std::process::id()));
    let rpcd = dir.join("usr/libexec/rpcd");
    std::fs::create_dir_all(&rpcd).unwrap();
    let link = rpcd.join("csipd");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_csipd"), &link).unwrap();
    (dir, link)
}

#[test]
fn plugin_lists_and_answers_status_through_wrapper_and_symlink() {
    let (server, _handle) = start_sample_server();
    let url = server.url();
    let (dir, link) = symlinked_plugin();
    let expected_list: Value = serde_json::from_str(
        r#"{"status":{},"events":{},"cert_info":{},"cert_request":{"cn":"str"}}"#,
    )
    .unwrap();

    for plugin in [WRAPPER.to_string(), link.display().to_string()] {
        let (code, list) = shell(&plugin, "\"$PLUGIN\" list", &url);
        assert_eq!(code, 0);
        assert_eq!(list, expected_list, "{plugin} list");

        let (code, status) = shell(&plugin, "echo '{}' | \"$PLUGIN\" call status", &url);
        assert_eq!(code, 0);
        assert_eq!(status["utility"]["state"], "polling", "{plugin}: {status}");
        assert_eq!(status["utility"]["lfdi"], LFDI);
        assert_eq!(status["limits"][0]["value_w"].as_f64(), Some(1500.0));
        assert_eq!(status["limits"][0]["source"]["mrid"], MRID);

        // rpcd may also call with nothing on stdin.
        let (code, events) = shell(&plugin, "\"$PLUGIN\" call events </dev/null", &url);
        assert_eq!(code, 0);
        assert_eq!(
            events["events"].as_array().map(Vec::len),
            Some(2),
            "{events}"
        );

        // The certificate methods read the UCI file (CSIPD_CONFIG here): a missing one is
        // an error that names it (the working path is tested in status_luci.rs).
        let (code, info) = shell(
            &plugin,
            "echo '{}' | CSIPD_CONFIG=/nonexistent/csipd \"$PLUGIN\" call cert_info",
            &url,
        );
        assert_eq!(code, 0);
        assert!(
            info["error"]
                .as_str()
                .unwrap_or("")
                .contains("/nonexistent/csipd"),
            "cert_info names the config it could not read: {info}"
        );
        let (_, csr) = shell(
            &plugin,
            "echo '{\"cn\":\"csipd-test\"}' | CSIPD_CONFIG=/nonexistent/csipd \"$PLUGIN\" call cert_request",
            &url,
        );
        assert!(
            csr["error"]
                .as_str()
                .unwrap_or("")
                .contains("/nonexistent/csipd"),
            "{csr}"
        );
        let (_, csr) = shell(&plugin, "echo '{}' | \"$PLUGIN\" call cert_request", &url);
        assert!(
            csr["error"].as_str().unwrap_or("").contains("argument cn"),
            "{csr}"
        );

        let (code, unknown) = shell(&plugin, "echo '{}' | \"$PLUGIN\" call reboot", &url);
        assert_eq!(code, 2);
        assert!(
            unknown["error"]
                .as_str()
                .unwrap_or("")
                .contains("unknown method 'reboot'")
        );
    }

    // Daemon not running: still one JSON object, saying so.
    drop(server);
    let (code, status) = shell(WRAPPER, "echo '{}' | \"$PLUGIN\" call status", &url);
    assert_eq!(code, 0);
    assert!(
        status["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot reach the csipd status server"),
        "{status}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
