//! The upload loop: build a batch at the cursor, record it as in flight, send it until the
//! server acknowledges it (retrying, splitting, dead-lettering as PROTOCOL.md section 5
//! says), then move the cursor; retention runs after the cursor is persisted.
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use segment_log::{LogId, Position, ReaderOptions, SystemClock};

use crate::batch::{BatchBuilder, BatchLimits, Built, End, Observer};
use crate::config::UploadConfig;
use crate::cursor::{CursorState, CursorStore};
use crate::policy::{Decision, Inputs, Trigger};
use crate::protocol::{self, Gap, GapReason};
use crate::retry::Backoff;
use crate::state::{self, now_ms, Status};
use crate::transport::Transport;

/// Interruptible waiting: backoff sleeps end early when the process is asked to stop.
pub trait Waiter {
    /// Sleeps up to `d`; returns true when a stop was requested.
    fn wait(&mut self, d: Duration) -> bool;
    /// A backoff wait of our own choosing (not a `Retry-After` the server asked for): the
    /// daemon also ends it early when a flush arrives. Same as `wait` by default.
    fn wait_backoff(&mut self, d: Duration) -> bool {
        self.wait(d)
    }
    /// Whether a stop was requested.
    fn stop_requested(&mut self) -> bool;
    /// An attempt to deliver a batch failed; called as it happens, before the wait for the
    /// next attempt (the CLI prints it, the daemon logs it). Does nothing by default.
    fn attempt_failed(&mut self, _failed: &FailedAttempt) {}
}

/// Test-only crash injection: with `SEGLOG_CRASH_AT_FOR_TEST=<point>:<n>`, the process
/// aborts (as abruptly as SIGKILL) the n-th time it reaches `point`.
#[cfg(test)]
pub(crate) fn crash_point_for_test(point: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEEN: AtomicU64 = AtomicU64::new(0);
    let Ok(spec) = std::env::var("SEGLOG_CRASH_AT_FOR_TEST") else {
        return;
    };
    let Some((p, n)) = spec.split_once(':') else {
        return;
    };
    if p == point && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == n.parse::<u64>().unwrap_or(0) {
        std::process::abort();
    }
}

#[cfg(not(test))]
#[inline(always)]
pub(crate) fn crash_point_for_test(_point: &str) {}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassOutcome {
    /// Everything up to the live end (or the flush target) is acknowledged.
    Complete,
    /// The next record is held back by the recorder's rate limiter until this time (ms).
    Held(i64),
    /// The daily budget is used up.
    BudgetExhausted,
    /// A stop was requested; the cursor is consistent.
    Stopped,
    /// Gave up on a batch after the configured attempts, or the deadline passed.
    Failed(String),
    /// Token or URL is wrong (401/403/404) or no URL is configured.
    Configuration(String),
}

