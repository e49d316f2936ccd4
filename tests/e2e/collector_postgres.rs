//! Stateless collectors over one PostgreSQL database (issue 16). Three `seglog collector
//! serve` processes share a database that the test starts itself; devices upload through the
//! fault proxy (standing in for a load balancer, moved to another collector after every
//! batch) while it cuts answers after the batch was stored and collectors are SIGKILLed in
//! the middle of uploads and started again. Afterwards every collector answers every query
//! the same: each record stored exactly once, none lost. And the same batch sent at the same
//! moment to two collectors is stored once.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use collector::fixtures;
use collector::pg_server::PgServer;
use serde_json::Value;

use crate::support::proxy::{Fault, Proxy};

/// A `seglog collector serve` child over the PostgreSQL database named in `config`.
struct Collector {
    child: Child,
    addr: SocketAddr,
}

impl Collector {
    fn start(config: &Path, home: &Path) -> Collector {
        let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .args([
                "collector",
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--print-address",
            ])
            .arg("--data-dir")
            .arg(home.join("unused-data-dir"))
            .arg("--config")
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning seglog");
        let url = crate::support::upload_env::listening_url(&mut child);
        let addr = url
            .strip_prefix("http://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("not an http://address URL: {url:?}"));
        Collector { child, addr }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One HTTP/1.1 request; `Err` when the connection fails or the answer is cut.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(|e| e.to_string())?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    s.write_all(body).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").ok_or("cut answer")?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Err("chunked answer".into());
    } else {
        body.to_owned()
    };
    let len: Option<usize> = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .and_then(|v| v.trim().parse().ok())
    });
    if len.is_some_and(|n| n != body.len()) {
        return Err("cut body".into());
    }
    Ok((status, body))
}

struct Upload {
    path: String,
    id: String,
    body: Vec<u8>,
}

