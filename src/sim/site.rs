//! Simulated site physics (PV, load, inverter lag, grid voltage and frequency, and the
//! inverters' curves and settings): a pure model stepped with time as an argument. Used
//! by the control closed-loop tests and by `csipd demo`.
//!
//! Sign convention as at a real site meter: `meter_site_w() = load − Σ inverter output`,
//! import positive, export negative. A battery's output is negative while it charges.
//! Reactive power: an inverter's `var_output` is positive while it injects vars (the
//! SunSpec convention); the load draws none.
//!
//! The voltage at the connection point ([`Grid`]) is the network's (nominal with an
//! optional slow wave) plus the rise the site itself causes through the line's
//! impedance: up with active power exported and with vars injected. An inverter with
//! an enabled volt-var curve moves its reactive power toward the curve's value at that
//! voltage, with the same lag as its active power (without one, toward a fixed var or
//! fixed power factor setting); a volt-watt curve caps its active power. (Simplifications: no apparent power limit between W and VAr, one voltage for
//! all phases, `%VArAval` taken as `%VArMax`.)
//!
//! Reactive power runs one mode at a time, the first in force of: volt-var, watt-var
//! (vars from the inverter's own active power, % of WMax), watt-PF, a var target (var),
//! a fixed var (% of VArMax), a fixed power factor (one while the device injects
//! active power, another while it absorbs it: SunSpec 704 `PFWInj`, `PFWAbs`). A real inverter refuses to run two; the order is the
//! simulator's choice.
//!
//! The grid frequency ([`Grid::frequency_hz`]) wanders a few tens of mHz around
//! nominal and, on the demo grid, rises in an occasional over-frequency event. With a
//! frequency droop in force (SunSpec 711, IEEE 1547-2018 5.5.2) an inverter's active
//! power drops by `(f − (f_nom + DbOf)) / (f_nom · KOf)` of its rating above the
//! over-frequency dead band (never below 0 for PV; a battery charges harder, within its
//! charge limit and rating) and rises by the mirror amount below the under-frequency
//! band, within what the device may and can produce. The change follows with the
//! inverter's own lag (`tau_s`; the control's `RspTms` is not modelled separately).

use crate::devices::curves::Curve;
use crate::devices::freq_droop::FreqDroopState;
use crate::devices::reactive::{Excitation, FixedPf};

/// The grid at the connection point: what the rest of the network imposes and how the
/// site's own flows move it.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Nominal voltage (V): the reference of the curves' voltages (SunSpec VRef/VNom).
    pub nominal_v: f64,
    /// The network's voltage swings `± wave_amplitude_v` around nominal with this
    /// period (a sine; 0 = steady).
    pub wave_amplitude_v: f64,
    pub wave_period_s: f64,
    /// Voltage rise (V) per kW exported at the connection point (the line's resistance).
    pub v_per_kw_export: f64,
    /// Voltage rise (V) per kvar the inverters inject (the line's reactance).
    pub v_per_kvar: f64,
    /// Nominal frequency (Hz).
    pub nominal_hz: f64,
    /// Amplitude (Hz) of the frequency's slow wander around nominal (0 = steady): two
    /// incommensurate sines of 97 s and 331 s, so it never repeats within a demo.
    pub hz_wander: f64,
    /// An over- or under-frequency event that repeats, if any.
    pub excursion: Option<FreqExcursion>,
}

/// A frequency event on the network: every `every_s` seconds (from `first_s`) the
/// frequency moves by `delta_hz` over `ramp_s`, holds for `hold_s`, and ramps back, as
/// after a large load loss (over-frequency) or a generator trip (under-frequency).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FreqExcursion {
    pub first_s: f64,
    pub every_s: f64,
    pub ramp_s: f64,
    pub hold_s: f64,
    /// Hz; positive for an over-frequency event.
    pub delta_hz: f64,
}

impl FreqExcursion {
    /// The event's offset from nominal (Hz) at `t_s`.
    pub fn offset_hz(&self, t_s: f64) -> f64 {
        if t_s < self.first_s || self.every_s <= 0.0 {
            return 0.0;
        }
        let x = (t_s - self.first_s).rem_euclid(self.every_s);
        let ramp = self.ramp_s.max(1e-9);
        let share = if x < ramp {
            x / ramp
        } else if x < ramp + self.hold_s {
            1.0
        } else if x < 2.0 * ramp + self.hold_s {
            1.0 - (x - ramp - self.hold_s) / ramp
        } else {
            0.0
        };
        share * self.delta_hz
    }
}

impl Grid {
    /// 230 V, steady, an infinitely stiff network (the site moves nothing).
    pub fn stiff() -> Grid {
        Grid {
            nominal_v: 230.0,
            wave_amplitude_v: 0.0,
            wave_period_s: 0.0,
            v_per_kw_export: 0.0,
            v_per_kvar: 0.0,
            nominal_hz: 50.0,
            hz_wander: 0.0,
            excursion: None,
        }
    }

