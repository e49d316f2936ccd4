//! Full-disk tests of the probes: the real `seglog` binary runs out of space mid-run, then
//! space is freed, and the probe must say so, count what it gave up, resume, and exit on end
//! of input with a summary.
//!
//! Two ways to fill the disk, chosen at run time and printed loudly ("FULL-DISK MODE"):
//! - `tmpfs`: as root, the log directory gets its own small tmpfs and a ballast file takes
//!   every free block (real ENOSPC); freeing deletes the ballast.
//! - `rlimit`: otherwise (or with `SEGLOG_FULL_DISK_MODE=rlimit`), the probe's
//!   `RLIMIT_FSIZE` is lowered with prlimit(2) once it runs (SIGXFSZ ignored, so growing a
//!   file fails with EFBIG, which the log treats as a full disk); freeing raises it again.
//!
//! `SEGLOG_FULL_DISK_MODE=tmpfs` makes a missing tmpfs a failure instead of a fallback.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::full_disk;
use full_disk::*;

const PIPE: &[&str] = &[
    "probe",
    "pipe",
    "-c",
    "org.test/full/line",
    "--batch-lines",
    "16",
    "--flush-after",
    "20ms",
];

#[test]
fn pipe_with_spool_waits_on_a_full_disk_keeps_every_line_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let filler = Filler::new(&d.path().join("log"));
    let cfg = config(d.path(), "spool");
    let mut p = spawn(d.path(), &cfg, PIPE);
    p.send(lines("before", 10));
    wait_payloads(d.path(), |p| p.len() >= 10);
    filler.fill(&p.child);
    p.send(lines("during", 1500));
    p.wait_stderr("out of space");
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "exited on a full disk"
    );
    filler.free(&p.child);
    p.wait_stderr("space is back");
    p.send(lines("after", 10));
    let got = wait_payloads(d.path(), |p| p.iter().any(|l| l.starts_with("after-00009")));
    let (ok, err) = p.finish();
    assert!(ok, "{err}");
    let want: Vec<String> = lines("before", 10)
        .chain(lines("during", 1500))
        .chain(lines("after", 10))
        .collect();
    assert_eq!(got.len(), want.len(), "mode {}: {err}", filler.name());
    assert!(
        got == want,
        "lines lost or reordered (mode {})",
        filler.name()
    );
    assert_eq!(summary_number(&err, "for lack of space"), 0, "{err}");
    assert!(err.contains("ran out of space 1 times"), "{err}");
}