/// Options of one pass.
#[derive(Debug, Clone)]
pub struct PassOptions {
    /// Why.
    pub trigger: Trigger,
    /// Attempts per batch before giving up (`None`: forever, the daemon).
    pub max_attempts: Option<u32>,
    /// Stop once the cursor reaches this (flush).
    pub target: Option<Position>,
    /// Give up at this instant.
    pub deadline: Option<Instant>,
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Progress {
    /// The cursor after the last acknowledged batch.
    #[serde(skip)]
    pub position: Position,
    /// Records acknowledged.
    pub records: u64,
    /// Payload bytes acknowledged.
    pub payload_bytes: u64,
    /// Record frame bytes read from the log (headers + payloads).
    pub frame_bytes: u64,
    /// Compressed bytes acknowledged.
    pub wire_bytes: u64,
    /// Batches acknowledged.
    pub batches: u64,
    /// Gap entries sent.
    pub gaps: u64,
    /// Batches dead-lettered.
    pub dead_lettered: u64,
    /// Failed attempts (retried).
    pub retries: u64,
}

impl Progress {
    /// Payload bytes per wire byte.
    pub fn ratio(&self) -> f64 {
        if self.wire_bytes == 0 {
            0.0
        } else {
            self.payload_bytes as f64 / self.wire_bytes as f64
        }
    }
}

/// One uploader of one log directory; holds the directory's uploader lock.
pub struct Uploader {
    cfg: UploadConfig,
    public: [u8; 32],
    updir: PathBuf,
    _lock: File,
    store: CursorStore,
    cursor: CursorState,
    status: Status,
    builder: BatchBuilder,
    transport: Option<Transport>,
    backoff: Backoff,
    /// The gap report of a dead-lettered batch, sent until acknowledged (see `report`).
    report: Option<Built>,
    /// Whether this pass already checked the URL's scheme against the server (see
    /// `crate::scheme`): once per pass, after the first broken exchange.
    scheme_checked: bool,
    /// Warnings from opening (damaged cursor...), for the caller to print.
    pub warnings: Vec<String>,
}

/// The builder's view of the uploader: trimmed gaps' record counts from the log's trim
/// ledger, which every trimmer (the probes' retention, ours) appends to before or right after
/// it removes a segment, and the counters to carry. The status also knows the records before
/// the cursor and before the end of the batch in flight.
struct Notes<'a>(&'a Status, &'a std::path::Path);
impl Observer for Notes<'_> {
    fn trimmed_records(
        &mut self,
        start: segment_log::Position,
        first: u64,
        count: u64,
        before: Option<u64>,
    ) -> Option<u64> {
        let ledger = segment_log::ledger::read(self.1).ok()?;
        let offset = if start.segment == first {
            start.offset
        } else {
            0
        };
        let before = before.or_else(|| {
            self.0
                .known_records_before()
                .iter()
                .flatten()
                .find(|k| (k.segment, k.offset) == (start.segment, start.offset))
                .map(|k| k.records)
        });
        ledger.records_lost(offset, first, count, before)
    }
    fn counters(&mut self, gaps: &[Gap]) -> Vec<(String, u64)> {
        counters(self.1, self.0, gaps)
    }
}

/// Whether a gap of this reason counts in `uploader.corrupt_ranges`.
fn is_corrupt_range(reason: &GapReason) -> bool {
    !matches!(
        reason,
        GapReason::Trimmed
            | GapReason::UndecodableRecord
            | GapReason::DeadLettered
            | GapReason::OversizedRecord
    )
}

/// The device counters of a batch: the recorder's, and the uploader's totals including what
/// the batch's own `gaps` add (the totals in `status` count acknowledged batches only, so a
/// rebuilt batch carries the same values).
fn counters(dir: &std::path::Path, s: &Status, gaps: &[Gap]) -> Vec<(String, u64)> {
    let mut v = Vec::new();
    if let Ok(c) = recorder::counters::read(dir) {
        v.extend(
            c.dropped
                .iter()
                .map(|(k, n)| (format!("recorder.dropped.{k}"), *n)),
        );
        v.extend(
            c.spooled
                .iter()
                .map(|(k, n)| (format!("recorder.spooled.{k}"), *n)),
        );
    }
    let corrupt = gaps.iter().filter(|g| is_corrupt_range(&g.reason)).count() as u64;
    v.push((
        "uploader.dead_lettered_batches".into(),
        s.dead_lettered_batches,
    ));
    v.push((
        "uploader.dead_lettered_records".into(),
        s.dead_lettered_records,
    ));
    v.push(("uploader.expired_records".into(), s.expired_records));
    v.push((
        "uploader.corrupt_ranges".into(),
        s.corrupt_ranges.saturating_add(corrupt),
    ));
    v
}

/// Takes the one-uploader lock of `updir` (fails at once if held).
pub fn lock(updir: &std::path::Path) -> anyhow::Result<File> {
    let sharing =
        state::ensure_dir(updir).with_context(|| format!("cannot create {}", updir.display()))?;
    let path = updir.join(state::LOCK_FILE);
    let mut f = sharing
        .open_or_create(std::fs::OpenOptions::new().read(true).write(true), &path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    if f.try_lock().is_err() {
        let pid = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(anyhow!(
            "another uploader is running for this log (pid {}); lock {} is held",
            pid.trim(),
            path.display()
        ));
    }
    use std::io::{Seek, Write};
    let _ = f
        .set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|_| write!(f, "{}", std::process::id()));
    Ok(f)
}

