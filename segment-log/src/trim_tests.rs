//! Trim counts (issue 11 item 5): sealed record counts, the trim ledger, `stats`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;

use crate::{ledger, seal_count, Log, Options, Position, RetentionPolicy};

const SEG: u64 = 64 << 10;

fn seg_path(dir: &std::path::Path, n: u64) -> std::path::PathBuf {
    dir.join("segments")
        .join(crate::fs::segment_file_name(n, "seg"))
}

fn per_segment(positions: &[Position]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for p in positions {
        *m.entry(p.segment).or_insert(0) += 1;
    }
    m
}

#[test]
fn the_probes_retention_states_every_removed_segments_records_in_the_ledger() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            segment_size: SEG,
            max_record_size: 8 << 10,
            retention: Some(RetentionPolicy {
                max_bytes: Some(4 * SEG),
                max_age: None,
            }),
            ..Options::default()
        },
    )
    .unwrap();
    let mut positions = Vec::new();
    for i in 0..20_000u32 {
        let len = 20 + (i % 50) as usize;
        positions.push(log.append(&vec![b'x'; len]).unwrap());
    }
    drop(log); // the background thread counts what it trimmed last before it stops
    let want = per_segment(&positions);
    let live = crate::fs::live_segments(&d.path().join("segments")).unwrap();
    assert!(live[0] > 5, "retention trimmed: {live:?}");
    let l = ledger::read(d.path()).unwrap();
    for s in 1..live[0] {
        let e = l
            .entries
            .get(&s)
            .unwrap_or_else(|| panic!("no entry for segment {s}"));
        assert_eq!(e.records, want[&s], "segment {s}: {e:?}");
    }
    assert_eq!(l.damaged, 0);
    // Sealed counts, where the background thread wrote them, are exact; most have one
    // (it may skip a segment when several rotations happen before it wakes).
    let mut sealed = 0;
    for &s in &live[..live.len() - 1] {
        let f = std::fs::File::open(seg_path(d.path(), s)).unwrap();
        if let Some(n) = seal_count::read(&f, s) {
            assert_eq!(n, want[&s], "segment {s}");
            sealed += 1;
        }
    }
    assert!(sealed > 0, "no sealed count in {live:?}");
    let f = std::fs::File::open(seg_path(d.path(), *live.last().unwrap())).unwrap();
    assert_eq!(
        seal_count::read(&f, *live.last().unwrap()),
        None,
        "the active segment has none"
    );
}

#[test]
fn a_sealed_segment_gets_its_ledger_entry_before_unlink_and_the_cursors_segment_is_counted_from_it()
{
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            segment_size: SEG,
            max_record_size: 8 << 10,
            prepare_ahead: false,
            ..Options::default()
        },
    )
    .unwrap();
    let mut positions = Vec::new();
    while log.active_segment() < 6 {
        positions.push(log.append(&[7u8; 500]).unwrap());
    }
    let want = per_segment(&positions);
    // Segment 2 has a count sealed in (no background thread here: written by hand, as the
    // preparer would); 3 has none.
    crate::seal_count::write(&seg_path(d.path(), 2), 2, want[&2]).unwrap();
    let cursor = positions
        .iter()
        .filter(|p| p.segment == 1)
        .nth(10)
        .copied()
        .unwrap();
    let r = log
        .enforce_retention(
            &RetentionPolicy {
                max_bytes: Some(3 * SEG),
                max_age: None,
            },
            Some(cursor),
        )
        .unwrap();
    assert_eq!(r.removed, vec![1, 2, 3]);
    assert_eq!(r.ledger_error, None);
    let unconsumed = positions
        .iter()
        .filter(|p| p.segment <= 3 && **p >= cursor)
        .count() as u64;
    assert_eq!(r.unconsumed_records, unconsumed);
    let l = ledger::read(d.path()).unwrap();
    for s in 1..=3 {
        assert_eq!(l.entries[&s].records, want[&s], "segment {s}");
    }
    // From the sealed count: no scan, so no record offsets.
    assert_eq!(l.entries[&2].first_offset, 0);
    assert_ne!(l.entries[&3].first_offset, 0);
    // The cursor's segment states what lay at and after the cursor.
    assert_eq!(
        (l.entries[&1].from_offset, l.entries[&1].records_from),
        (cursor.offset, want[&1] - 10)
    );
    assert_eq!(l.records_lost(cursor.offset, 1, 3, None), Some(unconsumed));
}