#[test]
fn pipe_with_drop_counts_what_a_full_disk_refused_and_resumes() {
    let d = tempfile::tempdir().unwrap();
    let filler = Filler::new(&d.path().join("log"));
    let cfg = config(d.path(), "drop");
    let mut p = spawn(d.path(), &cfg, PIPE);
    p.send(lines("before", 10));
    wait_payloads(d.path(), |p| p.len() >= 10);
    filler.fill(&p.child);
    p.send(lines("during", 1500));
    p.wait_stderr("dropping lines");
    filler.free(&p.child);
    // Lines keep coming until the probe notices the space.
    let mut k = 0;
    let start = Instant::now();
    while !p.stderr().contains("space is back") {
        assert!(start.elapsed() < DEADLINE, "no resume: {}", p.stderr());
        p.send(lines("probe", 1).map(|l| format!("{l}-{k}")));
        k += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    p.send(lines("after", 10));
    let got = wait_payloads(d.path(), |p| p.iter().any(|l| l.starts_with("after-00009")));
    let (ok, err) = p.finish();
    assert!(ok, "{err}");
    let sent = 10 + 1500 + k + 10;
    let dropped = summary_number(&err, "for lack of space");
    assert!(
        dropped > 0,
        "mode {}: nothing dropped: {err}",
        filler.name()
    );
    assert_eq!(
        got.len() as u64 + dropped,
        sent as u64,
        "every line is written or counted: {err}"
    );
    assert_eq!(
        no_space_counter(d.path()),
        dropped,
        "counters.json no_space"
    );
}

#[test]
fn pipe_exits_on_end_of_input_while_the_disk_is_full_and_counts_the_held_lines() {
    let d = tempfile::tempdir().unwrap();
    let filler = Filler::new(&d.path().join("log"));
    let cfg = config(d.path(), "spool");
    let mut p = spawn(d.path(), &cfg, PIPE);
    p.send(lines("before", 10));
    wait_payloads(d.path(), |p| p.len() >= 10);
    filler.fill(&p.child);
    p.send(lines("during", 1500));
    p.wait_stderr("out of space");
    let (ok, err) = p.finish();
    assert!(ok, "{err}");
    assert!(
        err.contains("input ended while the log is out of space"),
        "{err}"
    );
    let got = payloads(d.path()).len() as u64;
    let dropped = summary_number(&err, "for lack of space");
    assert!(dropped > 0, "mode {}: {err}", filler.name());
    assert_eq!(
        got + dropped,
        1510,
        "every line is written or counted: {err}"
    );
    // On a full tmpfs even counters.json cannot be written: the summary is the count there.
    if let Filler::Rlimit = filler {
        assert_eq!(no_space_counter(d.path()), dropped);
    }
}

fn wait_until(what: &str, probe: &Probe, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < DEADLINE,
            "never {what}: {}",
            probe.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn netstat_holds_interval_records_on_a_full_disk_and_writes_them_when_space_returns() {
    let d = tempfile::tempdir().unwrap();
    let filler = Filler::new(&d.path().join("log"));
    let cfg = config_sized(d.path(), "spool", 8192);
    let net_dev = d.path().join("net_dev");
    let write_dev = |n: u64| {
        let tmp = d.path().join("net_dev.tmp");
        std::fs::write(
            &tmp,
            format!("Inter-|\n face |\n  eth0: {n} 1 0 0 0 0 0 0 {n} 1 0 0 0 0 0 0\n"),
        )
        .unwrap();
        std::fs::rename(&tmp, &net_dev).unwrap();
    };
    write_dev(0);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        let dev = net_dev.clone();
        let dir = d.path().to_path_buf();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1000;
                let tmp = dir.join("net_dev.tmp");
                std::fs::write(
                    &tmp,
                    format!("Inter-|\n face |\n  eth0: {n} 1 0 0 0 0 0 0 {n} 1 0 0 0 0 0 0\n"),
                )
                .unwrap();
                std::fs::rename(&tmp, &dev).unwrap();
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    let dev_arg = net_dev.to_string_lossy().into_owned();
    let p = spawn(
        d.path(),
        &cfg,
        &[
            "probe",
            "netstat",
            "--net-dev",
            &dev_arg,
            "--poll-interval",
            "10ms",
            "--log-interval",
            "10ms",
        ],
    );
    wait_payloads(d.path(), |p| p.len() >= 5);
    filler.fill(&p.child);
    p.wait_stderr("out of space");
    let during = payloads(d.path()).len();
    std::thread::sleep(Duration::from_millis(200));
    filler.free(&p.child);
    p.wait_stderr("space is back");
    wait_payloads(d.path(), |p| p.len() > during + 5);
    let (ok, err) = p.terminate();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    assert!(ok, "{err}");
    assert!(
        err.contains("0 dropped for lack of space"),
        "mode {}: {err}",
        filler.name()
    );
    let summary = err.lines().last().unwrap_or_default().to_string();
    let written = summary_number(&summary, "records,");
    assert_eq!(payloads(d.path()).len() as u64, written, "{err}");
}

#[test]
fn events_dir_leaves_files_on_a_full_disk_and_records_them_when_space_returns() {
    let d = tempfile::tempdir().unwrap();
    let filler = Filler::new(&d.path().join("log"));
    let cfg = config_sized(d.path(), "spool", 8192);
    let events = d.path().join("events");
    std::fs::create_dir(&events).unwrap();
    let put = |i: u32, msg: &str| {
        let ev = serde_json::json!({
            "Version": "1.0.0.23",
            "Timestamp": "2018-01-02T22:08:12.510696Z",
            "TaskName": "TestRun",
            "EventLevel": "Warning",
            "Message": msg,
            "EventPid": 1,
            "EventTid": "2",
            "OperationId": "60c014cd-4693-40f1-b334-548cd932949b",
        });
        let tmp = events.join(format!(".{i}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec(&ev).unwrap()).unwrap();
        std::fs::rename(&tmp, events.join(format!("{i}.json"))).unwrap();
    };
    let left = || {
        std::fs::read_dir(&events)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".json")
            })
            .count()
    };
    let ev_arg = events.to_string_lossy().into_owned();
    let p = spawn(
        d.path(),
        &cfg,
        &[
            "probe",
            "events-dir",
            &ev_arg,
            "--watch",
            "--scan-interval",
            "20ms",
            "--max-events",
            "100000",
        ],
    );
    for i in 0..5 {
        put(i, "small");
    }
    wait_until("recorded the first files", &p, || left() == 0);
    filler.fill(&p.child);
    let big = "m".repeat(600);
    for i in 5..45 {
        put(i, &big);
    }
    p.wait_stderr("out of space");
    assert!(left() > 0, "every file went while the disk was full");
    filler.free(&p.child);
    p.wait_stderr("space is back");
    wait_until("recorded every file", &p, || left() == 0);
    let got = payloads(d.path());
    let (_, err) = p.terminate();
    assert_eq!(got.len(), 45, "mode {}: {err}", filler.name());
}

/// Runs a one-shot command; in rlimit mode with `full`, under a 4 KiB RLIMIT_FSIZE.
fn oneshot(dir: &Path, cfg: &Path, args: &[&str], limit: Option<u64>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_seglog"));
    cmd.env_remove("SEGLOG_DIR")
        .env("XDG_STATE_HOME", dir.join("xdg"))
        .arg("--dir")
        .arg(dir.join("log"))
        .arg("--config")
        .arg(cfg)
        .args(args)
        .stdin(Stdio::null());
    // SAFETY: between fork and exec only signal(2) and setrlimit(2), both async-signal-safe,
    // on a local `rlimit` value.
    unsafe {
        cmd.pre_exec(move || {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            if let Some(b) = limit {
                let lim = libc::rlimit {
                    rlim_cur: b,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            }
            Ok(())
        });
    }
    cmd.output().unwrap()
}

#[test]
fn record_and_hello_fail_clearly_on_a_full_disk_and_work_again_when_space_returns() {
    let d = tempfile::tempdir().unwrap();
    let filler = Filler::new(&d.path().join("log"));
    let cfg = config_sized(d.path(), "spool", 8192);
    let rec = ["record", "-c", "org.test/full/one", "-s", "2", "-p"];
    let payload = "p".repeat(400);
    let first = oneshot(
        d.path(),
        &cfg,
        &[&rec[..], &[payload.as_str()]].concat(),
        None,
    );
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let limit = match &filler {
        Filler::Tmpfs { ballast, .. } => {
            fill_tmpfs(ballast);
            None
        }
        Filler::Rlimit => Some(4096),
    };
    let mut failed = None;
    for _ in 0..100 {
        let out = oneshot(
            d.path(),
            &cfg,
            &[&rec[..], &[payload.as_str()]].concat(),
            limit,
        );
        if !out.status.success() {
            failed = Some(out);
            break;
        }
    }
    let out = failed.unwrap_or_else(|| panic!("mode {}: record never failed", filler.name()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("free disk space"), "unclear message: {err}");
    let hello = oneshot(d.path(), &cfg, &["probe", "hello"], limit);
    assert!(!hello.status.success(), "hello on a full disk");
    assert!(String::from_utf8_lossy(&hello.stderr).contains("free disk space"));
    let before = payloads(d.path()).len();
    if let Filler::Tmpfs { ballast, .. } = &filler {
        std::fs::remove_file(ballast).unwrap();
    }
    let again = oneshot(
        d.path(),
        &cfg,
        &[&rec[..], &[payload.as_str()]].concat(),
        None,
    );
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let hello = oneshot(d.path(), &cfg, &["probe", "hello"], None);
    assert!(hello.status.success());
    assert_eq!(payloads(d.path()).len(), before + 2);
}
