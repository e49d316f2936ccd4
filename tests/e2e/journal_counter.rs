//! `seglog journal` against a real segment whose reservation counter lies (issue 11 item 4)
//! and against a segment written by a newer format version. The log is written by the real
//! binary (`seglog probe pipe`), damaged by flipping one bit, and read back by the binary.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use segment_log::format::OFF_RESERVED_END;

use super::journal::crc32c;

fn seglog(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run seglog")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join("segments")
        .join(segment_log::fs::segment_file_name(n, "seg"))
}

/// Writes `n` lines with `seglog probe pipe` (one process, which exits: no writer alive).
fn piped_log(dir: &Path, n: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(dir)
        .args(["probe", "pipe", "--class", "org.test/pipe/line"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: String = (0..n).map(|i| format!("line {i:05}\n")).collect();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", text(&o.stderr));
}

fn counter(seg: &Path) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open(seg)
        .unwrap()
        .read_exact_at(&mut b, OFF_RESERVED_END as u64)
        .unwrap();
    u64::from_le_bytes(b)
}

fn flip_bit(seg: &Path, bit: u32) {
    let v = counter(seg) ^ (1u64 << bit);
    std::fs::OpenOptions::new()
        .write(true)
        .open(seg)
        .unwrap()
        .write_all_at(&v.to_le_bytes(), OFF_RESERVED_END as u64)
        .unwrap();
}

fn listed(dir: &Path) -> usize {
    let o = seglog(dir, &["journal", "list", "--hole-timeout", "50ms"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    text(&o.stdout).lines().count()
}

/// Issue 11 item 4: one bit flip that lowered the counter of the newest segment made
/// `list`/`export`/`stats` drop every record after it and `verify` exit 0.
#[test]
fn a_rolled_back_counter_hides_no_record_and_verify_names_it() {
    let d = tempfile::tempdir().unwrap();
    piped_log(d.path(), 2000);
    let seg = seg_path(d.path(), 1);
    let before = counter(&seg);
    assert_eq!(listed(d.path()), 2000);
    let o = seglog(d.path(), &["journal", "verify"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stdout));

    // The highest set bit of the counter: the flip lowers it the most.
    let bit = 63 - before.leading_zeros();
    flip_bit(&seg, bit);
    assert!(counter(&seg) < before);

    assert_eq!(listed(d.path()), 2000, "list must show every record");
    let o = seglog(d.path(), &["journal", "export", "--hole-timeout", "50ms"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(text(&o.stdout).lines().count(), 2000, "export");
    let o = seglog(
        d.path(),
        &["journal", "stats", "--json", "--hole-timeout", "50ms"],
    );
    let stats: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(stats["records"], 2000, "{stats}");

    let o = seglog(d.path(), &["journal", "verify", "--hole-timeout", "50ms"]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("reservation counter")
            && out.contains("below the end of the last whole frame"),
        "{out}"
    );
    assert!(
        out.contains("00000000000000000001.seg"),
        "names the file: {out}"
    );
    let o = seglog(
        d.path(),
        &["journal", "verify", "--json", "--hole-timeout", "50ms"],
    );
    let codes: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(codes[0]["code"], "counter_below_frames", "{codes:?}");
    assert_eq!(codes.last().unwrap()["records"], 2000);
}

/// An unaligned counter or one inside the header is reported too (and hides nothing).
#[test]
fn an_unaligned_or_too_small_counter_is_reported() {
    let d = tempfile::tempdir().unwrap();
    piped_log(d.path(), 300);
    let seg = seg_path(d.path(), 1);
    for bad in [counter(&seg) | 3, 16] {
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .write_all_at(&u64::to_le_bytes(bad), OFF_RESERVED_END as u64)
            .unwrap();
        assert_eq!(listed(d.path()), 300, "counter {bad}");
        let o = seglog(
            d.path(),
            &["journal", "verify", "--json", "--hole-timeout", "50ms"],
        );
        let out = text(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "counter {bad}: {out}");
        assert!(out.contains("\"code\":\"bad_counter\""), "{out}");
    }
}

/// FORMAT.md: readers report a newer-version segment as `bad_header` ("upgrade seglog").
/// `verify` used to exit 2 with no report at all; now it reports the file
/// (`unsupported_version`), checks the rest, and exits 2 (README exit codes).
#[test]
fn verify_reports_a_newer_version_segment_by_file_and_exits_2() {
    let d = tempfile::tempdir().unwrap();
    piped_log(d.path(), 50);
    let seg = seg_path(d.path(), 1);
    let mut head = [0u8; 100];
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&seg)
        .unwrap();
    f.read_exact_at(&mut head, 0).unwrap();
    head[8..12].copy_from_slice(&3u32.to_le_bytes());
    let crc = crc32c(&head[..96]);
    head[96..100].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&head, 0).unwrap();
    let o = seglog(d.path(), &["journal", "verify", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["code"], "unsupported_version", "{out}");
    assert!(
        first["file"]
            .as_str()
            .unwrap()
            .ends_with("00000000000000000001.seg"),
        "{out}"
    );
    assert!(
        out.lines().last().unwrap().contains("\"type\":\"summary\""),
        "{out}"
    );
    let e = text(&o.stderr);
    assert!(
        e.contains("was written by a newer seglog") && e.contains("upgrade seglog"),
        "{e}"
    );
}

/// The newest segment of the log in `dir`: its number and file.
fn newest_segment(dir: &Path) -> (u64, PathBuf) {
    let n = segment_log::fs::live_segments(&dir.join("segments"))
        .unwrap()
        .into_iter()
        .max()
        .unwrap();
    (n, seg_path(dir, n))
}

/// The uploader after a counter rollback (found by the torture harness): `upload flush`
/// aimed at the end of the log as the lowered counter of the newest segment said, so the
/// records after it were neither uploaded nor reported as a gap. It must deliver them all.
#[test]
fn upload_flush_delivers_the_records_after_a_rolled_back_counter() {
    use crate::support::upload_env::{code, collector, stored_records, text as out, Env};
    let tmp = tempfile::tempdir().unwrap();
    let server = collector(tmp.path());
    let e = Env::new(&format!("http://{}", server.local_addr()), "");
    e.write(0, 2000);
    let (_, seg) = newest_segment(&e.dir);
    let before = counter(&seg);
    // The highest set bit that still leaves the counter past the header.
    let bit = (3..64)
        .rev()
        .find(|&b| before & (1u64 << b) != 0 && (before & !(1u64 << b)) >= 4096)
        .expect("a bit to clear");
    flip_bit(&seg, bit);
    assert!(counter(&seg) < before);

    let o = e.run(&["upload", "flush", "--timeout", "20s"]);
    assert_eq!(code(&o), 0, "{}", out(&o));
    let base = format!("http://{}", server.local_addr());
    assert_eq!(stored_records(&base), 2000, "{}", out(&o));
    let st = e.status();
    assert_eq!(st["backlog"]["records"], 0, "{st}");
}

/// The same with part of the newest segment already uploaded: the counter rolled back to
/// below the uploader's cursor, or between the cursor and the end.
#[test]
fn upload_flush_after_a_counter_rolled_back_around_the_cursor_delivers_everything() {
    use crate::support::upload_env::{code, collector, stored_records, text as out, Env};
    for below_cursor in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let server = collector(tmp.path());
        let base = format!("http://{}", server.local_addr());
        let e = Env::new(&base, "");
        e.write(0, 1500);
        let o = e.run(&["upload", "flush", "--timeout", "20s"]);
        assert_eq!(code(&o), 0, "{}", out(&o));
        // "segment:offset"
        let cursor = e.status()["cursor"].as_str().unwrap_or_default().to_owned();
        let (cseg, coff) = cursor.split_once(':').expect("cursor segment:offset");
        let (cseg, coff): (u64, u64) = (cseg.parse().unwrap(), coff.parse().unwrap());
        e.write(1500, 1800);
        let (newest, seg) = newest_segment(&e.dir);
        let end = counter(&seg);
        let at = (cseg == newest).then_some(coff);
        // Below the cursor (or, when the cursor is in an older segment, near the start), or
        // half-way between the cursor and the end.
        let new = match (below_cursor, at) {
            (true, Some(c)) => (c / 2).max(256) & !7,
            (true, None) => 256 + 64,
            (false, Some(c)) => (c + (end - c) / 2) & !7,
            (false, None) => (256 + (end - 256) / 2) & !7,
        };
        assert!(new < end, "{new} {end} {cursor}");
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .write_all_at(&new.to_le_bytes(), OFF_RESERVED_END as u64)
            .unwrap();
        let o = e.run(&["upload", "flush", "--timeout", "20s"]);
        assert_eq!(code(&o), 0, "{}", out(&o));
        assert_eq!(
            stored_records(&base),
            1800,
            "below the cursor {below_cursor}: cursor {cursor}, counter {end} -> {new}: {}",
            out(&o)
        );
    }
}
