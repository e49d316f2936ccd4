//! SQLite storage: one writer connection for ingest, a small pool of read-only connections
//! for queries. WAL mode, `synchronous = FULL`: a batch the collector acknowledged survives
//! power loss, because the uploader drops it from its queue as soon as it sees the answer.
//!
//! Dedupe happens twice, both inside the ingest transaction: by batch id (a resent batch is
//! answered `duplicate` and nothing is written) and by record position (log, segment, offset;
//! equivalently the record id), so a record that arrives again in a batch with different
//! boundaries, e.g. after the uploader's batch size changed, is stored once.

mod checkpoint;
mod device_views;
mod ingest_sql;
mod pg;
mod query;
mod retention;
mod schema;
pub mod shed;
pub mod views;
mod writer;
pub(crate) mod zone;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use protocol::Batch;
use records::RecordId;
use rusqlite::{Connection, OpenFlags};
use segment_log::Position;

pub use device_views::{DeviceRow, DeviceView};
pub use query::{Context, Cursor, GapRow, RecordPage, RecordQuery, RecordRow, Stats, TimeBound};
pub use retention::RetentionPass;
pub use schema::latest_version;
#[cfg(any(test, feature = "test-support"))]
pub use writer::WriterHold;
pub use writer::{Overloaded, Reply, WriterLimits, WriterStats};

