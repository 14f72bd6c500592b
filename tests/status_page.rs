//! The built-in status page (`/`) rendered by headless Debian Chromium against a running
//! status server fed with a snapshot whose values this test sets: the DOM must show
//! those live values (fetched from /status by the page's script), and a screenshot is
//! kept at target/status-page.png.

mod status_common;

use status_common::*;
use std::path::{Path, PathBuf};

#[test]
fn page_renders_live_values_in_headless_chromium() {
    let (server, handle) = start_sample_server();
    // A value only the live server has, set after start: the page must fetch it.
    handle.update(|s| s.site.pv_w = Some(4567.0));
    // The site is in Adelaide (UTC+9:30); the browser here is not: times must follow
    // the site.
    handle.update(|s| s.local_utc_offset_s = 34_200);
    let limit_end = handle.get().limits[0].end_unix_s.unwrap();
    // Seconds when the end is off the minute, as `csipd status` says it.
    let site_until = csipd::status::render::clock_hhmm_or_ss(limit_end, 34_200);
    // The summary line comes from the server (seconds when the end is off the minute).
    let summary_until = csipd::status::render::clock_hhmm_or_ss(limit_end, 34_200);
    let summary = format!(
        "id=\"summary\" role=\"status\">Export limited to 1500 W by your network operator until {summary_until} — "
    );
    let countdown = format!(">{site_until} (in 1");
    let profile = std::env::temp_dir().join(format!("csipd-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&profile);
    std::fs::create_dir_all(&profile).unwrap();

    let dom = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    assert!(
        dom.contains(r#"id="site-stale" class="bad" hidden"#),
        "a fresh meter: no stale note"
    );
    let checks: &[(&str, &str)] = &[
        (
            "connection state",
            r#"id="utility-state" class="state polling">polling<"#,
        ),
        ("LFDI", LFDI),
        ("SFDI", "167261211391"),
        ("clock offset", ">+0.4 s<"),
        (
            "readings posted",
            r#"id="readings-posted">42 accepted by the utility, 1 waiting<"#,
        ),
        ("export limit value", ">1500 W<"),
        ("export limit source", "utility event 3f2a09b1…"),
        ("import limit source", "program default (SAPN dynamic)"),
        ("countdown in site time", &countdown),
        ("summary line", &summary),
        ("upcoming event", "event a1b2c3d4…"),
        ("response sent", r#"data-response="Started""#),
        ("site export", r#"id="export-w" class="num">1480 W<"#),
        ("live PV value", r#"id="pv-w" class="num">4567 W<"#),
        ("load", r#"id="load-w" class="num">2750 W<"#),
        ("inverter row", r#"data-device="fronius_1""#),
        ("stale marker", r#"class="bad">stale<"#),
        ("meter voltage", "241.3 V"),
        ("resource read with its parent", ">with its DERProgramList<"),
        ("resource read once", ">read once<"),
        (
            "resource poll error",
            r#"class="bad">HTTP 503 from server<"#,
        ),
        ("setpoint", "4321 W (86.4 %)"),
        ("recent error", "GET /derp/0/derc: HTTP 503 from server"),
        ("chart export line", r#"id="chart-export""#),
        ("chart limit line", r#"id="chart-limit""#),
    ];
    let missing: Vec<&str> = checks
        .iter()
        .filter(|(_, needle)| !dom.contains(needle))
        .map(|(what, _)| *what)
        .collect();
    assert!(missing.is_empty(), "page lacks {missing:?}; DOM:\n{dom}");
    assert!(
        dom.contains(r#"<span id="error"></span>"#),
        "page reported a fetch error"
    );

    // The chart has one point per history sample (the limit as a step line has more).
    let export_points = dom
        .split(r#"id="chart-export" points=""#)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(|p| p.split(' ').count())
        .unwrap_or(0);
    assert!(
        export_points >= 360,
        "export line has {export_points} points"
    );

    // The meter goes silent: the site's numbers are no longer shown as live.
    handle.update(|s| {
        for d in &mut s.devices {
            d.stale = true;
        }
    });
    let stale = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    assert!(
        stale.contains(r#"id="export-w" class="num">unknown (meter not answering)<"#),
        "stale export shown as unknown"
    );
    // The inverters' output is still known (their own readings).
    assert!(
        stale.contains(r#"id="pv-w" class="num">4567 W (from the inverters)<"#),
        "PV without the meter"
    );
    assert!(!stale.contains(r#"id="site-stale" class="bad" hidden"#));
    assert!(stale.contains("site power unknown: the meter is not answering"));

    // A limit no device can keep is not shown as a plain value.
    handle.update(|s| {
        s.limits[0].not_enforceable = Some("not enforceable: fronius_1 has no control model".into())
    });
    let unkept = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    assert!(
        unkept.contains("1500 W (NOT ENFORCED: fronius_1 has no control model)"),
        "not enforced limit; DOM:\n{unkept}"
    );

    // The utility's prices, now and next, saying who pays.
    handle.update(|s| s.utility.prices = sample_prices(s.now_unix_s));
    let priced = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    for needle in [
        r#"data-price="import"><td>import</td><td>you pay 0.2800 AUD/kWh until "#,
        r#"data-price="export"><td>export</td><td>you pay 0.0300 AUD/kWh until "#,
        "you get 0.0500 AUD/kWh ",
        "you pay 0.3500 AUD/kWh ",
    ] {
        assert!(priced.contains(needle), "{needle}; DOM:\n{priced}");
    }
    assert!(
        dom.contains(">no tariff from the utility<"),
        "without tariffs the page says so"
    );

    // Blocks shorter than a minute (the demo's 10 s envelopes) show their seconds, as
    // `csipd status` does: "20:44–20:44" hid them.
    let t0 = (handle.get().now_unix_s / 60 + 5) * 60;
    handle.update(|s| {
        s.upcoming_events[0].start_unix_s = t0 + 11;
        s.upcoming_events[0].end_unix_s = t0 + 21;
    });
    let short = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    let span = format!(
        ">{}–{}<",
        csipd::status::render::clock_hhmmss(t0 + 11, 34_200),
        csipd::status::render::clock_hhmmss(t0 + 21, 34_200)
    );
    assert!(short.contains(&span), "{span}; DOM:\n{short}");

    // Every start and end follows that rule: a limit's countdown, the price now and
    // next, off the minute (seconds) and on it (HH:MM), in the site's time.
    let hms = |t| csipd::status::render::clock_hhmmss(t, 34_200);
    let hm = |t| csipd::status::render::clock_hhmm(t, 34_200);
    // Whole minutes in the site's time (UTC+9:30 is whole minutes too).
    let m0 = (handle.get().now_unix_s / 60 + 3) * 60;
    handle.update(|s| {
        s.limits[0].end_unix_s = Some(m0 + 7);
        s.utility.prices = sample_prices(s.now_unix_s);
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
    });
    let seconds = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    for needle in [
        format!(">{} (in ", hms(m0 + 7)),
        format!("you pay 0.2800 AUD/kWh until {}<", hms(m0 + 37)),
        format!("you pay 0.3500 AUD/kWh {}–{}<", hms(m0 + 37), hms(m0 + 120)),
        format!("you pay 0.0300 AUD/kWh until {}<", hm(m0)),
        format!("you get 0.0500 AUD/kWh {}–{}<", hm(m0), hm(m0 + 1800)),
    ] {
        assert!(seconds.contains(&needle), "{needle}; DOM:\n{seconds}");
    }

    // No site meter configured: the page says what holds the export (the inverters'
    // output at the fail-safe level), not that a meter is stale.
    handle.update(|s| {
        s.devices
            .retain(|d| d.role != csipd::status::DeviceRole::Meter);
        s.limits[0].not_enforceable = None;
        s.limits[0].end_unix_s = None;
        s.limits[0].source = csipd::status::LimitSource::FailSafe {
            cause: csipd::status::FailSafeCause::NoMeter,
        };
        s.summary = csipd::status::summary::line(s);
    });
    let no_meter = run_chromium(&profile, &["--dump-dom"], &format!("{}/", server.url()));
    for needle in [
        "no site meter configured: the inverters' output is held at this level",
        r#"id="no-meter" class="muted">No site meter is configured"#,
        r#"id="export-w" class="num">not measured (no site meter)<"#,
        r#"id="load-w" class="num">not measured (no site meter)<"#,
        r#"id="pv-w" class="num">4567 W (from the inverters)<"#,
        "site power unknown; solar 4567 W",
        r#"id="site-stale" class="bad" hidden"#,
        "Export limited to 1500 W at the inverters, as no site meter is configured",
    ] {
        assert!(no_meter.contains(needle), "{needle}; DOM:\n{no_meter}");
    }
    // (The page's script holds every wording; the rendered cells must not.)
    for wrong in [
        ">fail-safe (meter data stale)<",
        "site power unknown: the meter is not answering",
    ] {
        assert!(!no_meter.contains(wrong), "{wrong}; DOM:\n{no_meter}");
    }

    let shot: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/status-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &profile,
        &[
            "--window-size=1280,1000",
            &format!("--screenshot={}", shot.display()),
        ],
        &format!("{}/", server.url()),
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "a real PNG"
    );
    let _ = std::fs::remove_dir_all(&profile);
}
