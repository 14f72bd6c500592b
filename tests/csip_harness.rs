//! The engine against the hand-scripted CSIP-AUS server (tests/common/csip_server.rs)
//! in memory on a virtual clock (tests/common/csip_memory.rs), playing the
//! certification harness's client procedures ALL-01, 02, 03, 03-REJ, 05, 06, 07, 08, 09,
//! 10, 11, 12, 18, 19, 20, 23, 29, MUL-01, 02 and 03, and the demand response ones
//! (DRA-01, DRA-02, DRD-01, DRG-01, DRL-01), checking what csipd sends and when. Every PUT/POST body is
//! validated with xmllint against csipaus-core.xsd (`bash tests/setup.sh` fetches it).
//! No test here waits for the wall clock.

#[path = "common/csip_memory.rs"]
mod csip_memory;
#[path = "common/csip_server.rs"]
mod csip_server;

use csip_memory::*;
use csip_server::{Control, Program, Recorded, ScriptedServer, element_text, mrid_of};
use csipd::csip::ConnectionState;
use csipd::csip::response::Delivery;
use csipd::schedule::ControlMode;

fn assert_all_bodies_valid(server: &ScriptedServer) {
    let invalid = csip_server::invalid_bodies(server);
    assert!(
        invalid.is_empty(),
        "bodies failing csipaus-core.xsd: {invalid:#?}"
    );
}

