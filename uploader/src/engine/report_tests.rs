//! The gap report of a dead-lettered batch is delivered like data: retried on 5xx and
//! connection errors, kept across a failed flush, given up only when refused in turn; the
//! stored batches always form one unbroken chain of positions.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::tests::{cfg, opts, run_pass};
use super::*;
use crate::protocol::GapReason;
use crate::testing::{Behavior, FlakyServer};
use crate::testutil::write;

const SEG: u64 = 64 << 10;

/// The stored batches cover one unbroken chain of positions (no range jumped over).
pub(super) fn assert_chain_unbroken(s: &FlakyServer) {
    let seen = s.seen();
    let mut ranges: Vec<(Position, Position)> =
        seen.batches.values().map(|b| (b.first, b.last)).collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert_eq!(w[0].1, w[1].0, "the position chain jumps: {ranges:?}");
    }
}

#[test]
fn a_gap_report_that_meets_5xx_and_a_reset_is_resent_until_acknowledged() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 2000);
    let s = FlakyServer::start(vec![
        Behavior::Ok,
        Behavior::Status(422),
        Behavior::Status(422),
        Behavior::Status(422),
        // The gap-only report of the dead-lettered batch:
        Behavior::Status(503),
        Behavior::ResetMidBody,
        Behavior::Status(500),
    ]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, w) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.dead_lettered, 1);
    assert_eq!(w.waits.len(), 5, "2 refusals and 3 report failures waited");
    let seen = s.seen();
    let report = seen
        .batches
        .values()
        .find(|b| b.gaps.iter().any(|g| g.reason == GapReason::DeadLettered))
        .expect("the gap report reached the server");
    assert_eq!(report.gaps.len(), 1);
    assert_eq!(report.gaps[0].records, 400);
    assert!(report.records.is_empty());
    let refused = seen.arrivals[0..]
        .iter()
        .filter(|&&id| id == report.id())
        .count();
    assert_eq!(refused, 1, "stored once");
    assert!(
        report
            .counters
            .contains(&("uploader.dead_lettered_records".into(), 400)),
        "the report carries the count it adds: {:?}",
        report.counters
    );
    drop(seen);
    assert_chain_unbroken(&s);
    assert_eq!(s.records().0.len(), 1600);
    assert_eq!(u.status().gaps_reported, 1);
    assert!(!u.config().upload_dir().join(GAP_REPORT_FILE).exists());
}

#[test]
fn a_pending_gap_report_survives_a_failed_flush_and_goes_first_next_pass() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 1000);
    let s = FlakyServer::start(vec![
        Behavior::Status(422),
        Behavior::Status(422),
        Behavior::Status(422),
        Behavior::Status(503),
        Behavior::Status(503),
        Behavior::Status(503),
    ]);
    let mut c = cfg(d.path(), &s.url());
    c.dead_letter_after = 3;
    let mut u = Uploader::open(c.clone()).unwrap().unwrap();
    // 3 refusals of the batch, then the report's 3 allowed attempts fail.
    let (out, _, _) = run_pass(&mut u, &opts(Some(3)));
    assert!(matches!(out, PassOutcome::Failed(_)), "{out:?}");
    assert_eq!(
        u.cursor().position.offset,
        0,
        "the cursor waits for the report"
    );
    assert!(u.config().upload_dir().join(GAP_REPORT_FILE).exists());
    drop(u);
    // A new process: the report goes first, under the refused batch's id, and is not
    // refused again as a batch (no second dead-letter entry).
    let mut u = Uploader::open(c).unwrap().unwrap();
    let (out, p, _) = run_pass(&mut u, &opts(Some(3)));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.dead_lettered, 0);
    assert_eq!(u.status().dead_lettered_batches, 1);
    let dead = crate::deadletter::list(&u.config().upload_dir());
    assert_eq!(dead.len(), 1);
    let seen = s.seen();
    let report = seen
        .batches
        .values()
        .find(|b| b.gaps.iter().any(|g| g.reason == GapReason::DeadLettered))
        .expect("the gap report reached the server");
    assert_eq!(report.id().to_hex(), dead[0].batch_id);
    assert_eq!(report.gaps[0].records, 400);
    drop(seen);
    assert_chain_unbroken(&s);
    assert_eq!(s.records().0.len(), 600);
    assert!(!u.config().upload_dir().join(GAP_REPORT_FILE).exists());
}

#[test]
fn a_gap_report_refused_in_turn_is_given_up_and_the_queue_moves_on() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 2000);
    let s = FlakyServer::start(vec![Behavior::Status(422); 6]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.dead_lettered, 1);
    assert_eq!(s.records().0.len(), 1600);
    assert_eq!(crate::deadletter::list(&u.config().upload_dir()).len(), 1);
    assert!(u.warnings.iter().any(|w| w.contains("gap report")));
    assert!(!u.config().upload_dir().join(GAP_REPORT_FILE).exists());
}

