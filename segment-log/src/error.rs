//! Errors of the storage engine.

use std::io;
use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The disk (or the process's file size limit, or a quota) is full. Appends resume once
    /// space is freed.
    #[error("no space to allocate {}: {source}; free disk space or lower max_bytes", path.display())]
    NoSpace {
        /// The segment that could not be allocated.
        path: PathBuf,
        /// The OS error (ENOSPC, EFBIG or EDQUOT).
        #[source]
        source: io::Error,
    },
    /// The file system holding the log cannot reserve space for a segment (`fallocate(2)`
    /// fails with EOPNOTSUPP). Segments are written through a memory mapping, and only space
    /// reserved before mapping turns a full disk into an error instead of a SIGBUS, so seglog
    /// refuses to write there rather than emulate the reservation.
    #[error("cannot reserve space for {}: the file system does not support fallocate ({source}); put the log on a file system that does (ext4, xfs, btrfs, tmpfs)", path.display())]
    AllocationUnsupported {
        /// The segment that could not be allocated.
        path: PathBuf,
        /// The OS error (EOPNOTSUPP).
        #[source]
        source: io::Error,
    },
    /// A record is longer than the configured maximum.
    #[error("record of {len} bytes exceeds max_record_size of {max} bytes")]
    RecordTooLarge {
        /// Length of the refused record.
        len: u64,
        /// The configured limit.
        max: u64,
    },
    /// A batch does not fit in one segment.
    #[error("batch of {len} bytes does not fit in one segment ({max} bytes usable); split it")]
    BatchTooLarge {
        /// Bytes the batch needs.
        len: u64,
        /// Bytes a segment offers.
        max: u64,
    },
    /// A segment was written by a newer seglog.
    #[error("{}: segment format version {found} is newer than this seglog supports ({max}); upgrade seglog", path.display())]
    UnsupportedVersion {
        /// The segment file.
        path: PathBuf,
        /// Version found.
        found: u32,
        /// Newest version supported.
        max: u32,
    },
    /// A segment header is damaged.
    #[error("{}: {reason}", path.display())]
    CorruptHeader {
        /// The segment file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A previous sync failed, so what is on disk is unknown; reopen the log.
    #[error("the log is poisoned by an earlier sync failure; reopen it")]
    Poisoned,
    /// Options that cannot work together.
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// This user may not write (or read) the log directory. The message names the directory,
    /// its group and mode, and what to do (join the group, or use a log of one's own).
    #[error("{message}")]
    NoAccess {
        /// The log directory.
        path: PathBuf,
        /// The group to join, when the log is shared.
        group: Option<String>,
        /// The whole sentence.
        message: String,
    },
    /// The directory is not a seglog log.
    #[error("{} is not a seglog log directory (no segments/ or log-id); check --dir", path.display())]
    NotALog {
        /// The directory.
        path: PathBuf,
    },
}

impl Error {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EFBIG) | Some(libc::EDQUOT) => {
                Error::NoSpace { path, source }
            }
            _ => Error::Io { op, path, source },
        }
    }

    /// A stable short name for counters, `status` output and exit-code mapping.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io { .. } => "io",
            Error::NoSpace { .. } => "no_space",
            Error::AllocationUnsupported { .. } => "allocation_unsupported",
            Error::RecordTooLarge { .. } => "record_too_large",
            Error::BatchTooLarge { .. } => "batch_too_large",
            Error::UnsupportedVersion { .. } => "unsupported_version",
            Error::CorruptHeader { .. } => "corrupt_header",
            Error::Poisoned => "poisoned",
            Error::InvalidOptions(_) => "invalid_options",
            Error::NotALog { .. } => "not_a_log",
            Error::NoAccess { .. } => "no_access",
        }
    }

    /// Whether the error is about damaged data on disk.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::CorruptHeader { .. })
    }

    /// Whether retrying the same call later can succeed (for example after freeing disk).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NoSpace { .. } | Error::Io { .. })
    }
}
