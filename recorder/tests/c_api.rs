//! Compiles `tests/c/probe.c` against `include/seglog.h` and `librecorder.so` with the system
//! C compiler, runs it, and checks the records it wrote. Skipped (with a message) when no C
//! compiler is installed.
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use recorder::record::{Position, RecordEntry, RecordReader};
use segment_log::ReaderOptions;

/// Builds the cdylib (`cargo test` builds only the rlib) into its own target directory, so
/// this does not wait on the lock of the one running the tests; returns the directory that
/// holds `librecorder.so`.
fn build_cdylib() -> PathBuf {
    // target/<profile>/deps/c_api-<hash> -> target/
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().join("c-api");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["build", "--lib", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the cdylib failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug")
}

#[test]
fn a_c_program_records_through_seglog_h() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if Command::new(&cc).arg("--version").output().is_err() {
        eprintln!("skipping: no C compiler ({cc}) found");
        return;
    }
    let lib = build_cdylib();
    assert!(
        lib.join("librecorder.so").exists(),
        "librecorder.so not built in {}",
        lib.display()
    );
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let exe = tmp.path().join("probe");
    let out = Command::new(&cc)
        .args(["-Wall", "-Wextra", "-Werror", "-std=c99", "-o"])
        .arg(&exe)
        .arg(manifest.join("tests/c/probe.c"))
        .arg("-I")
        .arg(manifest.join("include"))
        .arg("-L")
        .arg(&lib)
        .arg("-lrecorder")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let log = tmp.path().join("log");
    let run = Command::new(&exe)
        .arg(&log)
        .env("LD_LIBRARY_PATH", &lib)
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "probe failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(stdout.contains("DONE"), "{stdout}");
    assert!(
        stdout.contains("ERR invalid classification \"bad\""),
        "{stdout}"
    );
    assert!(stdout.contains("ERR invalid severity 7"), "{stdout}");
    let cfg = tmp.path().join("spool.toml");
    std::fs::write(
        &cfg,
        "[recorder]\nrecord_burst_limit = 1\nrate_limit_strategy = \"spool\"\n",
    )
    .unwrap();
    let spool_log = tmp.path().join("spool-log");
    let held = Command::new(&exe)
        .arg(&spool_log)
        .arg(&cfg)
        .env("LD_LIBRARY_PATH", &lib)
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    let held_out = String::from_utf8_lossy(&held.stdout);
    assert!(held.status.success(), "spool probe failed:\n{held_out}");
    let note = held_out
        .lines()
        .find_map(|l| l.strip_prefix("HELD "))
        .unwrap_or_else(|| panic!("no HELD line: {held_out}"));
    assert!(
        note.contains("held back from upload") && note.contains("until "),
        "the caller is told until when: {note}"
    );
    let c = recorder::counters::read(&spool_log).unwrap();
    assert_eq!(c.total_spooled(), 1);
    assert!(c.spooled_until_ms.is_some());

    let ids: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ID "))
        .collect();
    assert_eq!(ids.len(), 2);

    let opts = ReaderOptions {
        hole_timeout: Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let mut r = RecordReader::open(&log, Position::default(), opts).unwrap();
    let mut got = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            RecordEntry::Record(v) => got.push((
                v.id.to_string(),
                v.meta.classification.to_string(),
                v.meta.severity.get(),
                v.meta.event_id.map(|e| e.to_string()),
                v.payload.to_vec(),
            )),
            RecordEntry::Context { .. } => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].0, ids[0]);
    assert_eq!(
        (got[0].1.as_str(), got[0].2, &got[0].4[..]),
        ("org.example/c/hello", 2, &b"from C"[..])
    );
    assert_eq!(got[1].0, ids[1]);
    assert_eq!(
        got[1].3.as_deref(),
        Some("5de9de8d5f3c6a7d445d75ba01cc3322")
    );
    assert_eq!(got[1].4, b"a\0b\0c");
    assert_eq!(
        (got[2].1.as_str(), got[2].4.len()),
        ("org.example/c/empty", 0)
    );
}
