//! # segment-log
//!
//! The storage engine of seglog: a crash-safe, multi-writer, segmented append log.
//!
//! Probes in many processes and threads append records to rotating, preallocated,
//! memory-mapped segment files. Each record is a frame with a crc32c checksum and a sync
//! marker; readers verify every frame, resynchronise after damage and report what they
//! skipped. The byte layout is specified in `FORMAT.md` at the repository root.
//!
//! ```
//! use segment_log::{Log, Options, Reader, ReaderOptions, Entry, Position};
//! let dir = tempfile::tempdir()?;
//! let log = Log::open(dir.path(), Options::default())?;
//! let pos = log.append(b"hello")?;
//! let mut reader = Reader::open(dir.path(), Position::default(), ReaderOptions::default())?;
//! match reader.next_entry()? {
//!     Some(Entry::Frame(f)) => { assert_eq!(f.payload, b"hello"); assert_eq!(f.position, pos) }
//!     other => panic!("{other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Guarantees
//! - **Append is cheap**: one atomic `fetch_add` on a counter in the mapped segment header,
//!   a checksum and a copy. No locks, no syscalls, except when rotating to the next segment,
//!   which a background thread allocates and pre-faults ahead of time.
//! - **Many writers**: any number of threads and processes append to one directory; every
//!   record is whole and appears once; one writer's records keep their order.
//! - **Crash safety**: a process killed at any point loses at most the records it was
//!   writing; readers skip the hole it leaves. [`SyncPolicy`] decides what survives power loss.
//! - **No SIGBUS on a full disk**: segments are allocated before they are mapped, so a full
//!   disk is an [`Error::NoSpace`] from `append`, and appends resume once space is freed.
//! - **Order is by position** ([`Position`]: segment number, then offset); times are hints.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod chunk;
pub mod clock;
pub mod close_mark;
mod crc;
mod error;
pub mod format;
pub mod fs;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod ledger;
pub mod perms;
mod reader;
mod recovery;
mod reserve;
pub mod retention;
mod scan;
pub mod seal_count;
mod segment;
mod thread_sched;
mod writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use error::{Error, Result};
pub use format::FrameKind;
pub use fs::{Clock, LogId, SystemClock};
pub use perms::Sharing;
pub use reader::{Entry, FrameRef, OwnedEntry, OwnedFrame, Reader, ReaderOptions};
pub use retention::{stats, RetentionPolicy, RetentionReport, Stats};
pub use scan::{written_end, Damage, DamageReason};
pub use writer::Log;

/// Where a frame is: segment number, then byte offset in the segment file. Positions order
/// records; the record id shown to humans is derived from it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    /// Segment number (u64, never reused).
    pub segment: u64,
    /// Byte offset of the frame in the segment file.
    pub offset: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// What survives power loss (every policy survives a process crash).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// Never sync; the kernel writes back on its own schedule (about 30 s).
    #[default]
    Never,
    /// A background thread syncs at this interval (group commit); appends never wait.
    Interval(Duration),
    /// Every append returns only after its frame was synced (msync) to disk.
    Always,
}

impl FromStr for SyncPolicy {
    type Err = String;
    /// Parses `never`, `always`, or `interval=<ms>` (also `interval=250ms`).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "never" => Ok(SyncPolicy::Never),
            "always" => Ok(SyncPolicy::Always),
            _ => {
                let ms = s
                    .strip_prefix("interval=")
                    .map(|v| v.trim_end_matches("ms"))
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&ms| ms > 0)
                    .ok_or_else(|| {
                        format!("invalid sync policy {s:?}: use never, always or interval=<ms> (ms > 0)")
                    })?;
                Ok(SyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// How a [`Log`] is opened.
#[derive(Clone)]
pub struct Options {
    /// Size of each segment file, header included (default 16 MiB: at about a million
    /// 100-byte records per second that is one rotation per ~0.13 s, and small enough that
    /// retention trims in fine steps). Must be a multiple of 4096.
    pub segment_size: u64,
    /// Largest record accepted (default 1 MiB). Must fit in a segment.
    pub max_record_size: u64,
    /// What survives power loss.
    pub sync: SyncPolicy,
    /// Mode of the log directory when this open creates it, or when it exists and is not
    /// group-writable (default 0o700, applied whatever the umask). A group-writable mode
    /// (0o2770) makes a shared log ([`perms`]); the mode of an existing shared log
    /// directory is left alone.
    pub dir_mode: u32,
    /// Group of the log directory when this open creates it (default: the creator's).
    pub dir_group: Option<u32>,
    /// Allocate and pre-fault the next segment in a background thread (default true).
    pub prepare_ahead: bool,
    /// If set, the background thread trims after each rotation so probes alone keep the
    /// directory within budget.
    pub retention: Option<RetentionPolicy>,
    /// Time source (injectable for tests).
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("segment_size", &self.segment_size)
            .field("max_record_size", &self.max_record_size)
            .field("sync", &self.sync)
            .field("dir_mode", &format_args!("{:o}", self.dir_mode))
            .field("dir_group", &self.dir_group)
            .field("prepare_ahead", &self.prepare_ahead)
            .field("retention", &self.retention)
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_size: 16 << 20,
            max_record_size: 1 << 20,
            sync: SyncPolicy::Never,
            dir_mode: 0o700,
            dir_group: None,
            prepare_ahead: true,
            retention: None,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Options {
    fn validate(&self) -> Result<()> {
        let min = 2 * 4096;
        if self.segment_size < min || !self.segment_size.is_multiple_of(4096) {
            return Err(Error::InvalidOptions(format!(
                "segment_size {} must be a multiple of 4096 and at least {min}",
                self.segment_size
            )));
        }
        if self.segment_size > format::MAX_SEGMENT_CAPACITY {
            return Err(Error::InvalidOptions(format!(
                "segment_size {} exceeds the format's maximum {}",
                self.segment_size,
                format::MAX_SEGMENT_CAPACITY
            )));
        }
        let fits = self.segment_size - format::HEADER_LEN - format::FRAME_HEADER_LEN;
        let max = self.max_record_size;
        if max == 0 || max > format::MAX_PAYLOAD_LEN || format::frame_len(max) > fits / 2 {
            return Err(Error::InvalidOptions(format!(
                "max_record_size {max} must be between 1 and {} and at most half a segment",
                format::MAX_PAYLOAD_LEN
            )));
        }
        if self.dir_mode & 0o700 != 0o700 {
            return Err(Error::InvalidOptions(format!(
                "dir_mode {:o} must give the owner rwx",
                self.dir_mode
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod chunk_tests;
#[cfg(test)]
mod footprint_tests;
#[cfg(test)]
mod format_vector_test;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod trim_tests;
#[cfg(test)]
mod trim_vector_test;
