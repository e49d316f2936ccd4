//! The test vector of OTLP.md, checked byte for byte.
use protocol::{Batch, Context, Gap, GapReason, Record};
use segment_log::Position;

/// The batch of OTLP.md's test vector (PROTOCOL.md's, with a binary payload added).
pub(crate) fn vector_batch() -> Batch {
    let p = |segment, offset| Position { segment, offset };
    // PROTOCOL.md's public id (sha256 of the private id 00 01 .. 1f).
    let mut public = [0u8; 32];
    hex::decode_to_slice(
        "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd",
        &mut public,
    )
    .unwrap();
    Batch {
        public_log_id: public,
        first: p(3, 256),
        last: p(4, 320),
        contexts: vec![Context {
            fields: vec![
                (
                    "machine_id".into(),
                    "0123456789abcdef0123456789abcdef".into(),
                ),
                ("arch".into(), "x86_64".into()),
                ("build".into(), "42".into()),
                ("site".into(), "lab".into()),
            ],
        }],
        gaps: vec![Gap {
            reason: GapReason::CorruptFrame,
            start: p(3, 320),
            end: p(3, 368),
            segments: 0,
            records: 0,
            bytes: 48,
            detail: "crc_mismatch".into(),
        }],
        counters: vec![("recorder.dropped.rate_limit".into(), 2)],
        records: vec![
            Record {
                position: p(3, 288),
                context: 0,
                classification: "org.example/hello/world".into(),
                severity: 1,
                wall_ms: 1_700_000_000_000,
                boot_ms: 5_000_000,
                event_id: None,
                payload: b"hello".to_vec(),
            },
            Record {
                position: p(4, 256),
                context: 0,
                classification: "org.example/hello/world".into(),
                severity: 4,
                wall_ms: 1_700_000_000_002,
                boot_ms: 5_000_001,
                event_id: Some(std::array::from_fn(|i| i as u8)),
                payload: vec![0xff, 0x00, 0xfe],
            },
        ],
    }
}

/// `now_ns` of the vector.
pub(crate) const VECTOR_NOW_NS: u64 = 1_700_000_000_005_000_000;

fn doc_block(doc: &str, name: &str) -> Vec<u8> {
    let marker = format!("<!-- test-vector:{name} -->");
    let at = doc
        .find(&marker)
        .unwrap_or_else(|| panic!("{marker} missing in OTLP.md"));
    let rest = &doc[at..];
    let start = rest.find("```text\n").unwrap() + 8;
    let end = rest[start..].find("```").unwrap() + start;
    rest[start..end]
        .split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect()
}

fn hex_lines(b: &[u8]) -> String {
    b.chunks(16)
        .map(|c| {
            c.iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_otlp_md_test_vector_matches_the_encoder() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../OTLP.md")).unwrap();
    let got = crate::encode_request(&vector_batch(), VECTOR_NOW_NS);
    let want = doc_block(&doc, "otlp-request");
    assert!(
        got == want,
        "OTLP.md's vector differs from the encoder ({} bytes):\n{}",
        got.len(),
        hex_lines(&got)
    );
}

#[test]
fn severities_map_to_the_otel_ranges() {
    assert_eq!(
        (1..=4).map(crate::severity_number).collect::<Vec<_>>(),
        [9, 13, 17, 21]
    );
    assert_eq!(crate::severity_number(0), 0);
}

#[test]
fn an_empty_batch_is_an_empty_request() {
    let b = Batch::default();
    assert!(crate::encode_request(&b, 0).is_empty());
}
