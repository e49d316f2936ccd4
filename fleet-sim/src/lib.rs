//! A fleet of uploaders on virtual time, against a model of one collector.
//!
//! Each simulated device runs the uploader's real decision code: `uploader::policy::Policy`
//! decides when a scheduled pass runs, `uploader::retry::Backoff` picks the wait after a
//! failed attempt (exponential, equal jitter, capped) and `Backoff::wait_after` the wait after
//! a 429 with `Retry-After`. The collector model takes records into a bounded queue that
//! drains at a fixed rate; which uploads it takes when the queue is full, and the
//! `Retry-After` of those it refuses (a booked return), come from the collector's own
//! `collector::store::shed::ReturnSchedule`. An outage refuses every connection.
//!
//! Time is virtual (milliseconds); randomness is `fastrand` seeded, so a run is repeatable.

pub mod real;
mod svg;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use collector::store::shed::{Load, ReturnSchedule, ScheduleStats, Verdict};
use uploader::policy::{Inputs, Policy, Trigger};
use uploader::retry::Backoff;

pub use svg::histogram_svg;

/// What to simulate.
#[derive(Debug, Clone)]
pub struct Params {
    /// Devices.
    pub devices: u32,
    /// Records each device writes per second.
    pub records_per_sec: f64,
    /// Bytes per record (for the policy's backlog size).
    pub record_bytes: u64,
    /// Most records in one batch (the uploader's `batch_max_records`).
    pub batch_max_records: u64,
    /// The uploader's policy (interval, max delay...).
    pub policy: Policy,
    /// Backoff base and cap (the uploader's `backoff_base`, `backoff_cap`).
    pub backoff_base: Duration,
    /// See `backoff_base`.
    pub backoff_cap: Duration,
    /// Records per second the collector writes.
    pub capacity_records_per_sec: f64,
    /// What one batch costs the collector on top of its records, in record-equivalents
    /// (request handling, decoding, the batch row).
    pub batch_cost_records: f64,
    /// Records the collector's queue holds before it refuses with 429.
    pub queue_records: u64,
    /// Round trip of one request, ms.
    pub rtt_ms: i64,
    /// When the outage starts, ms.
    pub outage_start_ms: i64,
    /// How long it lasts, ms.
    pub outage_ms: i64,
    /// Give up this long after the outage if the backlog has not drained, ms.
    pub max_after_ms: i64,
    /// Random seed.
    pub seed: u64,
    /// A scheduled pass sends what was written when it started, not what arrives meanwhile
    /// (true: the daemon, which passes the log end as the pass target; false: the daemon
    /// before issue 16, which chased the end of the log until it was caught up).
    pub pass_stops_at_start: bool,
}

impl Default for Params {
    /// 10,000 devices at 1 record/s of 100 bytes, the uploader's default policy (15-minute
    /// interval) and backoff (1 s to 40 min, equal jitter), a collector that writes 3x the steady load (a
    /// batch costing as much as 10 records), a 1-hour outage after 2 hours of steady state.
    fn default() -> Self {
        Params {
            devices: 10_000,
            records_per_sec: 1.0,
            record_bytes: 100,
            batch_max_records: 50_000,
            policy: Policy {
                require_opt_in: false,
                ..Policy::default()
            },
            backoff_base: Duration::from_secs(1),
            backoff_cap: uploader::config::DEFAULT_BACKOFF_CAP,
            capacity_records_per_sec: 30_000.0,
            batch_cost_records: 10.0,
            queue_records: 1_000_000,
            rtt_ms: 20,
            outage_start_ms: 2 * 3_600_000,
            outage_ms: 3_600_000,
            max_after_ms: 6 * 3_600_000,
            seed: 16,
            pass_stops_at_start: true,
        }
    }
}

