//! Multi-process append: 1 vs 2 processes appending 100-byte records to the same log at once.
//! Reports aggregate records/s.
//!
//! The bench binary re-executes itself as the child (`SEGLOG_MP_CHILD=1`): a child opens the
//! log, waits until its background thread has prepared the next segment, prints `ready`, waits
//! for `go` on stdin, appends its share, prints `done`, and exits. The parent times from
//! sending `go` to the last `done`, so process start-up and log opening are outside the
//! measurement. The log dir lives across samples (steady state); retired segments are
//! unlinked between samples.
//!
//! Run: `cargo bench -p seglog-benches --bench append_mp`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode, Throughput};
use seglog_benches::{
    cpu_times, median, remove_segments_below, seglog_segments, synthetic_payload, temp_dir,
};
use segment_log::{Log, Options};
use std::sync::Mutex;

const CHILD_ENV: &str = "SEGLOG_MP_CHILD";

/// Child side: `SEGLOG_MP_CHILD=1 <exe> <dir> <records> <payload_len>`.
fn child_main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[1]);
    let records: u64 = args[2].parse().expect("records");
    let len: usize = args[3].parse().expect("payload len");
    let payload = synthetic_payload(len);
    let log = Log::open(dir, Options::default()).expect("child: open log");
    // Let the background thread allocate and pre-fault the next segment before timing.
    std::thread::sleep(Duration::from_millis(100));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(out, "ready").expect("write ready");
    out.flush().expect("flush");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).expect("read go");
    let (_, cpu0) = cpu_times();
    for _ in 0..records {
        std::hint::black_box(log.append(&payload).expect("child: append"));
    }
    let (_, cpu1) = cpu_times();
    // Process CPU time (appender and background threads) spent on the appends.
    writeln!(out, "done {}", (cpu1 - cpu0).as_nanos()).expect("write done");
    out.flush().expect("flush");
    // Drop (join the background thread) after reporting, outside the parent's timing.
    drop(log);
}

struct Kid {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// Reads a line that must start with `want`; returns the rest.
fn expect_line(r: &mut BufReader<ChildStdout>, want: &str) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read from child");
    let rest = line.trim().strip_prefix(want);
    rest.unwrap_or_else(|| panic!("unexpected line from child: {line:?}"))
        .trim()
        .to_string()
}

/// (procs, records, total CPU ns of all children) of every sample, for the CPU summary.
static CPU_SAMPLES: Mutex<Vec<(usize, u64, u64)>> = Mutex::new(Vec::new());

/// Runs `procs` children appending `records` in total; returns the time from `go` to the last
/// `done`.
fn run_procs(dir: &Path, procs: usize, records: u64, len: usize) -> Duration {
    let exe = std::env::current_exe().expect("current exe");
    let mut kids: Vec<Kid> = (0..procs)
        .map(|i| {
            let share = records / procs as u64 + u64::from((i as u64) < records % procs as u64);
            let mut child = Command::new(&exe)
                .env(CHILD_ENV, "1")
                .arg(dir)
                .arg(share.to_string())
                .arg(len.to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn child");
            let stdin = child.stdin.take().expect("stdin");
            let stdout = BufReader::new(child.stdout.take().expect("stdout"));
            Kid {
                child,
                stdin,
                stdout,
            }
        })
        .collect();
    for k in &mut kids {
        expect_line(&mut k.stdout, "ready");
    }
    let start = Instant::now();
    for k in &mut kids {
        k.stdin.write_all(b"go\n").expect("send go");
        k.stdin.flush().expect("flush go");
    }
    let mut cpu_ns = 0u64;
    for k in &mut kids {
        cpu_ns += expect_line(&mut k.stdout, "done")
            .parse::<u64>()
            .expect("cpu ns");
    }
    let elapsed = start.elapsed();
    CPU_SAMPLES
        .lock()
        .expect("lock")
        .push((procs, records, cpu_ns));
    for mut k in kids {
        let status = k.child.wait().expect("wait child");
        assert!(status.success(), "child failed: {status}");
    }
    elapsed
}

fn append_mp(c: &mut Criterion) {
    let len = 100;
    let mut g = c.benchmark_group("append_mp_100B");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.throughput(Throughput::Elements(1));
    for procs in [1usize, 2] {
        let dir = temp_dir("seglog-mp-");
        // Create the log once, so children only ever open an existing one.
        drop(Log::open(dir.path(), Options::default()).expect("create log"));
        g.bench_function(
            BenchmarkId::new("seglog_never", format!("procs={procs}")),
            |b| {
                b.iter_custom(|iters| {
                    // At least 2M records per sample so each child runs well past its start-up.
                    let d = run_procs(dir.path(), procs, iters.max(2_000_000), len);
                    let newest = seglog_segments(dir.path())
                        .iter()
                        .filter(|s| !s.2)
                        .map(|s| s.0)
                        .max()
                        .unwrap_or(0);
                    remove_segments_below(dir.path(), newest);
                    // Report the time per requested iteration, scaled from the records we ran.
                    d.mul_f64(iters as f64 / iters.max(2_000_000) as f64)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, append_mp);

fn main() {
    if std::env::var_os(CHILD_ENV).is_some() {
        child_main();
        return;
    }
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    // Wall-clock throughput on a loaded 2-core machine mixes contention with lack of free
    // cores; CPU time per record tells them apart.
    let samples = CPU_SAMPLES.lock().expect("lock").clone();
    for procs in [1usize, 2] {
        let mut v: Vec<f64> = samples
            .iter()
            .filter(|s| s.0 == procs && s.1 > 0)
            .map(|s| s.2 as f64 / s.1 as f64)
            .collect();
        if !v.is_empty() {
            println!(
                "append_mp procs={procs}: median {:.1} ns of CPU (all processes, all threads) per record over {} samples",
                median(&mut v),
                v.len()
            );
        }
    }
}
