//! The runtime's use of the store: the critical state in `data_dir` (the last utility
//! controls, so a restarted csipd keeps the utility's limit before it reaches the
//! server again; the scheduler's memory and response ledger for the engine) and the
//! per-cycle telemetry in `telemetry_dir`. A store that cannot be opened is reported
//! and csipd runs without it: control never waits on the disk.

use super::site::SharedSite;
use crate::config::Config;
use crate::schedule;
use crate::status::SnapshotHandle;
use crate::store::{Sample, Store, Telemetry};
use serde::{Deserialize, Serialize};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

/// The store setting holding the last utility controls (JSON).
pub const UTILITY_CONTROLS_KEY: &str = "runtime.utility_controls";

pub type SharedDurable = Rc<RefCell<Durable>>;

/// The scheduler's active controls as last evaluated, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedControls {
    pub active: schedule::ActiveControls,
    pub ramp: schedule::Ramp,
    /// When they were evaluated (Unix seconds).
    pub at_s: i64,
}

#[derive(Default)]
pub struct Durable {
    pub store: Option<Store>,
    pub telemetry: Option<Telemetry>,
    /// Whether [`Durable::open`] made it (it may still hold no store, if that failed);
    /// `false` while the runtime opens the databases at start-up.
    pub opened: bool,
    /// The last write error, reported once.
    last_error: Option<String>,
}

fn open_dir(dir: &str) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {dir}: {e}"))
}

impl Durable {
    /// Opens both databases; problems are logged and shown in the status.
    pub fn open(config: &Config, now_s: i64, status: &SnapshotHandle) -> Durable {
        let mut d = Durable {
            opened: true,
            ..Durable::default()
        };
        let report = |level: &str, text: String| {
            if level == "error" {
                log::error!("{text}");
                status.update(|s| s.push_error(now_s, "store", &text));
            } else {
                log::warn!("{text}");
            }
            status.log_event(now_s, level, "store", &text);
        };
        match open_dir(&config.main.data_dir).and_then(|()| {
            Store::open(Path::new(&config.main.data_dir), now_s).map_err(|e| e.to_string())
        }) {
            Ok((store, notices)) => {
                for n in notices {
                    report("warn", n.to_string());
                }
                log::info!("state store {}", store.path().display());
                d.store = Some(store);
            }
            Err(e) => report(
                "error",
                format!(
                    "state store not available, running without it (controls are not kept across restarts): {e}"
                ),
            ),
        }
        match open_dir(&config.main.telemetry_dir).and_then(|()| {
            Telemetry::open(Path::new(&config.main.telemetry_dir), now_s).map_err(|e| e.to_string())
        }) {
            Ok((t, notices)) => {
                for n in notices {
                    report("warn", n.to_string());
                }
                d.telemetry = Some(t);
            }
            Err(e) => report("error", format!("telemetry not recorded: {e}")),
        }
        d
    }

    /// The utility controls saved by the previous run, if any.
    pub fn saved_controls(&self) -> Option<SavedControls> {
        let text = self.store.as_ref()?.setting(UTILITY_CONTROLS_KEY)?;
        match serde_json::from_str(text) {
            Ok(c) => Some(c),
            Err(e) => {
                log::warn!("stored utility controls do not read back ({e}); ignored");
                None
            }
        }
    }

    /// Keeps the utility's active controls (written at the next flush).
    pub fn save_controls(&mut self, saved: &SavedControls) {
        let Some(store) = self.store.as_mut() else {
            return;
        };
        // Compare without the time: an unchanged evaluation writes nothing.
        if let Some(old) = store
            .setting(UTILITY_CONTROLS_KEY)
            .and_then(|t| serde_json::from_str::<SavedControls>(t).ok())
        {
            if old.active == saved.active && old.ramp == saved.ramp {
                return;
            }
        }
        match serde_json::to_string(saved) {
            Ok(json) => {
                store.set_setting(UTILITY_CONTROLS_KEY, &json);
            }
            Err(e) => log::error!("utility controls not stored: {e}"),
        }
    }

    pub fn record_sample(&mut self, sample: Sample) {
        if let Some(t) = self.telemetry.as_mut() {
            if let Err(e) = t.record_sample(sample) {
                self.note_error(e.to_string());
            }
        }
    }

