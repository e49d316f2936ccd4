//! End-to-end tests of `seglog collector serve`, the real binary, on 127.0.0.1 and temporary
//! directories: uploads built with `uploader::protocol::encode_batch` and queried back, a
//! restart between two uploads (dedupe survives it), a duplicate resent by hand stored once,
//! every API validation error, a zip bomb and a truncated body refused with bounded memory,
//! graceful shutdown on SIGTERM and SIGINT, and the HTML view in headless Chromium.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use collector::fixtures;
use serde_json::Value;
use uploader::protocol;

/// A `seglog collector serve` child process.
struct Collector {
    child: Child,
    addr: SocketAddr,
}

impl Collector {
    fn start(data: &Path, config: Option<&Path>) -> Collector {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seglog"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", data)
            .args([
                "collector",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--print-address",
                "--data-dir",
            ])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let mut child = cmd.spawn().expect("spawning seglog");
        let url = crate::support::upload_env::listening_url(&mut child);
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not an http://address URL: {url:?}"));
        Collector { child, addr }
    }

    /// Sends `signal` and waits; returns the exit code and stderr.
    fn stop(mut self, signal: &str) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-s", signal, &pid])
            .status()
            .unwrap()
            .success());
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        (status.code(), err)
    }

    /// Peak resident memory of the process so far (VmHWM), in bytes.
    fn peak_rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        kb * 1024
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        parse_response(&out)
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (s, body) = self.request("GET", path, &[], b"");
        (
            s,
            serde_json::from_str(&body).unwrap_or_else(|_| panic!("{s}: {body}")),
        )
    }

    fn upload(&self, private: &[u8; 32], b: &protocol::Batch) -> (u16, Value) {
        let body = protocol::encode_batch(b, 3).unwrap();
        let id = b.id().to_hex();
        let (s, text) = self.request(
            "POST",
            &fixtures::path(private),
            &upload_headers(&id),
            &body,
        );
        (
            s,
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{s}: {text}")),
        )
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn upload_headers(batch_id: &str) -> Vec<(&'static str, &str)> {
    vec![
        ("Content-Type", protocol::CONTENT_TYPE),
        ("Content-Encoding", "zstd"),
        (protocol::HEADER_PROTOCOL, "1"),
        (protocol::HEADER_BATCH_ID, batch_id),
    ]
}

fn parse_response(raw: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn collector_binary_stores_dedupes_across_a_restart_and_stops_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let p = fixtures::private_id(1);
    let (first, second) = (
        fixtures::batch(&p, 0, 50, "7"),
        fixtures::batch(&p, 50, 50, "7"),
    );

    let c = Collector::start(dir.path(), None);
    let (s, ack) = c.upload(&p, &first);
    assert_eq!((s, &ack["duplicate"]), (200, &Value::Bool(false)), "{ack}");
    let (code, err) = c.stop("TERM");
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("stopped"), "{err}");

    let c = Collector::start(dir.path(), None);
    // The first batch again, as an uploader that crashed before saving its cursor would.
    let (s, ack) = c.upload(&p, &first);
    assert_eq!((s, &ack["duplicate"]), (200, &Value::Bool(true)), "{ack}");
    assert_eq!(ack["batch_id"], first.id().to_hex());
    assert_eq!(c.upload(&p, &second).1["duplicate"], false);
    // A duplicate resent by hand, twice.
    for _ in 0..2 {
        assert_eq!(c.upload(&p, &second).1["duplicate"], true);
    }

    let (s, v) = c.get("/api/records");
    assert_eq!(s, 200);
    let recs = v["records"].as_array().unwrap();
    assert_eq!(recs.len(), 100);
    let mut ids: Vec<&str> = recs
        .iter()
        .map(|r| r["record_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 100, "every record stored once");
    assert_eq!(
        recs[0]["payload"],
        String::from_utf8(fixtures::payload(99)).unwrap()
    );
    let (_, st) = c.get("/api/stats");
    assert_eq!(st["records"], 100);
    assert_eq!(st["batches"]["received"], 2);
    assert_eq!(st["batches"]["duplicates"], 3);
    let (code, err) = c.stop("INT");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn collector_binary_answers_every_bad_api_parameter_with_400_and_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(dir.path(), None);
    let p = fixtures::private_id(2);
    assert_eq!(c.upload(&p, &fixtures::batch(&p, 0, 5, "1")).0, 200);
    let long = |n| "x".repeat(n);
    let cases = [
        (format!("classification={}", long(141)), "classification"),
        ("severity=two".to_owned(), "severity"),
        ("machine_id=abc".to_owned(), "machine_id"),
        (format!("build={}", long(257)), "build"),
        ("created_in_days=-2".to_owned(), "created_in_days"),
        ("created_in_sec=soon".to_owned(), "created_in_sec"),
        ("limit=10001".to_owned(), "limit"),
        ("since=never".to_owned(), "since"),
        ("until=never".to_owned(), "until"),
        ("log_id=zz".to_owned(), "log_id"),
        ("event_id=zz".to_owned(), "event_id"),
        ("record_id=zz".to_owned(), "record_id"),
        ("include_payload=sometimes".to_owned(), "include_payload"),
    ];
    for (q, param) in cases {
        let (s, v) = c.get(&format!("/api/records?{q}"));
        assert_eq!(s, 400, "{q}: {v}");
        assert_eq!(v["parameter"], param, "{q}: {v}");
        assert!(v["error"].as_str().unwrap().contains(param), "{q}: {v}");
    }
    // The telemetrics example query is valid (and matches nothing here).
    let (s, v) = c.get("/api/records?classification=org.clearlinux%2Fkernel%2Fwarning&severity=2&build=2980&created_in_sec=5&limit=100");
    assert_eq!(
        (s, v["records"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{v}"
    );
}

#[test]
fn collector_binary_refuses_a_zip_bomb_and_a_truncated_body_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("seglog.toml");
    std::fs::write(&config, "[collector]\nmax_decompressed_bytes = \"16MiB\"\n").unwrap();
    let c = Collector::start(&dir.path().join("data"), Some(&config));
    let p = fixtures::private_id(3);
    assert_eq!(c.upload(&p, &fixtures::batch(&p, 0, 200, "1")).0, 200);
    let before = c.peak_rss();

    // 2 GiB of zeros in a ~64 KiB zstd frame.
    let bomb = fixtures::zip_bomb(2 << 30);
    assert!(bomb.len() < 1 << 20);
    let (s, body) = c.request(
        "POST",
        &fixtures::path(&p),
        &upload_headers(&"00".repeat(32)),
        &bomb,
    );
    assert_eq!(s, 413, "{body}");
    assert!(body.contains("decompressed"), "{body}");

    // A body cut off mid-stream: headers promise more bytes than arrive. That is a transport
    // failure (408, resend), not a verdict on the batch (PROTOCOL.md section 5).
    let good = protocol::encode_batch(&fixtures::batch(&p, 200, 50, "1"), 3).unwrap();
    let mut sock = TcpStream::connect(c.addr).unwrap();
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Encoding: zstd\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        fixtures::path(&p),
        protocol::CONTENT_TYPE,
        good.len()
    );
    sock.write_all(head.as_bytes()).unwrap();
    sock.write_all(&good[..good.len() / 3]).unwrap();
    sock.shutdown(std::net::Shutdown::Write).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let _ = sock.read_to_end(&mut out);
    assert_eq!(
        parse_response(&out).0,
        408,
        "{}",
        String::from_utf8_lossy(&out)
    );
    // A complete request whose zstd frame is cut short.
    let (s, body) = c.request(
        "POST",
        &fixtures::path(&p),
        &upload_headers(&"00".repeat(32)),
        &good[..good.len() - 5],
    );
    assert_eq!(s, 400, "{body}");

    let growth = c.peak_rss().saturating_sub(before);
    eprintln!(
        "peak RSS before {} MiB, growth while refusing a 2 GiB bomb {} MiB",
        before >> 20,
        growth >> 20
    );
    assert!(
        growth < 48 << 20,
        "peak RSS grew by {} MiB while refusing a 2 GiB bomb",
        growth >> 20
    );
    let (_, st) = c.get("/api/stats");
    assert_eq!(
        st["records"], 200,
        "nothing from the refused bodies was stored"
    );
    assert_eq!(
        st["batches"]["rejected_by_reason"]["decompressed_too_large"],
        1
    );
    let (code, err) = c.stop("TERM");
    assert_eq!(code, Some(0), "{err}");
}

#[test]
fn collector_binary_web_view_renders_rows_in_headless_chromium() {
    let chromium = Path::new("/usr/bin/chromium");
    if !chromium.exists() {
        eprintln!("SKIPPED: /usr/bin/chromium not found; install the chromium package to run the browser test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let c = Collector::start(&dir.path().join("data"), None);
    let p = fixtures::private_id(4);
    assert_eq!(c.upload(&p, &fixtures::batch(&p, 0, 30, "1")).0, 200);
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join("profile").display()
        ))
        .arg("--dump-dom")
        .arg(format!("http://{}/ui/records?limit=25", c.addr))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8(out.stdout).unwrap();
    assert_eq!(dom.matches("<tr class=\"record\">").count(), 25, "{dom}");
    assert!(dom.contains("id=\"next\""), "a second page is linked");
}
