//! Batch building against real logs written by the recorder.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use crate::protocol::{decode_body, GapReason, Limits};
use crate::testutil::{numbers, write};

const SEG: u64 = 64 << 10;

fn limits(max_records: u64, max_bytes: u64) -> BatchLimits {
    BatchLimits {
        max_bytes,
        max_records,
        max_gaps: 100,
    }
}

fn public(dir: &Path) -> [u8; 32] {
    segment_log::LogId::load(dir).unwrap().unwrap().public()
}

/// Builds batches until caught up; returns them decoded.
fn drain(
    b: &mut BatchBuilder,
    mut from: Position,
    l: &BatchLimits,
) -> Vec<(Built, crate::protocol::Batch)> {
    let mut out = Vec::new();
    loop {
        let built = b.build(from, l, None, i64::MAX, &mut NoNotes).unwrap();
        from = built.last;
        let end = built.end;
        if !built.is_empty() {
            let dec = decode_body(&built.body, &Limits::default()).unwrap();
            assert_eq!(dec.id(), built.id);
            out.push((built, dec));
        }
        if end == End::CaughtUp {
            return out;
        }
    }
}

#[test]
fn batches_chain_respect_limits_and_carry_every_record_once_in_order() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 3000);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let l = limits(700, 20_000);
    let batches = drain(&mut b, Position::default(), &l);
    let mut all = Vec::new();
    let mut prev_last = Position::default();
    for (built, dec) in &batches {
        assert_eq!(built.first, prev_last, "ranges chain");
        prev_last = built.last;
        assert!(dec.records.len() as u64 <= l.max_records);
        let bytes: usize = dec.records.iter().map(|r| r.payload.len()).sum();
        assert!(bytes as u64 <= l.max_bytes, "{bytes}");
        assert_eq!(dec.contexts.len(), 1, "one writer, one context per batch");
        assert_eq!(dec.contexts[0].get("record_format_version"), Some("2"));
        all.extend(numbers(dec));
    }
    assert_eq!(all, (0..3000).collect::<Vec<_>>());
    assert!(batches.len() > 5);
    let r = &batches[0].1.records[1];
    assert_eq!((r.classification.as_str(), r.severity), ("org.test/c/d", 2));
}

#[test]
fn rebuilding_a_range_gives_the_same_bytes_and_id_even_after_more_writes() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 500);
    let l = limits(10_000, 1 << 20);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let first = b
        .build(Position::default(), &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    assert_eq!(first.end, End::CaughtUp);
    write(d.path(), SEG, 500, 900);
    let mut b2 =
        BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let again = b2
        .build(
            Position::default(),
            &l,
            Some(first.last),
            i64::MAX,
            &mut NoNotes,
        )
        .unwrap();
    assert_eq!(
        (again.id, again.last, &again.body),
        (first.id, first.last, &first.body)
    );
    assert_eq!(again.end, End::Target);
    // The next batch continues exactly where the first ended.
    let next = b
        .build(first.last, &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    assert!(next.gaps.is_empty(), "{:?}", next.gaps);
    assert_eq!(
        numbers(&decode_body(&next.body, &Limits::default()).unwrap()),
        (500..900).collect::<Vec<_>>()
    );
}

#[test]
fn a_builder_that_caught_up_continues_as_a_fresh_one_would_after_more_writes() {
    // The later builds reuse what the last one learnt up to its end (contexts, records read
    // in the segment) instead of priming from the segment's start: the same batches as a
    // builder that primes. Each `write` is a new recorder (a new context frame mid-segment),
    // and the second crosses segment boundaries.
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 300);
    let l = limits(400, 1 << 20);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let (_, mut from) = drain_to(&mut b, Position::default(), &l);
    for (lo, hi) in [(300, 500), (500, 2500), (2500, 2600)] {
        assert!(from.offset > segment_log::format::HEADER_LEN, "{from}");
        write(d.path(), SEG, lo, hi);
        let mut fresh =
            BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
        let (want, want_end) = drain_to(&mut fresh, from, &l);
        let (got, got_end) = drain_to(&mut b, from, &l);
        assert_eq!(got_end, want_end);
        assert_eq!(got.len(), want.len());
        for ((g, gd), (w, wd)) in got.iter().zip(&want) {
            assert_eq!((g.id, g.first, g.last), (w.id, w.first, w.last));
            assert_eq!(g.body, w.body);
            assert_eq!(g.last_records_before, w.last_records_before);
            assert!(gd.gaps.is_empty(), "{:?}", gd.gaps);
            assert_eq!(numbers(gd), numbers(wd));
        }
        assert_eq!(numbers(&want[0].1)[0], lo);
        from = got_end;
    }
}

