//! `seglog upload ...`: clap arguments and dispatch. Exit codes: 0 delivered everything (or
//! nothing was pending), 1 ran but did not deliver everything, 2 error, 3 the policy forbids
//! uploading now.
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use config_layers::GlobalArgs;

use crate::config::UploadConfig;
use crate::control::{self, Reply};
use crate::engine::{PassOptions, PassOutcome, Progress, Uploader, Waiter};
use crate::policy::{Decision, Inputs, Trigger};
use crate::state::now_ms;

/// Upload commands.
#[derive(Debug, clap::Subcommand)]
pub enum UploadCommand {
    /// Run the upload daemon: upload whenever the policy allows, serve `flush` on the
    /// control socket, run retention; stops cleanly on SIGTERM/SIGINT.
    Run(RunArgs),
    /// One policy-gated upload pass, for cron and systemd timers. Exit 0: delivered (or
    /// nothing pending), 1: not everything delivered, 2: error, 3: policy says not now.
    Once,
    /// Upload everything written before this call and wait for the server's acknowledgement
    /// (through the running daemon, or directly when none runs). Bypasses the schedule,
    /// not opt-in.
    Flush(FlushArgs),
    /// Show the cursor, backlog, last success and error, and dropped/expired/dead-lettered
    /// counts.
    Status(StatusArgs),
    /// Allow uploads from this machine (creates the opt-in marker).
    OptIn,
    /// Stop uploads from this machine (removes the opt-in marker); recording continues.
    OptOut,
}

/// `seglog upload run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Start uploading at once instead of after a random delay of up to `startup_delay`.
    #[arg(long)]
    pub no_startup_delay: bool,
}

