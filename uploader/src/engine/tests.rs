//! The upload loop against a real, misbehaving HTTP server on 127.0.0.1. After every
//! scenario, every record written is stored exactly once after dedupe by batch id.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use crate::protocol::GapReason;
use crate::testing::{Behavior, FlakyServer};
use crate::testutil::{number, write};

const SEG: u64 = 64 << 10;

/// Records requested waits instead of sleeping.
#[derive(Default)]
pub(super) struct NoSleep {
    pub(super) waits: Vec<Duration>,
}
impl Waiter for NoSleep {
    fn wait(&mut self, d: Duration) -> bool {
        self.waits.push(d);
        false
    }
    fn stop_requested(&mut self) -> bool {
        false
    }
}

pub(super) fn cfg(dir: &std::path::Path, url: &str) -> UploadConfig {
    let mut c = UploadConfig::for_dir(dir);
    c.url = Some(url.to_owned());
    c.batch_max_records = 400;
    c.timeout = Duration::from_millis(1500);
    c.connect_timeout = Duration::from_millis(500);
    c.backoff_base = Duration::from_millis(10);
    c.backoff_cap = Duration::from_millis(50);
    c.token = Some("secret-token".into());
    c
}

pub(super) fn opts(max_attempts: Option<u32>) -> PassOptions {
    PassOptions {
        trigger: Trigger::Flush,
        max_attempts,
        target: None,
        deadline: None,
    }
}

pub(super) fn run_pass(u: &mut Uploader, o: &PassOptions) -> (PassOutcome, Progress, NoSleep) {
    let mut w = NoSleep::default();
    let (out, p) = u.pass(o, &mut w, &mut |_| {}).unwrap();
    (out, p, w)
}

/// Every record 0..n stored exactly once, in position order, with the right payloads.
pub(super) fn assert_all_delivered_once(s: &FlakyServer, n: u64) {
    let (recs, dup) = s.records();
    assert!(!dup, "a position was stored twice");
    let nums: Vec<u64> = recs.iter().map(|r| number(&r.payload)).collect();
    assert_eq!(nums, (0..n).collect::<Vec<_>>());
    assert!(s.seen().errors.is_empty(), "{:?}", s.seen().errors);
}

fn scenario(script: Vec<Behavior>) -> (FlakyServer, NoSleep, Progress) {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 2000);
    let s = FlakyServer::start(script);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, w) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.records, 2000);
    assert_all_delivered_once(&s, 2000);
    assert_eq!(u.cursor().inflight, None);
    assert_eq!(u.backlog_bytes(), 0);
    (s, w, p)
}

#[test]
fn happy_path_delivers_everything_with_the_token() {
    let (s, w, p) = scenario(vec![]);
    assert!(w.waits.is_empty());
    assert_eq!(s.seen().duplicates, 0);
    assert_eq!(p.batches, 5);
    assert!(s
        .seen()
        .auth
        .iter()
        .all(|a| a.as_deref() == Some("Bearer secret-token")));
    assert!(p.ratio() > 1.0);
}

#[test]
fn server_errors_are_retried_with_backoff() {
    let (s, w, p) = scenario(vec![
        Behavior::Status(500),
        Behavior::Status(502),
        Behavior::Status(500),
        Behavior::Ok,
        Behavior::Status(408),
    ]);
    assert_eq!(w.waits.len(), 4);
    assert!(
        w.waits.iter().all(|d| *d <= Duration::from_millis(50)),
        "{:?}",
        w.waits
    );
    assert_eq!(p.retries, 4);
    assert_eq!(s.seen().duplicates, 0);
}

#[test]
fn retry_after_is_honoured_up_to_the_cap() {
    let (_, w, _) = scenario(vec![
        Behavior::RetryAfter(429, 0),
        Behavior::RetryAfter(503, 3600),
    ]);
    assert_eq!(
        w.waits,
        vec![Duration::ZERO, Duration::from_millis(50)],
        "429 waits 0 s; 503's hour is capped"
    );
}