fn upload(addr: SocketAddr, u: &Upload) -> Result<(u16, Value), String> {
    let headers = [
        ("Content-Type", uploader::protocol::CONTENT_TYPE),
        ("Content-Encoding", "zstd"),
        (uploader::protocol::HEADER_PROTOCOL, "1"),
        (uploader::protocol::HEADER_BATCH_ID, u.id.as_str()),
    ];
    let (s, text) = request(addr, "POST", &u.path, &headers, &u.body)?;
    let v = serde_json::from_str(&text).map_err(|e| format!("{s}: {e}: {text}"))?;
    Ok((s, v))
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let (s, text) = request(addr, "GET", path, &[], b"").unwrap();
    assert_eq!(s, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

/// Every record the collector at `addr` returns, as (log id, segment, offset).
fn all_positions(addr: SocketAddr) -> Vec<(String, u64, u64)> {
    let mut out = Vec::new();
    let mut q = "limit=5000&include_payload=false".to_owned();
    loop {
        let v = get(addr, &format!("/api/records?{q}"));
        for r in v["records"].as_array().unwrap() {
            out.push((
                r["log_id"].as_str().unwrap().to_owned(),
                r["position"]["segment"].as_u64().unwrap(),
                r["position"]["offset"].as_u64().unwrap(),
            ));
        }
        match v["next_cursor"].as_i64() {
            Some(c) => q = format!("limit=5000&include_payload=false&cursor={c}"),
            None => return out,
        }
    }
}

fn setup() -> Option<(PgServer, tempfile::TempDir, PathBuf)> {
    if collector::pg_server::bin_dir().is_none() {
        eprintln!(
            "SKIPPED: collectors over PostgreSQL: PostgreSQL is not installed (no \
             /usr/lib/postgresql/*/bin/initdb; apt-get install postgresql)"
        );
        return None;
    }
    let pg = PgServer::start(&[]).unwrap();
    let url = pg.create_database().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("collector.toml");
    std::fs::write(&config, format!("[collector]\ndatabase = \"{url}\"\n")).unwrap();
    Some((pg, dir, config))
}

#[test]
fn three_collectors_over_one_postgres_lose_and_duplicate_nothing_through_faults_and_sigkills() {
    let Some((_pg, dir, config)) = setup() else {
        return;
    };
    let mut collectors: Vec<Collector> = (0..3)
        .map(|_| Collector::start(&config, dir.path()))
        .collect();
    let proxy = Proxy::start(collectors[0].addr);

    // 6 devices x 30 batches x 20 records, interleaved as a fleet sends them.
    let (devices, batches, records) = (6u64, 30u64, 20u64);
    let mut uploads = Vec::new();
    let mut expected = Vec::new();
    for i in 0..batches {
        for d in 0..devices {
            let p = fixtures::private_id(d as u8 + 1);
            let b = fixtures::batch(&p, i * records, records, "7");
            for r in &b.records {
                expected.push((
                    hex::encode(fixtures::public_id(&p)),
                    r.position.segment,
                    r.position.offset,
                ));
            }
            uploads.push(Upload {
                path: fixtures::path(&p),
                id: b.id().to_hex(),
                body: fixtures::body(&b),
            });
        }
    }
    let (mut kills, mut cut_answers, mut retries) = (0, 0, 0);
    for (n, u) in uploads.iter().enumerate() {
        let target = n % 3;
        proxy.retarget(collectors[target].addr);
        if n % 7 == 3 {
            // Stored, but the device hears nothing: it must send again, and the copy is
            // acknowledged as a duplicate by whichever collector gets it.
            proxy.set(Fault::TruncateResponse(10));
            assert!(upload(proxy.addr, u).is_err(), "the proxy cut nothing");
            proxy.set(Fault::Pass);
            cut_answers += 1;
            proxy.retarget(collectors[(target + 1) % 3].addr);
        }
        if n % 11 == 5 {
            // SIGKILL the collector while this upload is on its way to it.
            let addr = proxy.addr;
            let body = Upload {
                path: u.path.clone(),
                id: u.id.clone(),
                body: u.body.clone(),
            };
            let inflight = std::thread::spawn(move || upload(addr, &body));
            std::thread::sleep(Duration::from_millis((n % 5) as u64));
            collectors[target].kill9();
            let _ = inflight.join();
            collectors[target] = Collector::start(&config, dir.path());
            kills += 1;
        }
        let mut attempt = 0;
        loop {
            match upload(proxy.addr, u) {
                Ok((200, _)) => break,
                other => {
                    attempt += 1;
                    retries += 1;
                    assert!(attempt < 100, "upload {n} never acknowledged: {other:?}");
                    proxy.retarget(collectors[(target + attempt) % 3].addr);
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }
    eprintln!(
        "{} uploads, {cut_answers} answers cut, {kills} collectors SIGKILLed, {retries} retries",
        uploads.len()
    );
    assert!(kills >= 10 && cut_answers >= 20);

    expected.sort();
    for c in &collectors {
        let mut got = all_positions(c.addr);
        let n = got.len();
        got.sort();
        got.dedup();
        assert_eq!(got.len(), n, "{}: duplicated records", c.addr);
        assert_eq!(got, expected, "{}: lost or foreign records", c.addr);
        let st = get(c.addr, "/api/stats");
        assert_eq!(st["records"], devices * batches * records, "{st}");
        assert_eq!(st["batches"]["received"], devices * batches, "{st}");
        assert_eq!(st["logs"], devices, "{st}");
        assert_eq!(st["records_duplicate"], 0, "{st}");
    }
}

#[test]
fn the_same_batch_sent_to_two_collectors_at_once_is_stored_once() {
    let Some((_pg, dir, config)) = setup() else {
        return;
    };
    let (a, b) = (
        Collector::start(&config, dir.path()),
        Collector::start(&config, dir.path()),
    );
    let (batches, records) = (40u64, 50u64);
    for i in 0..batches {
        let p = fixtures::private_id(9);
        let batch = fixtures::batch(&p, i * records, records, "1");
        let u = std::sync::Arc::new(Upload {
            path: fixtures::path(&p),
            id: batch.id().to_hex(),
            body: fixtures::body(&batch),
        });
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let sends: Vec<_> = [a.addr, b.addr]
            .into_iter()
            .map(|addr| {
                let (u, barrier) = (u.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    upload(addr, &u).unwrap()
                })
            })
            .collect();
        let answers: Vec<(u16, Value)> = sends.into_iter().map(|t| t.join().unwrap()).collect();
        assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
        let stored = answers
            .iter()
            .filter(|(_, v)| v["duplicate"] == false)
            .count();
        assert_eq!(stored, 1, "batch {i}: {answers:?}");
    }
    for c in [&a, &b] {
        let st = get(c.addr, "/api/stats");
        assert_eq!(st["records"], batches * records, "{st}");
        assert_eq!(st["batches"]["received"], batches, "{st}");
        assert_eq!(st["batches"]["duplicates"], batches, "{st}");
    }
}
