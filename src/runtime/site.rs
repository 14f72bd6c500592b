//! The site state the tasks share on the one thread: the latest device readings (bus
//! tasks write them), the setpoints the coordinator wants (bus tasks apply them), the
//! cached utility controls (the engine writes them) and the feed-in price. Borrowed
//! only between awaits, never across one.

use crate::config::DeviceRole;
use crate::control::{PriceTracker, UtilityControls};
use crate::devices::sunspec::AcValues;
use crate::devices::{Controls, InverterReading, MeterReading, OperatingState};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Instant;

pub type SharedSite = Rc<RefCell<SiteState>>;

/// What the coordinator wants one inverter set to: control's type.
pub use crate::control::Command;

/// What was last written to an inverter and confirmed by read-back.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    pub limit_pct: f64,
    pub limit_w: f64,
    pub connect: bool,
    pub at_unix_s: i64,
}

/// One device as the tasks see it.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub role: DeviceRole,
    /// Nameplate (config `rated_w`, else WMax of model 121/702, else WRtg).
    pub rating_w: Option<f64>,
    /// The AC values of the last good reading (per phase, for the utility's mirror
    /// readings; [`DeviceState::w`] and the status's readings come from it).
    pub ac: Option<AcValues>,
    /// Inverters: grid connection and operating state of the last good reading.
    pub connected: Option<bool>,
    pub state: Option<OperatingState>,
    /// When the last good reading was taken (monotonic).
    pub last_good_at: Option<Instant>,
    /// The last read attempt failed.
    pub failing: bool,
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub writes_ok: u64,
    pub writes_failed: u64,
    pub last_error: Option<String>,
    /// A new error not yet reported in the status's error list.
    pub unreported_error: Option<String>,
    pub written: Option<Written>,
    /// Storage inverters with model 124: WChaMax, the charge rate csipd can limit.
    pub max_charge_w: Option<f64>,
    /// Storage inverters: the charge limit in force as last read or written (W).
    pub charge_limit_w: Option<f64>,
    /// Storage inverters with model 124: state of charge (ChaState) and the reserve it
    /// keeps (MinRsvPct), % of capacity.
    pub soc_pct: Option<f64>,
    pub min_reserve_pct: Option<f64>,
    /// Storage inverters: the energy rating (model 713 WHRtg, else 120 WHRtg), Wh.
    pub capacity_wh: Option<f64>,
    /// Storage inverters: rated charge and discharge rates (model 120 MaxChaRte /
    /// MaxDisChaRte, 702 WChaRteMaxRtg / WDisChaRteMaxRtg), W.
    pub rated_charge_w: Option<f64>,
    pub rated_discharge_w: Option<f64>,
    /// Rated apparent and reactive power (model 120 VARtg / VArRtgQ1, 702 VAMaxRtg /
    /// VarMaxInjRtg), for DERCapability.
    pub rating_va: Option<f64>,
    pub rating_var: Option<f64>,
    /// Minimum power factor ratings (cos φ) over- and under-excited (model 120/702).
    pub min_pf_over_excited: Option<f64>,
    pub min_pf_under_excited: Option<f64>,
    /// Inverters: what the device lets csipd control (SunSpec 123/704/124), known
    /// from its first reading. A device without a control model is read only.
    pub controls: Option<Controls>,
    /// Devices over TLS (a Powerwall gateway): the pinned certificate fingerprint.
    pub tls_fingerprint: Option<String>,
    /// Inverters: the SunSpec event bits of the last good reading (for LogEvents).
    pub events: Option<crate::devices::sunspec::InverterEvents>,
    /// Inverters that run the utility's opModFreqDroop on model 127: the nominal
    /// frequency it was worked out with (121 `ECPNomHz` or 50 Hz assumed), for the
    /// status; `None` otherwise.
    pub droop_nominal: Option<crate::devices::freq_droop::NominalHz>,
}

impl DeviceState {
    pub fn new(role: DeviceRole) -> Self {
        DeviceState {
            role,
            rating_w: None,
            ac: None,
            connected: None,
            state: None,
            last_good_at: None,
            failing: false,
            reads_ok: 0,
            reads_failed: 0,
            writes_ok: 0,
            writes_failed: 0,
            last_error: None,
            unreported_error: None,
            written: None,
            max_charge_w: None,
            charge_limit_w: None,
            soc_pct: None,
            min_reserve_pct: None,
            capacity_wh: None,
            rated_charge_w: None,
            rated_discharge_w: None,
            rating_va: None,
            rating_var: None,
            min_pf_over_excited: None,
            min_pf_under_excited: None,
            controls: None,
            tls_fingerprint: None,
            events: None,
            droop_nominal: None,
        }
    }

    pub fn record_meter(&mut self, m: &MeterReading, at: Instant) {
        self.ac = Some(m.ac.clone());
        self.ok(at);
    }

