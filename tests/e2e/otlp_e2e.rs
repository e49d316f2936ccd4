//! `[upload] protocol = "otlp"` against a receiver that is not ours: the official OTLP
//! classes from PyPI (`tests/otlp/receiver.py`) decode what the real `seglog upload` binary
//! sends, and every mapped field (OTLP.md) is checked against what the journal reads from the
//! log: thousands of records in three contexts, UTF-8 and binary payloads, event ids, all
//! severities, a corrupt range (a gap), and the partial-success, 429 and 400 paths.
use std::collections::HashMap;
use std::path::Path;

use recorder::config::{Config, RecorderConfig};
use recorder::record::EventId;
use recorder::RecordBuilder;
use serde_json::Value;

use crate::support::otlp::{accepted_records, python, Receiver};
use crate::support::upload_env::{code, text, Env};

const N: u64 = 3000;

/// Writes records `from..to` spread over three writers (three contexts: distinct machine ids).
fn write(e: &Env, from: u64, to: u64) {
    let recorders: Vec<_> = (0..3)
        .map(|w| {
            let mut c = Config::for_dir(&e.dir);
            c.log.segment_size = 64 << 10;
            c.log.max_record_size = 16 << 10;
            c.log.max_bytes = None;
            c.log.max_age = None;
            c.recorder = RecorderConfig::unlimited();
            c.recorder.static_machine_id_file = e.home.join("no-static-id");
            c.recorder.machine_id_secret_file = e.home.join(format!("secret-{w}"));
            std::fs::write(
                e.home.join(format!("secret-{w}")),
                format!("writer {w} secret"),
            )
            .unwrap();
            recorder::Recorder::open(&c).unwrap()
        })
        .collect();
    for i in from..to {
        let payload = payload(i);
        let class = format!("org.test/otlp/kind{}", i % 3);
        let mut b = RecordBuilder::parse(&class, (i % 4 + 1) as i64)
            .unwrap()
            .payload(&payload);
        if i.is_multiple_of(5) {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i + 1).to_le_bytes());
            b = b.event_id(EventId::from_bytes(id));
        }
        recorders[(i % 3) as usize].record(&b).unwrap();
    }
}

/// Even records are UTF-8 text, odd ones binary (not UTF-8).
fn payload(i: u64) -> Vec<u8> {
    if i.is_multiple_of(2) {
        format!("rec {i:06} ünïcødé ✓").into_bytes()
    } else {
        let mut p = vec![0xff, 0xfe];
        p.extend_from_slice(&i.to_le_bytes());
        p
    }
}

/// Flips a byte inside record `i`'s payload in its segment file: its frame fails its check.
fn corrupt(dir: &Path, i: u64) {
    let needle = format!("rec {i:06} ");
    for e in std::fs::read_dir(dir.join("segments")).unwrap() {
        let p = e.unwrap().path();
        let mut b = std::fs::read(&p).unwrap();
        if let Some(at) = b.windows(needle.len()).position(|w| w == needle.as_bytes()) {
            b[at] ^= 0x20;
            std::fs::write(&p, b).unwrap();
            return;
        }
    }
    panic!("record {i} not found in {}", dir.display());
}

/// The journal's view of every readable record, by record id.
fn journal(e: &Env) -> HashMap<String, Value> {
    let o = e.run(&["journal", "export", "--no-progress"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["record_id"].as_str().unwrap().to_owned(), v)
        })
        .collect()
}

