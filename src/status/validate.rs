//! `ubus call csipd validate`: the daemon's own configuration checker run on the
//! configuration as it would be after LuCI's Save & Apply, before anything is committed.
//!
//! LuCI's settings view sends the staged configuration as `uci.sections('csipd')` gives
//! it (the loaded file merged with the form's changes): a list of sections, each an
//! object with `.name`, `.type`, `.anonymous` and its options (a string, or a list of
//! strings). This module writes that back as UCI text, runs exactly what
//! `csipd check-config` runs on it (the typed checks, then the certificate and key
//! files the server section names), and answers every problem with the section and
//! option it concerns so the view can mark that field. With no `sections` it checks the
//! file on disk (what the running daemon would load on its next reload).

use serde_json::{Value, json};

/// Where a line of the generated UCI text came from: the section's LuCI name and the
/// option (`None` for the `config` line itself).
type LineOrigin = (String, Option<String>);

fn quote(text: &str) -> String {
    // UCI: single quotes take everything literally; a quote itself is '\''.
    format!("'{}'", text.replace('\'', "'\\''"))
}

fn is_uci_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(if *b { "1" } else { "0" }.to_string()),
        _ => None,
    }
}

/// A staged section from LuCI that cannot be written as UCI; each names the section
/// (its index in the list, or its `.name`) and the option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionsError {
    /// Section `index` (0-based) is not a JSON object.
    NotAnObject { index: usize },
    /// Section `index` has no `.type` that is a UCI name.
    NoType { index: usize },
    /// Section `index` (of type `kind`) has no `.name` that is a UCI name.
    NoName { index: usize, kind: String },
    /// `option` of section `section` is not a UCI option name.
    OptionName { section: String, option: String },
    /// An item of list `option` in `section` is not a string, number or boolean.
    ListItem { section: String, option: String },
    /// The value of `option` in `section` is not a string, number or boolean.
    OptionValue { section: String, option: String },
}

impl std::fmt::Display for SectionsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SectionsError::NotAnObject { index } => write!(f, "section {index} is not an object"),
            SectionsError::NoType { index } => write!(f, "section {index} has no valid .type"),
            SectionsError::NoName { index, kind } => {
                write!(f, "section {index} ({kind}) has no valid .name")
            }
            SectionsError::OptionName { section, option } => {
                write!(f, "section '{section}': '{option}' is not an option name")
            }
            SectionsError::ListItem { section, option } => {
                write!(
                    f,
                    "section '{section}' list '{option}': items must be strings"
                )
            }
            SectionsError::OptionValue { section, option } => {
                write!(f, "section '{section}' option '{option}' must be a string")
            }
        }
    }
}

impl std::error::Error for SectionsError {}

/// The UCI text for `sections` (LuCI's section objects) and, per line (1-based, index
/// 0 unused), where it came from. A malformed section or option is an error naming it.
pub fn sections_to_uci(
    sections: &[Value],
) -> Result<(String, Vec<Option<LineOrigin>>), SectionsError> {
    let mut text = String::from("package csipd\n");
    let mut origins: Vec<Option<LineOrigin>> = vec![None, None];
    for (i, section) in sections.iter().enumerate() {
        let Value::Object(fields) = section else {
            return Err(SectionsError::NotAnObject { index: i });
        };
        let kind = fields
            .get(".type")
            .and_then(Value::as_str)
            .filter(|t| is_uci_name(t))
            .ok_or(SectionsError::NoType { index: i })?;
        let name = fields
            .get(".name")
            .and_then(Value::as_str)
            .filter(|n| is_uci_name(n))
            .ok_or_else(|| SectionsError::NoName {
                index: i,
                kind: kind.to_string(),
            })?;
        let anonymous = fields
            .get(".anonymous")
            .is_some_and(|a| a == &Value::Bool(true) || a == "1" || a == "true");
        if anonymous {
            text.push_str(&format!("config {kind}\n"));
        } else {
            text.push_str(&format!("config {kind} {}\n", quote(name)));
        }
        origins.push(Some((name.to_string(), None)));
        for (option, value) in fields {
            if option.starts_with('.') {
                continue;
            }
            if !is_uci_name(option) {
                return Err(SectionsError::OptionName {
                    section: name.to_string(),
                    option: option.clone(),
                });
            }
            let origin = Some((name.to_string(), Some(option.clone())));
            match value {
                Value::Array(items) => {
                    for item in items {
                        let item = scalar(item).ok_or_else(|| SectionsError::ListItem {
                            section: name.to_string(),
                            option: option.clone(),
                        })?;
                        text.push_str(&format!("\tlist {option} {}\n", quote(&item)));
                        origins.push(origin.clone());
                    }
                }
                Value::Null => {}
                other => {
                    let item = scalar(other).ok_or_else(|| SectionsError::OptionValue {
                        section: name.to_string(),
                        option: option.clone(),
                    })?;
                    text.push_str(&format!("\toption {option} {}\n", quote(&item)));
                    origins.push(origin);
                }
            }
        }
        text.push('\n');
        origins.push(None);
    }
    Ok((text, origins))
}

