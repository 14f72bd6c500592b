//! The coordinator's decision as one pure step (the shape of smoltcp's
//! `Interface::poll(timestamp)` + `poll_delay`): [`step`]`(&mut State, Inputs, now)`
//! returns [`Outputs`]; [`State::poll_at`] says when to call it again.
//!
//! Call order (what `runtime::coordinator` does, and all it does): take one [`Now`]
//! from the system clock; gather [`Inputs`] (each device's last good reading with its
//! age, the cached utility controls, the feed-in price, the configuration); call
//! [`step`]; hand the outputs on (commands to the bus tasks, the status view to the
//! snapshot, the sample to the store, the transitions to the log); sleep until
//! [`State::poll_at`].
//!
//! Inside one step:
//! 1. The controller is (re)built when the controlled inverters or their ratings change.
//! 2. Limits from every source are merged for the server's idea of now (utility, or
//!    the fallback export limit while no utility export limit is known on a site with a
//!    utility server: [`limits::fallback_export_limit`]; fixed, tariff windows in local
//!    time, negative price), then the owner's settings
//!    (`connect 0`, the default ramp) apply ([`owner_settings`]).
//! 3. The control law ([`super::law::Controller::step`]) turns limits and readings into
//!    setpoints, and decides the fail-safe level (the one place it is computed:
//!    [`super::law::Setpoints::fail_safe_w`]).
//! 4. Setpoints become device commands, the status view and a telemetry sample; what
//!    changed since the last step becomes [`Transition`]s.
//!
//! The one staleness rule ([`is_stale`]): a reading is stale when there is none or the
//! last good one is older than `control.meter_stale_s`. The controller, the status, the
//! telemetry and the utility's mirror readings all use it.

use super::UtilityControls;
use super::law::{Controller, ControllerParams, InverterParams, PowerSample, Readings, Setpoints};
use super::limits::{
    self, FailSafeCause, LimitMode, LimitSource, MergeInputs, MergedLimits, PriceRule, Sourced,
};
use super::price::FeedInPrice;
use super::tz::PosixTz;
use crate::clock::Now;
use crate::config::{Config, DeviceRole};
use crate::status;

/// One configured device's latest good reading, as the runtime has it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceInput {
    /// The UCI section name.
    pub name: String,
    /// Nameplate (config `rated_w`, else SunSpec WMax, else WRtg), W.
    pub rating_w: Option<f64>,
    /// Storage inverters with SunSpec model 124: WChaMax, W.
    pub max_charge_w: Option<f64>,
    /// Active power of the last good reading: meter import positive, inverter output
    /// positive. `None` when the device did not report it (unknown is not zero).
    pub w: Option<f64>,
    /// Milliseconds since the last good reading; `None` = never read.
    pub age_ms: Option<u64>,
    /// Whether csipd can limit this device's power (an inverter with a control model,
    /// SunSpec 123/704). One that cannot is left out of the controller: its output
    /// reaches the meter like a load's would. Meters: ignored.
    pub controllable: bool,
}

/// Everything one step looks at besides its own state.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The owner's settings: devices and roles, fixed limits, tariff windows, price
    /// rule, connect, cycle, staleness timeout, fail-safe level, default ramp.
    pub config: &'a Config,
    /// Local time for the tariff windows (`main.timezone`, else `/etc/TZ`, else UTC).
    pub tz: &'a PosixTz,
    /// The latest readings, any order; a configured device missing here was never read.
    pub devices: &'a [DeviceInput],
    /// The utility's active controls as last evaluated or restored from the store
    /// (kept while offline); `None` before either: on a site with a utility server the
    /// fallback export limit then holds.
    pub utility: Option<&'a UtilityControls>,
    /// Server time minus local time (2030.5 Time resource), s: utility controls and
    /// tariff windows are placed on the server's clock.
    pub server_offset_s: i64,
    /// The current feed-in price, when known and fresh.
    pub price: Option<FeedInPrice>,
}

/// What the coordinator wants one inverter set to (bus tasks write it).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Active power limit, W.
    pub setpoint_w: f64,
    /// The same as a percentage of the rating (SunSpec WMaxLimPct).
    pub setpoint_pct: f64,
    /// Where the inverter goes if csipd stops refreshing (SunSpec model 704 revert
    /// value): the fail-safe level as a percentage of the fleet's rating.
    pub fallback_pct: f64,
    pub connect: bool,
    /// Storage inverters: the charge limit (W) the control law wants.
    pub charge_limit_w: Option<f64>,
    /// Storage inverters while the utility's opModStorageTargetW is in force: the
    /// output to hold, W (positive discharges, negative charges; SunSpec 124
    /// OutWRte/InWRte). `None`: no target, the charge limit applies.
    pub storage_target_w: Option<f64>,
    /// The utility's curves, power factor and var level in force: the bus task puts
    /// each on the inverter when it changes, where the inverter offers it.
    pub settings: super::InverterSettings,
}

/// The freshness of one device, for the status.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceView {
    pub name: String,
    pub role: DeviceRole,
    /// See [`is_stale`].
    pub stale: bool,
    /// Seconds since the last good reading.
    pub last_reading_age_s: Option<f64>,
}

/// The part of the status snapshot the step decides.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    /// The local time's offset from UTC now, s.
    pub local_utc_offset_s: i32,
    /// The limits in force (after merging and the fail-safe), one per mode.
    pub limits: Vec<status::ActiveLimit>,
    /// Flows at the connection point (from the meter's last good reading).
    pub site: status::SiteFlows,
    /// Export for the chart: the meter's while it is fresh, else unknown.
    pub export_w: Option<f64>,
    /// The export limit in force, W.
    pub export_limit_w: Option<f64>,
    /// Enabled devices in config order.
    pub devices: Vec<DeviceView>,
}

/// Something that changed and is worth a log line (and, with `source`, an entry in
/// the status event log).
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub level: log::Level,
    /// The status event log's source ("control", "limits"); `None` = log only.
    pub source: Option<&'static str>,
    pub text: String,
}

