//! Under `umask 000`, everything seglog creates is private: `record`, the probes, `upload
//! opt-in`, `upload flush` (with a dead-lettered batch and its gap report), the upload daemon
//! and its control socket, and `journal` (including `export --output-file`) are run as child processes
//! with the umask cleared, into a log directory whose parents do not exist yet; then the tree
//! is walked and no file or directory may be group- or other-accessible.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use uploader::testing::{Behavior, FlakyServer};

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    config: PathBuf,
    home: PathBuf,
}

impl Env {
    fn new(url: &str) -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("made-by-seglog");
        let dir = root.join("nested").join("log");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        let config = tmp.path().join("seglog.toml");
        std::fs::write(
            &config,
            format!(
                "[log]\nsegment_size = \"64KiB\"\nmax_record_size = \"16KiB\"\n\n[upload]\nurl = \"{url}\"\nbatch_max_records = 2\nbackoff_base = \"10ms\"\nbackoff_cap = \"20ms\"\ntimeout = \"2s\"\n"
            ),
        )
        .unwrap();
        Env {
            _tmp: tmp,
            root,
            dir,
            config,
            home,
        }
    }

    /// `seglog --dir .. --config .. ARGS` under `umask 000`.
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("sh");
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .arg("-c")
            .arg("umask 000 && exec \"$0\" \"$@\"")
            .arg(env!("CARGO_BIN_EXE_seglog"))
            .arg("--dir")
            .arg(&self.dir)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn ok(&self, args: &[&str]) -> Output {
        let o = self.cmd(args).output().unwrap();
        assert!(
            o.status.success(),
            "seglog {args:?}: {:?}\n{}",
            o.status,
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }
}

/// Every entry under `root` (and `root` itself), with its mode.
fn walk(root: &Path, out: &mut Vec<(PathBuf, u32)>) {
    let md = std::fs::symlink_metadata(root).unwrap();
    out.push((root.to_path_buf(), md.permissions().mode() & 0o7777));
    if md.is_dir() {
        for e in std::fs::read_dir(root).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    }
}

fn assert_private(root: &Path, what: &str) -> usize {
    let mut all = Vec::new();
    walk(root, &mut all);
    let open: Vec<String> = all
        .iter()
        .filter(|(_, m)| m & 0o077 != 0)
        .map(|(p, m)| format!("{:o} {}", m, p.display()))
        .collect();
    assert!(
        open.is_empty(),
        "{what}: group/other-accessible under umask 000:\n{}",
        open.join("\n")
    );
    all.len()
}

#[test]
fn under_umask_000_everything_seglog_creates_is_private() {
    // The first batch is refused for good, so a dead-letter entry and a gap report are made.
    let server = FlakyServer::start(vec![
        Behavior::Status(422),
        Behavior::Status(422),
        Behavior::Status(422),
    ]);
    let e = Env::new(&server.url());
    e.ok(&[
        "record",
        "-c",
        "org.test/umask/one",
        "-s",
        "2",
        "-p",
        "hello",
    ]);
    e.ok(&["probe", "hello"]);
    let mut pipe = e
        .cmd(&["probe", "pipe", "-c", "org.test/umask/line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    {
        let mut stdin = pipe.stdin.take().unwrap();
        for i in 0..20 {
            writeln!(stdin, "line {i}").unwrap();
        }
    }
    assert!(pipe.wait().unwrap().success());
    e.ok(&["upload", "opt-in"]);
    e.ok(&["upload", "flush", "--timeout", "30s"]);
    assert!(
        e.dir.join("upload/dead-letter").is_dir(),
        "the scripted refusal made a dead-letter entry"
    );
    e.ok(&["journal", "list"]);
    e.ok(&["journal", "verify"]);
    e.ok(&["journal", "stats"]);
    let export = e.root.join("export.jsonl");
    e.ok(&[
        "journal",
        "export",
        "--output-file",
        export.to_str().unwrap(),
    ]);
    assert!(export.is_file());
    let n = assert_private(&e.root, "after record, probes, upload flush, journal");
    assert!(n > 15, "only {n} entries were checked");

    // The daemon's control socket, while it runs.
    let mut d = e
        .cmd(&["upload", "run", "--no-startup-delay"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut r = BufReader::new(d.stderr.take().unwrap());
    let mut line = String::new();
    while r.read_line(&mut line).unwrap() > 0 && !line.contains("daemon started") {
        line.clear();
    }
    assert!(line.contains("daemon started"), "{line}");
    let sock = e.dir.join("upload/control.sock");
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sock.exists());
    assert_private(&e.root, "while the daemon runs");
    let st = Command::new("kill")
        .args(["-s", "TERM", &d.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(d.wait().unwrap().success());
}
