//! The engine against the hand-scripted CSIP-AUS server (tests/common/csip_server.rs),
//! playing the certification harness's client procedures ALL-01, 02, 03, 05, 06, 07, 09,
//! 10, 18, 19, 20 and 23 with poll and post rates of seconds instead of minutes, and
//! checking what csipd sends. Every PUT/POST body is validated with xmllint against
//! csipaus-core.xsd (`bash tests/setup.sh` fetches it).

#[path = "common/csip_server.rs"]
mod csip_server;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csip_server::{
    Control, Program, Recorded, Scenario, ScriptedServer, element_text, mrid_of, now_s,
};
use csipd::csip::response::Delivery;
use csipd::csip::{
    ConnectionState, Engine, EngineConfig, EngineSink, EngineStatus, InverterState, MeterSample,
    Nameplate, PhaseValues, SiteMeasurement,
};
use csipd::schedule::{ControlMode, Outcome, ResponseKey};

const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E3100012345";
const PEN: u32 = 12345;

fn sfdi() -> u64 {
    csipd::sep2::sfdi(LFDI).expect("sfdi")
}

/// What the engine handed out.
#[derive(Default)]
struct Collected {
    outcomes: Vec<(Instant, Outcome)>,
    statuses: Vec<EngineStatus>,
    /// Each response POST's outcome as the engine reported it to its sink.
    deliveries: Vec<(ResponseKey, Delivery)>,
}

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Collected>>);

impl EngineSink for Sink {
    fn controls(&mut self, outcome: &Outcome) {
        self.0
            .lock()
            .expect("lock")
            .outcomes
            .push((Instant::now(), outcome.clone()));
    }
    fn status(&mut self, status: &EngineStatus) {
        self.0.lock().expect("lock").statuses.push(status.clone());
    }
    fn response_delivery(&mut self, key: &ResponseKey, delivery: Delivery, _at_s: i64, _: &str) {
        self.0
            .lock()
            .expect("lock")
            .deliveries
            .push((key.clone(), delivery));
    }
}

impl Sink {
    fn export_limit_w(&self) -> Option<f64> {
        let collected = self.0.lock().expect("lock");
        collected
            .outcomes
            .last()
            .and_then(|(_, o)| o.active.watts(ControlMode::ExpLimW))
    }
    fn last_state(&self) -> Option<ConnectionState> {
        self.0
            .lock()
            .expect("lock")
            .statuses
            .last()
            .map(|s| s.state)
    }
}

/// The inverters' state the test controls (ALL-07, MUL-01).
#[derive(Clone)]
struct Site(Arc<Mutex<Vec<InverterState>>>);

impl Site {
    fn new() -> Site {
        Site(Arc::new(Mutex::new(vec![InverterState {
            connected: true,
            available: true,
            operating: true,
            rtg_max_w: 5000.0,
        }])))
    }
    fn set_connected(&self, connected: bool) {
        for inverter in self.0.lock().expect("lock").iter_mut() {
            inverter.connected = connected;
            inverter.available = connected;
            inverter.operating = connected;
        }
    }
    fn measurement(&self) -> SiteMeasurement {
        let phase = |w: f64| PhaseValues {
            total: Some(w),
            a: Some(w),
            b: None,
            c: None,
        };
        SiteMeasurement {
            site: Some(MeterSample {
                active_power_w: phase(-1200.0),
                reactive_power_var: phase(150.0),
                voltage_v: PhaseValues {
                    total: Some(241.3),
                    a: Some(241.3),
                    b: None,
                    c: None,
                },
                frequency_hz: Some(50.01),
            }),
            der: Some(MeterSample {
                active_power_w: phase(2500.0),
                reactive_power_var: phase(-100.0),
                voltage_v: PhaseValues::total(242.0),
                frequency_hz: Some(50.01),
            }),
            inverters: self.0.lock().expect("lock").clone(),
        }
    }
}

