//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the stable corpus replay test.
//! Not part of the stable API.

use std::io::Write;

mod ledger;
pub use ledger::ledger_bytes;

use crate::format::{self, SegmentHeader, HEADER_LEN};
use crate::{Entry, Position, Reader, ReaderOptions};

/// Decodes `data` every way a reader would: as a header, as a frame at every aligned offset,
/// and as the first segment of a log directory scanned by a [`Reader`]. Panics only if an
/// invariant breaks (a returned frame that does not verify, a position outside the file).
pub fn scan_bytes(data: &[u8]) {
    let _ = SegmentHeader::decode(data);
    let cap = data.len() as u64;
    let mut off = 0usize;
    while let Some(rest) = data.get(off..) {
        if rest.is_empty() {
            break;
        }
        let _ = format::check_frame(rest, 1, off as u64, cap);
        off += 8;
    }
    let _ = format::find_marker(data, 0);

    // As a file. A header is forced to be valid half of the time so the frame scanner runs.
    let Ok(dir) = tempfile::tempdir_in(fuzz_tmp()) else {
        return;
    };
    let seg_dir = dir.path().join(crate::fs::SEGMENTS_DIR);
    if std::fs::create_dir(&seg_dir).is_err() {
        return;
    }
    let mut bytes = data.to_vec();
    if data.first().is_some_and(|b| b & 1 == 1) {
        let capacity = (bytes.len() as u64)
            .max(HEADER_LEN + 16)
            .next_multiple_of(8);
        bytes.resize(capacity as usize, 0);
        let h = SegmentHeader {
            // Both versions (version 2 writes pad frames; readers accept them in either).
            version: 1 + u32::from(data.get(1).is_some_and(|b| b & 1 == 1)),
            segment: 1,
            capacity,
            created_wall_ns: 0,
            created_boot_ns: 0,
            boot_id: [0; 16],
            log_id: [0; 32],
        };
        let enc = h.encode();
        let keep = format::reserved_end(data.get(..HEADER_LEN as usize).unwrap_or_default());
        if let Some(dst) = bytes.get_mut(..HEADER_LEN as usize) {
            dst.copy_from_slice(&enc);
        }
        if let Some(dst) = bytes.get_mut(128..136) {
            dst.copy_from_slice(&keep.max(HEADER_LEN).to_le_bytes());
        }
    }
    let path = seg_dir.join(crate::fs::segment_file_name(1, crate::fs::SEG_EXT));
    let written = std::fs::File::create(&path).and_then(|mut f| f.write_all(&bytes));
    if written.is_err() {
        return;
    }
    let opts = ReaderOptions {
        chunk_size: 4096,
        hole_timeout: std::time::Duration::ZERO,
        detect_writers: false,
        include_preambles: true,
    };
    let Ok(mut reader) = Reader::open(dir.path(), Position::default(), opts) else {
        return;
    };
    let mut steps = 0;
    while let Ok(Some(entry)) = reader.next_entry() {
        steps += 1;
        assert!(steps <= bytes.len() + 4, "reader does not advance");
        if let Entry::Frame(f) = entry {
            let start = f.position.offset as usize;
            let end = start + format::frame_len(f.payload.len() as u64) as usize;
            let frame = bytes.get(start..end).expect("frame inside the file");
            assert!(matches!(
                format::check_frame(frame, 1, f.position.offset, bytes.len() as u64),
                format::FrameCheck::Valid { .. }
            ));
        }
    }
}

fn fuzz_tmp() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

#[cfg(test)]
mod tests {
    /// Replays the committed seed corpus (and any crashes saved under it) on stable, so CI
    /// exercises the fuzz target without libFuzzer.
    #[test]
    fn segment_scan_corpus_replays_without_panics() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/corpus/segment_scan");
        let mut n = 0;
        for entry in std::fs::read_dir(dir).expect("committed corpus") {
            let path = entry.expect("corpus entry").path();
            let data = std::fs::read(&path).expect("corpus file");
            super::scan_bytes(&data);
            n += 1;
        }
        assert!(n >= 5, "corpus has only {n} files");
    }
}
