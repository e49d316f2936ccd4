//! The device-side footprint of the real `seglog` binary (issue 12, "The device build"):
//! an idle probe is never woken. Behavioural, not timed: it counts the wake-ups (voluntary
//! context switches) of every thread of an idle `seglog probe pipe`, which is zero when
//! nothing polls, whatever the machine's load. Figures and how to measure them: BENCHMARKS.md,
//! "Device footprint".

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use recorder::record::{Position, RecordEntry, RecordReader};
use segment_log::ReaderOptions;

fn seglog(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_seglog"));
    c.env_remove("SEGLOG_DIR")
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .arg("--dir")
        .arg(dir.join("log"));
    c
}

/// Sum of `voluntary_ctxt_switches` over every thread of `pid` (a thread that blocks and is
/// woken again counts one), and the number of threads.
fn wakeups(pid: u32) -> (u64, usize) {
    let mut sum = 0;
    let mut threads = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap_or_default();
        if let Some(n) = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        {
            sum += n.trim().parse::<u64>().unwrap();
            threads += 1;
        }
    }
    (sum, threads)
}

fn payloads(dir: &Path) -> Vec<Vec<u8>> {
    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(100),
        ..ReaderOptions::default()
    };
    let mut r = RecordReader::open(dir.join("log"), Position::default(), opts).unwrap();
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        if let RecordEntry::Record(v) = e {
            out.push(v.payload.to_vec());
        }
    }
    out
}

/// Issue 12: an idle `probe pipe` (input open, nothing written) woke ~54 times a second: the
/// segment preparer polled every 20 ms and the pipe's flush timer ran every 200 ms with
/// nothing pending. Now every thread sleeps until input, an append or a rotation wakes it.
#[test]
fn an_idle_pipe_probe_is_never_woken() {
    let d = tempfile::tempdir().unwrap();
    let mut child = seglog(d.path())
        .args(["probe", "pipe", "-c", "org.example/idle/line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    // Settle: the log is open (a segment exists) and the background thread has started.
    let t0 = Instant::now();
    while !d.path().join("log/segments").is_dir() || wakeups(pid).1 < 3 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the probe never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_secs(1));
    let (before, threads) = wakeups(pid);
    std::thread::sleep(Duration::from_secs(3));
    let (after, _) = wakeups(pid);
    assert!(
        after - before <= 2,
        "an idle probe pipe ({threads} threads) was woken {} times in 3 s",
        after - before
    );
    // Still working: a line written after the idle time is flushed by the timer (it runs
    // while a line is pending) with the input still open.
    input.write_all(b"after a quiet while\n").unwrap();
    input.flush().unwrap();
    let t0 = Instant::now();
    while payloads(d.path()).is_empty() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "a pending line was never flushed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(payloads(d.path()), vec![b"after a quiet while".to_vec()]);
}