#[test]
fn a_dead_lettered_batch_reports_what_its_own_gaps_lost_in_its_range() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 4000);
    // The first batch holds the trimmed gap and 400 records; it is refused for good.
    let s = FlakyServer::start(vec![Behavior::Status(422); 3]);
    let mut c = cfg(d.path(), &s.url());
    c.retention = Some(segment_log::RetentionPolicy {
        max_bytes: Some(3 * SEG),
        max_age: None,
    });
    let mut u = Uploader::open(c).unwrap().unwrap();
    let r = u.retention().unwrap().unwrap();
    assert!(r.unconsumed_records > 0);
    let (out, p, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    assert_eq!(p.dead_lettered, 1);
    let seen = s.seen();
    let gaps: Vec<_> = seen.batches.values().flat_map(|b| b.gaps.iter()).collect();
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    assert_eq!(gaps[0].reason, GapReason::DeadLettered);
    assert_eq!(gaps[0].records, 400 + r.unconsumed_records);
    assert_eq!(gaps[0].segments, r.segments_removed);
    let stored: usize = seen.batches.values().map(|b| b.records.len()).sum();
    assert_eq!(
        stored as u64 + gaps[0].records,
        4000,
        "every record is delivered or counted in a gap"
    );
    drop(seen);
    assert_chain_unbroken(&s);
    assert_eq!(u.status().dead_lettered_records, 400 + r.unconsumed_records);
}

#[test]
fn a_damaged_pending_report_is_removed_with_a_warning_and_the_range_reported_again() {
    let d = tempfile::tempdir().unwrap();
    write(d.path(), SEG, 0, 1000);
    let s = FlakyServer::start(vec![Behavior::Status(422); 3]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    s.push(vec![Behavior::Status(503); 3]);
    let (out, _, _) = run_pass(&mut u, &opts(Some(3)));
    assert!(matches!(out, PassOutcome::Failed(_)), "{out:?}");
    drop(u);
    let path = d.path().join("upload").join(GAP_REPORT_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    // Refused again as a batch, then reported.
    s.push(vec![Behavior::Status(422); 3]);
    let mut u = Uploader::open(cfg(d.path(), &s.url())).unwrap().unwrap();
    assert!(
        u.warnings.iter().any(|w| w.contains("damaged")),
        "{:?}",
        u.warnings
    );
    let (out, _, _) = run_pass(&mut u, &opts(None));
    assert_eq!(out, PassOutcome::Complete);
    let seen = s.seen();
    let reported = seen
        .batches
        .values()
        .flat_map(|b| b.gaps.iter())
        .filter(|g| g.reason == GapReason::DeadLettered)
        .count();
    assert_eq!(reported, 1);
    drop(seen);
    assert_chain_unbroken(&s);
    assert!(!path.exists());
}

/// A report is saved in seglog's encoding whatever the wire protocol, and loaded in the
/// wire format of the current configuration (an OTLP uploader restarted with a pending
/// report sends OTLP).
#[test]
fn a_saved_report_is_loaded_in_the_configured_wire_format() {
    let d = tempfile::tempdir().unwrap();
    let public = [7u8; 32];
    let first = Position {
        segment: 1,
        offset: 64,
    };
    let last = Position {
        segment: 2,
        offset: 64,
    };
    let gap = protocol::Gap {
        reason: GapReason::DeadLettered,
        start: first,
        end: last,
        segments: 0,
        records: 5,
        bytes: 0,
        detail: "refused".into(),
    };
    let batch = protocol::Batch {
        public_log_id: public,
        first,
        last,
        gaps: vec![gap],
        ..protocol::Batch::default()
    };
    let saved = crate::batch::Built {
        id: batch.id(),
        first,
        last,
        body: protocol::encode_batch(&batch, 1).unwrap(),
        raw_len: 0,
        records: 0,
        payload_bytes: 0,
        frame_bytes: 0,
        gaps: batch.gaps.clone(),
        end: crate::batch::End::Full,
        oldest_wall_ms: None,
        last_records_before: None,
    };
    report::save(d.path(), &saved).unwrap();
    let plain = crate::batch::BodyFormat::Otlp {
        compression: crate::config::Compression::None,
    };
    let r = report::load(d.path(), &public, plain, 1).unwrap().unwrap();
    assert_eq!(r.id, batch.id());
    assert!(
        r.body.windows(10).any(|w| w == b"seglog.gap"),
        "an OTLP gap record"
    );
    assert!(!r.body.starts_with(b"SGLB"));
    let s = report::load(d.path(), &public, crate::batch::BodyFormat::Seglog, 1)
        .unwrap()
        .unwrap();
    assert_eq!(s.body, saved.body, "the seglog body as saved");
}
