//! The control law: from the site meter and the inverters' output, the active-power
//! setpoints that keep export, generation, import and load within the merged limits.
//!
//! Each cycle (default 1 s):
//! 1. `connect`/`energize` off → every inverter at zero (and disconnected), reported.
//! 2. Meter data missing (start-up, or no site meter configured at all) or older than
//!    `meter_timeout_ms` → fail-safe: the total inverter output is held at the
//!    configured fail-safe export limit (or the export limit, if lower), as if the site
//!    had no load. Without a site meter this is the whole control, for good.
//! 3. Otherwise the export limit gives the allowed generation of the answering inverters
//!    `G + K·(limit − margin − export)`, with G their measured output. This is an integral
//!    controller whose state is re-seeded each cycle with the measured output, so an
//!    inverter that cannot follow (no sun, at rating) cannot wind it up (anti-windup), and
//!    the closed loop on a first-order inverter converges without overshoot for
//!    `K·(1 − e^(−cycle/τ)) ≤ 1`. K is 1 when the site is over the limit (tighten at once:
//!    the whole measured excess, so a load drop of ΔP is a cut of ΔP in the next cycle)
//!    and `gain_up` (< 1) when there is room (approach the limit gently).
//!    Over the limit, with the inverters' response time `response_tau_ms` known, the cut
//!    commanded for one cycle is larger by `excess · a/(1 − a)`, `a = e^(−cycle/τ)`: a
//!    first-order inverter then lands on the target at the end of that cycle (deadbeat)
//!    instead of closing the gap by `1 − a` per cycle (3 kW at τ = 1 s: 3 s to within
//!    100 W, against under one cycle). The lead is applied after the ramp (step 5),
//!    which remembers the target, so the next cycle's return to the target is not ramped.
//! 4. The generation limit caps it (an inverter that stopped answering is counted at its
//!    rating, the safe assumption: it may be producing anything up to that).
//! 5. The ramp (setGradW / rampTms) limits rises only.
//! 6. The total is shared by rating, capped by what each inverter shows it can produce;
//!    an inverter producing less than its setpoint (cloud, battery full) keeps a small
//!    probe margin above its output so it can show more power becoming available.
//!
//! Import and load limits act through the charge limit of storage inverters: load =
//! their charging power; import is fed back from the meter like export. A site without
//! storage reports those limits as unsupported.

use super::limits::{FailSafeCause, Limit, LimitMode, LimitSource, MergedLimits};
use super::ramp::{Ramp, set_grad_w_rate_w_per_s};
use std::fmt;

/// One inverter under control.
#[derive(Debug, Clone, PartialEq)]
pub struct InverterParams {
    pub name: String,
    /// setMaxW: the rating the percent setpoints refer to.
    pub rating_w: f64,
    /// Storage inverters: maximum charge power (W). `None` = a generator only.
    pub max_charge_w: Option<f64>,
}

/// Controller configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct ControllerParams {
    pub inverters: Vec<InverterParams>,
    /// Cycle length (ms); the caller steps the controller at this period.
    pub cycle_ms: i64,
    /// Meter data older than this → fail-safe.
    pub meter_timeout_ms: i64,
    /// Inverter data older than this → that inverter is treated as not answering.
    pub inverter_timeout_ms: i64,
    /// Export limit applied to the inverters' output alone while meter data is stale.
    pub fail_safe_export_limit_w: f64,
    /// A site meter is configured. Without one no reading ever comes: the fail-safe
    /// holds for good and says so ([`Reason::FailSafeNoMeter`]).
    pub site_meter: bool,
    /// Aim this far below export and import limits.
    pub margin_w: f64,
    /// Feedback gain while there is room below the limit (0 < gain_up ≤ 1).
    pub gain_up: f64,
    /// The inverters' first-order response time constant τ (ms) to a new limit, for the
    /// lead of step 3; 0: no lead (`config control` `inverter_response_s`).
    pub response_tau_ms: i64,
}

impl ControllerParams {
    /// Defaults: 1 s cycle, 5 s meter and inverter timeouts, 50 W margin, gain 0.7 up.
    pub fn new(inverters: Vec<InverterParams>, fail_safe_export_limit_w: f64) -> Self {
        ControllerParams {
            inverters,
            cycle_ms: 1000,
            meter_timeout_ms: 5000,
            inverter_timeout_ms: 5000,
            fail_safe_export_limit_w,
            site_meter: true,
            margin_w: 50.0,
            gain_up: 0.7,
            response_tau_ms: 0,
        }
    }
}

/// A device's active power at a moment: the site meter's (at the connection point,
/// import positive) or an inverter's (output positive, negative while a battery
/// charges). The full SunSpec reading is `devices::InverterReading`/`MeterReading`; the
/// law needs only this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerSample {
    pub w: f64,
    /// When it was measured (same monotonic timeline as `now_ms`).
    pub at_ms: i64,
}

impl PowerSample {
    /// Stale at `now_ms` by the one staleness rule ([`is_stale`]).
    pub fn is_stale(&self, now_ms: i64, timeout_ms: i64) -> bool {
        is_stale(
            Some((now_ms - self.at_ms).max(0) as u64),
            timeout_ms.max(0) as u64,
        )
    }
}

