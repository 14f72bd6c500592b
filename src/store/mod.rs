//! Durable state in SQLite, with flash-friendly writes.
//!
//! Two databases, two policies:
//!
//! - [`Store`]: the critical state in `data_dir/csipd.db` (persistent flash): the
//!   response ledger, the scheduler's per-event records with their randomisation
//!   draws, and small settings (the last utility controls). Every change lands in
//!   memory first; [`Store::flush`] writes only what changed, in one transaction, and
//!   the runtime calls it when [`Store::flush_due`] says so (at most every
//!   `flush_interval_s`, at once for ledger entries and new draws).
//! - [`Telemetry`]: per-second samples kept in RAM, rolled into per-minute rows in
//!   `telemetry_dir/telemetry.db` (tmpfs by default), bounded by age and size.
//!
//! At open, a file that is not a database, fails `PRAGMA quick_check`, or belongs to
//! someone else (another `application_id`, or a newer schema) is renamed to
//! `NAME.corrupt-<UTC time>` / `NAME.foreign-<UTC time>` (with its `-wal`/`-shm`),
//! never deleted, a [`Notice`] says so, and a fresh database is created.
//!
//! Time is passed in as Unix seconds (`_s`), never read here.

mod db;
mod schedule_state;
mod state;
mod telemetry;
#[cfg(test)]
mod tests;

pub use db::{Notice, NoticeKind};
pub use schedule_state::{ledger_key, response_status};
pub use state::{
    FlushStats, LedgerEntry, LedgerKey, LedgerOutcome, STATE_DB_FILE, SchedulerEvent, Store,
    StoreLimits,
};
pub use telemetry::{
    InverterMinute, InverterSample, MinuteRow, Sample, TELEMETRY_DB_FILE, Telemetry,
    TelemetryLimits,
};

use std::fmt;
use std::path::PathBuf;

/// A store error: what failed and on which file.
#[derive(Debug)]
pub struct StoreError {
    pub path: PathBuf,
    pub message: String,
}

impl StoreError {
    pub(crate) fn new(path: impl Into<PathBuf>, message: impl Into<String>) -> StoreError {
        StoreError {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// `20261122T041500Z` for Unix seconds (proleptic Gregorian, UTC).
pub fn utc_stamp(unix_s: i64) -> String {
    let days = unix_s.div_euclid(86_400);
    let secs = unix_s.rem_euclid(86_400);
    // The one civil-date routine.
    let (year, month, day) = crate::control::tz::civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
