//! End to end: `seglog demo --exit` runs the whole pipeline (collector, probes, journal,
//! upload flush) and every record written is stored exactly once.

use std::process::Command;

#[test]
fn demo_exits_zero_and_every_record_written_is_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .args([
            "demo",
            "--exit",
            "--records",
            "500",
            "--threads",
            "2",
            "--netstat",
            "1s",
            "--dir",
        ])
        .arg(dir.path())
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "demo failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let field = |name: &str| -> u64 {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name:?} in\n{stdout}"));
        line[name.len()..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let written = field("records written");
    let stored = field("records stored");
    // hello + 2 threads x 500 + 2 pipe processes x 500, plus whatever netstat wrote.
    assert!(written >= 2001, "{stdout}");
    assert_eq!(stored, written, "{stdout}");
    assert_eq!(field("duplicate records"), 0);
    assert!(stdout.contains("web UI: http://127.0.0.1:"), "{stdout}");
}