/// One step's results.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    /// The control law's output (per inverter, with the reason).
    pub setpoints: Setpoints,
    /// The merged limits the setpoints answer to.
    pub limits: MergedLimits,
    /// By inverter name, in config order.
    pub commands: Vec<(String, Command)>,
    pub status: StatusView,
    /// The telemetry sample of this cycle.
    pub sample: crate::store::Sample,
    pub transitions: Vec<Transition>,
}

/// What the step remembers between calls.
#[derive(Debug, Clone, Default)]
pub struct State {
    controller: Option<Controller>,
    last_limits: Vec<status::ActiveLimit>,
    last_fail_safe: Option<Option<FailSafeCause>>,
    last_unsupported: Vec<LimitMode>,
    last_reason: String,
    /// The storage target last cycle: (target W, held back by), to log when a target
    /// starts or ends being held back by a limit.
    last_storage: Option<(f64, Option<LimitMode>, bool)>,
    /// Which configured inverters were still unread or read only when the controller
    /// line was last logged ([`devices_key`]), so a change of those is logged too.
    last_devices_key: u64,
    /// Monotonic ms of the next step.
    next_ms: Option<u64>,
    /// The commands in force (the last step's, as [`feed_forward`] changed them since).
    commands: Vec<(String, Command)>,
}

impl State {
    pub fn new() -> Self {
        State::default()
    }

    /// The monotonic millisecond at which the next step is due (`None` before the
    /// first). Steps keep a steady period; after a stall (a suspended process) the next
    /// one is a full cycle after the late one, never a burst to catch up.
    pub fn poll_at(&self) -> Option<u64> {
        self.next_ms
    }

    /// The controller in use (after the first step with a known inverter rating).
    pub fn controller(&self) -> Option<&Controller> {
        self.controller.as_ref()
    }
}

/// The one staleness rule (defined beside the law that acts on it).
pub use super::law::is_stale;

/// The control cycle of `config`, ms.
pub fn cycle_ms(config: &Config) -> u64 {
    (config.control.cycle_s * 1000.0).round().max(1.0) as u64
}

/// The staleness timeout of `config`, ms.
pub fn stale_ms(config: &Config) -> u64 {
    (config.control.meter_stale_s * 1000.0).round() as u64
}

/// The negative-price rule when the owner enabled it: export nothing while the owner
/// would pay to export.
pub fn price_rule(config: &Config) -> Option<PriceRule> {
    config.price.enabled.then_some(PriceRule {
        export_limit_w: 0.0,
        below_earn_c_per_kwh: 0.0,
    })
}

/// Controller parameters for the controlled devices whose rating is known. A storage
/// inverter whose charge rate can be limited (model 124 WChaMax known) carries the
/// import and load limits; without one the controller reports them unsupported.
pub fn controller_params(config: &Config, devices: &[DeviceInput]) -> ControllerParams {
    let find = |name: &str| devices.iter().find(|d| d.name == name);
    let inverters = config
        .controlled_devices()
        .filter_map(|d| {
            let input = find(&d.name).filter(|i| i.controllable)?;
            input.rating_w.map(|r| InverterParams {
                name: d.name.clone(),
                rating_w: r,
                max_charge_w: (d.role == DeviceRole::Storage)
                    .then_some(input.max_charge_w)
                    .flatten(),
            })
        })
        .collect();
    let mut p = ControllerParams::new(inverters, f64::from(config.control.failsafe_export_limit_w));
    p.cycle_ms = cycle_ms(config) as i64;
    p.meter_timeout_ms = stale_ms(config) as i64;
    // An inverter is stale on the same clock as the meter: one staleness rule.
    p.inverter_timeout_ms = p.meter_timeout_ms;
    p.response_tau_ms = (config.control.inverter_response_s * 1000.0).round() as i64;
    p.meter_period_ms = i64::from(config.meter_period_ms());
    p.site_meter = config.site_meter().is_some();
    p
}

/// Bits of which configured inverters are not read yet (low bit of each pair) or read
/// only (high bit), for [`controller_line`]'s "has it changed"; no allocation per cycle.
fn devices_key(config: &Config, devices: &[DeviceInput]) -> u64 {
    config
        .controlled_devices()
        .enumerate()
        .fold(0, |key, (i, d)| {
            let input = devices.iter().find(|x| x.name == d.name);
            let waiting = input.is_none_or(|x| x.controllable && x.rating_w.is_none());
            let read_only = input.is_some_and(|x| !x.controllable);
            let bits = u64::from(waiting) | u64::from(read_only) << 1;
            key ^ bits.rotate_left((2 * i % 64) as u32)
        })
}

/// The log line for a new controller set-up, true at the moment it is made: which
/// configured inverters it drives (with their ratings), which are still being read
/// (their rating comes from the first reading: at start none is known yet), and which
/// csipd can only read. "controller: 0 of 2 configured inverter(s) under control yet
/// (waiting for the first reading of inv, bat), fail-safe export 2000 W".
pub fn controller_line(
    config: &Config,
    devices: &[DeviceInput],
    params: &ControllerParams,
) -> String {
    let find = |name: &str| devices.iter().find(|d| d.name == name);
    let configured: Vec<&str> = config
        .controlled_devices()
        .map(|d| d.name.as_str())
        .collect();
    if configured.is_empty() {
        return format!(
            "controller: no inverter or battery configured (nothing to limit), fail-safe \
             export {} W",
            params.fail_safe_export_limit_w
        );
    }
    let driven: Vec<String> = params
        .inverters
        .iter()
        .map(|i| format!("{} {:.0} W", i.name, i.rating_w))
        .collect();
    let read_only: Vec<&str> = configured
        .iter()
        .copied()
        .filter(|n| find(n).is_some_and(|d| !d.controllable))
        .collect();
    let waiting: Vec<&str> = configured
        .iter()
        .copied()
        .filter(|n| find(n).is_none_or(|d| d.controllable && d.rating_w.is_none()))
        .collect();
    let mut line = format!(
        "controller: {} of {} configured inverter(s) under control",
        driven.len(),
        configured.len()
    );
    if !driven.is_empty() {
        line.push_str(&format!(" ({})", driven.join(", ")));
    }
    if !waiting.is_empty() {
        let yet = if driven.is_empty() { " yet" } else { "" };
        line.push_str(&format!(
            "{yet}; waiting for the first reading of {}",
            waiting.join(", ")
        ));
    }
    if !read_only.is_empty() {
        line.push_str(&format!(
            "; read only (no control model): {}",
            read_only.join(", ")
        ));
    }
    line.push_str(&format!(
        ", fail-safe export {} W",
        params.fail_safe_export_limit_w
    ));
    line
}