impl Uploader {
    /// Opens the uploader of `cfg.dir`. `Ok(None)` when there is no log yet.
    pub fn open(cfg: UploadConfig) -> anyhow::Result<Option<Uploader>> {
        // The uploader writes its state in the log directory and trims segments: a shared
        // log it may not write is an error that names the group to join.
        segment_log::perms::check_access(&cfg.dir, true)?;
        let Some(id) = LogId::load(&cfg.dir)
            .with_context(|| format!("cannot read the log id in {}", cfg.dir.display()))?
        else {
            return Ok(None);
        };
        let updir = cfg.upload_dir();
        let lock = lock(&updir)?;
        let public = id.public();
        let mut store = CursorStore::open(&updir)?;
        let loaded = store
            .load(&public)
            .context("cannot read the upload cursor")?;
        let (mut status, w) = Status::load(&updir);
        // Older versions stored the full upload URL in errors; the next save drops it.
        status.last_error = status
            .last_error
            .map(|e| crate::transport::scrub_private_id(&e, &id.private()));
        let mut warnings = loaded.warnings;
        warnings.extend(w);
        let mut builder =
            BatchBuilder::new(&cfg.dir, public, cfg.zstd_level, ReaderOptions::default())?;
        let format = crate::batch::BodyFormat::of(&cfg);
        builder.set_format(format);
        let transport = cfg.endpoint(&id.private()).map(|url| {
            Transport::new(url, cfg.token.clone(), cfg.connect_timeout, cfg.timeout).with_wire(
                crate::transport::Wire {
                    format,
                    headers: cfg.headers.clone(),
                },
            )
        });
        let backoff = Backoff::new(cfg.backoff_base, cfg.backoff_cap);
        // A gap report is pending only while its range is the one in flight.
        let report = match report::load(&updir, &public, format, cfg.zstd_level) {
            Ok(Some(r)) if loaded.state.inflight == Some((r.first, r.last)) => Some(r),
            Ok(stale) => {
                if stale.is_some() {
                    report::remove(&updir).with_context(|| {
                        format!(
                            "cannot remove {}",
                            updir.join(report::GAP_REPORT_FILE).display()
                        )
                    })?;
                }
                None
            }
            Err(why) => {
                // The in-flight range is rebuilt from the log, refused again and reported.
                let _ = report::remove(&updir);
                warnings.push(format!("{why}; removed it"));
                None
            }
        };
        let mut u = Uploader {
            cfg,
            public,
            updir,
            _lock: lock,
            store,
            cursor: loaded.state,
            status,
            builder,
            transport,
            backoff,
            report,
            scheme_checked: false,
            warnings,
        };
        if u.cursor.position == Position::default() {
            // Anchor a fresh cursor at the oldest segment, so segments removed later (before
            // they were uploaded) are reported as a gap instead of silently skipped.
            let segs =
                segment_log::fs::live_segments(&u.cfg.dir.join(segment_log::fs::SEGMENTS_DIR))
                    .unwrap_or_default();
            if let Some(&oldest) = segs.first() {
                // Segments the probes trimmed before any upload are reported too, from the
                // oldest one whose count the trim ledger holds without a hole up to `oldest`.
                let ledger = segment_log::ledger::read(&u.cfg.dir).unwrap_or_default();
                let mut first = oldest;
                while first > 1 && ledger.entries.contains_key(&(first - 1)) {
                    first -= 1;
                }
                u.cursor.position = Position {
                    segment: first,
                    offset: 0,
                };
                u.persist()?;
            }
        }
        Ok(Some(u))
    }

    /// The configuration.
    pub fn config(&self) -> &UploadConfig {
        &self.cfg
    }

    /// The persisted cursor.
    pub fn cursor(&self) -> &CursorState {
        &self.cursor
    }

    /// The persisted status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// Bytes not uploaded yet.
    pub fn backlog_bytes(&self) -> u64 {
        crate::backlog::backlog_bytes(&self.cfg.dir, self.cursor.position)
    }

    /// What the `[upload]` policy says to `trigger` now, given this log's backlog, opt-in,
    /// last pass and budget.
    pub fn decide(&self, trigger: Trigger) -> Decision {
        let now = now_ms();
        let inputs = Inputs {
            now_ms: now,
            opted_in: self.cfg.opted_in(),
            backlog_bytes: self.backlog_bytes(),
            oldest_record_ms: crate::backlog::oldest_record_ms(&self.cfg.dir, self.cursor.position),
            last_pass_ms: self.status.last_pass_ms,
            budget_used: self.status.clone().budget_used(now),
        };
        self.cfg.policy.decide(trigger, &inputs)
    }

