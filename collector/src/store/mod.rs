//! SQLite storage: one writer connection for ingest, a small pool of read-only connections
//! for queries. WAL mode, `synchronous = FULL`: a batch the collector acknowledged survives
//! power loss, because the uploader drops it from its queue as soon as it sees the answer.
//!
//! Dedupe happens twice, both inside the ingest transaction: by batch id (a resent batch is
//! answered `duplicate` and nothing is written) and by record position (log, segment, offset;
//! equivalently the record id), so a record that arrives again in a batch with different
//! boundaries, e.g. after the uploader's batch size changed, is stored once.

mod device_views;
mod query;
mod schema;
pub mod views;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use protocol::{Batch, BatchId};
use records::RecordId;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use segment_log::Position;
use sha2::{Digest, Sha256};

pub use device_views::{DeviceRow, DeviceView};
pub use query::{Cursor, GapRow, RecordPage, RecordQuery, RecordRow, Stats, TimeBound};
pub use schema::latest_version;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "collector.sqlite3";
/// Idle read connections kept open (more are opened on demand and closed after use).
const READ_POOL: usize = 4;
/// How long a connection waits on a lock held by another before failing.
const BUSY_TIMEOUT_MS: u64 = 10_000;
/// Page cache of the writer, as SQLite's negative KiB: 64 MiB keeps the hot ends of the
/// indexes (and the random record-id index of a few million records) in memory.
const WRITER_CACHE_KIB: i64 = -65_536;
/// Page cache of each reader (16 MiB).
pub(crate) const READER_CACHE_KIB: i64 = -16_384;

/// Storage errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite failed.
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The database file could not be created or made private (mode 0600).
    #[error("creating {path} with mode 0600: {source}; check the owner and permissions of the data directory")]
    DbFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The data directory could not be created.
    #[error("creating data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The database was written by a newer collector.
    #[error("database schema version {found} is newer than this build supports ({supported}); use a newer seglog")]
    SchemaTooNew {
        /// Version in the file.
        found: u32,
        /// Newest this build knows.
        supported: u32,
    },
    /// A lock was poisoned by a panic in another thread.
    #[error("database connection lock poisoned")]
    Poisoned,
    /// The batch broke a rule the decoder should have enforced.
    #[error("inconsistent batch: {0}")]
    BadBatch(String),
}

/// What ingesting a batch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestOutcome {
    /// The batch was new and is now stored.
    Stored {
        /// Records written.
        records_stored: u64,
        /// Records already stored by another batch (same position), not written again.
        records_duplicate: u64,
        /// Gap entries written.
        gaps: u64,
    },
    /// A batch with this id was stored before; nothing was written.
    Duplicate {
        /// Records the first copy stored.
        records_stored: u64,
    },
}

/// Facts about the upload that are not in the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestMeta {
    /// Compressed body size.
    pub body_bytes: u64,
    /// Decompressed size.
    pub raw_bytes: u64,
    /// Reception time, ms since the Unix epoch.
    pub received_ms: i64,
}

/// The collector's database. Cheap operations take `&self`; safe to share across threads.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// SQLite stores signed 64-bit integers; u64 values are kept bit for bit.
pub(crate) fn to_sql_u64(v: u64) -> i64 {
    v as i64
}

/// The record id shown to humans and by `seglog journal`: the recorder's [`RecordId`],
/// derived from the public log id and the position (PROTOCOL.md section 3.6).
pub fn record_id(public_log_id: &[u8; 32], segment: u64, offset: u64) -> [u8; 16] {
    *RecordId::derive(public_log_id, Position { segment, offset }).as_bytes()
}

/// The context columns the API filters on, and the keys they are read from (first found
/// wins). Every field is also kept verbatim in `contexts.fields`.
const CONTEXT_COLUMNS: [(&str, &[&str]); 8] = [
    ("machine_id", &["machine_id"]),
    ("boot_id", &["boot_id"]),
    ("arch", &["arch"]),
    ("platform", &["host_type", "platform", "machine_type"]),
    ("build", &["build"]),
    ("system_name", &["system_name"]),
    ("kernel_version", &["kernel_version"]),
    ("record_format_version", &["record_format_version"]),
];

fn context_value<'a>(fields: &'a [(String, String)], keys: &[&str]) -> &'a str {
    keys.iter()
        .find_map(|k| {
            fields
                .iter()
                .find(|(fk, _)| fk == k)
                .map(|(_, v)| v.as_str())
        })
        .unwrap_or("")
}

