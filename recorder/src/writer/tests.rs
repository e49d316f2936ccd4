use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use segment_log::ReaderOptions;

use std::time::Duration;

use super::*;
use crate::config::{RateLimitStrategy, RecorderConfig};
use crate::record::{EventId, RecordEntry, RecordId, RecordReader, Resolved, Severity};

/// A clock tests move by hand.
#[derive(Debug)]
pub(crate) struct FakeClock {
    pub wall_ms: AtomicI64,
    pub boot_ms: AtomicU64,
}

impl FakeClock {
    pub(crate) fn new() -> Arc<FakeClock> {
        Arc::new(FakeClock {
            wall_ms: AtomicI64::new(1_700_000_000_000),
            boot_ms: AtomicU64::new(10_000),
        })
    }
    pub(crate) fn advance(&self, ms: u64) {
        self.wall_ms.fetch_add(ms as i64, Ordering::SeqCst);
        self.boot_ms.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn wall_ns(&self) -> i64 {
        self.wall_ms.load(Ordering::SeqCst) * 1_000_000
    }
    fn boot_ns(&self) -> u64 {
        self.boot_ms.load(Ordering::SeqCst) * 1_000_000
    }
    fn boot_id(&self) -> [u8; 16] {
        [0x42; 16]
    }
}

pub(crate) fn test_config(dir: &Path) -> Config {
    let mut c = Config::for_dir(dir);
    c.log.segment_size = 1 << 20;
    c.log.max_record_size = 64 << 10;
    c.recorder = RecorderConfig::unlimited();
    c.recorder.static_machine_id_file = dir.join("no-static-id");
    c.recorder.machine_id_secret_file = dir.join("no-secret");
    c
}

/// All records of `dir`, in order, with their machine ids; fails on any skip or damage.
pub(crate) fn read_all(dir: &Path) -> Vec<(RecordId, Resolved, String, Vec<u8>)> {
    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let mut r = RecordReader::open(dir, Position::default(), opts).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            RecordEntry::Record(v) => out.push((
                v.id,
                v.meta,
                v.context.machine_id.clone(),
                v.payload.to_vec(),
            )),
            RecordEntry::Context { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    out
}

#[test]
fn records_read_back_with_their_fields_ids_and_context() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let rec = Recorder::open_with(&test_config(d.path()), clock.clone(), false).unwrap();
    let ev = EventId::parse("5de9de8d5f3c6a7d445d75ba01cc3322").unwrap();
    let a = rec
        .record(
            &RecordBuilder::parse("org.example/a/one", 1)
                .unwrap()
                .payload(b"first"),
        )
        .unwrap();
    clock.advance(1234);
    let b = rec
        .record(
            &RecordBuilder::parse("org.example/b/two", 4)
                .unwrap()
                .payload(b"second")
                .event_id(ev),
        )
        .unwrap();
    let c = rec
        .record(&RecordBuilder::parse("org.example/a/one", 2).unwrap())
        .unwrap();
    let all = read_all(d.path());
    assert_eq!(
        all.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![a.id(), b.id(), c.id()]
    );
    assert_eq!(all[0].1.classification.as_str(), "org.example/a/one");
    assert_eq!(all[0].1.wall_ms, 1_700_000_000_000);
    assert_eq!(all[0].1.boot_ms, 10_000);
    assert_eq!(all[1].1.severity, Severity::CRITICAL);
    assert_eq!(all[1].1.event_id, Some(ev));
    assert_eq!(all[1].1.wall_ms, 1_700_000_001_234);
    assert_eq!(all[1].3, b"second");
    assert_eq!(all[2].1.classification.as_str(), "org.example/a/one");
    assert!(all[2].3.is_empty());
    assert_eq!(
        all[0].2.len(),
        32,
        "rotating machine id is 32 hex characters"
    );
    assert_eq!(rec.context().classifications.len(), 2);
}

#[test]
fn a_receipt_holds_the_read_back_position_and_derives_the_same_id() {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
    let public = *rec.public_log_id();
    let one = rec
        .record(
            &RecordBuilder::parse("org.example/a/one", 1)
                .unwrap()
                .payload(b"x"),
        )
        .unwrap();
    let recs = vec![
        RecordBuilder::parse("org.example/b/two", 2)
            .unwrap()
            .payload(b"y"),
        RecordBuilder::parse("org.example/a/one", 3).unwrap(),
    ];
    let batch = rec.record_batch(&recs).unwrap();
    let receipts: Vec<Receipt> = std::iter::once(one)
        .chain(batch.into_iter().map(Result::unwrap))
        .collect();

    let mut r = RecordReader::open(
        d.path(),
        Position::default(),
        ReaderOptions {
            hole_timeout: Duration::from_millis(50),
            ..ReaderOptions::default()
        },
    )
    .unwrap();
    let mut read = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        if let RecordEntry::Record(v) = e {
            read.push((v.position, v.id));
        }
    }
    assert_eq!(read.len(), receipts.len());
    for (receipt, (position, id)) in receipts.iter().zip(read) {
        assert_eq!(receipt.position(), position);
        assert_eq!(receipt.public_log_id(), &public);
        assert_eq!(receipt.id(), RecordId::derive(&public, position));
        assert_eq!(receipt.id(), id);
        assert_eq!(RecordId::from(*receipt), id);
        assert_eq!(receipt.to_string(), id.to_string());
    }
}

