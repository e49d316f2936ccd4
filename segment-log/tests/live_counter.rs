//! Issue 11 item 13: the reservation counter lives in the shared mapping, so any process of
//! the log's owner can damage it while writers append. A counter that is unaligned, inside
//! the header or past the capacity must never make a writer panic, write out of bounds or
//! misaligned (UB; SIGBUS on arm64): `reserve()` checks each reservation in O(1), forces the
//! segment full and rotates. Appends go on; readers report the damaged segments' tails.
//!
//! The test binary re-executes itself as the appending children (`SEGLOG_TEST_CHILD`), and
//! the parent, a different process, damages the live counter with `pwrite` meanwhile.

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use segment_log::format::OFF_RESERVED_END;
use segment_log::{FrameKind, Log, Options};

const CHILD_ENV: &str = "SEGLOG_LIVE_COUNTER_CHILD";
const SEGMENT: u64 = 64 << 10;
const COUNT: u64 = 6000;

fn opts() -> Options {
    Options {
        segment_size: SEGMENT,
        max_record_size: 1024,
        ..Options::default()
    }
}

/// The child side: appends `COUNT` records as writer `SEGLOG_TEST_WRITER`, pausing now and
/// then so the parent's damage lands mid-run. Does nothing in a normal test run.
#[test]
fn child_entry() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let writer: u32 = std::env::var("SEGLOG_TEST_WRITER")
        .unwrap()
        .parse()
        .unwrap();
    let log = Log::open(PathBuf::from(dir), opts()).unwrap();
    for seq in 0..COUNT {
        log.append(&payload(writer, seq, 24 + (seq % 90) as usize))
            .unwrap();
        if seq % 200 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::process::exit(0);
}

fn spawn(dir: &Path, writer: u32) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_entry",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .env("SEGLOG_TEST_WRITER", writer.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn newest_segment(dir: &Path) -> Option<PathBuf> {
    let n = *segment_log::fs::live_segments(&dir.join("segments"))
        .ok()?
        .last()?;
    Some(seg_file(dir, n))
}

fn counter(seg: &Path) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(seg)
        .unwrap()
        .read_exact_at(&mut b, OFF_RESERVED_END as u64)
        .unwrap();
    u64::from_le_bytes(b)
}

fn set_counter(seg: &Path, v: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .write_all_at(&v.to_le_bytes(), OFF_RESERVED_END as u64)
        .unwrap();
}

#[test]
fn a_counter_damaged_while_writers_append_never_panics_and_appends_go_on() {
    let d = tempfile::tempdir().unwrap();
    drop(Log::open(d.path(), opts()).unwrap()); // segment 1 exists before the children run
    let mut children: Vec<_> = (1..=3u32).map(|w| spawn(d.path(), w)).collect();
    let mut damaged = Vec::new();
    let kinds: [fn(u64) -> u64; 4] = [
        |c| c | 3,          // unaligned
        |_| 16,             // inside the header
        |_| u64::MAX - 7,   // far beyond the capacity (a fetch_add would wrap)
        |_| SEGMENT + 4096, // beyond the capacity
    ];
    for round in 0..40 {
        std::thread::sleep(Duration::from_millis(3));
        if children.iter_mut().all(|c| c.try_wait().unwrap().is_some()) {
            break;
        }
        let Some(seg) = newest_segment(d.path()) else {
            continue;
        };
        let c = counter(&seg);
        if c >= SEGMENT {
            continue;
        }
        set_counter(&seg, kinds[round % kinds.len()](c));
        damaged.push(seg);
    }
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a writer failed (panic or signal): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        damaged.len() >= 4,
        "the children finished before the damage: {damaged:?}"
    );

    // Every record of every writer is there exactly once, in order, each whole.
    let (frames, damage) = read_all(d.path());
    let mut next = [0u64; 4];
    for f in frames.iter().filter(|f| f.kind == FrameKind::Record) {
        let (w, seq) = decode(&f.payload)
            .unwrap_or_else(|| panic!("corrupt record returned at {}", f.position));
        assert_eq!(seq, next[w as usize], "writer {w} at {}", f.position);
        next[w as usize] += 1;
    }
    assert_eq!(next[1..], [COUNT; 3], "records lost; damage {damage:?}");
    // The damaged segments were forced full: their unwritten tails are reported.
    assert!(
        !damage.is_empty(),
        "nothing reported for {} damaged counters",
        damaged.len()
    );
}
