use super::*;

fn dev(n: u32) -> [u8; 32] {
    let mut d = [0u8; 32];
    d[..4].copy_from_slice(&n.to_le_bytes());
    d
}

/// A full queue of `queued` records before a writer of 10,000 records/s (8,000 bookable).
fn full(queued: u64) -> Load {
    Load {
        queued_records: queued,
        full: true,
        over_hard_limit: false,
        rate: 10_000.0,
    }
}

fn secs(v: Verdict) -> u64 {
    match v {
        Verdict::Refuse { retry_after_secs } => retry_after_secs,
        Verdict::Take => panic!("taken, expected a refusal"),
    }
}

#[test]
fn refusals_fill_the_seconds_after_the_queue_in_order() {
    let mut s = ReturnSchedule::default();
    // 20,000 queued at 10,000/s: nothing before second 2; 8 batches of 1,000 per second.
    let got: Vec<u64> = (0..40)
        .map(|n| secs(s.offer(5_000, dev(n), 1_000, full(20_000))))
        .collect();
    for (n, &g) in got.iter().enumerate() {
        assert_eq!(g, 2 + n as u64 / 8, "device {n}: {got:?}");
    }
    assert_eq!(s.stats.booked, 40);
    assert_eq!(s.bookings(), 40);
    // A second later the same calendar, seen from one second on: the next free second is
    // now 6 seconds away (7 from the start), the queue still needing 2.
    assert_eq!(secs(s.offer(6_000, dev(99), 1_000, full(20_000))), 6);
}

#[test]
fn a_large_batch_spills_over_the_next_seconds() {
    let mut s = ReturnSchedule::default();
    // 20,000 records take 2.5 seconds of bookable time: seconds 1, 2 and half of 3.
    assert_eq!(secs(s.offer(0, dev(1), 20_000, full(0))), 1);
    assert_eq!(secs(s.offer(0, dev(2), 4_000, full(0))), 3);
    assert_eq!(secs(s.offer(0, dev(3), 1, full(0))), 4);
}

#[test]
fn a_booked_device_is_taken_on_time_and_told_the_rest_when_early() {
    let mut s = ReturnSchedule::default();
    let wait = secs(s.offer(10_000, dev(1), 1_000, full(30_000)));
    assert_eq!(wait, 3);
    // Early (a backoff cap of 1 s): the rest of its wait, no new booking.
    assert_eq!(secs(s.offer(11_000, dev(1), 1_000, full(30_000))), 2);
    assert_eq!((s.stats.early, s.stats.booked), (1, 1));
    // On time, queue still full: taken anyway, and the booking is used up.
    assert_eq!(s.offer(13_000, dev(1), 1_000, full(30_000)), Verdict::Take);
    assert_eq!(s.stats.taken_on_booking, 1);
    assert_eq!(s.bookings(), 0);
    // A device with no booking is refused at the same moment.
    assert!(matches!(
        s.offer(13_000, dev(2), 1_000, full(30_000)),
        Verdict::Refuse { .. }
    ));
    // Past twice the limit not even a booked device is taken; it books again.
    let hard = Load {
        over_hard_limit: true,
        ..full(30_000)
    };
    let w = secs(s.offer(13_000, dev(2), 1_000, full(30_000)));
    assert!(matches!(
        s.offer(13_000 + w as i64 * 1000, dev(2), 1_000, hard),
        Verdict::Refuse { .. }
    ));
}

#[test]
fn an_early_device_with_room_is_taken_and_frees_its_time() {
    let mut s = ReturnSchedule::default();
    // Fill seconds 1 and 2 with eight devices each.
    for n in 0..16 {
        assert_eq!(
            secs(s.offer(0, dev(n), 1_000, full(0))),
            1 + u64::from(n) / 8
        );
    }
    // Device 8 comes back early while there is room: taken, its second has room again.
    let room = Load {
        full: false,
        ..full(0)
    };
    assert_eq!(s.offer(0, dev(8), 1_000, room), Verdict::Take);
    assert_eq!(secs(s.offer(0, dev(99), 1_000, full(0))), 2);
    assert_eq!(secs(s.offer(0, dev(98), 1_000, full(0))), 3);
}

#[test]
fn a_full_calendar_sends_devices_to_the_horizon_without_priority() {
    let mut s = ReturnSchedule::default();
    // One 8,000-record batch per second fills it up to the horizon.
    for n in 0..599 {
        assert_eq!(secs(s.offer(0, dev(n), 8_000, full(0))), u64::from(n) + 1);
    }
    assert_eq!(
        secs(s.offer(0, dev(1000), 10, full(0))),
        MAX_RETRY_AFTER_SECS
    );
    assert_eq!(s.stats.overflowed, 1);
    // Back at the horizon with the queue still full: refused again (no priority), booked
    // anew.
    assert!(matches!(
        s.offer(600_000, dev(1000), 10, full(0)),
        Verdict::Refuse { .. }
    ));
    assert_eq!(s.stats.booked, 600);
}

#[test]
fn the_answer_stays_within_bounds_for_nonsense_input() {
    let mut s = ReturnSchedule::default();
    for rate in [f64::NAN, f64::INFINITY, -1.0, 0.0, 1e300] {
        let l = Load {
            rate,
            ..full(u64::MAX)
        };
        let w = secs(s.offer(i64::MAX / 2, dev(1), u64::MAX, l));
        assert!((1..=MAX_RETRY_AFTER_SECS).contains(&w), "{rate}: {w}");
        let w = secs(s.offer(-5, dev(2), 0, l));
        assert!((1..=MAX_RETRY_AFTER_SECS).contains(&w), "{rate}: {w}");
    }
    // Time running backwards (a clock step) does not panic either.
    let _ = s.offer(0, dev(3), 1, full(0));
}
