//! When uploading is allowed: a pure function of the configuration and a few observations
//! (time is passed in, so tests control the clock).
//!
//! Rules, in order (a scheduled pass is the daemon's tick or `seglog upload once`):
//! 1. `server_delivery = false`: never (local-only logging). Also for `flush`.
//! 2. Opt-in required and the marker missing: never. Also for `flush`.
//! 3. Nothing un-uploaded: nothing to do.
//! 4. `mode = on-demand`: only `flush` uploads.
//! 5. The daily byte budget is used up: wait for the next UTC day.
//! 6. Less than `interval` since the end of the last pass that did not fail: wait.
//! 7. Upload when the backlog reached `min_backlog_bytes`, or the oldest un-uploaded record
//!    waited `max_delay`; otherwise wait.
//!
//! `flush` applies only rules 1-3: it is the explicit command that bypasses the schedule.
use std::time::Duration;

/// When automatic uploads happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Only `seglog upload flush` uploads (Tailscale's sockstatlog style).
    OnDemand,
    /// Every `interval`, when the backlog or its age says so.
    Interval,
}

/// The upload policy (`[upload]` keys of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Automatic uploads or only on demand.
    pub mode: Mode,
    /// Least time from the end of a pass that did not fail to the next scheduled pass.
    pub interval: Duration,
    /// Scheduled passes wait until this many bytes are pending...
    pub min_backlog_bytes: u64,
    /// ...unless the oldest pending record waited this long.
    pub max_delay: Option<Duration>,
    /// Wire bytes per UTC day for scheduled passes (`flush` is counted but not stopped).
    pub daily_budget: Option<u64>,
    /// False: keep everything local, never upload.
    pub server_delivery: bool,
    /// Whether the opt-in marker is required.
    pub require_opt_in: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            mode: Mode::Interval,
            interval: Duration::from_secs(15 * 60),
            min_backlog_bytes: 0,
            max_delay: Some(Duration::from_secs(3600)),
            daily_budget: None,
            server_delivery: true,
            require_opt_in: true,
        }
    }
}

/// Why a pass runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon's schedule or `seglog upload once`.
    Scheduled,
    /// `seglog upload flush`.
    Flush,
}