#[test]
fn all_01_discovery_with_out_of_band_registration_pages_every_list() {
    let mut sc = scenario();
    sc.max_page_limit = 1; // the EndDeviceList (3 devices) comes one per page
    let mut h = Harness::start(sc);
    assert!(h.run_until(60, |h| {
        let r = h.requests();
        has(&r, "GET", "/dcap")
            && has(&r, "GET", "/tm")
            && has(&r, "GET", "/edev")
            && has(&r, "GET", "/edev/1/der")
            && has(&r, "GET", "/edev/1/derp/1/derc")
            && has(&r, "GET", "/edev/1/derp/1/dderc")
    }));
    // The first GET /dcap leaves at once; the walk down to the controls takes no time
    // of its own (no wall clock, no waiting for a round).
    let requests = h.requests();
    assert_eq!(requests[0].path, "/dcap");
    assert_eq!(requests[0].at_ms, 0);
    h.run_for(5);
    let requests = h.requests();
    // Every EndDeviceList page carries s and l, and all three pages were read.
    let pages: Vec<&Recorded> = requests
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/edev")
        .collect();
    assert!(
        pages
            .iter()
            .all(|r| r.query.contains("s=") && r.query.contains("l=")),
        "{pages:?}"
    );
    for start in ["s=0", "s=1", "s=2"] {
        assert!(
            pages.iter().any(|r| r.query.contains(start)),
            "no page {start}: {pages:?}"
        );
    }
    // Out of band: no POST /edev. The registration PIN matched.
    assert!(!has(&requests, "POST", "/edev"));
    assert!(has(&requests, "GET", "/edev/1/rg"));
    assert_eq!(h.last_state(), Some(ConnectionState::Connected));
    // The default control (export 0 W) is active.
    assert_eq!(h.export_limit_w(), Some(0.0));
    // No href was invented: every GET was for a path the server links to.
    for r in requests.iter().filter(|r| r.method == "GET") {
        assert!(
            !r.path.contains("//") && r.path != "/edev/1/cp",
            "unexpected GET {}",
            r.path
        );
    }
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_02_in_band_registration_then_der_reports() {
    let mut sc = scenario();
    sc.preregistered = false;
    let mut config = engine_config();
    config.in_band_registration = true;
    let mut h = Harness::new(config, sc);
    assert!(h.run_until(60, |h| {
        let r = h.requests();
        has(&r, "POST", "/edev")
            && has(&r, "GET", "/edev/1/der")
            && has(&r, "PUT", "/edev/1/der/1/dercap")
            && has(&r, "PUT", "/edev/1/der/1/derg")
            && has(&r, "PUT", "/edev/1/der/1/ders")
    }));
    let requests = h.requests();
    let post = requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/edev")
        .expect("POST /edev");
    // end-device-contents: LFDI uppercase 40 hex, SFDI derived from it.
    assert_eq!(element_text(&post.body, "lFDI").as_deref(), Some(LFDI));
    assert_eq!(
        element_text(&post.body, "sFDI").and_then(|s| s.parse::<u64>().ok()),
        Some(sfdi())
    );
    // The DERList is read only after the registration.
    let post_at = requests
        .iter()
        .position(|r| r.method == "POST" && r.path == "/edev");
    let der_at = requests
        .iter()
        .position(|r| r.method == "GET" && r.path == "/edev/1/der");
    assert!(post_at < der_at);
    assert_eq!(count(&requests, "POST", "/edev"), 1, "registered once");
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_03_connection_point_is_put_with_the_nmi() {
    let mut sc = scenario();
    sc.preregistered = false;
    let mut config = engine_config();
    config.in_band_registration = true;
    config.nmi = Some("4102345678".into());
    let mut h = Harness::new(config, sc);
    assert!(h.run_until(60, |h| has(&h.requests(), "PUT", "/edev/1/cp")));
    h.run_for(10);
    let requests = h.requests();
    let put = h.server.requests_to("PUT", "/edev/1/cp");
    assert_eq!(put.len(), 1);
    assert_eq!(
        element_text(&put[0].body, "csipaus:connectionPointId").as_deref(),
        Some("4102345678"),
        "{}",
        put[0].body
    );
    // Not before the Registration's PIN was read (ALL-03-REJ: nothing PUT unchecked).
    let rg = requests
        .iter()
        .position(|r| r.method == "GET" && r.path == "/edev/1/rg")
        .expect("Registration read");
    let cp = requests
        .iter()
        .position(|r| r.method == "PUT" && r.path == "/edev/1/cp")
        .expect("cp");
    assert!(rg < cp, "ConnectionPoint PUT before the PIN was read");
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_05_missing_registration_link_is_tolerated() {
    let mut sc = scenario();
    sc.registration_link = false;
    let mut config = engine_config();
    config.in_band_registration = true;
    let mut h = Harness::new(config, sc);
    assert!(h.run_until(60, |h| {
        let r = h.requests();
        has(&r, "GET", "/edev")
            && has(&r, "POST", "/edev")
            && has(&r, "GET", "/edev/1/fsa")
            && has(&r, "GET", "/edev/1/der")
    }));
    h.run_for(5);
    let requests = h.requests();
    assert!(
        !has(&requests, "GET", "/edev/1/rg"),
        "no RegistrationLink: rg never invented"
    );
    assert_eq!(
        h.export_limit_w(),
        Some(0.0),
        "controls followed without a Registration"
    );
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_03_rej_registration_pin_mismatch_stops_all_but_a_slow_recheck() {
    let mut sc = scenario();
    sc.dcap_poll_s = 60;
    sc.edev_list_poll_s = 60;
    sc.fsa_list_poll_s = 60;
    sc.derp_list_poll_s = 60;
    sc.der_list_poll_s = 60;
    sc.mup_list_poll_s = 60;
    sc.time_poll_s = 60;
    let mut config = engine_config();
    config.pin = Some(999_990);
    config.nmi = Some("4102345678".into());
    let mut h = Harness::new(config, sc);
    h.run_for(30 * 60);
    assert_eq!(h.last_state(), Some(ConnectionState::PinMismatch));
    assert!(
        h.outcomes.is_empty(),
        "no controls taken from a server with another PIN"
    );
    let error = h
        .statuses
        .last()
        .and_then(|s| s.last_error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("PIN 111115") && error.contains("999990"),
        "{error}"
    );
    let status = h.status();
    let rg = status
        .polls
        .iter()
        .find(|p| p.kind == "Registration")
        .expect("Registration in the status");
    assert!(
        rg.last_error
            .as_deref()
            .is_some_and(|e| e.contains("not the configured PIN")),
        "{rg:?}"
    );
    let requests = h.requests();
    // Nothing PUT or POSTed, not even the ConnectionPoint.
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "PUT" || r.method == "POST"),
        "{:?}",
        requests
            .iter()
            .filter(|r| r.method != "GET")
            .map(|r| (&r.method, &r.path))
            .collect::<Vec<_>>()
    );
    // After the PIN was read, only the Registration, every 300 s: 30 min → ~6 reads.
    let rg_at = requests
        .iter()
        .position(|r| r.path == "/edev/1/rg")
        .expect("rg read");
    let after: Vec<&Recorded> = requests[rg_at + 1..]
        .iter()
        .filter(|r| r.at_ms > requests[rg_at].at_ms)
        .collect();
    assert!(
        after.iter().all(|r| r.path == "/edev/1/rg"),
        "{:?}",
        after.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert!((5..=7).contains(&after.len()), "{} re-checks", after.len());
    // The server's PIN changes to ours: the client picks up at the next re-check.
    h.server.update(|s| s.pin = 999_990);
    assert!(h.run_until(400, |h| h.export_limit_w() == Some(0.0)));
    assert_eq!(h.last_state(), Some(ConnectionState::Connected));
}

/// Readings POSTed to a usage point, as (mRID, start, duration, value).
fn readings(requests: &[Recorded], mup_path: &str) -> Vec<(String, i64, i64, i64)> {
    requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == mup_path)
        .filter_map(|r| {
            let period = element_text(&r.body, "timePeriod")?;
            Some((
                element_text(&r.body, "mRID")?,
                element_text(&period, "start")?.parse().ok()?,
                element_text(&period, "duration")?.parse().ok()?,
                element_text(&r.body, "value")?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
fn all_06_readings_and_a_control_picked_up_in_one_poll() {
    let mut h = Harness::start(scenario());
    // Two usage points created, then the list read again (the harness waits for it).
    assert!(h.run_until(30, |h| count(&h.requests(), "POST", "/mup") >= 2));
    let after_post = h.requests().len();
    assert!(h.run_until(30, |h| {
        h.requests()[after_post..]
            .iter()
            .any(|x| x.method == "GET" && x.path == "/mup")
    }));
    // A control added at runtime is active within one poll (2 s).
    let start = h.now_s() - 1;
    h.server.update(|s| {
        let mut c = Control::new("DERC1", start, 300);
        c.exp_lim_w = Some(1500);
        s.fsas[0][0].controls.push(c);
    });
    let added = h.elapsed_ms();
    assert!(h.run_until(10, |h| h.export_limit_w() == Some(1500.0)));
    assert!(
        h.elapsed_ms() - added <= 2_100,
        "picked up after {} ms",
        h.elapsed_ms() - added
    );
    h.run_for(12);
    let requests = h.requests();
    let site_readings = readings(&requests, "/mup/1");
    let der_readings = readings(&requests, "/mup/2");
    assert!(site_readings.len() >= 6, "site readings: {site_readings:?}");
    assert!(der_readings.len() >= 6, "DER readings: {der_readings:?}");
    // Every reading period starts on a postRate (2 s) boundary; mRIDs end with the PEN.
    for (mrid, start, duration, _) in site_readings.iter().chain(&der_readings) {
        assert_eq!(*duration, 2);
        assert_eq!(start % 2, 0, "period start {start} not on a 2 s boundary");
        assert!(mrid.ends_with("00012345"), "{mrid}");
    }
    // The site's active power total is the average of what was measured (-1200 W).
    let site_w_mrid =
        csipd::sep2::mrid::mirror_meter_reading(LFDI, "site", "w", PEN).expect("mrid");
    assert!(
        site_readings
            .iter()
            .any(|(m, _, _, v)| *m == site_w_mrid && *v == -1200)
    );
    // W and var are flagged as averages in the usage point's ReadingTypes.
    let mup_post = h.server.requests_to("POST", "/mup");
    assert!(
        mup_post[0]
            .body
            .contains("<dataQualifier>2</dataQualifier>")
    );
    assert!(
        mup_post[0].body.contains("<uom>38</uom>") && mup_post[0].body.contains("<uom>63</uom>")
    );
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_29_usage_points_right_after_discovery_readings_from_the_first_post_rate_boundary() {
    // The server states 60 s; csipd's own default is 300 s.
    let mut sc = scenario();
    sc.mup_post_s = 60;
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
    let mut h = Harness::start(sc);
    h.run_for(600);
    let requests = h.requests();
    let creates = h.server.requests_to("POST", "/mup");
    assert_eq!(creates.len(), 2, "site and DER usage points, once each");
    assert!(
        creates.iter().all(|r| r.at_ms <= 2_000),
        "usage points created right after discovery: {:?}",
        creates.iter().map(|r| r.at_ms).collect::<Vec<_>>()
    );
    let site_w = csipd::sep2::mrid::mirror_meter_reading(LFDI, "site", "w", PEN).expect("mrid");
    let der_w = csipd::sep2::mrid::mirror_meter_reading(LFDI, "der", "w", PEN).expect("mrid");
    let site: Vec<_> = readings(&requests, "/mup/1")
        .into_iter()
        .filter(|(m, ..)| *m == site_w)
        .collect();
    let der: Vec<_> = readings(&requests, "/mup/2")
        .into_iter()
        .filter(|(m, ..)| *m == der_w)
        .collect();
    // ALL-29: 8 site and 8 DER active-power readings within 600 s.
    assert!(site.len() >= 8, "site W readings in 600 s: {}", site.len());
    assert!(der.len() >= 8, "DER W readings in 600 s: {}", der.len());
    // The first reading covers the first 60 s interval after the start.
    assert!(site[0].1 <= T0_S + 60, "{site:?}");
    assert!(
        site.iter()
            .all(|(_, start, d, _)| *d == 60 && start % 60 == 0)
    );
}

#[test]
fn all_07_connection_status_follows_the_inverters() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/ders")));
    h.site.set_connected(false);
    assert!(
        h.run_until(30, |h| count(&h.requests(), "PUT", "/edev/1/der/1/ders")
            >= 2)
    );
    h.site.set_connected(true);
    assert!(
        h.run_until(30, |h| count(&h.requests(), "PUT", "/edev/1/der/1/ders")
            >= 3)
    );
    h.run_for(20);
    let puts = h.server.requests_to("PUT", "/edev/1/der/1/ders");
    let connect = |body: &str| {
        element_text(body, "genConnectStatus")
            .and_then(|g| element_text(&g, "value"))
            .and_then(|v| u8::from_str_radix(&v, 16).ok())
    };
    assert_eq!(
        connect(&puts[0].body).map(|v| v & 1),
        Some(1),
        "{}",
        puts[0].body
    );
    assert_eq!(
        connect(&puts[1].body).map(|v| v & 1),
        Some(0),
        "{}",
        puts[1].body
    );
    assert_eq!(
        connect(&puts[2].body).map(|v| v & 1),
        Some(1),
        "{}",
        puts[2].body
    );
    assert_eq!(puts.len(), 3, "no PUT without a change");
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_09_capability_and_settings() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| {
        let r = h.requests();
        has(&r, "PUT", "/edev/1/der/1/dercap")
            && has(&r, "PUT", "/edev/1/der/1/derg")
            && has(&r, "PUT", "/edev/1/der/1/ders")
            && has(&r, "PUT", "/edev/1/der/1/dera")
    }));
    let cap = &h.server.requests_to("PUT", "/edev/1/der/1/dercap")[0].body;
    // PV only: export and generation limits, no import/load limiting.
    assert_eq!(
        element_text(cap, "csipaus:doeModesSupported").as_deref(),
        Some("05"),
        "{cap}"
    );
    assert!(element_text(cap, "rtgMaxW").is_some(), "{cap}");
    let settings = &h.server.requests_to("PUT", "/edev/1/der/1/derg")[0].body;
    assert!(element_text(settings, "setMaxW").is_some(), "{settings}");
    assert_eq!(
        element_text(settings, "csipaus:doeModesEnabled").as_deref(),
        Some("05")
    );
    // setGradW echoes the default control's (27).
    assert_eq!(element_text(settings, "setGradW").as_deref(), Some("27"));
    assert_all_bodies_valid(&h.server);
}

#[test]
fn discovery_does_not_wait_for_the_nameplate() {
    // The inverters have not told their ratings yet: discovery, controls, DERStatus and
    // readings go; DERCapability and DERSettings (setMaxW) wait for the ratings.
    let mut config = engine_config();
    config.nameplate.rtg_max_w = 0.0;
    let nameplate = engine_config().nameplate;
    let mut h = Harness::new(config, scenario());
    assert!(h.run_until(30, |h| {
        let r = h.requests();
        has(&r, "PUT", "/edev/1/der/1/ders") && has(&r, "POST", "/mup")
    }));
    assert_eq!(h.requests()[0].at_ms, 0, "first GET /dcap at once");
    assert_eq!(h.export_limit_w(), Some(0.0));
    h.run_for(10);
    assert!(!has(&h.requests(), "PUT", "/edev/1/der/1/dercap"));
    assert!(!has(&h.requests(), "PUT", "/edev/1/der/1/derg"));
    let now = h.now;
    h.engine.handle_nameplate(nameplate, now);
    h.run_for(1);
    let cap = h.server.requests_to("PUT", "/edev/1/der/1/dercap");
    assert_eq!(cap.len(), 1);
    assert_eq!(
        element_text(&cap[0].body, "rtgMaxW").and_then(|w| element_text(&w, "value")),
        Some("5000".to_string())
    );
    assert_eq!(h.server.requests_to("PUT", "/edev/1/der/1/derg").len(), 1);
}

#[test]
fn mul_03_settings_follow_a_changed_default_ramp() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| has(&h.requests(), "PUT", "/edev/1/der/1/derg")));
    h.server.update(|s| s.fsas[0][0].set_grad_w = Some(100));
    assert!(
        h.run_until(30, |h| count(&h.requests(), "PUT", "/edev/1/der/1/derg")
            >= 2)
    );
    let puts = h.server.requests_to("PUT", "/edev/1/der/1/derg");
    assert_eq!(
        element_text(&puts[1].body, "setGradW").as_deref(),
        Some("100")
    );
}

#[test]
fn all_10_changed_post_rate_is_obeyed() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| readings(&h.requests(), "/mup/1").len() >= 2));
    h.server.update(|s| s.mup_post_s = 4);
    let changed_at = h.requests().len();
    h.run_for(16);
    let requests = h.requests();
    let later = readings(&requests[changed_at..], "/mup/1");
    let four: Vec<_> = later.iter().filter(|(_, _, d, _)| *d == 4).collect();
    assert!(four.len() >= 2, "readings after the change: {later:?}");
    for (_, start, _, _) in &four {
        assert_eq!(start % 4, 0, "4 s periods start on 4 s boundaries");
    }
    assert_all_bodies_valid(&h.server);
}

