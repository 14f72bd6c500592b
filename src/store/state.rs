//! The critical state database (`data_dir/csipd.db`): an in-memory mirror of every row,
//! changed by the engine and runtime, written back by `flush` only where it differs.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};

use super::db::{Notice, Schema, open_checked};
use super::{Result, StoreError};

/// File name of the critical state database inside `data_dir`.
pub const STATE_DB_FILE: &str = "csipd.db";

/// "CSIP" in ASCII.
const APP_ID: i32 = 0x4353_4950;

const MIGRATIONS: &[&str] = &[
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
    /// An unsent reading is written to flash only once it has waited this long: a
    /// reading the server takes at once never touches the flash.
    pub reading_persist_age_s: i64,
    /// Most unsent readings kept; the oldest go first.
    pub max_readings: usize,
    /// Most bytes of unsent reading bodies kept; the oldest go first.
    pub max_reading_bytes: usize,
    /// Event log rows kept.
    pub max_events: usize,
    /// Finished ledger entries older than this are dropped (longer than the scheduler
    /// remembers events, so a known event never loses its ledger).
    pub ledger_retention_s: i64,
}

impl Default for StoreLimits {
    fn default() -> Self {
        StoreLimits {
            flush_interval_s: 300,
            reading_persist_age_s: 120,
            max_readings: 4 * 1440,
            max_reading_bytes: 2 * 1024 * 1024,
            max_events: 2000,
            ledger_retention_s: 7 * 86_400,
        }
    }
}

/// A server resource as last fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedResource {
    pub href: String,
    /// The raw body as the server sent it (re-parsed at start-up by the same reader).
    pub body: Vec<u8>,
    /// When this body was first fetched (stored; unchanged re-fetches do not write).
    pub fetched_at_s: i64,
    /// The last fetch that returned this body (memory only; after a restart it equals
    /// `fetched_at_s`).
    pub checked_at_s: i64,
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

/// This device's registration with the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub end_device_href: String,
    pub lfdi: String,
    pub sfdi: u64,
    /// `Some(true)` when the server's PIN matched the configured one, `Some(false)` on a
    /// mismatch, `None` when no PIN is checked (out-of-band registration).
    pub pin_ok: Option<bool>,
    pub registered_at_s: i64,
}

/// A reading waiting to be POSTed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingReading {
    pub id: i64,
    pub href: String,
    pub body: Vec<u8>,
    pub queued_at_s: i64,
}

/// Kinds of event log entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A state change (connection, registration, fail-safe, start/stop).
    State,
    /// An active limit changed; the source says whose.
    Limit,
    /// Something went wrong.
    Error,
    Info,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::State => "state",
            EventKind::Limit => "limit",
            EventKind::Error => "error",
            EventKind::Info => "info",
        }
    }

    fn parse(s: &str) -> EventKind {
        match s {
            "state" => EventKind::State,
            "limit" => EventKind::Limit,
            "error" => EventKind::Error,
            _ => EventKind::Info,
        }
    }
}

/// One event log entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedEvent {
    pub id: i64,
    pub at_s: i64,
    pub kind: EventKind,
    /// Who caused it: an event mRID, "default", "fixed", "tariff", "price", "engine"...
    pub source: String,
    pub text: String,
}

/// What one flush wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushStats {
    /// Rows inserted or replaced.
    pub rows_written: usize,
    /// Rows deleted.
    pub rows_deleted: usize,
}

struct Reading {
    pending: PendingReading,
    /// Whether the row is in the database.
    persisted: bool,
}

struct Loaded {
    resources: BTreeMap<String, CachedResource>,
    settings: BTreeMap<String, String>,
    ledger: BTreeMap<LedgerKey, LedgerEntry>,
    sched: BTreeMap<String, SchedulerEvent>,
    readings: VecDeque<Reading>,
    events: VecDeque<LoggedEvent>,
    event_rows: usize,
}

/// The critical state store. Single owner (the runtime's event loop); every method but
/// `open` and `flush` works on memory only.
pub struct Store {
    conn: Connection,
    path: PathBuf,
    limits: StoreLimits,

