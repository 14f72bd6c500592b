//! The rpcd exec plugin behind `ubus call csipd …`. rpcd runs
//! `/usr/libexec/rpcd/csipd list` once to learn the methods and
//! `/usr/libexec/rpcd/csipd call METHOD` (arguments as JSON on stdin) per call, and
//! expects exactly one JSON object on stdout. That file is a two-line shell wrapper
//! calling `csipd rpcd "$@"`; a symlink to the binary works too (see
//! [`is_plugin_path`]).

use super::{client, onboarding};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// The methods and their argument types, exactly as `list` prints them: rpcd takes each
/// argument's JSON type (`"str"` a string, `[]` an array) as the type ubus enforces.
pub const METHODS: &[(&str, &[(&str, ArgType)])] = &[
    ("status", &[]),
    ("events", &[]),
    ("validate", &[("sections", ArgType::Array)]),
    ("cert_info", &[]),
    ("cert_csr", &[]),
    ("cert_request", &[("cn", ArgType::Str)]),
    (
        "cert_install",
        &[("cert", ArgType::Str), ("ca", ArgType::Str)],
    ),
];

/// The type of a method argument in `list`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgType {
    /// A string (`"str"` in `list`).
    Str,
    /// A JSON array (`[]` in `list`).
    Array,
}

/// What `list` prints, e.g. `{"status":{},"validate":{"sections":[]},"cert_request":{"cn":"str"},...}`.
pub fn list() -> Value {
    let mut methods = serde_json::Map::new();
    for (name, args) in METHODS {
        let mut arg_types = serde_json::Map::new();
        for (arg, kind) in *args {
            let example = match kind {
                ArgType::Str => Value::String("str".into()),
                ArgType::Array => Value::Array(Vec::new()),
            };
            arg_types.insert((*arg).to_string(), example);
        }
        methods.insert((*name).to_string(), Value::Object(arg_types));
    }
    Value::Object(methods)
}

fn error(message: impl Into<String>) -> Value {
    json!({ "error": message.into() })
}

/// Answers `call METHOD` with `args_text` (stdin) against the status server at
/// `status_url`. Always one JSON object: failures are `{"error": "..."}` so LuCI can show
/// them. `None` for a method that does not exist.
pub fn call(method: &str, args_text: &str, status_url: &client::StatusUrl) -> Option<Value> {
    let args: Value = if args_text.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(args_text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Some(error("the arguments on stdin must be a JSON object")),
            Err(e) => return Some(error(format!("the arguments on stdin are not JSON: {e}"))),
        }
    };
    let config_path = config_path();
    // The certificate methods need the installed config (its paths); never guess paths
    // when it cannot be read.
    let config_text = || {
        std::fs::read_to_string(&config_path)
            .map_err(|e| format!("{config_path}: cannot read the csipd configuration: {e}"))
    };
    let answer = match method {
        "status" => client::get_json_at(status_url, "/status").unwrap_or_else(error),
        "events" => client::get_json_at(status_url, "/events").unwrap_or_else(error),
        "validate" => super::validate::validate(&args, &config_path, wall_clock()),
        "cert_info" => config_text()
            .map(|text| onboarding::cert_info(&text, wall_clock()))
            .unwrap_or_else(error),
        "cert_csr" => config_text()
            .and_then(|text| onboarding::cert_csr(&text).map_err(|e| e.0))
            .unwrap_or_else(error),
        "cert_request" => match args.get("cn") {
            Some(Value::String(cn)) if !cn.trim().is_empty() => config_text()
                .and_then(|_| {
                    onboarding::cert_request(Path::new(&config_path), cn.trim()).map_err(|e| e.0)
                })
                .unwrap_or_else(error),
            _ => error("cert_request needs the argument cn: a non-empty string"),
        },
        "cert_install" => {
            let text = |name: &str| args.get(name).and_then(Value::as_str);
            match config_text()
                .map_err(onboarding::OnboardingError)
                .and_then(|_| {
                    onboarding::cert_install(
                        Path::new(&config_path),
                        text("cert"),
                        text("ca"),
                        wall_clock(),
                    )
                }) {
                Ok(installed) => {
                    let reload = reload_csipd();
                    let text = config_text().unwrap_or_default();
                    let mut info = onboarding::cert_info(&text, wall_clock());
                    info["installed"] = json!(installed);
                    info["reload"] = reload;
                    info
                }
                Err(e) => error(e.0),
            }
        }
        _ => return None,
    };
    Some(match answer {
        Value::Object(_) => answer,
        // ubus can only carry an object at the top level.
        other => json!({ "result": other }),
    })
}

