//! Tests of the wire protocol, including the PROTOCOL.md test vector (read from the file
//! itself, so the document cannot drift from the code).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]
use super::*;
use proptest::prelude::*;

const SPEC: &str = include_str!("../../PROTOCOL.md");

/// The hex block that follows `<!-- test-vector:NAME -->` in PROTOCOL.md.
fn spec_hex(name: &str) -> Vec<u8> {
    let marker = format!("<!-- test-vector:{name} -->");
    let after = SPEC
        .split_once(&marker)
        .map(|(_, a)| a)
        .expect("marker present in PROTOCOL.md");
    let block = after
        .split_once("```text")
        .map(|(_, a)| a)
        .expect("block after marker");
    let block = block
        .split_once("```")
        .map(|(b, _)| b)
        .expect("closed block");
    let hex: String = block.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    hex::decode(hex).expect("valid hex")
}

pub(crate) fn vector_private_id() -> [u8; 32] {
    std::array::from_fn(|i| i as u8)
}

pub(crate) fn vector_batch() -> Batch {
    let public_log_id: [u8; 32] = Sha256::digest(vector_private_id()).into();
    Batch {
        public_log_id,
        first: Position {
            segment: 3,
            offset: 256,
        },
        last: Position {
            segment: 4,
            offset: 320,
        },
        contexts: vec![Context {
            fields: vec![
                (
                    "machine_id".into(),
                    "0123456789abcdef0123456789abcdef".into(),
                ),
                ("build".into(), "42".into()),
                ("kernel".into(), "6.1.0".into()),
            ],
        }],
        gaps: vec![Gap {
            reason: GapReason::CorruptFrame,
            start: Position {
                segment: 3,
                offset: 320,
            },
            end: Position {
                segment: 3,
                offset: 368,
            },
            segments: 0,
            records: 0,
            bytes: 48,
            detail: "crc_mismatch".into(),
        }],
        counters: vec![("recorder.dropped.rate_limit".into(), 2)],
        records: vec![
            Record {
                position: Position {
                    segment: 3,
                    offset: 288,
                },
                context: 0,
                classification: "org.example/hello/world".into(),
                severity: 1,
                wall_ms: 1_700_000_000_000,
                boot_ms: 5_000_000,
                event_id: None,
                payload: b"hello".to_vec(),
            },
            Record {
                position: Position {
                    segment: 4,
                    offset: 256,
                },
                context: 0,
                classification: "org.example/hello/world".into(),
                severity: 2,
                wall_ms: 1_700_000_000_002,
                boot_ms: 5_000_001,
                event_id: Some(std::array::from_fn(|i| i as u8)),
                payload: b"world!".to_vec(),
            },
        ],
    }
}

