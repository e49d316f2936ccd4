//! Where append time goes: interleaved rounds (so machine noise hits every contender alike)
//! of 1M 100-byte appends each, reporting ns/append, records/s, page faults taken by the
//! appending thread, and the median of per-round ratios.
//!
//! Contenders:
//! - `raw fresh`: the baseline loop into fresh mappings of preallocated files;
//! - `raw pre-faulted`: the same loop into pages faulted in beforehand;
//! - `seglog steady`: `Log::append`, default options (16 MiB segments, prepare-ahead), after
//!   one rotation, so rotations and the preparer thread are included;
//! - `seglog pre-faulted`: `Log::append` into a 256 MiB segment that the preparer thread had
//!   fully pre-faulted before timing: the append hot path alone, no faults, no rotation;
//! - `seglog batch64 pre-faulted`: `append_batch` of 64 records, same segment setup.
//!
//! Run: `cargo bench -p seglog-benches --bench hotpath` (env `SEGLOG_BENCH_ROUNDS`, default 7;
//! `SEGLOG_BENCH_ONLY=<substring>` runs only matching contenders, e.g. under `perf record`).
//! The table is printed and written to `<target>/seglog-bench/hotpath.md`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

use seglog_benches::{
    cpu_times, median, report_dir, resident_pages, seglog_segments, synthetic_payload, temp_dir,
    thread_faults, RawMmapSink,
};
use segment_log::{Log, Options};

const N: u64 = 1_000_000;
const SEGMENT: u64 = 16 << 20;

struct Run {
    /// Wall time.
    secs: f64,
    /// CPU time of the appending thread.
    thread_cpu: f64,
    /// CPU time of the whole process (appender plus background threads).
    process_cpu: f64,
    faults: u64,
}

fn timed(f: impl FnOnce()) -> Run {
    let f0 = thread_faults().0;
    let (t0, p0) = cpu_times();
    let t = Instant::now();
    f();
    let secs = t.elapsed().as_secs_f64();
    let (t1, p1) = cpu_times();
    Run {
        secs,
        thread_cpu: (t1 - t0).as_secs_f64(),
        process_cpu: (p1 - p0).as_secs_f64(),
        faults: thread_faults().0 - f0,
    }
}

fn raw(payload: &[u8], prefault: bool) -> Run {
    let dir = temp_dir("seglog-hot-raw-");
    let mut sink = RawMmapSink::prepare(dir.path(), N, payload.len(), SEGMENT, prefault);
    timed(|| {
        for _ in 0..N {
            sink.append(payload);
        }
    })
}

fn seglog_steady(payload: &[u8]) -> Run {
    let dir = temp_dir("seglog-hot-steady-");
    let log = Log::open(dir.path(), Options::default()).expect("open");
    // Fill the first segment (created at open, not pre-faulted) so timing starts in steady state.
    let first = log.active_segment();
    while log.active_segment() == first {
        log.append(payload).expect("append");
    }
    std::thread::sleep(Duration::from_millis(100));
    timed(|| {
        for _ in 0..N {
            black_box(log.append(payload).expect("append"));
        }
    })
}

