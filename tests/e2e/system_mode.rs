//! System mode for real: one shared log directory (2770, a group of its own) that several
//! users write at once, as journald's `systemd-journal` group works.
//!
//! Needs root (CI runs as root) to create a group and four system users, all removed again by
//! a guard, even when the test fails. Two unprivileged members and root append concurrently
//! through `seglog record`, `seglog probe pipe` and the C API, each under `umask 077`; a third
//! member, the uploader, opts in and uploads all of it to a collector on 127.0.0.1, then trims
//! the segments the others created. The collector must hold exactly every record written;
//! every file in the log must be 0660 and every directory 2770, all of the group; a fourth
//! user outside the group must be refused with a message naming the group (exit 2).

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::support::upload_env::{collector, get};

/// `seglog record` invocations per writer (each one process).
const RECORD_CALLS: usize = 12;
/// Lines each writer sends through `seglog probe pipe`.
const PIPE_LINES: usize = 2500;
/// Records each writer appends through the C API.
const C_RECORDS: usize = 2500;

/// Names of a group and users made for this test, removed again on drop (panics included).
struct Accounts {
    group: String,
    users: Vec<String>,
}

impl Accounts {
    /// Group `sgt<pid>` and users `sgt<pid>a`, `b` (writers), `u` (uploader), all in it, and
    /// `x` outside it. Accounts left by an earlier run that was killed are removed first.
    fn create() -> Accounts {
        remove_stale_accounts();
        let pid = std::process::id();
        let mut acc = Accounts {
            group: format!("sgt{pid}"),
            users: Vec::new(),
        };
        sys(&["groupadd", "--system", &acc.group]);
        for role in ["a", "b", "u", "x"] {
            let name = format!("sgt{pid}{role}");
            // Registered before it exists, so a half-made account is removed too.
            acc.users.push(name.clone());
            let mut args = vec![
                "useradd",
                "--system",
                "--no-create-home",
                "--user-group",
                "--shell",
                "/usr/sbin/nologin",
            ];
            if role != "x" {
                args.extend(["-G", &acc.group]);
            }
            args.push(&name);
            sys(&args);
        }
        acc
    }

    fn user(&self, role: usize) -> &str {
        &self.users[role]
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        for u in &self.users {
            let _ = quiet(&["userdel", u]);
            let _ = quiet(&["groupdel", u]);
        }
        let _ = quiet(&["groupdel", &self.group]);
    }
}

/// Runs a system command as root; panics with its output when it fails.
fn sys(args: &[&str]) {
    let o = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; install it (apt-get install -y passwd util-linux)",
                args[0]
            )
        });
    assert!(o.status.success(), "{args:?}: {}", text(&o));
}

fn quiet(args: &[&str]) -> std::io::Result<Output> {
    Command::new(args[0]).args(&args[1..]).output()
}

/// Users and groups `sgt<pid>[abux]` / `sgt<pid>` whose process is gone: left by a run that
/// was killed before its guard could run.
fn remove_stale_accounts() {
    let dead = |name: &str| -> bool {
        let digits: String = name
            .strip_prefix("sgt")
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let rest = &name[(3 + digits.len()).min(name.len())..];
        name.starts_with("sgt")
            && !digits.is_empty()
            && matches!(rest, "" | "a" | "b" | "u" | "x")
            && !Path::new("/proc").join(&digits).exists()
    };
    let names = |file: &str| -> Vec<String> {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split(':').next())
            .filter(|n| dead(n))
            .map(str::to_owned)
            .collect()
    };
    for u in names("/etc/passwd") {
        let _ = quiet(&["userdel", &u]);
    }
    for g in names("/etc/group") {
        let _ = quiet(&["groupdel", &g]);
    }
}

fn text(o: &Output) -> String {
    format!(
        "{:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `program args` as `user` (root when `None`; with the user's groups) under `umask 077`.
fn as_user(user: Option<&str>, program: &Path, args: &[&str]) -> Command {
    let mut c = match user {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={u}"))
                .arg(format!("--regid={u}"))
                .args(["--init-groups", "--", "sh"]);
            c
        }
        None => Command::new("sh"),
    };
    c.arg("-c")
        .arg("umask 077 && exec \"$0\" \"$@\"")
        .arg(program)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null());
    c
}

fn uid_of(user: &str) -> u32 {
    let o = Command::new("id").args(["-u", user]).output().unwrap();
    String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
}

fn gid_of(group: &str) -> u32 {
    let o = Command::new("getent")
        .args(["group", group])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&o.stdout).into_owned();
    line.split(':').nth(2).unwrap().trim().parse().unwrap()
}

