//! Time function set: the server's `Time` resource sets the clock the engine schedules
//! by. 2030.5 events are timed by the server's clock, so a router whose clock is off
//! (no NTP yet after a power cut) still starts and ends events when the server means.

/// Server time = local time + offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerClock {
    offset_s: i64,
    synced: bool,
}

impl ServerClock {
    /// Records a `Time` answer: the server said `server_now_s` when the local clock read
    /// `local_at_send_s` before the request and `local_at_receive_s` after it. The
    /// midpoint is used, so a slow link does not bias the offset by the whole round trip.
    pub fn observe(&mut self, server_now_s: i64, local_at_send_s: i64, local_at_receive_s: i64) {
        let local_mid = local_at_send_s + (local_at_receive_s - local_at_send_s) / 2;
        self.offset_s = server_now_s - local_mid;
        self.synced = true;
    }

    pub fn offset_s(&self) -> i64 {
        self.offset_s
    }

    /// True once the server's Time has been read.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Server-adjusted time for a local Unix time.
    pub fn server_time(&self, local_s: i64) -> i64 {
        local_s + self.offset_s
    }
}

/// The local Unix time in seconds.
pub fn local_now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_from_the_midpoint_of_the_request() {
        let mut clock = ServerClock::default();
        assert!(!clock.is_synced());
        // local clock 100 s behind the server, request took 2 s
        clock.observe(1_000_101, 1_000_000, 1_000_002);
        assert_eq!(clock.offset_s(), 100);
        assert_eq!(clock.server_time(5), 105);
        assert!(clock.is_synced());
    }
}
