//! The critical state database (`data_dir/csipd.db`): an in-memory mirror of every row,
//! changed by the runtime, written back by `flush` only where it differs. It keeps what
//! a restart must not lose and nothing else: the response ledger, the scheduler's
//! per-event records (randomisation draws) and small settings (the last utility
//! controls, `runtime::durable`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::db::{Notice, Schema, open_checked};
use super::{Result, StoreError};

/// File name of the critical state database inside `data_dir`.
pub const STATE_DB_FILE: &str = "csipd.db";

/// "CSIP" in ASCII.
const APP_ID: i32 = 0x4353_4950;

pub(super) const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE resource(
         href TEXT PRIMARY KEY,
         body BLOB NOT NULL,
         fetched_at_s INTEGER NOT NULL);
     CREATE TABLE setting(key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
     CREATE TABLE ledger(
         event_mrid TEXT NOT NULL,
         status INTEGER NOT NULL,
         reply_to TEXT,
         created_at_s INTEGER NOT NULL,
         sent_at_s INTEGER,
         attempts INTEGER NOT NULL,
         outcome TEXT,
         outcome_at_s INTEGER,
         outcome_detail TEXT,
         PRIMARY KEY(event_mrid, status)) WITHOUT ROWID;
     CREATE TABLE sched_event(
         mrid TEXT PRIMARY KEY,
         start_offset_s INTEGER NOT NULL,
         duration_offset_s INTEGER NOT NULL,
         record TEXT NOT NULL) WITHOUT ROWID;
     CREATE TABLE reading(
         id INTEGER PRIMARY KEY,
         href TEXT NOT NULL,
         body BLOB NOT NULL,
         queued_at_s INTEGER NOT NULL);
     CREATE TABLE event_log(
         id INTEGER PRIMARY KEY,
         at_s INTEGER NOT NULL,
         kind TEXT NOT NULL,
         source TEXT NOT NULL,
         text TEXT NOT NULL);",
    // 1 -> 2: the resource cache, the unsent readings queue and the event log had no
    // production reader or writer (issue 23); their tables go, so no flash holds them.
    "DROP TABLE resource;
     DROP TABLE reading;
     DROP TABLE event_log;",
];

/// Flash pages are written whole; small pages keep a small change small (measured, see
/// the README section "Durable state").
const PAGE_SIZE: u32 = 1024;

/// WAL pages before a checkpoint (measured, see the README section "Durable state").
const WAL_AUTOCHECKPOINT_PAGES: u32 = 256;

fn schema() -> Schema {
    Schema {
        app_id: APP_ID,
        migrations: MIGRATIONS,
        page_size: PAGE_SIZE,
        // FULL: every commit's WAL frames are fsynced, so a power cut right after a
        // flush keeps it (NORMAL would only sync at checkpoints and could lose the
        // "accepted" mark of a response, which would then be sent again). Bytes written
        // are the same; only the fsync calls differ, and flushes are rare.
        synchronous: "FULL",
        incremental_vacuum: false,
        wal_autocheckpoint_pages: WAL_AUTOCHECKPOINT_PAGES,
    }
}

/// Bounds and timing of the critical store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreLimits {
    /// Ordinary changes are written at most this often ([`Store::flush_due`]).
    pub flush_interval_s: i64,
    /// Finished ledger entries older than this are dropped (longer than the scheduler
    /// remembers events, so a known event never loses its ledger).
    pub ledger_retention_s: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            flush_interval_s: 300,
            ledger_retention_s: 7 * 86_400,
        }
    }
}

/// One response of the ledger: one per (event mRID, response status), ever.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LedgerKey {
    pub event_mrid: String,
    /// Response.status code (1 Received, 2 Started, 3 Completed, 6 Cancelled, ...).
    pub status: u8,
}

/// How delivery of a response ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LedgerOutcome {
    /// The server answered 2xx.
    Accepted { at_s: i64 },
    /// The server refused it for good (4xx); `detail` says how.
    Refused { at_s: i64, detail: String },
}

