//! Entry point shared by the cargo-fuzz target `fuzz/fuzz_targets/cursor_decode.rs` and the
//! stable corpus replay test below. Not part of the stable API (feature `fuzzing`).

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
}