#[test]
fn two_writers_on_one_log_hold_different_slots_and_both_resolve() {
    let d = tempfile::tempdir().unwrap();
    let cfg = test_config(d.path());
    let r1 = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    let r2 = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    assert_ne!(r1.slot(), r2.slot());
    for i in 0..10 {
        let w = if i % 2 == 0 { &r1 } else { &r2 };
        let class = if i % 2 == 0 { "x.y/one/a" } else { "x.y/two/b" };
        w.record(
            &RecordBuilder::parse(class, 1)
                .unwrap()
                .payload(format!("{i}").as_bytes()),
        )
        .unwrap();
    }
    let all = read_all(d.path());
    assert_eq!(all.len(), 10);
    for (i, r) in all.iter().enumerate() {
        let want = if i % 2 == 0 { "x.y/one/a" } else { "x.y/two/b" };
        assert_eq!(r.1.classification.as_str(), want);
        assert_eq!(r.3, format!("{i}").as_bytes());
    }
    drop(r1);
    let r3 = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    assert_eq!(r3.slot(), 0, "a released slot is reused");
}

#[test]
fn oversized_payload_is_refused_naming_the_payload() {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
    let big = vec![0u8; rec.max_payload() + 1];
    let e = rec
        .record(&RecordBuilder::parse("a/b/c", 1).unwrap().payload(&big))
        .unwrap_err();
    assert_eq!(e.field(), Some("payload"));
    assert!(e.to_string().contains("max_record_size"), "{e}");
    let ok = vec![0u8; rec.max_payload()];
    rec.record(&RecordBuilder::parse("a/b/c", 1).unwrap().payload(&ok))
        .unwrap();
}

#[test]
fn machine_id_rotates_with_the_period_and_static_file_wins() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let mut cfg = test_config(d.path());
    cfg.recorder.machine_id_rotation = Duration::from_secs(3 * 86_400);
    let rec = Recorder::open_with(&cfg, clock.clone(), false).unwrap();
    let b = RecordBuilder::parse("a/b/c", 1).unwrap();
    rec.record(&b).unwrap();
    clock.advance(3 * 86_400_000);
    rec.record(&b).unwrap();
    let all = read_all(d.path());
    assert_ne!(all[0].2, all[1].2, "machine id rotated");
    drop(rec);
    std::fs::write(d.path().join("no-static-id"), "static-id\n").unwrap();
    let rec = Recorder::open_with(&cfg, clock.clone(), false).unwrap();
    rec.record(&b).unwrap();
    assert_eq!(read_all(d.path())[2].2, "static-id");
}