    /// Flushes the state store when it says so (`force`: now, at shutdown), and the
    /// telemetry's open minute at shutdown.
    pub fn flush(&mut self, now_s: i64, force: bool) {
        if let Some(store) = self.store.as_mut() {
            if force || store.flush_due(now_s) {
                if let Err(e) = store.flush(now_s) {
                    let e = e.to_string();
                    self.note_error(e);
                }
            }
        }
        if force {
            if let Some(t) = self.telemetry.as_mut() {
                if let Err(e) = t.flush(now_s) {
                    let e = e.to_string();
                    self.note_error(e);
                }
            }
        }
    }

    fn note_error(&mut self, e: String) {
        if self.last_error.as_ref() != Some(&e) {
            log::error!("{e}");
            self.last_error = Some(e);
        }
    }
}

/// Restores the previous run's utility controls into the site state: the last known
/// utility limit holds from the first cycle, before the server is reached.
pub fn restore_controls(durable: &Durable, site: &SharedSite) -> Option<SavedControls> {
    let saved = durable.saved_controls()?;
    let controls = crate::control::UtilityControls::from_schedule(&saved.active, saved.ramp);
    log::info!(
        "restored the utility controls evaluated at {} (held until the server is reached)",
        saved.at_s
    );
    site.borrow_mut().utility = Some(controls);
    Some(saved)
}

/// Flushes the state store whenever it is due (checked every second).
pub async fn flush_task(durable: SharedDurable) {
    loop {
        smol::Timer::after(Duration::from_secs(1)).await;
        durable.borrow_mut().flush(super::unix_now_s(), false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path) -> Config {
        let text = format!(
            "config csipd 'main'\n\toption data_dir '{0}/state'\n\toption telemetry_dir '{0}/tm'\n",
            dir.display()
        );
        crate::config::from_text(&text, "t").expect("valid").0
    }

    #[test]
    fn utility_controls_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("csipd-durable-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = config_in(&dir);
        let status = SnapshotHandle::new(crate::status::Snapshot::new(0));
        // Active controls from the real scheduler: a default export limit of 1200 W.
        let program = schedule::Program {
            mrid: "P".into(),
            fsa: "f".into(),
            primacy: 0,
            default_control: Some(schedule::DefaultControl {
                mrid: "D".into(),
                controls: schedule::ControlSet {
                    exp_lim_w: Some(schedule::ActivePower::from_watts(1200)),
                    ..Default::default()
                },
                set_grad_w: None,
                enter_service: Default::default(),
            }),
        };
        let out = schedule::evaluate(
            &schedule::Input {
                programs: std::slice::from_ref(&program),
                events: &[],
                now_s: 100,
            },
            &mut schedule::Rng::new(7),
            &schedule::State::default(),
        );
        {
            let mut d = Durable::open(&config, 100, &status);
            assert!(d.store.is_some() && d.telemetry.is_some());
            d.save_controls(&SavedControls {
                active: out.active.clone(),
                ramp: out.ramp,
                at_s: 100,
            });
            d.flush(101, true);
        }
        let d = Durable::open(&config, 200, &status);
        let site: SharedSite = Rc::new(RefCell::new(super::super::site::SiteState::new(900)));
        let saved = restore_controls(&d, &site).expect("controls come back");
        assert_eq!(saved.active, out.active);
        let u = site
            .borrow()
            .utility
            .clone()
            .expect("utility controls restored");
        assert_eq!(u.export_limit_w.map(|l| l.value), Some(1200.0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_unusable_data_dir_is_reported_and_csipd_runs_without_a_store() {
        let config = config_in(Path::new("/proc/csipd-no-such-dir"));
        let status = SnapshotHandle::new(crate::status::Snapshot::new(0));
        let d = Durable::open(&config, 0, &status);
        assert!(d.store.is_none());
        assert!(d.saved_controls().is_none());
        let snap = status.get();
        assert!(
            snap.last_errors
                .iter()
                .any(|e| e.source == "store" && e.message.contains("/proc/csipd-no-such-dir")),
            "{:?}",
            snap.last_errors
        );
    }
}