/// [`drain`], and where the last (caught-up) build ended.
fn drain_to(
    b: &mut BatchBuilder,
    from: Position,
    l: &BatchLimits,
) -> (Vec<(Built, crate::protocol::Batch)>, Position) {
    let out = drain(b, from, l);
    // One more build at the end: nothing new, so it ends where the stream stands.
    let start = out.last().map_or(from, |(built, _)| built.last);
    let end = b.build(start, l, None, i64::MAX, &mut NoNotes).unwrap();
    assert!(end.is_empty() && end.end == End::CaughtUp);
    (out, end.last)
}

#[test]
fn a_batch_starting_mid_segment_still_resolves_contexts() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1 << 20, 0, 100);
    let l = limits(10, 1 << 20);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let one = b
        .build(Position::default(), &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    let mut fresh =
        BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let two = fresh
        .build(one.last, &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    let dec = decode_body(&two.body, &Limits::default()).unwrap();
    assert_eq!(numbers(&dec), (10..20).collect::<Vec<_>>());
    assert!(two.gaps.is_empty(), "{:?}", two.gaps);
}

#[test]
fn two_writers_give_two_contexts_and_records_point_at_their_own() {
    let d = tempfile::tempdir().unwrap();
    let c = crate::testutil::config(d.path(), 1 << 20);
    let a = recorder::Recorder::open(&c).unwrap();
    let b2 = recorder::Recorder::open(&c).unwrap();
    for i in 0..20 {
        let r = if i % 2 == 0 { &a } else { &b2 };
        r.record(
            &recorder::RecordBuilder::parse("org.test/a/b", 1)
                .unwrap()
                .payload(&crate::testutil::payload(i)),
        )
        .unwrap();
    }
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let built = b
        .build(
            Position::default(),
            &limits(100, 1 << 20),
            None,
            i64::MAX,
            &mut NoNotes,
        )
        .unwrap();
    let dec = decode_body(&built.body, &Limits::default()).unwrap();
    assert_eq!(dec.records.len(), 20);
    // Same facts (one machine): the two writers' contexts are equal and sent once.
    assert_eq!(dec.contexts.len(), 1);
    assert!(dec.records.iter().all(|r| r.context == 0));
}

#[test]
fn trimmed_segments_become_a_gap_with_counts_and_the_rest_is_delivered() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 6000);
    let segs = segment_log::fs::live_segments(&d.path().join("segments")).unwrap();
    assert!(segs.len() > 4);
    let cursor = Position {
        segment: segs[0],
        offset: 300,
    };
    for s in &segs[..3] {
        std::fs::remove_file(
            d.path()
                .join("segments")
                .join(segment_log::fs::segment_file_name(*s, "seg")),
        )
        .unwrap();
    }
    struct Notes;
    impl Observer for Notes {
        fn trimmed_records(
            &mut self,
            _: Position,
            _: u64,
            count: u64,
            _: Option<u64>,
        ) -> Option<u64> {
            Some(count * 100)
        }
    }
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let built = b
        .build(
            cursor,
            &limits(100_000, 16 << 20),
            None,
            i64::MAX,
            &mut Notes,
        )
        .unwrap();
    let dec = decode_body(&built.body, &Limits::default()).unwrap();
    assert_eq!(dec.gaps.len(), 1, "{:?}", dec.gaps);
    let g = &dec.gaps[0];
    assert_eq!(
        (g.reason, g.segments, g.records, g.start),
        (GapReason::Trimmed, 3, 300, cursor)
    );
    assert_eq!(
        g.end,
        Position {
            segment: segs[3],
            offset: HEADER_LEN
        }
    );
    let n = numbers(&dec);
    assert!(n.windows(2).all(|w| w[1] == w[0] + 1) && *n.last().unwrap() == 5999);
}

