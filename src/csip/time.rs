//! Time function set: the server's `Time` resource sets the clock the engine schedules
//! by. 2030.5 events are timed by the server's clock, so a router whose clock is off
//! (no NTP yet after a power cut) still starts and ends events when the server means.

use crate::clock::Now;
use crate::sep2::Time;

use super::context::{Answer, Ctx, PollError, PollPart, read};
use super::poller::PollKind;

/// Reads the Time resource at its pollRate and keeps [`ServerClock`] in `Ctx`.
#[derive(Debug, Clone, Default)]
pub struct TimeSet {
    pub href: Option<String>,
}

impl TimeSet {
    /// The DeviceCapability links Time at `href` (or no longer does).
    pub fn link(&mut self, ctx: &mut Ctx, href: Option<String>) {
        let keep: Vec<String> = href.iter().cloned().collect();
        ctx.poller.retain_kind(PollKind::Time, &keep);
        if let Some(href) = &href {
            ctx.poller
                .track(href, PollKind::Time, None, ctx.now.mono_ms);
        }
        self.href = href;
    }

    pub fn request(&self, ctx: &mut Ctx, href: &str) {
        let sent = ctx.now;
        ctx.poll(href, PollKind::Time, PollPart::SentAt(sent));
    }

    /// The answer to a GET sent at `sent`.
    pub fn handle(&mut self, ctx: &mut Ctx, href: &str, sent: Now, answer: Answer) {
        let time = match answer {
            Answer::Ok(response) => match read::<Time>(&response) {
                Ok(time) => time,
                Err(err) => {
                    ctx.poll_failed(href, PollKind::Time, PollError::parse(err));
                    return;
                }
            },
            other => {
                ctx.poll_failed(href, PollKind::Time, PollError::of(other));
                return;
            }
        };
        let old = ctx.clock.offset_s();
        ctx.clock
            .observe(time.current_time, sent.utc_s(), ctx.now.utc_s());
        let offset = ctx.clock.offset_s();
        if (offset - old).abs() > 2 {
            log::info!(
                "csip: server clock offset {offset} s (local clock {} by {} s)",
                if offset > 0 { "behind" } else { "ahead" },
                offset.abs()
            );
            // Events are timed by the server's clock: evaluate again.
            ctx.tree_version += 1;
        }
        ctx.poll_ok(href, PollKind::Time, time.poll_rate_s);
    }
}

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
