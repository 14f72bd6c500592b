//! Resident memory and CPU of the CSIP engine over a long run against the hand-scripted
//! CSIP-AUS server of the tests (tests/common/csip_server.rs), in two processes so the
//! engine is measured alone:
//!
//! ```text
//! cargo build --release --example csip_soak
//! target/release/examples/csip_soak server 5 &        # prints its URL; 5 s poll/post rates
//! /usr/bin/time -v target/release/examples/csip_soak engine http://127.0.0.1:PORT 600
//! ```
//! The engine prints VmRSS / VmHWM and user+system CPU seconds every minute and at the end.

#[path = "../tests/common/csip_memory.rs"]
mod csip_memory;
#[path = "../tests/common/csip_server.rs"]
mod csip_server;

use std::time::{Duration, Instant};

use csipd::csip::{
    Engine, EngineConfig, EngineSink, EngineStatus, MeterSample, PhaseValues, SiteMeasurement,
};

struct QuietSink;

impl EngineSink for QuietSink {
    fn controls(&mut self, _outcome: &csipd::schedule::Outcome) {}
    fn status(&mut self, _status: &EngineStatus) {}
}

fn proc_status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .map(|l| l[field.len()..].trim().to_string())
        })
        .unwrap_or_default()
}

fn cpu_seconds() -> f64 {
    // utime + stime from /proc/self/stat (fields 14 and 15, in clock ticks of 1/100 s).
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = after.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        })
        .unwrap_or(0.0)
}

fn report(started: Instant) {
    println!(
        "t={:>4} s  VmRSS {}  VmHWM {}  cpu {:.2} s",
        started.elapsed().as_secs(),
        proc_status("VmRSS:"),
        proc_status("VmHWM:"),
        cpu_seconds()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("server") => {
            let rate: u32 = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(5);
            let server = csip_server::ScriptedServer::start(csip_server::Scenario {
                dcap_poll_s: rate,
                time_poll_s: rate,
                edev_list_poll_s: rate,
                fsa_list_poll_s: rate,
                derp_list_poll_s: rate,
                der_list_poll_s: rate,
                mup_list_poll_s: rate,
                mup_post_s: rate,
                ..csip_memory::scenario()
            });
            println!("{}", server.base_url);
            // A new five-minute control every five minutes, like a dynamic envelope.
            loop {
                let now = csip_server::now_s();
                let tag = format!("S{}", now % 100_000);
                server.update(|s| {
                    let mut control = csip_server::Control::new(&tag, now, 300);
                    control.exp_lim_w = Some(1000 + (now % 5000) as i32);
                    s.fsas[0][0].controls.push(control);
                    let keep = s.fsas[0][0].controls.len().saturating_sub(3);
                    s.fsas[0][0].controls.drain(..keep);
                });
                server.forget_requests();
                std::thread::sleep(Duration::from_secs(300));
            }
        }
        Some("engine") => {
            let url = args.get(1).cloned().unwrap_or_default();
            let seconds: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(600);
            // The tests' configuration, with a minute's post rate, a day of readings
            // buffered and its own randomisation seed.
            let config = EngineConfig {
                default_post_rate_s: 60,
                reading_buffer_intervals: 288,
                rng_seed: 1,
                ..csip_memory::engine_config_at(&url)
            };
            let mut tick = 0u64;
            let source = move || {
                tick += 1;
                let w = 2000.0 + (tick % 60) as f64 * 10.0;
                let phase = |v: f64| PhaseValues {
                    total: Some(v),
                    a: Some(v / 3.0),
                    b: Some(v / 3.0),
                    c: Some(v / 3.0),
                };
                Some(SiteMeasurement {
                    site: Some(MeterSample {
                        active_power_w: phase(-w),
                        reactive_power_var: phase(100.0),
                        voltage_v: PhaseValues {
                            total: Some(240.0),
                            a: Some(239.0),
                            b: Some(240.0),
                            c: Some(241.0),
                        },
                        frequency_hz: Some(50.0),
                        stored_energy_wh: None,
                    }),
                    der: Some(MeterSample {
                        active_power_w: phase(w + 500.0),
                        reactive_power_var: phase(0.0),
                        voltage_v: PhaseValues::total(241.0),
                        frequency_hz: Some(50.0),
                        stored_energy_wh: None,
                    }),
                    inverters: csip_memory::Site::new().inverters,
                    storage: None,
                })
            };
            let clock = csipd::runtime::clock::SystemClock::new();
            let mut client = match csipd::http::Client::new(config.http.clone()) {
                Ok(client) => client,
                Err(err) => {
                    eprintln!("csip_soak: {err}");
                    std::process::exit(2);
                }
            };
            let mut engine = match Engine::new(config, clock.now()) {
                Ok(engine) => engine,
                Err(err) => {
                    eprintln!("csip_soak: {err}");
                    std::process::exit(2);
                }
            };
            let started = Instant::now();
            let end_ms = clock.now().mono_ms + seconds * 1000;
            let mut next_report_ms = clock.now().mono_ms + 60_000;
            let mut source = source;
            smol::block_on(csipd::runtime::engine::drive(
                &mut engine,
                &mut client,
                &clock,
                &mut source,
                &mut QuietSink,
                |_, now| {
                    if now.mono_ms >= next_report_ms {
                        next_report_ms += 60_000;
                        report(started);
                    }
                    now.mono_ms >= end_ms
                },
            ));
            report(started);
            let status = engine.status();
            println!(
                "state {}  readings pending {}  responses pending {}  last error {:?}",
                status.state.name(),
                status.readings_pending,
                status.responses_pending,
                status.last_error
            );
        }
        _ => {
            eprintln!("usage: csip_soak server [RATE_S] | csip_soak engine URL [SECONDS]");
            std::process::exit(2);
        }
    }
}
