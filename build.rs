//! Sets `SEGLOG_VERSION` for `seglog --version`: the package version and the commit it was
//! built from, `0.1.0 (commit 1a2b3c4d5e6f)` (`-dirty` appended when tracked files had
//! uncommitted changes at build time). `SEGLOG_BUILD_COMMIT` overrides the commit (builds
//! from a tarball, distribution packaging); without it and without git, `(unknown commit)`.
//!
//! Reruns only when `SEGLOG_BUILD_COMMIT` changes or HEAD moves (`HEAD`, the branch ref it
//! names, `packed-refs`), not on every source edit, so the binary is not rebuilt for nothing.
//! The price: the dirty flag is the tree's state when the script last ran (after a commit or
//! a checkout), not necessarily at the last edit. Release builds come from a clean checkout.
use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// What changes when HEAD moves: `HEAD`, `packed-refs`, the branch's ref and the directory
/// holding it (a commit on a branch whose ref was only packed writes a new loose ref there).
/// Only paths that exist: cargo reruns a script on every build while a watched path is missing.
/// git resolves the places, worktrees included.
fn head_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = Vec::new();
    for name in ["HEAD", "packed-refs"] {
        files.extend(git(&["rev-parse", "--git-path", name]).map(PathBuf::from));
    }
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(p) = git(&["rev-parse", "--git-path", &r]).map(PathBuf::from) {
            files.extend(p.parent().map(PathBuf::from));
            files.push(p);
        }
    }
    files.retain(|f| f.exists());
    files
}

fn main() {
    // Without rerun-if-changed lines cargo would rerun the script after any change in the
    // package, and rebuild the binary with it.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SEGLOG_BUILD_COMMIT");
    let version = env!("CARGO_PKG_VERSION");
    let commit = match std::env::var("SEGLOG_BUILD_COMMIT") {
        Ok(c) if !c.trim().is_empty() => Some(c.trim().to_owned()),
        _ => {
            for f in head_files() {
                println!("cargo:rerun-if-changed={}", f.display());
            }
            git(&["rev-parse", "--short=12", "HEAD"]).map(|hash| {
                // Tracked files only: an untracked scratch file does not make a build dirty.
                let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
                if dirty {
                    format!("{hash}-dirty")
                } else {
                    hash
                }
            })
        }
    };
    let full = match commit {
        Some(c) => format!("{version} (commit {c})"),
        None => format!("{version} (unknown commit)"),
    };
    println!("cargo:rustc-env=SEGLOG_VERSION={full}");
}
