//! Simulated site physics (PV, load, inverter lag): a pure model stepped with time as an
//! argument. Used by the control closed-loop tests and by `csipd demo`.
//!
//! Sign convention as at a real site meter: `meter_site_w() = load − Σ inverter output`,
//! import positive, export negative. A battery's output is negative while it charges.

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
        }
    }

    /// What the device would settle at now, given its resource and its limits.
    pub fn target_w(&self, t_s: f64) -> f64 {
        if !self.connected {
            return 0.0;
        }
        match &self.kind {
            SimInverterKind::Pv(p) => p
                .available_w(t_s)
                .min(self.setpoint_w.max(0.0))
                .min(self.rating_w),
            SimInverterKind::Battery { charge_demand_w } => {
                let limit = self.charge_limit_w.unwrap_or(f64::INFINITY).max(0.0);
                -(charge_demand_w.min(limit).min(self.rating_w))
            }
        }
    }
}

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
    pub inverters: Vec<SimInverter>,
}

impl Site {
    pub fn new(base_load_w: f64, inverters: Vec<SimInverter>) -> Self {
        Site {
            t_s: 0.0,
            base_load_w,
            load_steps: Vec::new(),
            inverters,
        }
    }

    /// Adds a load step (kept in time order).
    pub fn add_load_step(&mut self, at_s: f64, load_w: f64) {
        self.load_steps.push(LoadStep { at_s, load_w });
        self.load_steps.sort_by(|a, b| a.at_s.total_cmp(&b.at_s));
    }

    pub fn load_w(&self) -> f64 {
        self.load_steps
            .iter()
            .rev()
            .find(|s| s.at_s <= self.t_s)
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

    /// Advances the physics by `dt_s`: each inverter moves toward its target with its lag.
    pub fn step(&mut self, dt_s: f64) {
        self.t_s += dt_s;
        let t = self.t_s;
        for inv in &mut self.inverters {
            let target = inv.target_w(t);
            let alpha = if inv.tau_s > 0.0 {
                1.0 - (-dt_s / inv.tau_s).exp()
            } else {
                1.0
            };
            inv.output_w += (target - inv.output_w) * alpha;
        }
    }

    /// Starts every inverter at its steady state (as if running for a while).
    pub fn settle(&mut self) {
        let t = self.t_s;
        for inv in &mut self.inverters {
            inv.output_w = inv.target_w(t);
        }
    }
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