/// Waits until segment `n` exists as a prepared file whose pages are all in the page cache
/// (the preparer has pre-faulted it).
fn wait_prefaulted(dir: &std::path::Path, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let prep = seglog_segments(dir).into_iter().find(|s| s.2 && s.0 == n);
        if let Some((_, path, _)) = prep {
            let (resident, total) = resident_pages(&path);
            if total > 0 && resident == total {
                // The preparer publishes the segment right after MADV_POPULATE_WRITE returns.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
        }
        if Instant::now() >= deadline {
            let seen: Vec<_> = seglog_segments(dir)
                .iter()
                .map(|s| (s.0, s.2, resident_pages(&s.1)))
                .collect();
            panic!("segment {n} was not pre-faulted within 10 s: (number, prepared, (resident, pages)) {seen:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Opens a log with 256 MiB segments and waits until segment 2 is prepared and fully
/// pre-faulted, then rotates into it and waits until segment 3 is ready as well.
fn prefaulted_log() -> (tempfile::TempDir, Log) {
    let dir = temp_dir("seglog-hot-pf-");
    let log = Log::open(
        dir.path(),
        Options {
            segment_size: 256 << 20,
            ..Options::default()
        },
    )
    .expect("open");
    // The preparer starts on a segment once the active one is an eighth full (or after a
    // rotation): fill segment 1 past that (300k frames of 120 bytes > 32 MiB).
    let filler = synthetic_payload(100);
    for _ in 0..300_000 {
        log.append(&filler).expect("append");
    }
    wait_prefaulted(dir.path(), 2);
    log.rotate().expect("rotate");
    assert_eq!(log.active_segment(), 2);
    // Let the preparer finish segment 3 too, so the timed appends run alone.
    wait_prefaulted(dir.path(), 3);
    (dir, log)
}

fn seglog_prefaulted(payload: &[u8]) -> Run {
    let (_dir, log) = prefaulted_log();
    timed(|| {
        for _ in 0..N {
            black_box(log.append(payload).expect("append"));
        }
    })
}

fn seglog_batch_prefaulted(payload: &[u8]) -> Run {
    let (_dir, log) = prefaulted_log();
    let batch: Vec<&[u8]> = vec![payload; 64];
    timed(|| {
        let mut left = N as usize;
        while left > 0 {
            let n = left.min(batch.len());
            black_box(log.append_batch(&batch[..n]).expect("append_batch"));
            left -= n;
        }
    })
}

type Contender = (&'static str, fn(&[u8]) -> Run);

fn main() {
    let rounds: usize = std::env::var("SEGLOG_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let payload = synthetic_payload(100);
    let list: [Contender; 5] = [
        ("raw fresh", |p| raw(p, false)),
        ("raw pre-faulted", |p| raw(p, true)),
        ("seglog steady (16 MiB segments)", seglog_steady),
        ("seglog pre-faulted segment", seglog_prefaulted),
        ("seglog batch64 pre-faulted", seglog_batch_prefaulted),
    ];
    let mut secs: Vec<Vec<f64>> = vec![Vec::new(); list.len()];
    let mut faults: Vec<Vec<f64>> = vec![Vec::new(); list.len()];
    let mut tcpu: Vec<Vec<f64>> = vec![Vec::new(); list.len()];
    let mut pcpu: Vec<Vec<f64>> = vec![Vec::new(); list.len()];
    let only = std::env::var("SEGLOG_BENCH_ONLY").ok();
    for round in 0..rounds {
        for k in 0..list.len() {
            let i = (k + round) % list.len();
            if only
                .as_ref()
                .is_some_and(|o| !list[i].0.contains(o.as_str()))
            {
                continue;
            }
            let r = (list[i].1)(&payload);
            eprintln!(
                "round {round}: {:<34} {:>7.1} ns/append wall, {:>7.1} appender CPU, {:>7.1} process CPU, {} faults",
                list[i].0,
                r.secs * 1e9 / N as f64,
                r.thread_cpu * 1e9 / N as f64,
                r.process_cpu * 1e9 / N as f64,
                r.faults
            );
            secs[i].push(r.secs);
            faults[i].push(r.faults as f64);
            tcpu[i].push(r.thread_cpu * 1e9 / N as f64);
            pcpu[i].push(r.process_cpu * 1e9 / N as f64);
        }
    }
    let ratio = |a: usize, b: usize| {
        let mut v: Vec<f64> = secs[b]
            .iter()
            .zip(&secs[a])
            .map(|(tb, ta)| tb / ta)
            .collect();
        median(&mut v)
    };
    let mut md = String::new();
    let _ = writeln!(md, "Append hot path, 100-byte records, {N} appends per run, {rounds} interleaved rounds (medians)\n");
    let _ = writeln!(
        md,
        "| contender | wall ns/append | records/s | vs raw fresh | vs raw pre-faulted | appender CPU ns/append | process CPU ns/append | appender page faults per 1M |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (i, (name, _)) in list.iter().enumerate() {
        let s = median(&mut secs[i].clone());
        let row = format!(
            "| {name} | {:.1} | {:.2}M | {:.2}x | {:.2}x | {:.1} | {:.1} | {:.0} |",
            s * 1e9 / N as f64,
            N as f64 / s / 1e6,
            ratio(i, 0),
            ratio(i, 1),
            median(&mut tcpu[i].clone()),
            median(&mut pcpu[i].clone()),
            median(&mut faults[i].clone()),
        );
        println!("{row}");
        let _ = writeln!(md, "{row}");
    }
    let path = report_dir().join("hotpath.md");
    println!("\n{md}");
    match std::fs::write(&path, &md) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
