//! The device footprint of a writer (issue 12): what a slow or short-lived writer must not pay
//! for. Behavioural, never timed: residency of the prepared mapping, whether a thread was
//! started, where an append lands after a clean close.
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::writer::{prefault_len, Fill};

struct TestClock {
    boot: AtomicU64,
}
impl Clock for TestClock {
    fn wall_ns(&self) -> i64 {
        static WALL: AtomicI64 = AtomicI64::new(1_700_000_000_000_000_000);
        WALL.load(Ordering::SeqCst)
    }
    fn boot_ns(&self) -> u64 {
        self.boot.load(Ordering::SeqCst)
    }
    fn boot_id(&self) -> [u8; 16] {
        [1; 16]
    }
}

fn test_clock() -> Arc<TestClock> {
    Arc::new(TestClock {
        boot: AtomicU64::new(1_000_000_000),
    })
}

fn seg_path(dir: &Path, n: u64, ext: &str) -> PathBuf {
    dir.join("segments").join(fs::segment_file_name(n, ext))
}

/// Resident bytes of this process's mapping of the file at `path` (from /proc/self/smaps,
/// matched by inode: a segment is created under a temporary name and linked into place, so
/// the mapping may show that name), if mapped.
fn mapped_rss(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).unwrap().ino().to_string();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut lines = smaps.lines();
    while let Some(l) = lines.next() {
        if l.split_whitespace().nth(4) == Some(ino.as_str()) && l.contains("segments") {
            for l in lines.by_ref() {
                if let Some(kb) = l.strip_prefix("Rss:") {
                    let kb = kb.trim().trim_end_matches("kB").trim();
                    return Some(kb.parse::<u64>().unwrap() * 1024);
                }
            }
        }
    }
    None
}

fn header(path: &Path) -> Vec<u8> {
    let mut b = vec![0u8; 256];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut b, 0)
        .unwrap();
    b
}

fn counter(path: &Path) -> u64 {
    format::reserved_end(&header(path))
}

#[test]
fn prefault_len_follows_the_fill_rate() {
    const MIB: u64 = 1 << 20;
    let cap = 16 * MIB;
    let secs = |s: u64| s * 1_000_000_000;
    assert_eq!(prefault_len(None, cap), 0, "nothing measured yet");
    // 10 records/s of ~130 bytes: 2 MiB took an hour. Nothing.
    let slow = Fill {
        bytes: 2 * MIB,
        elapsed_ns: secs(3600),
    };
    assert_eq!(prefault_len(Some(slow), cap), 0);
    // A million records a second: the whole segment.
    let fast = Fill {
        bytes: 2 * MIB,
        elapsed_ns: secs(1) / 50,
    };
    assert_eq!(prefault_len(Some(fast), cap), cap);
    assert_eq!(
        prefault_len(
            Some(Fill {
                bytes: cap,
                elapsed_ns: 0
            }),
            cap
        ),
        cap,
        "an instant burst"
    );
    // 500 KiB/s: what 10 s bring (~4.9 MiB), in whole 2 MiB steps.
    let mid = Fill {
        bytes: 5 * MIB,
        elapsed_ns: secs(10) + secs(1) / 4,
    };
    assert_eq!(prefault_len(Some(mid), cap), 4 * MIB);
}

/// Appends 100-byte records until the active segment's counter reaches `until`.
fn fill_to(log: &Log, dir: &Path, until: u64) {
    let seg = log.active_segment();
    while counter(&seg_path(dir, seg, "seg")) < until {
        log.append(&[7u8; 100]).unwrap();
    }
}

fn wait_prepared(log: &Log, n: u64) {
    let t0 = Instant::now();
    while log.prepared_segment() != Some(n) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "segment {n} was never prepared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Issue 12: the preparer pre-faulted (write-faulted, so dirtied) the whole next segment for
/// every writer; for a slow one the kernel wrote 16 MiB of zeros to disk long before records
/// overwrote them. Now it pre-faults what the measured rate will fill soon.
#[test]
fn a_slow_writer_does_not_prefault_the_next_segment_and_a_fast_one_does() {
    let size = 4u64 << 20;
    for slow in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let clock = test_clock();
        let log = Log::open(
            d.path(),
            Options {
                segment_size: size,
                clock: clock.clone(),
                ..Options::default()
            },
        )
        .unwrap();
        // The preparer wakes when an eighth (512 KiB) is reserved.
        fill_to(&log, d.path(), 256 << 10);
        assert_eq!(
            log.prepared_segment(),
            None,
            "prepared before the threshold"
        );
        if slow {
            // 512 KiB in an hour: about 150 bytes a second.
            clock.boot.fetch_add(3600 * 1_000_000_000, Ordering::SeqCst);
        }
        fill_to(&log, d.path(), (size / 8) + 4096);
        wait_prepared(&log, 2);
        let prep = seg_path(d.path(), 2, "prep");
        let rss = mapped_rss(&prep).unwrap_or_else(|| {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let maps: Vec<&str> = smaps.lines().filter(|l| l.contains("segments")).collect();
            panic!("{} is not mapped: {maps:#?}", prep.display())
        });
        if slow {
            assert_eq!(rss, 0, "a slow writer's next segment was pre-faulted");
        } else {
            assert_eq!(
                rss, size,
                "a fast writer's next segment was not pre-faulted"
            );
        }
    }
}

