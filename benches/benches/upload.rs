//! The upload stage: building batches from the log (read, decode, pair with contexts, encode
//! columns, zstd) and the whole pass to a loopback HTTP sink.
//!
//! Groups (throughput in payload bytes, the lines as the probes gave them):
//! - `upload_build`: `BatchBuilder::build` over the whole log until caught up, zstd levels 1
//!   (the default) and 3, on the loghub samples and on 100-byte synthetic records.
//! - `upload_loopback`: `Uploader::pass` (cursor writes with fsync, HTTP POST, acknowledgement)
//!   to a sink on 127.0.0.1 that reads each body and answers 200 without decoding it, so the
//!   numbers are the uploader's.
//!
//! After the criterion groups, a report (stderr and `target/seglog-bench/upload.txt`) gives
//! MB/s per core from CPU time (median of 5 runs; wall time on this shared 2-core machine
//! includes time spent descheduled), and bytes on the wire against `zstd -3` of the same
//! lines as plain text, for the whole corpus and per file. For the loopback pass the CPU is
//! the whole process's minus the sink's threads' (each sink thread adds its own CPU time to
//! a counter after every answer): the uploading thread plus any thread the uploader uses
//! (its request thread, a pipeline stage), so work moved off the calling thread still
//! counts. Wall-clock MB/s is given beside it.
//!
//! Run: `cargo bench -p seglog-benches --bench upload`. For a profile of the loopback pass
//! alone, `SEGLOG_UPLOAD_PROFILE=<passes>` runs only that many passes over the loghub corpus
//! (e.g. under `perf record`) and skips everything else.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use seglog_benches::{cpu_times, loghub_dir, median, report_dir, synthetic_payload, temp_dir};
use segment_log::{Position, ReaderOptions};
use uploader::batch::{BatchBuilder, BatchLimits, End, NoNotes};
use uploader::config::UploadConfig;
use uploader::engine::{PassOptions, PassOutcome, Uploader, Waiter};
use uploader::policy::Trigger;

/// A log holding a known set of records. The recorder stays open, as probes are while the
/// daemon uploads: with no writer alive, segment-log's reader re-reads the zero tail of the
/// newest segment (up to 16 MiB) every time it reaches the live end, a fixed cost per pass
/// that would dominate these small corpora.
struct Corpus {
    writer: Recorder,
    dir: tempfile::TempDir,
    public: [u8; 32],
    payload_bytes: u64,
    records: u64,
}

/// Files of `loghub/*.log` as (name, lines), sorted by name.
fn loghub_files() -> Vec<(String, Vec<Vec<u8>>)> {
    let Ok(rd) = std::fs::read_dir(loghub_dir()) else {
        eprintln!(
            "note: {} not found: loghub rows skipped",
            loghub_dir().display()
        );
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .filter_map(|p| {
            let text = std::fs::read(&p).ok()?;
            let name = p
                .file_stem()?
                .to_string_lossy()
                .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
            let lines = text
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            Some((name, lines))
        })
        .collect()
}

fn recorder(dir: &Path) -> Recorder {
    let mut c = Config::for_dir(dir);
    c.log.max_bytes = None;
    c.log.max_age = None;
    c.recorder = RecorderConfig::unlimited();
    Recorder::open(&c).expect("open recorder")
}

/// Appends `files` (classification per file) to the log; returns (payload bytes, records).
fn write_files(rec: &Recorder, files: &[(String, Vec<Vec<u8>>)]) -> (u64, u64) {
    let (mut payload_bytes, mut records) = (0, 0);
    for (name, lines) in files {
        let class = format!("org.loghub/{name}/line");
        for chunk in lines.chunks(256) {
            let batch: Vec<RecordBuilder<'_>> = chunk
                .iter()
                .map(|l| RecordBuilder::parse(&class, 1).expect("class").payload(l))
                .collect();
            for r in rec.record_batch(&batch).expect("append") {
                r.expect("record");
            }
            payload_bytes += chunk.iter().map(|l| l.len() as u64).sum::<u64>();
            records += chunk.len() as u64;
        }
    }
    (payload_bytes, records)
}

/// Writes `files` (classification per file) into a fresh log.
fn corpus(files: &[(String, Vec<Vec<u8>>)]) -> Corpus {
    let dir = temp_dir("seglog-upload-bench-");
    let rec = recorder(dir.path());
    let (payload_bytes, records) = write_files(&rec, files);
    let public = *rec.public_log_id();
    Corpus {
        writer: rec,
        dir,
        public,
        payload_bytes,
        records,
    }
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_bytes: uploader::config::DEFAULT_BATCH_MAX_BYTES,
        max_records: uploader::config::DEFAULT_BATCH_MAX_RECORDS,
        max_gaps: 10_000,
    }
}