/// A ledger entry and its delivery state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerEntry {
    pub key: LedgerKey,
    pub reply_to: Option<String>,
    /// Response.createdDateTime: kept, so a resend is byte-identical to the first try.
    pub created_at_s: i64,
    /// The last POST attempt.
    pub sent_at_s: Option<i64>,
    pub attempts: u32,
    /// `None` while it still has to be delivered.
    pub outcome: Option<LedgerOutcome>,
}

/// What the scheduler keeps per event: the randomisation draws (drawn once, kept for
/// the event's life) and its own record, opaque here (JSON of `schedule::EventRecord`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedulerEvent {
    pub start_offset_s: i32,
    pub duration_offset_s: i32,
    pub record_json: String,
}

/// What one flush wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Rows inserted or replaced.
    pub rows_written: usize,
    /// Rows deleted.
    pub rows_deleted: usize,
}

struct Loaded {
    settings: BTreeMap<String, String>,
    ledger: BTreeMap<LedgerKey, LedgerEntry>,
    sched: BTreeMap<String, SchedulerEvent>,
}

/// The critical state store. Single owner (the runtime's event loop); every method but
/// `open` and `flush` works on memory only.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    limits: StoreLimits,

    // Bounds. The `dirty_*` sets are emptied by every flush.
    /// A few fixed keys (the runtime's `runtime.utility_controls`).
    settings: BTreeMap<String, String>,
    dirty_settings: BTreeSet<String>,
    /// One entry per (event, response status), kept while the scheduler remembers the
    /// event (`save_schedule` forgets both together: `schedule::RECORD_RETENTION_S`
    /// after the event ended and left the server's lists, or sooner beyond
    /// `schedule::RECORD_LIMIT` finished events) and dropped in any case
    /// `limits.ledger_retention_s` after creation once settled. Bound: at most one
    /// entry per response status (7) for each record the scheduler keeps (the events
    /// listed now plus `schedule::RECORD_LIMIT`), about 3 per event in practice, plus
    /// entries restored from a previous run whose record is gone, which leave once
    /// settled and `ledger_retention_s` old.
    ledger: BTreeMap<LedgerKey, LedgerEntry>,
    dirty_ledger: BTreeSet<LedgerKey>,
    /// One record per event the scheduler remembers (same lifetime and bound as the
    /// scheduler's `schedule::State::events`; no other copy of the records is kept).
    sched: BTreeMap<String, SchedulerEvent>,
    dirty_sched: BTreeSet<String>,
    /// A change that must reach the flash before the caller acts on it.
    urgent: bool,
    last_flush_s: i64,
    last_prune_s: i64,
}

impl Store {
    /// Opens (or creates) `dir/csipd.db`. A corrupt or foreign file is moved aside and a
    /// fresh store is returned with a [`Notice`] saying so; `now_s` names the moved file.
    pub fn open(dir: &Path, now_s: i64) -> Result<(Store, Vec<Notice>)> {
        Store::open_with(dir, now_s, StoreLimits::default())
    }

