//! Device values are u64 and can be anything (issue 11, item 11): gap counts and counters up
//! to `u64::MAX`, extreme clocks and severities. Ingesting them must never make an API
//! endpoint or UI page answer 5xx, and the totals must be the saturating u64 sums.

use crate::common::Harness;
use collector::fixtures;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use protocol::{Batch, Gap, GapReason};
use segment_log::Position;

fn extreme_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(1u64),
        Just(i64::MAX as u64),
        Just(i64::MAX as u64 + 1),
        Just(u64::MAX - 1),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn extreme_i64() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(i64::MIN), Just(i64::MAX), any::<i64>()]
}

/// Every GET the collector serves, with filters that touch the stored values.
fn pages(public_hex: &str) -> Vec<String> {
    let mut v: Vec<String> = [
        "/",
        "/healthz",
        "/metrics",
        "/api/stats",
        "/api/gaps",
        "/api/gaps?limit=1",
        "/api/records",
        "/api/records?limit=1&include_payload=true",
        "/api/records?severity=4",
        "/api/records?since=0&until=9223372036854775807",
        "/api/records?created_in_days=3650",
        "/ui/records",
        "/ui/records?severity=1",
        "/ui/stats",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    v.push(format!("/api/records?log_id={public_hex}"));
    v.push(format!("/api/gaps?log_id={public_hex}"));
    v.push(format!("/ui/records?log_id={public_hex}"));
    v
}

#[allow(clippy::type_complexity)]
fn batch_strategy() -> impl Strategy<
    Value = (
        u8,
        Vec<(u8, u64, u64, u64)>,
        Vec<(u8, u64)>,
        (i64, u64, u8, u64),
    ),
> {
    (
        any::<u8>(),
        prop::collection::vec(
            (any::<u8>(), extreme_u64(), extreme_u64(), extreme_u64()),
            0..5,
        ),
        prop::collection::vec((0u8..4, extreme_u64()), 0..6),
        (extreme_i64(), extreme_u64(), any::<u8>(), 1u64..5),
    )
}

fn build(
    log: u8,
    gaps: &[(u8, u64, u64, u64)],
    counters: &[(u8, u64)],
    (wall, boot, severity, n): (i64, u64, u8, u64),
) -> ([u8; 32], Batch) {
    let p = fixtures::private_id(log);
    let mut b = fixtures::batch(&p, u64::from(log) * 10, n, "extreme");
    for r in &mut b.records {
        r.wall_ms = wall;
        r.boot_ms = boot;
        r.severity = severity;
    }
    b.last = Position {
        segment: u64::MAX,
        offset: u64::MAX,
    };
    for (reason, records, segments, bytes) in gaps {
        b.gaps.push(Gap {
            reason: GapReason::from_code(*reason),
            start: b.last,
            end: b.last,
            segments: *segments,
            records: *records,
            bytes: *bytes,
            detail: String::new(),
        });
    }
    let mut seen = std::collections::BTreeMap::new();
    for (name, value) in counters {
        seen.insert(format!("uploader.extreme_{name}"), *value);
    }
    b.counters = seen.into_iter().collect();
    (p, b)
}

#[test]
fn extreme_device_values_never_make_a_page_fail() {
    let h = Harness::start(|_| {});
    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&batch_strategy(), |(log, gaps, counters, rec)| {
            let (p, b) = build(log, &gaps, &counters, rec);
            let (s, v) = h.upload(&p, &b);
            prop_assert_eq!(s, 200, "upload: {}", v);
            for page in pages(&hex::encode(fixtures::public_id(&p))) {
                let (s, body) = h.get_text(&page);
                prop_assert!(s < 500, "GET {} answered {}: {}", page, s, body);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn totals_saturate_and_counters_keep_the_largest_u64() {
    let h = Harness::start(|_| {});
    let p = fixtures::private_id(200);
    let top = i64::MAX as u64 + 5; // stored as a negative i64
    let mut first = fixtures::batch(&p, 0, 2, "1");
    first.counters = vec![("uploader.x".into(), top)];
    let first = fixtures::with_gap(first, GapReason::Trimmed, u64::MAX);
    assert_eq!(h.upload(&p, &first).0, 200);
    let mut second = fixtures::batch(&p, 2, 2, "1");
    second.counters = vec![("uploader.x".into(), 7)];
    let second = fixtures::with_gap(second, GapReason::Trimmed, u64::MAX);
    assert_eq!(h.upload(&p, &second).0, 200);
    let (s, v) = h.get("/api/stats");
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["gaps"]["records_lost"], u64::MAX, "{v}");
    let counters = v["device_counters"].as_array().unwrap();
    let x = counters.iter().find(|c| c["key"] == "uploader.x").unwrap();
    assert_eq!(
        x["count"], top,
        "a smaller later value replaced a larger u64: {v}"
    );
    let (s, page) = h.get_text("/ui/stats");
    assert_eq!(s, 200);
    // Shown with thin spaces between thousands: 18 446 744 073 709 551 615.
    let grouped = "18\u{2009}446\u{2009}744\u{2009}073\u{2009}709\u{2009}551\u{2009}615";
    assert!(page.contains(grouped), "{page}");
}