#[test]
fn a_wall_clock_jump_is_kept_as_skew_and_boot_time_stays_monotonic() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let rec = Recorder::open_with(&test_config(d.path()), clock.clone(), false).unwrap();
    let b = RecordBuilder::parse("a/b/c", 1).unwrap();
    rec.record(&b).unwrap();
    clock.wall_ms.fetch_sub(3_600_000, Ordering::SeqCst);
    clock.boot_ms.fetch_add(5, Ordering::SeqCst);
    rec.record(&b).unwrap();
    // The wall clock is re-read once a second of boot time.
    clock.advance(WALL_RECHECK_MS);
    rec.record(&b).unwrap();
    let all = read_all(d.path());
    assert_eq!(
        all[1].1.wall_ms, 1_700_000_000_005,
        "within a second: old offset"
    );
    assert_eq!(all[1].1.boot_ms, 10_005);
    assert_eq!(
        all[2].1.wall_ms,
        1_700_000_000_000 - 3_600_000 + WALL_RECHECK_MS as i64,
        "after a second: the stepped clock"
    );
    assert_eq!(all[2].1.boot_ms, 10_005 + WALL_RECHECK_MS);
}

#[test]
fn long_running_writers_rebase_their_times_and_stay_readable() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let rec = Recorder::open_with(&test_config(d.path()), clock.clone(), false).unwrap();
    let b = RecordBuilder::parse("a/b/c", 1).unwrap();
    for _ in 0..5 {
        rec.record(&b).unwrap();
        clock.advance(REBASE_HARD_MS + 7);
    }
    let all = read_all(d.path());
    for (i, r) in all.iter().enumerate() {
        assert_eq!(r.1.boot_ms, 10_000 + i as u64 * (REBASE_HARD_MS + 7));
    }
}

#[test]
fn batches_append_in_order_and_report_each_outcome() {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
    let big = vec![1u8; rec.max_payload() + 1];
    let recs = vec![
        RecordBuilder::parse("a/b/c", 1).unwrap().payload(b"1"),
        RecordBuilder::parse("a/b/d", 2).unwrap().payload(&big),
        RecordBuilder::parse("a/b/e", 3).unwrap().payload(b"3"),
    ];
    let out = rec.record_batch(&recs).unwrap();
    assert!(out[0].is_ok() && out[2].is_ok());
    assert_eq!(out[1].as_ref().unwrap_err().field(), Some("payload"));
    let all = read_all(d.path());
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, out[0].as_ref().unwrap().id());
    assert_eq!(all[1].0, out[2].as_ref().unwrap().id());
    assert_eq!(all[1].1.classification.as_str(), "a/b/e");
}