#[test]
fn too_large_batches_are_split_until_they_fit() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 2000);
    let s = FlakyServer::start(vec![]);
    s.set_max_body(Some(500));
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert!(p.batches > 10, "{}", p.batches);
    assert_all_delivered_once(&s, 2000);
    let sizes: Vec<usize> = s.seen().batches.values().map(|b| b.records.len()).collect();
    assert!(sizes.iter().all(|&n| n < 400), "{sizes:?}");
}

#[test]
fn connection_reset_mid_body_is_retried() {
    let (s, w, _) = scenario(vec![
        Behavior::ResetMidBody,
        Behavior::Ok,
        Behavior::ResetMidBody,
    ]);
    assert_eq!(w.waits.len(), 2);
    assert_eq!(s.seen().duplicates, 0);
}

#[test]
fn a_stall_past_the_timeout_is_retried() {
    let (s, w, _) = scenario(vec![Behavior::Stall(Duration::from_secs(3))]);
    assert_eq!(w.waits.len(), 1);
    assert_eq!(s.seen().duplicates, 0);
}

#[test]
fn ack_then_die_is_resent_with_the_same_id_and_deduplicated() {
    let (s, _, _) = scenario(vec![
        Behavior::Ok,
        Behavior::AckThenDie,
        Behavior::Ok,
        Behavior::AckThenDie,
    ]);
    let seen = s.seen();
    assert_eq!(seen.duplicates, 2);
    assert_eq!(
        seen.arrivals[1], seen.arrivals[2],
        "the resend carries the same batch id"
    );
}

#[test]
fn permanent_rejection_dead_letters_the_batch_reports_a_gap_and_moves_on() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 2000);
    let s = FlakyServer::start(vec![
        Behavior::Ok,
        Behavior::Status(422),
        Behavior::Status(422),
        Behavior::Status(422),
    ]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.dead_lettered, 1);
    let (recs, dup) = s.records();
    assert!(!dup);
    let nums: Vec<u64> = recs.iter().map(|r| number(&r.payload)).collect();
    assert_eq!(
        nums.len(),
        1600,
        "the second batch of 400 is in the dead-letter folder"
    );
    assert!(!nums.contains(&400) && nums.contains(&800));
    let seen = s.seen();
    let gap = seen
        .batches
        .values()
        .flat_map(|b| b.gaps.iter())
        .find(|g| g.reason == GapReason::DeadLettered)
        .expect("gap reported");
    assert_eq!(gap.records, 400);
    let dl = crate::deadletter::list(&u.config().upload_dir());
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0].status, Some(422));
    assert_eq!(u.status().dead_lettered_records, 400);
}

#[test]
fn the_batch_that_reports_a_corrupt_range_carries_the_counter_that_includes_it() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 2000);
    let segs = d.path().join("segments");
    let first = segment_log::fs::live_segments(&segs).unwrap()[0];
    let seg = segs.join(segment_log::fs::segment_file_name(first, "seg"));
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[4000] ^= 0xff;
    std::fs::write(&seg, &bytes).unwrap();
    let s = FlakyServer::start(vec![]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    let seen = s.seen();
    let mut batches: Vec<_> = seen.batches.values().collect();
    batches.sort_by_key(|b| b.first);
    let corrupt = |b: &crate::protocol::Batch| {
        b.counters
            .iter()
            .find(|(k, _)| k == "uploader.corrupt_ranges")
            .map(|(_, v)| *v)
    };
    let at = batches
        .iter()
        .position(|b| b.gaps.iter().any(|g| g.reason == GapReason::CorruptFrame))
        .expect("a corrupt_frame gap was reported");
    for (i, b) in batches.iter().enumerate() {
        let want = u64::from(i >= at);
        assert_eq!(
            corrupt(b),
            Some(want),
            "batch {i} (the gap is in batch {at})"
        );
    }
    assert_eq!(u.status().corrupt_ranges, 1);
}

