//! The TSC-extrapolated boot clock on a simulated machine: a TSC at 2.445 GHz and a kernel
//! clock that counts suspended time, with the three things a suspend can do to the TSC.
use std::cell::Cell;

use super::*;

/// Simulated time: `now` is the true CLOCK_BOOTTIME; `tsc_ns` is what the TSC has counted
/// (in ns at 2.445 GHz). Every read takes `STEP` ns.
struct Sim {
    now: Cell<u64>,
    tsc_ns: Cell<u64>,
}

const STEP: u64 = 7;

impl Sim {
    fn new() -> Sim {
        Sim {
            now: Cell::new(5_000_000_000),
            tsc_ns: Cell::new(9_000_000_000),
        }
    }
    fn pass(&self, ns: u64) {
        self.now.set(self.now.get() + ns);
        self.tsc_ns.set(self.tsc_ns.get() + ns);
    }
}

impl Source for Sim {
    fn ticks(&self) -> u64 {
        self.pass(STEP);
        (u128::from(self.tsc_ns.get()) * 2445 / 1000) as u64
    }
    fn kernel_ns(&self) -> u64 {
        self.pass(STEP);
        self.now.get()
    }
}

/// Reads every `every` ns for `total` ns; checks each value against the true time (within
/// `tol` ns) and that values never decrease. Returns the last value.
fn run(sim: &Sim, a: &mut Anchor, rate: &AtomicU64, every: u64, total: u64, tol: u64) -> u64 {
    let mut prev = 0;
    let end = sim.now.get() + total;
    while sim.now.get() < end {
        let before = sim.now.get();
        let v = read(sim, a, rate);
        let after = sim.now.get();
        assert!(v >= prev, "went back: {v} after {prev}");
        assert!(
            v + tol >= before && v <= after + tol,
            "{v} not within {tol} ns of {before}..{after}"
        );
        prev = v;
        sim.pass(every);
    }
    prev
}

/// A thread that has read long enough for the rate to be known.
fn calibrated() -> (Sim, Anchor, AtomicU64) {
    let (sim, mut a, rate) = (Sim::new(), Anchor::default(), AtomicU64::new(0));
    run(&sim, &mut a, &rate, 1_000, 200_000_000, 1_000);
    (sim, a, rate)
}

#[test]
fn calibrates_within_two_spans_then_tracks_the_kernel_clock() {
    let (sim, mut a, rate) = (Sim::new(), Anchor::default(), AtomicU64::new(0));
    // Until the rate is known every read is the kernel's: exact.
    run(&sim, &mut a, &rate, 1_000, 35_000_000, 0);
    run(&sim, &mut a, &rate, 1_000, 30_000_000, 1_000);
    let r = rate.load(Ordering::Relaxed);
    assert_ne!(r, 0, "two 20 ms spans set the rate");
    let want = (1000u128 << 32) / 2445;
    assert!(
        r.abs_diff(want as u64) <= (want >> 16) as u64,
        "rate {r} vs {want}"
    );
    // From then on, extrapolated: within 1 µs over seconds of reads, and most reads are
    // not the kernel's (the anchor is 100 ms old at most).
    let kernel_reads = Cell::new(0u64);
    struct Counting<'a>(&'a Sim, &'a Cell<u64>);
    impl Source for Counting<'_> {
        fn ticks(&self) -> u64 {
            self.0.ticks()
        }
        fn kernel_ns(&self) -> u64 {
            self.1.set(self.1.get() + 1);
            self.0.kernel_ns()
        }
    }
    let c = Counting(&sim, &kernel_reads);
    let end = sim.now.get() + 2_000_000_000;
    let mut n = 0u64;
    while sim.now.get() < end {
        let before = c.0.now.get();
        let v = read(&c, &mut a, &rate);
        assert!(v.abs_diff(before) <= 1_000, "{v} vs {before}");
        sim.pass(10_000);
        n += 1;
    }
    assert!(
        kernel_reads.get() <= 21,
        "{} kernel reads for {n}",
        kernel_reads.get()
    );
}