/// Responses POSTed to the replyTo, as (subject, status).
fn responses(server: &ScriptedServer) -> Vec<(String, u8)> {
    server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp")
        .iter()
        .filter_map(|r| {
            let subject = element_text(&r.body, "subject")?;
            // back from the mRID to the tag the test used
            let tag = ["DERC1", "DERC2", "DERC3", "DERC4", "DERC5", "BAD"]
                .into_iter()
                .find(|t| mrid_of(t) == subject)
                .map(str::to_string)
                .unwrap_or(subject);
            Some((tag, element_text(&r.body, "status")?.parse().ok()?))
        })
        .collect()
}

#[test]
fn all_18_control_responses() {
    let mut h = Harness::start(scenario());
    let now = h.now_s();
    h.server.update(|s| {
        let mut c1 = Control::new("DERC1", now, 3);
        c1.exp_lim_w = Some(10_000);
        c1.imp_lim_w = Some(10_000);
        s.fsas[0][0].controls.push(c1);
    });
    assert!(h.run_until(30, |h| {
        h.requests()
            .iter()
            .filter(|x| x.path == "/edev/1/rsps/site_control/rsp")
            .count()
            >= 3
    }));
    // DERC2 starts later and is cancelled before it starts; DERC3 is superseded.
    let now = h.now_s();
    h.server.update(|s| {
        let mut c2 = Control::new("DERC2", now + 60, 60);
        c2.exp_lim_w = Some(10_000);
        s.fsas[0][0].controls.push(c2);
    });
    assert!(h.run_until(30, |h| {
        responses(&h.server)
            .iter()
            .any(|(m, st)| m == "DERC2" && *st == 1)
    }));
    h.server.update(|s| {
        if let Some(c) = s.fsas[0][0]
            .controls
            .iter_mut()
            .find(|c| c.mrid == mrid_of("DERC2"))
        {
            c.status = 2;
        }
    });
    assert!(h.run_until(30, |h| {
        responses(&h.server)
            .iter()
            .any(|(m, st)| m == "DERC2" && *st == 6)
    }));
    // DERC4 starts; a newer control for the same modes takes over 3 s later and
    // supersedes it (the scheduler answers Superseded when the newer one starts).
    let now = h.now_s();
    h.server.update(|s| {
        let mut c4 = Control::new("DERC4", now + 3, 600);
        c4.exp_lim_w = Some(10_000);
        c4.imp_lim_w = Some(10_000);
        s.fsas[0][0].controls.push(c4);
    });
    let seen = |h: &Harness, tag: &str, status: u8| {
        responses(&h.server)
            .iter()
            .any(|(m, st)| m == tag && *st == status)
    };
    assert!(h.run_until(30, |h| seen(h, "DERC4", 1)));
    h.server.update(|s| {
        let mut c5 = Control::new("DERC5", now + 6, 60);
        c5.creation_time = now + 5; // newer than DERC4 (created at now + 2)
        c5.exp_lim_w = Some(0);
        c5.imp_lim_w = Some(0);
        s.fsas[0][0].controls.push(c5);
    });
    assert!(
        h.run_until(30, |h| seen(h, "DERC4", 7)),
        "{:?}",
        responses(&h.server)
    );
    h.run_for(5);
    let sent = responses(&h.server);
    let of = |tag: &str| -> Vec<u8> {
        sent.iter()
            .filter(|(m, _)| m == tag)
            .map(|(_, s)| *s)
            .collect()
    };
    assert_eq!(
        of("DERC1"),
        [1, 2, 3],
        "Received, Started, Completed in order, once each"
    );
    assert_eq!(of("DERC2"), [1, 6], "Received, then Cancelled");
    assert_eq!(of("DERC4"), [1, 2, 7], "Received, Started, then Superseded");
    // Each response names this device.
    for r in h
        .server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp")
    {
        assert_eq!(
            element_text(&r.body, "endDeviceLFDI").as_deref(),
            Some(LFDI)
        );
    }
    assert_all_bodies_valid(&h.server);
}

