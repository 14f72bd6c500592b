//! The engine against the GridAPPS-D IEEE 2030.5 server (PyPI `gridappsd-2030-5`, a real
//! plain-2030.5 peer installed by `bash tests/setup.sh`): discovery over mutual TLS, DER
//! reports accepted, a mirror usage point created and readings posted, and a DERControl
//! added at runtime through the server's admin path picked up and made active.

#[path = "common/gridappsd.rs"]
mod gridappsd;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csipd::csip::{
    ConnectionState, Engine, EngineConfig, EngineSink, EngineStatus, InverterState, MeterSample,
    Nameplate, PhaseValues, SiteMeasurement,
};
use csipd::schedule::{ControlMode, Outcome};
use gridappsd::{GridappsdDevice, GridappsdOptions, GridappsdServer};

type Collected = (Vec<(Instant, Outcome)>, Vec<EngineStatus>);

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Collected>>);

impl EngineSink for Sink {
    fn controls(&mut self, outcome: &Outcome) {
        self.0
            .lock()
            .expect("lock")
            .0
            .push((Instant::now(), outcome.clone()));
    }
    fn status(&mut self, status: &EngineStatus) {
        self.0.lock().expect("lock").1.push(status.clone());
    }
}

fn measurement() -> Option<SiteMeasurement> {
    Some(SiteMeasurement {
        site: Some(MeterSample {
            active_power_w: PhaseValues::total(-800.0),
            reactive_power_var: PhaseValues::total(120.0),
            voltage_v: PhaseValues::total(240.0),
            frequency_hz: Some(50.0),
        }),
        der: Some(MeterSample {
            active_power_w: PhaseValues::total(3000.0),
            reactive_power_var: PhaseValues::total(0.0),
            voltage_v: PhaseValues::total(241.0),
            frequency_hz: Some(50.0),
        }),
        inverters: vec![InverterState {
            connected: true,
            available: true,
            operating: true,
            rtg_max_w: 5000.0,
            active_power_w: None,
        }],
    })
}

