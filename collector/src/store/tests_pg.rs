//! The PostgreSQL store's schema versions 2 and 3 (`pg/schema.rs`, `pg/ingest.rs`):
//! migrating version-1 and version-2 databases, exact dedupe without a per-record unique index (two collectors
//! writing overlapping batches of one device at once, overlapping batches in one group),
//! and record filters reaching their rows through an index.

use super::query::{RecordQuery, TimeBound};
use super::tests::{every_view, fill_for_every_view, meta};
use super::*;
use crate::fixtures;

/// Turns a version-3 PostgreSQL database into the layout version 2 had: the table `records`
/// with every column (the view's rows), its primary key and event-id index.
const DOWNGRADE_TO_V2: &str = r#"
BEGIN;
CREATE TABLE records_v2 (
    seq               BIGINT PRIMARY KEY,
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
INSERT INTO records_v2 SELECT seq, log_ref, segment, "offset", record_id, batch_ref,
    context_ref, class_ref, severity, created_ms, boot_ms, event_id, received_ms, payload
    FROM records;
DROP VIEW records;
DROP TABLE record_rows;
DROP FUNCTION seglog_record_id(BYTEA, BIGINT, BIGINT);
DROP FUNCTION seglog_le8(BIGINT);
ALTER TABLE records_v2 RENAME TO records;
ALTER TABLE records RENAME CONSTRAINT records_v2_pkey TO records_pkey;
CREATE INDEX records_event ON records(event_id) WHERE event_id IS NOT NULL;
UPDATE seglog_schema SET version = 2;
COMMIT;
"#;

/// Turns a version-2 PostgreSQL database into the layout version 1 had: the same rows, `seq`
/// from a sequence (renumbered 2, 4, 6, ... in the current order, as a sequence that also
/// advanced for conflicting rows leaves them), every per-record index, no zone maps.
const DOWNGRADE_TO_V1: &str = r#"
BEGIN;
DROP TABLE batch_keys;
DROP INDEX batches_positions;
ALTER TABLE batches DROP COLUMN first_seq, DROP COLUMN last_seq,
    DROP COLUMN min_created_ms, DROP COLUMN max_created_ms, DROP COLUMN rid_bloom,
    DROP COLUMN pos_lo_segment, DROP COLUMN pos_lo_offset,
    DROP COLUMN pos_hi_segment, DROP COLUMN pos_hi_offset;
ALTER TABLE records DROP CONSTRAINT records_pkey;
UPDATE records r SET seq = n.i * 2
    FROM (SELECT seq AS old, row_number() OVER (ORDER BY seq) AS i FROM records) n
    WHERE r.seq = n.old;
CREATE SEQUENCE records_seq_seq OWNED BY records.seq;
SELECT setval('records_seq_seq', (SELECT max(seq) FROM records));
ALTER TABLE records ALTER COLUMN seq SET DEFAULT nextval('records_seq_seq');
ALTER TABLE records ADD PRIMARY KEY (seq);
CREATE UNIQUE INDEX records_position ON records(log_ref, segment, "offset");
CREATE INDEX records_record_id ON records(record_id);
CREATE INDEX records_class ON records(class_ref, seq);
CREATE INDEX records_severity ON records(severity, seq);
CREATE INDEX records_created ON records(created_ms);
CREATE INDEX records_log ON records(log_ref, seq);
CREATE INDEX records_context ON records(context_ref, seq);
UPDATE seglog_schema SET version = 1;
COMMIT;
"#;

fn all(s: &Store) -> Vec<RecordRow> {
    s.query_records(&RecordQuery {
        limit: 10_000,
        ..RecordQuery::default()
    })
    .unwrap()
    .records
}

/// The view `records` derives each record's id in SQL (`seglog_record_id`) as
/// `record_id` does in Rust.
fn assert_view_record_ids(url: &str, rows: &[RecordRow]) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    for r in rows {
        let v: Vec<u8> = c
            .query_one("SELECT record_id FROM records WHERE seq = $1", &[&r.seq])
            .unwrap()
            .get(0);
        assert_eq!(v, record_id(&r.log_id, r.segment, r.offset), "{r:?}");
    }
    // Positions above i64::MAX are stored bit for bit as negative BIGINTs.
    for (segment, offset) in [(u64::MAX - 1, 1u64 << 63), (258, 0), (0, u64::MAX)] {
        let log: &[u8] = &[7u8; 32];
        let v: Vec<u8> = c
            .query_one(
                "SELECT seglog_record_id($1, $2, $3)",
                &[&log, &(segment as i64), &(offset as i64)],
            )
            .unwrap()
            .get(0);
        assert_eq!(v, record_id(&[7; 32], segment, offset));
    }
}

#[test]
fn a_version_1_postgres_database_is_migrated_and_answers_every_query_alike() {
    migrated_alike(1, &[DOWNGRADE_TO_V2, DOWNGRADE_TO_V1]);
}