fn engine_config(server: &ScriptedServer) -> EngineConfig {
    let mut http = csipd::http::ClientConfig::new(&server.base_url);
    http.read_timeout = Duration::from_secs(5);
    http.connect_timeout = Duration::from_secs(2);
    EngineConfig {
        http,
        dcap_path: "/dcap".into(),
        lfdi: LFDI.into(),
        sfdi: sfdi(),
        pin: Some(111115),
        in_band_registration: false,
        nmi: None,
        pen: PEN,
        csipaus: true,
        csipaus_v1_3: false,
        nameplate: Nameplate {
            rtg_max_w: 5000.0,
            rtg_max_va: Some(5000.0),
            rtg_max_var: Some(3000.0),
            rtg_max_var_neg: Some(3000.0),
            rtg_v_nom: Some(230.0),
            der_type: 4,
            can_limit_export: true,
            can_limit_import: false,
            can_limit_generation: true,
            can_limit_load: false,
        },
        max_poll_interval_s: None,
        report_backstop_s: 3600,
        default_post_rate_s: 2,
        reading_buffer_intervals: 100,
        rng_seed: 7,
    }
}

/// Runs the engine on its own thread for `run_for`.
fn start_engine(
    config: EngineConfig,
    site: &Site,
    sink: &Sink,
    run_for: Duration,
) -> std::thread::JoinHandle<()> {
    let site = site.clone();
    let sink = sink.clone();
    std::thread::spawn(move || {
        let source = move || Some(site.measurement());
        let mut engine = Engine::new(config, source, sink).expect("engine config");
        smol::block_on(engine.run_until(Instant::now() + run_for));
    })
}

fn scenario() -> Scenario {
    Scenario {
        lfdi: LFDI.into(),
        sfdi: sfdi(),
        ..Scenario::default()
    }
}

fn has(requests: &[Recorded], method: &str, path: &str) -> bool {
    requests
        .iter()
        .any(|r| r.method == method && r.path == path)
}

fn count(requests: &[Recorded], method: &str, path: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}

fn assert_all_bodies_valid(server: &ScriptedServer) {
    let invalid = csip_server::invalid_bodies(server);
    assert!(
        invalid.is_empty(),
        "bodies failing csipaus-core.xsd: {invalid:#?}"
    );
}

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn all_01_discovery_with_out_of_band_registration_pages_every_list() {
    let mut sc = scenario();
    sc.max_page_limit = 1; // the EndDeviceList (3 devices) comes one per page
    let server = ScriptedServer::start(sc);
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(6));
    assert!(server.wait_for(WAIT, |r| has(r, "GET", "/dcap")
        && has(r, "GET", "/tm")
        && has(r, "GET", "/edev")
        && has(r, "GET", "/edev/1/der")
        && has(r, "GET", "/edev/1/derp/1/derc")
        && has(r, "GET", "/edev/1/derp/1/dderc")));
    engine.join().expect("engine thread");
    let requests = server.requests();
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
    assert_eq!(sink.last_state(), Some(ConnectionState::Connected));
    // The default control (export 0 W) is active.
    assert_eq!(sink.export_limit_w(), Some(0.0));
    // No href was invented: every GET was for a path the server links to.
    for r in requests.iter().filter(|r| r.method == "GET") {
        assert!(
            !r.path.contains("//") && r.path != "/edev/1/cp",
            "unexpected GET {}",
            r.path
        );
    }
    assert_all_bodies_valid(&server);
}

#[test]
fn all_02_in_band_registration_then_der_reports() {
    let mut sc = scenario();
    sc.preregistered = false;
    let server = ScriptedServer::start(sc);
    let mut config = engine_config(&server);
    config.in_band_registration = true;
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(config, &site, &sink, Duration::from_secs(6));
    assert!(server.wait_for(WAIT, |r| has(r, "POST", "/edev")
        && has(r, "GET", "/edev/1/der")
        && has(r, "PUT", "/edev/1/der/1/dercap")
        && has(r, "PUT", "/edev/1/der/1/derg")
        && has(r, "PUT", "/edev/1/der/1/ders")));
    engine.join().expect("engine thread");
    let requests = server.requests();
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
    assert_all_bodies_valid(&server);
}

