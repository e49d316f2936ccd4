//! What a probe does when the log cannot allocate space (full disk, `RLIMIT_FSIZE`, quota).
//!
//! The same choice as for a rate limit (`[recorder] rate_limit_strategy`): with `spool` a
//! probe keeps what it could not write (in memory, bounded) and retries every
//! [`RETRY_EVERY`]; with `drop` it drops it. Either way every record given up is counted
//! under [`NO_SPACE_REASON`] in the shared counters (`journal stats`, `upload status`, the
//! batches' counters), a message on standard error says when the disk filled and when
//! appends resumed, and appends resume by themselves once space is freed.
use std::time::{Duration, Instant};

use crate::{RecordError, Recorder};

/// Counter reason of records given up because the log had no space.
pub const NO_SPACE_REASON: &str = "no_space";
/// How often a probe tries to append again while the disk is full.
pub const RETRY_EVERY: Duration = Duration::from_millis(500);
/// How often a probe repeats its "still full" message.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// A probe's full-disk state: when it started, what was given up, when to try again.
#[derive(Debug)]
pub struct FullDisk {
    probe: &'static str,
    since: Option<Instant>,
    last_try: Option<Instant>,
    last_msg: Option<Instant>,
    dropped_now: u64,
    /// Records given up (dropped) because the disk was full, over the whole run.
    pub dropped: u64,
    /// How many times the disk filled during the run.
    pub episodes: u64,
}

impl FullDisk {
    /// The state of probe `probe` (its name prefixes the messages).
    pub fn new(probe: &'static str) -> Self {
        FullDisk {
            probe,
            since: None,
            last_try: None,
            last_msg: None,
            dropped_now: 0,
            dropped: 0,
            episodes: 0,
        }
    }

    /// Whether the last append failed for lack of space.
    pub fn is_full(&self) -> bool {
        self.since.is_some()
    }

    /// Whether to try an append now: always when the disk is not known to be full, else
    /// once per [`RETRY_EVERY`].
    pub fn should_try(&self) -> bool {
        match (self.since, self.last_try) {
            (Some(_), Some(t)) => t.elapsed() >= RETRY_EVERY,
            _ => true,
        }
    }

    /// Lets the next [`should_try`](Self::should_try) say yes (a last try before exiting).
    pub fn allow_try(&mut self) {
        self.last_try = None;
    }

    /// Notes a failed append (`err` is a no-space error); `plan` says what the probe does
    /// meanwhile (printed when the disk fills and every [`REMIND_EVERY`] after).
    pub fn failed(&mut self, err: &RecordError, plan: &str) {
        let now = Instant::now();
        self.last_try = Some(now);
        match self.since {
            None => {
                self.since = Some(now);
                self.episodes += 1;
                self.dropped_now = 0;
                self.last_msg = Some(now);
                eprintln!("{}: the log is out of space ({err}); {plan}", self.probe);
            }
            Some(since) if self.last_msg.is_none_or(|m| m.elapsed() >= REMIND_EVERY) => {
                self.last_msg = Some(now);
                eprintln!(
                    "{}: the log is still out of space after {}s ({} records dropped so far); {plan}",
                    self.probe,
                    since.elapsed().as_secs(),
                    self.dropped_now
                );
            }
            Some(_) => {}
        }
    }

    /// Notes a successful append: when the disk was full, says that appends resumed.
    pub fn succeeded(&mut self) {
        if let Some(since) = self.since.take() {
            eprintln!(
                "{}: space is back after {:.1}s; appending again ({} records dropped meanwhile)",
                self.probe,
                since.elapsed().as_secs_f64(),
                self.dropped_now
            );
        }
        self.last_try = None;
    }

    /// Gives up `n` records for lack of space: counted here and in the shared counters.
    pub fn drop_records(&mut self, rec: &Recorder, n: u64) {
        if n == 0 {
            return;
        }
        self.dropped += n;
        self.dropped_now += n;
        rec.count_dropped(NO_SPACE_REASON, n);
    }
}
