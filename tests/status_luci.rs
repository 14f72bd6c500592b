//! luci-app-csipd checked against what exists: the JavaScript passes `node --check`, the
//! menu and ACL JSON parse, and every ubus method (ACL, rpc.declare) is one the rpcd
//! plugin lists, every UCI section and option in settings.js is one of the csipd config.

mod status_common;

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn view_dir() -> PathBuf {
    root().join("luci-app/htdocs/luci-static/resources/view/csipd")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

const VIEWS: [&str; 3] = ["status", "settings", "certificate"];

/// The plugin's `list`, from the binary (the same code rpcd runs).
fn plugin_methods() -> BTreeMap<String, BTreeSet<String>> {
    let out = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["rpcd", "list"])
        .output()
        .expect("csipd runs");
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).expect("list prints JSON");
    list.as_object()
        .expect("list is an object")
        .iter()
        .map(|(method, args)| {
            let args = args
                .as_object()
                .expect("method args are an object")
                .keys()
                .cloned()
                .collect();
            (method.clone(), args)
        })
        .collect()
}

/// The quoted string arguments right after each occurrence of `prefix`, e.g. for
/// `s.option(form.Value, 'dcap_url', ...)` with prefix "s.option(" → ["dcap_url", ...].
fn quoted_after(text: &str, prefix: &str) -> Vec<Vec<String>> {
    text.match_indices(prefix)
        .map(|(i, _)| {
            let rest = &text[i + prefix.len()..];
            let call = &rest[..rest.find(')').unwrap_or(rest.len())];
            call.split('\'')
                .enumerate()
                .filter(|(n, _)| n % 2 == 1)
                .map(|(_, s)| s.to_string())
                .collect()
        })
        .collect()
}