    /// The demo's grid: 230 V swinging ±15 V over 5 minutes, on a long suburban line
    /// (1.5 V per kW exported, 1 V per kvar), so that a volt-var curve has something
    /// to do within a few minutes and its vars visibly pull the voltage back. Its
    /// frequency wanders ±30 mHz around 50 Hz and every 5 minutes, from 60 s, rises to
    /// 50.4 Hz (over 4 s, held 40 s, 4 s back): beyond the usual 0.15 Hz dead band, so
    /// a frequency droop visibly cuts the inverters' output.
    pub fn demo() -> Grid {
        Grid {
            nominal_v: 230.0,
            wave_amplitude_v: 15.0,
            wave_period_s: 300.0,
            v_per_kw_export: 1.5,
            v_per_kvar: 1.0,
            nominal_hz: 50.0,
            hz_wander: 0.03,
            excursion: Some(FreqExcursion {
                first_s: 60.0,
                every_s: 300.0,
                ramp_s: 4.0,
                hold_s: 40.0,
                delta_hz: 0.4,
            }),
        }
    }

    /// The network's frequency at `t_s` (Hz): nominal, the wander, and any event. The
    /// site itself does not move it (the network is large next to one site).
    pub fn frequency_hz(&self, t_s: f64) -> f64 {
        use std::f64::consts::TAU;
        let wander = self.hz_wander
            * (0.6 * (TAU * t_s / 97.0).sin() + 0.4 * (TAU * t_s / 331.0 + 1.0).sin());
        self.nominal_hz + wander + self.excursion.map_or(0.0, |e| e.offset_hz(t_s))
    }

    /// The network's own voltage at `t_s` (without the site's rise).
    pub fn network_v(&self, t_s: f64) -> f64 {
        if self.wave_period_s <= 0.0 {
            return self.nominal_v;
        }
        self.nominal_v
            + self.wave_amplitude_v * (2.0 * std::f64::consts::PI * t_s / self.wave_period_s).sin()
    }
}

/// What a PV inverter could produce (W) as a function of time.
#[derive(Debug, Clone, PartialEq)]
pub enum PvProfile {
    Constant {
        available_w: f64,
    },
    /// A clear-sky day: a half-sine from sunrise to sunset (seconds after local midnight,
    /// the simulation time taken modulo one day) peaking at `peak_w`.
    DayCurve {
        peak_w: f64,
        sunrise_s: f64,
        sunset_s: f64,
    },
}

impl PvProfile {
    pub fn available_w(&self, t_s: f64) -> f64 {
        match *self {
            PvProfile::Constant { available_w } => available_w.max(0.0),
            PvProfile::DayCurve {
                peak_w,
                sunrise_s,
                sunset_s,
            } => {
                let tod = t_s.rem_euclid(86_400.0);
                if sunset_s <= sunrise_s || tod <= sunrise_s || tod >= sunset_s {
                    0.0
                } else {
                    let x = (tod - sunrise_s) / (sunset_s - sunrise_s);
                    peak_w * (std::f64::consts::PI * x).sin()
                }
            }
        }
    }
}

/// What kind of device an inverter is.
#[derive(Debug, Clone, PartialEq)]
pub enum SimInverterKind {
    Pv(PvProfile),
    /// A battery in self-consumption mode that charges at `charge_demand_w` unless a
    /// charge limit is set; it does not discharge in this model.
    Battery {
        charge_demand_w: f64,
    },
}

/// One simulated inverter with a first-order response to its setpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct SimInverter {
    pub kind: SimInverterKind,
    /// setMaxW.
    pub rating_w: f64,
    /// Time constant of the response to a new setpoint (s).
    pub tau_s: f64,
    /// Active power limit (W) last written; starts at the rating (uncurtailed).
    pub setpoint_w: f64,
    /// Charge limit (W) last written, for a battery.
    pub charge_limit_w: Option<f64>,
    /// Present output (W); negative while charging.
    pub output_w: f64,
    /// false = disconnected (output falls to zero).
    pub connected: bool,
    /// VArMax (var): what a volt-var curve's `%VArMax` is a percentage of.
    pub var_max_var: f64,
    /// Present reactive power (var), positive while injecting.
    pub var_output: f64,
    /// The volt-var curve in force (SunSpec 126 with ModEna set), if any.
    pub volt_var: Option<Curve>,
    /// The volt-watt curve in force (SunSpec 132 with ModEna set), if any.
    pub volt_watt: Option<Curve>,
    /// The fixed power factor in force while the device injects active power (SunSpec
    /// 704 PFWInj with PFWInjEna, 123 OutPFSet with OutPFSet_Ena), if any.
    pub fixed_pf: Option<FixedPf>,
    /// A fixed reactive power in force, % of VArMax (SunSpec 123 VArMaxPct, 704
    /// VarSetPct), if any.
    pub fixed_var_pct: Option<f64>,
    /// The fixed power factor in force while the device absorbs active power (a
    /// battery charging: 704 PFWAbs with PFWAbsEna, 123 OutPFSet, which holds either
    /// way), if any.
    pub fixed_pf_absorb: Option<FixedPf>,
    /// A reactive power target in var (704 VarSet with VarSetMod VARS), if any.
    pub target_var: Option<f64>,
    /// The watt-var curve in force (712): x % of WMax (signed), y % of its DeptRef.
    pub watt_var: Option<Curve>,
    /// The watt-PF curve in force (131): x % of WMax, y cos φ in % (negative absorbing).
    pub watt_pf: Option<Curve>,
    /// The frequency droop in force (711 control 1 with `Ena`), if any.
    pub freq_droop: Option<FreqDroopState>,
}

