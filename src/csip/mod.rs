//! The CSIP-AUS client engine, as a state machine with no IO and no clock of its own
//! (the shape of quinn-proto's `Connection`). [`Engine`] ([`engine`]) only dispatches;
//! each IEEE 2030.5 function set owns its state and its handlers in its own file:
//! [`well_known`] (CSIP-AUS v1.3 service discovery, before the DeviceCapability when
//! only a server URL is configured), [`dcap`] (DeviceCapability), [`time`] (Time, the server clock), [`edev`] (EndDevice,
//! in-band registration, Registration PIN, csipaus ConnectionPoint), [`fsa`]
//! (FunctionSetAssignments), [`pricing`] (Pricing: tariffs and the price timeline), [`derp`] (DERPrograms with their DERControls,
//! DefaultDERControl and DERCurves, and the scheduler run over them), [`der`] (DER
//! reports), [`mirror`] (Metering Mirror), [`response`] (Response), [`log_event`]
//! (LogEvent), [`subscription`] (Subscription / Notification). [`context`] is what they share (the request queue, the poller, the
//! status); [`poller`], [`averaging`] and [`discovery`] are pure helpers.
//!
//! ## Call order
//! ```text
//! let mut engine = csip::Engine::new(config, now)?;     // nothing sent yet
//! loop {
//!     // 1. feed what happened, each with the `Now` it happened at:
//!     engine.handle_timeout(now);                        // when poll_timeout() passed
//!     engine.handle_measurements(sample, now);           // about once a second
//!     engine.handle_nameplate(nameplate, now);           // when the inverters tell it
//!     engine.handle_device_event(event, now);            // alarms, comms, staleness
//!     engine.handle_response(id, result, now);           // each answer, any order
//!     engine.handle_notification(body, now)?;            // a Notification POSTed to us
//!     // 2. drain the outputs, in any order, until each returns None:
//!     while let Some(request) = engine.poll_request() { /* send it */ }
//!     while let Some(event) = engine.poll_event() { /* controls, deliveries, status */ }
//!     // 3. sleep until engine.poll_timeout() (monotonic ms), a response, or a sample.
//! }
//! ```
//! Every input may produce requests and events; nothing happens between inputs. Each
//! request is answered exactly once with `handle_response` (a transport error or
//! timeout is an answer too); requests may be in flight together and be answered in
//! any order.
//!
//! ## Time rule
//! The engine reads no clock. Every input carries a [`crate::clock::Now`]; its
//! monotonic part must never go backwards between calls and times all polls, retries
//! and backoff; its UTC part plus the server clock offset learnt from the Time resource
//! ([`time::ServerClock`]) is the 2030.5 time events and readings are scheduled by.
//! [`Engine::poll_timeout`] is in the monotonic clock. A test drives a virtual `Now`
//! and runs a simulated day in a fraction of a CPU-second.

pub mod averaging;
pub mod context;
pub mod dcap;
pub mod der;
pub mod derp;
pub mod discover_cli;
pub mod discovery;
pub mod edev;
pub mod engine;
pub mod fsa;
pub mod log_event;
pub mod mirror;
pub mod poller;
pub mod pricing;
pub mod response;
pub mod subscription;
pub mod time;
pub mod well_known;

pub use averaging::{MeterSample, PhaseValues};
pub use context::{Request, RequestId};
pub use discover_cli::discover_main;
pub use engine::Engine;
pub use log_event::DeviceEvent;

use crate::schedule;