impl Store {
    /// Opens (creating if needed) the database in `data_dir` and migrates it.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        private_files(&path)?;
        let mut writer = Connection::open(&path)?;
        writer.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        schema::migrate(&mut writer)?;
        Ok(Store {
            path,
            writer: Mutex::new(writer),
            readers: Mutex::new(Vec::new()),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on a read-only connection from the pool.
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
                c.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().map_err(|_| StoreError::Poisoned)?;
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        out
    }

    /// Stores `batch` unless a batch with the same id is already stored, in one
    /// transaction that is durable when this returns.
    pub fn ingest(&self, batch: &Batch, meta: IngestMeta) -> Result<IngestOutcome, StoreError> {
        let id = batch.id();
        let mut conn = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        let tx = conn.transaction()?;
        let existing: Option<i64> = tx
            .query_row(
                "SELECT records_stored FROM batches WHERE batch_id = ?1",
                [&id.0[..]],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(n) = existing {
            bump(&tx, "batches_duplicate", 1)?;
            tx.commit()?;
            return Ok(IngestOutcome::Duplicate {
                records_stored: n as u64,
            });
        }
        let outcome = insert_batch(&tx, &id, batch, meta)?;
        tx.commit()?;
        Ok(outcome)
    }

    /// Adds `by` to the persistent counter `name` (rejections by reason and the like).
    pub fn bump_counter(&self, name: &str, by: u64) -> Result<(), StoreError> {
        let conn = self.writer.lock().map_err(|_| StoreError::Poisoned)?;
        bump(&conn, name, by)
    }
}

fn bump(conn: &Connection, name: &str, by: u64) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO counters(name, value) VALUES (?1, ?2)
         ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
    )?
    .execute(params![name, to_sql_u64(by)])?;
    Ok(())
}

/// The id of the row of `table` whose unique `column` is `value`, inserted if missing.
fn intern(
    tx: &rusqlite::Transaction<'_>,
    insert: &str,
    select: &str,
    value: &dyn rusqlite::ToSql,
    extra: Option<i64>,
) -> Result<i64, StoreError> {
    match extra {
        Some(x) => tx.prepare_cached(insert)?.execute(params![value, x])?,
        None => tx.prepare_cached(insert)?.execute(params![value])?,
    };
    Ok(tx
        .prepare_cached(select)?
        .query_row(params![value], |r| r.get(0))?)
}

