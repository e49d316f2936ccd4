//! The PostgreSQL schema and its migrations, versioned like SQLite's: the version is the
//! single row of `seglog_schema`; migration `i` of [`MIGRATIONS`] takes the database from
//! version `i` to `i + 1` in one transaction. Collectors starting together serialize on an
//! advisory lock. A database newer than this build is refused, never modified.
//!
//! Same tables and columns as the SQLite schema (`../schema.rs`), with PostgreSQL types
//! (version 2 adds `pos_lo_*`/`pos_hi_*` to the batches for dedupe, and numbers `seq` by
//! batch, see [`SEQ_SHIFT`]; since version 3 the records are the table `record_rows`
//! without the columns that follow from the batch, and `records` is a view giving them
//! back):
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
    // 2: per-batch zone maps (store/zone.rs) instead of per-record secondary indexes, and
    // dedupe by the batches' position ranges instead of a per-record unique index.
    // A record's seq is `batch id << 20 | its index among the batch's stored records`
    // (SEQ_SHIFT), assigned by the writer, so a batch's records are the range
    // first_seq..=last_seq whatever other collectors write at the same time; pos_lo/pos_hi
    // are the smallest and largest position (signed order, as stored) of those records.
    // batch_keys as on SQLite. The record-id Bloom filters are filled in by `fill_blooms`
    // in the same transaction. Kept per record: the primary key (seq) and event ids.
    r#"
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM records GROUP BY batch_ref HAVING count(*) > 1048576) THEN
        RAISE EXCEPTION 'a batch holds more than 1048576 records, more than schema version 2 numbers';
    END IF;
END $$;

ALTER TABLE batches
    ADD COLUMN first_seq BIGINT,
    ADD COLUMN last_seq BIGINT,
    ADD COLUMN min_created_ms BIGINT,
    ADD COLUMN max_created_ms BIGINT,
    ADD COLUMN rid_bloom BYTEA,
    ADD COLUMN pos_lo_segment BIGINT,
    ADD COLUMN pos_lo_offset BIGINT,
    ADD COLUMN pos_hi_segment BIGINT,
    ADD COLUMN pos_hi_offset BIGINT;

CREATE TABLE batch_keys (
    batch_ref         BIGINT NOT NULL,
    key               BIGINT NOT NULL,
    records           BIGINT NOT NULL,
    PRIMARY KEY (batch_ref, key)
);

DROP INDEX records_position;
DROP INDEX records_record_id;
DROP INDEX records_class;
DROP INDEX records_severity;
DROP INDEX records_created;
DROP INDEX records_log;
DROP INDEX records_context;
ALTER TABLE records DROP CONSTRAINT records_pkey;
ALTER TABLE records ALTER COLUMN seq DROP DEFAULT;
DROP SEQUENCE records_seq_seq;
UPDATE records r SET seq = (n.batch_ref << 20) + n.i
    FROM (SELECT seq AS old, batch_ref,
                 row_number() OVER (PARTITION BY batch_ref ORDER BY seq) - 1 AS i
          FROM records) n
    WHERE r.seq = n.old;
ALTER TABLE records ADD PRIMARY KEY (seq);

UPDATE batches b SET first_seq = z.lo, last_seq = z.hi, min_created_ms = z.cmin,
        max_created_ms = z.cmax, pos_lo_segment = z.ls, pos_lo_offset = z.lo_off,
        pos_hi_segment = z.hs, pos_hi_offset = z.ho
    FROM (SELECT batch_ref, min(seq) AS lo, max(seq) AS hi, min(created_ms) AS cmin,
                 max(created_ms) AS cmax,
                 (array_agg(segment ORDER BY segment, "offset"))[1] AS ls,
                 (array_agg("offset" ORDER BY segment, "offset"))[1] AS lo_off,
                 (array_agg(segment ORDER BY segment DESC, "offset" DESC))[1] AS hs,
                 (array_agg("offset" ORDER BY segment DESC, "offset" DESC))[1] AS ho
          FROM records GROUP BY batch_ref) z
    WHERE z.batch_ref = b.id;

INSERT INTO batch_keys(batch_ref, key, records)
    SELECT batch_ref, key, count(*) FROM (
        SELECT batch_ref, class_ref + 1099511627776 AS key FROM records
        UNION ALL SELECT batch_ref, context_ref + 2199023255552 FROM records
        UNION ALL SELECT batch_ref, severity + 3298534883328 FROM records) k
    GROUP BY batch_ref, key;

CREATE INDEX batch_keys_key ON batch_keys(key, batch_ref, records);
CREATE INDEX batches_positions ON batches(log_ref, pos_hi_segment, pos_hi_offset);
ANALYZE records;
ANALYZE batches;
ANALYZE batch_keys;
"#,
    // 3: narrower record rows. A record's log, batch, reception time and record id follow
    // from its batch (`seq >> 20`, SEQ_SHIFT) and position, so the table `record_rows` keeps
    // only what is the record's own (severity as SMALLINT, the 8-byte columns first so that
    // none is padded); the view `records` gives every column of version 2 back, with the
    // same names and types, so every query reads the same rows. About 40 bytes less per row
    // on the heap and in the WAL.
    r#"
