use super::*;

/// A small fleet, fast: the outage is survived, everything written before its end is stored,
/// nobody waits longer than the backoff cap between attempts.
fn small() -> Params {
    Params {
        devices: 500,
        // A batch of one interval's records takes ~0.1 s to write, as in the 10,000-device
        // default; slower, and the record written during the wait makes a second request.
        capacity_records_per_sec: 15_000.0,
        queue_records: 50_000,
        outage_start_ms: 2 * 3_600_000,
        outage_ms: 3_600_000,
        max_after_ms: 4 * 3_600_000,
        ..Params::default()
    }
}

#[test]
fn a_small_fleet_survives_an_outage_and_drains() {
    let p = small();
    let r = run(&p);
    let drain = r.drain_secs.expect("the backlog drains");
    assert!(drain > 0.0 && drain < 4.0 * 3600.0, "{drain}");
    // Steady: each device passes once per 15-minute interval plus on average a quarter of
    // one (the daemon's jitter, `Policy::idle_after`).
    let expected = f64::from(p.devices) / (900.0 * 1.25);
    assert!(
        (r.steady_mean - expected).abs() < expected * 0.2,
        "{} vs {expected}",
        r.steady_mean
    );
    assert!(
        r.longest_wait_secs <= p.backoff_cap.as_secs_f64() + 60.0,
        "{}",
        r.longest_wait_secs
    );
    assert!(r.slowest_first_success_secs < drain + 1.0);
    assert!(r.stored > 0 && r.stored <= r.written);
    assert!(r.requests_per_sec.len() > 3 * 3600);
}

#[test]
fn the_same_seed_gives_the_same_run() {
    let p = Params {
        devices: 100,
        max_after_ms: 3_600_000,
        ..small()
    };
    let (a, b) = (run(&p), run(&p));
    assert_eq!(a.requests_per_sec, b.requests_per_sec);
    assert_eq!((a.batches, a.shed), (b.batches, b.shed));
}

#[test]
fn a_collector_that_is_too_small_sheds_and_still_drains() {
    let p = Params {
        capacity_records_per_sec: 1_000.0,
        queue_records: 5_000,
        ..small()
    };
    let r = run(&p);
    assert!(r.shed > 0, "nothing was shed");
    assert!(r.drain_secs.is_some(), "not drained");
}

/// 1,000 devices, the default scenario otherwise (capacity and queue scaled), with a backoff
/// cap of `cap_secs`. Per-second peaks of a fleet this small (0.9 requests/s on average) are
/// noise and not asserted; the busiest minute is.
fn thousand(cap_secs: u64) -> Report {
    let d = Params::default();
    run(&Params {
        devices: 1_000,
        capacity_records_per_sec: d.capacity_records_per_sec / 10.0,
        queue_records: d.queue_records / 10,
        backoff_cap: Duration::from_secs(cap_secs),
        ..d
    })
}

/// With the default backoff cap (40 minutes, equal jitter) everything written before the end
/// of the outage is stored, nobody waits past the cap, the collector books every refusal (no
/// device comes back early) and the busiest minute after the outage is within 3x the steady
/// mean (2x measured).
#[test]
fn a_thousand_devices_drain_on_booked_returns_within_3x() {
    let cap = uploader::config::DEFAULT_BACKOFF_CAP.as_secs();
    assert_eq!(Params::default().backoff_cap.as_secs(), cap);
    let r = thousand(cap);
    assert!(r.drain_secs.is_some(), "not drained");
    assert!(r.longest_wait_secs <= cap as f64, "{}", r.longest_wait_secs);
    assert!(r.shed > 0 && r.schedule.booked > 0, "{:?}", r.schedule);
    assert_eq!(r.schedule.early, 0);
    assert!(
        r.peak_after_60s <= 3.0 * r.steady_mean,
        "{} vs mean {}",
        r.peak_after_60s,
        r.steady_mean
    );
}

/// The floor is the devices' own retries during the outage (each comes back within its cap,
/// before the collector can answer): with a 10-minute cap the busiest minute is over 3x the
/// steady mean, but the fleet still drains on booked returns and stays within 4x.
#[test]
fn with_a_ten_minute_backoff_cap_the_fleet_still_drains_within_4x() {
    let r = thousand(600);
    assert!(r.drain_secs.is_some(), "not drained");
    assert!(r.longest_wait_secs <= 600.0, "{}", r.longest_wait_secs);
    assert!(
        r.peak_after_60s <= 4.0 * r.steady_mean,
        "{} vs mean {}",
        r.peak_after_60s,
        r.steady_mean
    );
}

#[test]
fn the_svg_has_a_bar_path_and_both_lines() {
    let svg = histogram_svg(&[1, 5, 3, 0, 2], &[0, 2, 0, 0, 0], 1, 2.0, "t <1>");
    assert!(svg.starts_with("<svg"));
    assert!(svg.contains("t &lt;1&gt;"));
    assert!(svg.contains("3 x steady mean (6.0/s)"));
    assert!(svg.contains("stroke=\"#cc3311\""));
    assert!(svg.trim_end().ends_with("</svg>"));
}

/// The loopback run, small enough for CI: 100 real uploader engines over real logs, a real
/// collector with a 64 KiB write queue (a few batches) stopped for 5 s. Everything written arrives
/// exactly once, the backlog drains, the 429s the devices saw are the collector's.
#[test]
fn real_engines_survive_a_collector_outage_and_deliver_exactly_once() {
    let p = real::RealParams {
        devices: 100,
        records_per_sec: 20,
        interval: Duration::from_secs(2),
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_secs(2),
        queue_bytes: 64 << 10,
        steady: Duration::from_secs(6),
        outage: Duration::from_secs(5),
        max_after: Duration::from_secs(60),
        tail: Duration::from_secs(2),
    };
    let r = real::run(&p).expect("the run completes");
    eprintln!(
        "steady mean {:.1}/s, peak after {} ({:.2}x), drain {:?} s, 429 {} (collector {}), written {} stored {}",
        r.steady_mean,
        r.peak_after,
        r.peak_to_mean(),
        r.drain_secs,
        r.shed_per_sec.iter().sum::<u32>(),
        r.collector_shed,
        r.written,
        r.stored
    );
    assert!(r.drain_secs.is_some(), "not drained");
    assert!(r.written > 100 * 20 * 10, "{}", r.written);
    assert_eq!(r.stored, r.written);
    assert_eq!(r.devices_exact, p.devices);
    // Connections failed only while the collector was down (and the second it stopped in).
    let (down, up) = r.outage_secs;
    assert!(r.unanswered_per_sec[down..=up].iter().sum::<u32>() > 0);
    assert_eq!(r.unanswered_per_sec[up + 1..].iter().sum::<u32>(), 0);
    // The devices saw the collector's 429s (its counter is read once it has stopped; a
    // device stopping, or a request cut at the end of the shutdown grace, may miss one).
    let seen = u64::from(r.shed_per_sec.iter().sum::<u32>());
    assert!(
        seen.abs_diff(r.collector_shed) <= 5,
        "{seen} vs {}",
        r.collector_shed
    );
    assert!(r.steady_mean > 0.0);
}
