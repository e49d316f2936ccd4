//! The uploader's manners (issue 13), with the real binary and the real collector on
//! 127.0.0.1: where the URL comes from (`--url` > `SEGLOG_UPLOAD_URL` > `[upload] url`) and
//! what a missing one says; one exit status for an unreachable server (1) in the binary and
//! every document; failed attempts printed as they happen; `--json` results; a URL whose
//! scheme the server does not speak is a configuration error at once; a failed pass does not
//! count for `interval`; `status` outside a log, and its dated last error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::support::proxy::Proxy;
use crate::support::upload_env::{code, collector, stored_records, text, Daemon, Env};

/// A loopback port nothing listens on (connections are refused).
fn closed_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let a = l.local_addr().unwrap();
    drop(l);
    a
}

/// Spawns `cmd` with stderr read line by line into a channel (so a test sees each line as
/// the process prints it); stdout is piped.
fn spawn_lines(cmd: &mut Command) -> (Child, Receiver<String>) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a line containing `needle`; returns every line seen up to it.
fn wait_for_line(rx: &Receiver<String>, needle: &str, within: Duration) -> Vec<String> {
    let until = Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return seen;
                }
            }
            Err(_) => panic!("no line with {needle:?} within {within:?}; saw {seen:#?}"),
        }
    }
}

