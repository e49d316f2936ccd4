//! `seglog probe pipe`: each line of standard input becomes a record.
//!
//! For `logger`, rsyslog's `omprog`, or `journalctl -f | seglog probe pipe -c ...`. Lines
//! are appended in batches (one segment-log reservation per batch): a batch is written when
//! it holds `--batch-lines` lines or `--batch-bytes` bytes, or when no new line arrived for
//! `--flush-after`, so a quiet source is never delayed longer than that (that timer runs only
//! while lines are pending: an idle probe sleeps until input arrives). The trailing `\n`
//! (and `\r`) is removed; empty lines are skipped; a line longer than the largest payload is
//! cut to it. At end of input (also when the writer upstream died: a broken pipe is just the
//! end) the last batch is written and counts are printed on standard error. SIGTERM and
//! SIGINT end the run the same way, input still open: every line read before the signal is
//! written (lines already taken from the pipe, up to half a second more of them), the summary
//! says which signal stopped it, and the exit status is 0.
//!
//! When the log is out of space (see [`super::full_disk`]) the probe keeps reading: with
//! `rate_limit_strategy = spool` it holds up to `--hold-bytes` of lines in memory and retries,
//! with `drop` it drops them; lines given up are counted (`no_space`), appends resume when
//! space returns, and end of input ends the run even while the disk is still full.
use std::collections::VecDeque;
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use super::full_disk::{FullDisk, RETRY_EVERY};
use crate::config::RateLimitStrategy;
use crate::record::{Classification, EventId, Severity};
use crate::{RecordBuilder, Recorder};

/// Options of `seglog probe pipe`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipeArgs {
    /// Classification of every record, e.g. org.example/syslog/line.
    #[arg(short = 'c', long = "class", value_name = "CLASS")]
    pub class: Classification,
    /// Severity of every record: 1 (low) to 4 (critical).
    #[arg(
        short = 's',
        long = "severity",
        value_name = "SEV",
        default_value = "1"
    )]
    pub severity: Severity,
    /// Event id given to every record (32 lowercase hex).
    #[arg(short = 'e', long = "event-id", value_name = "EVENT_ID")]
    pub event_id: Option<EventId>,
    /// Most lines per append.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch_lines: usize,
    /// Most payload bytes per append.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub batch_bytes: usize,
    /// Write a partial batch after this long without a new line.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = humantime::parse_duration)]
    pub flush_after: Duration,
    /// While the log is out of space and rate_limit_strategy is spool: most bytes of lines
    /// held in memory until space returns (lines past that are dropped and counted).
    #[arg(long, value_name = "BYTES", default_value_t = 8 << 20)]
    pub hold_bytes: usize,
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PipeReport {
    /// Lines read (empty ones included).
    pub lines: u64,
    /// Records appended.
    pub records: u64,
    /// Appends (batches).
    pub batches: u64,
    /// Lines cut to the largest payload.
    pub truncated: u64,
    /// Empty lines skipped.
    pub empty: u64,
    /// Lines refused (rate limit with strategy drop).
    pub dropped: u64,
    /// Records the rate limiter spooled (written, held back from upload).
    pub spooled: u64,
    /// The latest release time of those (wall ms since the Unix epoch).
    pub spooled_until_ms: Option<i64>,
    /// Lines given up because the log was out of space (see [`super::full_disk`]).
    pub no_space_dropped: u64,
    /// How many times the log ran out of space.
    pub no_space_episodes: u64,
    /// The read error that ended input early, if any.
    pub read_error: Option<String>,
    /// The signal that ended the run (`SIGTERM`, `SIGINT`), if one did.
    pub stopped_by: Option<&'static str>,
}

