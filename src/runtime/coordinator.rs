//! The coordinator tick (every `control.cycle_s`): latest measurements → merged limits
//! (utility, fixed, tariff windows in local time, price) → control law → setpoints for
//! the bus tasks, and the status snapshot (limits with source and end, site flows,
//! devices, setpoints, chart history).

use super::map;
use super::site::{Command, SharedSite};
use crate::config::{Config, DeviceRole};
use crate::control::{self, Controller, MergeInputs, Readings, Setpoints};
use crate::status::{self, SnapshotHandle};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Everything the tick derives from the configuration, rebuilt on reload.
pub struct Coordinator {
    config: Rc<Config>,
    tz: control::PosixTz,
    windows: Vec<control::TariffWindow>,
    fixed: control::FixedLimits,
    price_rule: Option<control::PriceRule>,
    controller: Option<Controller>,
    /// The monotonic origin of the controller's millisecond timeline.
    start: Instant,
    last_limits: Vec<status::ActiveLimit>,
    last_fail_safe: Option<bool>,
    /// Limit modes last reported as unsupported (logged when the set changes).
    last_unsupported: Vec<control::Mode>,
    last_reason: String,
    /// The last cycle's telemetry sample (the tick task hands it to the store).
    pub last_sample: Option<crate::store::Sample>,
}

fn ms_since(start: Instant, t: Instant) -> i64 {
    t.saturating_duration_since(start).as_millis() as i64
}

/// `/etc/TZ` of the system (OpenWrt keeps the POSIX TZ string there).
pub fn read_etc_tz() -> Option<String> {
    std::fs::read_to_string("/etc/TZ").ok()
}

impl Coordinator {
    pub fn new(config: Rc<Config>, etc_tz: Option<&str>) -> Self {
        let mut c = Coordinator {
            tz: control::PosixTz::utc(),
            windows: Vec::new(),
            fixed: control::FixedLimits::default(),
            price_rule: None,
            controller: None,
            start: Instant::now(),
            last_limits: Vec::new(),
            last_fail_safe: None,
            last_unsupported: Vec::new(),
            last_reason: String::new(),
            last_sample: None,
            config: config.clone(),
        };
        c.reconfigure(config, etc_tz);
        c
    }

    /// Applies a new configuration. The controller keeps its state (ramp, last
    /// setpoints) unless its parameters change.
    pub fn reconfigure(&mut self, config: Rc<Config>, etc_tz: Option<&str>) {
        let (tz, problem) = map::timezone(&config, etc_tz);
        if let Some(p) = problem {
            log::warn!("{p}");
        }
        self.tz = tz;
        self.windows = map::tariff_windows(&config);
        self.fixed = map::fixed_limits(&config);
        self.price_rule = map::price_rule(&config);
        self.config = config;
    }

    pub fn cycle(&self) -> Duration {
        Duration::from_secs_f64(self.config.control.cycle_s)
    }

    pub fn tz(&self) -> &control::PosixTz {
        &self.tz
    }