#[test]
fn all_03_connection_point_is_put_with_the_nmi() {
    let mut sc = scenario();
    sc.preregistered = false;
    let server = ScriptedServer::start(sc);
    let mut config = engine_config(&server);
    config.in_band_registration = true;
    config.nmi = Some("4102345678".into());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(config, &site, &sink, Duration::from_secs(5));
    assert!(server.wait_for(WAIT, |r| has(r, "PUT", "/edev/1/cp")));
    engine.join().expect("engine thread");
    let put = server.requests_to("PUT", "/edev/1/cp");
    assert_eq!(put.len(), 1);
    assert_eq!(
        element_text(&put[0].body, "csipaus:connectionPointId").as_deref(),
        Some("4102345678"),
        "{}",
        put[0].body
    );
    assert_all_bodies_valid(&server);
}

#[test]
fn all_05_missing_registration_link_is_tolerated() {
    let mut sc = scenario();
    sc.registration_link = false;
    let server = ScriptedServer::start(sc);
    let mut config = engine_config(&server);
    config.in_band_registration = true;
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(config, &site, &sink, Duration::from_secs(5));
    assert!(server.wait_for(WAIT, |r| has(r, "GET", "/edev")
        && has(r, "POST", "/edev")
        && has(r, "GET", "/edev/1/fsa")
        && has(r, "GET", "/edev/1/der")));
    engine.join().expect("engine thread");
    let requests = server.requests();
    assert!(
        !has(&requests, "GET", "/edev/1/rg"),
        "no RegistrationLink: rg never invented"
    );
    assert_eq!(
        sink.export_limit_w(),
        Some(0.0),
        "controls followed without a Registration"
    );
    assert_all_bodies_valid(&server);
}

#[test]
fn registration_pin_mismatch_refuses_to_act() {
    let server = ScriptedServer::start(scenario());
    let mut config = engine_config(&server);
    config.pin = Some(999_990);
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(config, &site, &sink, Duration::from_secs(4));
    engine.join().expect("engine thread");
    assert_eq!(sink.last_state(), Some(ConnectionState::PinMismatch));
    let collected = sink.0.lock().expect("lock");
    assert!(
        collected.outcomes.is_empty(),
        "no controls taken from a server with another PIN"
    );
    let error = collected
        .statuses
        .last()
        .and_then(|s| s.last_error.clone())
        .unwrap_or_default();
    assert!(
        error.contains("PIN 111115") && error.contains("999990"),
        "{error}"
    );
    drop(collected);
    let requests = server.requests();
    assert!(
        !requests
            .iter()
            .any(|r| r.method == "PUT" || r.method == "POST")
    );
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
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(12),
    );
    // Two usage points created, then the list read again (the harness waits for it).
    assert!(server.wait_for(WAIT, |r| count(r, "POST", "/mup") >= 2));
    let after_post = server.requests().len();
    assert!(server.wait_for(WAIT, |r| {
        r[after_post..]
            .iter()
            .any(|x| x.method == "GET" && x.path == "/mup")
    }));
    // A control added at runtime is active within one poll (2 s) plus a round.
    let start = now_s() - 1;
    server.update(|s| {
        let mut c = Control::new("DERC1", start, 300);
        c.exp_lim_w = Some(0);
        c.imp_lim_w = Some(0);
        c.exp_lim_w = Some(1500);
        s.fsas[0][0].controls.push(c);
    });
    let added = Instant::now();
    while sink.export_limit_w() != Some(1500.0) && added.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(sink.export_limit_w(), Some(1500.0));
    assert!(
        added.elapsed() < Duration::from_secs(4),
        "picked up in {:?}",
        added.elapsed()
    );
    engine.join().expect("engine thread");
    let requests = server.requests();
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
    let mup_post = server.requests_to("POST", "/mup");
    assert!(
        mup_post[0]
            .body
            .contains("<dataQualifier>2</dataQualifier>")
    );
    assert!(
        mup_post[0].body.contains("<uom>38</uom>") && mup_post[0].body.contains("<uom>63</uom>")
    );
    assert_all_bodies_valid(&server);
}

