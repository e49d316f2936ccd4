//! Issue 14, rotation latency: what an appending thread must never pay for around a
//! rotation. Behavioural, never timed: page-cache residency after a fault, and the appending
//! thread's own page-fault count (`getrusage(RUSAGE_THREAD)`).
use std::path::{Path, PathBuf};
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

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join("segments").join(fs::segment_file_name(n, "seg"))
}

/// Pages of the file at `path` that are in the page cache (mincore over a fresh read-only
/// mapping, which faults nothing in).
fn cached_pages(path: &Path) -> usize {
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    let map = memmap2::MmapOptions::new()
        .len(len)
        .map_raw_read_only(&file)
        .unwrap();
    let mut vec = vec![0u8; len.div_ceil(4096)];
    #[expect(unsafe_code, reason = "mincore(2) has no safe wrapper")]
    // SAFETY: `map` is a live mapping of `len` bytes at a page-aligned address; `vec` has one
    // byte per page of it, as mincore requires; nothing is dereferenced through the mapping.
    let rc = unsafe { libc::mincore(map.as_mut_ptr().cast(), len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|b| **b & 1 == 1).count()
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
/// machine): ~2,000 pages allocated and zeroed on the appending thread, 2-3.5 ms for one
/// append ~31 records into a segment, and again at the window's marker 6 MiB in. Segment
/// mappings now ask for no read-ahead: writing a few pages brings a few pages in.
#[test]
fn a_write_fault_on_a_segment_reads_nothing_ahead() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            prepare_ahead: false,
            ..Options::default()
        },
    )
    .unwrap();
    // ~40 KiB: the header page and nine more, each first touched by a write fault.
    for _ in 0..340 {
        log.append(&[5u8; 100]).unwrap();
    }
    let cached = cached_pages(&seg_path(d.path(), 1));
    // Ten pages written, plus at most the small window the header's first read may bring.
    // With read-around, even the kernel's default 128 KiB window is 32 pages.
    assert!(
        cached <= 16,
        "{cached} pages of the segment are in the page cache after writing 10"
    );
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
    assert!(!huge_folios(fast, cap - 2 * MIB, cap, &never), "not pre-faulted whole");
    assert!(!huge_folios(None, 0, cap, &never));
    assert!(huge_folios(fast, cap, cap, &SyncPolicy::Interval(ms(100))), "80 MiB per sync");
    assert!(
        !huge_folios(fast, cap, cap, &SyncPolicy::Interval(ms(10))),
        "8 MiB per sync: a 2 MiB folio written whole is 25 % more"
    );
    assert!(!huge_folios(slow, cap, cap, &SyncPolicy::Interval(ms(100))));
    assert!(!huge_folios(fast, cap, cap, &SyncPolicy::Always));
}
