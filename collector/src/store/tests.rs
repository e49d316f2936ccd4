use super::*;
use crate::fixtures;
use protocol::GapReason;

pub(super) fn meta() -> IngestMeta {
    IngestMeta {
        body_bytes: 100,
        raw_bytes: 1000,
        received_ms: 1_700_000_100_000,
    }
}

fn all(store: &Store, mut q: RecordQuery) -> Vec<RecordRow> {
    q.limit = 10_000;
    store.query_records(&q).unwrap().records
}

#[test]
fn ingest_stores_records_contexts_gaps_and_counters() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(1);
        let b = fixtures::with_gap(fixtures::batch(&p, 0, 25, "42"), GapReason::Trimmed, 7);
        let out = s.ingest(&b, meta()).unwrap();
        assert_eq!(
            out,
            IngestOutcome::Stored {
                records_stored: 25,
                records_duplicate: 0,
                gaps: 1
            }
        );

        let rows = all(&s, RecordQuery::default());
        assert_eq!(rows.len(), 25);
        // Newest (last received, i.e. last in the batch) first.
        let newest = &rows[0];
        assert_eq!(newest.payload.as_deref(), Some(&fixtures::payload(24)[..]));
        assert_eq!(
            newest.record_id,
            record_id(&fixtures::public_id(&p), 1, 64 + 24 * fixtures::STRIDE)
        );
        assert_eq!(newest.log_id, fixtures::public_id(&p));
        assert_eq!(newest.machine_id, fixtures::machine_id(&p));
        assert_eq!(newest.build, "42");
        assert_eq!(newest.platform, "Example Inc.|Board 9000|1.0");
        assert_eq!(newest.kernel_version, "6.1.0-test");
        assert_eq!(newest.created_ms, fixtures::BASE_WALL_MS + 24_000);
        assert_eq!(newest.received_ms, meta().received_ms);
        assert!(newest
            .context
            .iter()
            .any(|(k, v)| k == "site" && v == "lab <3>"));

        let gaps = s.query_gaps(None, 10).unwrap();
        assert_eq!(gaps.len(), 1);
        assert_eq!(gaps[0].reason, "trimmed");
        assert_eq!(gaps[0].records, 7);

        let st = s.stats().unwrap();
        assert_eq!(
            (st.records, st.batches, st.logs, st.gaps, st.gap_records),
            (25, 1, 1, 1, 7)
        );
        assert_eq!(
            st.device_counters,
            vec![("recorder.dropped.rate_limit".to_owned(), 0)]
        );
        assert_eq!(st.by_severity.iter().map(|(_, n)| n).sum::<u64>(), 25);
        assert_eq!(st.by_build, vec![("42".to_owned(), 25)]);
    });
}

#[test]
fn a_resent_batch_is_a_duplicate_and_writes_nothing_even_after_reopening() {
    crate::pg_server::each_backend(|db| {
        let p = fixtures::private_id(2);
        let b = fixtures::batch(&p, 0, 10, "1");
        {
            let s = db.open();
            assert!(matches!(
                s.ingest(&b, meta()).unwrap(),
                IngestOutcome::Stored {
                    records_stored: 10,
                    ..
                }
            ));
            assert_eq!(
                s.ingest(&b, meta()).unwrap(),
                IngestOutcome::Duplicate { records_stored: 10 }
            );
        }
        let s = db.open();
        assert_eq!(
            s.ingest(&b, meta()).unwrap(),
            IngestOutcome::Duplicate { records_stored: 10 }
        );
        let st = s.stats().unwrap();
        assert_eq!((st.records, st.batches, st.batches_duplicate), (10, 1, 2));
    });
}