impl SimInverter {
    pub fn pv(rating_w: f64, profile: PvProfile, tau_s: f64) -> Self {
        SimInverter {
            kind: SimInverterKind::Pv(profile),
            rating_w,
            tau_s,
            setpoint_w: rating_w,
            charge_limit_w: None,
            output_w: 0.0,
            connected: true,
            var_max_var: VAR_MAX_SHARE * rating_w,
            var_output: 0.0,
            volt_var: None,
            volt_watt: None,
            fixed_pf: None,
            fixed_var_pct: None,
            fixed_pf_absorb: None,
            target_var: None,
            watt_var: None,
            watt_pf: None,
            freq_droop: None,
        }
    }

    pub fn battery(rating_w: f64, charge_demand_w: f64, tau_s: f64) -> Self {
        SimInverter {
            kind: SimInverterKind::Battery { charge_demand_w },
            rating_w,
            tau_s,
            setpoint_w: rating_w,
            charge_limit_w: None,
            output_w: 0.0,
            connected: true,
            var_max_var: VAR_MAX_SHARE * rating_w,
            var_output: 0.0,
            volt_var: None,
            volt_watt: None,
            fixed_pf: None,
            fixed_var_pct: None,
            fixed_pf_absorb: None,
            target_var: None,
            watt_var: None,
            watt_pf: None,
            freq_droop: None,
        }
    }

    /// What the device would settle at now, given its resource, its limits, (with a
    /// volt-watt curve) the voltage, `v_pct` % of nominal, and (with a frequency droop)
    /// the frequency `hz` against the nominal `nominal_hz`.
    pub fn target_w(&self, t_s: f64, v_pct: f64, hz: f64, nominal_hz: f64) -> f64 {
        if !self.connected {
            return 0.0;
        }
        let droop_pu = self.droop_pu(hz, nominal_hz);
        match &self.kind {
            SimInverterKind::Pv(p) => {
                let available = p.available_w(t_s);
                // Volt-watt: DeptRef 2 is % of the power available, else % of WMax.
                let curve_cap = self.volt_watt.as_ref().and_then(|c| {
                    let base = if c.dept_ref == 2 {
                        available
                    } else {
                        self.rating_w
                    };
                    Some(c.y_pct_at(v_pct)?.max(0.0) / 100.0 * base)
                });
                let settled = available
                    .min(self.setpoint_w.max(0.0))
                    .min(self.rating_w)
                    .min(curve_cap.unwrap_or(f64::INFINITY));
                // Droop: down to 0 above the band; below it PV already gives all it
                // may (the sun, the limit and the volt-watt cap bound it).
                (settled + droop_pu * self.rating_w).clamp(0.0, settled)
            }
            SimInverterKind::Battery { charge_demand_w } => {
                let limit = self.charge_limit_w.unwrap_or(f64::INFINITY).max(0.0);
                let max_charge = limit.min(self.rating_w);
                // Over-frequency: charges harder (within its charge limit); under: less.
                (-(charge_demand_w.min(max_charge)) + droop_pu * self.rating_w)
                    .clamp(-max_charge, 0.0)
            }
        }
    }

    /// The active power change a frequency droop asks for at `hz`, per unit of the
    /// rating: negative above `nominal_hz + DbOf` (by `Δf / (f_nom · KOf)`), positive
    /// below `nominal_hz − DbUf`, 0 within the dead band or without a droop in force.
    pub fn droop_pu(&self, hz: f64, nominal_hz: f64) -> f64 {
        let Some(d) = self.freq_droop.as_ref().filter(|d| d.enabled) else {
            return 0.0;
        };
        let (Some(db_of), Some(db_uf), Some(k_of), Some(k_uf)) =
            (d.db_of_hz, d.db_uf_hz, d.k_of, d.k_uf)
        else {
            return 0.0;
        };
        if nominal_hz <= 0.0 {
            return 0.0;
        }
        let over = hz - (nominal_hz + db_of);
        let under = (nominal_hz - db_uf) - hz;
        if over > 0.0 && k_of > 0.0 {
            -over / (nominal_hz * k_of)
        } else if under > 0.0 && k_uf > 0.0 {
            under / (nominal_hz * k_uf)
        } else {
            0.0
        }
    }
}

