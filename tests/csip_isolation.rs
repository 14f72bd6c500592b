//! Failure isolation and the harness behaviours of the sans-IO engine (issue "The
//! CSIP-AUS engine as a sans-IO core"), in memory against the scripted CSIP-AUS server
//! on a virtual clock, with the CSIP-AUS rates of a real utility server (60 s polls):
//! a failing resource keeps its last good state, backs off on its own and takes neither
//! siblings nor parents down; no rediscovery loop; one bad list item drops itself only.
//! And a simulated day of polling and posting, counted request by request.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{Control, Program, Scenario, element_text, mrid_of};
use csipd::csip::ConnectionState;

/// The scripted server with the rates of a CSIP-AUS utility server.
fn utility_scenario() -> Scenario {
    let mut sc = scenario();
    for rate in [
        &mut sc.dcap_poll_s,
        &mut sc.time_poll_s,
        &mut sc.edev_list_poll_s,
        &mut sc.fsa_list_poll_s,
        &mut sc.derp_list_poll_s,
        &mut sc.der_list_poll_s,
        &mut sc.mup_list_poll_s,
    ] {
        *rate = 60;
    }
    sc.mup_post_s = 300;
    sc.default_page_limit = 10;
    sc
}

/// An active export event of `w` watts in program 1, for an hour from `now`.
fn active_export(h: &Harness, tag: &str, w: i32) -> Control {
    let mut c = Control::new(tag, h.now_s() - 10, 3600);
    c.exp_lim_w = Some(w);
    c.status = 1;
    c
}

fn gets(h: &Harness, path: &str) -> usize {
    count(&h.requests(), "GET", path)
}

fn poll_error(h: &Harness, href: &str) -> Option<String> {
    h.status()
        .polls
        .iter()
        .find(|p| p.href == href)
        .and_then(|p| p.last_error.clone())
}

#[test]
fn default_control_500_keeps_the_active_event_and_causes_no_rediscovery_loop() {
    let mut h = Harness::start(utility_scenario());
    let event = active_export(&h, "EVT1500", 1500);
    h.server.update(|s| s.fsas[0][0].controls.push(event));
    // The default fails on every GET from the first, while the DERControlList is fine.
    h.server.force_status("/edev/1/derp/1/dderc", 500, None);
    h.run_for(600);
    assert_eq!(
        h.export_limit_w(),
        Some(1500.0),
        "the active event stays in force"
    );
    // No rediscovery loop: the DeviceCapability at its own 60 s rate, nothing more.
    let dcap = gets(&h, "/dcap");
    assert!((10..=11).contains(&dcap), "GET /dcap {dcap} times in 600 s");
    // The program list and its controls at their rate; the default backs off alone
    // (2, 4, 8, 16, 32 s, then at most every 60 s: its rate).
    assert!((10..=11).contains(&gets(&h, "/edev/1/fsa/1/derp")));
    assert!((10..=11).contains(&gets(&h, "/edev/1/derp/1/derc")));
    let dderc = gets(&h, "/edev/1/derp/1/dderc");
    assert!(
        (12..=20).contains(&dderc),
        "DefaultDERControl tried {dderc} times"
    );
    assert!(
        poll_error(&h, "/edev/1/derp/1/dderc").is_some_and(|e| e.contains("500")),
        "{:?}",
        h.status().polls
    );
    assert_eq!(h.last_state(), Some(ConnectionState::Polling));

    // Read once, then failing: its last good state (import 0 W) stays too.
    let mut h = Harness::start(utility_scenario());
    let event = active_export(&h, "EVT1500", 1500);
    h.server.update(|s| s.fsas[0][0].controls.push(event));
    h.run_for(10);
    assert_eq!(h.import_limit_w(), Some(0.0));
    h.server.force_status("/edev/1/derp/1/dderc", 500, None);
    h.run_for(600);
    assert_eq!(h.export_limit_w(), Some(1500.0));
    assert_eq!(h.import_limit_w(), Some(0.0), "the last good default stays");
    assert!(gets(&h, "/dcap") <= 12);
}

