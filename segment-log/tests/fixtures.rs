//! Golden fixtures: `tests/fixtures/v1/` holds log directories written by this code with a
//! fixed clock and a fixed log id. Reading them must give exactly the payloads and positions
//! below, and writing the same appends today must give the same bytes, so any drift of the
//! on-disk format fails here. `damaged/` is a copy with known corruption and its expected
//! damage list.
//!
//! Regenerate (only for a deliberate format change, with a new version directory):
//! `SEGLOG_REGENERATE_FIXTURES=1 cargo test -p segment-log --test fixtures -- --ignored`

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use segment_log::format::OFF_RESERVED_END;
use segment_log::{Clock, FrameKind, Log, Options, OwnedFrame, Position};

struct FixedClock;

impl Clock for FixedClock {
    fn wall_ns(&self) -> i64 {
        1_700_000_000_000_000_000
    }
    fn boot_ns(&self) -> u64 {
        5_000_000_000
    }
    fn boot_id(&self) -> [u8; 16] {
        std::array::from_fn(|i| i as u8)
    }
}

fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/v1")
        .join(name)
}

fn opts() -> Options {
    Options {
        segment_size: 8192,
        max_record_size: 1024,
        prepare_ahead: false,
        clock: Arc::new(FixedClock),
        ..Options::default()
    }
}

const PREAMBLE: &[u8] = b"preamble: host=fixture os=linux";

fn record(i: usize) -> Vec<u8> {
    format!(
        "record {i:02} {}",
        "abcdefghijklmnopq".get(..i % 17).unwrap_or("")
    )
    .into_bytes()
}

/// Writes the basic fixture: 30 records in 3 segments of 8 KiB, a preamble in each.
fn write_basic(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("log-id"), format!("{}\n", "0".repeat(64))).unwrap();
    let log = Log::open(dir, opts()).unwrap();
    log.set_preamble(Some(PREAMBLE.to_vec())).unwrap();
    for i in 0..30 {
        if i > 0 && i % 10 == 0 {
            log.rotate().unwrap();
        }
        log.append(&record(i)).unwrap();
    }
    drop(log);
    for lock in ["open.lock", "rotate.lock", "writers.lock"] {
        let _ = std::fs::remove_file(dir.join(lock));
    }
}

/// (segment, offset) of basic frames by index: preambles at 0, 11, 22.
fn basic_frames() -> Vec<(u64, u64, FrameKind, Vec<u8>)> {
    let mut v = Vec::new();
    for (seg, offsets) in [
        (1u64, &SEG_OFFSETS[0]),
        (2, &SEG_OFFSETS[1]),
        (3, &SEG_OFFSETS[2]),
    ] {
        v.push((seg, offsets[0], FrameKind::Preamble, PREAMBLE.to_vec()));
        for (k, &off) in offsets[1..].iter().enumerate() {
            v.push((
                seg,
                off,
                FrameKind::Record,
                record((seg as usize - 1) * 10 + k),
            ));
        }
    }
    v
}

/// Frame offsets in each segment: preamble, then records 10*(n-1) .. 10*n.
const SEG_OFFSETS: [[u64; 11]; 3] = [
    [256, 304, 336, 368, 400, 432, 464, 496, 528, 568, 608],
    [256, 304, 344, 384, 424, 464, 504, 552, 600, 632, 664],
    [256, 304, 336, 368, 400, 432, 472, 512, 552, 592, 632],
];

/// Reserved end of each basic segment: segments 1 and 2 were sealed by `rotate` (counter
/// pushed past the capacity); segment 3 is the active one.
const RESERVED_END: [u64; 3] = [8192 + 648, 8192 + 696, 672];

/// Applies the damaged fixture's corruption to a copy of basic.
fn damage_copy(dir: &Path) {
    use std::os::unix::fs::FileExt;
    let open = |n| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(seg_file(dir, n))
            .unwrap()
    };
    let s1 = open(1);
    // Record 2: one payload bit flipped.
    let mut b = [0u8; 1];
    s1.read_exact_at(&mut b, SEG_OFFSETS[0][3] + 16 + 3)
        .unwrap();
    s1.write_all_at(&[b[0] ^ 0x04], SEG_OFFSETS[0][3] + 16 + 3)
        .unwrap();
    // Record 5: zeroed, as a writer killed before committing leaves it.
    let len = (SEG_OFFSETS[0][7] - SEG_OFFSETS[0][6]) as usize;
    s1.write_all_at(&vec![0u8; len], SEG_OFFSETS[0][6]).unwrap();
    // Record 7: overwritten with garbage.
    let len = (SEG_OFFSETS[0][9] - SEG_OFFSETS[0][8]) as usize;
    s1.write_all_at(&vec![0x5A; len], SEG_OFFSETS[0][8])
        .unwrap();
    // Segment 2: a bit of the header checksum flipped.
    let s2 = open(2);
    s2.read_exact_at(&mut b, 97).unwrap();
    s2.write_all_at(&[b[0] ^ 0x80], 97).unwrap();
    // Segment 3: truncated in the middle of record 25.
    open(3).set_len(SEG_OFFSETS[2][6] + 20).unwrap();
}

