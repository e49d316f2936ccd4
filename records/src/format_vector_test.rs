//! Decodes the record test vector in FORMAT.md ("## Records") byte for byte, so the
//! record section of the spec and the codec agree.
use super::*;
use sha2::{Digest, Sha256};

const SPEC: &str = include_str!("../../FORMAT.md");

fn sample_context() -> Context {
    Context {
        slot: 3,
        generation: 1,
        record_format_version: 2,
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        boot_id: core::array::from_fn(|i| i as u8),
        arch: "x86_64".into(),
        host_type: "QEMU|Standard PC|pc-1".into(),
        build: "12".into(),
        system_name: "debian".into(),
        kernel_version: "6.1.0".into(),
        board_name: "blank|blank".into(),
        cpu_model: "Virtual CPU".into(),
        bios_version: "1.16".into(),
        base_wall_ms: 1_700_000_000_000,
        base_boot_ms: 5_000,
        classifications: vec![
            Classification::new("org.example/crash/segfault").unwrap(),
            Classification::new("org.example/journal/line").unwrap(),
        ],
        extra: vec![("k".into(), "v".into())],
    }
}

/// The bytes of each ```text block of FORMAT.md's "## Records" section, in order.
fn blocks() -> Vec<Vec<u8>> {
    let section = SPEC
        .split("\n## Records (recorder layer)")
        .nth(1)
        .expect("FORMAT.md has a records section");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut out = Vec::new();
    for block in section.split("```text").skip(1) {
        let body = block.split("```").next().unwrap_or_default();
        let mut bytes = Vec::new();
        for line in body.lines() {
            let Some((off, hexes)) = line.split_once(": ") else {
                continue;
            };
            let off = usize::from_str_radix(off.trim(), 16).unwrap();
            assert_eq!(off, bytes.len(), "offsets in FORMAT.md run on");
            bytes.extend(
                hexes
                    .split_whitespace()
                    .map(|h| u8::from_str_radix(h, 16).unwrap()),
            );
        }
        out.push(bytes);
    }
    out
}

#[test]
fn format_md_record_vectors_decode_exactly() {
    let b = blocks();
    assert_eq!(b.len(), 3, "context, layout 2, layout 1");
    let ctx = decode_context(&b[0]).unwrap();
    assert_eq!(ctx, sample_context());
    assert_eq!(
        encode_context(&ctx).unwrap(),
        b[0],
        "re-encodes to the same bytes"
    );

    let (h2, p2) = decode_record(&b[1]).unwrap();
    assert_eq!(p2, b"hi");
    assert_eq!(
        h2,
        RecordHeader {
            slot: 3,
            class: ClassRef::Index(1),
            severity: Severity::HIGH,
            time: RecordTime::Relative {
                boot_delta_ms: 1500,
                wall_skew_ms: -3,
            },
            event_id: Some(EventId::parse("5de9de8d5f3c6a7d445d75ba01cc3322").unwrap()),
            hold_ms: Some(60_000),
        }
    );
    let mut enc = Vec::new();
    encode_record(&h2, p2, &mut enc).unwrap();
    assert_eq!(enc, b[1]);
    let r = h2.resolve(&ctx).unwrap();
    assert_eq!(r.classification.as_str(), "org.example/journal/line");
    assert_eq!((r.wall_ms, r.boot_ms), (1_700_000_001_497, 6_500));
    assert_eq!(r.hold_until_wall_ms, Some(1_700_000_061_497));

    let (h1, p1) = decode_record(&b[2]).unwrap();
    assert_eq!(p1, b"hi");
    assert_eq!(
        h1,
        RecordHeader {
            slot: 3,
            class: ClassRef::Inline(Classification::new("org.example/a/b").unwrap()),
            severity: Severity::LOW,
            time: RecordTime::Absolute {
                wall_ms: 1_700_000_001_500,
                boot_ms: 6_500,
            },
            event_id: None,
            hold_ms: None,
        }
    );
    let r1 = h1.resolve(&ctx).unwrap();
    assert_eq!(
        (r1.wall_ms, r1.boot_ms, r1.hold_until_wall_ms),
        (1_700_000_001_500, 6_500, None)
    );

    let public = segment_log::LogId::from_private([0; 32]).public();
    let id = RecordId::derive(
        &public,
        Position {
            segment: 1,
            offset: 280,
        },
    );
    assert!(
        SPEC.contains(&format!("has id `{id}`")),
        "record id {id} in FORMAT.md"
    );
    // The id rule as FORMAT.md states it, from sha256 directly.
    let mut h = Sha256::new();
    h.update(public);
    h.update(1u64.to_le_bytes());
    h.update(280u64.to_le_bytes());
    assert_eq!(id.to_string(), hex::encode(&h.finalize()[..16]));
}
