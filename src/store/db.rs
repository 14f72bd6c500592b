//! Opening a database file safely: integrity and ownership checks, moving a bad file
//! aside (never deleting it), schema migrations by `user_version`.

use std::fmt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{Result, StoreError, utc_stamp};

/// Why a database file was moved aside at open.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoticeKind {
    /// Not a database, or damaged (`quick_check` failed, a read hit corruption).
    Corrupt,
    /// A sound SQLite database that is not ours (other `application_id`, other tables,
    /// or a newer schema than this csipd knows).
    Foreign,
}

/// Something the operator must hear about from opening a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub kind: NoticeKind,
    /// The file that was found bad.
    pub path: PathBuf,
    /// Where it is now.
    pub moved_to: PathBuf,
    /// What was wrong, in SQLite's or our words.
    pub reason: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            NoticeKind::Corrupt => "is corrupt",
            NoticeKind::Foreign => "is not a csipd database",
        };
        write!(
            f,
            "{}: {what} ({}); moved aside to {} and started a new empty one",
            self.path.display(),
            self.reason,
            self.moved_to.display()
        )
    }
}

/// How a database file is laid out and kept.
pub(crate) struct Schema {
    /// `PRAGMA application_id`: tells our files from anyone else's.
    pub app_id: i32,
    /// `migrations[i]` takes `user_version` i to i + 1; the current version is its length.
    pub migrations: &'static [&'static str],
    /// Set on a new file only (SQLite cannot change it in WAL mode).
    pub page_size: u32,
    /// `NORMAL` or `FULL` (see the README section "Durable state").
    pub synchronous: &'static str,
    /// `PRAGMA auto_vacuum=INCREMENTAL` on a new file, so deleted rows can give their
    /// space back (telemetry on tmpfs costs RAM).
    pub incremental_vacuum: bool,
    /// `PRAGMA wal_autocheckpoint` (pages): bounds the WAL file, which is flash space
    /// (or RAM on tmpfs); the file is truncated back to `journal_size_limit` after each
    /// checkpoint.
    pub wal_autocheckpoint_pages: u32,
}

impl Schema {
    pub fn version(&self) -> i32 {
        self.migrations.len() as i32
    }
}

enum Failure {
    Bad(NoticeKind, String),
    Fatal(String),
}

fn classify(e: rusqlite::Error) -> Failure {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => {
            Failure::Bad(NoticeKind::Corrupt, e.to_string())
        }
        _ => Failure::Fatal(e.to_string()),
    }
}

/// Opens `path` for `schema`, loading its content with `load`. A corrupt or foreign
/// file is moved aside and replaced by a fresh one; any other problem (permissions,
/// a full disk, another process holding the lock) is an error and the file is left
/// alone.
pub(crate) fn open_checked<T>(
    path: &Path,
    schema: &Schema,
    now_s: i64,
    load: impl Fn(&Connection) -> rusqlite::Result<T>,
) -> Result<(Connection, T, Vec<Notice>)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::new(dir, format!("cannot create the directory: {e}")))?;
    }
    let mut notices = Vec::new();
    match try_open(path, schema, &load) {
        Ok((conn, loaded)) => return Ok((conn, loaded, notices)),
        Err(Failure::Fatal(message)) => return Err(StoreError::new(path, message)),
        Err(Failure::Bad(kind, reason)) => {
            let moved_to = move_aside(path, kind, now_s)?;
            let notice = Notice {
                kind,
                path: path.to_path_buf(),
                moved_to,
                reason,
            };
            log::error!("{notice}");
            notices.push(notice);
        }
    }
    match try_open(path, schema, &load) {
        Ok((conn, loaded)) => Ok((conn, loaded, notices)),
        Err(Failure::Fatal(message)) | Err(Failure::Bad(_, message)) => Err(StoreError::new(
            path,
            format!("a new database could not be created: {message}"),
        )),
    }
}