impl SimInverter {
    /// The reactive power it would settle at, at `v_pct` % of nominal with `w` the
    /// active power, while connected (else 0), clamped to ± VArMax. The first mode in
    /// force (see the module doc): volt-var (DeptRef 1 % of WMax, else % of VArMax);
    /// watt-var at `w` in % of WMax (same DeptRef); watt-PF at `w` (|w|·tan φ, the sign
    /// of the curve's PF); a var target; a fixed var (% of VArMax); a fixed power
    /// factor (|w|·tan φ, positive over-excited; `fixed_pf_absorb` while `w` < 0).
    pub fn target_var(&self, v_pct: f64, w: f64) -> f64 {
        if !self.connected {
            return 0.0;
        }
        let pct_base = |dept_ref: u16| {
            if dept_ref == 1 {
                self.rating_w
            } else {
                self.var_max_var
            }
        };
        let w_pct = if self.rating_w > 0.0 {
            100.0 * w / self.rating_w
        } else {
            0.0
        };
        let pf_var = |pf: &FixedPf| {
            let q = w.abs() * pf.pf.clamp(0.01, 1.0).acos().tan();
            match pf.excitation {
                Excitation::OverExcited => q,
                Excitation::UnderExcited => -q,
            }
        };
        let var = if let Some(c) = &self.volt_var {
            c.y_pct_at(v_pct).unwrap_or(0.0) / 100.0 * pct_base(c.dept_ref)
        } else if let Some(c) = &self.watt_var {
            c.y_pct_at(w_pct).unwrap_or(0.0) / 100.0 * pct_base(c.dept_ref)
        } else if let Some(pf) = self.watt_pf.as_ref().and_then(|c| watt_pf_at(c, w_pct)) {
            pf_var(&pf)
        } else if let Some(var) = self.target_var {
            var
        } else if let Some(pct) = self.fixed_var_pct {
            pct / 100.0 * self.var_max_var
        } else if let Some(pf) = if w < 0.0 {
            self.fixed_pf_absorb
        } else {
            self.fixed_pf
        } {
            pf_var(&pf)
        } else {
            0.0
        };
        var.clamp(-self.var_max_var, self.var_max_var)
    }
}

/// The power factor a watt-PF curve (SunSpec 131: signed cos φ in %, negative
/// absorbing vars) asks for at `w_pct` % of WMax. Between a point that injects and one
/// that absorbs, the curve passes through unity: it is interpolated in the signed
/// distance from unity (`±(1 − |cos φ|)`), not in the signed cos φ, which would pass
/// through 0. `None` for a curve without points.
pub fn watt_pf_at(curve: &Curve, w_pct: f64) -> Option<FixedPf> {
    let from_unity = Curve {
        points: curve
            .points
            .iter()
            .map(|p| crate::devices::curves::CurvePoint {
                v_pct: p.v_pct,
                y_pct: (100.0 - p.y_pct.abs()).max(0.0) * p.y_pct.signum(),
            })
            .collect(),
        ..curve.clone()
    };
    let d = from_unity.y_pct_at(w_pct)?;
    Some(FixedPf {
        pf: (100.0 - d.abs()) / 100.0,
        excitation: if d < 0.0 {
            Excitation::UnderExcited
        } else {
            Excitation::OverExcited
        },
    })
}

/// VArMax as a share of the rating: AS/NZS 4777.2:2020 asks for reactive power of at
/// least 60 % of the rated apparent power.
pub const VAR_MAX_SHARE: f64 = 0.6;

/// A load that steps to `load_w` at `at_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadStep {
    pub at_s: f64,
    pub load_w: f64,
}

/// The whole site.
#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    /// Simulation time (s).
    pub t_s: f64,
    /// Load before the first step.
    pub base_load_w: f64,
    /// Load steps, in time order.
    pub load_steps: Vec<LoadStep>,
    /// If set, the load profile repeats with this period (s).
    pub load_period_s: Option<f64>,
    pub inverters: Vec<SimInverter>,
    /// The voltage at the connection point.
    pub grid: Grid,
}

impl Site {
    pub fn new(base_load_w: f64, inverters: Vec<SimInverter>) -> Self {
        Site {
            t_s: 0.0,
            base_load_w,
            load_steps: Vec::new(),
            load_period_s: None,
            inverters,
            grid: Grid::stiff(),
        }
    }

    /// Adds a load step (kept in time order).
    pub fn add_load_step(&mut self, at_s: f64, load_w: f64) {
        self.load_steps.push(LoadStep { at_s, load_w });
        self.load_steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    }

    pub fn load_w(&self) -> f64 {
        let t = match self.load_period_s {
            Some(p) if p > 0.0 => self.t_s.rem_euclid(p),
            _ => self.t_s,
        };
        self.load_steps
            .iter()
            .rev()
            .find(|s| s.at_s <= t)
            .map_or(self.base_load_w, |s| s.load_w)
    }

    /// The site meter: import positive.
    pub fn meter_site_w(&self) -> f64 {
        self.load_w() - self.inverters.iter().map(|i| i.output_w).sum::<f64>()
    }

    /// Export (W, positive when exporting).
    pub fn export_w(&self) -> f64 {
        -self.meter_site_w()
    }

    /// Reactive power at the site meter (var, import positive: the load draws none, so
    /// it is what the inverters absorb).
    pub fn meter_site_var(&self) -> f64 {
        -self.inverters.iter().map(|i| i.var_output).sum::<f64>()
    }

