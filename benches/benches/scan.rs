//! Scan throughput: the `Reader` (lending `next_entry`, every frame's crc32c verified) and the
//! exact `stats` scan that `seglog journal verify`/`stats` run, over a whole log, from a warm
//! page cache and from a cold one.
//!
//! The log is written once per run with real loghub lines (`shared/data/loghub/*.log`, cycled;
//! synthetic 100-byte records when absent). Its size is `SEGLOG_BENCH_SCAN_MIB` (default 256
//! MiB so `cargo bench` stays short). The design target is stated for 1 GiB:
//!
//! ```text
//! SEGLOG_BENCH_SCAN_MIB=1024 cargo bench -p seglog-benches --bench scan
//! ```
//!
//! Cold cache: before each timed scan every segment file gets `fdatasync` +
//! `posix_fadvise(POSIX_FADV_DONTNEED)` (outside the timing); the residency left over is
//! checked with `mincore` and printed. Throughput is in bytes of segment files scanned.

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use seglog_benches::{
    cached_fraction, cpu_times, drop_page_cache, loghub_lines, seglog_segments, synthetic_payload,
    temp_dir,
};
use segment_log::{stats, Entry, Log, Options, Position, Reader, ReaderOptions};

struct Fixture {
    dir: tempfile::TempDir,
    bytes: u64,
    records: u64,
}

fn build_fixture() -> Fixture {
    let mib: u64 = std::env::var("SEGLOG_BENCH_SCAN_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let payloads = loghub_lines().unwrap_or_else(|| vec![synthetic_payload(100)]);
    let dir = temp_dir("seglog-scan-");
    let opts = Options::default();
    let segments = (mib << 20).div_ceil(opts.segment_size).max(1);
    let t = Instant::now();
    let log = Log::open(dir.path(), opts).expect("open log");
    let mut records = 0u64;
    'fill: loop {
        for p in &payloads {
            let pos = log.append(p).expect("append");
            if pos.segment > segments {
                break 'fill;
            }
            records += 1;
        }
    }
    drop(log);
    // Keep exactly `segments` full segments: drop the one just started and any prepared one.
    let mut bytes = 0;
    for (n, path, prepared) in seglog_segments(dir.path()) {
        if prepared || n > segments {
            std::fs::remove_file(&path).expect("remove extra segment");
        } else {
            bytes += std::fs::metadata(&path).expect("stat").len();
        }
    }
    eprintln!(
        "scan fixture: {} segments, {:.0} MiB, {records} records, written in {:.2?}",
        segments,
        bytes as f64 / (1 << 20) as f64,
        t.elapsed()
    );
    Fixture {
        dir,
        bytes,
        records,
    }
}

/// Reads every entry with the lending reader; returns the number of frames.
fn reader_scan(dir: &Path) -> u64 {
    let mut r =
        Reader::open(dir, Position::default(), ReaderOptions::default()).expect("open reader");
    let (mut frames, mut damaged, mut sum) = (0u64, 0u64, 0u64);
    while let Some(e) = r.next_entry().expect("next_entry") {
        match e {
            Entry::Frame(f) => {
                frames += 1;
                sum = sum.wrapping_add(f.payload.len() as u64);
            }
            Entry::Damage(_) => damaged += 1,
        }
    }
    assert_eq!(damaged, 0, "fixture must be clean");
    std::hint::black_box(sum);
    frames
}

fn verify_scan(dir: &Path) -> u64 {
    let st = stats(dir, true).expect("stats");
    assert_eq!(st.damaged_ranges, 0, "fixture must be clean");
    st.records
}

fn scan(c: &mut Criterion) {
    let fx = build_fixture();
    let dir = fx.dir.path();
    let mut g = c.benchmark_group("scan");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Bytes(fx.bytes));
    let size = format!("{}MiB", fx.bytes >> 20);
    type ScanFn = fn(&Path) -> u64;
    let kinds: [(&str, ScanFn); 2] = [("reader", reader_scan), ("verify", verify_scan)];
    for (name, f) in kinds {
        // Each scan checks the record count, so a broken reader cannot look fast.
        assert_eq!(f(dir), fx.records, "{name} scan count");
        // CPU time of one warm scan: on a shared machine wall time includes time spent
        // descheduled, CPU time does not (the scans are single-threaded).
        let (c0, _) = cpu_times();
        let t = Instant::now();
        f(dir);
        let (wall, (c1, _)) = (t.elapsed(), cpu_times());
        let cpu = (c1 - c0).as_secs_f64();
        eprintln!(
            "{name}_warm: one scan of {} MiB: wall {:.0} ms, CPU {:.0} ms = {:.2} GB/s per CPU-second, {:.0} ns CPU per record",
            fx.bytes >> 20,
            wall.as_secs_f64() * 1e3,
            cpu * 1e3,
            fx.bytes as f64 / cpu / 1e9,
            cpu * 1e9 / fx.records as f64
        );
        g.bench_function(BenchmarkId::new(format!("{name}_warm"), &size), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    std::hint::black_box(f(dir));
                }
                start.elapsed()
            })
        });
        let mut reported = false;
        g.bench_function(BenchmarkId::new(format!("{name}_cold"), &size), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    drop_page_cache(dir);
                    if !reported {
                        eprintln!(
                            "{name}_cold: {:.1}% of the log cached before the timed scan",
                            cached_fraction(dir) * 100.0
                        );
                        reported = true;
                    }
                    let start = Instant::now();
                    std::hint::black_box(f(dir));
                    total += start.elapsed();
                }
                total
            })
        });
    }
    g.finish();
}

criterion_group!(benches, scan);
criterion_main!(benches);
