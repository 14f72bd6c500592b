//! The status snapshot: everything `csipd status`, `/status`, `/metrics`, ubus and LuCI
//! show, as one plain value. The runtime writes it through a [`SnapshotHandle`]; the
//! status server thread only reads clones of it.
//!
//! Times are Unix seconds (`_unix_s`) taken from the daemon's clock; [`Snapshot::now_unix_s`]
//! is stamped when a snapshot is served so readers compute countdowns against the
//! daemon's clock, not their own.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// How many entries `last_errors` keeps (oldest dropped first).
pub const LAST_ERRORS_CAPACITY: usize = 20;
/// How many entries the event log behind `/events` keeps (oldest dropped first).
pub const EVENT_LOG_CAPACITY: usize = 200;
/// History resolution: one chart point per this many seconds.
pub const HISTORY_INTERVAL_S: i64 = 10;
/// History window: the chart shows the last hour.
pub const HISTORY_WINDOW_S: i64 = 3600;

/// The whole status picture at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// csipd version (`CARGO_PKG_VERSION`).
    pub version: String,
    /// The daemon's clock when this snapshot was served (set by the status server).
    pub now_unix_s: i64,
    /// When the daemon started.
    pub started_unix_s: i64,
    /// The daemon's local time offset from UTC, so `csipd status` shows wall-clock
    /// times as the owner sees them (tariff windows are local time too).
    pub local_utc_offset_s: i32,
    /// Connection to the utility's 2030.5 server.
    pub utility: Utility,
    /// The limits in force now, one per mode (after merging utility, owner and fail-safe):
    /// replaced on every update, so at most one entry per control mode.
    pub limits: Vec<ActiveLimit>,
    /// The utility's inverter settings in force (opModVoltVar, opModVoltWatt,
    /// opModFixedPFInjectW, opModFixedPFAbsorbW, opModFixedVar), one per mode; replaced
    /// on every update.
    #[serde(default)]
    pub inverter_settings: Vec<InverterSetting>,
    /// Utility events that start later, soonest first. Replaced on every update: as
    /// many as the scheduler holds (the server's current lists).
    pub upcoming_events: Vec<UpcomingEvent>,
    /// Power flows at the connection point.
    pub site: SiteFlows,
    /// Meters and inverters: one entry per configured device.
    pub devices: Vec<Device>,
    /// What csipd last wrote to each inverter: one entry per inverter.
    pub setpoints: Vec<Setpoint>,
    /// The most recent errors, oldest first, at most [`LAST_ERRORS_CAPACITY`].
    pub last_errors: VecDeque<ErrorEntry>,
    /// Export against export limit over the last hour, for the chart: at most
    /// `HISTORY_WINDOW_S / HISTORY_INTERVAL_S + 1` (361) points.
    pub history: History,
    /// The latest DERControlResponses csipd sent, oldest first, at most
    /// [`RESPONSES_CAPACITY`] (the store's response ledger keeps them all).
    #[serde(default)]
    pub responses: VecDeque<ResponseSent>,
    /// The one-line answer for a household ([`super::summary::line`]), set when the
    /// snapshot is served.
    #[serde(default)]
    pub summary: String,
}

/// How many sent responses the snapshot keeps.
pub const RESPONSES_CAPACITY: usize = 20;

/// One DERControlResponse POST that ended, as the response ledger records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseSent {
    /// The DERControl's mRID (hex).
    pub mrid: String,
    /// Received, Started, Completed, Cancelled, ... (IEEE 2030.5 Table 27).
    pub status: crate::schedule::ResponseStatus,
    /// "accepted" (2xx), "refused" (given up: 4xx) or "retry_later" (sent again later).
    pub delivery: String,
    pub at_unix_s: i64,
}

