//! Diagnostic for rotation latency (issue 14): the loop of `SEGLOG_TARGETS_ONLY=rotation just
//! bench-targets` (100-byte appends flat out through `ROT` rotations of 16 MiB segments, 100
//! by default, every append timed), printing every append slower than `SLOW_US` (200 µs by
//! default) with its `CLOCK_MONOTONIC` time, its segment and offset, and the appending
//! thread's minor faults since the previous line; then the maximum, the appends over 1 ms and
//! the appending thread's page faults in all.
//!
//! The times are on perf's `-k CLOCK_MONOTONIC` clock, to line slow appends up with what the
//! threads did then:
//!
//! ```text
//! cargo build --release -p segment-log --example rotdiag
//! perf record -k CLOCK_MONOTONIC -g -e sched:sched_switch -- target/release/examples/rotdiag
//! ```
//!
//! A switch-out of the appending thread (its tid is printed first) inside a slow append's
//! window with `prev_state=R` is preemption (the machine's load); `D`/`S` with its stack is a
//! wait of seglog's own; none at all means the append spent the time on the CPU (then
//! `perf record -F 20000 -g -e cpu-clock` shows where).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use segment_log::{Log, Options};

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer to a timespec on the stack.
    #[expect(unsafe_code, reason = "clock_gettime(2) on perf's clock")]
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn thread_minflt() -> i64 {
    // SAFETY: a zeroed rusage is a valid out value.
    #[expect(unsafe_code, reason = "getrusage(2) has no safe wrapper")]
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        ru.ru_minflt
    }
}

fn main() {
    let rotations: u64 = std::env::var("ROT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let slow_us: u64 = std::env::var("SLOW_US")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let line = b"2024-05-01T12:00:00.123Z probe[1234]: cpu=17% mem=412MiB net_rx=1234567 net_tx=7654321 disk_io=42 temp=55C ";
    let payload: Vec<u8> = line.iter().copied().cycle().take(100).collect();
    let dir = tempfile::Builder::new()
        .prefix("seglog-rotdiag-")
        .tempdir()
        .unwrap();
    let log = Log::open(dir.path(), Options::default()).unwrap();
    let first = log.active_segment();
    while log.active_segment() == first {
        log.append(&payload).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: gettid has no arguments and cannot fail.
    #[expect(
        unsafe_code,
        reason = "gettid(2), to find the appending thread in perf's output"
    )]
    let tid = unsafe { libc::syscall(libc::SYS_gettid) };
    eprintln!("appender tid {tid}");
    let per_seg = ((16u64 << 20) - 256) / 120;
    let records = rotations * per_seg + per_seg / 2;
    let mut seg = log.active_segment();
    let mut seg_start_idx = 0u64;
    let mut last_trim = Instant::now();
    let mut flt = thread_minflt();
    let flt0 = flt;
    let mut over = 0;
    let mut max = 0;
    let mut lines = Vec::new();
    for i in 0..records {
        let t0 = mono_ns();
        let pos = log.append(&payload).unwrap();
        let t1 = mono_ns();
        let ns = t1 - t0;
        max = max.max(ns);
        if ns > 1_000_000 {
            over += 1;
        }
        if pos.segment != seg {
            seg = pos.segment;
            seg_start_idx = i;
        }
        if ns > slow_us * 1000 {
            let f = thread_minflt();
            lines.push(format!(
                "{}.{:09} lat {:>6}us seg {} idx-in-seg {} off {} flt+{}",
                t0 / 1_000_000_000,
                t0 % 1_000_000_000,
                ns / 1000,
                pos.segment,
                i - seg_start_idx,
                pos.offset,
                f - flt
            ));
            flt = f;
        }
        if i == seg_start_idx && last_trim.elapsed() > Duration::from_millis(20) {
            for f in segment_log::fs::list_segments(&dir.path().join("segments")).unwrap() {
                if !f.prepared && f.number < seg.saturating_sub(1) {
                    let _ = std::fs::remove_file(&f.path);
                }
            }
            last_trim = Instant::now();
        }
    }
    let flt_end = thread_minflt();
    drop(log);
    for l in &lines {
        println!("{l}");
    }
    println!(
        "records {records} max {}us over1ms {over} appender minflt {}",
        max / 1000,
        flt_end - flt0
    );
}
