//! The uploader against a network that fails in the middle of a request, with the real
//! binary and the real collector on 127.0.0.1 (issue 11, item 1): a body cut mid-way is a
//! transport failure, never a reason to dead-letter a batch; a server that accepts and never
//! answers holds neither `upload flush --timeout` past its timeout nor a SIGTERM'd daemon
//! (item 12).

use crate::support::proxy;
use crate::support::upload_env;

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

/// Every file under `root` (recursively) except the log's own `log-id`, with its bytes.
fn files_under(root: &std::path::Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    let Ok(dir) = std::fs::read_dir(root) else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            files_under(&path, out);
        } else if meta.is_file() && path.file_name() != Some(std::ffi::OsStr::new("log-id")) {
            out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
        }
    }
}

#[test]
fn the_private_log_id_is_never_printed_or_stored_outside_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(server.local_addr());
    let silent = Silent::start();
    let outputs = std::cell::RefCell::new(Vec::<(String, Vec<u8>)>::new());
    let record = |what: &str, o: &std::process::Output| {
        let mut out = outputs.borrow_mut();
        out.push((format!("{what} stdout"), o.stdout.clone()));
        out.push((format!("{what} stderr"), o.stderr.clone()));
    };
    let e = Env::new(&proxy.url(), "timeout = \"2s\"\ninterval = \"1s\"");
    e.write(0, 400);
    let run = |e: &Env, args: &[&str]| e.run(args);
    // Server unreachable: connection refused (the proxy's target is a closed port).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    proxy.retarget(closed_addr);
    record(
        "flush refused",
        &run(&e, &["upload", "flush", "--timeout", "2s"]),
    );
    record("once refused", &run(&e, &["upload", "once"]));
    record("status", &run(&e, &["upload", "status"]));
    record("status --json", &run(&e, &["upload", "status", "--json"]));
    // A server that never answers.
    let hung = Env::new(&silent.url(), "timeout = \"1s\"");
    hung.write(0, 10);
    record(
        "flush hung",
        &run(&hung, &["upload", "flush", "--timeout", "3s"]),
    );
    record("status hung", &run(&hung, &["upload", "status", "--json"]));
    // A wrong path: 404 from the real collector.
    let wrong = Env::new(&format!("{}/not/here/", server.url()), "timeout = \"2s\"");
    wrong.write(0, 10);
    record(
        "flush 404",
        &run(&wrong, &["upload", "flush", "--timeout", "3s"]),
    );
    record("status 404", &run(&wrong, &["upload", "status"]));
    // Bodies cut mid-way, then a daemon that delivers everything.
    proxy.retarget(server.local_addr());
    proxy.set(Fault::CutBody(50));
    record(
        "flush cut",
        &run(&e, &["upload", "flush", "--timeout", "2s"]),
    );
    proxy.set(Fault::Pass);
    let mut d = Daemon::start(&e);
    let start = Instant::now();
    while stored_records(&server.url()) < 400 {
        assert!(start.elapsed() < Duration::from_secs(60), "not delivered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (st, _) = d.terminate();
    assert_eq!(st.code(), Some(0));
    outputs.borrow_mut().push((
        "daemon stderr".into(),
        d.stderr.lock().unwrap().clone().into_bytes(),
    ));
    record("status after", &run(&e, &["upload", "status", "--json"]));
    for (path, text) in [
        ("/api/records?limit=1000", ""),
        ("/api/gaps", ""),
        ("/api/stats", ""),
        ("/ui/records", ""),
        ("/ui/stats", ""),
        ("/metrics", ""),
    ] {
        let (_, body) = upload_env::get(&format!("{}{path}{text}", server.url()));
        outputs
            .borrow_mut()
            .push((format!("GET {path}"), body.into_bytes()));
    }
    drop(server);
    let outputs = outputs.into_inner();
    let mut files = Vec::new();
    files_under(tmp.path(), &mut files);
    for env in [&e, &hung, &wrong] {
        files_under(env.tmp.path(), &mut files);
    }
    assert!(files.iter().any(|(p, _)| p.ends_with("state.json")));
    for (env, name) in [(&e, "main"), (&hung, "hung"), (&wrong, "404")] {
        let hex_id = std::fs::read_to_string(env.dir.join("log-id")).unwrap();
        let hex_id = hex_id.trim().to_owned();
        assert_eq!(hex_id.len(), 64, "{name}: log-id");
        let mut raw = [0u8; 32];
        hex::decode_to_slice(&hex_id, &mut raw).unwrap();
        let needles = [
            hex_id.as_bytes().to_vec(),
            hex_id.to_ascii_uppercase().into_bytes(),
            raw.to_vec(),
        ];
        let hay = outputs
            .iter()
            .map(|(w, b)| (w.clone(), b))
            .chain(files.iter().map(|(p, b)| (p.display().to_string(), b)));
        for (what, bytes) in hay {
            for n in &needles {
                assert!(
                    !bytes.windows(n.len()).any(|w| w == &n[..]),
                    "the private id of log {name} appears in {what}: {}",
                    String::from_utf8_lossy(bytes)
                );
            }
        }
    }
}

#[test]
fn a_private_id_stored_by_an_older_version_is_not_shown_and_is_dropped_on_the_next_save() {
    let silent = Silent::start();
    let e = Env::new(&silent.url(), "timeout = \"1s\"");
    e.write(0, 5);
    let hex_id = std::fs::read_to_string(e.dir.join("log-id")).unwrap();
    let hex_id = hex_id.trim();
    let state = e.dir.join("upload").join("state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let old = format!("{{\"last_error\": \"http://h/v1/logs/{hex_id}/batches: refused\"}}");
    std::fs::write(&state, old).unwrap();
    let o = e.run(&["upload", "status"]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(!shown.contains(hex_id), "{shown}");
    assert!(shown.contains("<private id>"), "{shown}");
    let _ = e.run(&["upload", "flush", "--timeout", "1s"]);
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(!saved.contains(hex_id), "{saved}");
}
