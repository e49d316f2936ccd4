//! `seglog --version` names the commit it was built from (issue 13): `seglog 0.1.0 (commit
//! 1a2b3c4d5e6f)`, `-dirty` after the hash when the tree had uncommitted changes, the value of
//! `SEGLOG_BUILD_COMMIT` when the build set it, `(unknown commit)` without git (build.rs).

use std::path::Path;
use std::process::Command;

fn version_of(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "seglog {args:?}: {}", out.status);
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

/// `git rev-parse --short=12 HEAD` of the source tree, if it is a git checkout.
fn head() -> Option<String> {
    let out = Command::new("git")
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_package_version_and_the_commit() {
    let line = version_of(&["--version"]);
    let rest = line
        .strip_prefix(concat!("seglog ", env!("CARGO_PKG_VERSION"), " ("))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("not `seglog VERSION (...)`: {line:?}"));
    match option_env!("SEGLOG_BUILD_COMMIT").filter(|c| !c.trim().is_empty()) {
        Some(given) => assert_eq!(rest, format!("commit {}", given.trim())),
        None => match head() {
            Some(hash) => {
                let commit = rest
                    .strip_prefix("commit ")
                    .unwrap_or_else(|| panic!("no commit in {line:?}"));
                let bare = commit.strip_suffix("-dirty").unwrap_or(commit);
                assert_eq!(bare.len(), 12, "{line:?}");
                assert!(bare.bytes().all(|b| b.is_ascii_hexdigit()), "{line:?}");
                assert_eq!(bare, hash, "the binary names HEAD");
            }
            None => assert_eq!(rest, "unknown commit"),
        },
    }
    // Every subcommand names the same build.
    assert_eq!(
        version_of(&["upload", "--version"]),
        line.replacen("seglog ", "seglog-upload ", 1)
    );
}
