//! The SQLite schema and its migrations.
//!
//! The schema version is `PRAGMA user_version`; migration `i` of [`MIGRATIONS`] takes the
//! database from version `i` to `i + 1` inside one transaction. A database newer than this
//! build is refused, never modified.

use rusqlite::Connection;

use super::StoreError;

/// Migrations in order; never edit one that has shipped, append a new one.
pub const MIGRATIONS: &[&str] = &[
    // 1: logs, batches, classes, contexts, records, gaps, device counters, counters.
    // Records refer to logs, batches, classes and contexts by integer, which keeps a row and
    // its index entries small; dedupe is the unique (log, segment, offset), which grows at
    // the end of the index as a log is uploaded in order.
    r#"
CREATE TABLE logs (
    id                INTEGER PRIMARY KEY,
    log_id            BLOB NOT NULL UNIQUE, -- public log id (sha256 of the private id)
    first_seen_ms     INTEGER NOT NULL
);

CREATE TABLE batches (
    id                INTEGER PRIMARY KEY,
    batch_id          BLOB NOT NULL UNIQUE, -- 32 bytes, PROTOCOL.md batch id: the dedupe key
    log_ref           INTEGER NOT NULL,     -- logs.id
    first_segment     INTEGER NOT NULL,
    first_offset      INTEGER NOT NULL,
    last_segment      INTEGER NOT NULL,
    last_offset       INTEGER NOT NULL,
    received_ms       INTEGER NOT NULL,
    records           INTEGER NOT NULL,     -- records in the batch
    records_stored    INTEGER NOT NULL,     -- of those, not already stored by another batch
    gaps              INTEGER NOT NULL,
    body_bytes        INTEGER NOT NULL,     -- compressed
    raw_bytes         INTEGER NOT NULL      -- decompressed
);
CREATE INDEX batches_log ON batches(log_ref, id);

CREATE TABLE classes (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE  -- DOMAIN/PROBE/REST
);

CREATE TABLE contexts (
    id                INTEGER PRIMARY KEY,
    digest            BLOB NOT NULL UNIQUE, -- sha256 over the field list
    machine_id        TEXT NOT NULL,
    boot_id           TEXT NOT NULL,
    arch              TEXT NOT NULL,
    platform          TEXT NOT NULL,        -- host type: sys_vendor|product_name|product_version
    build             TEXT NOT NULL,
    system_name       TEXT NOT NULL,
    kernel_version    TEXT NOT NULL,
    record_format_version TEXT NOT NULL,
    fields            TEXT NOT NULL         -- JSON array of [key, value], as received
);
CREATE INDEX contexts_machine_id ON contexts(machine_id);
CREATE INDEX contexts_build ON contexts(build);
CREATE INDEX contexts_platform ON contexts(platform);

CREATE TABLE records (
    seq               INTEGER PRIMARY KEY,  -- reception order; "newest first" is seq DESC
    log_ref           INTEGER NOT NULL,     -- logs.id
    segment           INTEGER NOT NULL,
    offset            INTEGER NOT NULL,
    record_id         BLOB NOT NULL,        -- 16 bytes: sha256(log id, segment, offset)
    batch_ref         INTEGER NOT NULL,     -- batches.id
    context_ref       INTEGER NOT NULL,     -- contexts.id
    class_ref         INTEGER NOT NULL,     -- classes.id
    severity          INTEGER NOT NULL,
    created_ms        INTEGER NOT NULL,     -- device wall clock
    boot_ms           INTEGER NOT NULL,
    event_id          BLOB,
    received_ms       INTEGER NOT NULL,
    payload           BLOB NOT NULL
);
CREATE UNIQUE INDEX records_position ON records(log_ref, segment, offset);
CREATE INDEX records_record_id ON records(record_id);
CREATE INDEX records_class ON records(class_ref, seq);
CREATE INDEX records_severity ON records(severity, seq);
CREATE INDEX records_created ON records(created_ms);
CREATE INDEX records_log ON records(log_ref, seq);
CREATE INDEX records_context ON records(context_ref, seq);
CREATE INDEX records_event ON records(event_id) WHERE event_id IS NOT NULL;

CREATE TABLE gaps (
    id                INTEGER PRIMARY KEY,
    log_ref           INTEGER NOT NULL,
    batch_ref         INTEGER NOT NULL,
    reason            TEXT NOT NULL,
    reason_code       INTEGER NOT NULL,
    start_segment     INTEGER NOT NULL,
    start_offset      INTEGER NOT NULL,
    end_segment       INTEGER NOT NULL,
    end_offset        INTEGER NOT NULL,
    segments          INTEGER NOT NULL,
    records           INTEGER NOT NULL,
    bytes             INTEGER NOT NULL,
    detail            TEXT NOT NULL,
    received_ms       INTEGER NOT NULL
);
CREATE INDEX gaps_log ON gaps(log_ref, id);

CREATE TABLE device_counters (
    log_ref           INTEGER NOT NULL,
    name              TEXT NOT NULL,
    value             INTEGER NOT NULL,     -- cumulative on the device; the largest wins
    updated_ms        INTEGER NOT NULL,
    PRIMARY KEY (log_ref, name)
) WITHOUT ROWID;

CREATE TABLE counters (
    name              TEXT PRIMARY KEY,     -- e.g. batches_duplicate, rejected.unauthorized
    value             INTEGER NOT NULL
) WITHOUT ROWID;
"#,
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the database up to [`latest_version`]; returns the version it found.
pub fn migrate(conn: &mut Connection) -> Result<u32, StoreError> {
    let found: u32 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version();
    if found > latest {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: latest,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as u32 + 1)?;
        tx.commit()?;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_a_fresh_database_reaches_the_latest_version_and_is_idempotent() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut c).unwrap(), 0);
        assert_eq!(migrate(&mut c).unwrap(), latest_version());
        let v: u32 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
    }

    #[test]
    fn a_database_from_a_newer_build_is_refused_untouched() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "user_version", latest_version() + 1)
            .unwrap();
        let e = migrate(&mut c).unwrap_err();
        assert!(matches!(e, StoreError::SchemaTooNew { .. }), "{e}");
        assert!(e.to_string().contains("newer"), "{e}");
    }

    #[test]
    fn every_query_filter_has_an_index() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c).unwrap();
        let names: Vec<String> = c
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for want in [
            "records_position",
            "records_record_id",
            "records_class",
            "records_severity",
            "records_created",
            "records_log",
            "records_context",
            "records_event",
            "contexts_machine_id",
            "contexts_build",
            "contexts_platform",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "missing index {want}: {names:?}"
            );
        }
    }
}
