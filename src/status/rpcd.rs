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
        // TODO(lead, pki merge): answer from `pki` (the configured certificate's LFDI,
        // SFDI, subject, issuer, not-after). Until then say so instead of guessing.
        "cert_info" => error(
            "cert_info is not available yet: the certificate module (pki) is not part of \
             this build; the LFDI/SFDI of the running daemon are in `ubus call csipd status` \
             (utility.lfdi, utility.sfdi)",
        ),
        "cert_request" => match args.get("cn") {
            Some(Value::String(cn)) if !cn.trim().is_empty() => {
                // TODO(lead, pki merge): generate the key and CSR for `cn` with `pki` and
                // return {"csr": PEM, "key_path": ..., "lfdi": ..., "sfdi": ...}.
                error(format!(
                    "cert_request for '{cn}' is not available yet: the certificate module \
                     (pki) is not part of this build"
                ))
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
