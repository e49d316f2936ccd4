//! The scaled-down real run: `devices` real uploader engines (`uploader::engine::Uploader`:
//! its batch builder over a real log, its HTTP transport, backoff and `Retry-After`), each on
//! its own log written by the real recorder, in one process, against the real collector on
//! 127.0.0.1 with a small write queue (so it sheds with 429). Each device runs the daemon's
//! scheduled loop (`Uploader::decide`, a pass up to the log end as of its start,
//! `Policy::idle_after`) on a shortened interval. The collector is stopped for `outage` and
//! started again on the same port and data directory.
//!
//! Requests are counted on the device side, as they happen: every acknowledged batch and
//! every failed attempt (`Waiter::attempt_failed`: 429, refused connection...), per second
//! of the run. At the end every device is drained, the collector is stopped and its store
//! is counted per device against what each device wrote.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use collector::{RunningServer, Server, ServerConfig};
use recorder::config::{Config, RecorderConfig};
use recorder::{RecordBuilder, Recorder};
use uploader::config::UploadConfig;
use uploader::engine::{FailedAttempt, PassOptions, PassOutcome, Uploader, Waiter};
use uploader::policy::{Decision, Policy, Trigger};

/// What to run.
#[derive(Debug, Clone)]
pub struct RealParams {
    /// Uploader engines.
    pub devices: u32,
    /// Records each device writes per second (by one writer thread for all).
    pub records_per_sec: u32,
    /// The policy's interval (15 minutes on a device; shortened here).
    pub interval: Duration,
    /// Backoff base and cap.
    pub backoff_base: Duration,
    /// See `backoff_base`.
    pub backoff_cap: Duration,
    /// The collector's `ingest_queue_bytes`.
    pub queue_bytes: u64,
    /// Steady state before the outage.
    pub steady: Duration,
    /// How long the collector is down.
    pub outage: Duration,
    /// Give up if the backlog has not drained this long after the restart.
    pub max_after: Duration,
    /// Steady state kept after the drain (before the writers stop).
    pub tail: Duration,
}

/// What happened.
#[derive(Debug, Clone)]
pub struct RealReport {
    /// Requests per second of the run (acknowledged batches and failed attempts).
    pub requests_per_sec: Vec<u32>,
    /// Of those, answered 429.
    pub shed_per_sec: Vec<u32>,
    /// Of those, failed without an HTTP answer (the collector was down).
    pub unanswered_per_sec: Vec<u32>,
    /// Seconds of the run at which the collector stopped and started again.
    pub outage_secs: (usize, usize),
    /// Mean requests per second over the steady phase (from one interval in, when every
    /// device has started).
    pub steady_mean: f64,
    /// Highest requests in one second after the restart (until the writers stop).
    pub peak_after: u32,
    /// Seconds from the restart until everything written before it was acknowledged.
    pub drain_secs: Option<f64>,
    /// Longest wait a device was told before its next attempt, s.
    pub longest_wait_secs: f64,
    /// Records written by all devices, and found in the collector's store at the end.
    pub written: u64,
    /// See `written`.
    pub stored: u64,
    /// Devices whose stored record count equals what they wrote.
    pub devices_exact: u32,
    /// 429 answers counted by the collectors (`seglog_collector_ingest_shed_total`, read
    /// once each has stopped: `RunningServer::shutdown_counting_shed`).
    pub collector_shed: u64,
}

impl RealReport {
    /// Peak after the restart over the steady mean.
    pub fn peak_to_mean(&self) -> f64 {
        f64::from(self.peak_after) / self.steady_mean.max(f64::MIN_POSITIVE)
    }
}

/// Per-second counters shared by all device threads.
struct Timeline {
    start: Instant,
    requests: Vec<AtomicU32>,
    shed: Vec<AtomicU32>,
    unanswered: Vec<AtomicU32>,
    longest_wait_ms: AtomicU64,
}

impl Timeline {
    fn new(secs: usize) -> Timeline {
        let v = || (0..secs).map(|_| AtomicU32::new(0)).collect();
        Timeline {
            start: Instant::now(),
            requests: v(),
            shed: v(),
            unanswered: v(),
            longest_wait_ms: AtomicU64::new(0),
        }
    }

    fn bump(&self, which: &[AtomicU32], n: u32) {
        let s = self.start.elapsed().as_secs() as usize;
        if let Some(c) = which.get(s) {
            c.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn take(v: &[AtomicU32], len: usize) -> Vec<u32> {
        v.iter()
            .take(len)
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }
}

struct Sleeper<'a> {
    stop: &'a AtomicBool,
    t: &'a Timeline,
}

impl Waiter for Sleeper<'_> {
    fn wait(&mut self, d: Duration) -> bool {
        let until = Instant::now() + d;
        while !self.stop.load(Ordering::Relaxed) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
        true
    }