/// The damage `damaged/` must report: (segment, offset, length, code).
const EXPECTED_DAMAGE: [(u64, u64, u64, &str); 5] = [
    (1, 368, 32, "checksum"),
    (1, 464, 32, "abandoned_reservation"),
    (1, 528, 40, "bad_marker"),
    (2, 0, 0, "bad_header"),
    (3, 472, 8192 - 472, "truncated"),
];

#[test]
#[ignore = "writes the committed fixtures; run with SEGLOG_REGENERATE_FIXTURES=1"]
fn regenerate_v1_fixtures() {
    if std::env::var_os("SEGLOG_REGENERATE_FIXTURES").is_none() {
        return;
    }
    for name in ["basic", "damaged"] {
        let _ = std::fs::remove_dir_all(fixture_dir(name));
    }
    write_basic(&fixture_dir("basic"));
    copy_dir(&fixture_dir("basic"), &fixture_dir("damaged"));
    damage_copy(&fixture_dir("damaged"));
}

fn triples(frames: &[OwnedFrame]) -> Vec<(u64, u64, FrameKind, Vec<u8>)> {
    frames
        .iter()
        .map(|f| {
            (
                f.position.segment,
                f.position.offset,
                f.kind,
                f.payload.clone(),
            )
        })
        .collect()
}

#[test]
fn v1_fixture_reads_back_the_exact_payloads_at_the_exact_positions() {
    let (frames, damage) = read_all(&fixture_dir("basic"));
    assert!(damage.is_empty(), "{damage:?}");
    assert_eq!(triples(&frames), basic_frames());
    for (i, n) in (1..=3).enumerate() {
        let bytes = std::fs::read(seg_file(&fixture_dir("basic"), n)).unwrap();
        assert_eq!(bytes.len(), 8192);
        let at = OFF_RESERVED_END;
        assert_eq!(
            u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap()),
            RESERVED_END[i]
        );
    }
    let st = segment_log::stats(&fixture_dir("basic"), true).unwrap();
    assert_eq!((st.segments, st.records, st.damaged_ranges), (3, 30, 0));
    assert_eq!(st.oldest_created_wall_ns, Some(1_700_000_000_000_000_000));
}

/// Format version 2 writes the same bytes for this log (one slow writer: no chunks) but for
/// the version field and so the header checksum.
#[test]
fn v1_fixture_is_what_the_current_writer_writes_but_for_the_version() {
    let d = tempfile::tempdir().unwrap();
    let fresh = d.path().join("log");
    write_basic(&fresh);
    let committed = fixture_dir("basic");
    let names = |dir: &Path| {
        let mut v: Vec<_> = std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&fresh), names(&committed));
    for name in names(&committed) {
        let a = std::fs::read(committed.join("segments").join(&name)).unwrap();
        let mut b = std::fs::read(fresh.join("segments").join(&name)).unwrap();
        assert_eq!(
            b[8..12],
            2u32.to_le_bytes(),
            "{name:?}: written as version 2"
        );
        let mut h = segment_log::format::SegmentHeader::decode(&b).unwrap();
        h.version = 1;
        b[..96].copy_from_slice(&h.encode()[..96]);
        b[96..100].copy_from_slice(&h.encode()[96..100]);
        let first = a.iter().zip(&b).position(|(x, y)| x != y);
        assert!(
            a == b,
            "{name:?} differs from the committed fixture (first at byte {first:?})"
        );
    }
    assert_eq!(
        std::fs::read(committed.join("log-id")).unwrap(),
        std::fs::read(fresh.join("log-id")).unwrap()
    );
}

#[test]
fn v1_damaged_fixture_reports_exactly_the_expected_damage_and_keeps_the_rest() {
    let (frames, damage) = read_all(&fixture_dir("damaged"));
    let got: Vec<_> = damage
        .iter()
        .map(|d| (d.segment, d.offset, d.len, d.reason.code()))
        .collect();
    assert_eq!(got, EXPECTED_DAMAGE);
    let (basic, _) = read_all(&fixture_dir("basic"));
    check_against(&basic, &frames, &damage).unwrap();
    let kept: Vec<String> = records(&frames)
        .iter()
        .map(|f| String::from_utf8(f.payload.clone()).unwrap())
        .map(|s| s[7..9].to_string())
        .collect();
    let want: Vec<String> = [0, 1, 3, 4, 6, 8, 9, 20, 21, 22, 23, 24]
        .iter()
        .map(|i| format!("{i:02}"))
        .collect();
    assert_eq!(kept, want);
}

#[test]
fn v1_fixture_copy_opens_for_append_and_keeps_every_record() {
    let d = tempfile::tempdir().unwrap();
    copy_dir(&fixture_dir("basic"), d.path());
    let log = Log::open(d.path(), opts()).unwrap();
    let p = log.append(b"appended after the fixture").unwrap();
    assert_eq!(
        p,
        Position {
            segment: 3,
            offset: 672
        }
    );
    drop(log);
    let (frames, damage) = read_all(d.path());
    assert!(damage.is_empty(), "{damage:?}");
    let mut want = basic_frames();
    want.push((
        3,
        672,
        FrameKind::Record,
        b"appended after the fixture".to_vec(),
    ));
    assert_eq!(triples(&frames), want);
}
