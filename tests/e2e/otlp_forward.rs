//! `[collector.forward]` end to end: the real uploader -> the collector (in process) -> the
//! independent OTLP receiver (`tests/otlp/receiver.py`), with the collector shut down and
//! restarted on the same data directory while the receiver is refusing (503): every record
//! the device wrote reaches the receiver (at least once), from the forwarder's own cursor.
use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::otlp::{accepted_records, python, Receiver};
use crate::support::upload_env::{code, text, Env};

/// A collector on `data` forwarding to `forward_url` with `Content-Encoding: encoding`.
fn collector(
    data: &std::path::Path,
    forward_url: &str,
    encoding: Option<&'static str>,
) -> collector::RunningServer {
    let mut c = collector::ServerConfig::new(data.to_owned());
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_grace = Duration::from_secs(2);
    c.forward = Some(collector::forward::ForwardConfig {
        url: forward_url.to_owned(),
        headers: vec![("X-Api-Key".into(), "fwd".into())],
        encoding,
        timeout: Duration::from_secs(10),
        backoff_cap: Duration::from_millis(200),
    });
    collector::Server::start(c).unwrap()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t = Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_collector_forwards_everything_it_stores_across_a_restart() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Two batches go through, then 503 until released.
    let rx = Receiver::start(&py, &tmp.path().join("requests.jsonl"), "ok,ok");
    rx.hold();
    let data = tmp.path().join("collector");
    let c1 = collector(&data, &rx.url(), Some("zstd"));
    let e = Env::new(&c1.url(), "");
    e.write(0, 3000);
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    // Mid-forward: two batches forwarded, the third refused again and again.
    wait_for("refusals", || rx.progress().0 >= 4);
    c1.shutdown().unwrap();
    assert_eq!(
        rx.progress().1,
        600,
        "two batches of 300 before the restart"
    );
    let cursor = std::fs::read_to_string(data.join("forward/cursor")).unwrap();
    let c2 = collector(&data, &rx.url(), Some("gzip"));
    // The new forwarder resumes at its cursor: the refused batch again, still refused.
    let seen = rx.progress().0;
    wait_for("the restarted forwarder", || rx.progress().0 > seen);
    rx.release();
    wait_for("every record", || rx.progress().1 >= 3000);
    let reqs = rx.requests();
    let mut got: HashMap<String, u32> = HashMap::new();
    for (_, _, r) in accepted_records(&reqs) {
        if let Some(id) = r["attributes"]["seglog.record_id"].as_str() {
            *got.entry(id.to_owned()).or_default() += 1;
        }
    }
    assert_eq!(got.len(), 3000, "every record, at least once");
    let refused: Vec<_> = reqs.iter().filter(|r| r["answer"] == "503").collect();
    assert!(refused.len() >= 3, "{}", refused.len());
    assert!(
        refused
            .iter()
            .all(|r| r["batch_id"] == refused[0]["batch_id"]),
        "the same batch, before and after the restart (cursor {cursor:?})"
    );
    // The first collector sends zstd, the restarted one gzip: the receiver inflates both.
    for (i, r) in reqs.iter().enumerate() {
        assert!(r.get("error").is_none(), "{r}");
        assert_eq!(r["x_api_key"], "fwd");
        let want = if i < seen { "zstd" } else { "gzip" };
        assert_eq!(r["content_encoding"], want, "request {i}");
        assert_eq!(r["batch_id"].as_str().map(str::len), Some(64));
    }
    // The payloads are the device's (Env::write: "line N over a cut network").
    let bodies: std::collections::BTreeSet<String> = accepted_records(&reqs)
        .iter()
        .filter_map(|(_, _, r)| r["body"].as_str().map(str::to_owned))
        .collect();
    for i in [0u64, 1499, 2999] {
        assert!(
            bodies.contains(&format!("line {i:09} over a cut network")),
            "{i}"
        );
    }
    // The forwarder's counters on /metrics (the restarted collector's, since its start).
    let (status, metrics) = crate::support::upload_env::get(&format!("{}/metrics", c2.url()));
    assert_eq!(status, 200, "{metrics}");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
    };
    assert!(
        counter("seglog_collector_forward_retries_total ") >= 1,
        "503s after the restart"
    );
    assert!(counter("seglog_collector_forward_batches_total ") >= 1);
    assert!(counter("seglog_collector_forward_records_total ") >= 300);
    assert_eq!(counter("seglog_collector_forward_dead_lettered_total "), 0);
    let dup = got.values().filter(|&&n| n > 1).count();
    eprintln!("forwarded 3000 records; {dup} more than once (at least once)");
    c2.shutdown().unwrap();
}

/// `seglog demo --otlp URL`: the whole pipeline, then the collector forwards to the
/// independent receiver; the demo waits for it and reports the count.
#[test]
fn the_demo_forwards_to_an_otlp_endpoint() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&py, &tmp.path().join("requests.jsonl"), "");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args([
            "demo",
            "--exit",
            "--records",
            "300",
            "--threads",
            "2",
            "--netstat",
            "1s",
        ])
        .arg("--otlp")
        .arg(rx.url())
        .arg("--dir")
        .arg(tmp.path().join("demo"))
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("records stored"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("forwarded over OTLP"))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains(&format!(" {stored} records")), "{line}");
    let got = accepted_records(&rx.requests())
        .iter()
        .filter(|(_, _, r)| r["event_name"] == "")
        .count();
    assert_eq!(got, stored, "the receiver got what the collector stored");
}
