//! The Debian packages of `packaging/deb/build.sh` (issue 13), built from the test's own
//! binary with `--bin` and man pages generated here from the real `Cli`:
//!
//! - `dpkg-deb -c`/`-f`/`-I`: every expected path with its mode and owner, the control
//!   fields, the conffile, a man page for every subcommand (and for every `man:` page a unit
//!   names);
//! - as root only: `dpkg -i` both packages, check the users, the group and `/var/lib/seglog`
//!   (2770 root:seglog), `seglog record` as a throwaway user in the group (default
//!   directory), `seglog journal` as root lists it, the uploader (as `seglog-upload`, with its
//!   unit's groups and umask) uploads it to the collector (as `seglog-collector`); then
//!   `dpkg -P` and the users and groups go, leaving the machine as it was. It refuses to run
//!   (SKIPPED) when anything it would create already exists.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use clap::CommandFactory;

use crate::support::system::{exclusive, is_root, tool};

#[path = "../../examples/gen-docs.rs"]
mod gen_docs;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Both packages, built into `dir` from the test binary.
struct Debs {
    seglog: PathBuf,
    server: PathBuf,
}

fn build_packages(dir: &Path) -> Debs {
    let build = |package: &str, program: &str| {
        let docs = dir.join(format!("docs-{package}"));
        gen_docs::generate(seglog::Cli::command(), program, &docs).unwrap();
        let out = run(Command::new(repo().join("packaging/deb/build.sh"))
            .args(["--package", package, "--compression", "none", "--bin"])
            .arg(env!("CARGO_BIN_EXE_seglog"))
            .arg("--docs")
            .arg(&docs)
            .arg("--out")
            .arg(dir));
        let deb = PathBuf::from(stdout(&out).lines().last().unwrap_or_default());
        assert!(deb.is_file(), "build.sh printed {deb:?}");
        deb
    };
    Debs {
        seglog: build("seglog", "seglog"),
        server: build("seglog-server", "seglog-server"),
    }
}

/// `dpkg-deb -c`: path (without the leading `.`) -> (mode string, owner/group).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    let out = run(Command::new("dpkg-deb").arg("-c").arg(deb));
    stdout(&out)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let path = f.get(5)?.trim_start_matches('.').trim_end_matches('/');
            Some((path.to_owned(), (f[0].to_owned(), f[1].to_owned())))
        })
        .filter(|(p, _)| !p.is_empty())
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    stdout(&run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name)))
        .trim()
        .to_owned()
}

/// Every man page gen-docs makes for `program`: one per subcommand, nested ones too.
fn man_pages(program: &str) -> Vec<String> {
    fn walk(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        out.push(format!("{prefix}.1.gz"));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                walk(sub, &format!("{prefix}-{}", sub.get_name()), out);
            }
        }
    }
    let mut pages = Vec::new();
    walk(&seglog::Cli::command(), program, &mut pages);
    pages
}

/// The `man:NAME(1)` pages the units of a package name in `Documentation=`.
fn unit_man_pages(units: &[&str]) -> Vec<String> {
    let mut pages = Vec::new();
    for unit in units {
        let text = std::fs::read_to_string(repo().join("dist").join(unit)).unwrap();
        for l in text.lines().filter(|l| l.starts_with("Documentation=")) {
            for word in l["Documentation=".len()..].split_whitespace() {
                if let Some(page) = word.strip_prefix("man:") {
                    pages.push(page.replace("(1)", ".1.gz"));
                }
            }
        }
    }
    pages
}