    fn stop_requested(&mut self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn attempt_failed(&mut self, f: &FailedAttempt) {
        self.t.bump(&self.t.requests, 1);
        if f.reason.starts_with("HTTP 429") {
            self.t.bump(&self.t.shed, 1);
        } else if !f.reason.starts_with("HTTP ") {
            self.t.bump(&self.t.unanswered, 1);
        }
        if let Some(w) = f.retry_in {
            let ms = u64::try_from(w.as_millis()).unwrap_or(u64::MAX);
            self.t.longest_wait_ms.fetch_max(ms, Ordering::Relaxed);
        }
    }
}

struct Device {
    dir: PathBuf,
    recorder: Recorder,
    written: AtomicU64,
    acked: AtomicU64,
}

fn open_recorder(dir: &Path, home: &Path) -> anyhow::Result<Recorder> {
    let mut c = Config::for_dir(dir);
    c.log.segment_size = 256 << 10;
    c.log.max_record_size = 16 << 10;
    c.log.max_bytes = None;
    c.log.max_age = None;
    c.recorder = RecorderConfig::unlimited();
    c.recorder.static_machine_id_file = home.join("static-id");
    c.recorder.machine_id_secret_file = home.join("secret");
    Recorder::open(&c).with_context(|| format!("opening a log in {}", dir.display()))
}

fn start_collector(
    data: &Path,
    listen: std::net::SocketAddr,
    p: &RealParams,
) -> anyhow::Result<RunningServer> {
    let mut c = ServerConfig::new(data.to_path_buf());
    c.listen = listen;
    c.shutdown_grace = Duration::from_secs(2);
    c.limits.ingest_queue_bytes = p.queue_bytes;
    Server::start(c).context("starting the collector")
}

/// One device: the daemon's scheduled loop (`uploader::daemon`) on this device's log.
fn device_loop(
    d: &Device,
    cfg: UploadConfig,
    stop: &AtomicBool,
    t: &Timeline,
) -> anyhow::Result<()> {
    let mut up = Uploader::open(cfg.clone())?.context("the log has no id")?;
    let mut w = Sleeper { stop, t };
    // The daemon's start-up jitter, one interval wide here.
    if w.wait(uploader::retry::random_delay(cfg.policy.interval)) {
        return Ok(());
    }
    while !stop.load(Ordering::Relaxed) {
        let idle = match up.decide(Trigger::Scheduled) {
            Decision::Upload => {
                let o = PassOptions {
                    trigger: Trigger::Scheduled,
                    max_attempts: None,
                    target: uploader::backlog::log_end(&d.dir),
                    deadline: None,
                };
                let (mut records, mut batches) = (0, 0);
                let (out, _) = up.pass(&o, &mut w, &mut |p| {
                    t.bump(&t.requests, (p.batches - batches) as u32);
                    d.acked.fetch_add(p.records - records, Ordering::Relaxed);
                    (records, batches) = (p.records, p.batches);
                })?;
                match out {
                    PassOutcome::Complete | PassOutcome::BudgetExhausted => None,
                    PassOutcome::Stopped => break,
                    PassOutcome::Held(_) => Some(Duration::from_millis(100)),
                    PassOutcome::Failed(m) | PassOutcome::Configuration(m) => {
                        anyhow::bail!("{}: {m}", d.dir.display())
                    }
                }
            }
            other => cfg.policy.idle_after(&other, fastrand::f64()),
        };
        if let Some(i) = idle {
            if w.wait(i.max(Duration::from_millis(100))) {
                break;
            }
        }
    }
    Ok(())
}

/// Raises this process's soft limit of open files to its hard limit: every engine holds its
/// log's lock files, segment and cursor files and a connection, and the collector one socket
/// per device, past the common soft limit of 1,024 at a few hundred devices.
fn raise_open_files_limit() -> anyhow::Result<()> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `rlimit` through the valid pointer we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        anyhow::bail!(
            "getrlimit(RLIMIT_NOFILE): {}",
            std::io::Error::last_os_error()
        );
    }
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the valid `rlimit` we pass; a soft limit up to the hard one
        // needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            anyhow::bail!(
                "setrlimit(RLIMIT_NOFILE): {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Runs the scenario.
