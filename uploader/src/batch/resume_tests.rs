//! The record count a builder carries from a build that caught up (the contexts and record
//! frames of its segment before its end, kept so the next pass does not re-read the segment
//! from its start), checked against the records actually written there, while segments are
//! trimmed and counters rolled back under the builder.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;

use proptest::prelude::*;
use segment_log::format::OFF_RESERVED_END;
use segment_log::fs::{live_segments, segment_file_name, SEGMENTS_DIR, SEG_EXT};

use super::*;
use crate::protocol::{decode_body, GapReason, Limits};
use crate::testutil::{number, write};

const SEG: u64 = 64 << 10;

#[derive(Debug, Clone)]
enum Op {
    /// A new recorder appends this many records (a context frame first).
    Write(u64),
    /// The oldest segments but the newest are removed (retention), up to this many.
    Trim(usize),
    /// The newest segment's reservation counter is lowered to this share of its data
    /// (0..=255 of 256), as a damaged or rolled-back counter.
    Rollback(u8),
    /// The builder catches up (the other operations run while it waits).
    Build,
    /// A new builder takes over from where the last one ended (the uploader restarted).
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..1200).prop_map(Op::Write),
        1 => (1usize..4).prop_map(Op::Trim),
        1 => any::<u8>().prop_map(Op::Rollback),
        3 => Just(Op::Build),
        1 => Just(Op::Restart),
    ]
}

/// Records the `before` a trimmed gap was computed from.
#[derive(Default)]
struct Befores(Vec<(Position, Option<u64>)>);
impl Observer for Befores {
    fn trimmed_records(
        &mut self,
        start: Position,
        _: u64,
        _: u64,
        before: Option<u64>,
    ) -> Option<u64> {
        self.0.push((start, before));
        None
    }
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(SEGMENTS_DIR).join(segment_file_name(n, SEG_EXT))
}

fn apply(dir: &Path, op: &Op, next: &mut u64) {
    match *op {
        Op::Write(n) => {
            write(dir, SEG, *next, *next + n);
            *next += n;
        }
        Op::Trim(k) => {
            let segs = live_segments(&dir.join(SEGMENTS_DIR)).unwrap();
            for s in segs.iter().take(k.min(segs.len().saturating_sub(1))) {
                std::fs::remove_file(seg_path(dir, *s)).unwrap();
            }
        }
        Op::Rollback(share) => {
            let segs = live_segments(&dir.join(SEGMENTS_DIR)).unwrap();
            let Some(&newest) = segs.last() else { return };
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(seg_path(dir, newest))
                .unwrap();
            let mut w = [0u8; 8];
            f.read_exact_at(&mut w, OFF_RESERVED_END as u64).unwrap();
            let old = u64::from_le_bytes(w).min(SEG);
            if old <= HEADER_LEN {
                return;
            }
            let new = (HEADER_LEN + (old - HEADER_LEN) * u64::from(share) / 256) & !7;
            f.write_all_at(&new.max(HEADER_LEN).to_le_bytes(), OFF_RESERVED_END as u64)
                .unwrap();
        }
        Op::Build | Op::Restart => {}
    }
}

/// Builds until caught up from `from`; every record's position goes into `at`.
fn catch_up(
    b: &mut BatchBuilder,
    mut from: Position,
    at: &mut BTreeMap<Position, u64>,
    notes: &mut Befores,
) -> Built {
    let l = BatchLimits {
        max_bytes: 1 << 20,
        max_records: 150,
        max_gaps: 100,
    };
    loop {
        let built = b.build(from, &l, None, i64::MAX, notes).unwrap();
        if !built.is_empty() {
            let dec = decode_body(&built.body, &Limits::default()).unwrap();
            for r in &dec.records {
                at.insert(r.position, number(&r.payload));
            }
            for g in &dec.gaps {
                assert_eq!(g.reason, GapReason::Trimmed, "{g:?}");
            }
        }
        from = built.last;
        if built.end == End::CaughtUp {
            return built;
        }
    }
}

/// Records of `p`'s segment before `p`, from what was delivered (every record of the log
/// is, as the builder caught up before each trim).
fn truth(at: &BTreeMap<Position, u64>, p: Position) -> u64 {
    let start = Position {
        segment: p.segment,
        offset: 0,
    };
    at.range(start..p).count() as u64
}

