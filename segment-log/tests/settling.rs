//! Issue 11 item 15: readers copy frames with `pread`, which has no acquire ordering, so on a
//! weakly ordered CPU a reader can see a frame's first word published and stale bytes after
//! it. Near the live end, while a writer is alive, a checksum failure is "not settled yet":
//! the reader waits (bounded by the hole timeout) and reads again instead of reporting a
//! committed record as a corrupt frame (which the uploader would send as a `corrupt_frame`
//! gap). The stale read is simulated by damaging a payload byte of the newest frame and
//! restoring it while the reader waits.

mod common;

use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;
use segment_log::format::FRAME_HEADER_LEN;
use segment_log::{DamageReason, Log, Options, OwnedEntry, Position, Reader, ReaderOptions};

fn opts() -> Options {
    Options {
        segment_size: 1 << 16,
        max_record_size: 1024,
        prepare_ahead: false,
        ..Options::default()
    }
}

fn poke(path: &std::path::Path, at: u64, byte: u8) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(&[byte], at)
        .unwrap();
}

fn read_everything(dir: &std::path::Path, timeout: Duration) -> Vec<OwnedEntry> {
    let opts = ReaderOptions {
        hole_timeout: timeout,
        ..ReaderOptions::default()
    };
    Reader::open(dir, Position::default(), opts)
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
}

#[test]
fn a_checksum_failure_at_the_live_end_with_a_writer_alive_is_waited_for() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), opts()).unwrap(); // the writer stays alive
    for seq in 0..10 {
        log.append(&payload(1, seq, 40)).unwrap();
    }
    let last = log.append(&payload(1, 10, 40)).unwrap();
    let seg = seg_file(d.path(), 1);
    let at = last.offset + FRAME_HEADER_LEN + 5;
    let mut orig = [0u8; 1];
    std::fs::File::open(&seg)
        .unwrap()
        .read_exact_at(&mut orig, at)
        .unwrap();
    poke(&seg, at, orig[0] ^ 0x40); // the stale byte a weakly ordered reader may see
    let fixer = {
        let seg = seg.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(150));
            poke(&seg, at, orig[0]); // the writer's store becomes visible
        })
    };
    let got = read_everything(d.path(), Duration::from_secs(5));
    fixer.join().unwrap();
    let damage: Vec<_> = got
        .iter()
        .filter(|e| matches!(e, OwnedEntry::Damage(_)))
        .collect();
    assert!(
        damage.is_empty(),
        "a committed frame was reported: {damage:?}"
    );
    assert_eq!(got.len(), 11);
    drop(log);
}

#[test]
fn a_checksum_failure_that_does_not_settle_is_reported_after_the_timeout() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(d.path(), opts()).unwrap();
    for seq in 0..3 {
        log.append(&payload(1, seq, 40)).unwrap();
    }
    let last = log.append(&payload(1, 3, 40)).unwrap();
    let seg = seg_file(d.path(), 1);
    poke(&seg, last.offset + FRAME_HEADER_LEN, 0xAA);
    let got = read_everything(d.path(), Duration::from_millis(100));
    let damage: Vec<_> = got
        .iter()
        .filter_map(|e| match e {
            OwnedEntry::Damage(d) => Some(d),
            OwnedEntry::Frame(_) => None,
        })
        .collect();
    assert!(
        matches!(&damage[..], [dm] if dm.offset == last.offset && matches!(dm.reason, DamageReason::Frame(_))),
        "{damage:?}"
    );
    drop(log);
    // With no writer alive the failure is damage at once (nothing can settle).
    let got = read_everything(d.path(), Duration::from_secs(30));
    assert_eq!(got.len(), 4);
}
