//! `seglog journal` end to end: the real binary listing (text, JSON), verifying and exporting
//! a log of 1M records, output to /dev/null, from a warm page cache. Each sample is one whole
//! process run, so process start, reading, checksums, record decoding, rendering and writing
//! are all in it; throughput is in records.
//!
//! The log is written once per run through `recorder::Recorder` (what probes use) with real
//! loghub lines (`shared/data/loghub/*.log`, cycled; synthetic 100-byte lines when absent).
//! The binary is built first (`cargo build --release --bin seglog`; quick when up to date).
//! The record count can be changed for a quick look:
//!
//! ```text
//! cargo bench -p seglog-benches --bench journal
//! SEGLOG_BENCH_JOURNAL_RECORDS=200000 cargo bench -p seglog-benches --bench journal
//! ```
//!
//! Before the timed runs, each command runs once and its CPU time (user + system of the
//! child, from `getrusage(RUSAGE_CHILDREN)`) is printed next to its wall time: on a shared,
//! loaded machine wall time includes waiting for a core; CPU time does not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recorder::config::Config;
use recorder::{RecordBuilder, Recorder};
use seglog_benches::{loghub_lines, synthetic_payload, temp_dir};

/// Records in the benchmark log (1M: the issue's figure).
fn record_count() -> u64 {
    std::env::var("SEGLOG_BENCH_JOURNAL_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

/// Builds the release binary and returns its path (beside this bench's `deps/` directory).
fn seglog_binary() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--bin", "seglog"])
        .current_dir(&root)
        .status()
        .expect("run cargo build");
    assert!(
        status.success(),
        "cargo build --release --bin seglog failed"
    );
    let exe = std::env::current_exe().expect("bench executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|release| release.join("seglog"))
        .expect("target directory");
    assert!(bin.exists(), "{} not found after the build", bin.display());
    bin
}

fn build_log(dir: &Path, n: u64) {
    let lines = loghub_lines().unwrap_or_else(|| vec![synthetic_payload(100)]);
    let mut config = Config::for_dir(dir);
    config.recorder.rate_limit_enabled = false;
    config.log.max_bytes = None;
    config.log.max_age = None;
    let rec = Recorder::open(&config).expect("open recorder");
    let t = Instant::now();
    let base = RecordBuilder::parse("org.seglog/loghub/line", 2).expect("classification");
    let mut written = 0u64;
    while written < n {
        let take = (n - written).min(512) as usize;
        let batch: Vec<RecordBuilder<'_>> = lines
            .iter()
            .cycle()
            .skip((written % lines.len() as u64) as usize)
            .take(take)
            .map(|l| base.clone().payload(l))
            .collect();
        for outcome in rec.record_batch(&batch).expect("record batch") {
            outcome.expect("record");
        }
        written += take as u64;
    }
    eprintln!("journal bench: wrote {n} records in {:.2?}", t.elapsed());
}

/// CPU time (user + system) of all waited-for children so far.
fn children_cpu() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass, valid for the call.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_CHILDREN is a valid `who`.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn run(bin: &Path, dir: &Path, args: &[&str]) {
    let status = Command::new(bin)
        .arg("--dir")
        .arg(dir)
        .arg("journal")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run seglog");
    // verify exits 0 on a clean log; anything else is a broken bench.
    assert!(status.success(), "seglog journal {args:?} failed: {status}");
}

fn journal(c: &mut Criterion) {
    let n = record_count();
    let bin = seglog_binary();
    let dir = temp_dir("seglog-journal-");
    build_log(dir.path(), n);
    let cases: [(&str, &[&str]); 6] = [
        ("list_text", &["list"]),
        ("list_json", &["list", "--json"]),
        ("list_text_payload", &["list", "--include-payload"]),
        ("list_last_10", &["list", "-n", "10"]),
        ("verify", &["verify"]),
        ("export", &["export"]),
    ];
    // Warm the page cache and report CPU time per run once.
    for (name, args) in cases {
        let before = children_cpu();
        let t = Instant::now();
        run(&bin, dir.path(), args);
        let (wall, cpu) = (t.elapsed(), children_cpu() - before);
        let rate = n as f64 / cpu.as_secs_f64().max(1e-9) / 1e6;
        eprintln!(
            "journal {name}: wall {wall:.2?}, cpu {cpu:.2?} ({rate:.2}M records per CPU second)"
        );
    }
    let mut g = c.benchmark_group("journal");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(15));
    g.throughput(Throughput::Elements(n));
    for (name, args) in cases {
        g.bench_function(BenchmarkId::new(name, n), |b| {
            b.iter(|| run(&bin, dir.path(), args))
        });
    }
    g.finish();
}

criterion_group!(benches, journal);
criterion_main!(benches);
