//! End-to-end tests of `seglog journal`: the real binary against real logs.
//!
//! Logs are written with segment-log's `Log` and the recorder's record encoding (so times,
//! classifications and positions are under the test's control), or with the real
//! `recorder::Recorder`. Damaged copies are made by editing the files; for each, the test
//! knows exactly which records are whole and checks that `list` shows all of them and
//! `verify` reports the damage with the right exit code.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use recorder::record::{
    encode_context, encode_record, ClassRef, Classification, Context, RecordHeader, RecordTime,
    Severity,
};
use segment_log::format::{frame_len, HEADER_LEN};
use segment_log::{Log, Options, Position};
use serde_json::Value;

pub(crate) const CLASSES: [&str; 3] = [
    "org.seglog/hello/world",
    "org.seglog/probe/crash",
    "com.acme/app/event",
];
const SEGMENT: u64 = 64 << 10;

/// One record as written.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pos: Position,
    /// Bytes the frame occupies.
    len: u64,
    class: usize,
    sev: u8,
    wall_ms: i64,
    event: Option<[u8; 16]>,
    payload: Vec<u8>,
}

/// A writer with a fixed context (slot 0), appending records with chosen times.
pub(crate) struct Writer {
    log: Log,
    pub(crate) ctx: Context,
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn open(dir: &Path) -> Writer {
        let opts = Options {
            segment_size: SEGMENT,
            max_record_size: 4096,
            prepare_ahead: false,
            ..Options::default()
        };
        let log = Log::open(dir, opts).unwrap();
        let ctx = Context {
            slot: 0,
            generation: 0,
            record_format_version: 2,
            machine_id: "0123456789abcdef0123456789abcdef".into(),
            boot_id: [7; 16],
            arch: "x86_64".into(),
            host_type: "vendor|product|1".into(),
            build: "40".into(),
            system_name: "testos".into(),
            kernel_version: "6.1.0".into(),
            board_name: "board|vendor".into(),
            cpu_model: "Test CPU".into(),
            bios_version: "1.0".into(),
            base_wall_ms: 1_700_000_000_000,
            base_boot_ms: 1_000,
            classifications: CLASSES
                .iter()
                .map(|c| Classification::new(c).unwrap())
                .collect(),
            extra: vec![("k".into(), "v".into())],
        };
        log.set_preamble(Some(encode_context(&ctx).unwrap()))
            .unwrap();
        Writer {
            log,
            ctx,
            buf: Vec::new(),
        }
    }

    pub(crate) fn append(
        &mut self,
        class: usize,
        sev: u8,
        wall_ms: i64,
        event: Option<[u8; 16]>,
        payload: &[u8],
    ) -> Rec {
        let header = RecordHeader {
            slot: 0,
            class: ClassRef::Index(class as u32),
            severity: Severity::new(i64::from(sev)).unwrap(),
            time: RecordTime::Relative {
                boot_delta_ms: 5,
                wall_skew_ms: wall_ms - self.ctx.base_wall_ms - 5,
            },
            event_id: event.map(recorder::record::EventId::from_bytes),
            hold_ms: None,
        };
        self.buf.clear();
        encode_record(&header, payload, &mut self.buf).unwrap();
        let pos = self.log.append(&self.buf).unwrap();
        Rec {
            pos,
            len: frame_len(self.buf.len() as u64),
            class,
            sev,
            wall_ms,
            event,
            payload: payload.to_vec(),
        }
    }
}

/// `n` records cycling through classes and severities, one second apart, about 128 bytes
/// of frame each (so ~500 per 64 KiB segment).
fn fill(w: &mut Writer, n: usize) -> Vec<Rec> {
    (0..n)
        .map(|i| {
            let payload = format!("record {i:06} {}", "x".repeat(90));
            let event = (i % 5 == 0).then_some([i as u8; 16]);
            w.append(
                i % 3,
                (i % 4) as u8 + 1,
                1_700_000_000_000 + i as i64 * 1000,
                event,
                payload.as_bytes(),
            )
        })
        .collect()
}

