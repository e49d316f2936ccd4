//! End-to-end tests of `seglog journal verify` and of listing damaged copies of a log: for
//! each damage the test knows which records are whole, checks that `list` shows all of them
//! and that `verify` reports the damage with the right exit code (the writers and helpers
//! are in `journal`).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use segment_log::format::HEADER_LEN;
use segment_log::Position;
use serde_json::Value;

use super::journal::*;

/// A log of four-plus segments and the records in it.
fn base_log(dir: &Path) -> Vec<Rec> {
    let mut w = Writer::open(dir);
    let recs = fill(&mut w, 2000);
    assert!(recs.last().unwrap().pos.segment >= 4);
    recs
}

/// A copy of the base log, damaged by `damage`; returns the copy's directory.
fn damaged_copy(base: &Path, root: &Path, name: &str, damage: impl FnOnce(&Path)) -> PathBuf {
    let dir = root.join(name);
    copy_dir(base, &dir);
    damage(&dir);
    dir
}

/// Runs verify and list on a damaged copy: verify must exit 1 and name `code`; list must
/// show exactly the records `intact` keeps, in order.
fn check_damaged(dir: &Path, recs: &[Rec], code: &str, intact: impl Fn(&Rec) -> bool) {
    let o = seglog(dir, &["verify", "--hole-timeout", "50ms"]);
    let out = stdout(&o);
    assert_eq!(
        o.status.code(),
        Some(1),
        "verify must find damage ({code}): {out}{}",
        stderr(&o)
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("damaged: segment") && l.contains(code)),
        "{code} not in: {out}"
    );
    assert!(out.lines().last().unwrap().contains("problems"), "{out}");
    let want: Vec<Position> = recs.iter().filter(|r| intact(r)).map(|r| r.pos).collect();
    assert!(want.len() < recs.len(), "the damage must cost something");
    let o = seglog(dir, &["list", "--json", "--hole-timeout", "50ms"]);
    assert_eq!(
        positions(&json_lines(&o)),
        want,
        "list must show every undamaged record"
    );
    assert!(
        stderr(&o).contains("warning: skipped"),
        "list warns about damage: {}",
        stderr(&o)
    );
}

fn overlaps(r: &Rec, seg: u64, from: u64, to: u64) -> bool {
    r.pos.segment == seg && r.pos.offset < to && r.pos.offset + r.len > from
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut bytes = std::fs::read(path).unwrap();
    f(&mut bytes);
    std::fs::write(path, bytes).unwrap();
}

/// Deterministic garbage (xorshift), so failures reproduce.
fn garbage(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

#[test]
fn verify_passes_a_clean_log_with_status_0() {
    let d = tempfile::tempdir().unwrap();
    let recs = base_log(d.path());
    let o = seglog(d.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(&format!("{} records", recs.len())) && out.trim_end().ends_with("clean"),
        "{out}"
    );
    let v = json_lines(&seglog(d.path(), &["verify", "--json"]));
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["type"], "summary");
    assert_eq!(v[0]["problems"], 0);
    assert_eq!(v[0]["records"], recs.len());
}

