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
    // 2: per-batch zone maps (store/zone.rs) instead of per-record secondary indexes. A
    // batch's stored records are the rowid range first_seq..=last_seq; batch_keys counts its
    // records per classification (key 1 << 40 | classes.id), context (2 << 40 | contexts.id)
    // and severity (3 << 40 | severity). The record-id Bloom filters are filled in by
    // `fill_blooms` in the same transaction. Kept per record: the dedupe key
    // (records_position), the device's records in order (records_log) and event ids.
    r#"
ALTER TABLE batches ADD COLUMN first_seq INTEGER;      -- NULL: no record stored (or left)
ALTER TABLE batches ADD COLUMN last_seq INTEGER;
ALTER TABLE batches ADD COLUMN min_created_ms INTEGER;
ALTER TABLE batches ADD COLUMN max_created_ms INTEGER;
ALTER TABLE batches ADD COLUMN rid_bloom BLOB;         -- Bloom filter of the record ids

CREATE TABLE batch_keys (
    batch_ref         INTEGER NOT NULL,     -- batches.id
    key               INTEGER NOT NULL,     -- kind << 40 | id
    records           INTEGER NOT NULL,     -- records of the batch with this key
    PRIMARY KEY (batch_ref, key)
) WITHOUT ROWID;
CREATE INDEX batch_keys_key ON batch_keys(key, batch_ref, records);

CREATE TEMP TABLE zone_v2 (batch_ref INTEGER PRIMARY KEY, lo, hi, cmin, cmax);
INSERT INTO temp.zone_v2
    SELECT batch_ref, min(seq), max(seq), min(created_ms), max(created_ms)
    FROM records GROUP BY batch_ref;
UPDATE batches SET first_seq = z.lo, last_seq = z.hi, min_created_ms = z.cmin,
    max_created_ms = z.cmax
    FROM temp.zone_v2 z WHERE z.batch_ref = batches.id;
DROP TABLE temp.zone_v2;

INSERT INTO batch_keys(batch_ref, key, records)
    SELECT batch_ref, key, count(*) FROM (
        SELECT batch_ref, class_ref + 1099511627776 AS key FROM records
        UNION ALL SELECT batch_ref, context_ref + 2199023255552 FROM records
        UNION ALL SELECT batch_ref, severity + 3298534883328 FROM records)
    GROUP BY batch_ref, key;

DROP INDEX records_record_id;
DROP INDEX records_class;
DROP INDEX records_severity;
DROP INDEX records_created;
DROP INDEX records_context;
"#,
];

/// Migration 2's Rust part: a Bloom filter of the record ids of every stored batch.
fn fill_blooms(tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let mut update = tx.prepare("UPDATE batches SET rid_bloom = ?1 WHERE id = ?2")?;
    let mut flush = |batch: i64, rids: &mut Vec<Vec<u8>>| -> Result<(), StoreError> {
        if !rids.is_empty() {
            let mut bloom = super::zone::bloom_new(rids.len());
            for r in rids.iter() {
                super::zone::bloom_add(&mut bloom, r);
            }
            update.execute(rusqlite::params![bloom, batch])?;
            rids.clear();
        }
        Ok(())
    };
    let mut stmt = tx.prepare("SELECT batch_ref, record_id FROM records ORDER BY batch_ref")?;
    let mut rows = stmt.query([])?;
    let (mut batch, mut rids) = (0i64, Vec::new());
    while let Some(r) = rows.next()? {
        let b: i64 = r.get(0)?;
        if b != batch {
            flush(batch, &mut rids)?;
            batch = b;
        }
        rids.push(r.get::<_, Vec<u8>>(1)?);
    }
    flush(batch, &mut rids)
}

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
        if i == 1 {
            fill_blooms(&tx)?;
        }
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
            "records_log",
            "records_event",
            "batch_keys_key",
            "batches_log",
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

    #[test]
    fn migration_2_uses_the_zone_key_kinds_of_the_ingest_code() {
        use crate::store::zone::{CLASS, CONTEXT, SEVERITY};
        for k in [CLASS, CONTEXT, SEVERITY] {
            assert!(MIGRATIONS[1].contains(&k.to_string()), "{k}");
        }
    }
}
