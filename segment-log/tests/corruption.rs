//! Corruption corpus: every bit flip, truncation at every length, zeroed pages, and garbage
//! followed by repeated reopening. Whatever the damage, readers return only whole, original
//! records at their original positions, and every record they drop lies in a range they
//! report as damaged.

mod common;

use std::os::unix::fs::FileExt;
use std::path::Path;

use common::*;
use segment_log::format::{self, HEADER_LEN, OFF_RESERVED_END};
use segment_log::{DamageReason, FrameKind, Log, Options, OwnedFrame, ReaderOptions};
use tempfile::TempDir;

/// One 8 KiB segment, no background preparation: the directory is exactly what appends made.
fn tiny() -> Options {
    Options {
        segment_size: 8192,
        max_record_size: 1024,
        prepare_ahead: false,
        ..Options::default()
    }
}

/// A preamble and records of varied lengths (several with padding) in one segment.
fn small_log() -> (TempDir, Vec<OwnedFrame>) {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), tiny()).unwrap();
    log.set_preamble(Some(b"context: host=test".to_vec()))
        .unwrap();
    for (seq, len) in [20usize, 21, 27, 33, 40, 64].into_iter().enumerate() {
        log.append(&payload(1, seq as u64, len)).unwrap();
    }
    drop(log);
    let (frames, damage) = read_all(d.path());
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(records(&frames).len(), 6);
    assert!(frames.iter().all(|f| f.position.segment == 1));
    (d, frames)
}

fn reserved_end(seg: &Path) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(seg)
        .unwrap()
        .read_exact_at(&mut b, OFF_RESERVED_END as u64)
        .unwrap();
    u64::from_le_bytes(b)
}

/// Flips bit `bit` of the byte at `at` in `path`, in place.
fn flip(path: &Path, at: u64, bit: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, at).unwrap();
    b[0] ^= 1 << bit;
    f.write_all_at(&b, at).unwrap();
}

/// Byte ranges the format leaves out of every checksum because they carry no data: frame
/// padding (zero by definition). A flip there must leave every record intact.
fn padding(frames: &[OwnedFrame]) -> Vec<std::ops::Range<u64>> {
    frames
        .iter()
        .map(|f| {
            let start = f.position.offset + format::FRAME_HEADER_LEN + f.payload.len() as u64;
            start..f.position.offset + format::frame_len(f.payload.len() as u64)
        })
        .collect()
}

#[test]
fn every_bit_flip_in_the_frame_area_is_reported_and_drops_only_the_frames_it_hit() {
    let (orig, frames) = small_log();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(orig.path(), copy.path());
    let seg = seg_file(copy.path(), 1);
    let end = reserved_end(&seg);
    let pad = padding(&frames);
    let mut flips = 0;
    for at in HEADER_LEN..end {
        let in_padding = pad.iter().any(|r| r.contains(&at));
        for bit in 0..8 {
            flip(&seg, at, bit);
            let (got, damage) = read_all(copy.path());
            flip(&seg, at, bit);
            let ctx = format!("flip of bit {bit} at byte {at}");
            check_against(&frames, &got, &damage).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            if in_padding {
                assert_eq!(got, frames, "{ctx} (padding) must not lose a record");
            } else {
                assert!(!damage.is_empty(), "{ctx} was not detected");
                assert!(
                    got.len() < frames.len(),
                    "{ctx}: the frame it hit was returned"
                );
            }
            flips += 1;
        }
    }
    assert!(flips > 2500, "only {flips} flips");
}

#[test]
fn every_bit_flip_in_the_checksummed_header_is_reported_as_bad_header_and_returns_nothing() {
    let (orig, frames) = small_log();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(orig.path(), copy.path());
    let seg = seg_file(copy.path(), 1);
    // Bytes 0..96 are covered by the header checksum at 96..100.
    for at in 0..100 {
        for bit in 0..8 {
            flip(&seg, at, bit);
            let (got, damage) = read_all(copy.path());
            flip(&seg, at, bit);
            assert!(
                got.is_empty(),
                "flip {at}:{bit} returned frames from a bad header"
            );
            assert!(
                matches!(&damage[..], [d] if d.segment == 1 && matches!(d.reason, DamageReason::BadHeader(_))),
                "flip {at}:{bit}: {damage:?}"
            );
            check_against(&frames, &got, &damage).unwrap();
        }
    }
}

