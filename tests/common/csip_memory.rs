//! The sans-IO engine against the scripted CSIP-AUS server in memory, on a virtual
//! clock: each request the engine hands out is answered by
//! [`ScriptedServer::exchange`] at the virtual instant it was sent, measurements come
//! once a virtual second, and time jumps straight to the engine's next timeout. A
//! simulated day runs in well under a CPU-second; nothing depends on the wall clock.
#![allow(dead_code)]

use std::time::Duration;

use super::csip_server::{Recorded, Reply, Scenario, ScriptedServer};
use csipd::clock::Now;
use csipd::csip::response::Delivery;
use csipd::csip::{
    ConnectionState, Engine, EngineConfig, EngineStatus, Event, InverterState, MeterSample,
    Nameplate, PhaseValues, SiteMeasurement, StorageMeasurement,
};
use csipd::http::{HttpError, Method, Response, StatusError};
use csipd::schedule::{ControlMode, Outcome, ResponseKey};

pub const LFDI: &str = "3E4F45AB31EDFE5B67E343E5E4562E3100012345";
pub const PEN: u32 = 12345;
/// Virtual start: a multiple of 300 s, so post-rate boundaries are easy to reason about.
pub const T0_S: i64 = 1_750_000_200;

pub fn sfdi() -> u64 {
    csipd::sep2::sfdi(LFDI).expect("sfdi")
}

pub fn scenario() -> Scenario {
    Scenario {
        lfdi: LFDI.into(),
        sfdi: sfdi(),
        ..Scenario::default()
    }
}

/// The engine's configuration for the scripted server in memory.
pub fn engine_config() -> EngineConfig {
    engine_config_at("http://memory")
}

/// The engine's configuration for the scripted server at `base_url` (also used by
/// examples/csip_soak.rs against the server on a socket): this module's identity, a
/// 5 kW inverter that can limit export and generation.
pub fn engine_config_at(base_url: &str) -> EngineConfig {
    EngineConfig {
        http: csipd::http::ClientConfig::new(base_url),
        dcap_path: "/dcap".into(),
        service_discovery: false,
        lfdi: LFDI.into(),
        sfdi: sfdi(),
        pin: Some(111115),
        in_band_registration: false,
        nmi: None,
        pen: PEN,
        csipaus: true,
        csipaus_v1_3: false,
        schema_2018: false,
        nameplate: Nameplate {
            rtg_max_w: 5000.0,
            rtg_max_va: Some(5000.0),
            rtg_max_var: Some(3000.0),
            rtg_max_var_neg: Some(3000.0),
            rtg_v_nom: Some(230.0),
            rtg_min_pf_over_excited: None,
            rtg_min_pf_under_excited: None,
            der_type: 4,
            can_limit_export: true,
            can_limit_import: false,
            can_limit_generation: true,
            can_limit_load: false,
            storage: None,
            inverter_modes: None,
        },
        max_poll_interval_s: None,
        report_backstop_s: 3600,
        default_post_rate_s: 300,
        reading_buffer_intervals: 100,
        rng_seed: 7,
        notification_uri: None,
    }
}

/// The measured site (the test changes the inverters' state).
pub struct Site {
    pub inverters: Vec<InverterState>,
    /// No measurement at all (e.g. the meter is not read yet).
    pub silent: bool,
    /// The battery, for the CSIP-AUS v1.3 storage procedures.
    pub storage: Option<StorageMeasurement>,
}

impl Site {
    pub fn new() -> Site {
        Site {
            inverters: vec![InverterState {
                connected: true,
                available: true,
                operating: true,
                rtg_max_w: 5000.0,
                active_power_w: None,
            }],
            silent: false,
            storage: None,
        }
    }

    pub fn set_connected(&mut self, connected: bool) {
        for inverter in &mut self.inverters {
            inverter.connected = connected;
            inverter.available = connected;
            inverter.operating = connected;
        }
    }