/// A builder kept across runs, as the daemon keeps its own (buffers and zstd context reused).
fn builder(c: &Corpus, level: i32) -> BatchBuilder {
    BatchBuilder::new(c.dir.path(), c.public, level, ReaderOptions::default()).expect("builder")
}

/// Builds every batch of the log from its start; returns (wire bytes, records, batches).
fn build_all(b: &mut BatchBuilder) -> (u64, u64, u64) {
    let (mut wire, mut records, mut batches) = (0, 0, 0);
    let mut from = Position::default();
    loop {
        let built = b
            .build(from, &limits(), None, i64::MAX, &mut NoNotes)
            .expect("build");
        wire += built.body.len() as u64;
        records += built.records;
        batches += u64::from(!built.is_empty());
        from = built.last;
        if built.end == End::CaughtUp {
            return (wire, records, batches);
        }
    }
}

/// CPU nanoseconds the sink's threads used (added after every answer).
static SINK_CPU_NS: AtomicU64 = AtomicU64::new(0);

/// The calling thread's CPU time in nanoseconds.
fn thread_cpu_ns() -> u64 {
    u64::try_from(cpu_times().0.as_nanos()).unwrap_or(u64::MAX)
}

/// An HTTP sink on 127.0.0.1: reads each request and its body, answers 200; adds the CPU
/// time of its connection threads to [`SINK_CPU_NS`].
fn sink() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                let mut r = BufReader::new(conn);
                let mut counted = thread_cpu_ns();
                loop {
                    let mut len = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err()
                        || w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
                            .is_err()
                    {
                        return;
                    }
                    let now = thread_cpu_ns();
                    SINK_CPU_NS.fetch_add(now - counted, Ordering::Relaxed);
                    counted = now;
                }
            });
        }
    });
    format!("http://{addr}/")
}

