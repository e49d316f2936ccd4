use proptest::prelude::*;
use segment_log::FrameKind;

use super::*;
use sha2::{Digest, Sha256};

fn ctx(slot: u32, classes: &[&str]) -> Context {
    Context {
        slot,
        generation: 3,
        record_format_version: RECORD_VERSION,
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        boot_id: [7; 16],
        arch: "x86_64".into(),
        host_type: "blank|blank|blank".into(),
        build: "41".into(),
        system_name: "debian".into(),
        kernel_version: "6.1.0".into(),
        board_name: "blank|blank".into(),
        cpu_model: "Example CPU".into(),
        bios_version: "1.0".into(),
        base_wall_ms: 1_700_000_000_000,
        base_boot_ms: 5_000,
        classifications: classes
            .iter()
            .map(|c| Classification::new(c).unwrap())
            .collect(),
        extra: vec![("k".into(), "v".into())],
    }
}

#[test]
fn classification_accepts_three_printable_parts() {
    let c = Classification::new("org.example/hello/world").unwrap();
    assert_eq!(c.parts(), ("org.example", "hello", "world"));
    assert_eq!(c.to_string(), "org.example/hello/world");
    let max = format!("{}/b/c", "a".repeat(MAX_CLASSIFICATION_LEN - 4));
    assert!(Classification::new(&max).is_ok());
}

#[test]
fn classification_refusals_name_the_field_and_reason() {
    for bad in [
        "",
        "a/b",
        "a/b/c/d",
        "a//c",
        "/b/c",
        "a/b/",
        "a b/c/d",
        "a/b/c\n",
        "é/b/c",
        &format!("{}/b/c", "a".repeat(MAX_CLASSIFICATION_LEN)),
    ] {
        let e = Classification::new(bad).unwrap_err();
        assert_eq!(e.field(), "classification", "{bad:?}");
        assert!(e.to_string().contains("DOMAIN/PROBE/REST"), "{e}");
    }
}

#[test]
fn severity_is_one_to_four() {
    for v in 1..=4 {
        assert_eq!(Severity::new(v).unwrap().get() as i64, v);
    }
    for v in [0, 5, -1, 256, i64::MAX] {
        let e = Severity::new(v).unwrap_err();
        assert_eq!(e.field(), "severity");
        assert!(e.to_string().contains(&v.to_string()));
    }
    assert_eq!("3".parse::<Severity>().unwrap(), Severity::HIGH);
    assert!("x".parse::<Severity>().is_err());
    assert_eq!("High".parse::<Severity>().unwrap(), Severity::HIGH);
    assert_eq!(
        " critical ".parse::<Severity>().unwrap(),
        Severity::CRITICAL
    );
    assert_eq!(Severity::LOW.name(), "low");
}

#[test]
fn event_id_is_32_hex_in_either_case_and_shown_in_lowercase() {
    let s = "5de9de8d5f3c6a7d445d75ba01cc3322";
    assert_eq!(EventId::parse(s).unwrap().to_string(), s);
    assert_eq!(
        EventId::parse("5DE9DE8D5F3C6A7D445D75BA01CC3322")
            .unwrap()
            .to_string(),
        s
    );
    for bad in ["5de9", "5de9de8d5f3c6a7d445d75ba01cc332g", ""] {
        assert_eq!(EventId::parse(bad).unwrap_err().field(), "event_id");
    }
    assert_ne!(EventId::random(), EventId::random());
}

#[test]
fn record_id_is_sha256_of_public_id_and_position_le() {
    let public = [0xab; 32];
    let pos = Position {
        segment: 42,
        offset: 4096,
    };
    let id = RecordId::derive(&public, pos);
    let mut h = Sha256::new();
    h.update(public);
    h.update(42u64.to_le_bytes());
    h.update(4096u64.to_le_bytes());
    let want = hex::encode(&h.finalize()[..16]);
    assert_eq!(id.to_string(), want);
    assert_eq!(id.to_string().len(), 32);
    assert_eq!(RecordId::parse(&want).unwrap(), id);
    assert_ne!(
        RecordId::derive(
            &public,
            Position {
                segment: 42,
                offset: 4104
            }
        ),
        id
    );
}

