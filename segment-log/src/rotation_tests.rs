//! Issue 14, rotation latency: what an appending thread must never pay for around a
//! rotation. Behavioural, never timed: the advice a fast writer's segment mapping carries
//! (smaps `VmFlags`), and the appending thread's own page-fault count
//! (`getrusage(RUSAGE_THREAD)`).
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::writer::{huge_folios, Fill};

/// A clock that stands still: every fill rate measured with it is "instant", so the preparer
/// pre-faults whole segments whatever the speed of the machine running the test.
struct StillClock;
impl Clock for StillClock {
    fn wall_ns(&self) -> i64 {
        static WALL: AtomicI64 = AtomicI64::new(1_700_000_000_000_000_000);
        WALL.load(Ordering::SeqCst)
    }
    fn boot_ns(&self) -> u64 {
        static BOOT: AtomicU64 = AtomicU64::new(1_000_000_000);
        BOOT.load(Ordering::SeqCst)
    }
    fn boot_id(&self) -> [u8; 16] {
        [3; 16]
    }
}

/// A clock on which every read is an hour after the previous: whatever the machine, the
/// log fills slowly.
struct SlowClock(AtomicU64);
impl Clock for SlowClock {
    fn wall_ns(&self) -> i64 {
        1_700_000_000_000_000_000
    }
    fn boot_ns(&self) -> u64 {
        self.0.fetch_add(3_600_000_000_000, Ordering::SeqCst)
    }
    fn boot_id(&self) -> [u8; 16] {
        [4; 16]
    }
}

/// The `VmFlags` of this process's mapping of the file at `path` (from /proc/self/smaps,
/// matched by inode), if mapped.
fn vm_flags(path: &Path) -> Option<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(path).ok()?.ino().to_string();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut lines = smaps.lines();
    while let Some(l) = lines.next() {
        if l.split_whitespace().nth(4) == Some(ino.as_str()) && l.contains("segments") {
            for l in lines.by_ref() {
                if let Some(f) = l.strip_prefix("VmFlags:") {
                    return Some(f.split_whitespace().map(String::from).collect());
                }
            }
        }
    }
    None
}

/// Minor page faults of the calling thread so far.
fn thread_minflt() -> i64 {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
    #[expect(unsafe_code, reason = "getrusage(2) has no safe wrapper")]
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_THREAD, &mut ru), 0);
        ru
    };
    ru.ru_minflt
}

/// Issue 14: a write fault on a segment page that was not in the page cache started the
/// kernel's read-around over the file's whole read-ahead window (8 MiB on the benchmark
/// machine): ~2,000 pages allocated and zeroed on the appending thread, 1.6-3.5 ms for one
/// append ~31 records into a segment, and again at the window's marker 6 MiB in. A fast
/// writer's prepared segment is now mapped without read-ahead (`rr`) and asks for huge
/// folios (`hg`); a slow writer's is left as it was.
#[test]
fn a_fast_writers_segment_reads_nothing_ahead_and_a_slow_writers_is_left_alone() {
    let size = 4u64 << 20;
    for fast in [true, false] {
        let d = tempfile::tempdir().unwrap();
        let clock: Arc<dyn Clock> = if fast {
            Arc::new(StillClock)
        } else {
            Arc::new(SlowClock(AtomicU64::new(1_000_000_000)))
        };
        let log = Log::open(
            d.path(),
            Options {
                segment_size: size,
                clock,
                ..Options::default()
            },
        )
        .unwrap();
        let mut pos = log.append(&[5u8; 100]).unwrap();
        while pos.offset < size / 4 {
            pos = log.append(&[5u8; 100]).unwrap();
        }
        let t0 = Instant::now();
        while log.prepared_segment() != Some(2) {
            assert!(t0.elapsed() < Duration::from_secs(60), "never prepared");
            std::thread::sleep(Duration::from_millis(2));
        }
        let prep = d
            .path()
            .join("segments")
            .join(fs::segment_file_name(2, "prep"));
        let flags = vm_flags(&prep).expect("the prepared segment is mapped");
        let has = |f: &str| flags.iter().any(|x| x == f);
        assert_eq!(has("rr"), fast, "read-ahead off (fast: {fast}): {flags:?}");
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| !s.contains("[never]"));
        if thp {
            assert_eq!(
                has("hg"),
                fast,
                "huge folios asked (fast: {fast}): {flags:?}"
            );
        } else {
            eprintln!("SKIPPED (huge folio part): this kernel has no transparent huge pages");
        }
    }
}

/// Issue 14: the appending thread takes no page faults across rotations once the preparer
/// had the time to prepare the next segment (mapped and pre-faulted whole). Counted with
/// `getrusage(RUSAGE_THREAD)` over three rotations after a warm-up rotation, each followed
/// by 3 MiB of appends into the new segment (768 faults if it were not pre-faulted).
#[test]
fn the_appending_thread_takes_no_page_faults_across_prepared_rotations() {
    let size = 4u64 << 20;
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            segment_size: size,
            clock: Arc::new(StillClock),
            ..Options::default()
        },
    )
    .unwrap();
    let payload = [9u8; 100];
    let fill_to = |until: u64| {
        let seg = log.active_segment();
        let mut pos = log.append(&payload).unwrap();
        while pos.segment == seg && pos.offset < until {
            pos = log.append(&payload).unwrap();
        }
    };
    let mut faults = Vec::new();
    for round in 0..4 {
        let seg = log.active_segment();
        fill_to(size - (256 << 10));
        let t0 = Instant::now();
        while log.prepared_segment() != Some(seg + 1) {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "segment {} was never prepared",
                seg + 1
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let before = thread_minflt();
        while log.active_segment() == seg {
            log.append(&payload).unwrap();
        }
        fill_to(3 << 20);
        let taken = thread_minflt() - before;
        if round > 0 {
            faults.push(taken);
        }
    }
    // A few faults of the heap (a list growing) are not the segment's 768 pages.
    assert!(
        faults.iter().all(|&f| f <= 16),
        "page faults of the appending thread per rotation: {faults:?}"
    );
}

/// 2 MiB folios only for segments pre-faulted whole, and with `sync = interval` only when an
/// interval brings at least ten folios (a sync writes the partly written folio whole).
#[test]
fn huge_folios_only_where_a_whole_folio_written_costs_nothing() {
    const MIB: u64 = 1 << 20;
    let cap = 16 * MIB;
    let ms = Duration::from_millis;
    // 800 MiB/s and 1 MiB/s, measured over 20 ms and 2 s.
    let fast = Some(Fill {
        bytes: 16 * MIB,
        elapsed_ns: 20_000_000,
    });
    let slow = Some(Fill {
        bytes: 2 * MIB,
        elapsed_ns: 2_000_000_000,
    });
    let never = SyncPolicy::Never;
    assert!(huge_folios(fast, cap, cap, &never));
    assert!(
        !huge_folios(fast, cap - 2 * MIB, cap, &never),
        "not pre-faulted whole"
    );
    assert!(!huge_folios(None, 0, cap, &never));
    assert!(
        huge_folios(fast, cap, cap, &SyncPolicy::Interval(ms(100))),
        "80 MiB per sync"
    );
    assert!(
        !huge_folios(fast, cap, cap, &SyncPolicy::Interval(ms(10))),
        "8 MiB per sync: a 2 MiB folio written whole is 25 % more"
    );
    assert!(!huge_folios(slow, cap, cap, &SyncPolicy::Interval(ms(100))));
    assert!(!huge_folios(fast, cap, cap, &SyncPolicy::Always));
}