fn check_files(deb: &Path, expected: &[(&str, &str)], program: &str, units: &[&str]) {
    let files = contents(deb);
    for (path, (mode, owner)) in &files {
        assert_eq!(owner, "root/root", "{path} in {}", deb.display());
        assert!(
            ["-rw-r--r--", "-rwxr-xr-x", "drwxr-xr-x"].contains(&mode.as_str()),
            "{path} in {}: {mode}",
            deb.display()
        );
    }
    for (path, mode) in expected {
        let got = files
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from {}: {files:#?}", deb.display()));
        assert_eq!(got.0, *mode, "mode of {path}");
    }
    let man_dir = "/usr/share/man/man1/";
    for page in man_pages(program).into_iter().chain(unit_man_pages(units)) {
        let path = format!("{man_dir}{page}");
        assert_eq!(
            files.get(&path).map(|f| f.0.as_str()),
            Some("-rw-r--r--"),
            "{path} in {}",
            deb.display()
        );
    }
}

#[test]
fn packages_hold_the_binary_units_users_defaults_docs_and_completions() {
    if tool("dpkg-deb", "the package is not built (package dpkg)").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let debs = build_packages(tmp.path());

    let units = [
        "seglog-upload.service",
        "seglog-upload-once.service",
        "seglog-upload-once.timer",
    ];
    let mut expected = vec![
        ("/usr/bin/seglog", "-rwxr-xr-x"),
        ("/usr/lib/sysusers.d/seglog.conf", "-rw-r--r--"),
        ("/usr/lib/tmpfiles.d/seglog.conf", "-rw-r--r--"),
        ("/usr/share/defaults/seglog/seglog.toml", "-rw-r--r--"),
        ("/etc/seglog/seglog.toml", "-rw-r--r--"),
        (
            "/usr/share/bash-completion/completions/seglog",
            "-rw-r--r--",
        ),
        ("/usr/share/zsh/vendor-completions/_seglog", "-rw-r--r--"),
        (
            "/usr/share/fish/vendor_completions.d/seglog.fish",
            "-rw-r--r--",
        ),
        ("/usr/share/doc/seglog/README.md", "-rw-r--r--"),
        ("/usr/share/doc/seglog/README.systemd.md", "-rw-r--r--"),
        ("/usr/share/doc/seglog/copyright", "-rw-r--r--"),
        (
            "/usr/share/doc/seglog/examples/seglog-upload.cron",
            "-rw-r--r--",
        ),
    ];
    let unit_paths: Vec<String> = units
        .iter()
        .map(|u| format!("/usr/lib/systemd/system/{u}"))
        .collect();
    expected.extend(unit_paths.iter().map(|p| (p.as_str(), "-rw-r--r--")));
    check_files(&debs.seglog, &expected, "seglog", &units);

    check_files(
        &debs.server,
        &[
            ("/usr/bin/seglog-server", "-rwxr-xr-x"),
            (
                "/usr/lib/systemd/system/seglog-collector.service",
                "-rw-r--r--",
            ),
            ("/usr/lib/sysusers.d/seglog-collector.conf", "-rw-r--r--"),
            (
                "/usr/share/bash-completion/completions/seglog-server",
                "-rw-r--r--",
            ),
            (
                "/usr/share/zsh/vendor-completions/_seglog-server",
                "-rw-r--r--",
            ),
            (
                "/usr/share/fish/vendor_completions.d/seglog-server.fish",
                "-rw-r--r--",
            ),
            ("/usr/share/doc/seglog-server/README.md", "-rw-r--r--"),
            ("/usr/share/doc/seglog-server/copyright", "-rw-r--r--"),
        ],
        "seglog-server",
        &["seglog-collector.service"],
    );
    // The two can be installed together: no path in both but shared directories.
    let a = contents(&debs.seglog);
    let b = contents(&debs.server);
    let shared: Vec<&String> = a
        .iter()
        .filter(|(p, (m, _))| !m.starts_with('d') && b.contains_key(*p))
        .map(|(p, _)| p)
        .collect();
    assert!(shared.is_empty(), "files in both packages: {shared:?}");

    let arch = stdout(&run(Command::new("dpkg").arg("--print-architecture")));
    for (deb, name) in [(&debs.seglog, "seglog"), (&debs.server, "seglog-server")] {
        assert_eq!(field(deb, "Package"), name);
        assert_eq!(field(deb, "Version"), env!("CARGO_PKG_VERSION"));
        assert_eq!(field(deb, "Architecture"), arch.trim());
        let depends = field(deb, "Depends");
        assert!(depends.starts_with("libc6 (>= 2."), "Depends: {depends}");
        assert!(!field(deb, "Maintainer").is_empty());
        assert!(!field(deb, "Description").is_empty());
    }
    let conffiles = stdout(&run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(&debs.seglog)
        .arg("conffiles")));
    assert_eq!(conffiles.trim(), "/etc/seglog/seglog.toml");
}