fn engine_config(server: &GridappsdServer, id: &str) -> EngineConfig {
    let identity = server.identity(id);
    let pem = std::fs::read(&identity.cert).expect("client certificate");
    let ident = csipd::sep2::identity_from_pem(&pem).expect("identity");
    let mut http = csipd::http::ClientConfig::new(&server.url);
    http.client_cert = Some(identity.cert.clone());
    http.client_key = Some(identity.key.clone());
    http.ca_bundle = Some(server.ca_cert.clone());
    http.read_timeout = Duration::from_secs(10);
    EngineConfig {
        http,
        dcap_path: "/dcap".into(),
        lfdi: ident.lfdi,
        sfdi: ident.sfdi,
        pin: None,
        in_band_registration: false,
        nmi: None,
        pen: 12345,
        // GridAPPS-D answers 500 to any csipaus element: plain 2030.5.
        csipaus: false,
        csipaus_v1_3: false,
        nameplate: Nameplate {
            rtg_max_w: 5000.0,
            rtg_max_va: Some(5000.0),
            rtg_max_var: None,
            rtg_max_var_neg: None,
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
        reading_buffer_intervals: 50,
        rng_seed: 1,
    }
}

fn options() -> GridappsdOptions {
    let mut device = GridappsdDevice::new("dev1", 111115);
    // One FSA (the server links the DER's program from it) and one DER.
    device.fsas = vec!["fsa1".into()];
    device.ders = vec!["der1".into()];
    GridappsdOptions {
        devices: vec![device],
        ..GridappsdOptions::default()
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[test]
fn discovery_reports_readings_and_a_runtime_control() {
    let server = GridappsdServer::start(&options());
    let mut config = engine_config(&server, "dev1");
    // GridAPPS-D states 900 s everywhere; poll every 2 s so "within one poll" is testable.
    config.max_poll_interval_s = Some(2);
    let sink = Sink::default();
    let engine_sink = sink.clone();
    let run_for = Duration::from_secs(14);
    let engine = std::thread::spawn(move || {
        // The runtime's own driver: the real http client and the system clock.
        let clock = csipd::runtime::clock::SystemClock::new();
        let mut client = csipd::http::Client::new(config.http.clone()).expect("http client");
        let mut engine = Engine::new(config, clock.now()).expect("engine");
        let mut sink = engine_sink;
        let mut source = measurement;
        let end_ms = clock.now().mono_ms + run_for.as_millis() as u64;
        smol::block_on(csipd::runtime::engine::drive(
            &mut engine,
            &mut client,
            &clock,
            &mut source,
            &mut sink,
            |_, now| now.mono_ms >= end_ms,
        ));
        (engine.tree(), engine.status())
    });
    // Wait until the engine has read the program's (empty) DERControlList.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .output()
        .iter()
        .any(|l| l.contains("GET /derp_1_derc") || l.contains("GET /derp_0_derc"))
    {
        assert!(
            Instant::now() < deadline,
            "DERControlList never read: {:#?}",
            server.output()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Add a control at runtime through the admin path (admin certificate).
    let admin = server.identity("admin");
    let mut http = csipd::http::ClientConfig::new(&server.url);
    http.client_cert = Some(admin.cert);
    http.client_key = Some(admin.key);
    http.ca_bundle = Some(server.ca_cert.clone());
    let mut client = csipd::http::Client::new(http).expect("admin client");
    let start = now_s() - 1;
    let body = format!(
        r#"<DERControl xmlns="urn:ieee:std:2030.5:ns"><mRID>B1C2D3E4F5A6B7C8D9E0F1A2B3C4D5E6</mRID><description>csipd test</description><creationTime>{start}</creationTime><EventStatus><currentStatus>0</currentStatus><dateTime>{start}</dateTime><potentiallySuperseded>false</potentiallySuperseded></EventStatus><interval><duration>300</duration><start>{start}</start></interval><DERControlBase><opModMaxLimW>5000</opModMaxLimW></DERControlBase></DERControl>"#
    );
    let posted =
        smol::block_on(client.post("/admin/derp/1/derc", body.as_bytes())).expect("admin POST");
    assert_eq!(posted.status, 201);
    let added = Instant::now();
    let (tree, status) = engine.join().expect("engine thread");
    eprintln!("{}", csipd::csip::discover_cli::render(&tree, &status));
    assert!(tree.edev.is_some(), "own EndDevice found: {status:?}");
    assert_eq!(status.state, ConnectionState::Connected, "{status:?}");
    let output = server.output();
    let answered = |request: &str, code: &str| {
        output
            .iter()
            .any(|l| l.contains(request) && l.contains(&format!("\" {code}")))
    };
    // DER reports accepted (plain 2030.5: no csipaus elements, so no 500).
    for report in ["dercap", "derg", "ders", "dera"] {
        assert!(
            answered(&format!("PUT /der_0_{report}"), "200"),
            "PUT {report}: {output:#?}"
        );
    }
    // Usage points created and readings accepted.
    assert!(answered("POST /mup ", "201"), "{output:#?}");
    assert!(
        answered("POST /mup_0", "204") && answered("POST /mup_1", "204"),
        "{output:#?}"
    );
    // The control is active within one poll of the DERControlList (the poll interval is
    // capped at 2 s: the server states 900 s).
    let collected = sink.0.lock().expect("lock");
    let became_active = collected
        .0
        .iter()
        .find(|(_, o)| {
            o.active.get(ControlMode::MaxLimW).map(|v| v.value)
                == Some(csipd::schedule::ModeValue::HundredthsPct(5000))
        })
        .map(|(at, _)| *at)
        .expect("the runtime control's opModMaxLimW 50 % became active");
    // Within one poll: the 2 s interval, plus one poll round, which against this
    // HTTP/1.0 server is ~10 requests each with its own TLS handshake (a second or two
    // on a loaded test machine). Two polls would take at least 4 s more.
    let delay = became_active.saturating_duration_since(added);
    assert!(
        delay <= Duration::from_millis(5500),
        "active {delay:?} after the POST"
    );
}