#[test]
fn typical_v2_header_is_at_most_8_bytes() {
    let h = RecordHeader {
        slot: 0,
        class: ClassRef::Index(3),
        severity: Severity::MEDIUM,
        time: RecordTime::Relative {
            boot_delta_ms: 30 * 60 * 1000,
            wall_skew_ms: -1,
        },
        event_id: None,
        hold_ms: None,
    };
    let mut out = Vec::new();
    encode_record(&h, b"payload", &mut out).unwrap();
    assert!(out.len() - 7 <= 8, "header is {} bytes", out.len() - 7);
    let (back, payload) = decode_record(&out).unwrap();
    assert_eq!(back, h);
    assert_eq!(payload, b"payload");
}

#[test]
fn record_resolves_against_its_context() {
    let c = ctx(2, &["a/b/c", "d/e/f"]);
    let h = RecordHeader {
        slot: 2,
        class: ClassRef::Index(1),
        severity: Severity::CRITICAL,
        time: RecordTime::Relative {
            boot_delta_ms: 1500,
            wall_skew_ms: -20,
        },
        event_id: Some(EventId::from_bytes([1; 16])),
        hold_ms: Some(60_000),
    };
    let r = h.resolve(&c).unwrap();
    assert_eq!(r.classification.as_str(), "d/e/f");
    assert_eq!(r.wall_ms, 1_700_000_000_000 + 1500 - 20);
    assert_eq!(r.boot_ms, 6_500);
    assert_eq!(r.hold_until_wall_ms, Some(r.wall_ms + 60_000));
    let bad = RecordHeader {
        class: ClassRef::Index(2),
        ..h
    };
    assert_eq!(
        bad.resolve(&c).unwrap_err(),
        ResolveError::ClassIndex { index: 2, len: 2 }
    );
}

#[test]
fn context_round_trips_and_rejects_trailing_bytes() {
    let c = ctx(9, &["a/b/c"]);
    let mut bytes = encode_context(&c).unwrap();
    assert_eq!(
        decode_frame(FrameKind::Preamble, &bytes).unwrap(),
        Decoded::Context(Box::new(c))
    );
    bytes.push(0);
    assert_eq!(
        decode_context(&bytes).unwrap_err(),
        DecodeError::TrailingBytes { len: 1 }
    );
}

#[test]
fn context_over_bounds_is_refused_on_encode_and_decode() {
    let mut c = ctx(1, &[]);
    c.build = "x".repeat(MAX_CONTEXT_STRING + 1);
    assert!(matches!(
        encode_context(&c),
        Err(EncodeError::Context(DecodeError::Invalid {
            field: "build",
            ..
        }))
    ));
    let raw = postcard::to_extend(&c, vec![CONTEXT_VERSION]).unwrap();
    assert!(matches!(
        decode_context(&raw),
        Err(DecodeError::Invalid { field: "build", .. })
    ));
}

#[test]
fn newer_versions_are_refused_with_a_clear_error() {
    let e = decode_record(&[RECORD_VERSION + 1, 0, 0]).unwrap_err();
    assert!(e.is_unsupported_version());
    assert!(e.to_string().contains("upgrade seglog"), "{e}");
    let e = decode_context(&[CONTEXT_VERSION + 1]).unwrap_err();
    assert!(e.is_unsupported_version());
    assert_eq!(
        decode_record(&[]).unwrap_err(),
        DecodeError::Empty { what: "record" }
    );
    assert!(matches!(
        decode_frame(FrameKind::Seal, &[]),
        Err(DecodeError::UnexpectedKind { .. })
    ));
}

#[test]
fn unknown_meta_bits_are_invalid() {
    let bytes = [2u8, 0, 0, 0b1000_0000, 0, 0];
    assert!(matches!(
        decode_record(&bytes),
        Err(DecodeError::Invalid { field: "meta", .. })
    ));
}

#[test]
fn mixed_layout_headers_do_not_encode() {
    let h = RecordHeader {
        slot: 0,
        class: ClassRef::Index(0),
        severity: Severity::LOW,
        time: RecordTime::Absolute {
            wall_ms: 0,
            boot_ms: 0,
        },
        event_id: None,
        hold_ms: None,
    };
    assert_eq!(
        encode_record(&h, b"", &mut Vec::new()),
        Err(EncodeError::MixedLayout)
    );
}

