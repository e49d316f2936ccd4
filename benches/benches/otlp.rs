//! OTLP/HTTP logs (`[upload] protocol = "otlp"`, OTLP.md) against seglog's own protocol on
//! the loghub samples: bytes on the wire and build speed per core.
//!
//! Groups (throughput in payload bytes):
//! - `otlp_build`: `BatchBuilder::build` over the whole log with the seglog body (zstd 1,
//!   the default) and the OTLP body (zstd 1, zstd 3, uncompressed).
//! - `otlp_encode`: `otlp::Encoder::encode` alone, from decoded batches (the mapping and
//!   protobuf writing, no reading, no compression).
//!
//! After the groups, a report (stderr and `target/seglog-bench/otlp.txt`): payload MB/s per
//! core from the thread's CPU time (median of 5), and wire bytes of each body against
//! `zstd -3` of the raw lines as text.
//!
//! Run: `cargo bench -p seglog-benches --bench otlp`.
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use seglog_benches::{cpu_times, loghub_dir, median, report_dir, temp_dir};
use segment_log::{Position, ReaderOptions};
use uploader::batch::{BatchBuilder, BatchLimits, BodyFormat, End, NoNotes};
use uploader::config::Compression;

struct Corpus {
    _writer: Recorder,
    dir: tempfile::TempDir,
    public: [u8; 32],
    payload_bytes: u64,
    lines: Vec<Vec<u8>>,
}

fn loghub_files() -> Vec<(String, Vec<Vec<u8>>)> {
    let Ok(rd) = std::fs::read_dir(loghub_dir()) else {
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

fn corpus(files: &[(String, Vec<Vec<u8>>)]) -> Corpus {
    let dir = temp_dir("seglog-otlp-bench-");
    let mut c = Config::for_dir(dir.path());
    c.log.max_bytes = None;
    c.log.max_age = None;
    c.recorder = RecorderConfig::unlimited();
    let rec = Recorder::open(&c).expect("open recorder");
    let (mut payload_bytes, mut all) = (0, Vec::new());
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
        }
        all.extend(lines.iter().cloned());
    }
    let public = *rec.public_log_id();
    Corpus {
        _writer: rec,
        dir,
        public,
        payload_bytes,
        lines: all,
    }
}

fn limits() -> BatchLimits {
    BatchLimits {
        max_bytes: uploader::config::DEFAULT_BATCH_MAX_BYTES,
        max_records: uploader::config::DEFAULT_BATCH_MAX_RECORDS,
        max_gaps: 10_000,
    }
}

fn builder(dir: &Path, public: [u8; 32], level: i32, format: BodyFormat) -> BatchBuilder {
    let mut b = BatchBuilder::new(dir, public, level, ReaderOptions::default()).expect("builder");
    b.set_format(format);
    b
}

/// Builds every batch from the log's start: (wire bytes, uncompressed body bytes, batches).
fn build_all(b: &mut BatchBuilder) -> (u64, u64, u64) {
    let (mut wire, mut raw, mut batches) = (0, 0, 0);
    let mut from = Position::default();
    loop {
        let built = b
            .build(from, &limits(), None, i64::MAX, &mut NoNotes)
            .expect("build");
        wire += built.body.len() as u64;
        raw += built.raw_len as u64;
        batches += u64::from(!built.is_empty());
        from = built.last;
        if built.end == End::CaughtUp {
            return (wire, raw, batches);
        }
    }
}

/// The decoded batches of the log (the input of `otlp::Encoder`).
fn decoded(c: &Corpus) -> Vec<uploader::protocol::Batch> {
    let mut b = builder(c.dir.path(), c.public, 1, BodyFormat::Seglog);
    let mut out = Vec::new();
    let mut from = Position::default();
    loop {
        let built = b
            .build(from, &limits(), None, i64::MAX, &mut NoNotes)
            .expect("build");
        if !built.is_empty() {
            let l = uploader::protocol::Limits::default();
            out.push(uploader::protocol::decode_body(&built.body, &l).expect("decode"));
        }
        from = built.last;
        if built.end == End::CaughtUp {
            return out;
        }
    }
}

