//! Append latency percentiles (p50/p99/p99.9/p99.99/max) across many rotations. Criterion
//! cannot report percentiles, so this is a plain harness (`harness = false`): every append is
//! timed with `Instant` into a preallocated vector, then sorted.
//!
//! Scenarios (100-byte payloads, default 16 MiB segments, so about 140k records per segment):
//! - `never/flat-out`: sync=never, appends back to back (worst case for the preparer thread);
//! - `never/paced`: sync=never at a steady rate (`SEGLOG_BENCH_LAT_RATE`, default 1M/s),
//!   closer to a real probe;
//! - `interval/flat-out`: sync=interval (`SEGLOG_BENCH_SYNC_MS`, default 100 ms);
//! - `never/flat-out/no-prepare`: prepare-ahead disabled, to show what it buys.
//!
//! A helper thread unlinks retired segments every 20 ms (what retention would do), so a long
//! run neither fills the disk nor builds up dirty pages. The table is printed and written to
//! `<target>/seglog-bench/latency.md`.
//!
//! Run: `cargo bench -p seglog-benches --bench latency` (env `SEGLOG_BENCH_LAT_RECORDS`,
//! default 20,000,000 for flat-out runs; paced runs use a quarter of it).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use seglog_benches::{
    percentiles, remove_segments_below, report_dir, synthetic_payload, temp_dir, thread_faults,
    Percentiles,
};
use segment_log::{Log, Options, SyncPolicy};

struct Scenario {
    name: String,
    sync: SyncPolicy,
    prepare_ahead: bool,
    records: usize,
    /// Records per second, or flat out.
    rate: Option<f64>,
}

struct Outcome {
    all: Percentiles,
    rotations: Percentiles,
    rotation_count: usize,
    throughput: f64,
    /// Minor page faults the appending thread took during the run.
    faults: u64,
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn run(s: &Scenario, payload: &[u8]) -> Outcome {
    let dir = temp_dir("seglog-lat-");
    let log = Log::open(
        dir.path(),
        Options {
            sync: s.sync,
            prepare_ahead: s.prepare_ahead,
            ..Options::default()
        },
    )
    .expect("open log");
    log.append(b"warm-up").expect("append");
    std::thread::sleep(Duration::from_millis(100));
    // Touch every page of the sample buffer now: a calloc'd vector would take a page fault
    // every 512 samples inside the timed loop and pollute the p99.9.
    let mut lat: Vec<u64> = vec![u64::MAX; s.records];
    let mut rot: Vec<u64> = Vec::with_capacity(s.records / 1000 + 16);
    let stop = AtomicBool::new(false);
    let elapsed = std::thread::scope(|scope| {
        let log = &log;
        let stop = &stop;
        scope.spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
                remove_segments_below(dir.path(), log.active_segment().saturating_sub(1));
            }
        });
        let mut segment = log.active_segment();
        let period = s.rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let faults0 = thread_faults().0;
        let start = Instant::now();
        let mut next = start;
        for slot in lat.iter_mut() {
            if let Some(p) = period {
                next += p;
                while Instant::now() < next {
                    std::hint::spin_loop();
                }
            }
            let t0 = Instant::now();
            let pos = log.append(payload).expect("append");
            let ns = t0.elapsed().as_nanos() as u64;
            *slot = ns;
            if pos.segment != segment {
                segment = pos.segment;
                rot.push(ns);
            }
        }
        let e = start.elapsed();
        let faults = thread_faults().0 - faults0;
        stop.store(true, Ordering::Relaxed);
        (e, faults)
    });
    let (elapsed, faults) = elapsed;
    drop(log);
    Outcome {
        rotation_count: rot.len(),
        rotations: percentiles(&mut rot),
        all: percentiles(&mut lat),
        throughput: s.records as f64 / elapsed.as_secs_f64(),
        faults,
    }
}

/// The cost of the two `Instant::now()` calls around each append (the measurement floor).
fn timer_floor() -> Duration {
    let mut v = vec![0u64; 1_000_000];
    for slot in v.iter_mut() {
        let t0 = Instant::now();
        *slot = t0.elapsed().as_nanos() as u64;
    }
    percentiles(&mut v).p50
}

fn us(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e6)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument selects scenarios by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let n: usize = env_or("SEGLOG_BENCH_LAT_RECORDS", 20_000_000);
    let rate: f64 = env_or("SEGLOG_BENCH_LAT_RATE", 1_000_000.0);
    let sync_ms: u64 = env_or("SEGLOG_BENCH_SYNC_MS", 100);
    let scenarios = [
        Scenario {
            name: "never/flat-out".into(),
            sync: SyncPolicy::Never,
            prepare_ahead: true,
            records: n,
            rate: None,
        },
        Scenario {
            name: format!("never/paced {:.0}k/s", rate / 1e3),
            sync: SyncPolicy::Never,
            prepare_ahead: true,
            records: n / 4,
            rate: Some(rate),
        },
        Scenario {
            name: format!("interval={sync_ms}ms/flat-out"),
            sync: SyncPolicy::Interval(Duration::from_millis(sync_ms)),
            prepare_ahead: true,
            records: n,
            rate: None,
        },
        Scenario {
            name: "never/flat-out/no-prepare".into(),
            sync: SyncPolicy::Never,
            prepare_ahead: false,
            records: n,
            rate: None,
        },
    ];
    let payload = synthetic_payload(100);
    let floor = timer_floor();
    let mut md = String::new();
    let _ = writeln!(
        md,
        "Append latency, 100-byte records, 16 MiB segments (µs; timer floor {} µs)\n",
        us(floor)
    );
    let _ = writeln!(
        md,
        "| scenario | records | rotations | records/s | p50 | p99 | p99.9 | p99.99 | max | rotating append p50 / max | appender page faults per rotation |"
    );
    let _ = writeln!(
        md,
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for s in &scenarios {
        if filter
            .as_ref()
            .is_some_and(|f| !s.name.contains(f.as_str()))
        {
            continue;
        }
        eprintln!("latency: running {} ({} records)...", s.name, s.records);
        let o = run(s, &payload);
        let row = format!(
            "| {} | {} | {} | {:.2}M | {} | {} | {} | {} | {} | {} / {} | {:.0} |",
            s.name,
            s.records,
            o.rotation_count,
            o.throughput / 1e6,
            us(o.all.p50),
            us(o.all.p99),
            us(o.all.p999),
            us(o.all.p9999),
            us(o.all.max),
            us(o.rotations.p50),
            us(o.rotations.max),
            o.faults as f64 / o.rotation_count.max(1) as f64,
        );
        println!("{row}");
        let _ = writeln!(md, "{row}");
    }
    let path = report_dir().join("latency.md");
    println!("\n{md}");
    match std::fs::write(&path, &md) {
        Ok(()) => println!("written to {}", path.display()),
        Err(e) => eprintln!("could not write {}: {e}", path.display()),
    }
}
