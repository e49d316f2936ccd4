//! When to try again: the server's `Retry-After`, exponential backoff with equal jitter, and
//! the daemon's random start-up delay. The engine and `fleet-sim` use the same code.
use std::time::Duration;

/// Parses `Retry-After`: delay-seconds or an HTTP date (any of the three formats RFC 9110
/// accepts, via `httpdate`), relative to `now`; a date in the past is zero, a delay too
/// large for u64 is `u64::MAX` seconds. Anything else,
/// including dates `httpdate` cannot represent (years past 9999), is `None`.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    // delay-seconds is 1*DIGIT (no sign); a number too large for u64 is "very long" (the
    // caller caps every wait).
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Exponential backoff with equal jitter: attempt `k` waits uniformly in `[c/2, c]` where
/// `c = min(cap, base * 2^k)`; the jitter is applied after the cap, so clients that all hit
/// the cap still spread out. Half the ceiling is a floor so that a fleet sitting at the cap
/// during an outage comes back on average every `0.75 * cap`, not every `0.5 * cap` as with
/// full jitter (`[0, c]`): a third fewer first contacts when the server returns, for a mean
/// time to notice the recovery of `7/18 * cap` instead of `1/3 * cap` (fleet-sim,
/// BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting at `base`, never above `cap`.
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The upper bound of the next wait (before jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .unwrap_or(self.cap)
            .min(self.cap)
    }

    /// The next wait, and counts the attempt.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(fastrand::u64(ms / 2..=ms))
    }

    /// Attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to the first step (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// The cap.
    pub fn cap(&self) -> Duration {
        self.cap
    }

    /// The wait after an answer that asked to come back later (429, 503): the server's
    /// `Retry-After` when it sent one, never above the cap; else the next backoff step.
    /// The engine and `fleet-sim` both use this, so the simulation runs the real rule.
    pub fn wait_after(&mut self, retry_after: Option<Duration>) -> Duration {
        match retry_after {
            Some(d) => d.min(self.cap),
            None => self.next_delay(),
        }
    }
}

/// A uniformly random duration in `[0, max]` (the daemon's start-up delay).
pub fn random_delay(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(fastrand::u64(0..=ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Mon, 01 Mar 2100 00:00:00 GMT", now).map(|d| d.as_secs()),
            Some(4_107_542_400 - 784_111_777)
        );
        // The two obsolete formats RFC 9110 still asks recipients to accept.
        assert_eq!(
            parse_retry_after("Sunday, 06-Nov-94 08:51:37 GMT", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Sun Nov  6 08:51:37 1994", now),
            Some(Duration::from_secs(120))
        );
        // A date in the past is "now".
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            "",
            "soon",
            "-5",
            "Sun, 06 Nov 1994 08:49:37 PST",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad}");
        }
    }

    /// Regression: the hand-written parser this replaced computed seconds from an unbounded
    /// year in i64 and overflowed (a panic in debug builds) on a server's huge year.
    #[test]
    fn retry_after_survives_huge_years_and_malformed_dates() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(784_111_777);
        for bad in [
            "Sun, 06 Nov 999999999999 08:49:37 GMT",
            "Sun, 06 Nov 9223372036854775807 08:49:37 GMT",
            "Sun, 06 Nov -9223372036854775808 08:49:37 GMT",
            "Sun, 06 Nov 10000 08:49:37 GMT",
            "Sunday, 06-Nov-9999999999 08:49:37 GMT",
            "Sun Nov  6 08:49:37 99999999999",
            "Sun, 06 Nov 1969 08:49:37 GMT",
            "Mon, 06 Nov 1994 08:49:37 GMT", // wrong weekday
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 31 Feb 1994 08:49:37 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT trailing",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, ",
            ", , , ,",
            "Sun, \u{e9}\u{e9} Nov 1994 08:49:37 GMT",
            "1.5",
            "+5",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        // The largest date HTTP can carry, far in the future: a finite wait, no overflow.
        let last = parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now).unwrap();
        assert_eq!(last.as_secs(), 253_402_300_799 - 784_111_777);
        // delay-seconds at and beyond u64: the longest wait (capped by the caller).
        for long in [
            "18446744073709551615",
            "18446744073709551616",
            "9".repeat(100).as_str(),
        ] {
            assert_eq!(
                parse_retry_after(long, now),
                Some(Duration::from_secs(u64::MAX)),
                "{long}"
            );
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_jitters_below_it() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            let c = b.ceiling();
            let d = b.next_delay();
            assert!(d >= c / 2 && d <= c, "{d:?} outside [{:?}, {c:?}]", c / 2);
            ceilings.push(c.as_millis());
        }
        assert_eq!(ceilings, [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
        // Jitter after the cap: repeated draws at the cap are spread over [cap/2, cap], not
        // all equal.
        let draws: std::collections::BTreeSet<_> = (0..200).map(|_| b.next_delay()).collect();
        assert!(draws.len() > 10, "{draws:?}");
        let (lo, hi) = (draws.first().unwrap(), draws.last().unwrap());
        assert!(lo.as_millis() >= 500 && lo.as_millis() < 600, "{lo:?}");
        assert!(hi.as_millis() > 900 && hi.as_millis() <= 1000, "{hi:?}");
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(100));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(600));
        for _ in 0..200 {
            assert!(b.next_delay() <= Duration::from_secs(600));
        }
    }
}