/// The one staleness rule, used by the law, the status, the telemetry and the utility's
/// mirror readings: no good reading (`age_ms` `None`), or the last good one older than
/// `timeout_ms`.
pub fn is_stale(age_ms: Option<u64>, timeout_ms: u64) -> bool {
    age_ms.is_none_or(|a| a > timeout_ms)
}

/// The latest readings; `inverters` is in the order of `ControllerParams::inverters`,
/// `None` for an inverter that never answered.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Readings {
    pub meter: Option<PowerSample>,
    pub inverters: Vec<Option<PowerSample>>,
}

/// What one inverter should be set to.
#[derive(Debug, Clone, PartialEq)]
pub struct InverterSetpoint {
    pub name: String,
    /// Active power limit (W).
    pub setpoint_w: f64,
    /// The same as a percentage of the rating (SunSpec WMaxLimPct, 2030.5 opModMaxLimW/100).
    pub setpoint_pct: f64,
    /// Charge limit (W) for a storage inverter.
    pub charge_limit_w: Option<f64>,
    /// Storage inverters while the utility's opModStorageTargetW is in force: the
    /// output to hold, W (positive discharges, negative charges), already held back by
    /// the limits. The charge limit is `None` then: the target owns the storage
    /// controls.
    pub storage_target_w: Option<f64>,
    pub connect: bool,
    pub energize: bool,
    /// false if its data is missing or stale this cycle.
    pub answering: bool,
}

/// Why the output is what it is.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// opModConnect = false.
    Disconnected { source: LimitSource },
    /// opModEnergize = false.
    Deenergized { source: LimitSource },
    /// No meter reading yet: the fail-safe holds.
    FailSafeStartup { limit_w: f64 },
    /// No site meter configured: the fail-safe holds for good.
    FailSafeNoMeter { limit_w: f64 },
    /// Meter data older than the timeout.
    FailSafeMeterStale { limit_w: f64, age_ms: Option<i64> },
    /// A limit is curtailing the inverters.
    Limited { mode: LimitMode, limit: Limit },
    /// A rise is being ramped (setGradW or rampTms).
    Ramping { rate_w_per_s: Option<f64> },
    /// Nothing curtails: the inverters may produce what they can.
    Uncurtailed,
    /// No inverter answers.
    NoInverters,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Disconnected { source } => write!(f, "disconnected by {source}"),
            Reason::Deenergized { source } => write!(f, "de-energized (output zero) by {source}"),
            Reason::FailSafeStartup { limit_w } => write!(
                f,
                "fail-safe {limit_w:.0} W until the first good meter reading"
            ),
            Reason::FailSafeNoMeter { limit_w } => write!(
                f,
                "no site meter configured: inverter output held at {limit_w:.0} W (export not measured)"
            ),
            Reason::FailSafeMeterStale { limit_w, age_ms } => match age_ms {
                Some(a) => write!(
                    f,
                    "fail-safe {limit_w:.0} W: meter data {:.1} s old",
                    *a as f64 / 1000.0
                ),
                None => write!(f, "fail-safe {limit_w:.0} W: meter reading invalid"),
            },
            Reason::Limited { mode, limit } => write!(
                f,
                "{} limit {:.0} W ({})",
                mode.as_str(),
                limit.value,
                limit.source
            ),
            Reason::Ramping { rate_w_per_s } => match rate_w_per_s {
                Some(r) => write!(f, "ramping up at {r:.1} W/s"),
                None => write!(f, "ramping up"),
            },
            Reason::Uncurtailed => write!(f, "not curtailed"),
            Reason::NoInverters => write!(f, "no inverter answers"),
        }
    }
}

/// The controller's output for one cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct Setpoints {
    /// Total active power allowed for the answering inverters (W).
    pub total_allowed_w: f64,
    pub inverters: Vec<InverterSetpoint>,
    pub reason: Reason,
    /// Why the fail-safe holds this cycle (the export is not measured); `None` while
    /// the meter's readings are good.
    pub fail_safe: Option<FailSafeCause>,
    /// The fail-safe export level (W), decided here and nowhere else: the configured
    /// fail-safe export limit, or the export limit in force if that is lower, never
    /// below zero. Held while `fail_safe`; always the inverters' revert level (SunSpec
    /// 704) so a csipd that stops leaves the site no looser than this.
    pub fail_safe_w: f64,
    /// Limits in force that this site cannot act on (import/load without storage).
    pub unsupported: Vec<LimitMode>,
    /// The utility's storage target and what the batteries were told, when a target
    /// is in force and the site has storage.
    pub storage: Option<StorageOutcome>,
}

/// What became of opModStorageTargetW this cycle.
#[derive(Debug, Clone, PartialEq)]
pub struct StorageOutcome {
    /// The utility's target, W (positive discharges).
    pub target: Limit,
    /// What the storage inverters were told together, W.
    pub commanded_w: f64,
    /// The limit that held the target back (export or generation for a discharge,
    /// import or load for a charge; export also while the meter is stale), `None` when
    /// only the batteries' ratings did, or nothing.
    pub held_by: Option<LimitMode>,
}

impl StorageOutcome {
    /// The target cannot be met this cycle (held back by more than 1 W).
    pub fn short(&self) -> bool {
        (self.target.value - self.commanded_w).abs() > 1.0
    }
}