#[test]
fn responses_are_retried_until_accepted_and_never_duplicated() {
    let mut h = Harness::start(scenario());
    h.server
        .force_status("/edev/1/rsps/site_control/rsp", 503, Some(1));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c1 = Control::new("DERC1", now + 120, 60);
        c1.exp_lim_w = Some(1000);
        s.fsas[0][0].controls.push(c1);
    });
    assert!(h.run_until(30, |h| has(
        &h.requests(),
        "POST",
        "/edev/1/rsps/site_control/rsp"
    )));
    h.run_for(12);
    h.server.clear_forced("/edev/1/rsps/site_control/rsp");
    let cleared_ms = h.elapsed_ms();
    h.run_for(30);
    let attempts = h
        .server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp");
    assert!(attempts.len() >= 2, "retried after 503: {}", attempts.len());
    // Every attempt was the same Received response (nothing else fell due), and once
    // the server accepted it (after the 503s stopped) it was not sent again.
    assert!(
        attempts
            .iter()
            .all(|r| element_text(&r.body, "status").as_deref() == Some("1"))
    );
    let cleared = attempts.iter().filter(|r| r.at_ms >= cleared_ms).count();
    assert_eq!(cleared, 1, "one accepted POST after the server recovered");
    // The sink (the runtime's store) heard of every attempt: each 503 as one more
    // try, then the acceptance once, last, so the ledger entry is settled for good.
    let kinds: Vec<Delivery> = h.deliveries.iter().map(|(_, d)| *d).collect();
    assert_eq!(kinds.len(), attempts.len(), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&Delivery::Accepted), "{kinds:?}");
    assert!(
        kinds[..kinds.len() - 1]
            .iter()
            .all(|d| *d == Delivery::RetryLater),
        "{kinds:?}"
    );
    assert!(
        h.deliveries
            .iter()
            .all(|(k, _)| k.event_mrid == mrid_of("DERC1") && k.status.code() == 1)
    );
}

#[test]
fn all_19_changed_fsa_poll_rate_takes_effect_at_once() {
    // The FSA list starts at a 30 s rate; the harness changes it to 1 s when the first
    // FSA-list request arrives (before answering it), and wants another read soon after.
    let mut sc = scenario();
    sc.fsa_list_poll_s = 30;
    let mut h = Harness::start(sc);
    h.server
        .on_request("GET", "/edev/1/fsa", |s| s.fsa_list_poll_s = 1);
    h.run_for(6);
    let gets = h.server.requests_to("GET", "/edev/1/fsa");
    assert!(
        gets.len() >= 5,
        "1 s rate adopted at once: {} reads in 6 s",
        gets.len()
    );

    // And the other way: a 30 s rate is kept (no re-read within 29 s).
    let mut sc = scenario();
    sc.fsa_list_poll_s = 30;
    let mut h = Harness::start(sc);
    h.run_for(29);
    assert_eq!(h.server.requests_to("GET", "/edev/1/fsa").len(), 1);
    h.run_for(2);
    assert_eq!(h.server.requests_to("GET", "/edev/1/fsa").len(), 2);
}