fn seglog(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(dir)
        .arg("journal")
        .args(args)
        .env_remove("SEGLOG_DIR")
        // Times show in the local zone: pin it (journal_cli:: tests other zones).
        .env("TZ", "UTC")
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &Output) -> Vec<Value> {
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        stderr(o)
    );
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn positions(lines: &[Value]) -> Vec<Position> {
    lines
        .iter()
        .map(|v| Position {
            segment: v["segment"].as_u64().unwrap(),
            offset: v["offset"].as_u64().unwrap(),
        })
        .collect()
}

fn listed(dir: &Path, args: &[&str]) -> Vec<Position> {
    let mut a = vec!["list", "--json"];
    a.extend_from_slice(args);
    positions(&json_lines(&seglog(dir, &a)))
}

fn pos_of(recs: &[&Rec]) -> Vec<Position> {
    recs.iter().map(|r| r.pos).collect()
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join("segments")
        .join(segment_log::fs::segment_file_name(n, "seg"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("segments")).unwrap();
    std::fs::copy(from.join("log-id"), to.join("log-id")).unwrap();
    for e in std::fs::read_dir(from.join("segments")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("segments").join(e.file_name())).unwrap();
    }
}

fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------
// Listing, filters, output formats

#[test]
fn list_prints_time_class_severity_and_message_on_one_line() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    w.append(0, 2, 1_700_000_000_123, Some([0xab; 16]), b"hello\n");
    w.append(1, 4, 1_700_000_001_000, None, b"first line\nsecond line");
    w.append(2, 1, 1_700_000_002_000, None, &[0xff, 0x00, b'o', b'k']);
    let o = seglog(d.path(), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "2023-11-14T22:13:20.123Z {} medium: hello\n\
             2023-11-14T22:13:21.000Z {} critical: first line\\nsecond line\n\
             2023-11-14T22:13:22.000Z {} low: \\xff\\x00ok\n",
            CLASSES[0], CLASSES[1], CLASSES[2]
        )
    );
}

#[test]
fn cat_and_verbose_show_the_message_alone_and_every_field() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let r = w.append(0, 3, 1_700_000_000_000, Some([0xab; 16]), b"hello");
    assert_eq!(stdout(&seglog(d.path(), &["-o", "cat"])), "hello\n");
    let text = stdout(&seglog(d.path(), &["--output", "verbose"]));
    let id = recorder::record::RecordId::derive(&w.log.log_id().public(), r.pos);
    for field in [
        format!("[{id}]"),
        format!("CLASSIFICATION={}", CLASSES[0]),
        "SEVERITY=3 (high)".to_owned(),
        format!("RECORD_ID={id}"),
        format!("EVENT_ID={}", "ab".repeat(16)),
        format!("MACHINE_ID={}", w.ctx.machine_id),
        format!("BOOT_ID={}", "07".repeat(16)),
        "KERNEL_VERSION=6.1.0".to_owned(),
        "PAYLOAD=hello".to_owned(),
    ] {
        assert!(text.contains(&field), "{field} missing: {text}");
    }
}

#[test]
fn json_lines_carry_every_field_and_the_payload() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let r = w.append(
        2,
        3,
        1_700_000_000_000,
        Some([1; 16]),
        b"payload \"quoted\"\n",
    );
    w.append(0, 1, 1_700_000_000_500, None, &[0xc3, 0x28]);
    let v = json_lines(&seglog(d.path(), &["list", "--json"]));
    assert_eq!(v.len(), 2);
    assert_eq!(v[0]["classification"], CLASSES[2]);
    assert_eq!(v[0]["severity"], 3);
    assert_eq!(v[0]["wall_ms"], 1_700_000_000_000i64);
    assert_eq!(v[0]["time"], "2023-11-14T22:13:20.000Z");
    assert_eq!(v[0]["event_id"], "01".repeat(16));
    assert_eq!(v[0]["machine_id"], w.ctx.machine_id);
    assert_eq!(v[0]["boot_id"], "07".repeat(16));
    assert_eq!(v[0]["size"], r.payload.len());
    assert_eq!(v[0]["segment"], r.pos.segment);
    assert_eq!(v[0]["offset"], r.pos.offset);
    assert_eq!(
        v[0]["payload"], "payload \"quoted\"\n",
        "JSON carries the payload"
    );
    assert!(v[1]["event_id"].is_null());
    assert_eq!(
        json_lines(&seglog(d.path(), &["-o", "json"])),
        v,
        "--json is -o json"
    );
    // json-pretty: the same objects, indented.
    let pretty = stdout(&seglog(d.path(), &["-o", "json-pretty"]));
    assert!(pretty.contains("\n  \"record_id\": "), "{pretty}");
    let objects: Vec<Value> = serde_json::Deserializer::from_str(&pretty)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    assert_eq!(objects, v);
    assert_eq!(v[1]["payload_hex"], "c328");
    assert!(v[1].get("payload").is_none());
}