    // Bounds. The `dirty_*` sets and `readings_to_delete` are emptied by every flush.
    /// One body per server resource href the engine caches (the resources of the tree
    /// it walks); `retain_resources`/`forget_resource` drop the ones that left it.
    resources: BTreeMap<String, CachedResource>,
    dirty_resources: BTreeSet<String>,
    /// A few keys per resource (poll and post rates, MUP hrefs).
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
    /// At most `limits.max_readings` readings and `limits.max_reading_bytes` of bodies.
    readings: VecDeque<Reading>,
    reading_bytes: usize,
    readings_to_delete: Vec<i64>,
    next_reading_id: i64,
    /// At most `limits.max_events`, the oldest dropped first.
    events: VecDeque<LoggedEvent>,
    /// How many of the newest `events` are not in the database yet.
    unsaved_events: usize,
    /// Rows in the event_log table.
    event_rows: usize,
    next_event_id: i64,

    /// A change that must reach the flash before the caller acts on it.
    urgent: bool,
    last_flush_s: i64,
    last_prune_s: i64,
}

const KEY_REGISTRATION: &str = "registration";
const PREFIX_POLL: &str = "poll_rate_s:";
const PREFIX_POST: &str = "post_rate_s:";
const PREFIX_MUP: &str = "mup:";

impl Store {
    /// Opens (or creates) `dir/csipd.db`. A corrupt or foreign file is moved aside and a
    /// fresh store is returned with a [`Notice`] saying so; `now_s` names the moved file.
    pub fn open(dir: &Path, now_s: i64) -> Result<(Store, Vec<Notice>)> {
        Store::open_with(dir, now_s, StoreLimits::default())
    }

    pub fn open_with(dir: &Path, now_s: i64, limits: StoreLimits) -> Result<(Store, Vec<Notice>)> {
        let path = dir.join(STATE_DB_FILE);
        let (conn, loaded, notices) = open_checked(&path, &schema(), now_s, load)?;
        let next_reading_id = loaded
            .readings
            .back()
            .map(|r| r.pending.id + 1)
            .unwrap_or(1);
        let next_event_id = loaded.events.back().map(|e| e.id + 1).unwrap_or(1);
        let reading_bytes = loaded.readings.iter().map(|r| r.pending.body.len()).sum();
        let mut store = Store {
            conn,
            path,
            limits,
            resources: loaded.resources,
            dirty_resources: BTreeSet::new(),
            settings: loaded.settings,
            dirty_settings: BTreeSet::new(),
            ledger: loaded.ledger,
            dirty_ledger: BTreeSet::new(),
            sched: loaded.sched,
            dirty_sched: BTreeSet::new(),
            readings: loaded.readings,
            reading_bytes,
            readings_to_delete: Vec::new(),
            next_reading_id,
            events: loaded.events,
            unsaved_events: 0,
            event_rows: loaded.event_rows,
            next_event_id,
            urgent: false,
            last_flush_s: now_s,
            last_prune_s: i64::MIN,
        };
        for notice in &notices {
            store.log_event(now_s, EventKind::Error, "store", &notice.to_string());
        }
        if !notices.is_empty() {
            store.flush(now_s)?;
        }
        // Limits may have shrunk since the file was written.
        store.enforce_reading_bounds(now_s);
        Ok((store, notices))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    // ---- server resources -------------------------------------------------------

    /// Remembers the body fetched from `href`. Returns whether it differs from the one
    /// stored (only then is anything written, at the next flush).
    pub fn cache_resource(&mut self, href: &str, body: &[u8], fetched_at_s: i64) -> bool {
        if let Some(cached) = self.resources.get_mut(href)
            && cached.body == body
        {
            cached.checked_at_s = cached.checked_at_s.max(fetched_at_s);
            return false;
        }
        self.resources.insert(
            href.to_string(),
            CachedResource {
                href: href.to_string(),
                body: body.to_vec(),
                fetched_at_s,
                checked_at_s: fetched_at_s,
            },
        );
        self.dirty_resources.insert(href.to_string());
        true
    }

    /// Forgets `href` (the server removed it or rediscovery left it out).
    pub fn forget_resource(&mut self, href: &str) -> bool {
        if self.resources.remove(href).is_some() {
            self.dirty_resources.insert(href.to_string());
            true
        } else {
            false
        }
    }

    /// Forgets every cached resource whose href `keep` rejects.
    pub fn retain_resources(&mut self, mut keep: impl FnMut(&str) -> bool) {
        let gone: Vec<String> = self
            .resources
            .keys()
            .filter(|href| !keep(href))
            .cloned()
            .collect();
        for href in gone {
            self.forget_resource(&href);
        }
    }

    pub fn cached_resource(&self, href: &str) -> Option<&CachedResource> {
        self.resources.get(href)
    }

    /// Every cached resource, by href.
    pub fn cached_resources(&self) -> impl Iterator<Item = &CachedResource> {
        self.resources.values()
    }

    // ---- settings: poll/post rates, MUP hrefs, anything small ---------------------

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

    pub fn forget_setting(&mut self, key: &str) -> bool {
        if self.settings.remove(key).is_some() {
            self.dirty_settings.insert(key.to_string());
            true
        } else {
            false
        }
    }

    /// (key without the prefix, value) of every setting starting with `prefix`.
    fn settings_with_prefix<'a>(
        &'a self,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.settings
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(move |(k, v)| (&k[prefix.len()..], v.as_str()))
    }