impl Snapshot {
    /// An empty snapshot for a daemon that has just started.
    pub fn new(started_unix_s: i64) -> Self {
        Snapshot {
            version: crate::VERSION.to_string(),
            now_unix_s: started_unix_s,
            started_unix_s,
            local_utc_offset_s: 0,
            utility: Utility {
                state: ConnectionState::Discovering,
                since_unix_s: started_unix_s,
                server_url: None,
                lfdi: None,
                sfdi: None,
                clock_offset_s: None,
                registration_problem: None,
                csipaus_version: None,
                readings_posted: 0,
                readings_pending: 0,
                responses_pending: 0,
                prices: Vec::new(),
                resources: Vec::new(),
            },
            limits: Vec::new(),
            inverter_settings: Vec::new(),
            upcoming_events: Vec::new(),
            site: SiteFlows::default(),
            devices: Vec::new(),
            setpoints: Vec::new(),
            last_errors: VecDeque::new(),
            history: History::default(),
            responses: VecDeque::new(),
            summary: String::new(),
        }
    }

    /// Records a response POST that ended, dropping the oldest beyond
    /// [`RESPONSES_CAPACITY`].
    pub fn push_response(&mut self, response: ResponseSent) {
        if self.responses.len() >= RESPONSES_CAPACITY {
            self.responses.pop_front();
        }
        self.responses.push_back(response);
    }

    /// Records an error, dropping the oldest beyond [`LAST_ERRORS_CAPACITY`]. The same
    /// error from the same source again moves that entry to the end and counts it, so
    /// one device repeating itself never pushes another's error out.
    pub fn push_error(&mut self, t_unix_s: i64, source: &str, message: &str) {
        if let Some(i) = self
            .last_errors
            .iter()
            .position(|e| e.source == source && e.message == message)
        {
            if let Some(mut entry) = self.last_errors.remove(i) {
                entry.count = entry.count.saturating_add(1);
                entry.t_unix_s = t_unix_s;
                self.last_errors.push_back(entry);
                return;
            }
        }
        if self.last_errors.len() >= LAST_ERRORS_CAPACITY {
            self.last_errors.pop_front();
        }
        self.last_errors.push_back(ErrorEntry {
            t_unix_s,
            source: source.to_string(),
            message: message.to_string(),
            count: 1,
        });
    }

    /// Moves the utility connection to `state`; `since` only changes on a real change so
    /// the page can say "polling for 3 h".
    pub fn set_connection_state(&mut self, state: ConnectionState, t_unix_s: i64) {
        if self.utility.state != state {
            self.utility.state = state;
            self.utility.since_unix_s = t_unix_s;
        }
    }

    /// The active limit for `mode`, if one is in force.
    pub fn limit(&self, mode: LimitMode) -> Option<&ActiveLimit> {
        self.limits.iter().find(|l| l.mode == mode)
    }
}

/// The engine's connection state, shown as-is (one type, owned by `csip`).
pub use crate::csip::ConnectionState;

/// The utility connection, identity and per-resource polling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Utility {
    pub state: ConnectionState,
    /// When `state` was entered.
    pub since_unix_s: i64,
    /// The DeviceCapability URL in use (`dcap_url`), or the server's origin when the
    /// DeviceCapability is found through `/.well-known/csipaus` (`server_url`).
    pub server_url: Option<String>,
    /// Long-form device identifier (40 hex digits) of our certificate.
    pub lfdi: Option<String>,
    /// Short-form device identifier (decimal with check digit) of our certificate.
    pub sfdi: Option<u64>,
    /// Server time minus our time, from the Time resource.
    pub clock_offset_s: Option<f64>,
    /// Why registration failed (e.g. PIN mismatch, EndDevice not found), if it did.
    pub registration_problem: Option<String>,
    /// The CSIP-AUS version in use (`v1.3`, `v1.2`), from `/.well-known/csipaus`
    /// service discovery or the configured namespace; absent for plain IEEE 2030.5 and
    /// before discovery chose one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csipaus_version: Option<String>,
    /// Meter readings (MirrorMeterReading POSTs) the utility accepted since the engine
    /// started, and closed intervals still waiting to be posted.
    #[serde(default)]
    pub readings_posted: u64,
    #[serde(default)]
    pub readings_pending: usize,
    /// DERControlResponses issued and not yet settled with the server (accepted, or
    /// refused for good): they are sent again until they are, across restarts too.
    #[serde(default)]
    pub responses_pending: usize,
    /// The utility's prices (Pricing function set, CSIP-AUS v1.3): per RateComponent
    /// the price now and next, with its unit and currency; empty without tariffs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<crate::csip::pricing::RatePrice>,
    /// One entry per polled resource.
    pub resources: Vec<ResourcePoll>,
}