/// What the owner's config adds after the merge: `connect 0` keeps the DER
/// disconnected, and the configured ramp-up rate applies when the utility's control
/// gives no ramp (`ramp_up_pct_per_s` → setGradW in hundredths of a percent per second).
pub fn owner_settings(merged: &mut MergedLimits, config: &Config) {
    if !config.limits.connect && merged.connect.as_ref().is_none_or(|s| s.value) {
        merged.connect = Some(Sourced::new(
            false,
            LimitSource::Fixed {
                option: "connect".into(),
            },
            None,
        ));
    }
    if merged.set_grad_w.is_none() && merged.ramp_tms.is_none() {
        let hundredths = (config.control.ramp_up_pct_per_s * 100.0).round();
        merged.set_grad_w = Some(hundredths.clamp(1.0, f64::from(u16::MAX)) as u16);
    }
}

/// The law's readings from the inputs: each on the monotonic timeline of `now_ms`.
fn readings_of(
    cfg: &Config,
    devices: &[DeviceInput],
    params: &ControllerParams,
    now_ms: i64,
) -> Readings {
    let find = |name: &str| devices.iter().find(|d| d.name == name);
    let sample = |d: &DeviceInput| {
        d.age_ms.map(|a| PowerSample {
            w: d.w.unwrap_or(f64::NAN),
            at_ms: now_ms - a as i64,
        })
    };
    Readings {
        meter: cfg
            .site_meter()
            .and_then(|m| find(&m.name))
            .and_then(sample),
        inverters: params
            .inverters
            .iter()
            .map(|i| find(&i.name).and_then(sample))
            .collect(),
    }
}

/// Between two steps, when a new site-meter reading has come in (the runtime reads the
/// meter every [`Config::meter_period_ms`]): the law's feed-forward
/// ([`super::law::Controller::feed_forward`]) cuts the inverters at once when export is
/// over the limit, instead of at the next step. Pure like [`step`]; changes nothing
/// else (limits, status, sample and transitions are the next step's). Returns the
/// commands in force when it changed any (every inverter's, in config order), else
/// `None`.
pub fn feed_forward(
    state: &mut State,
    inputs: Inputs<'_>,
    now: Now,
) -> Option<Vec<(String, Command)>> {
    let now_ms = now.mono_ms as i64;
    let controller = state.controller.as_mut()?;
    let readings = readings_of(inputs.config, inputs.devices, controller.params(), now_ms);
    let meter = readings.meter?;
    let changed = controller.feed_forward(now_ms, meter, &readings)?;
    for (i, w) in changed {
        let inv = &controller.params().inverters[i];
        if let Some((_, c)) = state.commands.iter_mut().find(|(n, _)| *n == inv.name) {
            c.setpoint_w = w;
            c.setpoint_pct = if inv.rating_w > 0.0 {
                100.0 * w / inv.rating_w
            } else {
                0.0
            };
        }
    }
    Some(state.commands.clone())
}

