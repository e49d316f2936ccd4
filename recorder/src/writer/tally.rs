//! What one `record`/`record_batch` call decided about rate limits, applied only once the
//! call's outcome is known: counts for a written batch, a refund when the append failed.
//!
//! Without this a caller that retries a batch the log refused (a full disk) would count its
//! spooled and dropped records once per try and spend rate-limit allowance on records that
//! were never written.
use crate::counters::PendingCounters;
use crate::ratelimit::RateLimiter;

#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// (reason, release wall ms) of each spooled record.
    spooled: Vec<(&'static str, i64)>,
    /// Reasons of records refused (strategy drop).
    dropped: Vec<&'static str>,
    /// Payload bytes of each record the limiter allowed.
    allowed: Vec<u64>,
}

impl Tally {
    pub(crate) fn spooled(&mut self, reason: &'static str, until_ms: i64) {
        self.spooled.push((reason, until_ms));
    }

    pub(crate) fn dropped(&mut self, reason: &'static str) {
        self.dropped.push(reason);
    }

    pub(crate) fn allowed(&mut self, bytes: u64) {
        self.allowed.push(bytes);
    }

    /// The records were written (or refused for good): count them.
    pub(crate) fn commit(self, counters: &PendingCounters) {
        for (reason, until) in self.spooled {
            counters.count_spooled(reason, until);
        }
        for reason in self.dropped {
            counters.count(reason, 1, false);
        }
    }

    /// Nothing was written: count nothing and give back the allowance taken at boot time
    /// `now_ms` (best effort: a refund that fails leaves the limit a little stricter).
    pub(crate) fn undo(self, limiter: Option<&RateLimiter>, now_ms: u64) {
        if let Some(l) = limiter {
            for bytes in self.allowed {
                let _ = l.refund(bytes, now_ms);
            }
        }
    }
}