    /// [`Store::open`] with other bounds and timing (tests, the flash measurement).
    pub fn open_with(dir: &Path, now_s: i64, limits: StoreLimits) -> Result<(Store, Vec<Notice>)> {
        let path = dir.join(STATE_DB_FILE);
        let (conn, loaded, notices) = open_checked(&path, &schema(), now_s, load)?;
        let store = Store {
            conn,
            path,
            limits,
            settings: loaded.settings,
            dirty_settings: BTreeSet::new(),
            ledger: loaded.ledger,
            dirty_ledger: BTreeSet::new(),
            sched: loaded.sched,
            dirty_sched: BTreeSet::new(),
            urgent: false,
            last_flush_s: now_s,
            last_prune_s: i64::MIN,
        };
        Ok((store, notices))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    // ---- settings: small named values ---------------------------------------------

    /// Sets a small named value; returns whether it changed.
    pub fn set_setting(&mut self, key: &str, value: &str) -> bool {
        if self.settings.get(key).map(String::as_str) == Some(value) {
            return false;
        }
        self.settings.insert(key.to_string(), value.to_string());
        self.dirty_settings.insert(key.to_string());
        true
    }

    pub fn setting(&self, key: &str) -> Option<&str> {
        self.settings.get(key).map(String::as_str)
    }

    // ---- response ledger ---------------------------------------------------------

    /// Records a response that fell due. Returns `false` (and changes nothing) when the
    /// key is already in the ledger: a response is recorded once, ever. Urgent: flush
    /// before POSTing it.
    pub fn ledger_record(
        &mut self,
        key: LedgerKey,
        reply_to: Option<&str>,
        created_at_s: i64,
    ) -> bool {
        if self.ledger.contains_key(&key) {
            return false;
        }
        let entry = LedgerEntry {
            key: key.clone(),
            reply_to: reply_to.map(str::to_string),
            created_at_s,
            sent_at_s: None,
            attempts: 0,
            outcome: None,
        };
        self.ledger.insert(key.clone(), entry);
        self.dirty_ledger.insert(key);
        self.urgent = true;
        true
    }

    /// Notes a POST attempt (not urgent: it changes nothing about what is sent next).
    pub fn ledger_mark_sent(&mut self, key: &LedgerKey, at_s: i64) -> Result<()> {
        let entry = self.ledger_entry_mut(key)?;
        entry.sent_at_s = Some(at_s);
        entry.attempts = entry.attempts.saturating_add(1);
        self.dirty_ledger.insert(key.clone());
        Ok(())
    }

    /// The server accepted it (2xx). Urgent: flush at once so it is never sent again.
    pub fn ledger_mark_accepted(&mut self, key: &LedgerKey, at_s: i64) -> Result<()> {
        self.set_outcome(key, LedgerOutcome::Accepted { at_s })
    }

    /// The server refused it for good. Urgent, like acceptance.
    pub fn ledger_mark_refused(&mut self, key: &LedgerKey, at_s: i64, detail: &str) -> Result<()> {
        self.set_outcome(
            key,
            LedgerOutcome::Refused {
                at_s,
                detail: detail.to_string(),
            },
        )
    }

    fn set_outcome(&mut self, key: &LedgerKey, outcome: LedgerOutcome) -> Result<()> {
        let entry = self.ledger_entry_mut(key)?;
        if entry.outcome.is_some() {
            return Ok(()); // the first outcome stands
        }
        entry.outcome = Some(outcome);
        self.dirty_ledger.insert(key.clone());
        self.urgent = true;
        Ok(())
    }

    fn ledger_entry_mut(&mut self, key: &LedgerKey) -> Result<&mut LedgerEntry> {
        let path = self.path.clone();
        self.ledger.get_mut(key).ok_or_else(|| {
            StoreError::new(
                path,
                format!(
                    "no ledger entry for event {} status {}",
                    key.event_mrid, key.status
                ),
            )
        })
    }

    pub fn ledger_entry(&self, key: &LedgerKey) -> Option<&LedgerEntry> {
        self.ledger.get(key)
    }

    /// Every ledger entry, by key.
    pub fn ledger(&self) -> impl Iterator<Item = &LedgerEntry> {
        self.ledger.values()
    }

    /// Entries still to deliver, oldest first (created time, then key). Entries without
    /// a replyTo (servers without the Response function set) cannot be sent and are
    /// not listed; they stay in the ledger so the scheduler never issues them again.
    pub fn ledger_pending(&self) -> Vec<&LedgerEntry> {
        let mut pending: Vec<&LedgerEntry> = self
            .ledger
            .values()
            .filter(|e| e.outcome.is_none() && e.reply_to.is_some())
            .collect();
        pending.sort_by(|a, b| (a.created_at_s, &a.key).cmp(&(b.created_at_s, &b.key)));
        pending
    }

    // ---- scheduler per-event records and randomisation draws ---------------------

    /// Stores the scheduler's record of event `mrid`; returns whether it changed.
    /// A new event is urgent (its draws must survive a crash before they are acted on).
    pub fn put_scheduler_event(&mut self, mrid: &str, event: SchedulerEvent) -> bool {
        match self.sched.get(mrid) {
            Some(old) if *old == event => return false,
            Some(_) => {}
            None => self.urgent = true,
        }
        self.sched.insert(mrid.to_string(), event);
        self.dirty_sched.insert(mrid.to_string());
        true
    }

    /// Forgets event `mrid`: its scheduler record, draws and ledger entries.
    pub fn forget_event(&mut self, mrid: &str) {
        if self.sched.remove(mrid).is_some() {
            self.dirty_sched.insert(mrid.to_string());
        }
        let keys: Vec<LedgerKey> = self
            .ledger
            .keys()
            .filter(|k| k.event_mrid == mrid)
            .cloned()
            .collect();
        for key in keys {
            self.ledger.remove(&key);
            self.dirty_ledger.insert(key);
        }
    }

    pub fn scheduler_events(&self) -> &BTreeMap<String, SchedulerEvent> {
        &self.sched
    }

    /// (randomizeStart draw, randomizeDuration draw) of event `mrid`, seconds.
    pub fn randomization_draws(&self, mrid: &str) -> Option<(i32, i32)> {
        self.sched
            .get(mrid)
            .map(|e| (e.start_offset_s, e.duration_offset_s))
    }

    // ---- writing -----------------------------------------------------------------

    /// Whether anything in memory differs from the file.
    pub fn is_dirty(&self) -> bool {
        !self.dirty_settings.is_empty()
            || !self.dirty_ledger.is_empty()
            || !self.dirty_sched.is_empty()
    }

    /// Whether an urgent change (ledger, new event draws) waits for a flush.
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }

