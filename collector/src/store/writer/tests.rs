//! Group commit, per-batch failure and shedding of the writer queue.

use std::sync::atomic::Ordering;

use super::super::{IngestMeta, IngestOutcome, StoreError, WriterLimits};
use crate::fixtures;

fn meta(received_ms: i64) -> IngestMeta {
    IngestMeta {
        body_bytes: 100,
        raw_bytes: 1000,
        received_ms,
    }
}

fn wait(r: super::Reply) -> Result<IngestOutcome, StoreError> {
    r.blocking_recv().expect("the writer answers every batch")
}

#[test]
fn batches_queued_while_the_writer_is_busy_are_committed_in_one_transaction() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let hold = s.hold_writer().unwrap();
        let replies: Vec<_> = (0..20u8)
            .map(|i| {
                let p = fixtures::private_id(i);
                s.try_submit(fixtures::batch(&p, 0, 10, "1"), meta(1))
                    .unwrap()
            })
            .collect();
        assert_eq!(s.writer_stats().queued_batches.load(Ordering::Relaxed), 20);
        let commits_before = s.writer_stats().commits.load(Ordering::Relaxed);
        drop(hold);
        for r in replies {
            assert!(matches!(
                wait(r).unwrap(),
                IngestOutcome::Stored {
                    records_stored: 10,
                    ..
                }
            ));
        }
        let st = s.writer_stats();
        assert_eq!(st.commits.load(Ordering::Relaxed) - commits_before, 1);
        assert_eq!(st.committed_batches.load(Ordering::Relaxed), 20);
        assert_eq!(st.queued_batches.load(Ordering::Relaxed), 0);
        assert_eq!(s.stats().unwrap().records, 200);
    });
}

#[test]
fn the_same_batch_twice_in_one_group_is_stored_once() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let p = fixtures::private_id(1);
        let b = fixtures::batch(&p, 0, 10, "1");
        let hold = s.hold_writer().unwrap();
        let first = s.try_submit(b.clone(), meta(1)).unwrap();
        let second = s.try_submit(b, meta(1)).unwrap();
        drop(hold);
        assert!(matches!(
            wait(first).unwrap(),
            IngestOutcome::Stored {
                records_stored: 10,
                ..
            }
        ));
        assert_eq!(
            wait(second).unwrap(),
            IngestOutcome::Duplicate { records_stored: 10 }
        );
        let st = s.stats().unwrap();
        assert_eq!((st.records, st.batches, st.batches_duplicate), (10, 1, 1));
    });
}

#[test]
fn a_failing_batch_fails_alone_and_leaves_nothing_behind() {
    crate::pg_server::each_backend(|db| {
        let s = db.open();
        let (a, b, c) = (
            fixtures::private_id(1),
            fixtures::private_id(2),
            fixtures::private_id(3),
        );
        let mut bad = fixtures::batch(&b, 0, 10, "bad-build");
        bad.records[5].context = 99; // the decoder would refuse this; the store must too
        let hold = s.hold_writer().unwrap();
        let r1 = s
            .try_submit(fixtures::batch(&a, 0, 10, "1"), meta(1))
            .unwrap();
        let r2 = s.try_submit(bad, meta(1)).unwrap();
        let r3 = s
            .try_submit(fixtures::batch(&c, 0, 10, "1"), meta(1))
            .unwrap();
        drop(hold);
        assert!(wait(r1).is_ok());
        let e = wait(r2).unwrap_err();
        assert!(matches!(e, StoreError::BadBatch(_)), "{e}");
        assert!(wait(r3).is_ok());
        let st = s.stats().unwrap();
        // Neither the bad batch's first five records nor its batch row or context were kept.
        assert_eq!((st.records, st.batches, st.logs), (20, 2, 2));
        assert!(st.by_build.iter().all(|(b, _)| b != "bad-build"));
        // The log the failed batch created is gone with it, so its cached id must be too.
        let again = s.ingest(&fixtures::batch(&b, 0, 10, "1"), meta(1)).unwrap();
        assert!(matches!(
            again,
            IngestOutcome::Stored {
                records_stored: 10,
                ..
            }
        ));
        assert_eq!(s.stats().unwrap().logs, 3);
    });
}

#[test]
fn a_full_queue_refuses_at_once_with_a_retry_hint_and_recovers() {
    crate::pg_server::each_backend(|db| {
        let s = db.open_with(WriterLimits {
            queue_bytes: 64 << 10,
        });
        let hold = s.hold_writer().unwrap();
        let mut accepted = Vec::new();
        let mut refused = None;
        for i in 0..200u64 {
            let p = fixtures::private_id(1);
            match s.try_submit(fixtures::batch(&p, i * 100, 100, "1"), meta(1)) {
                Ok(r) => accepted.push(r),
                Err(o) => {
                    refused = Some(o);
                    break;
                }
            }
        }
        let o = refused.expect("a 64 KiB queue fills up");
        assert!((1..=60).contains(&o.retry_after_secs), "{o:?}");
        assert!(!accepted.is_empty());
        assert_eq!(s.writer_stats().shed.load(Ordering::Relaxed), 1);
        drop(hold);
        let n = accepted.len() as u64;
        for r in accepted {
            assert!(wait(r).is_ok());
        }
        assert_eq!(s.stats().unwrap().records, n * 100);
        // Room again: the batch that was refused goes in now.
        let p = fixtures::private_id(1);
        let r = s
            .try_submit(fixtures::batch(&p, n * 100, 100, "1"), meta(1))
            .unwrap();
        assert!(wait(r).is_ok());
    });
}

#[test]
fn an_empty_queue_takes_a_batch_larger_than_its_bound() {
    crate::pg_server::each_backend(|db| {
        let s = db.open_with(WriterLimits { queue_bytes: 1 });
        let p = fixtures::private_id(1);
        let r = s
            .try_submit(fixtures::batch(&p, 0, 1000, "1"), meta(1))
            .unwrap();
        assert!(wait(r).is_ok());
        // And the blocking path waits for room instead of refusing.
        for i in 1..5 {
            s.ingest(&fixtures::batch(&p, i * 1000, 1000, "1"), meta(1))
                .unwrap();
        }
        assert_eq!(s.stats().unwrap().records, 5000);
    });
}
