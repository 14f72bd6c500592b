//! Ports for test peers that cannot bind port 0 and say which port they got (mosquitto,
//! the GridAPPS-D server): a port below the kernel's ephemeral range, which the kernel
//! never hands out by itself, and a fresh one when the peer's bind fails anyway.
//!
//! Picking a port with `bind("127.0.0.1:0")` and closing it before the peer binds it
//! races everything else on the machine that binds port 0 or connects out: the kernel
//! may hand that very port to someone else in between (issue 26: the suite runs on a
//! loaded machine beside other test runs). Below the ephemeral range only processes that
//! name a port themselves can take it, so a collision is rare; the peer then fails to
//! bind, says so, and the caller starts it again on [`candidate`]'s next answer
//! ([`BIND_ATTEMPTS`] times).
//!
//! Peers that can bind port 0 and report their port (openssl s_server, the Python peers,
//! `csipd demo --port 0`, our own listeners) must do that instead.
//!
//! Include it with `#[path = "support/ports.rs"] mod ports;` (from a directory module:
//! `#[path = "../support/ports.rs"]`).
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

/// How many times a peer is started on a new port when its bind fails.
pub const BIND_ATTEMPTS: u32 = 10;

/// The kernel's ephemeral port range (`net.ipv4.ip_local_port_range`), Linux's default
/// when it cannot be read.
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| {
            let mut n = t.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((n.next()??, n.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A loopback port for a peer to bind, outside the ephemeral range: each call in this
/// process gives another one, and other processes start elsewhere in the range.
pub fn candidate() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = ephemeral_range();
    // Below the range if there is room for it (the default), else above it.
    let (first, span) = if low > 12_000 {
        (u32::from(low) - 10_000, 10_000)
    } else {
        (u32::from(high) + 1, (65_535 - u32::from(high)).max(1))
    };
    let seed = std::process::id().wrapping_mul(7919);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    (first + (seed.wrapping_add(n.wrapping_mul(101))) % span) as u16
}

/// Whether a peer's output says its bind failed because the port is taken.
pub fn port_taken(output: &str) -> bool {
    output.contains("Address already in use")
        || output.contains("EADDRINUSE")
        || output.contains("is in use by another program")
}
