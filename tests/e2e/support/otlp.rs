//! The independent OTLP receiver (`tests/otlp/receiver.py`, the official Python classes from
//! PyPI) in a venv under `target/otlp-venv`, created on first use (`.ci/run` installs
//! python3-venv; pip reads the configured package mirror).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

/// The packages the receiver imports.
pub const PACKAGES: &[&str] = &[
    "opentelemetry-proto==1.*",
    "protobuf",
    "googleapis-common-protos",
    "zstandard",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python, or why there is none.
fn make_venv() -> Result<PathBuf, String> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"));
    let venv = target.join("otlp-venv");
    let python = venv.join("bin/python");
    let check = |p: &Path| {
        Command::new(p)
            .args(["-c", "import opentelemetry.proto.collector.logs.v1.logs_service_pb2, google.rpc.status_pb2, zstandard"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if check(&python) {
        return Ok(python);
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .map_err(|e| format!("python3 not found ({e})"))?;
    if !made.status.success() {
        return Err(format!(
            "python3 -m venv failed (install python3-venv): {}",
            String::from_utf8_lossy(&made.stderr)
        ));
    }
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q"])
        .args(PACKAGES)
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !pip.status.success() || !check(&python) {
        return Err(format!(
            "pip install {} failed: {}",
            PACKAGES.join(" "),
            String::from_utf8_lossy(&pip.stderr)
        ));
    }
    Ok(python)
}

/// The venv's python; `None` (after printing SKIPPED) when it cannot be made.
pub fn python() -> Option<PathBuf> {
    static PY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match PY.get_or_init(make_venv) {
        Ok(p) => Some(p.clone()),
        Err(why) => {
            eprintln!(
                "\n*** SKIPPED: no independent OTLP receiver: {why} ***\n\
                 *** (.ci/run installs python3 and python3-venv; the test pip-installs {}) ***\n",
                PACKAGES.join(" ")
            );
            None
        }
    }
}

/// A running receiver.
pub struct Receiver {
    child: Child,
    pub port: u16,
    pub out: PathBuf,
}

impl Receiver {
    /// Starts one answering by `script` (see receiver.py), writing to `out`.
    pub fn start(python: &Path, out: &Path, script: &str) -> Receiver {
        let mut child = Command::new(python)
            .arg(repo().join("tests/otlp/receiver.py"))
            .arg(out)
            .arg(script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver did not start: {line:?}"));
        Receiver {
            child,
            port,
            out: out.to_owned(),
        }
    }

    /// The logs endpoint.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1/logs", self.port)
    }

    /// Every request received so far, decoded by the receiver.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Every log record of `requests` answered `ok` or `partial` (accepted), with its resource
/// and scope attributes: (resource, scope, record).
pub fn accepted_records(
    requests: &[serde_json::Value],
) -> Vec<(serde_json::Value, serde_json::Value, serde_json::Value)> {
    let mut out = Vec::new();
    for r in requests {
        let answer = r["answer"].as_str().unwrap_or("");
        if !(answer == "ok" || answer.starts_with("partial")) {
            continue;
        }
        for rl in r["resource_logs"].as_array().unwrap() {
            for sl in rl["scopes"].as_array().unwrap() {
                // The scope without its records (cloning those for each record is quadratic).
                let scope = serde_json::json!({
                    "name": sl["name"],
                    "version": sl["version"],
                    "attributes": sl["attributes"],
                });
                for rec in sl["records"].as_array().unwrap() {
                    out.push((rl["resource"].clone(), scope.clone(), rec.clone()));
                }
            }
        }
    }
    out
}

impl Receiver {
    /// Makes the receiver answer 503 after its script until [`Receiver::release`].
    pub fn hold(&self) {
        std::fs::write(self.out.with_extension("jsonl.hold"), b"").unwrap();
    }

    /// Ends [`Receiver::hold`].
    pub fn release(&self) {
        let _ = std::fs::remove_file(self.out.with_extension("jsonl.hold"));
    }

    /// Cheap progress without parsing: (requests, record ids in accepted requests).
    pub fn progress(&self) -> (usize, usize) {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut ids = 0;
        let mut n = 0;
        for l in text.lines() {
            n += 1;
            if l.contains("\"answer\": \"ok\"") || l.contains("\"answer\": \"partial") {
                ids += l.matches("\"seglog.record_id\"").count();
            }
        }
        (n, ids)
    }
}