impl std::fmt::Display for PipeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pipe: {} lines read, {} records in {} batches, {} truncated, {} empty skipped, {} dropped ({} by the rate limit, {} for lack of space)",
            self.lines,
            self.records,
            self.batches,
            self.truncated,
            self.empty,
            self.dropped + self.no_space_dropped,
            self.dropped,
            self.no_space_dropped
        )?;
        write!(
            f,
            ", {} held back by the rate limit (spooled)",
            self.spooled
        )?;
        if let Some(until) = self.spooled_until_ms {
            let now = crate::counters::now_wall_ms();
            write!(f, " {}", crate::counters::describe_release(until, now))?;
        }
        if self.no_space_episodes > 0 {
            write!(
                f,
                "; the log ran out of space {} times",
                self.no_space_episodes
            )?;
        }
        if let Some(e) = &self.read_error {
            write!(f, "; input ended by a read error: {e}")?;
        }
        if let Some(sig) = self.stopped_by {
            write!(f, "; stopped by {sig}")?;
        }
        Ok(())
    }
}

impl PipeArgs {
    /// Checks the options (before the log is opened).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.batch_lines > 0, "--batch-lines must be at least 1");
        Ok(())
    }
}

/// Runs the probe on standard input until it ends or SIGTERM/SIGINT arrives.
pub fn run(args: PipeArgs, rec: &Recorder) -> anyhow::Result<ExitCode> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    args.check()?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])
        .map_err(|e| anyhow::anyhow!("cannot install handlers for SIGTERM and SIGINT: {e}"))?;
    let report = run_until(
        &args,
        rec,
        std::io::BufReader::with_capacity(64 << 10, std::io::stdin()),
        move |stop| {
            std::thread::spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    stop.stop(if sig == SIGINT { "SIGINT" } else { "SIGTERM" });
                }
            });
        },
    )?;
    eprintln!("{report}");
    Ok(ExitCode::SUCCESS)
}

enum Msg {
    Line(Vec<u8>),
    End(Option<String>),
    Stop(&'static str),
}

/// Ends a running pipe probe as if its input had ended (see [`run_until`]).
#[derive(Clone)]
pub struct PipeStop(mpsc::SyncSender<Msg>);

impl PipeStop {
    /// Asks the probe to write what it read and return; `why` goes into the report.
    pub fn stop(&self, why: &'static str) {
        let _ = self.0.send(Msg::Stop(why));
    }
}

/// After a stop: lines the reader already took from the input are still taken while they
/// keep coming at least this often...
const STOP_DRAIN_GAP: Duration = Duration::from_millis(20);
/// ...for at most this long.
const STOP_DRAIN_MAX: Duration = Duration::from_millis(500);

/// Reads `input` line by line on a thread and appends batches from this one.
///
/// The reader thread is detached: when appending fails for good (an error other than a
/// full log) this returns at once instead of waiting for input to end. While the log is out
/// of space this thread keeps taking lines (held up to `--hold-bytes` with strategy spool,
/// else dropped and counted), so end of input is always seen and ends the run.
pub fn run_with(
    args: &PipeArgs,
    rec: &Recorder,
    input: impl BufRead + Send + 'static,
) -> anyhow::Result<PipeReport> {
    run_until(args, rec, input, |_| {})
}

/// [`run_with`], handing `on_start` a [`PipeStop`] that ends the run early (the CLI gives
/// it to a signal thread).
pub fn run_until(
    args: &PipeArgs,
    rec: &Recorder,
    input: impl BufRead + Send + 'static,
    on_start: impl FnOnce(PipeStop),
) -> anyhow::Result<PipeReport> {
    let (tx, rx) = mpsc::sync_channel::<Msg>(args.batch_lines.max(64) * 4);
    on_start(PipeStop(tx.clone()));
    std::thread::spawn(move || {
        let mut input = input;
        let end = loop {
            let mut line = Vec::new();
            match input.read_until(b'\n', &mut line) {
                Ok(0) => break None,
                Ok(_) => {
                    if tx.send(Msg::Line(line)).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e.to_string()),
            }
        };
        let _ = tx.send(Msg::End(end));
    });
    Appender::new(args, rec).run(rx)
}

/// The appending side: lines waiting to be written, and the full-disk state.
struct Appender<'a> {
    args: &'a PipeArgs,
    rec: &'a Recorder,
    builder: RecordBuilder<'static>,
    max: usize,
    batch_bytes: usize,
    hold_cap: usize,
    plan: String,
    pending: VecDeque<Vec<u8>>,
    pending_bytes: usize,
    full: FullDisk,
    report: PipeReport,
}