#[test]
fn one_out_of_range_element_drops_only_its_event_and_is_rejected() {
    let mut h = Harness::start(utility_scenario());
    let active = active_export(&h, "EVT1500", 1500);
    // A future event whose opModImpLimW is 60000 with multiplier 0: beyond Int16.
    let mut bad = Control::new("BAD", h.now_s() + 3600, 600);
    bad.imp_lim_w = Some(60_000);
    h.server.update(|s| {
        s.fsas[0][0].controls.push(active);
        s.fsas[0][0].controls.push(bad);
    });
    h.run_for(300);
    // The valid active event and the default are in force.
    assert_eq!(h.export_limit_w(), Some(1500.0));
    assert_eq!(h.import_limit_w(), Some(0.0), "the default's import limit");
    // The bad one is answered once with 253 (rejected: invalid), to its replyTo.
    let rsp = h
        .server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp");
    let bad_rsp: Vec<_> = rsp
        .iter()
        .filter(|r| element_text(&r.body, "subject").as_deref() == Some(&mrid_of("BAD")))
        .collect();
    assert_eq!(bad_rsp.len(), 1, "{rsp:?}");
    assert_eq!(
        element_text(&bad_rsp[0].body, "status").as_deref(),
        Some("253")
    );
    // The error names the element, in the DERControlList's status.
    let error = poll_error(&h, "/edev/1/derp/1/derc").unwrap_or_default();
    assert!(
        error.contains("DERControl[2]/DERControlBase/opModImpLimW/value"),
        "{error}"
    );
    // The list is still polled at its rate (no failure, no backoff, no rediscovery).
    assert!((5..=6).contains(&gets(&h, "/edev/1/derp/1/derc")));
    assert!(gets(&h, "/dcap") <= 6);
    // The rejection is in the scheduler's ledger, so a restart does not send it again.
    let key = csipd::schedule::ResponseKey {
        event_mrid: mrid_of("BAD"),
        status: csipd::schedule::ResponseStatus::RejectedInvalid,
    };
    assert!(h.engine.schedule_state().was_sent(&key));
}

#[test]
fn a_500_on_one_program_of_two_keeps_both_programs_in_force() {
    let mut sc = utility_scenario();
    sc.fsas.push(vec![Program {
        primacy: 5,
        default_exp_lim_w: Some(4000),
        default_imp_lim_w: Some(2500),
        ..Program::default()
    }]);
    // Program 1 (primacy 0) has no import default: program 2's applies.
    sc.fsas[0][0].default_imp_lim_w = None;
    let mut h = Harness::start(sc);
    let event = active_export(&h, "EVT1500", 1500);
    h.server.update(|s| s.fsas[0][0].controls.push(event));
    h.run_for(10);
    assert_eq!(h.export_limit_w(), Some(1500.0));
    assert_eq!(h.import_limit_w(), Some(2500.0));
    // Program 2's list, controls and default all answer 500 from now on.
    for path in [
        "/edev/1/fsa/2/derp",
        "/edev/1/derp/2/derc",
        "/edev/1/derp/2/dderc",
    ] {
        h.server.force_status(path, 500, None);
    }
    let failing_from = h.requests().len();
    // A new event on program 1 is still picked up within one poll.
    let mut newer = active_export(&h, "EVT900", 900);
    newer.creation_time = h.now_s();
    h.server.update(|s| s.fsas[0][0].controls.push(newer));
    h.run_for(600);
    assert_eq!(h.export_limit_w(), Some(900.0), "program 1 keeps working");
    assert_eq!(
        h.import_limit_w(),
        Some(2500.0),
        "program 2's last good default stays"
    );
    let later = &h.requests()[failing_from..];
    assert!((10..=11).contains(&count(later, "GET", "/edev/1/fsa/1/derp")));
    assert!(count(later, "GET", "/edev/1/fsa/2/derp") >= 10, "retried");
    assert!(count(later, "GET", "/dcap") <= 11, "no rediscovery");
    assert!(poll_error(&h, "/edev/1/fsa/2/derp").is_some());
    assert!(poll_error(&h, "/edev/1/fsa/1/derp").is_none());
}