impl Setpoints {
    /// One line for the status, e.g.
    /// "pv-east 906 W (18 %), pv-west 544 W (18 %) — export limit 1500 W (…)".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .inverters
            .iter()
            .map(|i| {
                let mut t = format!("{} {:.0} W ({:.0} %)", i.name, i.setpoint_w, i.setpoint_pct);
                if let Some(c) = i.charge_limit_w {
                    t.push_str(&format!(", charge ≤ {c:.0} W"));
                }
                if !i.answering {
                    t.push_str(", not answering");
                }
                t
            })
            .collect();
        if parts.is_empty() {
            parts.push("no inverters".into());
        }
        let mut line = format!("{} — {}", parts.join(", "), self.reason);
        for m in &self.unsupported {
            line.push_str(&format!(
                "; {} limit unsupported (no storage inverter)",
                m.as_str()
            ));
        }
        line
    }
}

/// The closed-loop site controller. Pure: `step` takes the time and the readings.
#[derive(Debug, Clone)]
pub struct Controller {
    params: ControllerParams,
    ramp: Ramp,
    last_setpoint_w: Vec<Option<f64>>,
    prev_export_limit_w: Option<f64>,
    prev_generation_limit_w: Option<f64>,
}

/// `a/(1 − a)` with `a = e^(−cycle/τ)`, the share of a gap a first-order inverter has
/// still to close after one cycle: the extra cut, per watt of excess, that makes it land
/// on the target at the end of the cycle. Capped at 2 (τ ≈ 2.5 cycles): a slower
/// inverter is better served by a few cycles than by a deep cut. 0 without a τ.
fn lead_factor(cycle_ms: i64, tau_ms: i64) -> f64 {
    if tau_ms <= 0 || cycle_ms <= 0 {
        return 0.0;
    }
    let a = (-(cycle_ms as f64) / tau_ms as f64).exp();
    (a / (1.0 - a)).min(2.0)
}

/// Headroom kept above a resource-limited inverter's output: max(2 % of rating, 50 W).
fn probe_w(rating_w: f64) -> f64 {
    (0.02 * rating_w).max(50.0)
}

impl Controller {
    pub fn new(params: ControllerParams) -> Self {
        let n = params.inverters.len();
        Controller {
            params,
            ramp: Ramp::new(),
            last_setpoint_w: vec![None; n],
            prev_export_limit_w: None,
            prev_generation_limit_w: None,
        }
    }

    pub fn params(&self) -> &ControllerParams {
        &self.params
    }

