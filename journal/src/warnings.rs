//! Damaged ranges and unreadable records met while reading, reported on stderr: the first
//! [`MAX_WARNINGS`] one by one, then counted, with a summary line (count and bytes) every
//! [`SUMMARY_INTERVAL`] or every [`SUMMARY_EVERY`] further skips, so `list --follow` keeps
//! saying that it skips data however long it runs; and the rest when the command ends.
use std::time::{Duration, Instant};

use super::source::Item;

/// Warnings shown one by one; past this many, skips are only counted and summarised.
pub const MAX_WARNINGS: u64 = 10;
/// A summary of counted skips is printed at least this often while skips keep coming.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// ... or after this many further skips, whichever comes first.
pub const SUMMARY_EVERY: u64 = 1000;

/// What to run for the whole damage report.
const VERIFY_HINT: &str = "run `seglog journal verify` for the full list";

/// Damage and unreadable records seen while reading.
#[derive(Default)]
pub struct Warnings {
    shown: u64,
    /// Counted, not summarised yet: skips and bytes.
    pending: (u64, u64),
    /// Counted in total (past the first [`MAX_WARNINGS`]).
    hidden: (u64, u64),
    last_summary: Option<Instant>,
    /// A line went to stderr since the caller last flushed stdout.
    pub pending_flush: bool,
}

impl Warnings {
    /// Reports a non-record item (contexts are silent).
    pub fn note(&mut self, item: &Item<'_>) {
        let (msg, bytes) = match item {
            Item::Record(_) | Item::Context => return,
            Item::Damage(d) => (format!("skipped damaged range: {d}"), d.len),
            Item::Skipped { position, error } => (
                format!("skipped unreadable record at {position}: {error}"),
                0,
            ),
        };
        for line in self.skip(msg, bytes, Instant::now()) {
            eprintln!("seglog: warning: {line}");
        }
    }

    /// Prints a summary of counted skips if one is due (call it while following).
    pub fn tick(&mut self) {
        for line in self.due(Instant::now()) {
            eprintln!("seglog: warning: {line}");
        }
    }

    /// Prints what was counted and not summarised yet.
    pub fn finish(&mut self) {
        for line in self.rest() {
            eprintln!("seglog: warning: {line}");
        }
    }

    /// One skip of `bytes` (0: unknown) described by `msg`, at `now`: the lines to print.
    fn skip(&mut self, msg: String, bytes: u64, now: Instant) -> Vec<String> {
        self.pending_flush = true;
        if self.shown < MAX_WARNINGS {
            self.shown += 1;
            let mut v = vec![msg];
            if self.shown == MAX_WARNINGS {
                self.last_summary = Some(now);
                v.push(format!(
                    "further skips are counted, with a summary every {} s or {SUMMARY_EVERY} \
                     skips; {VERIFY_HINT}",
                    SUMMARY_INTERVAL.as_secs()
                ));
            }
            return v;
        }
        self.pending.0 += 1;
        self.pending.1 = self.pending.1.saturating_add(bytes);
        self.hidden.0 += 1;
        self.hidden.1 = self.hidden.1.saturating_add(bytes);
        if self.pending.0 >= SUMMARY_EVERY {
            return self.summary(now);
        }
        self.due(now)
    }

    /// The time-based summary, when one is due at `now`.
    fn due(&mut self, now: Instant) -> Vec<String> {
        let late = self
            .last_summary
            .is_some_and(|t| now.saturating_duration_since(t) >= SUMMARY_INTERVAL);
        if self.pending.0 > 0 && late {
            self.summary(now)
        } else {
            Vec::new()
        }
    }

    fn summary(&mut self, now: Instant) -> Vec<String> {
        self.last_summary = Some(now);
        self.pending_flush = true;
        let (n, bytes) = std::mem::take(&mut self.pending);
        vec![format!(
            "... and {n} more skipped ranges or unreadable records ({bytes} bytes); {} more \
             ({} bytes) since the first {MAX_WARNINGS} warnings; {VERIFY_HINT}",
            self.hidden.0, self.hidden.1
        )]
    }

    fn rest(&mut self) -> Vec<String> {
        if self.pending.0 == 0 {
            return Vec::new();
        }
        let (n, bytes) = std::mem::take(&mut self.pending);
        vec![format!(
            "{n} more damaged ranges or unreadable records skipped ({bytes} bytes); {VERIFY_HINT}"
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skips(w: &mut Warnings, n: u64, bytes: u64, now: Instant) -> Vec<String> {
        (0..n)
            .flat_map(|i| w.skip(format!("skip {i}"), bytes, now))
            .collect()
    }

    #[test]
    fn skips_past_the_first_ten_are_summarised_every_interval_with_counts() {
        let t0 = Instant::now();
        let mut w = Warnings::default();
        let first = skips(&mut w, MAX_WARNINGS, 100, t0);
        assert_eq!(first.len() as u64, MAX_WARNINGS + 1, "{first:?}");
        assert!(first.last().unwrap().contains("summary every 10 s"));
        // Quiet within the interval, however many (below SUMMARY_EVERY).
        assert!(skips(&mut w, 5, 100, t0 + Duration::from_secs(1)).is_empty());
        assert!(w.due(t0 + Duration::from_secs(9)).is_empty());
        // The interval passed: a summary with the counts, from the follow loop's tick.
        let s = w.due(t0 + SUMMARY_INTERVAL);
        assert_eq!(s.len(), 1);
        assert!(s[0].starts_with("... and 5 more skipped ranges"), "{s:?}");
        assert!(s[0].contains("(500 bytes)"), "{s:?}");
        // Nothing pending: no empty summaries.
        assert!(w.due(t0 + 3 * SUMMARY_INTERVAL).is_empty());
        // Later skips are summarised again once the interval passed since the last one.
        let t1 = t0 + 4 * SUMMARY_INTERVAL;
        let s = skips(&mut w, 2, 7, t1);
        assert_eq!(s.len(), 1, "{s:?}");
        assert!(s[0].contains("... and 1 more"), "{s:?}");
        assert!(
            s[0].contains("6 more (507 bytes) since the first 10"),
            "{s:?}"
        );
        let s = w.rest();
        assert_eq!(s.len(), 1);
        assert!(s[0].starts_with("1 more damaged ranges"), "{s:?}");
        assert!(w.rest().is_empty());
    }

    #[test]
    fn a_burst_of_skips_is_summarised_every_thousand_without_waiting() {
        let t0 = Instant::now();
        let mut w = Warnings::default();
        skips(&mut w, MAX_WARNINGS, 0, t0);
        let s = skips(&mut w, 2 * SUMMARY_EVERY + 3, 1, t0);
        assert_eq!(s.len(), 2, "{s:?}");
        assert!(s[1].contains("... and 1000 more"), "{s:?}");
        assert!(s[1].contains("2000 more (2000 bytes) since"), "{s:?}");
        assert!(w.rest()[0].starts_with("3 more"));
    }
}