#[test]
fn damaged_copies_are_reported_and_every_whole_record_still_lists() {
    let base = tempfile::tempdir().unwrap();
    let recs = base_log(base.path());
    let root = tempfile::tempdir().unwrap();
    let b = base.path();

    // Truncated: segment 2 cut in the middle of a frame.
    let cut = SEGMENT / 2 + 3;
    let dir = damaged_copy(b, root.path(), "truncated", |d| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d, 2))
            .unwrap()
            .set_len(cut)
            .unwrap();
    });
    check_damaged(&dir, &recs, "truncated", |r| {
        !(r.pos.segment == 2 && r.pos.offset + r.len > cut)
    });

    // Bit flip inside one record's payload.
    let victim = recs
        .iter()
        .find(|r| r.pos.segment == 1 && r.pos.offset > 10_000)
        .unwrap()
        .clone();
    let dir = damaged_copy(b, root.path(), "bitflip", |d| {
        edit(&seg_path(d, 1), |bytes| {
            bytes[victim.pos.offset as usize + 30] ^= 0x04
        });
    });
    check_damaged(&dir, &recs, "checksum", |r| r.pos != victim.pos);

    // A zeroed page in the middle of segment 3.
    let (from, to) = (16_384u64, 20_480u64);
    let dir = damaged_copy(b, root.path(), "zeroed", |d| {
        edit(&seg_path(d, 3), |bytes| {
            bytes[from as usize..to as usize].fill(0)
        });
    });
    check_damaged(&dir, &recs, "segment 3", |r| !overlaps(r, 3, from, to));

    // Segment 2 replaced by garbage of the same size.
    let dir = damaged_copy(b, root.path(), "garbage", |d| {
        std::fs::write(seg_path(d, 2), garbage(SEGMENT as usize, 42)).unwrap();
    });
    check_damaged(&dir, &recs, "bad segment header", |r| r.pos.segment != 2);

    // Segment 3 deleted.
    let dir = damaged_copy(b, root.path(), "missing", |d| {
        std::fs::remove_file(seg_path(d, 3)).unwrap()
    });
    check_damaged(&dir, &recs, "segment files 3..=3 are missing", |r| {
        r.pos.segment != 3
    });

    // The writer context at the start of segment 2 damaged: its records cannot be read.
    let dir = damaged_copy(b, root.path(), "context", |d| {
        edit(&seg_path(d, 2), |bytes| {
            bytes[HEADER_LEN as usize + 20] ^= 0x01
        });
    });
    check_damaged(&dir, &recs, "no context frame", |r| r.pos.segment != 2);
}

#[test]
fn a_garbage_file_after_the_newest_segment_is_reported_and_nothing_is_lost() {
    let base = tempfile::tempdir().unwrap();
    let recs = base_log(base.path());
    let last = recs.last().unwrap().pos.segment;
    std::fs::write(seg_path(base.path(), last + 3), garbage(8192, 7)).unwrap();
    let o = seglog(base.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("bad segment header"), "{out}");
    assert!(
        out.contains(&format!(
            "segment files {}..={} are missing",
            last + 1,
            last + 2
        )),
        "{out}"
    );
    let all: Vec<Position> = recs.iter().map(|r| r.pos).collect();
    assert_eq!(listed(base.path(), &[]), all);
}

