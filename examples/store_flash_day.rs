//! Bytes the critical store writes to flash in one normal day, measured.
//!
//! Simulates (in simulated time, so it runs in seconds) what the engine does to the
//! store: polls 7 resources every 60 s with unchanged bodies except the DERControlList,
//! which changes every 5 minutes (a new 5-minute envelope); per envelope three
//! responses (Received for the new event, Started and Completed for older ones), each
//! recorded and flushed before its POST and marked accepted and flushed after it; the
//! scheduler's per-event record (new draws, started, ended), a limit change in the
//! event log; a reading every 60 s, sent (acknowledged) a second later; the runtime
//! flushing whenever `flush_due` says so. Two days run first to reach a steady state
//! (two days of scheduler records), then one day is measured with `/proc/self/io`
//! (`wchar`: bytes handed to write(2)/pwrite(2); `write_bytes`: bytes that reached the
//! block layer, when the directory is on a block device).
//!
//!     cargo run --example store_flash_day [DIR] [--burst] [--quiet]

use std::path::PathBuf;

use csipd::store::{EventKind, LedgerKey, SchedulerEvent, Store};

const T0: i64 = 1_795_305_600; // 2026-11-22T00:00:00Z
const DAY_S: i64 = 86_400;

fn io_counters() -> (u64, u64, u64) {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    (get("wchar:"), get("syscw:"), get("write_bytes:"))
}

fn control_list(k: i64) -> Vec<u8> {
    // A realistic DERControlList: three 5-minute envelopes with csipaus limits.
    let mut body = String::from(
        "<DERControlList xmlns=\"urn:ieee:std:2030.5:ns\" xmlns:csipaus=\"https://csipaus.org/ns\" \
         href=\"/api/v2/edev/1/derp/1/derc\" all=\"3\" results=\"3\" subscribable=\"0\">",
    );
    for e in k..k + 3 {
        body.push_str(&format!(
            "<DERControl href=\"/api/v2/edev/1/derp/1/derc/{e}\" replyTo=\"/api/v2/rsps/1/rsp\" \
             responseRequired=\"03\"><mRID>{e:032X}</mRID><description>DOE {e}</description>\
             <creationTime>{c}</creationTime><EventStatus><currentStatus>0</currentStatus>\
             <dateTime>{c}</dateTime><potentiallySuperseded>false</potentiallySuperseded>\
             </EventStatus><interval><duration>300</duration><start>{s}</start></interval>\
             <DERControlBase><csipaus:opModImpLimW><multiplier>0</multiplier><value>15000</value>\
             </csipaus:opModImpLimW><csipaus:opModExpLimW><multiplier>0</multiplier>\
             <value>{v}</value></csipaus:opModExpLimW></DERControlBase></DERControl>",
            c = T0 + e * 300 - 300,
            s = T0 + e * 300,
            v = 1500 + (e % 7) * 500,
        ));
    }
    body.push_str("</DERControlList>");
    body.into_bytes()
}

fn mrid(e: i64) -> String {
    format!("{e:032X}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --burst: one flush after all three POSTs of an envelope were accepted, instead of
    // one after each (a wider window in which a crash re-sends a response).
    let burst = args.iter().any(|a| a == "--burst");
    // --quiet: no utility events all day (polls, readings only).
    let quiet = args.iter().any(|a| a == "--quiet");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/store-flash-day"));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut store, _) = Store::open(&dir, T0).expect("open the store");

    let static_resources: Vec<(String, Vec<u8>)> = [
        ("/api/v2/dcap", 620),
        ("/api/v2/edev", 900),
        ("/api/v2/edev/1/fsa", 520),
        ("/api/v2/edev/1/fsa/1/derp", 780),
        ("/api/v2/edev/1/derp/1/dderc", 640),
        ("/api/v2/mup", 850),
    ]
    .iter()
    .map(|(href, len)| (href.to_string(), vec![b'x'; *len]))
    .collect();
    for (href, _) in &static_resources {
        store.set_poll_rate_s(href, 60);
    }
    store.set_mup_href("site", "/api/v2/mup/1");
    store.set_post_rate_s("/api/v2/mup/1", 60);

    let mut flushes = 0u64;
    let mut measured: Option<(u64, u64, u64)> = None;
    let mut flushes_at_start = 0;
    let end = T0 + 3 * DAY_S;
    let mut reading_id = None;
    for now in T0..end {
        if now == T0 + 2 * DAY_S {
            store.flush(now).expect("flush");
            measured = Some(io_counters());
            flushes_at_start = flushes;
        }
        let t = now - T0;
        if t % 60 == 0 {
            for (href, body) in &static_resources {
                store.cache_resource(href, body, now);
            }
            let envelope = if quiet { 0 } else { t / 300 };
            store.cache_resource("/api/v2/edev/1/derp/1/derc", &control_list(envelope), now);
            reading_id = Some(store.queue_reading("/api/v2/mup/1", &[b'r'; 1400], now));
        }
        if t % 60 == 1
            && let Some(id) = reading_id.take()
        {
            store.ack_reading(id);
        }
        if t % 300 == 0 && !quiet {
            let k = t / 300;
            let record = |state: &str| SchedulerEvent {
                start_offset_s: 0,
                duration_offset_s: 0,
                record_json: format!(
                    "{{\"program_mrid\":\"P1\",\"reply_to\":\"/api/v2/rsps/1/rsp\",\
                     \"response_required\":3,\"first_seen_s\":{},\"state\":\"{state}\"}}",
                    T0 + k * 300
                ),
            };
            store.put_scheduler_event(&mrid(k), record("scheduled"));
            store.put_scheduler_event(&mrid(k - 1), record("started"));
            store.put_scheduler_event(&mrid(k - 2), record("completed"));
            store.forget_event(&mrid(k - 576)); // the scheduler's two-day memory
            store.log_event(
                now,
                EventKind::Limit,
                &mrid(k - 1),
                &format!("export limit {} W", 1500 + ((k - 1) % 7) * 500),
            );
            let keys = [(k, 1), (k - 1, 2), (k - 2, 3)].map(|(e, status)| LedgerKey {
                event_mrid: mrid(e),
                status,
            });
            for key in &keys {
                store.ledger_record(key.clone(), Some("/api/v2/rsps/1/rsp"), now);
            }
            store.flush(now).expect("flush before the POSTs");
            flushes += 1;
            for key in &keys {
                store.ledger_mark_sent(key, now).expect("sent");
                store.ledger_mark_accepted(key, now).expect("accepted");
                if !burst {
                    store.flush(now).expect("flush after each 201");
                    flushes += 1;
                }
            }
            if burst {
                store.flush(now).expect("flush after the burst");
                flushes += 1;
            }
        }
        if store.flush_due(now) {
            store.flush(now).expect("flush");
            flushes += 1;
        }
    }
    let (w0, c0, b0) = measured.expect("measured day");
    let (w1, c1, b1) = io_counters();
    let size = |name: &str| {
        std::fs::metadata(dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    println!(
        "one day: {} bytes written ({:.1} MiB) in {} write calls, {} flushes; block layer: {} bytes",
        w1 - w0,
        (w1 - w0) as f64 / 1048576.0,
        c1 - c0,
        flushes - flushes_at_start,
        b1 - b0
    );
    println!(
        "files: csipd.db {} bytes, csipd.db-wal {} bytes; ledger {} entries, {} scheduler records",
        size("csipd.db"),
        size("csipd.db-wal"),
        store.ledger().count(),
        store.scheduler_events().len()
    );
}
