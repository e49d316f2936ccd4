//! The uploader's state as `journal stats` shows it: cursor, in-flight batch, delivery and
//! loss totals. Read-only, like the rest of the journal: the cursor copies are decoded with
//! the uploader's own [`uploader::cursor::CursorState::decode`] but read here directly,
//! because [`uploader::cursor::CursorStore::open`] creates (and chmods) the upload directory.

use std::path::Path;

use segment_log::Position;
use serde::Serialize;
use uploader::cursor::{CursorState, COPIES};
use uploader::state::{upload_dir, Status};

/// A position, as JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct At {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment.
    pub offset: u64,
}

impl From<Position> for At {
    fn from(p: Position) -> Self {
        At {
            segment: p.segment,
            offset: p.offset,
        }
    }
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "segment {} offset {}", self.segment, self.offset)
    }
}

/// The uploader's progress and totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UploadState {
    /// Where the next batch starts: everything before it was acknowledged by the server.
    /// `None`: no usable cursor (nothing uploaded yet, or both copies damaged).
    pub cursor: Option<At>,
    /// A batch sent but not yet acknowledged: first and last record position.
    pub in_flight: Option<(At, At)>,
    /// Records at or after the cursor (counted by `stats`; `None` with `--estimate`).
    pub backlog_records: Option<u64>,
    /// Frame bytes at or after the cursor.
    pub backlog_bytes: Option<u64>,
    /// Records the server acknowledged.
    pub delivered_records: u64,
    /// Last acknowledged batch, ms since the epoch.
    pub last_success_ms: Option<i64>,
    /// Last error, as a sentence.
    pub last_error: Option<String>,
    /// Records removed by retention before they were uploaded.
    pub expired_records: u64,
    /// Records in batches the server refused for good (dead-lettered).
    pub dead_lettered_records: u64,
    /// Damaged ranges the uploader skipped.
    pub corrupt_ranges: u64,
    /// Problems with the cursor or state files, one sentence each.
    pub warnings: Vec<String>,
}

impl UploadState {
    /// Where the backlog starts: the cursor, or the start of the log without one.
    pub fn backlog_start(&self) -> Position {
        self.cursor.map_or(Position::default(), |c| Position {
            segment: c.segment,
            offset: c.offset,
        })
    }
}

/// Reads the uploader's state of log `dir`; `None` when no uploader ever ran there.
/// `public_log_id` (when known) rejects a cursor copied in from another log.
pub fn read(dir: &Path, public_log_id: Option<[u8; 32]>) -> Option<UploadState> {
    let updir = upload_dir(dir);
    if !updir.is_dir() {
        return None;
    }
    let mut st = UploadState::default();
    let mut best: Option<CursorState> = None;
    for name in COPIES {
        let path = updir.join(name);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                st.warnings
                    .push(format!("cannot read {}: {e}", path.display()));
                continue;
            }
        };
        match CursorState::decode(&bytes) {
            Ok(c) if public_log_id.is_some_and(|id| id != c.public_log_id) => st.warnings.push(
                format!("{} belongs to another log; ignored", path.display()),
            ),
            Ok(c) => {
                if best.is_none_or(|b| c.seq > b.seq) {
                    best = Some(c);
                }
            }
            Err(e) => st
                .warnings
                .push(format!("{} is unusable: {e}", path.display())),
        }
    }
    if let Some(c) = best {
        st.cursor = Some(c.position.into());
        st.in_flight = c.inflight.map(|(a, b)| (a.into(), b.into()));
    }
    let (status, warning) = Status::load(&updir);
    st.warnings.extend(warning);
    st.delivered_records = status.delivered_records;
    st.last_success_ms = status.last_success_ms;
    st.last_error = status.last_error;
    st.expired_records = status.expired_records;
    st.dead_lettered_records = status.dead_lettered_records;
    st.corrupt_ranges = status.corrupt_ranges;
    Some(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_cursor(dir: &Path, name: &str, seq: u64, id: [u8; 32], pos: Position) {
        let state = CursorState {
            seq,
            public_log_id: id,
            position: pos,
            inflight: None,
            written_wall_ms: 0,
        };
        std::fs::write(upload_dir(dir).join(name), state.encode()).unwrap();
    }

    #[test]
    fn no_upload_directory_means_no_uploader_state() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path(), None), None);
        assert!(!upload_dir(d.path()).exists(), "reading creates nothing");
    }

    #[test]
    fn the_newest_valid_copy_of_this_log_wins() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(upload_dir(d.path())).unwrap();
        let id = [3u8; 32];
        write_cursor(
            d.path(),
            COPIES[0],
            4,
            id,
            Position {
                segment: 2,
                offset: 512,
            },
        );
        write_cursor(
            d.path(),
            COPIES[1],
            5,
            id,
            Position {
                segment: 3,
                offset: 256,
            },
        );
        let st = read(d.path(), Some(id)).unwrap();
        assert_eq!(
            st.cursor,
            Some(At {
                segment: 3,
                offset: 256
            })
        );
        assert!(st.warnings.is_empty(), "{:?}", st.warnings);
    }

    #[test]
    fn damaged_and_foreign_copies_are_warned_about_and_skipped() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(upload_dir(d.path())).unwrap();
        write_cursor(
            d.path(),
            COPIES[0],
            9,
            [1u8; 32],
            Position {
                segment: 7,
                offset: 256,
            },
        );
        std::fs::write(upload_dir(d.path()).join(COPIES[1]), b"torn").unwrap();
        let st = read(d.path(), Some([2u8; 32])).unwrap();
        assert_eq!(st.cursor, None);
        assert_eq!(st.backlog_start(), Position::default());
        assert_eq!(st.warnings.len(), 2, "{:?}", st.warnings);
        assert!(st.warnings.iter().any(|w| w.contains("another log")));
        assert!(st.warnings.iter().any(|w| w.contains("unusable")));
    }
}
