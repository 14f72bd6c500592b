//! The coordinator tick (every `control.cycle_s`): the IO around the pure
//! [`control::step`]. It reads the clock once, turns the shared site state into the
//! step's inputs (readings with their ages), and hands the outputs on: commands to the
//! bus tasks, the status view to the snapshot, the telemetry sample to the store, the
//! transitions to the log and the status event log. It decides nothing itself.

use super::clock::SystemClock;
use super::site::SharedSite;
use crate::config::Config;
use crate::control::{self, DeviceInput, PosixTz, Setpoints};
use crate::status::{self, SnapshotHandle};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The tick's configuration and the step's state, kept across reloads.
pub struct Coordinator {
    config: Rc<Config>,
    tz: PosixTz,
    state: control::State,
    clock: SystemClock,
    /// The last cycle's telemetry sample (the tick task hands it to the store).
    pub last_sample: Option<crate::store::Sample>,
}

/// The step's device inputs: each device's last good reading and its age at `now`.
fn device_inputs(s: &super::site::SiteState, now: Instant) -> Vec<DeviceInput> {
    s.devices
        .iter()
        .map(|(name, d)| DeviceInput {
            name: name.clone(),
            rating_w: d.rating_w,
            max_charge_w: d.max_charge_w,
            w: d.w(),
            age_ms: d.age_ms(now),
            // An inverter read without a control model (issue 17); unknown until read.
            controllable: d.controls.is_none_or(|c| c.can_limit_power()),
        })
        .collect()
}

/// `/etc/TZ` of the system (OpenWrt keeps the POSIX TZ string there).
pub fn read_etc_tz() -> Option<String> {
    std::fs::read_to_string("/etc/TZ").ok()
}

impl Coordinator {
    pub fn new(config: Rc<Config>, etc_tz: Option<&str>) -> Self {
        let mut c = Coordinator {
            tz: PosixTz::utc(),
            state: control::State::new(),
            clock: SystemClock::new(),
            last_sample: None,
            config: config.clone(),
        };
        c.reconfigure(config, etc_tz);
        c
    }

    /// Applies a new configuration. The controller keeps its state (ramp, last
    /// setpoints) unless its parameters change.
    pub fn reconfigure(&mut self, config: Rc<Config>, etc_tz: Option<&str>) {
        let (tz, problem) = control::tz::site_timezone(config.main.timezone.as_deref(), etc_tz);
        if let Some(p) = problem {
            log::warn!("{p}");
        }
        self.tz = tz;
        self.config = config;
    }

    pub fn cycle(&self) -> Duration {
        Duration::from_millis(control::step::cycle_ms(&self.config))
    }

    pub fn tz(&self) -> &PosixTz {
        &self.tz
    }

    /// When the next tick is due (now, before the first).
    pub fn next_tick(&self) -> Instant {
        match self.state.poll_at() {
            Some(ms) => self.clock.instant_of(ms),
            None => self.clock.instant_of(self.clock.now().mono_ms),
        }
    }

    /// A new site-meter reading between cycles: the step's feed-forward
    /// ([`control::step::feed_forward`]) may cut the inverters at once; new commands go
    /// to the bus tasks like a tick's.
    pub fn feed_forward(&mut self, site: &SharedSite) {
        let now = self.clock.now();
        let now_instant = self.clock.instant_of(now.mono_ms);
        let mut s = site.borrow_mut();
        let devices = device_inputs(&s, now_instant);
        let inputs = control::Inputs {
            config: &self.config,
            tz: &self.tz,
            devices: &devices,
            utility: s.utility.as_ref(),
            server_offset_s: s.clock_offset_s,
            price: s.price.current(now.utc_s()),
        };
        let Some(commands) = control::step::feed_forward(&mut self.state, inputs, now) else {
            return;
        };
        log::debug!("feed-forward: {commands:?}");
        s.commands = commands.into_iter().collect();
        for wake in &s.command_wake {
            let _ = wake.try_send(());
        }
    }