/// What happened.
#[derive(Debug, Clone)]
pub struct Report {
    /// Requests (all answers: stored, 429, refused connection) per second from time 0.
    pub requests_per_sec: Vec<u32>,
    /// Of those, answered 429.
    pub shed_per_sec: Vec<u32>,
    /// Of those, the first attempt of each device after the outage (it was in backoff, so
    /// the collector had no say in when it came).
    pub first_contact_per_sec: Vec<u32>,
    /// Mean requests per second over the steady hour before the outage.
    pub steady_mean: f64,
    /// Highest requests in one second after the outage ended.
    pub peak_after: u32,
    /// Highest requests in one second after the outage, not counting each device's first
    /// attempt after it.
    pub peak_after_without_first_contact: u32,
    /// Highest mean requests per second over 10 and over 60 seconds after the outage.
    pub peak_after_10s: f64,
    /// See `peak_after_10s`.
    pub peak_after_60s: f64,
    /// Highest requests in one second during the hour after the backlog drained (steady
    /// again, or still in step).
    pub peak_after_drain: u32,
    /// Seconds from the end of the outage until every record written before it was stored
    /// (`None`: not within `max_after_ms`).
    pub drain_secs: Option<f64>,
    /// Longest wait between two attempts of one device within a pass (backoff, `Retry-After`
    /// or the wait for the acknowledgement), s.
    pub longest_wait_secs: f64,
    /// Longest time from the end of the outage to a device's first stored batch, s.
    pub slowest_first_success_secs: f64,
    /// Records written by all devices, and stored.
    pub written: u64,
    /// See `written`.
    pub stored: u64,
    /// Batches stored, and 429 answers in total.
    pub batches: u64,
    /// See `batches`.
    pub shed: u64,
    /// The collector's return calendar: refusals booked, sent to the horizon, early
    /// returns, uploads taken on their booking.
    pub schedule: ScheduleStats,
}

impl Report {
    /// Highest requests in one second after the outage over the steady mean.
    pub fn peak_to_mean(&self) -> f64 {
        f64::from(self.peak_after) / self.steady_mean.max(f64::MIN_POSITIVE)
    }
}

struct Device {
    written: u64,
    stored: u64,
    /// Records of the batch in flight (accepted, not yet acknowledged).
    in_flight: u64,
    /// Write time of the oldest record not stored.
    oldest_ms: Option<i64>,
    last_pass_ms: Option<i64>,
    pass_start_ms: Option<i64>,
    /// With `pass_stops_at_start`: records written when the pass started.
    pass_target: u64,
    backoff: Backoff,
    last_attempt_ms: Option<i64>,
    /// Records written before the end of the outage; stored by `drained_ms`.
    owed: Option<u64>,
    first_success_after: Option<i64>,
    /// Made an attempt since the outage ended.
    contacted_after: bool,
}

impl Device {
    fn write_until(&mut self, p: &Params, now: i64) {
        let total = (now as f64 / 1000.0 * p.records_per_sec).floor() as u64;
        if total > self.written {
            if self.oldest_ms.is_none() && self.written == self.stored + self.in_flight {
                self.oldest_ms = Some(now);
            }
            self.written = total;
        }
    }

    fn backlog(&self) -> u64 {
        self.written - self.stored - self.in_flight
    }
}

/// The collector model: a queue of records drained at a fixed rate.
struct Collector {
    queued: f64,
    at_ms: i64,
    schedule: ReturnSchedule,
}

enum Answer {
    Refused,
    Shed { retry_after: Duration },
    Stored { at_ms: i64 },
}

impl Collector {
    fn drain(&mut self, p: &Params, now: i64) {
        let dt = (now - self.at_ms).max(0) as f64 / 1000.0;
        self.queued = (self.queued - dt * p.capacity_records_per_sec).max(0.0);
        self.at_ms = self.at_ms.max(now);
    }