    /// One cycle at the current time.
    pub fn tick(&mut self, site: &SharedSite, status: &SnapshotHandle) -> Option<Setpoints> {
        let now = Instant::now();
        let now_ms = ms_since(self.start, now);
        let unix_s = super::unix_now_s();
        let cfg = self.config.clone();
        let mut s = site.borrow_mut();

        // (Re)build the controller when the inverters or their ratings change.
        // An inverter without a control model is left out: the control law cannot move
        // it, and its output reaches the meter like any load would (issue 17).
        let params = map::controller_params(
            &cfg,
            |name| {
                s.devices
                    .get(name)
                    .filter(|d| d.controls.is_none_or(|c| c.can_limit_power()))
                    .and_then(|d| d.rating_w)
            },
            |name| s.devices.get(name).and_then(|d| d.max_charge_w),
        );
        if self.controller.as_ref().map(|c| c.params()) != Some(&params) {
            log::info!(
                "controller: {} inverter(s) {:?}, fail-safe export {} W",
                params.inverters.len(),
                params
                    .inverters
                    .iter()
                    .map(|i| format!("{} {:.0} W", i.name, i.rating_w))
                    .collect::<Vec<_>>(),
                params.fail_safe_export_limit_w
            );
            self.controller = Some(Controller::new(params.clone()));
        }
        let controller = self.controller.as_mut()?;

        let meter = map::site_meter(&cfg)
            .and_then(|m| s.devices.get(&m.name))
            .cloned();
        let meter = meter.as_ref();
        let readings = Readings {
            meter: meter.and_then(|m| {
                m.last_good_at.map(|t| control::MeterReading {
                    site_w: m.w.unwrap_or(f64::NAN),
                    at_ms: ms_since(self.start, t),
                })
            }),
            inverters: params
                .inverters
                .iter()
                .map(|i| {
                    let d = s.devices.get(&i.name)?;
                    d.last_good_at.map(|t| control::InverterReading {
                        output_w: d.w.unwrap_or(f64::NAN),
                        at_ms: ms_since(self.start, t),
                    })
                })
                .collect(),
        };

        let merge_now_s = unix_s + s.clock_offset_s;
        let inputs = MergeInputs {
            utility: s.utility.clone().unwrap_or_default(),
            fixed: self.fixed.clone(),
            windows: &self.windows,
            price_rule: self.price_rule.clone(),
            price: s.price.current(unix_s),
            total_set_max_w: params.inverters.iter().map(|i| i.rating_w).sum(),
        };
        let mut merged = control::merge(&inputs, &self.tz, merge_now_s);
        map::apply_owner_settings(&mut merged, &cfg);
        let setpoints = controller.step(now_ms, &merged, &readings);

        let total_rating_w: f64 = params.inverters.iter().map(|i| i.rating_w).sum();
        let fallback_pct = if total_rating_w > 0.0 {
            (100.0 * params.fail_safe_export_limit_w / total_rating_w).min(100.0)
        } else {
            0.0
        };
        s.commands = setpoints
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
                    },
                )
            })
            .collect();
        for wake in &s.command_wake {
            let _ = wake.try_send(());
        }

        // Status.
        let fail_safe_w = setpoints.fail_safe.then(|| {
            params
                .fail_safe_export_limit_w
                .min(
                    merged
                        .export_limit_w
                        .as_ref()
                        .map_or(f64::INFINITY, |l| l.value),
                )
                .max(0.0)
        });
        let mut limits = map::status_limits(&merged, fail_safe_w, &setpoints.unsupported);
        super::bus::mark_not_enforceable(
            &mut limits,
            map::controlled_devices(&cfg).map(|d| {
                let st = s.devices.get(&d.name);
                (
                    d.name.as_str(),
                    st.and_then(|st| st.controls),
                    st.is_some_and(|st| st.rating_w.is_some()),
                )
            }),
        );
        if self.last_unsupported != setpoints.unsupported {
            for mode in &setpoints.unsupported {
                let text = format!(
                    "{} limit in force but not supported: no storage inverter with a \
                     controllable charge rate (SunSpec model 124)",
                    mode.name()
                );
                log::warn!("{text}");
                status.log_event(unix_s, "warn", "control", &text);
            }
            self.last_unsupported = setpoints.unsupported.clone();
        }
        let stale_s = cfg.control.meter_stale_s;
        let meter_fresh = meter.is_some_and(|m| !m.is_stale(now, stale_s) && m.w.is_some());
        let site_w = meter.and_then(|m| m.w);
        let pv_w: f64 = map::controlled_devices(&cfg)
            .filter_map(|i| s.devices.get(&i.name))
            .filter(|d| !d.is_stale(now, stale_s))
            .filter_map(|d| d.w)
            .sum();
        let flows = match (site_w, meter) {
            (Some(w), Some(m)) => {
                let age_s = m
                    .last_good_at
                    .map_or(0, |t| now.saturating_duration_since(t).as_secs() as i64);
                status::SiteFlows::from_site_and_pv(w, pv_w, unix_s - age_s)
            }
            _ => status::SiteFlows::default(),
        };
        let export_w = meter_fresh.then_some(flows.export_w).flatten();
        let export_limit_w = limits
            .iter()
            .find(|l| l.mode == status::LimitMode::Export)
            .and_then(|l| l.value_w);
        let devices: Vec<status::Device> = cfg
            .devices
            .iter()
            .filter(|d| d.enabled)
            .filter_map(|d| {
                let st = s.devices.get(&d.name)?;
                Some(status::Device {
                    name: d.name.clone(),
                    role: match d.role {
                        DeviceRole::Meter => status::DeviceRole::Meter,
                        DeviceRole::Inverter => status::DeviceRole::Inverter,
                        DeviceRole::Storage => status::DeviceRole::Storage,
                    },
                    stale: st.is_stale(now, stale_s),
                    last_reading_age_s: st
                        .last_good_at
                        .map(|t| now.saturating_duration_since(t).as_secs_f64()),
                    readings: st.readings.clone(),
                    stats: status::DeviceStats {
                        reads_ok: st.reads_ok,
                        reads_failed: st.reads_failed,
                        writes_ok: st.writes_ok,
                        writes_failed: st.writes_failed,
                        last_error: st.last_error.clone(),
                    },
                    tls_fingerprint: st.tls_fingerprint.clone(),
                    read_only: st.controls.and_then(|c| {
                        super::bus::no_control_model_text(&d.name, d.role, &c).or_else(|| {
                            (d.role != DeviceRole::Meter && st.rating_w.is_none())
                                .then(|| super::bus::no_rating_text(&d.name))
                        })
                    }),
                })
            })
            .collect();
        let setpoint_list: Vec<status::Setpoint> = map::controlled_devices(&cfg)
            .map(|d| {
                let w = s.devices.get(&d.name).and_then(|st| st.written.clone());
                status::Setpoint {
                    device: d.name.clone(),
                    limit_w: w.as_ref().map(|w| w.limit_w),
                    limit_pct: w.as_ref().map(|w| w.limit_pct),
                    connect: w.as_ref().map(|w| w.connect),
                    written_unix_s: w.as_ref().map(|w| w.at_unix_s),
                    charge_limit_w: s.devices.get(&d.name).and_then(|st| st.charge_limit_w),
                }
            })
            .collect();
        self.last_sample = Some(crate::store::Sample {
            at_s: unix_s,
            site_w: meter_fresh.then_some(site_w).flatten(),
            export_limit_w,
            inverters: params
                .inverters
                .iter()
                .map(|i| {
                    let d = s.devices.get(&i.name);
                    crate::store::InverterSample {
                        name: i.name.clone(),
                        w: d.filter(|d| !d.is_stale(now, stale_s)).and_then(|d| d.w),
                        setpoint_w: s.commands.get(&i.name).map(|c| c.setpoint_w),
                    }
                })
                .collect(),
        });
        let new_errors: Vec<(String, String)> = s
            .devices
            .iter_mut()
            .filter_map(|(name, st)| st.unreported_error.take().map(|e| (name.clone(), e)))
            .collect();
        let price_error = s.price.last_error().map(|e| e.to_string());
        drop(s);

        let offset = self.tz.offset_at(unix_s).0;
        status.update(|snap| {
            snap.now_unix_s = unix_s;
            snap.local_utc_offset_s = offset;
            snap.limits = limits.clone();
            snap.site = flows;
            snap.devices = devices;
            snap.setpoints = setpoint_list;
            snap.history.record(unix_s, export_w, export_limit_w);
            for (name, e) in &new_errors {
                snap.push_error(unix_s, &format!("device {name}"), e);
            }
            if let Some(e) = &price_error {
                if snap.last_errors.back().is_none_or(|l| &l.message != e) {
                    snap.push_error(unix_s, "price", e);
                }
            }
        });
        for (name, e) in &new_errors {
            status.log_event(unix_s, "warn", &format!("device {name}"), e);
        }

        // Log what changed.
        if self.last_fail_safe != Some(setpoints.fail_safe) {
            let level = if setpoints.fail_safe { "warn" } else { "info" };
            let text = if setpoints.fail_safe {
                format!("fail-safe: {}", setpoints.reason)
            } else {
                "fail-safe ended: meter readings are good".to_string()
            };
            if setpoints.fail_safe {
                log::warn!("{text}");
            } else {
                log::info!("{text}");
            }
            status.log_event(unix_s, level, "control", &text);
            self.last_fail_safe = Some(setpoints.fail_safe);
        }
        if limits_changed(&self.last_limits, &limits) {
            let text = if limits.is_empty() {
                "no limit in force".to_string()
            } else {
                limits
                    .iter()
                    .map(|l| status::render::limit_line(l, unix_s, offset))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            log::info!("limits: {text}");
            status.log_event(unix_s, "info", "limits", &text);
        }
        self.last_limits = limits;
        let reason = setpoints.reason.to_string();
        if reason != self.last_reason {
            log::debug!("control: {reason}");
            self.last_reason = reason;
        }
        Some(setpoints)
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
