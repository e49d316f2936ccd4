//! `seglog upload run`: the daemon's main loop. One thread uploads; a socket thread turns
//! flush requests into events; a signal thread turns SIGTERM/SIGINT into a stop event (and
//! exits the process if the loop does not stop within the request timeout plus a grace
//! period: the cursor on disk is consistent at every instant, so that is safe).
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use segment_log::Position;

use crate::config::UploadConfig;
use crate::control::{self, Event, FlushRequest, Reply};
use crate::engine::{PassOptions, PassOutcome, Progress, Uploader, Waiter};
use crate::policy::{Decision, Trigger};
use crate::state::now_ms;

/// Daemon options from the command line.
#[derive(Debug, Clone, Default)]
pub struct DaemonOptions {
    /// Skip the random start-up delay.
    pub no_startup_delay: bool,
}

type Flushes = Rc<RefCell<Vec<FlushRequest>>>;

struct DaemonWaiter<'a> {
    rx: Receiver<Event>,
    flushes: Flushes,
    stop: bool,
    wake_on_flush: bool,
    /// A flush arrived since the last backoff wait: the next one (inside a pass) returns at
    /// once. A flush is someone asking for the upload now; it must not sit out a backoff of
    /// up to `backoff_cap`. A `Retry-After` wait is the server's and is not cut.
    cut_wait: bool,
    /// The daemon's log (stderr for the CLI), shared with the main loop.
    log: &'a dyn Fn(&str),
}

impl DaemonWaiter<'_> {
    fn absorb(&mut self, e: Event) {
        match e {
            Event::Stop => self.stop = true,
            Event::Flush(f) => {
                self.flushes.borrow_mut().push(f);
                self.cut_wait = true;
            }
        }
    }
}

impl DaemonWaiter<'_> {
    /// Sleeps up to `d`; true when a stop was requested. Returns early (false) for a pending
    /// flush while the daemon is idle (`wake_on_flush`), and, when `cut_by_flush`, for a
    /// flush that arrived since the last wait: a person asked for the upload now.
    fn wait_until(&mut self, d: Duration, cut_by_flush: bool) -> bool {
        let until = Instant::now() + d;
        loop {
            if self.stop {
                return true;
            }
            if self.wake_on_flush && !self.flushes.borrow().is_empty() {
                return false;
            }
            if cut_by_flush && std::mem::take(&mut self.cut_wait) {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match self.rx.recv_timeout(left) {
                Ok(e) => self.absorb(e),
                Err(RecvTimeoutError::Timeout) => return false,
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(left);
                    return self.stop;
                }
            }
        }
    }
}

impl Waiter for DaemonWaiter<'_> {
    /// Logs the failure and tells the flush clients waiting for this pass.
    fn attempt_failed(&mut self, failed: &crate::engine::FailedAttempt) {
        let line = failed.to_string();
        (self.log)(&line);
        for f in self.flushes.borrow().iter() {
            let _ = f.reply.send(Reply::Retry {
                message: line.clone(),
            });
        }
    }

    fn wait(&mut self, d: Duration) -> bool {
        self.wait_until(d, false)
    }

    fn wait_backoff(&mut self, d: Duration) -> bool {
        self.wait_until(d, true)
    }

    fn stop_requested(&mut self) -> bool {
        while let Ok(e) = self.rx.try_recv() {
            self.absorb(e);
        }
        self.stop
    }
}

/// Answers the flush requests whose target the cursor reached.
fn answer_reached(flushes: &Flushes, p: &Progress, total: u64) {
    flushes.borrow_mut().retain(|f| {
        if f.target.is_none_or_reached(p.position) {
            let _ = f.reply.send(Reply::Done {
                ok: true,
                forbidden: false,
                message: "everything written before the flush is acknowledged".into(),
                progress: p.clone(),
            });
            false
        } else {
            let _ = f.reply.send(Reply::Progress {
                records: p.records,
                frame_bytes: p.frame_bytes,
                total_bytes: total,
            });
            true
        }
    });
}

trait Reached {
    fn is_none_or_reached(&self, pos: Position) -> bool;
}
impl Reached for Option<Position> {
    fn is_none_or_reached(&self, pos: Position) -> bool {
        self.is_none_or(|t| pos >= t)
    }
}

