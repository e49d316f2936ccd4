//! The full-disk harness of `tests/e2e/probe_full_disk.rs`: a [`Filler`] that makes the log's
//! disk full (a small tmpfs as root, else `RLIMIT_FSIZE` on the probe) and frees it, and a
//! [`Probe`] child whose stderr is collected.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use recorder::record::{Position, RecordEntry, RecordReader};
use segment_log::ReaderOptions;

pub const DEADLINE: Duration = Duration::from_secs(60);

pub enum Filler {
    /// A tmpfs mounted at `at` and the ballast file that fills it.
    Tmpfs { at: PathBuf, ballast: PathBuf },
    /// `RLIMIT_FSIZE` on the probe.
    Rlimit,
}

impl Filler {
    /// Sets up the log directory `log` (mounting a tmpfs on it when possible).
    pub fn new(log: &Path) -> Filler {
        std::fs::create_dir_all(log).unwrap();
        let want = std::env::var("SEGLOG_FULL_DISK_MODE").unwrap_or_default();
        if want != "rlimit" {
            let src = c"tmpfs";
            let opts = std::ffi::CString::new("size=2m,mode=0700").unwrap();
            let target = std::ffi::CString::new(log.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: every pointer is a valid NUL-terminated string that outlives the call;
            // mount(2) reads them and touches no other memory.
            let rc = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    src.as_ptr(),
                    0,
                    opts.as_ptr().cast(),
                )
            };
            if rc == 0 {
                eprintln!(
                    "FULL-DISK MODE: tmpfs (real ENOSPC on a 2 MiB tmpfs at {})",
                    log.display()
                );
                return Filler::Tmpfs {
                    at: log.to_path_buf(),
                    ballast: log.join("ballast"),
                };
            }
            assert_ne!(
                want,
                "tmpfs",
                "SEGLOG_FULL_DISK_MODE=tmpfs but mount failed: {}",
                std::io::Error::last_os_error()
            );
        }
        eprintln!("FULL-DISK MODE: rlimit (RLIMIT_FSIZE lowered on the probe: EFBIG)");
        Filler::Rlimit
    }

    pub fn name(&self) -> &'static str {
        match self {
            Filler::Tmpfs { .. } => "tmpfs",
            Filler::Rlimit => "rlimit",
        }
    }

    /// Makes the disk full for `child`.
    pub fn fill(&self, child: &Child) {
        match self {
            Filler::Tmpfs { ballast, .. } => fill_tmpfs(ballast),
            Filler::Rlimit => set_fsize(child, Some(4096)),
        }
    }

    /// Frees the space again.
    pub fn free(&self, child: &Child) {
        match self {
            Filler::Tmpfs { ballast, .. } => std::fs::remove_file(ballast).unwrap(),
            Filler::Rlimit => set_fsize(child, None),
        }
    }
}

