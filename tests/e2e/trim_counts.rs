//! Issue 11 item 5: every `trimmed` gap states the exact number of records that were
//! appended and never delivered, whoever trimmed them (the probes' own retention, or the
//! uploader's), also when the segment was trimmed with the upload cursor inside it and the
//! uploader was not running; and the real collector's lost total equals the records lost.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};

const SEG: u64 = 64 << 10;
const MAX_BYTES: u64 = 4 * SEG;
const TOTAL: u64 = 10_000;

struct Collector {
    child: Child,
    addr: String,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collector(home: &Path) -> Collector {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .args(["collector", "serve", "--listen", "127.0.0.1:0"])
        .args(["--print-address", "--data-dir"])
        .arg(home.join("data"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = crate::support::upload_env::listening_url(&mut child);
    Collector { child, addr }
}

fn recorder(dir: &Path, home: &Path, retention: bool) -> Recorder {
    let mut c = Config::for_dir(dir);
    c.log.segment_size = SEG;
    c.log.max_record_size = 16 << 10;
    c.log.max_bytes = retention.then_some(MAX_BYTES);
    c.log.max_age = None;
    c.recorder = RecorderConfig::unlimited();
    c.recorder.static_machine_id_file = home.join("static-id");
    c.recorder.machine_id_secret_file = home.join("secret");
    Recorder::open(&c).unwrap()
}

fn write(r: &Recorder, from: u64, to: u64) {
    for i in from..to {
        let p = format!(
            "line {i:09} of the trim count test {}",
            "z".repeat((i % 40) as usize)
        );
        r.record(
            &RecordBuilder::parse("org.test/trim/line", 2)
                .unwrap()
                .payload(p.as_bytes()),
        )
        .unwrap();
    }
}

/// `upload once`: retention first (with the cursor), then a pass. Waits out the 1 s interval.
fn upload_once(dir: &Path, config: &Path, home: &Path) {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let o = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .arg("--dir")
        .arg(dir)
        .arg("--config")
        .arg(config)
        .args(["upload", "once"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A plain HTTP GET on 127.0.0.1, parsed as JSON.
fn get_json(url: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
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
        let (mut out, mut rest) = (String::new(), body);
        while let Some((len, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(len.trim(), 16).unwrap();
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
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn pos(v: &serde_json::Value) -> (u64, u64) {
    (
        v["segment"].as_u64().unwrap(),
        v["offset"].as_u64().unwrap(),
    )
}

#[test]
fn every_trimmed_gap_states_the_exact_count_whoever_trimmed_and_the_collector_sums_them() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let dir: PathBuf = tmp.path().join("log");
    let col = collector(&home);
    let config = tmp.path().join("seglog.toml");
    std::fs::write(
        &config,
        format!(
            "[log]\nsegment_size = \"64KiB\"\nmax_record_size = \"16KiB\"\nmax_bytes = \"256KiB\"\n\
             max_age = 0\n\n[upload]\nurl = \"{}/\"\nrequire_opt_in = false\n\
             batch_max_records = 300\ninterval = \"1s\"\ntimeout = \"5s\"\n",
            col.addr
        ),
    )
    .unwrap();

    let oldest = |dir: &Path| segment_log::fs::live_segments(&dir.join("segments")).unwrap()[0];
    // The segment of the newest record the collector has (where the upload cursor is).
    let cursor_segment = |addr: &str| {
        let recs = get_json(&format!("{addr}/api/records?limit=1"));
        pos(&recs["records"][0]["position"]).0
    };
    // 1. The probes' retention trims segments nobody uploaded yet.
    write(&recorder(&dir, &home, true), 0, 3000);
    assert!(
        oldest(&dir) > 1,
        "the probes' retention trimmed nothing: {:?}",
        std::fs::read_dir(dir.join("segments"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect::<Vec<_>>()
    );
    upload_once(&dir, &config, &home);
    // 2. The uploader's retention trims them, the segment the cursor is in first.
    let at = cursor_segment(&col.addr);
    write(&recorder(&dir, &home, false), 3000, 6000);
    assert!(
        oldest(&dir) <= at,
        "the cursor's segment is still there: {:?}",
        segment_log::fs::live_segments(&dir.join("segments")).unwrap()
    );
    upload_once(&dir, &config, &home);
    // 3. The probes' retention trims the segment the cursor is in while no uploader runs.
    let at = cursor_segment(&col.addr);
    write(&recorder(&dir, &home, true), 6000, TOTAL);
    assert!(
        oldest(&dir) > at + 1,
        "the probes trimmed the cursor's segment"
    );
    upload_once(&dir, &config, &home);

    let recs = get_json(&format!("{}/api/records?limit=10000", col.addr));
    let mut delivered: Vec<((u64, u64), u64)> = recs["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let p = r["payload"].as_str().unwrap();
            (pos(&r["position"]), p[5..14].parse::<u64>().unwrap())
        })
        .collect();
    delivered.sort_unstable();
    assert!((delivered.len() as u64) < TOTAL && !delivered.is_empty());
    // One writer: record numbers grow with positions.
    assert!(delivered.windows(2).all(|w| w[0].1 < w[1].1));
    let gaps = get_json(&format!("{}/api/gaps", col.addr));
    let trimmed: Vec<&serde_json::Value> = gaps["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["reason"] == "trimmed")
        .collect();
    assert!(trimmed.len() >= 3, "one trimmed gap per phase: {gaps}");
    let mut sum = 0;
    for g in &trimmed {
        let (start, end) = (pos(&g["start"]), pos(&g["end"]));
        // The records lost are exactly the numbers between the last delivered before the gap
        // and the first delivered after it.
        let before = delivered
            .iter()
            .rev()
            .find(|(p, _)| *p < start)
            .map(|d| d.1);
        let after = delivered
            .iter()
            .find(|(p, _)| *p >= end)
            .map_or(TOTAL, |d| d.1);
        assert!(
            !delivered.iter().any(|(p, _)| *p >= start && *p < end),
            "{g}"
        );
        let lost = after - before.map_or(0, |b| b + 1);
        assert_eq!(g["records"].as_u64(), Some(lost), "trimmed gap {g}");
        sum += lost;
    }
    eprintln!(
        "{} trimmed gaps state {sum} records lost; {} delivered",
        trimmed.len(),
        delivered.len()
    );
    assert_eq!(
        sum + delivered.len() as u64,
        TOTAL,
        "every record is delivered or counted"
    );
    let stats = get_json(&format!("{}/api/stats", col.addr));
    assert_eq!(stats["gaps"]["records_lost"].as_u64(), Some(sum), "{stats}");
    assert_eq!(stats["records"].as_u64(), Some(delivered.len() as u64));

    // `journal stats` shows what the trim ledger holds: every segment removed (the uploaded
    // ones too), so at least the records lost.
    let o = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(&dir)
        .args(["journal", "stats", "--json"])
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let t = &v["trimmed"];
    let oldest_live = oldest(&dir);
    assert_eq!(t["first_segment"].as_u64(), Some(1), "{t}");
    assert_eq!(t["last_segment"].as_u64(), Some(oldest_live - 1), "{t}");
    assert_eq!(t["segments"].as_u64(), Some(oldest_live - 1), "{t}");
    let kept = segment_log::stats(&dir, true).unwrap().records;
    assert_eq!(
        t["records"].as_u64().unwrap() + kept,
        TOTAL,
        "trimmed + kept = appended: {t}"
    );
}