    /// One control cycle at `now_ms` with the merged limits and the latest readings.
    pub fn step(&mut self, now_ms: i64, limits: &MergedLimits, readings: &Readings) -> Setpoints {
        let p = &self.params;
        let n = p.inverters.len();
        let total_rating_w: f64 = p.inverters.iter().map(|i| i.rating_w).sum();
        let has_storage = p.inverters.iter().any(|i| i.max_charge_w.is_some());

        let mut unsupported = Vec::new();
        if !has_storage {
            if limits.import_limit_w.is_some() {
                unsupported.push(LimitMode::Import);
            }
            if limits.load_limit_w.is_some() {
                unsupported.push(LimitMode::Load);
            }
        }

        // Which inverters answer, and their outputs.
        let outputs: Vec<Option<f64>> = (0..n)
            .map(|i| {
                readings
                    .inverters
                    .get(i)
                    .copied()
                    .flatten()
                    .filter(|r| !r.is_stale(now_ms, p.inverter_timeout_ms) && r.w.is_finite())
                    .map(|r| r.w)
            })
            .collect();

        let export_limit_w = limits.export_limit_w.as_ref().map(|l| l.value);
        let generation_limit_w = limits.generation_limit_w.as_ref().map(|l| l.value);
        let fail_safe_w = fail_safe_level_w(p.fail_safe_export_limit_w, export_limit_w);

        // Step 1: connect / energize.
        let off = |s: &Option<super::limits::Sourced<bool>>| {
            s.as_ref().filter(|s| !s.value).map(|s| s.source.clone())
        };
        let disconnect = off(&limits.connect);
        let deenergize = off(&limits.energize);
        if disconnect.is_some() || deenergize.is_some() {
            let inverters = p
                .inverters
                .iter()
                .zip(&outputs)
                .map(|(inv, out)| InverterSetpoint {
                    name: inv.name.clone(),
                    setpoint_w: 0.0,
                    setpoint_pct: 0.0,
                    charge_limit_w: inv.max_charge_w.map(|_| 0.0),
                    storage_target_w: None,
                    connect: disconnect.is_none(),
                    energize: deenergize.is_none(),
                    answering: out.is_some(),
                })
                .collect();
            self.last_setpoint_w = vec![Some(0.0); n];
            self.ramp.apply(now_ms, 0.0, None);
            let reason = match (disconnect, deenergize) {
                (Some(source), _) => Reason::Disconnected { source },
                (None, Some(source)) => Reason::Deenergized { source },
                (None, None) => Reason::Uncurtailed, // not reached
            };
            return Setpoints {
                total_allowed_w: 0.0,
                inverters,
                reason,
                fail_safe: None,
                fail_safe_w,
                unsupported,
                storage: None,
            };
        }

        // rampTms: a control that raised a limit starts a linear transition.
        if let Some(tms) = limits.ramp_tms {
            let rise = |prev: Option<f64>, new: Option<f64>| {
                let a = prev.unwrap_or(total_rating_w).min(total_rating_w);
                let b = new.unwrap_or(total_rating_w).min(total_rating_w);
                (b > a).then_some((a, b))
            };
            let step = [
                rise(self.prev_export_limit_w, export_limit_w),
                rise(self.prev_generation_limit_w, generation_limit_w),
            ]
            .into_iter()
            .flatten()
            .max_by(|x, y| (x.1 - x.0).total_cmp(&(y.1 - y.0)));
            if let Some((from, to)) = step {
                self.ramp.start_transition(now_ms, from, to, tms);
            }
        }
        self.prev_export_limit_w = export_limit_w;
        self.prev_generation_limit_w = generation_limit_w;

        // opModStorageTargetW: the answering storage inverters follow it (within the
        // limits) and take no share of the generation allowed to the others.
        let target = limits.storage_target_w.as_ref().filter(|_| has_storage);
        let targeting: Vec<bool> = (0..n)
            .map(|i| {
                target.is_some() && p.inverters[i].max_charge_w.is_some() && outputs[i].is_some()
            })
            .collect();
        let alive: Vec<bool> = outputs.iter().map(|o| o.is_some()).collect();
        let alive_rating_w: f64 = p
            .inverters
            .iter()
            .zip(alive.iter().zip(&targeting))
            .filter(|(_, (a, t))| **a && !**t)
            .map(|(i, _)| i.rating_w)
            .sum();
        let dead_rating_w: f64 = p
            .inverters
            .iter()
            .zip(&alive)
            .filter(|(_, a)| !**a)
            .map(|(i, _)| i.rating_w)
            .sum();
        // Generation of the answering inverters (charging is not generation); the
        // targeted batteries' output is counted apart.
        let generation_w: f64 = (0..n)
            .filter(|&i| !targeting[i])
            .filter_map(|i| outputs[i])
            .map(|o| o.max(0.0))
            .sum();
        let battery_w: f64 = (0..n)
            .filter(|&i| targeting[i])
            .filter_map(|i| outputs[i])
            .sum();

        // Step 2: meter freshness.
        let meter = readings.meter.filter(|m| m.w.is_finite());
        let meter_age_ms = readings.meter.map(|m| now_ms - m.at_ms);
        let meter_fresh = meter.filter(|m| !m.is_stale(now_ms, p.meter_timeout_ms));

        // Charge limits (storage): load limit directly, import limit by feedback.
        let charging_w: f64 = (0..n)
            .filter(|&i| p.inverters[i].max_charge_w.is_some())
            .filter_map(|i| outputs[i])
            .map(|o| (-o).max(0.0))
            .sum();
        let max_charge_total_w: f64 = p.inverters.iter().filter_map(|i| i.max_charge_w).sum();
        let mut charge_total_w = max_charge_total_w;
        if let Some(l) = &limits.load_limit_w {
            charge_total_w = charge_total_w.min(l.value);
        }
        if let Some(l) = &limits.import_limit_w {
            charge_total_w = match meter_fresh {
                // Without a meter the import cannot be seen: no charging (safe side).
                None => 0.0,
                Some(m) => {
                    let error_w = (l.value - p.margin_w) - m.w;
                    let gain = if error_w < 0.0 { 1.0 } else { p.gain_up };
                    charge_total_w.min(charging_w + gain * error_w)
                }
            };
        }
        let charge_total_w = charge_total_w.max(0.0);

        // The storage target, held back by the limits (the tighter wins). A discharge
        // comes before the other inverters' generation under the export limit (the
        // utility asked for it; they are curtailed to make room) and under the
        // generation limit; a charge stays within the import and load limits (the
        // charge limit above). With the meter stale nothing is discharged.
        let mut storage = None;
        let mut storage_cmd_w = 0.0;
        if let Some(t) = target {
            let discharge_cap_w: f64 = (0..n)
                .filter(|&i| targeting[i])
                .map(|i| p.inverters[i].rating_w)
                .sum();
            let mut held_by = None;
            let cmd = if t.value >= 0.0 {
                let mut cmd = t.value.min(discharge_cap_w);
                let mut hold = |room: f64, mode: LimitMode, cmd: &mut f64| {
                    if room < *cmd {
                        *cmd = room.max(0.0);
                        held_by = Some(mode);
                    }
                };
                match (meter_fresh, &limits.export_limit_w) {
                    (None, _) => hold(0.0, LimitMode::Export, &mut cmd),
                    (Some(m), Some(l)) => {
                        let export_w = -m.w;
                        let room = battery_w + generation_w + (l.value - p.margin_w) - export_w;
                        hold(room, LimitMode::Export, &mut cmd);
                    }
                    (Some(_), None) => {}
                }
                if let Some(l) = &limits.generation_limit_w {
                    hold(l.value - dead_rating_w, LimitMode::Generation, &mut cmd);
                }
                cmd
            } else {
                let want_w = -t.value;
                let targeted_charge_w: f64 = (0..n)
                    .filter(|&i| targeting[i])
                    .filter_map(|i| p.inverters[i].max_charge_w)
                    .sum();
                let charge_w = want_w.min(targeted_charge_w).min(charge_total_w);
                if charge_w < want_w.min(targeted_charge_w) - 0.5 {
                    held_by = match (&limits.load_limit_w, &limits.import_limit_w) {
                        (Some(l), _) if l.value < want_w => Some(LimitMode::Load),
                        (_, Some(_)) => Some(LimitMode::Import),
                        (Some(_), None) => Some(LimitMode::Load),
                        (None, None) => None,
                    };
                }
                -charge_w
            };
            storage_cmd_w = cmd;
            storage = Some(StorageOutcome {
                target: t.clone(),
                commanded_w: cmd,
                held_by,
            });
        }
        // What the batteries are about to add to the export: the others make room.
        let storage_rise_w = (storage_cmd_w - battery_w).max(0.0);

        // Candidates for the total allowed generation of the answering inverters, each
        // with the reason it would give.
        let mut candidates: Vec<(f64, Reason)> = Vec::new();
        // The extra cut of step 3 when export is over its limit (W, ≥ 0).
        let mut export_lead_w = 0.0;
        let fail_safe;
        match meter_fresh {
            None => {
                let (cause, reason) = if readings.meter.is_none() && !p.site_meter {
                    (
                        FailSafeCause::NoMeter,
                        Reason::FailSafeNoMeter {
                            limit_w: fail_safe_w,
                        },
                    )
                } else if readings.meter.is_none() {
                    (
                        FailSafeCause::MeterNotRead,
                        Reason::FailSafeStartup {
                            limit_w: fail_safe_w,
                        },
                    )
                } else {
                    (
                        FailSafeCause::MeterStale,
                        Reason::FailSafeMeterStale {
                            limit_w: fail_safe_w,
                            age_ms: meter.and(meter_age_ms),
                        },
                    )
                };
                fail_safe = Some(cause);
                candidates.push((fail_safe_w - dead_rating_w - storage_cmd_w.max(0.0), reason));
            }
            Some(m) => {
                fail_safe = None;
                if let Some(l) = &limits.export_limit_w {
                    let export_w = -m.w;
                    let error_w = (l.value - p.margin_w) - export_w - storage_rise_w;
                    let gain = if error_w < 0.0 { 1.0 } else { p.gain_up };
                    if error_w < 0.0 {
                        export_lead_w = -error_w * lead_factor(p.cycle_ms, p.response_tau_ms);
                    }
                    candidates.push((
                        generation_w + gain * error_w,
                        Reason::Limited {
                            mode: LimitMode::Export,
                            limit: l.clone(),
                        },
                    ));
                }
            }
        }
        if let Some(l) = &limits.generation_limit_w {
            candidates.push((
                l.value - dead_rating_w - storage_cmd_w.max(0.0),
                Reason::Limited {
                    mode: LimitMode::Generation,
                    limit: l.clone(),
                },
            ));
        }
        let (target_w, target_reason) = candidates
            .into_iter()
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(w, r)| (w.clamp(0.0, alive_rating_w), r))
            .unwrap_or((alive_rating_w, Reason::Uncurtailed));

