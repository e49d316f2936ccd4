//! End-to-end tests of `seglog record` and `seglog probe ...`: the real binary writes, the
//! test reads the log back with `recorder::record::RecordReader` and checks every field.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use recorder::record::{Position, RecordEntry, RecordReader};
use segment_log::ReaderOptions;
use serde_json::Value;

#[derive(Debug)]
struct Rec {
    id: String,
    class: String,
    severity: u8,
    event_id: Option<String>,
    payload: Vec<u8>,
    machine_id: String,
    wall_ms: i64,
}

fn seglog(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_seglog"));
    c.env_remove("SEGLOG_DIR")
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .arg("--dir")
        .arg(dir.join("log"));
    c
}

fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn records(dir: &Path) -> Vec<Rec> {
    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(100),
        ..ReaderOptions::default()
    };
    let mut r = RecordReader::open(dir.join("log"), Position::default(), opts).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            RecordEntry::Record(v) => out.push(Rec {
                id: v.id.to_string(),
                class: v.meta.classification.to_string(),
                severity: v.meta.severity.get(),
                event_id: v.meta.event_id.map(|e| e.to_string()),
                payload: v.payload.to_vec(),
                machine_id: v.context.machine_id.clone(),
                wall_ms: v.meta.wall_ms,
            }),
            RecordEntry::Context { .. } => {}
            other => panic!("unexpected entry {other:?}"),
        }
    }
    out
}

fn loghub(name: &str) -> Option<Vec<u8>> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/loghub")
        .join(name);
    match std::fs::read(&p) {
        Ok(b) => Some(b),
        Err(_) => {
            eprintln!("note: {} not found; using generated lines", p.display());
            None
        }
    }
}

#[test]
fn record_prints_the_id_of_the_record_it_wrote() {
    let d = tempfile::tempdir().unwrap();
    let id1 = ok(&run(
        seglog(d.path()).args([
            "record",
            "-c",
            "org.test/e2e/flag",
            "-s",
            "2",
            "-p",
            "hello",
        ]),
        b"",
    ));
    let file = d.path().join("payload.bin");
    std::fs::write(&file, b"from a file\n").unwrap();
    let id2 = ok(&run(
        seglog(d.path())
            .args([
                "record",
                "-c",
                "org.test/e2e/file",
                "-s",
                "4",
                "-e",
                "5de9de8d5f3c6a7d445d75ba01cc3322",
                "-P",
            ])
            .arg(&file),
        b"",
    ));
    let id3 = ok(&run(
        seglog(d.path()).args(["record", "--class", "org.test/e2e/stdin", "--severity", "1"]),
        b"piped\0bytes",
    ));
    let recs = records(d.path());
    assert_eq!(recs.len(), 3);
    for (r, id) in recs.iter().zip([&id1, &id2, &id3]) {
        assert_eq!(r.id, id.trim());
        assert_eq!(r.id.len(), 32);
        assert_eq!(r.machine_id.len(), 32);
    }
    assert_eq!(
        (
            recs[0].class.as_str(),
            recs[0].severity,
            &recs[0].payload[..]
        ),
        ("org.test/e2e/flag", 2, &b"hello"[..])
    );
    assert_eq!(
        recs[1].event_id.as_deref(),
        Some("5de9de8d5f3c6a7d445d75ba01cc3322")
    );
    assert_eq!(recs[1].payload, b"from a file\n");
    assert_eq!(recs[2].payload, b"piped\0bytes");
}