    /// One cycle at the current time.
    pub fn tick(&mut self, site: &SharedSite, status: &SnapshotHandle) -> Setpoints {
        let now = self.clock.now();
        let now_instant = self.clock.instant_of(now.mono_ms);
        let unix_s = now.utc_s();
        let cfg = self.config.clone();
        let mut s = site.borrow_mut();

        let devices = device_inputs(&s, now_instant);
        let price = s.price.current(unix_s);
        let inputs = control::Inputs {
            config: &cfg,
            tz: &self.tz,
            devices: &devices,
            utility: s.utility.as_ref(),
            server_offset_s: s.clock_offset_s,
            price,
        };
        let out = control::step(&mut self.state, inputs, now);

        s.commands = out.commands.iter().cloned().collect();
        for wake in &s.command_wake {
            let _ = wake.try_send(());
        }
        let view = &out.status;
        let device_list: Vec<status::Device> = view
            .devices
            .iter()
            .filter_map(|v| {
                let st = s.devices.get(&v.name)?;
                Some(status::Device {
                    name: v.name.clone(),
                    role: v.role,
                    stale: v.stale,
                    last_reading_age_s: v.last_reading_age_s,
                    readings: st
                        .ac
                        .as_ref()
                        .map(status::Readings::from)
                        .unwrap_or_default(),
                    stats: status::DeviceStats {
                        reads_ok: st.reads_ok,
                        reads_failed: st.reads_failed,
                        writes_ok: st.writes_ok,
                        writes_failed: st.writes_failed,
                        last_error: st.last_error.clone(),
                    },
                    read_only: st.controls.and_then(|c| {
                        super::bus::no_control_model_text(&v.name, st.role, &c).or_else(|| {
                            (st.role != crate::config::DeviceRole::Meter && st.rating_w.is_none())
                                .then(|| super::bus::no_rating_text(&v.name))
                        })
                    }),
                    tls_fingerprint: st.tls_fingerprint.clone(),
                })
            })
            .collect();
        let setpoint_list: Vec<status::Setpoint> = cfg
            .controlled_devices()
            .map(|d| {
                let st = s.devices.get(&d.name);
                let w = st.and_then(|st| st.written.clone());
                status::Setpoint {
                    device: d.name.clone(),
                    limit_w: w.as_ref().map(|w| w.limit_w),
                    limit_pct: w.as_ref().map(|w| w.limit_pct),
                    connect: w.as_ref().map(|w| w.connect),
                    written_unix_s: w.as_ref().map(|w| w.at_unix_s),
                    charge_limit_w: st.and_then(|st| st.charge_limit_w),
                }
            })
            .collect();
        // Limits a device should enforce but cannot (no control model, no rating).
        let mut limits = view.limits.clone();
        super::bus::mark_not_enforceable(
            &mut limits,
            cfg.controlled_devices().map(|d| {
                let st = s.devices.get(&d.name);
                (
                    d.name.as_str(),
                    st.and_then(|st| st.controls),
                    st.is_some_and(|st| st.rating_w.is_some()),
                )
            }),
        );
        let new_errors: Vec<(String, String)> = s
            .devices
            .iter_mut()
            .filter_map(|(name, st)| st.unreported_error.take().map(|e| (name.clone(), e)))
            .collect();
        let price_error = s.price.last_error().map(|e| e.to_string());
        let mut inverter_settings = s
            .utility
            .as_ref()
            .map(status::InverterSetting::of)
            .unwrap_or_default();
        // A droop on model 127 was worked out with a nominal frequency: say which.
        let droop_nominal: Vec<String> = s
            .devices
            .iter()
            .filter_map(|(name, d)| {
                Some(format!("{name} on model 127, {}", d.droop_nominal?.text()))
            })
            .collect();
        if let Some(row) = inverter_settings
            .iter_mut()
            .find(|r| r.mode == crate::schedule::ControlMode::FreqDroop.name())
            .filter(|_| !droop_nominal.is_empty())
        {
            row.value = format!("{} ({})", row.value, droop_nominal.join("; "));
        }
        drop(s);

        self.last_sample = Some(out.sample.clone());
        status.update(|snap| {
            snap.now_unix_s = unix_s;
            snap.local_utc_offset_s = view.local_utc_offset_s;
            snap.limits = limits;
            snap.inverter_settings = inverter_settings;
            snap.site = view.site.clone();
            snap.devices = device_list;
            snap.setpoints = setpoint_list;
            snap.history
                .record(unix_s, view.export_w, view.export_limit_w);
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
        for t in &out.transitions {
            let text = match t.source {
                Some("limits") => format!("limits: {}", t.text),
                _ => t.text.clone(),
            };
            log::log!(t.level, "{text}");
            if let Some(source) = t.source {
                let level = match t.level {
                    log::Level::Error => "error",
                    log::Level::Warn => "warn",
                    _ => "info",
                };
                status.log_event(unix_s, level, source, &t.text);
            }
        }
        out.setpoints
    }
}