/// Prints the test vector for PROTOCOL.md:
/// `cargo test -p uploader print_test_vector -- --ignored --nocapture`.
#[test]
#[ignore = "prints the PROTOCOL.md test vector"]
fn print_test_vector() {
    let b = vector_batch();
    let raw = encode_batch_raw(&b).unwrap();
    let body = compress(&raw, 3).unwrap();
    let lines = |v: &[u8]| {
        v.chunks(16)
            .map(|c| {
                c.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    println!(
        "private-id {}\npublic-id {}\nid {}\npath {}",
        hex::encode(vector_private_id()),
        hex::encode(b.public_log_id),
        b.id(),
        upload_path(&vector_private_id())
    );
    println!("raw ({} bytes):\n{}", raw.len(), lines(&raw));
    println!("body ({} bytes):\n{}", body.len(), lines(&body));
}

#[test]
fn test_vector_raw_bytes_match_protocol_md_byte_for_byte() {
    let raw = encode_batch_raw(&vector_batch()).unwrap();
    assert_eq!(hex::encode(&raw), hex::encode(spec_hex("batch-raw")));
}

#[test]
fn test_vector_body_in_protocol_md_decodes_to_the_batch() {
    let body = spec_hex("batch-body");
    assert_eq!(
        decode_body(&body, &Limits::default()).unwrap(),
        vector_batch()
    );
}

#[test]
fn test_vector_ids_and_url_match_protocol_md() {
    let b = vector_batch();
    assert_eq!(b.id().0.to_vec(), spec_hex("batch-id"));
    assert_eq!(b.public_log_id.to_vec(), spec_hex("public-id"));
    assert_eq!(vector_private_id().to_vec(), spec_hex("private-id"));
    assert!(SPEC.contains(&upload_path(&vector_private_id())));
}

#[test]
fn batch_id_depends_on_log_and_both_positions() {
    let p = |s, o| Position {
        segment: s,
        offset: o,
    };
    let id = BatchId::new(&[1; 32], p(1, 2), p(3, 4));
    assert_eq!(id, BatchId::new(&[1; 32], p(1, 2), p(3, 4)));
    assert_ne!(id, BatchId::new(&[2; 32], p(1, 2), p(3, 4)));
    assert_ne!(id, BatchId::new(&[1; 32], p(1, 3), p(3, 4)));
    assert_ne!(id, BatchId::new(&[1; 32], p(1, 2), p(3, 5)));
    assert_eq!(id.to_hex().len(), 64);
}

#[test]
fn every_truncation_of_the_vector_is_an_error() {
    let raw = encode_batch_raw(&vector_batch()).unwrap();
    for n in 0..raw.len() {
        assert!(
            decode_batch_raw(&raw[..n], &Limits::default()).is_err(),
            "prefix {n} decoded"
        );
    }
    let mut long = raw.clone();
    long.push(0);
    // One extra byte becomes part of the last payload's expected length mismatch.
    assert!(decode_batch_raw(&long, &Limits::default()).is_err());
}

#[test]
fn every_bit_flip_of_the_vector_is_an_error_or_a_valid_batch() {
    let raw = encode_batch_raw(&vector_batch()).unwrap();
    for i in 0..raw.len() * 8 {
        let mut m = raw.clone();
        m[i / 8] ^= 1 << (i % 8);
        if let Ok(b) = decode_batch_raw(&m, &Limits::default()) {
            // Whatever decodes re-encodes to the same bytes: the encoding is canonical.
            assert_eq!(encode_batch_raw(&b).unwrap(), m, "flip {i}");
        }
    }
}

#[test]
fn zip_bomb_is_refused_without_decompressing_it_all() {
    let zeros = vec![0u8; 256 << 20];
    let body = zstd::bulk::compress(&zeros, 19).unwrap();
    assert!(body.len() < 64 << 10, "bomb is small: {}", body.len());
    let err = decode_body(&body, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ProtocolError::DecompressedTooLarge { max } if max == 64 << 20),
        "{err}"
    );
}

#[test]
fn oversized_body_is_refused_before_decompression() {
    let limits = Limits {
        max_body_bytes: 10,
        ..Limits::default()
    };
    let err = decode_body(&[0u8; 11], &limits).unwrap_err();
    assert!(matches!(
        err,
        ProtocolError::BodyTooLarge { len: 11, max: 10 }
    ));
}

#[test]
fn huge_declared_counts_are_refused_before_allocation() {
    let mut raw = encode_batch_raw(&Batch::default()).unwrap();
    // Replace the trailing record count (0) with u64::MAX.
    raw.pop();
    crate::wire::put_uvarint(&mut raw, u64::MAX);
    let err = decode_batch_raw(&raw, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::LimitExceeded {
                what: "record count",
                ..
            }
        ),
        "{err}"
    );
    // Below the limit but larger than the input can hold.
    raw.truncate(raw.len() - 10);
    crate::wire::put_uvarint(&mut raw, 1000);
    let err = decode_batch_raw(&raw, &Limits::default()).unwrap_err();
    assert!(
        matches!(err, ProtocolError::Truncated { what: "records" }),
        "{err}"
    );
}

#[test]
fn windows_beyond_the_cap_are_refused() {
    let data: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    // A streaming encoder with no pledged size keeps the requested 2^27 window.
    let mut enc = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
    enc.set_parameter(zstd::zstd_safe::CParameter::WindowLog(27))
        .unwrap();
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let body = enc.finish().unwrap();
    assert!(matches!(
        decode_body(&body, &Limits::default()),
        Err(ProtocolError::Decompress(_))
    ));
}

/// Found by cargo-fuzz (batch_decode): a table of unused, empty classifications decoded
/// fine but did not re-encode to the same bytes. The table must be canonical.
#[test]
fn classification_table_must_list_each_used_class_once_in_order_of_first_use() {
    let mut raw = encode_batch_raw(&Batch::default()).unwrap();
    raw.truncate(raw.len() - 2); // classes 0, records 0
    raw.extend_from_slice(&[1, 0, 0]); // one unused (empty) class, no records
    assert!(matches!(
        decode_batch_raw(&raw, &Limits::default()),
        Err(ProtocolError::Invalid {
            what: "classification table",
            ..
        })
    ));
    let mut b = vector_batch();
    b.records[1].classification = "org.example/other/x".into();
    let good = encode_batch_raw(&b).unwrap();
    assert_eq!(decode_batch_raw(&good, &Limits::default()).unwrap(), b);
    // Swap the two class indexes (column 3, after the positions and the context indexes):
    // 0, 1 -> 1, 0 is out of order of first use.
    let cols = [0x00, 0x20, 0x01, 0x80, 0x02, 0x00, 0x00, 0x00, 0x01];
    let at = good.windows(cols.len()).position(|w| w == cols).unwrap() + 7;
    let mut swapped = good.clone();
    swapped[at] = 1;
    swapped[at + 1] = 0;
    let err = decode_batch_raw(&swapped, &Limits::default()).unwrap_err();
    assert!(
        matches!(
            err,
            ProtocolError::Invalid {
                what: "record classification",
                ..
            }
        ),
        "{err}"
    );
    for name in ["regression_unused_classes_a", "regression_unused_classes_b"] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus/batch_decode")
            .join(name);
        let data = std::fs::read(path).unwrap();
        assert!(
            decode_batch_raw(&data, &Limits::default()).is_err(),
            "{name}"
        );
    }
}