/// Builds `libseglog.so` in its own target directory (shared with `capi/tests/c_api.rs`).
fn build_libseglog() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/e2e-<hash> -> target/
    let target = exe.ancestors().nth(3).unwrap().join("c-api");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("capi/Cargo.toml");
    let out = Command::new(cargo)
        .args(["build", "--lib", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(out.status.success(), "building libseglog: {}", text(&out));
    target.join("debug/libseglog.so")
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include "seglog.h"

/* LOG_DIR CONFIG TAG N: appends "TAG c I" for I in 0..N. */
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    seglog_t *log = NULL;
    int rc = seglog_open(argv[1], argv[2], &log);
    if (rc != SEGLOG_OK) {
        fprintf(stderr, "open: %s\n", seglog_last_error());
        return 1;
    }
    long n = strtol(argv[4], NULL, 10);
    char buf[128];
    for (long i = 0; i < n; i++) {
        int len = snprintf(buf, sizeof buf, "%s c %ld", argv[3], i);
        rc = seglog_record(log, "org.test/sysmode/capi", 2, buf, (size_t)len, NULL, NULL);
        if (rc != SEGLOG_OK) {
            fprintf(stderr, "record %ld: %s\n", i, seglog_last_error());
            seglog_close(log);
            return 1;
        }
    }
    seglog_close(log);
    return 0;
}
"#;

/// Compiles the C writer into `dir` next to a copy of the library (rpath `$ORIGIN`).
fn build_c_writer(dir: &Path) -> PathBuf {
    let lib = build_libseglog();
    for name in ["libseglog.so", "libseglog.so.0"] {
        std::fs::copy(&lib, dir.join(name)).unwrap();
        std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let src = dir.join("writer.c");
    std::fs::write(&src, C_PROGRAM).unwrap();
    let exe = dir.join("c-writer");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-Wall", "-Wextra", "-Werror", "-std=c99", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("capi/include"))
        .arg("-L")
        .arg(dir)
        .args(["-lseglog", "-Wl,-rpath,$ORIGIN"])
        .output()
        .unwrap_or_else(|e| panic!("{cc}: {e}; install a C compiler (apt-get install -y gcc)"));
    assert!(out.status.success(), "cc: {}", text(&out));
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    exe
}

/// Every entry under `root` (itself excluded).
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if std::fs::symlink_metadata(&p).unwrap().is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// Every payload the collector stored.
fn stored_payloads(base: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, body) = get(&format!("{base}/api/records?limit=1000{cursor}"));
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        for r in v["records"].as_array().unwrap() {
            out.push(r["payload"].as_str().unwrap_or("").to_owned());
        }
        match v["next_cursor"].as_u64() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return out,
        }
    }
}

/// What the writers run, and where.
struct Paths {
    seglog: PathBuf,
    c_writer: PathBuf,
    dir: PathBuf,
    config: PathBuf,
}

/// One writer's three ways in, run concurrently; each thread returns the payloads it wrote.
fn write_as<'scope, 'env>(
    s: &'scope std::thread::Scope<'scope, 'env>,
    user: Option<&'env str>,
    tag: &'env str,
    p: &'env Paths,
) -> Vec<std::thread::ScopedJoinHandle<'scope, BTreeSet<String>>> {
    let d = p.dir.to_str().unwrap();
    let cfg = p.config.to_str().unwrap();
    vec![
        s.spawn(move || {
            let mut wrote = BTreeSet::new();
            for i in 0..RECORD_CALLS {
                let pl = format!("{tag} record {i}");
                let args = [
                    "--dir",
                    d,
                    "--config",
                    cfg,
                    "record",
                    "-c",
                    "org.test/sysmode/record",
                    "-s",
                    "1",
                    "-p",
                    &pl,
                ];
                let o = as_user(user, &p.seglog, &args).output().unwrap();
                assert!(o.status.success(), "{tag}: seglog record: {}", text(&o));
                wrote.insert(pl);
            }
            wrote
        }),
        s.spawn(move || {
            let args = [
                "--dir",
                d,
                "--config",
                cfg,
                "probe",
                "pipe",
                "-c",
                "org.test/sysmode/pipe",
            ];
            let mut child = as_user(user, &p.seglog, &args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let lines: Vec<String> = (0..PIPE_LINES).map(|i| format!("{tag} pipe {i}")).collect();
            {
                let mut stdin = child.stdin.take().unwrap();
                for l in &lines {
                    writeln!(stdin, "{l}").unwrap();
                }
            }
            let o = child.wait_with_output().unwrap();
            assert!(o.status.success(), "{tag}: seglog probe pipe: {}", text(&o));
            lines.into_iter().collect()
        }),
        s.spawn(move || {
            let n = C_RECORDS.to_string();
            let o = as_user(user, &p.c_writer, &[d, cfg, tag, &n])
                .output()
                .unwrap();
            assert!(o.status.success(), "{tag}: C writer: {}", text(&o));
            (0..C_RECORDS).map(|i| format!("{tag} c {i}")).collect()
        }),
    ]
}