#[test]
fn all_07_connection_status_follows_the_inverters() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(8));
    assert!(server.wait_for(WAIT, |r| has(r, "PUT", "/edev/1/der/1/ders")));
    site.set_connected(false);
    assert!(server.wait_for(WAIT, |r| count(r, "PUT", "/edev/1/der/1/ders") >= 2));
    site.set_connected(true);
    assert!(server.wait_for(WAIT, |r| count(r, "PUT", "/edev/1/der/1/ders") >= 3));
    engine.join().expect("engine thread");
    let puts = server.requests_to("PUT", "/edev/1/der/1/ders");
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
    assert_all_bodies_valid(&server);
}

#[test]
fn all_09_capability_and_settings() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(4));
    assert!(
        server.wait_for(WAIT, |r| has(r, "PUT", "/edev/1/der/1/dercap")
            && has(r, "PUT", "/edev/1/der/1/derg")
            && has(r, "PUT", "/edev/1/der/1/ders")
            && has(r, "PUT", "/edev/1/der/1/dera"))
    );
    engine.join().expect("engine thread");
    let cap = &server.requests_to("PUT", "/edev/1/der/1/dercap")[0].body;
    // PV only: export and generation limits, no import/load limiting.
    assert_eq!(
        element_text(cap, "csipaus:doeModesSupported").as_deref(),
        Some("05"),
        "{cap}"
    );
    assert!(element_text(cap, "rtgMaxW").is_some(), "{cap}");
    let settings = &server.requests_to("PUT", "/edev/1/der/1/derg")[0].body;
    assert!(element_text(settings, "setMaxW").is_some(), "{settings}");
    assert_eq!(
        element_text(settings, "csipaus:doeModesEnabled").as_deref(),
        Some("05")
    );
    // setGradW echoes the default control's (27).
    assert_eq!(element_text(settings, "setGradW").as_deref(), Some("27"));
    assert_all_bodies_valid(&server);
}

#[test]
fn mul_03_settings_follow_a_changed_default_ramp() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(7));
    assert!(server.wait_for(WAIT, |r| has(r, "PUT", "/edev/1/der/1/derg")));
    server.update(|s| s.fsas[0][0].set_grad_w = Some(100));
    assert!(server.wait_for(WAIT, |r| count(r, "PUT", "/edev/1/der/1/derg") >= 2));
    engine.join().expect("engine thread");
    let puts = server.requests_to("PUT", "/edev/1/der/1/derg");
    assert_eq!(
        element_text(&puts[1].body, "setGradW").as_deref(),
        Some("100")
    );
}

#[test]
fn all_10_changed_post_rate_is_obeyed() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(16),
    );
    assert!(server.wait_for(WAIT, |r| readings(r, "/mup/1").len() >= 2));
    server.update(|s| s.mup_post_s = 4);
    let changed_at = server.requests().len();
    engine.join().expect("engine thread");
    let requests = server.requests();
    let later = readings(&requests[changed_at..], "/mup/1");
    let four: Vec<_> = later.iter().filter(|(_, _, d, _)| *d == 4).collect();
    assert!(four.len() >= 2, "readings after the change: {later:?}");
    for (_, start, _, _) in &four {
        assert_eq!(start % 4, 0, "4 s periods start on 4 s boundaries");
    }
    assert_all_bodies_valid(&server);
}

