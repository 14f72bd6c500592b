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
        r#"{"status":{},"events":{},"validate":{"sections":[]},"cert_info":{},"cert_csr":{},
            "cert_request":{"cn":"str"},"cert_install":{"cert":"str","ca":"str"}}"#,
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
    // One line naming the URL once, where it came from and what to check (LuCI shows it).
    let text = status["error"].as_str().unwrap_or("");
    assert!(
        text.contains(&format!(
            "at {url}/status (from $CSIPD_STATUS_URL): connection refused; is csipd running"
        )),
        "{status}"
    );
    assert_eq!(
        text.matches(url.trim_start_matches("http://")).count(),
        1,
        "{status}"
    );
    // Without the variable: the status_listen of the config file rpcd's plugin reads.
    let listen_dir = scratch("unreachable");
    let config = listen_dir.join("csipd");
    std::fs::write(
        &config,
        "config csipd 'main'\n\toption status_listen '127.0.0.1:1'\n",
    )
    .unwrap();
    let (code, status) = shell(
        WRAPPER,
        &format!(
            "echo '{{}}' | env -u CSIPD_STATUS_URL CSIPD_CONFIG={} \"$PLUGIN\" call status",
            config.display()
        ),
        "",
    );
    assert_eq!(code, 0);
    assert_eq!(
        status["error"].as_str().unwrap_or(""),
        format!(
            "cannot reach the csipd status server at http://127.0.0.1:1/status (option \
             status_listen in {}): connection refused; is csipd running (/etc/init.d/csipd \
             status; logread -e csipd)? A changed status_listen takes effect after \
             /etc/init.d/csipd reload.",
            config.display()
        ),
        "{status}"
    );
    let _ = std::fs::remove_dir_all(listen_dir);
    let _ = std::fs::remove_dir_all(dir);
}

