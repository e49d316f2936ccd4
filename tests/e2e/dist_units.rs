//! The service files in `dist/` (issue 13, "Services and packaging"):
//!
//! - `systemd-analyze security --offline=true` rates every service unit at or under its
//!   exposure target (uploader units 2.5, collector 3.0; the uploader units were 8.9 EXPOSED
//!   before), and `systemd-analyze verify` has nothing to say about any unit;
//! - `systemd-sysusers` and `systemd-tmpfiles` applied to a temp root make the `seglog` group
//!   with the uploader in it, the collector's user and `/var/lib/seglog` 2770 root:seglog;
//! - the cron line keeps the uploader's stderr and its failure status, drops stdout, and
//!   says nothing when the policy says "not now" (exit 3).
//!
//! Without `systemd-analyze` (package `systemd`; `.ci/run` installs it) these print SKIPPED.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::system::{is_root, tool};

/// Each service unit in `dist/` and the highest exposure `systemd-analyze security` may give
/// it. A new unit states its target here.
const TARGETS: &[(&str, f64)] = &[
    ("seglog-upload.service", 2.5),
    ("seglog-upload-once.service", 2.5),
    ("seglog-collector.service", 3.0),
];

fn dist() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("dist")
}

/// The unit files in `dist/` with this suffix, sorted.
fn units(suffix: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dist())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    names
}

/// The number in "→ Overall exposure level for UNIT: 1.5 OK 🙂".
fn overall_exposure(stdout: &str) -> Option<f64> {
    let line = stdout
        .lines()
        .find(|l| l.contains("Overall exposure level for"))?;
    let (_, rest) = line.rsplit_once(": ")?;
    rest.split_whitespace().next()?.parse().ok()
}

#[test]
fn every_service_unit_is_at_or_under_its_exposure_target() {
    let Some(analyze) = tool(
        "systemd-analyze",
        "unit exposure not checked (package systemd)",
    ) else {
        return;
    };
    let services = units(".service");
    let listed: Vec<&str> = TARGETS.iter().map(|(n, _)| *n).collect();
    for s in &services {
        assert!(
            listed.contains(&s.as_str()),
            "dist/{s} has no exposure target: add it to TARGETS"
        );
    }
    let mut report = Vec::new();
    let mut over = Vec::new();
    for (unit, target) in TARGETS {
        let out = Command::new(&analyze)
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dist().join(unit))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let Some(score) = overall_exposure(&stdout) else {
            panic!(
                "no exposure level for {unit} (status {}):\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        };
        report.push(format!("{unit}: {score} (target <= {target})"));
        if score > *target {
            over.push(format!("{unit}: {score} > {target}\n{stdout}"));
        }
    }
    eprintln!("systemd-analyze security:\n  {}", report.join("\n  "));
    assert!(over.is_empty(), "over the target:\n{}", over.join("\n"));
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = tool("systemd-analyze", "units not verified (package systemd)") else {
        return;
    };
    // A root with the system's own units (the targets ours name), ours, and stand-ins for the
    // programs they run: verify checks that ExecStart= names an executable, in the root.
    let root = tempfile::tempdir().unwrap();
    let unit_dir = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&unit_dir).unwrap();
    let system = Path::new("/usr/lib/systemd/system");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", system.display()))
        .arg(&unit_dir)
        .status()
        .unwrap();
    assert!(copied.success(), "cp -a {}", system.display());
    let bin = root.path().join("usr/bin");
    std::fs::create_dir_all(&bin).unwrap();
    for program in ["seglog", "seglog-server"] {
        let p = bin.join(program);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut ours = units(".service");
    ours.extend(units(".timer"));
    for u in &ours {
        std::fs::copy(dist().join(u), unit_dir.join(u)).unwrap();
    }
    // --man=no: the man pages named by Documentation= are checked by package.rs (they
    // are in the packages, not on this machine).
    let out = Command::new(&analyze)
        .arg(format!("--root={}", root.path().display()))
        .args(["verify", "--man=no"])
        .args(&ours)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // verify exits 0 on unknown keys and typos but prints them: any output is a finding.
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify {ours:?} (status {}):\n{stderr}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `name:x:id:...` lines of `file` (passwd or group format) as (name, fields).
fn entries(file: &Path) -> Vec<(String, Vec<String>)> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<String> = l.split(':').map(str::to_owned).collect();
            Some((f.first()?.clone(), f))
        })
        .collect()
}