    /// When the runtime should call [`Store::flush`] next: `Some(t <= now)` means now,
    /// `None` means nothing is waiting.
    pub fn next_flush_at(&self, now_s: i64) -> Option<i64> {
        if self.urgent {
            return Some(now_s);
        }
        // A clock stepped back (e.g. corrected after boot) must not hold changes back
        // until it catches up again.
        let interval_due = if now_s < self.last_flush_s {
            now_s
        } else {
            self.last_flush_s + self.limits.flush_interval_s
        };
        self.is_dirty().then_some(interval_due)
    }

    /// Whether [`Store::flush`] should run now.
    pub fn flush_due(&self, now_s: i64) -> bool {
        self.next_flush_at(now_s).is_some_and(|t| t <= now_s)
    }

    /// Writes every change since the last flush in one transaction (nothing at all
    /// when nothing changed). On error nothing is lost from memory; the next flush
    /// tries again.
    pub fn flush(&mut self, now_s: i64) -> Result<FlushStats> {
        let prune = now_s.saturating_sub(self.last_prune_s) >= 3600;
        if prune {
            self.prune_ledger(now_s);
        }
        if !self.is_dirty() {
            self.urgent = false;
            self.last_flush_s = now_s;
            return Ok(FlushStats::default());
        }
        let stats = self
            .write_changes()
            .map_err(|e| StoreError::new(&self.path, format!("writing the state failed: {e}")))?;
        // Committed: memory and file agree again.
        self.dirty_settings.clear();
        self.dirty_ledger.clear();
        self.dirty_sched.clear();
        self.urgent = false;
        self.last_flush_s = now_s;
        if prune {
            self.last_prune_s = now_s;
        }
        Ok(stats)
    }

    /// Test hook: make every write fail (as on a full or read-only file system).
    #[cfg(test)]
    pub(crate) fn set_writes_fail(&self, fail: bool) {
        self.conn
            .pragma_update(None, "query_only", fail)
            .expect("query_only");
    }

    fn prune_ledger(&mut self, now_s: i64) {
        let cutoff = now_s - self.limits.ledger_retention_s;
        let old: Vec<LedgerKey> = self
            .ledger
            .values()
            .filter(|e| e.outcome.is_some() && e.created_at_s < cutoff)
            .map(|e| e.key.clone())
            .collect();
        for key in old {
            self.ledger.remove(&key);
            self.dirty_ledger.insert(key);
        }
    }

