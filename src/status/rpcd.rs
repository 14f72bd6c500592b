//! The rpcd exec plugin behind `ubus call csipd …`. rpcd runs
//! `/usr/libexec/rpcd/csipd list` once to learn the methods and
//! `/usr/libexec/rpcd/csipd call METHOD` (arguments as JSON on stdin) per call, and
//! expects exactly one JSON object on stdout. That file is a two-line shell wrapper
//! calling `csipd rpcd "$@"`; a symlink to the binary works too (see
//! [`is_plugin_path`]).

use super::client;
use serde_json::{Value, json};
use std::io::Read;
use std::process::ExitCode;

/// The methods and their argument types, exactly as `list` prints them.
pub const METHODS: &[(&str, &[(&str, &str)])] = &[
    ("status", &[]),
    ("events", &[]),
    ("cert_info", &[]),
    ("cert_request", &[("cn", "str")]),
];

/// What `list` prints: `{"status":{},"events":{},"cert_info":{},"cert_request":{"cn":"str"}}`.
pub fn list() -> Value {
    let mut methods = serde_json::Map::new();
    for (name, args) in METHODS {
        let mut arg_types = serde_json::Map::new();
        for (arg, kind) in *args {
            arg_types.insert((*arg).to_string(), Value::String((*kind).to_string()));
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
pub fn call(method: &str, args_text: &str, status_url: &str) -> Option<Value> {
    let args: Value = if args_text.trim().is_empty() {
        json!({})
    } else {
        match serde_json::from_str(args_text) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => return Some(error("the arguments on stdin must be a JSON object")),
            Err(e) => return Some(error(format!("the arguments on stdin are not JSON: {e}"))),
        }
    };
    let answer = match method {
        "status" => client::get_json(status_url, "/status").unwrap_or_else(error),
        "events" => client::get_json(status_url, "/events").unwrap_or_else(error),
        "cert_info" => cert_info().unwrap_or_else(error),
        "cert_request" => match args.get("cn") {
            Some(Value::String(cn)) if !cn.trim().is_empty() => {
                cert_request(cn.trim()).unwrap_or_else(error)
            }
            _ => error("cert_request needs the argument cn: a non-empty string"),
        },
        _ => return None,
    };
    Some(match answer {
        Value::Object(_) => answer,
        // ubus can only carry an object at the top level.
        other => json!({ "result": other }),
    })
}

/// The UCI file the certificate methods read: `CSIPD_CONFIG`, else the system one.
fn config_path() -> String {
    std::env::var("CSIPD_CONFIG").unwrap_or_else(|_| crate::config::DEFAULT_PATH.to_string())
}

fn load_server_config() -> Result<crate::config::ServerConfig, String> {
    let path = config_path();
    match crate::config::load(&path) {
        Ok((config, _warnings)) => Ok(config.server),
        Err(e) => Err(format!("cannot use {path}: {e}")),
    }
}

/// The identity the configured certificate gives: what the installer hands the utility.
fn cert_info() -> Result<Value, String> {
    let server = load_server_config()?;
    let cert_path = server
        .cert
        .ok_or_else(|| format!("{}: the server section has no cert option", config_path()))?;
    let cert =
        crate::pki::load_cert(std::path::Path::new(&cert_path)).map_err(|e| e.to_string())?;
    let summary = crate::pki::summarize(&cert).map_err(|e| e.to_string())?;
    let key_matches = server.key.as_ref().map(|key_path| {
        crate::pki::load_key(std::path::Path::new(key_path))
            .ok()
            .is_some_and(|key| crate::pki::key_matches(&cert, &key))
    });
    Ok(json!({
        "cert_path": cert_path,
        "lfdi": summary.lfdi,
        "sfdi": summary.sfdi,
        "subject": summary.subject,
        "issuer": summary.issuer,
        "not_before": summary.not_before,
        "not_after": summary.not_after,
        "not_after_unix": summary.not_after_unix,
        "key_type": summary.key_type,
        "key_matches": key_matches,
    }))
}

/// Makes (or reuses) the configured private key, mode 0600, and a CSR for `common_name`
/// written next to it; answers the CSR so LuCI can show it for the utility's portal.
fn cert_request(common_name: &str) -> Result<Value, String> {
    let server = load_server_config()?;
    let key_path = server
        .key
        .ok_or_else(|| format!("{}: the server section has no key option", config_path()))?;
    let key_path = std::path::PathBuf::from(key_path);
    let (key, created) = crate::pki::load_or_create_key(&key_path).map_err(|e| e.to_string())?;
    let csr = crate::pki::build_csr(&key, common_name).map_err(|e| e.to_string())?;
    let pem = csr.to_pem().map_err(|e| format!("CSR encoding: {e}"))?;
    let csr_path = key_path.with_extension("csr");
    std::fs::write(&csr_path, &pem)
        .map_err(|e| format!("cannot write {}: {e}", csr_path.display()))?;
    Ok(json!({
        "csr": String::from_utf8_lossy(&pem),
        "csr_path": csr_path.display().to_string(),
        "key_path": key_path.display().to_string(),
        "key_created": created,
    }))
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
            match call(method, &args_text, &client::default_url()) {
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
            r#"{"status":{},"events":{},"cert_info":{},"cert_request":{"cn":"str"}}"#,
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
        let answer = call("cert_request", "{}", "http://127.0.0.1:1").unwrap();
        assert!(answer["error"].as_str().unwrap().contains("argument cn"));
        let answer = call("status", "[1]", "http://127.0.0.1:1").unwrap();
        assert!(answer["error"].as_str().unwrap().contains("JSON object"));
        assert!(call("reboot", "", "http://127.0.0.1:1").is_none());
    }
}
