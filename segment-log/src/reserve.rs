//! The multi-writer reservation protocol, written once over an abstract frame memory so the
//! same code runs on a mapped segment ([`crate::segment`]) and under loom (`tests` below).
//!
//! Protocol (FORMAT.md, "Concurrent append"):
//! 1. A writer reserves `len` bytes with one `fetch_add` on the shared counter in the segment
//!    header. The returned old value is its frame offset; ranges never overlap.
//! 2. If the reservation ends past the capacity, the segment is full. The one writer whose
//!    reservation *starts* inside the segment writes a seal frame there (if 16 bytes remain),
//!    then every such writer rotates. Later reservations start at or past the capacity.
//! 3. The writer fills bytes 8.. of its frame (checksum, kind, payload, zero padding), then
//!    stores the first word (marker + length) with release ordering. A reader of the mapping
//!    that loaded the first word with acquire ordering would see the whole frame; the real
//!    readers use `pread`, which gives no such ordering, so they rely on the checksum instead
//!    and treat a frame that fails it near the live end as not settled yet (see
//!    [`crate::scan`]).
//! 4. A writer that dies between 1 and 3 leaves a zeroed hole; readers resynchronise past it.
//!
//! The counter lives in a file any process of the log's owner can write, so its value is
//! outside data: [`reserve`] checks, in O(1), that a reservation it hands out is 8-aligned,
//! starts past the header, ends inside the segment and covers unwritten (zero) first and last
//! words. A counter that fails is damaged: the segment is forced full and the writer rotates,
//! so no write ever lands outside the segment, unaligned, or over a committed frame's first
//! or last word.

use crate::format::{self, FrameKind, FRAME_ALIGN, FRAME_HEADER_LEN, HEADER_LEN};

/// Memory holding one segment's frames, shared by all writers.
pub(crate) trait FrameMem {
    /// The segment's file size; no frame may end past it.
    fn capacity(&self) -> u64;
    /// Atomically adds `n` to the reservation counter, returning the previous value.
    fn fetch_add_reserved(&self, n: u64) -> u64;
    /// Current value of the reservation counter.
    fn load_reserved(&self) -> u64;
    /// Raises the counter to at least the capacity: nobody reserves here again.
    fn force_full(&self);
    /// The 8-byte word at `offset` (8-aligned, `HEADER_LEN <= offset`, `offset + 8 <=
    /// capacity`; callers check), loaded relaxed: zero means unwritten.
    fn load_word(&self, offset: u64) -> u64;
    /// Writes bytes `8..` of the frame at `offset`: `word1`, then the payload `head` ‖
    /// `body` and zero padding. The caller owns `offset..offset + frame_len(head.len() +
    /// body.len())` exclusively.
    fn write_body(&self, offset: u64, word1: [u8; 8], head: &[u8], body: &[u8]);
    /// Stores the first word of the frame at `offset` with release ordering.
    fn publish(&self, offset: u64, word0: u64);
}

/// Outcome of a reservation attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reservation {
    /// The caller owns `len` bytes from this offset.
    At(u64),
    /// The segment is full. `seal_at` is set for exactly one writer: the one whose reservation
    /// crossed the end; it must seal the segment at that offset.
    Full { seal_at: Option<u64> },
}

/// Reserves `len` bytes (a multiple of the frame alignment, at least one frame header).
#[inline]
pub(crate) fn reserve<M: FrameMem + ?Sized>(mem: &M, len: u64) -> Reservation {
    let cap = mem.capacity();
    // Cheap pre-check so a full segment's counter does not keep growing (and a counter
    // damaged to a huge value is never incremented past u64::MAX).
    if mem.load_reserved() >= cap {
        return Reservation::Full { seal_at: None };
    }
    let old = mem.fetch_add_reserved(len);
    if old >= cap {
        return Reservation::Full { seal_at: None };
    }
    let end = old.saturating_add(len);
    // What we may write: the whole reservation, or a seal frame's 16 bytes at `old`.
    let writes_to = if end <= cap {
        end
    } else {
        old.saturating_add(FRAME_HEADER_LEN).min(cap)
    };
    if !counter_is_plausible(mem, old, writes_to) {
        mem.force_full();
        return Reservation::Full { seal_at: None };
    }
    if end <= cap {
        Reservation::At(old)
    } else {
        Reservation::Full { seal_at: Some(old) }
    }
}

/// Whether `old..writes_to`, handed out by the counter, can be a true reservation: aligned,
/// past the header, and its first and last words unwritten. O(1): two loads of words this
/// writer is about to write anyway. A failing counter is damaged (a bit flip, a stray
/// write), and trusting it would write out of bounds, misaligned, or over committed frames.
#[inline]
fn counter_is_plausible<M: FrameMem + ?Sized>(mem: &M, old: u64, writes_to: u64) -> bool {
    if old < HEADER_LEN || !old.is_multiple_of(FRAME_ALIGN) {
        return false;
    }
    if writes_to < old + FRAME_ALIGN {
        return true; // less than a word left before the end: nothing will be written
    }
    let last = (writes_to - FRAME_ALIGN) & !(FRAME_ALIGN - 1);
    mem.load_word(old) == 0 && mem.load_word(last) == 0
}

/// Fills and publishes one frame at `offset`. Returns the offset after it.
#[inline]
pub(crate) fn write_frame<M: FrameMem + ?Sized>(
    mem: &M,
    segment: u64,
    offset: u64,
    kind: FrameKind,
    payload: &[u8],
) -> u64 {
    write_frame_parts(mem, segment, offset, kind, &[], payload)
}

/// [`write_frame`] for a payload given in two parts, `head` ‖ `body` (a record header
/// encoded on the stack and the caller's bytes: no copy into a buffer first).
#[inline]
pub(crate) fn write_frame_parts<M: FrameMem + ?Sized>(
    mem: &M,
    segment: u64,
    offset: u64,
    kind: FrameKind,
    head: &[u8],
    body: &[u8],
) -> u64 {
    let len = (head.len() + body.len()) as u32;
    let crc = crate::crc::frame_crc_parts(segment, offset, len, kind as u8, head, body);
    mem.write_body(offset, format::word1(crc, kind), head, body);
    mem.publish(offset, format::word0(len));
    offset + format::frame_len(u64::from(len))
}

/// Writes a pad frame over `offset..end` (the unused rest of a chunk, FORMAT.md "Version
/// 2"): its 16-byte header only, checksummed over the position prefix; the bytes after it
/// stay unwritten. Nothing is written when `end - offset < 16` (the chunk rules never leave
/// 8 bytes, so that means `offset == end`).
pub(crate) fn write_pad<M: FrameMem + ?Sized>(mem: &M, segment: u64, offset: u64, end: u64) {
    if offset + FRAME_HEADER_LEN > end {
        return;
    }
    let len = (end - offset - FRAME_HEADER_LEN) as u32;
    let crc = format::pad_crc(segment, offset, len);
    mem.write_body(offset, format::word1(crc, FrameKind::Pad), &[], &[]);
    mem.publish(offset, format::word0(len));
}

/// Writes the seal frame at `offset` if a frame header fits before the end.
pub(crate) fn seal<M: FrameMem + ?Sized>(mem: &M, segment: u64, offset: u64) {
    if offset + FRAME_HEADER_LEN <= mem.capacity() {
        write_frame(mem, segment, offset, FrameKind::Seal, &[]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
