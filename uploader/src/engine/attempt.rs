//! A failed delivery attempt as the CLI prints it and the daemon logs it.
use std::time::Duration;

/// A failed attempt to deliver a batch (see [`super::Waiter::attempt_failed`]). Its `Display` is
/// the line the CLI prints: `attempt 2/5 failed: <reason>; retrying in 3 s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedAttempt {
    /// Which attempt of this batch (1 for the first).
    pub attempt: u32,
    /// The attempts allowed (`None`: the daemon, which never gives up).
    pub max_attempts: Option<u32>,
    /// Why it failed, as a sentence (the private id is never in it).
    pub reason: String,
    /// The wait before the next attempt; `None` when there is none (attempts used up, or
    /// the deadline passed).
    pub retry_in: Option<Duration>,
}

impl std::fmt::Display for FailedAttempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "attempt {}", self.attempt)?;
        if let Some(m) = self.max_attempts {
            write!(f, "/{m}")?;
        }
        write!(f, " failed: {}; ", self.reason)?;
        match self.retry_in {
            Some(d) => write!(f, "retrying in {}", seconds(d)),
            None => write!(f, "giving up"),
        }
    }
}

/// A wait for people: `3 s`, `0.4 s`, `316 s` (tenths below 10 s, whole seconds above).
pub fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 10.0 {
        let tenths = (s * 10.0).round() / 10.0;
        if tenths.fract() == 0.0 {
            format!("{tenths:.0} s")
        } else {
            format!("{tenths:.1} s")
        }
    } else {
        format!("{s:.0} s")
    }
}