    /// The pollRate the server advertised for `href`.
    pub fn set_poll_rate_s(&mut self, href: &str, rate_s: u32) -> bool {
        self.set_setting(&format!("{PREFIX_POLL}{href}"), &rate_s.to_string())
    }

    pub fn poll_rates_s(&self) -> BTreeMap<String, u32> {
        parse_rates(self.settings_with_prefix(PREFIX_POLL))
    }

    /// The postRate of the MUP at `href`.
    pub fn set_post_rate_s(&mut self, href: &str, rate_s: u32) -> bool {
        self.set_setting(&format!("{PREFIX_POST}{href}"), &rate_s.to_string())
    }

    pub fn post_rates_s(&self) -> BTreeMap<String, u32> {
        parse_rates(self.settings_with_prefix(PREFIX_POST))
    }

    /// The href of a mirror usage point by its role ("site", "der", ...).
    pub fn set_mup_href(&mut self, role: &str, href: &str) -> bool {
        self.set_setting(&format!("{PREFIX_MUP}{role}"), href)
    }

    pub fn forget_mup_href(&mut self, role: &str) -> bool {
        self.forget_setting(&format!("{PREFIX_MUP}{role}"))
    }

    pub fn mup_hrefs(&self) -> BTreeMap<String, String> {
        self.settings_with_prefix(PREFIX_MUP)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    // ---- registration ----------------------------------------------------------

    pub fn save_registration(&mut self, registration: &Registration) -> bool {
        // Serialising plain strings and numbers cannot fail.
        let json = serde_json::to_string(registration).unwrap_or_default();
        self.set_setting(KEY_REGISTRATION, &json)
    }

    pub fn clear_registration(&mut self) -> bool {
        self.forget_setting(KEY_REGISTRATION)
    }

    /// The stored registration; `None` when none was saved or the stored one does not
    /// read back (it is then logged and ignored: the engine registers again).
    pub fn registration(&self) -> Option<Registration> {
        let json = self.setting(KEY_REGISTRATION)?;
        match serde_json::from_str(json) {
            Ok(r) => Some(r),
            Err(e) => {
                log::warn!(
                    "{}: stored registration does not read back ({e}); ignoring it",
                    self.path.display()
                );
                None
            }
        }
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

    // ---- unsent readings ---------------------------------------------------------

    /// Queues a reading body for `href`; returns its id. Over the bounds, the oldest
    /// readings are dropped (logged).
    pub fn queue_reading(&mut self, href: &str, body: &[u8], now_s: i64) -> i64 {
        let id = self.next_reading_id;
        self.next_reading_id += 1;
        self.reading_bytes += body.len();
        self.readings.push_back(Reading {
            pending: PendingReading {
                id,
                href: href.to_string(),
                body: body.to_vec(),
                queued_at_s: now_s,
            },
            persisted: false,
        });
        self.enforce_reading_bounds(now_s);
        id
    }

    fn enforce_reading_bounds(&mut self, now_s: i64) {
        let mut dropped = 0usize;
        while self.readings.len() > 1
            && (self.readings.len() > self.limits.max_readings
                || self.reading_bytes > self.limits.max_reading_bytes)
        {
            if let Some(old) = self.readings.pop_front() {
                self.reading_bytes -= old.pending.body.len();
                if old.persisted {
                    self.readings_to_delete.push(old.pending.id);
                }
                dropped += 1;
            }
        }
        if dropped > 0 {
            let text = format!(
                "dropped the {dropped} oldest unsent reading(s): the buffer holds at most {} readings and {} bytes",
                self.limits.max_readings, self.limits.max_reading_bytes
            );
            log::warn!("{text}");
            self.log_event(now_s, EventKind::Error, "readings", &text);
        }
    }

    /// Up to `limit` unsent readings, oldest first.
    pub fn pending_readings(&self, limit: usize) -> Vec<PendingReading> {
        self.readings
            .iter()
            .take(limit)
            .map(|r| r.pending.clone())
            .collect()
    }

    pub fn pending_reading_count(&self) -> usize {
        self.readings.len()
    }

    /// The server took reading `id`; returns whether it was still queued.
    pub fn ack_reading(&mut self, id: i64) -> bool {
        let Some(pos) = self.readings.iter().position(|r| r.pending.id == id) else {
            return false;
        };
        if let Some(r) = self.readings.remove(pos) {
            self.reading_bytes -= r.pending.body.len();
            if r.persisted {
                self.readings_to_delete.push(id);
            }
        }
        true
    }

    // ---- event log ---------------------------------------------------------------

    /// Appends to the event log (bounded; the oldest go first).
    pub fn log_event(&mut self, at_s: i64, kind: EventKind, source: &str, text: &str) {
        let event = LoggedEvent {
            id: self.next_event_id,
            at_s,
            kind,
            source: source.to_string(),
            text: text.to_string(),
        };
        self.next_event_id += 1;
        self.events.push_back(event);
        self.unsaved_events += 1;
        while self.events.len() > self.limits.max_events {
            self.events.pop_front();
        }
        self.unsaved_events = self.unsaved_events.min(self.events.len());
    }

    /// The newest `n` events, oldest first.
    pub fn recent_events(&self, n: usize) -> Vec<LoggedEvent> {
        let skip = self.events.len().saturating_sub(n);
        self.events.iter().skip(skip).cloned().collect()
    }

    // ---- writing -----------------------------------------------------------------

    /// Whether anything in memory differs from the file (aged readings included).
    pub fn is_dirty(&self, now_s: i64) -> bool {
        !self.dirty_resources.is_empty()
            || !self.dirty_settings.is_empty()
            || !self.dirty_ledger.is_empty()
            || !self.dirty_sched.is_empty()
            || !self.readings_to_delete.is_empty()
            || self.unsaved_events > 0
            || self
                .readings
                .iter()
                .any(|r| self.reading_needs_saving(r, now_s))
    }

    /// Whether an urgent change (ledger, new event draws) waits for a flush.
    pub fn is_urgent(&self) -> bool {
        self.urgent
    }

    fn reading_needs_saving(&self, r: &Reading, now_s: i64) -> bool {
        !r.persisted && reading_aged(r, now_s, self.limits.reading_persist_age_s)
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
        let changes = !self.dirty_resources.is_empty()
            || !self.dirty_settings.is_empty()
            || !self.dirty_ledger.is_empty()
            || !self.dirty_sched.is_empty()
            || !self.readings_to_delete.is_empty()
            || self.unsaved_events > 0;
        let reading_due = self.readings.iter().find(|r| !r.persisted).map(|r| {
            if now_s < r.pending.queued_at_s {
                now_s
            } else {
                (r.pending.queued_at_s + self.limits.reading_persist_age_s).max(interval_due)
            }
        });
        match (changes, reading_due) {
            (true, Some(r)) => Some(interval_due.min(r)),
            (true, None) => Some(interval_due),
            (false, r) => r,
        }
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
        if !self.is_dirty(now_s) {
            self.urgent = false;
            self.last_flush_s = now_s;
            return Ok(FlushStats::default());
        }
        let stats = self
            .write_changes(now_s)
            .map_err(|e| StoreError::new(&self.path, format!("writing the state failed: {e}")))?;
        // Committed: memory and file agree again.
        self.dirty_resources.clear();
        self.dirty_settings.clear();
        self.dirty_ledger.clear();
        self.dirty_sched.clear();
        self.readings_to_delete.clear();
        let persist_age = self.limits.reading_persist_age_s;
        for r in self.readings.iter_mut() {
            if reading_aged(r, now_s, persist_age) {
                r.persisted = true;
            }
        }
        self.event_rows += self.unsaved_events;
        if self.event_rows > self.limits.max_events + self.limits.max_events / 10 {
            self.event_rows = self.limits.max_events;
        }
        self.unsaved_events = 0;
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

    fn write_changes(&self, now_s: i64) -> rusqlite::Result<FlushStats> {
        let mut stats = FlushStats::default();
        let tx = self.conn.unchecked_transaction()?;
        for href in &self.dirty_resources {
            match self.resources.get(href) {
                Some(r) => {
                    tx.prepare_cached(
                        "INSERT INTO resource(href, body, fetched_at_s) VALUES (?1, ?2, ?3)
                         ON CONFLICT(href) DO UPDATE SET body = ?2, fetched_at_s = ?3",
                    )?
                    .execute(params![href, r.body, r.fetched_at_s])?;
                    stats.rows_written += 1;
                }
                None => {
                    stats.rows_deleted += tx
                        .prepare_cached("DELETE FROM resource WHERE href = ?1")?
                        .execute([href])?;
                }
            }
        }
        for key in &self.dirty_settings {
            match self.settings.get(key) {
                Some(v) => {
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO setting(key, value) VALUES (?1, ?2)",
                    )?
                    .execute([key, v])?;
                    stats.rows_written += 1;
                }
                None => {
                    stats.rows_deleted += tx
                        .prepare_cached("DELETE FROM setting WHERE key = ?1")?
                        .execute([key])?;
                }
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
        for id in &self.readings_to_delete {
            stats.rows_deleted += tx
                .prepare_cached("DELETE FROM reading WHERE id = ?1")?
                .execute([id])?;
        }
        for r in &self.readings {
            if self.reading_needs_saving(r, now_s) {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO reading(id, href, body, queued_at_s)
                     VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![
                    r.pending.id,
                    r.pending.href,
                    r.pending.body,
                    r.pending.queued_at_s
                ])?;
                stats.rows_written += 1;
            }
        }
        let unsaved_from = self.events.len() - self.unsaved_events;
        for e in self.events.iter().skip(unsaved_from) {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO event_log(id, at_s, kind, source, text)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![e.id, e.at_s, e.kind.as_str(), e.source, e.text])?;
            stats.rows_written += 1;
        }
        // Trim the log in batches (every ~10% of its size), not a row per insert.
        if self.event_rows + self.unsaved_events
            > self.limits.max_events + self.limits.max_events / 10
            && let Some(newest) = self.events.back()
        {
            let keep_from = newest.id - self.limits.max_events as i64 + 1;
            stats.rows_deleted += tx
                .prepare_cached("DELETE FROM event_log WHERE id < ?1")?
                .execute([keep_from])?;
        }
        tx.commit()?;
        Ok(stats)
    }
}

/// Old enough to be written; a reading from the future (the clock stepped back since)
/// is written too, its age being unknown.
fn reading_aged(r: &Reading, now_s: i64, persist_age_s: i64) -> bool {
    let age_s = now_s - r.pending.queued_at_s;
    age_s >= persist_age_s || age_s < 0
}

fn parse_rates<'a>(it: impl Iterator<Item = (&'a str, &'a str)>) -> BTreeMap<String, u32> {
    it.filter_map(|(k, v)| v.parse().ok().map(|rate| (k.to_string(), rate)))
        .collect()
}

fn load(conn: &Connection) -> rusqlite::Result<Loaded> {
    let mut resources = BTreeMap::new();
    {
        let mut stmt = conn.prepare("SELECT href, body, fetched_at_s FROM resource")?;
        let rows = stmt.query_map([], |r| {
            Ok(CachedResource {
                href: r.get(0)?,
                body: r.get(1)?,
                fetched_at_s: r.get(2)?,
                checked_at_s: r.get(2)?,
            })
        })?;
        for row in rows {
            let row = row?;
            resources.insert(row.href.clone(), row);
        }
    }
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
    let mut readings = VecDeque::new();
    {
        let mut stmt =
            conn.prepare("SELECT id, href, body, queued_at_s FROM reading ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(Reading {
                pending: PendingReading {
                    id: r.get(0)?,
                    href: r.get(1)?,
                    body: r.get(2)?,
                    queued_at_s: r.get(3)?,
                },
                persisted: true,
            })
        })?;
        for row in rows {
            readings.push_back(row?);
        }
    }
    let mut events = VecDeque::new();
    {
        let mut stmt =
            conn.prepare("SELECT id, at_s, kind, source, text FROM event_log ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(LoggedEvent {
                id: r.get(0)?,
                at_s: r.get(1)?,
                kind: EventKind::parse(&r.get::<_, String>(2)?),
                source: r.get(3)?,
                text: r.get(4)?,
            })
        })?;
        for row in rows {
            events.push_back(row?);
        }
    }
    let event_rows = events.len();
    Ok(Loaded {
        resources,
        settings,
        ledger,
        sched,
        readings,
        events,
        event_rows,
    })
}