/// Names this test creates on the machine; each must be absent before it starts.
const USERS: &[&str] = &["seglog-upload", "seglog-collector"];
const GROUPS: &[&str] = &["seglog", "seglog-upload", "seglog-collector"];
const PATHS: &[&str] = &[
    "/usr/bin/seglog",
    "/usr/bin/seglog-server",
    "/var/lib/seglog",
    "/var/lib/seglog-collector",
    "/etc/seglog",
];

fn getent(db: &str, name: &str) -> Option<String> {
    let out = Command::new("getent").args([db, name]).output().ok()?;
    out.status.success().then(|| stdout(&out).trim().to_owned())
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Status}", package])
        .output()
        .is_ok_and(|o| stdout(&o).contains("installed") && !stdout(&o).contains("not-installed"))
}

/// What already exists of what the test would create (it then refuses to run).
fn already_there(throwaway: &str) -> Vec<String> {
    let mut found = Vec::new();
    for u in USERS.iter().chain([&throwaway]) {
        found.extend(getent("passwd", u).map(|e| format!("user {e}")));
    }
    for g in GROUPS.iter().chain([&throwaway]) {
        found.extend(getent("group", g).map(|e| format!("group {e}")));
    }
    for p in PATHS {
        if Path::new(p).symlink_metadata().is_ok() {
            found.push(p.to_string());
        }
    }
    for p in ["seglog", "seglog-server"] {
        if installed(p) {
            found.push(format!("package {p}"));
        }
    }
    found
}

/// Undoes the install whatever happens to the test: purges both packages, removes the users
/// and groups it made (the packages keep system users on purge, as Debian does).
struct Cleanup {
    throwaway: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |c: &mut Command| {
            let _ = c.stdout(Stdio::null()).stderr(Stdio::null()).status();
        };
        quiet(Command::new("dpkg").args(["-P", "seglog-server", "seglog"]));
        for u in USERS.iter().chain([&self.throwaway.as_str()]) {
            if getent("passwd", u).is_some() {
                quiet(Command::new("userdel").arg(u));
            }
        }
        for g in GROUPS.iter().chain([&self.throwaway.as_str()]) {
            if getent("group", g).is_some() {
                quiet(Command::new("groupdel").arg(g));
            }
        }
        for p in PATHS {
            let _ = std::fs::remove_dir_all(p).or_else(|_| std::fs::remove_file(p));
        }
    }
}

/// `program args` as `user` (with its groups from the group database) and `umask`, with a
/// minimal environment, as systemd or a login would start it.
fn as_user(user: &str, umask: &str, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", user, "--regid", user, "--init-groups", "--"])
        .args([
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "HOME=/nonexistent",
            "LANG=C",
        ])
        .args(["sh", "-c", &format!("umask {umask} && exec \"$0\" \"$@\"")])
        .arg(program)
        .args(args)
        .current_dir("/");
    c
}

