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

/// FORMAT.md "Test vector, version 2": the same frames in a version 2 segment, then a pad.
#[test]
fn format_md_version_2_vector_decodes_exactly() {
    let mut b = crate::trim_vector_test::section_bytes("## Test vector, version 2");
    b.resize(352, 0);
    let h = SegmentHeader::decode(&b).unwrap();
    assert_eq!(h.version, 2);
    assert_eq!(h.segment, 1);
    assert_eq!(format::reserved_end(&b), 352);
    let mut enc = h.encode().to_vec();
    enc[128..136].copy_from_slice(&352u64.to_le_bytes());
    assert_eq!(enc, b[..256]);
    assert_eq!(
        b[256..312],
        vector_bytes()[256..312],
        "frames as in version 1"
    );
    assert_eq!(
        format::check_frame(&b[312..], 1, 312, 65536),
        FrameCheck::Valid {
            kind: FrameKind::Pad,
            payload_start: 16,
            payload_len: 0,
            total: 40
        }
    );
    assert_eq!(format::encode_pad(1, 312, 352), b[312..328]);
    assert_eq!(format::pad_crc(1, 312, 24), 0x57da_b91a);
    // Bound to its place: the same bytes elsewhere, or another length, do not verify.
    assert_eq!(
        format::check_frame(&b[312..], 1, 320, 65536),
        FrameCheck::Bad(format::FrameError::Checksum)
    );

    // Read as a log: the preamble and the record, nothing for the pad, no damage.
    let d = tempfile::tempdir().unwrap();
    let seg_dir = d.path().join(crate::fs::SEGMENTS_DIR);
    std::fs::create_dir(&seg_dir).unwrap();
    b.resize(65536, 0);
    std::fs::write(
        seg_dir.join(crate::fs::segment_file_name(1, crate::fs::SEG_EXT)),
        &b,
    )
    .unwrap();
    let mut r = crate::Reader::open(
        d.path(),
        crate::Position::default(),
        crate::ReaderOptions {
            include_preambles: true,
            ..crate::ReaderOptions::default()
        },
    )
    .unwrap();
    let mut seen = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        match e {
            crate::Entry::Frame(f) => seen.push((f.position.offset, f.kind)),
            crate::Entry::Damage(d) => panic!("damage in the vector: {d}"),
        }
    }
    assert_eq!(seen, [(256, FrameKind::Preamble), (280, FrameKind::Record)]);
}
