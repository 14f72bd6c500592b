//! Telemetry: per-second samples in RAM, rolled into per-minute rows in
//! `telemetry_dir/telemetry.db` (tmpfs by default, a USB path when configured),
//! bounded by age and file size.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use super::db::{Notice, Schema, open_checked};
use super::{Result, StoreError};

/// File name of the telemetry database inside `telemetry_dir`.
pub const TELEMETRY_DB_FILE: &str = "telemetry.db";

/// "CSPT" in ASCII.
const APP_ID: i32 = 0x4353_5054;

const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE minute(
         minute_s INTEGER PRIMARY KEY,
         samples INTEGER NOT NULL,
         site_w_avg REAL,
         site_w_min REAL,
         site_w_max REAL,
         export_limit_w REAL);
     CREATE TABLE inverter_minute(
         minute_s INTEGER NOT NULL,
         name TEXT NOT NULL,
         w_avg REAL,
         setpoint_w REAL,
         PRIMARY KEY(minute_s, name)) WITHOUT ROWID;",
];

fn schema() -> Schema {
    Schema {
        app_id: APP_ID,
        migrations: MIGRATIONS,
        page_size: 4096,
        // Losing the last minute on a power cut is fine; NORMAL in WAL mode still never
        // corrupts the file (matters on a USB stick).
        synchronous: "NORMAL",
        incremental_vacuum: true,
        // 256 KiB of WAL at most: it lives in RAM on tmpfs.
        wal_autocheckpoint_pages: 64,
    }
}

/// Bounds of the telemetry store.
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetryLimits {
    /// Per-minute rows older than this are deleted.
    pub retention_s: i64,
    /// Largest database file; the oldest rows go first beyond it.
    pub max_bytes: u64,
    /// Per-second samples kept in RAM for the live view.
    pub ram_samples: usize,
}

impl Default for TelemetryLimits {
    fn default() -> Self {
        TelemetryLimits {
            retention_s: 7 * 86_400,
            max_bytes: 8 * 1024 * 1024,
            ram_samples: 900,
        }
    }
}

/// One inverter in a sample.
#[derive(Clone, Debug, PartialEq)]
pub struct InverterSample {
    pub name: String,
    /// Active power output (negative while a battery charges); `None` if not read.
    pub w: Option<f64>,
    /// The setpoint csipd gave it; `None` if none.
    pub setpoint_w: Option<f64>,
}

/// One control-cycle sample.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub at_s: i64,
    /// Site active power at the connection point, import positive; `None` if stale.
    pub site_w: Option<f64>,
    /// The export limit in force (the tightest of all sources); `None` if none.
    pub export_limit_w: Option<f64>,
    pub inverters: Vec<InverterSample>,
}

/// One inverter over one minute.
#[derive(Clone, Debug, PartialEq)]
pub struct InverterMinute {
    pub name: String,
    pub w_avg: Option<f64>,
    /// The last setpoint of the minute.
    pub setpoint_w: Option<f64>,
}

/// One minute of telemetry.
#[derive(Clone, Debug, PartialEq)]
pub struct MinuteRow {
    /// Start of the minute, Unix seconds (a multiple of 60).
    pub minute_s: i64,
    pub samples: u32,
    pub site_w_avg: Option<f64>,
    pub site_w_min: Option<f64>,
    pub site_w_max: Option<f64>,
    /// The tightest export limit of the minute.
    pub export_limit_w: Option<f64>,
    pub inverters: Vec<InverterMinute>,
}

#[derive(Default)]
struct Mean {
    sum: f64,
    n: u32,
}

impl Mean {
    fn add(&mut self, v: Option<f64>) {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            self.sum += v;
            self.n += 1;
        }
    }

    fn get(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / f64::from(self.n))
    }
}

struct Accumulator {
    minute_s: i64,
    samples: u32,
    site: Mean,
    site_min: Option<f64>,
    site_max: Option<f64>,
    export_limit_w: Option<f64>,
    inverters: Vec<(String, Mean, Option<f64>)>,
}

impl Accumulator {
    fn new(minute_s: i64) -> Accumulator {
        Accumulator {
            minute_s,
            samples: 0,
            site: Mean::default(),
            site_min: None,
            site_max: None,
            export_limit_w: None,
            inverters: Vec::new(),
        }
    }

