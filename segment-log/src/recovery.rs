//! Recovery decisions for the writer. Scanning (finding frames and damage) lives in
//! [`crate::scan`] and never writes; this module decides what the writer must do about it.
//!
//! The only repair a writer ever makes is to *seal* a segment whose reservation counter
//! cannot be trusted, so new frames never overwrite old ones. Damaged frames are never
//! rewritten or truncated: readers skip them by resynchronising, and `verify` reports them.

use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};
use crate::format::{FRAME_ALIGN, HEADER_LEN};
use crate::reserve::FrameMem;
use crate::segment::MappedSegment;

/// Whether the segment's reservation counter is consistent with its contents: aligned, past
/// the header, and with nothing but zeroes after it. Only meaningful when no other writer is
/// alive (the caller holds proof of that). A bit flip that lowered the counter would
/// otherwise let new appends overwrite committed frames.
pub(crate) fn counter_is_trustworthy(seg: &MappedSegment) -> Result<bool> {
    let reserved = seg.load_reserved();
    if reserved >= seg.capacity {
        return Ok(true); // sealed: nobody will write here again
    }
    if reserved < HEADER_LEN || reserved % FRAME_ALIGN != 0 {
        return Ok(false);
    }
    let file =
        std::fs::File::open(&seg.path).map_err(|e| Error::io("open segment", &seg.path, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut off = reserved;
    while off < seg.capacity {
        let want = (seg.capacity - off).min(buf.len() as u64) as usize;
        let chunk = buf.get_mut(..want).unwrap_or_default();
        let n = file
            .read_at(chunk, off)
            .map_err(|e| Error::io("read segment", &seg.path, e))?;
        if n == 0 {
            break;
        }
        if chunk.get(..n).unwrap_or_default().iter().any(|&b| b != 0) {
            return Ok(false);
        }
        off += n as u64;
    }
    Ok(true)
}
