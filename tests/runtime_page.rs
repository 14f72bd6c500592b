//! The built-in status page of a running `csipd demo`, rendered by headless Debian
//! Chromium: the DOM must show the demo's live values (limit and its source, site
//! flows, both devices, the inverter's setpoint, the chart). Screenshot kept at
//! target/status-page-demo.png.

mod runtime_common;
#[path = "status_common/mod.rs"]
mod status_common;

use runtime_common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The number in `<td id="ID" class="num">N W<`, if the page shows one.
fn watts_in(dom: &str, id: &str) -> Option<f64> {
    let rest = dom.split(&format!(r#"id="{id}" class="num">"#)).nth(1)?;
    rest.split(" W<").next()?.trim().parse().ok()
}

#[test]
fn page_renders_the_live_demo_in_headless_chromium() {
    let mut demo = spawn(&["demo", "--no-utility", "--port", "0", "--seconds", "120"]);
    let url = demo
        .stdout_line("status: ", Duration::from_secs(30))
        .trim_end_matches("/status")
        .to_string();
    // Wait until curtailment is under way so the page has a limit, a setpoint and a
    // chart line (two history points with export, 10 s apart).
    let s = wait_for(&url, Duration::from_secs(60), "curtailment", |s| {
        export_limit(s).is_some_and(|(_, kind)| kind != "fail_safe")
            && s.setpoints.iter().any(|p| p.limit_w.is_some())
            && s.site.pv_w.is_some()
            && s.history
                .points
                .iter()
                .filter(|p| p.export_w.is_some())
                .count()
                >= 2
    });
    let (limit_w, _) = export_limit(&s).expect("limit");

    let profile = std::env::temp_dir().join(format!("csipd-chromium-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();
    let dom = status_common::run_chromium(&profile, &["--dump-dom"], &format!("{url}/"));
    let after = status(&url);

    let checks: &[(&str, String)] = &[
        (
            "connection state",
            r#"class="state not_configured">not_configured<"#.to_string(),
        ),
        ("export limit value", format!(">{limit_w:.0} W<")),
        (
            "pv inverter row",
            r#"data-device="pv_inverter""#.to_string(),
        ),
        ("meter row", r#"data-device="site_meter""#.to_string()),
        ("chart export line", r#"id="chart-export""#.to_string()),
        ("chart limit line", r#"id="chart-limit""#.to_string()),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, needle)| !dom.contains(needle.as_str()))
        .map(|(what, _)| *what)
        .collect();
    assert!(missing.is_empty(), "page lacks {missing:?}; DOM:\n{dom}");
    assert!(
        dom.contains("tariff window demo_window") || dom.contains("fixed limit"),
        "the limit's source is shown; DOM:\n{dom}"
    );
    assert!(
        dom.contains(r#"<span id="error"></span>"#),
        "page reported a fetch error"
    );

    // Live values: the PV the page shows lies between what /status said before and
    // after the page loaded (the site moves while Chromium runs), within 300 W.
    let pv_page = watts_in(&dom, "pv-w").expect("page shows PV watts");
    let (a, b) = (s.site.pv_w.unwrap_or(0.0), after.site.pv_w.unwrap_or(0.0));
    assert!(
        pv_page >= a.min(b) - 300.0 && pv_page <= a.max(b) + 300.0,
        "page PV {pv_page} W vs /status {a} W .. {b} W"
    );
    assert!(
        pv_page > 0.0 && pv_page < 4500.0,
        "curtailed PV on the page: {pv_page}"
    );
    assert!(
        watts_in(&dom, "export-w").is_some(),
        "page shows export watts"
    );

    let shot: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page-demo.png");
    let _ = std::fs::remove_file(&shot);
    status_common::run_chromium(
        &profile,
        &[
            "--window-size=1280,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("{url}/"),
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real PNG"
    );
    let _ = std::fs::remove_dir_all(&profile);
    assert_eq!(demo.terminate(), Some(0));
}