    pub fn measurement(&self) -> Option<SiteMeasurement> {
        if self.silent {
            return None;
        }
        let phase = |w: f64| PhaseValues {
            total: Some(w),
            a: Some(w),
            b: None,
            c: None,
        };
        Some(SiteMeasurement {
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
                stored_energy_wh: None,
            }),
            der: Some(MeterSample {
                active_power_w: phase(2500.0),
                reactive_power_var: phase(-100.0),
                voltage_v: PhaseValues::total(242.0),
                frequency_hz: Some(50.01),
                stored_energy_wh: None,
            }),
            inverters: self.inverters.clone(),
            storage: self.storage,
        })
    }
}

/// The engine, the in-memory server and the virtual clock, with what came out.
pub struct Harness {
    pub server: ScriptedServer,
    pub engine: Engine,
    pub site: Site,
    pub now: Now,
    /// Every Controls event, with its virtual time (ms).
    pub outcomes: Vec<(u64, Outcome)>,
    pub statuses: Vec<EngineStatus>,
    pub deliveries: Vec<(ResponseKey, Delivery)>,
    next_sample_ms: u64,
    /// Calls of the engine's inputs (for the CPU-cost test).
    pub inputs: u64,
    /// Wall time spent inside the engine's calls (not the scripted server's), for the
    /// cost report of the simulated-day test.
    pub engine_time: std::time::Duration,
    /// Routes served before the scripted server (a test's own resources): called with
    /// (method, path with query, body, server time s, virtual ms); `None` passes it on.
    pub extra_routes: Option<ExtraRoutes>,
}

/// See [`Harness::extra_routes`].
pub type ExtraRoutes = Box<dyn FnMut(&str, &str, &str, i64, u64) -> Option<Reply>>;

impl Harness {
    pub fn new(config: EngineConfig, scenario: Scenario) -> Harness {
        let now = Now {
            mono_ms: 0,
            utc_ms: T0_S * 1000,
        };
        Harness {
            server: ScriptedServer::in_memory(scenario),
            engine: Engine::new(config, now).expect("engine config"),
            site: Site::new(),
            now,
            outcomes: Vec::new(),
            statuses: Vec::new(),
            deliveries: Vec::new(),
            next_sample_ms: 0,
            inputs: 0,
            engine_time: std::time::Duration::ZERO,
            extra_routes: None,
        }
    }

    pub fn start(scenario: Scenario) -> Harness {
        Harness::new(engine_config(), scenario)
    }

    /// Virtual Unix time, seconds (the server's clock before its offset).
    pub fn now_s(&self) -> i64 {
        self.now.utc_s()
    }

    /// Virtual milliseconds since the start.
    pub fn elapsed_ms(&self) -> u64 {
        self.now.mono_ms
    }