#[test]
fn a_corrupt_frame_becomes_a_gap_and_later_records_still_go() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), 1 << 20, 0, 200);
    let seg = d
        .path()
        .join("segments")
        .join(segment_log::fs::segment_file_name(
            segment_log::fs::live_segments(&d.path().join("segments")).unwrap()[0],
            "seg",
        ));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4000] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let built = b
        .build(
            Position::default(),
            &limits(100_000, 16 << 20),
            None,
            i64::MAX,
            &mut NoNotes,
        )
        .unwrap();
    let dec = decode_body(&built.body, &Limits::default()).unwrap();
    assert_eq!(dec.gaps.len(), 1);
    assert_eq!(dec.gaps[0].reason, GapReason::CorruptFrame);
    let n = numbers(&dec);
    assert_eq!(n.len(), 199, "exactly the damaged record is missing");
    assert_eq!(*n.last().unwrap(), 199);
}

#[test]
fn records_the_rate_limiter_spooled_are_held_back_until_their_hold_expires() {
    let d = tempfile::tempdir().unwrap();
    let mut c = crate::testutil::config(d.path(), 1 << 20);
    c.recorder = recorder::config::RecorderConfig {
        record_burst_limit: Some(5),
        record_window: std::time::Duration::from_secs(60),
        byte_burst_limit: None,
        strategy: recorder::config::RateLimitStrategy::Spool,
        ..c.recorder
    };
    c.recorder.rate_limit_enabled = true;
    let rec = recorder::Recorder::open(&c).unwrap();
    for i in 0..10 {
        rec.record(
            &recorder::RecordBuilder::parse("org.test/a/b", 1)
                .unwrap()
                .payload(&crate::testutil::payload(i)),
        )
        .unwrap();
    }
    drop(rec);
    let now = crate::state::now_ms();
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let held = b
        .build(
            Position::default(),
            &limits(100, 1 << 20),
            None,
            now,
            &mut NoNotes,
        )
        .unwrap();
    assert!(
        matches!(held.end, End::Held { until_ms } if until_ms > now),
        "{:?}",
        held.end
    );
    assert_eq!(
        numbers(&decode_body(&held.body, &Limits::default()).unwrap()),
        (0..5).collect::<Vec<_>>()
    );
    // Once the hold has passed, the rest goes, starting exactly where the held batch ended.
    let later = b
        .build(
            held.last,
            &limits(100, 1 << 20),
            None,
            now + 3_600_000,
            &mut NoNotes,
        )
        .unwrap();
    assert_eq!(later.end, End::CaughtUp);
    assert_eq!(
        numbers(&decode_body(&later.body, &Limits::default()).unwrap()),
        (5..10).collect::<Vec<_>>()
    );
}

