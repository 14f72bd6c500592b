//! `csipd demo` as a process: the real daemon path against the simulated site. Its
//! /status must show curtailment within a minute, export at or below the limit (within
//! max(2 %, 100 W)) afterwards, and the limit's source.

mod runtime_common;

use csipd::status::{LimitMode, LimitSource};
use runtime_common::*;
use std::time::{Duration, Instant};

#[test]
fn demo_curtails_to_the_export_limit_within_a_minute() {
    let mut demo = spawn(&["demo", "--port", "0", "--seconds", "150"]);
    let url = demo
        .stdout_line("status: ", Duration::from_secs(30))
        .trim_end_matches("/status")
        .to_string();
    let started = Instant::now();

    // Curtailment: a limit from the owner's config (not the start-up fail-safe), the
    // inverter's written setpoint below what the sun gives, export within the limit.
    let s = wait_for(&url, Duration::from_secs(60), "curtailment", |s| {
        let Some((limit_w, kind)) = export_limit(s) else {
            return false;
        };
        let curtailed = s
            .setpoints
            .iter()
            .any(|p| p.limit_w.is_some_and(|w| w < 4500.0));
        kind != "fail_safe"
            && curtailed
            && s.site
                .export_w
                .is_some_and(|e| e <= limit_w + tolerance_w(limit_w))
    });
    println!("curtailed after {:?}", started.elapsed());
    let limit = s.limit(LimitMode::Export).expect("export limit").clone();
    assert!(
        matches!(&limit.source, LimitSource::TariffWindow { name } if name == "demo_window")
            || matches!(&limit.source, LimitSource::Fixed { option } if option == "export_limit_w"),
        "the limit names its source: {:?}",
        limit.source
    );
    if let LimitSource::TariffWindow { .. } = limit.source {
        assert_eq!(limit.value_w, Some(1000.0));
        assert!(
            limit.end_unix_s.is_some(),
            "a tariff window says when it ends"
        );
    }

    // Then it stays there: 45 samples a second apart, past the demo's load steps (every
    // 40 s), at most 2 outside (a load drop may push export over for up to 2 s before
    // the loop catches it).
    let mut over = Vec::new();
    let mut loads = Vec::new();
    for _ in 0..45 {
        std::thread::sleep(Duration::from_secs(1));
        let s = status(&url);
        let (limit_w, kind) = export_limit(&s).expect("export limit stays");
        assert_ne!(
            kind, "fail_safe",
            "meter went stale during the demo: {s:#?}"
        );
        let export_w = s.site.export_w.expect("export known");
        loads.extend(s.site.load_w.map(|w| w.round() as i64));
        if export_w > limit_w + tolerance_w(limit_w) {
            over.push((export_w, limit_w));
        }
    }
    assert!(
        over.len() <= 2,
        "export above the limit too often: {over:?}"
    );
    loads.sort();
    assert!(
        loads.last().unwrap_or(&0) - loads.first().unwrap_or(&0) > 500,
        "the load stepped while sampling: {loads:?}"
    );

    let s = status(&url);
    assert_eq!(s.devices.len(), 2, "{:?}", s.devices);
    assert!(s.devices.iter().all(|d| !d.stale), "{:?}", s.devices);
    assert!(!s.history.points.is_empty(), "the chart history fills");
    assert!(
        s.history.points.iter().any(|p| p.export_limit_w.is_some()),
        "history records the limit"
    );
    assert_eq!(demo.terminate(), Some(0), "clean exit on SIGTERM");
}