impl Drop for Filler {
    fn drop(&mut self) {
        if let Filler::Tmpfs { at, .. } = self {
            let target = std::ffi::CString::new(at.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path; umount2 reads it only.
            unsafe {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// A ballast file takes every free block of the tmpfs.
pub fn fill_tmpfs(ballast: &Path) {
    let mut f = std::fs::File::create(ballast).unwrap();
    let block = vec![0xbbu8; 4096];
    loop {
        match f.write(&block) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
            Err(e) => panic!("ballast: {e}"),
        }
    }
}

pub fn set_fsize(child: &Child, bytes: Option<u64>) {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut old = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit reads no new limit (null) and writes the old one into `old`.
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit get: {}", std::io::Error::last_os_error());
    let new = libc::rlimit {
        rlim_cur: bytes.map_or(old.rlim_max, |b| b.min(old.rlim_max)),
        rlim_max: old.rlim_max,
    };
    // SAFETY: prlimit reads the valid `new` and writes nothing (null old).
    let rc = unsafe { libc::prlimit(pid, libc::RLIMIT_FSIZE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit set: {}", std::io::Error::last_os_error());
}

pub struct Probe {
    pub child: Child,
    /// Lines for the probe's stdin, written by a thread: a probe that stops reading (the
    /// bug under test) makes the test fail at its deadline instead of blocking it.
    stdin: Option<std::sync::mpsc::Sender<Vec<u8>>>,
    stderr: Arc<Mutex<String>>,
}

pub fn config(dir: &Path, strategy: &str) -> PathBuf {
    config_sized(dir, strategy, 65536)
}

pub fn config_sized(dir: &Path, strategy: &str, segment: u64) -> PathBuf {
    let p = dir.join("seglog.toml");
    std::fs::write(
        &p,
        format!(
            "[log]\nsegment_size = {segment}\nmax_record_size = {}\nmax_bytes = 0\n[recorder]\nrate_limit_strategy = \"{strategy}\"\n",
            segment / 8
        ),
    )
    .unwrap();
    p
}

pub fn spawn(dir: &Path, cfg: &Path, args: &[&str]) -> Probe {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seglog"));
    cmd.env_remove("SEGLOG_DIR")
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .arg("--dir")
        .arg(dir.join("log"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only signal(2), which is async-signal-safe; SIG_IGN is
    // kept across exec, so a file growing past RLIMIT_FSIZE fails with EFBIG instead of
    // killing the probe.
    unsafe {
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let mut input: ChildStdin = child.stdin.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for chunk in rx {
            if input.write_all(&chunk).is_err() {
                return;
            }
        }
        // The channel closed: dropping `input` is end of input for the probe.
    });
    let stdin = Some(tx);
    let stderr = Arc::new(Mutex::new(String::new()));
    let err = child.stderr.take().unwrap();
    let sink = stderr.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    Probe {
        child,
        stdin,
        stderr,
    }
}

impl Probe {
    pub fn send(&mut self, lines: impl IntoIterator<Item = String>) {
        let mut chunk = Vec::new();
        for l in lines {
            chunk.extend_from_slice(l.as_bytes());
            chunk.push(b'\n');
        }
        self.stdin.as_ref().unwrap().send(chunk).unwrap();
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn wait_stderr(&self, needle: &str) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            assert!(
                start.elapsed() < DEADLINE,
                "no {needle:?} on stderr after {DEADLINE:?}: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn terminate(self) -> (bool, String) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child; no memory is involved.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        self.finish()
    }

    /// Closes standard input and waits for the exit: returns whether it succeeded.
    pub fn finish(mut self) -> (bool, String) {
        drop(self.stdin.take());
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                // Let the stderr thread take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return (st.success(), self.stderr());
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!(
                    "the probe did not exit {DEADLINE:?} after end of input (hang): {}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Probe {
    /// A test that failed half-way leaves no probe running.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn payloads(dir: &Path) -> Vec<String> {
    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(100),
        ..ReaderOptions::default()
    };
    // Not created yet: nothing written yet.
    let Ok(mut r) = RecordReader::open(dir.join("log"), Position::default(), opts) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        if let RecordEntry::Record(v) = e {
            out.push(String::from_utf8_lossy(v.payload).into_owned());
        }
    }
    out
}

pub fn wait_payloads(dir: &Path, pred: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let p = payloads(dir);
        if pred(&p) {
            return p;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "log never got there: {} records",
            p.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn lines(tag: &str, n: usize) -> impl Iterator<Item = String> + '_ {
    (0..n).map(move |i| format!("{tag}-{i:05} {}", "x".repeat(180)))
}

pub fn summary_number(summary: &str, after: &str) -> u64 {
    // "... N dropped (A by the rate limit, B for lack of space)"
    let i = summary
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {summary}"));
    summary[..i]
        .split_whitespace()
        .last()
        .and_then(|w| w.trim_start_matches('(').parse().ok())
        .unwrap_or_else(|| panic!("number before {after:?} in {summary}"))
}

pub fn no_space_counter(dir: &Path) -> u64 {
    recorder::counters::read(&dir.join("log"))
        .unwrap()
        .dropped
        .get("no_space")
        .copied()
        .unwrap_or(0)
}
