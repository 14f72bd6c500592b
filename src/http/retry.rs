//! Pure retry helpers: exponential backoff with jitter (seeded, time passed in) and the
//! `Retry-After` header (seconds or HTTP-date). No IO, no clock reads.

use std::time::{Duration, Instant, SystemTime};

/// How retries grow: `initial`, doubled each attempt up to `max`, then jittered.
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Upper bound of the exponential delay (before jitter).
    pub max: Duration,
    /// Fraction of the delay that is random, 0.0..=1.0. With 0.5 a nominal 8 s delay
    /// becomes 4..8 s, so many routers that lost the server at once do not return in step.
    pub jitter: f64,
    /// A server's `Retry-After` is honoured up to this bound (a broken server saying
    /// "come back in a week" must not silence the client for a week).
    pub max_retry_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        BackoffPolicy {
            initial: Duration::from_secs(2),
            max: Duration::from_secs(300),
            jitter: 0.5,
            max_retry_after: Duration::from_secs(3600),
        }
    }
}

/// Backoff state for one resource or connection. Deterministic for a given seed.
#[derive(Clone, Debug)]
pub struct Backoff {
    policy: BackoffPolicy,
    attempt: u32,
    rng_state: u64,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy, seed: u64) -> Backoff {
        Backoff {
            policy,
            attempt: 0,
            rng_state: seed,
        }
    }

    /// Failures seen since the last success.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Call after a success: the next failure starts again at `initial`.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The delay before the next try after one more failure. A server's `Retry-After`
    /// (capped at `max_retry_after`) is a lower bound: we never come back earlier than asked.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let exponent = self.attempt.min(31);
        self.attempt = self.attempt.saturating_add(1);
        let nominal = self
            .policy
            .initial
            .saturating_mul(1u32 << exponent)
            .min(self.policy.max);
        let jitter = self.policy.jitter.clamp(0.0, 1.0);
        let random_unit = (self.next_random() >> 11) as f64 / (1u64 << 53) as f64;
        let delay = nominal.mul_f64(1.0 - jitter * random_unit);
        match retry_after {
            Some(asked) => delay.max(asked.min(self.policy.max_retry_after)),
            None => delay,
        }
    }

    /// When to try next, given the current time.
    pub fn next_attempt_at(&mut self, now: Instant, retry_after: Option<Duration>) -> Instant {
        now + self.next_delay(retry_after)
    }

    // splitmix64: tiny, good enough for jitter, reproducible from the seed.
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Parses a `Retry-After` value: delay-seconds or an HTTP-date (IMF-fixdate, RFC 850 or
/// asctime, via the `httpdate` crate). A date in the past means "now" (zero).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Very long digit strings saturate rather than fail.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX),
        ));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.5,
            max_retry_after: Duration::from_secs(600),
        }
    }

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_caps() {
        let mut backoff = Backoff::new(policy(), 42);
        for attempt in 0..12u32 {
            let nominal = Duration::from_secs((1u64 << attempt).min(60));
            let delay = backoff.next_delay(None);
            assert!(
                delay <= nominal,
                "attempt {attempt}: {delay:?} > {nominal:?}"
            );
            assert!(delay >= nominal / 2, "attempt {attempt}: {delay:?} < half");
        }
        assert_eq!(backoff.attempts(), 12);
        backoff.reset();
        assert!(backoff.next_delay(None) <= Duration::from_secs(1));
    }

    #[test]
    fn backoff_is_reproducible_from_seed_and_seeds_differ() {
        let run = |seed| {
            let mut b = Backoff::new(policy(), seed);
            (0..6).map(|_| b.next_delay(None)).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn no_jitter_gives_exact_doubling() {
        let mut b = Backoff::new(
            BackoffPolicy {
                jitter: 0.0,
                ..policy()
            },
            1,
        );
        let delays: Vec<u64> = (0..8).map(|_| b.next_delay(None).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn retry_after_is_a_lower_bound_and_capped() {
        let mut b = Backoff::new(policy(), 3);
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(100_000))),
            Duration::from_secs(600)
        );
        let now = Instant::now();
        let at = b.next_attempt_at(now, Some(Duration::from_secs(45)));
        assert_eq!(at - now, Duration::from_secs(45));
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:49:47 1994", now),
            Some(Duration::from_secs(10))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
    }
}
