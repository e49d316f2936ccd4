//! `seglog journal list --follow` keeps reporting skipped data after its first 10 warnings:
//! a summary line with counts follows every 1000 further skips (or every 10 s).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use segment_log::{Log, Options};

#[test]
fn follow_summarises_skips_past_the_first_ten_warnings_with_counts() {
    let d = tempfile::tempdir().unwrap();
    let log = Log::open(
        d.path(),
        Options {
            segment_size: 1 << 20,
            max_record_size: 4096,
            prepare_ahead: false,
            ..Options::default()
        },
    )
    .unwrap();
    // Frames that hold no record: each is one skipped, unreadable record for the journal.
    for i in 0..1_100u32 {
        log.append(format!("\u{1}not a record {i:04}").as_bytes())
            .unwrap();
    }
    drop(log);
    let mut child = Command::new(env!("CARGO_BIN_EXE_seglog"))
        .arg("--dir")
        .arg(d.path())
        .args(["journal", "list", "--follow", "--poll-interval", "20ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines() {
            if tx.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let summary = loop {
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(l) if l.contains("... and ") => break l,
            Ok(l) => lines.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("no summary past the first warnings; stderr: {lines:#?}");
            }
        }
    };
    child.kill().unwrap();
    child.wait().unwrap();
    let skipped = lines.iter().filter(|l| l.contains("skipped")).count();
    assert_eq!(skipped, 10, "{lines:#?}");
    assert!(
        summary.contains("... and 1000 more skipped ranges or unreadable records"),
        "{summary}"
    );
}