/// One coordinator cycle at `now`. Pure: same state, inputs and `now` give the same
/// outputs. While no controlled inverter's rating is known yet there is nothing to
/// command, but the status view (limits, meter, devices) is still made.
pub fn step(state: &mut State, inputs: Inputs<'_>, now: Now) -> Outputs {
    let cfg = inputs.config;
    let cycle = cycle_ms(cfg);
    state.next_ms = Some(match state.next_ms {
        Some(n) if n + cycle > now.mono_ms => n + cycle,
        _ => now.mono_ms + cycle,
    });
    let mut transitions = Vec::new();
    let find = |name: &str| inputs.devices.iter().find(|d| d.name == name);
    let stale_timeout_ms = stale_ms(cfg);
    let stale = |d: Option<&DeviceInput>| is_stale(d.and_then(|d| d.age_ms), stale_timeout_ms);

    // 1. The controller.
    let params = controller_params(cfg, inputs.devices);
    let devices_key = devices_key(cfg, inputs.devices);
    if state.controller.as_ref().map(|c| c.params()) != Some(&params)
        || state.last_devices_key != devices_key
    {
        state.last_devices_key = devices_key;
        transitions.push(Transition {
            level: log::Level::Info,
            source: None,
            text: controller_line(cfg, inputs.devices, &params),
        });
        state.controller = Some(Controller::new(params.clone()));
    }
    let controller = state
        .controller
        .get_or_insert_with(|| Controller::new(params.clone()));

    // 2. Limits. The law's timeline is the monotonic clock; readings carry ages.
    let now_ms = now.mono_ms as i64;
    let meter = cfg.site_meter().and_then(|m| find(&m.name));
    let readings = readings_of(cfg, inputs.devices, &params, now_ms);
    let now_s = now.utc_s();
    let total_rating_w: f64 = params.inverters.iter().map(|i| i.rating_w).sum();
    let merge_inputs = MergeInputs {
        utility: inputs.utility.cloned().unwrap_or_default(),
        fixed: cfg.limits.clone(),
        windows: &cfg.tariffs,
        price_rule: price_rule(cfg),
        price: inputs.price,
        fallback: limits::fallback_export_limit(cfg.fallback_export_limit_w(), inputs.utility),
        total_set_max_w: total_rating_w,
        total_max_charge_w: params.inverters.iter().filter_map(|i| i.max_charge_w).sum(),
    };
    let mut merged = limits::merge(&merge_inputs, inputs.tz, now_s + inputs.server_offset_s);
    owner_settings(&mut merged, cfg);

    // 3. The control law.
    let setpoints = controller.step(now_ms, &merged, &readings);

    // 4. Commands, status, sample, transitions.
    let fallback_pct = if total_rating_w > 0.0 {
        (100.0 * setpoints.fail_safe_w / total_rating_w).min(100.0)
    } else {
        0.0
    };
    let settings = inputs
        .utility
        .map(|u| u.inverter_settings())
        .unwrap_or_default();
    let commands: Vec<(String, Command)> = setpoints
        .inverters
        .iter()
        .map(|sp| {
            (
                sp.name.clone(),
                Command {
                    setpoint_w: sp.setpoint_w,
                    setpoint_pct: sp.setpoint_pct,
                    fallback_pct,
                    connect: sp.connect,
                    charge_limit_w: sp.charge_limit_w,
                    storage_target_w: sp.storage_target_w,
                    settings: settings.clone(),
                },
            )
        })
        .collect();
    state.commands.clone_from(&commands);

    let storage_now = setpoints
        .storage
        .as_ref()
        .map(|st| (st.target.value, st.held_by, st.short()));
    if state.last_storage != storage_now {
        if let Some(st) = &setpoints.storage {
            let text = match (st.short(), st.held_by) {
                (false, _) => format!(
                    "storage target {:.0} W ({}) in force",
                    st.target.value, st.target.source
                ),
                (true, Some(mode)) => format!(
                    "storage target {:.0} W ({}) cannot be met: held to {:.0} W by the {} limit",
                    st.target.value,
                    st.target.source,
                    st.commanded_w,
                    mode.as_str()
                ),
                (true, None) => format!(
                    "storage target {:.0} W ({}) cannot be met: the batteries' rating allows {:.0} W",
                    st.target.value, st.target.source, st.commanded_w
                ),
            };
            transitions.push(Transition {
                level: if st.short() {
                    log::Level::Warn
                } else {
                    log::Level::Info
                },
                source: Some("control"),
                text,
            });
        } else if state.last_storage.is_some() {
            transitions.push(Transition {
                level: log::Level::Info,
                source: Some("control"),
                text: "storage target ended".into(),
            });
        }
        state.last_storage = storage_now;
    }

    let active = status_limits(&merged, &setpoints);
    if state.last_unsupported != setpoints.unsupported {
        for mode in &setpoints.unsupported {
            transitions.push(Transition {
                level: log::Level::Warn,
                source: Some("control"),
                text: format!(
                    "{} limit in force but not supported: no storage inverter with a \
                     controllable charge rate (SunSpec model 124)",
                    mode.as_str()
                ),
            });
        }
        state.last_unsupported = setpoints.unsupported.clone();
    }

    let meter_fresh = !stale(meter) && meter.is_some_and(|m| m.w.is_some());
    let site_w = meter.and_then(|m| m.w);
    // Every configured inverter's output counts, controllable or not. Known from the
    // inverters' own readings, with or without a meter; unknown (not 0 W) while none
    // of them has a fresh reading; 0 W on a site with none configured.
    let fresh_pv: Vec<f64> = cfg
        .controlled_devices()
        .filter_map(|d| find(&d.name))
        .filter(|d| !stale(Some(d)))
        .filter_map(|d| d.w)
        .collect();
    let pv_w = (!fresh_pv.is_empty() || cfg.controlled_devices().next().is_none())
        .then(|| fresh_pv.iter().sum::<f64>());
    let flows = match (site_w, meter) {
        (Some(w), Some(m)) => {
            let age_s = m.age_ms.map_or(0, |a| (a / 1000) as i64);
            status::SiteFlows::from_site(w, pv_w, now_s - age_s)
        }
        _ => status::SiteFlows {
            pv_w,
            ..status::SiteFlows::default()
        },
    };
    let export_w = meter_fresh.then_some(flows.export_w).flatten();
    let export_limit_w = active
        .iter()
        .find(|l| l.mode == LimitMode::Export)
        .and_then(|l| l.value_w);
    let devices = cfg
        .devices
        .iter()
        .filter(|d| d.enabled)
        .map(|d| {
            let input = find(&d.name);
            DeviceView {
                name: d.name.clone(),
                role: d.role,
                stale: stale(input),
                last_reading_age_s: input.and_then(|i| i.age_ms).map(|a| a as f64 / 1000.0),
            }
        })
        .collect();
    let sample = crate::store::Sample {
        at_s: now_s,
        site_w: meter_fresh.then_some(site_w).flatten(),
        export_limit_w,
        inverters: params
            .inverters
            .iter()
            .map(|i| {
                let d = find(&i.name).filter(|d| !stale(Some(d)));
                crate::store::InverterSample {
                    name: i.name.clone(),
                    w: d.and_then(|d| d.w),
                    setpoint_w: commands
                        .iter()
                        .find(|(n, _)| *n == i.name)
                        .map(|(_, c)| c.setpoint_w),
                }
            })
            .collect(),
    };

    let offset = inputs.tz.offset_at(now_s).0;
    if state.last_fail_safe != Some(setpoints.fail_safe) {
        transitions.push(if setpoints.fail_safe.is_some() {
            Transition {
                level: log::Level::Warn,
                source: Some("control"),
                text: {
                    // The reason may itself begin "fail-safe 0 W ...": say it once.
                    let reason = setpoints.reason.to_string();
                    let reason = reason.strip_prefix("fail-safe ").unwrap_or(&reason);
                    format!("fail-safe: {reason}")
                },
            }
        } else {
            Transition {
                level: log::Level::Info,
                source: Some("control"),
                text: "fail-safe ended: meter readings are good".to_string(),
            }
        });
        state.last_fail_safe = Some(setpoints.fail_safe);
    }
    if limits_changed(&state.last_limits, &active) {
        let text = if active.is_empty() {
            "no limit in force".to_string()
        } else {
            active
                .iter()
                .map(|l| status::render::limit_line(l, now_s, offset))
                .collect::<Vec<_>>()
                .join("; ")
        };
        transitions.push(Transition {
            level: log::Level::Info,
            source: Some("limits"),
            text,
        });
    }
    state.last_limits = active.clone();
    let reason = setpoints.reason.to_string();
    if reason != state.last_reason {
        transitions.push(Transition {
            level: log::Level::Debug,
            source: None,
            text: format!("control: {reason}"),
        });
        state.last_reason = reason;
    }

    Outputs {
        setpoints,
        limits: merged,
        commands,
        status: StatusView {
            local_utc_offset_s: offset,
            limits: active,
            site: flows,
            export_w,
            export_limit_w,
            devices,
        },
        sample,
        transitions,
    }
}