#[test]
fn unauthorized_stops_without_dead_lettering_or_moving_the_cursor() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 100);
    let s = FlakyServer::start(vec![Behavior::Status(401)]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert!(
        matches!(&out, PassOutcome::Configuration(m) if m.contains("401") && m.contains("token")),
        "{out:?}"
    );
    assert_eq!(p.records, 0);
    assert_eq!(u.cursor().position.offset, 0, "not moved from its start");
    assert!(crate::deadletter::list(&u.config().upload_dir()).is_empty());
    // Next pass (token fixed) delivers everything.
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_all_delivered_once(&s, 100);
}

#[test]
fn unreachable_server_gives_up_after_max_attempts_and_keeps_the_inflight_range() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 100);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut u = Uploader::open(cfg(d.path(), &format!("http://127.0.0.1:{port}/")))
        .unwrap()
        .unwrap();
    let (out, _, w) = run_pass(&mut u, &opts(Some(3)));
    assert!(matches!(out, PassOutcome::Failed(_)), "{out:?}");
    assert_eq!(w.waits.len(), 2);
    assert!(u.cursor().inflight.is_some());
    assert!(u.status().last_error.is_some());
}

#[test]
fn after_a_crash_the_inflight_batch_is_resent_over_the_same_range_with_the_same_id() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 300);
    let s = FlakyServer::start(vec![Behavior::AckThenDie]);
    let first_id;
    {
        let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
        let (out, _, _) = run_pass(&mut u, &opts(Some(1)));
        assert!(matches!(out, PassOutcome::Failed(_)));
        first_id = s.seen().arrivals[0];
        // The process "dies" here: the uploader is dropped with the batch in flight.
    }
    write(d.path(), SEG, 300, 700);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    assert!(u.cursor().inflight.is_some());
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    let seen = s.seen();
    assert_eq!(seen.arrivals[1], first_id, "resent with the same id");
    assert_eq!(seen.duplicates, 1);
    drop(seen);
    assert_all_delivered_once(&s, 700);
}

#[test]
fn only_one_uploader_per_log() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 10);
    let _a = Uploader::open(cfg(d.path(), "http://127.0.0.1:9/"))
        .unwrap()
        .unwrap();
    let e = Uploader::open(cfg(d.path(), "http://127.0.0.1:9/"))
        .err()
        .unwrap();
    assert!(
        format!("{e:#}").contains("another uploader is running"),
        "{e:#}"
    );
}

#[test]
fn flush_target_stops_at_what_was_written_before_the_call() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 1000);
    let target = crate::backlog::log_end(d.path()).unwrap();
    let s = FlakyServer::start(vec![]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let o = PassOptions {
        target: Some(target),
        ..opts(None)
    };
    let (out, p, _) = run_pass(&mut u, &o);
    assert_eq!(out, PassOutcome::Complete);
    assert!(u.cursor().position >= target);
    assert_eq!(p.records, 1000);
}

#[test]
fn uploader_retention_trims_after_the_cursor_and_reports_the_lost_records() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 4000);
    let s = FlakyServer::start(vec![]);
    let mut c = cfg(d.path(), &s.url());
    c.retention = Some(segment_log::RetentionPolicy {
        max_bytes: Some(3 * SEG),
        max_age: None,
    });
    let mut u = Uploader::open(c).unwrap().unwrap();
    let r = u.retention().unwrap().unwrap();
    assert!(r.unconsumed_records > 0);
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    let seen = s.seen();
    let gap = seen
        .batches
        .values()
        .flat_map(|b| b.gaps.iter())
        .find(|g| g.reason == GapReason::Trimmed)
        .expect("trim gap");
    assert_eq!(gap.records, r.unconsumed_records);
    assert_eq!(gap.segments, r.segments_removed);
    let stored: usize = seen.batches.values().map(|b| b.records.len()).sum();
    assert_eq!(
        stored as u64 + r.unconsumed_records,
        4000,
        "every record is delivered or counted in a gap"
    );
    assert_eq!(u.status().expired_records, r.unconsumed_records);
}

