//! Measures the status server with a full snapshot (an hour of history, two devices):
//! how long the snapshot lock is held per request (the clone the event loop may wait
//! for), the size of /status and /metrics, and request latency over loopback.
//! `cargo run --release --example status_load`

#[path = "../tests/status_common/mod.rs"]
mod status_common;

use std::time::Instant;

fn main() {
    let (server, handle) = status_common::start_sample_server();
    let url = server.url();

    let rounds = 10_000;
    let started = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(handle.get());
    }
    let clone_us = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;

    let started = Instant::now();
    for i in 0..rounds {
        handle.update(|s| s.history.record(s.now_unix_s + i, Some(1.0), Some(2.0)));
    }
    let update_us = started.elapsed().as_secs_f64() * 1e6 / rounds as f64;

    let status = csipd::status::client::get_text(&url, "/status").expect("/status");
    let metrics = csipd::status::client::get_text(&url, "/metrics").expect("/metrics");
    let page = csipd::status::client::get_text(&url, "/").expect("/");

    let requests = 500;
    let started = Instant::now();
    for _ in 0..requests {
        csipd::status::client::get_text(&url, "/status").expect("/status");
    }
    let request_ms = started.elapsed().as_secs_f64() * 1e3 / requests as f64;

    println!("snapshot clone (lock held per request): {clone_us:.1} µs");
    println!("handle.update, history sample per 1 s cycle: {update_us:.2} µs");
    println!(
        "/status {} bytes, /metrics {} bytes, / {} bytes",
        status.len(),
        metrics.len(),
        page.len()
    );
    println!("GET /status over loopback (new connection each): {request_ms:.2} ms");
}