#[test]
fn fsa_timeout_while_the_program_list_is_fine() {
    let mut h = Harness::start(utility_scenario());
    let event = active_export(&h, "EVT1500", 1500);
    h.server.update(|s| s.fsas[0][0].controls.push(event));
    h.run_for(10);
    h.server.force_status("/edev/1/fsa", 0, None);
    let from = h.requests().len();
    let mut newer = active_export(&h, "EVT700", 700);
    newer.creation_time = h.now_s();
    h.server.update(|s| s.fsas[0][0].controls.push(newer));
    h.run_for(600);
    assert_eq!(h.export_limit_w(), Some(700.0), "controls still followed");
    let later = &h.requests()[from..];
    assert!((10..=11).contains(&count(later, "GET", "/edev/1/fsa/1/derp")));
    assert!(
        count(later, "GET", "/edev/1/fsa") >= 10,
        "the FSA list retried"
    );
    assert!(count(later, "GET", "/dcap") <= 11, "no rediscovery");
    let error = poll_error(&h, "/edev/1/fsa").unwrap_or_default();
    assert!(error.contains("no response"), "{error}");
    // A timeout is an answer from nobody, but the others answer: not "unreachable".
    assert_eq!(h.status().state, ConnectionState::Polling);
}

#[test]
fn all_21_device_capability_repolled_at_its_own_rate_after_registration() {
    let mut sc = utility_scenario();
    sc.preregistered = false;
    sc.dcap_poll_rate_after_registration = true;
    let mut config = engine_config();
    config.in_band_registration = true;
    let mut h = Harness::new(config, sc);
    h.run_for(600);
    let dcap: Vec<u64> = h
        .server
        .requests_to("GET", "/dcap")
        .iter()
        .map(|r| r.at_ms)
        .collect();
    // Read at start (no pollRate), again right after registering (60 s stated), then
    // every 60 s: not after a 300 s default.
    assert!(dcap.len() >= 10, "{dcap:?}");
    assert!(dcap[1] < 5_000, "{dcap:?}");
    for pair in dcap[1..].windows(2) {
        assert_eq!(pair[1] - pair[0], 60_000, "{dcap:?}");
    }
}

#[test]
fn a_failing_reading_post_never_blocks_the_other_usage_point() {
    let mut sc = utility_scenario();
    sc.mup_post_s = 60;
    let mut h = Harness::start(sc);
    assert!(h.run_until(10, |h| h.server.mup_count() == 2));
    // The site usage point's readings are refused with 500 from now on.
    h.server.force_status("/mup/1", 500, None);
    h.run_for(900);
    let der_readings = h.server.requests_to("POST", "/mup/2");
    let der_w = csipd::sep2::mrid::mirror_meter_reading(LFDI, "der", "w", PEN).expect("mrid");
    let der_w_count = der_readings
        .iter()
        .filter(|r| element_text(&r.body, "mRID").as_deref() == Some(der_w.as_str()))
        .count();
    assert!(der_w_count >= 14, "DER W readings in 900 s: {der_w_count}");
    assert!(!h.server.requests_to("POST", "/mup/1").is_empty());
    assert!(poll_error(&h, "/mup/1").is_none(), "a send, not a poll");
    assert!(
        h.status().last_error.is_some_and(|e| e.contains("/mup/1")),
        "the failure is said"
    );
}

