//! `seglog upload once` and `seglog upload flush`: one pass, its summary, its exit status,
//! and with `--json` the result as one JSON object on stdout ([`Report`], fields documented
//! in README.md, "JSON results").
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::waiter::{Lines, SignalWaiter};
use crate::config::UploadConfig;
use crate::control::{self, Reply};
use crate::engine::{PassOptions, PassOutcome, Progress, Uploader};
use crate::policy::{Decision, Trigger};

/// The result of `once` or `flush` (`--json` prints it).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// `once` or `flush`.
    pub command: &'static str,
    /// How it ended: `complete`, `nothing`, `no_log`, `held`, `budget_exhausted`, `stopped`,
    /// `failed`, `forbidden`, `wait`, `configuration` or `error`.
    pub outcome: &'static str,
    /// The exit status.
    pub exit_code: u8,
    /// Why it did not deliver everything (`null` when it did).
    pub message: Option<String>,
    /// What the policy said before the pass (`null`: not asked, as when a daemon served
    /// the flush).
    pub policy: Option<Verdict>,
    /// A running daemon served the flush.
    pub via_daemon: bool,
    /// What the server acknowledged.
    pub delivered: Delivered,
    /// Gap entries sent.
    pub gaps: u64,
    /// Batches moved to the dead-letter folder.
    pub dead_lettered: u64,
    /// Attempts that failed and were retried or given up.
    pub failed_attempts: u64,
    /// Wall time of the command.
    pub seconds: f64,
}

/// The policy's verdict in a [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// `upload`, `nothing`, `wait` or `forbidden`.
    pub decision: &'static str,
    /// Why not, for `wait` and `forbidden`.
    pub reason: Option<String>,
}

/// Acknowledged totals in a [`Report`].
#[derive(Debug, Clone, Default, Serialize)]
pub struct Delivered {
    /// Records.
    pub records: u64,
    /// Batches.
    pub batches: u64,
    /// Record payload bytes.
    pub payload_bytes: u64,
    /// Compressed bytes on the wire.
    pub wire_bytes: u64,
}

impl Report {
    fn new(command: &'static str) -> Report {
        Report {
            command,
            outcome: "complete",
            exit_code: 0,
            message: None,
            policy: None,
            via_daemon: false,
            delivered: Delivered::default(),
            gaps: 0,
            dead_lettered: 0,
            failed_attempts: 0,
            seconds: 0.0,
        }
    }

    fn progress(&mut self, p: &Progress) {
        self.delivered = Delivered {
            records: p.records,
            batches: p.batches,
            payload_bytes: p.payload_bytes,
            wire_bytes: p.wire_bytes,
        };
        self.gaps = p.gaps;
        self.dead_lettered = p.dead_lettered;
        self.failed_attempts = p.retries;
    }

    fn end(&mut self, outcome: &'static str, code: u8, message: Option<String>) -> ExitCode {
        self.outcome = outcome;
        self.exit_code = code;
        self.message = message;
        ExitCode::from(code)
    }

    fn policy(&mut self, d: &Decision) {
        let (decision, reason) = match d {
            Decision::Upload => ("upload", None),
            Decision::Nothing => ("nothing", None),
            Decision::Wait { reason, .. } => ("wait", Some(reason.clone())),
            Decision::Forbidden { reason } => ("forbidden", Some(reason.clone())),
        };
        self.policy = Some(Verdict { decision, reason });
    }

    /// Applies a policy verdict; `Some(exit)` when it ends the command before a pass.
    fn gate(&mut self, d: &Decision, human: &Human) -> Option<ExitCode> {
        self.policy(d);
        match d {
            Decision::Upload => None,
            Decision::Nothing => {
                human.out("nothing to upload");
                Some(self.end("nothing", 0, None))
            }
            Decision::Wait { reason, .. } | Decision::Forbidden { reason } => {
                // `once` says it on stdout: "not now" is the normal answer of a timer pass
                // (exit 3), not an error for cron to mail.
                let line = format!("not uploading: {reason}");
                if self.command == "once" {
                    human.out(&line);
                } else {
                    human.err(&line);
                }
                let outcome = if matches!(d, Decision::Wait { .. }) {
                    "wait"
                } else {
                    "forbidden"
                };
                Some(self.end(outcome, 3, Some(reason.clone())))
            }
        }
    }
}