/// Found by the torture harness (tests/e2e/torture.rs): retention removed the segment the
/// uploader's reader had open; the reader went on reading the deleted file, so records counted
/// as expired were delivered anyway, and the trim note (which also spanned segments uploaded
/// before) matched no gap, whose count then said "unknown".
#[test]
fn retention_under_an_open_reader_counts_exactly_the_records_that_never_arrive() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 4000);
    let segs = segment_log::fs::live_segments(&d.path().join("segments")).unwrap();
    assert!(segs.len() >= 4, "{segs:?}");
    let s = FlakyServer::start(vec![]);
    let mut c = cfg(d.path(), &s.url());
    c.retention = Some(segment_log::RetentionPolicy {
        max_bytes: Some(2 * SEG),
        max_age: None,
    });
    let mut u = Uploader::open(c).unwrap().unwrap();
    // Stop in the middle of the second segment, with the reader open on it.
    let mut o = opts(None);
    o.target = Some(Position {
        segment: segs[1],
        offset: 1,
    });
    let (out, _, _) = run_pass(&mut u, &o);
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(u.cursor().position.segment, segs[1]);
    let r = u.retention().unwrap().unwrap();
    assert!(r.removed.contains(&segs[0]) && r.removed.contains(&segs[1]));
    assert!(r.unconsumed_records > 0);
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    let seen = s.seen();
    let stored: u64 = seen.batches.values().map(|b| b.records.len() as u64).sum();
    let gaps: Vec<_> = seen
        .batches
        .values()
        .flat_map(|b| b.gaps.iter())
        .filter(|g| g.reason == GapReason::Trimmed)
        .collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(
        stored + gaps[0].records,
        4000,
        "every record is delivered or counted in the gap"
    );
    assert_eq!(u.status().expired_records, gaps[0].records);
}

#[test]
fn a_cursor_that_cannot_be_written_fails_the_pass_before_sending_and_a_later_pass_delivers_once() {
    // A full disk (found by tests/e2e/torture.rs on a tmpfs): the cursor write fails. The pass
    // must fail before anything it could not record is sent, leave the uploader usable, and
    // the next pass (same process, as the daemon retries) must deliver everything once.
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 1000);
    let s = FlakyServer::start(vec![]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let blockers: Vec<_> = ["cursor.a", "cursor.b"]
        .iter()
        .map(|n| u.updir.join(format!(".{n}.tmp")))
        .collect();
    for b in &blockers {
        std::fs::create_dir(b).unwrap(); // the temp file cannot be created: like ENOSPC
    }
    let mut w = NoSleep::default();
    let err = u.pass(&opts(None), &mut w, &mut |_| {}).unwrap_err();
    assert!(format!("{err:#}").contains("upload cursor"), "{err:#}");
    assert!(s.records().0.is_empty(), "sent a batch it could not record");
    for b in &blockers {
        std::fs::remove_dir(b).unwrap();
    }
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.records, 1000);
    assert_all_delivered_once(&s, 1000);
    assert_eq!(s.seen().duplicates, 0);
}

/// Records failed attempts as the CLI would print them.
#[derive(Default)]
struct Reported(Vec<FailedAttempt>);
impl Waiter for Reported {
    fn wait(&mut self, _d: Duration) -> bool {
        false
    }
    fn stop_requested(&mut self) -> bool {
        false
    }
    fn attempt_failed(&mut self, f: &FailedAttempt) {
        self.0.push(f.clone());
    }
}

