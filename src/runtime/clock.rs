//! The one place csipd reads the system clocks: [`SystemClock::now`] gives a
//! [`crate::clock::Now`] that the runtime passes into the cores.

use crate::clock::Now;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The process's clock: monotonic time since it was made, and the wall clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    epoch: Instant,
}

impl SystemClock {
    /// A clock whose monotonic epoch is this moment.
    pub fn new() -> SystemClock {
        SystemClock {
            epoch: Instant::now(),
        }
    }

    /// Reads both clocks. A wall clock before 1970 (a router without RTC before NTP)
    /// reads as 0.
    pub fn now(&self) -> Now {
        let utc_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Now {
            mono_ms: self.epoch.elapsed().as_millis() as u64,
            utc_ms,
        }
    }

    /// The `Instant` a `Now`'s monotonic part stands for (to sleep until a core's
    /// wake-up time with smol's timers).
    pub fn instant_of(&self, mono_ms: u64) -> Instant {
        self.epoch + std::time::Duration::from_millis(mono_ms)
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}