#[test]
fn a_zeroed_hole_is_waited_for_then_reported_with_the_default_timeout() {
    let d = tempfile::tempdir().unwrap();
    let recs = base_log(d.path());
    // Zero exactly one whole frame: it reads as a reservation nobody committed.
    let victim = recs
        .iter()
        .find(|r| r.pos.segment == 2 && r.pos.offset > 4096)
        .unwrap()
        .clone();
    edit(&seg_path(d.path(), 2), |bytes| {
        bytes[victim.pos.offset as usize..(victim.pos.offset + victim.len) as usize].fill(0)
    });
    let o = seglog(d.path(), &["verify", "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: Vec<Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(v[0]["code"], "abandoned_reservation");
    assert_eq!(v[0]["segment"], 2);
    assert_eq!(v[0]["offset"], victim.pos.offset);
    assert_eq!(v[0]["length"], victim.len);
    assert_eq!(v.last().unwrap()["records"], recs.len() - 1);
}

#[test]
fn a_segment_from_a_newer_format_version_is_an_error_that_says_upgrade() {
    let d = tempfile::tempdir().unwrap();
    base_log(d.path());
    edit(&seg_path(d.path(), 2), |b| {
        b[8..12].copy_from_slice(&3u32.to_le_bytes());
        let crc = crc32c(&b[..96]);
        b[96..100].copy_from_slice(&crc.to_le_bytes());
    });
    for cmd in ["verify", "list", "export"] {
        let o = seglog(d.path(), &[cmd]);
        assert_eq!(o.status.code(), Some(2), "{cmd}");
        let e = stderr(&o);
        assert!(
            e.contains("was written by a newer seglog") && e.contains("upgrade seglog"),
            "{cmd}: {e}"
        );
        assert!(
            e.contains("00000000000000000002.seg"),
            "names the file: {e}"
        );
    }
}

#[test]
fn an_unreadable_segment_is_an_error_naming_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    base_log(d.path());
    let path = seg_path(d.path(), 2);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::File::open(&path).is_ok() {
        eprintln!("skipped: running with CAP_DAC_OVERRIDE (root), permissions cannot deny a read");
        return;
    }
    let o = seglog(d.path(), &["verify"]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("permission denied") && e.contains("00000000000000000002.seg"),
        "{e}"
    );
}

#[test]
fn a_segment_truncated_while_list_reads_it_is_reported_not_a_crash() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    let recs = fill(&mut w, 40_000); // ~80 segments, ~5 MB of JSON
    let last = recs.last().unwrap().pos.segment;
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(d.path())
        .args(["journal", "list", "--json", "--hole-timeout", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    // The lister is now blocked on a full pipe, partway through the log: cut every
    // segment from the second on, some to nothing, some inside the header, some mid-frame.
    for n in 2..=last {
        let len = match n % 3 {
            0 => 0,
            1 => 100,
            _ => 5000,
        };
        std::fs::OpenOptions::new()
            .write(true)
            .open(seg_path(d.path(), n))
            .unwrap()
            .set_len(len)
            .unwrap();
    }
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "no crash, no signal: {}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
    let lines: Vec<Value> = std::iter::once(first.as_str())
        .chain(rest.lines())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.len() < recs.len(),
        "the cut cost records ({} listed)",
        lines.len()
    );
    let listed = positions(&lines);
    assert!(
        listed.windows(2).all(|p| p[0] < p[1]),
        "still in position order, no duplicates"
    );
}

#[test]
fn verify_of_a_live_log_does_not_report_records_being_written() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    fill(&mut w, 100);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                w.append(
                    0,
                    1,
                    1_700_000_000_000,
                    None,
                    format!("live {i}").as_bytes(),
                );
                i += 1;
                // Steady, not flat out: a segment (~900 of these) fills every ~50 ms, so
                // verify runs across rotations without the log growing by gigabytes.
                if i.is_multiple_of(16) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            i
        })
    };
    for _ in 0..5 {
        let o = seglog(d.path(), &["verify"]);
        assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    }
    stop.store(true, Ordering::Relaxed);
    let written = writer.join().unwrap();
    assert!(written > 0);
    let v = json_lines(&seglog(d.path(), &["verify", "--json"]));
    assert_eq!(v.last().unwrap()["records"], 100 + written);
}

#[test]
fn spooled_counts_and_their_release_time_show_in_stats_and_upload_status() {
    let d = tempfile::tempdir().unwrap();
    let mut w = Writer::open(d.path());
    fill(&mut w, 10);
    let until = now_ms() + 3_600_000;
    let mut c = recorder::counters::Counters::default();
    c.spooled.insert("rate_limit_records".into(), 1_400_000);
    c.spooled_until_ms = Some(until);
    recorder::counters::add(d.path(), &c).unwrap();
    let v: Value = serde_json::from_str(&stdout(&seglog(d.path(), &["stats", "--json"]))).unwrap();
    assert_eq!(v["spooled"]["rate_limit_records"], 1_400_000);
    assert_eq!(v["spooled_until_ms"], until);
    let text = stdout(&seglog(d.path(), &["stats"]));
    let when = rfc3339(until);
    let when = &when[..19]; // to the second
    assert!(
        text.contains("spooled           1400000 held back by the rate limit")
            && text.contains(&format!("until {when}")),
        "{text}"
    );
    let status = |json: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_seglog"));
        cmd.arg("--dir")
            .arg(d.path())
            .args(["upload", "status"])
            .env_remove("SEGLOG_DIR")
            .env("XDG_STATE_HOME", d.path().join("xdg"));
        if json {
            cmd.arg("--json");
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let v: Value = serde_json::from_str(&status(true)).unwrap();
    assert_eq!(v["spooled"]["rate_limit_records"], 1_400_000);
    assert_eq!(v["spooled_until_ms"], until);
    let text = status(false);
    assert!(
        text.contains("spooled:          1400000 held back")
            && text.contains(&format!("until {when}")),
        "{text}"
    );
}