    fn add(&mut self, s: &Sample) {
        self.samples += 1;
        self.site.add(s.site_w);
        if let Some(w) = s.site_w.filter(|w| w.is_finite()) {
            self.site_min = Some(self.site_min.map_or(w, |m| m.min(w)));
            self.site_max = Some(self.site_max.map_or(w, |m| m.max(w)));
        }
        if let Some(l) = s.export_limit_w.filter(|l| l.is_finite()) {
            self.export_limit_w = Some(self.export_limit_w.map_or(l, |m| m.min(l)));
        }
        for inv in &s.inverters {
            let slot = match self.inverters.iter().position(|(n, _, _)| *n == inv.name) {
                Some(i) => i,
                None => {
                    self.inverters
                        .push((inv.name.clone(), Mean::default(), None));
                    self.inverters.len() - 1
                }
            };
            let (_, mean, setpoint) = &mut self.inverters[slot];
            mean.add(inv.w);
            if inv.setpoint_w.is_some() {
                *setpoint = inv.setpoint_w;
            }
        }
    }

    fn row(&self) -> MinuteRow {
        MinuteRow {
            minute_s: self.minute_s,
            samples: self.samples,
            site_w_avg: self.site.get(),
            site_w_min: self.site_min,
            site_w_max: self.site_max,
            export_limit_w: self.export_limit_w,
            inverters: self
                .inverters
                .iter()
                .map(|(name, mean, setpoint)| InverterMinute {
                    name: name.clone(),
                    w_avg: mean.get(),
                    setpoint_w: *setpoint,
                })
                .collect(),
        }
    }
}

/// The telemetry store.
pub struct Telemetry {
    conn: Connection,
    path: PathBuf,
    limits: TelemetryLimits,
    /// The newest samples (one per control cycle): at most `limits.ram_samples` (900 by
    /// default, 15 minutes at the 1 s cycle), the oldest dropped first.
    recent: VecDeque<Sample>,
    current: Option<Accumulator>,
    last_prune_s: i64,
}

impl Telemetry {
    /// Opens (or creates) `dir/telemetry.db`; a corrupt or foreign file is moved aside.
    pub fn open(dir: &Path, now_s: i64) -> Result<(Telemetry, Vec<Notice>)> {
        Telemetry::open_with(dir, now_s, TelemetryLimits::default())
    }

