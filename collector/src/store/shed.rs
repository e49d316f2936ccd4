//! How long a refused upload is told to wait (`Retry-After`), as pure functions of what the
//! writer sees, so that `fleet-sim` runs this very code on virtual time.
//!
//! A device refused now comes back after exactly the `Retry-After` it got (the uploader
//! honours it, up to its backoff cap). Telling every refused device the same number would
//! bring them all back in the same second; so the answer is spread at random over the
//! second half of the time the writer needs for what is queued plus everything refused
//! during the last one to two minutes (those devices are all waiting to come back): the
//! returns then arrive at no more than about twice the rate the writer can take.

/// Longest `Retry-After` sent (the uploader's default backoff cap is 600 s).
pub const MAX_RETRY_AFTER_SECS: u64 = 600;
/// Length of one bucket of the refused-records window.
const WINDOW_MS: i64 = 60_000;

/// Records refused in the current and the previous minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShedWindow {
    bucket: i64,
    current: u64,
    previous: u64,
}

impl ShedWindow {
    fn roll(&mut self, now_ms: i64) {
        let b = now_ms.div_euclid(WINDOW_MS);
        if b != self.bucket {
            self.previous = if b == self.bucket + 1 {
                self.current
            } else {
                0
            };
            self.current = 0;
            self.bucket = b;
        }
    }

    /// Counts `records` refused at `now_ms`.
    pub fn add(&mut self, now_ms: i64, records: u64) {
        self.roll(now_ms);
        self.current = self.current.saturating_add(records);
    }

    /// Records refused during the last one to two minutes.
    pub fn recent(&mut self, now_ms: i64) -> u64 {
        self.roll(now_ms);
        self.current.saturating_add(self.previous)
    }
}

/// `Retry-After` seconds for an upload refused while `queued_records` wait for a writer that
/// manages `rate` records per second and `recently_shed` records were refused lately;
/// `nonce` (any number that differs between refusals) picks the point in the spread.
pub fn retry_after_secs(queued_records: u64, rate: f64, recently_shed: u64, nonce: u64) -> u64 {
    // Unknown before the first commit: assume a slow writer.
    let rate = if rate.is_finite() {
        rate.max(1000.0)
    } else {
        1000.0
    };
    let need = ((queued_records as f64 / rate).ceil() as u64).clamp(1, MAX_RETRY_AFTER_SECS);
    // The spread stays inside the cap: clamping after it would send everyone beyond the cap
    // back in the same second.
    let spread = ((recently_shed as f64 / rate).ceil() as u64)
        .max(need)
        .min(MAX_RETRY_AFTER_SECS - need);
    // Within the second half of the spread: the refused crowd comes back over that half,
    // at no more than twice the rate the whole spread would give, and never sooner than
    // half of it (a full-range pick would send some straight back into the crowd).
    let pick = nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 17;
    need + spread / 2 + pick % (spread - spread / 2 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hint_covers_the_queue_and_spreads_over_what_was_refused() {
        // 100,000 queued at 50,000/s: at least 2 s.
        for n in 0..100 {
            let s = retry_after_secs(100_000, 50_000.0, 0, n);
            assert!((2..=4).contains(&s), "{s}");
        }
        // 10 M records refused lately at 50,000/s: a spread of 200 s, picked in its second
        // half after the 2 s the queue needs.
        let hints: Vec<u64> = (0..1000)
            .map(|n| retry_after_secs(100_000, 50_000.0, 10_000_000, n))
            .collect();
        let (lo, hi) = (*hints.iter().min().unwrap(), *hints.iter().max().unwrap());
        assert!(
            (102..=106).contains(&lo) && (198..=202).contains(&hi),
            "{lo}..{hi}"
        );
        let distinct: std::collections::BTreeSet<_> = hints.iter().collect();
        assert!(distinct.len() > 80, "{}", distinct.len());
        // Never above the cap, never 0, also for nonsense rates.
        assert_eq!(
            retry_after_secs(u64::MAX, 1.0, u64::MAX, 7),
            MAX_RETRY_AFTER_SECS
        );
        // A spread wider than the cap is cut to the cap, not piled up at it.
        let at_cap = (0..1000)
            .filter(|&n| retry_after_secs(0, 1000.0, u64::MAX / 2, n) == MAX_RETRY_AFTER_SECS)
            .count();
        assert!(at_cap < 10, "{at_cap} of 1000 at the cap");
        assert!(retry_after_secs(0, f64::NAN, 0, 0) >= 1);
    }

    #[test]
    fn the_window_forgets_after_two_minutes() {
        let mut w = ShedWindow::default();
        w.add(1_000, 10);
        w.add(61_000, 5);
        assert_eq!(w.recent(61_000), 15);
        assert_eq!(w.recent(121_000), 5);
        assert_eq!(w.recent(500_000), 0);
    }
}
