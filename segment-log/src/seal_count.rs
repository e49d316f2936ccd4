//! The sealed record count: 16 bytes at offset 136 of a finished segment's header that say
//! how many record frames it holds, so retention knows the count of a segment it removes
//! without scanning it, and can write its trim-ledger entry before it unlinks the file.
//! Layout: FORMAT.md, "Sealed record count". Version 1 readers that predate it ignore these
//! bytes (the header checksum does not cover them; they were zero).
//!
//! A writer's background thread writes the count of the segment it just rotated away from,
//! after a scan that waits for reservations still being committed (as retention's count
//! does). A segment without a valid count (a crash before the scan, a damaged field) is
//! scanned when it is trimmed.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::os::unix::fs::FileExt;
use std::path::Path;

/// Offset of the count (u64) in the segment header.
pub const OFF_SEALED_RECORDS: usize = 136;
/// Offset of its checksum (u32): crc32c of segment number (u64) ‖ count (u64).
pub const OFF_SEALED_CRC: usize = 144;
/// Offset of the marker (4 bytes, [`SEALED_MAGIC`]).
pub const OFF_SEALED_MAGIC: usize = 148;
/// Marks a count as present.
pub const SEALED_MAGIC: [u8; 4] = *b"RCNT";
/// Bytes the field occupies (136..152).
pub const SEALED_LEN: usize = 16;

fn crc(segment: u64, records: u64) -> u32 {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&segment.to_le_bytes());
    b[8..].copy_from_slice(&records.to_le_bytes());
    crc32c::crc32c(&b)
}

/// The 16 bytes written at [`OFF_SEALED_RECORDS`].
pub fn encode(segment: u64, records: u64) -> [u8; SEALED_LEN] {
    let mut b = [0u8; SEALED_LEN];
    b[..8].copy_from_slice(&records.to_le_bytes());
    b[8..12].copy_from_slice(&crc(segment, records).to_le_bytes());
    b[12..].copy_from_slice(&SEALED_MAGIC);
    b
}

/// The sealed count in raw header bytes of segment `segment`, if present and valid.
pub fn decode(header: &[u8], segment: u64) -> Option<u64> {
    let f = header.get(OFF_SEALED_RECORDS..OFF_SEALED_RECORDS + SEALED_LEN)?;
    if f.get(12..16)? != SEALED_MAGIC {
        return None;
    }
    let records = u64::from_le_bytes(f.get(..8)?.try_into().ok()?);
    let stored = u32::from_le_bytes(f.get(8..12)?.try_into().ok()?);
    (stored == crc(segment, records)).then_some(records)
}

/// Reads the sealed count of the segment file `path` (number `segment`).
pub fn read(file: &std::fs::File, segment: u64) -> Option<u64> {
    let mut b = [0u8; OFF_SEALED_RECORDS + SEALED_LEN];
    file.read_exact_at(&mut b, 0).ok()?;
    decode(&b, segment)
}

/// Writes the count into the header of the segment file at `path`.
pub(crate) fn write(path: &Path, segment: u64, records: u64) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all_at(&encode(segment, records), OFF_SEALED_RECORDS as u64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn a_count_binds_its_segment_and_any_flipped_bit_makes_it_absent() {
        let mut h = [0u8; 256];
        assert_eq!(decode(&h, 3), None, "a zero field is no count");
        h[136..152].copy_from_slice(&encode(3, 421));
        assert_eq!(decode(&h, 3), Some(421));
        assert_eq!(decode(&h, 4), None, "copied from another segment");
        for bit in 136 * 8..152 * 8 {
            let mut c = h;
            c[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(decode(&c, 3), None, "bit {bit}");
        }
    }
}