/// Responses POSTed to the replyTo, as (subject, status).
fn responses(server: &ScriptedServer) -> Vec<(String, u8)> {
    server
        .requests_to("POST", "/edev/1/rsps/site_control/rsp")
        .iter()
        .filter_map(|r| {
            let subject = element_text(&r.body, "subject")?;
            // back from the mRID to the tag the test used
            let tag = ["DERC1", "DERC2", "DERC3", "DERC4", "DERC5"]
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
    let server = ScriptedServer::start(scenario());
    let now = now_s();
    server.update(|s| {
        let mut c1 = Control::new("DERC1", now, 3);
        c1.exp_lim_w = Some(10_000);
        c1.imp_lim_w = Some(10_000);
        s.fsas[0][0].controls.push(c1);
    });
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(22),
    );
    assert!(server.wait_for(WAIT, |r| {
        r.iter()
            .filter(|x| x.path == "/edev/1/rsps/site_control/rsp")
            .count()
            >= 3
    }));
    // DERC2 starts later and is cancelled before it starts; DERC3 is superseded.
    let now = now_s();
    server.update(|s| {
        let mut c2 = Control::new("DERC2", now + 60, 60);
        c2.exp_lim_w = Some(10_000);
        s.fsas[0][0].controls.push(c2);
    });
    assert!(server.wait_for(WAIT, |_| {
        responses(&server)
            .iter()
            .any(|(m, st)| m == "DERC2" && *st == 1)
    }));
    server.update(|s| {
        if let Some(c) = s.fsas[0][0]
            .controls
            .iter_mut()
            .find(|c| c.mrid == mrid_of("DERC2"))
        {
            c.status = 2;
        }
    });
    assert!(server.wait_for(WAIT, |_| {
        responses(&server)
            .iter()
            .any(|(m, st)| m == "DERC2" && *st == 6)
    }));
    // DERC4 starts; a newer control for the same modes takes over 3 s later and
    // supersedes it (the scheduler answers Superseded when the newer one starts).
    let now = now_s();
    server.update(|s| {
        let mut c4 = Control::new("DERC4", now + 3, 600);
        c4.exp_lim_w = Some(10_000);
        c4.imp_lim_w = Some(10_000);
        s.fsas[0][0].controls.push(c4);
    });
    let seen = |tag: &str, status: u8| {
        responses(&server)
            .iter()
            .any(|(m, st)| m == tag && *st == status)
    };
    assert!(server.wait_for(WAIT, |_| seen("DERC4", 1)));
    server.update(|s| {
        let mut c5 = Control::new("DERC5", now + 6, 60);
        c5.creation_time = now + 5; // newer than DERC4 (created at now + 2)
        c5.exp_lim_w = Some(0);
        c5.imp_lim_w = Some(0);
        s.fsas[0][0].controls.push(c5);
    });
    assert!(
        server.wait_for(WAIT, |_| seen("DERC4", 7)),
        "{:?}",
        responses(&server)
    );
    engine.join().expect("engine thread");
    let sent = responses(&server);
    let derc1: Vec<u8> = sent
        .iter()
        .filter(|(m, _)| m == "DERC1")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        derc1,
        [1, 2, 3],
        "Received, Started, Completed in order, once each"
    );
    let derc2: Vec<u8> = sent
        .iter()
        .filter(|(m, _)| m == "DERC2")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(derc2, [1, 6], "Received, then Cancelled");
    let derc4: Vec<u8> = sent
        .iter()
        .filter(|(m, _)| m == "DERC4")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(derc4, [1, 2, 7], "Received, Started, then Superseded");
    // Each response names this device.
    for r in server.requests_to("POST", "/edev/1/rsps/site_control/rsp") {
        assert_eq!(
            element_text(&r.body, "endDeviceLFDI").as_deref(),
            Some(LFDI)
        );
    }
    assert_all_bodies_valid(&server);
}