#[test]
fn sysusers_and_tmpfiles_make_the_users_group_and_log_directory() {
    let Some(sysusers) = tool(
        "systemd-sysusers",
        "sysusers.d not checked (package systemd)",
    ) else {
        return;
    };
    let Some(tmpfiles) = tool(
        "systemd-tmpfiles",
        "tmpfiles.d not checked (package systemd)",
    ) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    let conf = |d: &str, f: &str| dist().join(d).join(f);
    let out = Command::new(&sysusers)
        .arg(format!("--root={}", root.path().display()))
        .arg(conf("sysusers.d", "seglog.conf"))
        .arg(conf("sysusers.d", "seglog-collector.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-sysusers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let passwd = entries(&root.path().join("etc/passwd"));
    let group = entries(&root.path().join("etc/group"));
    let user = |n: &str| {
        passwd
            .iter()
            .find(|(name, _)| name == n)
            .unwrap_or_else(|| panic!("no user {n} in {passwd:?}"))
            .1
            .clone()
    };
    let upload = user("seglog-upload");
    let collector = user("seglog-collector");
    for u in [&upload, &collector] {
        assert_eq!(u[6], "/usr/sbin/nologin", "{u:?}");
        let uid: u32 = u[2].parse().unwrap();
        assert!(uid > 0 && uid < 1000, "a system uid: {u:?}");
    }
    assert_eq!(collector[5], "/var/lib/seglog-collector");
    let seglog = group
        .iter()
        .find(|(n, _)| n == "seglog")
        .unwrap_or_else(|| panic!("no group seglog in {group:?}"))
        .1
        .clone();
    let members: Vec<&str> = seglog[3].split(',').collect();
    assert_eq!(
        members,
        ["seglog-upload"],
        "only the uploader is in the group"
    );
    // Each user has its own primary group (a token file can be readable by the uploader
    // alone); the collector is not in the seglog group.
    assert_ne!(upload[3], seglog[2]);
    assert_ne!(collector[3], seglog[2]);

    if !is_root() {
        eprintln!("SKIPPED: systemd-tmpfiles --create needs root to chown; tmpfiles.d not checked");
        return;
    }
    let out = Command::new(&tmpfiles)
        .arg(format!("--root={}", root.path().display()))
        .arg("--create")
        .arg(conf("tmpfiles.d", "seglog.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-tmpfiles: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = std::fs::metadata(root.path().join("var/lib/seglog")).unwrap();
    assert!(log.is_dir());
    assert_eq!(log.mode() & 0o7777, 0o2770, "/var/lib/seglog mode");
    assert_eq!(log.uid(), 0);
    assert_eq!(log.gid().to_string(), seglog[2], "/var/lib/seglog group");
    let etc = std::fs::metadata(root.path().join("etc/seglog")).unwrap();
    assert_eq!(etc.mode() & 0o7777, 0o755, "/etc/seglog mode");
}

/// The command of the cron line with `seglog` replaced by `stub`, runnable by `sh -c`: the
/// crontab's `\%` unescaped and the random `sleep` turned into a no-op (its arithmetic is
/// still evaluated).
fn cron_command(stub: &Path) -> (String, String) {
    let text = std::fs::read_to_string(dist().join("seglog-upload.cron")).unwrap();
    let line = text
        .lines()
        .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .expect("a cron line");
    // minute hour day month weekday user command (fields separated by runs of blanks)
    let mut rest = line;
    let mut fields = Vec::new();
    for _ in 0..6 {
        rest = rest.trim_start();
        let end = rest.find(char::is_whitespace).expect("7 fields");
        fields.push(&rest[..end]);
        rest = &rest[end..];
    }
    let user = fields[5].to_owned();
    let cmd = rest
        .trim()
        .replace("\\%", "%")
        .replacen("sleep ", ": ", 1)
        .replace("/usr/bin/seglog", &stub.display().to_string());
    (user, cmd)
}

#[test]
fn the_cron_line_runs_as_the_uploader_and_mails_only_failures_with_their_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let stub = tmp.path().join("seglog");
    std::fs::write(
        &stub,
        // Like `seglog upload once`: the outcome (and "not uploading: <reason>" for exit 3)
        // on stdout, errors on stderr.
        "#!/bin/sh\necho \"stdout of $*\"\ncase $STUB_RC in 0|3) ;; *) echo \"seglog upload: reason $STUB_RC\" >&2 ;; esac\nexit \"$STUB_RC\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (user, cmd) = cron_command(&stub);
    // uploader/README.md quotes the line: the same one.
    let cron = std::fs::read_to_string(dist().join("seglog-upload.cron")).unwrap();
    let line = cron.lines().find(|l| l.starts_with("*/")).unwrap();
    let readme = std::fs::read_to_string(dist().join("../uploader/README.md")).unwrap();
    assert!(
        readme.lines().any(|l| l == line),
        "uploader/README.md does not quote dist/seglog-upload.cron's line"
    );
    assert_eq!(
        user, "seglog-upload",
        "the cron line runs as the uploader's user"
    );
    assert!(cmd.contains("upload once"), "{cmd}");
    let run = |rc: u8| {
        let out = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("STUB_RC", rc.to_string())
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // cron mails any output: success and "not now" say nothing.
    for rc in [0, 3] {
        assert_eq!(
            run(rc),
            (Some(0), String::new(), String::new()),
            "exit {rc}"
        );
    }
    // A failure: the uploader's own reason and the status, on stderr; stdout stays dropped.
    for rc in [1, 2] {
        let (_, stdout, stderr) = run(rc);
        assert_eq!(stdout, "", "exit {rc}");
        assert!(
            stderr.contains(&format!("seglog upload: reason {rc}"))
                && stderr.contains(&format!("failed with status {rc}")),
            "exit {rc}: {stderr}"
        );
    }
}
