//! The collector's files are private whatever the umask (issue 11, item 9): under
//! `umask 000`, `seglog collector serve` creates its data directories 0700 and
//! `collector.sqlite3`, `-wal` and `-shm` 0600.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn under_umask_000_the_collector_creates_0700_dirs_and_0600_database_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("a").join("data");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("umask 000 && exec \"$0\" collector serve --listen 127.0.0.1:0 --print-address --data-dir \"$1\"")
        .arg(env!("CARGO_BIN_EXE_seglog"))
        .arg(&data)
        .env("HOME", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    crate::support::upload_env::listening_url(&mut child);
    let checks = [
        (tmp.path().join("a"), 0o700),
        (data.clone(), 0o700),
        (data.join("collector.sqlite3"), 0o600),
        (data.join("collector.sqlite3-wal"), 0o600),
        (data.join("collector.sqlite3-shm"), 0o600),
    ];
    let modes: Vec<_> = checks.iter().map(|(p, _)| mode(p)).collect();
    let _ = child.kill();
    let _ = child.wait();
    for ((p, want), got) in checks.iter().zip(modes) {
        assert_eq!(got, *want, "{}: {got:o}", p.display());
    }
}