#[test]
fn truncated_records_never_panic_and_error() {
    let h = RecordHeader {
        slot: 300,
        class: ClassRef::Index(70000),
        severity: Severity::HIGH,
        time: RecordTime::Relative {
            boot_delta_ms: u64::MAX,
            wall_skew_ms: i64::MIN,
        },
        event_id: Some(EventId::from_bytes([9; 16])),
        hold_ms: Some(u64::MAX),
    };
    let mut out = Vec::new();
    encode_record(&h, b"", &mut out).unwrap();
    for cut in 0..out.len() {
        assert!(
            decode_record(&out[..cut]).is_err(),
            "prefix of {cut} bytes decoded"
        );
    }
    assert_eq!(decode_record(&out).unwrap().0, h);
}

fn arb_class() -> impl Strategy<Value = Classification> {
    "[a-z.]{1,20}/[a-z0-9_-]{1,20}/[!-~&&[^/]]{1,40}".prop_map(|s| Classification::new(&s).unwrap())
}

fn arb_header() -> impl Strategy<Value = RecordHeader> {
    let v2 = (
        any::<u32>(),
        any::<u32>(),
        1i64..=4,
        any::<u64>(),
        any::<i64>(),
        proptest::option::of(any::<[u8; 16]>()),
        proptest::option::of(any::<u64>()),
    )
        .prop_map(|(slot, class, sev, b, w, e, hold)| RecordHeader {
            slot,
            class: ClassRef::Index(class),
            severity: Severity::new(sev).unwrap(),
            time: RecordTime::Relative {
                boot_delta_ms: b,
                wall_skew_ms: w,
            },
            event_id: e.map(EventId::from_bytes),
            hold_ms: hold,
        });
    let v1 = (
        any::<u32>(),
        arb_class(),
        1i64..=4,
        any::<i64>(),
        any::<u64>(),
        proptest::option::of(any::<[u8; 16]>()),
    )
        .prop_map(|(slot, c, sev, wall_ms, boot_ms, e)| RecordHeader {
            slot,
            class: ClassRef::Inline(c),
            severity: Severity::new(sev).unwrap(),
            time: RecordTime::Absolute { wall_ms, boot_ms },
            event_id: e.map(EventId::from_bytes),
            hold_ms: None,
        });
    prop_oneof![v2, v1]
}

proptest! {
    #[test]
    fn record_encoding_round_trips(h in arb_header(), payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let mut out = Vec::new();
        encode_record(&h, &payload, &mut out).unwrap();
        match decode_frame(FrameKind::Record, &out).unwrap() {
            Decoded::Record { header, payload: p } => {
                prop_assert_eq!(header, h);
                prop_assert_eq!(p, &payload[..]);
            }
            other => prop_assert!(false, "decoded {:?}", other),
        }
    }

    #[test]
    fn context_encoding_round_trips(
        slot in any::<u32>(),
        classes in proptest::collection::vec(arb_class(), 0..20),
        machine in "[0-9a-f]{0,32}",
        wall in any::<i64>(),
        boot in any::<u64>(),
    ) {
        let mut c = ctx(slot, &[]);
        c.classifications = classes;
        c.machine_id = machine;
        c.base_wall_ms = wall;
        c.base_boot_ms = boot;
        let bytes = encode_context(&c).unwrap();
        prop_assert_eq!(decode_context(&bytes).unwrap(), c);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(kind in 0u8..4, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        crate::fuzzing::fuzz_decode(&[&[kind][..], &bytes].concat());
    }

    #[test]
    fn classification_validation_matches_the_rule(s in "[ -~]{0,150}") {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = !s.is_empty()
            && s.len() <= MAX_CLASSIFICATION_LEN
            && !s.contains(' ')
            && parts.len() == 3
            && parts.iter().all(|p| !p.is_empty());
        prop_assert_eq!(Classification::new(&s).is_ok(), ok);
    }
}

#[test]
fn priority_ranges_parse_like_journalctl() {
    use crate::RangeError;
    let r = |s: &str| Severity::parse_range(s).map(|(a, b)| (a.get(), b.get()));
    assert_eq!(r("3"), Ok((3, 4)), "one severity: that one or higher");
    assert_eq!(r("high"), Ok((3, 4)));
    assert_eq!(r("low..critical"), Ok((1, 4)));
    assert_eq!(r("2..3"), Ok((2, 3)));
    assert_eq!(r("3.."), Ok((3, 4)));
    assert_eq!(r("..Medium"), Ok((1, 2)));
    assert_eq!(r(".."), Ok((1, 4)));
    assert_eq!(r("4..2"), Err(RangeError::Empty));
    for bad in ["0", "5", "x", "1..9", "hi..", "1...2"] {
        assert_eq!(r(bad), Err(RangeError::Severity), "{bad:?}");
    }
}