        // Step 5: ramp rises.
        let default_rate = set_grad_w_rate_w_per_s(limits.set_grad_w, total_rating_w);
        let in_transition = self.ramp.in_transition(now_ms);
        let total_allowed_w = self.ramp.apply(now_ms, target_w, default_rate);
        let ramping = total_allowed_w < target_w - 0.5;
        // Step 3's lead, for this cycle only, when the export limit is what binds.
        let export_binds = matches!(
            target_reason,
            Reason::Limited {
                mode: LimitMode::Export,
                ..
            }
        );
        let commanded_w = if export_binds && fail_safe.is_none() {
            (total_allowed_w - export_lead_w).max(0.0)
        } else {
            total_allowed_w
        };

        // Step 6: share across inverters.
        let mut caps = vec![0.0; n];
        let mut limited = vec![false; n];
        for i in 0..n {
            let inv = &p.inverters[i];
            if targeting[i] {
                continue;
            }
            if let Some(out) = outputs[i] {
                // Producing clearly less than last asked (half the probe margin, so an
                // inverter sitting at output + probe stays marked): resource-limited.
                limited[i] = self.last_setpoint_w[i]
                    .is_some_and(|asked| out.max(0.0) < asked - 0.5 * probe_w(inv.rating_w));
                caps[i] = if limited[i] {
                    out.max(0.0)
                } else {
                    inv.rating_w
                };
            }
        }
        let ratings: Vec<f64> = p
            .inverters
            .iter()
            .zip(alive.iter().zip(&targeting))
            .map(|(i, (a, t))| if *a && !*t { i.rating_w } else { 0.0 })
            .collect();
        let (alloc, leftover_w) = share_by_rating(commanded_w, &ratings, &caps);
        let limited_rating_w: f64 = (0..n).filter(|&i| limited[i]).map(|i| ratings[i]).sum();