/// Everything the engine needs to know about this installation.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How to reach the server (base URL, TLS identity); the DeviceCapability path
    /// comes from [`EngineConfig::dcap_path`].
    pub http: crate::http::ClientConfig,
    /// Path of the DeviceCapability resource on the server, e.g. `/dcap`.
    pub dcap_path: String,
    /// Find the DeviceCapability and the CSIP-AUS version through
    /// `/.well-known/csipaus` ([`well_known`], `option server_url`); `dcap_path` is then
    /// unused.
    pub service_discovery: bool,
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
    /// Write every body in the plain IEEE 2030.5-2018 shape (`server` option
    /// `schema_2018`): no csipaus element, no ConnectionPoint PUT, whatever `csipaus`
    /// says; csipaus controls are still read.
    pub schema_2018: bool,
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
    /// Where the server is to POST Notifications (csipd's own mutual-TLS listener,
    /// `option notification_url`); `None`: no subscriptions, polling only.
    pub notification_uri: Option<String>,
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
    /// Minimum power factor (cos φ) over- and under-excited (the fleet's least capable
    /// inverter's; SunSpec 120 PFRtgQ1/PFRtgQ4, 702 WOvrExtRtgPF/WUndExtRtgPF).
    pub rtg_min_pf_over_excited: Option<f64>,
    pub rtg_min_pf_under_excited: Option<f64>,
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
    /// The battery behind the gateway (CSIP-AUS v1.3 storage), `None` without one.
    pub storage: Option<StorageNameplate>,
    /// The curve, power-factor and var modes ([`schedule::ControlMode::bit`] mask:
    /// opModVoltVar, VoltWatt, FixedPFInjectW, FixedPFAbsorbW, FixedVar, TargetVar, WattVar, WattPF, FreqDroop) that every
    /// inverter offers through its SunSpec models (`devices::SunSpecMap::offers`).
    /// `None` while the inverters have not all been read: such a mode is then taken
    /// (not answered 252 because of a start-up race) but not claimed in DERCapability.
    /// `Some(0)` on a site without inverters.
    pub inverter_modes: Option<u32>,
}

/// The batteries' ratings, summed over storage inverters, for the storage elements of
/// DERCapability and DERSettings (IEEE 2030.5 `rtgMaxChargeRateW`,
/// `rtgMaxDischargeRateW`, `rtgMaxWh`; csipaus v1.3 `setMinWh`, `vppModesSupported`).
/// Source: SunSpec model 124 `WChaMax` (charge and, lacking its own rating, discharge
/// rate), the device's `capacity_wh` option or model 713 `WHRtg`, model 124
/// `MinRsvPct` for the reserve.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StorageNameplate {
    /// Rated maximum charge rate, W.
    pub max_charge_rate_w: f64,
    /// Rated maximum discharge rate, W.
    pub max_discharge_rate_w: f64,
    /// Usable capacity, Wh (`None`: unknown; no stored-energy reading then).
    pub max_wh: Option<f64>,
    /// Energy the battery keeps in reserve (it stops discharging there), Wh.
    pub min_wh: Option<f64>,
    /// csipd acts on `opModStorageTargetW` through the battery's controls (VPPControlType
    /// bit 0); false when the battery has no control model csipd can command.
    pub can_target: bool,
}

impl StorageNameplate {
    /// csipaus VPPControlType bitmap: bit 0 opModStorageTargetW.
    pub fn vpp_modes(&self) -> u8 {
        u8::from(self.can_target)
    }
}

/// One second's view of the battery (summed over storage inverters).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StorageMeasurement {
    /// Output at the AC terminals, W: positive discharging, negative charging.
    pub active_power_w: Option<f64>,
    /// Energy stored now, Wh (state of charge × capacity).
    pub stored_wh: Option<f64>,
    /// State of charge, % (SunSpec 124 `ChaState`, 713 `SoC`).
    pub soc_pct: Option<f64>,
    /// Connected to the grid, available, operating (as [`InverterState`]).
    pub connected: bool,
    pub available: bool,
    pub operating: bool,
}

impl StorageMeasurement {
    /// StorageModeStatusType: 0 charging, 1 discharging, 2 holding (within 1 % of the
    /// charge rate, or 10 W, of zero).
    pub fn storage_mode(&self, max_charge_rate_w: f64) -> Option<u8> {
        let w = self.active_power_w?;
        let deadband = (max_charge_rate_w * 0.01).max(10.0);
        Some(if w < -deadband {
            0
        } else if w > deadband {
            1
        } else {
            2
        })
    }