impl<'a> Appender<'a> {
    fn new(args: &'a PipeArgs, rec: &'a Recorder) -> Self {
        let builder = {
            let b = RecordBuilder::new(args.class.clone(), args.severity);
            match args.event_id {
                Some(e) => b.event_id(e),
                None => b,
            }
        };
        // A batch is one reservation: keep it well inside a segment.
        let batch_bytes = args
            .batch_bytes
            .min(usize::try_from(rec.log().options().segment_size / 4).unwrap_or(usize::MAX));
        let (hold_cap, plan) = match rec.strategy() {
            RateLimitStrategy::Spool => (
                args.hold_bytes,
                format!(
                    "holding up to {} bytes of lines in memory and retrying every {} ms (rate_limit_strategy = spool); lines past that are dropped and counted as no_space",
                    args.hold_bytes,
                    RETRY_EVERY.as_millis()
                ),
            ),
            RateLimitStrategy::Drop => (
                0,
                "dropping lines and counting them as no_space until space returns (rate_limit_strategy = drop)"
                    .to_string(),
            ),
        };
        Appender {
            args,
            rec,
            builder,
            max: rec.max_payload(),
            batch_bytes,
            hold_cap,
            plan,
            pending: VecDeque::new(),
            pending_bytes: 0,
            full: FullDisk::new("pipe"),
            report: PipeReport::default(),
        }
    }

    /// Takes messages until end of input; `rx` is dropped on return, which ends the reader.
    fn run(mut self, rx: mpsc::Receiver<Msg>) -> anyhow::Result<PipeReport> {
        loop {
            // The flush (and full-disk retry) timer runs only while lines are pending: an
            // idle probe blocks in `recv` and is never woken until input arrives.
            let msg = if self.pending.is_empty() {
                rx.recv().unwrap_or(Msg::End(None))
            } else {
                let wait = if self.full.is_full() {
                    self.args.flush_after.min(RETRY_EVERY)
                } else {
                    self.args.flush_after
                };
                match rx.recv_timeout(wait) {
                    Ok(m) => m,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        self.write(true)?;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => Msg::End(None),
                }
            };
            match msg {
                Msg::Line(line) => {
                    self.push(line);
                    self.write(false)?;
                }
                Msg::End(err) => return self.finish(err),
                Msg::Stop(why) => {
                    self.report.stopped_by = Some(why);
                    // Lines the reader took from the input before the signal may still be on
                    // their way: take them too.
                    let until = std::time::Instant::now() + STOP_DRAIN_MAX;
                    let mut end = None;
                    while let Some(left) = until
                        .checked_duration_since(std::time::Instant::now())
                        .filter(|l| !l.is_zero())
                    {
                        match rx.recv_timeout(STOP_DRAIN_GAP.min(left)) {
                            Ok(Msg::Line(line)) => {
                                self.push(line);
                                self.write(false)?;
                            }
                            Ok(Msg::End(err)) => {
                                end = err;
                                break;
                            }
                            Ok(Msg::Stop(_)) => {}
                            Err(_) => break,
                        }
                    }
                    return self.finish(end);
                }
            }
        }
    }

