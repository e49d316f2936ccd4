//! `BatchEncoder::finish_in_place` against `finish`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use crate::tests::arb_batch;
use proptest::prelude::*;

proptest! {
    #[test]
    fn finish_in_place_writes_what_finish_writes(
        batches in proptest::collection::vec(arb_batch(), 1..4),
        headroom in proptest::option::of(0usize..600),
    ) {
        // One encoder reused for several batches (the room kept before the payloads grows
        // when a batch needs more), against a fresh encoder's `finish` and `encode_batch_raw`.
        let mut e = BatchEncoder::default();
        for b in &batches {
            e.reset(b.public_log_id, b.first);
            if let Some(h) = headroom {
                e.reserve_headroom(h);
            }
            fill(&mut e, b);
            let mut copied = Vec::new();
            let id = e.finish(b.last, &mut copied).unwrap();
            let (id2, in_place) = e.finish_in_place(b.last).unwrap();
            prop_assert_eq!(id, id2);
            prop_assert_eq!(in_place, &copied[..]);
            prop_assert_eq!(in_place, &encode_batch_raw(b).unwrap()[..]);
            // Finishing again (the room is now big enough) gives the same bytes.
            let again = e.finish_in_place(b.last).unwrap().1.to_vec();
            prop_assert_eq!(again, copied);
        }
    }

}

/// Adds `b`'s contexts, gaps, counters and records to `e`.
fn fill(e: &mut BatchEncoder, b: &Batch) {
    for c in &b.contexts {
        e.add_context(&c.fields);
    }
    for g in &b.gaps {
        e.add_gap(g);
    }
    for (k, v) in &b.counters {
        e.add_counter(k, *v);
    }
    for r in &b.records {
        e.add_record(&RecordRef {
            position: r.position,
            context: r.context,
            classification: &r.classification,
            severity: r.severity,
            wall_ms: r.wall_ms,
            boot_ms: r.boot_ms,
            event_id: r.event_id,
            payload: &r.payload,
        })
        .unwrap();
    }
}

#[test]
fn headroom_reserved_after_records_keeps_them() {
    // Reserving room once records were added moves them; the batch is unchanged.
    let b = arb_fixed();
    let mut e = BatchEncoder::new(b.public_log_id, b.first);
    fill(&mut e, &b);
    e.reserve_headroom(4096);
    let (_, raw) = e.finish_in_place(b.last).unwrap();
    assert_eq!(raw, &encode_batch_raw(&b).unwrap()[..]);
}

/// A small batch with records.
fn arb_fixed() -> Batch {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    loop {
        let b = arb_batch().new_tree(&mut runner).unwrap().current();
        if b.records.len() > 3 {
            return b;
        }
    }
}