/// The README's flow (`seglog upload opt-in && seglog upload flush`) with nothing but
/// `SEGLOG_DIR` and `SEGLOG_UPLOAD_URL` set, against a collector without tokens; no daemon
/// runs, so `flush` does the pass itself.
#[test]
fn the_readme_flow_works_with_only_seglog_dir_and_seglog_upload_url() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_seglog"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &home)
            .env("SEGLOG_DIR", tmp.path().join("log"))
            .env("SEGLOG_UPLOAD_URL", server.url())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let o = run(&[
        "record",
        "-c",
        "org.example/app/started",
        "-s",
        "1",
        "-p",
        "v",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(&["upload", "opt-in"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let o = run(&["upload", "flush"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(stored_records(&server.url()), 1);
    let o = run(&["upload", "status"]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(
        shown.contains(&format!("{} from SEGLOG_UPLOAD_URL", server.url())),
        "{shown}"
    );
}

#[test]
fn the_url_flag_beats_the_environment_which_beats_the_config_file() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let dead = format!("http://{}/", closed_port());
    // The config file names a dead server; the environment the live one.
    let e = Env::new(&dead, "max_attempts = 2\ntimeout = \"2s\"");
    e.write(0, 10);
    let o = e
        .cmd(&["upload", "flush", "--timeout", "20s"])
        .env("SEGLOG_UPLOAD_URL", server.url())
        .output()
        .unwrap();
    assert_eq!(
        code(&o),
        0,
        "the environment lost to the file: {}",
        text(&o)
    );
    assert_eq!(stored_records(&server.url()), 10);
    // --url names the dead one again: it wins over the environment.
    e.write(10, 20);
    let o = e
        .cmd(&["upload", "flush", "--timeout", "20s", "--url", &dead])
        .env("SEGLOG_UPLOAD_URL", server.url())
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "--url lost to the environment: {}", text(&o));
    assert_eq!(stored_records(&server.url()), 10);
    // An empty variable is unset; a bad one names its source.
    let o = e
        .cmd(&["upload", "status", "--json"])
        .env("SEGLOG_UPLOAD_URL", "")
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (v["url"].as_str(), v["url_source"].as_str()),
        (Some(dead.as_str()), Some("[upload] url"))
    );
    let o = e
        .cmd(&["upload", "once"])
        .env("SEGLOG_UPLOAD_URL", "ftp://x")
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("SEGLOG_UPLOAD_URL"),
        "{}",
        text(&o)
    );
}

#[test]
fn without_a_url_every_upload_command_says_how_to_set_one_and_exits_2() {
    let e = Env::new("", "");
    e.write(0, 5);
    for args in [
        &["upload", "flush"][..],
        &["upload", "once"],
        &["upload", "run", "--no-startup-delay"],
        &["upload", "flush", "--json"],
    ] {
        let o = e.run(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        for way in ["--url URL", "SEGLOG_UPLOAD_URL=URL", "[upload] section"] {
            assert!(err.contains(way), "{args:?} does not mention {way}: {err}");
        }
    }
}

/// One rule: a server that cannot be reached is exit 1 (transient: cron retries later), in
/// the binary, the READMEs and `--help`; configuration errors stay 2.
#[test]
fn an_unreachable_server_is_exit_1_in_the_binary_and_in_every_document() {
    let e = Env::new(&format!("http://{}/", closed_port()), "max_attempts = 2");
    e.write(0, 5);
    for args in [
        &["upload", "once"][..],
        &["upload", "flush", "--timeout", "20s"],
    ] {
        let o = e.run(args);
        assert_eq!(code(&o), 1, "{args:?}: {}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Connection refused"),
            "{args:?}: {}",
            text(&o)
        );
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let row = |n: &str| {
        readme
            .lines()
            .find(|l| l.starts_with(&format!("| {n} |")))
            .unwrap_or_else(|| panic!("README.md: no exit code row {n}"))
            .to_owned()
    };
    assert!(row("1").contains("unreachable"), "{}", row("1"));
    assert!(!row("2").contains("unreachable"), "{}", row("2"));
    // `seglog --help` ends with the exit codes (src/lib.rs, EXIT_CODES).
    let top = e.run(&["--help"]);
    let top = String::from_utf8_lossy(&top.stdout).into_owned();
    let codes = top
        .split_once("Exit codes:")
        .unwrap_or_else(|| panic!("seglog --help has no exit codes: {top}"))
        .1;
    let (one, two) = codes.split_once(" 2 ").expect("seglog --help: exit code 2");
    assert!(one.contains("unreachable"), "{codes}");
    assert!(!two.contains("unreachable"), "{codes}");
    let up = std::fs::read_to_string(root.join("uploader/README.md")).unwrap();
    assert!(
        up.contains("1 ran but did not deliver everything (server unreachable"),
        "uploader/README.md"
    );
    let help = e.run(&["upload", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("1 not everything delivered (server unreachable"),
        "{help}"
    );
}

/// A server that refuses connections, then accepts: each failed attempt is printed while
/// the command waits (plain lines, stderr is not a terminal), then the pass succeeds. The
/// daemon logs them, and a flush served by the daemon prints them too.
#[test]
fn failed_attempts_are_printed_as_they_happen_and_the_pass_then_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(closed_port());
    let e = Env::new(&proxy.url(), "max_attempts = 1000");
    e.write(0, 50);
    let (mut child, rx) = spawn_lines(&mut e.cmd(&["upload", "flush", "--timeout", "60s"]));
    let seen = wait_for_line(&rx, "attempt 2/1000 failed", Duration::from_secs(30));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the lines came only at the end"
    );
    let first = &seen[seen.len() - 2];
    assert!(
        // Through the proxy, whose target refuses: the connection closes unanswered.
        first.starts_with("seglog upload: attempt 1/1000 failed: http://127.0.0.1:")
            && first.contains("; retrying in "),
        "{seen:#?}"
    );
    proxy.retarget(server.local_addr());
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(stored_records(&server.url()), 50);

    // The daemon logs each failure; a flush it serves prints them.
    proxy.retarget(closed_port());
    e.write(50, 60);
    let d = Daemon::start(&e);
    let (mut flush, rx) = spawn_lines(&mut e.cmd(&["upload", "flush", "--timeout", "60s"]));
    wait_for_line(
        &rx,
        "seglog upload: attempt 3 failed: ",
        Duration::from_secs(30),
    );
    proxy.retarget(server.local_addr());
    assert_eq!(flush.wait().unwrap().code(), Some(0));
    assert_eq!(stored_records(&server.url()), 60);
    let log = d.stderr.lock().unwrap().clone();
    assert!(
        log.contains("seglog upload: attempt 1 failed: ") && log.contains("; retrying in "),
        "{log}"
    );
}

/// A flush is someone asking for the upload now: it cuts the daemon's backoff wait short.
/// Here the daemon's next attempt is 30-60 minutes away (backoff 1 h, as a device at the
/// default 40-minute cap waits 20-40 minutes); the flush is delivered within seconds.
#[test]
fn a_flush_cuts_the_daemons_backoff_wait_short() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(closed_port());
    let e = Env::new(&proxy.url(), "");
    let cfg = std::fs::read_to_string(&e.config)
        .unwrap()
        .replace("backoff_base = \"10ms\"", "backoff_base = \"1h\"")
        .replace("backoff_cap = \"100ms\"", "backoff_cap = \"1h\"");
    assert!(cfg.contains("backoff_cap = \"1h\""), "{cfg}");
    std::fs::write(&e.config, cfg).unwrap();
    e.write(0, 40);
    let d = Daemon::start(&e);
    let start = Instant::now();
    while !d.stderr.lock().unwrap().contains("attempt 1 failed") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the daemon's first attempt did not fail: {}",
            d.stderr.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = d.stderr.lock().unwrap().clone();
    assert!(log.contains("; retrying in "), "{log}");
    // `status` says when the daemon tries again, and that a flush tries now.
    let st = e.run(&["upload", "status"]);
    let st = String::from_utf8_lossy(&st.stdout).into_owned();
    let line = st
        .lines()
        .find(|l| l.starts_with("next attempt:"))
        .unwrap_or_else(|| panic!("no next attempt in status: {st}"));
    assert!(
        line.contains("backing off") && line.contains("seglog upload flush"),
        "{line}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&e.run(&["upload", "status", "--json"]).stdout).unwrap();
    let in_s = v["next_attempt"]["in_s"].as_u64().unwrap_or(0);
    assert!((1_700..=3_600).contains(&in_s), "{v}");
    assert_eq!(v["next_attempt"]["retry_after"], false, "{v}");
    proxy.retarget(server.local_addr());
    let start = Instant::now();
    let o = e.run(&["upload", "flush", "--timeout", "60s"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert!(
        start.elapsed() < Duration::from_secs(50),
        "the flush waited {:?}",
        start.elapsed()
    );
    assert_eq!(stored_records(&server.url()), 40);
    let v: serde_json::Value =
        serde_json::from_slice(&e.run(&["upload", "status", "--json"]).stdout).unwrap();
    assert!(v["next_attempt"].is_null(), "{v}");
}

#[test]
fn flush_and_once_print_their_result_as_one_json_object() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let e = Env::new(&server.url(), "interval = \"1h\"");
    e.write(0, 700);
    let json = |args: &[&str]| {
        let o = e.run(args);
        let v: serde_json::Value = serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|err| panic!("{args:?}: {err}: {}", text(&o)));
        assert_eq!(v["exit_code"].as_i64(), Some(i64::from(code(&o))), "{v}");
        v
    };
    let v = json(&["upload", "flush", "--json"]);
    assert_eq!(v["command"], "flush");
    assert_eq!(v["outcome"], "complete", "{v}");
    assert_eq!(v["delivered"]["records"], 700, "{v}");
    assert_eq!(v["delivered"]["batches"], 3, "{v}"); // batch_max_records = 300
    assert!(v["delivered"]["wire_bytes"].as_u64() > Some(0), "{v}");
    assert_eq!(
        (v["gaps"].as_u64(), v["dead_lettered"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(v["policy"]["decision"], "upload", "{v}");
    assert_eq!(v["via_daemon"], false);
    e.write(700, 710);
    let v = json(&["upload", "once", "--json"]);
    assert_eq!(
        (v["outcome"].as_str(), v["exit_code"].as_i64()),
        (Some("wait"), Some(3)),
        "{v}"
    );
    assert_eq!(v["policy"]["decision"], "wait", "{v}");
    assert!(
        v["policy"]["reason"].as_str().unwrap().contains("interval"),
        "{v}"
    );
    let dead = format!("http://{}/", closed_port());
    let v = json(&[
        "upload",
        "flush",
        "--json",
        "--url",
        &dead,
        "--timeout",
        "10s",
    ]);
    assert_eq!(
        (v["outcome"].as_str(), v["exit_code"].as_i64()),
        (Some("failed"), Some(1)),
        "{v}"
    );
    assert!(v["failed_attempts"].as_u64() >= Some(1), "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{v}"
    );
    let v = json(&["upload", "once", "--json", "--url", "ftp://x"]);
    assert_eq!(
        (v["outcome"].as_str(), v["exit_code"].as_i64()),
        (Some("error"), Some(2)),
        "{v}"
    );
    assert_eq!(stored_records(&server.url()), 700);
}

/// A self-signed certificate for 127.0.0.1, made by openssl; `None` (and a loud SKIPPED)
/// without it.
fn tls_files(dir: &std::path::Path) -> Option<collector::TlsFiles> {
    let o = Command::new("openssl")
        .current_dir(dir)
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .output();
    match o {
        Ok(o) if o.status.success() => Some(collector::TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }),
        Ok(o) => panic!("openssl failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(_) => {
            eprintln!("SKIPPED: the openssl command is not installed; cannot make a TLS collector");
            None
        }
    }
}

/// Runs `flush` against `url` and checks it is the configuration error `expect` at once.
fn wrong_scheme(url: &str, expect: &str) {
    let e = Env::new(url, "max_attempts = 50");
    e.write(0, 20);
    let start = Instant::now();
    let o = e.run(&["upload", "flush", "--timeout", "60s"]);
    let took = start.elapsed();
    assert_eq!(code(&o), 2, "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains(expect), "{err}");
    assert!(!err.contains("attempt 2/"), "retried: {err}");
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let st = e.status();
    assert!(
        st["last_error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains(expect),
        "{st}"
    );
}

#[test]
fn an_https_url_at_a_plain_http_server_is_a_configuration_error_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let addr = server.local_addr();
    wrong_scheme(
        &format!("https://{addr}/"),
        &format!(
            "the server at {addr} answered plain HTTP to a TLS handshake: use http:// or enable TLS on the server"
        ),
    );
}

#[test]
fn an_http_url_at_a_tls_server_is_a_configuration_error_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(tls) = tls_files(tmp.path()) else {
        return;
    };
    let mut c = collector::ServerConfig::new(tmp.path().join("data"));
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_grace = Duration::from_secs(2);
    c.tls = Some(tls);
    let server = collector::Server::start(c).unwrap();
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let addr = server.local_addr();
    wrong_scheme(
        &format!("http://{addr}/"),
        &format!("the server at {addr} answered a TLS handshake: it speaks TLS, not plain HTTP; use https://"),
    );
}

/// Regression: `once` right after a failed flush refused with exit 3 ("last pass was 0s
/// ago"): the failed pass counted as the last pass for `interval`.
#[test]
fn once_right_after_a_failed_flush_uploads() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(closed_port());
    let e = Env::new(&proxy.url(), "interval = \"1h\"\nmax_attempts = 2");
    e.write(0, 30);
    let o = e.run(&["upload", "flush", "--timeout", "20s"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    proxy.retarget(server.local_addr());
    let o = e.run(&["upload", "once"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    assert_eq!(stored_records(&server.url()), 30);
    // A pass that did not fail counts: the next `once` waits for the interval.
    e.write(30, 31);
    let o = e.run(&["upload", "once"]);
    assert_eq!(code(&o), 3, "{}", text(&o));
}

#[test]
fn status_outside_a_log_exits_2_like_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Env::new("http://127.0.0.1:9/", "");
    std::fs::create_dir_all(&e.dir).unwrap();
    for (dir, expect) in [
        (e.dir.clone(), "is not a seglog log directory"),
        (tmp.path().join("missing"), "does not exist"),
    ] {
        let run = |args: &[&str]| {
            Command::new(env!("CARGO_BIN_EXE_seglog"))
                .env_clear()
                .env("HOME", &e.home)
                .arg("--config")
                .arg(&e.config)
                .arg("--dir")
                .arg(&dir)
                .args(args)
                .output()
                .unwrap()
        };
        let o = run(&["upload", "status"]);
        assert_eq!(code(&o), 2, "{}", text(&o));
        assert!(o.stdout.is_empty(), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(expect),
            "{}",
            text(&o)
        );
        let j = run(&["journal"]);
        assert_eq!(code(&j), 2, "{}", text(&j));
        assert!(
            String::from_utf8_lossy(&j.stderr).contains(expect),
            "{}",
            text(&j)
        );
    }
}

/// `last error` stays after a successful pass, labelled with its time and how many passes
/// ago it happened, so it does not read as the current state.
#[test]
fn status_dates_the_last_error_once_a_pass_succeeds() {
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let proxy = Proxy::start(closed_port());
    let e = Env::new(&proxy.url(), "max_attempts = 1");
    e.write(0, 10);
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 1, "{}", text(&o));
    let st = e.status();
    assert_eq!(st["last_error"]["passes_ago"], 0, "{st}");
    let shown = String::from_utf8_lossy(&e.run(&["upload", "status"]).stdout).into_owned();
    assert!(shown.contains("ago, in the last pass) "), "{shown}");
    proxy.retarget(server.local_addr());
    let o = e.run(&["upload", "flush"]);
    assert_eq!(code(&o), 0, "{}", text(&o));
    let st = e.status();
    assert_eq!(st["last_error"]["passes_ago"], 1, "{st}");
    let msg = st["last_error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("not delivered after 1 attempts"), "{st}");
    let shown = String::from_utf8_lossy(&e.run(&["upload", "status"]).stdout).into_owned();
    let line = shown
        .lines()
        .find(|l| l.starts_with("last error:"))
        .unwrap_or_default();
    // `last error:       (2025-06-01T12:03:04Z, 3s ago, 1 pass ago) <message>`
    let label = line
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(l, _)| l)
        .unwrap_or_default();
    assert!(label.ends_with(", 1 pass ago"), "{line}");
    assert!(label.contains('T') && label.contains("Z, "), "{line}");
}
