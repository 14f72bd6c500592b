//! One reading of the clocks: [`Now`], made by `runtime` and passed into every core.
//!
//! The time rule (DESIGN.md): no module but `runtime` reads a clock. Cores take a `Now`
//! with each input and compare `Now`s they were given before; tests build `Now`s by hand
//! ([`Now::at`], [`Now::plus_ms`]) and run a simulated day in milliseconds.
//!
//! A `Now` carries two clocks because the field needs both:
//! - `mono_ms`, monotonic milliseconds since an arbitrary epoch: intervals, timeouts,
//!   ages, backoff. It never goes backwards, so a wall-clock step (NTP fixing a router
//!   that booted in 1970) never stretches or skips a poll.
//! - `utc_ms`, wall-clock milliseconds since the Unix epoch: what IEEE 2030.5 times
//!   (`dtstart`, `createdDateTime`, reading periods) and tariff windows are written in.
//!   It may jump; cores that schedule by it re-evaluate on every input.

use std::time::Duration;

/// A reading of the monotonic and the wall clock taken at the same moment.
///
/// Shapes: `mono_ms` ≥ 0 (ms since the runtime's start, or any test epoch); `utc_ms`
/// Unix milliseconds (UTC). Ordering and equality compare both fields; use
/// [`Now::since`] for intervals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Now {
    /// Monotonic milliseconds since an arbitrary epoch; never decreases between the
    /// `Now`s one runtime hands out.
    pub mono_ms: u64,
    /// Wall-clock Unix time in milliseconds (UTC).
    pub utc_ms: i64,
}

impl Now {
    /// A `Now` at monotonic 0 and the given Unix time in seconds (tests, simulations).
    pub const fn at(utc_s: i64) -> Now {
        Now {
            mono_ms: 0,
            utc_ms: utc_s * 1000,
        }
    }

    /// The wall-clock Unix time in whole seconds (floor).
    pub const fn utc_s(self) -> i64 {
        self.utc_ms.div_euclid(1000)
    }

    /// Both clocks advanced by `ms` milliseconds (a virtual clock's step).
    pub const fn plus_ms(self, ms: u64) -> Now {
        Now {
            mono_ms: self.mono_ms + ms,
            utc_ms: self.utc_ms + ms as i64,
        }
    }

    /// Both clocks advanced by `d` (sub-millisecond parts are dropped).
    pub fn plus(self, d: Duration) -> Now {
        self.plus_ms(d.as_millis() as u64)
    }

    /// Monotonic time elapsed since `earlier`; zero when `earlier` is not earlier.
    pub fn since(self, earlier: Now) -> Duration {
        Duration::from_millis(self.mono_ms.saturating_sub(earlier.mono_ms))
    }

    /// The monotonic instant `d` after this one, as milliseconds (for wake-up times).
    pub fn mono_after_ms(self, d: Duration) -> u64 {
        self.mono_ms.saturating_add(d.as_millis() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_seconds_floor_before_the_epoch() {
        assert_eq!(Now::at(5).utc_s(), 5);
        let n = Now {
            mono_ms: 0,
            utc_ms: -1,
        };
        assert_eq!(n.utc_s(), -1);
    }

    #[test]
    fn stepping_moves_both_clocks_and_since_saturates() {
        let t0 = Now::at(1_700_000_000);
        let t1 = t0.plus_ms(1500);
        assert_eq!(t1.utc_s(), 1_700_000_001);
        assert_eq!(t1.since(t0), Duration::from_millis(1500));
        assert_eq!(t0.since(t1), Duration::ZERO);
        assert_eq!(t0.plus(Duration::from_secs(2)).mono_ms, 2000);
    }
}