/// What is printed for people: on stdout unless `--json` (then only the JSON object is),
/// explanations on stderr always.
pub(super) struct Human {
    json: bool,
}

impl Human {
    fn out(&self, line: &str) {
        if !self.json {
            println!("{line}");
        }
    }
    fn err(&self, line: &str) {
        eprintln!("seglog upload: {line}");
    }
}

/// Runs `once` or `flush` through `f`, then prints the JSON object with `--json` (an error
/// becomes `outcome: "error"`, exit 2, and is printed on stderr as the binary prints errors).
pub(super) fn report(
    command: &'static str,
    json: bool,
    f: impl FnOnce(&mut Report, &Human) -> anyhow::Result<ExitCode>,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let mut r = Report::new(command);
    let human = Human { json };
    let result = f(&mut r, &human);
    r.seconds = start.elapsed().as_secs_f64();
    let code = match result {
        Ok(code) => code,
        Err(e) if json => {
            eprintln!("seglog: error: {e:#}");
            r.end("error", 2, Some(format!("{e:#}")))
        }
        Err(e) => return Err(e),
    };
    if json {
        println!("{}", serde_json::to_string(&r)?);
    }
    Ok(code)
}

fn print_warnings(up: &mut Uploader, human: &Human) {
    for w in up.warnings.drain(..) {
        human.err(&format!("warning: {w}"));
    }
}

/// The outcome's name, exit status and explanation.
fn classify(out: &PassOutcome) -> (&'static str, u8, Option<String>) {
    match out {
        PassOutcome::Complete => ("complete", 0, None),
        PassOutcome::Held(until) => (
            "held",
            1,
            Some(format!(
                "stopped before records the recorder's rate limiter holds back until {}",
                humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(*until).unwrap_or(0))
                )
            )),
        ),
        PassOutcome::BudgetExhausted => (
            "budget_exhausted",
            1,
            Some("stopped: the daily upload budget is used up".into()),
        ),
        PassOutcome::Stopped => (
            "stopped",
            1,
            Some("stopped by a signal; the rest will go next time".into()),
        ),
        PassOutcome::Failed(m) => (
            "failed",
            1,
            Some(format!("not everything was delivered: {m}")),
        ),
        PassOutcome::Configuration(m) => ("configuration", 2, Some(m.clone())),
    }
}

/// Ends the command after a pass: summary, explanation, exit status.
fn after_pass(
    r: &mut Report,
    human: &Human,
    out: &PassOutcome,
    p: &Progress,
    t: Duration,
) -> ExitCode {
    r.progress(p);
    summary(human, p, t);
    let (outcome, code, message) = classify(out);
    if let Some(m) = &message {
        human.err(m);
    }
    r.end(outcome, code, message)
}

pub(super) fn once(cfg: UploadConfig, r: &mut Report, human: &Human) -> anyhow::Result<ExitCode> {
    let Some(mut up) = Uploader::open(cfg)? else {
        human.out("nothing to upload (no log yet)");
        return Ok(r.end("no_log", 0, None));
    };
    print_warnings(&mut up, human);
    let retention = up.retention();
    print_warnings(&mut up, human);
    let decision = up.decide(Trigger::Scheduled);
    if let Some(code) = r.gate(&decision, human) {
        retention?;
        return Ok(code);
    }
    let max = up.config().max_attempts;
    let mut w = SignalWaiter::new(None, Lines::default())?;
    let o = PassOptions {
        trigger: Trigger::Scheduled,
        max_attempts: Some(max),
        target: None,
        deadline: None,
    };
    let start = Instant::now();
    let (out, p) = up.pass(&o, &mut w, &mut |_| {})?;
    let _ = up.retention();
    print_warnings(&mut up, human);
    Ok(after_pass(r, human, &out, &p, start.elapsed()))
}