#[test]
fn record_refuses_bad_input_naming_the_field() {
    let d = tempfile::tempdir().unwrap();
    for (args, needle) in [
        (
            vec!["-c", "not-a-class", "-s", "1", "-p", "x"],
            "DOMAIN/PROBE/REST",
        ),
        (vec!["-c", "a/b/c", "-s", "5", "-p", "x"], "severity"),
        (
            vec!["-c", "a/b/c", "-s", "1", "-e", "ABC", "-p", "x"],
            "event id",
        ),
        (
            vec!["-c", "a/b/c", "-s", "1", "-P", "/nonexistent/payload"],
            "/nonexistent/payload",
        ),
    ] {
        let out = run(seglog(d.path()).arg("record").args(&args), b"");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let big = vec![b'x'; (1 << 20) + 1];
    let out = run(
        seglog(d.path()).args(["record", "-c", "a/b/c", "-s", "1"]),
        &big,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("max_record_size"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn config_file_errors_name_the_key_and_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("seglog.toml");
    std::fs::write(&cfg, "[recorder]\nrecord_burst_limt = 5\n").unwrap();
    let out = run(
        seglog(d.path())
            .arg("--config")
            .arg(&cfg)
            .args(["record", "-c", "a/b/c", "-s", "1", "-p", ""]),
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("record_burst_limt") && err.contains("seglog.toml"),
        "{err}"
    );
}

#[test]
fn rate_limits_hold_across_seglog_processes() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("seglog.toml");
    std::fs::write(&cfg, "[recorder]\nrecord_burst_limit = 5\nrecord_window_length = \"1h\"\nrate_limit_strategy = \"drop\"\n")
        .unwrap();
    let mut refused = 0;
    for i in 0..8 {
        let out = run(
            seglog(d.path())
                .arg("--config")
                .arg(&cfg)
                .args(["record", "-c", "org.test/rl/x", "-s", "1", "-p"])
                .arg(format!("{i}")),
            b"",
        );
        if !out.status.success() {
            refused += 1;
            assert!(
                text(&out.stderr).contains("record_burst_limit"),
                "{}",
                text(&out.stderr)
            );
        }
    }
    assert_eq!(refused, 3);
    assert_eq!(records(d.path()).len(), 5);
    let counters = recorder::counters::read(&d.path().join("log")).unwrap();
    assert_eq!(counters.dropped.get("rate_limit_records"), Some(&3));
}

#[test]
fn probe_hello_writes_the_hello_record() {
    let d = tempfile::tempdir().unwrap();
    let id = ok(&run(seglog(d.path()).args(["probe", "hello"]), b""));
    let recs = records(d.path());
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].id, id.trim());
    assert_eq!(
        (
            recs[0].class.as_str(),
            recs[0].severity,
            &recs[0].payload[..]
        ),
        ("org.seglog/hello/world", 1, &b"hello"[..])
    );
}