    fn drain_events(&mut self) {
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Controls(outcome) => self.outcomes.push((self.now.mono_ms, *outcome)),
                Event::Status(status) => self.statuses.push(status),
                Event::ResponseDelivery { key, delivery, .. } => {
                    self.deliveries.push((key, delivery))
                }
            }
        }
    }

    fn answer(&self, reply: Reply, method: Method, href: &str) -> Result<Response, HttpError> {
        match reply.status {
            0 => Err(HttpError::ReadTimeout {
                method,
                path: href.to_string(),
                after: Duration::from_secs(30),
            }),
            status @ 100..=399 => Ok(Response {
                status,
                reason: String::new(),
                headers: reply
                    .location
                    .map(|l| vec![("Location".to_string(), l)])
                    .unwrap_or_default(),
                body: reply.body.into_bytes(),
            }),
            status => Err(HttpError::Status(StatusError {
                method,
                path: href.to_string(),
                status,
                reason: "scripted".into(),
                retry_after: reply
                    .retry_after_s
                    .map(|s| Duration::from_secs(u64::from(s))),
                headers: Vec::new(),
                body: reply.body.into_bytes(),
            })),
        }
    }

    /// The server POSTs a Notification to csipd's notificationURI now: handed to the
    /// engine as the runtime's listener does, then the requests it causes are served.
    #[allow(dead_code)]
    pub fn notify(
        &mut self,
        body: &str,
    ) -> Result<csipd::csip::subscription::NotificationOutcome, csipd::sep2::ReadError> {
        let outcome = self.engine.handle_notification(body.as_bytes(), self.now);
        self.drain_events();
        self.exchange_all();
        self.drain_events();
        outcome
    }

    /// Sends every request the engine has, at the current virtual instant.
    fn exchange_all(&mut self) {
        while let Some(request) = self.engine.poll_request() {
            let method = request.method;
            let href = csipd::csip::context::href_path(&request.href).to_string();
            let extra = self.extra_routes.as_mut().and_then(|route| {
                route(
                    method.as_str(),
                    &href,
                    request.body.as_deref().unwrap_or(""),
                    self.now.utc_s(),
                    self.now.mono_ms,
                )
            });
            let reply = extra.unwrap_or_else(|| {
                self.server.exchange(
                    method.as_str(),
                    &href,
                    request.body.as_deref().unwrap_or(""),
                    self.now.utc_s(),
                    self.now.mono_ms,
                )
            });
            let result = self.answer(reply, method, &href);
            let t = std::time::Instant::now();
            self.engine.handle_response(request.id, result, self.now);
            self.engine_time += t.elapsed();
            self.inputs += 1;
            self.drain_events();
        }
    }

    /// Runs `secs` virtual seconds.
    pub fn run_for(&mut self, secs: u64) {
        let end = self.now.mono_ms + secs * 1000;
        self.run_until_ms(end, |_| false);
    }

    /// Runs until `done` holds (checked after every step) or `max_secs` pass; returns
    /// whether it held.
    pub fn run_until(&mut self, max_secs: u64, done: impl Fn(&Harness) -> bool) -> bool {
        let end = self.now.mono_ms + max_secs * 1000;
        self.run_until_ms(end, done)
    }

    fn run_until_ms(&mut self, end_ms: u64, done: impl Fn(&Harness) -> bool) -> bool {
        loop {
            if self.now.mono_ms >= self.next_sample_ms {
                let m = self.site.measurement();
                let t = std::time::Instant::now();
                self.engine.handle_measurements(m, self.now);
                self.engine_time += t.elapsed();
                self.inputs += 1;
                self.next_sample_ms += 1000;
            }
            if self
                .engine
                .poll_timeout()
                .is_some_and(|t| t <= self.now.mono_ms)
            {
                let t = std::time::Instant::now();
                self.engine.handle_timeout(self.now);
                self.engine_time += t.elapsed();
                self.inputs += 1;
            }
            self.drain_events();
            self.exchange_all();
            if done(self) {
                return true;
            }
            if self.now.mono_ms >= end_ms {
                return false;
            }
            let next = self
                .engine
                .poll_timeout()
                .map_or(self.next_sample_ms, |t| t.min(self.next_sample_ms))
                .clamp(self.now.mono_ms + 1, end_ms);
            self.now = self.now.plus_ms(next - self.now.mono_ms);
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.server.requests()
    }

    pub fn export_limit_w(&self) -> Option<f64> {
        self.outcomes
            .last()
            .and_then(|(_, o)| o.active.watts(ControlMode::ExpLimW))
    }

    pub fn import_limit_w(&self) -> Option<f64> {
        self.outcomes
            .last()
            .and_then(|(_, o)| o.active.watts(ControlMode::ImpLimW))
    }

    pub fn last_state(&self) -> Option<ConnectionState> {
        self.statuses.last().map(|s| s.state)
    }

    pub fn status(&self) -> EngineStatus {
        self.engine.status()
    }
}

pub fn has(requests: &[Recorded], method: &str, path: &str) -> bool {
    requests
        .iter()
        .any(|r| r.method == method && r.path == path)
}

pub fn count(requests: &[Recorded], method: &str, path: &str) -> usize {
    requests
        .iter()
        .filter(|r| r.method == method && r.path == path)
        .count()
}
