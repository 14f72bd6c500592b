use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use rusqlite::Connection;

use super::*;

const T0: i64 = 1_795_321_500; // 2026-11-22T04:25:00Z

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "csipd-store-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &Path) -> Store {
    let (store, notices) = Store::open(dir, T0).expect("open");
    assert!(notices.is_empty(), "unexpected notices: {notices:?}");
    store
}

fn key(mrid: &str, status: u8) -> LedgerKey {
    LedgerKey {
        event_mrid: mrid.to_string(),
        status,
    }
}

fn files_starting_with(dir: &Path, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

#[test]
fn utc_stamps() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    assert_eq!(utc_stamp(T0), "20261122T042500Z");
    assert_eq!(utc_stamp(-86_400), "19691231T000000Z");
}

#[test]
fn settings_are_written_only_when_they_change() {
    let dir = TempDir::new("settings");
    let mut store = open(dir.path());
    assert!(store.set_setting("runtime.utility_controls", "{\"a\":1}"));
    assert!(store.flush_due(T0 + 300) && !store.flush_due(T0 + 299));
    let stats = store.flush(T0 + 300).expect("flush");
    assert_eq!(stats.rows_written, 1);
    // The same value again: nothing to write.
    assert!(!store.set_setting("runtime.utility_controls", "{\"a\":1}"));
    assert!(!store.is_dirty());
    assert_eq!(store.next_flush_at(T0 + 360), None);
    assert_eq!(store.flush(T0 + 700).expect("flush"), FlushStats::default());
    // A new value is written and survives a restart.
    assert!(store.set_setting("runtime.utility_controls", "{\"a\":2}"));
    store.flush(T0 + 1000).expect("flush");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.setting("runtime.utility_controls"), Some("{\"a\":2}"));
    assert_eq!(store.setting("other"), None);
}

#[test]
fn unflushed_changes_are_not_on_disk_and_flushed_ones_are() {
    let dir = TempDir::new("unflushed");
    let mut store = open(dir.path());
    store.set_setting("a", "1");
    store.flush(T0).expect("flush");
    store.set_setting("b", "2");
    drop(store); // no flush: b is lost, a is not
    let store = open(dir.path());
    assert_eq!(store.setting("a"), Some("1"));
    assert_eq!(store.setting("b"), None);
}

#[test]
fn a_failed_flush_loses_nothing_and_the_next_one_writes_it() {
    let dir = TempDir::new("flush-fails");
    let mut store = open(dir.path());
    store.set_setting("a", "1");
    store.ledger_record(key("E1", 2), Some("/rsp"), T0);
    store.set_writes_fail(true);
    let err = store.flush(T0).expect_err("writes fail");
    assert!(err.to_string().contains("csipd.db"), "{err}");
    assert!(
        err.to_string().contains("writing the state failed"),
        "{err}"
    );
    assert!(store.is_urgent(), "still urgent after a failed flush");
    assert!(store.is_dirty());
    store.set_writes_fail(false);
    let stats = store.flush(T0 + 1).expect("flush");
    assert_eq!(stats.rows_written, 2);
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.setting("a"), Some("1"));
    assert!(store.ledger_entry(&key("E1", 2)).is_some());
}

#[test]
fn a_clock_stepped_back_does_not_hold_writes_back() {
    let dir = TempDir::new("clock-back");
    let mut store = open(dir.path());
    store.set_setting("a", "1");
    store.flush(T0).expect("flush");
    store.set_setting("a", "2");
    assert!(store.flush_due(T0 - 86_400), "the clock went back a day");
    assert_eq!(store.flush(T0 - 86_400).expect("flush").rows_written, 1);
}

#[test]
fn an_empty_file_with_a_wal_is_moved_aside_with_it() {
    let dir = TempDir::new("empty-wal");
    std::fs::write(dir.path().join(STATE_DB_FILE), b"").expect("w");
    std::fs::write(dir.path().join("csipd.db-wal"), b"frames of a lost file").expect("w");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open");
    assert_eq!(notices.len(), 1);
    assert!(
        notices[0].reason.contains("write-ahead log holds 21 bytes"),
        "{}",
        notices[0].reason
    );
    let moved_wal = format!("{}-wal", notices[0].moved_to.display());
    assert_eq!(
        std::fs::read(moved_wal).expect("kept"),
        b"frames of a lost file"
    );
    // An empty file alone is simply a new database.
    let fresh = TempDir::new("empty");
    std::fs::write(fresh.path().join(STATE_DB_FILE), b"").expect("w");
    drop(open(fresh.path()));
}