#[test]
fn records_resent_in_a_differently_cut_batch_are_stored_once() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(3);
        s.ingest(&fixtures::batch(&p, 0, 10, "1"), meta()).unwrap();
        // Records 5..15: a different range, so a different batch id, overlapping 5..10.
        let out = s.ingest(&fixtures::batch(&p, 5, 10, "1"), meta()).unwrap();
        assert_eq!(
            out,
            IngestOutcome::Stored {
                records_stored: 5,
                records_duplicate: 5,
                gaps: 0
            }
        );
        assert_eq!(all(&s, RecordQuery::default()).len(), 15);
        assert_eq!(s.stats().unwrap().records_duplicate, 5);
    });
}

#[test]
fn equal_contexts_are_stored_once() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(4);
        s.ingest(&fixtures::batch(&p, 0, 3, "1"), meta()).unwrap();
        s.ingest(&fixtures::batch(&p, 3, 3, "1"), meta()).unwrap();
        assert_eq!(s.row_count("contexts").unwrap(), 1);
    });
}

#[test]
fn every_filter_selects_exactly_the_matching_records() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let (a, b) = (fixtures::private_id(5), fixtures::private_id(6));
        s.ingest(&fixtures::batch(&a, 0, 30, "100"), meta())
            .unwrap();
        s.ingest(&fixtures::batch(&b, 0, 12, "200"), meta())
            .unwrap();
        let count = |q: RecordQuery| all(&s, q).len();
        let q = RecordQuery::default;
        assert_eq!(count(q()), 42);
        assert_eq!(
            count(RecordQuery {
                classification: Some(fixtures::CLASSES[0].into()),
                ..q()
            }),
            10 + 4
        );
        assert_eq!(
            count(RecordQuery {
                severity: Some(4),
                ..q()
            }),
            7 + 3
        );
        assert_eq!(
            count(RecordQuery {
                machine_id: Some(fixtures::machine_id(&b)),
                ..q()
            }),
            12
        );
        assert_eq!(
            count(RecordQuery {
                build: Some("100".into()),
                ..q()
            }),
            30
        );
        assert_eq!(
            count(RecordQuery {
                platform: Some("Example Inc.|Board 9000|1.0".into()),
                ..q()
            }),
            42
        );
        assert_eq!(
            count(RecordQuery {
                log_id: Some(fixtures::public_id(&a)),
                ..q()
            }),
            30
        );
        let t = |i: i64| TimeBound(fixtures::BASE_WALL_MS + i * 1000);
        assert_eq!(
            count(RecordQuery {
                since: Some(t(10)),
                ..q()
            }),
            20 + 2
        );
        assert_eq!(
            count(RecordQuery {
                until: Some(t(10)),
                ..q()
            }),
            10 + 10
        );
        assert_eq!(
            count(RecordQuery {
                since: Some(t(5)),
                until: Some(t(7)),
                ..q()
            }),
            4
        );
        let mut ev = [0u8; 16];
        ev[..8].copy_from_slice(&20u64.to_le_bytes());
        let rows = all(
            &s,
            RecordQuery {
                event_id: Some(ev),
                ..q()
            },
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].event_id, Some(ev));
        let rid = record_id(&fixtures::public_id(&b), 1, 64 + 3 * fixtures::STRIDE);
        let rows = all(
            &s,
            RecordQuery {
                record_id: Some(rid),
                ..q()
            },
        );
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].payload.as_deref(), Some(&fixtures::payload(3)[..]));
        let rows = all(
            &s,
            RecordQuery {
                include_payload: false,
                ..q()
            },
        );
        assert!(rows
            .iter()
            .all(|r| r.payload.is_none() && r.payload_len > 0));
    });
}

#[test]
fn pages_follow_each_other_without_overlap_or_loss() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(7);
        s.ingest(&fixtures::batch(&p, 0, 23, "1"), meta()).unwrap();
        let mut seen = Vec::new();
        let mut cursor = None;
        loop {
            let page = s
                .query_records(&RecordQuery {
                    limit: 5,
                    cursor,
                    ..RecordQuery::default()
                })
                .unwrap();
            assert!(page.records.len() <= 5);
            seen.extend(page.records.iter().map(|r| r.seq));
            match page.next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(seen.len(), 23);
        assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    });
}

