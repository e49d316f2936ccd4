//! Append throughput: seglog's `Log::append` against the practical limit (a raw loop copying
//! length + crc32c + payload into a fresh mapping of a preallocated file) and against a
//! `BufWriter<File>` writing the same frames.
//!
//! Groups:
//! - `append_100B` (records/s): raw fresh mapping, raw pre-faulted mapping, BufWriter, seglog
//!   with sync=never and sync=interval on 1 and 2 threads, seglog without prepare-ahead, and
//!   seglog `append_batch` of 64 records.
//! - `append_4KiB` (bytes/s): raw fresh mapping, BufWriter, seglog never/interval, 1 and 2 threads.
//! - `append_loghub` (records/s): real log lines from `shared/data/loghub/*.log` (skipped with
//!   a message when absent), raw fresh mapping, BufWriter, seglog 1 thread.
//!
//! Setup (creating and allocating files, opening the log) is outside the timed closure. A
//! seglog benchmark keeps one log open for all its samples (steady state: the next segment is
//! prepared in the background) and unlinks retired segments between samples, as retention would.
//!
//! Run: `cargo bench -p seglog-benches --bench append` (env `SEGLOG_BENCH_SYNC_MS`, default
//! 100, sets the interval of the sync=interval rows; `SEGLOG_BENCH_DIR` the temp dir base).

use std::hint::black_box;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use seglog_benches::{
    loghub_lines, remove_segments_below, synthetic_payload, temp_dir, BufWriterSink, RawMmapSink,
};
use segment_log::{Log, Options, SyncPolicy};

/// seglog's default segment size, used for the baselines' files too.
const SEGMENT: u64 = 16 << 20;