#[test]
fn a_tsc_that_counts_through_suspend_gives_the_suspended_time() {
    let (sim, mut a, rate) = calibrated();
    sim.pass(1_000); // inside the anchor's 100 ms
    sim.pass(3_600_000_000_000); // an hour suspended; the TSC counted it
    let truth = sim.now.get();
    let v = read(&sim, &mut a, &rate);
    assert!(v.abs_diff(truth) <= 1_000, "{v} vs {truth}");
    run(&sim, &mut a, &rate, 1_000, 300_000_000, 1_000);
}

#[test]
fn a_tsc_reset_by_the_firmware_is_seen_at_the_first_read_after_resume() {
    let (sim, mut a, rate) = calibrated();
    let r = rate.load(Ordering::Relaxed);
    sim.now.set(sim.now.get() + 3_600_000_000_000);
    sim.tsc_ns.set(2_000_000_000); // restarted at power-up, 2 s ago
    let truth = sim.now.get();
    let v = read(&sim, &mut a, &rate);
    assert!(v.abs_diff(truth) <= 100, "{v} vs {truth}");
    run(&sim, &mut a, &rate, 1_000, 300_000_000, 1_000);
    assert!(rate.load(Ordering::Relaxed).abs_diff(r) <= r >> 16);
}

#[test]
fn a_paused_tsc_dates_reads_early_only_until_the_anchor_expires() {
    let (sim, mut a, rate) = calibrated();
    let r = rate.load(Ordering::Relaxed);
    let before = read(&sim, &mut a, &rate);
    let suspended = 3_600_000_000_000;
    sim.now.set(sim.now.get() + suspended); // the TSC did not count it
                                            // Reads in the rest of the anchor's 100 ms: never back, early by at most the suspend.
    let mut last = before;
    let mut stepped = false;
    let mut early = 0;
    let end = sim.now.get() + 2 * REANCHOR_NS;
    while sim.now.get() < end {
        let truth = sim.now.get();
        let v = read(&sim, &mut a, &rate);
        assert!(v >= last);
        assert!(
            v <= truth + 1_000 && v + suspended + 1_000 >= truth,
            "{v} vs {truth}"
        );
        if v.abs_diff(truth) <= 1_000 {
            stepped = true;
        } else {
            assert!(!stepped, "early again after the kernel read");
            early += 1;
            assert!(
                v - before <= REANCHOR_NS + 1_000,
                "early reads span <= 100 ms"
            );
        }
        last = v;
        sim.pass(10_000);
    }
    assert!(
        early > 0,
        "the reads right after resume came from the paused TSC"
    );
    assert!(
        stepped,
        "the anchor expired and the kernel's clock was read"
    );
    // The span across the pause did not pass as a rate.
    assert!(rate.load(Ordering::Relaxed).abs_diff(r) <= r >> 16);
    run(&sim, &mut a, &rate, 1_000, 300_000_000, 1_000);
}

#[test]
fn a_pause_before_calibration_does_not_set_a_wrong_rate() {
    let (sim, mut a, rate) = (Sim::new(), Anchor::default(), AtomicU64::new(0));
    run(&sim, &mut a, &rate, 1_000, 25_000_000, 0);
    sim.now.set(sim.now.get() + 500_000_000); // paused TSC across the first span's end
    run(&sim, &mut a, &rate, 1_000, 25_000_000, 0);
    run(&sim, &mut a, &rate, 1_000, 100_000_000, 1_000);
    let r = rate.load(Ordering::Relaxed);
    let want = ((1000u128 << 32) / 2445) as u64;
    assert!(r.abs_diff(want) <= want >> 16, "rate {r} vs {want}");
}

#[test]
fn the_machine_clock_agrees_with_clock_boottime() {
    // Whether or not this machine's TSC is used: each value lies between kernel reads taken
    // before and after it (1 ms of slack for rounding and a rate still settling).
    let end = crate::fs::boot_time_ns() + 300_000_000;
    let mut prev = 0;
    loop {
        let before = crate::fs::boot_time_ns();
        let v = boot_ns();
        let after = crate::fs::boot_time_ns();
        assert!(v >= prev);
        assert!(
            v + 1_000_000 >= before && v <= after + 1_000_000,
            "{v} vs {before}..{after}"
        );
        prev = v;
        if after > end {
            break;
        }
    }
    println!("TSC boot clock used on this machine: {}", usable());
    if usable() {
        assert_ne!(RATE.load(Ordering::Relaxed), 0, "300 ms calibrate the rate");
    }
}
