//! The CSIP-AUS client engine: discovery, registration, polling, DER reports,
//! metering mirror, responses. One file per 2030.5 function set; the decisions are pure
//! ([`poller`], [`averaging`], report change detection in [`der`], the tree walk
//! results in [`discovery`]) and the IO is a thin async driver ([`engine`]) on smol.
//!
//! How the runtime uses it:
//! ```text
//! let engine = csip::Engine::new(engine_config, measurement_source, sink)?;
//! executor.spawn(engine.run());            // runs until the process ends
//! ```
//! - In: [`EngineConfig`] (server URL and TLS identity, LFDI/SFDI, PIN, NMI, PEN,
//!   nameplate of the DER fleet), a [`MeasurementSource`] the engine samples once a
//!   second (site meter, DER meter, inverter states).
//! - Out: an [`EngineSink`] called with every change of the active controls (the
//!   scheduler's [`crate::schedule::Outcome`]) and with an [`EngineStatus`] snapshot.

pub mod averaging;
pub mod der;
pub mod discover_cli;
pub mod discovery;
pub mod edev;
pub mod engine;
pub mod mirror;
pub mod poller;
pub mod response;
pub mod time;
pub mod transport;

pub use averaging::{MeterSample, PhaseValues};
pub use discover_cli::discover_main;
pub use engine::Engine;

use crate::schedule;

/// Everything the engine needs to know about this installation.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How to reach the server (base URL, TLS identity); the DeviceCapability path
    /// comes from [`EngineConfig::dcap_path`].
    pub http: crate::http::ClientConfig,
    /// Path of the DeviceCapability resource on the server, e.g. `/dcap`.
    pub dcap_path: String,
    /// This device's LFDI (40 hex digits) and SFDI.
    pub lfdi: String,
    pub sfdi: u64,
    /// The registration PIN (with its check digit) the installer was given; when set,
    /// csipd refuses to act on a server whose Registration shows another PIN.
    pub pin: Option<u32>,
    /// Register in-band (POST EndDevice) when the server has no EndDevice for us.
    pub in_band_registration: bool,
    /// National Metering Identifier, PUT as the csipaus ConnectionPoint when offered.
    pub nmi: Option<String>,
    /// IANA Private Enterprise Number: mRIDs of what csipd creates end with it.
    pub pen: u32,
    /// Send csipaus elements (CSIP-AUS servers); false for plain 2030.5 servers
    /// (GridAPPS-D answers 500 to any csipaus element).
    pub csipaus: bool,
    /// Use the CSIP-AUS v1.3 namespace (`https://csipaus.org/ns/v1.3`) when writing.
    pub csipaus_v1_3: bool,
    /// What the DER fleet can do, for DERCapability / DERSettings.
    pub nameplate: Nameplate,
    /// Poll no resource less often than this, whatever pollRate the server states.
    /// `None` (the default) obeys the server; lab servers that state 900 s everywhere
    /// (GridAPPS-D) can be sped up with it.
    pub max_poll_interval_s: Option<u32>,
    /// Re-send DER reports at least this often even when nothing changed.
    pub report_backstop_s: u32,
    /// Post rate for mirror readings until the server states one.
    pub default_post_rate_s: u32,
    /// How many closed reading intervals to keep while the server is unreachable.
    pub reading_buffer_intervals: usize,
    /// Seed for the scheduler's randomisation draws.
    pub rng_seed: u64,
}

/// The DER fleet behind this gateway, summed over inverters.
#[derive(Debug, Clone, PartialEq)]
pub struct Nameplate {
    /// Rated maximum active power output, W.
    pub rtg_max_w: f64,
    /// Rated maximum apparent power, VA.
    pub rtg_max_va: Option<f64>,
    /// Rated maximum reactive power injection / absorption, var.
    pub rtg_max_var: Option<f64>,
    pub rtg_max_var_neg: Option<f64>,
    /// Nominal AC voltage, V.
    pub rtg_v_nom: Option<f64>,
    /// 2030.5 DERType: 4 PV, 81 PV and storage, 82 storage.
    pub der_type: u8,
    /// The site can limit its export (inverter curtailment).
    pub can_limit_export: bool,
    /// The site can limit its import (needs a controllable load or a battery).
    pub can_limit_import: bool,
    /// The site can limit generation.
    pub can_limit_generation: bool,
    /// The site can limit load (controllable load or battery).
    pub can_limit_load: bool,
}

impl Nameplate {
    /// csipaus DOEControlType bitmap of what the site can really do: bit 0 export,
    /// 1 import, 2 generation, 3 load limit.
    pub fn doe_modes(&self) -> u8 {
        u8::from(self.can_limit_export)
            | u8::from(self.can_limit_import) << 1
            | u8::from(self.can_limit_generation) << 2
            | u8::from(self.can_limit_load) << 3
    }
}

/// The state of one inverter, as the device layer sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InverterState {
    /// Connected to the grid (relay closed).
    pub connected: bool,
    /// Available (powered, able to run).
    pub available: bool,
    /// Operating (producing or ready to produce).
    pub operating: bool,
    /// Rated maximum active power, W.
    pub rtg_max_w: f64,
}

