//! The persisted upload cursor: where the next batch starts, and which batch is in flight.
//!
//! # On disk
//! Two alternating copies, `cursor.a` and `cursor.b`, in `<log dir>/upload/`. Write number
//! `seq` goes to copy `seq % 2`, so the other copy always holds the previous state. Each copy
//! is replaced atomically (temp file, fsync, rename, fsync of the directory), so a crash leaves
//! either the old or the new content; a copy damaged anyway (bit rot, a truncating copy tool)
//! fails its checksum and the other copy is used. With both copies unusable the uploader
//! starts from the oldest segment and says so; it never refuses to start.
//!
//! ```text
//! offset size field
//!      0    8 magic "SGLCURSR"
//!      8    1 version (1)
//!      9    1 flags: bit 0 = an in-flight batch is recorded; other bits zero
//!     10    6 reserved, zero
//!     16    8 seq: write counter (u64 LE), the higher valid copy wins
//!     24   32 public log id the cursor belongs to (a recreated log resets the cursor)
//!     56   16 position: segment u64 LE, offset u64 LE (next batch starts here)
//!     72   32 in-flight batch: first (segment, offset), last (segment, offset), u64 LE
//!    104    8 written at, wall clock ms since the epoch (i64 LE; informational)
//!    112    8 checksum: first 8 bytes of sha256 over bytes 0..112
//! ```
//!
//! # Warning
//! The layout is a file format: do not change a field's size or place without a new version.
//!
//! # Crash protocol
//! Before sending a batch the uploader records it as in flight (`position` unchanged); after
//! the server acknowledged it, it writes `position = last` with nothing in flight. After a
//! crash anywhere, an in-flight batch is rebuilt over exactly the same range, so it carries
//! the same batch id and the server drops the duplicate.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use segment_log::Position;
use sha2::{Digest, Sha256};

/// Magic bytes of a cursor file.
pub const CURSOR_MAGIC: [u8; 8] = *b"SGLCURSR";
/// Cursor format version written by this build.
pub const CURSOR_VERSION: u8 = 1;
/// Size of a cursor file.
pub const CURSOR_LEN: usize = 120;
const FLAG_INFLIGHT: u8 = 1;
const CHECKSUM_OFFSET: usize = 112;
/// File names of the two copies.
pub const COPIES: [&str; 2] = ["cursor.a", "cursor.b"];

/// The cursor's content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorState {
    /// Write counter.
    pub seq: u64,
    /// Public id of the log this cursor belongs to.
    pub public_log_id: [u8; 32],
    /// Where the next batch starts; everything before was acknowledged (or reported as a gap).
    pub position: Position,
    /// The batch being sent: `[first, last)`.
    pub inflight: Option<(Position, Position)>,
    /// When it was written (ms since the epoch).
    pub written_wall_ms: i64,
}

/// Why a cursor copy was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CursorError {
    /// The file has the wrong size.
    #[error("cursor file is {len} bytes, expected {CURSOR_LEN}")]
    Length {
        /// Size found.
        len: usize,
    },
    /// Wrong magic bytes.
    #[error("cursor file does not start with the magic bytes \"SGLCURSR\"")]
    Magic,
    /// A newer format.
    #[error("cursor format version {found} is newer than this build reads ({max})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Newest supported.
        max: u8,
    },
    /// The checksum does not match.
    #[error("cursor checksum mismatch (the file is damaged)")]
    Checksum,
    /// Reserved bits or bytes are set, or the in-flight range is inverted.
    #[error("cursor file has invalid fields: {0}")]
    Invalid(&'static str),
}

impl CursorError {
    /// Stable short name.
    pub fn code(&self) -> &'static str {
        match self {
            CursorError::Length { .. } => "length",
            CursorError::Magic => "magic",
            CursorError::UnsupportedVersion { .. } => "unsupported_version",
            CursorError::Checksum => "checksum",
            CursorError::Invalid(_) => "invalid",
        }
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_le_bytes(a)
}

fn checksum(b: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(b.get(..CHECKSUM_OFFSET).unwrap_or(b));
    let mut c = [0u8; 8];
    c.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    c
}