#[test]
fn every_segment_carries_the_context_of_its_records() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = test_config(d.path());
    cfg.log.segment_size = 64 << 10;
    cfg.log.max_record_size = 8 << 10;
    let rec = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    let payload = vec![b'x'; 1000];
    for i in 0..300 {
        let class = format!("a/b/c{}", i % 7);
        rec.record(&RecordBuilder::parse(&class, 1).unwrap().payload(&payload))
            .unwrap();
    }
    assert!(rec.log().active_segment() > 3);
    // Each segment read on its own resolves all its records.
    for seg in 1..=rec.log().active_segment() {
        let opts = ReaderOptions {
            hole_timeout: Duration::from_millis(50),
            ..ReaderOptions::default()
        };
        let mut r = RecordReader::open(
            d.path(),
            Position {
                segment: seg,
                offset: 0,
            },
            opts,
        )
        .unwrap();
        while let Some(e) = r.next_entry().unwrap() {
            match e {
                RecordEntry::Record(v) if v.position.segment == seg => {
                    assert!(v.meta.classification.as_str().starts_with("a/b/c"))
                }
                RecordEntry::Record(_) => break,
                RecordEntry::Context { .. } => {}
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(read_all(d.path()).len(), 300);
}

#[test]
fn a_reader_starting_mid_segment_still_resolves_records() {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
    for i in 0..20 {
        rec.record(
            &RecordBuilder::parse("a/b/c", 1)
                .unwrap()
                .payload(format!("{i}").as_bytes()),
        )
        .unwrap();
    }
    let all = read_all(d.path());
    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let mut r = RecordReader::open(d.path(), Position::default(), opts.clone()).unwrap();
    let mut tenth = None;
    let mut n = 0;
    while let Some(e) = r.next_entry().unwrap() {
        if let RecordEntry::Record(v) = e {
            n += 1;
            if n == 10 {
                tenth = Some(v.position);
            }
        }
    }
    let mut r = RecordReader::open(d.path(), tenth.unwrap(), opts).unwrap();
    let mut rest = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            RecordEntry::Record(v) => rest.push(v.id),
            RecordEntry::Context { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(rest, all[9..].iter().map(|r| r.0).collect::<Vec<_>>());
}

fn bytes_used_per_payload_byte(lines: &[&[u8]]) -> f64 {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
    let b = RecordBuilder::parse("org.seglog/pipe/loghub", 2).unwrap();
    let mut payload = 0u64;
    for line in lines {
        rec.record(&b.clone().payload(line)).unwrap();
        payload += line.len() as u64;
    }
    let used = segment_log::stats(d.path(), true).unwrap().bytes_used;
    used as f64 / payload as f64
}

#[test]
fn loghub_lines_take_at_most_1_3x_their_bytes_on_disk() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data/loghub");
    let Ok(files) = std::fs::read_dir(&dir) else {
        eprintln!("skipping: {} not found", dir.display());
        return;
    };
    let texts: Vec<Vec<u8>> = files
        .flatten()
        .filter(|f| f.path().extension().is_some_and(|e| e == "log"))
        .map(|f| std::fs::read(f.path()).unwrap())
        .collect();
    let lines: Vec<&[u8]> = texts
        .iter()
        .flat_map(|t| t.split(|&c| c == b'\n'))
        .filter(|l| !l.is_empty())
        .collect();
    let all = bytes_used_per_payload_byte(&lines);
    let near_100: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| (90..=110).contains(&l.len()))
        .collect();
    let hundred = bytes_used_per_payload_byte(&near_100);
    eprintln!(
        "all {} lines: {all:.3}x; {} lines of 90-110 bytes: {hundred:.3}x",
        lines.len(),
        near_100.len()
    );
    assert!(all <= 1.3, "{all}");
    assert!(hundred <= 1.3, "{hundred}");
}

#[test]
fn a_batch_the_log_refuses_counts_nothing_and_spends_no_allowance() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = test_config(d.path());
    cfg.recorder.rate_limit_enabled = true;
    cfg.recorder.record_burst_limit = Some(2);
    cfg.recorder.byte_burst_limit = None;
    cfg.recorder.strategy = RateLimitStrategy::Spool;
    let rec = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    let big = vec![b'x'; 60 << 10];
    let class = RecordBuilder::parse("org.test/tally/x", 1).unwrap();
    let too_many: Vec<RecordBuilder<'_>> = (0..20).map(|_| class.clone().payload(&big)).collect();
    let e = rec.record_batch(&too_many).unwrap_err();
    assert_eq!(e.code(), "batch_too_large", "{e}");
    rec.flush_counters().unwrap();
    assert_eq!(crate::counters::read(d.path()).unwrap().total_spooled(), 0);
    // The retry is counted once, and the two allowed records of the failed try were refunded.
    let small: Vec<RecordBuilder<'_>> = (0..5).map(|_| class.clone().payload(b"s")).collect();
    let out = rec.record_batch(&small).unwrap();
    let held = out
        .iter()
        .filter(|o| o.as_ref().unwrap().held_back_until().is_some())
        .count();
    assert_eq!(held, 3, "2 allowed, 3 spooled");
    rec.flush_counters().unwrap();
    assert_eq!(crate::counters::read(d.path()).unwrap().total_spooled(), 3);
}

/// Issue 12: `seglog record` (a one-shot writer: no prepare-ahead) started the segment log's
/// background thread whenever retention was configured (the default), for a process that
/// writes one record and exits.
#[test]
fn a_one_shot_recorder_starts_no_background_thread() {
    let d = tempfile::tempdir().unwrap();
    let cfg = test_config(d.path());
    assert!(cfg.log.max_bytes.is_some(), "retention is on by default");
    let rec = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    rec.record(
        &RecordBuilder::parse("org.test/one/shot", 1)
            .unwrap()
            .payload(b"x"),
    )
    .unwrap();
    assert!(!rec.log().background_thread_started());
    drop(rec);
    let probe = Recorder::open_with(&cfg, FakeClock::new(), true).unwrap();
    assert!(probe.log().background_thread_started());
}