    /// The voltage at the connection point now (V): the network's plus the rise from
    /// the site's export and injected vars.
    pub fn voltage_v(&self) -> f64 {
        self.grid.network_v(self.t_s) + self.grid.v_per_kw_export * self.export_w() / 1000.0
            - self.grid.v_per_kvar * self.meter_site_var() / 1000.0
    }

    /// The grid frequency now (Hz).
    pub fn frequency_hz(&self) -> f64 {
        self.grid.frequency_hz(self.t_s)
    }

    /// [`Site::voltage_v`] in % of nominal, as the curves take it.
    pub fn voltage_pct(&self) -> f64 {
        100.0 * self.voltage_v() / self.grid.nominal_v
    }

    /// Advances the physics by `dt_s`: each inverter moves toward its targets (active
    /// power, and reactive power in its reactive power mode, at the voltage and
    /// frequency it measured at the start of the step) with its lag.
    pub fn step(&mut self, dt_s: f64) {
        let v_pct = self.voltage_pct();
        let (hz, nominal_hz) = (self.frequency_hz(), self.grid.nominal_hz);
        self.t_s += dt_s;
        let t = self.t_s;
        for inv in &mut self.inverters {
            let target = inv.target_w(t, v_pct, hz, nominal_hz);
            let target_var = inv.target_var(v_pct, target);
            let alpha = if inv.tau_s > 0.0 {
                1.0 - (-dt_s / inv.tau_s).exp()
            } else {
                1.0
            };
            inv.output_w += (target - inv.output_w) * alpha;
            inv.var_output += (target_var - inv.var_output) * alpha;
        }
    }

    /// Starts every inverter at its steady state (as if running for a while).
    pub fn settle(&mut self) {
        let t = self.t_s;
        let v_pct = self.voltage_pct();
        let (hz, nominal_hz) = (self.frequency_hz(), self.grid.nominal_hz);
        for inv in &mut self.inverters {
            inv.output_w = inv.target_w(t, v_pct, hz, nominal_hz);
            inv.var_output = inv.target_var(v_pct, inv.output_w);
        }
    }
}

