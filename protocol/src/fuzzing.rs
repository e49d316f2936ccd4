//! Entry point shared by the cargo-fuzz target `fuzz/fuzz_targets/batch_decode.rs` and the
//! stable corpus replay test below. Not part of the stable API (feature `fuzzing`).
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use crate::Limits;

/// Decodes `data` both as an HTTP body (zstd) and as a decompressed batch, with small limits
/// so the fuzzer reaches them. Panics only if an invariant breaks: whatever decodes must
/// re-encode to exactly the same bytes (the encoding is canonical) and respect the limits.
pub fn batch_decode(data: &[u8]) {
    let limits = Limits {
        max_body_bytes: 1 << 16,
        max_decompressed_bytes: 1 << 18,
        max_records: 1000,
        ..Limits::default()
    };
    if let Ok(b) = crate::decode_body(data, &limits) {
        assert!(b.records.len() as u64 <= limits.max_records);
        let raw = crate::encode_batch_raw(&b).expect("decoded batch re-encodes");
        assert!(raw.len() as u64 <= limits.max_decompressed_bytes);
    }
    if let Ok(b) = crate::decode_batch_raw(data, &limits) {
        let raw = crate::encode_batch_raw(&b).expect("decoded batch re-encodes");
        assert_eq!(
            raw, data,
            "decoding is canonical: re-encoding gives the same bytes"
        );
        assert!(b
            .records
            .iter()
            .all(|r| r.position >= b.first && r.position < b.last));
        assert!(b.records.windows(2).all(|w| w[0].position < w[1].position));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the committed seed corpus (and any crash saved into it) on stable.
    #[test]
    fn batch_decode_corpus_replays_without_panics() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/batch_decode");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("committed corpus") {
            let data = std::fs::read(entry.expect("corpus entry").path()).expect("corpus file");
            batch_decode(&data);
            n += 1;
        }
        assert!(n >= 6, "corpus has only {n} files");
    }

    /// Regenerates the seed corpus: `cargo test -p protocol --features fuzzing write_batch_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/batch_decode"]
    fn write_batch_corpus() {
        use crate::wire::put_uvarint;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/batch_decode");
        std::fs::create_dir_all(&dir).unwrap();
        let b = crate::tests::vector_batch();
        let raw = crate::encode_batch_raw(&b).unwrap();
        let mut huge = crate::encode_batch_raw(&crate::Batch::default()).unwrap();
        huge.pop();
        put_uvarint(&mut huge, u64::MAX);
        let mut bad_varint = raw.clone();
        bad_varint.truncate(38);
        bad_varint.extend_from_slice(&[0xff; 11]);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("vector_raw", raw.clone()),
            ("vector_body", crate::compress(&raw, 3).unwrap()),
            (
                "empty_batch_raw",
                crate::encode_batch_raw(&crate::Batch::default()).unwrap(),
            ),
            ("truncated_raw", raw[..raw.len() / 2].to_vec()),
            ("huge_record_count", huge),
            ("bad_varint", bad_varint),
            (
                "zeros_bomb_body",
                zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap(),
            ),
            ("garbage", b"POST / HTTP/1.1\r\n\r\n".to_vec()),
        ];
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
