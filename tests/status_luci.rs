//! luci-app-csipd checked against what exists: the JavaScript passes `node --check`, the
//! menu and ACL JSON parse, and every ubus method (ACL, rpc.declare) is one the rpcd
//! plugin lists, every UCI section and option in settings.js is one of the csipd config.

mod luci_harness;
mod runtime_common;
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
    let out = Command::new("node")
        .arg("--check")
        .arg(&include)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    // The config module's own table is the authority on what exists (the shipped file's
    // comments do not show every device option, e.g. the Powerwall's).
    for (kind, _, opts) in csipd::config::SECTION_TYPES {
        options
            .entry(kind.to_string())
            .or_default()
            .extend(opts.iter().map(|o| o.to_string()));
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
        "csipd", "server", "limits", "tariff", "price", "device", "control", "mqtt",
    ] {
        assert!(
            seen_types.contains(kind),
            "settings.js has no options of '{kind}'"
        );
    }
    assert!(checked > 50, "only {checked} options checked");
}

/// A new, empty Chromium profile directory for each run (a profile still locked by a
/// previous browser is never shared).
fn fresh_profile() -> PathBuf {
    static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let profile = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("luci-chromium-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    profile
}

/// Runs headless Chromium on a harness page at `width` px; returns the DOM after the
/// view rendered and its script ran (the page marks that with data-done).
fn view_dom(
    h: &luci_harness::Harness,
    view: &str,
    width: u32,
    read_only: bool,
    script: &str,
) -> String {
    h.set(read_only, script);
    let profile = fresh_profile();
    eprintln!("view {view} at {width} px");
    let dom = status_common::run_chromium(
        &profile,
        &["--dump-dom", &format!("--window-size={width},2400")],
        &format!("{}/view/{view}", h.url),
    );
    let dom = dom.split("<script>").next().unwrap_or("").to_string();
    assert!(!dom.contains("data-failed="), "{view} threw: {dom}");
    assert!(
        dom.contains("data-done=\"1\""),
        "{view} did not finish rendering: {dom}"
    );
    dom
}

/// A screenshot of the same page into target/luci-screens/NAME-WIDTH.png.
fn screenshot(
    h: &luci_harness::Harness,
    view: &str,
    width: u32,
    read_only: bool,
    script: &str,
    name: &str,
) -> PathBuf {
    h.set(read_only, script);
    let dir = root().join("target/luci-screens");
    std::fs::create_dir_all(&dir).unwrap();
    let shot = dir.join(format!("{name}-{width}.png"));
    let _ = std::fs::remove_file(&shot);
    let profile = fresh_profile();
    status_common::run_chromium(
        &profile,
        &[
            &format!("--window-size={width},2000"),
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("{}/view/{view}", h.url),
    );
    let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 5_000,
        "{} is a real PNG",
        shot.display()
    );
    shot
}

/// The text of the first element whose opening tag contains `marker`.
fn text_of(dom: &str, marker: &str) -> String {
    let start = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {dom}"));
    let rest = &dom[start..];
    let open_end = rest.find('>').unwrap() + 1;
    let inner = &rest[open_end..];
    inner[..inner.find('<').unwrap_or(inner.len())].to_string()
}

/// The opening tag of the element with id `id`.
fn tag_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id}"));
    let start = dom[..at].rfind('<').unwrap();
    &dom[start..at + dom[at..].find('>').unwrap()]
}

fn export_summary_head(url: &str) -> String {
    let v = csipd::status::client::get_json(url, "/status").expect("demo answers /status");
    let line = v["summary"].as_str().unwrap_or("").to_string();
    line.split(" — ").next().unwrap_or("").to_string()
}