    fn write_changes(&self) -> rusqlite::Result<FlushStats> {
        let mut stats = FlushStats::default();
        let tx = self.conn.unchecked_transaction()?;
        // Settings are only ever set, never removed.
        for key in &self.dirty_settings {
            if let Some(v) = self.settings.get(key) {
                tx.prepare_cached("INSERT OR REPLACE INTO setting(key, value) VALUES (?1, ?2)")?
                    .execute([key, v])?;
                stats.rows_written += 1;
            }
        }
        for key in &self.dirty_ledger {
            match self.ledger.get(key) {
                Some(e) => {
                    let (outcome, outcome_at_s, detail) = match &e.outcome {
                        None => (None, None, None),
                        Some(LedgerOutcome::Accepted { at_s }) => {
                            (Some("accepted"), Some(*at_s), None)
                        }
                        Some(LedgerOutcome::Refused { at_s, detail }) => {
                            (Some("refused"), Some(*at_s), Some(detail.as_str()))
                        }
                    };
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO ledger(event_mrid, status, reply_to,
                             created_at_s, sent_at_s, attempts, outcome, outcome_at_s,
                             outcome_detail)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                    )?
                    .execute(params![
                        key.event_mrid,
                        key.status,
                        e.reply_to,
                        e.created_at_s,
                        e.sent_at_s,
                        e.attempts,
                        outcome,
                        outcome_at_s,
                        detail
                    ])?;
                    stats.rows_written += 1;
                }
                None => {
                    stats.rows_deleted += tx
                        .prepare_cached("DELETE FROM ledger WHERE event_mrid = ?1 AND status = ?2")?
                        .execute(params![key.event_mrid, key.status])?;
                }
            }
        }
        for mrid in &self.dirty_sched {
            match self.sched.get(mrid) {
                Some(e) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO sched_event(mrid, start_offset_s,
                             duration_offset_s, record) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![
                        mrid,
                        e.start_offset_s,
                        e.duration_offset_s,
                        e.record_json
                    ])?;
                    stats.rows_written += 1;
                }
                None => {
                    stats.rows_deleted += tx
                        .prepare_cached("DELETE FROM sched_event WHERE mrid = ?1")?
                        .execute([mrid])?;
                }
            }
        }
        tx.commit()?;
        Ok(stats)
    }
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut settings = BTreeMap::new();
    {
        let mut stmt = conn.prepare("SELECT key, value FROM setting")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (k, v) = row?;
            settings.insert(k, v);
        }
    }
    let mut ledger = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT event_mrid, status, reply_to, created_at_s, sent_at_s, attempts,
                    outcome, outcome_at_s, outcome_detail FROM ledger",
        )?;
        let rows = stmt.query_map([], |r| {
            let outcome: Option<String> = r.get(6)?;
            let outcome_at_s: Option<i64> = r.get(7)?;
            let detail: Option<String> = r.get(8)?;
            let outcome = match (outcome.as_deref(), outcome_at_s) {
                (Some("accepted"), Some(at_s)) => Some(LedgerOutcome::Accepted { at_s }),
                (Some(_), Some(at_s)) => Some(LedgerOutcome::Refused {
                    at_s,
                    detail: detail.unwrap_or_default(),
                }),
                _ => None,
            };
            Ok(LedgerEntry {
                key: LedgerKey {
                    event_mrid: r.get(0)?,
                    status: r.get(1)?,
                },
                reply_to: r.get(2)?,
                created_at_s: r.get(3)?,
                sent_at_s: r.get(4)?,
                attempts: r.get(5)?,
                outcome,
            })
        })?;
        for row in rows {
            let row = row?;
            ledger.insert(row.key.clone(), row);
        }
    }
    let mut sched = BTreeMap::new();
    {
        let mut stmt = conn
            .prepare("SELECT mrid, start_offset_s, duration_offset_s, record FROM sched_event")?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                SchedulerEvent {
                    start_offset_s: r.get(1)?,
                    duration_offset_s: r.get(2)?,
                    record_json: r.get(3)?,
                },
            ))
        })?;
        for row in rows {
            let (k, v) = row?;
            sched.insert(k, v);
        }
    }
    Ok(Loaded {
        settings,
        ledger,
        sched,
    })
}