    /// Writes what is pending (input ended, or a stop) and returns the report.
    fn finish(mut self, err: Option<String>) -> anyhow::Result<PipeReport> {
        self.full.allow_try();
        self.write(true)?;
        let left = self.pending.len() as u64;
        if left > 0 {
            eprintln!(
                "pipe: input ended while the log is out of space: {left} held lines dropped (counted as no_space)"
            );
            self.full.drop_records(self.rec, left);
            self.pending.clear();
        }
        let _ = self.rec.flush_counters();
        self.report.no_space_dropped = self.full.dropped;
        self.report.no_space_episodes = self.full.episodes;
        self.report.read_error = err;
        Ok(self.report)
    }

    fn push(&mut self, mut line: Vec<u8>) {
        self.report.lines += 1;
        while line.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
            line.pop();
        }
        if line.is_empty() {
            self.report.empty += 1;
            return;
        }
        if line.len() > self.max {
            line.truncate(self.max);
            self.report.truncated += 1;
        }
        self.pending_bytes += line.len();
        self.pending.push_back(line);
    }

    /// Appends whole batches from the front of `pending` (`all`: a partial last one too).
    /// Out of space, sheds what cannot be held (the newest lines) and counts it.
    fn write(&mut self, all: bool) -> anyhow::Result<()> {
        // Out of space, each retry tries what is there (a steady stream never times out).
        let all = all || self.full.is_full();
        while !self.pending.is_empty() && self.full.should_try() {
            let (mut n, mut bytes) = (0usize, 0usize);
            for l in &self.pending {
                if n >= self.args.batch_lines || (n > 0 && bytes + l.len() > self.batch_bytes) {
                    break;
                }
                n += 1;
                bytes += l.len();
            }
            if !all && n < self.args.batch_lines && bytes < self.batch_bytes {
                break;
            }
            let recs: Vec<RecordBuilder<'_>> = self
                .pending
                .iter()
                .take(n)
                .map(|l| self.builder.clone().payload(l))
                .collect();
            match self.rec.record_batch(&recs) {
                Ok(outcomes) => {
                    self.full.succeeded();
                    for outcome in outcomes {
                        match outcome {
                            Ok(r) => {
                                self.report.records += 1;
                                if let Some(until) = r.held_back_until() {
                                    self.report.spooled += 1;
                                    self.report.spooled_until_ms =
                                        self.report.spooled_until_ms.max(Some(until));
                                }
                            }
                            Err(e) if e.is_rate_limited() => self.report.dropped += 1,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    self.report.batches += 1;
                    self.pending.drain(..n);
                    self.pending_bytes -= bytes;
                }
                Err(e) if e.is_no_space() => self.full.failed(&e, &self.plan),
                Err(e) => return Err(e.into()),
            }
        }
        if self.full.is_full() {
            let mut shed = 0u64;
            while self.pending_bytes > self.hold_cap {
                match self.pending.pop_back() {
                    Some(l) => {
                        self.pending_bytes -= l.len();
                        shed += 1;
                    }
                    None => break,
                }
            }
            self.full.drop_records(self.rec, shed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::writer::tests::{read_all, test_config, FakeClock};

    fn args() -> PipeArgs {
        PipeArgs {
            class: Classification::new("org.test/pipe/line").unwrap(),
            severity: Severity::MEDIUM,
            event_id: None,
            batch_lines: 3,
            batch_bytes: 1 << 20,
            flush_after: Duration::from_millis(50),
            hold_bytes: 1 << 20,
        }
    }

    #[test]
    fn each_non_empty_line_becomes_a_record_in_order() {
        let d = tempfile::tempdir().unwrap();
        let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
        let input = b"one\ntwo\r\n\nthree\nfour\nfive without newline";
        let report = run_with(&args(), &rec, std::io::Cursor::new(input.to_vec())).unwrap();
        assert_eq!(
            (report.lines, report.records, report.empty, report.batches),
            (6, 5, 1, 2)
        );
        let all = read_all(d.path());
        let payloads: Vec<&[u8]> = all.iter().map(|r| &r.3[..]).collect();
        assert_eq!(
            payloads,
            [
                &b"one"[..],
                b"two",
                b"three",
                b"four",
                b"five without newline"
            ]
        );
        assert!(all.iter().all(|r| r.1.severity == Severity::MEDIUM));
    }

    #[test]
    fn overlong_lines_are_cut_to_the_largest_payload() {
        let d = tempfile::tempdir().unwrap();
        let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
        let mut input = vec![b'x'; rec.max_payload() + 100];
        input.push(b'\n');
        let report = run_with(&args(), &rec, std::io::Cursor::new(input.to_vec())).unwrap();
        assert_eq!(report.truncated, 1);
        assert_eq!(read_all(d.path())[0].3.len(), rec.max_payload());
    }

    #[test]
    fn spooled_lines_are_counted_with_their_release_time() {
        let d = tempfile::tempdir().unwrap();
        let mut cfg = test_config(d.path());
        cfg.recorder.rate_limit_enabled = true;
        cfg.recorder.record_burst_limit = Some(2);
        cfg.recorder.strategy = RateLimitStrategy::Spool;
        let rec = Recorder::open_with(&cfg, FakeClock::new(), false).unwrap();
        let input = b"a\nb\nc\nd\ne\n";
        let report = run_with(&args(), &rec, std::io::Cursor::new(input.to_vec())).unwrap();
        assert_eq!((report.records, report.spooled, report.dropped), (5, 3, 0));
        let until = report.spooled_until_ms.expect("a release time");
        let held: Vec<Option<i64>> = read_all(d.path())
            .iter()
            .map(|r| r.1.hold_until_wall_ms)
            .collect();
        assert_eq!(held.iter().flatten().max(), Some(&until), "{held:?}");
        let text = report.to_string();
        assert!(
            text.contains("3 held back by the rate limit (spooled)"),
            "{text}"
        );
        drop(rec);
        let c = crate::counters::read(d.path()).unwrap();
        assert_eq!((c.total_spooled(), c.spooled_until_ms), (3, Some(until)));
    }

    /// Input that gives some lines and then blocks, as a pipe whose writer stays open.
    struct OpenPipe(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for OpenPipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            match self.0.read(buf)? {
                0 => loop {
                    std::thread::sleep(Duration::from_secs(3600));
                },
                n => Ok(n),
            }
        }
    }

    #[test]
    fn a_stop_writes_every_line_read_and_says_so_while_input_stays_open() {
        let d = tempfile::tempdir().unwrap();
        let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
        let mut a = args();
        // Nothing would be written before input ends: only the stop can write these.
        a.batch_lines = 1000;
        a.flush_after = Duration::from_secs(3600);
        let input = std::io::BufReader::new(OpenPipe(std::io::Cursor::new(
            b"one\ntwo\nthree\n".to_vec(),
        )));
        let report = run_until(&a, &rec, input, |stop| {
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                stop.stop("SIGTERM");
            });
        })
        .unwrap();
        assert_eq!((report.lines, report.records), (3, 3), "{report}");
        assert_eq!(report.stopped_by, Some("SIGTERM"));
        assert!(
            report.to_string().ends_with("; stopped by SIGTERM"),
            "{report}"
        );
        assert_eq!(read_all(d.path()).len(), 3);
    }

    struct FailingReader(&'static [u8], bool);
    impl std::io::Read for FailingReader {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 {
                return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
            }
            self.1 = true;
            let n = self.0.len().min(buf.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            Ok(n)
        }
    }

    #[test]
    fn a_broken_input_ends_the_run_after_writing_what_was_read() {
        let d = tempfile::tempdir().unwrap();
        let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
        let input = std::io::BufReader::new(FailingReader(b"a\nb\n", false));
        let report = run_with(&args(), &rec, input).unwrap();
        assert_eq!(report.records, 2);
        assert!(report.read_error.is_some());
        assert!(report.to_string().contains("2 records"));
    }
}