/// Runs `ops` against one builder that keeps what it learnt; returns how many trimmed gaps
/// were checked.
fn run(ops: &[Op]) -> Result<u64, TestCaseError> {
    let d = tempfile::tempdir().unwrap();
    let mut next = 50u64;
    write(d.path(), SEG, 0, next);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 1, ReaderOptions::default()).unwrap();
    let mut at = BTreeMap::new();
    let mut notes = Befores::default();
    let mut end = catch_up(&mut b, Position::default(), &mut at, &mut notes);
    let mut checked = 0u64;
    for (i, op) in ops.iter().enumerate() {
        apply(d.path(), op, &mut next);
        if matches!(op, Op::Restart) {
            b = BatchBuilder::new(d.path(), public(d.path()), 1, ReaderOptions::default()).unwrap();
        }
        if !matches!(op, Op::Build | Op::Restart) && i + 1 < ops.len() {
            continue;
        }
        // Each trimmed gap starting where the builder stood must be counted from the true
        // number of records before that point (the builder's carried count, its memo, or
        // a fresh count), and so must the count kept with the cursor.
        notes.0.clear();
        let from = end.last;
        end = catch_up(&mut b, from, &mut at, &mut notes);
        for &(start, before) in &notes.0 {
            if let Some(n) = before {
                checked += 1;
                prop_assert_eq!(n, truth(&at, start), "gap at {} after {:?}", start, ops);
            }
        }
        if let Some(n) = end.last_records_before {
            prop_assert_eq!(n, truth(&at, end.last), "end {} after {:?}", end.last, ops);
        }
        // Positions are unique keys: nothing was delivered twice.
        prop_assert!(at.len() as u64 <= next);
    }
    Ok(checked)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn a_caught_up_builder_carries_the_true_record_count_of_its_segment(
        ops in proptest::collection::vec(op(), 1..14),
    ) {
        run(&ops)?;
    }
}

#[test]
fn a_segment_trimmed_where_the_builder_stood_states_the_records_after_it() {
    // Caught up mid-segment, then the log rotates and retention removes that segment: the
    // gap from the builder's position counts the records before it from what the builder
    // carried, without the segment to re-read. Also after a rolled-back counter.
    let ops = [
        Op::Write(300),
        Op::Build,
        Op::Write(3000),
        Op::Trim(3),
        Op::Build,
        Op::Write(200),
        Op::Build,
        Op::Rollback(100),
        Op::Build,
        Op::Write(3000),
        Op::Trim(3),
        Op::Build,
    ];
    assert_eq!(run(&ops).unwrap(), 2);
}

fn public(dir: &Path) -> [u8; 32] {
    segment_log::LogId::load(dir).unwrap().unwrap().public()
}

#[test]
fn a_new_builder_behind_a_rolled_back_counter_does_not_undercount() {
    // The newest segment's counter is lowered below where the last builder ended while a
    // writer is alive (so readers trust the counter); a new builder (the uploader restarted)
    // cannot count that segment's records up to its start, as its reader stops at the
    // counter: the count is unknown, not too low (a trimmed gap from there would state too
    // many records).
    let d = tempfile::tempdir().unwrap();
    let mut next = 0;
    apply(d.path(), &Op::Write(300), &mut next);
    let (mut at, mut notes) = (BTreeMap::new(), Befores::default());
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 1, ReaderOptions::default()).unwrap();
    let end = catch_up(&mut b, Position::default(), &mut at, &mut notes);
    assert_eq!(end.last_records_before, Some(truth(&at, end.last)));
    let _alive = recorder::Recorder::open(&crate::testutil::config(d.path(), SEG)).unwrap();
    apply(d.path(), &Op::Rollback(40), &mut next);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 1, ReaderOptions::default()).unwrap();
    let again = catch_up(&mut b, end.last, &mut at, &mut notes);
    assert_eq!(again.last, end.last);
    assert!(
        again
            .last_records_before
            .is_none_or(|n| n == truth(&at, end.last)),
        "{:?} records before {}, {} written",
        again.last_records_before,
        end.last,
        truth(&at, end.last)
    );
}