pub fn run(p: &RealParams) -> anyhow::Result<RealReport> {
    raise_open_files_limit()?;
    let tmp = tempfile::tempdir().context("creating a temp dir")?;
    let data = tmp.path().join("collector");
    let mut server = Some(start_collector(&data, "127.0.0.1:0".parse()?, p)?);
    let addr = server
        .as_ref()
        .map(|s| s.local_addr())
        .context("no server")?;
    let url = format!("http://{addr}");
    let devices: Vec<Arc<Device>> = (0..p.devices)
        .map(|i| {
            let dir = tmp.path().join(format!("dev{i:05}"));
            let home = dir.join("home");
            std::fs::create_dir_all(&home)?;
            let recorder = open_recorder(&dir.join("log"), &home)?;
            Ok(Arc::new(Device {
                dir: dir.join("log"),
                recorder,
                written: AtomicU64::new(0),
                acked: AtomicU64::new(0),
            }))
        })
        .collect::<anyhow::Result<_>>()?;
    let total =
        p.steady + p.outage + p.max_after + p.tail + p.interval * 4 + Duration::from_secs(60);
    let t = Arc::new(Timeline::new(total.as_secs() as usize));
    let stop_writing = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (devices, stop_writing) = (devices.clone(), stop_writing.clone());
        let per_sec = p.records_per_sec.max(1);
        std::thread::Builder::new()
            .name("writer".into())
            .spawn(move || -> anyhow::Result<()> {
                let start = Instant::now();
                let b = RecordBuilder::parse("org.example/fleet/line", 2)?;
                while !stop_writing.load(Ordering::Relaxed) {
                    let due = (start.elapsed().as_secs_f64() * f64::from(per_sec)) as u64;
                    for d in &devices {
                        while d.written.load(Ordering::Relaxed) < due {
                            let n = d.written.load(Ordering::Relaxed);
                            let payload = format!("record {n:08} of {}", d.dir.display());
                            d.recorder.record(&b.clone().payload(payload.as_bytes()))?;
                            d.written.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            })?
    };
    let threads: Vec<_> = devices
        .iter()
        .map(|d| {
            let mut cfg = UploadConfig::for_dir(&d.dir);
            cfg.url = Some(url.clone());
            cfg.policy = Policy {
                interval: p.interval,
                require_opt_in: false,
                ..Policy::default()
            };
            cfg.backoff_base = p.backoff_base;
            cfg.backoff_cap = p.backoff_cap;
            cfg.connect_timeout = Duration::from_secs(5);
            cfg.timeout = Duration::from_secs(30);
            let (d, stop, t) = (d.clone(), stop.clone(), t.clone());
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || device_loop(&d, cfg, &stop, &t))
        })
        .collect::<Result<_, _>>()?;
    std::thread::sleep(p.steady);
    // The outage.
    let down_at = t.start.elapsed().as_secs() as usize;
    let mut shed_total = match server.take() {
        Some(s) => s
            .shutdown_counting_shed()
            .context("stopping the collector")?,
        None => 0,
    };
    std::thread::sleep(p.outage);
    server = Some(start_collector(&data, addr, p)?);
    let up_at = Instant::now();
    let up_sec = t.start.elapsed().as_secs() as usize;
    let owed: Vec<u64> = devices
        .iter()
        .map(|d| d.written.load(Ordering::Relaxed))
        .collect();
    let mut drain_secs = None;
    while up_at.elapsed() < p.max_after {
        if devices
            .iter()
            .zip(&owed)
            .all(|(d, &o)| d.acked.load(Ordering::Relaxed) >= o)
        {
            drain_secs = Some(up_at.elapsed().as_secs_f64());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(p.tail);
    let tail_end = t.start.elapsed().as_secs() as usize;
    stop_writing.store(true, Ordering::Relaxed);
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("the writer panicked"))??;
    // Everything written is delivered by the devices' next passes.
    let deadline = Instant::now() + p.interval * 4 + Duration::from_secs(30);
    while Instant::now() < deadline
        && devices
            .iter()
            .any(|d| d.acked.load(Ordering::Relaxed) < d.written.load(Ordering::Relaxed))
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let end_sec = t.start.elapsed().as_secs() as usize + 1;
    stop.store(true, Ordering::Relaxed);
    for th in threads {
        th.join()
            .map_err(|_| anyhow::anyhow!("a device panicked"))??;
    }
    if let Some(s) = server.take() {
        shed_total += s
            .shutdown_counting_shed()
            .context("stopping the collector")?;
    }
    // Count what the store holds, per device.
    let store = collector::store::Store::open(&data).context("opening the collector's store")?;
    let rows = store.devices(u32::MAX).context("listing devices")?;
    let mut devices_exact = 0;
    for d in &devices {
        let id = segment_log::LogId::load(&d.dir)?.context("a log without id")?;
        let got = rows
            .iter()
            .find(|r| r.log_id == id.public())
            .map_or(0, |r| r.records);
        if got == d.written.load(Ordering::Relaxed) {
            devices_exact += 1;
        }
    }
    let stored = rows.iter().map(|r| r.records).sum();
    let written = devices
        .iter()
        .map(|d| d.written.load(Ordering::Relaxed))
        .sum();
    let requests = Timeline::take(&t.requests, end_sec);
    let from = (p.interval.as_secs() as usize).min(down_at);
    let steady = &requests[from..down_at];
    let steady_mean =
        steady.iter().map(|&n| f64::from(n)).sum::<f64>() / steady.len().max(1) as f64;
    Ok(RealReport {
        peak_after: requests
            .get(up_sec..tail_end.min(requests.len()))
            .and_then(|r| r.iter().copied().max())
            .unwrap_or(0),
        shed_per_sec: Timeline::take(&t.shed, end_sec),
        unanswered_per_sec: Timeline::take(&t.unanswered, end_sec),
        requests_per_sec: requests,
        outage_secs: (down_at, up_sec),
        steady_mean,
        drain_secs,
        longest_wait_secs: t.longest_wait_ms.load(Ordering::Relaxed) as f64 / 1000.0,
        written,
        stored,
        devices_exact,
        collector_shed: shed_total,
    })
}