        let fail_safe_share = |rating_w: f64| {
            if total_rating_w > 0.0 {
                (fail_safe_w * rating_w / total_rating_w).min(rating_w)
            } else {
                0.0
            }
        };
        let targeted_rating_w: f64 = (0..n)
            .filter(|&i| targeting[i])
            .map(|i| p.inverters[i].rating_w)
            .sum();
        let mut inverters = Vec::with_capacity(n);
        for i in 0..n {
            let inv = &p.inverters[i];
            if targeting[i] {
                // Its share of the target; the active power limit is the discharge
                // (a hybrid inverter's own PV then takes part of it, the AC output
                // stays the target).
                let share_w = if targeted_rating_w > 0.0 {
                    storage_cmd_w * inv.rating_w / targeted_rating_w
                } else {
                    0.0
                };
                let setpoint_w = share_w.clamp(0.0, inv.rating_w);
                self.last_setpoint_w[i] = Some(setpoint_w);
                inverters.push(InverterSetpoint {
                    name: inv.name.clone(),
                    setpoint_w,
                    setpoint_pct: if inv.rating_w > 0.0 {
                        100.0 * setpoint_w / inv.rating_w
                    } else {
                        0.0
                    },
                    charge_limit_w: None,
                    storage_target_w: Some(share_w),
                    connect: true,
                    energize: true,
                    answering: true,
                });
                continue;
            }
            let setpoint_w = if !alive[i] {
                // Not answering: if it comes back before we see it, it adds at most its
                // share of the fail-safe level.
                fail_safe_share(inv.rating_w)
            } else if limited[i] {
                let extra = if limited_rating_w > 0.0 {
                    leftover_w * inv.rating_w / limited_rating_w
                } else {
                    0.0
                };
                (alloc[i] + extra.max(probe_w(inv.rating_w))).min(inv.rating_w)
            } else {
                alloc[i]
            };
            self.last_setpoint_w[i] = Some(setpoint_w);
            let charge_limit_w = inv.max_charge_w.map(|max_w| {
                if max_charge_total_w > 0.0 {
                    charge_total_w * max_w / max_charge_total_w
                } else {
                    0.0
                }
            });
            inverters.push(InverterSetpoint {
                name: inv.name.clone(),
                setpoint_w,
                setpoint_pct: if inv.rating_w > 0.0 {
                    100.0 * setpoint_w / inv.rating_w
                } else {
                    0.0
                },
                charge_limit_w,
                storage_target_w: None,
                connect: true,
                energize: true,
                answering: alive[i],
            });
        }

        let available_w: f64 = caps.iter().sum();
        let reason = if alive_rating_w == 0.0 && fail_safe.is_none() {
            Reason::NoInverters
        } else if fail_safe.is_some() {
            target_reason
        } else if ramping {
            Reason::Ramping {
                rate_w_per_s: if in_transition { None } else { default_rate },
            }
        } else if total_allowed_w < available_w - 1.0 {
            target_reason
        } else {
            Reason::Uncurtailed
        };
        Setpoints {
            total_allowed_w,
            inverters,
            reason,
            fail_safe,
            fail_safe_w,
            unsupported,
            storage,
        }
    }
}

/// The fail-safe export level: the configured fail-safe export limit, or the export
/// limit in force when that is lower; never negative.
fn fail_safe_level_w(configured_w: f64, export_limit_w: Option<f64>) -> f64 {
    configured_w
        .min(export_limit_w.unwrap_or(f64::INFINITY))
        .max(0.0)
}

