//! `seglog config check` and `seglog config show` on the real binary: a typo in any section
//! of any file is caught and named; `show` says where each value came from; a small
//! `segment_size` alone works (its `max_record_size` is derived); and `dist/seglog.toml`, the
//! defaults file, cannot drift from the keys and defaults the binary knows.
//!
//! The machine's own /usr/share/defaults/seglog/seglog.toml and /etc/seglog/seglog.toml are
//! read too (they are layers): every assertion is about a key the test's `--config` file
//! sets, which wins over them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

struct Env {
    tmp: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("home")).unwrap();
        Env { tmp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `seglog` with a scrubbed environment: no SEGLOG_DIR, a temporary home.
    fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_seglog"));
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.path("home"))
            .env("XDG_STATE_HOME", self.path("home/state"))
            .stdin(Stdio::null());
        c
    }

    fn run(&self, config: Option<&Path>, args: &[&str]) -> Output {
        let mut c = self.cmd();
        if let Some(f) = config {
            c.arg("--config").arg(f);
        }
        c.args(args).output().unwrap()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn code(o: &Output) -> Option<i32> {
    o.status.code()
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    )
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(o)))
}

const RECORD: &[&str] = &["record", "-c", "org.example/a/b", "-s", "1", "-p", "x"];

#[test]
fn a_typo_in_each_section_is_named_by_file_section_and_key_with_exit_2() {
    let env = Env::new();
    for (section, key) in [
        ("log", "segment_sise"),
        ("recorder", "rate_limit"),
        ("upload", "urll"),
        ("collector", "listn"),
    ] {
        // A valid key of another section in the same file.
        let other = match section {
            "log" => "[recorder]\nrate_limit_enabled = true\n",
            _ => "[log]\nsync = \"never\"\n",
        };
        let f = env.write(
            &format!("{section}.toml"),
            &format!("[{section}]\n{key} = 1\n\n{other}"),
        );
        let want = format!("{}: [{section}].{key}", f.display());
        let o = env.run(Some(&f), &["config", "check"]);
        assert_eq!(code(&o), Some(2), "{}", describe(&o));
        assert!(text(&o.stderr).contains(&want), "{}", describe(&o));
        assert!(
            text(&o.stdout).contains(&format!("read {} (--config)", f.display())),
            "{}",
            describe(&o)
        );
        let o = env.run(Some(&f), &["config", "check", "--json"]);
        assert_eq!(code(&o), Some(2), "{}", describe(&o));
        let v = json(&o);
        assert_eq!(v["ok"], false);
        let p = &v["problems"][0];
        assert_eq!(p["file"], f.display().to_string());
        assert_eq!(
            (p["section"].as_str(), p["key"].as_str()),
            (Some(section), Some(key))
        );
        // Every other command refuses it too, the recorder included (it used to accept a
        // typo in [upload] or [collector] silently).
        let dir = env.path(&format!("log-{section}"));
        let o = env.run(
            Some(&f),
            &[&["--dir", dir.to_str().unwrap()], RECORD].concat(),
        );
        assert_eq!(code(&o), Some(2), "{}", describe(&o));
        assert!(text(&o.stderr).contains(&format!("in {}: [{section}].{key}", f.display())));
        for cmd in [&["journal"][..], &["upload", "status"], &["upload", "once"]] {
            let o = env.run(Some(&f), &[&["--dir", dir.to_str().unwrap()], cmd].concat());
            assert_eq!(code(&o), Some(2), "{cmd:?}: {}", describe(&o));
            assert!(
                text(&o.stderr).contains(&format!("[{section}].{key}")),
                "{cmd:?}: {}",
                describe(&o)
            );
        }
    }
    // A value out of range is found on the merged configuration and still names the file.
    let f = env.write("zstd.toml", "[upload]\nzstd_level = 30\n");
    let o = env.run(Some(&f), &["config", "check"]);
    assert_eq!(code(&o), Some(2), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains(&format!("{}: [upload].zstd_level", f.display())),
        "{}",
        describe(&o)
    );
    // ...and the uploader refuses it too.
    let o = env.run(
        Some(&f),
        &[
            "--dir",
            env.path("log-zstd").to_str().unwrap(),
            "upload",
            "status",
        ],
    );
    assert_eq!(code(&o), Some(2), "{}", describe(&o));
    assert!(
        text(&o.stderr).contains(&format!("in {}: [upload].zstd_level", f.display())),
        "{}",
        describe(&o)
    );
    // Several problems in one file are all listed.
    let f = env.write("two.toml", "[upload]\nurll = 1\nzstd_levl = 2\n[uplaod]\n");
    let o = env.run(Some(&f), &["config", "check", "--json"]);
    assert_eq!(
        json(&o)["problems"].as_array().map(Vec::len),
        Some(3),
        "{}",
        describe(&o)
    );
    let f = env.write("ok.toml", "[upload]\nurl = \"http://127.0.0.1:9\"\n");
    let o = env.run(Some(&f), &["config", "check"]);
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    assert!(
        text(&o.stdout).contains("ok: every section"),
        "{}",
        describe(&o)
    );
}

