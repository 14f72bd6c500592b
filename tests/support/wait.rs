//! Waiting in tests for the condition a test needs, never for a guessed duration
//! (issue 26: the suite must pass on a loaded 2-core machine, which is how CI sees it).
//!
//! A test that needs something to have happened in a peer, a thread or a process polls
//! for it with [`wait_until`] under a generous deadline ([`PATIENCE`], tens of seconds)
//! and a short poll interval ([`POLL`]): on a quiet machine it returns as soon as the
//! condition holds, on a loaded one it takes longer but still passes. When the
//! deadline passes it panics naming what it waited for and the last value it saw.
//!
//! Behaviour that depends on time itself (schedules, ramps, staleness, revert timers,
//! backoff) is tested on a virtual clock instead: the pure cores take `now` as a
//! parameter (`csipd::clock::Now`).
//!
//! Include it with `#[path = "support/wait.rs"] mod wait;` (from a directory module:
//! `#[path = "../support/wait.rs"]`).
#![allow(dead_code)]

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// The deadline for anything a test waits for: long enough that only a real failure
/// reaches it on a loaded machine, short enough that a failure is reported in time.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// How often a condition is checked.
pub const POLL: Duration = Duration::from_millis(50);

/// What a wait's closure returns: done (with a value) or not yet (with what it saw).
pub trait Probe {
    type Done;
    type Pending: Debug;
    fn probe(self) -> Result<Self::Done, Self::Pending>;
}

impl Probe for bool {
    type Done = ();
    type Pending = bool;
    fn probe(self) -> Result<(), bool> {
        if self { Ok(()) } else { Err(false) }
    }
}

/// `None` seen while waiting for `Some`.
#[derive(Debug)]
pub struct NoneYet;

impl<T> Probe for Option<T> {
    type Done = T;
    type Pending = NoneYet;
    fn probe(self) -> Result<T, NoneYet> {
        self.ok_or(NoneYet)
    }
}

/// `Ok(value)`: done; `Err(last)`: not yet, `last` is reported if the wait times out.
impl<T, E: Debug> Probe for Result<T, E> {
    type Done = T;
    type Pending = E;
    fn probe(self) -> Result<T, E> {
        self
    }
}

/// Checks `probe` every [`POLL`] until it is done and returns its value; panics after
/// `timeout` with `what` and the last value seen. Return `Err(observed)` from the
/// closure to have the observation in the panic message.
#[track_caller]
pub fn wait_until<P: Probe>(timeout: Duration, what: &str, probe: impl FnMut() -> P) -> P::Done {
    wait_until_every(timeout, POLL, what, probe)
}

/// [`wait_until`] with its own poll interval (for checks that cost something, such as
/// an HTTP request to a daemon).
#[track_caller]
pub fn wait_until_every<P: Probe>(
    timeout: Duration,
    every: Duration,
    what: &str,
    mut probe: impl FnMut() -> P,
) -> P::Done {
    let started = Instant::now();
    let deadline = started + timeout;
    let mut checks = 0u32;
    loop {
        checks += 1;
        let last = match probe().probe() {
            Ok(done) => return done,
            Err(last) => last,
        };
        let now = Instant::now();
        if now >= deadline {
            panic!(
                "waited {:.1} s ({checks} checks) for {what}: not seen; last seen: {last:#?}",
                now.duration_since(started).as_secs_f64()
            );
        }
        std::thread::sleep(every.min(deadline - now));
    }
}