/// A scratch directory for one test.
fn scratch(tag: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("rpcd-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `"$PLUGIN" call METHOD < args.json` with the config at `config`, as rpcd runs it.
fn call_with_file(
    dir: &std::path::Path,
    config: &std::path::Path,
    method: &str,
    args: &Value,
) -> Value {
    let args_path = dir.join(format!("{method}.json"));
    std::fs::write(&args_path, args.to_string()).unwrap();
    let script = format!(
        "CSIPD_CONFIG='{}' CSIPD_RELOAD_CMD='echo reloaded >> {}/reloads' \"$PLUGIN\" call {method} < '{}'",
        config.display(),
        dir.display(),
        args_path.display()
    );
    let (code, answer) = shell(WRAPPER, &script, "http://127.0.0.1:1");
    assert_eq!(code, 0, "{method}: {answer}");
    answer
}

#[test]
fn validate_checks_staged_changes_and_the_file_on_disk() {
    let dir = scratch("validate");
    let config = dir.join("csipd");
    std::fs::write(
        &config,
        "config control 'site'\n\toption cycle_s '1'\n\toption meter_stale_s '0.5'\n",
    )
    .unwrap();
    // LuCI's staged sections (uci.sections('csipd') after the form's parse).
    let staged = serde_json::json!({ "sections": [
        {".name": "main", ".type": "csipd", ".anonymous": false,
         "timezone": "Australia/Adelaide", "status_listen": "0.0.0.0:8080"},
        {".name": "feed_in", ".type": "price", ".anonymous": false, "max_age_s": "10"},
        {".name": "site", ".type": "control", ".anonymous": false, "meter_stale_s": "0.5"},
        {".name": "utility", ".type": "server", ".anonymous": false,
         "cert": dir.join("not-yet.crt").display().to_string()},
        {".name": "cfg0b1234", ".type": "tariff", ".anonymous": true,
         "start": "10:00", "end": "25:00", "export_limit_w": "800"},
    ]});
    let answer = call_with_file(&dir, &config, "validate", &staged);
    assert_eq!(answer["valid"], false, "{answer}");
    let on = |section: &str, option: &str| -> String {
        answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["section"] == section && e["option"] == option)
            .unwrap_or_else(|| panic!("no error on {section}.{option}: {answer}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(on("main", "status_listen").contains("status_allow_remote"));
    assert!(on("feed_in", "max_age_s").contains("between 60"));
    assert!(on("site", "meter_stale_s").contains("cycle_s"));
    assert!(on("utility", "cert").contains("does not exist yet"));
    assert!(
        on("cfg0b1234", "end").contains("end"),
        "anonymous sections keep LuCI's name"
    );
    assert!(
        !answer.to_string().contains("timezone"),
        "Australia/Adelaide is accepted: {answer}"
    );

    // Fixed, the same staged config is valid.
    let fixed = serde_json::json!({ "sections": [
        {".name": "main", ".type": "csipd", "timezone": "Australia/Adelaide",
         "status_listen": "0.0.0.0:8080", "status_allow_remote": "1"},
        {".name": "feed_in", ".type": "price", "max_age_s": "900"},
        {".name": "site", ".type": "control", "meter_stale_s": "10"},
    ]});
    let answer = call_with_file(&dir, &config, "validate", &fixed);
    assert_eq!(answer["valid"], true, "{answer}");

    // No sections: the file on disk, with its section and option named.
    let answer = call_with_file(&dir, &config, "validate", &serde_json::json!({}));
    assert_eq!(answer["valid"], false, "{answer}");
    assert_eq!(answer["checked"], config.display().to_string());
    assert_eq!(answer["errors"][0]["section"], "site", "{answer}");
    assert_eq!(answer["errors"][0]["option"], "meter_stale_s", "{answer}");
    assert_eq!(answer["errors"][0]["line"], 3, "{answer}");
}

#[test]
fn certificate_onboarding_from_request_to_installed_chain() {
    let dir = scratch("onboarding");
    let data = dir.join("etc-csipd");
    let config = dir.join("csipd");
    std::fs::write(
        &config,
        format!(
            "config csipd 'main'\n\toption data_dir '{}'\n\nconfig server 'utility'\n\toption dcap_url ''\n",
            data.display()
        ),
    )
    .unwrap();

    // Fresh install: nothing there yet, the next step is the key; paths are defaulted.
    let info = call_with_file(&dir, &config, "cert_info", &serde_json::json!({}));
    assert_eq!(info["step"], "make_key", "{info}");
    assert_eq!(
        info["key_path"],
        data.join("client.key").display().to_string()
    );
    assert_eq!(
        info["cert_path"],
        data.join("client.crt").display().to_string()
    );
    let none = call_with_file(&dir, &config, "cert_csr", &serde_json::json!({}));
    assert!(
        none["error"]
            .as_str()
            .unwrap()
            .contains("generate one first"),
        "{none}"
    );

    // Generate: key (0600) and CSR at the default paths, the key option written.
    let req = call_with_file(
        &dir,
        &config,
        "cert_request",
        &serde_json::json!({"cn": "site-0042"}),
    );
    assert_eq!(req["key_created"], true, "{req}");
    use std::os::unix::fs::PermissionsExt;
    let key_mode = std::fs::metadata(data.join("client.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!(
            "config server 'utility'\n\toption key '{}'",
            data.join("client.key").display()
        )),
        "{text}"
    );
    // Download: the same CSR, with a file name for the browser.
    let csr = call_with_file(&dir, &config, "cert_csr", &serde_json::json!({}));
    assert_eq!(csr["csr"], req["csr"]);
    assert_eq!(csr["file_name"], "client.csr");
    assert_eq!(csr["subject"], "CN=site-0042");
    let info = call_with_file(&dir, &config, "cert_info", &serde_json::json!({}));
    assert_eq!(info["step"], "install_certificate", "{info}");

    // The manufacturer step: `csipd cert sign` with a CA made by openssl.
    let (mica_key, mica) = openssl_ca(&dir, "Test MICA");
    let signed = dir.join("signed.pem");
    run_ok(Command::new(env!("CARGO_BIN_EXE_csipd")).args([
        "cert",
        "sign",
        "--ca-cert",
        mica.to_str().unwrap(),
        "--ca-key",
        mica_key.to_str().unwrap(),
        "--csr",
        data.join("client.csr").to_str().unwrap(),
        "--out",
        signed.to_str().unwrap(),
        "--days",
        "20",
    ]));
    // openssl agrees the device certificate chains to the MICA.
    let verified = run_ok(Command::new("openssl").args([
        "verify",
        "-CAfile",
        mica.to_str().unwrap(),
        signed.to_str().unwrap(),
    ]));
    assert!(verified.contains("OK"), "{verified}");

    // A certificate for another key is refused and nothing is written.
    let (other_key, other) = openssl_ca(&dir, "Other");
    let _ = other_key;
    let refused = call_with_file(
        &dir,
        &config,
        "cert_install",
        &serde_json::json!({"cert": std::fs::read_to_string(&other).unwrap(), "ca": ""}),
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or("")
            .contains("not issued for this router's key"),
        "{refused}"
    );
    assert!(!data.join("client.crt").exists());
    assert!(!dir.join("reloads").exists());

    // Upload the signed certificate with its chain and the utility's CA bundle.
    let (_, utility_ca) = openssl_ca(&dir, "Utility Root");
    let installed = call_with_file(
        &dir,
        &config,
        "cert_install",
        &serde_json::json!({
            "cert": std::fs::read_to_string(&signed).unwrap(),
            "ca": std::fs::read_to_string(&utility_ca).unwrap(),
        }),
    );
    assert_eq!(installed["step"], "done", "{installed}");
    assert_eq!(installed["reload"]["ok"], true, "{installed}");
    assert_eq!(
        std::fs::read_to_string(dir.join("reloads")).unwrap(),
        "reloaded\n"
    );
    let cert = &installed["certificate"];
    assert_eq!(cert["key_matches"], true);
    assert_eq!(cert["chain_ok"], true);
    assert_eq!(cert["chain"].as_array().unwrap().len(), 2, "{cert}");
    assert_eq!(cert["chain"][1]["subject"], "CN=Test MICA, O=csipd test");
    assert_eq!(
        cert["expires_soon"], true,
        "20 days left is inside the 30-day warning"
    );
    assert!(
        matches!(cert["days_left"].as_i64(), Some(19..=20)),
        "{cert}"
    );
    let shown = run_ok(Command::new(env!("CARGO_BIN_EXE_csipd")).args([
        "cert",
        "show",
        "--cert",
        data.join("client.crt").to_str().unwrap(),
    ]));
    assert!(
        shown.contains(cert["lfdi"].as_str().unwrap()),
        "LFDI as `cert show` prints it: {shown}"
    );
    assert_eq!(
        installed["ca"]["certs"][0]["subject"],
        "CN=Utility Root, O=csipd test"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!(
            "option cert '{}'",
            data.join("client.crt").display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "option ca '{}'",
            data.join("utility-ca.pem").display()
        )),
        "{text}"
    );
    // The config with the installed files passes the daemon's own checker.
    let check = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["check-config", config.to_str().unwrap()])
        .output()
        .unwrap();
    let check_text = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "{check_text}");
    assert!(
        check_text.contains("expires on"),
        "the expiry warning: {check_text}"
    );
}