#[test]
fn config_show_names_the_layer_each_value_came_from() {
    let env = Env::new();
    let f = env.write(
        "mine.toml",
        "[log]\nsegment_size = \"64KiB\"\nsync = \"always\"\n[upload]\ntoken = \"hunter2\"\n",
    );
    let mut c = env.cmd();
    c.env("SEGLOG_DIR", env.path("from-env"))
        .arg("--config")
        .arg(&f)
        .args(["config", "show"]);
    let o = c.output().unwrap();
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    let out = text(&o.stdout);
    let dir = env.path("from-env");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("dir = \"{}\" ", dir.display()))
                && l.ends_with("  # from SEGLOG_DIR")),
        "{out}"
    );
    for want in [
        format!("# from {}", f.display()),
        "max_record_size = \"16KiB\"".to_owned(),
        "# derived from segment_size".to_owned(),
        "max_age = \"30d\"".to_owned(),
        "# token = (set)".to_owned(),
        "# url = (not set)".to_owned(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in\n{out}");
    }
    assert!(!out.contains("hunter2"), "{out}");

    let flag = env.path("from-flag");
    let mut c = env.cmd();
    c.env("SEGLOG_DIR", env.path("from-env"))
        .arg("--config")
        .arg(&f)
        .arg("--dir")
        .arg(&flag)
        .args(["config", "show", "--json"]);
    let o = c.output().unwrap();
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    let v = json(&o);
    let log = &v["sections"]["log"];
    assert_eq!(log["dir"]["value"], flag.display().to_string());
    assert_eq!(
        (log["dir"]["source"].as_str(), log["dir"]["origin"].as_str()),
        (Some("flag"), Some("--dir"))
    );
    assert_eq!(log["segment_size"]["source"], "file");
    assert_eq!(log["segment_size"]["origin"], f.display().to_string());
    assert_eq!(log["max_record_size"]["source"], "derived");
    assert_eq!(log["max_record_size"]["value"], "16KiB");
    assert_eq!(log["max_bytes"]["source"], "default");
    assert_eq!(v["sections"]["upload"]["token"]["value"], "(set)");
    assert!(!text(&o.stdout).contains("hunter2"));
    assert!(v["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["path"] == f.display().to_string() && x["layer"] == "--config"));
}

#[test]
fn a_small_segment_size_alone_works_for_record_journal_and_upload_status() {
    let env = Env::new();
    let f = env.write("small.toml", "[log]\nsegment_size = \"64KiB\"\n");
    let dir = env.path("log");
    let d = dir.to_str().unwrap();
    let o = env.run(Some(&f), &[&["--dir", d], RECORD].concat());
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    // A payload over the derived 16 KiB limit is refused, one under it is not.
    let big = "y".repeat(20_000);
    let o = env.run(
        Some(&f),
        &[
            "--dir",
            d,
            "record",
            "-c",
            "org.example/a/b",
            "-s",
            "1",
            "-p",
            &big,
        ],
    );
    assert_ne!(code(&o), Some(0), "{}", describe(&o));
    let o = env.run(
        Some(&f),
        &[
            "--dir",
            d,
            "record",
            "-c",
            "org.example/a/b",
            "-s",
            "1",
            "-p",
            &big[..8000],
        ],
    );
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    let o = env.run(Some(&f), &["--dir", d, "journal", "--json"]);
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    assert_eq!(text(&o.stdout).lines().count(), 2, "{}", describe(&o));
    let o = env.run(Some(&f), &["--dir", d, "upload", "status"]);
    assert_eq!(code(&o), Some(0), "{}", describe(&o));

    // An explicit value too large for the segment still fails, naming both keys and the file.
    let bad = env.write(
        "bad.toml",
        "[log]\nsegment_size = \"64KiB\"\nmax_record_size = \"1MiB\"\n",
    );
    let o = env.run(Some(&bad), &[&["--dir", d], RECORD].concat());
    assert_eq!(code(&o), Some(2), "{}", describe(&o));
    let err = text(&o.stderr);
    assert!(
        err.contains(&format!("in {}: [log].max_record_size", bad.display()))
            && err.contains("segment_size"),
        "{err}"
    );
    let o = env.run(Some(&bad), &["config", "check"]);
    assert_eq!(code(&o), Some(2), "{}", describe(&o));
    assert!(text(&o.stderr).contains(&format!("{}: [log].max_record_size", bad.display())));
}

/// `dist/seglog.toml` with every key that has a default uncommented; its keys as
/// `section.key`; the keys marked "(no default)", left commented.
fn example() -> (String, BTreeSet<String>, BTreeSet<String>) {
    let src = include_str!("../../dist/seglog.toml");
    let (mut out, mut keys, mut unset) = (String::new(), BTreeSet::new(), BTreeSet::new());
    let (mut section, mut no_default) = (String::new(), false);
    for line in src.lines() {
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_owned();
        }
        let key = line
            .strip_prefix('#')
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .and_then(|l| l.split_once(" = "))
            .map(|(k, _)| format!("{section}.{k}"));
        match &key {
            Some(k) if no_default => {
                unset.insert(k.clone());
                out.push_str(line);
            }
            Some(_) => out.push_str(&line[1..]),
            None => out.push_str(line),
        }
        if let Some(k) = key.clone() {
            keys.insert(k);
        }
        out.push('\n');
        no_default = line.starts_with("# (no default)")
            || (no_default && line.starts_with("# ") && key.is_none());
    }
    (out, keys, unset)
}

#[test]
fn the_example_file_has_every_key_and_uncommented_it_changes_nothing() {
    let env = Env::new();
    let (uncommented, keys, unset) = example();
    // The keys `config show` knows, and those without a default.
    let empty = env.write("empty.toml", "");
    let o = env.run(Some(&empty), &["config", "show", "--json"]);
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    let v = json(&o);
    let mut known = BTreeSet::new();
    let mut no_default = BTreeSet::new();
    for (s, t) in v["sections"].as_object().unwrap() {
        for (k, e) in t.as_object().unwrap() {
            known.insert(format!("{s}.{k}"));
            if e["default"].is_null() {
                no_default.insert(format!("{s}.{k}"));
            }
        }
    }
    assert_eq!(
        keys, known,
        "dist/seglog.toml must list exactly the keys `config show` knows"
    );
    assert_eq!(
        unset, no_default,
        "keys marked (no default) in dist/seglog.toml"
    );

    let f = env.write("uncommented.toml", &uncommented);
    let o = env.run(Some(&f), &["config", "check"]);
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    let o = env.run(Some(&f), &["config", "show", "--json"]);
    assert_eq!(code(&o), Some(0), "{}", describe(&o));
    let v = json(&o);
    for (s, t) in v["sections"].as_object().unwrap() {
        for (k, e) in t.as_object().unwrap() {
            let name = format!("{s}.{k}");
            if unset.contains(&name) {
                assert!(e["value"].is_null(), "{name}: {e}");
                continue;
            }
            assert_eq!(e["source"], "file", "{name}: {e}");
            match name.as_str() {
                // Defaults that depend on the user running seglog: the file shows root's.
                "log.dir" => assert_eq!(e["value"], "/var/lib/seglog"),
                "collector.data_dir" => assert_eq!(e["value"], "/var/lib/seglog-collector"),
                _ => assert_eq!(e["value"], e["default"], "{name}: {e}"),
            }
        }
    }
}
