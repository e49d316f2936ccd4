//! A log directory with a config file for running the real `seglog upload` binary, and an
//! in-process collector on 127.0.0.1 (shared by the network tests of the uploader).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recorder::config::{Config, RecorderConfig};
use recorder::RecordBuilder;

/// A log directory, its config file and a home for the child processes.
pub struct Env {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub home: PathBuf,
}

impl Env {
    /// Uploads to `url` (the collector's base URL), with `extra` lines in `[upload]` (the
    /// request `timeout` among them, if not the default).
    pub fn new(url: &str, extra: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("log");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let config = tmp.path().join("seglog.toml");
        let text = format!(
            "[log]\nsegment_size = \"64KiB\"\nmax_record_size = \"16KiB\"\nmax_bytes = 0\nmax_age = 0\n\n[upload]\nurl = \"{url}\"\nrequire_opt_in = false\nbatch_max_records = 300\nbackoff_base = \"10ms\"\nbackoff_cap = \"100ms\"\n{extra}\n"
        );
        std::fs::write(&config, text).unwrap();
        Env {
            tmp,
            dir,
            config,
            home,
        }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_seglog"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .arg("--dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Writes records `from..to` (payload `line N`).
    pub fn write(&self, from: u64, to: u64) {
        let mut c = Config::for_dir(&self.dir);
        c.log.segment_size = 64 << 10;
        c.log.max_record_size = 16 << 10;
        c.log.max_bytes = None;
        c.log.max_age = None;
        c.recorder = RecorderConfig::unlimited();
        c.recorder.static_machine_id_file = self.home.join("static-id");
        c.recorder.machine_id_secret_file = self.home.join("secret");
        let r = recorder::Recorder::open(&c).unwrap();
        for i in from..to {
            r.record(
                &RecordBuilder::parse("org.test/net/line", 2)
                    .unwrap()
                    .payload(format!("line {i:09} over a cut network").as_bytes()),
            )
            .unwrap();
        }
    }

    /// `upload status --json`, parsed.
    pub fn status(&self) -> serde_json::Value {
        let o = self.run(&["upload", "status", "--json"]);
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}: {}", text(&o)))
    }
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn text(o: &Output) -> String {
    format!(
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A collector on a free loopback port with its data in `dir`.
pub fn collector(dir: &std::path::Path) -> collector::RunningServer {
    let mut c = collector::ServerConfig::new(dir.join("data"));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_grace = std::time::Duration::from_secs(2);
    collector::Server::start(c).unwrap()
}

/// Records the collector stored (its `/api/stats`).
pub fn stored_records(base: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&get(&format!("{base}/api/stats")).1).unwrap();
    v["records"].as_u64().unwrap_or(0)
}

/// A plain HTTP GET on 127.0.0.1: (status, body). The body must not be chunked.
pub fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// A 127.0.0.1 listener that accepts connections, reads what they send and never answers.
/// Stops (and drops its connections) when dropped.
pub struct Silent {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Silent {
    pub fn start() -> Silent {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut held: Vec<TcpStream> = Vec::new();
            let mut buf = [0u8; 64 << 10];
            while !st.load(Ordering::Relaxed) {
                if let Ok((c, _)) = l.accept() {
                    let _ = c.set_nonblocking(true);
                    a.fetch_add(1, Ordering::Relaxed);
                    held.push(c);
                }
                for c in &mut held {
                    let _ = c.read(&mut buf);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Silent {
            addr,
            accepted,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A running `seglog upload run`, its stderr collected.
pub struct Daemon {
    pub child: Child,
    pub stderr: Arc<Mutex<String>>,
}

impl Daemon {
    pub fn start(e: &Env) -> Daemon {
        let mut child = e
            .cmd(&["upload", "run", "--no-startup-delay"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut r = BufReader::new(child.stderr.take().unwrap());
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut line = String::new();
        while r.read_line(&mut line).unwrap() > 0 {
            stderr.lock().unwrap().push_str(&line);
            if line.contains("daemon started") {
                break;
            }
            line.clear();
        }
        assert!(
            line.contains("daemon started"),
            "daemon did not start: {line}"
        );
        let out = stderr.clone();
        std::thread::spawn(move || {
            let mut line = String::new();
            while r.read_line(&mut line).unwrap_or(0) > 0 {
                out.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        Daemon { child, stderr }
    }

    /// Sends SIGTERM; returns the exit status and how long the daemon took to exit (it is
    /// killed after 60 s).
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let pid = self.child.id().to_string();
        let st = Command::new("kill").args(["-s", "TERM", &pid]).status();
        assert!(st.is_ok_and(|s| s.success()));
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, start.elapsed());
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The base URL (`http://127.0.0.1:PORT`) a `seglog collector serve --print-address` child
/// prints as its first line, `listening on URL`; panics with the line when it is anything else.
pub fn listening_url(child: &mut Child) -> String {
    let out = child
        .stdout
        .as_mut()
        .expect("the collector's stdout is piped");
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    line.trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("the collector printed {line:?}, not \"listening on URL\""))
        .to_owned()
}