#[test]
fn responses_are_retried_until_accepted_and_never_duplicated() {
    let server = ScriptedServer::start(scenario());
    server.force_status("/edev/1/rsps/site_control/rsp", 503, Some(1));
    let now = now_s();
    server.update(|s| {
        let mut c1 = Control::new("DERC1", now + 120, 60);
        c1.exp_lim_w = Some(1000);
        s.fsas[0][0].controls.push(c1);
    });
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(12),
    );
    assert!(server.wait_for(WAIT, |r| {
        r.iter()
            .filter(|x| x.path == "/edev/1/rsps/site_control/rsp")
            .count()
            >= 1
    }));
    std::thread::sleep(Duration::from_secs(3));
    server.clear_forced("/edev/1/rsps/site_control/rsp");
    let cleared_at = Instant::now();
    engine.join().expect("engine thread");
    let attempts = server.requests_to("POST", "/edev/1/rsps/site_control/rsp");
    assert!(attempts.len() >= 2, "retried after 503: {}", attempts.len());
    // Every attempt was the same Received response (nothing else fell due), and once
    // the server accepted it (after the 503s stopped) it was not sent again.
    assert!(
        attempts
            .iter()
            .all(|r| element_text(&r.body, "status").as_deref() == Some("1"))
    );
    let cleared = attempts.iter().filter(|r| r.at > cleared_at).count();
    assert_eq!(cleared, 1, "one accepted POST after the server recovered");
    // The sink (the runtime's store) heard of every attempt: each 503 as one more
    // try, then the acceptance once, last, so the ledger entry is settled for good.
    let deliveries = sink.0.lock().expect("lock").deliveries.clone();
    let kinds: Vec<Delivery> = deliveries.iter().map(|(_, d)| *d).collect();
    assert_eq!(kinds.len(), attempts.len(), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&Delivery::Accepted), "{kinds:?}");
    assert!(
        kinds[..kinds.len() - 1]
            .iter()
            .all(|d| *d == Delivery::RetryLater),
        "{kinds:?}"
    );
    assert!(
        deliveries
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
    let server = ScriptedServer::start(sc);
    server.on_request("GET", "/edev/1/fsa", |s| s.fsa_list_poll_s = 1);
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(6));
    engine.join().expect("engine thread");
    let gets = server.requests_to("GET", "/edev/1/fsa");
    assert!(
        gets.len() >= 4,
        "1 s rate adopted at once: {} reads in 6 s",
        gets.len()
    );

    // And the other way: a 30 s rate is kept (no re-read within 6 s).
    let mut sc = scenario();
    sc.fsa_list_poll_s = 30;
    let server = ScriptedServer::start(sc);
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(6));
    engine.join().expect("engine thread");
    assert_eq!(server.requests_to("GET", "/edev/1/fsa").len(), 1);
}

#[test]
fn all_20_changed_program_list_poll_rate_is_kept() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let started = Instant::now();
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(26),
    );
    assert!(server.wait_for(WAIT, |r| count(r, "GET", "/edev/1/fsa/1/derp") >= 2));
    server.update(|s| s.derp_list_poll_s = 4);
    let changed = Instant::now();
    std::thread::sleep(Duration::from_secs(13));
    server.update(|s| s.derp_list_poll_s = 1);
    let back = Instant::now();
    engine.join().expect("engine thread");
    assert!(
        back < started + Duration::from_secs(18),
        "test machine too slow"
    );
    let gets = server.requests_to("GET", "/edev/1/fsa/1/derp");
    // After the first read at the old rate, reads are 4 s apart while the rate is 4 s.
    let during: Vec<Instant> = gets
        .iter()
        .map(|r| r.at)
        .filter(|at| *at > changed + Duration::from_millis(2500) && *at < back)
        .collect();
    assert!(during.len() >= 2, "{during:?}");
    for pair in during.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(3500),
            "polled {gap:?} apart at a 4 s rate"
        );
    }
    // Back to 1 s: learnt at the next (4 s) read, then every second.
    let after = gets
        .iter()
        .filter(|r| r.at > back + Duration::from_millis(4500))
        .count();
    assert!(after >= 2, "back to 1 s polling: {after} reads");
}