    pub fn open_with(
        dir: &Path,
        now_s: i64,
        limits: TelemetryLimits,
    ) -> Result<(Telemetry, Vec<Notice>)> {
        let path = dir.join(TELEMETRY_DB_FILE);
        let (conn, (), notices) = open_checked(&path, &schema(), now_s, |conn| {
            conn.query_row("SELECT count(*) FROM minute", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
        })?;
        Ok((
            Telemetry {
                conn,
                path,
                limits,
                recent: VecDeque::new(),
                current: None,
                last_prune_s: i64::MIN,
            },
            notices,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a sample. When it opens a new minute, the finished minute is written as
    /// one row (one transaction per minute). A sample from an earlier minute (the
    /// clock stepped back) closes the current minute too; a row for a minute that
    /// already exists is replaced.
    pub fn record_sample(&mut self, sample: Sample) -> Result<()> {
        let minute_s = sample.at_s.div_euclid(60) * 60;
        let result = match &self.current {
            Some(acc) if acc.minute_s != minute_s => self.roll(sample.at_s),
            _ => Ok(()),
        };
        self.current
            .get_or_insert_with(|| Accumulator::new(minute_s))
            .add(&sample);
        self.recent.push_back(sample);
        while self.recent.len() > self.limits.ram_samples {
            self.recent.pop_front();
        }
        result
    }

    /// Writes the current, unfinished minute (at shutdown).
    pub fn flush(&mut self, now_s: i64) -> Result<()> {
        self.roll(now_s)
    }

    fn roll(&mut self, now_s: i64) -> Result<()> {
        let Some(acc) = self.current.take() else {
            return Ok(());
        };
        let row = acc.row();
        self.write_row(&row, now_s)
            .map_err(|e| StoreError::new(&self.path, format!("writing telemetry failed: {e}")))
    }

    fn write_row(&mut self, row: &MinuteRow, now_s: i64) -> rusqlite::Result<()> {
        let tx = self.conn.unchecked_transaction()?;
        tx.prepare_cached(
            "INSERT OR REPLACE INTO minute(minute_s, samples, site_w_avg, site_w_min,
                 site_w_max, export_limit_w) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            row.minute_s,
            row.samples,
            row.site_w_avg,
            row.site_w_min,
            row.site_w_max,
            row.export_limit_w
        ])?;
        tx.prepare_cached("DELETE FROM inverter_minute WHERE minute_s = ?1")?
            .execute([row.minute_s])?;
        for inv in &row.inverters {
            tx.prepare_cached(
                "INSERT INTO inverter_minute(minute_s, name, w_avg, setpoint_w)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![row.minute_s, inv.name, inv.w_avg, inv.setpoint_w])?;
        }
        let mut deleted = 0;
        if now_s.saturating_sub(self.last_prune_s) >= 3600 {
            let cutoff = now_s - self.limits.retention_s;
            deleted += tx.execute("DELETE FROM minute WHERE minute_s < ?1", [cutoff])?;
            tx.execute("DELETE FROM inverter_minute WHERE minute_s < ?1", [cutoff])?;
            self.last_prune_s = now_s;
        }
        if self.size_bytes_in(&tx)? > self.limits.max_bytes {
            // Oldest tenth of the rows first.
            let rows: i64 = tx.query_row("SELECT count(*) FROM minute", [], |r| r.get(0))?;
            let cut: Option<i64> = tx.query_row(
                "SELECT minute_s FROM minute ORDER BY minute_s LIMIT 1 OFFSET ?1",
                [(rows / 10).max(1)],
                |r| r.get(0),
            )?;
            if let Some(cut) = cut {
                deleted += tx.execute("DELETE FROM minute WHERE minute_s < ?1", [cut])?;
                tx.execute("DELETE FROM inverter_minute WHERE minute_s < ?1", [cut])?;
                log::info!(
                    "{}: over {} bytes, dropped telemetry before {cut}",
                    self.path.display(),
                    self.limits.max_bytes
                );
            }
        }
        tx.commit()?;
        if deleted > 0 {
            // Give freed pages back to the file system (RAM on tmpfs).
            self.conn.execute_batch("PRAGMA incremental_vacuum")?;
        }
        Ok(())
    }

    fn size_bytes_in(&self, conn: &Connection) -> rusqlite::Result<u64> {
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let page_size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * page_size) as u64)
    }

    /// Bytes of the database in use (pages holding data).
    pub fn size_bytes(&self) -> Result<u64> {
        self.size_bytes_in(&self.conn)
            .map_err(|e| StoreError::new(&self.path, e.to_string()))
    }

    /// The per-second samples still in RAM, oldest first.
    pub fn recent_samples(&self) -> impl Iterator<Item = &Sample> {
        self.recent.iter()
    }

    /// Per-minute rows with `from_s <= minute_s < to_s`, oldest first (the unfinished
    /// current minute included when in range).
    pub fn minutes(&self, from_s: i64, to_s: i64) -> Result<Vec<MinuteRow>> {
        let mut rows = self
            .read_minutes(from_s, to_s)
            .map_err(|e| StoreError::new(&self.path, format!("reading telemetry: {e}")))?;
        if let Some(acc) = &self.current
            && acc.minute_s >= from_s
            && acc.minute_s < to_s
        {
            rows.retain(|r| r.minute_s != acc.minute_s);
            rows.push(acc.row());
        }
        Ok(rows)
    }

    fn read_minutes(&self, from_s: i64, to_s: i64) -> rusqlite::Result<Vec<MinuteRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT minute_s, samples, site_w_avg, site_w_min, site_w_max, export_limit_w
             FROM minute WHERE minute_s >= ?1 AND minute_s < ?2 ORDER BY minute_s",
        )?;
        let mut rows: Vec<MinuteRow> = stmt
            .query_map([from_s, to_s], |r| {
                Ok(MinuteRow {
                    minute_s: r.get(0)?,
                    samples: r.get(1)?,
                    site_w_avg: r.get(2)?,
                    site_w_min: r.get(3)?,
                    site_w_max: r.get(4)?,
                    export_limit_w: r.get(5)?,
                    inverters: Vec::new(),
                })
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut inv = self.conn.prepare_cached(
            "SELECT minute_s, name, w_avg, setpoint_w FROM inverter_minute
             WHERE minute_s >= ?1 AND minute_s < ?2 ORDER BY minute_s, name",
        )?;
        let invs = inv.query_map([from_s, to_s], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                InverterMinute {
                    name: r.get(1)?,
                    w_avg: r.get(2)?,
                    setpoint_w: r.get(3)?,
                },
            ))
        })?;
        let mut i = 0;
        for item in invs {
            let (minute_s, m) = item?;
            while i < rows.len() && rows[i].minute_s < minute_s {
                i += 1;
            }
            if i < rows.len() && rows[i].minute_s == minute_s {
                rows[i].inverters.push(m);
            }
        }
        Ok(rows)
    }
}