/// Shares `total_w` in proportion to `ratings_w`, no inverter above its cap; what a capped
/// inverter cannot take goes to the others. Returns the allocation and what is left over
/// when every inverter is at its cap.
pub fn share_by_rating(total_w: f64, ratings_w: &[f64], caps_w: &[f64]) -> (Vec<f64>, f64) {
    let n = ratings_w.len();
    let mut alloc = vec![0.0; n];
    let mut open: Vec<usize> = (0..n).filter(|&i| ratings_w[i] > 0.0).collect();
    let mut remaining = total_w.max(0.0);
    // Each pass fixes at least one inverter at its cap, so n passes suffice.
    for _ in 0..=n {
        let open_rating: f64 = open.iter().map(|&i| ratings_w[i]).sum();
        if open.is_empty() || open_rating <= 0.0 {
            break;
        }
        let capped: Vec<usize> = open
            .iter()
            .copied()
            .filter(|&i| remaining * ratings_w[i] / open_rating >= caps_w[i])
            .collect();
        if capped.is_empty() {
            for &i in &open {
                alloc[i] = remaining * ratings_w[i] / open_rating;
            }
            remaining = 0.0;
            break;
        }
        for &i in &capped {
            alloc[i] = caps_w[i].max(0.0);
            remaining -= alloc[i];
        }
        open.retain(|i| !capped.contains(i));
    }
    (alloc, remaining.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::limits::Sourced;

    fn two_inverters() -> ControllerParams {
        ControllerParams::new(
            vec![
                InverterParams {
                    name: "a".into(),
                    rating_w: 5000.0,
                    max_charge_w: None,
                },
                InverterParams {
                    name: "b".into(),
                    rating_w: 3000.0,
                    max_charge_w: None,
                },
            ],
            1500.0,
        )
    }

    fn export_limit(w: f64) -> MergedLimits {
        MergedLimits {
            export_limit_w: Some(Limit::new(
                w,
                LimitSource::Fixed {
                    option: "export_limit_w".into(),
                },
                None,
            )),
            ..Default::default()
        }
    }

    fn readings(now: i64, site_w: f64, outs: &[Option<f64>]) -> Readings {
        Readings {
            meter: Some(PowerSample {
                w: site_w,
                at_ms: now,
            }),
            inverters: outs
                .iter()
                .map(|o| o.map(|w| PowerSample { w, at_ms: now }))
                .collect(),
        }
    }

    #[test]
    fn share_by_rating_caps_and_redistributes() {
        let (a, left) = share_by_rating(4000.0, &[5000.0, 3000.0], &[5000.0, 3000.0]);
        assert_eq!(a, vec![2500.0, 1500.0]);
        assert_eq!(left, 0.0);
        let (a, left) = share_by_rating(4000.0, &[5000.0, 3000.0], &[500.0, 3000.0]);
        assert_eq!(a, vec![500.0, 3000.0]);
        assert_eq!(left, 500.0);
        let (a, _) = share_by_rating(3000.0, &[5000.0, 3000.0, 2000.0], &[5000.0, 200.0, 2000.0]);
        assert_eq!(a[1], 200.0);
        assert!((a[0] - 2800.0 * 5.0 / 7.0).abs() < 1e-9);
        let (a, left) = share_by_rating(-5.0, &[5000.0], &[5000.0]);
        assert_eq!((a[0], left), (0.0, 0.0));
    }

    #[test]
    fn start_up_holds_the_fail_safe() {
        let mut c = Controller::new(two_inverters());
        let s = c.step(0, &export_limit(5000.0), &Readings::default());
        assert_eq!(s.fail_safe, Some(FailSafeCause::MeterNotRead));
        assert!(matches!(s.reason, Reason::FailSafeStartup { limit_w } if limit_w == 1500.0));
        let total: f64 = s.inverters.iter().map(|i| i.setpoint_w).sum();
        assert!(total <= 1500.0 + 1e-9, "{total}");
        assert!(s.inverters.iter().all(|i| !i.answering));
    }

    #[test]
    fn export_over_the_limit_cuts_at_once_and_shares_by_rating() {
        let mut c = Controller::new(two_inverters());
        // Exporting 4000 W with a 1500 W limit; inverters at 2500 + 1500 W.
        let s = c.step(
            0,
            &export_limit(1500.0),
            &readings(0, -4000.0, &[Some(2500.0), Some(1500.0)]),
        );
        // Allowed = 4000 − (4000 − 1450) = 1450 W, 5:3.
        assert!((s.total_allowed_w - 1450.0).abs() < 1e-9);
        assert!((s.inverters[0].setpoint_w - 1450.0 * 5.0 / 8.0).abs() < 1e-9);
        assert!((s.inverters[0].setpoint_pct - 100.0 * 906.25 / 5000.0).abs() < 1e-9);
        assert!(matches!(
            s.reason,
            Reason::Limited {
                mode: LimitMode::Export,
                ..
            }
        ));
        assert_eq!(
            s.reason.to_string(),
            "export limit 1500 W (fixed limit (export_limit_w))"
        );
        assert_eq!(
            s.describe(),
            "a 906 W (18 %), b 544 W (18 %) — export limit 1500 W (fixed limit (export_limit_w))"
        );
    }

    #[test]
    fn a_silent_inverter_is_compensated_by_the_others() {
        let mut c = Controller::new(two_inverters());
        let limits = MergedLimits {
            generation_limit_w: Some(Limit::new(
                6000.0,
                LimitSource::UtilityEvent { mrid: "AB".into() },
                None,
            )),
            ..export_limit(1000.0)
        };
        // b stopped answering; the meter still shows its effect: export 2000 W.
        let s = c.step(0, &limits, &readings(0, -2000.0, &[Some(2500.0), None]));
        assert!(!s.inverters[1].answering);
        // a alone must absorb the excess: 2500 − (2000 − 950) = 1450 W.
        assert!((s.inverters[0].setpoint_w - 1450.0).abs() < 1e-9);
        // b's rating counts against the generation limit: a may have at most 3000 W.
        let s = c.step(
            1000,
            &limits,
            &readings(1000, -10_000.0 + 9000.0, &[Some(1450.0), None]),
        );
        assert!(s.inverters[0].setpoint_w <= 3000.0 + 1e-9);
    }

    #[test]
    fn connect_and_energize_off_zero_everything() {
        let mut c = Controller::new(two_inverters());
        let src = LimitSource::UtilityEvent { mrid: "CC".into() };
        let limits = MergedLimits {
            connect: Some(Sourced::new(false, src.clone(), None)),
            ..export_limit(5000.0)
        };
        let s = c.step(
            0,
            &limits,
            &readings(0, -100.0, &[Some(2000.0), Some(900.0)]),
        );
        assert!(
            s.inverters
                .iter()
                .all(|i| i.setpoint_w == 0.0 && !i.connect)
        );
        assert_eq!(
            s.reason,
            Reason::Disconnected {
                source: src.clone()
            }
        );
        let limits = MergedLimits {
            energize: Some(Sourced::new(false, src.clone(), None)),
            ..export_limit(5000.0)
        };
        let s = c.step(
            1000,
            &limits,
            &readings(1000, -100.0, &[Some(2000.0), Some(900.0)]),
        );
        assert!(
            s.inverters
                .iter()
                .all(|i| i.setpoint_w == 0.0 && i.connect && !i.energize)
        );
        assert!(s.reason.to_string().starts_with("de-energized"));
    }

    #[test]
    fn import_and_load_limits_without_storage_are_unsupported() {
        let mut c = Controller::new(two_inverters());
        let limits = MergedLimits {
            import_limit_w: Some(Limit::new(
                2000.0,
                LimitSource::UtilityEvent { mrid: "1".into() },
                None,
            )),
            load_limit_w: Some(Limit::new(
                2000.0,
                LimitSource::UtilityEvent { mrid: "1".into() },
                None,
            )),
            ..Default::default()
        };
        let s = c.step(0, &limits, &readings(0, 3000.0, &[Some(0.0), Some(0.0)]));
        assert_eq!(s.unsupported, vec![LimitMode::Import, LimitMode::Load]);
        assert!(
            s.describe()
                .ends_with("; load limit unsupported (no storage inverter)")
        );
    }

    #[test]
    fn load_limit_caps_the_storage_charge_limit() {
        let mut p = two_inverters();
        p.inverters[1].max_charge_w = Some(3000.0);
        let mut c = Controller::new(p);
        let limits = MergedLimits {
            load_limit_w: Some(Limit::new(
                1200.0,
                LimitSource::UtilityEvent { mrid: "1".into() },
                None,
            )),
            ..Default::default()
        };
        let s = c.step(
            0,
            &limits,
            &readings(0, 500.0, &[Some(1000.0), Some(-2500.0)]),
        );
        assert!(s.unsupported.is_empty());
        assert_eq!(s.inverters[1].charge_limit_w, Some(1200.0));
        assert_eq!(s.inverters[0].charge_limit_w, None);
    }

    fn target(w: f64) -> Option<Limit> {
        Some(Limit::new(
            w,
            LimitSource::UtilityEvent { mrid: "T".into() },
            None,
        ))
    }

    #[test]
    fn storage_target_is_followed_within_the_export_limit() {
        // a: 5 kW PV; b: a 3 kW battery inverter (3 kW charge).
        let mut p = two_inverters();
        p.inverters[1].max_charge_w = Some(3000.0);
        let mut c = Controller::new(p);
        // Discharge 2 kW, export limit 10 kW: met; PV untouched; the battery's active
        // power limit is the discharge, its charge limit left to the target.
        let mut limits = export_limit(10_000.0);
        limits.storage_target_w = target(2000.0);
        // 1 kW PV, battery idle, load 1.5 kW: importing 500 W.
        let s = c.step(0, &limits, &readings(0, 500.0, &[Some(1000.0), Some(0.0)]));
        let st = s.storage.clone().expect("storage outcome");
        assert_eq!(
            (st.commanded_w, st.held_by, st.short()),
            (2000.0, None, false)
        );
        assert_eq!(s.inverters[1].storage_target_w, Some(2000.0));
        assert_eq!(s.inverters[1].setpoint_w, 2000.0);
        assert_eq!(s.inverters[1].charge_limit_w, None);
        assert_eq!(s.inverters[0].storage_target_w, None);
        // Export limit 0 (the tighter wins): the battery may cover the load only
        // (1.5 kW less the margin) and the PV makes room.
        let mut limits = export_limit(0.0);
        limits.storage_target_w = target(3000.0);
        let s = c.step(
            1000,
            &limits,
            &readings(1000, 500.0, &[Some(1000.0), Some(0.0)]),
        );
        let st = s.storage.clone().unwrap();
        assert_eq!(st.held_by, Some(LimitMode::Export));
        assert!(st.short());
        assert!((st.commanded_w - 1450.0).abs() < 1e-6, "{st:?}");
        // The PV makes room: nothing allowed beyond its probe margin.
        assert!(s.total_allowed_w < 1.0, "{s:?}");
        assert!(s.inverters[0].setpoint_w <= 100.0, "{s:?}");
        // The meter goes stale: nothing is discharged.
        let stale = Readings {
            meter: Some(PowerSample { w: 500.0, at_ms: 0 }),
            ..readings(60_000, 0.0, &[Some(1000.0), Some(1000.0)])
        };
        let s = c.step(60_000, &limits, &stale);
        assert_eq!(s.storage.unwrap().commanded_w, 0.0);
    }

    #[test]
    fn storage_charge_target_stays_within_the_import_limit() {
        let mut p = two_inverters();
        p.inverters[1].max_charge_w = Some(3000.0);
        let mut c = Controller::new(p);
        let mut limits = MergedLimits {
            import_limit_w: Some(Limit::new(
                1000.0,
                LimitSource::UtilityDefault {
                    program: "P".into(),
                },
                None,
            )),
            ..Default::default()
        };
        limits.storage_target_w = target(-3000.0);
        // Importing 900 W while charging 500 W: room for 50 W more (margin 50 W).
        let s = c.step(0, &limits, &readings(0, 900.0, &[Some(0.0), Some(-500.0)]));
        let st = s.storage.unwrap();
        assert_eq!(st.held_by, Some(LimitMode::Import));
        assert!((st.commanded_w + 535.0).abs() < 1.0, "{st:?}");
        assert_eq!(s.inverters[1].setpoint_w, 0.0);
        // No limit: the full charge, capped by the battery's rate.
        let free = MergedLimits {
            storage_target_w: target(-5000.0),
            ..Default::default()
        };
        let s = c.step(
            1000,
            &free,
            &readings(1000, 900.0, &[Some(0.0), Some(-500.0)]),
        );
        let st = s.storage.unwrap();
        assert_eq!((st.commanded_w, st.held_by), (-3000.0, None));
        assert!(st.short());
    }

    #[test]
    fn a_storage_target_without_storage_is_ignored() {
        let mut c = Controller::new(two_inverters());
        let mut limits = export_limit(1000.0);
        limits.storage_target_w = target(2000.0);
        let s = c.step(0, &limits, &readings(0, 0.0, &[Some(500.0), Some(500.0)]));
        assert!(s.storage.is_none());
        assert!(s.inverters.iter().all(|i| i.storage_target_w.is_none()));
    }
}