#[test]
fn a_simulated_day_of_polling_and_posting() {
    let mut h = Harness::start(utility_scenario());
    let started = std::time::Instant::now();
    let cpu = || {
        // utime + stime of this thread, in clock ticks (Linux).
        std::fs::read_to_string("/proc/thread-self/stat")
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                let f: Vec<&str> = rest.split_whitespace().collect();
                Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
            })
            .unwrap_or(0)
    };
    let cpu0 = cpu();
    h.run_for(24 * 3600);
    let cpu_ticks = cpu() - cpu0;
    let requests = h.requests();
    eprintln!(
        "24 h simulated: {} requests, {} engine inputs, {:.2} s wall, {} CPU ticks (1/100 s) \
         for engine and scripted server, {:.2} s inside the engine's calls",
        requests.len(),
        h.inputs,
        started.elapsed().as_secs_f64(),
        cpu_ticks,
        h.engine_time.as_secs_f64()
    );
    // Every 60 s resource read once a minute: 1440 times a day (+1 at the end).
    for path in [
        "/dcap",
        "/tm",
        "/edev",
        "/edev/1/rg",
        "/edev/1/fsa",
        "/edev/1/fsa/1/derp",
        "/edev/1/derp/1/derc",
        "/edev/1/derp/1/dderc",
        "/edev/1/derp/1/dc",
        "/edev/1/der",
        "/mup",
    ] {
        let n = count(&requests, "GET", path);
        // The MUP list is read once more right after the usage points are created.
        assert!((1440..=1442).contains(&n), "GET {path}: {n}");
    }
    // Readings: one per channel per 300 s interval; the site measures W, var and V
    // (total and phase A) and Hz: 7 channels; the DER 6. 288 intervals a day, the first
    // and the one in progress at the end not posted.
    let site = count(&requests, "POST", "/mup/1");
    let der = count(&requests, "POST", "/mup/2");
    assert!((287 * 7..=288 * 7).contains(&site), "site readings {site}");
    assert!((287 * 6..=288 * 6).contains(&der), "DER readings {der}");
    // Reports: at start and on the hourly backstop, nothing changed in between.
    let ders = count(&requests, "PUT", "/edev/1/der/1/ders");
    assert!((24..=25).contains(&ders), "DERStatus PUTs {ders}");
    assert_eq!(count(&requests, "POST", "/mup"), 2);
    assert_eq!(h.export_limit_w(), Some(0.0));
    assert!(
        h.status().last_error.is_none(),
        "{:?}",
        h.status().last_error
    );
}

#[test]
fn a_404_on_a_known_href_walks_again_from_the_top_at_most_once_a_minute() {
    let mut h = Harness::start(utility_scenario());
    let event = active_export(&h, "EVT1500", 1500);
    h.server.update(|s| s.fsas[0][0].controls.push(event));
    h.run_for(90);
    h.server.force_status("/edev/1/fsa/1/derp", 404, None);
    let from = h.requests().len();
    let gone_at = h.elapsed_ms();
    h.run_for(300);
    let later = &h.requests()[from..];
    // Walked again from the DeviceCapability right after the first 404...
    let dcap: Vec<u64> = later
        .iter()
        .filter(|r| r.path == "/dcap")
        .map(|r| r.at_ms)
        .collect();
    assert!(
        dcap.iter().any(|at| *at < gone_at + 45_000),
        "rediscovery after the 404: {dcap:?} (404 from {gone_at})"
    );
    // ...but not in a loop: at most one extra DeviceCapability read a minute.
    assert!(dcap.len() <= 10, "{dcap:?}");
    // What was known stays in force meanwhile, and the failure is shown.
    assert_eq!(h.export_limit_w(), Some(1500.0));
    assert!(
        poll_error(&h, "/edev/1/fsa/1/derp").is_some_and(|e| e.contains("404")),
        "{:?}",
        h.status().polls
    );
    h.server.clear_forced("/edev/1/fsa/1/derp");
    h.run_for(70);
    assert!(poll_error(&h, "/edev/1/fsa/1/derp").is_none());
}