#[test]
fn bad_magic_version_and_flags_are_named() {
    let raw = encode_batch_raw(&vector_batch()).unwrap();
    let mut m = raw.clone();
    m[0] = b'X';
    assert_eq!(
        decode_batch_raw(&m, &Limits::default()),
        Err(ProtocolError::BadMagic)
    );
    let mut m = raw.clone();
    m[4] = 2;
    assert_eq!(
        decode_batch_raw(&m, &Limits::default()),
        Err(ProtocolError::UnsupportedVersion { found: 2, max: 1 })
    );
    let mut m = raw;
    m[5] = 1;
    assert!(matches!(
        decode_batch_raw(&m, &Limits::default()),
        Err(ProtocolError::Invalid { what: "flags", .. })
    ));
}

#[test]
fn encoder_refuses_out_of_order_records_and_unknown_contexts() {
    let mut e = BatchEncoder::new(
        [0; 32],
        Position {
            segment: 1,
            offset: 0,
        },
    );
    let mut r = RecordRef {
        position: Position {
            segment: 1,
            offset: 8,
        },
        context: 0,
        classification: "a/b/c",
        severity: 1,
        wall_ms: 0,
        boot_ms: 0,
        event_id: None,
        payload: b"",
    };
    assert!(e.add_record(&r).is_err(), "no context yet");
    e.add_context::<&str, &str>(&[]);
    e.add_record(&r).unwrap();
    assert!(e.add_record(&r).is_err(), "same position twice");
    r.position.offset = 4;
    assert!(e.add_record(&r).is_err(), "backwards");
    assert!(
        e.finish(
            Position {
                segment: 1,
                offset: 8
            },
            &mut Vec::new()
        )
        .is_err(),
        "last must follow records"
    );
}

#[test]
fn statuses_map_to_the_documented_verdicts() {
    for (s, v) in [
        (200, Verdict::Acknowledged),
        (204, Verdict::Acknowledged),
        (400, Verdict::Rejected),
        (401, Verdict::Configuration),
        (403, Verdict::Configuration),
        (404, Verdict::Configuration),
        (408, Verdict::Retry),
        (413, Verdict::Split),
        (422, Verdict::Rejected),
        (429, Verdict::RetryAfter),
        (500, Verdict::Retry),
        (503, Verdict::RetryAfter),
        (302, Verdict::Retry),
    ] {
        assert_eq!(verdict(s), v, "{s}");
    }
}

#[test]
fn a_compact_gap_only_batch_decodes() {
    // Gaps of 9 bytes each (the minimum, PROTOCOL.md section 4): the count check before
    // allocating must not ask for more.
    let gap = |s: u64| Gap {
        reason: GapReason::Trimmed,
        start: Position {
            segment: 0,
            offset: s,
        },
        end: Position {
            segment: 0,
            offset: s,
        },
        segments: 0,
        records: 0,
        bytes: 0,
        detail: String::new(),
    };
    for n in [1u64, 2, 5] {
        let b = Batch {
            last: Position {
                segment: 0,
                offset: 100,
            },
            gaps: (0..n).map(|i| gap(i * 10)).collect(),
            ..Batch::default()
        };
        let raw = encode_batch_raw(&b).unwrap();
        // header 42 + contexts 1 + gap count 1 + 9 per gap + counters, classes, records 1 each.
        assert_eq!(raw.len() as u64, 42 + 1 + 1 + 9 * n + 3, "{n} gaps");
        assert_eq!(decode_batch_raw(&raw, &Limits::default()).unwrap(), b);
    }
}