#[test]
fn every_bit_flip_in_the_reservation_counter_is_reported_or_loses_nothing() {
    // The counter is not checksummed (it changes on every append). A flip that raises it
    // exposes zeroes, reported as an abandoned reservation; one that lowers it must not hide
    // the records after it.
    let (orig, frames) = small_log();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(orig.path(), copy.path());
    let seg = seg_file(copy.path(), 1);
    for at in OFF_RESERVED_END as u64..OFF_RESERVED_END as u64 + 8 {
        for bit in 0..8 {
            flip(&seg, at, bit);
            let (got, damage) = read_all(copy.path());
            flip(&seg, at, bit);
            let ctx = format!("counter flip {at}:{bit}");
            check_against(&frames, &got, &damage).unwrap_or_else(|e| panic!("{ctx}: {e}"));
            assert_eq!(got, frames, "{ctx} lost records");
        }
    }
}

#[test]
fn bit_flips_in_the_reserved_zero_header_bytes_lose_nothing() {
    // Bytes 100..128 and 136..256 are reserved (zero) in version 1 and carry no data; readers
    // ignore them rather than give up a whole segment of intact records.
    let (orig, frames) = small_log();
    let copy = tempfile::tempdir().unwrap();
    copy_dir(orig.path(), copy.path());
    let seg = seg_file(copy.path(), 1);
    let reserved = (100..OFF_RESERVED_END as u64).chain(OFF_RESERVED_END as u64 + 8..HEADER_LEN);
    for at in reserved {
        for bit in 0..8 {
            flip(&seg, at, bit);
            let (got, damage) = read_all(copy.path());
            flip(&seg, at, bit);
            assert_eq!(got, frames, "flip {at}:{bit}");
            assert!(damage.is_empty(), "flip {at}:{bit}: {damage:?}");
        }
    }
}

#[test]
fn truncation_at_every_length_keeps_the_whole_frames_before_the_cut_and_reopens() {
    let (orig, frames) = small_log();
    let seg_len = std::fs::metadata(seg_file(orig.path(), 1)).unwrap().len();
    let end = reserved_end(&seg_file(orig.path(), 1));
    let lengths = (0..end + 24).chain([seg_len / 2, seg_len - 8, seg_len - 1]);
    for len in lengths {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(orig.path(), copy.path());
        let seg = seg_file(copy.path(), 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len)
            .unwrap();
        let (got, damage) = read_all(copy.path());
        let ctx = format!("truncated to {len}");
        check_against(&frames, &got, &damage).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let whole: Vec<_> = frames
            .iter()
            .filter(|f| {
                len >= HEADER_LEN
                    && f.position.offset + format::frame_len(f.payload.len() as u64) <= len
            })
            .cloned()
            .collect();
        assert_eq!(got, whole, "{ctx}");
        let cut = frames.iter().any(|f| {
            f.position.offset < len
                && f.position.offset + format::frame_len(f.payload.len() as u64) > len
        });
        if len < HEADER_LEN {
            assert!(
                matches!(damage[..], [ref d] if matches!(d.reason, DamageReason::BadHeader(_))),
                "{ctx}"
            );
        } else if cut {
            assert!(
                damage.iter().any(|d| d.reason == DamageReason::Truncated),
                "{ctx}: {damage:?}"
            );
        }
        // A writer reopens the truncated log (recovery) and appends; nothing old is lost.
        let log = Log::open(copy.path(), tiny()).unwrap();
        let p = log.append(&payload(2, 0, 30)).unwrap();
        assert!(p.segment >= 1);
        drop(log);
        let (after, damage) = read_all(copy.path());
        check_against(&frames, &after[..after.len() - 1], &damage)
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        assert_eq!(
            after.last().map(|f| decode(&f.payload)),
            Some(Some((2, 0))),
            "{ctx}"
        );
        if len < seg_len {
            assert_eq!(p.segment, 2, "{ctx}: appended into a truncated segment");
        }
    }
}

fn multi_page_log() -> (TempDir, Vec<OwnedFrame>) {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 64 << 10,
        ..tiny()
    };
    let log = Log::open(d.path(), opts).unwrap();
    log.set_preamble(Some(b"context".to_vec())).unwrap();
    let mut seq = 0;
    while log.active_segment() == 1 {
        log.append(&payload(1, seq, 20 + (seq as usize * 37) % 300))
            .unwrap();
        seq += 1;
    }
    drop(log);
    let (frames, damage) = read_all(d.path());
    assert!(damage.is_empty(), "{damage:?}");
    (d, frames)
}

