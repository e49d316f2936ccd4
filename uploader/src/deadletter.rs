//! The dead-letter folder: batches the server refused for good, kept with the reason so an
//! operator can inspect or replay them, while the queue moves on.
//!
//! `<log dir>/upload/dead-letter/<batch id>.batch` is the exact body that was sent (zstd);
//! `<batch id>.json` says why. The folder is capped (`dead_letter_max_bytes`): the oldest
//! entries go first.
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::batch::Built;

/// Why a batch was dead-lettered (the `.json` file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Batch id (hex).
    pub batch_id: String,
    /// First position, `segment:offset`.
    pub first: String,
    /// Last position (exclusive).
    pub last: String,
    /// Records in the batch.
    pub records: u64,
    /// The HTTP status of the last refusal.
    pub status: Option<u16>,
    /// A sentence.
    pub reason: String,
    /// The start of the server's answer.
    pub response: String,
    /// When (ms since the epoch).
    pub at_ms: i64,
}

/// The folder.
pub fn dir(upload_dir: &Path) -> PathBuf {
    upload_dir.join(crate::state::DEAD_LETTER_DIR)
}

/// Stores `b` with its reason; then trims the folder to `max_bytes`.
pub fn store(
    upload_dir: &Path,
    b: &Built,
    status: Option<u16>,
    reason: &str,
    response: &str,
    max_bytes: u64,
) -> std::io::Result<PathBuf> {
    let d = dir(upload_dir);
    crate::state::ensure_dir(&d)?;
    let id = b.id.to_hex();
    let meta = DeadLetter {
        batch_id: id.clone(),
        first: b.first.to_string(),
        last: b.last.to_string(),
        records: b.records,
        status,
        reason: reason.to_owned(),
        response: response.to_owned(),
        at_ms: crate::state::now_ms(),
    };
    crate::cursor::write_atomic(&d, &format!("{id}.batch"), &b.body)?;
    let json = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
    crate::cursor::write_atomic(&d, &format!("{id}.json"), &json)?;
    trim(&d, max_bytes)?;
    Ok(d.join(format!("{id}.batch")))
}

/// Lists the entries, oldest first.
pub fn list(upload_dir: &Path) -> Vec<DeadLetter> {
    let Ok(rd) = fs::read_dir(dir(upload_dir)) else {
        return Vec::new();
    };
    let mut v: Vec<DeadLetter> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice(&fs::read(e.path()).ok()?).ok())
        .collect();
    v.sort_by_key(|d| d.at_ms);
    v
}

fn trim(d: &Path, max_bytes: u64) -> std::io::Result<()> {
    let mut entries: Vec<(std::time::SystemTime, PathBuf, u64)> = fs::read_dir(d)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((m.modified().ok()?, e.path(), m.len()))
        })
        .collect();
    entries.sort();
    let mut total: u64 = entries.iter().map(|e| e.2).sum();
    for (_, path, len) in entries {
        if total <= max_bytes {
            break;
        }
        let _ = fs::remove_file(path);
        total = total.saturating_sub(len);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::BatchId;
    use segment_log::Position;

    fn built(n: u8) -> Built {
        Built {
            id: BatchId([n; 32]),
            first: Position {
                segment: 1,
                offset: 256,
            },
            last: Position {
                segment: 1,
                offset: 512,
            },
            body: vec![n; 1000],
            raw_len: 1000,
            records: 3,
            payload_bytes: 30,
            frame_bytes: 60,
            gaps: Vec::new(),
            end: crate::batch::End::Full,
            oldest_wall_ms: None,
            last_records_before: None,
        }
    }

    #[test]
    fn dead_letters_keep_body_and_reason_and_the_folder_is_capped() {
        let d = tempfile::tempdir().unwrap();
        let p = store(
            d.path(),
            &built(1),
            Some(400),
            "refused 3 times",
            "bad batch",
            1 << 20,
        )
        .unwrap();
        assert_eq!(fs::read(p).unwrap(), vec![1; 1000]);
        let l = list(d.path());
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].status, l[0].reason.as_str(), l[0].first.as_str()),
            (Some(400), "refused 3 times", "1:256")
        );
        for n in 2..10 {
            store(d.path(), &built(n), Some(400), "r", "", 4000).unwrap();
        }
        let total: u64 = fs::read_dir(dir(d.path()))
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 4000, "{total}");
        assert!(
            dir(d.path())
                .join(format!("{}.batch", BatchId([9; 32]).to_hex()))
                .exists(),
            "newest kept"
        );
    }
}