    /// The usage point's sample: power and stored energy.
    pub fn sample(&self) -> Option<MeterSample> {
        if self.active_power_w.is_none() && self.stored_wh.is_none() {
            return None;
        }
        Some(MeterSample {
            active_power_w: PhaseValues {
                total: self.active_power_w,
                ..PhaseValues::default()
            },
            stored_energy_wh: self.stored_wh,
            ..MeterSample::default()
        })
    }
}

impl Nameplate {
    /// Whether this site can carry out `mode` (something behind the gateway acts on
    /// it): the four csipaus limits as the `can_limit_*` flags say, opModConnect,
    /// opModEnergize, opModMaxLimW and opModFixedW with anything that can limit
    /// generation or load, opModStorageTargetW with a commandable battery, the curve,
    /// power-factor and var modes as [`Nameplate::inverter_modes`] says. The engine
    /// leaves the other modes out of every control before scheduling: a control that
    /// sets nothing else is answered 252 (IEEE 2030.5 Table 27, "cannot be applied").
    pub fn carries(&self, mode: schedule::ControlMode) -> bool {
        use schedule::ControlMode as M;
        let der = self.can_limit_generation || self.can_limit_load;
        match mode {
            M::ExpLimW => self.can_limit_export,
            M::ImpLimW => self.can_limit_import,
            M::GenLimW => self.can_limit_generation,
            M::LoadLimW => self.can_limit_load,
            M::Connect | M::Energize | M::MaxLimW | M::FixedW => der,
            M::StorageTargetW => self.storage.as_ref().is_some_and(|s| s.can_target),
            M::VoltVar
            | M::VoltWatt
            | M::FixedPFInjectW
            | M::FixedPFAbsorbW
            | M::FixedVar
            | M::TargetVar
            | M::WattVar
            | M::WattPF
            | M::FreqDroop
            | M::FreqWatt => self.inverter_modes.is_none_or(|m| m & mode.bit() != 0),
        }
    }

    /// The modes (mask of [`schedule::ControlMode::bit`]) this site carries out, see
    /// [`Nameplate::carries`].
    pub fn carried_modes(&self) -> u32 {
        schedule::ControlMode::ALL
            .iter()
            .filter(|m| self.carries(**m))
            .fold(0, |acc, m| acc | m.bit())
    }

    /// The EndDevice's DeviceCategoryType bit for this fleet (IEEE 2030.5 sep.xsd
    /// DeviceCategoryType): 21 photovoltaic system (DERType 4), 23 combined PV and
    /// storage (81), 25 other storage system (82), 24 other generation system otherwise.
    /// The CSIP-AUS DR procedures (DRA-01) want one of these bits set.
    pub fn device_category(&self) -> u32 {
        match self.der_type {
            4 => 1 << 21,
            81 => 1 << 23,
            82 => 1 << 25,
            _ => 1 << 24,
        }
    }

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
    /// Active power output now, W (positive = generation); `None` when not measured.
    /// An operating inverter producing (almost) nothing is reported as not operating
    /// (CSIP-AUS ALL-08).
    pub active_power_w: Option<f64>,
}

/// One second's view of the site, from the runtime.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SiteMeasurement {
    /// At the connection point (positive = import).
    pub site: Option<MeterSample>,
    /// Of the DER fleet together (positive active power = generation).
    pub der: Option<MeterSample>,
    pub inverters: Vec<InverterState>,
    /// The battery, when the site has one (CSIP-AUS v1.3 storage).
    pub storage: Option<StorageMeasurement>,
}

/// Where the runtime's driver gets measurements for [`Engine::handle_measurements`].
/// Called once a second; `None` when the data is stale (nothing is averaged then).
pub trait MeasurementSource {
    fn sample(&mut self) -> Option<SiteMeasurement>;
}