/// Issue 13: each failed attempt is reported as it happens, with the wait before the next.
#[test]
fn every_failed_attempt_is_reported_before_its_retry() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 10);
    let s = FlakyServer::start(vec![Behavior::Status(503), Behavior::Status(500)]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let mut w = Reported::default();
    let (out, _) = u.pass(&opts(Some(5)), &mut w, &mut |_| {}).unwrap();
    assert_eq!(out, PassOutcome::Complete);
    let seen: Vec<(u32, Option<u32>, bool)> =
        w.0.iter()
            .map(|f| (f.attempt, f.max_attempts, f.retry_in.is_some()))
            .collect();
    assert_eq!(seen, [(1, Some(5), true), (2, Some(5), true)]);
    let line = w.0[1].to_string();
    assert!(line.starts_with("attempt 2/5 failed: HTTP 500: "), "{line}");
    assert!(
        line.contains("; retrying in ") && line.ends_with(" s"),
        "{line}"
    );
    // The last allowed attempt says it gives up.
    s.push([Behavior::Status(503), Behavior::Status(503)]);
    write(d.path(), SEG, 10, 20);
    let mut w = Reported::default();
    let (out, _) = u.pass(&opts(Some(2)), &mut w, &mut |_| {}).unwrap();
    assert!(matches!(out, PassOutcome::Failed(_)), "{out:?}");
    assert_eq!(w.0.len(), 2);
    assert!(w.0[1].to_string().ends_with("; giving up"), "{}", w.0[1]);
}

#[test]
fn waits_are_shown_in_seconds() {
    let s = |ms| seconds(Duration::from_millis(ms));
    assert_eq!(
        [s(3000), s(400), s(2500), s(9960), s(316_400)],
        ["3 s", "0.4 s", "2.5 s", "10 s", "316 s"]
    );
    let f = FailedAttempt {
        attempt: 2,
        max_attempts: None,
        reason: "HTTP 503".into(),
        retry_in: Some(Duration::from_secs(3)),
    };
    assert_eq!(f.to_string(), "attempt 2 failed: HTTP 503; retrying in 3 s");
}

/// Issue 13: https:// at a plain-HTTP server is found at the first attempt and ends the pass
/// as a configuration error; nothing is retried.
#[test]
fn an_https_url_at_a_plain_http_server_ends_the_pass_at_the_first_attempt() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 10);
    let s = FlakyServer::start(vec![]);
    let url = s.url().replacen("http://", "https://", 1);
    let mut u = Uploader::open(cfg(d.path(), &url)).unwrap().unwrap();
    let (out, p, w) = run_pass(&mut u, &opts(Some(5)));
    let PassOutcome::Configuration(m) = out else {
        panic!("{out:?}")
    };
    let at = url.trim_start_matches("https://").trim_end_matches('/');
    assert_eq!(
        m,
        format!("the server at {at} answered plain HTTP to a TLS handshake: use http:// or enable TLS on the server")
    );
    assert!(w.waits.is_empty(), "retried: {:?}", w.waits);
    assert_eq!((p.retries, s.seen().requests), (0, 0));
    assert_eq!(u.status().last_error.as_deref(), Some(m.as_str()));
}

/// Issue 13: the policy's `interval` counts from the last pass that did not fail.
#[test]
fn only_a_pass_that_did_not_fail_counts_as_the_last_pass() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 10);
    let s = FlakyServer::start(vec![Behavior::Status(503), Behavior::Status(503)]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, _, _) = run_pass(&mut u, &opts(Some(2)));
    assert!(matches!(out, PassOutcome::Failed(_)), "{out:?}");
    assert!(u.status().last_attempt_ms.is_some());
    assert_eq!(u.status().last_pass_ms, None);
    assert_eq!(
        (u.status().passes, u.status().last_error_pass),
        (1, Some(1))
    );
    let (out, _, _) = run_pass(&mut u, &opts(Some(2)));
    assert_eq!(out, PassOutcome::Complete);
    // Counted from the end of the pass (the interval runs from there).
    assert!(u.status().last_pass_ms >= u.status().last_attempt_ms);
    assert!(u.status().last_pass_ms.is_some());
    assert_eq!(
        (u.status().passes, u.status().last_error_pass),
        (2, Some(1))
    );
}