#[test]
fn a_zeroed_4k_page_drops_only_the_frames_on_it_and_is_reported() {
    let (orig, frames) = multi_page_log();
    let seg_len = std::fs::metadata(seg_file(orig.path(), 1)).unwrap().len();
    let copy = tempfile::tempdir().unwrap();
    for page in 0..seg_len / 4096 {
        let _ = std::fs::remove_dir_all(copy.path().join("segments"));
        copy_dir(orig.path(), copy.path());
        let seg = seg_file(copy.path(), 1);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0u8; 4096], page * 4096).unwrap();
        let (got, damage) = read_all(copy.path());
        let ctx = format!("page {page} zeroed");
        check_against(&frames, &got, &damage).unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let page_range = page * 4096..(page + 1) * 4096;
        let hit = |fr: &OwnedFrame| {
            let end = fr.position.offset + format::frame_len(fr.payload.len() as u64);
            fr.position.segment == 1
                && fr.position.offset < page_range.end
                && end > page_range.start
        };
        if page == 0 {
            assert!(
                damage
                    .iter()
                    .any(|d| matches!(d.reason, DamageReason::BadHeader(_))),
                "{ctx}"
            );
            assert!(got.iter().all(|g| g.position.segment != 1), "{ctx}");
        } else {
            let survivors: Vec<_> = frames.iter().filter(|fr| !hit(fr)).cloned().collect();
            assert_eq!(got, survivors, "{ctx}: only frames on the page may be lost");
            if frames.iter().any(hit) {
                assert!(!damage.is_empty(), "{ctx} was not detected");
            }
        }
    }
}

/// Deterministic garbage that also contains sync markers, so resynchronisation has to
/// reject candidate frames by their checksums.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    for at in (0..len.saturating_sub(16)).step_by(48) {
        v[at..at + 4].copy_from_slice(&format::FRAME_MARKER.to_le_bytes());
        v[at + 4..at + 8].copy_from_slice(&8u32.to_le_bytes());
    }
    v
}

#[test]
fn journal_truncation_garbage_after_the_file_end_is_ignored_across_ten_reopens() {
    let (d, frames) = small_log();
    let seg = seg_file(d.path(), 1);
    let mut want = frames.clone();
    for round in 0..10u64 {
        let f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        std::io::Write::write_all(&mut &f, &garbage(round, 100 + round as usize * 13)).unwrap();
        drop(f);
        let log = Log::open(d.path(), tiny()).unwrap();
        let p = log.append(&payload(3, round, 25)).unwrap();
        assert_eq!(
            p.segment, 1,
            "round {round}: bytes past the capacity must not seal the segment"
        );
        drop(log);
        let (got, damage) = read_all(d.path());
        assert!(damage.is_empty(), "round {round}: {damage:?}");
        assert_eq!(&got[..want.len()], &want[..], "round {round}");
        let new = got.last().unwrap();
        assert_eq!(decode(&new.payload), Some((3, round)));
        want.push(new.clone());
        assert_eq!(got, want);
    }
}

#[test]
fn journal_truncation_garbage_past_the_counter_is_reported_never_returned_across_ten_reopens() {
    let (d, frames) = small_log();
    let mut want = frames.clone();
    for round in 0..10u64 {
        // Garbage in the unreserved tail of the newest segment (a torn write past the counter
        // or a stray writer): the next writer must not trust the counter and must not let
        // new frames interleave with garbage.
        let newest = *segment_log::fs::live_segments(&d.path().join("segments"))
            .unwrap()
            .last()
            .unwrap();
        let seg = seg_file(d.path(), newest);
        let end = reserved_end(&seg);
        let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&garbage(round, 200), end + 64).unwrap();
        drop(f);
        let log = Log::open(d.path(), tiny()).unwrap();
        let p = log.append(&payload(3, round, 25)).unwrap();
        assert_eq!(
            p.segment,
            newest + 1,
            "round {round}: appended next to garbage"
        );
        drop(log);
        let (got, damage) = read_all(d.path());
        check_against(&want, &got[..got.len() - 1], &damage)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(
            &got[..want.len()],
            &want[..],
            "round {round}: lost an old record"
        );
        assert!(
            damage.iter().any(|dm| dm.segment == newest
                && dm.offset <= end + 64
                && dm.offset + dm.len > end + 64),
            "round {round}: garbage not reported: {damage:?}"
        );
        let new = got.last().unwrap();
        assert_eq!(decode(&new.payload), Some((3, round)));
        assert_eq!(
            got.len(),
            want.len() + 1,
            "round {round}: garbage returned as frames"
        );
        want.push(new.clone());
    }
    assert!(want
        .iter()
        .all(|f| f.kind == FrameKind::Preamble || decode(&f.payload).is_some()));
}

/// Lowers segment `n`'s reservation counter to the header end, as a bit flip or a stray
/// write might.
fn lower_counter(dir: &Path, n: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg_file(dir, n))
        .unwrap();
    f.write_all_at(&HEADER_LEN.to_le_bytes(), OFF_RESERVED_END as u64)
        .unwrap();
}

