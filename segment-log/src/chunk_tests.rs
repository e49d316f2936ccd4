//! Per-writer chunks through the public API (format version 2, `chunk.rs`): the closer pads
//! an idle chunk, a thread's exit pads its chunk, a killed writer's chunk is reported as an
//! abandoned reservation and loses no acknowledged record.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use crate::{Entry, FrameKind, Log, Options, Position, Reader, ReaderOptions};

fn opts() -> Options {
    Options {
        segment_size: 1 << 20,
        max_record_size: 8 << 10,
        prepare_ahead: false,
        ..Options::default()
    }
}

/// Records (offset order) and damage codes, reading with `hole_timeout`.
fn read(dir: &std::path::Path, hole_timeout: Duration) -> (Vec<(Position, Vec<u8>)>, Vec<String>) {
    let mut r = Reader::open(
        dir,
        Position::default(),
        ReaderOptions {
            hole_timeout,
            ..ReaderOptions::default()
        },
    )
    .unwrap();
    let (mut recs, mut damage) = (Vec::new(), Vec::new());
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            Entry::Frame(f) if f.kind == FrameKind::Record => {
                recs.push((f.position, f.payload.to_vec()))
            }
            Entry::Frame(_) => {}
            Entry::Damage(d) => damage.push(d.reason.code().to_string()),
        }
    }
    (recs, damage)
}

fn counter(dir: &std::path::Path) -> u64 {
    let b = std::fs::read(
        dir.join("segments")
            .join(crate::fs::segment_file_name(1, crate::fs::SEG_EXT)),
    )
    .unwrap();
    crate::format::reserved_end(&b)
}

#[test]
fn an_idle_chunk_is_padded_by_the_closer_while_its_writer_lives() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), opts()).unwrap();
    log.test_eager_chunks();
    let pos: Vec<Position> = (0..10u8).map(|i| log.append(&[i; 100]).unwrap()).collect();
    // One 4 KiB chunk holds them all; the counter covers the whole chunk.
    assert_eq!(counter(d.path()), 256 + 4096);
    assert!(pos.windows(2).all(|p| p[0] < p[1]));
    // Well past two closer ticks, the writer alive and idle: the rest is a pad, so a reader
    // with a hole timeout shorter than a tick finds no hole.
    std::thread::sleep(Duration::from_millis(100));
    let (recs, damage) = read(d.path(), Duration::from_millis(1));
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), pos);
    // The thread's next append opens a new chunk after the padded one.
    assert_eq!(log.append(b"after").unwrap().offset, 256 + 4096);
    drop(log);
    let (recs, damage) = read(d.path(), Duration::ZERO);
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(recs.len(), 11);
}

#[test]
fn a_thread_that_exits_pads_its_chunk_at_once() {
    let d = tempfile::tempdir().unwrap();
    let log = std::sync::Arc::new(Log::open(d.path(), opts()).unwrap());
    log.test_eager_chunks();
    let l = log.clone();
    std::thread::spawn(move || {
        for i in 0..5u8 {
            l.append(&[i; 50]).unwrap();
        }
    })
    .join()
    .unwrap();
    // No wait for the closer: the thread's exit closed the chunk.
    let (recs, damage) = read(d.path(), Duration::from_millis(1));
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(recs.len(), 5);
}

#[test]
fn a_writer_killed_inside_its_chunk_leaves_a_reported_hole_and_loses_nothing() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), opts()).unwrap();
    log.test_eager_chunks();
    for i in 0..7u8 {
        log.append(&[i; 100]).unwrap();
    }
    log.test_abandon_chunks();
    drop(log);
    let (recs, damage) = read(d.path(), Duration::ZERO);
    assert_eq!(recs.len(), 7);
    assert_eq!(damage, ["abandoned_reservation"]);
    // The next writer appends after the hole; nothing lands inside it.
    let log = Log::open(d.path(), opts()).unwrap();
    assert_eq!(log.append(b"next").unwrap().offset, 256 + 4096);
    drop(log);
    let (recs, damage) = read(d.path(), Duration::ZERO);
    assert_eq!(recs.len(), 8);
    assert_eq!(damage, ["abandoned_reservation"]);
}

