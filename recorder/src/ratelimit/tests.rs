use std::process::Command;

use super::*;
use crate::config::{Config, RateLimitStrategy};
use crate::writer::tests::{read_all, test_config, FakeClock};
use crate::{RecordBuilder, Recorder};

fn cfg(records: Option<u64>, bytes: Option<u64>, window: Duration) -> RecorderConfig {
    RecorderConfig {
        rate_limit_enabled: true,
        record_burst_limit: records,
        record_window: window,
        byte_burst_limit: bytes,
        byte_window: window,
        ..RecorderConfig::default()
    }
}

fn admitted(l: &RateLimiter, n: usize, bytes: u64) -> usize {
    (0..n)
        .filter(|_| l.admit(bytes).unwrap() == Admission::Allowed)
        .count()
}

#[test]
fn record_limit_admits_exactly_the_limit_then_refuses_with_a_hold() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let l = RateLimiter::open(
        d.path(),
        &cfg(Some(100), None, Duration::from_secs(60)),
        clock.clone(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(admitted(&l, 250, 10), 100);
    match l.admit(10).unwrap() {
        Admission::Denied {
            limit: Limit::Records,
            max: 100,
            hold_ms,
            ..
        } => {
            assert!(hold_ms > 0 && hold_ms <= 60_000, "{hold_ms}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_window_slides_and_frees_allowance_as_buckets_expire() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let l = RateLimiter::open(
        d.path(),
        &cfg(Some(10), None, Duration::from_secs(60)),
        clock.clone(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(admitted(&l, 10, 1), 10);
    let Admission::Denied { hold_ms, .. } = l.admit(1).unwrap() else {
        panic!("not denied")
    };
    clock.advance(hold_ms - 1);
    assert!(
        matches!(l.admit(1).unwrap(), Admission::Denied { .. }),
        "still inside the window"
    );
    clock.advance(1);
    assert_eq!(
        l.admit(1).unwrap(),
        Admission::Allowed,
        "allowed once the hold has passed"
    );
}

#[test]
fn byte_limit_counts_payload_bytes() {
    let d = tempfile::tempdir().unwrap();
    let l = RateLimiter::open(
        d.path(),
        &cfg(None, Some(1000), Duration::from_secs(60)),
        FakeClock::new(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(admitted(&l, 20, 100), 10);
    assert!(matches!(
        l.admit(1).unwrap(),
        Admission::Denied {
            limit: Limit::Bytes,
            ..
        }
    ));
    // A record larger than the whole limit can never pass; it is held for a window.
    let d2 = tempfile::tempdir().unwrap();
    let l2 = RateLimiter::open(
        d2.path(),
        &cfg(None, Some(1000), Duration::from_secs(60)),
        FakeClock::new(),
    )
    .unwrap()
    .unwrap();
    assert!(matches!(
        l2.admit(5000).unwrap(),
        Admission::Denied {
            hold_ms: 60_000,
            ..
        }
    ));
}

#[test]
fn limiters_in_one_process_share_the_limit_and_give_back_unspent_leases() {
    let d = tempfile::tempdir().unwrap();
    let clock = FakeClock::new();
    let c = cfg(Some(6400), None, Duration::from_secs(3600));
    let a = RateLimiter::open(d.path(), &c, clock.clone())
        .unwrap()
        .unwrap();
    let b = RateLimiter::open(d.path(), &c, clock.clone())
        .unwrap()
        .unwrap();
    // a ramps up its lease size; then it stops and gives back what it did not spend.
    assert_eq!(admitted(&a, 500, 1), 500);
    a.release().unwrap();
    assert_eq!(admitted(&b, 10_000, 1), 5900);
    assert_eq!(admitted(&a, 10, 1), 0);
}

#[test]
fn disabled_limits_make_no_limiter() {
    let d = tempfile::tempdir().unwrap();
    let off = RecorderConfig {
        rate_limit_enabled: false,
        ..RecorderConfig::default()
    };
    assert!(RateLimiter::open(d.path(), &off, FakeClock::new())
        .unwrap()
        .is_none());
    assert!(RateLimiter::open(
        d.path(),
        &cfg(None, None, Duration::from_secs(60)),
        FakeClock::new()
    )
    .unwrap()
    .is_none());
}

#[test]
fn a_damaged_or_foreign_state_file_is_reset() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("recorder")).unwrap();
    std::fs::write(d.path().join("recorder").join(STATE_FILE), vec![0xff; 100]).unwrap();
    let l = RateLimiter::open(
        d.path(),
        &cfg(Some(5), None, Duration::from_secs(60)),
        FakeClock::new(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(admitted(&l, 10, 1), 5);
}

fn limited(dir: &std::path::Path, strategy: RateLimitStrategy) -> Config {
    let mut c = test_config(dir);
    c.recorder = RecorderConfig {
        strategy,
        ..cfg(Some(3), None, Duration::from_secs(60))
    };
    c.recorder.static_machine_id_file = dir.join("none");
    c.recorder.machine_id_secret_file = dir.join("none");
    c
}

#[test]
fn strategy_drop_refuses_and_counts_by_reason() {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(
        &limited(d.path(), RateLimitStrategy::Drop),
        FakeClock::new(),
        false,
    )
    .unwrap();
    let b = RecordBuilder::parse("a/b/c", 1).unwrap();
    let results: Vec<_> = (0..5).map(|_| rec.record(&b)).collect();
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 3);
    let e = results.into_iter().find_map(Result::err).unwrap();
    assert!(e.is_rate_limited());
    assert!(e.to_string().contains("record_burst_limit"), "{e}");
    drop(rec);
    let c = crate::counters::read(d.path()).unwrap();
    assert_eq!(c.dropped.get("rate_limit_records"), Some(&2));
    assert_eq!(read_all(d.path()).len(), 3);
}

#[test]
fn strategy_spool_keeps_records_marked_with_a_hold() {
    let d = tempfile::tempdir().unwrap();
    let rec = Recorder::open_with(
        &limited(d.path(), RateLimitStrategy::Spool),
        FakeClock::new(),
        false,
    )
    .unwrap();
    let b = RecordBuilder::parse("a/b/c", 1).unwrap();
    for _ in 0..5 {
        rec.record(&b).unwrap();
    }
    drop(rec);
    let all = read_all(d.path());
    assert_eq!(all.len(), 5);
    assert!(all[..3].iter().all(|r| r.1.hold_until_wall_ms.is_none()));
    for r in &all[3..] {
        let until = r.1.hold_until_wall_ms.unwrap();
        assert!(until > r.1.wall_ms && until <= r.1.wall_ms + 60_000);
    }
    assert_eq!(
        crate::counters::read(d.path())
            .unwrap()
            .spooled
            .get("rate_limit_records"),
        Some(&2)
    );
}

const CHILD_ENV: &str = "SEGLOG_RATELIMIT_CHILD_DIR";

/// Not a test on its own: the body of the child processes of
/// `limits_hold_across_processes` (it does nothing unless that test spawned it).
#[test]
fn child_writer_process() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let mut c = test_config(&dir);
    c.recorder = RecorderConfig {
        strategy: RateLimitStrategy::Drop,
        ..cfg(Some(1000), None, Duration::from_secs(3600))
    };
    let rec = Recorder::open(&c).unwrap();
    let b = RecordBuilder::parse("org.test/child/write", 1).unwrap();
    let ok = (0..600).filter(|_| rec.record(&b).is_ok()).count();
    println!("ADMITTED {ok}");
}

#[test]
fn limits_hold_across_processes() {
    let d = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..4)
        .map(|_| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "ratelimit::tests::child_writer_process",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, d.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut total = 0;
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let n: usize = text
            .split("ADMITTED ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("child printed no count: {text}"))
            .parse()
            .unwrap();
        total += n;
    }
    let records = read_all(d.path());
    assert_eq!(records.len(), total, "every admitted record is in the log");
    assert!(
        total <= 1000,
        "{total} records admitted with a limit of 1000"
    );
    assert!(
        total >= 600,
        "{total}: the limit was not reached by any child"
    );
    let dropped = crate::counters::read(d.path())
        .unwrap()
        .dropped
        .get("rate_limit_records")
        .copied();
    assert_eq!(
        dropped,
        Some(2400 - total as u64),
        "every refusal is counted"
    );
}
