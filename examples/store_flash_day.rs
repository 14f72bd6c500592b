//! Bytes the critical store writes to flash in one normal day, measured.
//!
//! Simulates (in simulated time, so it runs in seconds) what the runtime does to the
//! store: a new 5-minute envelope every 5 minutes, with three responses per envelope
//! (Received for the new event, Started and Completed for older ones), each recorded
//! and flushed before its POST and marked accepted and flushed after it; the
//! scheduler's per-event record (new draws, started, ended); the new active controls
//! (`runtime.utility_controls`, written when they change); the runtime flushing
//! whenever `flush_due` says so. Polls and readings touch no flash. Two days run first to reach a steady state
//! (two days of scheduler records), then one day is measured with `/proc/self/io`
//! (`wchar`: bytes handed to write(2)/pwrite(2); `write_bytes`: bytes that reached the
//! block layer, when the directory is on a block device).
//!
//!     cargo run --example store_flash_day [DIR] [--burst] [--quiet]

use std::path::PathBuf;

use csipd::store::{LedgerKey, SchedulerEvent, Store};

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

/// The runtime's saved utility controls for envelope `k`, shaped like
/// `runtime::durable::SavedControls` as JSON (about 500 bytes).
fn saved_controls(k: i64) -> String {
    format!(
        "{{\"active\":{{\"export\":{{\"source\":{{\"Event\":{{\"mrid\":\"{m}\",\"program\":\"P1\"}}}},\
         \"value\":{{\"value\":{v},\"multiplier\":0}},\"end_s\":{e}}},\"import\":{{\"source\":\
         {{\"Event\":{{\"mrid\":\"{m}\",\"program\":\"P1\"}}}},\"value\":{{\"value\":15000,\
         \"multiplier\":0}},\"end_s\":{e}}},\"generation\":null,\"load\":null,\"connect\":null,\
         \"energize\":null}},\"ramp\":{{\"set_grad_w\":null,\"ramp_time_s\":null}},\"at_s\":{a}}}",
        m = mrid(k),
        v = 1500 + (k % 7) * 500,
        e = T0 + k * 300 + 300,
        a = T0 + k * 300,
    )
}

fn mrid(e: i64) -> String {
    format!("{e:032X}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // --burst: one flush after all three POSTs of an envelope were accepted, instead of
    // one after each (a wider window in which a crash re-sends a response).
    let burst = args.iter().any(|a| a == "--burst");
    // --quiet: no utility events all day (polls and readings write nothing).
    let quiet = args.iter().any(|a| a == "--quiet");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/store-flash-day"));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut store, _) = Store::open(&dir, T0).expect("open the store");

    let mut flushes = 0u64;
    let mut measured: Option<(u64, u64, u64)> = None;
    let mut flushes_at_start = 0;
    let end = T0 + 3 * DAY_S;
    for now in T0..end {
        if now == T0 + 2 * DAY_S {
            store.flush(now).expect("flush");
            measured = Some(io_counters());
            flushes_at_start = flushes;
        }
        let t = now - T0;
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
            store.set_setting("runtime.utility_controls", &saved_controls(k));
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