/// Polling state of one 2030.5 resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourcePoll {
    /// What it is, e.g. "DERControlList".
    pub name: String,
    pub href: String,
    pub last_poll_unix_s: Option<i64>,
    pub next_poll_unix_s: Option<i64>,
    /// Without a next poll time: how it is read next (`{"with": "DERProgramList"}`: each
    /// time that list is read; `"once"`: not again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_read: Option<crate::csip::NextRead>,
    /// The last failure; cleared by the next good poll.
    pub last_error: Option<String>,
}

/// The limit mode and source are control's types (one type per concept).
pub use crate::control::{FailSafeCause, FallbackCause, LimitMode, LimitSource};

/// One limit in force.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveLimit {
    pub mode: LimitMode,
    /// The limit in watts (absent for `connect`).
    pub value_w: Option<f64>,
    /// For `connect`: whether the site may stay connected.
    pub connect: Option<bool>,
    pub source: LimitSource,
    /// When it stops applying, if known.
    pub end_unix_s: Option<i64>,
    /// The site cannot act on it: an import or load limit without a storage inverter
    /// whose charge rate csipd can limit (SunSpec model 124).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsupported: bool,
    /// A device that should enforce it cannot: "not enforceable: pv has no control
    /// model" (an inverter without SunSpec 123 or 704).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enforceable: Option<String>,
}

/// One of the utility's inverter settings in force (a curve, a power factor, a var
/// level), put on every inverter that offers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InverterSetting {
    /// The 2030.5 mode: `opModVoltVar`, `opModVoltWatt`, `opModFixedPFInjectW`,
    /// `opModFixedPFAbsorbW`, `opModFixedVar`, `opModTargetVar`, `opModWattVar`, `opModWattPF`, `opModFreqDroop`,
    /// or `setES` for the default's enter-service settings (`setESDelay` …).
    pub mode: String,
    /// What it sets, in words (`4 points 90.4 %V → 44 %, …`, `cos φ 0.950 injecting
    /// vars`, `-25.00 % of setMaxVar`, `-1500 var (absorbing)`).
    pub value: String,
    pub source: LimitSource,
    /// When it stops applying, if known.
    pub end_unix_s: Option<i64>,
}

impl InverterSetting {
    /// The settings of `utility`, in mode order.
    pub fn of(utility: &crate::control::UtilityControls) -> Vec<InverterSetting> {
        crate::control::InverterSettings::MODES
            .into_iter()
            .filter_map(|mode| {
                let s = utility.setting(mode)?;
                Some(InverterSetting {
                    mode: mode.name().to_string(),
                    value: s.value.text(),
                    source: s.source.clone(),
                    end_unix_s: s.until_s,
                })
            })
            .chain(utility.enter_service.as_ref().map(|s| InverterSetting {
                mode: "setES".to_string(),
                value: crate::control::limits::enter_service_text(&s.value),
                source: s.source.clone(),
                end_unix_s: s.until_s,
            }))
            .collect()
    }
}

/// A limit value inside an upcoming event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventLimit {
    pub mode: LimitMode,
    pub value_w: Option<f64>,
    pub connect: Option<bool>,
}

/// A utility event that has not started yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpcomingEvent {
    pub mrid: String,
    pub description: Option<String>,
    pub program: Option<String>,
    pub start_unix_s: i64,
    pub end_unix_s: i64,
    pub limits: Vec<EventLimit>,
}