fn describe(o: &PassOutcome) -> String {
    match o {
        PassOutcome::Complete => "complete".into(),
        PassOutcome::Held(until) => format!(
            "records are held back by the recorder's rate limit for {}",
            humantime::format_duration(Duration::from_millis(
                u64::try_from(until - now_ms()).unwrap_or(0)
            ))
        ),
        PassOutcome::BudgetExhausted => "the daily upload budget is used up".into(),
        PassOutcome::Stopped => "the uploader is stopping".into(),
        PassOutcome::Failed(m) | PassOutcome::Configuration(m) => m.clone(),
    }
}

/// Runs the daemon until SIGTERM/SIGINT. Messages go to `log` (stderr for the CLI).
pub fn run(
    cfg: UploadConfig,
    opts: &DaemonOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let shared = RefCell::new(log);
    let say = |m: &str| (shared.borrow_mut())(m);
    let log = &say;
    let (tx, rx) = mpsc::channel();
    let grace = cfg.timeout + Duration::from_secs(5);
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])
    .context("cannot install signal handlers")?;
    let stop_tx = tx.clone();
    std::thread::Builder::new()
        .name("seglog-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                let _ = stop_tx.send(Event::Stop);
                std::thread::sleep(grace);
                std::process::exit(0);
            }
        })?;
    let flushes: Flushes = Rc::new(RefCell::new(Vec::new()));
    let mut waiter = DaemonWaiter {
        rx,
        flushes: flushes.clone(),
        stop: false,
        wake_on_flush: true,
        cut_wait: false,
        log: &say,
    };
    let mut up = loop {
        match Uploader::open(cfg.clone()) {
            Ok(Some(u)) => break u,
            Ok(None) => log(&format!(
                "no log in {} yet; waiting for one",
                cfg.dir.display()
            )),
            // A full disk passes; anything else (another uploader, a damaged setup) is for
            // the operator.
            Err(e) if is_disk_full(&e) => log(&format!("error: {e:#}; retrying")),
            Err(e) => return Err(e),
        }
        if waiter.wait(Duration::from_secs(10).min(cfg.policy.interval)) {
            return Ok(());
        }
    };
    for w in up.warnings.drain(..) {
        log(&format!("warning: {w}"));
    }
    let sock = control::serve(&cfg.upload_dir(), cfg.dir.clone(), tx)
        .context("cannot listen on the control socket")?;
    log(&format!(
        "daemon started: log {}, socket {}, cursor {}",
        cfg.dir.display(),
        sock.display(),
        up.cursor().position
    ));
    if !opts.no_startup_delay && waiter.wait(crate::retry::random_delay(cfg.startup_delay)) {
        return Ok(());
    }
    let cap = cfg.backoff_cap;
    loop {
        if waiter.stop_requested() {
            break;
        }
        match up.retention() {
            Ok(_) => {}
            Err(e) => log(&format!("retention failed: {e:#}")),
        }
        for w in up.warnings.drain(..) {
            log(&format!("warning: {w}"));
        }
        let idle = if !flushes.borrow().is_empty() {
            match serve_flushes(&mut up, &mut waiter, &flushes, log) {
                Ok(()) => None,
                Err(e) => {
                    log(&format!("error: {e:#}; retrying in {cap:?}"));
                    Some(cap)
                }
            }
        } else {
            match up.decide(Trigger::Scheduled) {
                Decision::Upload => {
                    waiter.wake_on_flush = false;
                    let total = up.backlog_bytes();
                    let o = PassOptions {
                        trigger: Trigger::Scheduled,
                        max_attempts: None,
                        // What was written before the pass started: records that arrive
                        // meanwhile wait for the next pass. Chasing them kept a fleet behind
                        // a slow collector sending tiny batches forever (fleet-sim).
                        target: crate::backlog::log_end(&cfg.dir),
                        deadline: None,
                    };
                    let fl = flushes.clone();
                    // A local failure (the cursor cannot be written: disk full, I/O error)
                    // stops the pass before anything unrecorded is sent; the daemon keeps
                    // running and tries again, as it does after a network failure.
                    let (out, p) =
                        match up.pass(&o, &mut waiter, &mut |p| answer_reached(&fl, p, total)) {
                            Ok(r) => r,
                            Err(e) => {
                                let msg = format!("{e:#}");
                                up.note_error(&msg);
                                (PassOutcome::Failed(msg), Progress::default())
                            }
                        };
                    if p.batches > 0 || p.gaps > 0 {
                        log(&format!(
                            "uploaded {} records in {} batches ({} bytes on the wire, ratio {:.1})",
                            p.records,
                            p.batches,
                            p.wire_bytes,
                            p.ratio()
                        ));
                    }
                    match out {
                        PassOutcome::Complete | PassOutcome::BudgetExhausted => None,
                        PassOutcome::Stopped => break,
                        PassOutcome::Held(until) => Some(
                            Duration::from_millis(u64::try_from(until - now_ms()).unwrap_or(0))
                                .min(cfg.policy.interval),
                        ),
                        o @ (PassOutcome::Failed(_) | PassOutcome::Configuration(_)) => {
                            log(&format!("error: {}", describe(&o)));
                            Some(cap)
                        }
                    }
                }
                other => cfg.policy.idle_after(&other, fastrand::f64()),
            }
        };
        if let Some(d) = idle {
            waiter.wake_on_flush = true;
            // Flushes are answered by the pending list from here on, not by cutting a wait.
            waiter.cut_wait = false;
            if waiter.wait(d.max(Duration::from_millis(100))) {
                break;
            }
        }
    }
    for f in flushes.borrow_mut().drain(..) {
        let _ = f.reply.send(Reply::Done {
            ok: false,
            forbidden: false,
            message: "the daemon is stopping".into(),
            progress: Progress::default(),
        });
    }
    let _ = std::fs::remove_file(control::socket_path(&cfg.upload_dir()));
    log(&format!("daemon stopped; cursor {}", up.cursor().position));
    Ok(())
}