    pub fn record_inverter(&mut self, r: &InverterReading, rated_w: Option<u32>, at: Instant) {
        self.ac = Some(r.ac.clone());
        self.connected = r.connected;
        self.state = r.state;
        self.events = r.events;
        self.controls = Some(r.controls);
        self.rating_w = rated_w
            .map(f64::from)
            .or(r.settings.w_max_w)
            .or(r.nameplate.w_rtg_w)
            .filter(|w| *w > 0.0)
            .or(self.rating_w);
        let np = &r.nameplate;
        self.rating_va = np.va_rtg_va.filter(|v| *v > 0.0).or(self.rating_va);
        self.rating_var = np.var_rtg_var.filter(|v| *v > 0.0).or(self.rating_var);
        self.min_pf_over_excited = np.min_pf_over_excited.or(self.min_pf_over_excited);
        self.min_pf_under_excited = np.min_pf_under_excited.or(self.min_pf_under_excited);
        self.rated_charge_w = np.max_charge_rate_w.or(self.rated_charge_w);
        self.rated_discharge_w = np.max_discharge_rate_w.or(self.rated_discharge_w);
        self.capacity_wh = np.wh_rtg_wh.or(self.capacity_wh);
        if let Some(st) = &r.storage {
            self.max_charge_w = st.w_cha_max_w.filter(|w| *w > 0.0);
            self.charge_limit_w = st.charge_limit_w();
            self.soc_pct = st.soc_pct.filter(|p| (0.0..=100.0).contains(p));
            self.min_reserve_pct = st.min_reserve_pct.filter(|p| (0.0..=100.0).contains(p));
            self.capacity_wh = st.capacity_wh.or(np.wh_rtg_wh);
        }
        self.ok(at);
    }

    fn ok(&mut self, at: Instant) {
        self.reads_ok += 1;
        self.last_good_at = Some(at);
        if self.failing {
            // The error text names the device.
            log::info!(
                "answers again after: {}",
                self.last_error.as_deref().unwrap_or("?")
            );
            self.last_error = None;
        }
        self.failing = false;
    }

    pub fn record_read_error(&mut self, message: String) {
        self.reads_failed += 1;
        self.failing = true;
        self.note_error(message);
    }

    pub fn record_write_error(&mut self, message: String) {
        self.writes_failed += 1;
        self.note_error(message);
    }

    fn note_error(&mut self, message: String) {
        // Report a failure once when it starts or changes, not every cycle.
        if self.last_error.as_deref() != Some(message.as_str()) {
            log::warn!("{message}");
            self.unreported_error = Some(message.clone());
        }
        self.last_error = Some(message);
    }

    /// Active power of the last good reading: meter import positive, inverter output
    /// positive. `None` when the device did not report it (unknown is not zero).
    pub fn w(&self) -> Option<f64> {
        self.ac.as_ref().and_then(|a| a.w)
    }

    /// Milliseconds since the last good reading at `now`; `None` = never read.
    pub fn age_ms(&self, now: Instant) -> Option<u64> {
        self.last_good_at
            .map(|t| now.saturating_duration_since(t).as_millis() as u64)
    }

    /// Stale by the one staleness rule ([`crate::control::law::is_stale`]): never read,
    /// or the last good reading older than `stale_after_s`.
    pub fn is_stale(&self, now: Instant, stale_after_s: f64) -> bool {
        crate::control::law::is_stale(self.age_ms(now), (stale_after_s * 1000.0).round() as u64)
    }
}

/// Everything the tasks share.
pub struct SiteState {
    pub devices: BTreeMap<String, DeviceState>,
    /// The configured site meter and controlled inverters (names), and the staleness
    /// timeout: what readers outside the coordinator (the engine) need to sample.
    pub meter_name: Option<String>,
    pub inverter_names: Vec<String>,
    /// The enabled storage devices (names) with their configured capacity (Wh), for
    /// the utility's storage reports.
    pub storage: Vec<(String, Option<f64>)>,
    pub stale_after_s: f64,
    /// Setpoints by inverter name (coordinator → bus tasks).
    pub commands: BTreeMap<String, Command>,
    /// The utility's active controls as last evaluated (engine → coordinator). Kept
    /// across config reloads and while the server is unreachable: the last known
    /// utility limit holds.
    pub utility: Option<UtilityControls>,
    /// Server time minus local time (from the engine), for the merge's clock.
    pub clock_offset_s: i64,
    pub price: PriceTracker,
    /// Wakes the bus tasks that drive inverters when the setpoints change.
    pub command_wake: Vec<smol::channel::Sender<()>>,
    /// Wakes the coordinator when the site meter has a new reading (bus → coordinator,
    /// for the feed-forward between cycles); `None` until the tick task runs.
    pub meter_wake: Option<smol::channel::Sender<()>>,
}

impl SiteState {
    /// Takes the device names and staleness timeout of `config`.
    pub fn configure(&mut self, config: &crate::config::Config) {
        self.meter_name = config.site_meter().map(|d| d.name.clone());
        self.inverter_names = config
            .controlled_devices()
            .map(|d| d.name.clone())
            .collect();
        self.storage = config
            .devices
            .iter()
            .filter(|d| d.enabled && d.role == crate::config::DeviceRole::Storage)
            .map(|d| (d.name.clone(), d.capacity_wh.map(f64::from)))
            .collect();
        self.stale_after_s = config.control.meter_stale_s;
        self.price.max_age_s = i64::from(config.price.max_age_s);
        self.price.from_utility = config.price.utility_price_export;
    }

    pub fn new(price_max_age_s: i64) -> Self {
        SiteState {
            devices: BTreeMap::new(),
            meter_name: None,
            inverter_names: Vec::new(),
            storage: Vec::new(),
            stale_after_s: 10.0,
            commands: BTreeMap::new(),
            utility: None,
            clock_offset_s: 0,
            price: PriceTracker::new(price_max_age_s),
            command_wake: Vec::new(),
            meter_wake: None,
        }
    }
}