    fn limits(&self) -> BatchLimits {
        BatchLimits {
            max_bytes: self.cfg.batch_max_bytes,
            max_records: self.cfg.batch_max_records,
            max_gaps: 10_000,
        }
    }

    fn persist(&mut self) -> anyhow::Result<()> {
        self.store
            .store(&mut self.cursor)
            .context("cannot write the upload cursor")
    }

    fn save_status(&mut self) {
        if let Err(e) = self.status.save(&self.updir) {
            self.warnings.push(format!(
                "cannot write {}: {e}",
                self.updir.join(state::STATE_FILE).display()
            ));
        }
    }

    pub(crate) fn note_error(&mut self, msg: &str) {
        self.status.last_error = Some(msg.to_owned());
        self.status.last_error_ms = Some(now_ms());
        self.status.last_error_pass = Some(self.status.passes);
        self.save_status();
    }

    /// The counters a batch built now carries (none of its own gaps).
    fn counters(&self) -> Vec<(String, u64)> {
        counters(&self.cfg.dir, &self.status, &[])
    }

    /// Uploads until the live end (or `opts.target`), calling `progress` after every
    /// acknowledged batch.
    pub fn pass(
        &mut self,
        opts: &PassOptions,
        waiter: &mut dyn Waiter,
        progress: &mut dyn FnMut(&Progress),
    ) -> anyhow::Result<(PassOutcome, Progress)> {
        let mut p = Progress::default();
        self.status.passes += 1;
        self.scheme_checked = false;
        if self.transport.is_none() {
            let msg = format!("no collector URL configured: {}", crate::config::URL_HOWTO);
            self.note_error(&msg);
            return Ok((PassOutcome::Configuration(msg), p));
        }
        let started = now_ms();
        self.status.next_attempt_ms = None;
        self.status.last_attempt_ms = Some(started);
        let outcome = loop {
            if waiter.stop_requested() {
                break PassOutcome::Stopped;
            }
            if opts.target.is_some_and(|t| self.cursor.position >= t) {
                break PassOutcome::Complete;
            }
            if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                break PassOutcome::Failed(
                    "the deadline passed before everything was delivered".into(),
                );
            }
            if opts.trigger == Trigger::Scheduled {
                if let Some(budget) = self.cfg.policy.daily_budget {
                    if self.status.budget_used(now_ms()) >= budget {
                        break PassOutcome::BudgetExhausted;
                    }
                }
            }
            let from = self.cursor.position;
            // The gap report of a dead-lettered batch is resent until acknowledged.
            let pending = self
                .report
                .clone()
                .filter(|r| r.first == from && self.cursor.inflight == Some((r.first, r.last)));
            let built = match (pending, self.cursor.inflight) {
                (Some(r), _) => r,
                // Resend exactly the range that was in flight when the last run stopped.
                (None, Some((f, l))) if f == from => {
                    let exact = BatchLimits {
                        max_bytes: u64::MAX,
                        max_records: protocol::Limits::default().max_records,
                        max_gaps: u64::MAX,
                    };
                    self.builder.build(
                        f,
                        &exact,
                        Some(l),
                        i64::MAX,
                        &mut Notes(&self.status, &self.cfg.dir),
                    )?
                }
                (None, _) => {
                    let limits = self.limits();
                    self.builder.build(
                        from,
                        &limits,
                        None,
                        now_ms(),
                        &mut Notes(&self.status, &self.cfg.dir),
                    )?
                }
            };
            let end = built.end;
            if built.is_empty() {
                if built.last > from || self.cursor.inflight.is_some() {
                    self.cursor.position = built.last.max(from);
                    self.cursor.inflight = None;
                    self.persist()?;
                }
            } else if let Err(stop) = self.deliver(built, opts, waiter, &mut p, progress)? {
                break stop;
            }
            match end {
                End::CaughtUp => break PassOutcome::Complete,
                End::Held { until_ms } => break PassOutcome::Held(until_ms),
                End::Full | End::Target => {}
            }
        };
        match &outcome {
            PassOutcome::Failed(m) | PassOutcome::Configuration(m) => self.note_error(m),
            PassOutcome::Stopped => self.save_status(),
            PassOutcome::Complete | PassOutcome::Held(_) | PassOutcome::BudgetExhausted => {
                // Only a pass that did not fail counts for the policy's `interval`, from its
                // end: after a pass that took long (an outage, a collector that refused), the
                // next one is an interval later, not at once with what arrived meanwhile
                // (fleet-sim: that doubled every device's requests after an outage).
                self.status.last_pass_ms = Some(now_ms());
                self.save_status();
            }
        }
        Ok((outcome, p))
    }

    /// Applies retention (`[log]` max_bytes / max_age) with the persisted cursor, and notes
    /// un-uploaded records it removed so the gap carries their count.
    pub fn retention(&mut self) -> anyhow::Result<Option<segment_log::RetentionReport>> {
        let Some(policy) = self.cfg.retention.clone() else {
            return Ok(None);
        };
        let r = segment_log::retention::enforce(
            &self.cfg.dir,
            &policy,
            Some(self.cursor.position),
            &*retention_clock(),
        )?;
        if let Some(e) = &r.ledger_error {
            self.warnings.push(format!(
                "retention could not write the trim ledger ({e}); gaps over the removed segments will say their record count is unknown"
            ));
        }
        if r.unconsumed_records > 0 {
            // The reader may hold a removed segment open and would go on reading the deleted
            // file: start again at the cursor, so the reader reports exactly what is gone.
            self.builder.reset();
            // The counts are in the trim ledger (retention appended them), where the gap the
            // reader reports over these segments finds them.
            self.status.expired_records += r.unconsumed_records;
            self.warnings.push(format!(
                "retention removed {} records that were not uploaded yet (segments {:?})",
                r.unconsumed_records, r.removed
            ));
            self.save_status();
        }
        Ok(Some(r))
    }
}