#[test]
fn all_20_changed_program_list_poll_rate_is_kept() {
    let mut h = Harness::start(scenario());
    assert!(
        h.run_until(30, |h| count(&h.requests(), "GET", "/edev/1/fsa/1/derp")
            >= 2)
    );
    h.server.update(|s| s.derp_list_poll_s = 4);
    let changed = h.elapsed_ms();
    h.run_for(13);
    h.server.update(|s| s.derp_list_poll_s = 1);
    let back = h.elapsed_ms();
    h.run_for(13);
    let gets = h.server.requests_to("GET", "/edev/1/fsa/1/derp");
    // After the first read at the old rate, reads are 4 s apart while the rate is 4 s.
    let during: Vec<u64> = gets
        .iter()
        .map(|r| r.at_ms)
        .filter(|at| *at > changed + 2_500 && *at < back)
        .collect();
    assert!(during.len() >= 2, "{during:?}");
    for pair in during.windows(2) {
        assert_eq!(pair[1] - pair[0], 4_000, "polled {during:?} at a 4 s rate");
    }
    // Back to 1 s: learnt at the next (4 s) read, then every second.
    let after = gets.iter().filter(|r| r.at_ms > back + 4_500).count();
    assert!(after >= 7, "back to 1 s polling: {after} reads");
    // The program's controls and default are read with the list, at its rate.
    let derc = count(&h.requests(), "GET", "/edev/1/derp/1/derc");
    assert_eq!(derc, gets.len(), "DERControlList read with each list read");
}

#[test]
fn all_23_schedule_runs_through_communication_loss() {
    let mut sc = scenario();
    // The CSIP-AUS rates: the client must be back within one of them (and 60 s).
    sc.dcap_poll_s = 300;
    sc.derp_list_poll_s = 60;
    let mut h = Harness::start(sc);
    let now = h.now_s();
    h.server.update(|s| {
        for (i, (mrid, w)) in [("DERC1", 4000), ("DERC2", 1000), ("DERC3", 2000)]
            .into_iter()
            .enumerate()
        {
            let mut c = Control::new(mrid, now + 60 + 120 * i as i64, 120);
            c.exp_lim_w = Some(w);
            s.fsas[0][0].controls.push(c);
        }
    });
    assert!(h.run_until(30, |h| has(&h.requests(), "GET", "/edev/1/derp/1/dderc")));
    // The server goes away for 20 minutes.
    h.server.force_status("*", 503, None);
    let lost = h.elapsed_ms();
    h.run_for(20 * 60);
    // Back, with a new control.
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC4", now, 600);
        c.exp_lim_w = Some(3000);
        s.fsas[0][0].controls.push(c);
    });
    h.server.clear_forced("*");
    let restored = h.elapsed_ms();
    h.run_for(120);
    let limits: Vec<(u64, Option<f64>)> = h
        .outcomes
        .iter()
        .filter(|(at, _)| *at > lost && *at < restored)
        .map(|(at, o)| (*at - lost, o.active.watts(ControlMode::ExpLimW)))
        .collect();
    let values: Vec<Option<f64>> = limits.iter().map(|(_, w)| *w).collect();
    // While unreachable: DERC2 then DERC3, then the default (0 W) after the last ends.
    assert!(values.contains(&Some(1000.0)), "{limits:?}");
    assert!(values.contains(&Some(2000.0)), "{limits:?}");
    assert_eq!(values.last(), Some(&Some(0.0)), "{limits:?}");
    assert!(
        h.statuses
            .iter()
            .any(|s| s.state == ConnectionState::Unreachable)
    );
    assert_eq!(
        h.export_limit_w(),
        Some(3000.0),
        "the control sent after comms came back applies"
    );
    let requests = h.requests();
    // Back within 60 s of the server's return: the DERControlList is read again.
    let first_after = requests
        .iter()
        .find(|r| r.at_ms >= restored && r.path == "/edev/1/derp/1/derc")
        .map(|r| r.at_ms - restored)
        .expect("DERControlList read after comms restore");
    assert!(
        first_after <= 60_000,
        "first DERControlList read {first_after} ms after the return"
    );
    // Nothing backed off beyond 60 s during the outage (ALL-23 caps the backoff).
    let dcap: Vec<u64> = requests
        .iter()
        .filter(|r| r.path == "/dcap" && r.at_ms > lost + 120_000 && r.at_ms < restored)
        .map(|r| r.at_ms)
        .collect();
    assert!(dcap.windows(2).all(|w| w[1] - w[0] <= 60_000), "{dcap:?}");
    // Readings of intervals measured during the outage were kept and posted afterwards.
    let lost_s = T0_S + (lost / 1000) as i64;
    let restored_s = T0_S + (restored / 1000) as i64;
    let late: Vec<Recorded> = requests
        .into_iter()
        .filter(|r| r.at_ms >= restored)
        .collect();
    let backlog = readings(&late, "/mup/1")
        .into_iter()
        .filter(|(_, start, _, _)| *start > lost_s + 1 && *start < restored_s - 2)
        .count();
    assert!(
        backlog >= 3,
        "readings from the outage posted after it: {backlog}"
    );
}

#[test]
fn new_fsa_at_runtime_is_walked() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| has(&h.requests(), "GET", "/edev/1/derp/1/derc")));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("FSA2C", now - 1, 300);
        c.exp_lim_w = Some(777);
        s.fsas.push(vec![Program {
            primacy: 0,
            controls: vec![c],
            ..Program::default()
        }]);
        s.fsas[0][0].primacy = 5;
    });
    assert!(h.run_until(30, |h| {
        let r = h.requests();
        has(&r, "GET", "/edev/1/fsa/2/derp") && has(&r, "GET", "/edev/1/derp/2/derc")
    }));
    h.run_for(3);
    assert_eq!(h.export_limit_w(), Some(777.0));
}

#[test]
fn lost_usage_point_is_recreated_and_unsent_readings_follow() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| readings(&h.requests(), "/mup/1").len() >= 2));
    h.server.drop_mups();
    assert!(h.run_until(30, |h| count(&h.requests(), "POST", "/mup") >= 4));
    h.run_for(10);
    assert_eq!(h.server.mup_count(), 2, "both usage points recreated");
    let requests = h.requests();
    assert!(!readings(&requests, "/mup/3").is_empty() || !readings(&requests, "/mup/4").is_empty());
}