/// What the policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inputs {
    /// Now, ms since the epoch.
    pub now_ms: i64,
    /// Whether the opt-in marker exists.
    pub opted_in: bool,
    /// Bytes not uploaded yet.
    pub backlog_bytes: u64,
    /// Wall time of the oldest record not uploaded yet.
    pub oldest_record_ms: Option<i64>,
    /// When the last pass that did not fail started (a failed one does not count, so a
    /// server that was down does not delay the next try by `interval`).
    pub last_pass_ms: Option<i64>,
    /// Wire bytes sent today.
    pub budget_used: u64,
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Upload now.
    Upload,
    /// Nothing is pending.
    Nothing,
    /// Not now; ask again after `recheck_in`.
    Wait {
        /// Why, as a sentence.
        reason: String,
        /// When it may change.
        recheck_in: Duration,
    },
    /// Not allowed at all (configuration or consent).
    Forbidden {
        /// Why, as a sentence with the fix.
        reason: String,
    },
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn dur(ms: i64) -> Duration {
    Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Policy {
    /// Applies the rules.
    pub fn decide(&self, trigger: Trigger, i: &Inputs) -> Decision {
        if !self.server_delivery {
            return Decision::Forbidden {
                reason: "server delivery is disabled (upload.server_delivery = false); records stay local".into(),
            };
        }
        if self.require_opt_in && !i.opted_in {
            return Decision::Forbidden {
                reason: "this machine has not opted in to uploads; run `seglog upload opt-in` to allow them".into(),
            };
        }
        if i.backlog_bytes == 0 {
            return Decision::Nothing;
        }
        if trigger == Trigger::Flush {
            return Decision::Upload;
        }
        if self.mode == Mode::OnDemand {
            return Decision::Forbidden {
                reason: "upload.mode is on-demand: only `seglog upload flush` uploads".into(),
            };
        }
        if let Some(budget) = self.daily_budget {
            if i.budget_used >= budget {
                let next_day = (i.now_ms.div_euclid(86_400_000) + 1) * 86_400_000;
                return Decision::Wait {
                    reason: format!(
                        "daily budget of {budget} bytes is used up ({} sent today)",
                        i.budget_used
                    ),
                    recheck_in: dur(next_day - i.now_ms),
                };
            }
        }
        if let Some(last) = i.last_pass_ms {
            let due = last.saturating_add(ms(self.interval));
            if i.now_ms < due && i.now_ms >= last {
                return Decision::Wait {
                    reason: format!(
                        "last pass was {} ago, interval is {}",
                        humantime::format_duration(dur((i.now_ms - last) / 1000 * 1000)),
                        humantime::format_duration(self.interval)
                    ),
                    recheck_in: dur(due - i.now_ms),
                };
            }
        }
        if i.backlog_bytes >= self.min_backlog_bytes {
            return Decision::Upload;
        }
        let age = i
            .oldest_record_ms
            .map(|o| i.now_ms.saturating_sub(o).max(0));
        if let (Some(max), Some(age)) = (self.max_delay, age) {
            if age >= ms(max) {
                return Decision::Upload;
            }
        }
        let until_delay = match (self.max_delay, age) {
            (Some(max), Some(age)) => dur(ms(max) - age),
            _ => self.interval,
        };
        Decision::Wait {
            reason: format!(
                "backlog of {} bytes is below min_backlog_bytes {} and the oldest record is younger than max_delay",
                i.backlog_bytes, self.min_backlog_bytes
            ),
            recheck_in: until_delay.min(self.interval).max(Duration::from_secs(1)),
        }
    }
}

impl Policy {
    /// How long the daemon sleeps after a decision other than [`Decision::Upload`] (`None`
    /// for that one): until the policy may change its mind, plus up to half an `interval`
    /// picked by `jitter` (in `[0, 1)`, random in the daemon). Devices that an outage or a
    /// busy collector brought into step (all finishing a pass in the same second) drift
    /// apart again instead of coming back together every `interval`; passes stay at least
    /// `interval` apart, about 1.25 `interval` on average.
    pub fn idle_after(&self, decision: &Decision, jitter: f64) -> Option<Duration> {
        let base = match decision {
            Decision::Upload => return None,
            Decision::Wait { recheck_in, .. } => *recheck_in,
            Decision::Nothing | Decision::Forbidden { .. } => self.interval,
        };
        let j = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        Some(base.saturating_add(self.interval.mul_f64(j / 2.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000_000;

    #[test]
    fn idle_time_is_the_policy_wait_plus_up_to_half_an_interval_of_jitter() {
        let p = Policy::default();
        let i = p.interval;
        assert_eq!(p.idle_after(&Decision::Upload, 0.5), None);
        assert_eq!(p.idle_after(&Decision::Nothing, 0.0), Some(i));
        assert_eq!(p.idle_after(&Decision::Nothing, 1.0), Some(i + i / 2));
        let wait = Decision::Wait {
            reason: String::new(),
            recheck_in: Duration::from_secs(10),
        };
        assert_eq!(
            p.idle_after(&wait, 0.5),
            Some(Duration::from_secs(10) + i / 4)
        );
        assert_eq!(p.idle_after(&wait, f64::NAN), Some(Duration::from_secs(10)));
    }

    fn inputs() -> Inputs {
        Inputs {
            now_ms: NOW,
            opted_in: true,
            backlog_bytes: 1000,
            oldest_record_ms: Some(NOW - 1000),
            last_pass_ms: None,
            budget_used: 0,
        }
    }

    #[test]
    fn opt_in_and_server_delivery_gate_even_flush() {
        let p = Policy::default();
        let i = Inputs {
            opted_in: false,
            ..inputs()
        };
        assert!(
            matches!(p.decide(Trigger::Flush, &i), Decision::Forbidden { reason } if reason.contains("opt-in"))
        );
        let p = Policy {
            server_delivery: false,
            ..Policy::default()
        };
        assert!(
            matches!(p.decide(Trigger::Flush, &inputs()), Decision::Forbidden { reason } if reason.contains("server_delivery"))
        );
        let p = Policy {
            require_opt_in: false,
            ..Policy::default()
        };
        assert_eq!(
            p.decide(
                Trigger::Flush,
                &Inputs {
                    opted_in: false,
                    ..inputs()
                }
            ),
            Decision::Upload
        );
    }

    #[test]
    fn on_demand_mode_uploads_only_on_flush() {
        let p = Policy {
            mode: Mode::OnDemand,
            ..Policy::default()
        };
        assert!(matches!(
            p.decide(Trigger::Scheduled, &inputs()),
            Decision::Forbidden { .. }
        ));
        assert_eq!(p.decide(Trigger::Flush, &inputs()), Decision::Upload);
    }

    #[test]
    fn empty_backlog_means_nothing_to_do() {
        let i = Inputs {
            backlog_bytes: 0,
            ..inputs()
        };
        assert_eq!(
            Policy::default().decide(Trigger::Scheduled, &i),
            Decision::Nothing
        );
        assert_eq!(
            Policy::default().decide(Trigger::Flush, &i),
            Decision::Nothing
        );
    }

    #[test]
    fn interval_holds_scheduled_passes_back() {
        let p = Policy {
            interval: Duration::from_secs(600),
            ..Policy::default()
        };
        let i = Inputs {
            last_pass_ms: Some(NOW - 60_000),
            ..inputs()
        };
        assert!(
            matches!(p.decide(Trigger::Scheduled, &i), Decision::Wait { recheck_in, .. } if recheck_in == Duration::from_secs(540))
        );
        assert_eq!(p.decide(Trigger::Flush, &i), Decision::Upload);
        let i = Inputs {
            last_pass_ms: Some(NOW - 600_000),
            ..inputs()
        };
        assert_eq!(p.decide(Trigger::Scheduled, &i), Decision::Upload);
        // A last pass in the future (clock jumped back) does not block forever.
        let i = Inputs {
            last_pass_ms: Some(NOW + 3_600_000),
            ..inputs()
        };
        assert_eq!(p.decide(Trigger::Scheduled, &i), Decision::Upload);
    }

    #[test]
    fn small_backlog_waits_until_the_oldest_record_is_max_delay_old() {
        let p = Policy {
            min_backlog_bytes: 10_000,
            max_delay: Some(Duration::from_secs(60)),
            ..Policy::default()
        };
        let d = p.decide(Trigger::Scheduled, &inputs());
        assert!(
            matches!(d, Decision::Wait { recheck_in, .. } if recheck_in == Duration::from_secs(59)),
            "{d:?}"
        );
        let i = Inputs {
            oldest_record_ms: Some(NOW - 60_000),
            ..inputs()
        };
        assert_eq!(p.decide(Trigger::Scheduled, &i), Decision::Upload);
        let i = Inputs {
            backlog_bytes: 10_000,
            ..inputs()
        };
        assert_eq!(p.decide(Trigger::Scheduled, &i), Decision::Upload);
    }

    #[test]
    fn spent_budget_waits_for_the_next_utc_day_but_flush_goes() {
        let p = Policy {
            daily_budget: Some(5000),
            ..Policy::default()
        };
        let i = Inputs {
            budget_used: 5000,
            now_ms: 86_400_000 * 19_000 + 3_600_000,
            ..inputs()
        };
        let d = p.decide(Trigger::Scheduled, &i);
        assert!(
            matches!(d, Decision::Wait { recheck_in, .. } if recheck_in == Duration::from_secs(23 * 3600)),
            "{d:?}"
        );
        assert_eq!(p.decide(Trigger::Flush, &i), Decision::Upload);
    }
}
