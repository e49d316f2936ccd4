//! The README's everyday commands run verbatim: the shell block after the marker
//! `<!-- tested by tests/e2e/readme.rs -->` in README.md is extracted and run with bash
//! (`set -e -o pipefail`) against a collector this test starts, with the log directory and
//! the upload URL given only through the documented variables `SEGLOG_DIR` and
//! `SEGLOG_UPLOAD_URL`. If the README and the product drift apart, this fails.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::upload_env::{collector, stored_records};

const MARKER: &str = "<!-- tested by tests/e2e/readme.rs -->";

/// The first ```sh block after `MARKER`.
fn tested_block(readme: &str) -> String {
    let after = readme
        .split_once(MARKER)
        .unwrap_or_else(|| panic!("README.md has no {MARKER} marker"))
        .1;
    let body = after
        .split_once("```sh\n")
        .expect("a ```sh block after the marker")
        .1;
    body.split_once("\n```")
        .expect("the ```sh block is closed")
        .0
        .to_owned()
}

#[test]
fn the_readme_everyday_block_runs_verbatim_and_delivers_every_record() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let block = tested_block(&readme);
    assert!(
        block.lines().any(|l| l.starts_with("seglog upload")),
        "{block}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_seglog"), bin.join("seglog")).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let log = dir.path().join("log");
    let server = collector(dir.path());
    let url = server.url();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let out = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &block])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", &path)
        .env("HOME", &home)
        .env("SEGLOG_DIR", &log)
        .env("SEGLOG_UPLOAD_URL", &url)
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let text = format!(
        "--- block\n{block}\n--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the README block failed ({}):\n{text}",
        out.status
    );

    // Everything the block wrote reached the collector: as many records as the log holds.
    let listed = Command::new(bin.join("seglog"))
        .args(["--dir"])
        .arg(&log)
        .args(["journal", "--json"])
        .env("HOME", &home)
        .output()
        .unwrap();
    assert!(listed.status.success(), "{text}");
    let in_log = String::from_utf8_lossy(&listed.stdout).lines().count() as u64;
    assert!(
        in_log >= 3,
        "record, two piped lines and netstat: {in_log}\n{text}"
    );
    assert_eq!(stored_records(&url), in_log, "{text}");
    drop(server);
}