fn summary(human: &Human, p: &Progress, t: Duration) {
    human.out(&format!(
        "uploaded {} records ({} bytes of payload, {} bytes on the wire, ratio {:.1}x) in {} batches, {:.2}s{}{}",
        p.records,
        p.payload_bytes,
        p.wire_bytes,
        p.ratio(),
        p.batches,
        t.as_secs_f64(),
        if p.gaps > 0 { format!("; {} gaps reported", p.gaps) } else { String::new() },
        if p.dead_lettered > 0 { format!("; {} batches dead-lettered", p.dead_lettered) } else { String::new() },
    ));
}

/// A progress bar on a terminal; hidden otherwise (retry lines are then plain lines).
fn bar(total: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let b = indicatif::ProgressBar::new(total);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{spinner} {bytes}/{total_bytes} [{wide_bar}] {binary_bytes_per_sec} {msg}",
    ) {
        b.set_style(style);
    }
    b
}

pub(super) fn flush(
    cfg: UploadConfig,
    timeout: Duration,
    r: &mut Report,
    human: &Human,
) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(conn) = control::connect(&cfg.upload_dir()) {
            if let Some(src) = cfg.url_source.filter(|s| *s != crate::config::URL_KEY) {
                human.err(&format!(
                    "warning: a daemon runs for this log: it uploads to its own URL, not the one from {src}"
                ));
            }
            return flush_via_daemon(conn, deadline, start, r, human);
        }
        match Uploader::open(cfg.clone()) {
            Ok(None) => {
                human.out("nothing to upload (no log yet)");
                return Ok(r.end("no_log", 0, None));
            }
            Ok(Some(up)) => return flush_here(up, deadline, start, r, human),
            // Another uploader (a `once` pass) holds the lock without a socket: wait for it.
            Err(e)
                if format!("{e:#}").contains("another uploader is running")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

fn flush_via_daemon(
    conn: std::os::unix::net::UnixStream,
    deadline: Instant,
    start: Instant,
    r: &mut Report,
    human: &Human,
) -> anyhow::Result<ExitCode> {
    r.via_daemon = true;
    let b = bar(0);
    let lines = Lines::above(&b);
    let left = deadline.saturating_duration_since(Instant::now());
    let reply = control::request_flush(conn, left, &mut |reply| match reply {
        Reply::Progress {
            frame_bytes,
            total_bytes,
            ..
        } => {
            b.set_length(*total_bytes);
            b.set_position(*frame_bytes);
        }
        Reply::Retry { message } => lines.say(message),
        Reply::Done { .. } => {}
    });
    b.finish_and_clear();
    match reply {
        Ok(Reply::Done {
            ok,
            forbidden,
            message,
            progress,
        }) => {
            r.progress(&progress);
            summary(human, &progress, start.elapsed());
            if ok {
                Ok(r.end("complete", 0, None))
            } else {
                human.err(&message);
                if forbidden {
                    Ok(r.end("forbidden", 3, Some(message)))
                } else {
                    Ok(r.end("failed", 1, Some(message)))
                }
            }
        }
        Ok(_) => Ok(r.end(
            "failed",
            1,
            Some("the daemon ended the flush without a result".into()),
        )),
        Err(e) => {
            let m = format!("flush through the daemon failed: {e}");
            human.err(&m);
            Ok(r.end("failed", 1, Some(m)))
        }
    }
}

fn flush_here(
    mut up: Uploader,
    deadline: Instant,
    start: Instant,
    r: &mut Report,
    human: &Human,
) -> anyhow::Result<ExitCode> {
    print_warnings(&mut up, human);
    let target = crate::backlog::log_end(&up.config().dir);
    let decision = up.decide(Trigger::Flush);
    if let Some(code) = r.gate(&decision, human) {
        return Ok(code);
    }
    let b = bar(up.backlog_bytes());
    let mut w = SignalWaiter::new(Some(deadline), Lines::above(&b))?;
    let o = PassOptions {
        trigger: Trigger::Flush,
        max_attempts: Some(up.config().max_attempts),
        target,
        deadline: Some(deadline),
    };
    let (out, p) = up.pass(&o, &mut w, &mut |p| b.set_position(p.frame_bytes))?;
    b.finish_and_clear();
    let _ = up.retention();
    print_warnings(&mut up, human);
    Ok(after_pass(r, human, &out, &p, start.elapsed()))
}