#[test]
fn retry_after_is_honoured_on_503() {
    let mut h = Harness::start(scenario());
    assert!(
        h.run_until(30, |h| count(&h.requests(), "GET", "/edev/1/fsa/1/derp")
            >= 1)
    );
    h.server.force_status("/edev/1/fsa/1/derp", 503, Some(5));
    let forced = h.elapsed_ms();
    assert!(h.run_until(30, |h| {
        h.requests()
            .iter()
            .any(|x| x.path == "/edev/1/fsa/1/derp" && x.at_ms > forced)
    }));
    let refused_at = h
        .server
        .requests_to("GET", "/edev/1/fsa/1/derp")
        .last()
        .map(|r| r.at_ms)
        .expect("a request");
    h.server.clear_forced("/edev/1/fsa/1/derp");
    h.run_for(10);
    let next = h
        .server
        .requests_to("GET", "/edev/1/fsa/1/derp")
        .into_iter()
        .find(|r| r.at_ms > refused_at)
        .map(|r| r.at_ms - refused_at)
        .expect("polled again after Retry-After");
    assert!(
        next >= 5_000,
        "polled again after {next} ms, Retry-After was 5 s"
    );
}

/// (genConnectStatus, operationalModeStatus) of each DERStatus PUT, in order.
fn der_statuses(h: &Harness) -> Vec<(u8, u8)> {
    h.server
        .requests_to("PUT", "/edev/1/der/1/ders")
        .iter()
        .filter_map(|r| {
            let connect = element_text(&r.body, "genConnectStatus")
                .and_then(|g| element_text(&g, "value"))
                .and_then(|v| u8::from_str_radix(&v, 16).ok())?;
            let mode = element_text(&r.body, "operationalModeStatus")
                .and_then(|g| element_text(&g, "value"))
                .and_then(|v| v.parse().ok())?;
            Some((connect, mode))
        })
        .collect()
}

#[test]
fn all_08_status_follows_what_the_der_generates() {
    let mut h = Harness::start(scenario());
    h.site.inverters[0].active_power_w = Some(3000.0);
    assert!(h.run_until(30, |h| !der_statuses(h).is_empty()));
    assert_eq!(der_statuses(&h), [(0b111, 2)]);
    // The DER stops generating (still connected and available).
    h.site.inverters[0].active_power_w = Some(0.0);
    assert!(h.run_until(30, |h| der_statuses(h).len() >= 2));
    assert_eq!(
        der_statuses(&h)[1],
        (0b011, 1),
        "operating cleared, mode 1 (off)"
    );
    h.site.inverters[0].active_power_w = Some(2500.0);
    assert!(h.run_until(30, |h| der_statuses(h).len() >= 3));
    assert_eq!(der_statuses(&h)[2], (0b111, 2));
    assert_all_bodies_valid(&h.server);
}

#[test]
fn all_11_de_energise_clears_operating_during_the_control_and_sets_it_after() {
    let mut h = Harness::start(scenario());
    h.site.inverters[0].active_power_w = Some(3000.0);
    assert!(h.run_until(30, |h| !der_statuses(h).is_empty()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now + 5, 60);
        c.energize = Some(false);
        s.fsas[0][0].controls.push(c);
    });
    // The inverter keeps reporting output (csipd's own action decides the status).
    assert!(h.run_until(30, |h| der_statuses(h).len() >= 2));
    assert_eq!(
        der_statuses(&h)[1],
        (0b011, 1),
        "bit 2 cleared while de-energised"
    );
    assert!(h.run_until(90, |h| der_statuses(h).len() >= 3));
    assert_eq!(
        der_statuses(&h)[2],
        (0b111, 2),
        "set again after the control"
    );
    let puts = h.server.requests_to("PUT", "/edev/1/der/1/ders");
    assert!(
        puts[2].at_ms >= (now + 65 - T0_S) as u64 * 1000,
        "not before the control ended"
    );
}

#[test]
fn all_12_disconnect_clears_connected_available_and_operating() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| !der_statuses(h).is_empty()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now + 5, 60);
        c.connect = Some(false);
        s.fsas[0][0].controls.push(c);
    });
    assert!(h.run_until(30, |h| der_statuses(h).len() >= 2));
    // Mode 100 (DRM0): the site declares opModFixedW, so a disconnect is reported as
    // the DR procedures want it (DRA-02); ALL-12 checks only the bits.
    assert_eq!(der_statuses(&h)[1], (0, 100), "bits 0, 1 and 2 cleared");
    assert!(h.run_until(90, |h| der_statuses(h).len() >= 3));
    assert_eq!(
        der_statuses(&h)[2],
        (0b111, 2),
        "reconnected after the control"
    );
    assert_all_bodies_valid(&h.server);
}

#[test]
fn mul_01_one_der_of_several_switched_off_is_reported() {
    let mut h = Harness::start(scenario());
    let second = h.site.inverters[0];
    h.site.inverters.push(second);
    assert!(h.run_until(30, |h| !der_statuses(h).is_empty()));
    // One of the two goes off: the fleet is still connected and operating, but it is a
    // change the harness waits for.
    h.site.inverters[1].connected = false;
    h.site.inverters[1].available = false;
    h.site.inverters[1].operating = false;
    assert!(h.run_until(30, |h| der_statuses(h).len() >= 2));
    assert_eq!(der_statuses(&h)[1], (0b111, 2));
    // Then the other: all off.
    h.site.inverters[0].connected = false;
    h.site.inverters[0].available = false;
    h.site.inverters[0].operating = false;
    assert!(h.run_until(30, |h| der_statuses(h).len() >= 3));
    assert_eq!(der_statuses(&h)[2], (0, 1));
    h.run_for(60);
    assert_eq!(der_statuses(&h).len(), 3, "no PUT without a change");
}

#[test]
fn all_10_mul_02_reading_types_are_power_kind_averages_with_phases() {
    let mut h = Harness::start(scenario());
    assert!(h.run_until(30, |h| count(&h.requests(), "POST", "/mup") >= 2));
    for mup in h.server.requests_to("POST", "/mup") {
        let body = &mup.body;
        let mut rest = body.as_str();
        let mut seen = 0;
        while let Some((_, after)) = rest.split_once("<ReadingType>") {
            let (rt, tail) = after.split_once("</ReadingType>").expect("closed");
            rest = tail;
            seen += 1;
            let uom = element_text(rt, "uom").unwrap_or_default();
            let kind = element_text(rt, "kind").unwrap_or_default();
            assert_eq!(
                element_text(rt, "dataQualifier").as_deref(),
                Some("2"),
                "{rt}"
            );
            assert!(element_text(rt, "phase").is_some(), "{rt}");
            match uom.as_str() {
                // W, var: power, with a flow direction
                "38" | "63" => {
                    assert_eq!(kind, "37", "{rt}");
                    assert!(element_text(rt, "flowDirection").is_some(), "{rt}");
                }
                // V: power kind too (the harness finds AVERAGE/VOLTAGE by it)
                "29" => assert_eq!(kind, "37", "{rt}"),
                _ => {}
            }
        }
        assert!(seen >= 6, "{body}");
    }
}