/// The wall clock, read where this edge of csipd reads it: `runtime`'s system clock.
fn wall_clock() -> std::time::SystemTime {
    let now = crate::runtime::clock::SystemClock::new().now();
    std::time::UNIX_EPOCH + std::time::Duration::from_millis(now.utc_ms.max(0) as u64)
}

/// Asks procd to reload csipd so a new certificate is used now: `/etc/init.d/csipd
/// reload` (which also starts csipd when it is not running), or `CSIPD_RELOAD_CMD`.
/// Answers `{"ok": bool, "message": ...}`; a failed reload does not undo the install.
fn reload_csipd() -> Value {
    let command =
        std::env::var("CSIPD_RELOAD_CMD").unwrap_or_else(|_| "/etc/init.d/csipd reload".into());
    match std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => json!({ "ok": true, "message": "csipd reloaded" }),
        Ok(out) => json!({
            "ok": false,
            "message": format!(
                "{command} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        }),
        Err(e) => json!({ "ok": false, "message": format!("cannot run {command}: {e}") }),
    }
}

/// The UCI file the certificate and validate methods read: `CSIPD_CONFIG`, else the
/// system one.
fn config_path() -> String {
    std::env::var("CSIPD_CONFIG").unwrap_or_else(|_| crate::config::DEFAULT_PATH.to_string())
}

/// True when the binary was started as the rpcd plugin itself, i.e. as
/// `/usr/libexec/rpcd/csipd` (a symlink to the binary).
pub fn is_plugin_path(argv0: &str) -> bool {
    let path = std::path::Path::new(argv0);
    path.file_name().is_some_and(|n| n == "csipd")
        && path
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "rpcd")
}

/// Entry point of `csipd rpcd list|call METHOD` (and of the plugin path).
pub fn rpcd_main(args: &[String]) -> ExitCode {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["list"] => {
            println!("{}", list());
            ExitCode::SUCCESS
        }
        ["call", method] => {
            let mut args_text = String::new();
            if let Err(e) = std::io::stdin().read_to_string(&mut args_text) {
                println!(
                    "{}",
                    error(format!("cannot read the arguments on stdin: {e}"))
                );
                return ExitCode::SUCCESS;
            }
            match call(method, &args_text, &client::locate(&config_path())) {
                Some(answer) => {
                    println!("{answer}");
                    ExitCode::SUCCESS
                }
                None => {
                    let known: Vec<&str> = METHODS.iter().map(|(n, _)| *n).collect();
                    println!(
                        "{}",
                        error(format!(
                            "unknown method '{method}'; csipd has {}",
                            known.join(", ")
                        ))
                    );
                    ExitCode::from(2)
                }
            }
        }
        _ => {
            eprintln!(
                "usage: csipd rpcd list | csipd rpcd call METHOD  (arguments as JSON on stdin)"
            );
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_the_documented_object() {
        let expected: Value = serde_json::from_str(
            r#"{"status":{},"events":{},"validate":{"sections":[]},"cert_info":{},
                "cert_csr":{},"cert_request":{"cn":"str"},"cert_install":{"cert":"str","ca":"str"}}"#,
        )
        .unwrap();
        assert_eq!(list(), expected);
    }

    #[test]
    fn plugin_path_detection() {
        assert!(is_plugin_path("/usr/libexec/rpcd/csipd"));
        assert!(!is_plugin_path("/usr/bin/csipd"));
        assert!(!is_plugin_path("csipd"));
    }

    #[test]
    fn bad_arguments_are_named() {
        let answer = call(
            "cert_request",
            "{}",
            &client::StatusUrl::from_option("http://127.0.0.1:1"),
        )
        .unwrap();
        assert!(answer["error"].as_str().unwrap().contains("argument cn"));
        let answer = call(
            "status",
            "[1]",
            &client::StatusUrl::from_option("http://127.0.0.1:1"),
        )
        .unwrap();
        assert!(answer["error"].as_str().unwrap().contains("JSON object"));
        assert!(
            call(
                "reboot",
                "",
                &client::StatusUrl::from_option("http://127.0.0.1:1")
            )
            .is_none()
        );
    }
}
