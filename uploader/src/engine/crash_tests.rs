//! Crash safety of the delivery protocol with real processes: this test binary re-executes
//! itself as a child uploader that aborts (as abruptly as SIGKILL) at a chosen point: after
//! recording a batch as in flight but before sending it, after the server acknowledged it but
//! before the cursor moved, and after the cursor moved. Records keep arriving between crashes,
//! so a batch rebuilt from the cursor alone would cover a different range. At the end every
//! record is stored exactly once, every resent batch carried the id of the batch the server
//! already had (with the same records), and nothing was lost.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};

use super::tests::{assert_all_delivered_once, cfg, opts, run_pass};
use super::*;
use crate::cursor::CursorStore;
use crate::protocol::BatchId;
use crate::testing::FlakyServer;
use crate::testutil::write;

const CHILD_ENV: &str = "SEGLOG_CRASH_CHILD";
const SEG: u64 = 64 << 10;

/// The child: one pass over the log named in the environment (aborts at the crash point).
#[test]
#[ignore = "child process of crash_at_every_point_loses_nothing_and_resends_with_the_same_id"]
fn crash_child() {
    let spec = std::env::var(CHILD_ENV).expect("run by the parent test");
    let (dir, url) = spec.split_once('|').unwrap();
    let mut u = Uploader::open(cfg(std::path::Path::new(dir), url))
        .unwrap()
        .unwrap();
    let _ = run_pass(&mut u, &opts(None));
}

fn crash_child_at(
    dir: &std::path::Path,
    url: &str,
    point: &str,
    n: u32,
) -> std::process::ExitStatus {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "engine::crash_tests::crash_child",
            "--ignored",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}|{url}", dir.display()))
        .env("SEGLOG_CRASH_AT_FOR_TEST", format!("{point}:{n}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
}

#[test]
fn crash_at_every_point_loses_nothing_and_resends_with_the_same_id() {
    let d = tempfile::tempdir().unwrap();
    let s = FlakyServer::start(vec![]);
    let public = segment_log::LogId::load_or_create(d.path(), segment_log::Sharing::Private)
        .unwrap()
        .public();
    let plan = [
        ("before_send", 1),
        ("after_ack", 1),
        ("after_cursor", 2),
        ("after_ack", 2),
        ("before_send", 1),
        ("after_ack", 1),
        ("after_cursor", 1),
        ("after_ack", 3),
    ];
    let mut written = 0;
    let mut after_ack_crashes = 0;
    let mut left_in_flight = None;
    for (point, n) in plan {
        write(d.path(), SEG, written, written + 700);
        written += 700;
        let status = crash_child_at(d.path(), &s.url(), point, n);
        assert_eq!(
            status.signal(),
            Some(libc::SIGABRT),
            "child did not crash at {point}:{n}: {status:?}"
        );
        let cursor = CursorStore::open(&d.path().join("upload"))
            .unwrap()
            .load(&public)
            .unwrap();
        assert!(cursor.warnings.is_empty(), "{:?}", cursor.warnings);
        match point {
            "after_ack" => {
                after_ack_crashes += 1;
                let (f, l) = cursor
                    .state
                    .inflight
                    .expect("acknowledged but the cursor did not move: still in flight");
                assert!(
                    s.seen().batches.contains_key(&BatchId::new(&public, f, l)),
                    "the in-flight range is the batch the server stored"
                );
            }
            "before_send" => {
                let (f, l) = cursor
                    .state
                    .inflight
                    .expect("recorded as in flight before sending");
                // Either a new batch (not sent yet) or the acknowledged one the previous
                // crash left in flight, rebuilt over the same range.
                let stored = s.seen().batches.contains_key(&BatchId::new(&public, f, l));
                assert!(!stored || left_in_flight == Some((f, l)), "not sent yet");
            }
            _ => assert_eq!(cursor.state.inflight, None),
        }
        left_in_flight = cursor.state.inflight;
    }
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_all_delivered_once(&s, written);
    // Each acknowledged-but-unrecorded batch was resent exactly once, under the id the server
    // already had, with the same records (the server checks and would report a mismatch).
    assert_eq!(s.seen().duplicates, after_ack_crashes);
}

#[test]
fn a_crash_after_dead_lettering_resends_the_gap_report_under_the_same_id() {
    use crate::protocol::GapReason;
    use crate::testing::Behavior;
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 1000);
    let s = FlakyServer::start(vec![
        Behavior::Status(422),
        Behavior::Status(422),
        Behavior::Status(422),
    ]);
    let status = crash_child_at(d.path(), &s.url(), "report_saved", 1);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status:?}");
    assert!(s.seen().batches.is_empty(), "the report was not sent yet");
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(
        p.dead_lettered, 0,
        "the batch was not refused a second time"
    );
    assert_eq!(
        (
            u.status().dead_lettered_batches,
            u.status().dead_lettered_records
        ),
        (1, 400),
        "counted once, although the crash came before the status was saved"
    );
    let dead = crate::deadletter::list(&u.config().upload_dir());
    assert_eq!(dead.len(), 1);
    let seen = s.seen();
    let report = seen
        .batches
        .values()
        .find(|b| b.gaps.iter().any(|g| g.reason == GapReason::DeadLettered))
        .expect("the gap report was resent after the crash");
    assert_eq!(report.id().to_hex(), dead[0].batch_id);
    assert_eq!(report.gaps[0].records, 400);
    drop(seen);
    super::report_tests::assert_chain_unbroken(&s);
    assert_eq!(s.records().0.len(), 600);
}