#[test]
fn javascript_passes_node_check() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: run `bash tests/setup.sh`"
    );
    for view in VIEWS {
        let path = view_dir().join(format!("{view}.js"));
        let text = read(&path);
        assert!(
            text.starts_with("'use strict';\n'require view';"),
            "{view}.js header"
        );
        let out = Command::new("node")
            .arg("--check")
            .arg(&path)
            .output()
            .expect("node runs");
        assert!(
            out.status.success(),
            "node --check {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let include = overview_include();
    let text = read(&include);
    assert!(
        text.starts_with("'use strict';\n'require baseclass';"),
        "the Status → Overview include is a LuCI baseclass"
    );
    let out = Command::new("node").arg("--check").arg(&include).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// LuCI's Status → Overview loads every view/status/include/*.js.
fn overview_include() -> PathBuf {
    root().join("luci-app/htdocs/luci-static/resources/view/status/include/60_csipd.js")
}

#[test]
fn menu_and_acl_reference_what_exists() {
    let menu = read_json(&root().join("luci-app/root/usr/share/luci/menu.d/luci-app-csipd.json"));
    let acl = read_json(&root().join("luci-app/root/usr/share/rpcd/acl.d/luci-app-csipd.json"));
    let methods = plugin_methods();

    // ACL: only the csipd object, only methods the plugin has, only the csipd config.
    let grants = acl["luci-app-csipd"]
        .as_object()
        .expect("ACL group luci-app-csipd");
    let mut granted: BTreeMap<String, &str> = BTreeMap::new();
    for access in ["read", "write"] {
        let ubus = grants[access]["ubus"].as_object().expect("ubus grants");
        assert_eq!(
            ubus.keys().collect::<Vec<_>>(),
            ["csipd"],
            "{access}: only csipd"
        );
        for m in ubus["csipd"].as_array().expect("method list") {
            let m = m.as_str().expect("method name");
            assert!(
                methods.contains_key(m),
                "ACL grants {m}, which the plugin does not list"
            );
            granted.insert(m.to_string(), access);
        }
        assert_eq!(
            grants[access]["uci"],
            serde_json::json!(["csipd"]),
            "{access} uci"
        );
    }
    let write: Vec<&str> = granted
        .iter()
        .filter(|(_, a)| **a == "write")
        .map(|(m, _)| m.as_str())
        .collect();
    assert_eq!(
        write,
        ["cert_install", "cert_request"],
        "only the certificate steps change anything"
    );

    // Menu: views exist, depends name the ACL group and the csipd config.
    let mut views = BTreeSet::new();
    for (path, entry) in menu.as_object().expect("menu is an object") {
        assert!(path.starts_with("admin/services/csipd"), "{path}");
        if entry["action"]["type"] == "view" {
            let view = entry["action"]["path"].as_str().expect("view path");
            let file = root()
                .join("luci-app/htdocs/luci-static/resources/view")
                .join(format!("{view}.js"));
            assert!(
                file.exists(),
                "menu {path} points at missing {}",
                file.display()
            );
            views.insert(view.to_string());
        }
        if let Some(acls) = entry["depends"]["acl"].as_array() {
            for group in acls {
                assert!(
                    acl.get(group.as_str().unwrap_or("")).is_some(),
                    "{path}: ACL {group}"
                );
            }
        }
        if let Some(uci) = entry["depends"]["uci"].as_object() {
            assert_eq!(uci.keys().collect::<Vec<_>>(), ["csipd"], "{path}");
        }
    }
    assert_eq!(
        views.len(),
        VIEWS.len(),
        "every view has a menu entry: {views:?}"
    );

    // rpc.declare in the views: object csipd, listed methods, granted, same params.
    let mut used = BTreeSet::new();
    let mut sources: Vec<(String, PathBuf)> = VIEWS
        .iter()
        .map(|v| (v.to_string(), view_dir().join(format!("{v}.js"))))
        .collect();
    sources.push(("overview include".into(), overview_include()));
    for (view, path) in &sources {
        let text = read(path);
        for declare in text.split("rpc.declare({").skip(1) {
            let body = &declare[..declare.find("})").expect("declare closes")];
            let field = |name: &str| {
                quoted_after(body, &format!("{name}: "))
                    .first()
                    .and_then(|v| v.first().cloned())
            };
            assert_eq!(
                field("object").as_deref(),
                Some("csipd"),
                "{view}.js: {body}"
            );
            let method = field("method").expect("method");
            let args = methods
                .get(&method)
                .unwrap_or_else(|| panic!("{view}.js declares {method}, not in the plugin's list"));
            assert!(
                granted.contains_key(&method),
                "{view}.js: {method} not in the ACL"
            );
            used.insert(method.clone());
            let params: BTreeSet<String> = body
                .split_once("params: [")
                .map(|(_, rest)| rest.split(']').next().unwrap_or(""))
                .unwrap_or("")
                .split('\'')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            assert_eq!(&params, args, "{view}.js: params of {method}");
        }
    }
    // Nothing granted that no view uses (the ACL is what a LuCI user may call).
    assert_eq!(
        granted.keys().cloned().collect::<BTreeSet<_>>(),
        used,
        "the ACL grants exactly the methods the views call"
    );
}

/// Section types with their named sections and options from files/etc/config/csipd,
/// including commented-out examples (every option is documented there).
/// Options per section type, and the (type, name) of named sections.
type ConfigNames = (
    BTreeMap<String, BTreeSet<String>>,
    BTreeSet<(String, String)>,
);

fn config_options() -> ConfigNames {
    let path = root().join("files/etc/config/csipd");
    let mut options: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut named = BTreeSet::new();
    if !path.exists() {
        // Without the default file, the config module's own table is the authority.
        eprintln!(
            "note: {} missing, checking against config::SECTION_TYPES",
            path.display()
        );
        let known = csipd::config::SECTION_TYPES;
        for (kind, name, opts) in known {
            options.insert(
                kind.to_string(),
                opts.iter().map(|o| o.to_string()).collect(),
            );
            if let Some(name) = name {
                named.insert((kind.to_string(), name.to_string()));
            }
        }
        return (options, named);
    }
    let mut current: Option<String> = None;
    for line in read(&path).lines() {
        let line = line.trim_start().trim_start_matches('#').trim();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("config") => {
                let kind = words.next().unwrap_or("").to_string();
                if let Some(name) = words.next() {
                    named.insert((kind.clone(), name.trim_matches('\'').to_string()));
                }
                options.entry(kind.clone()).or_default();
                current = Some(kind);
            }
            Some("option") | Some("list") => {
                if let (Some(kind), Some(name)) = (&current, words.next()) {
                    options.get_mut(kind).unwrap().insert(name.to_string());
                }
            }
            _ => {}
        }
    }
    (options, named)
}

#[test]
fn settings_use_only_real_config_sections_and_options() {
    let (options, named) = config_options();
    let text = read(&view_dir().join("settings.js"));
    assert!(
        text.contains("new form.Map('csipd'"),
        "settings.js edits the csipd config"
    );

    let mut section: Option<String> = None;
    let mut seen_types = BTreeSet::new();
    let mut checked = 0;
    for (n, line) in text.lines().enumerate() {
        let at = format!("settings.js:{}", n + 1);
        if let Some(args) = quoted_after(line, "m.section(form.NamedSection, ").first() {
            let (name, kind) = (&args[0], &args[1]);
            assert!(
                named.contains(&(kind.clone(), name.clone())),
                "{at}: no section {kind} '{name}' in the config"
            );
            section = Some(kind.clone());
        } else if let Some(args) = quoted_after(line, "Section, ").first() {
            section = Some(args[0].clone());
        }
        let option = quoted_after(line, "s.option(form.")
            .first()
            .and_then(|a| a.first().cloned())
            .or_else(|| {
                quoted_after(line, "s.taboption(")
                    .first()
                    .and_then(|a| a.get(1).cloned())
            })
            .or_else(|| {
                quoted_after(line, "o.depends(")
                    .first()
                    .and_then(|a| a.first().cloned())
            });
        if let Some(option) = option {
            let kind = section
                .clone()
                .unwrap_or_else(|| panic!("{at}: option outside a section"));
            let known = options
                .get(&kind)
                .unwrap_or_else(|| panic!("{at}: no section type '{kind}' in the config"));
            assert!(
                known.contains(&option),
                "{at}: '{kind}' has no option '{option}'"
            );
            seen_types.insert(kind);
            checked += 1;
        }
    }
    // server, certificates, devices, fixed limits, tariffs and price are all editable.
    for kind in [
        "csipd", "server", "limits", "tariff", "price", "device", "control",
    ] {
        assert!(
            seen_types.contains(kind),
            "settings.js has no options of '{kind}'"
        );
    }
    assert!(checked > 50, "only {checked} options checked");
}