/// Every view in headless Chromium against `csipd demo`, at desktop (1280 px) and phone
/// (390 px) widths, through the real rpcd plugin with the ACL enforced: certificate
/// onboarding end to end, the read-only user, the status view and the Status →
/// Overview line, and Save refusing what the daemon would refuse. Screenshots go to
/// target/luci-screens/.
#[test]
fn luci_views_in_chromium_against_csipd_demo() {
    use std::time::Duration;
    let mut demo =
        runtime_common::spawn(&["demo", "--no-utility", "--port", "0", "--seconds", "600"]);
    let status_url = demo
        .stdout_line("status: ", Duration::from_secs(60))
        .trim()
        .trim_end_matches("/status")
        .to_string();
    runtime_common::wait_for(
        &status_url,
        Duration::from_secs(90),
        "an export limit and a meter reading",
        |s| {
            s.limit(csipd::status::LimitMode::Export).is_some()
                && s.site.export_w.is_some()
                && s.history
                    .points
                    .iter()
                    .filter(|p| p.export_w.is_some())
                    .count()
                    >= 2
        },
    );

    let dir = runtime_common::temp_dir("luci-views");
    let data = dir.join("data");
    let config = dir.join("csipd");
    let shipped = read(&root().join("files/etc/config/csipd"));
    std::fs::write(
        &config,
        shipped.replace("'/etc/csipd'", &format!("'{}'", data.display())),
    )
    .unwrap();
    let h = luci_harness::Harness::start(luci_harness::Backend {
        status_url: status_url.clone(),
        config: config.clone(),
        reload_cmd: format!("echo reloaded >> '{}'", dir.join("reloads").display()),
        read_only: false,
        script: String::new(),
        calls: Default::default(),
    });
    let mut shots = Vec::new();
    eprintln!("LuCI harness at {}", h.url);

    // Status view first, while the demo's tariff window is on. The summary line is the
    // daemon's, times in the site's zone, every cell labelled for the phone layout.
    for width in [1280, 390] {
        let before = export_summary_head(&status_url);
        let dom = view_dom(&h, "csipd/status", width, false, "");
        let after = export_summary_head(&status_url);
        let summary = text_of(&dom, "class=\"csipd-summary\"");
        let head = summary.split(" — ").next().unwrap();
        assert!(
            head == before || head == after,
            "summary {summary:?} vs the daemon's {before:?}/{after:?}"
        );
        assert!(summary.starts_with("Export limited to "), "{summary}");
        assert!(
            summary.contains(" — exporting ") || summary.contains(" — importing "),
            "{summary}"
        );
        for needle in [
            "data-title=\"Limit\">Export limit (opModExpLimW)<",
            "data-title=\"Set by\">",
            "data-title=\"Export\">",
            "data-title=\"Solar\">",
            "data-title=\"Network operator\"><strong>Not set up: no network operator server address<",
            "data-title=\"Device\">",
            "data-title=\"Type\">Site meter<",
            "<polyline class=\"csipd-export-line\"",
        ] {
            assert!(
                dom.contains(needle),
                "{width} px status lacks {needle:?}:\n{dom}"
            );
        }
        for raw in [">not_configured<", ">meter<", ">tcp<", "RPCError"] {
            assert!(!dom.contains(raw), "raw code {raw} on screen at {width} px");
        }
        if width == 390 {
            assert!(
                dom.contains("data-header-display=\"none\""),
                "LuCI's narrow layout hides the header row"
            );
            let px: f64 = dom
                .split("data-chart-text-px=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .and_then(|v| v.parse().ok())
                .expect("chart text measured");
            assert!(px >= 10.0, "chart text is {px} px high at 390 px");
        }
        shots.push(screenshot(&h, "csipd/status", width, false, "", "status"));
    }
    // Status → Overview: the same line.
    for width in [1280, 390] {
        let dom = view_dom(&h, "status/include/60_csipd", width, false, "");
        let line = text_of(&dom, "class=\"csipd-summary\"");
        assert!(line.starts_with("Export limited to "), "overview: {line}");
        shots.push(screenshot(
            &h,
            "status/include/60_csipd",
            width,
            false,
            "",
            "overview",
        ));
    }

    // Certificate onboarding in the browser. Fresh install: step 1, default paths.
    let dom = view_dom(
        &h,
        "csipd/certificate",
        1280,
        false,
        "document.getElementById('csipd-cn').value = 'site-0042'; await mod.handleRequest();",
    );
    assert!(
        dom.contains("BEGIN CERTIFICATE REQUEST"),
        "the CSR is shown:\n{dom}"
    );
    assert!(dom.contains(">Download client.csr<"), "{dom}");
    assert!(
        dom.contains(&data.join("client.csr").display().to_string()),
        "the CSR's path is shown"
    );
    assert!(data.join("client.key").exists());
    let request =
        "document.getElementById('csipd-cn').value = 'site-0042'; await mod.handleRequest();";
    shots.push(screenshot(
        &h,
        "csipd/certificate",
        390,
        false,
        request,
        "certificate-request",
    ));
    // The manufacturer signs it (`csipd cert sign`, MICA made by openssl).
    let (mica_key, mica) = status_common::openssl_ca(&dir, "Test MICA");
    let signed = dir.join("signed.pem");
    status_common::run_ok(Command::new(env!("CARGO_BIN_EXE_csipd")).args([
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
    ]));
    let (_, utility_ca) = status_common::openssl_ca(&dir, "Utility Root");
    let upload = format!(
        "document.getElementById('csipd-cert-text').value = {};
         document.getElementById('csipd-ca-text').value = {};
         await mod.handleInstall();",
        Value::from(read(&signed)),
        Value::from(read(&utility_ca))
    );
    let dom = view_dom(&h, "csipd/certificate", 1280, false, &upload);
    assert!(dom.contains("csipd was reloaded and uses it now."), "{dom}");
    assert!(
        dom.contains("The certificate is installed."),
        "the page shows the result in place"
    );
    assert_eq!(
        read(&dir.join("reloads")),
        "reloaded\n",
        "csipd reloaded once"
    );
    let shown = status_common::run_ok(Command::new(env!("CARGO_BIN_EXE_csipd")).args([
        "cert",
        "show",
        "--cert",
        data.join("client.crt").to_str().unwrap(),
    ]));
    let lfdi = shown
        .lines()
        .find_map(|l| l.strip_prefix("LFDI:"))
        .expect("cert show prints the LFDI")
        .trim()
        .to_string();
    for width in [1280, 390] {
        let dom = view_dom(&h, "csipd/certificate", width, false, "");
        for needle in [
            lfdi.as_str(),
            "The certificate is installed.",
            "data-field=\"Matches this router's key\">yes<",
            "✓ CN=site-0042 — valid until",
            "✓ CN=Test MICA, O=csipd test — valid until",
            "data-field=\"Network operator CA bundle\">CN=Utility Root, O=csipd test<",
            "days left)",
        ] {
            assert!(
                dom.contains(needle),
                "{width} px certificate page lacks {needle:?}:\n{dom}"
            );
        }
        shots.push(screenshot(
            &h,
            "csipd/certificate",
            width,
            false,
            "",
            "certificate",
        ));
    }
    // The status view shows the installed certificate's LFDI although no server is set.
    let dom = view_dom(&h, "csipd/status", 1280, false, "");
    assert!(
        dom.contains(&format!(
            "data-title=\"Device ID (LFDI)\"><code style=\"word-break:break-all\">{lfdi}<"
        )),
        "{dom}"
    );

    // A read-only user: no action offered, no raw error, nothing written.
    let writes_before = h
        .calls()
        .iter()
        .filter(|c| c.starts_with("cert_request") || c.starts_with("cert_install"))
        .count();
    for width in [1280, 390] {
        let dom = view_dom(&h, "csipd/certificate", width, true, "");
        assert!(dom.contains("changing it needs an administrator"), "{dom}");
        for action in [
            "Make a new request",
            "Make key and request",
            "Check and install",
            "csipd-cert-file",
            "RPCError",
        ] {
            assert!(
                !dom.contains(action),
                "read-only page offers or shows {action:?}"
            );
        }
        assert!(dom.contains(&lfdi));
        shots.push(screenshot(
            &h,
            "csipd/certificate",
            width,
            true,
            "",
            "certificate-readonly",
        ));
    }
    let writes_after = h
        .calls()
        .iter()
        .filter(|c| c.starts_with("cert_request") || c.starts_with("cert_install"))
        .count();
    assert_eq!(writes_before, writes_after);

    // Settings: Save refuses what csipd would refuse, on the fields concerned.
    let bad =
        "function set(id, v) { document.getElementById('widget.cbid.csipd.' + id).value = v; }
        set('site.meter_stale_s', '0.5');
        set('main.status_listen', '0.0.0.0:8080');
        set('main.timezone', 'Australia/Adelaide');
        set('broker.url', 'mqtt://broker.lan/csipd');
        var qos = document.getElementById('widget.cbid.csipd.broker.qos');
        var three = document.createElement('option');
        three.value = three.textContent = '3';
        qos.appendChild(three);
        qos.value = '3';
        try { await mod.handleSave(); document.body.setAttribute('data-saved', 'yes'); }
        catch (e) { document.body.setAttribute('data-refused', e.message); }";
    for width in [1280, 390] {
        let dom = view_dom(&h, "csipd/settings", width, false, bad);
        assert!(
            dom.contains("data-refused=\"csipd would refuse these settings\""),
            "{dom}"
        );
        assert!(!dom.contains("uci.save"), "nothing saved");
        let errors = &dom[dom.find("id=\"csipd-save-errors\"").expect("error list")..];
        assert!(errors.contains("Meter silence before the safety limit (s)</strong>: meter_stale_s (0.5 s) must be longer than cycle_s"), "{errors}");
        assert!(
            errors.contains("Status address</strong>: status_listen 0.0.0.0:8080"),
            "{errors}"
        );
        assert!(tag_of(&dom, "widget.cbid.csipd.site.meter_stale_s").contains("cbi-input-invalid"));
        assert!(tag_of(&dom, "widget.cbid.csipd.main.status_listen").contains("cbi-input-invalid"));
        assert!(
            !tag_of(&dom, "widget.cbid.csipd.main.timezone").contains("cbi-input-invalid"),
            "a zone name is fine"
        );
        // MQTT: a URL LuCI's own check lets through (it starts with mqtt://) and a QoS
        // outside 0..2 are refused by the daemon's checker, on their fields.
        assert!(
            errors.contains("Broker address</strong>: option 'url': \"mqtt://broker.lan/csipd\": only mqtt[s]://host[:port] is understood"),
            "{errors}"
        );
        assert!(
            errors.contains(
                "Delivery guarantee (QoS)</strong>: option 'qos' must be between 0 and 2"
            ),
            "{errors}"
        );
        assert!(tag_of(&dom, "widget.cbid.csipd.broker.url").contains("cbi-input-invalid"));
        assert!(tag_of(&dom, "widget.cbid.csipd.broker.qos").contains("cbi-input-invalid"));
        assert!(
            !tag_of(&dom, "widget.cbid.csipd.broker.interval_s").contains("cbi-input-invalid"),
            "the shipped interval is fine"
        );
        shots.push(screenshot(
            &h,
            "csipd/settings",
            width,
            false,
            bad,
            "settings-refused",
        ));
    }
    let good =
        "function set(id, v) { document.getElementById('widget.cbid.csipd.' + id).value = v; }
        set('main.timezone', 'Australia/Adelaide');
        try { await mod.handleSave(); document.body.setAttribute('data-saved', 'yes'); }
        catch (e) { document.body.setAttribute('data-refused', e.message); }";
    let dom = view_dom(&h, "csipd/settings", 1280, false, good);
    assert!(dom.contains("data-saved=\"yes\""), "{dom}");
    assert!(dom.contains("uci.save"), "saved through uci");
    let validated = h
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.starts_with("validate"))
        .expect("validate called");
    assert!(
        validated.contains("\"timezone\":\"Australia/Adelaide\""),
        "the staged value was checked: {validated}"
    );

    for shot in &shots {
        eprintln!("screenshot: {}", shot.display());
    }
    demo.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status view with the meter gone, a stretch of history without a limit, and one
/// device repeating an error: the site's numbers are not shown as live, the limit line
/// has a gap (never a line at 0 W), and the repeats are one counted line that leaves the
/// other error in view.
#[test]
fn status_view_stale_meter_limit_gaps_and_repeated_errors() {
    let (server, handle) = status_common::start_sample_server();
    handle.update(|s| {
        for d in &mut s.devices {
            d.stale = true;
        }
        // Every inverter stale too: their output is unknown as well.
        s.site.pv_w = None;
        let n = s.history.points.len();
        for p in s.history.points.iter_mut().skip(n / 3).take(n / 3) {
            p.export_limit_w = None;
        }
        for t in 0..30 {
            s.push_error(
                s.now_unix_s - 20 + t / 10,
                "device fronius_1",
                "timeout after 1 s reading model 103",
            );
        }
    });
    let dir = runtime_common::temp_dir("luci-stale");
    let config = dir.join("csipd");
    std::fs::write(&config, "config csipd 'main'\n").unwrap();
    let h = luci_harness::Harness::start(luci_harness::Backend {
        status_url: server.url(),
        config,
        reload_cmd: "true".into(),
        read_only: true,
        script: String::new(),
        calls: Default::default(),
    });
    let dom = view_dom(&h, "csipd/status", 390, true, "");
    assert!(dom.contains("csipd-site-stale"), "stale meter note:\n{dom}");
    assert!(dom.contains("the site's power is unknown"));
    for needle in [
        "data-title=\"Export\">unknown (meter not answering)<",
        "data-title=\"Household use\">unknown (meter not answering)<",
        "data-title=\"Solar\">unknown (no inverter reading)<",
    ] {
        assert!(
            dom.contains(needle),
            "no live-looking value: {needle}\n{dom}"
        );
    }
    assert!(
        text_of(&dom, "class=\"csipd-summary\"")
            .ends_with("— site power unknown: the meter is not answering"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("class=\"csipd-limit-line\"").count(),
        2,
        "the limit line stops where no limit was in force"
    );
    assert!(
        dom.contains("timeout after 1 s reading model 103 (30 times)"),
        "{dom}"
    );
    assert!(
        dom.contains("GET /derp/0/derc: HTTP 503 from server"),
        "the other error stays"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status view against `csipd demo` with its simulated utility: the server with the
/// CSIP-AUS version in use (as the daemon says), a limit set by a utility event, and
/// the answers sent to the utility in words with their 2030.5 code, in site time.
#[test]
fn status_view_with_the_simulated_utility() {
    use std::time::Duration;
    let mut demo = runtime_common::spawn(&["demo", "--port", "0", "--seconds", "600"]);
    let status_url = demo
        .stdout_line("status: ", Duration::from_secs(60))
        .trim()
        .trim_end_matches("/status")
        .to_string();
    let is_event = |s: &csipd::status::Snapshot| {
        s.limit(csipd::status::LimitMode::Export)
            .is_some_and(|l| matches!(l.source, csipd::status::LimitSource::UtilityEvent { .. }))
    };
    runtime_common::wait_for(
        &status_url,
        Duration::from_secs(120),
        "responses sent and an export limit from a utility event",
        |s| s.responses.len() >= 2 && is_event(s),
    );
    let dir = runtime_common::temp_dir("luci-utility");
    let config = dir.join("csipd");
    std::fs::write(&config, read(&root().join("files/etc/config/csipd"))).unwrap();
    let h = luci_harness::Harness::start(luci_harness::Backend {
        status_url: status_url.clone(),
        config,
        reload_cmd: "true".into(),
        read_only: true,
        script: String::new(),
        calls: Default::default(),
    });
    for width in [1280, 390] {
        // Blocks change every 10 s (a gap or the tariff may win for a moment, and the
        // utility's costly export price holds export at 0 W for 60 s of every 240 s):
        // load the page until the daemon says a utility event limits export before and
        // after.
        let mut attempt = 0;
        let (dom, after) = loop {
            attempt += 1;
            let before = runtime_common::status(&status_url);
            let dom = view_dom(&h, "csipd/status", width, true, "");
            let after = runtime_common::status(&status_url);
            if is_event(&before) && is_event(&after) {
                break (dom, after);
            }
            assert!(attempt < 40, "no utility event limit around 40 page loads");
        };
        assert!(
            dom.contains("data-title=\"Set by\">Network operator event (DERControl "),
            "{width} px: the utility's limit:\n{dom}"
        );
        let server = after
            .utility
            .server_url
            .clone()
            .expect("the demo has a server");
        let server_cell = format!(
            "data-title=\"Server\"><span><code style=\"word-break:break-all\">{server}</code>"
        );
        assert!(
            dom.contains(&server_cell),
            "{width} px lacks {server_cell}:\n{dom}"
        );
        match &after.utility.csipaus_version {
            Some(v) => assert!(
                dom.contains(&format!(
                    "<span class=\"csipd-csipaus-version\"> (CSIP-AUS {v})</span>"
                )),
                "{width} px: version {v} beside the server:\n{dom}"
            ),
            None => assert!(!dom.contains("csipd-csipaus-version"), "no version claimed"),
        }
        // The readings the utility accepted, as a number in their own column.
        let readings = text_of(&dom, "data-title=\"Readings posted\">");
        assert!(
            readings
                .split_whitespace()
                .next()
                .is_some_and(|n| n.parse::<u64>().is_ok()),
            "{width} px: readings posted {readings:?}:\n{dom}"
        );
        // One of the latest responses, as a whole row: site time, short mRID, status in
        // words with its code, delivery.
        let offset = i64::from(after.local_utc_offset_s);
        let rows: Vec<String> = after
            .responses
            .iter()
            .rev()
            .take(10)
            .map(|r| {
                let t = (r.at_unix_s + offset).rem_euclid(86400);
                let mrid = r.mrid.to_lowercase();
                let short = if mrid.chars().count() > 8 {
                    format!("{}…", mrid.chars().take(8).collect::<String>())
                } else {
                    mrid
                };
                let (word, code) = match format!("{:?}", r.status).as_str() {
                    "Received" => ("Received", 1),
                    "Started" => ("Started", 2),
                    "Completed" => ("Completed", 3),
                    "Cancelled" => ("Cancelled by the network operator", 6),
                    "Superseded" => ("Replaced by a newer instruction", 7),
                    "RejectedNotApplicable" => ("Refused: not applicable to this site", 252),
                    "RejectedInvalid" => ("Refused: invalid instruction", 253),
                    "RejectedExpired" => ("Refused: arrived after it had ended", 254),
                    other => panic!("unknown response status {other}"),
                };
                assert_eq!(code, r.status.code(), "{word}");
                format!(
                    "<td class=\"td\" data-title=\"Sent at\">{:02}:{:02}:{:02}</td>\
                     <td class=\"td\" data-title=\"Instruction\">DERControl {short}</td>\
                     <td class=\"td\" data-title=\"Answer\">{word} ({code})</td>",
                    t / 3600,
                    t / 60 % 60,
                    t % 60
                )
            })
            .collect();
        assert!(
            rows.iter().any(|r| dom.contains(r.as_str())),
            "{width} px shows none of the daemon's latest responses {rows:#?}:\n{dom}"
        );
        assert!(dom.contains("data-title=\"Delivery\">accepted<"), "{dom}");
        for raw in [">Received<", ">Completed<", ">retry_later<", "RPCError"] {
            assert!(!dom.contains(raw), "raw {raw} on screen at {width} px");
        }
        if width == 390 {
            assert!(dom.contains("data-header-display=\"none\""));
        }
        screenshot(&h, "csipd/status", width, true, "", "status-utility");
    }
    demo.terminate();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A limit an inverter without a control model cannot keep is shown as not enforced,
/// with why (never as kept); that inverter is marked read only with the daemon's
/// reason, and a Powerwall meter shows the certificate fingerprint csipd pinned.
#[test]
fn status_view_read_only_device_unenforced_limit_and_pinned_certificate() {
    let (server, handle) = status_common::start_sample_server();
    let fingerprint = "AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89:AB:CD:EF:01:23:45:67:89";
    handle.update(|s| {
        for l in &mut s.limits {
            if l.mode == csipd::status::LimitMode::Export {
                l.not_enforceable = Some("not enforceable: fronius_1 has no control model".into());
            }
        }
        for d in &mut s.devices {
            match d.role {
                csipd::status::DeviceRole::Meter => d.tls_fingerprint = Some(fingerprint.into()),
                _ => {
                    d.read_only = Some(
                        "device 'fronius_1' has no control model (SunSpec 123 or 704): csipd reads it but cannot limit it".into(),
                    )
                }
            }
        }
    });
    let dir = runtime_common::temp_dir("luci-readonly");
    let config = dir.join("csipd");
    std::fs::write(&config, "config csipd 'main'\n").unwrap();
    let h = luci_harness::Harness::start(luci_harness::Backend {
        status_url: server.url(),
        config,
        reload_cmd: "true".into(),
        read_only: true,
        script: String::new(),
        calls: Default::default(),
    });
    let dom = view_dom(&h, "csipd/status", 390, true, "");
    assert!(
        dom.contains("data-title=\"Value\"><span class=\"csipd-not-enforced\">1500 W — <strong style=\"color:#c00\">NOT enforced</strong>: fronius_1 has no control model</span>"),
        "{dom}"
    );
    assert_eq!(
        dom.matches("csipd-not-enforced").count(),
        1,
        "only the export limit is marked"
    );
    assert!(
        dom.contains("<div class=\"csipd-read-only\"><strong>read only (no control model)</strong>: device 'fronius_1' has no control model (SunSpec 123 or 704): csipd reads it but cannot limit it</div>"),
        "{dom}"
    );
    assert!(
        dom.contains(&format!(
            "Certificate (pinned): <code style=\"word-break:break-all\">{fingerprint}</code>"
        )),
        "{dom}"
    );
    assert!(
        dom.contains("data-title=\"Notes\">"),
        "the notes cell is labelled"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The status view with the utility's prices (now and next, saying who pays) and a site
/// without a meter: the export limit is said to be held at the inverters, never "meter
/// not answering".
#[test]
fn status_view_prices_and_a_site_without_a_meter() {
    let (server, handle) = status_common::start_sample_server();
    handle.update(|s| {
        s.utility.prices = status_common::sample_prices(s.now_unix_s);
        s.devices
            .retain(|d| d.role != csipd::status::DeviceRole::Meter);
        s.limits[0].end_unix_s = None;
        s.limits[0].source = csipd::status::LimitSource::FailSafe {
            cause: csipd::status::FailSafeCause::NoMeter,
        };
    });
    let dir = runtime_common::temp_dir("luci-prices");
    let config = dir.join("csipd");
    std::fs::write(&config, "config csipd 'main'\n").unwrap();
    let h = luci_harness::Harness::start(luci_harness::Backend {
        status_url: server.url(),
        config,
        reload_cmd: "true".into(),
        read_only: true,
        script: String::new(),
        calls: Default::default(),
    });
    for width in [1280, 390] {
        let dom = view_dom(&h, "csipd/status", width, true, "");
        for needle in [
            "data-title=\"Energy\">Energy you buy (import)<",
            "data-title=\"Price now\">you pay 0.2800 AUD/kWh until ",
            "data-title=\"Energy\">Energy you sell (export)<",
            "data-title=\"Price now\">you pay 0.0300 AUD/kWh until ",
            "data-title=\"Next price\">you get 0.0500 AUD/kWh, ",
            "data-title=\"Set by\">No site meter set up: the inverters' output is held at this level<",
            "No site meter is set up, so the grid, export and household use are not measured; solar is the inverters' own output.",
            "data-title=\"Solar\">4230 W (from the inverters)<",
            "data-title=\"Export\">not measured (no site meter)<",
            "data-title=\"Household use\">not measured (no site meter)<",
        ] {
            assert!(dom.contains(needle), "{width} px lacks {needle:?}:\n{dom}");
        }
        assert!(!dom.contains("meter not answering"), "{dom}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every start and end in the status view says its seconds when off the minute and is
/// HH:MM on it, as `csipd status` and the built-in page: a limit's countdown, the price
/// now and next, an upcoming event's start and end (both alike), in the site's time.
#[test]
fn status_view_times_off_the_minute_show_seconds() {
    let (server, handle) = status_common::start_sample_server();
    let tz = 34_200; // Adelaide, UTC+9:30: whole minutes, not the browser's zone.
    let m0 = (status_common::now_unix_s() / 60 + 3) * 60;
    handle.update(|s| {
        s.local_utc_offset_s = tz;
        s.limits[0].end_unix_s = Some(m0 + 7);
        s.utility.prices = status_common::sample_prices(s.now_unix_s);
        let import = &mut s.utility.prices[0];
        import.current.as_mut().unwrap().end_unix_s = m0 + 37;
        let next = import.next.as_mut().unwrap();
        next.start_unix_s = m0 + 37;
        next.end_unix_s = m0 + 120;
        let export = &mut s.utility.prices[1];
        export.current.as_mut().unwrap().end_unix_s = m0;
        let next = export.next.as_mut().unwrap();
        next.start_unix_s = m0;
        next.end_unix_s = m0 + 1800;
        // Starts on the minute, ends off it: both bounds with seconds.
        s.upcoming_events[0].start_unix_s = m0 + 60;
        s.upcoming_events[0].end_unix_s = m0 + 70;
    });
    let dir = runtime_common::temp_dir("luci-seconds");
    let config = dir.join("csipd");
    std::fs::write(&config, "config csipd 'main'\n").unwrap();
    let h = luci_harness::Harness::start(luci_harness::Backend {
        status_url: server.url(),
        config,
        reload_cmd: "true".into(),
        read_only: true,
        script: String::new(),
        calls: Default::default(),
    });
    let hms = |t| csipd::status::render::clock_hhmmss(t, tz);
    let hm = |t| csipd::status::render::clock_hhmm(t, tz);
    let dom = view_dom(&h, "csipd/status", 1280, true, "");
    for needle in [
        format!(">{} (in ", hms(m0 + 7)),
        format!(
            "data-title=\"Price now\">you pay 0.2800 AUD/kWh until {}<",
            hms(m0 + 37)
        ),
        format!(
            "data-title=\"Next price\">you pay 0.3500 AUD/kWh, {}–{}<",
            hms(m0 + 37),
            hms(m0 + 120)
        ),
        format!(
            "data-title=\"Price now\">you pay 0.0300 AUD/kWh until {}<",
            hm(m0)
        ),
        format!(
            "data-title=\"Next price\">you get 0.0500 AUD/kWh, {}–{}<",
            hm(m0),
            hm(m0 + 1800)
        ),
        format!("data-title=\"Starts\">{}<", hms(m0 + 60)),
        format!("data-title=\"Ends\">{}<", hms(m0 + 70)),
    ] {
        assert!(dom.contains(&needle), "{needle}:\n{dom}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
