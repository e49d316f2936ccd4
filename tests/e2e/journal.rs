//! End-to-end tests of `seglog journal`: the real binary against real logs.
//!
//! Logs are written with segment-log's `Log` and the recorder's record encoding (so times,
//! classifications and positions are under the test's control), or with the real
//! `recorder::Recorder`. Damaged copies are made by editing the files; for each, the test
//! knows exactly which records are whole and checks that `list` shows all of them and
//! `verify` reports the damage with the right exit code.
//!
//! This module: the writers and helpers the journal tests share, and listing, filters and
//! output formats. Follow, export and stats are in `journal_export`; verify and damaged
//! copies in `journal_verify`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use recorder::record::{
    encode_context, encode_record, ClassRef, Classification, Context, RecordHeader, RecordTime,
    Severity,
};
use segment_log::format::frame_len;
use segment_log::{Log, Options, Position};
use serde_json::Value;

pub(crate) const CLASSES: [&str; 3] = [
    "org.seglog/hello/world",
    "org.seglog/probe/crash",
    "com.acme/app/event",
];
pub(crate) const SEGMENT: u64 = 64 << 10;

/// One record as written.
#[derive(Debug, Clone)]
pub(crate) struct Rec {
    pub(crate) pos: Position,
    /// Bytes the frame occupies.
    pub(crate) len: u64,
    pub(crate) class: usize,
    pub(crate) sev: u8,
    pub(crate) wall_ms: i64,
    pub(crate) event: Option<[u8; 16]>,
    pub(crate) payload: Vec<u8>,
}

/// A writer with a fixed context (slot 0), appending records with chosen times.
pub(crate) struct Writer {
    pub(crate) log: Log,
    pub(crate) ctx: Context,
    pub(crate) buf: Vec<u8>,
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
pub(crate) fn fill(w: &mut Writer, n: usize) -> Vec<Rec> {
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

pub(crate) fn seglog(dir: &Path, args: &[&str]) -> Output {
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

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub(crate) fn json_lines(o: &Output) -> Vec<Value> {
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

pub(crate) fn positions(lines: &[Value]) -> Vec<Position> {
    lines
        .iter()
        .map(|v| Position {
            segment: v["segment"].as_u64().unwrap(),
            offset: v["offset"].as_u64().unwrap(),
        })
        .collect()
}

pub(crate) fn listed(dir: &Path, args: &[&str]) -> Vec<Position> {
    let mut a = vec!["list", "--json"];
    a.extend_from_slice(args);
    positions(&json_lines(&seglog(dir, &a)))
}

pub(crate) fn pos_of(recs: &[&Rec]) -> Vec<Position> {
    recs.iter().map(|r| r.pos).collect()
}

pub(crate) fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join("segments")
        .join(segment_log::fs::segment_file_name(n, "seg"))
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.join("segments")).unwrap();
    std::fs::copy(from.join("log-id"), to.join("log-id")).unwrap();
    for e in std::fs::read_dir(from.join("segments")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join("segments").join(e.file_name())).unwrap();
    }
}

pub(crate) fn rfc3339(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms as u64)).to_string()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------
// Listing, filters, output formats

#[test]
pub(crate) fn list_prints_time_class_severity_and_message_on_one_line() {
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
pub(crate) fn cat_and_verbose_show_the_message_alone_and_every_field() {
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
pub(crate) fn json_lines_carry_every_field_and_the_payload() {
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
pub(crate) fn filters_select_by_class_severity_time_and_ids() {
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
pub(crate) fn relative_since_counts_back_from_now() {
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
pub(crate) fn last_n_shows_only_the_newest_matching_records() {
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
pub(crate) fn bad_arguments_and_non_logs_exit_2_with_clear_messages() {
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

/// crc32c (Castagnoli), bitwise: only to forge a valid header in a test.
pub(crate) fn crc32c(bytes: &[u8]) -> u32 {
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
