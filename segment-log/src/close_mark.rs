//! The clean-close mark: 16 bytes at offset 152 of the newest segment's header that say "the
//! last writer closed this log cleanly, and the reservation counter was this value then".
//! Layout: FORMAT.md, "Clean-close mark". Version 1 readers that predate it ignore these bytes
//! (the header checksum does not cover them; they were zero).
//!
//! Why: a writer that opens the log while no other writer is alive checks the newest
//! segment's counter against what lies after it (`recovery::repair_counter`), because the
//! counter is not checksummed and damage may have lowered it. That check reads the segment's
//! whole unwritten tail (up to 16 MiB) and dominated a one-shot `seglog record`. When the mark
//! is valid and equals the counter, nobody has touched the counter since a writer closed the
//! log cleanly with that value (every writer clears the mark when it opens, before it
//! appends), so the check is skipped.
//!
//! A crashed writer leaves no mark (it was cleared when it opened), so recovery after a crash
//! always checks: a crash never makes the counter lie (a writer reserves before it writes,
//! so the counter is the truth about what a crashed writer may have written), and damage to
//! the counter changes it away from the mark.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

/// Offset of the counter value (u64) the mark was written for.
pub const OFF_COUNTER: usize = 152;
/// Offset of the tag (u64 little-endian: crc32c in the low half, [`MAGIC`] in the high half).
pub const OFF_TAG: usize = 160;
/// Marks a clean close (bytes 164..168).
pub const MAGIC: [u8; 4] = *b"CLSD";

/// The tag word that validates `counter` in segment `segment`: crc32c of segment number (u64
/// LE) ‖ counter (u64 LE) in the low 32 bits, the magic in the high 32 bits. Never zero.
pub fn tag(segment: u64, counter: u64) -> u64 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&segment.to_le_bytes());
    b[8..].copy_from_slice(&counter.to_le_bytes());
    u64::from(crc32c::crc32c(&b)) | (u64::from(u32::from_le_bytes(MAGIC)) << 32)
}

/// The 16 bytes at [`OFF_COUNTER`] of a mark for `counter` in segment `segment`.
pub fn encode(segment: u64, counter: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&counter.to_le_bytes());
    b[8..].copy_from_slice(&tag(segment, counter).to_le_bytes());
    b
}

/// The counter value of a valid mark in raw header bytes of segment `segment`.
pub fn decode(header: &[u8], segment: u64) -> Option<u64> {
    let f = header.get(OFF_COUNTER..OFF_COUNTER + 16)?;
    let counter = u64::from_le_bytes(f.get(..8)?.try_into().ok()?);
    let stored = u64::from_le_bytes(f.get(8..16)?.try_into().ok()?);
    (stored == tag(segment, counter)).then_some(counter)
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_binds_segment_and_counter() {
        let mut h = vec![0u8; 256];
        assert_eq!(decode(&h, 1), None, "zeroes are no mark");
        h[OFF_COUNTER..OFF_COUNTER + 16].copy_from_slice(&encode(7, 1056));
        assert_eq!(decode(&h, 7), Some(1056));
        assert_eq!(decode(&h, 8), None, "a header copied from another segment");
        h[OFF_COUNTER] ^= 8;
        assert_eq!(decode(&h, 7), None, "a changed counter value");
        assert_eq!(&encode(7, 1056)[12..], b"CLSD");
    }
}