/// `seglog upload flush`.
#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    /// Give up after this long (e.g. 30s, 5m), a request in progress included.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// `seglog upload status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `seglog upload ...`.
pub fn run(cmd: UploadCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let cfg = UploadConfig::load(global)?;
    // A shared log this user may not use: say which group to join (status only reads).
    let writes = !matches!(cmd, UploadCommand::Status(_));
    segment_log::perms::check_access(&cfg.dir, writes)?;
    match cmd {
        UploadCommand::Run(a) => {
            crate::daemon::run(
                cfg,
                &crate::daemon::DaemonOptions {
                    no_startup_delay: a.no_startup_delay,
                },
                &mut |m| eprintln!("seglog upload: {m}"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        UploadCommand::Once => once(cfg),
        UploadCommand::Flush(a) => flush(cfg, a.timeout),
        UploadCommand::Status(a) => {
            let v = crate::status::collect(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::status::print(&v, &mut std::io::stdout().lock())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        UploadCommand::OptIn => {
            let p = &cfg.opt_in_file;
            // In the log directory the marker follows the log's policy (0660 in a shared
            // log, so every uploader of the group sees it); elsewhere it is private.
            let mut sharing = segment_log::Sharing::Private;
            if let Some(parent) = p.parent() {
                if parent == cfg.upload_dir() {
                    sharing = crate::state::ensure_dir(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                } else if !parent.is_dir() {
                    segment_log::Sharing::Private
                        .create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
            }
            sharing
                .write_file(
                    p,
                    format!(
                        "opted in at {}\n",
                        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    )
                    .as_bytes(),
                )
                .with_context(|| format!("cannot create {}", p.display()))?;
            println!("opted in: uploads are allowed ({} created)", p.display());
            Ok(ExitCode::SUCCESS)
        }
        UploadCommand::OptOut => {
            match std::fs::remove_file(&cfg.opt_in_file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot remove {}", cfg.opt_in_file.display()))
                }
            }
            println!("opted out: nothing will be uploaded; records are still kept locally");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Stops on SIGTERM/SIGINT; waits in short slices so a signal ends a wait quickly.
struct SignalWaiter {
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
}

impl SignalWaiter {
    fn new(deadline: Option<Instant>) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())
                .context("cannot install signal handlers")?;
        }
        Ok(SignalWaiter { stop, deadline })
    }
}

impl Waiter for SignalWaiter {
    fn wait(&mut self, d: Duration) -> bool {
        let mut until = Instant::now() + d;
        if let Some(dl) = self.deadline {
            until = until.min(dl);
        }
        while Instant::now() < until {
            if self.stop.load(Ordering::Relaxed) {
                return true;
            }
            std::thread::sleep(
                until
                    .saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(50)),
            );
        }
        self.stop.load(Ordering::Relaxed)
    }
    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

fn inputs(up: &Uploader) -> Inputs {
    let cfg = up.config();
    let mut st = up.status().clone();
    let now = now_ms();
    Inputs {
        now_ms: now,
        opted_in: cfg.opted_in(),
        backlog_bytes: up.backlog_bytes(),
        oldest_record_ms: crate::backlog::oldest_record_ms(&cfg.dir, up.cursor().position),
        last_pass_ms: st.last_attempt_ms,
        budget_used: st.budget_used(now),
    }
}

fn print_warnings(up: &mut Uploader) {
    for w in up.warnings.drain(..) {
        eprintln!("seglog upload: warning: {w}");
    }
}

fn exit_for(out: &PassOutcome) -> ExitCode {
    match out {
        PassOutcome::Complete => ExitCode::SUCCESS,
        PassOutcome::Configuration(_) => ExitCode::from(2),
        _ => ExitCode::from(1),
    }
}

fn explain(out: &PassOutcome) -> Option<String> {
    match out {
        PassOutcome::Complete => None,
        PassOutcome::Held(until) => Some(format!(
            "stopped before records the recorder's rate limiter holds back until {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + Duration::from_millis(u64::try_from(*until).unwrap_or(0))
            )
        )),
        PassOutcome::BudgetExhausted => Some("stopped: the daily upload budget is used up".into()),
        PassOutcome::Stopped => Some("stopped by a signal; the rest will go next time".into()),
        PassOutcome::Failed(m) => Some(format!("not everything was delivered: {m}")),
        PassOutcome::Configuration(m) => Some(m.clone()),
    }
}

fn once(cfg: UploadConfig) -> anyhow::Result<ExitCode> {
    let Some(mut up) = Uploader::open(cfg)? else {
        println!("nothing to upload (no log yet)");
        return Ok(ExitCode::SUCCESS);
    };
    print_warnings(&mut up);
    let retention = up.retention();
    print_warnings(&mut up);
    match up.config().policy.decide(Trigger::Scheduled, &inputs(&up)) {
        Decision::Nothing => {
            println!("nothing to upload");
            retention?;
            return Ok(ExitCode::SUCCESS);
        }
        Decision::Forbidden { reason } | Decision::Wait { reason, .. } => {
            println!("not uploading: {reason}");
            retention?;
            return Ok(ExitCode::from(3));
        }
        Decision::Upload => {}
    }
    let max = up.config().max_attempts;
    let mut w = SignalWaiter::new(None)?;
    let o = PassOptions {
        trigger: Trigger::Scheduled,
        max_attempts: Some(max),
        target: None,
        deadline: None,
    };
    let start = Instant::now();
    let (out, p) = up.pass(&o, &mut w, &mut |_| {})?;
    let _ = up.retention();
    print_warnings(&mut up);
    summary(&p, start.elapsed());
    if let Some(m) = explain(&out) {
        eprintln!("seglog upload: {m}");
    }
    Ok(exit_for(&out))
}

fn summary(p: &Progress, t: Duration) {
    println!(
        "uploaded {} records ({} bytes of payload, {} bytes on the wire, ratio {:.1}x) in {} batches, {:.2}s{}{}",
        p.records,
        p.payload_bytes,
        p.wire_bytes,
        p.ratio(),
        p.batches,
        t.as_secs_f64(),
        if p.gaps > 0 { format!("; {} gaps reported", p.gaps) } else { String::new() },
        if p.dead_lettered > 0 { format!("; {} batches dead-lettered", p.dead_lettered) } else { String::new() },
    );
}

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

fn flush(cfg: UploadConfig, timeout: Duration) -> anyhow::Result<ExitCode> {
    let start = Instant::now();
    let deadline = start + timeout;
    loop {
        if let Some(conn) = control::connect(&cfg.upload_dir()) {
            return flush_via_daemon(conn, deadline, start);
        }
        match Uploader::open(cfg.clone()) {
            Ok(None) => {
                println!("nothing to upload (no log yet)");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(Some(up)) => return flush_here(up, deadline, start),
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
) -> anyhow::Result<ExitCode> {
    let b = bar(0);
    let left = deadline.saturating_duration_since(Instant::now());
    let r = control::request_flush(conn, left, &mut |r| {
        if let Reply::Progress {
            frame_bytes,
            total_bytes,
            ..
        } = r
        {
            b.set_length(*total_bytes);
            b.set_position(*frame_bytes);
        }
    });
    b.finish_and_clear();
    match r {
        Ok(Reply::Done {
            ok,
            forbidden,
            message,
            progress,
        }) => {
            summary(&progress, start.elapsed());
            if ok {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!("seglog upload: {message}");
                Ok(ExitCode::from(if forbidden { 3 } else { 1 }))
            }
        }
        Ok(Reply::Progress { .. }) => Ok(ExitCode::from(1)),
        Err(e) => {
            eprintln!("seglog upload: flush through the daemon failed: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn flush_here(mut up: Uploader, deadline: Instant, start: Instant) -> anyhow::Result<ExitCode> {
    print_warnings(&mut up);
    let target = crate::backlog::log_end(&up.config().dir);
    match up.config().policy.decide(Trigger::Flush, &inputs(&up)) {
        Decision::Nothing => {
            println!("nothing to upload");
            return Ok(ExitCode::SUCCESS);
        }
        Decision::Forbidden { reason } | Decision::Wait { reason, .. } => {
            eprintln!("seglog upload: not uploading: {reason}");
            return Ok(ExitCode::from(3));
        }
        Decision::Upload => {}
    }
    let b = bar(up.backlog_bytes());
    let mut w = SignalWaiter::new(Some(deadline))?;
    let o = PassOptions {
        trigger: Trigger::Flush,
        max_attempts: Some(up.config().max_attempts),
        target,
        deadline: Some(deadline),
    };
    let (out, p) = up.pass(&o, &mut w, &mut |p| b.set_position(p.frame_bytes))?;
    b.finish_and_clear();
    let _ = up.retention();
    print_warnings(&mut up);
    summary(&p, start.elapsed());
    if let Some(m) = explain(&out) {
        eprintln!("seglog upload: {m}");
    }
    Ok(exit_for(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: UploadCommand,
    }

    #[test]
    fn cli_definition_is_consistent_and_parses() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["x", "flush", "--timeout", "30s"]).unwrap();
        assert!(
            matches!(c.cmd, UploadCommand::Flush(FlushArgs { timeout }) if timeout == Duration::from_secs(30))
        );
        assert!(Cli::try_parse_from(["x", "flush", "--timeout", "soon"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["x", "status", "--json"]).unwrap().cmd,
            UploadCommand::Status(StatusArgs { json: true })
        ));
        assert!(matches!(
            Cli::try_parse_from(["x", "opt-in"]).unwrap().cmd,
            UploadCommand::OptIn
        ));
    }
}