/// The UCI file name used in messages when the staged changes are checked.
const STAGED: &str = "staged changes";

/// Checks UCI `text` the way `csipd check-config` does; every diagnostic, errors first.
fn check_text(
    text: &str,
    file: &str,
    now: std::time::SystemTime,
) -> Vec<crate::config::Diagnostic> {
    use crate::config::{Diagnostic, Severity, uci};
    let parsed = match uci::parse(text, file) {
        Ok(parsed) => parsed,
        Err(e) => {
            return vec![Diagnostic {
                severity: Severity::Error,
                file: e.file,
                line: e.pos.line,
                col: e.pos.col,
                message: e.message,
            }];
        }
    };
    let (config, mut diagnostics) = crate::config::typed::build(&parsed, file);
    diagnostics.extend(identity_problems(&config, now));
    diagnostics.sort_by_key(|d| std::cmp::Reverse(d.severity));
    diagnostics
}

/// The certificate, key and CA files the server section names: a file that is not
/// there yet says where to make or install it; present files get the identity checks
/// of `check-config` (expiry, key match).
fn identity_problems(
    config: &crate::config::Config,
    now: std::time::SystemTime,
) -> Vec<crate::config::Diagnostic> {
    use crate::config::{Diagnostic, SERVER_SECTION, Severity};
    let mut out = Vec::new();
    let mut all_there = true;
    for (option, path, what) in [
        (
            "cert",
            &config.server.cert,
            "install the signed certificate on the Certificate page first",
        ),
        (
            "key",
            &config.server.key,
            "generate the key on the Certificate page first",
        ),
        (
            "ca",
            &config.server.ca,
            "install the utility's CA bundle on the Certificate page first",
        ),
    ] {
        let Some(path) = path else { continue };
        if !std::path::Path::new(path).exists() {
            all_there = false;
            let at = config.location(SERVER_SECTION, option);
            out.push(Diagnostic {
                severity: Severity::Error,
                file: at
                    .as_ref()
                    .map_or_else(|| config.file.clone(), |l| l.file.clone()),
                line: at.as_ref().map_or(0, |l| l.line),
                col: 1,
                message: format!("{path} does not exist yet: {what}, or leave this empty"),
            });
        }
    }
    if all_there {
        out.extend(crate::config::identity_diagnostics(config, now));
    }
    out
}

fn answer(
    diagnostics: &[crate::config::Diagnostic],
    origins: Option<&[Option<LineOrigin>]>,
    checked: &str,
) -> Value {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for d in diagnostics {
        let origin = origins
            .and_then(|o| o.get(d.line as usize).cloned())
            .flatten();
        let (section, option) = match origin {
            Some((section, option)) => (Some(section), option),
            None => (None, None),
        };
        let entry = json!({
            "section": section,
            "option": option,
            "line": d.line,
            "message": d.message,
        });
        match d.severity {
            crate::config::Severity::Error => errors.push(entry),
            crate::config::Severity::Warning => warnings.push(entry),
        }
    }
    json!({
        "valid": errors.is_empty(),
        "checked": checked,
        "errors": errors,
        "warnings": warnings,
    })
}

/// The answer of `validate`: `{"valid": bool, "checked": WHAT, "errors": [...],
/// "warnings": [...]}`, each problem `{"section", "option", "line", "message"}`
/// (section and option are null where the problem is not one field's). `args.sections`:
/// the staged configuration; absent: the file at `config_path`.
pub fn validate(args: &Value, config_path: &str, now: std::time::SystemTime) -> Value {
    match args.get("sections") {
        Some(Value::Array(sections)) => match sections_to_uci(sections) {
            Ok((text, origins)) => {
                let diagnostics = check_text(&text, STAGED, now);
                answer(&diagnostics, Some(&origins), STAGED)
            }
            Err(e) => json!({ "error": format!("validate: {e}") }),
        },
        Some(_) => json!({ "error": "validate: sections must be a list of UCI sections" }),
        None => match std::fs::read_to_string(config_path) {
            Ok(text) => {
                let diagnostics = check_text(&text, config_path, now);
                // Lines of the file on disk: name the section and option from the parse.
                let origins = crate::config::uci::parse(&text, config_path)
                    .ok()
                    .map(|file| file_origins(&file, &text));
                answer(&diagnostics, origins.as_deref(), config_path)
            }
            Err(e) => json!({ "error": format!("{config_path}: cannot read: {e}") }),
        },
    }
}