/// Flows at the connection point. Site power is positive when importing.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SiteFlows {
    /// Grid power at the meter, import positive, export negative.
    pub site_w: Option<f64>,
    /// Export as a positive number (0 while importing).
    pub export_w: Option<f64>,
    /// PV (inverter AC output) total, from the inverters' own readings: known with or
    /// without a site meter; `None` while no inverter has a fresh reading.
    pub pv_w: Option<f64>,
    /// Household load (site + PV).
    pub load_w: Option<f64>,
    /// When the meter reading behind these was taken.
    pub updated_unix_s: Option<i64>,
}

impl SiteFlows {
    /// Flows from the meter's site power and the inverters' total output.
    pub fn from_site_and_pv(site_w: f64, pv_w: f64, t_unix_s: i64) -> Self {
        Self::from_site(site_w, Some(pv_w), t_unix_s)
    }

    /// Flows from the meter's site power and, when known, the inverters' total output
    /// (the load is known only with both).
    pub fn from_site(site_w: f64, pv_w: Option<f64>, t_unix_s: i64) -> Self {
        SiteFlows {
            site_w: Some(site_w),
            export_w: Some((-site_w).max(0.0)),
            pv_w,
            load_w: pv_w.map(|pv| site_w + pv),
            updated_unix_s: Some(t_unix_s),
        }
    }
}

/// The device role is config's type (one type per concept).
pub use crate::config::DeviceRole;

/// The last reading of a device; absent values were not read or not implemented.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Readings {
    pub w: Option<f64>,
    pub var: Option<f64>,
    pub v: Option<f64>,
    pub hz: Option<f64>,
}

impl From<&crate::devices::sunspec::AcValues> for Readings {
    /// The status's subset of a SunSpec AC reading.
    fn from(ac: &crate::devices::sunspec::AcValues) -> Self {
        Readings {
            w: ac.w,
            var: ac.var,
            v: ac.v,
            hz: ac.hz,
        }
    }
}

/// Modbus traffic counters of a device.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DeviceStats {
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub writes_ok: u64,
    pub writes_failed: u64,
    pub last_error: Option<String>,
}

/// One meter or inverter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Device {
    /// The UCI section name.
    pub name: String,
    pub role: DeviceRole,
    /// True when the last good reading is older than the staleness timeout.
    pub stale: bool,
    /// Seconds since the last good reading.
    pub last_reading_age_s: Option<f64>,
    pub readings: Readings,
    pub stats: DeviceStats,
    /// Why csipd reads this device but cannot control it (an inverter without a SunSpec
    /// control model), when that is so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<String>,
    /// A device reached over TLS (a Powerwall gateway): the SHA-256 fingerprint of the
    /// certificate csipd pinned (`AB:CD:…`); the installer changes it with option
    /// `fingerprint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_fingerprint: Option<String>,
}

/// What csipd last wrote to one inverter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Setpoint {
    /// The inverter's UCI section name.
    pub device: String,
    /// Active power limit in watts (None: uncurtailed).
    pub limit_w: Option<f64>,
    /// The same as a percentage of WMax, as written to the SunSpec model.
    pub limit_pct: Option<f64>,
    /// Connect (true) or cease to energize (false), if written.
    pub connect: Option<bool>,
    pub written_unix_s: Option<i64>,
    /// Storage inverters: the charge limit in force in watts (None: charging not
    /// limited, or not a storage inverter with model 124).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charge_limit_w: Option<f64>,
}

/// One entry of `last_errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEntry {
    /// When it last happened.
    pub t_unix_s: i64,
    /// Which part of csipd, e.g. "csip", "device inverter1".
    pub source: String,
    pub message: String,
    /// How many times it happened in a row of identical errors (1: once).
    #[serde(default = "one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// One chart point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    pub t_unix_s: i64,
    pub export_w: Option<f64>,
    pub export_limit_w: Option<f64>,
}

/// Bounded history of export against the export limit: one point per
/// [`HISTORY_INTERVAL_S`], the last [`HISTORY_WINDOW_S`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub interval_s: i64,
    pub window_s: i64,
    pub points: VecDeque<HistoryPoint>,
}

