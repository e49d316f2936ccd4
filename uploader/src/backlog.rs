//! What is waiting to be uploaded: bytes (from the segment headers' reservation counters,
//! cheap), the oldest record's time, and an exact record count (a scan, for `status`).
use std::path::Path;

use recorder::record::{RecordEntry, RecordReader};
use segment_log::format::{reserved_end, SegmentHeader, HEADER_LEN};
use segment_log::fs::{list_segments, segment_file_name, SEGMENTS_DIR, SEG_EXT};
use segment_log::{Entry, FrameKind, Position, Reader, ReaderOptions};

/// The end of the log right now: the newest segment and where its written part ends.
/// Everything committed before this call lies before it. That is its reservation counter
/// (capped at its capacity) unless the counter lies: lowered by damage or rolled back, with
/// whole frames after it, the end of those frames ([`segment_log::written_end`], what
/// `seglog journal` reads to), so a pass aimed here still delivers them.
pub fn log_end(dir: &Path) -> Option<Position> {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let segs = list_segments(&seg_dir).ok()?;
    let newest = segs.iter().rev().find(|s| !s.prepared)?;
    let (used, cap) = header_counts(&seg_dir, newest.number)?;
    Some(Position {
        segment: newest.number,
        offset: newest_end(&seg_dir, newest.number, used.min(cap), cap),
    })
}

/// Where the written part of the newest segment `n` ends, given its counter and capacity
/// (see [`log_end`]). Frames lie back to back from the header on, so a counter lowered into
/// written data has frame bytes right after it: when the first [`TAIL_CHECK`] bytes past the
/// counter are zero it is the end (one small read, the common case, every policy decision);
/// otherwise the segment's tail is read to find where the data ends.
fn newest_end(seg_dir: &Path, n: u64, counter: u64, cap: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    let path = seg_dir.join(segment_file_name(n, SEG_EXT));
    let want = TAIL_CHECK.min(cap.saturating_sub(counter)) as usize;
    let mut buf = vec![0u8; want];
    let zero_after = std::fs::File::open(&path)
        .and_then(|f| f.read_exact_at(&mut buf, counter))
        .is_ok_and(|()| buf.iter().all(|&b| b == 0));
    if zero_after {
        return counter;
    }
    segment_log::written_end(&path).map_or(counter, |w| w.max(counter))
}

/// Bytes past the newest segment's counter checked before trusting it (four pages).
const TAIL_CHECK: u64 = 16 << 10;

fn header_counts(seg_dir: &Path, n: u64) -> Option<(u64, u64)> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(seg_dir.join(segment_file_name(n, SEG_EXT))).ok()?;
    let mut b = [0u8; HEADER_LEN as usize];
    f.read_exact_at(&mut b, 0).ok()?;
    let h = SegmentHeader::decode(&b).ok()?;
    Some((reserved_end(&b).max(HEADER_LEN), h.capacity))
}

/// Bytes of frames at or after `cursor` (reserved space counts; an estimate within one frame
/// header per record of the payload bytes plus record headers).
pub fn backlog_bytes(dir: &Path, cursor: Position) -> u64 {
    let seg_dir = dir.join(SEGMENTS_DIR);
    let Ok(segs) = list_segments(&seg_dir) else {
        return 0;
    };
    let mut total = 0u64;
    let newest = segs.iter().rev().find(|s| !s.prepared).map(|s| s.number);
    for s in segs
        .iter()
        .filter(|s| !s.prepared && s.number >= cursor.segment)
    {
        let Some((used, cap)) = header_counts(&seg_dir, s.number) else {
            continue;
        };
        // The newest segment's counter may lie (rolled back): its written end counts.
        let end = if Some(s.number) == newest {
            newest_end(&seg_dir, s.number, used.min(cap), cap)
        } else {
            used.min(cap)
        };
        let start = if s.number == cursor.segment {
            cursor.offset.max(HEADER_LEN)
        } else {
            HEADER_LEN
        };
        total += end.saturating_sub(start);
    }
    total
}

/// Wall time (ms) of the first record at or after `cursor`, if any.
pub fn oldest_record_ms(dir: &Path, cursor: Position) -> Option<i64> {
    let opts = ReaderOptions {
        hole_timeout: std::time::Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let mut r = RecordReader::open(dir, cursor, opts).ok()?;
    // Bounded: a handful of non-record entries (contexts, damage) before the first record.
    for _ in 0..10_000 {
        match r.next_entry().ok()?? {
            RecordEntry::Record(v) => return Some(v.meta.wall_ms),
            _ => continue,
        }
    }
    None
}

/// Records at or after `cursor` (a scan without decoding; about 1 GB/s).
pub fn backlog_records(dir: &Path, cursor: Position) -> u64 {
    let opts = ReaderOptions {
        include_preambles: false,
        hole_timeout: std::time::Duration::from_millis(50),
        ..ReaderOptions::default()
    };
    let Ok(mut r) = Reader::open(dir, cursor, opts) else {
        return 0;
    };
    let mut n = 0;
    while let Ok(Some(e)) = r.next_entry() {
        if matches!(e, Entry::Frame(f) if f.kind == FrameKind::Record) {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::write;

    #[test]
    fn backlog_shrinks_to_zero_at_the_end_and_counts_records() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), 64 << 10, 0, 2000);
        let all = backlog_bytes(d.path(), Position::default());
        assert!(all > 2000 * 20, "{all}");
        let end = log_end(d.path()).unwrap();
        assert_eq!(backlog_bytes(d.path(), end), 0);
        assert_eq!(backlog_records(d.path(), Position::default()), 2000);
        assert_eq!(backlog_records(d.path(), end), 0);
        let t = oldest_record_ms(d.path(), Position::default()).unwrap();
        assert!((t - crate::state::now_ms()).abs() < 60_000);
        assert_eq!(oldest_record_ms(d.path(), end), None);
    }

    #[test]
    fn a_missing_log_has_no_backlog() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(backlog_bytes(d.path(), Position::default()), 0);
        assert_eq!(log_end(d.path()), None);
        assert_eq!(backlog_records(d.path(), Position::default()), 0);
    }
}