-- A u64 (stored bit for bit as BIGINT) in little-endian bytes; one expression, so that
-- the planner inlines it.
CREATE FUNCTION seglog_le8(v BIGINT) RETURNS BYTEA LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $f$ SELECT substring(int8send(v) from 8 for 1) || substring(int8send(v) from 7 for 1)
               || substring(int8send(v) from 6 for 1) || substring(int8send(v) from 5 for 1)
               || substring(int8send(v) from 4 for 1) || substring(int8send(v) from 3 for 1)
               || substring(int8send(v) from 2 for 1) || substring(int8send(v) from 1 for 1) $f$;
-- records/src/lib.rs RecordId::derive: sha256(public log id || segment LE || offset LE)[..16].
CREATE FUNCTION seglog_record_id(log_id BYTEA, segment BIGINT, "offset" BIGINT) RETURNS BYTEA
    LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
    AS $f$ SELECT substring(sha256(log_id || seglog_le8(segment) || seglog_le8("offset"))
                            from 1 for 16) $f$;

CREATE TABLE record_rows (
    seq               BIGINT NOT NULL,
    segment           BIGINT NOT NULL,
    "offset"          BIGINT NOT NULL,
    context_ref       BIGINT NOT NULL,
    class_ref         BIGINT NOT NULL,
    created_ms        BIGINT NOT NULL,
    boot_ms           BIGINT NOT NULL,
    severity          SMALLINT NOT NULL,
    event_id          BYTEA,
    payload           BYTEA NOT NULL
);
INSERT INTO record_rows(seq, segment, "offset", context_ref, class_ref, created_ms, boot_ms,
        severity, event_id, payload)
    SELECT seq, segment, "offset", context_ref, class_ref, created_ms, boot_ms, severity,
           event_id, payload
    FROM records ORDER BY seq;
DROP TABLE records;
ALTER TABLE record_rows ADD CONSTRAINT record_rows_pkey PRIMARY KEY (seq);
CREATE INDEX records_event ON record_rows(event_id) WHERE event_id IS NOT NULL;

-- LEFT JOINs on unique keys: a query that uses none of their columns does not join.
CREATE VIEW records AS
    SELECT r.seq, b.log_ref, r.segment, r."offset",
           seglog_record_id(l.log_id, r.segment, r."offset") AS record_id,
           r.seq >> 20 AS batch_ref, r.context_ref, r.class_ref,
           r.severity::bigint AS severity, r.created_ms, r.boot_ms, r.event_id,
           b.received_ms, r.payload
    FROM record_rows r
    LEFT JOIN batches b ON b.id = r.seq >> 20
    LEFT JOIN logs l ON l.id = b.log_ref;
ANALYZE record_rows;
"#,
];

/// A record's `seq` is `batch id << SEQ_SHIFT | its index among the batch's stored records`
/// (migration 2): at most `1 << SEQ_SHIFT` records per batch.
pub(crate) const SEQ_SHIFT: u32 = 20;

/// Migration 2's Rust part: a Bloom filter of the record ids of every stored batch.
fn fill_blooms(tx: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
    use postgres::fallible_iterator::FallibleIterator;
    let mut blooms: Vec<(i64, Vec<u8>)> = Vec::new();
    {
        let mut rows = tx.query_raw(
            "SELECT batch_ref, record_id FROM records ORDER BY batch_ref, seq",
            std::iter::empty::<i64>(),
        )?;
        let (mut batch, mut rids) = (0i64, Vec::<Vec<u8>>::new());
        let mut flush = |batch: i64, rids: &mut Vec<Vec<u8>>| {
            if !rids.is_empty() {
                let mut bloom = crate::store::zone::pg_bloom_new(rids.len());
                for r in rids.iter() {
                    crate::store::zone::pg_bloom_add(&mut bloom, r);
                }
                blooms.push((batch, bloom));
                rids.clear();
            }
        };
        while let Some(r) = rows.next()? {
            let b: i64 = r.try_get(0)?;
            if b != batch {
                flush(batch, &mut rids);
                batch = b;
            }
            rids.push(r.try_get(1)?);
        }
        flush(batch, &mut rids);
    }
    let update = tx.prepare("UPDATE batches SET rid_bloom = $1 WHERE id = $2")?;
    for (batch, bloom) in &blooms {
        tx.execute(&update, &[bloom, batch])?;
    }
    Ok(())
}

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
    // A one-key lock: the writers' log locks (`ingest.rs`) use the two-key form, a
    // separate key space.
    let found = version(&mut tx)?;
    if found > latest {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: latest,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        if i == 1 {
            fill_blooms(&mut tx)?;
        }
        let v = i as i32 + 1;
        tx.execute("DELETE FROM seglog_schema", &[])?;
        tx.execute("INSERT INTO seglog_schema(version) VALUES ($1)", &[&v])?;
    }
    tx.commit()?;
    Ok(found)
}