/// Found by `every_bit_flip_in_the_reservation_counter_is_reported_or_loses_nothing`: the
/// scanner trusted the (unchecksummed) counter, so a flip that lowered it ended the segment
/// early and the records after it vanished without a damage report.
#[test]
fn bug_a_lowered_reservation_counter_hid_the_records_after_it_from_readers() {
    let (d, frames) = small_log();
    lower_counter(d.path(), 1);
    let (got, damage) = read_all(d.path());
    assert_eq!(got, frames);
    // The zeroes after the last frame are unwritten space, not an abandoned reservation: the
    // reader reads on to the end of the written data, not to the capacity (`journal verify`
    // names the lying counter).
    assert!(damage.is_empty(), "{damage:?}");
}

/// Issue 11 item 4: the journal reads without a writer probe (liveness unknown), so it
/// trusted the counter and a rolled-back counter (one bit flip at offset 128) silently hid
/// every record after it. A counter re-read after the data and still below it cannot be a
/// live writer's: the reader scans past it whatever it knows about writers. The journal's
/// "end now" ([`segment_log::written_end`]) must not stop at the lying counter either.
#[test]
fn bug_a_rolled_back_counter_hid_records_from_a_reader_without_a_writer_probe() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            segment_size: 1 << 16,
            max_record_size: 1024,
            prepare_ahead: false,
            ..Options::default()
        },
    )
    .unwrap();
    for seq in 0..300 {
        log.append(&payload(1, seq, 100)).unwrap();
    }
    drop(log);
    let seg = seg_file(d.path(), 1);
    let (frames, _) = read_all(d.path());
    let end = reserved_end(&seg);
    assert!(end > 1 << 15, "{end}");
    flip(&seg, OFF_RESERVED_END as u64 + 1, 7); // bit 15: the counter drops by 32 KiB
    assert_eq!(reserved_end(&seg), end - (1 << 15));
    let no_probe = ReaderOptions {
        detect_writers: false,
        hole_timeout: std::time::Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let (got, damage) = read_all_with(d.path(), no_probe);
    assert_eq!(got.len(), frames.len());
    assert_eq!(got, frames);
    assert!(damage.is_empty(), "{damage:?}");
    // The written data ends after the last frame, or after the header of the pad (format
    // version 2) that closed the writer's chunk up to the counter: its rest is zero.
    let last = frames.last().unwrap();
    let last_end = last.position.offset + segment_log::format::frame_len(last.payload.len() as u64);
    let we = segment_log::written_end(&seg).unwrap();
    assert!(
        we == end || (we == last_end + 16 && we < end),
        "written end {we}, last frame ends at {last_end}, counter {end}"
    );
}

/// The same bug in a finished segment while a writer is alive (the reader cannot use the
/// "no writer alive" shortcut): a newer segment exists, so the old one's counter must have
/// passed its capacity; one that did not is damaged and must not hide frames.
#[test]
fn bug_a_lowered_counter_in_a_finished_segment_hid_its_records_while_a_writer_was_alive() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), tiny()).unwrap();
    for seq in 0..5 {
        log.append(&payload(1, seq, 40)).unwrap();
    }
    log.rotate().unwrap();
    log.append(&payload(1, 5, 40)).unwrap();
    lower_counter(d.path(), 1);
    let (got, damage) = read_all(d.path());
    let seqs: Vec<_> = got.iter().map(|f| decode(&f.payload).unwrap().1).collect();
    assert_eq!(seqs, vec![0, 1, 2, 3, 4, 5]);
    // The zeroes after the last frame of segment 1 are reported (the counter said otherwise).
    assert!(damage.iter().all(|dm| dm.segment == 1), "{damage:?}");
    drop(log);
}

/// Found by the model test (`tests/model.rs`, a crash-truncate then a zeroed range over the
/// counter): a segment truncated inside its frames whose counter was also lowered looked
/// finished and clean, so the records cut off vanished without a `truncated` report. A
/// segment file is allocated in full before it goes live, so a short file is damage.
#[test]
fn bug_a_truncated_segment_with_a_lowered_counter_was_read_as_clean() {
    let (d, frames) = small_log();
    let cut = frames[3].position.offset + 4;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(seg_file(d.path(), 1))
        .unwrap();
    f.set_len(cut).unwrap();
    drop(f);
    lower_counter(d.path(), 1);
    let (got, damage) = read_all(d.path());
    assert_eq!(got, frames[..3].to_vec());
    assert!(
        matches!(&damage[..], [dm] if dm.reason == DamageReason::Truncated && dm.offset == frames[3].position.offset),
        "{damage:?}"
    );
    check_against(&frames, &got, &damage).unwrap();
}

