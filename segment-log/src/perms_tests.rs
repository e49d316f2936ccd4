//! The permission policy under a hostile umask. The umask is process-wide, so each case runs
//! in a child process (this test binary, running one test) that sets it first.
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;
use crate::{Log, Options};

const CHILD_ENV: &str = "SEGLOG_PERMS_TEST_UMASK";

/// Runs `test` (a test of this module) in a child process under `umask`.
fn run_under_umask(test: &str, umask: u32) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args(["--exact", &format!("perms::tests::{test}"), "--nocapture"])
        .env(CHILD_ENV, format!("{umask:o}"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{test} under umask {umask:03o}:\n{text}"
    );
    assert!(
        text.contains("1 passed"),
        "{test} did not run in the child:\n{text}"
    );
}

/// In the child: sets the umask it was given and returns true; in the parent: false.
fn child_umask() -> bool {
    let Ok(v) = std::env::var(CHILD_ENV) else {
        return false;
    };
    let mask = u32::from_str_radix(&v, 8).unwrap();
    // SAFETY: umask only sets the process's file mode creation mask; this process runs this
    // one test alone (see `run_under_umask`), so nothing else is creating files meanwhile.
    #[expect(unsafe_code, reason = "libc umask() in a test child process")]
    unsafe {
        libc::umask(mask as libc::mode_t);
    }
    true
}

/// Every path under `root` (itself excluded), directories and files.
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

/// Writes to a log in `dir` through every path that creates a file: open, append past a
/// rotation (a prepared segment), the trim ledger, retention's lock, and the helpers.
fn exercise(dir: &Path) {
    let opts = Options {
        segment_size: 64 << 10,
        max_record_size: 4 << 10,
        ..Options::default()
    };
    let log = Log::open(dir, opts).unwrap();
    for _ in 0..40 {
        log.append(&[7u8; 4000]).unwrap();
    }
    drop(log);
    let policy = crate::RetentionPolicy {
        max_bytes: Some(1),
        max_age: None,
    };
    crate::retention::enforce(dir, &policy, None, &crate::SystemClock).unwrap();
    let s = Sharing::of_dir(dir).unwrap();
    s.create_dir_all(&dir.join("extra/deeper")).unwrap();
    s.write_file(&dir.join("extra/deeper/state"), b"x").unwrap();
    let f = s
        .open_or_create(
            std::fs::OpenOptions::new().read(true).write(true),
            &dir.join("extra/lock"),
        )
        .unwrap();
    drop(f);
    assert!(dir.join("extra/lock").exists());
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn private_log_is_0700_and_0600_under_umask_077_and_000() {
    for umask in [0o077, 0o000] {
        run_under_umask("private_log_child", umask);
    }
}

#[test]
fn private_log_child() {
    if !child_umask() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    exercise(&dir);
    assert_eq!(Sharing::of_dir(&dir).unwrap(), Sharing::Private);
    assert_eq!(mode(&dir), 0o700);
    for p in walk(&dir) {
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        assert_eq!(mode(&p), want, "{}", p.display());
    }
}

#[test]
fn shared_log_is_2770_and_0660_under_umask_077_and_000() {
    for umask in [0o077, 0o000] {
        run_under_umask("shared_log_child", umask);
    }
}

#[test]
fn shared_log_child() {
    if !child_umask() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let gid = std::fs::metadata(&dir).unwrap().gid();
    exercise(&dir);
    assert_eq!(Sharing::of_dir(&dir).unwrap(), Sharing::Group { gid });
    assert_eq!(mode(&dir), 0o2770, "the log directory's own mode is kept");
    let all = walk(&dir);
    assert!(all.len() > 10, "{all:?}");
    for p in all {
        let want = if p.is_dir() { 0o2770 } else { 0o660 };
        assert_eq!(mode(&p), want, "{}", p.display());
        assert_eq!(std::fs::metadata(&p).unwrap().gid(), gid, "{}", p.display());
    }
}

#[test]
fn shared_log_without_setgid_gets_its_group_by_chown() {
    run_under_umask("foreign_group_child", 0o077);
}

#[test]
fn foreign_group_child() {
    if !child_umask() {
        return;
    }
    if effective_uid() != 0 {
        println!("SKIPPED: needs root to give the log directory a group it is not in");
        return;
    }
    // A group root is not in by default: files root creates would get group 0 without the
    // chown (the directory has no setgid bit to pass its group on).
    let gid = group_id("nogroup")
        .or_else(|| group_id("nobody"))
        .unwrap_or(65534);
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::chown(&dir, None, Some(gid)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o770)).unwrap();
    exercise(&dir);
    for p in walk(&dir) {
        let want = if p.is_dir() { 0o2770 } else { 0o660 };
        assert_eq!(mode(&p), want, "{}", p.display());
        assert_eq!(std::fs::metadata(&p).unwrap().gid(), gid, "{}", p.display());
    }
}

