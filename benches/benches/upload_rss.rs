//! Peak memory of the uploader draining a multi-GiB backlog (DESIGN.md: < 64 MiB RSS with a
//! 10 GiB backlog, drained to loopback in < 60 s).
//!
//! The harness writes the backlog (loghub lines, cycled, through the recorder), then starts
//! itself again as a child that only uploads (so the writer's mappings do not count) to an
//! HTTP sink on 127.0.0.1 in this process, and reports the child's peak RSS (`VmHWM` from
//! `/proc/self/status`), the records and bytes it delivered, and the wall and CPU time.
//!
//! Run: `SEGLOG_RSS_BACKLOG_GIB=10 cargo bench -p seglog-benches --bench upload_rss`
//! (default 2 GiB; needs that much free disk under `$SEGLOG_BENCH_DIR` or the temp dir).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use seglog_benches::{cpu_times, loghub_lines, report_dir, synthetic_payload, temp_dir};
use uploader::config::UploadConfig;
use uploader::engine::{PassOptions, PassOutcome, Uploader, Waiter};
use uploader::policy::Trigger;

fn vm_hwm_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
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

/// The child: uploads everything and prints one line of results.
fn child(dir: &Path, url: &str) {
    let mut cfg = UploadConfig::for_dir(dir);
    cfg.url = Some(url.to_owned());
    cfg.policy.require_opt_in = false;
    let start = Instant::now();
    let cpu0 = cpu_times().1;
    let mut up = Uploader::open(cfg)
        .expect("open uploader")
        .expect("log exists");
    let o = PassOptions {
        trigger: Trigger::Flush,
        max_attempts: Some(5),
        target: None,
        deadline: None,
    };
    let (out, p) = up.pass(&o, &mut NoWait, &mut |_| {}).expect("pass");
    assert_eq!(out, PassOutcome::Complete, "{out:?}");
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_times().1 - cpu0).as_secs_f64();
    println!("records={} payload={} frames={} wire={} batches={} wall_s={wall:.2} cpu_s={cpu:.2} vmhwm_kib={}", p.records, p.payload_bytes, p.frame_bytes, p.wire_bytes, p.batches, vm_hwm_kib());
}

fn sink() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            std::thread::spawn(move || {
                let Ok(mut w) = conn.try_clone() else { return };
                let mut r = BufReader::new(conn);
                loop {
                    let (mut len, mut line) = (0usize, String::new());
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
                }
            });
        }
    });
    format!("http://{addr}/")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child-upload") {
        child(Path::new(&args[i + 1]), &args[i + 2]);
        return;
    }
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--list") {
        // Only `cargo bench` (which passes --bench) writes the multi-GiB backlog.
        return;
    }
    let gib: f64 = std::env::var("SEGLOG_RSS_BACKLOG_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let target = (gib * (1u64 << 30) as f64) as u64;
    let lines = loghub_lines().unwrap_or_else(|| vec![synthetic_payload(100)]);
    let dir = temp_dir("seglog-upload-rss-");
    let mut c = Config::for_dir(dir.path());
    c.log.max_bytes = None;
    c.log.max_age = None;
    c.recorder = RecorderConfig::unlimited();
    let t = Instant::now();
    {
        let rec = Recorder::open(&c).expect("open recorder");
        let class = "org.loghub/backlog/line";
        let (mut written, mut records) = (0u64, 0u64);
        'fill: loop {
            for chunk in lines.chunks(512) {
                let batch: Vec<RecordBuilder<'_>> = chunk
                    .iter()
                    .map(|l| RecordBuilder::parse(class, 1).expect("class").payload(l))
                    .collect();
                rec.record_batch(&batch).expect("append");
                written += chunk.iter().map(|l| l.len() as u64 + 24).sum::<u64>();
                records += chunk.len() as u64;
                if written >= target {
                    break 'fill;
                }
            }
        }
        eprintln!(
            "wrote a backlog of {records} records (~{:.2} GiB of frames) in {:.1}s",
            written as f64 / (1u64 << 30) as f64,
            t.elapsed().as_secs_f64()
        );
    }
    let url = sink();
    let out = std::process::Command::new(std::env::current_exe().expect("exe"))
        .arg("--child-upload")
        .arg(dir.path())
        .arg(&url)
        .output()
        .expect("run child");
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "child failed: {line} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|f| f.strip_prefix(&format!("{k}=")))
            .unwrap_or("?")
            .to_owned()
    };
    let report = format!(
        "upload_rss: backlog {gib} GiB: {} records, {} payload bytes ({} frame bytes) -> {} wire bytes in {} batches; wall {}s, cpu {}s; peak RSS (VmHWM) {:.1} MiB\n",
        field("records"),
        field("payload"),
        field("frames"),
        field("wire"),
        field("batches"),
        field("wall_s"),
        field("cpu_s"),
        field("vmhwm_kib").parse::<f64>().unwrap_or(0.0) / 1024.0
    );
    eprint!("{report}");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(report_dir().join("upload_rss.txt"))
        .expect("report");
    let _ = f.write_all(report.as_bytes());
}
