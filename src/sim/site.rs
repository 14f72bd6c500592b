//! Simulated site physics (PV, load, inverter lag, grid voltage and the inverters'
//! volt-var and volt-watt curves): a pure model stepped with time as an argument. Used
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

use crate::devices::curves::Curve;
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
        }
    }

    /// The demo's grid: 230 V swinging ±15 V over 5 minutes, on a long suburban line
    /// (1.5 V per kW exported, 1 V per kvar), so that a volt-var curve has something
    /// to do within a few minutes and its vars visibly pull the voltage back.
    pub fn demo() -> Grid {
        Grid {
            nominal_v: 230.0,
            wave_amplitude_v: 15.0,
            wave_period_s: 300.0,
            v_per_kw_export: 1.5,
            v_per_kvar: 1.0,
        }
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
    /// A fixed power factor in force (SunSpec 123 OutPFSet with OutPFSet_Ena), if any.
    pub fixed_pf: Option<FixedPf>,
    /// A fixed reactive power in force, % of VArMax (SunSpec 123 VArMaxPct), if any.
    pub fixed_var_pct: Option<f64>,
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
        }
    }

    /// What the device would settle at now, given its resource, its limits and (with
    /// a volt-watt curve) the voltage, `v_pct` % of nominal.
    pub fn target_w(&self, t_s: f64, v_pct: f64) -> f64 {
        if !self.connected {
            return 0.0;
        }
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
                available
                    .min(self.setpoint_w.max(0.0))
                    .min(self.rating_w)
                    .min(curve_cap.unwrap_or(f64::INFINITY))
            }
            SimInverterKind::Battery { charge_demand_w } => {
                let limit = self.charge_limit_w.unwrap_or(f64::INFINITY).max(0.0);
                -(charge_demand_w.min(limit).min(self.rating_w))
            }
        }
    }
}

impl SimInverter {
    /// The reactive power it would settle at, at `v_pct` % of nominal: the volt-var
    /// curve's value (DeptRef 1 % of WMax, else % of VArMax) while connected, else 0.
    ///
    /// Without a volt-var curve: a fixed var setting (% of VArMax), else a fixed power
    /// factor (vars in proportion to `w`, the active power: |w|·tan φ, positive
    /// over-excited), else none. A real inverter runs one reactive power mode at a
    /// time; this order is the simulator's choice when several are enabled.
    pub fn target_var(&self, v_pct: f64, w: f64) -> f64 {
        if !self.connected {
            return 0.0;
        }
        let var = if let Some(c) = &self.volt_var {
            let base = if c.dept_ref == 1 {
                self.rating_w
            } else {
                self.var_max_var
            };
            c.y_pct_at(v_pct).unwrap_or(0.0) / 100.0 * base
        } else if let Some(pct) = self.fixed_var_pct {
            pct / 100.0 * self.var_max_var
        } else if let Some(pf) = self.fixed_pf {
            let q = w.abs() * pf.pf.clamp(0.01, 1.0).acos().tan();
            match pf.excitation {
                Excitation::OverExcited => q,
                Excitation::UnderExcited => -q,
            }
        } else {
            0.0
        };
        var.clamp(-self.var_max_var, self.var_max_var)
    }
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

    /// [`Site::voltage_v`] in % of nominal, as the curves take it.
    pub fn voltage_pct(&self) -> f64 {
        100.0 * self.voltage_v() / self.grid.nominal_v
    }

    /// Advances the physics by `dt_s`: each inverter moves toward its targets (active
    /// power, and reactive power on its volt-var curve at the voltage it measured at
    /// the start of the step) with its lag.
    pub fn step(&mut self, dt_s: f64) {
        let v_pct = self.voltage_pct();
        self.t_s += dt_s;
        let t = self.t_s;
        for inv in &mut self.inverters {
            let target = inv.target_w(t, v_pct);
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
        for inv in &mut self.inverters {
            inv.output_w = inv.target_w(t, v_pct);
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
