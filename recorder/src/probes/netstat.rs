//! `seglog probe netstat`: Tailscale's sockstatlog idea on Linux.
//!
//! Reads the per-interface byte counters in `/proc/net/dev` every `--poll-interval`
//! (default 100 ms, 10 Hz), keeps the non-zero deltas of each poll, and every
//! `--log-interval` (default 10 s) writes one record with them:
//!
//! ```json
//! {"t": 1700000000000, "d": 10000,
//!  "total": {"eth0": {"rx": 5120, "tx": 880}},
//!  "samples": [{"t": 1700000000100, "d": 100, "s": {"eth0": [5120, 880]}}]}
//! ```
//!
//! `t` are wall-clock milliseconds, `d` durations in milliseconds, sample values are
//! `[rx, tx]` bytes. Intervals with no traffic write nothing. Both schedules are fixed
//! against the start time (deadline = start + k x interval), so they do not drift; a poll
//! that falls behind skips the ticks it missed instead of bunching up.
use std::collections::BTreeMap;
use std::collections::VecDeque;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::full_disk::FullDisk;
use crate::config::RateLimitStrategy;
use crate::record::Classification;
use crate::{RecordBuilder, Recorder};

/// Options of `seglog probe netstat`.
#[derive(Debug, Clone, clap::Args)]
pub struct NetstatArgs {
    /// How often to read the interface counters (e.g. 100ms).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// How often to write a record of the deltas seen (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    pub log_interval: Duration,
    /// Stop after this long, writing the last partial interval (default: run until killed).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Also report the loopback interface `lo`.
    #[arg(long)]
    pub include_loopback: bool,
    /// Classification of the records.
    #[arg(
        short = 'c',
        long = "class",
        value_name = "CLASS",
        default_value = "org.seglog/netstat/deltas"
    )]
    pub class: Classification,
    /// The counters file (for tests and containers).
    #[arg(long, value_name = "FILE", default_value = "/proc/net/dev")]
    pub net_dev: PathBuf,
}

/// Interface name to `(rx bytes, tx bytes)`.
pub type Counters = BTreeMap<String, (u64, u64)>;

/// Parses `/proc/net/dev`. Lines that do not parse are skipped.
pub fn parse_net_dev(text: &str) -> Counters {
    text.lines()
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let f: Vec<u64> = rest
                .split_whitespace()
                .map_while(|v| v.parse().ok())
                .collect();
            Some((name.trim().to_string(), (*f.first()?, *f.get(8)?)))
        })
        .collect()
}

/// Per-interface deltas between two snapshots, non-zero ones only. A counter that went
/// down (interface reset or re-created) counts from zero.
pub fn deltas(prev: &Counters, cur: &Counters) -> Counters {
    cur.iter()
        .filter_map(|(name, &(rx, tx))| {
            let (prx, ptx) = prev.get(name).copied().unwrap_or((rx, tx));
            let d = |c: u64, p: u64| if c >= p { c - p } else { c };
            let (drx, dtx) = (d(rx, prx), d(tx, ptx));
            (drx != 0 || dtx != 0).then(|| (name.clone(), (drx, dtx)))
        })
        .collect()
}

#[derive(Debug, Serialize)]
struct Total {
    rx: u64,
    tx: u64,
}

#[derive(Debug, Serialize)]
struct Sample {
    t: i64,
    d: u64,
    s: BTreeMap<String, [u64; 2]>,
}

#[derive(Debug, Serialize)]
struct Interval {
    t: i64,
    d: u64,
    total: BTreeMap<String, Total>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    samples: Vec<Sample>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    samples_dropped: bool,
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn read(path: &Path) -> anyhow::Result<Counters> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(parse_net_dev(&text))
}

/// The probe's state between records.
struct Collector {
    include_loopback: bool,
    start_wall: i64,
    start: Instant,
    samples: Vec<Sample>,
}

impl Collector {
    fn add(&mut self, at_wall: i64, d: Duration, delta: Counters) {
        let s: BTreeMap<String, [u64; 2]> = delta
            .into_iter()
            .filter(|(n, _)| self.include_loopback || n != "lo")
            .map(|(n, (rx, tx))| (n, [rx, tx]))
            .collect();
        if !s.is_empty() {
            self.samples.push(Sample {
                t: at_wall,
                d: ms(d),
                s,
            });
        }
    }