#[test]
fn only_a_refusal_confirming_the_intact_body_is_a_rejection() {
    let sent = content_digest(b"the body");
    let other = content_digest(b"the bo");
    // Confirmed: the server read exactly what was sent.
    assert_eq!(
        classify(400, Some(&sent), Some("1"), &sent),
        Verdict::Rejected
    );
    assert_eq!(classify(422, Some(&sent), None, &sent), Verdict::Rejected);
    // Not confirmed (no header, or the server read other bytes): resend, never dead-letter.
    assert_eq!(classify(400, None, Some("1"), &sent), Verdict::Unconfirmed);
    assert_eq!(
        classify(400, Some(&other), None, &sent),
        Verdict::Unconfirmed
    );
    assert_eq!(classify(415, None, None, &sent), Verdict::Unconfirmed);
    assert_eq!(
        classify(415, Some(&sent), None, &sent),
        Verdict::Unconfirmed
    );
    // A 4xx from a server of another protocol version: configuration, never dead-letter.
    assert_eq!(
        classify(400, Some(&sent), Some("2"), &sent),
        Verdict::Configuration
    );
    // The rest is as the status alone says.
    for s in [200, 401, 404, 408, 413, 429, 500, 503] {
        assert_eq!(classify(s, None, Some("1"), &sent), verdict(s), "{s}");
    }
}

pub(crate) fn arb_batch() -> impl Strategy<Value = Batch> {
    let rec = (
        0u64..3,
        1u64..5000,
        0u32..3,
        "[a-z]{1,3}/[a-z]{1,3}/[a-z]{1,3}",
        1u8..5,
        any::<i64>(),
        any::<u64>(),
        any::<Option<[u8; 16]>>(),
        proptest::collection::vec(any::<u8>(), 0..40),
    );
    let ctx = proptest::collection::vec(("[a-z_]{1,10}", "\\PC{0,20}"), 0..4);
    (
        proptest::collection::vec(ctx, 1..3),
        proptest::collection::vec(rec, 0..30),
        any::<[u8; 32]>(),
        0u64..1000,
        proptest::collection::vec(("[a-z.]{1,20}", any::<u64>()), 0..3),
    )
        .prop_map(|(ctxs, recs, public, seg0, counters)| {
            let first = Position {
                segment: seg0,
                offset: 256,
            };
            let mut pos = first;
            let n_ctx = ctxs.len() as u32;
            let mut records = Vec::new();
            for (ds, doff, c, class, sev, wall, boot, ev, payload) in recs {
                pos = if ds == 0 {
                    Position {
                        segment: pos.segment,
                        offset: pos.offset + doff,
                    }
                } else {
                    Position {
                        segment: pos.segment + ds,
                        offset: doff,
                    }
                };
                records.push(Record {
                    position: pos,
                    context: c % n_ctx,
                    classification: class,
                    severity: sev,
                    wall_ms: wall,
                    boot_ms: boot,
                    event_id: ev,
                    payload,
                });
            }
            let last = Position {
                segment: pos.segment,
                offset: pos.offset + 1,
            };
            let gaps = vec![Gap {
                reason: GapReason::Trimmed,
                start: first,
                end: last,
                segments: 1,
                records: 7,
                bytes: 9,
                detail: "x".into(),
            }];
            Batch {
                public_log_id: public,
                first,
                last,
                contexts: ctxs.into_iter().map(|fields| Context { fields }).collect(),
                gaps,
                counters,
                records,
            }
        })
}

proptest! {
    #[test]
    fn any_batch_round_trips_through_the_wire(b in arb_batch(), level in 1i32..6) {
        let body = encode_batch(&b, level).unwrap();
        prop_assert_eq!(decode_body(&body, &Limits::default()).unwrap(), b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut v = BATCH_MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&raw);
        let _ = decode_batch_raw(&v, &Limits::default());
        let _ = decode_body(&raw, &Limits::default());
    }
}