#[test]
fn all_23_schedule_runs_through_communication_loss() {
    let server = ScriptedServer::start(scenario());
    let now = now_s();
    server.update(|s| {
        for (i, (mrid, w)) in [("DERC1", 4000), ("DERC2", 1000), ("DERC3", 2000)]
            .into_iter()
            .enumerate()
        {
            let mut c = Control::new(mrid, now + 3 * i as i64, 3);
            c.exp_lim_w = Some(w);
            s.fsas[0][0].controls.push(c);
        }
    });
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(16),
    );
    assert!(server.wait_for(WAIT, |r| has(r, "GET", "/edev/1/derp/1/dderc")));
    // The server goes away.
    server.force_status("*", 503, None);
    let lost = Instant::now();
    std::thread::sleep(Duration::from_secs(11));
    // Back, with a new control.
    let now = now_s();
    server.update(|s| {
        let mut c = Control::new("DERC4", now, 60);
        c.exp_lim_w = Some(3000);
        s.fsas[0][0].controls.push(c);
    });
    server.clear_forced("*");
    let restored = Instant::now();
    engine.join().expect("engine thread");
    let collected = sink.0.lock().expect("lock");
    let limits: Vec<(Duration, Option<f64>)> = collected
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
        collected
            .statuses
            .iter()
            .any(|s| s.state == ConnectionState::Unreachable)
    );
    let last = collected
        .outcomes
        .last()
        .and_then(|(_, o)| o.active.watts(ControlMode::ExpLimW));
    assert_eq!(
        last,
        Some(3000.0),
        "the control sent after comms came back applies"
    );
    drop(collected);
    let after: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.at > restored && r.path == "/edev/1/derp/1/derc")
        .collect();
    assert!(!after.is_empty(), "DERControlList read after comms restore");
    // Readings of intervals measured during the outage were kept and posted afterwards.
    let lost_s = now_s() - lost.elapsed().as_secs() as i64;
    let restored_s = now_s() - restored.elapsed().as_secs() as i64;
    let late: Vec<Recorded> = server
        .requests()
        .into_iter()
        .filter(|r| r.at > restored)
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
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(engine_config(&server), &site, &sink, Duration::from_secs(8));
    assert!(server.wait_for(WAIT, |r| has(r, "GET", "/edev/1/derp/1/derc")));
    let now = now_s();
    server.update(|s| {
        let mut c = Control::new("FSA2C", now - 1, 300);
        c.exp_lim_w = Some(777);
        s.fsas.push(vec![Program {
            primacy: 0,
            controls: vec![c],
            ..Program::default()
        }]);
        s.fsas[0][0].primacy = 5;
    });
    assert!(
        server.wait_for(WAIT, |r| has(r, "GET", "/edev/1/fsa/2/derp")
            && has(r, "GET", "/edev/1/derp/2/derc"))
    );
    engine.join().expect("engine thread");
    assert_eq!(sink.export_limit_w(), Some(777.0));
}

#[test]
fn lost_usage_point_is_recreated_and_unsent_readings_follow() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(12),
    );
    assert!(server.wait_for(WAIT, |r| readings(r, "/mup/1").len() >= 2));
    server.drop_mups();
    assert!(server.wait_for(WAIT, |r| count(r, "POST", "/mup") >= 4));
    engine.join().expect("engine thread");
    assert_eq!(server.mup_count(), 2, "both usage points recreated");
    let requests = server.requests();
    assert!(!readings(&requests, "/mup/3").is_empty() || !readings(&requests, "/mup/4").is_empty());
}

#[test]
fn retry_after_is_honoured_on_503() {
    let server = ScriptedServer::start(scenario());
    let (site, sink) = (Site::new(), Sink::default());
    let engine = start_engine(
        engine_config(&server),
        &site,
        &sink,
        Duration::from_secs(10),
    );
    assert!(server.wait_for(WAIT, |r| count(r, "GET", "/edev/1/fsa/1/derp") >= 1));
    server.force_status("/edev/1/fsa/1/derp", 503, Some(5));
    let forced_at = Instant::now();
    assert!(server.wait_for(WAIT, |r| {
        r.iter()
            .any(|x| x.path == "/edev/1/fsa/1/derp" && x.at > forced_at)
    }));
    let refused_at = server
        .requests_to("GET", "/edev/1/fsa/1/derp")
        .last()
        .map(|r| r.at)
        .expect("a request");
    std::thread::sleep(Duration::from_millis(200));
    server.clear_forced("/edev/1/fsa/1/derp");
    engine.join().expect("engine thread");
    let next = server
        .requests_to("GET", "/edev/1/fsa/1/derp")
        .into_iter()
        .find(|r| r.at > refused_at)
        .map(|r| r.at - refused_at);
    let next = next.expect("polled again after Retry-After");
    assert!(
        next >= Duration::from_millis(4500),
        "polled again after {next:?}, Retry-After was 5 s"
    );
}