#[test]
fn a_new_log_is_shared_when_created_group_writable() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("log");
    let gid = std::fs::metadata(d.path()).unwrap().gid();
    let opts = Options {
        dir_mode: 0o2770,
        dir_group: Some(gid),
        ..Options::default()
    };
    let log = Log::open(&dir, opts).unwrap();
    assert_eq!(log.sharing(), Sharing::Group { gid });
    assert_eq!(mode(&dir), 0o2770);
    assert_eq!(mode(&dir.join("log-id")), 0o660);
}

#[test]
fn an_existing_private_log_is_tightened_and_a_shared_one_left_alone() {
    let d = tempfile::tempdir().unwrap();
    let private = d.path().join("p");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o755)).unwrap();
    Log::open(&private, Options::default()).unwrap();
    assert_eq!(mode(&private), 0o700);
    let shared = d.path().join("s");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o775)).unwrap();
    let log = Log::open(&shared, Options::default()).unwrap();
    assert!(log.sharing().is_shared());
    assert_eq!(mode(&shared), 0o775, "an administrator's mode is kept");
}

#[test]
fn group_names_resolve_both_ways() {
    let root = group_name(0).unwrap();
    assert_eq!(group_id(&root), Some(0));
    assert_eq!(group_id("no-such-group-seglog-test"), None);
    assert!(in_group(
        std::fs::metadata(tempfile::tempdir().unwrap().path())
            .unwrap()
            .gid()
    ));
}

#[test]
fn only_a_group_writable_directory_that_is_not_world_writable_is_shared() {
    let d = tempfile::tempdir().unwrap();
    let gid = std::fs::metadata(d.path()).unwrap().gid();
    for (m, shared) in [
        (0o700, false),
        (0o750, false),
        (0o770, true),
        (0o2770, true),
        (0o775, true),
        (0o777, false),
        (0o1777, false),
    ] {
        std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(m)).unwrap();
        let want = if shared {
            Sharing::Group { gid }
        } else {
            Sharing::Private
        };
        assert_eq!(Sharing::of_dir(d.path()).unwrap(), want, "mode {m:o}");
    }
}

/// A new shared directory is never visible with the umask's mode, not even for an instant:
/// another member of the group that found `recorder/` at 2750 (before its chmod to 2770)
/// could not create `slots/` in it (EACCES, seen in the system-mode e2e test). An observer
/// thread catches each directory as soon as it exists and records its mode.
#[test]
fn new_directories_appear_with_their_final_mode_under_umask_027() {
    run_under_umask("new_directories_appear_child", 0o027);
}

#[test]
fn new_directories_appear_child() {
    if !child_umask() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let root = d.path().to_path_buf();
    let rounds = 300;
    let seen = std::thread::scope(|s| {
        let observer = s.spawn(|| {
            let mut seen = Vec::new();
            for i in 0..rounds {
                let p = root.join(format!("r{i}")).join("recorder");
                let t = std::time::Instant::now();
                loop {
                    if let Ok(m) = std::fs::symlink_metadata(&p) {
                        seen.push(m.permissions().mode() & 0o7777);
                        break;
                    }
                    if t.elapsed() > std::time::Duration::from_secs(10) {
                        panic!("{} never appeared", p.display());
                    }
                    std::hint::spin_loop();
                }
            }
            seen
        });
        for i in 0..rounds {
            let leaf = root.join(format!("r{i}")).join("recorder").join("slots");
            create_dirs(&leaf, 0o2770, None).unwrap();
            assert_eq!(mode(&leaf), 0o2770);
        }
        observer.join().unwrap()
    });
    assert_eq!(seen.len(), rounds);
    let wrong: Vec<String> = seen
        .iter()
        .filter(|&&m| m != 0o2770)
        .map(|m| format!("{m:04o}"))
        .collect();
    assert!(wrong.is_empty(), "directories seen with modes {wrong:?}");
    // No temporary names are left behind.
    for p in walk(&root) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.ends_with(".tmp"), "{}", p.display());
    }
}

/// Writers opening a new log at once each create the missing directories. One that has just
/// placed `dir` and is about to create a file in it must not have `dir` replaced under it by
/// another's (an empty directory can be renamed over: the file's creation then fails with
/// ENOENT in the unlinked one; seen as `recorder/slots/0.lock: No such file or directory`
/// with four processes on a loaded machine).
#[test]
fn racing_creators_of_a_directory_can_all_create_files_in_it() {
    let root = tempfile::tempdir().unwrap();
    for round in 0..300 {
        let dir = root.path().join(format!("r{round}/recorder/slots"));
        let barrier = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for t in 0..4 {
                let (dir, barrier) = (&dir, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    create_dirs(dir, 0o700, None).unwrap();
                    let f = dir.join(format!("{t}.lock"));
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(false)
                        .open(&f)
                        .unwrap_or_else(|e| panic!("round {round}: {}: {e}", f.display()));
                });
            }
        });
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 4, "round {round}");
    }
}
