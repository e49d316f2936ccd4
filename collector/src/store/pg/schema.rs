//! The PostgreSQL schema and its migrations, versioned like SQLite's: the version is the
//! single row of `seglog_schema`; migration `i` of [`MIGRATIONS`] takes the database from
//! version `i` to `i + 1` in one transaction. Collectors starting together serialize on an
//! advisory lock. A database newer than this build is refused, never modified.
//!
//! Same tables and columns as the SQLite schema (`../schema.rs`), with PostgreSQL types:
//! `BIGINT` for SQLite's integers (u64 values kept bit for bit as i64, as there), `BYTEA`
//! for blobs, `TEXT COLLATE "C"` (byte order, as SQLite's default) for text.

use postgres::Client;

use crate::store::StoreError;

/// Advisory lock key held while migrating ("seglog" in ASCII).
const MIGRATE_LOCK: i64 = 0x7365_676c_6f67;

/// Migrations in order; never edit one that has shipped, append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the tables of SQLite's migration 1.
    r#"
CREATE TABLE logs (
    id                BIGSERIAL PRIMARY KEY,
    log_id            BYTEA NOT NULL UNIQUE,
    first_seen_ms     BIGINT NOT NULL
);

CREATE TABLE batches (
    id                BIGSERIAL PRIMARY KEY,
    batch_id          BYTEA NOT NULL UNIQUE,
    log_ref           BIGINT NOT NULL,
    first_segment     BIGINT NOT NULL,
    first_offset      BIGINT NOT NULL,
    last_segment      BIGINT NOT NULL,
    last_offset       BIGINT NOT NULL,
    received_ms       BIGINT NOT NULL,
    records           BIGINT NOT NULL,
    records_stored    BIGINT NOT NULL,
    gaps              BIGINT NOT NULL,
    body_bytes        BIGINT NOT NULL,
    raw_bytes         BIGINT NOT NULL
);
CREATE INDEX batches_log ON batches(log_ref, id);

CREATE TABLE classes (
    id                BIGSERIAL PRIMARY KEY,
    name              TEXT COLLATE "C" NOT NULL UNIQUE
);

CREATE TABLE contexts (
    id                BIGSERIAL PRIMARY KEY,
    digest            BYTEA NOT NULL UNIQUE,
    machine_id        TEXT COLLATE "C" NOT NULL,
    boot_id           TEXT COLLATE "C" NOT NULL,
    arch              TEXT COLLATE "C" NOT NULL,
    platform          TEXT COLLATE "C" NOT NULL,
    build             TEXT COLLATE "C" NOT NULL,
    system_name       TEXT COLLATE "C" NOT NULL,
    kernel_version    TEXT COLLATE "C" NOT NULL,
    record_format_version TEXT COLLATE "C" NOT NULL,
    fields            TEXT NOT NULL
);
CREATE INDEX contexts_machine_id ON contexts(machine_id);
CREATE INDEX contexts_build ON contexts(build);
CREATE INDEX contexts_platform ON contexts(platform);

CREATE TABLE records (
    seq               BIGSERIAL PRIMARY KEY,
    log_ref           BIGINT NOT NULL,
    segment           BIGINT NOT NULL,
    "offset"          BIGINT NOT NULL,
    record_id         BYTEA NOT NULL,
    batch_ref         BIGINT NOT NULL,
    context_ref       BIGINT NOT NULL,
    class_ref         BIGINT NOT NULL,
    severity          BIGINT NOT NULL,
    created_ms        BIGINT NOT NULL,
    boot_ms           BIGINT NOT NULL,
    event_id          BYTEA,
    received_ms       BIGINT NOT NULL,
    payload           BYTEA NOT NULL
);
CREATE UNIQUE INDEX records_position ON records(log_ref, segment, "offset");
CREATE INDEX records_record_id ON records(record_id);
CREATE INDEX records_class ON records(class_ref, seq);
CREATE INDEX records_severity ON records(severity, seq);
CREATE INDEX records_created ON records(created_ms);
CREATE INDEX records_log ON records(log_ref, seq);
CREATE INDEX records_context ON records(context_ref, seq);
CREATE INDEX records_event ON records(event_id) WHERE event_id IS NOT NULL;

CREATE TABLE gaps (
    id                BIGSERIAL PRIMARY KEY,
    log_ref           BIGINT NOT NULL,
    batch_ref         BIGINT NOT NULL,
    reason            TEXT COLLATE "C" NOT NULL,
    reason_code       BIGINT NOT NULL,
    start_segment     BIGINT NOT NULL,
    start_offset      BIGINT NOT NULL,
    end_segment       BIGINT NOT NULL,
    end_offset        BIGINT NOT NULL,
    segments          BIGINT NOT NULL,
    records           BIGINT NOT NULL,
    bytes             BIGINT NOT NULL,
    detail            TEXT NOT NULL,
    received_ms       BIGINT NOT NULL
);
CREATE INDEX gaps_log ON gaps(log_ref, id);

CREATE TABLE device_counters (
    log_ref           BIGINT NOT NULL,
    name              TEXT COLLATE "C" NOT NULL,
    value             BIGINT NOT NULL,
    updated_ms        BIGINT NOT NULL,
    PRIMARY KEY (log_ref, name)
);

CREATE TABLE counters (
    name              TEXT COLLATE "C" PRIMARY KEY,
    value             BIGINT NOT NULL
);
"#,
];

/// The schema version in the database (0 when it has none yet).
pub(super) fn version(client: &mut impl postgres::GenericClient) -> Result<u32, StoreError> {
    client.batch_execute("CREATE TABLE IF NOT EXISTS seglog_schema (version INTEGER NOT NULL)")?;
    let v: Option<i32> = client
        .query_one("SELECT max(version) FROM seglog_schema", &[])?
        .get(0);
    u32::try_from(v.unwrap_or(0))
        .map_err(|_| StoreError::BadValue(format!("seglog_schema.version {v:?}")))
}

/// Brings the database up to the latest version; returns the version it found.
pub(super) fn migrate(client: &mut Client) -> Result<u32, StoreError> {
    let latest = MIGRATIONS.len() as u32;
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    let found = version(&mut tx)?;
    if found > latest {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: latest,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        let v = i as i32 + 1;
        tx.execute("DELETE FROM seglog_schema", &[])?;
        tx.execute("INSERT INTO seglog_schema(version) VALUES ($1)", &[&v])?;
    }
    tx.commit()?;
    Ok(found)
}
