//! Decodes the hex test vector in FORMAT.md byte for byte, so the spec and the code agree.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::format::{self, FrameCheck, FrameKind, SegmentHeader};
use crate::LogId;

/// The bytes of the "## Test vector" section's `offset: hex hex ...` lines, placed at their
/// offsets (the one markdown hex reader, [`crate::trim_vector_test::section_bytes`]).
fn vector_bytes() -> Vec<u8> {
    let mut file = crate::trim_vector_test::section_bytes("## Test vector");
    file.resize(file.len().max(312), 0);
    file
}

#[test]
fn format_md_test_vector_decodes_exactly() {
    let b = vector_bytes();
    let h = SegmentHeader::decode(&b).unwrap();
    assert_eq!(h.version, 1);
    assert_eq!(h.segment, 1);
    assert_eq!(h.capacity, 65536);
    assert_eq!(h.created_wall_ns, 1_700_000_000_000_000_000);
    assert_eq!(h.created_boot_ns, 5_000_000_000);
    assert_eq!(h.boot_id, core::array::from_fn::<u8, 16, _>(|i| i as u8));
    assert_eq!(h.log_id, LogId::from_private([0; 32]).public());
    assert_eq!(format::reserved_end(&b), 312);
    // Re-encoding gives the same header bytes (with the counter as in the vector).
    let mut enc = h.encode().to_vec();
    enc[128..136].copy_from_slice(&312u64.to_le_bytes());
    assert_eq!(enc, b[..256]);

    let f1 = format::check_frame(&b[256..], 1, 256, 65536);
    assert_eq!(
        f1,
        FrameCheck::Valid {
            kind: FrameKind::Preamble,
            payload_start: 16,
            payload_len: 6,
            total: 24
        }
    );
    assert_eq!(&b[256 + 16..256 + 22], b"ctx-v1");
    let f2 = format::check_frame(&b[280..], 1, 280, 65536);
    assert_eq!(
        f2,
        FrameCheck::Valid {
            kind: FrameKind::Record,
            payload_start: 16,
            payload_len: 13,
            total: 32
        }
    );
    assert_eq!(&b[280 + 16..280 + 29], b"hello, seglog");
    assert_eq!(
        format::encode_frame(1, 280, FrameKind::Record, b"hello, seglog"),
        b[280..312]
    );
}