#[test]
fn filters_select_by_class_severity_time_and_ids() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let recs = fill(&mut w, 40);
    let all: Vec<&Rec> = recs.iter().collect();
    let sel = |f: &dyn Fn(&Rec) -> bool| {
        pos_of(&all.iter().copied().filter(|r| f(r)).collect::<Vec<_>>())
    };

    assert_eq!(listed(d.path(), &[]), sel(&|_| true));
    assert_eq!(
        listed(d.path(), &["-c", CLASSES[1]]),
        sel(&|r| r.class == 1)
    );
    assert_eq!(
        listed(d.path(), &["-c", "org.seglog/*"]),
        sel(&|r| r.class < 2)
    );
    assert_eq!(
        listed(d.path(), &["-c", CLASSES[0], "-c", CLASSES[2]]),
        sel(&|r| r.class != 1)
    );
    // -s is exactly that severity (as `record -s` sets it); -p a priority or a range.
    assert_eq!(listed(d.path(), &["-s", "3"]), sel(&|r| r.sev == 3));
    assert_eq!(listed(d.path(), &["-s", "high"]), sel(&|r| r.sev == 3));
    assert_eq!(listed(d.path(), &["-p", "3"]), sel(&|r| r.sev >= 3));
    assert_eq!(listed(d.path(), &["-p", "high"]), sel(&|r| r.sev >= 3));
    assert_eq!(
        listed(d.path(), &["--priority", "low..medium"]),
        sel(&|r| r.sev <= 2)
    );
    assert_eq!(listed(d.path(), &["-p", "2.."]), sel(&|r| r.sev >= 2));
    let (a, b) = (recs[10].wall_ms, recs[20].wall_ms);
    assert_eq!(
        listed(d.path(), &["--since", &rfc3339(a), "--until", &rfc3339(b)]),
        sel(&|r| r.wall_ms >= a && r.wall_ms < b)
    );
    let id = recorder::record::RecordId::derive(&w.log.log_id().public(), recs[17].pos).to_string();
    assert_eq!(listed(d.path(), &["--record-id", &id]), vec![recs[17].pos]);
    assert_eq!(
        listed(d.path(), &["--record-id", &id.to_ascii_uppercase()]),
        vec![recs[17].pos],
        "ids are read in either case"
    );
    let event = hex::encode([10u8; 16]);
    assert_eq!(
        listed(d.path(), &["--event-id", &event]),
        vec![recs[10].pos]
    );
    assert_eq!(
        listed(
            d.path(),
            &["-c", "org.seglog/*", "-p", "2", "--since", &rfc3339(a)]
        ),
        { sel(&|r| r.class < 2 && r.sev >= 2 && r.wall_ms >= a) }
    );
}

#[test]
fn relative_since_counts_back_from_now() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let now = now_ms();
    let _old = w.append(0, 1, now - 2 * 3_600_000, None, b"two hours ago");
    let recent = w.append(0, 1, now - 60_000, None, b"a minute ago");
    assert_eq!(listed(d.path(), &["--since", "-1h"]), vec![recent.pos]);
    assert_eq!(
        listed(d.path(), &["--since", "90min ago", "--until", "-30s"]),
        vec![recent.pos]
    );
}

