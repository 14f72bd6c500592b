//! A small seeded pseudo-random generator (SplitMix64) for randomizeStart and
//! randomizeDuration draws. Deterministic on purpose: the same seed gives the same draws,
//! so tests and simulations are repeatable; the engine seeds it from the OS once.

use serde::{Deserialize, Serialize};

/// SplitMix64 generator. Not cryptographic; it only has to spread event starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator whose sequence is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `lo..=hi` (both inclusive). Returns `lo` when `hi <= lo`.
    pub fn range_inclusive(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        // The span is at most a few thousand seconds, so modulo bias is negligible.
        let span = (hi - lo) as u64 + 1;
        lo + (self.next_u64() % span) as i64
    }

    /// The draw for a 2030.5 randomization bound: `0..=bound` for a positive bound,
    /// `bound..=0` for a negative one, and 0 (no draw consumed) for 0.
    pub fn draw_offset_s(&mut self, bound_s: i32) -> i32 {
        match bound_s {
            0 => 0,
            b if b > 0 => self.range_inclusive(0, b as i64) as i32,
            b => self.range_inclusive(b as i64, 0) as i32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        let mut r = Rng::new(1);
        let mut seen_low = false;
        let mut seen_high = false;
        for _ in 0..10_000 {
            let p = r.draw_offset_s(60);
            assert!((0..=60).contains(&p));
            seen_low |= p == 0;
            seen_high |= p == 60;
            let n = r.draw_offset_s(-30);
            assert!((-30..=0).contains(&n));
        }
        assert!(
            seen_low && seen_high,
            "both ends of the range are reachable"
        );
        assert_eq!(r.draw_offset_s(0), 0);
    }
}
