//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/batch_decode.rs`,
//! `cursor_decode.rs`) and the stable corpus replay tests below. Not part of the stable API.

use crate::protocol::{self, Limits};

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
    if let Ok(b) = protocol::decode_body(data, &limits) {
        assert!(b.records.len() as u64 <= limits.max_records);
        let raw = protocol::encode_batch_raw(&b).expect("decoded batch re-encodes");
        assert!(raw.len() as u64 <= limits.max_decompressed_bytes);
    }
    if let Ok(b) = protocol::decode_batch_raw(data, &limits) {
        let raw = protocol::encode_batch_raw(&b).expect("decoded batch re-encodes");
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

/// Decodes `data` as a cursor file, and as the newest copy on disk next to a valid older
/// one. Panics only if an invariant breaks: a decoded cursor re-encodes to the same bytes,
/// and loading never fails or crash-loops on content (it falls back to the older copy).
pub fn cursor_decode(data: &[u8]) {
    use crate::cursor::{CursorState, CursorStore, COPIES};
    if let Ok(c) = CursorState::decode(data) {
        assert_eq!(&c.encode()[..], data, "cursor decoding is canonical");
        assert!(c.inflight.is_none_or(|(f, l)| c.position <= f && f <= l));
    }
    let Ok(dir) = tempfile::tempdir() else { return };
    let Ok(mut store) = CursorStore::open(dir.path()) else {
        return;
    };
    let id = [7u8; 32];
    let mut good = CursorState {
        public_log_id: id,
        position: segment_log::Position {
            segment: 3,
            offset: 512,
        },
        ..CursorState::default()
    };
    if store.store(&mut good).is_err() || std::fs::write(dir.path().join(COPIES[0]), data).is_err()
    {
        return;
    }
    let loaded = CursorStore::open(dir.path())
        .and_then(|mut s| s.load(&id))
        .expect("loading never fails on content");
    let from_fuzz = CursorState::decode(data)
        .ok()
        .filter(|c| c.public_log_id == id && c.seq > good.seq);
    let expected = from_fuzz.unwrap_or(good);
    assert_eq!(loaded.state, expected);
}

#[cfg(test)]
pub(crate) fn replay_corpus(name: &str, f: fn(&[u8])) -> usize {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(name);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("committed corpus") {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        f(&data);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays the committed seed corpus (and any crash saved into it) on stable.
    #[test]
    fn batch_decode_corpus_replays_without_panics() {
        let n = replay_corpus("batch_decode", batch_decode);
        assert!(n >= 6, "corpus has only {n} files");
    }

    #[test]
    fn cursor_decode_corpus_replays_without_panics() {
        let n = replay_corpus("cursor_decode", cursor_decode);
        assert!(n >= 5, "corpus has only {n} files");
    }

    /// Regenerates the cursor seed corpus: `cargo test -p uploader write_cursor_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/cursor_decode"]
    fn write_cursor_corpus() {
        use crate::cursor::CursorState;
        use segment_log::Position;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/cursor_decode");
        std::fs::create_dir_all(&dir).unwrap();
        let p = |s, o| Position {
            segment: s,
            offset: o,
        };
        let plain = CursorState {
            seq: 2,
            public_log_id: [7; 32],
            position: p(3, 4096),
            inflight: None,
            written_wall_ms: 1,
        };
        let inflight = CursorState {
            seq: 9,
            inflight: Some((p(3, 4096), p(4, 256))),
            ..plain
        };
        let other_log = CursorState {
            seq: 9,
            public_log_id: [1; 32],
            ..plain
        };
        let mut flipped = inflight.encode();
        flipped[60] ^= 4;
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("plain", plain.encode().to_vec()),
            ("inflight_newer", inflight.encode().to_vec()),
            ("other_log", other_log.encode().to_vec()),
            ("bit_flip", flipped.to_vec()),
            ("truncated", inflight.encode()[..37].to_vec()),
            ("empty", Vec::new()),
        ];
        for (name, data) in files {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }

    /// Regenerates the seed corpus: `cargo test -p uploader write_batch_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/batch_decode"]
    fn write_batch_corpus() {
        use crate::wire::put_uvarint;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/batch_decode");
        std::fs::create_dir_all(&dir).unwrap();
        let b = crate::protocol::tests::vector_batch();
        let raw = protocol::encode_batch_raw(&b).unwrap();
        let mut huge = protocol::encode_batch_raw(&protocol::Batch::default()).unwrap();
        huge.pop();
        put_uvarint(&mut huge, u64::MAX);
        let mut bad_varint = raw.clone();
        bad_varint.truncate(38);
        bad_varint.extend_from_slice(&[0xff; 11]);
        let files: Vec<(&str, Vec<u8>)> = vec![
            ("vector_raw", raw.clone()),
            ("vector_body", protocol::compress(&raw, 3).unwrap()),
            (
                "empty_batch_raw",
                protocol::encode_batch_raw(&protocol::Batch::default()).unwrap(),
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