struct NoWait;
impl Waiter for NoWait {
    fn wait(&mut self, d: Duration) -> bool {
        std::thread::sleep(d);
        false
    }
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// An uploader of `c`'s log sending to `url`, from an empty cursor.
fn open_uploader(c: &Corpus, url: &str) -> Uploader {
    let _ = std::fs::remove_dir_all(c.dir.path().join("upload"));
    let mut cfg = UploadConfig::for_dir(c.dir.path());
    cfg.url = Some(url.to_owned());
    cfg.policy.require_opt_in = false;
    Uploader::open(cfg)
        .expect("open uploader")
        .expect("log exists")
}

/// One pass of `up` to the live end; returns the records delivered.
fn pass(up: &mut Uploader) -> u64 {
    let o = PassOptions {
        trigger: Trigger::Flush,
        max_attempts: Some(3),
        target: None,
        deadline: None,
    };
    let (out, p) = up.pass(&o, &mut NoWait, &mut |_| {}).expect("pass");
    assert_eq!(out, PassOutcome::Complete);
    p.records
}

/// One full pass from an empty cursor to the sink, as `seglog upload` runs it (a fresh
/// uploader: its buffers and zstd context are new); returns the records delivered.
fn upload_all(c: &Corpus, url: &str) -> u64 {
    pass(&mut open_uploader(c, url))
}

fn synthetic_files() -> Vec<(String, Vec<Vec<u8>>)> {
    vec![("synthetic".into(), vec![synthetic_payload(100); 40_000])]
}

fn synthetic_corpus() -> Corpus {
    corpus(&synthetic_files())
}

/// The files the corpus `name` of [`benches`] was written from.
fn files_of(name: &str, loghub: &[(String, Vec<Vec<u8>>)]) -> Vec<(String, Vec<Vec<u8>>)> {
    if name == "loghub" {
        loghub.to_vec()
    } else {
        synthetic_files()
    }
}

fn benches(c: &mut Criterion) {
    let files = loghub_files();
    if let Some(n) = std::env::var("SEGLOG_UPLOAD_PROFILE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        let cor = corpus(&files);
        let url = sink();
        for _ in 0..n {
            black_box(upload_all(&cor, &url));
        }
        return;
    }
    let mut sets = vec![("synthetic100B", synthetic_corpus())];
    if !files.is_empty() {
        sets.insert(0, ("loghub", corpus(&files)));
    }
    let mut g = c.benchmark_group("upload_build");
    g.sample_size(20).measurement_time(Duration::from_secs(8));
    for (name, cor) in &sets {
        g.throughput(Throughput::Bytes(cor.payload_bytes));
        for level in [1, 3] {
            let mut bb = builder(cor, level);
            g.bench_with_input(
                BenchmarkId::new(format!("zstd{level}"), name),
                cor,
                |b, _| b.iter(|| black_box(build_all(&mut bb))),
            );
        }
    }
    g.finish();
    let url = sink();
    let mut g = c.benchmark_group("upload_loopback");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    for (name, cor) in &sets {
        g.throughput(Throughput::Bytes(cor.payload_bytes));
        g.bench_with_input(BenchmarkId::new("default_level", name), cor, |b, cor| {
            b.iter(|| assert_eq!(upload_all(cor, &url), cor.records))
        });
    }
    g.finish();
    report(&files, &sets, &url);
}

/// MB/s of payload per second of the calling thread's CPU time (median of 5 runs).
fn per_core(payload_bytes: u64, mut f: impl FnMut()) -> f64 {
    let mut v: Vec<f64> = (0..5)
        .map(|_| {
            let t0 = cpu_times().0;
            f();
            let cpu = (cpu_times().0 - t0).as_secs_f64();
            payload_bytes as f64 / cpu / 1e6
        })
        .collect();
    median(&mut v)
}

/// MB/s of payload per core for a pass to the sink: (uploading thread's CPU, the process's
/// CPU minus the sink's, wall clock), medians of 5 runs; `before` runs untimed before each.
fn pass_rates(
    payload_bytes: u64,
    mut f: impl FnMut(),
    mut before: impl FnMut(),
) -> (f64, f64, f64) {
    let (mut thread, mut process, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    let mb = payload_bytes as f64 / 1e6;
    for _ in 0..5 {
        before();
        let (t0, p0) = cpu_times();
        let s0 = SINK_CPU_NS.load(Ordering::Relaxed);
        let w0 = Instant::now();
        f();
        let w = w0.elapsed().as_secs_f64();
        let (t1, p1) = cpu_times();
        let sink = Duration::from_nanos(SINK_CPU_NS.load(Ordering::Relaxed) - s0);
        thread.push(mb / (t1 - t0).as_secs_f64());
        process.push(mb / (p1 - p0).saturating_sub(sink).as_secs_f64());
        wall.push(mb / w);
    }
    (median(&mut thread), median(&mut process), median(&mut wall))
}

fn zstd3_plain(lines: &[Vec<u8>]) -> u64 {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    zstd::bulk::compress(&text, 3).expect("zstd").len() as u64
}

fn report(files: &[(String, Vec<Vec<u8>>)], sets: &[(&str, Corpus)], url: &str) {
    let mut out = String::new();
    out.push_str("upload bench report (payload MB/s per core from thread CPU time, median of 5)\n");
    for (name, cor) in sets {
        for level in [1, 3] {
            let mut bb = builder(cor, level);
            let mbs = per_core(cor.payload_bytes, || {
                black_box(build_all(&mut bb));
            });
            out.push_str(&format!("  build+zstd{level} {name:14} {mbs:8.1} MB/s per core ({} records, {} payload bytes)\n", cor.records, cor.payload_bytes));
        }
        let (thread, process, wall) = pass_rates(
            cor.payload_bytes,
            || {
                black_box(upload_all(cor, url));
            },
            || {},
        );
        out.push_str(&format!("  loopback pass  {name:14} {process:8.1} MB/s per core (process CPU minus the sink's threads)\n"));
        out.push_str(&format!("  loopback pass  {name:14} {thread:8.1} MB/s per core of the calling thread alone; {wall:8.1} MB/s wall\n"));
        // As the daemon runs: one uploader kept open; before each measured pass the same
        // records are appended again (not timed), so each pass uploads one corpus' worth.
        let mut up = open_uploader(cor, url);
        pass(&mut up);
        let files_again = files_of(name, files);
        let (thread, process, wall) = pass_rates(
            cor.payload_bytes,
            || {
                black_box(pass(&mut up));
            },
            || {
                write_files(&cor.writer, &files_again);
                // The recorder's preparer pre-faults the next segment after appends: let it
                // finish, so the process CPU of the timed pass is the uploader's.
                std::thread::sleep(Duration::from_millis(500));
            },
        );
        out.push_str(&format!("  daemon pass    {name:14} {process:8.1} MB/s per core (process CPU minus the sink's threads; uploader kept open)\n"));
        out.push_str(&format!("  daemon pass    {name:14} {thread:8.1} MB/s per core of the calling thread alone; {wall:8.1} MB/s wall\n"));
    }
    if let Some((_, all)) = sets.iter().find(|(n, _)| *n == "loghub") {
        let all_lines: Vec<Vec<u8>> = files.iter().flat_map(|(_, l)| l.iter().cloned()).collect();
        let text: Vec<u8> = all_lines
            .iter()
            .flat_map(|l| l.iter().copied().chain(std::iter::once(b'\n')))
            .collect();
        let plain = per_core(text.len() as u64, || {
            black_box(zstd::bulk::compress(&text, 3).expect("zstd"));
        });
        out.push_str(&format!("  plain zstd -3 of the loghub lines as text, same run: {plain:8.1} MB/s per core (the reference for the rows above)\n"));
        for level in [1, 3] {
            let (wire, _, batches) = build_all(&mut builder(all, level));
            let plain = zstd3_plain(&all_lines);
            out.push_str(&format!(
                "  zstd {level}: loghub, all files in one log: {} payload bytes -> {wire} on the wire in {batches} batches ({:.2}x smaller); zstd -3 of the same lines as text: {plain} ({:.2}x); wire / zstd -3 = {:.3}\n",
                all.payload_bytes,
                all.payload_bytes as f64 / wire as f64,
                all.payload_bytes as f64 / plain as f64,
                wire as f64 / plain as f64
            ));
            let (mut tw, mut tp) = (0u64, 0u64);
            for (name, lines) in files.iter() {
                let one = corpus(std::slice::from_ref(&(name.clone(), lines.clone())));
                let (wire, _, _) = build_all(&mut builder(&one, level));
                let plain = zstd3_plain(lines);
                tw += wire;
                tp += plain;
                out.push_str(&format!(
                    "    {name:16} wire {wire:7} zstd-3 {plain:7} ratio {:.3}\n",
                    wire as f64 / plain as f64
                ));
            }
            out.push_str(&format!(
                "  zstd {level}: per-file total: wire {tw} / zstd -3 {tp} = {:.3}\n",
                tw as f64 / tp as f64
            ));
        }
    }
    eprint!("{out}");
    let _ = std::fs::write(report_dir().join("upload.txt"), out);
}

criterion_group!(upload, benches);
criterion_main!(upload);
