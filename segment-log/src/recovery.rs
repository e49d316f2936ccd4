//! Recovery decisions for the writer. Scanning (finding frames and damage) lives in
//! [`crate::scan`] and never writes; this module decides what the writer must do about it.
//!
//! The only repair a writer ever makes is to *raise* a reservation counter that cannot be
//! trusted (past the written data, or to the capacity: sealed), so new frames never
//! overwrite old ones. Damaged frames are never
//! rewritten or truncated: readers skip them by resynchronising, and `verify` reports them.

use std::os::unix::fs::FileExt;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FRAME_ALIGN, FRAME_HEADER_LEN, HEADER_LEN};
use crate::reserve::FrameMem;
use crate::scan::{HolePolicy, SegmentScanner, Step};
use crate::segment::MappedSegment;

/// Makes the newest segment's reservation counter safe to append after. Only called when no
/// other writer is alive (the caller holds proof of that). A counter that is not 8-aligned,
/// lies inside the header, or has non-zero bytes after it (damaged or rolled back: it is not
/// checksummed) would let new appends overwrite committed frames. It is raised, never
/// lowered. When everything past it is whole, checksummed frames (a rolled-back counter), it
/// is raised to the end of the written data (8-aligned), so new frames follow the old ones
/// and the unwritten tail is not left below the counter as a false "abandoned reservation".
/// Otherwise (garbage past the counter, or no room for a frame after the data) the segment
/// is sealed (counter = capacity), so new frames never interleave with garbage.
pub(crate) fn repair_counter(seg: &MappedSegment) -> Result<()> {
    let reserved = seg.load_reserved();
    if reserved >= seg.capacity {
        return Ok(()); // sealed: nobody will write here again
    }
    let mut safe = reserved.max(HEADER_LEN).next_multiple_of(FRAME_ALIGN);
    let data_end = last_data_end(seg, reserved.max(HEADER_LEN))?;
    if let Some(end) = data_end {
        safe = safe.max(end.next_multiple_of(FRAME_ALIGN));
    }
    if reserved < HEADER_LEN && data_end.is_none() {
        // Damage, never a rollback (a segment gets its name only once its header, counter =
        // HEADER_LEN, is written), and nothing after the header to say what the counter
        // covered: the same damage may have zeroed frames. Raised to the header, the segment
        // would read as clean and empty, hiding that loss; sealed (counter = capacity, no
        // seal frame), readers scan it whole and report the zeroes as a hole.
        seg.seal_counter();
        return Ok(());
    }
    if safe == reserved {
        // Nothing written past the counter; but a counter lowered into the zero rest of a
        // pad frame (format version 2) has no data after it either, and appending there
        // would put frames inside the pad's range (readers skip to its end and would land
        // inside a frame). The scan (from the header: this runs only after a crash or
        // damage) ends after the whole pad.
        if let Some(end) = whole_frames_end(seg, reserved).filter(|&e| e > reserved) {
            if end + FRAME_HEADER_LEN <= seg.capacity {
                seg.raise_counter(end);
            } else {
                seg.seal_counter();
            }
        }
        return Ok(());
    }
    match whole_frames_end(seg, reserved) {
        // A pad frame (format version 2) ends past its last non-zero byte (its header):
        // new frames go after the whole pad, never inside the range it covers.
        Some(end) if end.max(safe) + FRAME_HEADER_LEN <= seg.capacity => {
            seg.raise_counter(end.max(safe));
        }
        _ => seg.seal_counter(),
    }
    Ok(())
}

/// Bytes past the counter that a writer opening a cleanly closed log still checks
/// ([`unwritten_after`]), instead of the whole rest of the segment: four pages, enough for
/// what lands there after a clean close (a torn or stray write next to the data, frames whose
/// counter update was lost), one `pread` of a few microseconds.
pub(crate) const CHECK_AFTER_MARK: u64 = 16 << 10;

/// Whether `counter` is a plausible reservation end (8-aligned, past the header) with
/// [`CHECK_AFTER_MARK`] bytes after it (or up to the capacity) all zero. One `pread`.
pub(crate) fn unwritten_after(seg: &MappedSegment, counter: u64) -> bool {
    if counter < HEADER_LEN || !counter.is_multiple_of(FRAME_ALIGN) {
        return false;
    }
    let mut buf = [0u8; CHECK_AFTER_MARK as usize];
    let len = CHECK_AFTER_MARK.min(seg.capacity.saturating_sub(counter)) as usize;
    let Some(buf) = buf.get_mut(..len) else {
        return false;
    };
    match seg.file().read_exact_at(buf, counter) {
        Ok(()) => {
            let words = buf.chunks_exact(8);
            words.remainder().iter().all(|&b| b == 0) && words.into_iter().all(|w| w == [0u8; 8])
        }
        Err(_) => false,
    }
}

/// The offset after the last non-zero byte in `from..capacity`, if any.
fn last_data_end(seg: &MappedSegment, from: u64) -> Result<Option<u64>> {
    let file =
        std::fs::File::open(seg.path()).map_err(|e| Error::io("open segment", seg.path(), e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = from;
    let mut end = None;
    while off < seg.capacity {
        let want = (seg.capacity - off).min(buf.len() as u64) as usize;
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = file
            .read_at(chunk, off)
            .map_err(|e| Error::io("read segment", seg.path(), e))?;
        if n == 0 {
            break;
        }
        if let Some(k) = chunk
            .get(..n)
            .unwrap_or_default()
            .iter()
            .rposition(|&b| b != 0)
        {
            end = Some(off + k as u64 + 1);
        }
        off += n as u64;
    }
    Ok(end)
}

/// Where the frames of the segment end, if a scan (no writer alive) finds no damage reaching
/// past `counter`: the bytes after a lying counter are whole frames, not garbage. `None`
/// otherwise.
fn whole_frames_end(seg: &MappedSegment, counter: u64) -> Option<u64> {
    let holes = HolePolicy {
        quiescent: true,
        probe: None,
        timeout: Duration::ZERO,
    };
    let mut sc = SegmentScanner::open(seg.path(), seg.number, 1 << 20, holes).ok()?;
    loop {
        match sc.next_step() {
            Ok(Step::Frame { .. }) => {}
            Ok(Step::Damage(d)) if d.offset + d.len <= counter => {} // older damage, below it
            Ok(Step::Damage(_)) | Err(_) => return None,
            Ok(Step::Pending | Step::End) => return Some(sc.pos),
        }
    }
}