    /// The payload of the interval that ends now, if there was traffic.
    fn take(&mut self, now: Instant, max: usize) -> Option<Vec<u8>> {
        let samples = std::mem::take(&mut self.samples);
        let (t, d) = (self.start_wall, ms(now - self.start));
        self.start_wall += i64::try_from(d).unwrap_or(0);
        self.start = now;
        if samples.is_empty() {
            return None;
        }
        let mut total: BTreeMap<String, Total> = BTreeMap::new();
        for s in &samples {
            for (n, [rx, tx]) in &s.s {
                let e = total.entry(n.clone()).or_insert(Total { rx: 0, tx: 0 });
                e.rx += rx;
                e.tx += tx;
            }
        }
        let mut iv = Interval {
            t,
            d,
            total,
            samples,
            samples_dropped: false,
        };
        let bytes = serde_json::to_vec(&iv).ok()?;
        if bytes.len() <= max {
            return Some(bytes);
        }
        iv.samples.clear();
        iv.samples_dropped = true;
        serde_json::to_vec(&iv).ok().filter(|b| b.len() <= max)
    }
}

/// How often the sleeping probe checks for a stop request.
const STOP_CHECK: Duration = Duration::from_millis(50);

impl NetstatArgs {
    /// Checks the options (before the log is opened).
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.poll_interval.is_zero(),
            "--poll-interval must be greater than zero"
        );
        anyhow::ensure!(
            self.log_interval >= self.poll_interval,
            "--log-interval ({:?}) must be at least --poll-interval ({:?})",
            self.log_interval,
            self.poll_interval
        );
        Ok(())
    }
}

/// Runs the probe until `--duration` passes, or until SIGTERM or SIGINT: then it takes a last
/// poll and records the interval in progress before it exits 0, so stopping the probe (e.g.
/// `systemctl stop`) loses no traffic that was counted.
pub fn run(args: NetstatArgs, rec: &Recorder) -> anyhow::Result<ExitCode> {
    args.check()?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .map_err(|e| anyhow::anyhow!("cannot install a handler for signal {sig}: {e}"))?;
    }
    let r = run_with(&args, rec, &stop, |receipt| {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{}", receipt.id()).and_then(|()| out.flush());
    })?;
    let release = r.spooled_until_ms.map_or(String::new(), |u| {
        format!(
            " {}",
            crate::counters::describe_release(u, crate::counters::now_wall_ms())
        )
    });
    eprintln!(
        "netstat: {} polls, {} records, {} dropped for lack of space, {} held back by the rate limit (spooled){release}",
        r.polls, r.records, r.no_space_dropped, r.spooled
    );
    Ok(ExitCode::SUCCESS)
}

/// Interval records held in memory while the log is out of space (strategy spool).
pub const HOLD_RECORDS: usize = 360;

/// What a run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetstatReport {
    /// Records written.
    pub records: u64,
    /// Polls of the counters file.
    pub polls: u64,
    /// Interval records given up because the log was out of space.
    pub no_space_dropped: u64,
    /// Records the rate limiter spooled (written, held back from upload).
    pub spooled: u64,
    /// The latest release time of those (wall ms since the Unix epoch).
    pub spooled_until_ms: Option<i64>,
}