#[test]
fn a_version_2_postgres_database_is_migrated_and_answers_every_query_alike() {
    migrated_alike(2, &[DOWNGRADE_TO_V2]);
}

/// Fills a current database, takes it back to version `from` by `downgrades`, opens it
/// (migrating) and checks that every view answers as before, zone maps, record ids and
/// dedupe included.
fn migrated_alike(from: u32, downgrades: &[&str]) {
    let Some(url) = crate::pg_server::fresh_database() else {
        return;
    };
    let before = {
        let s = Store::open_postgres(&url, WriterLimits::default()).unwrap();
        fill_for_every_view(&s);
        every_view(&s)
    };
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    for sql in downgrades {
        c.batch_execute(sql).unwrap();
    }
    let found: i32 = c
        .query_one("SELECT version FROM seglog_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(found as u32, from);
    let s = Store::open_postgres(&url, WriterLimits::default()).unwrap();
    let after = every_view(&s);
    for (i, (a, b)) in before.lines().zip(after.lines()).enumerate() {
        assert_eq!(a, b, "line {i} differs after migrating from version {from}");
    }
    assert_eq!(before.lines().count(), after.lines().count());
    let v: i32 = c
        .query_one("SELECT version FROM seglog_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(v as usize, pg::schema::MIGRATIONS.len());
    let unzoned: i64 = c
        .query_one(
            "SELECT count(*) FROM batches WHERE records_stored > 0
             AND (first_seq IS NULL OR rid_bloom IS NULL OR pos_lo_segment IS NULL)",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(unzoned, 0, "every batch with records has its zone map");
    // Each record's id is found through the migrated Bloom filters.
    let rows = all(&s);
    assert!(rows.len() > 50);
    super::tests::assert_each_found_by_record_id(&s, &rows);
    assert_view_record_ids(&url, &rows);
    // Dedupe by position works on the migrated ranges: device 21 has positions 0..60.
    let a = fixtures::private_id(21);
    let out = s.ingest(&fixtures::batch(&a, 50, 20, "9"), meta()).unwrap();
    assert_eq!(
        out,
        IngestOutcome::Stored {
            records_stored: 10,
            records_duplicate: 10,
            gaps: 0
        }
    );
    assert_eq!(s.stats().unwrap().records, rows.len() as u64 + 10);
}

/// Every (segment, offset) of device `log` is stored exactly once, and there are `n`.
fn assert_each_position_once(s: &Store, private: &[u8; 32], n: usize) {
    let rows = s
        .query_records(&RecordQuery {
            log_id: Some(fixtures::public_id(private)),
            limit: 100_000,
            include_payload: false,
            ..RecordQuery::default()
        })
        .unwrap()
        .records;
    let mut pos: Vec<(u64, u64)> = rows.iter().map(|r| (r.segment, r.offset)).collect();
    pos.sort_unstable();
    let len = pos.len();
    pos.dedup();
    assert_eq!(pos.len(), len, "a position is stored twice");
    assert_eq!(len, n);
}

/// One collector's part of the race below: 30 batches of 100 records of `cut` from record
/// `k * 50 + shift`, and after each the batch `k` of 10 records of `same`.
fn race(store: &Store, cut: &[u8; 32], same: &[u8; 32], shift: u64) -> Vec<IngestOutcome> {
    let mut out = Vec::new();
    for k in 0..30u64 {
        store
            .ingest(&fixtures::batch(cut, k * 50 + shift, 100, "1"), meta())
            .unwrap();
        // The very same batch sent to both collectors at once.
        out.push(
            store
                .ingest(&fixtures::batch(same, k * 10, 10, "1"), meta())
                .unwrap(),
        );
    }
    out
}

#[test]
fn two_collectors_writing_overlapping_batches_of_one_device_store_each_record_once() {
    let Some(url) = crate::pg_server::fresh_database() else {
        return;
    };
    let open = || Store::open_postgres(&url, WriterLimits::default()).unwrap();
    let (one, two) = (open(), open());
    let (cut, same) = (fixtures::private_id(40), fixtures::private_id(41));
    let outcomes = std::thread::scope(|t| {
        let a = t.spawn(|| race(&one, &cut, &same, 0));
        // Re-cut: the second collector's batches start 25 records later.
        let b = t.spawn(|| race(&two, &cut, &same, 25));
        (a.join().unwrap(), b.join().unwrap())
    });
    // [0, 1550) from the first, [25, 1575) from the second.
    assert_each_position_once(&one, &cut, 1575);
    assert_each_position_once(&two, &same, 300);
    for (a, b) in outcomes.0.iter().zip(&outcomes.1) {
        let stored = [a, b]
            .iter()
            .filter(|o| matches!(o, IngestOutcome::Stored { .. }))
            .count();
        assert_eq!(stored, 1, "{a:?} {b:?}");
    }
    let st = one.stats().unwrap();
    assert_eq!(st.records, 1575 + 300);
    assert_eq!(st.batches_duplicate, 30);
    assert_eq!(st.records_duplicate, 2 * 30 * 100 - 1575);
}

#[test]
fn overlapping_batches_in_one_group_are_stored_once() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(42);
        let hold = s.hold_writer().unwrap();
        let replies: Vec<_> = [(0, 40), (30, 30), (10, 5), (55, 10)]
            .iter()
            .map(|&(start, n)| {
                s.try_submit(fixtures::batch(&p, start, n, "1"), meta())
                    .unwrap()
            })
            .collect();
        drop(hold);
        let stored: Vec<(u64, u64)> = replies
            .into_iter()
            .map(|r| match r.blocking_recv().unwrap().unwrap() {
                IngestOutcome::Stored {
                    records_stored,
                    records_duplicate,
                    ..
                } => (records_stored, records_duplicate),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(stored, [(40, 0), (20, 10), (0, 5), (5, 5)], "{}", db.name());
        assert_eq!(
            s.writer_stats()
                .commits
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_each_position_once(&s, &p, 65);
        // The batch that stored nothing has no zone map, and counts stay exact.
        let n = s
            .count_records(&RecordQuery {
                log_id: Some(fixtures::public_id(&p)),
                ..RecordQuery::default()
            })
            .unwrap();
        assert_eq!(n, 65);
    });
}

/// `EXPLAIN` of the SQL `query_records` runs for `q` on PostgreSQL.
fn pg_plan(url: &str, q: &RecordQuery) -> String {
    let (sql, args, zoned) = pg::query::records_sql(q);
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = args
        .iter()
        .map(|a| &**a as &(dyn postgres::types::ToSql + Sync))
        .collect();
    let explain = |c: &mut postgres::Transaction<'_>| {
        Ok(c.query(&format!("EXPLAIN {sql}"), &refs)?
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    };
    if zoned {
        pg::unsorted(&mut c, explain).unwrap()
    } else {
        let mut tx = c.transaction().unwrap();
        explain(&mut tx).unwrap()
    }
}

#[test]
fn every_postgres_record_filter_is_answered_without_scanning_or_sorting_all_records() {
    let Some(url) = crate::pg_server::fresh_database() else {
        return;
    };
    let s = Store::open_postgres(&url, WriterLimits::default()).unwrap();
    // Enough records that a scan of all of them is not what the planner picks by default.
    for d in 0..4u8 {
        let p = fixtures::private_id(50 + d);
        for k in 0..20 {
            s.ingest(&fixtures::batch(&p, k * 500, 500, "1"), meta())
                .unwrap();
        }
    }
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("ANALYZE").unwrap();
    let rows = s
        .query_records(&RecordQuery {
            limit: 10,
            ..RecordQuery::default()
        })
        .unwrap()
        .records;
    assert_view_record_ids(&url, &rows);
    let r = &rows[3];
    // A page as the web view and the API ask for it.
    let q = || RecordQuery {
        limit: 100,
        ..RecordQuery::default()
    };
    let cases = [
        RecordQuery {
            classification: Some(r.classification.clone()),
            ..q()
        },
        RecordQuery {
            severity: Some(r.severity),
            ..q()
        },
        RecordQuery {
            machine_id: Some(r.machine_id.clone()),
            ..q()
        },
        RecordQuery {
            log_id: Some(r.log_id),
            ..q()
        },
        RecordQuery {
            since: Some(TimeBound(r.created_ms)),
            until: Some(TimeBound(r.created_ms + 1)),
            ..q()
        },
        RecordQuery {
            record_id: Some(r.record_id),
            ..q()
        },
        RecordQuery {
            event_id: Some([1; 16]),
            ..q()
        },
        q(),
    ];
    for case in &cases {
        let plan = pg_plan(&url, case);
        if std::env::var_os("SEGLOG_SHOW_PLANS").is_some() {
            eprintln!("{case:?}\n{plan}\n");
        }
        assert!(
            !plan.contains("Seq Scan on record"),
            "{case:?}: a scan of every record:\n{plan}"
        );
        let sorts = plan.lines().any(|l| {
            let l = l.trim_start();
            l.trim_start_matches("->")
                .trim_start()
                .starts_with("Sort  (")
        });
        if case.event_id.is_some() {
            // The per-row form: the partial index finds the few, which are then sorted.
            assert!(plan.contains("records_event"), "{case:?}:\n{plan}");
        } else {
            assert!(!sorts, "{case:?}: a sort of the records:\n{plan}");
        }
        // And the answer is the plain per-row form's.
        let page = s.query_records(case).unwrap().records;
        let (cond, args) = query::where_clause(case);
        let n = s
            .u64_sum(&format!("SELECT count(*) FROM records r {cond}"), args)
            .unwrap();
        assert_eq!(page.len() as u64, n.min(u64::from(case.limit)), "{case:?}");
    }
}