use writer::Conn;

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "collector.sqlite3";
/// Idle read connections kept open (more are opened on demand and closed after use).
const READ_POOL: usize = 4;
/// How long a connection waits on a lock held by another before failing.
const BUSY_TIMEOUT_MS: u64 = 10_000;
/// Page cache of the writer, as SQLite's negative KiB: 64 MiB keeps the hot ends of the
/// tables and indexes in memory.
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
    /// PostgreSQL failed.
    #[error("PostgreSQL error: {0}")]
    Postgres(#[from] postgres::Error),
    /// A stored value is not what this build wrote (a foreign or damaged database).
    #[error("unexpected value in the database: {0}")]
    BadValue(String),
    /// A SQLite-only code path was reached on a PostgreSQL store (a bug in the collector).
    #[error("{0} reached the SQLite read pool on a PostgreSQL store; please report this bug")]
    NotOnPostgres(&'static str),
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
    /// The writer thread could not be started.
    #[error("starting the database writer thread: {source}")]
    Thread {
        /// Why.
        source: std::io::Error,
    },
    /// The writer thread stopped (the store is shutting down, or it panicked).
    #[error("the database writer has stopped")]
    WriterGone,
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
/// Writes go through one writer thread that commits concurrent batches together (see
/// `writer`); reads use a pool of read-only connections.
#[derive(Debug)]
pub struct Store {
    backend: Backend,
    writer: writer::Writer,
    /// SQLite: WAL checkpoints off the writer thread. Dropped after the writer (field
    /// order), which nudges it.
    checkpointer: Option<checkpoint::Checkpointer>,
}

/// Where the store keeps its data: the read side of the seam between the two backends (the
/// write side is [`writer::Conn`]).
#[derive(Debug)]
enum Backend {
    /// The embedded default: one file in the data directory.
    Sqlite {
        path: PathBuf,
        readers: Mutex<Vec<Connection>>,
    },
    /// A PostgreSQL database shared by any number of collectors.
    Pg(pg::Reads),
}

/// Which database a collector uses (`[collector] database`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    /// SQLite in this directory (the default: `data_dir`).
    Sqlite(PathBuf),
    /// PostgreSQL at this connection URL (`postgres://user@host:port/db`).
    Postgres(String),
}

/// The most records one batch may hold on the PostgreSQL store: a record's `seq` there is
/// `batch id << 20 | its index in the batch` (`pg/schema.rs`, migration 2).
pub const POSTGRES_MAX_BATCH_RECORDS: u64 = 1 << pg::schema::SEQ_SHIFT;

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
pub(crate) const CONTEXT_COLUMNS: [(&str, &[&str]); 8] = [
    ("machine_id", &["machine_id"]),
    ("boot_id", &["boot_id"]),
    ("arch", &["arch"]),
    ("platform", &["host_type", "platform", "machine_type"]),
    ("build", &["build"]),
    ("system_name", &["system_name"]),
    ("kernel_version", &["kernel_version"]),
    ("record_format_version", &["record_format_version"]),
];

pub(crate) fn context_value<'a>(fields: &'a [(String, String)], keys: &[&str]) -> &'a str {
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
    /// Opens (creating if needed) the database in `data_dir` and migrates it, with the
    /// default writer queue.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, WriterLimits::default())
    }

    /// [`Store::open`] with the given writer queue bounds.
    pub fn open_with(data_dir: &Path, limits: WriterLimits) -> Result<Store, StoreError> {
        create_private_dir(data_dir)?;
        let path = data_dir.join(DB_FILE);
        private_files(&path)?;
        let mut writer = Connection::open(&path)?;
        writer.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.pragma_update(None, "cache_size", WRITER_CACHE_KIB)?;
        writer.pragma_update(
            None,
            "wal_autocheckpoint",
            checkpoint::WRITER_AUTOCHECKPOINT_PAGES,
        )?;
        writer.set_prepared_statement_cache_capacity(64);
        zone::register(&writer)?;
        schema::migrate(&mut writer)?;
        let checkpointer = checkpoint::Checkpointer::start(
            &path,
            std::time::Duration::from_millis(BUSY_TIMEOUT_MS),
        )?;
        Ok(Store {
            backend: Backend::Sqlite {
                path,
                readers: Mutex::new(Vec::new()),
            },
            writer: writer::Writer::start(
                Conn::Sqlite(writer),
                limits,
                Some(checkpointer.nudge()),
            )?,
            checkpointer: Some(checkpointer),
        })
    }

    /// Opens (migrating if needed) the PostgreSQL database at `url`
    /// (`postgres://user@host:port/db`). Any number of collectors may share it.
    pub fn open_postgres(url: &str, limits: WriterLimits) -> Result<Store, StoreError> {
        let (writer, reads) = pg::open(url)?;
        Ok(Store {
            backend: Backend::Pg(reads),
            writer: writer::Writer::start(Conn::Pg(Box::new(writer)), limits, None)?,
            checkpointer: None,
        })
    }

    /// Opens the database `db` names.
    pub fn open_database(db: &Database, limits: WriterLimits) -> Result<Store, StoreError> {
        match db {
            Database::Sqlite(dir) => Store::open_with(dir, limits),
            Database::Postgres(url) => Store::open_postgres(url, limits),
        }
    }

    /// The database file (SQLite only).
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite { path, .. } => Some(path),
            Backend::Pg(_) => None,
        }
    }

    /// Rows of `sql` (SQLite's dialect, `?` placeholders, kept to what PostgreSQL also
    /// understands) on either backend, as SQLite values: the web view's queries.
    pub(crate) fn rows(
        &self,
        sql: &str,
        args: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<Vec<rusqlite::types::Value>>, StoreError> {
        self.rows_of(sql, args, false)
    }

    /// [`Store::rows`] of a query that reads records through the zone maps (`zoned`; see
    /// `pg::unsorted`, which PostgreSQL needs for such a query's plan).
    pub(crate) fn rows_of(
        &self,
        sql: &str,
        args: Vec<rusqlite::types::Value>,
        zoned: bool,
    ) -> Result<Vec<Vec<rusqlite::types::Value>>, StoreError> {
        if let Some(pg) = self.pg() {
            return pg.rows(sql, args, zoned);
        }
        self.read(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            let n = stmt.column_count();
            let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect()
            })?;
            Ok(rows.collect::<Result<Vec<Vec<_>>, _>>()?)
        })
    }

    /// Checks that the database answers (`/healthz`).
    pub fn ping(&self) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Pg(r) => r.with(|c| Ok(c.simple_query("SELECT 1").map(|_| ())?)),
            Backend::Sqlite { .. } => self.read(|c| {
                Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map(|_| ())?)
            }),
        }
    }

    /// The PostgreSQL read side, when that is the backend.
    pub(crate) fn pg(&self) -> Option<&pg::Reads> {
        match &self.backend {
            Backend::Pg(r) => Some(r),
            Backend::Sqlite { .. } => None,
        }
    }

    /// Runs `f` on a read-only SQLite connection from the pool. Callers dispatch to the
    /// PostgreSQL side first ([`Store::pg`], [`Store::rows`]); on PostgreSQL this fails with
    /// [`StoreError::NotOnPostgres`].
    pub(crate) fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let (path, readers) = match &self.backend {
            Backend::Sqlite { path, readers } => (path, readers),
            Backend::Pg(_) => return Err(StoreError::NotOnPostgres("a query")),
        };
        let pooled = readers.lock().map_err(|_| StoreError::Poisoned)?.pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
                c.pragma_update(None, "cache_size", READER_CACHE_KIB)?;
                zone::register(&c)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = readers.lock().map_err(|_| StoreError::Poisoned)?;
        if pool.len() < READ_POOL {
            pool.push(conn);
        }
        out
    }

    /// Stores `batch` unless a batch with the same id is already stored; durable when this
    /// returns. Waits for room in the writer queue. Copies the batch; see
    /// [`Store::ingest_owned`].
    pub fn ingest(&self, batch: &Batch, meta: IngestMeta) -> Result<IngestOutcome, StoreError> {
        self.ingest_owned(batch.clone(), meta)
    }

    /// [`Store::ingest`] of a batch the caller no longer needs. Must not be called on an
    /// async runtime thread (it blocks); use [`Store::try_submit`] there.
    pub fn ingest_owned(
        &self,
        batch: Batch,
        meta: IngestMeta,
    ) -> Result<IngestOutcome, StoreError> {
        self.writer
            .submit(batch, meta)?
            .blocking_recv()
            .map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `batch` for the writer unless its queue is full; the reply arrives once the
    /// batch is durable (or failed). Never blocks.
    pub fn try_submit(&self, batch: Batch, meta: IngestMeta) -> Result<Reply, Overloaded> {
        self.writer.try_submit(batch, meta)
    }

    /// Queue depth, shed and commit counts of the writer.
    pub fn writer_stats(&self) -> &WriterStats {
        self.writer.stats()
    }

    /// WAL checkpoints run by the background checkpoint thread (SQLite; `None` on
    /// PostgreSQL).
    pub fn background_checkpoints(&self) -> Option<u64> {
        self.checkpointer
            .as_ref()
            .map(checkpoint::Checkpointer::runs)
    }

    /// Parks the writer until the returned hold drops: batches queue up meanwhile (tests of
    /// group commit and of shedding).
    #[cfg(any(test, feature = "test-support"))]
    pub fn hold_writer(&self) -> Result<WriterHold, StoreError> {
        self.writer.hold()
    }

    /// Adds `by` to the persistent counter `name` (rejections by reason and the like).
    pub fn bump_counter(&self, name: &str, by: u64) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer.exec(move |c, _| match c {
            Conn::Sqlite(c) => ingest_sql::bump(c, &name, by),
            Conn::Pg(c) => pg::ingest::bump(c, &name, by),
        })
    }
}

#[cfg(test)]
impl Store {
    /// Rows in `table` (a name from the schema), on either backend.
    fn row_count(&self, table: &str) -> Result<u64, StoreError> {
        let sql = format!("SELECT count(*) FROM {table}");
        match &self.backend {
            Backend::Pg(r) => r.with(|c| Ok(c.query_one(&sql, &[])?.try_get::<_, i64>(0)? as u64)),
            Backend::Sqlite { .. } => {
                self.read(|c| Ok(c.query_row(&sql, [], |r| r.get::<_, i64>(0))? as u64))
            }
        }
    }
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
#[cfg(test)]
mod tests_pg;
#[cfg(test)]
mod tests_zone;
