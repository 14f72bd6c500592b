//! Ramps as IEEE 2030.5 defines them.
//!
//! - `setGradW` (DERSettings / DefaultDERControl): default rate of change of active power
//!   "due to command or internal action", in hundredths of a percent of setMaxW per
//!   second; 0 (or absent) means no limit. `27` → 0.27 %/s → 13.5 W/s on a 5 kW inverter.
//! - `rampTms` (DERControlBase): time, in hundredths of a second, for the DER to move from
//!   the current setting to the new one; absent → use `setGradW`. `3000` → 30 s.
//!
//! Only increases in allowed output are ramped. A limit that tightens is applied at once:
//! slowing it would leave the site outside the new limit for the length of the ramp.

/// Rate in W/s for a setGradW value (hundredths of % of setMaxW per second).
/// `None` = unlimited (setGradW 0 or absent).
pub fn set_grad_w_rate_w_per_s(set_grad_w: Option<u16>, set_max_w: f64) -> Option<f64> {
    match set_grad_w {
        Some(g) if g > 0 => Some(g as f64 / 10_000.0 * set_max_w),
        _ => None,
    }
}

/// A linear transition started by a control with rampTms.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Transition {
    rate_w_per_s: f64,
    until_ms: i64,
}

/// Limits how fast an allowed output level may rise. Time in ms on any monotonic timeline.
#[derive(Debug, Clone, Default)]
pub struct Ramp {
    level_w: Option<f64>,
    last_ms: i64,
    transition: Option<Transition>,
}

impl Ramp {
    pub fn new() -> Self {
        Ramp::default()
    }

    /// The current ramped level (None before the first `apply`).
    pub fn level_w(&self) -> Option<f64> {
        self.level_w
    }

    /// A new control with `rampTms` moved a limit from `from_w` up to `to_w` at `now_ms`:
    /// the level may rise at the rate that covers that step in rampTms.
    pub fn start_transition(&mut self, now_ms: i64, from_w: f64, to_w: f64, ramp_tms: u16) {
        if ramp_tms == 0 || to_w <= from_w {
            self.transition = None;
            return;
        }
        let duration_s = ramp_tms as f64 / 100.0;
        self.transition = Some(Transition {
            rate_w_per_s: (to_w - from_w) / duration_s,
            until_ms: now_ms + ramp_tms as i64 * 10,
        });
    }

    /// Whether a rampTms transition is in progress at `now_ms`.
    pub fn in_transition(&self, now_ms: i64) -> bool {
        self.transition.is_some_and(|t| now_ms < t.until_ms)
    }

    /// Moves the level toward `target_w`: down at once, up no faster than the transition
    /// rate (while one runs) or else `default_rate_w_per_s` (None = unlimited).
    /// Returns the new level.
    pub fn apply(&mut self, now_ms: i64, target_w: f64, default_rate_w_per_s: Option<f64>) -> f64 {
        let prev_ms = self.last_ms;
        let dt_s = ((now_ms - prev_ms).max(0)) as f64 / 1000.0;
        self.last_ms = now_ms;
        let level = match self.level_w {
            None => target_w,
            Some(prev) if target_w <= prev => target_w,
            Some(prev) => {
                let rate = match self.transition {
                    // The transition covers the whole step it was started for; at its end
                    // the remaining difference (if any) goes at the default rate.
                    Some(t) if prev_ms < t.until_ms => Some(t.rate_w_per_s),
                    _ => default_rate_w_per_s,
                };
                match rate {
                    Some(r) => (prev + r * dt_s).min(target_w),
                    None => target_w,
                }
            }
        };
        if !self.in_transition(now_ms) {
            self.transition = None;
        }
        self.level_w = Some(level);
        level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_grad_w_is_hundredths_of_a_percent_per_second() {
        assert_eq!(set_grad_w_rate_w_per_s(Some(27), 5000.0), Some(13.5));
        assert_eq!(set_grad_w_rate_w_per_s(Some(10_000), 5000.0), Some(5000.0));
        assert_eq!(set_grad_w_rate_w_per_s(Some(0), 5000.0), None);
        assert_eq!(set_grad_w_rate_w_per_s(None, 5000.0), None);
    }

    #[test]
    fn rises_at_the_gradient_and_falls_at_once() {
        let mut r = Ramp::new();
        let rate = set_grad_w_rate_w_per_s(Some(27), 5000.0);
        assert_eq!(r.apply(0, 1000.0, rate), 1000.0);
        assert_eq!(r.apply(1000, 5000.0, rate), 1013.5);
        assert_eq!(r.apply(3000, 5000.0, rate), 1040.5);
        assert_eq!(r.apply(4000, 200.0, rate), 200.0);
        assert_eq!(r.apply(5000, 5000.0, None), 5000.0);
    }

    #[test]
    fn ramp_tms_reaches_the_new_limit_in_its_time() {
        let mut r = Ramp::new();
        r.apply(0, 1000.0, None);
        r.start_transition(0, 1000.0, 4000.0, 3000);
        let mut level = 0.0;
        for s in 1..=30 {
            level = r.apply(s * 1000, 4000.0, None);
            if s < 30 {
                assert!(level < 4000.0, "at {s} s: {level}");
            }
            assert!((level - (1000.0 + 100.0 * s as f64)).abs() < 1e-6);
        }
        assert_eq!(level, 4000.0);
        assert!(!r.in_transition(30_000));
        // A tightening during a transition still applies at once.
        r.start_transition(31_000, 4000.0, 6000.0, 3000);
        assert_eq!(r.apply(32_000, 500.0, None), 500.0);
    }
}