#[test]
fn a_page_stops_at_the_payload_budget_and_says_where_to_continue() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(8);
        s.ingest(&fixtures::batch(&p, 0, 50, "1"), meta()).unwrap();
        let page = s
            .query_records(&RecordQuery {
                max_payload_bytes: 100,
                ..RecordQuery::default()
            })
            .unwrap();
        assert!(
            !page.records.is_empty() && page.records.len() < 50,
            "{}",
            page.records.len()
        );
        let bytes: usize = page
            .records
            .iter()
            .map(|r| r.payload.as_ref().unwrap().len())
            .sum();
        assert!((100..100 + 64).contains(&bytes), "{bytes}");
        assert_eq!(page.next, page.records.last().map(|r| Cursor(r.seq)));
    });
}

#[test]
fn the_database_is_in_wal_mode_and_the_data_dir_is_private() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("nested/data");
    let s = Store::open(&dir).unwrap();
    let mode: String = s
        .read(|c| Ok(c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?))
        .unwrap();
    assert_eq!(mode, "wal");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
    }
}

#[test]
fn device_counters_keep_the_largest_value_when_batches_arrive_out_of_order() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(9);
        // The fixture's counter value is the batch's first record index.
        s.ingest(&fixtures::batch(&p, 20, 5, "1"), meta()).unwrap();
        s.ingest(&fixtures::batch(&p, 10, 5, "1"), meta()).unwrap();
        assert_eq!(
            s.stats().unwrap().device_counters,
            vec![("recorder.dropped.rate_limit".to_owned(), 20)]
        );
        s.ingest(&fixtures::batch(&p, 30, 5, "1"), meta()).unwrap();
        assert_eq!(
            s.stats().unwrap().device_counters,
            vec![("recorder.dropped.rate_limit".to_owned(), 30)]
        );
    });
}

#[test]
fn retention_deletes_what_was_received_before_the_cutoff_in_bounded_chunks() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(10);
        let at = |ms| IngestMeta {
            received_ms: ms,
            ..meta()
        };
        // 12 old batches of 1,000 records (more than two chunks), one with a gap, then new ones.
        for i in 0..12u64 {
            let mut b = fixtures::batch(&p, i * 1000, 1000, "1");
            if i == 3 {
                b = fixtures::with_gap(b, GapReason::Trimmed, 2);
            }
            s.ingest(&b, at(1_000)).unwrap();
        }
        let old_first = fixtures::batch(&p, 0, 1000, "1");
        for i in 12..15u64 {
            s.ingest(&fixtures::batch(&p, i * 1000, 1000, "1"), at(5_000))
                .unwrap();
        }
        let pass = s.retain(2_000).unwrap();
        assert_eq!((pass.records, pass.gaps, pass.batches), (12_000, 1, 12));
        assert!(pass.chunks >= 3, "{pass:?}");
        let st = s.stats().unwrap();
        assert_eq!((st.records, st.batches, st.gaps), (3000, 3, 0));
        let rows = all(&s, RecordQuery::default());
        assert_eq!(rows.len(), 3000);
        assert!(rows.iter().all(|r| r.received_ms == 5_000));
        // Nothing left to delete: one chunk that deletes nothing.
        assert_eq!(
            s.retain(2_000).unwrap(),
            RetentionPass {
                chunks: 1,
                ..RetentionPass::default()
            }
        );
        // The expired batch's id is forgotten with it: a resend is stored again.
        assert!(matches!(
            s.ingest(&old_first, at(6_000)).unwrap(),
            IngestOutcome::Stored {
                records_stored: 1000,
                ..
            }
        ));
    });
}

/// The data [`every_view`] reads: two devices, overlapping batches, a gap, a duplicate.
pub(super) fn fill_for_every_view(s: &Store) {
    let (a, b) = (fixtures::private_id(21), fixtures::private_id(22));
    s.ingest(&fixtures::batch(&a, 0, 40, "7"), meta()).unwrap();
    let gap = fixtures::with_gap(fixtures::batch(&b, 0, 25, "8"), GapReason::Trimmed, 3);
    s.ingest(&gap, meta()).unwrap();
    s.ingest(&fixtures::batch(&a, 30, 30, "9"), meta()).unwrap();
    s.ingest(&gap, meta()).unwrap();
    s.bump_counter("rejected.unauthorized", 2).unwrap();
}