/// Issue 12: a one-shot writer (`seglog record`, no prepare-ahead) started the background
/// thread whenever a retention policy was set, although it never rotates.
#[test]
fn a_one_shot_writer_starts_no_background_thread_until_it_rotates() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 64 << 10,
        max_record_size: 8 << 10,
        prepare_ahead: false,
        retention: Some(RetentionPolicy {
            max_bytes: Some(1 << 30),
            max_age: None,
        }),
        ..Options::default()
    };
    let log = Log::open(d.path(), opts.clone()).unwrap();
    log.append(b"one").unwrap();
    assert!(!log.background_thread_started());
    // Rotating needs it (retention counts, unmapping retired segments): started then.
    while log.active_segment() == 1 {
        log.append(&[1u8; 1000]).unwrap();
    }
    assert!(log.background_thread_started());
    drop(log);
    let long_lived = Log::open(
        d.path(),
        Options {
            prepare_ahead: true,
            ..opts
        },
    )
    .unwrap();
    assert!(long_lived.background_thread_started());
}

/// Issue 12: every writer that opened a log while no other writer was alive re-read the
/// newest segment's whole unwritten tail (up to 16 MiB) to check the counter, 13 ms of a
/// one-shot `seglog record`. After a clean close the counter is vouched for by the
/// clean-close mark and only the bytes just past it are checked.
#[test]
fn a_cleanly_closed_log_is_reopened_without_reading_its_tail() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 1 << 20,
        max_record_size: 8 << 10,
        prepare_ahead: false,
        ..Options::default()
    };
    let seg1 = seg_path(d.path(), 1, "seg");
    let log = Log::open(d.path(), opts.clone()).unwrap();
    log.append(b"first").unwrap();
    assert_eq!(
        close_mark::decode(&header(&seg1), 1),
        None,
        "no mark while a writer has the log open"
    );
    drop(log);
    let end = counter(&seg1);
    assert_eq!(close_mark::decode(&header(&seg1), 1), Some(end));
    // Bytes far past the counter (beyond what is checked after a clean close) are not read:
    // the next append follows the last frame in the same segment.
    let far = end + recovery::CHECK_AFTER_MARK + 4096;
    let f = std::fs::OpenOptions::new().write(true).open(&seg1).unwrap();
    f.write_all_at(&[0xAB; 64], far).unwrap();
    let log = Log::open(d.path(), opts.clone()).unwrap();
    assert_eq!(
        log.append(b"second").unwrap(),
        Position {
            segment: 1,
            offset: end
        }
    );
    drop(log);
    // Without a mark (a writer that crashed never wrote one), the whole tail is checked and
    // the bytes past the counter seal the segment: new frames never interleave with them.
    f.write_all_at(&[0u8; 16], close_mark::OFF_COUNTER as u64)
        .unwrap();
    let log = Log::open(d.path(), opts).unwrap();
    assert_eq!(log.append(b"third").unwrap().segment, 2);
    assert!(counter(&seg1) >= 1 << 20, "segment 1 sealed");
}

/// The mark vouches for the counter only if nothing was written at it: frames appended after
/// the mark whose header (counter, cleared mark) never reached the disk before a power loss
/// start exactly at the marked counter, and must not be overwritten.
#[test]
fn frames_past_a_stale_clean_close_mark_are_not_overwritten() {
    let d = tempfile::tempdir().unwrap();
    let opts = Options {
        segment_size: 1 << 20,
        max_record_size: 8 << 10,
        prepare_ahead: false,
        ..Options::default()
    };
    let seg1 = seg_path(d.path(), 1, "seg");
    let log = Log::open(d.path(), opts.clone()).unwrap();
    log.append(b"before the mark").unwrap();
    drop(log);
    let stale = header(&seg1);
    let log = Log::open(d.path(), opts.clone()).unwrap();
    let lost_header = log.append(b"after the mark").unwrap();
    drop(log);
    // The header as of the first close: counter and mark from then.
    let f = std::fs::OpenOptions::new().write(true).open(&seg1).unwrap();
    f.write_all_at(&stale[128..168], 128).unwrap();
    let log = Log::open(d.path(), opts).unwrap();
    let p = log.append(b"third").unwrap();
    assert!(p > lost_header, "{p} overwrote the frame at {lost_header}");
    drop(log);
    let mut r = Reader::open(d.path(), Position::default(), ReaderOptions::default()).unwrap();
    let mut got = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            Entry::Frame(f) if f.kind == FrameKind::Record => got.push(f.payload.to_vec()),
            Entry::Frame(_) => {}
            Entry::Damage(dm) => panic!("{dm:?}"),
        }
    }
    assert_eq!(
        got,
        [&b"before the mark"[..], b"after the mark", b"third"].map(|b| b.to_vec())
    );
}

#[test]
fn allocation_errors_say_what_failed() {
    let p = Path::new("/log/segments/.tmp-2-1-0");
    let e = segment::allocation_error(p, std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    assert!(matches!(e, Error::AllocationUnsupported { .. }), "{e:?}");
    assert_eq!(e.code(), "allocation_unsupported");
    let msg = e.to_string();
    assert!(
        msg.contains("does not support fallocate") && msg.contains(".tmp-2-1-0"),
        "{msg}"
    );
    let e = segment::allocation_error(p, std::io::Error::from_raw_os_error(libc::ENOSPC));
    assert!(matches!(e, Error::NoSpace { .. }), "{e:?}");
}
