//! `seglog demo`: the whole pipeline end to end, with no setup.
//!
//! It creates a temporary log directory (or uses `--dir`), starts a collector on a free
//! loopback port, records with the built-in probes (hello; a burst from several threads of
//! this process and two `probe pipe` processes; a few seconds of netstat), shows `journal
//! stats`, runs `upload flush`, asks the collector what it stored and prints a summary. Every
//! step but the in-process burst runs the real `seglog` binary, exactly as a user would.
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use config_layers::GlobalArgs;
use recorder::config::Config;
use recorder::{RecordBuilder, Recorder};
use serde_json::Value;

/// Run the pipeline end to end on a temporary log: record, inspect, upload, collect.
///
/// Prints a summary (records written / uploaded / stored, bytes, compression ratio,
/// duplicates) and then serves the collector's web UI until Ctrl-C. Exit code 0 when every
/// record written was stored exactly once, 1 when the counts disagree, 2 on error.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Exit when the work is done instead of serving the web UI until Ctrl-C.
    #[arg(long)]
    exit: bool,
    /// Collector listen address (default: a free port on 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Writer threads in this process for the burst.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Records per burst writer (each thread and each of the two pipe processes).
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    records: u32,
    /// How long the netstat probe runs.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    netstat: Duration,
    /// Keep the temporary directory when the demo ends.
    #[arg(long)]
    keep: bool,
    /// Also forward everything the collector stores to this OTLP/HTTP logs endpoint (an
    /// OpenTelemetry Collector's `http://HOST:4318/v1/logs`, Grafana Alloy, a vendor) through
    /// `[collector.forward]`, and wait until it took all of it (OTLP.md).
    #[arg(long, value_name = "URL")]
    otlp: Option<String>,
}

/// Runs the demo.
pub fn run(args: DemoArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    // SEGLOG_DIR from the environment names the user's real log; the demo only uses a
    // directory given explicitly with --dir.
    let explicit = global
        .dir
        .clone()
        .filter(|d| match std::env::var_os("SEGLOG_DIR") {
            Some(e) => Path::new(&e) != d,
            None => true,
        });
    let (root, temporary) = match explicit {
        Some(d) => (d, false),
        None => {
            let d = std::env::temp_dir().join(format!("seglog-demo-{}", std::process::id()));
            (d, true)
        }
    };
    let result = demo(&args, &root);
    if temporary && !args.keep {
        let _ = std::fs::remove_dir_all(&root);
    }
    result
}

fn step(n: u32, what: &str) {
    println!("\n== {n}. {what}");
}