/// Each of `rows` is found by its record id, and alone (the record-id filter: an index on
/// version 1, the batches' Bloom filters since version 2).
pub(super) fn assert_each_found_by_record_id(s: &Store, rows: &[RecordRow]) {
    for r in rows {
        let found = s
            .query_records(&super::query::RecordQuery {
                record_id: Some(r.record_id),
                ..Default::default()
            })
            .unwrap()
            .records;
        assert_eq!(found, vec![r.clone()]);
    }
}

/// Everything the API and the web view read, from one store.
pub(super) fn every_view(s: &Store) -> String {
    use super::views::{CountBy, SeriesBy};
    let (a, b) = (
        fixtures::public_id(&fixtures::private_id(21)),
        fixtures::public_id(&fixtures::private_id(22)),
    );
    let q = RecordQuery {
        classification: Some("org.example/*".into()),
        ..RecordQuery::default()
    };
    // `seq` values are opaque cursors: PostgreSQL's sequence also advances for rows that
    // conflicted, SQLite's does not. They are compared as ranks (1 = oldest record).
    let mut seqs: Vec<i64> = all(s, RecordQuery::default())
        .iter()
        .map(|r| r.seq)
        .collect();
    seqs.sort_unstable();
    let rank = |seq: i64| seqs.iter().position(|s| *s == seq).map_or(0, |i| i + 1) as i64;
    let ranked = |mut rows: Vec<RecordRow>| {
        for r in &mut rows {
            r.seq = rank(r.seq);
        }
        rows
    };
    let mut page = s
        .query_records(&RecordQuery {
            limit: 7,
            ..q.clone()
        })
        .unwrap();
    page.records = ranked(page.records);
    page.next = page.next.map(|Cursor(c)| Cursor(rank(c)));
    let newer = s
        .newer_cursor(&q, seqs[seqs.len() - 21], 5)
        .unwrap()
        .map(|c| c.map(|c| rank(c - 1)));
    let (t0, t1) = (fixtures::BASE_WALL_MS, fixtures::BASE_WALL_MS + 100_000);
    format!(
        "{page:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        ranked(all(s, RecordQuery::default())),
        s.stats().unwrap(),
        s.query_gaps(None, 100).unwrap(),
        s.query_gaps(Some(a), 100).unwrap(),
        s.count_records(&q).unwrap(),
        newer,
        s.any_record_between(&q, a, (1, 0), (1, 64 + 5 * fixtures::STRIDE))
            .unwrap(),
        s.gap_views(None, None, 100).unwrap(),
        s.gaps_of_logs(&[a, b], 100).unwrap(),
        s.loss_summary(None).unwrap(),
        s.loss_summary(Some(b)).unwrap(),
        s.buckets(t0, t1, 10_000, SeriesBy::Classification).unwrap(),
        s.buckets(t0, t1, 10_000, SeriesBy::Severity).unwrap(),
        s.counts_by(t0, t1, CountBy::Build, 10).unwrap(),
        (
            s.counts_by(t0, t1, CountBy::Machine, 10).unwrap(),
            s.created_range().unwrap()
        ),
        (s.devices(10).unwrap(), s.device(a).unwrap(), s.device([9; 32]).unwrap()),
    )
}

#[test]
fn both_backends_answer_every_query_of_the_api_and_the_web_view_alike() {
    let dbs = crate::pg_server::test_dbs();
    let views: Vec<String> = dbs
        .iter()
        .map(|db| {
            let s = db.open();
            fill_for_every_view(&s);
            every_view(&s)
        })
        .collect();
    if let [sqlite, pg] = &views[..] {
        for (i, (a, b)) in sqlite.lines().zip(pg.lines()).enumerate() {
            assert_eq!(
                a, b,
                "line {i} differs between SQLite (left) and PostgreSQL"
            );
        }
        assert_eq!(sqlite.lines().count(), pg.lines().count());
    }
}

