//! End-to-end tests of the journalctl habits of `seglog journal` (issue 17): the pager (and
//! its bypass when standard output is not a terminal), `-- No entries --`, local time and
//! `--utc`, the `--since`/`--until` forms, `--boot`, `export --output-file`, and one
//! spelling and one meaning per flag across `record`, `journal` and `--version`.
//!
//! The pager tests need a terminal: `script` (util-linux) runs the binary under a pty.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::journal::{Writer, CLASSES};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_seglog")
}

fn journal(dir: &Path, tz: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--dir")
        .arg(dir)
        .arg("journal")
        .args(args)
        .env_remove("SEGLOG_DIR")
        .env_remove("PAGER")
        .env("TZ", tz)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// The messages `-o cat` prints.
fn messages(dir: &Path, args: &[&str]) -> Vec<String> {
    let mut a = vec!["-o", "cat"];
    a.extend_from_slice(args);
    let o = journal(dir, "UTC", &a);
    assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    stdout(&o)
        .lines()
        .filter(|l| *l != "-- No entries --")
        .map(str::to_owned)
        .collect()
}

fn have_tzdata() -> bool {
    let ok = Path::new("/usr/share/zoneinfo/Europe/Berlin").exists();
    if !ok {
        eprintln!("SKIPPED: /usr/share/zoneinfo/Europe/Berlin is missing (install tzdata)");
    }
    ok
}

#[test]
fn an_empty_result_says_no_entries_except_in_json() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    w.append(0, 1, 1_700_000_000_000, None, b"low");
    let o = journal(d.path(), "UTC", &["-p", "critical"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "-- No entries --\n");
    let o = journal(d.path(), "UTC", &["-p", "critical", "-o", "json"]);
    assert_eq!(stdout(&o), "", "JSON output stays parseable");
}

#[test]
fn times_show_in_the_local_zone_or_in_utc_with_the_flag() {
    if !have_tzdata() {
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    w.append(0, 2, 1_700_000_000_123, None, b"winter");
    w.append(0, 2, 1_688_212_800_000, None, b"summer");
    let local = stdout(&journal(d.path(), "Europe/Berlin", &[]));
    assert_eq!(
        local,
        format!(
            "2023-11-14T23:13:20.123+01:00 {c} medium: winter\n\
             2023-07-01T14:00:00.000+02:00 {c} medium: summer\n",
            c = CLASSES[0]
        )
    );
    let utc = stdout(&journal(d.path(), "Europe/Berlin", &["--utc"]));
    assert!(
        utc.starts_with("2023-11-14T22:13:20.123Z ") && utc.contains("2023-07-01T12:00:00.000Z "),
        "{utc}"
    );
}

#[test]
fn since_and_until_take_the_journalctl_forms() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let now = now_ms();
    let day = 86_400_000;
    let today_midnight = now - now.rem_euclid(day);
    w.append(0, 1, today_midnight - day - 1000, None, b"before yesterday");
    w.append(0, 1, today_midnight - day + 1000, None, b"yesterday");
    w.append(0, 1, now - 2 * 3_600_000, None, b"two hours ago");
    w.append(0, 1, now - 60_000, None, b"a minute ago");
    // Between midnight and 02:00 "two hours ago" was yesterday.
    let mut want = vec!["yesterday"];
    if now - 2 * 3_600_000 < today_midnight {
        want.push("two hours ago");
    }
    assert_eq!(
        messages(d.path(), &["--since", "yesterday", "--until", "today"]),
        want
    );
    let since_today = messages(d.path(), &["-S", "today"]);
    assert!(since_today.ends_with(&["a minute ago".to_owned()]));
    assert!(!since_today.contains(&"yesterday".to_owned()));
    assert_eq!(messages(d.path(), &["--since", "-1h"]), ["a minute ago"]);
    assert_eq!(
        messages(d.path(), &["--since", "-3h", "--until", "now"]),
        ["two hours ago", "a minute ago"]
    );
    let epoch = format!("@{}", (now - 3 * 3_600_000) / 1000);
    assert_eq!(
        messages(d.path(), &["--since", &epoch]),
        ["two hours ago", "a minute ago"]
    );
    // RFC 3339 with an offset is an instant whatever the zone.
    let mut w2 = Writer::open(&d.path().join("fixed"));
    w2.append(0, 1, 1_700_000_000_000, None, b"at 22:13:20Z");
    w2.append(0, 1, 1_700_000_060_000, None, b"a minute later");
    let fixed = d.path().join("fixed");
    assert_eq!(
        messages(&fixed, &["--since", "2023-11-14T23:14:00+01:00"]),
        ["a minute later"]
    );
    assert_eq!(
        messages(&fixed, &["--until", "2023-11-14 17:14:00-05:00"]),
        ["at 22:13:20Z"]
    );
    // Without an offset the time is local.
    if have_tzdata() {
        let o = journal(
            &fixed,
            "Europe/Berlin",
            &["-o", "cat", "--since", "2023-11-14 23:14:00"],
        );
        assert_eq!(stdout(&o), "a minute later\n", "{}", stderr(&o));
        let o = journal(
            &fixed,
            "Europe/Berlin",
            &["-o", "cat", "--utc", "--since", "2023-11-14 22:14:00"],
        );
        assert_eq!(stdout(&o), "a minute later\n", "{}", stderr(&o));
    }
    let o = journal(&fixed, "UTC", &["--since", "last tuesday"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("yesterday") && stderr(&o).contains("@EPOCH"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn boot_selects_the_records_of_one_boot() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    w.append(0, 1, 1_700_000_000_000, None, b"boot seven");
    let boot = "07070707-0707-0707-0707-070707070707";
    assert_eq!(messages(d.path(), &["-b", boot]), ["boot seven"]);
    assert_eq!(
        messages(d.path(), &["--boot", &"07".repeat(16)]),
        ["boot seven"]
    );
    assert!(messages(d.path(), &["-b", &"08".repeat(16)]).is_empty());
    if Path::new("/proc/sys/kernel/random/boot_id").exists() {
        // The test log's boot id is not this machine's.
        assert!(messages(d.path(), &["-b"]).is_empty());
    }
    let o = journal(d.path(), "UTC", &["-b", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--boot"), "{}", stderr(&o));
}

#[test]
fn export_writes_a_file_only_with_output_file_and_refuses_a_file_name_after_o() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    w.append(0, 1, 1_700_000_000_000, None, b"x");
    let work = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(bin())
            .current_dir(work.path())
            .arg("--dir")
            .arg(d.path())
            .arg("journal")
            .arg("export")
            .args(args)
            .output()
            .unwrap()
    };
    let o = run(&["-o", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["payload"], "x");
    assert!(
        !work.path().join("json").exists(),
        "-o json must not create a file named json"
    );
    let o = run(&["-o", "out.jsonl"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("--output-file out.jsonl"),
        "{}",
        stderr(&o)
    );
    assert!(!work.path().join("out.jsonl").exists());
    let o = run(&["--output-file", "out.jsonl"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(work.path().join("out.jsonl").exists());
}

#[test]
fn version_is_capital_v_everywhere_and_flags_mean_the_same_in_record_and_journal() {
    for args in [
        &["-V"][..],
        &["--version"],
        &["journal", "-V"],
        &["journal", "list", "--version"],
        &["record", "-V"],
        &["upload", "status", "-V"],
    ] {
        let o = Command::new(bin()).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
        assert!(
            stdout(&o).starts_with("seglog") && stdout(&o).contains(env!("CARGO_PKG_VERSION")),
            "{args:?}: {}",
            stdout(&o)
        );
    }
    // `record -s high -e UPPERCASE` writes what `journal -s high -e UPPERCASE` finds.
    let d = tempfile::tempdir().unwrap();
    let event = "5DE9DE8D5F3C6A7D445D75BA01CC3322";
    let o = Command::new(bin())
        .arg("--dir")
        .arg(d.path())
        .args([
            "record",
            "-c",
            "org.example/app/x",
            "-s",
            "high",
            "-e",
            event,
        ])
        .args(["-p", "payload"])
        .env_remove("SEGLOG_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = journal(d.path(), "UTC", &["-s", "high", "-e", event, "-o", "json"]);
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["event_id"], event.to_ascii_lowercase());
    assert_eq!(v["severity"], 3);
    assert_eq!(
        stdout(&journal(d.path(), "UTC", &["-s", "3", "-o", "cat"])),
        "payload\n"
    );
    assert_eq!(
        stdout(&journal(d.path(), "UTC", &["-s", "4"])),
        "-- No entries --\n",
        "-s is exact, never at least"
    );
}

/// Runs `seglog journal ARGS` under a pseudo-terminal (`script`), with `PAGER` set.
fn under_pty(dir: &Path, pager: &str, args: &str) -> Option<Output> {
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("SKIPPED: `script` (util-linux) is not installed: no pty for the pager test");
        return None;
    }
    let cmd = format!(
        "{} --dir {} journal {args}",
        bin(),
        dir.display().to_string().replace(' ', "\\ ")
    );
    Some(
        Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env("PAGER", pager)
            .env("TZ", "UTC")
            .env_remove("SEGLOG_DIR")
            .output()
            .unwrap(),
    )
}

#[test]
fn output_goes_through_the_pager_on_a_terminal_only() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    for i in 0..30 {
        w.append(
            0,
            1,
            1_700_000_000_000 + i * 1000,
            None,
            format!("line {i}").as_bytes(),
        );
    }
    let paged = d.path().join("paged.txt");
    let pager = format!("cat > {}", paged.display());
    // Not a terminal: the pager is bypassed, the records are on stdout.
    let o = Command::new(bin())
        .arg("--dir")
        .arg(d.path())
        .args(["journal", "-o", "cat"])
        .env("PAGER", &pager)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 30);
    assert!(!paged.exists(), "no pager when stdout is not a terminal");

    // A terminal: everything goes to $PAGER, nothing straight to the terminal.
    let Some(o) = under_pty(d.path(), &pager, "-o cat") else {
        return;
    };
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = std::fs::read_to_string(&paged).unwrap();
    let want: String = (0..30).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, want);
    assert!(!stdout(&o).contains("line 0"), "{}", stdout(&o));
    std::fs::remove_file(&paged).unwrap();

    // --no-pager on a terminal: straight to the terminal.
    let o = under_pty(d.path(), &pager, "-o cat --no-pager").unwrap();
    assert!(o.status.success());
    assert!(!paged.exists());
    assert!(stdout(&o).contains("line 29"), "{}", stdout(&o));

    // A pager that quits early (like `q` in less) ends the listing quietly with status 0.
    let o = under_pty(d.path(), "head -c 1 >/dev/null", "-n 30").unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(!stdout(&o).contains("error"), "{}", stdout(&o));
}
