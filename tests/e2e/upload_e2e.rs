//! End-to-end tests of `seglog upload`, the real binary, on temporary directories and
//! 127.0.0.1: opt-in and the exit codes of `once` and `flush`, the daemon serving `flush`
//! while probes keep writing, SIGKILL of the uploader at random moments (between send and
//! acknowledgement, between acknowledgement and cursor write) with nothing lost and resent
//! batches carrying the ids the server already had, SIGTERM shutdown, a damaged cursor, and
//! an upload into the real `seglog collector serve`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use uploader::testing::FlakyServer;

/// A log directory, its config file and a home for the child processes.
struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    config: PathBuf,
    home: PathBuf,
}

impl Env {
    fn new(url: &str, extra: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let config = tmp.path().join("seglog.toml");
        let text = format!(
            "[log]\nsegment_size = \"64KiB\"\nmax_record_size = \"16KiB\"\nmax_bytes = 0\nmax_age = 0\n\n[upload]\nurl = \"{url}\"\nbatch_max_records = 300\nbackoff_base = \"10ms\"\nbackoff_cap = \"100ms\"\ntimeout = \"2s\"\n{extra}\n"
        );
        std::fs::write(&config, text).unwrap();
        Env {
            _tmp: tmp,
            dir,
            config,
            home,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_seglog"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    fn recorder(&self) -> Recorder {
        let mut c = Config::for_dir(&self.dir);
        c.log.segment_size = 64 << 10;
        c.log.max_record_size = 16 << 10;
        c.log.max_bytes = None;
        c.log.max_age = None;
        c.recorder = RecorderConfig::unlimited();
        c.recorder.static_machine_id_file = self.home.join("static-id");
        c.recorder.machine_id_secret_file = self.home.join("secret");
        Recorder::open(&c).unwrap()
    }

    fn write(&self, from: u64, to: u64) {
        let r = self.recorder();
        for i in from..to {
            r.record(
                &RecordBuilder::parse("org.test/e2e/line", 2)
                    .unwrap()
                    .payload(&payload(i)),
            )
            .unwrap();
        }
    }
}

fn payload(i: u64) -> Vec<u8> {
    format!(
        "line {i:09} of the end-to-end upload test {}",
        "z".repeat((i % 40) as usize)
    )
    .into_bytes()
}

fn number(p: &[u8]) -> u64 {
    std::str::from_utf8(&p[5..14]).unwrap().parse().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Record numbers the server stored (after dedupe), sorted, and whether any position was
/// stored twice.
fn stored(s: &FlakyServer) -> (Vec<u64>, bool) {
    let (recs, dup) = s.records();
    let mut n: Vec<u64> = recs.iter().map(|r| number(&r.payload)).collect();
    n.sort_unstable();
    (n, dup)
}

fn assert_exactly(s: &FlakyServer, want: impl Iterator<Item = u64>) {
    let (got, dup) = stored(s);
    assert!(!dup, "a record was stored twice");
    assert_eq!(got, want.collect::<Vec<_>>());
    assert!(s.seen().errors.is_empty(), "{:?}", s.seen().errors);
}

#[test]
fn opt_in_gates_uploads_and_once_reports_policy_with_exit_3() {
    let s = FlakyServer::start(vec![]);
    let e = Env::new(&s.url(), "");
    e.write(0, 500);
    let o = e.run(&["upload", "once"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("opt-in"),
        "{}",
        text(&o)
    );
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 3, "flush still needs opt-in: {}", text(&o));
    assert_eq!(s.seen().requests, 0, "nothing left the machine");
    assert_eq!(code(&e.run(&["upload", "opt-in"])), 0);
    let o = e.run(&["upload", "once"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("uploaded 500 records"),
        "{}",
        text(&o)
    );
    assert_exactly(&s, 0..500);
    // More records, but the 15-minute interval has not passed: policy says not now.
    e.write(500, 600);
    let o = e.run(&["upload", "once"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("interval"),
        "{}",
        text(&o)
    );
    // flush bypasses the schedule.
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_exactly(&s, 0..600);
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("nothing to upload"),
        "{}",
        text(&o)
    );
    assert_eq!(code(&e.run(&["upload", "opt-out"])), 0);
    e.write(600, 610);
    assert_eq!(code(&e.run(&["upload", "flush"])), 3);
}

#[test]
fn server_delivery_false_and_on_demand_mode_are_enforced() {
    let s = FlakyServer::start(vec![]);
    let e = Env::new(&s.url(), "server_delivery = false\nrequire_opt_in = false");
    e.write(0, 10);
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("server_delivery"),
        "{}",
        text(&o)
    );
    let e = Env::new(&s.url(), "mode = \"on-demand\"\nrequire_opt_in = false");
    e.write(0, 10);
    let o = e.run(&["upload", "once"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("on-demand"),
        "{}",
        text(&o)
    );
    assert_eq!(s.seen().requests, 0);
    assert_eq!(code(&e.run(&["upload", "flush"])), 0);
    assert_exactly(&s, 0..10);
}

#[test]
fn unreachable_server_makes_flush_exit_1_and_a_bad_token_exit_2() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let e = Env::new(
        &format!("http://127.0.0.1:{port}/"),
        "require_opt_in = false\nmax_attempts = 2",
    );
    e.write(0, 10);
    let o = e.run(&["upload", "flush", "--timeout", "20s"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not everything was delivered"),
        "{}",
        text(&o)
    );
    let s = FlakyServer::start(vec![uploader::testing::Behavior::Status(403)]);
    let e = Env::new(&s.url(), "require_opt_in = false");
    e.write(0, 10);
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("403"),
        "{}",
        text(&o)
    );
}

/// A running `seglog upload run`.
struct Daemon(Child);

impl Daemon {
    fn start(e: &Env) -> Daemon {
        let mut child = e
            .cmd(&["upload", "run", "--no-startup-delay"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait for "daemon started" on stderr, then keep draining it.
        let mut r = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 && !line.contains("daemon started") {
            line.clear();
        }
        assert!(
            line.contains("daemon started"),
            "daemon did not start: {line}"
        );
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
        Daemon(child)
    }

    fn signal(&mut self, sig: i32) -> std::process::ExitStatus {
        let pid = i32::try_from(self.0.id()).unwrap();
        assert_eq!(
            std::process::Command::new("kill")
                .args([
                    "-s",
                    if sig == libc::SIGTERM { "TERM" } else { "INT" },
                    &pid.to_string()
                ])
                .status()
                .unwrap()
                .code(),
            Some(0)
        );
        let start = Instant::now();
        loop {
            if let Some(st) = self.0.try_wait().unwrap() {
                return st;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "daemon did not stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn flush_through_the_daemon_while_writers_keep_writing_acknowledges_everything_before_the_call() {
    let s = FlakyServer::start(vec![]);
    s.set_delay(Duration::from_millis(5));
    let e = Arc::new(Env::new(
        &s.url(),
        "require_opt_in = false\nmode = \"on-demand\"",
    ));
    e.write(0, 1000);
    let mut daemon = Daemon::start(&e);
    // Two writer threads keep appending, each its own numbering range.
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = (0..2).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let writers: Vec<_> = (0..2u64)
        .map(|w| {
            let (e, stop, count) = (e.clone(), stop.clone(), counts[w as usize].clone());
            std::thread::spawn(move || {
                let r = e.recorder();
                let base = 1_000_000 * (w + 1);
                while !stop.load(Ordering::Relaxed) {
                    let i = count.load(Ordering::Relaxed);
                    r.record(
                        &RecordBuilder::parse("org.test/e2e/line", 1)
                            .unwrap()
                            .payload(&payload(base + i)),
                    )
                    .unwrap();
                    count.store(i + 1, Ordering::Release);
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        })
        .collect();
    for round in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        let before: Vec<u64> = counts.iter().map(|c| c.load(Ordering::Acquire)).collect();
        let o = e.run(&["upload", "flush", "--timeout", "60s"]);
        assert_eq!(code(&o), 0, "round {round}: {}", text(&o));
        let (got, dup) = stored(&s);
        assert!(!dup);
        for i in 0..1000 {
            assert!(
                got.binary_search(&i).is_ok(),
                "record {i} missing after flush"
            );
        }
        for (w, &n) in before.iter().enumerate() {
            let base = 1_000_000 * (w as u64 + 1);
            for i in 0..n {
                assert!(got.binary_search(&(base + i)).is_ok(), "round {round}: writer {w} record {i} (of {n} written before the flush) missing");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let st = daemon.signal(libc::SIGTERM);
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(
        !e.dir.join("upload/control.sock").exists(),
        "socket removed on shutdown"
    );
    assert!(s.seen().errors.is_empty(), "{:?}", s.seen().errors);
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_resends_with_the_same_ids() {
    let s = FlakyServer::start(vec![]);
    // Each acknowledgement is held back a little, so kills often land between the server
    // storing a batch and the uploader hearing about it.
    s.set_delay(Duration::from_millis(15));
    let e = Env::new(&s.url(), "require_opt_in = false");
    let mut written = 0;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut killed = 0;
    for _ in 0..12 {
        e.write(written, written + 900);
        written += 900;
        let mut child = e
            .cmd(&["upload", "flush"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(20 + seed % 120));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        let st = child.wait().unwrap();
        assert!(st.success() || st.signal() == Some(libc::SIGKILL), "{st:?}");
    }
    assert!(
        killed >= 3,
        "only {killed} of 12 runs were killed mid-upload"
    );
    let o = e.run(&["upload", "flush", "--timeout", "120s"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_exactly(&s, 0..written);
    // No record is stored twice, so every resend used the id of the batch the server already
    // had (a resend under a new range would store its records again), and every such resend
    // carried the same records (FlakyServer compares them; `errors` is checked above).
    eprintln!(
        "{killed} of 12 runs killed; {} duplicate batches absorbed by dedupe",
        s.seen().duplicates
    );
}

#[test]
fn damaged_cursor_falls_back_and_says_so_without_failing() {
    let s = FlakyServer::start(vec![]);
    let e = Env::new(&s.url(), "require_opt_in = false");
    e.write(0, 700);
    assert_eq!(code(&e.run(&["upload", "flush"])), 0);
    e.write(700, 800);
    for name in ["cursor.a", "cursor.b"] {
        let p = e.dir.join("upload").join(name);
        let mut b = std::fs::read(&p).unwrap();
        b.truncate(50);
        std::fs::write(&p, b).unwrap();
        let o = e.run(&["upload", "status", "--json"]);
        assert_eq!(code(&o), 0, "{}", text(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(v["warnings"].to_string().contains("unusable"), "{v}");
    }
    // Both copies gone: the uploader starts from the oldest segment, says so, and the
    // collector's dedupe by batch id absorbs nothing here: records are resent under new
    // ranges, so they arrive twice, which is the documented cost of losing both copies.
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no usable cursor copy"),
        "{}",
        text(&o)
    );
    let (got, _) = stored(&s);
    assert!((0..800).all(|i| got.binary_search(&i).is_ok()));
}

#[test]
fn status_reports_backlog_and_deliveries() {
    let s = FlakyServer::start(vec![]);
    let e = Env::new(&s.url(), "require_opt_in = false");
    e.write(0, 300);
    let o = e.run(&["upload", "status", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["backlog"]["records"], 300);
    assert!(v["backlog"]["oldest_record"]["ago_s"].as_u64().unwrap() < 600);
    assert_eq!(v["uploader_pid"], serde_json::Value::Null);
    assert_eq!(code(&e.run(&["upload", "flush"])), 0);
    let v: serde_json::Value =
        serde_json::from_slice(&e.run(&["upload", "status", "--json"]).stdout).unwrap();
    assert_eq!(v["backlog"]["records"], 0);
    assert_eq!(v["delivered"]["records"], 300);
    assert!(v["last_success"]["ago_s"].as_u64().is_some());
    let o = e.run(&["upload", "status"]);
    let human = String::from_utf8_lossy(&o.stdout);
    assert!(human.contains("delivered:        300 records"), "{human}");
}

#[test]
fn daemon_uploads_into_the_real_collector() {
    let tmp = tempfile::tempdir().unwrap();
    let mut collector = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", tmp.path())
        .args([
            "collector",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--print-address",
            "--data-dir",
        ])
        .arg(tmp.path().join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = crate::support::upload_env::listening_url(&mut collector);
    let e = Env::new(
        &format!("{addr}/"),
        "require_opt_in = false\ninterval = \"1s\"",
    );
    e.write(0, 2500);
    let mut d = Daemon::start(&e);
    let records = |addr: &str| -> u64 {
        let body = ureq_get(&format!("{addr}/api/stats"));
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["records"].as_u64().unwrap_or(0)
    };
    let start = Instant::now();
    while records(&addr) < 2500 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "collector has {} records",
            records(&addr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(records(&addr), 2500);
    assert_eq!(d.signal(libc::SIGINT).code(), Some(0));
    let _ = collector.kill();
    let _ = collector.wait();
}

/// A plain HTTP GET on 127.0.0.1 (the root package has no HTTP client dependency).
fn ureq_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest
        .split_once('/')
        .map(|(h, p)| (h, format!("/{p}")))
        .unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    if resp
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // De-chunk.
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        return out;
    }
    body
}