impl Default for History {
    fn default() -> Self {
        History {
            interval_s: HISTORY_INTERVAL_S,
            window_s: HISTORY_WINDOW_S,
            points: VecDeque::new(),
        }
    }
}

impl History {
    /// Offers a sample. It is kept when at least `interval_s` passed since the last kept
    /// point (so a 1 s control cycle costs nothing extra); points older than `window_s`
    /// are dropped. A clock that steps backwards restarts the history rather than
    /// drawing a chart that goes back in time.
    pub fn record(&mut self, t_unix_s: i64, export_w: Option<f64>, export_limit_w: Option<f64>) {
        if let Some(last) = self.points.back() {
            if t_unix_s < last.t_unix_s {
                self.points.clear();
            } else if t_unix_s - last.t_unix_s < self.interval_s {
                return;
            }
        }
        self.points.push_back(HistoryPoint {
            t_unix_s,
            export_w,
            export_limit_w,
        });
        while let Some(first) = self.points.front() {
            if t_unix_s - first.t_unix_s > self.window_s {
                self.points.pop_front();
            } else {
                break;
            }
        }
        // A hard bound too, whatever interval_s/window_s were deserialized as.
        let capacity = (HISTORY_WINDOW_S / HISTORY_INTERVAL_S) as usize + 1;
        while self.points.len() > capacity {
            self.points.pop_front();
        }
    }
}

/// One entry of the event log behind `/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEntry {
    pub t_unix_s: i64,
    /// "info", "warn" or "error".
    pub level: String,
    pub source: String,
    pub message: String,
}

struct Shared {
    snapshot: Snapshot,
    /// The event log behind `/events`: at most [`EVENT_LOG_CAPACITY`] entries, the
    /// oldest dropped first.
    events: VecDeque<EventEntry>,
}

/// The shared snapshot: the runtime calls [`SnapshotHandle::update`], the status server
/// calls [`SnapshotHandle::get`]. A mutex held only for a closure or a clone (a few
/// microseconds), so the event loop never waits on the HTTP thread for longer than that.
#[derive(Clone)]
pub struct SnapshotHandle {
    shared: Arc<Mutex<Shared>>,
}

impl SnapshotHandle {
    pub fn new(snapshot: Snapshot) -> Self {
        SnapshotHandle {
            shared: Arc::new(Mutex::new(Shared {
                snapshot,
                events: VecDeque::new(),
            })),
        }
    }

    // A panic while holding the lock leaves a snapshot that is at worst one update
    // stale; showing it beats taking the status server down with it.
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Changes the snapshot in place.
    pub fn update<R>(&self, change: impl FnOnce(&mut Snapshot) -> R) -> R {
        change(&mut self.lock().snapshot)
    }

    /// A copy of the current snapshot.
    pub fn get(&self) -> Snapshot {
        self.lock().snapshot.clone()
    }

    /// Appends to the event log, dropping the oldest beyond [`EVENT_LOG_CAPACITY`].
    pub fn log_event(&self, t_unix_s: i64, level: &str, source: &str, message: &str) {
        let mut shared = self.lock();
        if shared.events.len() >= EVENT_LOG_CAPACITY {
            shared.events.pop_front();
        }
        shared.events.push_back(EventEntry {
            t_unix_s,
            level: level.to_string(),
            source: source.to_string(),
            message: message.to_string(),
        });
    }