#[test]
fn sync_and_a_preamble_change_close_open_chunks() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), opts()).unwrap();
    log.test_eager_chunks();
    log.append(b"one").unwrap();
    log.sync().unwrap();
    let (_, damage) = read(d.path(), Duration::from_millis(1));
    assert!(damage.is_empty(), "after sync: {damage:?}");
    // The next append opens a new chunk, after the padded one.
    let p = log.append(b"two").unwrap();
    assert_eq!(p.offset, 256 + 4096);
    log.set_preamble(Some(b"ctx".to_vec())).unwrap();
    let (recs, damage) = read(d.path(), Duration::from_millis(1));
    assert!(damage.is_empty(), "after set_preamble: {damage:?}");
    assert_eq!(recs.len(), 2);
    // The new preamble goes before the next record, in a chunk after every earlier one.
    let p3 = log.append(b"three").unwrap();
    assert!(p3.offset > 256 + 2 * 4096, "{p3:?}");
}

/// A counter lowered (damage, a rollback) into the zero rest of a pad: the next sole writer
/// appends after the whole pad, never inside the range readers skip.
#[test]
fn a_counter_lowered_into_a_pad_is_raised_past_it() {
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), opts()).unwrap();
    log.test_eager_chunks();
    for i in 0..3u8 {
        log.append(&[i + 1; 100]).unwrap();
    }
    drop(log); // pads the chunk: 256 + 3 * 120 = 616 .. 4352
    assert_eq!(counter(d.path()), 4352);
    let path = d
        .path()
        .join("segments")
        .join(crate::fs::segment_file_name(1, crate::fs::SEG_EXT));
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(
        &2048u64.to_le_bytes(),
        crate::format::OFF_RESERVED_END as u64,
    )
    .unwrap();
    drop(f);
    let log = Log::open(d.path(), opts()).unwrap();
    assert_eq!(log.append(b"after").unwrap().offset, 4352);
    drop(log);
    let (recs, damage) = read(d.path(), Duration::ZERO);
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(recs.len(), 4);
}

#[test]
fn chunk_sizes_grow_with_the_run_so_a_bursts_last_pad_stays_small() {
    use crate::chunk::{next_size, CHUNK_MAX, CHUNK_MIN, RUN_FRACTION};
    // Doubling, but never past 1/64 of what the run filled, nor below the minimum.
    assert_eq!(next_size(CHUNK_MIN, CHUNK_MIN), CHUNK_MIN);
    assert_eq!(next_size(CHUNK_MIN, 1 << 20), 8 << 10);
    assert_eq!(next_size(8 << 10, 1 << 20), 16 << 10);
    assert_eq!(next_size(16 << 10, 1 << 20), (1 << 20) / RUN_FRACTION);
    assert_eq!(next_size(CHUNK_MAX, 1 << 30), CHUNK_MAX);
    assert_eq!(next_size(CHUNK_MAX, 1 << 20), (1 << 20) / RUN_FRACTION);
    // Whole multiples of the minimum, so chunks stay frame-aligned.
    for run in (0..(8 << 20)).step_by(4096 + 8) {
        let s = next_size(CHUNK_MIN, run);
        assert_eq!(s % CHUNK_MIN, 0, "{run}");
        assert!(s <= CHUNK_MIN.max(run / RUN_FRACTION), "{run}");
    }
    // A burst of ~400 KB of 100-byte records from one busy thread: the counter ends at
    // most max(4 KiB, 1/64 of the burst) past the last frame (it was up to 64 KiB).
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            segment_size: 4 << 20,
            ..opts()
        },
    )
    .unwrap();
    log.test_eager_chunks();
    let mut last = Position::default();
    for i in 0..3_300u32 {
        last = log.append(&[i as u8; 100]).unwrap();
    }
    assert_eq!(last.segment, 1, "{last:?}");
    let last_end = last.offset + crate::format::frame_len(100);
    let pad = counter(d.path()) - last_end;
    let burst = last_end - 256;
    assert!(
        pad <= CHUNK_MIN.max(burst / RUN_FRACTION),
        "pad {pad} after a burst of {burst} bytes"
    );
}