/// Environment variable naming a file that shifts the clock retention sees: a test hook for
/// the torture harness (`tests/e2e/torture.rs`), which jumps it years forward and back while the
/// daemon runs. The file holds `<seconds>` (added to the wall clock) and optionally
/// `other-boot` (a different boot id, so ages come from the wall clock, as after a reboot).
/// Unset (always, outside tests): the system clock. Only in builds with the `test-clock`
/// feature (the root package's tests enable it); a release build has no such hook.
#[cfg(feature = "test-clock")]
pub const TEST_CLOCK_FILE_ENV: &str = "SEGLOG_TEST_CLOCK_FILE";

#[cfg(not(feature = "test-clock"))]
fn retention_clock() -> Box<dyn segment_log::Clock> {
    Box::new(SystemClock)
}

#[cfg(feature = "test-clock")]
fn retention_clock() -> Box<dyn segment_log::Clock> {
    use segment_log::Clock;
    let text = std::env::var_os(TEST_CLOCK_FILE_ENV).and_then(|p| std::fs::read_to_string(p).ok());
    let mut words = text.as_deref().unwrap_or("").split_whitespace();
    let skew_s = words
        .next()
        .and_then(|w| w.parse::<i64>().ok())
        .unwrap_or(0);
    let other_boot = words.next() == Some("other-boot");
    if skew_s == 0 && !other_boot {
        return Box::new(SystemClock);
    }
    struct Shifted(i64, bool);
    impl Clock for Shifted {
        fn wall_ns(&self) -> i64 {
            SystemClock
                .wall_ns()
                .saturating_add(self.0.saturating_mul(1_000_000_000))
        }
        fn boot_ns(&self) -> u64 {
            SystemClock.boot_ns()
        }
        fn boot_id(&self) -> [u8; 16] {
            let id = SystemClock.boot_id();
            if self.1 {
                id.map(|b| !b)
            } else {
                id
            }
        }
    }
    Box::new(Shifted(skew_s, other_boot))
}

mod attempt;
mod deliver;
mod report;
pub use attempt::{seconds, FailedAttempt};
pub use report::GAP_REPORT_FILE;

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
pub(crate) mod tests;