/// Every paged list keeps the note about an item it left out in its status, read after
/// read (the good read clears the list's old error, not this read's note), and drops it
/// once the item reads again. One bad item per list, each on its own, served by the
/// scripted server with one element broken: another EndDevice's sFDI, an FSA without its
/// mRID, a DERProgram whose primacy is a word, a DERControl whose creationTime is a word.
#[test]
fn every_list_keeps_the_note_of_an_item_left_out_until_it_reads_again() {
    use std::cell::Cell;
    use std::rc::Rc;
    let cases: [(&str, &str, &str, &str); 4] = [
        (
            "EndDeviceList",
            "/edev",
            "<sFDI>2000</sFDI>",
            "<sFDI>two</sFDI>",
        ),
        (
            "FunctionSetAssignmentsList",
            "/edev/1/fsa",
            &format!("<mRID>F{:031X}</mRID>", 2),
            "",
        ),
        (
            "DERProgramList",
            "/edev/1/fsa/1/derp",
            "<primacy>7</primacy>",
            "<primacy>high</primacy>",
        ),
        (
            "DERControlList",
            "/edev/1/derp/1/derc",
            &format!(
                "<description>{}</description><creationTime>",
                mrid_of("BAD")
            ),
            &format!(
                "<description>{}</description><creationTime>soon",
                mrid_of("BAD")
            ),
        ),
    ];
    for (list, href, good, bad) in cases {
        let mut sc = utility_scenario();
        // Two FSAs, two programs in the first (primacy 0 and 7).
        sc.fsas[0].push(Program {
            primacy: 7,
            ..Program::default()
        });
        sc.fsas.push(vec![Program::default()]);
        let mut h = Harness::start(sc.clone());
        let mut control = active_export(&h, "BAD", 1000);
        control.start = h.now_s() + 3600;
        control.status = 0;
        let good_one = active_export(&h, "GOOD", 1500);
        // Every request goes to a second in-memory copy of the server, whose answers
        // to `href` have the one element broken while `broken` is set.
        let inner = csip_server::ScriptedServer::in_memory(sc);
        inner.update(|s| {
            s.fsas[0][0].controls.push(good_one);
            s.fsas[0][0].controls.push(control);
        });
        let broken = Rc::new(Cell::new(true));
        let is_broken = Rc::clone(&broken);
        let target = href.to_string();
        let (good, bad) = (good.to_string(), bad.to_string());
        h.extra_routes = Some(Box::new(move |method, url, body, now_s, at_ms| {
            let mut reply = inner.exchange(method, url, body, now_s, at_ms);
            let path = url.split('?').next().unwrap_or(url);
            if is_broken.get() && path == target && method == "GET" {
                assert!(reply.body.contains(&good), "{list}: {}", reply.body);
                reply.body = reply.body.replacen(&good, &bad, 1);
            }
            Some(reply)
        }));
        h.run_for(300);
        // Several good reads of the list later, its note is still shown.
        let error = poll_error(&h, href);
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("1 item left out") && e.contains(list)),
            "{list}: {error:?}"
        );
        // Its good siblings are in force: the active export limit of program 1.
        assert_eq!(h.export_limit_w(), Some(1500.0), "{list}");
        broken.set(false);
        h.run_for(120);
        assert_eq!(poll_error(&h, href), None, "{list}: the item reads again");
    }
}

/// A resource read with its parent (a program's DERControlList and DefaultDERControl
/// with the DERProgramList) has no poll time of its own; the status says which list's
/// reads read it, while a resource on its own timer has a time and no such note.
#[test]
fn a_resource_read_with_its_parent_says_so_in_the_status() {
    let mut h = Harness::start(utility_scenario());
    h.run_for(120);
    let polls = h.status().polls;
    let find = |href: &str| {
        polls
            .iter()
            .find(|p| p.href == href)
            .unwrap_or_else(|| panic!("{href} in {polls:?}"))
    };
    for href in ["/edev/1/derp/1/derc", "/edev/1/derp/1/dderc"] {
        let p = find(href);
        assert_eq!(p.next_poll_s, None, "{p:?}");
        assert_eq!(
            p.next_read,
            Some(csipd::csip::NextRead::With("DERProgramList".into())),
            "{p:?}"
        );
    }
    let list = find("/edev/1/fsa/1/derp");
    assert!(
        list.next_poll_s.is_some() && list.next_read.is_none(),
        "{list:?}"
    );
}