fn otel_arch(a: &str) -> &str {
    match a {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

#[test]
fn every_mapped_field_reaches_an_independent_otlp_receiver() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&py, &tmp.path().join("requests.jsonl"), "");
    let e = Env::new(
        &rx.url(),
        "protocol = \"otlp\"\ntoken = \"tok\"\nheaders = { \"X-Api-Key\" = \"k123\" }",
    );
    write(&e, 0, N);
    corrupt(&e.dir, 1500);
    let want = journal(&e);
    assert_eq!(want.len() as u64, N - 1, "the corrupt record is unreadable");
    let o = e.run(&["upload", "flush", "--json"]);
    assert_eq!(code(&o), 0, "{}", text(&o));

    let reqs = rx.requests();
    assert!(reqs.len() >= 10, "{} requests", reqs.len());
    let public = e.status()["public_log_id"].as_str().map(str::to_owned);
    for r in &reqs {
        assert!(r.get("error").is_none(), "receiver could not decode: {r}");
        assert_eq!(r["content_type"], "application/x-protobuf");
        assert_eq!(r["content_encoding"], "zstd");
        assert_eq!(r["x_api_key"], "k123");
        assert_eq!(r["authorization"], "Bearer tok");
        assert_eq!(r["path"], "/v1/logs");
        let id = r["batch_id"].as_str().unwrap();
        assert_eq!(id.len(), 64);
        for rl in r["resource_logs"].as_array().unwrap() {
            for sl in rl["scopes"].as_array().unwrap() {
                assert_eq!(
                    sl["attributes"]["seglog.batch_id"], id,
                    "header = scope attribute"
                );
                assert_eq!(sl["name"], "seglog");
            }
        }
    }
    let got = accepted_records(&reqs);
    let mut seen = HashMap::new();
    let (mut gaps, mut contexts) = (Vec::new(), std::collections::BTreeSet::new());
    let private = std::fs::read_to_string(e.dir.join("log-id")).ok();
    for (res, _scope, rec) in &got {
        let log_id = res["seglog.log_id"].as_str().unwrap();
        assert_eq!(log_id.len(), 64);
        if let Some(p) = &public {
            assert_eq!(log_id, p, "the public id");
        }
        if let Some(p) = &private {
            assert_ne!(log_id, p.trim(), "never the private id");
        }
        assert_eq!(res["service.name"], "seglog");
        if rec["event_name"] == "seglog.gap" {
            gaps.push(rec.clone());
            continue;
        }
        if rec["event_name"] == "seglog.counters" {
            continue;
        }
        let a = &rec["attributes"];
        let rid = a["seglog.record_id"].as_str().unwrap().to_owned();
        let j = want
            .get(&rid)
            .unwrap_or_else(|| panic!("record {rid} is not in the log: {rec}"));
        assert!(seen.insert(rid.clone(), ()).is_none(), "{rid} twice");
        let wall = j["wall_ms"].as_i64().unwrap();
        assert_eq!(
            rec["time_unix_nano"].as_u64().unwrap(),
            wall as u64 * 1_000_000
        );
        assert_eq!(rec["observed_time_unix_nano"], rec["time_unix_nano"]);
        let sev = j["severity"].as_u64().unwrap();
        assert_eq!(
            rec["severity_number"].as_u64().unwrap(),
            [9, 13, 17, 21][sev as usize - 1]
        );
        assert_eq!(
            rec["severity_text"],
            ["low", "medium", "high", "critical"][sev as usize - 1]
        );
        assert_eq!(a["seglog.classification"], j["classification"]);
        assert_eq!(a["seglog.boot_ms"], j["boot_ms"]);
        match j["event_id"].as_str() {
            Some(ev) => assert_eq!(a["seglog.event_id"], ev),
            None => assert!(a.get("seglog.event_id").is_none()),
        }
        match (j.get("payload"), j.get("payload_hex")) {
            (Some(t), _) => assert_eq!(&rec["body"], t),
            (None, Some(h)) => {
                assert_eq!(
                    rec["body"].as_str().unwrap(),
                    format!("hex:{}", h.as_str().unwrap())
                )
            }
            _ => panic!("{j}"),
        }
        assert_eq!(rec["trace_id"], "", "the event id is not a trace id");
        assert_eq!(rec["flags"], 0);
        // The resource is the record's writer's context.
        let ctx = &j["context"];
        assert_eq!(res["host.id"], j["machine_id"]);
        assert_eq!(res["seglog.boot_id"], j["boot_id"]);
        assert_eq!(res["os.type"], "linux");
        assert_eq!(res["os.name"], ctx["system_name"]);
        assert_eq!(res["os.version"], ctx["build"]);
        assert_eq!(res["host.type"], ctx["host_type"]);
        assert_eq!(res["host.cpu.model.name"], ctx["cpu_model"]);
        assert_eq!(res["seglog.kernel_version"], ctx["kernel_version"]);
        assert_eq!(res["host.arch"], otel_arch(ctx["arch"].as_str().unwrap()));
        contexts.insert(res["host.id"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.len(), want.len(), "every readable record arrived once");
    assert_eq!(contexts.len(), 3, "three writers, three resources");
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let g = &gaps[0]["attributes"];
    assert_eq!(g["event.name"], "seglog.gap");
    assert_eq!(g["seglog.gap.reason"], "corrupt_frame");
    assert!(g["seglog.gap.bytes"].as_u64().unwrap() > 0, "{g}");
    assert_eq!(gaps[0]["severity_number"], 13);
    assert_eq!(e.status()["delivered"]["records"], N - 1);
}

#[test]
fn partial_success_429_and_400_follow_the_otlp_rules() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    // Batch 1: 429 (Retry-After 1 s), then partial success; batch 2: 400; then the gap
    // report of batch 2, acknowledged with a warning (partial success, 0 rejected); the rest ok.
    let rx = Receiver::start(
        &py,
        &tmp.path().join("requests.jsonl"),
        "429:1,partial:7:seven too old,400:bad timestamp,partial:0:just a warning",
    );
    let e = Env::new(&rx.url(), "protocol = \"otlp\"\ncompression = \"none\"");
    // Retry-After is capped at backoff_cap: lift the cap so the 1 s shows.
    let cfg = std::fs::read_to_string(&e.config).unwrap();
    std::fs::write(
        &e.config,
        cfg.replace("backoff_cap = \"100ms\"", "backoff_cap = \"5s\""),
    )
    .unwrap();
    write(&e, 0, 900);
    let started = std::time::Instant::now();
    let o = e.run(&["upload", "flush", "--json"]);
    let out = text(&o);
    assert_eq!(code(&o), 0, "{out}");
    let reqs = rx.requests();
    let answers: Vec<&str> = reqs.iter().map(|r| r["answer"].as_str().unwrap()).collect();
    assert_eq!(
        &answers[..3],
        ["429:1", "partial:7:seven too old", "400:bad timestamp"]
    );
    assert!(
        reqs.iter().all(|r| r["content_encoding"].is_null()),
        "compression = none"
    );
    assert!(
        out.contains("the OTLP receiver warns: just a warning"),
        "{out}"
    );
    // 429: the same batch again, after Retry-After.
    assert_eq!(reqs[0]["batch_id"], reqs[1]["batch_id"]);
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "Retry-After honoured"
    );
    // 400: permanent, dead-lettered at once (never resent); its range goes out as a gap
    // report under the same batch id.
    let refused = reqs[2]["batch_id"].as_str().unwrap();
    let again: Vec<_> = reqs[3..]
        .iter()
        .filter(|r| r["batch_id"] == refused)
        .collect();
    assert_eq!(again.len(), 1, "only the gap report follows the 400");
    let report = accepted_records(&again[..].iter().map(|v| (*v).clone()).collect::<Vec<_>>());
    let gap = report
        .iter()
        .find(|(_, _, r)| r["event_name"] == "seglog.gap")
        .expect("a gap record");
    assert_eq!(gap.2["attributes"]["seglog.gap.reason"], "dead_lettered");
    assert_eq!(gap.2["attributes"]["seglog.gap.records"], 300);
    let status = e.status();
    // 7 rejected by the partial success + the 300 records of the refused batch.
    assert_eq!(status["dead_lettered"]["records"], 307, "{status}");
    assert_eq!(status["dead_lettered"]["batches"], 2, "{status}");
    let dl: Vec<_> = std::fs::read_dir(e.dir.join("upload/dead-letter"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(dl.iter().any(|j| j.contains("seven too old")), "{dl:?}");
    assert!(dl.iter().any(|j| j.contains("bad timestamp")), "{dl:?}");
    // Everything else arrived: 900 - 300 refused records, once each.
    let delivered = accepted_records(&reqs)
        .iter()
        .filter(|(_, _, r)| r["event_name"] == "")
        .count();
    assert_eq!(delivered, 600);
}

/// `compression = "gzip"` (the default build has it): every body says `Content-Encoding:
/// gzip`, the independent receiver inflates it with Python's own gzip module, and every record
/// arrives with its payload.
#[test]
fn gzip_bodies_reach_the_independent_otlp_receiver() {
    let Some(py) = python() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let rx = Receiver::start(&py, &tmp.path().join("requests.jsonl"), "");
    let e = Env::new(&rx.url(), "protocol = \"otlp\"\ncompression = \"gzip\"");
    write(&e, 0, 600);
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let reqs = rx.requests();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(r["content_encoding"], "gzip", "{r}");
    }
    let recs = accepted_records(&reqs);
    let data: Vec<_> = recs
        .iter()
        .filter(|(_, _, r)| r["event_name"] != "seglog.gap" && r["event_name"] != "seglog.counters")
        .collect();
    assert_eq!(data.len(), 600, "every record, once");
    let bodies: Vec<&str> = data
        .iter()
        .map(|(_, _, r)| r["body"].as_str().unwrap())
        .collect();
    let texts = bodies
        .iter()
        .filter(|b| b.starts_with("rec ") && b.ends_with("ünïcødé ✓"))
        .count();
    let binary = bodies.iter().filter(|b| b.starts_with("hex:fffe")).count();
    assert_eq!(
        (texts, binary),
        (300, 300),
        "UTF-8 as strings, the rest as bytes"
    );
}