#[test]
fn ledger_records_once_and_keeps_delivery_state() {
    let dir = TempDir::new("ledger");
    let mut store = open(dir.path());
    let received = key("E1", 1);
    let started = key("E1", 2);
    assert!(store.ledger_record(received.clone(), Some("/rsp"), T0));
    assert!(store.is_urgent() && store.flush_due(T0));
    assert!(!store.ledger_record(received.clone(), Some("/other"), T0 + 5));
    assert!(store.ledger_record(started.clone(), Some("/rsp"), T0 + 60));
    store.flush(T0).expect("flush");
    assert!(!store.is_urgent());
    store.ledger_mark_sent(&received, T0 + 1).expect("sent");
    assert!(!store.is_urgent(), "an attempt alone is not urgent");
    store
        .ledger_mark_accepted(&received, T0 + 2)
        .expect("accepted");
    assert!(store.is_urgent());
    // A second outcome does not replace the first.
    store
        .ledger_mark_refused(&received, T0 + 3, "400")
        .expect("refused");
    store.flush(T0 + 2).expect("flush");
    assert!(store.ledger_mark_sent(&key("nope", 1), T0).is_err());
    drop(store);

    let mut store = open(dir.path());
    let entry = store.ledger_entry(&received).expect("entry").clone();
    assert_eq!(entry.reply_to.as_deref(), Some("/rsp"));
    assert_eq!(entry.created_at_s, T0);
    assert_eq!(entry.sent_at_s, Some(T0 + 1));
    assert_eq!(entry.attempts, 1);
    assert_eq!(
        entry.outcome,
        Some(LedgerOutcome::Accepted { at_s: T0 + 2 })
    );
    let pending: Vec<LedgerKey> = store
        .ledger_pending()
        .iter()
        .map(|e| e.key.clone())
        .collect();
    assert_eq!(pending, std::slice::from_ref(&started));
    store
        .ledger_mark_refused(&started, T0 + 70, "HTTP 404 on /rsp")
        .expect("refused");
    store.flush(T0 + 70).expect("flush");
    drop(store);
    let store = open(dir.path());
    assert_eq!(
        store.ledger_entry(&started).and_then(|e| e.outcome.clone()),
        Some(LedgerOutcome::Refused {
            at_s: T0 + 70,
            detail: "HTTP 404 on /rsp".into()
        })
    );
    assert!(store.ledger_pending().is_empty());
    assert_eq!(store.ledger().count(), 2);
    // Without a replyTo nothing can be sent: kept in the ledger, never pending.
    let mut store = store;
    assert!(store.ledger_record(key("E9", 1), None, T0));
    assert!(store.ledger_pending().is_empty());
    assert!(store.ledger_entry(&key("E9", 1)).is_some());
}

#[test]
fn finished_ledger_entries_expire_after_the_retention() {
    let dir = TempDir::new("ledger-prune");
    let mut store = open(dir.path());
    store.ledger_record(key("old", 1), Some("/rsp"), T0);
    store
        .ledger_mark_accepted(&key("old", 1), T0)
        .expect("accepted");
    store.ledger_record(key("open", 1), Some("/rsp"), T0);
    store.flush(T0).expect("flush");
    let later = T0 + store.limits().ledger_retention_s + 1;
    store.flush(later).expect("flush");
    assert!(store.ledger_entry(&key("old", 1)).is_none());
    assert!(
        store.ledger_entry(&key("open", 1)).is_some(),
        "an undelivered response is never dropped by age"
    );
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.ledger().count(), 1);
}

#[test]
fn scheduler_events_keep_their_draws_and_forget_removes_the_ledger_too() {
    let dir = TempDir::new("sched");
    let mut store = open(dir.path());
    let ev = SchedulerEvent {
        start_offset_s: -42,
        duration_offset_s: 17,
        record_json: "{\"first_seen_s\":1}".into(),
    };
    assert!(store.put_scheduler_event("E1", ev.clone()));
    assert!(store.is_urgent(), "new draws must be durable before use");
    assert!(!store.put_scheduler_event("E1", ev.clone()));
    store.put_scheduler_event("E2", ev.clone());
    store.ledger_record(key("E2", 1), None, T0);
    store.flush(T0).expect("flush");
    let changed = SchedulerEvent {
        record_json: "{\"first_seen_s\":1,\"started_at_s\":5}".into(),
        ..ev.clone()
    };
    assert!(store.put_scheduler_event("E1", changed.clone()));
    assert!(
        !store.is_urgent(),
        "an update of a known event is not urgent"
    );
    store.forget_event("E2");
    store.flush(T0 + 300).expect("flush");
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.randomization_draws("E1"), Some((-42, 17)));
    assert_eq!(store.scheduler_events().get("E1"), Some(&changed));
    assert_eq!(store.randomization_draws("E2"), None);
    assert_eq!(store.ledger().count(), 0);
}