    /// The event log, oldest first.
    pub fn events(&self) -> Vec<EventEntry> {
        self.lock().events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The JSON strings are what LuCI, the page, MQTT and metrics consumers match on:
    /// the serde name and `as_str` agree, and the four older names did not change.
    #[test]
    fn connection_state_names_are_the_json_names() {
        for state in ConnectionState::ALL {
            let json = serde_json::to_value(state).unwrap();
            assert_eq!(json, state.as_str(), "{state:?}");
            let back: ConnectionState = serde_json::from_value(json).unwrap();
            assert_eq!(back, state);
        }
        let names: Vec<&str> = ConnectionState::ALL.iter().map(|s| s.as_str()).collect();
        for stable in ["discovering", "polling", "offline", "not_configured"] {
            assert!(names.contains(&stable), "{stable} is gone");
        }
        assert!(names.contains(&"pin_mismatch") && names.contains(&"not_registered"));
    }

    #[test]
    fn responses_keep_the_latest_and_old_snapshots_still_read() {
        let mut s = Snapshot::new(1000);
        for i in 0..(RESPONSES_CAPACITY as i64 + 3) {
            s.push_response(ResponseSent {
                mrid: format!("{i:032X}"),
                status: crate::schedule::ResponseStatus::Received,
                delivery: "accepted".into(),
                at_unix_s: 1000 + i,
            });
        }
        assert_eq!(s.responses.len(), RESPONSES_CAPACITY);
        assert_eq!(s.responses[0].at_unix_s, 1003, "the oldest went first");
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["responses"][0]["status"], "Received");
        // A snapshot from a daemon without the field still reads.
        let mut old = json.clone();
        old.as_object_mut().unwrap().remove("responses");
        let back: Snapshot = serde_json::from_value(old).unwrap();
        assert!(back.responses.is_empty());
    }

    #[test]
    fn history_keeps_one_point_per_interval_and_one_hour() {
        let mut history = History::default();
        for t in 0..7200 {
            history.record(t, Some(t as f64), Some(1500.0));
        }
        assert_eq!(history.points.len(), 361);
        assert_eq!(
            history.points.front().map(|p| p.t_unix_s),
            Some(7190 - 3600)
        );
        assert_eq!(history.points.back().map(|p| p.t_unix_s), Some(7190));
        let gaps: Vec<i64> = history
            .points
            .iter()
            .zip(history.points.iter().skip(1))
            .map(|(a, b)| b.t_unix_s - a.t_unix_s)
            .collect();
        assert!(gaps.iter().all(|&g| g == 10), "{gaps:?}");
    }

    #[test]
    fn history_restarts_when_the_clock_steps_back() {
        let mut history = History::default();
        history.record(1000, Some(1.0), None);
        history.record(1010, Some(2.0), None);
        history.record(500, Some(3.0), None);
        assert_eq!(history.points.len(), 1);
        assert_eq!(history.points[0].t_unix_s, 500);
    }

    #[test]
    fn errors_and_events_are_bounded() {
        let handle = SnapshotHandle::new(Snapshot::new(0));
        for i in 0..(EVENT_LOG_CAPACITY + 5) {
            handle.log_event(i as i64, "info", "test", &format!("event {i}"));
            handle.update(|s| s.push_error(i as i64, "test", &format!("error {i}")));
        }
        let events = handle.events();
        assert_eq!(events.len(), EVENT_LOG_CAPACITY);
        assert_eq!(events[0].message, "event 5");
        let snapshot = handle.get();
        assert_eq!(snapshot.last_errors.len(), LAST_ERRORS_CAPACITY);
        assert_eq!(
            snapshot.last_errors.back().map(|e| e.message.as_str()),
            Some(format!("error {}", EVENT_LOG_CAPACITY + 4).as_str())
        );
    }

    #[test]
    fn connection_since_changes_only_on_a_state_change() {
        let mut snapshot = Snapshot::new(100);
        snapshot.set_connection_state(ConnectionState::Polling, 200);
        snapshot.set_connection_state(ConnectionState::Polling, 300);
        assert_eq!(snapshot.utility.since_unix_s, 200);
        snapshot.set_connection_state(ConnectionState::Offline, 400);
        assert_eq!(snapshot.utility.since_unix_s, 400);
    }

    #[test]
    fn site_flows_split_import_and_export() {
        let exporting = SiteFlows::from_site_and_pv(-2000.0, 5000.0, 7);
        assert_eq!(exporting.export_w, Some(2000.0));
        assert_eq!(exporting.load_w, Some(3000.0));
        let importing = SiteFlows::from_site_and_pv(800.0, 0.0, 7);
        assert_eq!(importing.export_w, Some(0.0));
        assert_eq!(importing.load_w, Some(800.0));
    }
}
