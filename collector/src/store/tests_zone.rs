//! The SQLite zone maps (`zone.rs`): migrating a version-1 database, and every record filter
//! reaching its rows through an index (no scan of the records table, no sort of them).

use super::query::{Cursor, RecordQuery, TimeBound};
use super::tests::{every_view, fill_for_every_view};
use super::*;
use crate::fixtures;

/// The per-record indexes of schema version 1 that version 2 replaced.
const V1_INDEXES: &str = "
CREATE INDEX records_record_id ON records(record_id);
CREATE INDEX records_class ON records(class_ref, seq);
CREATE INDEX records_severity ON records(severity, seq);
CREATE INDEX records_created ON records(created_ms);
CREATE INDEX records_context ON records(context_ref, seq);
";

/// Turns a current database into the layout version 1 had (same rows, no zone maps).
fn downgrade_to_v1(db: &std::path::Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute_batch(&format!(
        "BEGIN;
         DROP TABLE batch_keys;
         ALTER TABLE batches DROP COLUMN first_seq;
         ALTER TABLE batches DROP COLUMN last_seq;
         ALTER TABLE batches DROP COLUMN min_created_ms;
         ALTER TABLE batches DROP COLUMN max_created_ms;
         ALTER TABLE batches DROP COLUMN rid_bloom;
         {V1_INDEXES}
         PRAGMA user_version = 1;
         COMMIT;"
    ))
    .unwrap();
}

#[test]
fn a_version_1_database_is_migrated_and_answers_every_query_alike() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let s = Store::open(dir.path()).unwrap();
        fill_for_every_view(&s);
        every_view(&s)
    };
    let path = dir.path().join(DB_FILE);
    downgrade_to_v1(&path);
    let s = Store::open(dir.path()).unwrap();
    let after = every_view(&s);
    for (i, (a, b)) in before.lines().zip(after.lines()).enumerate() {
        assert_eq!(a, b, "line {i} differs after migrating from version 1");
    }
    assert_eq!(before.lines().count(), after.lines().count());
    let c = rusqlite::Connection::open(&path).unwrap();
    let v: u32 = c
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(v, schema::latest_version());
    let unzoned: i64 = c
        .query_row(
            "SELECT count(*) FROM batches WHERE first_seq IS NULL OR rid_bloom IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unzoned, 0, "every batch with records has its zone map");
    // Each record's id is found through the migrated Bloom filters.
    let rows = s
        .query_records(&RecordQuery {
            limit: 1000,
            ..RecordQuery::default()
        })
        .unwrap()
        .records;
    assert!(rows.len() > 50);
    super::tests::assert_each_found_by_record_id(&s, &rows);
    // New batches after the migration are zoned as they are stored.
    let p = fixtures::private_id(23);
    s.ingest(&fixtures::batch(&p, 0, 5, "10"), super::tests::meta())
        .unwrap();
    let n = s
        .count_records(&RecordQuery {
            build: Some("10".into()),
            ..RecordQuery::default()
        })
        .unwrap();
    assert_eq!(n, 5);
}

/// The SQL `query_records` runs for `q`, as `EXPLAIN QUERY PLAN` lines.
fn plan(s: &Store, q: &RecordQuery) -> String {
    let (sql, args) = query::records_sql(q);
    s.read(|c| {
        let mut stmt = c.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))?;
        let rows = stmt.query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?.join("\n"))
    })
    .unwrap()
}

#[test]
fn every_record_filter_is_answered_through_an_index_without_sorting_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    fill_for_every_view(&s);
    let rows = s.query_records(&RecordQuery::default()).unwrap().records;
    let r = &rows[3];
    let q = RecordQuery::default;
    let cases = [
        (
            "classification",
            RecordQuery {
                classification: Some(r.classification.clone()),
                ..q()
            },
        ),
        (
            "classification prefix",
            RecordQuery {
                classification: Some("org.example/*".into()),
                ..q()
            },
        ),
        (
            "severity",
            RecordQuery {
                severity: Some(r.severity),
                ..q()
            },
        ),
        (
            "machine_id",
            RecordQuery {
                machine_id: Some(r.machine_id.clone()),
                ..q()
            },
        ),
        (
            "build",
            RecordQuery {
                build: Some(r.build.clone()),
                ..q()
            },
        ),
        (
            "platform",
            RecordQuery {
                platform: Some(r.platform.clone()),
                ..q()
            },
        ),
        (
            "since",
            RecordQuery {
                since: Some(TimeBound(r.created_ms)),
                ..q()
            },
        ),
        (
            "until",
            RecordQuery {
                until: Some(TimeBound(r.created_ms)),
                ..q()
            },
        ),
        (
            "log_id",
            RecordQuery {
                log_id: Some(r.log_id),
                ..q()
            },
        ),
        (
            "record_id",
            RecordQuery {
                record_id: Some(r.record_id),
                ..q()
            },
        ),
        (
            "event_id",
            RecordQuery {
                event_id: Some([1; 16]),
                ..q()
            },
        ),
        (
            "priority range",
            RecordQuery {
                priority: Some((r.severity, 4)),
                ..q()
            },
        ),
        (
            "priority that excludes the severity asked for",
            RecordQuery {
                severity: Some(r.severity),
                priority: Some(if r.severity > 1 {
                    (1, r.severity - 1)
                } else {
                    (2, 4)
                }),
                ..q()
            },
        ),
        (
            "boot_id",
            RecordQuery {
                boot_id: Some(r.boot_id.clone()),
                ..q()
            },
        ),
        (
            "boot_id and classification",
            RecordQuery {
                boot_id: Some(r.boot_id.clone()),
                classification: Some(r.classification.clone()),
                ..q()
            },
        ),
        (
            "severity and build after a cursor",
            RecordQuery {
                severity: Some(r.severity),
                build: Some(r.build.clone()),
                cursor: Some(Cursor(r.seq)),
                ..q()
            },
        ),
    ];
    for (name, q) in cases {
        let p = plan(&s, &q);
        assert!(!p.contains("SCAN r"), "{name}: scans every record:\n{p}");
        assert!(
            !p.contains("AUTOMATIC"),
            "{name}: indexes every record:\n{p}"
        );
        if q.event_id.is_none() {
            assert!(
                !p.contains("TEMP B-TREE"),
                "{name}: sorts the records:\n{p}"
            );
        }
        // The same rows as the plain per-row form (the zone maps only narrow the scan).
        let (sql, args) = query::records_sql(&q);
        let zoned = s.rows(&sql, args).unwrap();
        let plain = super::zone::plain(&q);
        let sql = format!(
            "SELECT r.seq FROM {} {} ORDER BY {}",
            plain.from, plain.cond, plain.desc
        );
        let want: Vec<Vec<rusqlite::types::Value>> = s.rows(&sql, plain.args).unwrap();
        let got: Vec<_> = zoned.iter().map(|row| row[..1].to_vec()).collect();
        assert_eq!(got, want, "{name}");
        // Counted from the zone maps where they can, else by rows: the same number.
        let q = RecordQuery { cursor: None, ..q };
        let plain = super::zone::plain(&q);
        let sql = format!("SELECT count(*) FROM {} {}", plain.from, plain.cond);
        let rows = s.rows(&sql, plain.args).unwrap();
        assert_eq!(
            s.count_records(&q).unwrap() as i64,
            views::int(&rows[0], 0).unwrap(),
            "{name}: count"
        );
    }
}