/// A database of schema 1 (which had a resource cache, a readings queue and an event
/// log) is migrated: those tables go, the ledger, scheduler records and settings stay.
#[test]
fn schema_1_loses_its_unused_tables_and_keeps_the_rest() {
    let dir = TempDir::new("migrate");
    let path = dir.path().join(STATE_DB_FILE);
    {
        let conn = Connection::open(&path).expect("create");
        conn.pragma_update(None, "application_id", 0x4353_4950)
            .expect("app id");
        conn.execute_batch(state::MIGRATIONS[0]).expect("schema 1");
        conn.pragma_update(None, "user_version", 1)
            .expect("version");
        conn.execute_batch(
            "INSERT INTO ledger(event_mrid, status, reply_to, created_at_s, attempts)
                 VALUES ('E1', 1, '/rsp', 1, 0);
             INSERT INTO setting(key, value) VALUES ('runtime.utility_controls', '{}');
             INSERT INTO sched_event VALUES ('E1', -5, 3, '{}');
             INSERT INTO resource VALUES ('/dcap', x'3c2f3e', 1);
             INSERT INTO reading(href, body, queued_at_s) VALUES ('/mr', x'00', 1);
             INSERT INTO event_log(at_s, kind, source, text) VALUES (1, 'info', 's', 't');",
        )
        .expect("rows");
    }
    let store = open(dir.path());
    assert_eq!(store.ledger_pending().len(), 1);
    assert_eq!(store.setting("runtime.utility_controls"), Some("{}"));
    assert_eq!(store.randomization_draws("E1"), Some((-5, 3)));
    drop(store);
    let conn = Connection::open(&path).expect("reopen raw");
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    assert_eq!(version, state::MIGRATIONS.len() as i32);
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut st| {
            st.query_map([], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .expect("tables");
    assert_eq!(tables, ["ledger", "sched_event", "setting"]);
}

fn assert_moved_aside(dir: &Path, notices: &[Notice], kind: NoticeKind, original: &[u8]) {
    assert_eq!(notices.len(), 1, "{notices:?}");
    let notice = &notices[0];
    assert_eq!(notice.kind, kind);
    assert_eq!(notice.path, dir.join(STATE_DB_FILE));
    let label = if kind == NoticeKind::Corrupt {
        "corrupt"
    } else {
        "foreign"
    };
    assert_eq!(
        notice.moved_to,
        dir.join(format!("csipd.db.{label}-20261122T042500Z"))
    );
    let text = notice.to_string();
    assert!(
        text.contains(&dir.join(STATE_DB_FILE).display().to_string()),
        "{text}"
    );
    assert!(text.contains("moved aside to"), "{text}");
    let moved = std::fs::read(&notice.moved_to).expect("moved file is kept");
    assert!(
        moved == original,
        "the moved file must be the original, byte for byte ({} vs {} bytes)",
        moved.len(),
        original.len()
    );
}

/// After a bad file was replaced, the new store works and persists.
fn assert_new_store_works(dir: &Path) {
    let (mut store, notices) = Store::open(dir, T0 + 1).expect("reopen");
    assert!(notices.is_empty());
    store.set_setting("runtime.utility_controls", "{}");
    store.flush(T0 + 1).expect("flush");
    drop(store);
    let store = open(dir);
    assert_eq!(store.setting("runtime.utility_controls"), Some("{}"));
}

#[test]
fn random_bytes_are_moved_aside() {
    let dir = TempDir::new("random");
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..8192)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.path().join(STATE_DB_FILE), &garbage).expect("write");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open replaces it");
    assert_moved_aside(dir.path(), &notices, NoticeKind::Corrupt, &garbage);
    assert!(
        notices[0].reason.contains("not a database"),
        "{}",
        notices[0].reason
    );
    drop(_store);
    assert_new_store_works(dir.path());
}

#[test]
fn a_truncated_database_is_moved_aside() {
    let dir = TempDir::new("truncated");
    let mut store = open(dir.path());
    for i in 0..200 {
        let value = String::from_utf8(vec![b'a' + (i % 26) as u8; 3000]).expect("ascii");
        store.set_setting(&format!("k{i}"), &value);
    }
    store.flush(T0).expect("flush");
    drop(store); // checkpoints the WAL into the file
    let path = dir.path().join(STATE_DB_FILE);
    let full = std::fs::read(&path).expect("read");
    assert!(full.len() > 100 * 1024, "{} bytes", full.len());
    let truncated = &full[..full.len() / 3];
    std::fs::write(&path, truncated).expect("truncate");
    let (store, notices) = Store::open(dir.path(), T0).expect("open replaces it");
    assert_moved_aside(dir.path(), &notices, NoticeKind::Corrupt, truncated);
    assert_eq!(store.setting("k0"), None);
    drop(store);
    assert_new_store_works(dir.path());
}