/// Value, mode or source changed (a moving `end` of the same source is no news).
fn limits_changed(a: &[status::ActiveLimit], b: &[status::ActiveLimit]) -> bool {
    a.len() != b.len()
        || a.iter().zip(b).any(|(x, y)| {
            x.mode != y.mode
                || x.value_w != y.value_w
                || x.source != y.source
                || x.connect != y.connect
        })
}

/// The limits in force for the status: the merged limits, with the export limit
/// replaced by the fail-safe one while the controller is in fail-safe and that is
/// tighter; modes the control law cannot act on (import/load without a storage
/// inverter that takes a charge limit) flagged as such.
pub fn status_limits(merged: &MergedLimits, setpoints: &Setpoints) -> Vec<status::ActiveLimit> {
    let mut out = Vec::new();
    let power = |mode: LimitMode, l: &limits::Limit| status::ActiveLimit {
        mode,
        value_w: Some(l.value),
        connect: None,
        source: l.source.clone(),
        end_unix_s: l.until_s,
        unsupported: setpoints.unsupported.contains(&mode),
        not_enforceable: None,
    };
    let fail_safe = setpoints
        .fail_safe
        .map(|cause| (setpoints.fail_safe_w, cause));
    let export = match (&merged.export_limit_w, fail_safe) {
        (Some(l), Some((fs, _))) if fs >= l.value => Some(power(LimitMode::Export, l)),
        (_, Some((fs, cause))) => Some(status::ActiveLimit {
            mode: LimitMode::Export,
            value_w: Some(fs),
            connect: None,
            source: LimitSource::FailSafe { cause },
            end_unix_s: None,
            unsupported: false,
            not_enforceable: None,
        }),
        (Some(l), None) => Some(power(LimitMode::Export, l)),
        (None, None) => None,
    };
    out.extend(export);
    for mode in [LimitMode::Import, LimitMode::Generation, LimitMode::Load] {
        if let Some(l) = merged.get(mode) {
            out.push(power(mode, l));
        }
    }
    // Connect: shown when something says "off" (connect or energize).
    let off = [&merged.connect, &merged.energize]
        .into_iter()
        .flatten()
        .find(|s| !s.value);
    if let Some(s) = off {
        out.push(status::ActiveLimit {
            mode: LimitMode::Connect,
            value_w: None,
            connect: Some(false),
            source: s.source.clone(),
            end_unix_s: s.until_s,
            unsupported: false,
            not_enforceable: None,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::law::Reason;
    use crate::control::limits::Limit;

    const TEXT: &str = "
config csipd 'main'
config limits 'fixed'
	option export_limit_w '1500'
	option connect '0'
config control 'site'
	option ramp_up_pct_per_s '2.5'
	option cycle_s '0.5'
	option meter_stale_s '4'
	option failsafe_export_limit_w '2000'
config device 'inv'
	option role 'inverter'
	option transport 'tcp'
	option host '127.0.0.1'
config device 'meter'
	option role 'meter'
	option transport 'tcp'
	option host '127.0.0.1'
	option unit_id '2'
config device 'bat'
	option role 'storage'
	option transport 'tcp'
	option host '127.0.0.1'
	option unit_id '3'
";

    fn cfg() -> Config {
        crate::config::from_text(TEXT, "test.conf")
            .expect("valid")
            .0
    }

    fn input(name: &str, rating_w: Option<f64>, max_charge_w: Option<f64>) -> DeviceInput {
        DeviceInput {
            name: name.into(),
            rating_w,
            max_charge_w,
            w: Some(100.0),
            age_ms: Some(0),
            controllable: true,
        }
    }

    #[test]
    fn controller_params_come_from_config_and_readings() {
        let c = cfg();
        let p = controller_params(&c, &[input("inv", Some(5000.0), None)]);
        assert_eq!(
            p.inverters.len(),
            1,
            "the battery's rating is not known yet"
        );
        // A charge rate is used for a storage device only: the inverter stays a generator.
        let p = controller_params(
            &c,
            &[
                input("inv", Some(5000.0), Some(3000.0)),
                input("bat", Some(5000.0), Some(3000.0)),
            ],
        );
        let charge: Vec<(&str, Option<f64>)> = p
            .inverters
            .iter()
            .map(|i| (i.name.as_str(), i.max_charge_w))
            .collect();
        assert_eq!(charge, [("inv", None), ("bat", Some(3000.0))]);
        assert_eq!((p.cycle_ms, p.meter_timeout_ms), (500, 4000));
        assert_eq!(p.inverter_timeout_ms, 4000, "one staleness rule");
        assert_eq!(c.site_meter().map(|d| d.name.as_str()), Some("meter"));
    }

    #[test]
    fn owner_connect_off_and_default_ramp() {
        let c = cfg();
        let mut merged = MergedLimits::default();
        owner_settings(&mut merged, &c);
        assert_eq!(merged.connect.as_ref().map(|s| s.value), Some(false));
        assert_eq!(merged.set_grad_w, Some(250));
        // A utility ramp is left alone.
        let mut merged = MergedLimits {
            ramp_tms: Some(3000),
            ..MergedLimits::default()
        };
        owner_settings(&mut merged, &c);
        assert_eq!(merged.set_grad_w, None);
    }

    fn setpoints(
        fail_safe: Option<FailSafeCause>,
        fail_safe_w: f64,
        unsupported: Vec<LimitMode>,
    ) -> Setpoints {
        Setpoints {
            total_allowed_w: 0.0,
            inverters: Vec::new(),
            reason: Reason::Uncurtailed,
            fail_safe,
            fail_safe_w,
            unsupported,
            storage: None,
        }
    }

    #[test]
    fn fail_safe_replaces_a_looser_export_limit_in_the_status() {
        let merged = MergedLimits {
            export_limit_w: Some(Limit::new(
                1500.0,
                LimitSource::TariffWindow { name: "w".into() },
                Some(99),
            )),
            ..MergedLimits::default()
        };
        let l = status_limits(&merged, &setpoints(None, 0.0, vec![]));
        assert_eq!(l[0].source, LimitSource::TariffWindow { name: "w".into() });
        assert_eq!(l[0].end_unix_s, Some(99));
        let l = status_limits(
            &merged,
            &setpoints(Some(FailSafeCause::MeterStale), 0.0, vec![]),
        );
        assert_eq!(
            (l[0].source.clone(), l[0].value_w),
            (
                LimitSource::FailSafe {
                    cause: FailSafeCause::MeterStale
                },
                Some(0.0)
            )
        );
        // The law never makes the fail-safe level looser than the export limit; the
        // status keeps the tighter source.
        let l = status_limits(
            &merged,
            &setpoints(Some(FailSafeCause::MeterStale), 2000.0, vec![]),
        );
        assert_eq!(l[0].value_w, Some(1500.0));
    }

    #[test]
    fn an_import_limit_without_storage_shows_as_unsupported() {
        let fixed = || LimitSource::Fixed { option: "x".into() };
        let merged = MergedLimits {
            import_limit_w: Some(Limit::new(2000.0, fixed(), None)),
            generation_limit_w: Some(Limit::new(4000.0, fixed(), None)),
            ..MergedLimits::default()
        };
        let l = status_limits(&merged, &setpoints(None, 0.0, vec![LimitMode::Import]));
        let flags: Vec<(LimitMode, bool)> = l.iter().map(|l| (l.mode, l.unsupported)).collect();
        assert_eq!(
            flags,
            [(LimitMode::Import, true), (LimitMode::Generation, false)]
        );
        let json = serde_json::to_value(&l).expect("json");
        assert_eq!(json[0]["unsupported"], true);
        assert_eq!(json[0]["mode"], "import");
        assert_eq!(json[0]["source"]["kind"], "fixed");
        assert!(json[1].get("unsupported").is_none(), "left out when false");
    }

    #[test]
    fn one_step_commands_the_fail_safe_and_says_so_once() {
        let c = cfg();
        let tz = PosixTz::utc();
        let devices = [
            input("inv", Some(5000.0), None),
            input("bat", Some(5000.0), None),
            DeviceInput {
                age_ms: None,
                ..input("meter", None, None)
            },
        ];
        let inputs = Inputs {
            config: &c,
            tz: &tz,
            devices: &devices,
            utility: None,
            server_offset_s: 0,
            price: None,
        };
        let mut state = State::new();
        let now = Now::at(1_800_000_000);
        let out = step(&mut state, inputs, now);
        // Owner `connect 0`: every inverter at zero and disconnected, not in fail-safe.
        assert!(
            out.commands
                .iter()
                .all(|(_, c)| !c.connect && c.setpoint_w == 0.0)
        );
        // The revert level is the one fail-safe level (min of 2000 W and the 1500 W
        // export limit) over the 10 kW fleet.
        assert!(
            out.commands
                .iter()
                .all(|(_, c)| (c.fallback_pct - 15.0).abs() < 1e-9)
        );
        assert!(
            out.status
                .devices
                .iter()
                .any(|d| d.name == "meter" && d.stale)
        );
        assert_eq!(out.sample.site_w, None);
        let firsts = out.transitions.len();
        assert!(out.transitions.iter().any(|t| t.source == Some("limits")));
        // Nothing changed: no transitions the second time; the period is kept.
        assert_eq!(state.poll_at(), Some(500));
        let out = step(&mut state, inputs, now.plus_ms(500));
        assert!(
            out.transitions.is_empty(),
            "{:?} after {firsts}",
            out.transitions
        );
        assert_eq!(state.poll_at(), Some(1000));
        // A late step (a stalled process) does not burst: next is a full cycle later.
        step(&mut state, inputs, now.plus_ms(5000));
        assert_eq!(state.poll_at(), Some(5500));
    }

    /// With no site meter configured the law's fail-safe is the whole control, for
    /// good: the status says that (JSON `cause`, `csipd status`'s words and the log),
    /// never "meter data stale", and the inverters' total output is held at the level.
    #[test]
    fn without_a_site_meter_the_status_says_what_holds_the_export() {
        let text = TEXT.replace(
            "config device 'meter'\n\toption role 'meter'\n\toption transport 'tcp'\n\toption host '127.0.0.1'\n\toption unit_id '2'\n",
            "",
        );
        assert!(!text.contains("'meter'"), "{text}");
        let mut c = crate::config::from_text(&text, "test.conf")
            .expect("valid")
            .0;
        c.limits.connect = true;
        c.limits.export_limit_w = None;
        assert!(c.site_meter().is_none());
        let tz = PosixTz::utc();
        let devices = [
            input("inv", Some(5000.0), None),
            input("bat", Some(5000.0), None),
        ];
        let inputs = Inputs {
            config: &c,
            tz: &tz,
            devices: &devices,
            utility: None,
            server_offset_s: 0,
            price: None,
        };
        let mut state = State::new();
        let now = Now::at(1_800_000_000);
        let mut out = step(&mut state, inputs, now);
        for t in 1..=20 {
            out = step(&mut state, inputs, now.plus_ms(t * 500));
        }
        // The configured fail-safe level, 2000 W (a tighter export limit would be
        // shown as itself, held the same way).
        let total_w: f64 = out.commands.iter().map(|(_, c)| c.setpoint_w).sum();
        assert!(total_w <= 2000.0 + 1e-6, "{total_w}");
        let export = &out.status.limits[0];
        assert_eq!(export.mode, LimitMode::Export);
        assert_eq!(
            export.source,
            LimitSource::FailSafe {
                cause: FailSafeCause::NoMeter
            }
        );
        let json = serde_json::to_value(export).expect("json");
        assert_eq!(json["source"]["kind"], "fail_safe");
        assert_eq!(json["source"]["cause"], "no_meter");
        // `csipd status`: the summary line and the limit's line.
        let mut snap = status::Snapshot::new(1_800_000_000);
        snap.limits = out.status.limits.clone();
        snap.devices = Vec::new();
        let shown = status::render::summary(&snap);
        assert!(!shown.contains("stale"), "{shown}");
        assert!(
            shown.contains(
                "Export limited to 2000 W at the inverters, as no site meter is configured"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("export limit 2000 W — no site meter configured: the inverters' output is held at this level"),
            "{shown}"
        );
        // The log says so once, in the same words.
        let mut state = State::new();
        let first = step(&mut state, inputs, now);
        let said: Vec<&str> = first.transitions.iter().map(|t| t.text.as_str()).collect();
        assert!(
            said.iter()
                .any(|t| t.contains("no site meter configured: inverter output held at 2000 W")),
            "{said:?}"
        );
        assert!(
            said.iter().all(|t| !t.contains("meter reading")),
            "{said:?}"
        );
    }

    /// A site with a utility server whose controls were never read holds its export at
    /// `fallback_export_limit_w` (the closed loop on the meter, not the fail-safe), says
    /// so in the status and the summary, and gives way to the utility's limit once one
    /// is known; an owner-only site is not held.
    #[test]
    fn a_utility_site_holds_the_fallback_until_the_utility_limit_is_known() {
        let with_utility = TEXT
            .replace(
                "config csipd 'main'\n",
                "config csipd 'main'\nconfig server 'utility'\n\toption dcap_url \
                 'http://127.0.0.1:9/dcap'\n\toption allow_plain_http '1'\n",
            )
            .replace("\toption export_limit_w '1500'\n", "")
            .replace("\toption connect '0'\n", "")
            .replace(
                "\toption failsafe_export_limit_w '2000'\n",
                "\toption failsafe_export_limit_w '2000'\n\toption fallback_export_limit_w '800'\n",
            );
        let c = crate::config::from_text(&with_utility, "test.conf")
            .expect("valid")
            .0;
        assert_eq!(c.fallback_export_limit_w(), Some(800));
        let tz = PosixTz::utc();
        // The meter reads an export of 900 W with the inverters at 100 W each.
        let devices = [
            input("inv", Some(5000.0), None),
            input("bat", Some(5000.0), None),
            DeviceInput {
                w: Some(-900.0),
                ..input("meter", None, None)
            },
        ];
        let run = |cfg: &Config, utility: Option<&UtilityControls>| {
            let inputs = Inputs {
                config: cfg,
                tz: &tz,
                devices: &devices,
                utility,
                server_offset_s: 0,
                price: None,
            };
            let mut state = State::new();
            step(&mut state, inputs, Now::at(1_800_000_000))
        };
        let out = run(&c, None);
        let export = &out.status.limits[0];
        assert_eq!(export.value_w, Some(800.0));
        assert_eq!(
            export.source,
            LimitSource::Fallback {
                cause: limits::FallbackCause::UtilityNotRead
            }
        );
        assert_eq!(out.setpoints.fail_safe, None, "the meter is fresh");
        // Over the fallback by 100 W (+ the 50 W margin): the inverters are cut by it,
        // from 200 W to 50 W.
        let total_w: f64 = out.commands.iter().map(|(_, c)| c.setpoint_w).sum();
        assert!((total_w - 50.0).abs() < 1e-6, "{total_w}");
        // The revert level (fail-safe) is held within the fallback too.
        assert!(
            out.commands
                .iter()
                .all(|(_, c)| (c.fallback_pct - 8.0).abs() < 1e-9),
            "{:?}",
            out.commands
        );
        let mut snap = status::Snapshot::new(1_800_000_000);
        snap.limits = out.status.limits.clone();
        let shown = status::render::summary(&snap);
        assert!(
            shown.contains(
                "Export limited to 800 W until your network operator's limits are received"
            ),
            "{shown}"
        );
        assert!(
            shown.contains(
                "export limit 800 W — fallback export limit (no utility control read yet)"
            ),
            "{shown}"
        );
        assert!(
            out.transitions
                .iter()
                .any(|t| t.source == Some("limits") && t.text.contains("fallback export limit")),
            "{:?}",
            out.transitions
        );
        // Read, no export limit in force: still held, with that cause.
        let out = run(&c, Some(&UtilityControls::default()));
        assert_eq!(
            out.status.limits[0].source,
            LimitSource::Fallback {
                cause: limits::FallbackCause::NoUtilityExportLimit
            }
        );
        // The utility's default takes over.
        let utility = UtilityControls {
            export_limit_w: Some(Limit::new(
                3000.0,
                LimitSource::UtilityDefault {
                    program: "P".into(),
                },
                None,
            )),
            ..UtilityControls::default()
        };
        let out = run(&c, Some(&utility));
        assert_eq!(out.status.limits[0].value_w, Some(3000.0));
        assert_eq!(out.status.limits[0].source.kind(), "program_default");
        // An owner-only site: no utility to wait for, no export limit at all.
        let mut owner_only = c.clone();
        owner_only.server.dcap_url = None;
        let out = run(&owner_only, None);
        assert!(
            out.status
                .limits
                .iter()
                .all(|l| l.mode != LimitMode::Export),
            "{:?}",
            out.status.limits
        );
    }

    #[test]
    fn no_rating_known_means_no_commands_but_a_status() {
        let c = cfg();
        let tz = PosixTz::utc();
        let inputs = Inputs {
            config: &c,
            tz: &tz,
            devices: &[],
            utility: None,
            server_offset_s: 0,
            price: None,
        };
        let mut state = State::new();
        let out = step(&mut state, inputs, Now::at(0));
        assert!(out.commands.is_empty());
        assert!(
            state
                .controller()
                .is_some_and(|c| c.params().inverters.is_empty())
        );
        // The fixed export limit is still shown (the fail-safe over no inverters).
        assert_eq!(out.status.limits[0].mode, LimitMode::Export);
        assert_eq!(out.status.devices.len(), 3);
    }

    #[test]
    fn a_device_csipd_cannot_control_is_left_out_of_the_controller() {
        let c = cfg();
        let read_only = DeviceInput {
            controllable: false,
            ..input("inv", Some(5000.0), None)
        };
        let p = controller_params(&c, &[read_only.clone(), input("bat", Some(5000.0), None)]);
        let names: Vec<&str> = p.inverters.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["bat"]);
        // Its output still counts as PV in the status.
        let tz = PosixTz::utc();
        let devices = [
            read_only,
            input("bat", Some(5000.0), None),
            input("meter", None, None),
        ];
        let inputs = Inputs {
            config: &c,
            tz: &tz,
            devices: &devices,
            utility: None,
            server_offset_s: 0,
            price: None,
        };
        let out = step(&mut State::new(), inputs, Now::at(0));
        assert_eq!(out.status.site.pv_w, Some(200.0));
        assert_eq!(out.commands.len(), 1);
    }

    /// The controller's log line says what is true when it is made: at start nothing is
    /// read yet ("0 of 2 ... waiting for the first reading of inv, bat"), never "0
    /// inverter(s)" as if none were configured.
    #[test]
    fn the_controller_line_says_what_is_configured_and_being_read() {
        let c = cfg();
        let tz = PosixTz::utc();
        let lines = |devices: &[DeviceInput], state: &mut State| {
            let inputs = Inputs {
                config: &c,
                tz: &tz,
                devices,
                utility: None,
                server_offset_s: 0,
                price: None,
            };
            step(state, inputs, Now::at(0))
                .transitions
                .into_iter()
                .map(|t| t.text)
                .filter(|t| t.starts_with("controller: "))
                .collect::<Vec<_>>()
        };
        let mut state = State::new();
        assert_eq!(
            lines(&[], &mut state),
            [
                "controller: 0 of 2 configured inverter(s) under control yet; waiting for the \
              first reading of inv, bat, fail-safe export 2000 W"
            ]
        );
        let inv = input("inv", Some(5000.0), None);
        assert_eq!(
            lines(std::slice::from_ref(&inv), &mut state),
            [
                "controller: 1 of 2 configured inverter(s) under control (inv 5000 W); waiting \
              for the first reading of bat, fail-safe export 2000 W"
            ]
        );
        let bat = DeviceInput {
            controllable: false,
            ..input("bat", Some(3000.0), None)
        };
        assert_eq!(
            lines(&[inv.clone(), bat], &mut state),
            [
                "controller: 1 of 2 configured inverter(s) under control (inv 5000 W); read only \
              (no control model): bat, fail-safe export 2000 W"
            ]
        );
        // Nothing changed: no new line.
        let bat = input("bat", Some(3000.0), None);
        let both = [inv, bat];
        assert_eq!(lines(&both, &mut state).len(), 1);
        assert!(lines(&both, &mut state).is_empty());
        let none = crate::config::from_text(
            "config csipd 'main'\nconfig control 'site'\n\toption failsafe_export_limit_w '0'\n",
            "t",
        )
        .expect("valid")
        .0;
        assert_eq!(
            controller_line(&none, &[], &controller_params(&none, &[])),
            "controller: no inverter or battery configured (nothing to limit), fail-safe \
             export 0 W"
        );
    }

    /// The inverters' output is known from their own readings with the meter missing,
    /// never read or stale: the status says PV, and leaves what needs the meter (site,
    /// export, load) unknown. With no fresh inverter reading PV is unknown, not 0 W.
    #[test]
    fn pv_is_known_from_the_inverters_without_the_meter() {
        let tz = PosixTz::utc();
        let run = |c: &Config, devices: &[DeviceInput]| {
            let inputs = Inputs {
                config: c,
                tz: &tz,
                devices,
                utility: None,
                server_offset_s: 0,
                price: None,
            };
            step(&mut State::new(), inputs, Now::at(0)).status.site
        };
        let c = cfg();
        let inverters = [
            input("inv", Some(5000.0), None),
            input("bat", Some(5000.0), None),
        ];
        // The meter never read.
        let site = run(&c, &inverters);
        assert_eq!(site.pv_w, Some(200.0));
        assert_eq!(
            (site.site_w, site.export_w, site.load_w),
            (None, None, None)
        );
        // No meter configured at all.
        let no_meter = crate::config::from_text(
            &TEXT.replace(
                "config device 'meter'\n\toption role 'meter'",
                "config device 'meter'\n\toption role 'meter'\n\toption enabled '0'",
            ),
            "t",
        )
        .expect("valid")
        .0;
        assert!(no_meter.site_meter().is_none());
        let site = run(&no_meter, &inverters);
        assert_eq!(
            (site.pv_w, site.site_w, site.load_w),
            (Some(200.0), None, None)
        );
        // Every inverter stale: PV unknown too.
        let stale: Vec<DeviceInput> = inverters
            .iter()
            .map(|i| DeviceInput {
                age_ms: Some(60_000),
                ..i.clone()
            })
            .collect();
        assert_eq!(run(&no_meter, &stale).pv_w, None);
        // With the meter: all four, the load from both.
        let mut all = inverters.to_vec();
        all.push(DeviceInput {
            w: Some(-50.0),
            ..input("meter", None, None)
        });
        let site = run(&c, &all);
        assert_eq!(
            (site.site_w, site.export_w, site.pv_w, site.load_w),
            (Some(-50.0), Some(50.0), Some(200.0), Some(150.0))
        );
    }

    #[test]
    fn staleness_is_one_rule() {
        assert!(is_stale(None, 5000));
        assert!(!is_stale(Some(5000), 5000));
        assert!(is_stale(Some(5001), 5000));
    }
}