/// The probe loop; calls `on_record` with each record's receipt (its id is derived on
/// demand). Ends when `--duration` passes or `stop` is set, after a last poll whose interval
/// is recorded. While the log is out of space, interval records wait in memory (strategy
/// spool, at most [`HOLD_RECORDS`]) or are dropped (strategy drop), counted as `no_space`.
pub fn run_with(
    args: &NetstatArgs,
    rec: &Recorder,
    stop: &AtomicBool,
    mut on_record: impl FnMut(crate::Receipt),
) -> anyhow::Result<NetstatReport> {
    let builder = RecordBuilder::new(args.class.clone(), crate::Severity::LOW);
    let start = Instant::now();
    let end = args.duration.map(|d| start + d);
    let mut prev = read(&args.net_dev)?;
    let mut prev_at = (start, wall_ms());
    let mut col = Collector {
        include_loopback: args.include_loopback,
        start_wall: prev_at.1,
        start,
        samples: Vec::new(),
    };
    let (mut records, mut polls, mut k) = (0u64, 0u64, 1u32);
    // Interval records not yet written because the log is out of space.
    let mut pending: VecDeque<Vec<u8>> = VecDeque::new();
    let mut full = FullDisk::new("netstat");
    let (mut spooled, mut spooled_until_ms) = (0u64, None::<i64>);
    let (hold, plan) = match rec.strategy() {
        RateLimitStrategy::Spool => (
            HOLD_RECORDS,
            format!(
                "holding up to {HOLD_RECORDS} interval records in memory and retrying each interval (rate_limit_strategy = spool); records past that are dropped and counted as no_space"
            ),
        ),
        RateLimitStrategy::Drop => (
            0,
            "dropping interval records and counting them as no_space until space returns (rate_limit_strategy = drop)".to_string(),
        ),
    };
    let mut next_log = start + args.log_interval;
    loop {
        let mut deadline = start + args.poll_interval.saturating_mul(k);
        let mut finishing = end.is_some_and(|e| deadline >= e);
        if let Some(e) = end.filter(|_| finishing) {
            deadline = e;
        }
        // Sleep in short steps so a stop request is seen within STOP_CHECK.
        loop {
            if stop.load(Ordering::Relaxed) {
                finishing = true;
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            std::thread::sleep(left.min(STOP_CHECK));
        }
        let now = Instant::now();
        let cur = read(&args.net_dev)?;
        polls += 1;
        col.add(prev_at.1, now - prev_at.0, deltas(&prev, &cur));
        prev = cur;
        prev_at = (now, wall_ms());
        if now >= next_log || finishing {
            if let Some(payload) = col.take(now, rec.max_payload()) {
                pending.push_back(payload);
            }
            if finishing {
                full.allow_try();
            }
            while let Some(payload) = pending.front() {
                if !full.should_try() {
                    break;
                }
                match rec.record(&builder.clone().payload(payload)) {
                    Ok(receipt) => {
                        full.succeeded();
                        if let Some(until) = receipt.held_back_until() {
                            spooled += 1;
                            spooled_until_ms = spooled_until_ms.max(Some(until));
                        }
                        on_record(receipt);
                        records += 1;
                        pending.pop_front();
                    }
                    Err(e) if e.is_no_space() => {
                        full.failed(&e, &plan);
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            let keep = if finishing { 0 } else { hold };
            if full.is_full() && pending.len() > keep {
                let shed = (pending.len() - keep) as u64;
                pending.truncate(keep);
                full.drop_records(rec, shed);
            }
            while next_log <= now {
                next_log += args.log_interval;
            }
        }
        if finishing {
            let _ = rec.flush_counters();
            return Ok(NetstatReport {
                records,
                polls,
                no_space_dropped: full.dropped,
                spooled,
                spooled_until_ms,
            });
        }
        // Skip the ticks a slow poll missed rather than running them back to back.
        let elapsed = now.saturating_duration_since(start).as_nanos();
        let behind =
            u32::try_from(elapsed / args.poll_interval.as_nanos().max(1)).unwrap_or(u32::MAX);
        k = k.saturating_add(1).max(behind.saturating_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:   12345     100    0    0    0     0          0         0    12345     100    0    0    0     0       0          0
  eth0: 987654321 5000    0    0    0     0          0         0  1234567    4000    0    0    0     0       0          0
";

    #[test]
    fn parses_rx_and_tx_bytes_per_interface() {
        let c = parse_net_dev(SAMPLE);
        assert_eq!(c.get("lo"), Some(&(12345, 12345)));
        assert_eq!(c.get("eth0"), Some(&(987654321, 1234567)));
        assert_eq!(c.len(), 2);
    }

    #[test]
    fn deltas_keep_only_non_zero_changes_and_treat_resets_as_new_counts() {
        let a: Counters = [("eth0".into(), (100, 50)), ("wlan0".into(), (10, 10))].into();
        let b: Counters = [
            ("eth0".into(), (150, 50)),
            ("wlan0".into(), (10, 10)),
            ("tun0".into(), (5, 5)),
        ]
        .into();
        assert_eq!(deltas(&a, &b), [("eth0".to_string(), (50, 0))].into());
        let reset: Counters = [("eth0".into(), (20, 60))].into();
        assert_eq!(deltas(&b, &reset), [("eth0".to_string(), (20, 10))].into());
    }

    #[test]
    fn an_interval_payload_totals_its_samples_and_sheds_samples_when_too_big() {
        let start = Instant::now();
        let mut c = Collector {
            include_loopback: false,
            start_wall: 1000,
            start,
            samples: Vec::new(),
        };
        c.add(
            1000,
            Duration::from_millis(100),
            [("eth0".into(), (10, 1)), ("lo".into(), (5, 5))].into(),
        );
        c.add(
            1100,
            Duration::from_millis(100),
            [("eth0".into(), (20, 2))].into(),
        );
        let p = c.take(start + Duration::from_secs(10), 1 << 20).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["t"], 1000);
        assert_eq!(v["d"], 10_000);
        assert_eq!(v["total"]["eth0"]["rx"], 30);
        assert_eq!(v["total"]["eth0"]["tx"], 3);
        assert!(
            v["total"].get("lo").is_none(),
            "loopback is excluded by default"
        );
        assert_eq!(v["samples"].as_array().unwrap().len(), 2);
        assert_eq!(
            c.take(start + Duration::from_secs(20), 1 << 20),
            None,
            "no traffic, no record"
        );
        c.add(
            1,
            Duration::from_millis(100),
            [("eth0".into(), (1, 1))].into(),
        );
        let small = c.take(start + Duration::from_secs(30), 100).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&small).unwrap();
        assert_eq!(v["samples_dropped"], true);
    }
}