fn insert_batch(
    tx: &rusqlite::Transaction<'_>,
    id: &BatchId,
    batch: &Batch,
    meta: IngestMeta,
) -> Result<IngestOutcome, StoreError> {
    let log_ref = intern(
        tx,
        "INSERT INTO logs(log_id, first_seen_ms) VALUES (?1, ?2) ON CONFLICT(log_id) DO NOTHING",
        "SELECT id FROM logs WHERE log_id = ?1",
        &&batch.public_log_id[..],
        Some(meta.received_ms),
    )?;
    tx.prepare_cached(
        "INSERT INTO batches(batch_id, log_ref, first_segment, first_offset, last_segment,
             last_offset, received_ms, records, records_stored, gaps, body_bytes, raw_bytes)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 0, ?9, ?10, ?11)",
    )?
    .execute(params![
        &id.0[..],
        log_ref,
        to_sql_u64(batch.first.segment),
        to_sql_u64(batch.first.offset),
        to_sql_u64(batch.last.segment),
        to_sql_u64(batch.last.offset),
        meta.received_ms,
        batch.records.len() as i64,
        batch.gaps.len() as i64,
        to_sql_u64(meta.body_bytes),
        to_sql_u64(meta.raw_bytes),
    ])?;
    let batch_ref = tx.last_insert_rowid();

    let mut ctx_ids = Vec::with_capacity(batch.contexts.len());
    for c in &batch.contexts {
        let fields_json = serde_json::to_string(&c.fields).unwrap_or_else(|_| "[]".to_owned());
        let digest: [u8; 32] = Sha256::digest(fields_json.as_bytes()).into();
        let col = |i: usize| context_value(&c.fields, CONTEXT_COLUMNS[i].1);
        tx.prepare_cached(
            "INSERT INTO contexts(digest, machine_id, boot_id, arch, platform, build, system_name,
                 kernel_version, record_format_version, fields)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT(digest) DO NOTHING",
        )?
        .execute(params![
            &digest[..],
            col(0),
            col(1),
            col(2),
            col(3),
            col(4),
            col(5),
            col(6),
            col(7),
            fields_json
        ])?;
        let cid: i64 = tx
            .prepare_cached("SELECT id FROM contexts WHERE digest = ?1")?
            .query_row([&digest[..]], |r| r.get(0))?;
        ctx_ids.push(cid);
    }

    // A batch has few distinct classifications: intern each once.
    let mut classes: HashMap<&str, i64> = HashMap::new();
    let mut insert = tx.prepare_cached(
        "INSERT INTO records(log_ref, segment, offset, record_id, batch_ref, context_ref,
             class_ref, severity, created_ms, boot_ms, event_id, received_ms, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT(log_ref, segment, offset) DO NOTHING",
    )?;
    let (mut stored, mut dup) = (0u64, 0u64);
    for r in &batch.records {
        let class_ref = match classes.get(r.classification.as_str()) {
            Some(id) => *id,
            None => {
                let id = intern(
                    tx,
                    "INSERT INTO classes(name) VALUES (?1) ON CONFLICT(name) DO NOTHING",
                    "SELECT id FROM classes WHERE name = ?1",
                    &r.classification,
                    None,
                )?;
                classes.insert(&r.classification, id);
                id
            }
        };
        // The decoder checked the index; a miss here would be a decoder bug.
        let context_ref = ctx_ids.get(r.context as usize).copied().ok_or_else(|| {
            StoreError::BadBatch(format!(
                "record {} names context {} of {}",
                r.position,
                r.context,
                ctx_ids.len()
            ))
        })?;
        let rid = record_id(&batch.public_log_id, r.position.segment, r.position.offset);
        let n = insert.execute(params![
            log_ref,
            to_sql_u64(r.position.segment),
            to_sql_u64(r.position.offset),
            &rid[..],
            batch_ref,
            context_ref,
            class_ref,
            i64::from(r.severity),
            r.wall_ms,
            to_sql_u64(r.boot_ms),
            r.event_id.as_ref().map(|e| &e[..]),
            meta.received_ms,
            &r.payload[..],
        ])?;
        if n == 1 {
            stored += 1;
        } else {
            dup += 1;
        }
    }
    drop(insert);

    for g in &batch.gaps {
        tx.prepare_cached(
            "INSERT INTO gaps(log_ref, batch_ref, reason, reason_code, start_segment, start_offset,
                 end_segment, end_offset, segments, records, bytes, detail, received_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
        )?
        .execute(params![
            log_ref,
            batch_ref,
            g.reason.name(),
            i64::from(g.reason.code()),
            to_sql_u64(g.start.segment),
            to_sql_u64(g.start.offset),
            to_sql_u64(g.end.segment),
            to_sql_u64(g.end.offset),
            to_sql_u64(g.segments),
            to_sql_u64(g.records),
            to_sql_u64(g.bytes),
            g.detail,
            meta.received_ms,
        ])?;
    }
    // Device counters only grow during a log's life (PROTOCOL.md 3.5), so the largest value
    // seen is the latest, also when the halves of a split batch arrive out of order. The
    // values are u64 stored bit for bit as i64, so "largest" is compared unsigned: with
    // different signs the negative one (top bit set) is the larger u64.
    for (name, value) in &batch.counters {
        tx.prepare_cached(
            "INSERT INTO device_counters(log_ref, name, value, updated_ms) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(log_ref, name) DO UPDATE SET value = CASE
                 WHEN (value < 0) = (excluded.value < 0) THEN max(value, excluded.value)
                 WHEN value < 0 THEN value
                 ELSE excluded.value END,
                 updated_ms = excluded.updated_ms",
        )?
        .execute(params![log_ref, name, to_sql_u64(*value), meta.received_ms])?;
    }
    tx.prepare_cached("UPDATE batches SET records_stored = ?1 WHERE id = ?2")?
        .execute(params![to_sql_u64(stored), batch_ref])?;
    if dup > 0 {
        bump(tx, "records_duplicate", dup)?;
    }
    Ok(IngestOutcome::Stored {
        records_stored: stored,
        records_duplicate: dup,
        gaps: batch.gaps.len() as u64,
    })
}

/// Creates `dir` (and parents) with mode 0700 for the last component.
fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let err = |source| StoreError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    if dir.is_dir() {
        return Ok(());
    }
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(err)
}

/// Makes the database file 0600 whatever the umask: creates it so before SQLite does (SQLite
/// would create it 0644 less the umask, and gives the `-wal` and `-shm` files the mode of
/// the database file), and tightens the files an older version left readable by others.
fn private_files(db: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let err = |path: &Path, source| StoreError::DbFile {
            path: path.to_path_buf(),
            source,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(db)
            .map_err(|e| err(db, e))?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            let p = std::path::PathBuf::from(name);
            match std::fs::metadata(&p) {
                Ok(m) if m.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                        .map_err(|e| err(&p, e))?;
                }
                _ => {}
            }
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

#[cfg(test)]
mod tests;