/// Found by the model test (`tests/model.rs`, a crash-truncate then a bit flip in a frame's
/// length field): in a truncated segment, a frame whose damaged length claimed more bytes
/// than the file holds (but fewer than the capacity) was reported as the truncation, and
/// every whole frame after it, up to the real end of the file, was lost with it. The scanner
/// now looks for a verified frame after it first: the bad length is reported alone and
/// reading goes on; only the frame the file really ends in is reported as truncated.
#[test]
fn bug_a_bad_length_running_past_the_end_of_a_truncated_file_hid_the_frames_after_it() {
    let (d, frames) = small_log();
    let seg = seg_file(d.path(), 1);
    let cut = frames[6].position.offset + 8;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();
    // Bit 1 of the length's second byte: 512 bytes more, past the file, within the capacity.
    let bad = frames[2].position.offset;
    flip(&seg, bad + 5, 1);
    let claimed = bad + format::frame_len(frames[2].payload.len() as u64 + 512);
    assert!(claimed > cut && claimed <= tiny().segment_size);
    let (got, damage) = read_all(d.path());
    let kept: Vec<_> = [0, 1, 3, 4, 5].iter().map(|&i| frames[i].clone()).collect();
    assert_eq!(got, kept, "{damage:?}");
    assert!(
        matches!(&damage[..], [a, b]
            if a.reason == DamageReason::Frame(format::FrameError::BadLength)
                && a.offset == bad
                && a.offset + a.len == frames[3].position.offset
                && b.reason == DamageReason::Truncated
                && b.offset == frames[6].position.offset),
        "{damage:?}"
    );
    check_against(&frames, &got, &damage).unwrap();
}

/// Issue 11 item 4, after a writer reopens the log: recovery used to seal a segment whose
/// counter was rolled back (counter = capacity, no seal frame), so readers reported the whole
/// unwritten tail as an abandoned reservation (the uploader sent it as a gap). It now raises
/// the counter past the written data: new records follow the old ones, nothing is reported.
#[test]
fn a_writer_reopening_after_a_counter_rollback_appends_after_the_data_and_nothing_is_reported() {
    for k in 0..4 {
        let (d, frames) = small_log();
        let bad = [HEADER_LEN, 16, 0, (frames[3].position.offset + 8) | 3][k];
        let seg = seg_file(d.path(), 1);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .write_all_at(&u64::to_le_bytes(bad), OFF_RESERVED_END as u64)
            .unwrap();
        let log = Log::open(d.path(), tiny()).unwrap();
        let pos = log.append(&payload(2, 0, 30)).unwrap();
        drop(log);
        let last = frames.last().unwrap();
        let end = last.position.offset + format::frame_len(last.payload.len() as u64);
        assert_eq!(pos.segment, 1, "counter {bad}");
        assert!(
            pos.offset >= end,
            "counter {bad}: new frame at {pos} overwrote data"
        );
        let (got, damage) = read_all(d.path());
        assert!(damage.is_empty(), "counter {bad}: {damage:?}");
        assert_eq!(got[..frames.len()], frames[..], "counter {bad}");
        assert_eq!(got.len(), frames.len() + 1, "counter {bad}");
    }
}

/// The model test's seed 86f94122: damage that zeroes the counter *and* every frame of the
/// newest segment left nothing past the header, so a writer reopening the log raised the
/// counter to the header and the segment read as clean and empty: every record in it lost
/// without a report. The writer now seals such a segment and the reader reports the zeroes.
#[test]
fn a_zeroed_counter_over_zeroed_frames_is_reported_after_a_writer_reopens() {
    let (d, frames) = small_log();
    let seg = seg_file(d.path(), 1);
    let last = frames.last().unwrap();
    let end = last.position.offset + format::frame_len(last.payload.len() as u64);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&u64::to_le_bytes(0), OFF_RESERVED_END as u64)
        .unwrap();
    f.write_all_at(&vec![0u8; (end - HEADER_LEN) as usize], HEADER_LEN)
        .unwrap();
    drop(f);
    let log = Log::open(d.path(), tiny()).unwrap();
    let pos = log.append(&payload(2, 0, 30)).unwrap();
    drop(log);
    assert!(
        pos.segment > 1,
        "appended into the damaged segment at {pos}"
    );
    let (got, damage) = read_all(d.path());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        damage.iter().any(|x| x.segment == 1
            && x.offset <= frames[0].position.offset
            && x.offset + x.len >= end),
        "the zeroed frames are not reported: {damage:?}"
    );
}
