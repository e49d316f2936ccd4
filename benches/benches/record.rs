//! The recorder's cost over a raw segment-log append: `Recorder::record()` validates,
//! rate-limits, encodes the record header (class index, times, slot) and appends; the
//! baseline appends the same payload with `Log::append`.
//!
//! Groups (records/s):
//! - `record_100B`: raw `Log::append`, `record()` without rate limits, `record()` with the
//!   cross-process rate limiter on (limits set high enough never to refuse), and
//!   `record_batch()` of 64 records.
//! - `record_loghub`: the same with real log lines from `shared/data/loghub/*.log` (skipped
//!   with a message when absent).
//! - `boot_clock`: one read of the clock `record()` dates records with
//!   (`SystemClock::boot_ns`, TSC-extrapolated where the machine allows) against the kernel's
//!   CLOCK_BOOTTIME through the vDSO (`segment_log::fs::boot_time_ns`).
//!
//! Each row keeps one log open for all its samples (steady state: the next segment is
//! prepared in the background) and unlinks retired segments between samples, as retention
//! would. Setup prints the bytes on disk per record for the loghub lines.
//!
//! Run: `cargo bench -p seglog-benches --bench record`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use seglog_benches::{loghub_lines, remove_segments_below, synthetic_payload, temp_dir};
use segment_log::{Log, Options};

fn config(dir: &std::path::Path, limits: bool) -> Config {
    let mut c = Config::for_dir(dir);
    c.log.max_bytes = None;
    c.log.max_age = None;
    c.recorder = if limits {
        RecorderConfig {
            record_burst_limit: Some(u64::MAX / 4),
            byte_burst_limit: Some(u64::MAX / 4),
            ..RecorderConfig::default()
        }
    } else {
        RecorderConfig::unlimited()
    };
    c
}

fn open_raw() -> (tempfile::TempDir, Log) {
    let dir = temp_dir("seglog-record-raw-");
    let log = Log::open(dir.path(), Options::default()).expect("open log");
    let filler = synthetic_payload(100);
    let first = log.active_segment();
    while log.active_segment() == first {
        log.append(&filler).expect("append");
    }
    std::thread::sleep(Duration::from_millis(100));
    (dir, log)
}

fn open_recorder(limits: bool) -> (tempfile::TempDir, Recorder) {
    let dir = temp_dir("seglog-record-");
    let rec = Recorder::open(&config(dir.path(), limits)).expect("open recorder");
    let filler = synthetic_payload(100);
    let b = RecordBuilder::parse("org.seglog/bench/fill", 1).expect("class");
    let first = rec.log().active_segment();
    while rec.log().active_segment() == first {
        rec.record(&b.clone().payload(&filler)).expect("record");
    }
    std::thread::sleep(Duration::from_millis(100));
    (dir, rec)
}

fn configure(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

fn rows(c: &mut Criterion, group: &str, payloads: &[Vec<u8>]) {
    let mut g = c.benchmark_group(group);
    configure(&mut g);
    g.throughput(Throughput::Elements(1));
    let label = format!(
        "{:.0}B",
        payloads.iter().map(Vec::len).sum::<usize>() as f64 / payloads.len() as f64
    );

    let (raw_dir, raw) = open_raw();
    g.bench_function(BenchmarkId::new("raw_append", &label), |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for p in payloads.iter().cycle().take(iters as usize) {
                black_box(raw.append(p).expect("append"));
            }
            let t = start.elapsed();
            remove_segments_below(raw_dir.path(), raw.active_segment().saturating_sub(1));
            t
        })
    });
    drop(raw);

    let builder = RecordBuilder::parse("org.seglog/bench/line", 2).expect("class");
    for (name, limits) in [("record", false), ("record_ratelimited", true)] {
        let (dir, rec) = open_recorder(limits);
        g.bench_function(BenchmarkId::new(name, &label), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for p in payloads.iter().cycle().take(iters as usize) {
                    black_box(rec.record(&builder.clone().payload(p)).expect("record"));
                }
                let t = start.elapsed();
                remove_segments_below(dir.path(), rec.log().active_segment().saturating_sub(1));
                t
            })
        });
    }

    let (dir, rec) = open_recorder(false);
    g.bench_function(BenchmarkId::new("record_batch64", &label), |b| {
        b.iter_custom(|iters| {
            let batches = iters.div_ceil(64) as usize;
            let recs: Vec<Vec<RecordBuilder<'_>>> = payloads
                .chunks(64)
                .map(|c| c.iter().map(|p| builder.clone().payload(p)).collect())
                .collect();
            let start = Instant::now();
            for batch in recs.iter().cycle().take(batches) {
                black_box(rec.record_batch(batch).expect("record_batch"));
            }
            let t = start.elapsed();
            remove_segments_below(dir.path(), rec.log().active_segment().saturating_sub(1));
            // Time per record, as iters asked for, scaled from whole batches.
            t.mul_f64(iters as f64 / (batches * 64) as f64)
        })
    });
    g.finish();
}

fn record_100b(c: &mut Criterion) {
    let payloads: Vec<Vec<u8>> = (0..64).map(|_| synthetic_payload(100)).collect();
    rows(c, "record_100B", &payloads);
}

/// Bytes on disk per payload byte for the loghub lines, written once outside the timings.
fn disk_ratio(lines: &[Vec<u8>]) {
    let dir = temp_dir("seglog-record-size-");
    let mut cfg = config(dir.path(), false);
    cfg.log.segment_size = 64 << 20;
    let rec = Recorder::open(&cfg).expect("open recorder");
    let b = RecordBuilder::parse("org.seglog/pipe/loghub", 2).expect("class");
    let mut payload = 0u64;
    for l in lines {
        rec.record(&b.clone().payload(l)).expect("record");
        payload += l.len() as u64;
    }
    drop(rec);
    let st = segment_log::stats(dir.path(), true).expect("stats");
    eprintln!(
        "record_loghub: {} records, {payload} payload bytes, {} bytes used on disk: {:.3}x the payload, {:.1} bytes per record",
        lines.len(),
        st.bytes_used,
        st.bytes_used as f64 / payload as f64,
        st.bytes_used as f64 / lines.len() as f64
    );
}

fn record_loghub(c: &mut Criterion) {
    let Some(lines) = loghub_lines() else {
        eprintln!("record_loghub: skipped, shared/data/loghub not found");
        return;
    };
    disk_ratio(&lines);
    rows(c, "record_loghub", &lines);
}

fn boot_clock(c: &mut Criterion) {
    use segment_log::{Clock, SystemClock};
    let clock: std::sync::Arc<dyn Clock> = std::sync::Arc::new(SystemClock);
    let mut g = c.benchmark_group("boot_clock");
    g.bench_function("SystemClock::boot_ns", |b| {
        b.iter(|| black_box(clock.boot_ns()))
    });
    g.bench_function("clock_gettime(CLOCK_BOOTTIME)", |b| {
        b.iter(|| black_box(segment_log::fs::boot_time_ns()))
    });
    g.finish();
}

criterion_group!(benches, record_100b, record_loghub, boot_clock);
criterion_main!(benches);