#[test]
fn members_of_the_group_share_one_log_and_others_are_told_to_join() {
    if !crate::support::system::is_root() {
        println!("SKIPPED: needs root to create users");
        return;
    }
    // Users and groups are machine state: the package test adds and removes some too.
    let _machine = crate::support::system::exclusive();
    let acc = Accounts::create();
    let group = acc.group.clone();
    let gid = gid_of(&group);
    let (a, b, uploader, outsider) = (acc.user(0), acc.user(1), acc.user(2), acc.user(3));

    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let seglog = root.join("seglog");
    std::fs::copy(env!("CARGO_BIN_EXE_seglog"), &seglog).unwrap();
    std::fs::set_permissions(&seglog, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c_writer = build_c_writer(root);
    let dir = root.join("log");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(0), Some(gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770)).unwrap();

    // Small segments: many rotations, each segment made by whichever writer got there.
    let writers_cfg = root.join("writers.toml");
    std::fs::write(
        &writers_cfg,
        "[log]\nsegment_size = \"64KiB\"\nmax_record_size = \"4KiB\"\nmax_bytes = 0\nmax_age = 0\n\n[recorder]\nrate_limit_enabled = false\n",
    )
    .unwrap();
    let server = collector(&root.join("collector"));
    let url = server.url();
    let uploader_cfg = root.join("uploader.toml");
    std::fs::write(
        &uploader_cfg,
        format!("[log]\nmax_bytes = \"192KiB\"\nmax_age = 0\n\n[upload]\nurl = \"{url}\"\nbatch_max_records = 2000\n"),
    )
    .unwrap();
    for f in [&writers_cfg, &uploader_cfg] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    // Two members and root, three ways each, all at once.
    let paths = Paths {
        seglog: seglog.clone(),
        c_writer,
        dir: dir.clone(),
        config: writers_cfg.clone(),
    };
    let expected: BTreeSet<String> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (user, tag) in [(Some(a), "a"), (Some(b), "b"), (None, "root")] {
            handles.extend(write_as(s, user, tag, &paths));
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    assert_eq!(expected.len(), 3 * (RECORD_CALLS + PIPE_LINES + C_RECORDS));
    let owners: BTreeSet<u32> = walk(&dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().uid())
        .collect();
    for (who, uid) in [("root", 0), (a, uid_of(a)), (b, uid_of(b))] {
        assert!(owners.contains(&uid), "{who} made no file in the log");
    }

    // The uploader: a third member, opts in and uploads everything, then trims.
    let up = |args: &[&str]| {
        let mut all = vec!["--dir", dir.to_str().unwrap(), "--config"];
        all.push(uploader_cfg.to_str().unwrap());
        all.extend(args);
        as_user(Some(uploader), &seglog, &all).output().unwrap()
    };
    let o = up(&["upload", "opt-in"]);
    assert!(o.status.success(), "upload opt-in: {}", text(&o));
    let o = up(&["upload", "flush", "--timeout", "3m"]);
    assert!(o.status.success(), "upload flush: {}", text(&o));
    let stored = stored_payloads(&url);
    let got: BTreeSet<String> = stored.iter().cloned().collect();
    assert_eq!(stored.len(), expected.len(), "every record exactly once");
    assert_eq!(
        got, expected,
        "the collector holds exactly what was written"
    );
    for sample in ["a record 0", "b pipe 2499", "root c 1234", "a c 0"] {
        assert!(got.contains(sample), "{sample}");
    }
    let first = segment_log::fs::live_segments(&dir.join("segments")).unwrap()[0];
    assert!(first > 1, "the uploader trimmed segments the others made");

    // No file the others cannot use: files 0660, directories 2770, all of the group.
    let all = walk(&dir);
    assert!(all.iter().any(|p| p.ends_with("upload/opt-in")), "{all:?}");
    for p in std::iter::once(&dir).chain(&all) {
        let m = std::fs::symlink_metadata(p).unwrap();
        let want = if m.is_dir() { 0o2770 } else { 0o660 };
        assert_eq!(
            m.permissions().mode() & 0o7777,
            want,
            "{} (owner uid {})",
            p.display(),
            m.uid()
        );
        assert_eq!(m.gid(), gid, "{} is not of group {group}", p.display());
    }

    // A user outside the group is told which group to join, whatever it tries.
    let d = dir.to_str().unwrap();
    let record = [
        "record",
        "-c",
        "org.test/sysmode/record",
        "-s",
        "1",
        "-p",
        "x",
    ];
    for args in [
        &record[..],
        &["journal"],
        &["upload", "status"],
        &["upload", "flush"],
    ] {
        let mut all = vec!["--dir", d];
        all.extend(args);
        let o = as_user(Some(outsider), &seglog, &all).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
        assert!(
            err.contains(&format!("not in group {group}"))
                && err.contains(&format!("usermod -aG {group}"))
                && err.contains(d),
            "{args:?}: {err}"
        );
    }
    drop(acc);
}