/// The DER reports and registrations csipd sent validate against csipaus-core.xsd (the
/// DR procedures run long: validating every reading POST too would take minutes).
fn assert_der_reports_valid(server: &ScriptedServer) {
    let invalid: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && !r.body.is_empty() && !r.path.starts_with("/mup"))
        .filter_map(|r| csip_server::schema::schema_problem(&r.body).map(|e| (r.method, r.path, e)))
        .collect();
    assert!(
        invalid.is_empty(),
        "bodies failing csipaus-core.xsd: {invalid:#?}"
    );
}

/// Like `Harness::run_until`, but checks `done` once per virtual second: the DR
/// procedures run for many virtual minutes and their checks read every PUT so far.
fn run_until_each_second(h: &mut Harness, max_secs: u64, done: impl Fn(&Harness) -> bool) -> bool {
    for _ in 0..max_secs {
        h.run_for(1);
        if done(h) {
            return true;
        }
    }
    false
}

/// DERSettings PUT bodies' modesEnabled, in order.
fn settings_modes_enabled(h: &Harness) -> Vec<u32> {
    h.server
        .requests_to("PUT", "/edev/1/der/1/derg")
        .iter()
        .filter_map(|r| element_text(&r.body, "modesEnabled"))
        .filter_map(|m| u32::from_str_radix(&m, 16).ok())
        .collect()
}

/// What the control layer makes of the engine's latest active controls on a 5 kW PV
/// inverter (and, with `max_charge_w`, a battery): the percentage setpoint the bus task
/// writes to SunSpec WMaxLimPct (model 123/704) and the battery's charge limit, with the
/// meter importing 500 W (so no export limit binds).
fn applied(h: &Harness, max_charge_w: Option<f64>) -> (f64, Option<f64>) {
    use csipd::control::law::{
        Controller, ControllerParams, InverterParams, PowerSample, Readings,
    };
    use csipd::control::limits::{MergeInputs, UtilityControls, merge};
    let (_, outcome) = h.outcomes.last().expect("an outcome");
    let utility = UtilityControls::from_schedule(&outcome.active, outcome.ramp);
    let inputs = MergeInputs {
        utility,
        total_set_max_w: 5000.0,
        total_max_charge_w: max_charge_w.unwrap_or(0.0),
        ..MergeInputs::default()
    };
    let tz = csipd::control::tz::PosixTz::parse("UTC0").expect("tz");
    let merged = merge(&inputs, &tz, h.now_s());
    let params = ControllerParams::new(
        vec![InverterParams {
            name: "inv".into(),
            rating_w: 5000.0,
            max_charge_w,
        }],
        5000.0,
    );
    let mut controller = Controller::new(params);
    let readings = Readings {
        meter: Some(PowerSample { w: 500.0, at_ms: 0 }),
        inverters: vec![Some(PowerSample {
            w: 4500.0,
            at_ms: 0,
        })],
    };
    let mut merged = merged;
    // No ramp: the test looks at the target, not the approach to it.
    merged.set_grad_w = None;
    let sp = controller.step(0, &merged, &readings);
    (sp.inverters[0].setpoint_pct, sp.inverters[0].charge_limit_w)
}

/// One fixed-W instruction of the DR procedures: created at `start` for 60 s, then the
/// DERStatus and DERSettings PUTs the procedure waits for while it runs.
fn fixed_w_instruction(h: &mut Harness, tag: &str, hundredths_pct: i16, want_mode: u8) {
    let statuses_before = der_statuses(h).len();
    let settings_before = settings_modes_enabled(h).len();
    let start = h.now_s() + 60;
    h.server.update(|s| {
        let mut c = Control::new(tag, start, 60);
        c.fixed_w = Some(hundredths_pct);
        s.fsas[0][0].controls.push(c);
    });
    let ok = run_until_each_second(h, 100, |h| {
        der_statuses(h)[statuses_before..]
            .iter()
            .any(|(_, mode)| *mode == want_mode)
            && settings_modes_enabled(h).len() > settings_before
    });
    assert!(
        ok,
        "{tag}: DERStatus with operationalModeStatus {want_mode} and a DERSettings PUT while it runs: {:?}",
        der_statuses(h)
    );
    let put = h
        .server
        .requests_to("PUT", "/edev/1/der/1/ders")
        .into_iter()
        .skip(statuses_before)
        .find(|r| r.body.contains(&format!("<value>{want_mode}</value>")))
        .expect("the status PUT");
    assert!(
        put.at_ms >= (start - T0_S) as u64 * 1000,
        "{tag}: the DRM is reported once the control runs, not before"
    );
    for m in &settings_modes_enabled(h)[settings_before..] {
        assert_ne!(m & 0x80, 0, "{tag}: modesEnabled has opModFixedW (bit 7)");
    }
}

/// The scripted server of the DR procedures: default control with the site's maximum
/// import/export (so the instructions' effect shows), setGradW 27.
fn dr_scenario() -> csip_server::Scenario {
    let mut sc = scenario();
    sc.fsas[0][0].default_exp_lim_w = Some(5000);
    sc.fsas[0][0].default_imp_lim_w = Some(20_000);
    sc
}

fn storage_config() -> csipd::csip::EngineConfig {
    let mut config = engine_config();
    config.nameplate.der_type = 81;
    config.nameplate.can_limit_import = true;
    config.nameplate.can_limit_load = true;
    config
}

#[test]
fn dra_01_device_category_and_fixed_w_declared() {
    let mut sc = dr_scenario();
    sc.preregistered = false;
    let mut config = engine_config();
    config.in_band_registration = true;
    let mut h = Harness::new(config, sc);
    assert!(run_until_each_second(&mut h, 60, |h| has(
        &h.requests(),
        "PUT",
        "/edev/1/der/1/dercap"
    )));
    let requests = h.requests();
    let post = requests
        .iter()
        .find(|r| r.method == "POST" && r.path == "/edev")
        .expect("POST /edev");
    let category = element_text(&post.body, "deviceCategory")
        .and_then(|c| u32::from_str_radix(&c, 16).ok())
        .expect("deviceCategory");
    assert_ne!(
        category & 0x03FF_FFFF,
        0,
        "a DeviceCategory bit: {category:08X}"
    );
    assert_eq!(category, 1 << 21, "photovoltaic system (DERType 4)");
    let cap = &h.server.requests_to("PUT", "/edev/1/der/1/dercap")[0].body;
    let modes = element_text(cap, "modesSupported")
        .and_then(|m| u32::from_str_radix(&m, 16).ok())
        .expect("modesSupported");
    assert_ne!(modes & 0x80, 0, "opModFixedW (bit 7): {modes:08X}");
    assert_der_reports_valid(&h.server);
}

