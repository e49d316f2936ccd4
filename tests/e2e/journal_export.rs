//! End-to-end tests of `seglog journal`: following a live log, a closed pipe, export and
//! stats (the writers and helpers are in `journal`).

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use segment_log::Position;
use serde_json::Value;

use super::journal::*;

/// Lines of a child's stdout, read on a thread so the test can time out.
fn line_reader(out: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn follow_prints_the_last_n_then_records_appended_after_it_started() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    w.append(0, 1, 1_699_999_999_000, None, b"too old for -n 1");
    let first = w.append(0, 1, 1_700_000_000_000, None, b"before");
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(d.path())
        .args([
            "journal",
            "list",
            "--follow",
            "-n",
            "1",
            "--json",
            "--include-payload",
            "--poll-interval",
            "20ms",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = line_reader(child.stdout.take().unwrap());
    let wait = Duration::from_secs(20);
    let v: Value = serde_json::from_str(&rx.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(v["payload"], "before");
    assert_eq!(v["offset"], first.pos.offset);
    // Appended while it follows, including across a rotation to a new segment.
    let later = w.append(1, 2, 1_700_000_001_000, None, b"after");
    let v: Value = serde_json::from_str(&rx.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(v["payload"], "after");
    assert_eq!(v["offset"], later.pos.offset);
    w.log.rotate().unwrap();
    let rotated = w.append(2, 3, 1_700_000_002_000, None, b"next segment");
    assert!(rotated.pos.segment > later.pos.segment);
    let v: Value = serde_json::from_str(&rx.recv_timeout(wait).unwrap()).unwrap();
    assert_eq!(v["payload"], "next segment");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_closed_pipe_ends_listing_quietly_with_status_0() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    fill(&mut w, 20_000); // ~2.4 MB of output, far more than a pipe holds
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(d.path())
        .args(["journal", "list"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains(CLASSES[0]));
    drop(out); // like `| head -1`
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stderr(&o), "");
}

#[test]
fn export_round_trips_every_record_with_payload_and_context() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let mut recs = fill(&mut w, 700);
    recs.push(w.append(
        1,
        4,
        1_700_000_999_000,
        Some([9; 16]),
        &[0, 159, 146, 150, 255],
    ));
    let out = d.path().join("export.jsonl");
    let o = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(d.path())
        .args(["journal", "export", "--output-file"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("exported 701 records"),
        "{}",
        stderr(&o)
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), recs.len());
    for (v, r) in lines.iter().zip(&recs) {
        assert_eq!(v["segment"], r.pos.segment);
        assert_eq!(v["offset"], r.pos.offset);
        assert_eq!(v["classification"], CLASSES[r.class]);
        assert_eq!(v["severity"], r.sev);
        assert_eq!(v["wall_ms"], r.wall_ms);
        assert_eq!(
            v["event_id"],
            r.event
                .map_or(Value::Null, |e| Value::String(hex::encode(e)))
        );
        let payload = match (v["payload"].as_str(), v["payload_hex"].as_str()) {
            (Some(t), None) => t.as_bytes().to_vec(),
            (None, Some(h)) => hex::decode(h).unwrap(),
            other => panic!("exactly one payload field expected, got {other:?}"),
        };
        assert_eq!(payload, r.payload);
        assert_eq!(v["context"]["kernel_version"], "6.1.0");
        assert_eq!(v["context"]["extra"]["k"], "v");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Stdout gets the same bytes.
    let o = seglog(d.path(), &["export"]);
    assert!(o.status.success());
    assert_eq!(stdout(&o), text);
}

#[test]
fn export_applies_filters() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let recs = fill(&mut w, 30);
    let want: Vec<Position> = recs.iter().filter(|r| r.sev == 4).map(|r| r.pos).collect();
    assert_eq!(
        positions(&json_lines(&seglog(
            d.path(),
            &["export", "-p", "critical"]
        ))),
        want
    );
}

#[test]
fn stats_counts_records_segments_and_dropped() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let recs = fill(&mut w, 1500);
    let mut dropped = recorder::counters::Counters::default();
    dropped.dropped.insert("rate_limit_records".into(), 3);
    recorder::counters::add(d.path(), &dropped).unwrap();
    let o = seglog(d.path(), &["stats", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let segments = recs.last().unwrap().pos.segment - recs[0].pos.segment + 1;
    assert_eq!(v["records"], 1500);
    assert_eq!(v["records_exact"], true);
    assert_eq!(v["segments"], segments);
    assert_eq!(v["damaged_ranges"], 0);
    assert_eq!(v["by_severity"]["4"], 375);
    assert_eq!(v["oldest"]["offset"], recs[0].pos.offset);
    assert_eq!(v["newest"]["segment"], recs[1499].pos.segment);
    assert_eq!(v["newest"]["offset"], recs[1499].pos.offset);
    assert_eq!(v["dropped"]["rate_limit_records"], 3);
    assert_eq!(v["log_id"], hex::encode(w.log.log_id().public()));
    let text = stdout(&seglog(d.path(), &["stats"]));
    assert!(text.contains("records           1500"), "{text}");
    assert!(text.contains("rate_limit_records: 3"), "{text}");
    assert!(text.contains("no uploader state"), "{text}");

    // An uploader that got up to record 1000: the backlog is the other 500.
    let updir = uploader::state::upload_dir(d.path());
    std::fs::create_dir(&updir).unwrap();
    let cursor = uploader::cursor::CursorState {
        seq: 1,
        public_log_id: w.log.log_id().public(),
        position: recs[1000].pos,
        inflight: None,
        written_wall_ms: 0,
    };
    std::fs::write(updir.join(uploader::cursor::COPIES[1]), cursor.encode()).unwrap();
    let v: Value = serde_json::from_str(&stdout(&seglog(d.path(), &["stats", "--json"]))).unwrap();
    assert_eq!(v["upload"]["cursor"]["segment"], recs[1000].pos.segment);
    assert_eq!(v["upload"]["cursor"]["offset"], recs[1000].pos.offset);
    assert_eq!(v["upload"]["backlog_records"], 500);
    // Backlog bytes are the log's bytes the uploader has still to read: every pending
    // record's frame, and no more than the log's range from the cursor to the end of the
    // last record (which also holds the pads of the writer's chunks, format version 2, and
    // a new segment's preamble).
    let span: u64 = recs[1000..]
        .windows(2)
        .map(|p| {
            if p[0].pos.segment == p[1].pos.segment {
                p[1].pos.offset - p[0].pos.offset
            } else {
                p[1].pos.offset - segment_log::format::HEADER_LEN
            }
        })
        .sum::<u64>()
        + recs[1499].len;
    let frames: u64 = recs[1000..].iter().map(|r| r.len).sum();
    let got = v["upload"]["backlog_bytes"].as_u64().unwrap();
    assert!(
        (frames..=span).contains(&got),
        "backlog {got} bytes: records' frames {frames}, log range {span}"
    );
    let text = stdout(&seglog(d.path(), &["stats"]));
    assert!(text.contains("upload backlog    500 records"), "{text}");
    let est: Value = serde_json::from_str(&stdout(&seglog(
        d.path(),
        &["stats", "--json", "--estimate"],
    )))
    .unwrap();
    assert_eq!(est["records_exact"], false);
    assert!(est["records"].as_u64().unwrap() > 1000, "{est}");
    assert_eq!(est["newest"]["offset"], recs[1499].pos.offset);
}

#[test]
fn records_written_by_the_real_recorder_list_and_verify() {
    let d = tempfile::tempdir().unwrap();
    let rec = recorder::Recorder::open(&recorder::config::Config::for_dir(d.path())).unwrap();
    let mut ids = Vec::new();
    for i in 0..50 {
        let b = recorder::RecordBuilder::parse("org.seglog/hello/world", 1 + i % 4).unwrap();
        let payload = format!("hello {i}");
        ids.push(
            rec.record(&b.payload(payload.as_bytes()))
                .unwrap()
                .id()
                .to_string(),
        );
    }
    let v = json_lines(&seglog(d.path(), &["list", "-o", "json"]));
    let listed: Vec<&str> = v.iter().map(|r| r["record_id"].as_str().unwrap()).collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(v[49]["payload"], "hello 49");
    let o = seglog(d.path(), &["list", "--record-id", &ids[7]]);
    assert!(stdout(&o).ends_with(": hello 7\n"), "{}", stdout(&o));
    assert_eq!(seglog(d.path(), &["verify"]).status.code(), Some(0));
}

#[test]
fn records_written_by_seglog_record_and_probe_pipe_list_with_their_ids() {
    let d = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_seglog");
    let event = "5de9de8d5f3c6a7d445d75ba01cc3322";
    let o = Command::new(bin)
        .arg("--dir")
        .arg(d.path())
        .args([
            "record",
            "-c",
            "org.seglog/hello/world",
            "-s",
            "3",
            "-p",
            "hello",
            "-e",
            event,
        ])
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let id = stdout(&o).trim().to_owned();
    assert_eq!(id.len(), 32, "seglog record prints the record id: {id}");
    let mut pipe = Command::new(bin)
        .arg("--dir")
        .arg(d.path())
        .args(["probe", "pipe", "-c", "org.example/syslog/line"])
        .env_remove("SEGLOG_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = pipe.stdin.take().unwrap();
        for i in 0..100 {
            writeln!(stdin, "line {i}").unwrap();
        }
    }
    assert!(pipe.wait().unwrap().success());
    let v = json_lines(&seglog(
        d.path(),
        &["list", "--json", "-i", "--record-id", &id],
    ));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["payload"], "hello");
    assert_eq!(v[0]["severity"], 3);
    assert_eq!(v[0]["event_id"], event);
    let lines = json_lines(&seglog(
        d.path(),
        &["list", "--json", "-i", "-c", "org.example/*"],
    ));
    let payloads: Vec<&str> = lines
        .iter()
        .map(|l| l["payload"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    assert_eq!(payloads, want);
    let text = stdout(&seglog(
        d.path(),
        &["--event-id", &event.to_ascii_uppercase(), "-o", "verbose"],
    ));
    assert!(
        text.contains(&id) && text.contains("org.seglog/hello/world"),
        "{text}"
    );
    assert_eq!(seglog(d.path(), &["verify"]).status.code(), Some(0));
}
