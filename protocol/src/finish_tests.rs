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
            crate::encode::add_batch(&mut e, b).unwrap();
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