    fn offer(&mut self, p: &Params, now: i64, device: u32, records: u64) -> Answer {
        if now >= p.outage_start_ms && now < p.outage_start_ms + p.outage_ms {
            return Answer::Refused;
        }
        self.drain(p, now);
        let n = records as f64 + p.batch_cost_records;
        let limit = p.queue_records as f64;
        let load = Load {
            queued_records: self.queued as u64,
            full: self.queued > 0.0 && self.queued + n > limit,
            over_hard_limit: self.queued > 0.0 && self.queued + n > 2.0 * limit,
            rate: p.capacity_records_per_sec,
        };
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&device.to_le_bytes());
        // The model's cost of a batch is in record-equivalents, so the calendar books those
        // (the real writer's measured rate already includes its per-batch cost).
        if let Verdict::Refuse { retry_after_secs } =
            self.schedule.offer(now, key, n.ceil() as u64, load)
        {
            return Answer::Shed {
                retry_after: Duration::from_secs(retry_after_secs),
            };
        }
        self.queued += n;
        let wait_ms = (self.queued / p.capacity_records_per_sec * 1000.0).ceil() as i64;
        Answer::Stored {
            at_ms: now + wait_ms + p.rtt_ms,
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Runs the simulation.
pub fn run(p: &Params) -> Report {
    fastrand::seed(p.seed);
    let recovery = p.outage_start_ms + p.outage_ms;
    let end = recovery + p.max_after_ms;
    let secs = usize::try_from(end / 1000 + 1).unwrap_or(0);
    let mut requests = vec![0u32; secs];
    let mut shed = vec![0u32; secs];
    let mut first_contact = vec![0u32; secs];
    let mut devices: Vec<Device> = (0..p.devices)
        .map(|_| Device {
            written: 0,
            stored: 0,
            in_flight: 0,
            oldest_ms: None,
            last_pass_ms: None,
            pass_start_ms: None,
            pass_target: 0,
            backoff: Backoff::new(p.backoff_base, p.backoff_cap),
            last_attempt_ms: None,
            owed: None,
            first_success_after: None,
            contacted_after: false,
        })
        .collect();
    let mut c = Collector {
        queued: 0.0,
        at_ms: 0,
        schedule: ReturnSchedule::default(),
    };
    // Daemons start spread over one interval (their start-up jitter).
    let interval = ms(p.policy.interval).max(1);
    let mut q: BinaryHeap<Reverse<(i64, u32)>> = (0..p.devices)
        .map(|i| Reverse((fastrand::i64(0..interval), i)))
        .collect();
    let (mut longest_wait, mut owed_left, mut drained_at) = (0i64, p.devices, None);
    let (mut batches, mut shed_total) = (0u64, 0u64);
    // Run on for an hour of steady state after the backlog drained.
    let mut stop_at = end;
    while let Some(Reverse((now, i))) = q.pop() {
        if now >= stop_at {
            break;
        }
        let d = &mut devices[i as usize];
        if d.owed.is_none() && now >= recovery {
            // Everything written before the recovery is owed; count it from the first event.
            d.owed = Some((recovery as f64 / 1000.0 * p.records_per_sec).floor() as u64);
        }
        // A batch in flight was acknowledged at `now`.
        if d.in_flight > 0 {
            d.stored += d.in_flight;
            d.in_flight = 0;
            d.backoff.reset();
            if now >= recovery && d.first_success_after.is_none() {
                d.first_success_after = Some(now - recovery);
            }
            if let Some(owed) = d.owed {
                if d.stored >= owed && owed_left > 0 {
                    owed_left -= 1;
                    if owed_left == 0 {
                        drained_at = Some(now - recovery);
                        stop_at = stop_at.min(now + 3_600_000);
                    }
                    d.owed = Some(u64::MAX);
                }
            }
        }
        d.write_until(p, now);
        let pass_done = d.backlog() == 0
            || (p.pass_stops_at_start
                && d.pass_start_ms.is_some()
                && d.stored + d.in_flight >= d.pass_target);
        if d.backlog() == 0 {
            d.oldest_ms = None;
        }
        // The engine counts the interval from the end of a pass that did not fail.
        if pass_done && d.pass_start_ms.take().is_some() {
            d.last_pass_ms = Some(now);
            d.last_attempt_ms = None;
        }
        if d.pass_start_ms.is_none() {
            let inputs = Inputs {
                now_ms: now,
                opted_in: true,
                backlog_bytes: d.backlog() * p.record_bytes,
                oldest_record_ms: d.oldest_ms,
                last_pass_ms: d.last_pass_ms,
                budget_used: 0,
            };
            let decision = p.policy.decide(Trigger::Scheduled, &inputs);
            match p.policy.idle_after(&decision, fastrand::f64()) {
                None => {
                    d.pass_start_ms = Some(now);
                    d.pass_target = d.written;
                }
                Some(idle) => {
                    q.push(Reverse((now + ms(idle).max(100), i)));
                    continue;
                }
            }
        }
        // In a pass with data to send: one attempt.
        if let Some(last) = d.last_attempt_ms {
            longest_wait = longest_wait.max(now - last);
        }
        d.last_attempt_ms = Some(now);
        let mut n = d.backlog().min(p.batch_max_records);
        if p.pass_stops_at_start {
            n = n
                .min(d.pass_target.saturating_sub(d.stored + d.in_flight))
                .max(1);
        }
        let sec = usize::try_from(now / 1000).unwrap_or(usize::MAX);
        if let Some(slot) = requests.get_mut(sec) {
            *slot += 1;
        }
        if now >= recovery && !d.contacted_after {
            d.contacted_after = true;
            if let Some(slot) = first_contact.get_mut(sec) {
                *slot += 1;
            }
        }
        let next = match c.offer(p, now, i, n) {
            Answer::Refused => now + ms(d.backoff.next_delay()).max(1),
            Answer::Shed { retry_after } => {
                shed_total += 1;
                if let Some(s) = shed.get_mut(usize::try_from(now / 1000).unwrap_or(usize::MAX)) {
                    *s += 1;
                }
                now + ms(d.backoff.wait_after(Some(retry_after))).max(1)
            }
            Answer::Stored { at_ms } => {
                d.in_flight = n;
                batches += 1;
                at_ms
            }
        };
        q.push(Reverse((next, i)));
    }
    let steady_from = usize::try_from((p.outage_start_ms - 3_600_000).max(0) / 1000).unwrap_or(0);
    let steady_to = usize::try_from(p.outage_start_ms / 1000).unwrap_or(0);
    let steady = &requests[steady_from.min(steady_to)..steady_to.min(requests.len())];
    let steady_mean =
        steady.iter().map(|&n| f64::from(n)).sum::<f64>() / steady.len().max(1) as f64;
    let after = usize::try_from(recovery / 1000).unwrap_or(0);
    let peak_after = requests
        .get(after..)
        .map_or(0, |r| r.iter().copied().max().unwrap_or(0));
    let keep = usize::try_from(stop_at / 1000)
        .unwrap_or(0)
        .min(requests.len());
    let drained_sec = drained_at.map_or(keep, |d| {
        usize::try_from((recovery + d) / 1000).unwrap_or(keep)
    });
    let peak_after_drain = requests
        .get(drained_sec.min(keep)..keep)
        .map_or(0, |r| r.iter().copied().max().unwrap_or(0));
    requests.truncate(keep);
    shed.truncate(keep);
    first_contact.truncate(keep);
    let tail = requests.get(after..).unwrap_or(&[]);
    let peak_after_without_first_contact = tail
        .iter()
        .zip(first_contact.get(after..).unwrap_or(&[]))
        .map(|(&n, &f)| n - f)
        .max()
        .unwrap_or(0);
    let (peak_after_10s, peak_after_60s) = (peak_mean(tail, 10), peak_mean(tail, 60));
    Report {
        requests_per_sec: requests,
        shed_per_sec: shed,
        first_contact_per_sec: first_contact,
        steady_mean,
        peak_after,
        peak_after_without_first_contact,
        peak_after_10s,
        peak_after_60s,
        peak_after_drain,
        drain_secs: drained_at.map(|d| d as f64 / 1000.0),
        longest_wait_secs: longest_wait as f64 / 1000.0,
        slowest_first_success_secs: devices
            .iter()
            .map(|d| d.first_success_after.unwrap_or(i64::MAX))
            .max()
            .unwrap_or(0) as f64
            / 1000.0,
        written: devices.iter().map(|d| d.written).sum(),
        stored: devices.iter().map(|d| d.stored).sum(),
        batches,
        shed: shed_total,
        schedule: c.schedule.stats,
    }
}

/// Highest mean over `w` consecutive values.
fn peak_mean(v: &[u32], w: usize) -> f64 {
    v.windows(w.max(1))
        .map(|x| x.iter().map(|&n| f64::from(n)).sum::<f64>())
        .fold(0.0, f64::max)
        / w.max(1) as f64
}

#[cfg(test)]
mod tests;