impl CursorState {
    /// Encodes the 120-byte file.
    pub fn encode(&self) -> [u8; CURSOR_LEN] {
        let mut b = Vec::with_capacity(CURSOR_LEN);
        b.extend_from_slice(&CURSOR_MAGIC);
        b.push(CURSOR_VERSION);
        b.push(if self.inflight.is_some() {
            FLAG_INFLIGHT
        } else {
            0
        });
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.public_log_id);
        let (f, l) = self.inflight.unwrap_or_default();
        for v in [
            self.position.segment,
            self.position.offset,
            f.segment,
            f.offset,
            l.segment,
            l.offset,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.written_wall_ms.to_le_bytes());
        let c = checksum(&b);
        b.extend_from_slice(&c);
        let mut out = [0u8; CURSOR_LEN];
        out.copy_from_slice(&b);
        out
    }

    /// Decodes a cursor file, checking size, magic, version, checksum and reserved fields.
    pub fn decode(b: &[u8]) -> Result<CursorState, CursorError> {
        if b.len() != CURSOR_LEN {
            return Err(CursorError::Length { len: b.len() });
        }
        if b.get(..8) != Some(&CURSOR_MAGIC[..]) {
            return Err(CursorError::Magic);
        }
        let version = b.get(8).copied().unwrap_or(0);
        if version > CURSOR_VERSION {
            return Err(CursorError::UnsupportedVersion {
                found: version,
                max: CURSOR_VERSION,
            });
        }
        if b.get(CHECKSUM_OFFSET..) != Some(&checksum(b)[..]) {
            return Err(CursorError::Checksum);
        }
        if version == 0 {
            return Err(CursorError::Invalid("version 0"));
        }
        let flags = b.get(9).copied().unwrap_or(0);
        if flags & !FLAG_INFLIGHT != 0 || b.get(10..16).is_some_and(|r| r.iter().any(|&x| x != 0)) {
            return Err(CursorError::Invalid("reserved bits set"));
        }
        let mut public_log_id = [0u8; 32];
        public_log_id.copy_from_slice(b.get(24..56).ok_or(CursorError::Length { len: b.len() })?);
        let p = |at| Position {
            segment: u64_at(b, at),
            offset: u64_at(b, at + 8),
        };
        let position = p(56);
        let inflight = if flags & FLAG_INFLIGHT != 0 {
            let (f, l) = (p(72), p(88));
            if l < f || f < position {
                return Err(CursorError::Invalid(
                    "in-flight range does not follow the position",
                ));
            }
            Some((f, l))
        } else {
            None
        };
        Ok(CursorState {
            seq: u64_at(b, 16),
            public_log_id,
            position,
            inflight,
            written_wall_ms: u64_at(b, 104) as i64,
        })
    }
}

/// What [`CursorStore::load`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// The state to resume from.
    pub state: CursorState,
    /// Problems found (a damaged copy, a cursor of another log...), one sentence each. Empty
    /// when the newest copy was fine.
    pub warnings: Vec<String>,
    /// Whether a cursor existed at all (false on a fresh log).
    pub existed: bool,
}

/// The two cursor copies in a directory.
#[derive(Debug)]
pub struct CursorStore {
    dir: PathBuf,
    last_seq: u64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl CursorStore {
    /// The store in `dir` (created when missing, mode 0700, or 2770 in a shared log).
    pub fn open(dir: &Path) -> std::io::Result<CursorStore> {
        crate::state::ensure_dir(dir)?;
        Ok(CursorStore {
            dir: dir.to_path_buf(),
            last_seq: 0,
        })
    }

    /// Reads both copies and picks the newest valid one of log `public_log_id`. Never fails
    /// on content: damage yields a warning and a fallback (the other copy, else the start of
    /// the log). Only an I/O error other than "not found" is returned.
    pub fn load(&mut self, public_log_id: &[u8; 32]) -> std::io::Result<Loaded> {
        let mut warnings = Vec::new();
        let mut best: Option<CursorState> = None;
        let mut existed = false;
        let mut max_seq = 0;
        for name in COPIES {
            let path = self.dir.join(name);
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            existed = true;
            match CursorState::decode(&bytes) {
                Ok(s) if s.public_log_id != *public_log_id => {
                    max_seq = max_seq.max(s.seq);
                    warnings.push(format!(
                        "{} belongs to another log (public id {}); ignoring it",
                        path.display(),
                        hex::encode(s.public_log_id)
                    ));
                }
                Ok(s) => {
                    max_seq = max_seq.max(s.seq);
                    if best.is_none_or(|b| s.seq > b.seq) {
                        best = Some(s);
                    }
                }
                Err(e) => warnings.push(format!("{} is unusable: {e}", path.display())),
            }
        }
        self.last_seq = max_seq;
        let state = match best {
            Some(s) => {
                if !warnings.is_empty() {
                    warnings.push(format!(
                        "resuming from the other copy (write {}, position {})",
                        s.seq, s.position
                    ));
                }
                s
            }
            None => {
                if existed {
                    warnings.push("no usable cursor copy: starting from the oldest segment".into());
                }
                CursorState {
                    public_log_id: *public_log_id,
                    ..CursorState::default()
                }
            }
        };
        Ok(Loaded {
            state,
            warnings,
            existed,
        })
    }

    /// Persists `state` durably into the older copy (its `seq` is assigned here).
    pub fn store(&mut self, state: &mut CursorState) -> std::io::Result<()> {
        self.last_seq += 1;
        state.seq = self.last_seq;
        state.written_wall_ms = now_ms();
        let name = COPIES
            .get((state.seq % 2) as usize)
            .copied()
            .unwrap_or(COPIES[0]);
        write_atomic(&self.dir, name, &state.encode())
    }
}

/// Replaces `dir/name` atomically and durably: temp file (0600, or 0660 in a shared log),
/// fsync, rename, fsync dir.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    segment_log::Sharing::of_dir(dir)?.replace_file(&dir.join(name), bytes, true)
}

#[cfg(test)]
#[path = "cursor_tests.rs"]
mod tests;