/// The collector as its unit runs it, on a free port; returns it and its base URL.
fn start_collector() -> (Child, String) {
    let mut child = as_user(
        "seglog-collector",
        "0077",
        "/usr/bin/seglog-server",
        &[
            "collector",
            "serve",
            "--data-dir",
            "/var/lib/seglog-collector",
            "--listen",
            "127.0.0.1:0",
            "--print-address",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .spawn()
    .unwrap();
    let url = crate::support::upload_env::listening_url(&mut child);
    (child, url)
}

#[test]
fn package_installs_lets_a_group_member_record_uploads_and_purges_cleanly() {
    if !is_root() {
        eprintln!("SKIPPED: not root: dpkg -i / dpkg -P of the seglog packages not tested");
        return;
    }
    for t in [
        "dpkg", "dpkg-deb", "setpriv", "useradd", "userdel", "groupdel",
    ] {
        if tool(t, "the package install is not tested").is_none() {
            return;
        }
    }
    let _lock = exclusive();
    let throwaway = format!("seglog-e2e-{}", std::process::id());
    let there = already_there(&throwaway);
    if !there.is_empty() {
        eprintln!(
            "SKIPPED: the package install test would clobber what exists on this machine: {}",
            there.join("; ")
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let debs = build_packages(tmp.path());
    let _cleanup = Cleanup {
        throwaway: throwaway.clone(),
    };

    run(Command::new("dpkg")
        .arg("-i")
        .arg(&debs.seglog)
        .arg(&debs.server));
    // The users and the group (sysusers.d, or the adduser fallback without systemd).
    let seglog_group = getent("group", "seglog").expect("group seglog");
    let gid: u32 = seglog_group.split(':').nth(2).unwrap().parse().unwrap();
    assert!(
        seglog_group.ends_with(":seglog-upload"),
        "only the uploader is in the group: {seglog_group}"
    );
    assert!(getent("passwd", "seglog-upload").is_some());
    assert!(getent("passwd", "seglog-collector").is_some());
    let log = std::fs::metadata("/var/lib/seglog").expect("/var/lib/seglog");
    assert_eq!(log.mode() & 0o7777, 0o2770, "/var/lib/seglog mode");
    assert_eq!((log.uid(), log.gid()), (0, gid), "/var/lib/seglog owner");
    let state = std::fs::metadata("/var/lib/seglog-collector").unwrap();
    assert_eq!(state.mode() & 0o7777, 0o700);

    // A user in the group records into the system log by default.
    run(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--user-group",
        "--groups",
        "seglog",
        "--shell",
        "/usr/sbin/nologin",
        &throwaway,
    ]));
    let payload = format!("recorded by {throwaway}");
    let id = stdout(&run(&mut as_user(
        &throwaway,
        "0022",
        "/usr/bin/seglog",
        &[
            "record",
            "-c",
            "org.example/package/test",
            "-s",
            "1",
            "-p",
            &payload,
        ],
    )))
    .trim()
    .to_owned();
    assert_eq!(id.len(), 32, "a record id: {id:?}");
    // Root reads the system log by default.
    let listed = stdout(&run(Command::new("/usr/bin/seglog").args([
        "journal",
        "--json",
        "--include-payload",
        "--record-id",
        &id,
    ])));
    assert!(listed.contains(&payload), "journal as root: {listed}");

    // The uploader, as its units run it, delivers it to the collector.
    let (mut collector, url) = start_collector();
    let conf_dir = tmp.path().join("conf");
    std::fs::create_dir(&conf_dir).unwrap();
    let conf = conf_dir.join("upload.toml");
    std::fs::write(&conf, format!("[upload]\nurl = \"{url}\"\n")).unwrap();
    for p in [tmp.path(), conf_dir.as_path()] {
        // The uploader's user must reach the file (tempdir() is 0700).
        std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    run(Command::new("/usr/bin/seglog").args(["upload", "opt-in"]));
    let conf_arg = conf.display().to_string();
    let upload = run(&mut as_user(
        "seglog-upload",
        "0007",
        "/usr/bin/seglog",
        &["--config", &conf_arg, "upload", "once"],
    ));
    let _ = Command::new("kill")
        .arg(collector.id().to_string())
        .status();
    let _ = collector.wait();
    assert!(
        stdout(&upload).contains("uploaded 1 records"),
        "upload once as seglog-upload: {}",
        stdout(&upload)
    );
    // Nothing in the shared log is out of the group's reach (files 0660, directories 2770).
    let mut bad = Vec::new();
    let mut stack = vec![PathBuf::from("/var/lib/seglog")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let want = if m.is_dir() { 0o2770 } else { 0o660 };
            if m.is_dir() {
                stack.push(p.clone());
            }
            if m.gid() != gid || ((m.is_file() || m.is_dir()) && m.mode() & 0o7777 != want) {
                bad.push(format!(
                    "{} {:o} gid {}",
                    p.display(),
                    m.mode() & 0o7777,
                    m.gid()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "not group-shared: {bad:#?}");

    // Purge: the packages, the log and the collector's data go.
    run(Command::new("dpkg").args(["-P", "seglog-server", "seglog"]));
    for p in PATHS {
        assert!(
            Path::new(p).symlink_metadata().is_err(),
            "{p} left after purge"
        );
    }
    assert!(!installed("seglog") && !installed("seglog-server"));
    drop(_cleanup);
    let left = already_there(&throwaway);
    assert!(left.is_empty(), "left on the machine: {left:?}");
}