#[test]
fn a_damaged_page_is_moved_aside() {
    let dir = TempDir::new("damaged");
    let mut store = open(dir.path());
    for i in 0..50 {
        store.set_setting(&format!("k{i}"), &format!("value {i}"));
    }
    store.flush(T0).expect("flush");
    drop(store);
    let path = dir.path().join(STATE_DB_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    // Scribble over the middle of page 2 onwards (b-tree pages), header intact.
    for b in bytes.iter_mut().skip(1024 + 8).take(3000) {
        *b = 0xA5;
    }
    std::fs::write(&path, &bytes).expect("write");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open replaces it");
    assert_moved_aside(dir.path(), &notices, NoticeKind::Corrupt, &bytes);
}

#[test]
fn a_foreign_sqlite_database_is_moved_aside() {
    let dir = TempDir::new("foreign");
    let path = dir.path().join(STATE_DB_FILE);
    {
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE photos(id INTEGER PRIMARY KEY, name TEXT);
             INSERT INTO photos(name) VALUES ('beach.jpg');",
        )
        .expect("foreign tables");
    }
    let original = std::fs::read(&path).expect("read");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open replaces it");
    assert_moved_aside(dir.path(), &notices, NoticeKind::Foreign, &original);
    assert!(
        notices[0].reason.contains("application_id is 0x00000000"),
        "{}",
        notices[0].reason
    );
    drop(_store);
    assert_new_store_works(dir.path());
}

#[test]
fn a_newer_schema_is_moved_aside_not_migrated_down() {
    let dir = TempDir::new("newer");
    drop(open(dir.path()));
    let path = dir.path().join(STATE_DB_FILE);
    {
        let conn = Connection::open(&path).expect("open raw");
        conn.pragma_update(None, "user_version", 99).expect("bump");
    }
    let original = std::fs::read(&path).expect("read");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open replaces it");
    assert_moved_aside(dir.path(), &notices, NoticeKind::Foreign, &original);
    assert!(
        notices[0].reason.contains("schema version 99"),
        "{}",
        notices[0].reason
    );
}

#[test]
fn a_stale_wal_moves_with_its_corrupt_database() {
    let dir = TempDir::new("wal");
    let path = dir.path().join(STATE_DB_FILE);
    std::fs::write(
        &path,
        b"definitely not sqlite, but long enough to have a header......",
    )
    .expect("w");
    std::fs::write(dir.path().join("csipd.db-wal"), b"old wal").expect("w");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open");
    assert_eq!(notices.len(), 1);
    let moved_wal = format!("{}-wal", notices[0].moved_to.display());
    assert_eq!(std::fs::read(moved_wal).expect("wal kept"), b"old wal");
    // Two bad files in the same second get distinct names.
    drop(_store);
    std::fs::write(
        &path,
        b"garbage again, long enough to look like a header............",
    )
    .expect("w");
    let (_store, notices) = Store::open(dir.path(), T0).expect("open");
    assert_eq!(
        notices[0].moved_to,
        dir.path().join("csipd.db.corrupt-20261122T042500Z-2")
    );
    assert_eq!(files_starting_with(dir.path(), "csipd.db.corrupt").len(), 3);
}

#[test]
fn a_database_in_use_is_an_error_and_is_left_alone() {
    let dir = TempDir::new("locked");
    let mut first = open(dir.path());
    first.set_setting("a", "1");
    first.flush(T0).expect("flush"); // takes the exclusive lock
    let err = Store::open(dir.path(), T0)
        .err()
        .expect("second open must fail");
    assert!(err.to_string().contains("csipd.db"), "{err}");
    assert!(err.to_string().contains("locked"), "{err}");
    assert!(files_starting_with(dir.path(), "csipd.db.").is_empty());
    drop(first);
    assert_eq!(open(dir.path()).setting("a"), Some("1"));
}

#[test]
fn an_unusable_directory_is_a_clear_error() {
    let dir = TempDir::new("nodir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").expect("w");
    let err = Store::open(&file.join("sub"), T0).err().expect("must fail");
    assert!(err.to_string().contains("plain-file"), "{err}");
}

// ---- telemetry ----------------------------------------------------------------

