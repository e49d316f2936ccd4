//! Errors of [`Recorder::open`](crate::Recorder::open) and
//! [`Recorder::record`](crate::Recorder::record).
use std::path::PathBuf;
use std::time::Duration;

use crate::record::ValidationError;

/// Why [`Recorder::open`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The log could not be opened.
    #[error("cannot open the log: {0}")]
    Log(#[from] segment_log::Error),
    /// A recorder state file (slot, machine secret, rate limit state) failed.
    #[error("recorder state in {}: {source}", path.display())]
    State {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration does not work.
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Why [`Recorder::record`] refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// A field is invalid.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The payload is larger than the log accepts.
    #[error("payload of {len} bytes exceeds the maximum of {max} bytes (log.max_record_size minus the record header); split it or raise log.max_record_size")]
    PayloadTooLarge {
        /// Payload length.
        len: usize,
        /// Largest payload accepted.
        max: usize,
    },
    /// Over a rate limit with strategy `drop` (the record was counted as dropped).
    #[error("rate limit reached: at most {max} {what} per {} (recorder.{key}); record dropped", humantime::format_duration(*window))]
    RateLimited {
        /// `records` or `bytes`.
        what: &'static str,
        /// The config key of the limit.
        key: &'static str,
        /// The limit.
        max: u64,
        /// The window.
        window: Duration,
    },
    /// The context does not fit in a record (too many or too long classifications).
    #[error("the writer context of {len} bytes exceeds log.max_record_size ({max} bytes)")]
    ContextTooLarge {
        /// Encoded context length.
        len: usize,
        /// The limit.
        max: u64,
    },
    /// Appending failed.
    #[error(transparent)]
    Log(#[from] segment_log::Error),
    /// The shared rate limit state could not be read or written.
    #[error("rate limit state: {0}")]
    State(#[source] std::io::Error),
}

impl RecordError {
    /// The offending field for invalid input (`classification`, `severity`, `event_id`,
    /// `payload`), else `None`.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            RecordError::Invalid(v) => Some(v.field()),
            RecordError::PayloadTooLarge { .. } => Some("payload"),
            _ => None,
        }
    }

    /// A stable short code.
    pub fn code(&self) -> &'static str {
        match self {
            RecordError::Invalid(v) => v.code(),
            RecordError::PayloadTooLarge { .. } => "payload_too_large",
            RecordError::RateLimited { what: "bytes", .. } => "rate_limit_bytes",
            RecordError::RateLimited { .. } => "rate_limit_records",
            RecordError::ContextTooLarge { .. } => "context_too_large",
            RecordError::Log(e) => e.code(),
            RecordError::State(_) => "state_io",
        }
    }

    /// Whether the record was refused by a rate limit.
    pub fn is_rate_limited(&self) -> bool {
        matches!(self, RecordError::RateLimited { .. })
    }

    /// Whether the log could not allocate space (full disk, file size limit or quota):
    /// retrying the same record later succeeds once space is freed.
    pub fn is_no_space(&self) -> bool {
        matches!(self, RecordError::Log(segment_log::Error::NoSpace { .. }))
    }
}