#[test]
fn last_n_shows_only_the_newest_matching_records() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let recs = fill(&mut w, 1200); // spans several segments
    assert!(recs.last().unwrap().pos.segment > recs[0].pos.segment + 1);
    let tail: Vec<Position> = recs[1195..].iter().map(|r| r.pos).collect();
    assert_eq!(listed(d.path(), &["-n", "5"]), tail);
    let class2: Vec<Position> = recs
        .iter()
        .filter(|r| r.class == 2)
        .map(|r| r.pos)
        .collect();
    assert_eq!(
        listed(d.path(), &["-n", "3", "-c", CLASSES[2]]),
        class2[class2.len() - 3..].to_vec()
    );
    assert_eq!(listed(d.path(), &["-n", "0"]), Vec::<Position>::new());
    assert_eq!(listed(d.path(), &["-n", "100000"]).len(), 1200);
    // -n without a value is the last 10, as journalctl.
    assert_eq!(
        listed(d.path(), &["-n"]),
        recs[1190..].iter().map(|r| r.pos).collect::<Vec<_>>()
    );
    let text = stdout(&seglog(d.path(), &["-n", "2"]));
    assert_eq!(text.lines().count(), 2, "{text}");
}

#[test]
fn bad_arguments_and_non_logs_exit_2_with_clear_messages() {
    let d = tempfile::tempdir().unwrap();
    let o = seglog(d.path(), &["list"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not a seglog log directory"),
        "{}",
        stderr(&o)
    );
    let o = seglog(&d.path().join("missing"), &["verify"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    Writer::open(d.path());
    let o = seglog(d.path(), &["list", "-c", "not-a-class"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("DOMAIN/PROBE/REST"), "{}", stderr(&o));
    let o = seglog(d.path(), &["list", "--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("RFC 3339"), "{}", stderr(&o));
}

// ---------------------------------------------------------------------------------------
// Follow, broken pipe, export, stats

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
    let backlog_bytes: u64 = recs[1000..].iter().map(|r| r.len).sum();
    assert_eq!(v["upload"]["backlog_bytes"], backlog_bytes);
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

// ---------------------------------------------------------------------------------------
// Verify and damaged copies

/// A log of four-plus segments and the records in it.
fn base_log(dir: &Path) -> Vec<Rec> {
    let mut w = Writer::open(dir);
    let recs = fill(&mut w, 2000);
    assert!(recs.last().unwrap().pos.segment >= 4);
    recs
}

/// A copy of the base log, damaged by `damage`; returns the copy's directory.
fn damaged_copy(base: &Path, root: &Path, name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
    let dir = root.join(name);
    copy_dir(base, &dir);
    damage(&dir);
    dir
}

/// Runs verify and list on a damaged copy: verify must exit 1 and name `code`; list must
/// show exactly the records `intact` keeps, in order.
fn check_damaged(dir: &Path, recs: &[Rec], code: &str, intact: impl Fn(&Rec) -> bool) {
    let o = seglog(dir, &["verify", "--hole-timeout", "50ms"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify must find damage ({code}): {out}{}",
        stderr(&o)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("damaged: segment") && l.contains(code)),
        "{code} not in: {out}"
    );
    assert!(out.lines().last().unwrap().contains("problems"), "{out}");
    let want: Vec<Position> = recs.iter().filter(|r| intact(r)).map(|r| r.pos).collect();
    assert!(want.len() < recs.len(), "the damage must cost something");
    let o = seglog(dir, &["list", "--json", "--hole-timeout", "50ms"]);
    assert_eq!(
        positions(&json_lines(&o)),
        want,
        "list must show every undamaged record"
    );
    assert!(
        stderr(&o).contains("warning: skipped"),
        "list warns about damage: {}",
        stderr(&o)
    );
}

fn overlaps(r: &Rec, seg: u64, from: u64, to: u64) -> bool {
    r.pos.segment == seg && r.pos.offset < to && r.pos.offset + r.len > from
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic garbage (xorshift), so failures reproduce.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn verify_passes_a_clean_log_with_status_0() {
    let d = tempfile::tempdir().unwrap();
    let recs = base_log(d.path());
    let o = seglog(d.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{} records", recs.len())) && out.trim_end().ends_with("clean"),
        "{out}"
    );
    let v = json_lines(&seglog(d.path(), &["verify", "--json"]));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["type"], "summary");
    assert_eq!(v[0]["problems"], 0);
    assert_eq!(v[0]["records"], recs.len());
}

#[test]
fn damaged_copies_are_reported_and_every_whole_record_still_lists() {
    let base = tempfile::tempdir().unwrap();
    let recs = base_log(base.path());
    let root = tempfile::tempdir().unwrap();
    let b = base.path();

    // Truncated: segment 2 cut in the middle of a frame.
    let cut = SEGMENT / 2 + 3;
    let dir = damaged_copy(b, root.path(), "truncated", |d| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d, 2))
            .unwrap()
            .set_len(cut)
            .unwrap();
    });
    check_damaged(&dir, &recs, "truncated", |r| {
        !(r.pos.segment == 2 && r.pos.offset + r.len > cut)
    });

    // Bit flip inside one record's payload.
    let victim = recs
        .iter()
        .find(|r| r.pos.segment == 1 && r.pos.offset > 10_000)
        .unwrap()
        .clone();
    let dir = damaged_copy(b, root.path(), "bitflip", |d| {
        edit(&seg_path(d, 1), |bytes| {
            bytes[victim.pos.offset as usize + 30] ^= 0x04
        });
    });
    check_damaged(&dir, &recs, "checksum", |r| r.pos != victim.pos);

    // A zeroed page in the middle of segment 3.
    let (from, to) = (16_384u64, 20_480u64);
    let dir = damaged_copy(b, root.path(), "zeroed", |d| {
        edit(&seg_path(d, 3), |bytes| {
            bytes[from as usize..to as usize].fill(0)
        });
    });
    check_damaged(&dir, &recs, "segment 3", |r| !overlaps(r, 3, from, to));

    // Segment 2 replaced by garbage of the same size.
    let dir = damaged_copy(b, root.path(), "garbage", |d| {
        std::fs::write(seg_path(d, 2), garbage(SEGMENT as usize, 42)).unwrap();
    });
    check_damaged(&dir, &recs, "bad segment header", |r| r.pos.segment != 2);

    // Segment 3 deleted.
    let dir = damaged_copy(b, root.path(), "missing", |d| {
        std::fs::remove_file(seg_path(d, 3)).unwrap()
    });
    check_damaged(&dir, &recs, "segment files 3..=3 are missing", |r| {
        r.pos.segment != 3
    });

    // The writer context at the start of segment 2 damaged: its records cannot be read.
    let dir = damaged_copy(b, root.path(), "context", |d| {
        edit(&seg_path(d, 2), |bytes| {
            bytes[HEADER_LEN as usize + 20] ^= 0x01
        });
    });
    check_damaged(&dir, &recs, "no context frame", |r| r.pos.segment != 2);
}

#[test]
fn a_garbage_file_after_the_newest_segment_is_reported_and_nothing_is_lost() {
    let base = tempfile::tempdir().unwrap();
    let recs = base_log(base.path());
    let last = recs.last().unwrap().pos.segment;
    std::fs::write(seg_path(base.path(), last + 3), garbage(8192, 7)).unwrap();
    let o = seglog(base.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("bad segment header"), "{out}");
    assert!(
        out.contains(&format!(
            "segment files {}..={} are missing",
            last + 1,
            last + 2
        )),
        "{out}"
    );
    let all: Vec<Position> = recs.iter().map(|r| r.pos).collect();
    assert_eq!(listed(base.path(), &[]), all);
}

#[test]
fn a_zeroed_hole_is_waited_for_then_reported_with_the_default_timeout() {
    let d = tempfile::tempdir().unwrap();
    let recs = base_log(d.path());
    // Zero exactly one whole frame: it reads as a reservation nobody committed.
    let victim = recs
        .iter()
        .find(|r| r.pos.segment == 2 && r.pos.offset > 4096)
        .unwrap()
        .clone();
    edit(&seg_path(d.path(), 2), |bytes| {
        bytes[victim.pos.offset as usize..(victim.pos.offset + victim.len) as usize].fill(0)
    });
    let o = seglog(d.path(), &["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["code"], "abandoned_reservation");
    assert_eq!(v[0]["segment"], 2);
    assert_eq!(v[0]["offset"], victim.pos.offset);
    assert_eq!(v[0]["length"], victim.len);
    assert_eq!(v.last().unwrap()["records"], recs.len() - 1);
}

/// crc32c (Castagnoli), bitwise: only to forge a valid header in a test.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_segment_from_a_newer_format_version_is_an_error_that_says_upgrade() {
    let d = tempfile::tempdir().unwrap();
    base_log(d.path());
    edit(&seg_path(d.path(), 2), |b| {
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c(&b[..96]);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
    });
    for cmd in ["verify", "list", "export"] {
        let o = seglog(d.path(), &[cmd]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        let e = stderr(&o);
        assert!(
            e.contains("was written by a newer seglog") && e.contains("upgrade seglog"),
            "{cmd}: {e}"
        );
        assert!(
            e.contains("00000000000000000002.seg"),
            "names the file: {e}"
        );
    }
}

#[test]
fn an_unreadable_segment_is_an_error_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    base_log(d.path());
    let path = seg_path(d.path(), 2);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&path).is_ok() {
        eprintln!("skipped: running with CAP_DAC_OVERRIDE (root), permissions cannot deny a read");
        return;
    }
    let o = seglog(d.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("permission denied") && e.contains("00000000000000000002.seg"),
        "{e}"
    );
}

#[test]
fn a_segment_truncated_while_list_reads_it_is_reported_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let recs = fill(&mut w, 40_000); // ~80 segments, ~5 MB of JSON
    let last = recs.last().unwrap().pos.segment;
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(d.path())
        .args(["journal", "list", "--json", "--hole-timeout", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // The lister is now blocked on a full pipe, partway through the log: cut every
    // segment from the second on, some to nothing, some inside the header, some mid-frame.
    for n in 2..=last {
        let len = match n % 3 {
            0 => 0,
            1 => 100,
            _ => 5000,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d.path(), n))
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "no crash, no signal: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let lines: Vec<Value> = std::iter::once(first.as_str())
        .chain(rest.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() < recs.len(),
        "the cut cost records ({} listed)",
        lines.len()
    );
    let listed = positions(&lines);
    assert!(
        listed.windows(2).all(|p| p[0] < p[1]),
        "still in position order, no duplicates"
    );
}

#[test]
fn verify_of_a_live_log_does_not_report_records_being_written() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    fill(&mut w, 100);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                w.append(
                    0,
                    1,
                    1_700_000_000_000,
                    None,
                    format!("live {i}").as_bytes(),
                );
                i += 1;
                // Steady, not flat out: a segment (~900 of these) fills every ~50 ms, so
                // verify runs across rotations without the log growing by gigabytes.
                if i.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            i
        })
    };
    for _ in 0..5 {
        let o = seglog(d.path(), &["verify"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    let v = json_lines(&seglog(d.path(), &["verify", "--json"]));
    assert_eq!(v.last().unwrap()["records"], 100 + written);
}

#[test]
fn spooled_counts_and_their_release_time_show_in_stats_and_upload_status() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    fill(&mut w, 10);
    let until = now_ms() + 3_600_000;
    let mut c = recorder::counters::Counters::default();
    c.spooled.insert("rate_limit_records".into(), 1_400_000);
    c.spooled_until_ms = Some(until);
    recorder::counters::add(d.path(), &c).unwrap();
    let v: Value = serde_json::from_str(&stdout(&seglog(d.path(), &["stats", "--json"]))).unwrap();
    assert_eq!(v["spooled"]["rate_limit_records"], 1_400_000);
    assert_eq!(v["spooled_until_ms"], until);
    let text = stdout(&seglog(d.path(), &["stats"]));
    let when = rfc3339(until);
    let when = &when[..19]; // to the second
    assert!(
        text.contains("spooled           1400000 held back by the rate limit")
            && text.contains(&format!("until {when}")),
        "{text}"
    );
    let status = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seglog"));
        cmd.arg("--dir")
            .arg(d.path())
            .args(["upload", "status"])
            .env_remove("SEGLOG_DIR")
            .env("XDG_STATE_HOME", d.path().join("xdg"));
        if json {
            cmd.arg("--json");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let v: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(v["spooled"]["rate_limit_records"], 1_400_000);
    assert_eq!(v["spooled_until_ms"], until);
    let text = status(false);
    assert!(
        text.contains("spooled:          1400000 held back")
            && text.contains(&format!("until {when}")),
        "{text}"
    );
}