/// Per line of a parsed file, its section name (or `@type[n]`) and option.
fn file_origins(file: &crate::config::uci::UciFile, text: &str) -> Vec<Option<LineOrigin>> {
    let mut origins: Vec<Option<LineOrigin>> = vec![None; text.lines().count() + 2];
    for section in &file.sections {
        let name = section.address();
        if let Some(slot) = origins.get_mut(section.pos.line as usize) {
            *slot = Some((name.clone(), None));
        }
        for option in &section.options {
            for value in &option.values {
                if let Some(slot) = origins.get_mut(value.pos.line as usize) {
                    *slot = Some((name.clone(), Some(option.name.clone())));
                }
            }
        }
    }
    origins
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(sections: Value) -> Value {
        validate(
            &json!({ "sections": sections }),
            "/nonexistent",
            std::time::SystemTime::now(),
        )
    }

    fn error_on(answer: &Value, section: &str, option: &str) -> String {
        answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["section"] == section && e["option"] == option)
            .unwrap_or_else(|| panic!("no error on {section}.{option}: {answer}"))["message"]
            .as_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn the_reported_bad_saves_are_refused_on_their_fields() {
        let answer = staged(json!([
            {".name": "main", ".type": "csipd", ".anonymous": false,
             "timezone": "Australia/Adelaide", "status_listen": "0.0.0.0:8080"},
            {".name": "utility", ".type": "server", ".anonymous": false,
             "cert": "/etc/csipd/not-there.crt", "key": "/etc/csipd/not-there.key"},
            {".name": "feed_in", ".type": "price", ".anonymous": false, "max_age_s": "10"},
            {".name": "site", ".type": "control", ".anonymous": false, "meter_stale_s": "0.5"},
            {".name": "cfg0a", ".type": "tariff", ".anonymous": true,
             "start": "10:00", "end": "15:00", "export_limit_w": "800", "days": ["mon", "tue"]},
        ]));
        assert_eq!(answer["valid"], false, "{answer}");
        assert!(error_on(&answer, "main", "status_listen").contains("status_allow_remote"));
        assert!(error_on(&answer, "feed_in", "max_age_s").contains("60"));
        assert!(error_on(&answer, "site", "meter_stale_s").contains("cycle_s"));
        assert!(error_on(&answer, "utility", "cert").contains("does not exist yet"));
        assert!(error_on(&answer, "utility", "key").contains("Certificate page"));
        // The zone name OpenWrt's System page writes is accepted.
        let tz: Vec<_> = answer["errors"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["option"] == "timezone")
            .collect();
        assert!(tz.is_empty(), "{tz:?}");
        assert_eq!(answer["checked"], "staged changes");
    }

    /// LuCI's Save refuses a fallback export limit csipd would refuse, on its field.
    #[test]
    fn a_bad_fallback_export_limit_is_refused_on_its_field() {
        for bad in ["1.5kW", "200000000"] {
            let answer = staged(json!([
                {".name": "utility", ".type": "server",
                 "dcap_url": "http://127.0.0.1:9/dcap", "allow_plain_http": "1"},
                {".name": "site", ".type": "control", "fallback_export_limit_w": bad},
            ]));
            assert_eq!(answer["valid"], false, "{answer}");
            let e = error_on(&answer, "site", "fallback_export_limit_w");
            assert!(e.contains("fallback_export_limit_w"), "{e}");
        }
        let answer = staged(json!([
            {".name": "utility", ".type": "server",
             "dcap_url": "http://127.0.0.1:9/dcap", "allow_plain_http": "1"},
            {".name": "site", ".type": "control", "fallback_export_limit_w": "1500"},
        ]));
        assert_eq!(answer["valid"], true, "{answer}");
    }

    #[test]
    fn a_good_staged_config_is_valid_and_quotes_survive() {
        let answer = staged(json!([
            {".name": "main", ".type": "csipd", "status_listen": "0.0.0.0:8080",
             "status_allow_remote": "1", "data_dir": "/etc/it's csipd"},
            {".name": "site", ".type": "control", "meter_stale_s": "10"},
        ]));
        assert_eq!(answer["valid"], true, "{answer}");
        assert!(answer["errors"].as_array().unwrap().is_empty());
    }

    #[test]
    fn malformed_sections_are_named() {
        let answer = staged(json!([{".type": "csipd"}]));
        assert!(
            answer["error"].as_str().unwrap().contains(".name"),
            "{answer}"
        );
        let answer = staged(json!([{".name": "x", ".type": "csipd", "bad name": "1"}]));
        assert!(
            answer["error"].as_str().unwrap().contains("bad name"),
            "{answer}"
        );
        // The kinds say what is wrong, and where.
        assert_eq!(
            sections_to_uci(&[json!("text")]).unwrap_err(),
            SectionsError::NotAnObject { index: 0 }
        );
        assert_eq!(
            sections_to_uci(&[json!({".name": "m", ".type": "csipd", "days": [{}]})]).unwrap_err(),
            SectionsError::ListItem {
                section: "m".into(),
                option: "days".into()
            }
        );
    }
}