#[test]
fn dra_01_storage_is_combined_pv_and_storage_and_a_site_without_control_claims_no_fixed_w() {
    let mut sc = dr_scenario();
    sc.preregistered = false;
    let mut config = storage_config();
    config.in_band_registration = true;
    let mut h = Harness::new(config, sc);
    assert!(run_until_each_second(&mut h, 60, |h| has(
        &h.requests(),
        "POST",
        "/edev"
    )));
    let post = h.server.requests_to("POST", "/edev")[0].body.clone();
    assert_eq!(
        element_text(&post, "deviceCategory").as_deref(),
        Some("00800000"),
        "bit 23, combined PV and storage"
    );
    // Nothing that can follow a setpoint: opModFixedW is not claimed.
    let mut config = engine_config();
    config.nameplate.can_limit_export = false;
    config.nameplate.can_limit_generation = false;
    let mut h = Harness::new(config, dr_scenario());
    assert!(run_until_each_second(&mut h, 60, |h| has(
        &h.requests(),
        "PUT",
        "/edev/1/der/1/dercap"
    )));
    let cap = &h.server.requests_to("PUT", "/edev/1/der/1/dercap")[0].body;
    let modes = element_text(cap, "modesSupported")
        .and_then(|m| u32::from_str_radix(&m, 16).ok())
        .expect("modesSupported");
    assert_eq!(modes & 0x80, 0, "{modes:08X}");
}

#[test]
fn dra_02_disconnect_instruction_is_drm0() {
    let mut h = Harness::start(dr_scenario());
    h.site.inverters[0].active_power_w = Some(3000.0);
    assert!(run_until_each_second(&mut h, 30, |h| !der_statuses(h).is_empty()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 60);
        c.connect = Some(false);
        s.fsas[0][0].controls.push(c);
    });
    assert!(run_until_each_second(&mut h, 30, |h| der_statuses(h).len() >= 2));
    assert_eq!(der_statuses(&h)[1], (0, 100), "disconnected, DRM0");
    assert_eq!(applied(&h, None).0, 0.0, "the inverter is switched to 0 %");
    assert!(run_until_each_second(&mut h, 90, |h| der_statuses(h).len() >= 3));
    assert_eq!(der_statuses(&h)[2], (0b111, 2), "back after the control");
    assert_der_reports_valid(&h.server);
}

#[test]
fn drg_01_generation_operational_instructions() {
    let mut h = Harness::start(dr_scenario());
    h.site.inverters[0].active_power_w = Some(4500.0);
    assert!(run_until_each_second(&mut h, 30, |h| !der_statuses(h).is_empty()));
    fixed_w_instruction(&mut h, "DERC1", 7500, 107);
    assert_eq!(
        applied(&h, None),
        (75.0, None),
        "75 % of setMaxW as WMaxLimPct"
    );
    assert!(run_until_each_second(&mut h, 100, |h| der_statuses(h)
        .last()
        == Some(&(0b111, 2))));
    fixed_w_instruction(&mut h, "DERC2", 5000, 106);
    assert_eq!(applied(&h, None).0, 50.0);
    assert!(run_until_each_second(&mut h, 100, |h| der_statuses(h)
        .last()
        == Some(&(0b111, 2))));
    // After the controls: uncapped again.
    assert_eq!(applied(&h, None).0, 100.0);
    assert_der_reports_valid(&h.server);
}

#[test]
fn drl_01_load_operational_instructions() {
    let mut h = Harness::new(storage_config(), dr_scenario());
    h.site.inverters[0].active_power_w = Some(4500.0);
    assert!(run_until_each_second(&mut h, 30, |h| !der_statuses(h).is_empty()));
    let max_charge = Some(4000.0);
    fixed_w_instruction(&mut h, "DERC1", -7500, 103);
    assert_eq!(
        applied(&h, max_charge),
        (0.0, Some(3000.0)),
        "charge ≤ 75 %, no generation"
    );
    fixed_w_instruction(&mut h, "DERC2", -5000, 102);
    assert_eq!(applied(&h, max_charge).1, Some(2000.0));
    fixed_w_instruction(&mut h, "DERC3", -1, 101);
    let (_, charge) = applied(&h, max_charge);
    assert!(
        charge.is_some_and(|w| w < 1.0),
        "DRM1: no consumption, {charge:?}"
    );
    fixed_w_instruction(&mut h, "DERC4", -10_000, 104);
    assert_eq!(
        applied(&h, max_charge),
        (0.0, Some(4000.0)),
        "DRM4: charge uncapped"
    );
    assert!(run_until_each_second(&mut h, 100, |h| der_statuses(h)
        .last()
        .is_some_and(|s| s.1 < 100)));
    assert_der_reports_valid(&h.server);
}

#[test]
fn drd_01_dred_operational_instruction_response() {
    let mut h = Harness::new(storage_config(), dr_scenario());
    h.site.inverters[0].active_power_w = Some(4500.0);
    assert!(run_until_each_second(&mut h, 30, |h| !der_statuses(h).is_empty()));
    let now = h.now_s();
    h.server.update(|s| {
        let mut c = Control::new("DERC1", now, 60);
        c.connect = Some(false);
        s.fsas[0][0].controls.push(c);
    });
    assert!(run_until_each_second(&mut h, 30, |h| der_statuses(h)
        .last()
        == Some(&(0, 100))));
    assert!(run_until_each_second(&mut h, 100, |h| der_statuses(h)
        .last()
        .is_some_and(|s| s.1 < 100)));
    // DRM3, 2, 1, 4, 7, 6, 5, 8 in the procedure's order.
    for (tag, pct, mode) in [
        ("DERC2", -7500, 103),
        ("DERC3", -5000, 102),
        ("DERC4", -1, 101),
        ("DERC5", -10_000, 104),
        ("DERC6", 7500, 107),
        ("DERC7", 5000, 106),
        ("DERC8", 0, 105),
        ("DERC9", 10_000, 108),
    ] {
        fixed_w_instruction(&mut h, tag, pct, mode);
    }
    assert_eq!(
        applied(&h, Some(4000.0)),
        (100.0, Some(0.0)),
        "DRM8: generate, no charging"
    );
    assert_der_reports_valid(&h.server);
}