impl<F: FnMut() -> Option<SiteMeasurement>> MeasurementSource for F {
    fn sample(&mut self) -> Option<SiteMeasurement> {
        self()
    }
}

/// The state of the conversation with the utility's 2030.5 server: the one type for it,
/// kept by the engine and shown as-is by the status (`/status` JSON `utility.state`,
/// MQTT `B/utility`, `csipd_utility_state{state}`, `csipd status`, LuCI, the built-in
/// page). Serialized in snake_case (`polling`, `pin_mismatch`, ...); those strings are
/// public names, see [`ConnectionState::as_str`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Walking the tree from DeviceCapability (or `/.well-known/csipaus`) to the
    /// EndDevice, its Registration and FunctionSetAssignments.
    Discovering,
    /// Found and registered; reading each resource at its pollRate. The normal state.
    Polling,
    /// The server cannot be reached; the schedule runs on what was last known, then on
    /// the default control (CSIP-AUS).
    Offline,
    /// The server's Registration PIN differs from `registration_pin`: csipd takes none
    /// of this server's controls and sends nothing but a re-read of the Registration.
    PinMismatch,
    /// No EndDevice for this LFDI and in-band registration is off: the utility has to
    /// register the device out of band first.
    NotRegistered,
    /// No utility server configured (`dcap_url`/`server_url`): no engine runs, only the
    /// owner's limits apply. Set by the runtime, never by the engine.
    NotConfigured,
}

impl ConnectionState {
    /// Every state, in the order the metrics list them.
    pub const ALL: [ConnectionState; 6] = [
        ConnectionState::Discovering,
        ConnectionState::Polling,
        ConnectionState::Offline,
        ConnectionState::PinMismatch,
        ConnectionState::NotRegistered,
        ConnectionState::NotConfigured,
    ];

    /// The public name: the same string as the JSON (`discovering`, `polling`,
    /// `offline`, `pin_mismatch`, `not_registered`, `not_configured`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Discovering => "discovering",
            ConnectionState::Polling => "polling",
            ConnectionState::Offline => "offline",
            ConnectionState::PinMismatch => "pin_mismatch",
            ConnectionState::NotRegistered => "not_registered",
            ConnectionState::NotConfigured => "not_configured",
        }
    }

    /// Whether the registration failed (PIN mismatch, not registered): the status then
    /// says why in `registration_problem`.
    pub fn is_registration_problem(self) -> bool {
        matches!(
            self,
            ConnectionState::PinMismatch | ConnectionState::NotRegistered
        )
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
    /// Unix seconds (server-adjusted) of the next planned poll; `None` for a resource
    /// read together with its parent (a program's DERControlList, DefaultDERControl),
    /// which `next_read` names.
    pub next_poll_s: Option<i64>,
    /// How it is read next when it has no time of its own (`next_poll_s` is `None`).
    pub next_read: Option<NextRead>,
    /// The last failure reading it (HTTP status, timeout, a document that did not
    /// parse, an item left out of a list); `None` after a good read.
    pub last_error: Option<String>,
}

/// How a resource with no poll time of its own is read next (the status's "next"
/// column; JSON `{"with": "DERProgramList"}` or `"once"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NextRead {
    /// Read again each time this poll group is read (its kind's name, e.g.
    /// "DERProgramList": a program's DERControlList is read with its program list).
    With(String),
    /// Read once per href and not again (a ReadingType does not change).
    Once,
}

impl NextRead {
    /// How a resource of `kind` with no time of its own is read next.
    pub fn of(kind: poller::PollKind) -> NextRead {
        match kind.read_with() {
            Some(parent) => NextRead::With(parent.name().to_string()),
            None => NextRead::Once,
        }
    }
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
    /// MirrorMeterReading POSTs the server accepted since the engine started.
    pub readings_posted: u64,
    /// Responses (to DERControls and to TimeTariffIntervals) waiting to be accepted by
    /// the server.
    pub responses_pending: usize,
    /// LogEvents queued, held by the rate limit, sent and dropped.
    pub log_events: log_event::LogEventCounts,
    pub last_error: Option<String>,
    /// The CSIP-AUS version in use (`v1.3`, `v1.2`); `None` for plain IEEE 2030.5 and
    /// while service discovery has not chosen one yet.
    pub csipaus_version: Option<&'static str>,
    /// The Pricing function set's prices now and next, per RateComponent (empty when
    /// the server links no TariffProfileList).
    pub prices: Vec<pricing::RatePrice>,
}