/// One second's view of the site, from the runtime.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SiteMeasurement {
    /// At the connection point (positive = import).
    pub site: Option<MeterSample>,
    /// Of the DER fleet together (positive active power = generation).
    pub der: Option<MeterSample>,
    pub inverters: Vec<InverterState>,
}

/// Where the engine gets measurements. Called once a second; `None` when the data is
/// stale (nothing is averaged for that second).
pub trait MeasurementSource {
    fn sample(&mut self) -> Option<SiteMeasurement>;
}

impl<F: FnMut() -> Option<SiteMeasurement>> MeasurementSource for F {
    fn sample(&mut self) -> Option<SiteMeasurement> {
        self()
    }
}

/// Connection state of the engine, for the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Walking the tree from DeviceCapability.
    Discovering,
    /// Discovered and polling.
    Connected,
    /// The server cannot be reached; the schedule runs on what was last known.
    Unreachable,
    /// The server's Registration PIN differs from the configured one: csipd does not
    /// act on this server's controls.
    PinMismatch,
    /// No EndDevice for this LFDI and in-band registration is off.
    NotRegistered,
}

impl ConnectionState {
    pub fn name(self) -> &'static str {
        match self {
            ConnectionState::Discovering => "discovering",
            ConnectionState::Connected => "connected",
            ConnectionState::Unreachable => "unreachable",
            ConnectionState::PinMismatch => "pin-mismatch",
            ConnectionState::NotRegistered => "not-registered",
        }
    }
}

/// Poll bookkeeping of one resource, for the status page.
#[derive(Debug, Clone, PartialEq)]
pub struct PollStatus {
    pub href: String,
    pub kind: &'static str,
    pub rate_s: u32,
    /// Unix seconds (server-adjusted) of the last successful poll.
    pub last_poll_s: Option<i64>,
    /// Unix seconds (server-adjusted) of the next planned poll.
    pub next_poll_s: i64,
}

/// What the engine reports about itself (the runtime maps it into `status::Snapshot`).
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStatus {
    pub state: ConnectionState,
    pub lfdi: String,
    pub sfdi: u64,
    /// Server time minus local time, seconds.
    pub clock_offset_s: i64,
    pub edev_href: Option<String>,
    pub polls: Vec<PollStatus>,
    /// Mirror reading intervals waiting to be posted, and how many were dropped.
    pub readings_pending: usize,
    pub readings_dropped: u64,
    /// Responses waiting to be accepted by the server.
    pub responses_pending: usize,
    pub last_error: Option<String>,
}

/// Where the engine's results go.
pub trait EngineSink {
    /// The active controls changed (or were evaluated for the first time), or responses
    /// fell due. `outcome.state` is the scheduler's memory (ledger, randomisation
    /// draws) to persist; `outcome.active` the limits to apply.
    fn controls(&mut self, outcome: &schedule::Outcome);
    /// A new status snapshot (sent on change of state, after each poll round).
    fn status(&mut self, status: &EngineStatus);
    /// A response POST ended: `Accepted` and `Refused` settle it for good (a store
    /// marks its ledger entry, so a restart does not send it again), `RetryLater` is
    /// one more attempt. `at_s` is local Unix time; `detail` says why it was refused.
    /// Sinks without a store (discovery, tests) need not care: the default ignores it.
    fn response_delivery(
        &mut self,
        _key: &schedule::ResponseKey,
        _delivery: response::Delivery,
        _at_s: i64,
        _detail: &str,
    ) {
    }
}

/// Errors of the engine's set-up (runtime errors go into the status, not here).
#[derive(Debug)]
pub enum EngineError {
    Config(String),
    Http(crate::http::HttpError),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(msg) => write!(f, "csip engine configuration: {msg}"),
            EngineError::Http(err) => write!(f, "csip engine: {err}"),
        }
    }
}

impl std::error::Error for EngineError {}

impl EngineStatus {
    /// The status page's `utility` part. `server_url` is the DeviceCapability URL in
    /// use; `since_unix_s` when `state` was entered (the runtime tracks changes).
    pub fn to_utility(
        &self,
        server_url: Option<String>,
        since_unix_s: i64,
    ) -> crate::status::Utility {
        use crate::status::ConnectionState as Shown;
        let (state, registration_problem) = match self.state {
            ConnectionState::Discovering => (Shown::Discovering, None),
            ConnectionState::Connected => (Shown::Polling, None),
            ConnectionState::Unreachable => (Shown::Offline, None),
            ConnectionState::PinMismatch | ConnectionState::NotRegistered => {
                (Shown::Discovering, self.last_error.clone())
            }
        };
        crate::status::Utility {
            state,
            since_unix_s,
            server_url,
            lfdi: Some(self.lfdi.clone()),
            sfdi: Some(self.sfdi),
            clock_offset_s: Some(self.clock_offset_s as f64),
            registration_problem,
            resources: self
                .polls
                .iter()
                .map(|poll| crate::status::ResourcePoll {
                    name: poll.kind.to_string(),
                    href: poll.href.clone(),
                    last_poll_unix_s: poll.last_poll_s,
                    next_poll_unix_s: Some(poll.next_poll_s),
                    last_error: None,
                })
                .collect(),
        }
    }
}