fn demo(args: &DemoArgs, root: &Path) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let log_dir = root.join("log");
    let config_path = root.join("seglog.toml");
    segment_log::Sharing::Private
        .create_dir_all(root)
        .with_context(|| format!("cannot create {}", root.display()))?;
    println!("seglog demo: working in {}", root.display());

    step(1, "collector");
    let mut server_cfg = collector::ServerConfig::new(root.join("collector"));
    server_cfg.listen = args
        .listen
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    if let Some(u) = &args.otlp {
        let section = collector::forward::ForwardSection {
            url: Some(u.clone()),
            ..Default::default()
        };
        let f = section
            .resolve()
            .map_err(|e| anyhow::anyhow!("--otlp: {e}"))?;
        println!("forwarding what the collector stores to {}", f.url);
        server_cfg.forward = Some(f);
    }
    let server = collector::Server::start(server_cfg).context("cannot start the collector")?;
    let url = server.url();
    println!("collector listening on {url}");
    write_config(&config_path, &log_dir, &url)?;
    let seglog = Seglog::new(&config_path)?;

    step(2, "probes");
    seglog.run(&["upload", "opt-in"], "upload opt-in")?;
    let hello = seglog.output(&["probe", "hello"], "probe hello")?;
    println!("probe hello wrote record {}", hello.trim());

    // The netstat probe and the two pipe processes run while this process's threads burst.
    let netstat = seglog.spawn(&[
        "probe",
        "netstat",
        "--poll-interval",
        "100ms",
        "--log-interval",
        "1s",
        "--duration",
        &humantime::format_duration(args.netstat).to_string(),
        "--include-loopback",
    ])?;
    let pipes = (0..2)
        .map(|p| spawn_pipe(&seglog, p, args.records))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let burst_start = Instant::now();
    let written_here = burst(&config_path, args.threads, args.records)?;
    let burst_time = burst_start.elapsed();
    for (i, p) in pipes.into_iter().enumerate() {
        let out = p.wait_with_output().context("probe pipe")?;
        if !out.status.success() {
            bail!(
                "probe pipe {i} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    println!(
        "burst: {written_here} records from {} threads in {:.2}s, plus 2 x {} from two `probe pipe` processes",
        args.threads,
        burst_time.as_secs_f64(),
        args.records
    );
    let out = netstat.wait_with_output().context("probe netstat")?;
    if !out.status.success() {
        bail!(
            "probe netstat failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    println!(
        "netstat probe ran for {}",
        humantime::format_duration(args.netstat)
    );

    step(3, "seglog journal stats");
    seglog.run(&["journal", "stats"], "journal stats")?;
    let written = segment_log::stats(&log_dir, true)?;

    step(4, "seglog upload flush");
    seglog.run(&["upload", "flush", "--timeout", "2m"], "upload flush")?;

    step(5, "what the collector stored");
    let stats = get_json(&format!("{url}/api/stats"))?;
    let stored = stats["records"].as_u64().unwrap_or(0);
    let duplicates = stats["records_duplicate"].as_u64().unwrap_or(0);
    let batches = stats["batches"]["received"].as_u64().unwrap_or(0);
    let dup_batches = stats["batches"]["duplicates"].as_u64().unwrap_or(0);
    let wire = stats["bytes"]["compressed"].as_u64().unwrap_or(0);
    let raw = stats["bytes"]["decompressed"].as_u64().unwrap_or(0);
    let sample = get_json(&format!("{url}/api/records?limit=3&include_payload=true"))?;
    if let Some(records) = sample["records"].as_array() {
        for r in records {
            println!(
                "  newest: {} sev {} {}",
                r["classification"].as_str().unwrap_or("?"),
                r["severity"],
                r["payload"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(70)
                    .collect::<String>()
            );
        }
    }

    let forwarded = match server.forward_stats() {
        Some(f) => {
            step(6, "forwarding to the OTLP endpoint");
            Some(wait_forwarded(f)?)
        }
        None => None,
    };

    println!("\n== summary");
    println!("records written        {}", written.records);
    println!("records stored         {stored} (in {batches} batches, {dup_batches} resent batches deduplicated)");
    println!("duplicate records      {duplicates}");
    println!(
        "log on disk            {} bytes used in {} segment(s)",
        written.bytes_used, written.segments
    );
    if wire > 0 {
        println!(
            "bytes on the wire      {wire} (batches {raw} bytes before zstd: ratio {:.1}x)",
            raw as f64 / wire as f64
        );
    }
    if let Some((batches, records, rejected)) = forwarded {
        println!(
            "forwarded over OTLP    {records} records in {batches} batches ({rejected} rejected by the receiver)"
        );
    }
    println!(
        "total time             {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let ok = stored == written.records
        && duplicates == 0
        && forwarded.is_none_or(|(_, records, rejected)| records == stored && rejected == 0);
    if !ok {
        eprintln!(
            "seglog demo: MISMATCH: {} records written but {stored} stored",
            written.records
        );
    }
    println!("\nweb UI: {url}/ui/records   (stats: {url}/ui/stats, API: {url}/api/records)");
    if !args.exit {
        println!("serving until Ctrl-C (use --exit to stop at once)");
        wait_for_ctrl_c()?;
    }
    server.shutdown()?;
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Waits until the forwarder has passed on every batch it queued: (batches, records,
/// records rejected by the receiver).
fn wait_forwarded(f: &collector::forward::ForwardStats) -> anyhow::Result<(u64, u64, u64)> {
    use std::sync::atomic::Ordering::Relaxed;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = None;
    loop {
        let (queued, done, dead) = (
            f.queued.load(Relaxed),
            f.forwarded.load(Relaxed),
            f.dead_lettered.load(Relaxed),
        );
        if last != Some(done) {
            println!("forwarded {done} of {queued} batches");
            last = Some(done);
        }
        if done + dead >= queued {
            if dead > 0 {
                println!(
                    "{dead} batches refused for good (see the collector's forward/dead-letter/)"
                );
            }
            return Ok((
                done,
                f.forwarded_records.load(Relaxed),
                f.rejected_records.load(Relaxed),
            ));
        }
        if Instant::now() > deadline {
            bail!(
                "the OTLP endpoint took {done} of {queued} batches in 2 minutes (retries: {}); is it up?",
                f.retries.load(Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn write_config(path: &Path, log_dir: &Path, url: &str) -> anyhow::Result<()> {
    // Rate limits off: the burst is the point. Uploads go to the demo collector.
    let text = format!(
        "# Written by `seglog demo`.\n\
         [log]\ndir = {dir}\n\n\
         [recorder]\nrate_limit_enabled = false\n\n\
         [upload]\nurl = {url}\nmode = \"on-demand\"\nstartup_delay = \"0s\"\n",
        dir = toml_str(&log_dir.to_string_lossy()),
        url = toml_str(url),
    );
    segment_log::Sharing::Private
        .write_file(path, text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// Runs the real `seglog` binary with the demo's configuration.
struct Seglog {
    exe: PathBuf,
    config: PathBuf,
}

impl Seglog {
    fn new(config: &Path) -> anyhow::Result<Seglog> {
        let exe = std::env::current_exe().context("cannot find the seglog executable")?;
        Ok(Seglog {
            exe,
            config: config.to_path_buf(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.exe);
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env_remove("SEGLOG_DIR");
        c
    }

    /// Runs to completion with the output shown.
    fn run(&self, args: &[&str], what: &str) -> anyhow::Result<()> {
        let status = self
            .command(args)
            .status()
            .with_context(|| format!("cannot run seglog {what}"))?;
        if !status.success() {
            bail!("seglog {what} failed ({status})");
        }
        Ok(())
    }

    /// Runs to completion and returns stdout.
    fn output(&self, args: &[&str], what: &str) -> anyhow::Result<String> {
        let out = self
            .command(args)
            .output()
            .with_context(|| format!("cannot run seglog {what}"))?;
        if !out.status.success() {
            bail!(
                "seglog {what} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn(&self, args: &[&str]) -> anyhow::Result<std::process::Child> {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start seglog")
    }
}

/// A `probe pipe` process fed `n` log lines on stdin (from a writer thread, so its stdout
/// and stderr pipes cannot fill up and stall it).
fn spawn_pipe(seglog: &Seglog, p: u32, n: u32) -> anyhow::Result<std::process::Child> {
    let class = format!("org.seglog/demo/pipe{p}");
    let mut cmd = seglog.command(&["probe", "pipe", "-c", &class, "-s", "1"]);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start seglog probe pipe")?;
    let mut stdin = child.stdin.take().context("probe pipe stdin")?;
    std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(&mut stdin);
        for i in 0..n {
            let _ = writeln!(w, "{}", demo_line(p + 100, i));
        }
    });
    Ok(child)
}

/// A realistic log line: what telemetry payloads look like (and what zstd sees).
fn demo_line(writer: u32, i: u32) -> String {
    const COMPONENTS: [&str; 5] = ["dhcpd", "kernel", "sshd", "systemd", "wpa_supplicant"];
    const EVENTS: [&str; 5] = [
        "lease renewed for 192.168.1.{} on wlan0",
        "usb 1-{}: new high-speed USB device number 4 using xhci_hcd",
        "Accepted publickey for admin from 10.0.0.{} port 52114 ssh2",
        "Started Daily apt upgrade and clean activities (job {})",
        "wlan0: CTRL-EVENT-SIGNAL-CHANGE above=1 signal=-{} noise=-92 txrate=144400",
    ];
    let k = (i as usize * 7 + writer as usize) % COMPONENTS.len();
    let event = EVENTS[k].replace("{}", &(i % 250).to_string());
    format!(
        "writer={writer} seq={i} {}[{}]: {event}",
        COMPONENTS[k],
        1000 + writer
    )
}

/// Several threads of this process record through one `Recorder`.
fn burst(config_path: &Path, threads: u32, n: u32) -> anyhow::Result<u64> {
    let global = GlobalArgs {
        dir: None,
        config: Some(config_path.to_path_buf()),
    };
    let cfg = Config::load(&global)?;
    let rec = std::sync::Arc::new(Recorder::open(&cfg)?);
    let severities = [1i64, 1, 2, 1, 3, 1, 1, 4];
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let rec = rec.clone();
            std::thread::spawn(move || -> anyhow::Result<u64> {
                let class = format!("org.seglog/demo/thread{t}");
                for i in 0..n {
                    let line = demo_line(t, i);
                    let sev = severities[i as usize % severities.len()];
                    let b = RecordBuilder::parse(&class, sev)?.payload(line.as_bytes());
                    rec.record(&b)?;
                }
                Ok(u64::from(n))
            })
        })
        .collect();
    let mut total = 0;
    for h in handles {
        total += h
            .join()
            .map_err(|_| anyhow::anyhow!("a burst thread panicked"))??;
    }
    Ok(total)
}

fn get_json(url: &str) -> anyhow::Result<Value> {
    let mut resp = ureq::get(url)
        .config()
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .call()
        .with_context(|| format!("GET {url}"))?;
    // Small answers (stats, three records): 1 MiB is plenty and bounds a bad server.
    let body = resp
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .with_context(|| format!("GET {url}: reading the body"))?;
    serde_json::from_slice(&body).with_context(|| format!("GET {url}: not JSON"))
}

fn wait_for_ctrl_c() -> anyhow::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("cannot install the Ctrl-C handler")?;
    let _ = signals.forever().next();
    Ok(())
}
