//! The uploader against a network that fails in the middle of a request, with the real
//! binary and the real collector on 127.0.0.1 (issue 11, item 1): a body cut mid-way is a
//! transport failure, never a reason to dead-letter a batch; a server that accepts and never
//! answers holds neither `upload flush --timeout` past its timeout nor a SIGTERM'd daemon
//! (item 12).

#[path = "support/proxy.rs"]
mod proxy;
#[path = "support/upload_env.rs"]
mod upload_env;

use proxy::{Fault, Proxy};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use upload_env::{code, collector, stored_records, text, Daemon, Env, Silent};

#[test]
fn a_body_cut_mid_way_is_resent_never_dead_lettered() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(server.local_addr());
    let e = Env::new(&proxy.url(), "dead_letter_after = 2\ntimeout = \"2s\"");
    e.write(0, 500);
    // Content-Length N, a part of the body, then a half-close: on every connection.
    proxy.set(Fault::CutBody(100));
    let o = e.run(&["upload", "flush", "--timeout", "3s"]);
    assert_ne!(code(&o), 0, "flush claimed success: {}", text(&o));
    let st = e.status();
    assert_eq!(st["dead_lettered"]["batches"], 0, "{st}");
    assert_eq!(st["delivered"]["records"], 0, "{st}");
    // The cursor did not pass a single record: all 500 are still the backlog.
    assert_eq!(st["backlog"]["records"], 500, "the cursor moved: {st}");
    let last = st["last_error"]["message"].as_str().unwrap_or("");
    assert!(last.contains("HTTP 408"), "{st}");
    let dl = e.dir.join("upload").join("dead-letter");
    let entries = std::fs::read_dir(&dl).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 0, "dead-letter folder {}", dl.display());
    assert!(
        proxy
            .stats
            .faults
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 3,
        "the cut was not exercised"
    );
    assert_eq!(stored_records(&server.url()), 0);
    // The cut stops: the same batches go through.
    proxy.set(Fault::Pass);
    let o = e.run(&["upload", "flush", "--timeout", "20s"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(stored_records(&server.url()), 500);
    let st = e.status();
    assert_eq!(st["dead_lettered"]["batches"], 0, "{st}");
    assert_eq!(st["delivered"]["records"], 500, "{st}");
}

#[test]
fn flush_timeout_bounds_the_whole_command_against_a_server_that_never_answers() {
    let silent = Silent::start();
    // The request timeout alone (60 s, the default) would hold the command for a minute.
    let e = Env::new(&silent.url(), "timeout = \"60s\"");
    e.write(0, 50);
    let start = Instant::now();
    let o = e.run(&["upload", "flush", "--timeout", "2s"]);
    let took = start.elapsed();
    assert_eq!(code(&o), 1, "{}", text(&o));
    assert!(
        silent.accepted.load(Ordering::Relaxed) >= 1,
        "no request was made"
    );
    // 2 s of budget; the bound is loose so that a loaded machine does not fail it, and far
    // below the 60 s a request could take before.
    assert!(
        took < Duration::from_secs(20),
        "flush --timeout 2s took {took:?}"
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("deadline"),
        "{}",
        text(&o)
    );
}

#[test]
fn sigterm_abandons_a_hung_request_promptly() {
    let silent = Silent::start();
    let e = Env::new(&silent.url(), "timeout = \"60s\"\ninterval = \"1s\"");
    e.write(0, 50);
    let mut d = Daemon::start(&e);
    let start = Instant::now();
    while silent.accepted.load(Ordering::Relaxed) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon never sent"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300)); // the request is now hanging
    let (st, took) = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.stderr.lock().unwrap());
    assert!(
        took < Duration::from_secs(20),
        "SIGTERM took {took:?} to stop the daemon"
    );
}
