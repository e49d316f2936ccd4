//! The waiter of `once` and `flush`: stops on SIGTERM/SIGINT, and prints every failed
//! attempt as it happens, so a pass that is retrying never waits in silence.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::engine::{FailedAttempt, Waiter};

/// Where retry lines go: above the progress bar on a terminal, else plain lines on stderr.
#[derive(Clone, Default)]
pub(super) struct Lines {
    bar: Option<indicatif::ProgressBar>,
}

impl Lines {
    /// Lines printed above `bar` (when it is drawn).
    pub(super) fn above(bar: &indicatif::ProgressBar) -> Lines {
        Lines {
            bar: Some(bar.clone()),
        }
    }

    /// Prints `seglog upload: <msg>` on stderr.
    pub(super) fn say(&self, msg: &str) {
        let line = format!("seglog upload: {msg}");
        match &self.bar {
            // `println` on a drawn bar prints above it; a hidden bar prints nothing.
            Some(b) if !b.is_hidden() => b.println(line),
            _ => eprintln!("{line}"),
        }
    }
}

/// Stops on SIGTERM/SIGINT; waits in short slices so a signal ends a wait quickly.
pub(super) struct SignalWaiter {
    stop: Arc<AtomicBool>,
    deadline: Option<Instant>,
    lines: Lines,
}

impl SignalWaiter {
    pub(super) fn new(deadline: Option<Instant>, lines: Lines) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
            signal_hook::flag::register(sig, stop.clone())
                .context("cannot install signal handlers")?;
        }
        Ok(SignalWaiter {
            stop,
            deadline,
            lines,
        })
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

    fn attempt_failed(&mut self, failed: &FailedAttempt) {
        self.lines.say(&failed.to_string());
    }
}
