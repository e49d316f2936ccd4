//! `seglog probe pipe`: each line of standard input becomes a record.
//!
//! For `logger`, rsyslog's `omprog`, or `journalctl -f | seglog probe pipe -c ...`. Lines
//! are appended in batches (one segment-log reservation per batch): a batch is written when
//! it holds `--batch-lines` lines or `--batch-bytes` bytes, or when no new line arrived for
//! `--flush-after`, so a quiet source is never delayed longer than that. The trailing `\n`
//! (and `\r`) is removed; empty lines are skipped; a line longer than the largest payload is
//! cut to it. At end of input (also when the writer upstream died: a broken pipe is just the
//! end) the last batch is written and counts are printed on standard error.
use std::io::BufRead;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use crate::cli::{parse_class, parse_event_id, parse_severity};
use crate::config::GlobalArgs;
use crate::record::{Classification, EventId, Severity};
use crate::{RecordBuilder, Recorder};

/// Options of `seglog probe pipe`.
#[derive(Debug, Clone, clap::Args)]
pub struct PipeArgs {
    /// Classification of every record, e.g. org.example/syslog/line.
    #[arg(short = 'c', long = "class", value_name = "CLASS", value_parser = parse_class)]
    pub class: Classification,
    /// Severity of every record: 1 (low) to 4 (critical).
    #[arg(short = 's', long = "severity", value_name = "SEV", default_value = "1", value_parser = parse_severity)]
    pub severity: Severity,
    /// Event id given to every record (32 lowercase hex).
    #[arg(short = 'e', long = "event-id", value_name = "EVENT_ID", value_parser = parse_event_id)]
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
    /// The read error that ended input early, if any.
    pub read_error: Option<String>,
}

impl std::fmt::Display for PipeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pipe: {} lines read, {} records in {} batches, {} truncated, {} empty skipped, {} dropped",
            self.lines, self.records, self.batches, self.truncated, self.empty, self.dropped
        )?;
        if let Some(e) = &self.read_error {
            write!(f, "; input ended by a read error: {e}")?;
        }
        Ok(())
    }
}

/// Runs the probe on standard input.
pub fn run(args: PipeArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.batch_lines > 0, "--batch-lines must be at least 1");
    let rec = crate::cli::open_recorder(global, true)?;
    let report = run_with(
        &args,
        &rec,
        std::io::BufReader::with_capacity(64 << 10, std::io::stdin()),
    )?;
    eprintln!("{report}");
    Ok(ExitCode::SUCCESS)
}

enum Msg {
    Line(Vec<u8>),
    End(Option<String>),
}

/// Reads `input` line by line on a thread and appends batches from this one.
pub fn run_with(
    args: &PipeArgs,
    rec: &Recorder,
    input: impl BufRead + Send,
) -> anyhow::Result<PipeReport> {
    let (tx, rx) = mpsc::sync_channel::<Msg>(args.batch_lines.max(64) * 4);
    let max = rec.max_payload();
    // A batch is one reservation: keep it well inside a segment.
    let batch_bytes = args
        .batch_bytes
        .min(usize::try_from(rec.log().options().segment_size / 4).unwrap_or(usize::MAX));
    std::thread::scope(|s| {
        s.spawn(move || {
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
        let mut report = PipeReport::default();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        let mut bytes = 0usize;
        let builder = {
            let b = RecordBuilder::new(args.class.clone(), args.severity);
            match args.event_id {
                Some(e) => b.event_id(e),
                None => b,
            }
        };
        let flush = |batch: &mut Vec<Vec<u8>>, report: &mut PipeReport| -> anyhow::Result<()> {
            if batch.is_empty() {
                return Ok(());
            }
            let recs: Vec<RecordBuilder<'_>> =
                batch.iter().map(|l| builder.clone().payload(l)).collect();
            for outcome in rec.record_batch(&recs)? {
                match outcome {
                    Ok(_) => report.records += 1,
                    Err(e) if e.is_rate_limited() => report.dropped += 1,
                    Err(e) => return Err(e.into()),
                }
            }
            report.batches += 1;
            batch.clear();
            Ok(())
        };
        loop {
            let msg = match rx.recv_timeout(args.flush_after) {
                Ok(m) => m,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    flush(&mut batch, &mut report)?;
                    bytes = 0;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => Msg::End(None),
            };
            match msg {
                Msg::Line(mut line) => {
                    report.lines += 1;
                    while line.last().is_some_and(|&c| c == b'\n' || c == b'\r') {
                        line.pop();
                    }
                    if line.is_empty() {
                        report.empty += 1;
                        continue;
                    }
                    if line.len() > max {
                        line.truncate(max);
                        report.truncated += 1;
                    }
                    bytes += line.len();
                    batch.push(line);
                    if batch.len() >= args.batch_lines || bytes >= batch_bytes {
                        flush(&mut batch, &mut report)?;
                        bytes = 0;
                    }
                }
                Msg::End(err) => {
                    flush(&mut batch, &mut report)?;
                    report.read_error = err;
                    return Ok(report);
                }
            }
        }
    })
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
        }
    }

    #[test]
    fn each_non_empty_line_becomes_a_record_in_order() {
        let d = tempfile::tempdir().unwrap();
        let rec = Recorder::open_with(&test_config(d.path()), FakeClock::new(), false).unwrap();
        let input = b"one\ntwo\r\n\nthree\nfour\nfive without newline";
        let report = run_with(&args(), &rec, &input[..]).unwrap();
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
        let report = run_with(&args(), &rec, &input[..]).unwrap();
        assert_eq!(report.truncated, 1);
        assert_eq!(read_all(d.path())[0].3.len(), rec.max_payload());
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