/// The demo site: one 5 kW PV inverter with 4.6 kW of sun and a household load that
/// repeats every 120 s: 2.5 kW, 0.6 kW from 15 s (kettle off, curtailment needed under a
/// 1.5 kW export limit), 3.2 kW from 60 s, 1.0 kW from 90 s. τ = 0.5 s inverter response.
pub fn demo_site() -> Site {
    let mut site = Site::new(
        2500.0,
        vec![SimInverter::pv(
            5000.0,
            PvProfile::Constant {
                available_w: 4600.0,
            },
            0.5,
        )],
    );
    site.add_load_step(15.0, 600.0);
    site.add_load_step(60.0, 3200.0);
    site.add_load_step(90.0, 1000.0);
    site.load_period_s = Some(120.0);
    site.settle();
    site
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_curve_peaks_at_noon_and_is_dark_at_night() {
        let p = PvProfile::DayCurve {
            peak_w: 5000.0,
            sunrise_s: 6.0 * 3600.0,
            sunset_s: 18.0 * 3600.0,
        };
        assert_eq!(p.available_w(3.0 * 3600.0), 0.0);
        assert!((p.available_w(12.0 * 3600.0) - 5000.0).abs() < 1e-6);
        assert!((p.available_w(86_400.0 + 9.0 * 3600.0) - 3535.5).abs() < 1.0);
        assert_eq!(p.available_w(20.0 * 3600.0), 0.0);
    }

    #[test]
    fn meter_is_load_minus_output_and_inverter_lags() {
        let mut site = Site::new(
            1000.0,
            vec![SimInverter::pv(
                5000.0,
                PvProfile::Constant {
                    available_w: 4000.0,
                },
                1.0,
            )],
        );
        site.settle();
        assert_eq!(site.meter_site_w(), -3000.0);
        site.inverters[0].setpoint_w = 2000.0;
        site.step(1.0);
        // One time constant: 63 % of the way from 4000 to 2000.
        assert!((site.inverters[0].output_w - (2000.0 + 2000.0 * (-1.0f64).exp())).abs() < 1e-6);
        site.add_load_step(5.0, 200.0);
        for _ in 0..10 {
            site.step(1.0);
        }
        assert_eq!(site.load_w(), 200.0);
        assert!((site.meter_site_w() - (200.0 - 2000.0)).abs() < 1.0);
    }

    #[test]
    fn demo_load_profile_repeats() {
        let mut site = demo_site();
        assert_eq!(site.load_w(), 2500.0);
        // Uncurtailed at start: 4.6 kW sun − 2.5 kW load = 2.1 kW export.
        assert!((site.export_w() - 2100.0).abs() < 1e-9);
        site.t_s = 20.0;
        assert_eq!(site.load_w(), 600.0);
        site.t_s = 125.0;
        assert_eq!(site.load_w(), 2500.0);
        site.t_s = 215.0;
        assert_eq!(site.load_w(), 1000.0);
    }

    /// The standard's example volt-var curve (AS/NZS 4777.2 shape), % of VArMax.
    fn volt_var() -> Curve {
        use crate::devices::curves::CurvePoint;
        Curve {
            mode: crate::schedule::ControlMode::VoltVar,
            points: [(90.4, 44.0), (95.6, 0.0), (104.3, 0.0), (110.0, -60.0)]
                .into_iter()
                .map(|(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect(),
            dept_ref: 2,
        }
    }

    fn pv_site(tau_s: f64) -> Site {
        let mut site = Site::new(
            0.0,
            vec![SimInverter::pv(
                5000.0,
                PvProfile::Constant {
                    available_w: 4000.0,
                },
                tau_s,
            )],
        );
        site.settle();
        site
    }

    #[test]
    fn reactive_power_follows_the_voltage_along_the_volt_var_curve_with_lag() {
        let mut site = pv_site(1.0);
        site.grid.wave_amplitude_v = 20.0;
        site.grid.wave_period_s = 400.0;
        assert_eq!(site.inverters[0].var_max_var, 3000.0);
        // No curve: no vars whatever the voltage.
        site.t_s = 100.0; // the crest: 250 V
        site.step(1.0);
        assert_eq!(site.inverters[0].var_output, 0.0);
        site.inverters[0].volt_var = Some(volt_var());
        // 250 V = 108.70 % → -60 % × (108.70 − 104.3) / 5.7 of 3000 var = -1389 var,
        // reached with the inverter's lag (63 % after one time constant).
        let target = -0.60 * (100.0 * 250.0 / 230.0 - 104.3) / 5.7 * 3000.0;
        site.t_s = 99.0;
        site.step(1.0);
        let one_tau = site.inverters[0].var_output;
        assert!(
            one_tau < 0.0 && (one_tau - target * (1.0 - (-1.0f64).exp())).abs() < 15.0,
            "{one_tau} vs {target}"
        );
        for _ in 0..20 {
            site.step(0.5);
        }
        let v_pct = site.voltage_pct();
        let settled = site.inverters[0].var_output;
        assert!(
            (settled - site.inverters[0].target_var(v_pct, 4000.0)).abs() < 25.0,
            "{settled}"
        );
        assert!(settled < -1000.0, "absorbing at the crest: {settled}");
        // The trough (210 V = 91.3 %): injecting, 44 % × (95.6 − 91.3) / 5.2 of VArMax.
        site.t_s = 299.0;
        site.settle();
        let v = site.voltage_v();
        assert!((v - 210.0).abs() < 0.1, "{v}");
        let expected = 0.44 * (95.6 - 100.0 * v / 230.0) / 5.2 * 3000.0;
        assert!((site.inverters[0].var_output - expected).abs() < 1.0);
        // The meter sees the vars, import positive; a disconnected inverter has none.
        assert!((site.meter_site_var() + expected).abs() < 1.0);
        site.inverters[0].connected = false;
        site.step(100.0);
        assert!(site.inverters[0].var_output.abs() < 1e-6);
    }

    #[test]
    fn volt_watt_caps_active_power_and_the_sites_flows_move_the_voltage() {
        let mut site = pv_site(0.0);
        // A stiff grid: 230 V steady, exporting 4 kW moves nothing.
        assert_eq!(site.voltage_v(), 230.0);
        site.grid.v_per_kw_export = 1.5;
        site.grid.v_per_kvar = 1.0;
        assert!((site.voltage_v() - 236.0).abs() < 1e-9, "4 kW export: +6 V");
        // A high network voltage: 250 V + 6 V = 111.3 %; volt-watt 100 % at 106 % to
        // 20 % at 110 % of WMax: capped at 20 % (1000 W), which lowers the rise.
        site.grid.nominal_v = 230.0;
        site.grid.wave_amplitude_v = 20.0;
        site.grid.wave_period_s = 400.0;
        site.t_s = 99.0;
        use crate::devices::curves::CurvePoint;
        site.inverters[0].volt_watt = Some(Curve {
            mode: crate::schedule::ControlMode::VoltWatt,
            points: vec![
                CurvePoint {
                    v_pct: 106.0,
                    y_pct: 100.0,
                },
                CurvePoint {
                    v_pct: 110.0,
                    y_pct: 20.0,
                },
            ],
            dept_ref: 1,
        });
        site.step(1.0);
        assert!((site.inverters[0].output_w - 1000.0).abs() < 1e-6);
        // Settles where the cap and the voltage it causes agree (τ = 0: a few steps).
        for _ in 0..50 {
            site.step(0.0);
        }
        let (w, v_pct) = (site.inverters[0].output_w, site.voltage_pct());
        let curve_w = (100.0 + (v_pct - 106.0) * -20.0).clamp(20.0, 100.0) * 50.0;
        assert!((w - curve_w.min(4000.0)).abs() < 5.0, "{w} W at {v_pct} %");
        assert!(w < 4000.0 && v_pct > 108.0);
        // Injected vars raise the voltage too: 1 kvar → +1 V.
        let before = site.voltage_v();
        site.inverters[0].var_output = 1000.0;
        assert!((site.voltage_v() - before - 1.0).abs() < 1e-9);
    }

    #[test]
    fn fixed_var_and_fixed_power_factor_set_the_vars_when_no_curve_does() {
        let mut site = pv_site(0.0);
        // 0.9 under-excited at 4000 W: 4000 · tan(acos 0.9) = 1937 var absorbed.
        site.inverters[0].fixed_pf = Some(FixedPf {
            pf: 0.9,
            excitation: Excitation::UnderExcited,
        });
        site.step(1.0);
        let var = site.inverters[0].var_output;
        assert!((var + 4000.0 * 0.9f64.acos().tan()).abs() < 1e-6, "{var}");
        // Fixed var wins over the power factor: 25 % of 3000 var injected.
        site.inverters[0].fixed_var_pct = Some(25.0);
        site.step(1.0);
        assert!((site.inverters[0].var_output - 750.0).abs() < 1e-9);
        // And a volt-var curve over both (230 V: the dead band, 0 var).
        site.inverters[0].volt_var = Some(volt_var());
        site.step(1.0);
        assert_eq!(site.inverters[0].var_output, 0.0);
        // Never beyond VArMax.
        site.inverters[0].volt_var = None;
        site.inverters[0].fixed_var_pct = None;
        site.inverters[0].fixed_pf = Some(FixedPf {
            pf: 0.1,
            excitation: Excitation::OverExcited,
        });
        site.step(1.0);
        assert_eq!(site.inverters[0].var_output, 3000.0);
    }

    #[test]
    fn the_demo_grid_swings_slowly_and_deterministically() {
        let g = Grid::demo();
        assert_eq!(g.network_v(0.0), 230.0);
        assert!((g.network_v(75.0) - 245.0).abs() < 1e-9);
        assert!((g.network_v(225.0) - 215.0).abs() < 1e-9);
        assert_eq!(g.network_v(75.0), g.network_v(375.0));
        // Never more than 0.35 V per second: slow next to any inverter's response.
        let steepest = (0..600)
            .map(|t| (g.network_v(f64::from(t) + 1.0) - g.network_v(f64::from(t))).abs())
            .fold(0.0, f64::max);
        assert!(steepest < 0.35, "{steepest}");
    }

    fn droop(db_hz: f64, k: f64) -> FreqDroopState {
        FreqDroopState {
            enabled: true,
            db_of_hz: Some(db_hz),
            db_uf_hz: Some(db_hz),
            k_of: Some(k),
            k_uf: Some(k),
            rsp_tms_s: Some(1.0),
            nominal: None,
        }
    }

    #[test]
    fn the_demo_grid_frequency_wanders_slowly_and_has_an_over_frequency_event() {
        let g = Grid::demo();
        assert_eq!(Grid::stiff().frequency_hz(1234.5), 50.0);
        // Outside the events: within ±hz_wander of 50 Hz, never faster than 5 mHz/s.
        let quiet: Vec<f64> = (0..60).map(|t| g.frequency_hz(f64::from(t))).collect();
        assert!(
            quiet
                .iter()
                .all(|f| (f - 50.0).abs() <= g.hz_wander + 1e-12)
        );
        assert!(quiet.iter().any(|f| (f - 50.0).abs() > 0.01), "it wanders");
        assert!(quiet.windows(2).all(|w| (w[1] - w[0]).abs() < 0.005));
        // The event: ramps up over 4 s from 60 s, holds +0.4 Hz for 40 s, ramps back.
        let e = g.excursion.unwrap();
        let held = e.first_s + e.ramp_s + e.hold_s / 2.0;
        assert!((g.frequency_hz(held) - 50.0 - e.delta_hz).abs() <= g.hz_wander);
        assert!((e.offset_hz(e.first_s + e.ramp_s / 2.0) - e.delta_hz / 2.0).abs() < 1e-9);
        assert_eq!(
            e.offset_hz(e.first_s + 2.0 * e.ramp_s + e.hold_s + 1.0),
            0.0
        );
        // And again one period later.
        assert_eq!(e.offset_hz(held + e.every_s), e.delta_hz);
    }

    #[test]
    fn frequency_droop_cuts_pv_above_the_dead_band_with_the_inverters_lag() {
        let mut site = pv_site(1.0);
        site.grid.excursion = Some(FreqExcursion {
            first_s: 10.0,
            every_s: 1000.0,
            ramp_s: 1.0,
            hold_s: 100.0,
            delta_hz: 0.4,
        });
        let d = droop(0.15, 0.05);
        site.inverters[0].freq_droop = Some(d.clone());
        // Within the dead band: the full 4000 W.
        site.step(1.0);
        assert_eq!(site.inverters[0].output_w, 4000.0);
        // 50.4 Hz: (0.4 − 0.15) / (50 × 0.05) = 10 % of the 5000 W rating less.
        site.t_s = 20.0;
        let hz = site.frequency_hz();
        let drop_w = (hz - 50.0 - 0.15) / (50.0 * 0.05) * 5000.0;
        site.step(1.0);
        let one_tau = 4000.0 - drop_w * (1.0 - (-1.0f64).exp());
        assert!((site.inverters[0].output_w - one_tau).abs() < 1e-6);
        for _ in 0..20 {
            site.step(1.0);
        }
        assert!((site.inverters[0].output_w - (4000.0 - drop_w)).abs() < 1e-3);
        // Without the droop in force the event does nothing.
        site.inverters[0].freq_droop = Some(FreqDroopState {
            enabled: false,
            ..d.clone()
        });
        site.settle();
        assert_eq!(site.inverters[0].output_w, 4000.0);
        // Under-frequency: PV already gives all it may; a charging battery charges less.
        site.grid.excursion.as_mut().unwrap().delta_hz = -0.4;
        let mut bat = Site::new(0.0, vec![SimInverter::battery(5000.0, 3000.0, 0.0)]);
        bat.grid = site.grid.clone();
        bat.inverters[0].freq_droop = Some(d);
        bat.t_s = 20.0;
        bat.settle();
        let lift = (50.0 - 0.15 - bat.frequency_hz()) / (50.0 * 0.05) * 5000.0;
        assert!((bat.inverters[0].output_w - (-3000.0 + lift)).abs() < 1e-6);
        site.t_s = 20.0;
        site.inverters[0].freq_droop = bat.inverters[0].freq_droop.clone();
        site.settle();
        assert_eq!(site.inverters[0].output_w, 4000.0);
    }

    #[test]
    fn watt_var_watt_pf_and_var_target_set_the_vars_from_the_active_power() {
        use crate::devices::curves::CurvePoint;
        let pts = |p: &[(f64, f64)]| -> Vec<CurvePoint> {
            p.iter()
                .map(|&(v_pct, y_pct)| CurvePoint { v_pct, y_pct })
                .collect()
        };
        let mut site = pv_site(0.0);
        // Watt-var: 4000 W = 80 % of WMax, on the segment (50 %, 0) → (100 %, −44 %).
        let wv = Curve {
            mode: crate::schedule::ControlMode::WattVar,
            points: pts(&[(0.0, 0.0), (50.0, 0.0), (100.0, -44.0)]),
            dept_ref: 2,
        };
        site.inverters[0].watt_var = Some(wv.clone());
        site.inverters[0].target_var = Some(500.0);
        site.step(1.0);
        let want = wv.y_pct_at(80.0).unwrap() / 100.0 * 3000.0;
        assert!((site.inverters[0].var_output - want).abs() < 1e-6);
        // Watt-PF: at 80 % between unity at 50 % and 0.90 absorbing at 100 %.
        site.inverters[0].watt_var = None;
        site.inverters[0].watt_pf = Some(Curve {
            mode: crate::schedule::ControlMode::WattPF,
            points: pts(&[(50.0, 100.0), (100.0, -90.0)]),
            dept_ref: 0,
        });
        site.step(1.0);
        let pf: f64 = 1.0 - 0.1 * (80.0 - 50.0) / 50.0;
        let want = -4000.0 * pf.acos().tan();
        assert!((site.inverters[0].var_output - want).abs() < 1e-6);
        // From unity to injecting: no passing through PF 0.
        let c = Curve {
            mode: crate::schedule::ControlMode::WattPF,
            points: pts(&[(0.0, -95.0), (100.0, 95.0)]),
            dept_ref: 0,
        };
        assert!((watt_pf_at(&c, 50.0).unwrap().pf - 1.0).abs() < 1e-9);
        let p = watt_pf_at(&c, 75.0).unwrap();
        assert!((p.pf - 0.975).abs() < 1e-9 && p.excitation == Excitation::OverExcited);
        // The var target, then a fixed var: in that order.
        site.inverters[0].watt_pf = None;
        site.inverters[0].fixed_var_pct = Some(10.0);
        site.step(1.0);
        assert_eq!(site.inverters[0].var_output, 500.0);
        site.inverters[0].target_var = None;
        site.step(1.0);
        assert!((site.inverters[0].var_output - 300.0).abs() < 1e-9);
        // A battery charging (absorbing active power) runs the absorbing power factor.
        let mut bat = Site::new(0.0, vec![SimInverter::battery(5000.0, 2000.0, 0.0)]);
        let inject = FixedPf {
            pf: 0.95,
            excitation: Excitation::OverExcited,
        };
        let absorb = FixedPf {
            pf: 0.8,
            excitation: Excitation::UnderExcited,
        };
        bat.inverters[0].fixed_pf = Some(inject);
        bat.inverters[0].fixed_pf_absorb = Some(absorb);
        bat.step(1.0);
        let want = -2000.0 * 0.8f64.acos().tan();
        assert!((bat.inverters[0].var_output - want).abs() < 1e-6);
    }

    #[test]
    fn battery_charges_within_its_limit() {
        let mut site = Site::new(500.0, vec![SimInverter::battery(5000.0, 3000.0, 0.0)]);
        site.step(0.1);
        assert_eq!(site.meter_site_w(), 3500.0);
        site.inverters[0].charge_limit_w = Some(1000.0);
        site.step(0.1);
        assert_eq!(site.meter_site_w(), 1500.0);
        site.inverters[0].connected = false;
        site.step(0.1);
        assert_eq!(site.meter_site_w(), 500.0);
    }
}
