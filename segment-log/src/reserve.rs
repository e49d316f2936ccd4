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
//!    stores the first word (marker + length) with release ordering. A reader that loads the
//!    first word with acquire ordering and sees it non-zero sees the whole frame.
//! 4. A writer that dies between 1 and 3 leaves a zeroed hole; readers resynchronise past it.

use crate::format::{self, FrameKind, FRAME_HEADER_LEN};

/// Memory holding one segment's frames, shared by all writers.
pub(crate) trait FrameMem {
    /// The segment's file size; no frame may end past it.
    fn capacity(&self) -> u64;
    /// Atomically adds `n` to the reservation counter, returning the previous value.
    fn fetch_add_reserved(&self, n: u64) -> u64;
    /// Current value of the reservation counter.
    fn load_reserved(&self) -> u64;
    /// Writes bytes `8..` of the frame at `offset`: `word1`, then `payload` and zero padding.
    /// The caller owns `offset..offset + frame_len(payload.len())` exclusively.
    fn write_body(&self, offset: u64, word1: [u8; 8], payload: &[u8]);
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

/// Reserves `len` bytes (a multiple of the frame alignment).
#[inline]
pub(crate) fn reserve<M: FrameMem + ?Sized>(mem: &M, len: u64) -> Reservation {
    let cap = mem.capacity();
    // Cheap pre-check so a full segment's counter does not keep growing.
    if mem.load_reserved() >= cap {
        return Reservation::Full { seal_at: None };
    }
    let old = mem.fetch_add_reserved(len);
    if old.saturating_add(len) <= cap {
        Reservation::At(old)
    } else if old < cap {
        Reservation::Full { seal_at: Some(old) }
    } else {
        Reservation::Full { seal_at: None }
    }
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
    let len = payload.len() as u32;
    let crc = format::frame_crc(segment, offset, len, kind, payload);
    mem.write_body(offset, format::word1(crc, kind), payload);
    mem.publish(offset, format::word0(len));
    offset + format::frame_len(u64::from(len))
}

/// Writes the seal frame at `offset` if a frame header fits before the end.
pub(crate) fn seal<M: FrameMem + ?Sized>(mem: &M, segment: u64, offset: u64) {
    if offset + FRAME_HEADER_LEN <= mem.capacity() {
        write_frame(mem, segment, offset, FrameKind::Seal, &[]);
    }
}

#[cfg(all(test, loom))]
mod loom_tests;
