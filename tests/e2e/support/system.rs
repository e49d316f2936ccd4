//! For the tests that change the machine itself (system users and groups, `/var/lib/seglog`,
//! installed packages; they run as root only): one at a time, across test threads and test
//! processes, and a loud skip where they cannot run.
#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};

/// Held while a test changes the machine: an exclusive `flock` on a file in the temp dir (released when dropped),
/// so concurrent test threads and test binaries (other worktrees) take turns.
pub struct SystemLock(File);

/// Waits for the machine-wide test lock.
pub fn exclusive() -> SystemLock {
    let path = std::env::temp_dir().join("seglog-e2e-system.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("flock {}: {e}", path.display()));
    SystemLock(file)
}

/// Whether this process runs as root (what installing packages and adding users needs).
pub fn is_root() -> bool {
    segment_log::perms::effective_uid() == 0
}

/// The first `name` on PATH, or a loud "SKIPPED" line (naming `why`) and `None`.
pub fn tool(name: &str, why: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| is_executable(p))
    });
    if found.is_none() {
        eprintln!("SKIPPED: {name} not found on PATH: {why}");
    }
    found
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
