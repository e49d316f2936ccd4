//! Builds `libseglog`, installs it with `capi/install.sh` into a temporary prefix, compiles
//! `tests/c/probe.c` with the system C compiler and the flags `pkg-config --cflags --libs
//! seglog` gives, runs it, and checks the records it wrote and the library's soname. Fails
//! when no C compiler or pkg-config is installed, unless `SEGLOG_SKIP_C_TESTS=1` says to skip
//! (CI installs both).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use records::{Position, RecordEntry, RecordReader};
use segment_log::ReaderOptions;

/// Builds the cdylib and staticlib into their own target directory, so this does not wait
/// on the lock of the cargo running the tests; returns the directory that holds them.
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

/// Whether `tool` runs; when it does not, the test fails unless SEGLOG_SKIP_C_TESTS=1.
fn have(tool: &str, arg: &str) -> bool {
    if Command::new(tool).arg(arg).output().is_ok() {
        return true;
    }
    assert!(
        std::env::var_os("SEGLOG_SKIP_C_TESTS").is_some_and(|v| v == "1"),
        "{tool} is not installed: install it (apt-get install -y gcc pkg-config) or set \
         SEGLOG_SKIP_C_TESTS=1 to skip the C API tests"
    );
    eprintln!("SKIPPING the C API test: {tool} is not installed (SEGLOG_SKIP_C_TESTS=1)");
    false
}

/// Installs the built library into a fresh prefix with `capi/install.sh`.
fn install(lib: &Path, prefix: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("install.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(prefix)
        .arg(lib)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `pkg-config --cflags --libs seglog` against the installed prefix, split into words.
fn pkg_config_flags(prefix: &Path) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "seglog"])
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pkg-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flags: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert!(flags.iter().any(|f| f == "-lseglog"), "{flags:?}");
    flags
}

#[test]
fn the_shared_library_has_a_versioned_soname() {
    if !have("readelf", "--version") {
        return;
    }
    let lib = build_cdylib();
    let out = Command::new("readelf")
        .arg("-d")
        .arg(lib.join("libseglog.so"))
        .output()
        .unwrap();
    let dynamic = String::from_utf8_lossy(&out.stdout);
    assert!(
        dynamic.contains("Library soname: [libseglog.so.0]"),
        "{dynamic}"
    );
}

#[test]
fn a_c_program_records_through_seglog_h() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    if !have(&cc, "--version") || !have("pkg-config", "--version") {
        return;
    }
    let lib = build_cdylib();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let prefix = tmp.path().join("prefix");
    install(&lib, &prefix);
    let lib = prefix.join("lib");
    let exe = tmp.path().join("probe");
    let out = Command::new(&cc)
        .args(["-Wall", "-Wextra", "-Werror", "-std=c99", "-o"])
        .arg(&exe)
        .arg(manifest.join("tests/c/probe.c"))
        .args(pkg_config_flags(&prefix))
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