/// Found by the torture harness (tests/e2e/torture.rs): an in-flight batch is rebuilt after the
/// uploader died, but retention removed segments under it meanwhile. The rebuilt batch must
/// cover exactly the in-flight range, so it keeps its id (a collector that stored the first
/// send drops it as a duplicate, instead of storing a gap over records it has, or two
/// overlapping gaps); the rest of the gap follows in the next batch.
#[test]
fn rebuilding_an_inflight_range_over_trimmed_segments_keeps_its_range_and_id() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 6000);
    let segs = segment_log::fs::live_segments(&d.path().join("segments")).unwrap();
    assert!(segs.len() > 4);
    let l = limits(800, 16 << 20);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let delivered = b
        .build(Position::default(), &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    // The batch in flight when the uploader died.
    let first = b
        .build(delivered.last, &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    assert_eq!(first.end, End::Full);
    assert_eq!(first.first.segment, segs[0]);
    assert!(first.last.segment < segs[3], "{:?}", first.last);
    for s in &segs[..3] {
        std::fs::remove_file(
            d.path()
                .join("segments")
                .join(segment_log::fs::segment_file_name(*s, "seg")),
        )
        .unwrap();
    }
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let exact = BatchLimits {
        max_bytes: u64::MAX,
        max_records: Limits::default().max_records,
        max_gaps: u64::MAX,
    };
    let again = b
        .build(
            first.first,
            &exact,
            Some(first.last),
            i64::MAX,
            &mut NoNotes,
        )
        .unwrap();
    assert_eq!((again.first, again.last), (first.first, first.last));
    assert_eq!(again.id, first.id, "same range, same batch id");
    let dec = decode_body(&again.body, &Limits::default()).unwrap();
    assert_eq!(dec.records.len(), 0);
    assert_eq!(dec.gaps.len(), 1, "{:?}", dec.gaps);
    assert_eq!(
        (dec.gaps[0].start, dec.gaps[0].end),
        (first.first, first.last)
    );
    // The next batch goes on from there: the rest of the gap, then the records.
    let next = b
        .build(again.last, &l, None, i64::MAX, &mut NoNotes)
        .unwrap();
    let dec = decode_body(&next.body, &Limits::default()).unwrap();
    assert_eq!(dec.gaps.len(), 1, "{:?}", dec.gaps);
    let g = &dec.gaps[0];
    assert_eq!(g.reason, GapReason::Trimmed);
    assert_eq!(g.start, first.last);
    assert_eq!(
        g.end,
        Position {
            segment: segs[3],
            offset: HEADER_LEN
        }
    );
    assert!(!dec.records.is_empty());
}

/// A writer's context for hand-made logs: slot `slot`, machine id `machine`, one
/// classification.
fn raw_context(slot: u32, machine: &str) -> Context {
    let d = tempfile::tempdir().unwrap();
    let r = recorder::Recorder::open(&crate::testutil::config(d.path(), 1 << 20)).unwrap();
    let mut c = r.context();
    c.slot = slot;
    c.machine_id = machine.into();
    c.classifications = vec![recorder::Classification::new("org.test/raw/one").unwrap()];
    c
}

/// The frame payload of a record of `slot` with class index `class` and [`payload`] `i`.
fn raw_record(slot: u32, class: u32, i: u64) -> Vec<u8> {
    use recorder::record::{ClassRef, RecordHeader, RecordTime, Severity};
    let h = RecordHeader {
        slot,
        class: ClassRef::Index(class),
        severity: Severity::new(2).unwrap(),
        time: RecordTime::Relative {
            boot_delta_ms: 5,
            wall_skew_ms: 0,
        },
        event_id: None,
        hold_ms: None,
    };
    let mut out = Vec::new();
    recorder::record::encode_record(&h, &crate::testutil::payload(i), &mut out).unwrap();
    out
}

fn raw_log(dir: &Path) -> segment_log::Log {
    segment_log::Log::open(
        dir,
        segment_log::Options {
            segment_size: 1 << 20,
            max_record_size: 16 << 10,
            ..Default::default()
        },
    )
    .unwrap()
}

fn set_context(log: &segment_log::Log, c: &Context) {
    log.set_preamble(Some(recorder::record::encode_context(c).unwrap()))
        .unwrap();
}

#[test]
fn records_without_a_usable_context_or_that_do_not_decode_become_undecodable_gaps() {
    let d = tempfile::tempdir().unwrap();
    let log = raw_log(d.path());
    set_context(&log, &raw_context(0, &"a".repeat(32)));
    log.append(&raw_record(0, 0, 0)).unwrap();
    let no_context = log.append(&raw_record(5, 0, 100)).unwrap();
    let bad_class = log.append(&raw_record(0, 9, 101)).unwrap();
    let garbage = [0xffu8, 1, 2, 3];
    let undecodable = log.append(&garbage).unwrap();
    log.append(&raw_record(0, 0, 1)).unwrap();
    // A slot far outside the recorder's range has its context too.
    set_context(&log, &raw_context(u32::MAX, &"b".repeat(32)));
    log.append(&raw_record(u32::MAX, 0, 2)).unwrap();
    log.append(&raw_record(0, 0, 3)).unwrap();
    drop(log);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let batches = drain(&mut b, Position::default(), &limits(100, 1 << 20));
    assert_eq!(batches.len(), 1);
    let (built, dec) = &batches[0];
    assert_eq!(numbers(dec), vec![0, 1, 2, 3]);
    let machines: Vec<&str> = dec
        .records
        .iter()
        .map(|r| dec.contexts[r.context as usize].get("machine_id").unwrap())
        .collect();
    let (a, far) = ("a".repeat(32), "b".repeat(32));
    assert_eq!(machines, vec![&*a, &*a, &*far, &*a]);
    let decode_error = recorder::record::decode_frame(segment_log::FrameKind::Record, &garbage)
        .err()
        .unwrap()
        .to_string();
    let got: Vec<(GapReason, Position, u64, &str)> = built
        .gaps
        .iter()
        .map(|g| (g.reason, g.start, g.records, g.detail.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            (
                GapReason::UndecodableRecord,
                no_context,
                1,
                parts::MISSING_CONTEXT
            ),
            (GapReason::UndecodableRecord, bad_class, 1, parts::BAD_CLASS),
            (GapReason::UndecodableRecord, undecodable, 1, &*decode_error),
        ]
    );
    for g in &built.gaps {
        assert!(g.end > g.start, "{g:?}");
    }
}

#[test]
fn a_batch_ending_at_a_context_frame_hands_it_to_the_next_batch() {
    let d = tempfile::tempdir().unwrap();
    let log = raw_log(d.path());
    let (a, b2) = ("a".repeat(32), "b".repeat(32));
    set_context(&log, &raw_context(0, &a));
    log.append(&raw_record(0, 0, 0)).unwrap();
    log.append(&raw_record(0, 0, 1)).unwrap();
    // A new context of the same slot (a machine id rotation): records after it use it.
    set_context(&log, &raw_context(0, &b2));
    log.append(&raw_record(0, 0, 2)).unwrap();
    drop(log);
    let mut r = Reader::open(d.path(), Position::default(), ReaderOptions::default()).unwrap();
    let mut preambles = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        if let Entry::Frame(f) = e {
            if f.kind == FrameKind::Preamble {
                preambles.push(f.position);
            }
        }
    }
    assert_eq!(preambles.len(), 2);
    let at = preambles[1];
    let machine = |dec: &crate::protocol::Batch| -> Vec<String> {
        dec.records
            .iter()
            .map(|r| {
                dec.contexts[r.context as usize]
                    .get("machine_id")
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    let l = limits(100, 1 << 20);
    let mut b = BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    let one = b
        .build(Position::default(), &l, Some(at), i64::MAX, &mut NoNotes)
        .unwrap();
    assert_eq!((one.end, one.last), (End::Target, at));
    let dec = decode_body(&one.body, &Limits::default()).unwrap();
    assert_eq!(numbers(&dec), vec![0, 1]);
    assert_eq!(machine(&dec), vec![a.clone(), a.clone()]);
    // The same builder (its carried context frame) and a fresh one (reading the segment's
    // contexts before `at`) agree.
    let mut fresh =
        BatchBuilder::new(d.path(), public(d.path()), 3, ReaderOptions::default()).unwrap();
    for builder in [&mut b, &mut fresh] {
        let two = builder.build(at, &l, None, i64::MAX, &mut NoNotes).unwrap();
        let dec = decode_body(&two.body, &Limits::default()).unwrap();
        assert_eq!(numbers(&dec), vec![2]);
        assert_eq!(machine(&dec), vec![b2.clone()]);
        assert!(two.gaps.is_empty(), "{:?}", two.gaps);
    }
}