#[test]
fn probe_pipe_records_every_line_in_order() {
    let d = tempfile::tempdir().unwrap();
    let input = loghub("Apache_2k.log").unwrap_or_else(|| {
        (0..2000)
            .map(|i| format!("line {i} of a generated log\n"))
            .collect::<String>()
            .into_bytes()
    });
    let lines: Vec<&[u8]> = input
        .split(|&c| c == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let out = run(
        seglog(d.path()).args(["probe", "pipe", "-c", "org.test/pipe/apache", "-s", "2"]),
        &input,
    );
    ok(&out);
    let err = text(&out.stderr);
    assert!(err.contains(&format!("{} records", lines.len())), "{err}");
    let recs = records(d.path());
    assert_eq!(recs.len(), lines.len());
    for (r, l) in recs.iter().zip(&lines) {
        assert_eq!(&r.payload[..], l.strip_suffix(b"\r").unwrap_or(l));
        assert_eq!((r.class.as_str(), r.severity), ("org.test/pipe/apache", 2));
    }
}

#[test]
fn probe_events_dir_ingests_valid_events_deletes_the_files_and_quarantines_the_broken() {
    let d = tempfile::tempdir().unwrap();
    let events = d.path().join("agent");
    std::fs::create_dir(&events).unwrap();
    let ev = |msg: &str, level: &str| {
        serde_json::json!({"Version": "1.0", "Timestamp": "2024-01-02T03:04:05Z", "TaskName": "t",
            "EventLevel": level, "Message": msg, "EventPid": 10, "EventTid": 11,
            "OperationId": "60c014cd-4693-40f1-b334-548cd932949b"})
    };
    std::fs::write(
        events.join("1.json"),
        serde_json::to_vec(&ev("one", "Error")).unwrap(),
    )
    .unwrap();
    let arr = serde_json::json!([ev("two", "Informational"), {"Message": "no schema"}]);
    std::fs::write(events.join("2.json"), serde_json::to_vec(&arr).unwrap()).unwrap();
    std::fs::write(events.join("3.json"), b"[{\"broken\"").unwrap();
    let out = run(
        seglog(d.path())
            .args(["probe", "events-dir", "--once", "--retry-delay", "10ms"])
            .arg(&events),
        b"",
    );
    ok(&out);
    let err = text(&out.stderr);
    assert!(
        err.contains("2 events recorded")
            && err.contains("missing_field=1")
            && err.contains("invalid_json=1"),
        "{err}"
    );
    let left: Vec<String> = std::fs::read_dir(&events)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        left,
        [".quarantine"],
        "every file was consumed or quarantined"
    );
    assert_eq!(
        std::fs::read(events.join(".quarantine/invalid_json/agent_3.json")).unwrap(),
        b"[{\"broken\"",
        "the file that does not parse is kept, with its reason"
    );
    let recs = records(d.path());
    assert_eq!(recs.len(), 2);
    assert_eq!(
        (recs[0].class.as_str(), recs[0].severity),
        ("org.seglog/events/agent", 3)
    );
    assert_eq!(recs[1].severity, 1);
    assert!(
        recs.iter().all(|r| r.wall_ms == 1_704_164_645_000),
        "each record has its event's Timestamp as its time"
    );
    assert_eq!(
        recs[0].event_id.as_deref(),
        Some("60c014cd469340f1b334548cd932949b")
    );
    let v: Value = serde_json::from_slice(&recs[0].payload).unwrap();
    assert_eq!(
        (v["Message"].as_str(), v["EventPid"].as_str()),
        (Some("one"), Some("10"))
    );
    let c = recorder::counters::read(&d.path().join("log")).unwrap();
    assert_eq!(c.dropped.get("events_dir.missing_field"), Some(&1));
    assert_eq!(c.dropped.get("events_dir.invalid_json"), Some(&1));
}

fn net_dev(lo: u64, rx: u64, tx: u64) -> String {
    format!(
        "Inter-|   Receive                                                |  Transmit\n \
         face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
         lo: {lo} 1 0 0 0 0 0 0 {lo} 1 0 0 0 0 0 0\n  \
         eth0: {rx} 1 0 0 0 0 0 0 {tx} 1 0 0 0 0 0 0\n"
    )
}

fn write_atomic(path: &PathBuf, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[test]
fn probe_netstat_writes_interval_records_of_the_deltas() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("net_dev");
    write_atomic(&dev, &net_dev(0, 1000, 500));
    let child = seglog(d.path())
        .args([
            "probe",
            "netstat",
            "--poll-interval",
            "20ms",
            "--log-interval",
            "400ms",
            "--duration",
            "3s",
            "--net-dev",
        ])
        .arg(&dev)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Traffic starts after the probe has surely read its first snapshot and stops well
    // before it ends: the deltas it reports must add up to exactly what was added.
    std::thread::sleep(Duration::from_millis(1000));
    for i in 1..=50u64 {
        write_atomic(&dev, &net_dev(i * 7, 1000 + i * 100, 500 + i * 10));
        std::thread::sleep(Duration::from_millis(15));
    }
    let out = child.wait_with_output().unwrap();
    let ids: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    let recs = records(d.path());
    assert!(!recs.is_empty());
    assert_eq!(recs.iter().map(|r| r.id.clone()).collect::<Vec<_>>(), ids);
    let (mut rx, mut tx) = (0, 0);
    let mut prev_end: Option<i64> = None;
    for r in &recs {
        assert_eq!(r.class, "org.seglog/netstat/deltas");
        let v: Value = serde_json::from_slice(&r.payload).unwrap();
        assert!(
            v["total"].get("lo").is_none(),
            "loopback is excluded by default"
        );
        rx += v["total"]["eth0"]["rx"].as_u64().unwrap();
        tx += v["total"]["eth0"]["tx"].as_u64().unwrap();
        assert!(!v["samples"].as_array().unwrap().is_empty());
        let (t, dur) = (v["t"].as_i64().unwrap(), v["d"].as_i64().unwrap());
        if let Some(end) = prev_end {
            assert!(t >= end, "intervals do not overlap");
        }
        prev_end = Some(t + dur);
    }
    assert_eq!((rx, tx), (5000, 500), "every byte counted once");
}