const FORMATS: [(&str, i32, BodyFormat); 5] = [
    ("seglog_zstd1", 1, BodyFormat::Seglog),
    (
        "otlp_zstd1",
        1,
        BodyFormat::Otlp {
            compression: Compression::Zstd,
        },
    ),
    (
        "otlp_zstd3",
        3,
        BodyFormat::Otlp {
            compression: Compression::Zstd,
        },
    ),
    (
        "otlp_gzip1",
        1,
        BodyFormat::Otlp {
            compression: Compression::Gzip,
        },
    ),
    (
        "otlp_none",
        1,
        BodyFormat::Otlp {
            compression: Compression::None,
        },
    ),
];

fn benches(c: &mut Criterion) {
    let files = loghub_files();
    if files.is_empty() {
        eprintln!(
            "note: {} not found: otlp bench skipped",
            loghub_dir().display()
        );
        return;
    }
    let cor = corpus(&files);
    let mut g = c.benchmark_group("otlp_build");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Bytes(cor.payload_bytes));
    for (name, level, format) in FORMATS {
        let mut bb = builder(cor.dir.path(), cor.public, level, format);
        g.bench_with_input(BenchmarkId::new(name, "loghub"), &(), |b, _| {
            b.iter(|| black_box(build_all(&mut bb)))
        });
    }
    g.finish();
    let batches = decoded(&cor);
    let mut g = c.benchmark_group("otlp_encode");
    g.sample_size(10).measurement_time(Duration::from_secs(6));
    g.throughput(Throughput::Bytes(cor.payload_bytes));
    let mut enc = otlp::Encoder::new();
    let mut buf = Vec::new();
    g.bench_function("loghub", |b| {
        b.iter(|| {
            for batch in &batches {
                buf.clear();
                enc.encode(batch, 0, &mut buf);
                black_box(&buf);
            }
        })
    });
    g.finish();
    report(&cor, &batches);
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

fn report(cor: &Corpus, batches: &[uploader::protocol::Batch]) {
    let mut text = Vec::new();
    for l in &cor.lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    let zstd3 = zstd::bulk::compress(&text, 3).expect("zstd").len() as u64;
    let records = cor.lines.len();
    let mut out = format!(
        "otlp bench report: loghub, {records} lines, {} payload bytes ({} bytes as text); zstd -3 of the text: {zstd3} bytes\n",
        cor.payload_bytes,
        text.len()
    );
    for (name, level, format) in FORMATS {
        let mut bb = builder(cor.dir.path(), cor.public, level, format);
        let (wire, raw, n) = build_all(&mut bb);
        let mbs = per_core(cor.payload_bytes, || {
            black_box(build_all(&mut bb));
        });
        out.push_str(&format!(
            "  {name:13} wire {wire:8} bytes in {n} batches ({:.3}x zstd -3 of the text; body before compression {raw}); build {mbs:6.1} MB/s per core\n",
            wire as f64 / zstd3 as f64
        ));
    }
    let mut enc = otlp::Encoder::new();
    let mut buf = Vec::new();
    let mbs = per_core(cor.payload_bytes, || {
        for batch in batches {
            buf.clear();
            enc.encode(batch, 0, &mut buf);
            black_box(&buf);
        }
    });
    out.push_str(&format!(
        "  otlp::Encoder::encode alone (mapping + protobuf, no read, no zstd): {mbs:6.1} MB/s per core, {:.0} ns per record\n",
        cor.payload_bytes as f64 * 1e3 / (mbs * records as f64)
    ));
    eprint!("{out}");
    let _ = std::fs::write(report_dir().join("otlp.txt"), out);
}

criterion_group!(otlp_bench, benches);
criterion_main!(otlp_bench);