#[test]
fn the_postgres_store_reconnects_after_losing_its_connections() {
    let Some(url) = crate::pg_server::fresh_database() else {
        return;
    };
    let s = Store::open_postgres(&url, WriterLimits::default()).unwrap();
    let p = fixtures::private_id(30);
    s.ingest(&fixtures::batch(&p, 0, 10, "1"), meta()).unwrap();
    assert_eq!(s.stats().unwrap().records, 10);
    // Cut every other connection to this database (as a server restart would).
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let cut = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .unwrap();
    assert!(
        cut.len() >= 2,
        "writer and reader connections: {}",
        cut.len()
    );
    // The group in flight when the connection died fails (its device sends it again); the
    // next one runs on a new connection.
    let b = fixtures::batch(&p, 10, 10, "1");
    let first = s.ingest(&b, meta());
    let out = match first {
        Ok(out) => out,
        Err(_) => s.ingest(&b, meta()).unwrap(),
    };
    assert!(
        matches!(
            out,
            IngestOutcome::Stored {
                records_stored: 10,
                ..
            }
        ),
        "{out:?}"
    );
    assert_eq!(s.stats().unwrap().records, 20);
}

#[test]
fn postgres_migrations_are_versioned_serialized_and_refuse_a_newer_database() {
    let Some(url) = crate::pg_server::fresh_database() else {
        return;
    };
    // Three collectors starting at once on an empty database: one migrates, all open.
    std::thread::scope(|t| {
        for _ in 0..3 {
            t.spawn(|| drop(Store::open_postgres(&url, WriterLimits::default()).unwrap()));
        }
    });
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let versions: Vec<i32> = c
        .query("SELECT version FROM seglog_schema", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(versions, [super::pg::schema::MIGRATIONS.len() as i32]);
    c.execute("UPDATE seglog_schema SET version = version + 1", &[])
        .unwrap();
    let e = Store::open_postgres(&url, WriterLimits::default()).unwrap_err();
    assert!(matches!(e, StoreError::SchemaTooNew { .. }), "{e}");
}

#[test]
fn wal_checkpoints_run_off_the_writer_thread() {
    // The writer's own automatic checkpoint waits for 16,000 pages (64 MiB) of log; a few
    // MiB of records reach the database file only through the checkpoint thread.
    let d = tempfile::tempdir().unwrap();
    let s = Store::open(d.path()).unwrap();
    let autocheckpoint: i64 = s
        .writer
        .exec(|conn, _| match conn {
            writer::Conn::Sqlite(c) => c
                .query_row("PRAGMA wal_autocheckpoint", [], |r| r.get(0))
                .map_err(StoreError::from),
            writer::Conn::Pg(_) => unreachable!("SQLite store"),
        })
        .unwrap();
    assert_eq!(autocheckpoint, checkpoint::WRITER_AUTOCHECKPOINT_PAGES);
    let db = d.path().join(DB_FILE);
    let before = std::fs::metadata(&db).unwrap().len();
    let p = fixtures::private_id(3);
    for i in 0..40u64 {
        let b = fixtures::batch(&p, i * 250, 250, "7");
        s.ingest(&b, meta()).unwrap();
    }
    let wal_bytes = std::fs::metadata(d.path().join(format!("{DB_FILE}-wal")))
        .unwrap()
        .len();
    assert!(wal_bytes > 1 << 20, "{wal_bytes} bytes of log");
    let t0 = std::time::Instant::now();
    loop {
        let grown = std::fs::metadata(&db).unwrap().len();
        let runs = s
            .checkpointer
            .as_ref()
            .map_or(0, checkpoint::Checkpointer::runs);
        if runs > 0 && grown >= before + (1 << 20) {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(20),
            "database file {before} -> {grown} bytes, {runs} background checkpoints"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
