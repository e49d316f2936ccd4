//! The gap report of a dead-lettered batch reaches the real `seglog collector serve` through
//! a fault-injecting proxy on 127.0.0.1: the batch is refused for good (4xx), and the report
//! of its range then meets a refusal, a connection reset and a 503 before it gets through.
//! The collector ends up with the `dead_lettered` gap and an unbroken position chain.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use uploader::config::UploadConfig;
use uploader::engine::{PassOptions, PassOutcome, Uploader, Waiter};
use uploader::policy::Trigger;

use crate::support::proxy;
use proxy::{Fault, Proxy};

/// Switches the proxy's fault at each backoff wait, and never sleeps.
struct Script<'a> {
    proxy: &'a Proxy,
    faults: Vec<Fault>,
    waits: usize,
}

impl Waiter for Script<'_> {
    fn wait(&mut self, _: Duration) -> bool {
        if let Some(f) = self.faults.get(self.waits) {
            self.proxy.set(*f);
        }
        self.waits += 1;
        false
    }
    fn stop_requested(&mut self) -> bool {
        false
    }
}

fn get(addr: &str, path: &str) -> serde_json::Value {
    let host = addr.strip_prefix("http://").unwrap_or(addr);
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            rest = &after[n + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    serde_json::from_str(&body).unwrap()
}

#[test]
fn a_dead_lettered_batch_reaches_the_real_collector_as_a_gap_despite_5xx_and_resets() {
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
    let target = addr.strip_prefix("http://").unwrap().parse().unwrap();
    let proxy = Proxy::start(target);
    proxy.set(Fault::Refuse(422));

    let dir = tmp.path().join("log");
    let mut rc = Config::for_dir(&dir);
    rc.log.segment_size = 64 << 10;
    rc.log.max_record_size = 16 << 10;
    rc.log.max_bytes = None;
    rc.log.max_age = None;
    rc.recorder = RecorderConfig::unlimited();
    rc.recorder.static_machine_id_file = tmp.path().join("static-id");
    rc.recorder.machine_id_secret_file = tmp.path().join("secret");
    let r = Recorder::open(&rc).unwrap();
    for i in 0..1000u64 {
        let b = RecordBuilder::parse("org.test/e2e/line", 2).unwrap();
        r.record(&b.payload(format!("line {i}").as_bytes()))
            .unwrap();
    }
    drop(r);

    let mut cfg = UploadConfig::for_dir(&dir);
    cfg.url = Some(format!("{}/", proxy.url()));
    cfg.batch_max_records = 400;
    cfg.dead_letter_after = 3;
    cfg.timeout = Duration::from_secs(5);
    let mut u = Uploader::open(cfg).unwrap().unwrap();
    let mut w = Script {
        proxy: &proxy,
        // Waits 1-2: the batch's first two refusals; then the report is refused once, reset,
        // answered 503, and let through.
        faults: vec![
            Fault::Refuse(422),
            Fault::Refuse(422),
            Fault::Reset,
            Fault::Status(503),
            Fault::Pass,
        ],
        waits: 0,
    };
    let opts = PassOptions {
        trigger: Trigger::Flush,
        max_attempts: None,
        target: None,
        deadline: None,
    };
    let (out, p) = u.pass(&opts, &mut w, &mut |_| {}).unwrap();
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.dead_lettered, 1);

    let gaps = get(&addr, "/api/gaps");
    let gaps = gaps["gaps"].as_array().unwrap();
    let dl: Vec<_> = gaps
        .iter()
        .filter(|g| g["reason"] == "dead_lettered")
        .collect();
    assert_eq!(dl.len(), 1, "the collector knows of the loss: {gaps:?}");
    assert_eq!(dl[0]["records"], 400);
    let stats = get(&addr, "/api/stats");
    assert_eq!(stats["records"], 600, "{stats}");
    let _ = collector.kill();
    let _ = collector.wait();
}
