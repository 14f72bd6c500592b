//! CPU cost of the sans-IO CSIP engine over a simulated day: the engine against the
//! hand-scripted CSIP-AUS server in memory on a virtual clock (the harness of
//! `tests/csip_isolation.rs`), with a utility server's rates (every resource polled
//! every 60 s, readings every 300 s, a measurement every second).
//!
//! ```text
//! cargo build --release --example csip_sim_day && target/release/examples/csip_sim_day
//! ```

#[path = "../tests/common/csip_memory.rs"]
mod csip_memory;
#[path = "../tests/common/csip_server.rs"]
mod csip_server;

fn thread_cpu_s() -> f64 {
    // utime + stime of this thread in clock ticks (Linux, 100 Hz).
    std::fs::read_to_string("/proc/thread-self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(0.0, |ticks| ticks as f64 / 100.0)
}

fn main() {
    let mut sc = csip_memory::scenario();
    for rate in [
        &mut sc.dcap_poll_s,
        &mut sc.time_poll_s,
        &mut sc.edev_list_poll_s,
        &mut sc.fsa_list_poll_s,
        &mut sc.derp_list_poll_s,
        &mut sc.der_list_poll_s,
        &mut sc.mup_list_poll_s,
    ] {
        *rate = 60;
    }
    sc.mup_post_s = 300;
    sc.default_page_limit = 10;
    let mut h = csip_memory::Harness::start(sc);
    let cpu0 = thread_cpu_s();
    let wall = std::time::Instant::now();
    h.run_for(24 * 3600);
    println!(
        "24 h simulated: {} requests, {} engine inputs; {:.2} s CPU for engine and scripted server \
         ({:.2} s wall), {:.2} s wall inside the engine's calls",
        h.server.requests().len(),
        h.inputs,
        thread_cpu_s() - cpu0,
        wall.elapsed().as_secs_f64(),
        h.engine_time.as_secs_f64()
    );
}