fn serve_flushes(
    up: &mut Uploader,
    waiter: &mut DaemonWaiter<'_>,
    flushes: &Flushes,
    log: &dyn Fn(&str),
) -> anyhow::Result<()> {
    let target = flushes.borrow().iter().map(|f| f.target).max().flatten();
    let decision = up.decide(Trigger::Flush);
    let reply_all = |ok: bool, forbidden: bool, message: String| {
        for f in flushes.borrow_mut().drain(..) {
            let _ = f.reply.send(Reply::Done {
                ok,
                forbidden,
                message: message.clone(),
                progress: Progress::default(),
            });
        }
    };
    match decision {
        Decision::Forbidden { reason } => reply_all(false, true, reason),
        Decision::Nothing => reply_all(true, false, "nothing to upload".into()),
        Decision::Upload | Decision::Wait { .. } => {
            waiter.wake_on_flush = false;
            let total = up.backlog_bytes();
            let o = PassOptions {
                trigger: Trigger::Flush,
                max_attempts: None,
                target,
                deadline: None,
            };
            let fl = flushes.clone();
            let started = Instant::now();
            let (out, p) = match up.pass(&o, waiter, &mut |p| answer_reached(&fl, p, total)) {
                Ok(r) => r,
                Err(e) => {
                    let msg = format!("{e:#}");
                    up.note_error(&msg);
                    reply_all(false, false, msg.clone());
                    anyhow::bail!(msg);
                }
            };
            log(&format!(
                "flush: {} records in {} batches; {}",
                p.records,
                p.batches,
                describe(&out)
            ));
            let pos = up.cursor().position;
            flushes.borrow_mut().retain(|f| {
                let caught_up = out == PassOutcome::Complete && f.arrived <= started;
                let ok =
                    (f.target.is_none_or_reached(pos) || caught_up) && out != PassOutcome::Stopped;
                let message = if ok {
                    "everything written before the flush is acknowledged".into()
                } else {
                    describe(&out)
                };
                if ok || out != PassOutcome::Complete {
                    let _ = f.reply.send(Reply::Done {
                        ok,
                        forbidden: false,
                        message,
                        progress: p.clone(),
                    });
                    return false;
                }
                true
            });
        }
    }
    Ok(())
}

/// Whether `e` was caused by a full disk or an exhausted quota.
fn is_disk_full(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            .is_some_and(|code| code == libc::ENOSPC || code == libc::EDQUOT)
    })
}