fn try_open<T>(
    path: &Path,
    schema: &Schema,
    load: &impl Fn(&Connection) -> rusqlite::Result<T>,
) -> std::result::Result<(Connection, T), Failure> {
    precheck(path)?;
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(classify)?;
    // One process owns the file; in exclusive mode WAL needs no shared-memory file
    // (no -shm on flash) and a second csipd gets "database is locked" instead of
    // writing beside us.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(classify)?;
    // The first read of the header: garbage gives NotADatabase here.
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(classify)?;
    let app_id: i32 = conn
        .query_row("PRAGMA application_id", [], |r| r.get(0))
        .map_err(classify)?;
    let version: i32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(classify)?;
    let fresh = objects == 0 && app_id == 0 && version == 0;
    // Judge the file before changing anything in it: a file moved aside stays exactly
    // as it was found.
    if !fresh {
        let problems = quick_check(&conn)?;
        if !problems.is_empty() {
            return Err(Failure::Bad(
                NoticeKind::Corrupt,
                format!("quick_check: {}", problems.join("; ")),
            ));
        }
        if app_id != schema.app_id {
            return Err(Failure::Bad(
                NoticeKind::Foreign,
                format!(
                    "application_id is {app_id:#010x}, csipd's is {:#010x}",
                    schema.app_id
                ),
            ));
        }
        if version > schema.version() {
            return Err(Failure::Bad(
                NoticeKind::Foreign,
                format!(
                    "schema version {version} was written by a newer csipd; this one knows up to {}",
                    schema.version()
                ),
            ));
        }
    } else {
        conn.pragma_update(None, "page_size", schema.page_size)
            .map_err(classify)?;
        if schema.incremental_vacuum {
            conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")
                .map_err(classify)?;
        }
    }
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .map_err(classify)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Failure::Fatal(format!(
            "cannot use a write-ahead log (journal_mode is {mode})"
        )));
    }
    conn.pragma_update(None, "synchronous", schema.synchronous)
        .map_err(classify)?;
    conn.pragma_update(None, "temp_store", "MEMORY")
        .map_err(classify)?;
    conn.pragma_update(None, "wal_autocheckpoint", schema.wal_autocheckpoint_pages)
        .map_err(classify)?;
    let wal_limit_bytes = i64::from(schema.wal_autocheckpoint_pages) * i64::from(schema.page_size);
    conn.pragma_update(None, "journal_size_limit", wal_limit_bytes)
        .map_err(classify)?;
    // Small working set; keep the page cache small on a router.
    conn.pragma_update(None, "cache_size", -256)
        .map_err(classify)?;
    migrate(&conn, schema, if fresh { 0 } else { version })?;
    let loaded = load(&conn).map_err(|e| match classify(e) {
        Failure::Bad(kind, reason) => Failure::Bad(kind, format!("reading it: {reason}")),
        Failure::Fatal(reason) => Failure::Fatal(reason),
    })?;
    Ok((conn, loaded))
}

/// Looks at the file before SQLite does: SQLite silently deletes a WAL that sits next to
/// a main file shorter than one page, which would destroy evidence (or data).
fn precheck(path: &Path) -> std::result::Result<(), Failure> {
    let len = match std::fs::metadata(path) {
        Ok(meta) => meta.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Failure::Fatal(e.to_string())),
    };
    let wal_len = std::fs::metadata(format!("{}-wal", path.display()))
        .map(|m| m.len())
        .unwrap_or(0);
    if len == 0 {
        if wal_len > 0 {
            return Err(Failure::Bad(
                NoticeKind::Corrupt,
                format!("the file is empty but its write-ahead log holds {wal_len} bytes"),
            ));
        }
        return Ok(());
    }
    let mut header = Vec::with_capacity(100);
    std::fs::File::open(path)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, 100), &mut header))
        .map_err(|e| Failure::Fatal(e.to_string()))?;
    let read = header.len();
    if read < 100 || !header.starts_with(b"SQLite format 3\0") {
        return Err(Failure::Bad(
            NoticeKind::Corrupt,
            format!("file is not a database: no SQLite header in its first {read} bytes"),
        ));
    }
    Ok(())
}

/// Up to 5 lines of `PRAGMA quick_check` that are not "ok".
fn quick_check(conn: &Connection) -> std::result::Result<Vec<String>, Failure> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)").map_err(classify)?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(classify)?;
    let mut problems = Vec::new();
    for row in rows {
        let line = row.map_err(classify)?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}

fn migrate(conn: &Connection, schema: &Schema, from: i32) -> std::result::Result<(), Failure> {
    if from >= schema.version() {
        return Ok(());
    }
    let tx = conn.unchecked_transaction().map_err(classify)?;
    for (i, sql) in schema.migrations.iter().enumerate().skip(from as usize) {
        tx.execute_batch(sql)
            .map_err(|e| Failure::Fatal(format!("schema migration {} -> {}: {e}", i, i + 1)))?;
    }
    tx.pragma_update(None, "application_id", schema.app_id)
        .map_err(classify)?;
    tx.pragma_update(None, "user_version", schema.version())
        .map_err(classify)?;
    tx.commit().map_err(classify)?;
    if from > 0 {
        log::info!(
            "database schema migrated from version {from} to {}",
            schema.version()
        );
    }
    Ok(())
}

/// Renames `path` (and its `-wal`/`-shm`, which belong to it: a stale WAL next to a new
/// file would be replayed into it) to `path.corrupt-<stamp>` or `path.foreign-<stamp>`.
fn move_aside(path: &Path, kind: NoticeKind, now_s: i64) -> Result<PathBuf> {
    let label = match kind {
        NoticeKind::Corrupt => "corrupt",
        NoticeKind::Foreign => "foreign",
    };
    let base = format!("{}.{label}-{}", path.display(), utc_stamp(now_s));
    let mut target = PathBuf::from(&base);
    let mut n = 2;
    while target.exists() {
        target = PathBuf::from(format!("{base}-{n}"));
        n += 1;
    }
    std::fs::rename(path, &target).map_err(|e| {
        StoreError::new(
            path,
            format!(
                "is {label} and could not be moved aside to {}: {e}",
                target.display()
            ),
        )
    })?;
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", path.display()));
        if side.exists() {
            let side_target = PathBuf::from(format!("{}{suffix}", target.display()));
            std::fs::rename(&side, &side_target).map_err(|e| {
                StoreError::new(
                    &side,
                    format!("could not be moved aside to {}: {e}", side_target.display()),
                )
            })?;
        }
    }
    Ok(target)
}