fn sync_interval() -> Duration {
    let ms = std::env::var("SEGLOG_BENCH_SYNC_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    Duration::from_millis(ms)
}

/// Opens a log in a fresh temp dir, fills its first segment (created at open, not pre-faulted)
/// so the log rotates once and the background thread prepares the next segment: the samples
/// then measure the steady state.
fn open_log(sync: SyncPolicy, prepare_ahead: bool) -> (tempfile::TempDir, Log) {
    let dir = temp_dir("seglog-append-");
    let opts = Options {
        sync,
        prepare_ahead,
        ..Options::default()
    };
    let log = Log::open(dir.path(), opts).expect("open log");
    let filler = synthetic_payload(100);
    let first = log.active_segment();
    while log.active_segment() == first {
        log.append(&filler).expect("append");
    }
    std::thread::sleep(Duration::from_millis(100));
    (dir, log)
}

/// Appends `iters` records (cycling through `payloads`) from `threads` threads; returns the
/// wall time from the start signal until every thread is done.
fn seglog_run(log: &Log, threads: usize, payloads: &[Vec<u8>], iters: u64) -> Duration {
    if threads == 1 {
        let start = Instant::now();
        for p in payloads.iter().cycle().take(iters as usize) {
            black_box(log.append(p).expect("append"));
        }
        return start.elapsed();
    }
    let barrier = Barrier::new(threads + 1);
    // The scope joins every thread before it returns, so `elapsed` covers all of them.
    let start = std::thread::scope(|s| {
        for t in 0..threads {
            let share = iters / threads as u64 + u64::from((t as u64) < iters % threads as u64);
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for p in payloads.iter().cycle().skip(t).take(share as usize) {
                    black_box(log.append(p).expect("append"));
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    start.elapsed()
}

/// Between samples: unlink retired segments (keep the active one and its predecessor).
fn trim(log: &Log, dir: &Path) {
    remove_segments_below(dir, log.active_segment().saturating_sub(1));
}

fn bench_seglog(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    sync: SyncPolicy,
    threads: usize,
    payloads: &[Vec<u8>],
) {
    let (dir, log) = open_log(sync, true);
    c.bench_function(BenchmarkId::new(name, format!("threads={threads}")), |b| {
        b.iter_custom(|iters| {
            let d = seglog_run(&log, threads, payloads, iters);
            trim(&log, dir.path());
            d
        })
    });
    drop(log);
}

fn bench_raw(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    prefault: bool,
    payloads: &[Vec<u8>],
) {
    let max = payloads.iter().map(Vec::len).max().unwrap_or(0);
    c.bench_function(BenchmarkId::new(name, "threads=1"), |b| {
        b.iter_custom(|iters| {
            let dir = temp_dir("seglog-raw-");
            let mut sink = RawMmapSink::prepare(dir.path(), iters, max, SEGMENT, prefault);
            let start = Instant::now();
            for p in payloads.iter().cycle().take(iters as usize) {
                sink.append(p);
            }
            let d = start.elapsed();
            black_box(sink.bytes_written());
            d
        })
    });
}

fn bench_bufwriter(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    payloads: &[Vec<u8>],
) {
    c.bench_function(BenchmarkId::new("bufwriter", "threads=1"), |b| {
        b.iter_custom(|iters| {
            let dir = temp_dir("seglog-bufw-");
            let mut sink = BufWriterSink::create(&dir.path().join("frames"));
            let start = Instant::now();
            for p in payloads.iter().cycle().take(iters as usize) {
                sink.append(p);
            }
            sink.finish();
            start.elapsed()
        })
    });
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
}

fn append_100b(c: &mut Criterion) {
    let payloads = vec![synthetic_payload(100)];
    let interval = SyncPolicy::Interval(sync_interval());
    let mut g = c.benchmark_group("append_100B");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    bench_raw(&mut g, "raw_mmap_fresh", false, &payloads);
    bench_raw(&mut g, "raw_mmap_prefaulted", true, &payloads);
    bench_bufwriter(&mut g, &payloads);
    for threads in [1, 2] {
        bench_seglog(
            &mut g,
            "seglog_never",
            SyncPolicy::Never,
            threads,
            &payloads,
        );
        bench_seglog(&mut g, "seglog_interval", interval, threads, &payloads);
    }
    // Diagnostics: what prepare-ahead buys, and what per-call overhead costs.
    {
        let (dir, log) = open_log(SyncPolicy::Never, false);
        g.bench_function(
            BenchmarkId::new("seglog_never_no_prepare", "threads=1"),
            |b| {
                b.iter_custom(|iters| {
                    let d = seglog_run(&log, 1, &payloads, iters);
                    trim(&log, dir.path());
                    d
                })
            },
        );
    }
    {
        let (dir, log) = open_log(SyncPolicy::Never, true);
        let batch: Vec<&[u8]> = vec![&payloads[0][..]; 64];
        g.bench_function(BenchmarkId::new("seglog_never_batch64", "threads=1"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let mut left = iters as usize;
                while left > 0 {
                    let n = left.min(batch.len());
                    black_box(log.append_batch(&batch[..n]).expect("append_batch"));
                    left -= n;
                }
                let d = start.elapsed();
                trim(&log, dir.path());
                d
            })
        });
    }
    g.finish();
}

fn append_4k(c: &mut Criterion) {
    let payloads = vec![synthetic_payload(4096)];
    let interval = SyncPolicy::Interval(sync_interval());
    let mut g = c.benchmark_group("append_4KiB");
    configure(&mut g);
    g.throughput(Throughput::Bytes(4096));
    bench_raw(&mut g, "raw_mmap_fresh", false, &payloads);
    bench_bufwriter(&mut g, &payloads);
    for threads in [1, 2] {
        bench_seglog(
            &mut g,
            "seglog_never",
            SyncPolicy::Never,
            threads,
            &payloads,
        );
        bench_seglog(&mut g, "seglog_interval", interval, threads, &payloads);
    }
    g.finish();
}

fn append_loghub(c: &mut Criterion) {
    let Some(lines) = loghub_lines() else { return };
    eprintln!(
        "append_loghub: {} real lines, mean {:.1} bytes",
        lines.len(),
        seglog_benches::mean_len(&lines)
    );
    let mut g = c.benchmark_group("append_loghub");
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    bench_raw(&mut g, "raw_mmap_fresh", false, &lines);
    bench_bufwriter(&mut g, &lines);
    bench_seglog(&mut g, "seglog_never", SyncPolicy::Never, 1, &lines);
    g.finish();
}

criterion_group!(benches, append_100b, append_4k, append_loghub);
criterion_main!(benches);
