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
    let mut granted = BTreeSet::new();
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
            granted.insert(m.to_string());
        }
        assert_eq!(
            grants[access]["uci"],
            serde_json::json!(["csipd"]),
            "{access} uci"
        );
    }
    assert_eq!(
        granted,
        methods.keys().cloned().collect(),
        "every plugin method is granted"
    );
    let write_only: Vec<&Value> = grants["write"]["ubus"]["csipd"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        write_only,
        [&Value::from("cert_request")],
        "only cert_request changes anything"
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
    for view in VIEWS {
        let text = read(&view_dir().join(format!("{view}.js")));
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
                granted.contains(&method),
                "{view}.js: {method} not in the ACL"
            );
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

/// Runs `csipd rpcd call METHOD` with `args` on stdin against `status_url`: the real
/// plugin's answer, as rpcd would hand it to LuCI.
/// A UCI config naming a real certificate and a key path (the key is made by
/// cert_request when missing), for the certificate methods.
fn identity_config() -> std::path::PathBuf {
    static ONCE: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    ONCE.get_or_init(|| {
        let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("status_luci_pki");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = csipd::pki::generate_p256_key().unwrap();
        let cert =
            csipd::pki::self_signed(&key, "csipd-test", 30, std::time::SystemTime::now()).unwrap();
        std::fs::write(dir.join("device.pem"), cert.to_pem().unwrap()).unwrap();
        let config = dir.join("csipd");
        std::fs::write(
            &config,
            format!(
                "config server 'utility'\n\toption cert '{}'\n\toption key '{}'\n",
                dir.join("device.pem").display(),
                dir.join("new.key").display()
            ),
        )
        .unwrap();
        config
    })
    .clone()
}

fn plugin_answer(method: &str, args: &str, status_url: &str) -> Value {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_csipd"))
        .args(["rpcd", "call", method])
        .env("CSIPD_STATUS_URL", status_url)
        .env("CSIPD_CONFIG", identity_config())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("csipd runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(args.as_bytes())
        .unwrap();
    let out = child.wait_with_output().expect("csipd answers");
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// Loads a LuCI view the way LuCI's loader does (the file body becomes a function of
/// its `'require'`d modules) in headless Chromium, with minimal stand-ins for LuCI's
/// `E`, `_`, `view`, `poll`, `ui`, `L` and an `rpc` whose answers are the real plugin's
/// outputs. `script` runs after render; returns the DOM.
fn render_view(view: &str, answers: &Value, script: &str) -> String {
    let source = read(&view_dir().join(format!("{view}.js")));
    let html = format!(
        r#"<!DOCTYPE html><html><body><div id="maincontent"></div><script>
var ANSWERS = {answers};
var CALLS = [];
function _(s) {{ return s; }}
// LuCI's E(): attributes (functions become event listeners), children in an array
// become text nodes or elements.
function E(tag, attrs, kids) {{
  if (Array.isArray(attrs) || typeof attrs !== 'object' || attrs instanceof Node) {{ kids = attrs; attrs = {{}}; }}
  var e = document.createElement(tag);
  Object.keys(attrs || {{}}).forEach(function (k) {{
    if (typeof attrs[k] === 'function') e.addEventListener(k, attrs[k]);
    else if (attrs[k] != null) e.setAttribute(k, attrs[k]);
  }});
  (Array.isArray(kids) ? kids : (kids == null ? [] : [kids])).forEach(function (k) {{
    if (k instanceof Node) e.appendChild(k);
    else if (k != null) e.appendChild(document.createTextNode('' + k));
  }});
  return e;
}}
var L = {{ resolveDefault: function (p, d) {{ return Promise.resolve(p).catch(function () {{ return d; }}); }} }};
var view = {{ extend: function (o) {{ return o; }} }};
var poll = {{ add: function (fn, interval_s) {{ document.body.setAttribute('data-poll-s', interval_s); }} }};
var ui = {{
  addNotification: function (t, n) {{ document.body.appendChild(n); }},
  createHandlerFn: function (ctx, name) {{ return function (ev) {{ return ctx[name](ev); }}; }}
}};
var rpc = {{ declare: function (d) {{
  return function () {{
    var args = {{}}, given = arguments;
    (d.params || []).forEach(function (p, i) {{ args[p] = given[i]; }});
    CALLS.push(d.object + '.' + d.method + JSON.stringify(args));
    return Promise.resolve(ANSWERS[d.method]);
  }};
}} }};
var mod = (new Function('view', 'poll', 'rpc', 'ui', 'L', 'E', '_', {source}))(view, poll, rpc, ui, L, E, _);
Promise.resolve(mod.load()).then(function (data) {{
  document.getElementById('maincontent').appendChild(mod.render(data));
  {script}
}}).then(function () {{ document.body.setAttribute('data-calls', CALLS.join(' ')); }},
  function (e) {{ document.body.setAttribute('data-failed', String(e)); }});
</script></body></html>"#,
        answers = answers,
        source = Value::from(source),
    );
    let dir = std::env::temp_dir().join(format!("csipd-luci-{view}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("profile")).unwrap();
    let page = dir.join("index.html");
    std::fs::write(&page, html).unwrap();
    let dom = status_common::run_chromium(
        &dir.join("profile"),
        &["--dump-dom", "--allow-file-access-from-files"],
        &format!("file://{}", page.display()),
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The rendered part; the harness script (with the answers) follows it.
    let dom = dom.split("<script>").next().unwrap_or("").to_string();
    assert!(!dom.contains("data-failed="), "{view}.js threw: {dom}");
    assert!(
        dom.contains("data-calls="),
        "{view}.js did not finish: {dom}"
    );
    dom
}

#[test]
fn status_and_certificate_views_render_the_plugins_answers() {
    let (server, _handle) = status_common::start_sample_server();
    let url = server.url();
    let answers = serde_json::json!({
        "status": plugin_answer("status", "{}", &url),
        "events": plugin_answer("events", "{}", &url),
        "cert_info": plugin_answer("cert_info", "{}", &url),
        "cert_request": plugin_answer("cert_request", r#"{"cn":"csipd-site-0001"}"#, &url),
    });
    assert_eq!(answers["status"]["utility"]["lfdi"], status_common::LFDI);

    let dom = render_view("status", &answers, "");
    for needle in [
        "data-poll-s=\"5\"",
        "data-calls=\"csipd.status{}\"",
        ">polling<",
        status_common::LFDI,
        ">1500 W<",
        "utility event 3f2a09b1…",
        "program default (SAPN dynamic)",
        " (in 1",
        ">a1b2c3d4…<",
        ">1480 W<",
        ">fronius_1<",
        ">stale<",
        "4321 W (86.4 %)",
        "GET /derp/0/derc: HTTP 503 from server",
        "<polyline",
    ] {
        assert!(dom.contains(needle), "status view lacks {needle:?}:\n{dom}");
    }
    assert_eq!(
        dom.matches("<polyline").count(),
        2,
        "export and limit lines"
    );

    // cert_info answers the configured certificate's identity; the CSR button sends
    // the typed CN and shows the CSR the plugin made with a new 0600 key.
    let dom = render_view(
        "certificate",
        &answers,
        "document.getElementById('csipd-cn').value = 'csipd-site-0001';
         return mod.handleRequest();",
    );
    let lfdi = answers["cert_info"]["lfdi"]
        .as_str()
        .expect("cert_info lfdi");
    assert_eq!(lfdi.len(), 40);
    assert!(
        dom.contains(lfdi),
        "certificate view shows the LFDI {lfdi}:\n{dom}"
    );
    let sfdi = answers["cert_info"]["sfdi"]
        .as_u64()
        .expect("cert_info sfdi");
    assert!(dom.contains(&sfdi.to_string()));
    assert!(
        dom.contains("csipd.cert_request{&quot;cn&quot;:&quot;csipd-site-0001&quot;}"),
        "cert_request called with the CN:\n{dom}"
    );
    let csr = answers["cert_request"]["csr"].as_str().expect("csr");
    assert!(
        csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"),
        "{csr}"
    );
    assert!(
        dom.contains("BEGIN CERTIFICATE REQUEST"),
        "the CSR is shown"
    );
    let key_path = answers["cert_request"]["key_path"]
        .as_str()
        .expect("key_path");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(key_path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the new key is private");
}