fn sample(at_s: i64, site_w: f64, limit: f64, inv_w: f64) -> Sample {
    Sample {
        at_s,
        site_w: Some(site_w),
        export_limit_w: Some(limit),
        inverters: vec![InverterSample {
            name: "inv1".into(),
            w: Some(inv_w),
            setpoint_w: Some(inv_w + 100.0),
        }],
    }
}

#[test]
fn telemetry_rolls_seconds_into_minutes() {
    let dir = TempDir::new("tele");
    let (mut tele, notices) = Telemetry::open(dir.path(), T0).expect("open");
    assert!(notices.is_empty());
    let m0 = T0 / 60 * 60;
    for s in 0..60 {
        tele.record_sample(sample(m0 + s, s as f64, 5000.0 - s as f64, 1000.0))
            .expect("sample");
    }
    tele.record_sample(Sample {
        at_s: m0 + 60,
        site_w: None,
        export_limit_w: None,
        inverters: vec![],
    })
    .expect("sample");
    let rows = tele.minutes(m0, m0 + 120).expect("minutes");
    assert_eq!(rows.len(), 2, "the finished minute and the current one");
    let r = &rows[0];
    assert_eq!((r.minute_s, r.samples), (m0, 60));
    assert_eq!(r.site_w_avg, Some(29.5));
    assert_eq!((r.site_w_min, r.site_w_max), (Some(0.0), Some(59.0)));
    assert_eq!(
        r.export_limit_w,
        Some(4941.0),
        "the tightest limit of the minute"
    );
    assert_eq!(
        r.inverters,
        [InverterMinute {
            name: "inv1".into(),
            w_avg: Some(1000.0),
            setpoint_w: Some(1100.0)
        }]
    );
    assert_eq!(rows[1].site_w_avg, None);
    assert_eq!(tele.recent_samples().count(), 61);
    tele.flush(m0 + 61).expect("flush");
    drop(tele);
    let (tele, _) = Telemetry::open(dir.path(), T0).expect("reopen");
    let rows = tele.minutes(m0, m0 + 120).expect("minutes");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].inverters.len(), 1);
    assert_eq!(rows[1].samples, 1);
    assert_eq!(tele.recent_samples().count(), 0, "seconds live in RAM only");
}

#[test]
fn telemetry_keeps_its_retention_and_size() {
    let dir = TempDir::new("tele-bound");
    let limits = TelemetryLimits {
        retention_s: 3 * 3600,
        max_bytes: 64 * 1024,
        ram_samples: 10,
    };
    let (mut tele, _) = Telemetry::open_with(dir.path(), T0, limits).expect("open");
    let m0 = T0 / 60 * 60;
    // 12 hours, one sample every 30 s, four inverters: far more than 64 KiB of rows.
    for i in 0..(12 * 120) {
        let at = m0 + i * 30;
        let mut s = sample(at, 1.0, 2.0, 3.0);
        for n in 2..=4 {
            s.inverters.push(InverterSample {
                name: format!("inverter-with-a-long-name-{n}"),
                w: Some(n as f64),
                setpoint_w: None,
            });
        }
        tele.record_sample(s).expect("sample");
    }
    assert_eq!(tele.recent_samples().count(), 10);
    let end = m0 + 12 * 3600;
    let rows = tele.minutes(0, i64::MAX).expect("minutes");
    assert!(rows.first().expect("rows").minute_s >= end - 3 * 3600 - 3600);
    assert!(tele.size_bytes().expect("size") <= 64 * 1024 + 4096 * 2);
    let file_len = std::fs::metadata(tele.path()).expect("meta").len();
    assert!(file_len <= 128 * 1024, "file is {file_len} bytes");
}

#[test]
fn a_corrupt_telemetry_file_is_moved_aside() {
    let dir = TempDir::new("tele-corrupt");
    let path = dir.path().join(TELEMETRY_DB_FILE);
    std::fs::write(&path, vec![0x42u8; 4096]).expect("w");
    let (mut tele, notices) = Telemetry::open(dir.path(), T0).expect("open");
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].kind, NoticeKind::Corrupt);
    assert_eq!(
        notices[0].moved_to,
        dir.path().join("telemetry.db.corrupt-20261122T042500Z")
    );
    tele.record_sample(sample(T0, 1.0, 2.0, 3.0))
        .expect("works");
    // A csipd state file is foreign to telemetry.
    let other = TempDir::new("tele-foreign");
    drop(open(other.path()));
    std::fs::rename(
        other.path().join(STATE_DB_FILE),
        other.path().join(TELEMETRY_DB_FILE),
    )
    .expect("rename");
    let (_tele, notices) = Telemetry::open(other.path(), T0).expect("open");
    assert_eq!(notices[0].kind, NoticeKind::Foreign);
}