#[test]
fn probe_netstat_records_the_interval_in_progress_when_it_is_stopped() {
    // `systemctl stop` sends SIGTERM: the traffic counted since the last record must still
    // be written (it used to be lost with the process).
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("net_dev");
    write_atomic(&dev, &net_dev(0, 1000, 500));
    let child = seglog(d.path())
        .args([
            "probe",
            "netstat",
            "--poll-interval",
            "20ms",
            "--log-interval",
            "1h",
            "--net-dev",
        ])
        .arg(&dev)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    write_atomic(&dev, &net_dev(3, 1000 + 4096, 500 + 64));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) with a pid we spawned and have not reaped; no memory is passed.
    let rc = unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let out = child.wait_with_output().unwrap();
    let ids: Vec<String> = ok(&out).lines().map(str::to_string).collect();
    let recs = records(d.path());
    assert_eq!(recs.len(), 1, "one record for the interval in progress");
    assert_eq!(recs[0].id, ids[0]);
    let v: Value = serde_json::from_slice(&recs[0].payload).unwrap();
    assert_eq!(v["total"]["eth0"]["rx"].as_u64(), Some(4096));
    assert_eq!(v["total"]["eth0"]["tx"].as_u64(), Some(64));
}

/// Issue 13: `probe pipe` on SIGTERM, input still open (as under `systemctl stop`), writes
/// every line it read, prints its summary and exits 0. Before, the signal killed it and the
/// pending batch was lost. `--flush-after 1h` and a large batch keep the lines pending, so
/// only the stop can write them.
#[test]
fn probe_pipe_writes_what_it_read_and_prints_its_summary_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let mut child = seglog(d.path())
        .args([
            "probe",
            "pipe",
            "-c",
            "org.test/pipe/signal",
            "--flush-after",
            "1h",
            "--batch-lines",
            "100000",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The write end stays open until the end of the test: input never ends by itself.
    let mut input = child.stdin.take().unwrap();
    let lines: String = (0..1000)
        .map(|i| format!("line {i} before the signal\n"))
        .collect();
    input.write_all(lines.as_bytes()).unwrap();
    input.flush().unwrap();
    // Let the probe read them (it writes nothing yet: the batch is not full, the timer long).
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the probe ended before the signal"
    );
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-s", "TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the probe did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    drop(input);
    let err = ok(&out);
    let err = format!("{err}{}", text(&out.stderr));
    assert!(err.contains("1000 lines read, 1000 records"), "{err}");
    assert!(err.contains("stopped by SIGTERM"), "{err}");
    let recs = records(d.path());
    assert_eq!(recs.len(), 1000);
    assert_eq!(recs[999].payload, b"line 999 before the signal");
    // The journal reads them too.
    let journal = ok(&run(
        seglog(d.path()).args(["journal", "--json", "-n", "2000"]),
        b"",
    ));
    assert_eq!(journal.lines().count(), 1000, "{journal}");
}