/// What the engine tells its driver ([`Engine::poll_event`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The active controls changed (or were evaluated for the first time), or responses
    /// fell due: `state` is the scheduler's memory (ledger, randomisation draws) to
    /// persist before the responses are sent; `active` the limits to apply.
    Controls(Box<schedule::Outcome>),
    /// A response POST ended (see [`EngineSink::response_delivery`]). `at_s` is local
    /// Unix time.
    ResponseDelivery {
        key: schedule::ResponseKey,
        delivery: response::Delivery,
        at_s: i64,
        detail: String,
    },
    /// The status changed (state, errors, polls, queues).
    Status(EngineStatus),
}

/// Where the driver hands the engine's [`Event`]s (see [`EngineSink::deliver`]).
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

    /// Hands one [`Event`] to the matching method.
    fn deliver(&mut self, event: &Event) {
        match event {
            Event::Controls(outcome) => self.controls(outcome),
            Event::Status(status) => self.status(status),
            Event::ResponseDelivery {
                key,
                delivery,
                at_s,
                detail,
            } => self.response_delivery(key, *delivery, *at_s, detail),
        }
    }
}

/// Errors of the engine's set-up (runtime errors go into the status, not here).
#[derive(Debug)]
pub enum EngineError {
    /// A configuration value the engine cannot work with (the message names it and the
    /// file it came from).
    Config(String),
    /// The utility server settings of `file` (URL, TLS files) do not make an HTTP client
    /// configuration.
    Server {
        file: String,
        source: Box<crate::http::HttpError>,
    },
    /// `option cert` of the utility section in `file` is not set: the LFDI and SFDI come
    /// from the client certificate.
    NoCertificate { file: String },
    /// The client certificate at `path` cannot be read or holds no usable identity
    /// (the LFDI and SFDI come from it).
    Certificate { path: String, message: String },
    /// The HTTP client could not be built (certificate, key, CA, URL).
    Http(crate::http::HttpError),
}

impl std::fmt::Display for EngineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EngineError::Config(msg) => write!(f, "csip engine configuration: {msg}"),
            EngineError::Server { file, source } => write!(f, "{file}: {source}"),
            EngineError::NoCertificate { file } => write!(
                f,
                "{file}: option cert of section 'utility' is not set (the LFDI comes from it)"
            ),
            EngineError::Certificate { path, message } => {
                write!(f, "client certificate {path}: {message}")
            }
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
        let registration_problem = if self.state.is_registration_problem() {
            self.last_error.clone()
        } else {
            None
        };
        crate::status::Utility {
            state: self.state,
            since_unix_s,
            server_url,
            lfdi: Some(self.lfdi.clone()),
            sfdi: Some(self.sfdi),
            clock_offset_s: Some(self.clock_offset_s as f64),
            registration_problem,
            csipaus_version: self.csipaus_version.map(str::to_string),
            readings_posted: self.readings_posted,
            readings_pending: self.readings_pending,
            responses_pending: self.responses_pending,
            prices: self.prices.clone(),
            resources: self
                .polls
                .iter()
                .map(|poll| crate::status::ResourcePoll {
                    name: poll.kind.to_string(),
                    href: poll.href.clone(),
                    last_poll_unix_s: poll.last_poll_s,
                    next_poll_unix_s: poll.next_poll_s,
                    next_read: poll.next_read.clone(),
                    last_error: poll.last_error.clone(),
                })
                .collect(),
        }
    }
}