/// Issue 17: a record with its own (earlier) time keeps it, and a hold still ends when the
/// rate limiter said: the hold counts from the record's time, so it is lengthened by the
/// difference.
#[test]
fn a_record_with_its_own_time_keeps_it_and_its_hold_still_ends_on_time() {
    let d = tempfile::tempdir().unwrap();
    let mut cfg = test_config(d.path());
    cfg.recorder.rate_limit_enabled = true;
    cfg.recorder.record_burst_limit = Some(1);
    cfg.recorder.byte_burst_limit = None;
    cfg.recorder.strategy = RateLimitStrategy::Spool;
    let rec = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
    let day_ago = 1_700_000_000_000 - 86_400_000; // FakeClock starts at 1_700_000_000_000
    let class = RecordBuilder::parse("org.test/own/time", 1).unwrap();
    let batch: Vec<RecordBuilder<'_>> = (0..2)
        .map(|_| class.clone().payload(b"e").wall_ms(day_ago))
        .collect();
    let out = rec.record_batch(&batch).unwrap();
    let until = out[1].as_ref().unwrap().held_back_until().expect("spooled");
    drop(rec);
    let all = read_all(d.path());
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|r| r.1.wall_ms == day_ago), "own time kept");
    assert_eq!(all[0].1.hold_until_wall_ms, None);
    assert_eq!(
        all[1].1.hold_until_wall_ms,
        Some(until),
        "the stored release time is the one the recorder reported"
    );
    assert!(
        until > day_ago + 86_400_000 - 1000,
        "released from now, not a day early"
    );
}

/// A single record lets go of the context lock once its place in the log is fixed, before
/// its bytes are written (`Log::append_parts`). Context changes racing with appends on other
/// threads (new classifications, and rebases forced by clock jumps) must still leave every
/// record after the context it was encoded with: each decodes to its own classification and
/// a time inside the window its writer saw around the call.
#[test]
fn records_racing_context_changes_decode_with_their_own_context() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    // The clock jumps 90 days here: with the default 30-day age limit a rotation late in
    // the run trimmed the first segment (more often the faster `record` is), and this test
    // is about contexts, not retention.
    let mut cfg = test_config(d.path());
    cfg.log.max_age = None;
    cfg.log.max_bytes = None;
    let rec = Recorder::open_with(&cfg, clock.clone(), false).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let windows: Vec<Vec<(u64, u64)>> = std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(2));
                clock.advance(REBASE_HARD_MS + 1);
            }
            stop.store(true, Ordering::SeqCst);
        });
        let writers: Vec<_> = (0..4u32)
            .map(|t| {
                let (rec, clock, stop) = (&rec, &clock, &stop);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    let mut i = 0u32;
                    while !stop.load(Ordering::SeqCst) || i < 2000 {
                        let class = format!("org.example/t{t}/c{}", i % 97);
                        let mut payload = t.to_le_bytes().to_vec();
                        payload.extend_from_slice(&i.to_le_bytes());
                        payload.extend_from_slice(class.as_bytes());
                        let b = RecordBuilder::parse(&class, 3).unwrap();
                        let before = clock.boot_ms.load(Ordering::SeqCst);
                        rec.record(&b.payload(&payload)).unwrap();
                        seen.push((before, clock.boot_ms.load(Ordering::SeqCst)));
                        i += 1;
                    }
                    seen
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let all = read_all(d.path());
    assert_eq!(all.len(), windows.iter().map(Vec::len).sum::<usize>());
    let mut rebased = std::collections::HashSet::new();
    for (_, meta, _, payload) in &all {
        let t = u32::from_le_bytes(payload[..4].try_into().unwrap()) as usize;
        let i = u32::from_le_bytes(payload[4..8].try_into().unwrap()) as usize;
        assert_eq!(meta.classification.as_str().as_bytes(), &payload[8..]);
        let (before, after) = windows[t][i];
        assert!(
            (before..=after).contains(&meta.boot_ms),
            "thread {t} record {i}: boot {} outside {before}..={after}",
            meta.boot_ms
        );
        rebased.insert(before);
    }
    assert!(rebased.len() > 5, "the clock moved during the appends");
}
