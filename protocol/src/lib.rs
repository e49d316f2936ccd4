//! The upload wire protocol, version 1, shared by the uploader (device) and the collector
//! (server): wire primitives, batch encode/decode, limits, verdicts, and the test vector. `PROTOCOL.md` at the repository root is the
//! specification; this crate is its reference implementation, and a test checks the spec's
//! test vector byte for byte against it.
//!
//! The uploader builds batches with [`BatchEncoder`] (columns are appended as records stream
//! in, no per-record allocation) and compresses them with [`compress`]. Servers call
//! [`decode_body`], which never trusts a declared size: the body size, the decompressed size
//! (a streaming decoder behind `Read::take`), the zstd window, every count and every length are
//! bounded by [`Limits`] before anything is allocated.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]
#![forbid(unsafe_code)]

use segment_log::Position;
use sha2::{Digest, Sha256};

mod decode;
mod digest;
mod encode;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod wire;

pub use decode::{decode_batch, decode_batch_raw, decode_body, decompress_body};
pub use digest::{content_digest, digest_matches, verify_content_digest};
pub use encode::{compress, encode_batch, encode_batch_raw, BatchEncoder};

/// Protocol version carried in the URL, the `Seglog-Protocol` header and the body.
pub const PROTOCOL_VERSION: u8 = 1;
/// First four bytes of a decompressed batch.
pub const BATCH_MAGIC: [u8; 4] = *b"SGLB";
/// Header carrying the protocol version.
pub const HEADER_PROTOCOL: &str = "Seglog-Protocol";
/// Header carrying the hex batch id.
pub const HEADER_BATCH_ID: &str = "Seglog-Batch-Id";
/// Content type of a batch body.
pub const CONTENT_TYPE: &str = "application/vnd.seglog.batch";
/// Request header with the RFC 9530 digest of the body as sent (`sha-256=:<base64>:`).
pub const HEADER_CONTENT_DIGEST: &str = "Content-Digest";
/// Response header by which a server confirms that it received the complete body intact
/// before judging it: the RFC 9530 digest of the bytes it read (PROTOCOL.md section 5). The
/// device dead-letters a refused batch only when this equals the digest it sent.
pub const HEADER_RECEIVED_DIGEST: &str = "Seglog-Received-Digest";
/// Largest zstd window a decoder accepts (2^24 = 16 MiB; level 19 needs 2^23).
pub const MAX_WINDOW_LOG: u32 = 24;
/// Longest classification, context key or counter name (the recorder allows 140).
pub const MAX_NAME_BYTES: u64 = 255;
/// Longest context value or gap detail.
pub const MAX_TEXT_BYTES: u64 = 4096;
/// Smallest number of bytes one record occupies across the columns; bounds the record count
/// by the input size before anything is allocated.
pub(crate) const MIN_RECORD_BYTES: u64 = 9;
/// Smallest gap entry: reason (1), start and end (2 each), segments, records, bytes (1 each)
/// and an empty detail (1). PROTOCOL.md section 4.
pub(crate) const MIN_GAP_BYTES: u64 = 9;

/// The path of the upload endpoint below the server's base URL.
pub fn upload_path(private_id: &[u8; 32]) -> String {
    format!(
        "v{PROTOCOL_VERSION}/logs/{}/batches",
        hex::encode(private_id)
    )
}

/// Errors decoding (or building) a batch. Every variant names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// The compressed body is larger than allowed.
    #[error("body of {len} bytes exceeds the limit of {max} bytes")]
    BodyTooLarge {
        /// Body length.
        len: u64,
        /// Limit.
        max: u64,
    },
    /// The body is not valid zstd.
    #[error("body is not a valid zstd stream: {0}")]
    Decompress(String),
    /// Decompression would produce more than allowed.
    #[error("decompressed batch exceeds the limit of {max} bytes")]
    DecompressedTooLarge {
        /// Limit.
        max: u64,
    },
    /// The batch does not start with the magic bytes.
    #[error("batch does not start with the magic bytes \"SGLB\"")]
    BadMagic,
    /// A batch of a newer protocol version.
    #[error("batch protocol version {found} is not supported (this build reads up to {max})")]
    UnsupportedVersion {
        /// Version found.
        found: u8,
        /// Newest supported.
        max: u8,
    },
    /// The batch ended in the middle of a field.
    #[error("batch truncated while reading {what}")]
    Truncated {
        /// Field being read.
        what: &'static str,
    },
    /// A varint longer than 10 bytes, overflowing u64, or not in canonical form.
    #[error("malformed varint in {what}")]
    BadVarint {
        /// Field being read.
        what: &'static str,
    },
    /// A count or length above its limit.
    #[error("{what} is {value}, above the limit of {max}")]
    LimitExceeded {
        /// Field.
        what: &'static str,
        /// Value found.
        value: u64,
        /// Limit.
        max: u64,
    },
    /// A string that is not UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// Field.
        what: &'static str,
    },
    /// A structural rule was broken (order of positions, an index out of range...).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Field.
        what: &'static str,
        /// Which rule, with numbers.
        detail: String,
    },
    /// Bytes left after the last column.
    #[error("{count} unexpected bytes after the end of the batch")]
    TrailingBytes {
        /// How many.
        count: u64,
    },
}

impl ProtocolError {
    /// A stable short name for counters and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProtocolError::BodyTooLarge { .. } => "body_too_large",
            ProtocolError::Decompress(_) => "bad_zstd",
            ProtocolError::DecompressedTooLarge { .. } => "decompressed_too_large",
            ProtocolError::BadMagic => "bad_magic",
            ProtocolError::UnsupportedVersion { .. } => "unsupported_version",
            ProtocolError::Truncated { .. } => "truncated",
            ProtocolError::BadVarint { .. } => "bad_varint",
            ProtocolError::LimitExceeded { .. } => "limit_exceeded",
            ProtocolError::InvalidUtf8 { .. } => "invalid_utf8",
            ProtocolError::Invalid { .. } => "invalid",
            ProtocolError::TrailingBytes { .. } => "trailing_bytes",
        }
    }

    /// Whether the body (rather than the server) is at fault: always true for decoding;
    /// a server answers 400 (or 413 for the size limits).
    pub fn is_too_large(&self) -> bool {
        matches!(
            self,
            ProtocolError::BodyTooLarge { .. }
                | ProtocolError::DecompressedTooLarge { .. }
                | ProtocolError::LimitExceeded { .. }
        )
    }
}

pub(crate) fn invalid(what: &'static str, detail: String) -> ProtocolError {
    ProtocolError::Invalid { what, detail }
}

/// Bounds applied by [`decode_body`]. The defaults are what the reference collector uses and
/// what the uploader's default batch limits stay well inside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed body (default 16 MiB).
    pub max_body_bytes: u64,
    /// Largest decompressed batch (default 64 MiB).
    pub max_decompressed_bytes: u64,
    /// Most records in one batch (default 200 000).
    pub max_records: u64,
    /// Most contexts (default 4096).
    pub max_contexts: u64,
    /// Most fields in one context (default 64).
    pub max_context_fields: u64,
    /// Most gap entries (default 65 536).
    pub max_gaps: u64,
    /// Most counters (default 1024).
    pub max_counters: u64,
    /// Most distinct classifications (default 65 536).
    pub max_classifications: u64,
    /// Largest single payload (default 16 MiB).
    pub max_payload_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_records: 200_000,
            max_contexts: 4096,
            max_context_fields: 64,
            max_gaps: 65_536,
            max_counters: 1024,
            max_classifications: 65_536,
            max_payload_bytes: 16 << 20,
        }
    }
}

/// Deterministic batch id: sha256(public log id || first || last), positions as two u64 LE.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId(pub [u8; 32]);

impl BatchId {
    /// Computes the id of the batch covering `[first, last)` of the log `public_id`.
    pub fn new(public_id: &[u8; 32], first: Position, last: Position) -> Self {
        let mut h = Sha256::new();
        h.update(public_id);
        for v in [first.segment, first.offset, last.segment, last.offset] {
            h.update(v.to_le_bytes());
        }
        BatchId(h.finalize().into())
    }
    /// Lower-case hex, as sent in `Seglog-Batch-Id`.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Display for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl std::fmt::Debug for BatchId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchId({})", self.to_hex())
    }
}

/// Why records are missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GapReason {
    /// Segments were removed (retention) before they were uploaded.
    Trimmed,
    /// A frame failed its checksum or structure checks.
    CorruptFrame,
    /// Space reserved by a writer that crashed before writing it.
    AbandonedReservation,
    /// A segment header was unreadable; the whole segment was skipped.
    BadSegmentHeader,
    /// A segment file was shorter than its header says.
    TruncatedSegment,
    /// A segment could not be read.
    Unreadable,
    /// A whole frame whose record could not be decoded (unknown format, bad fields).
    UndecodableRecord,
    /// The record was larger than a batch may carry.
    OversizedRecord,
    /// A batch the server rejected for good (moved to the dead-letter folder).
    DeadLettered,
    /// A code this version does not know (kept so newer uploaders can add reasons).
    Other(u8),
}

impl GapReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            GapReason::Trimmed => 1,
            GapReason::CorruptFrame => 2,
            GapReason::AbandonedReservation => 3,
            GapReason::BadSegmentHeader => 4,
            GapReason::TruncatedSegment => 5,
            GapReason::Unreadable => 6,
            GapReason::UndecodableRecord => 7,
            GapReason::OversizedRecord => 8,
            GapReason::DeadLettered => 9,
            GapReason::Other(c) => c,
        }
    }
    /// From a wire code (0 is reserved and maps to `Other(0)`).
    pub fn from_code(c: u8) -> Self {
        match c {
            1 => GapReason::Trimmed,
            2 => GapReason::CorruptFrame,
            3 => GapReason::AbandonedReservation,
            4 => GapReason::BadSegmentHeader,
            5 => GapReason::TruncatedSegment,
            6 => GapReason::Unreadable,
            7 => GapReason::UndecodableRecord,
            8 => GapReason::OversizedRecord,
            9 => GapReason::DeadLettered,
            c => GapReason::Other(c),
        }
    }
    /// A stable name.
    pub fn name(self) -> &'static str {
        match self {
            GapReason::Trimmed => "trimmed",
            GapReason::CorruptFrame => "corrupt_frame",
            GapReason::AbandonedReservation => "abandoned_reservation",
            GapReason::BadSegmentHeader => "bad_segment_header",
            GapReason::TruncatedSegment => "truncated_segment",
            GapReason::Unreadable => "unreadable",
            GapReason::UndecodableRecord => "undecodable_record",
            GapReason::OversizedRecord => "oversized_record",
            GapReason::DeadLettered => "dead_lettered",
            GapReason::Other(_) => "other",
        }
    }
}

/// Records that will never arrive, with where and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// Why.
    pub reason: GapReason,
    /// First missing position (inclusive).
    pub start: Position,
    /// Where readable data resumes (exclusive).
    pub end: Position,
    /// Whole segments missing in the range (0 when the damage is inside one segment).
    pub segments: u64,
    /// Records known to be lost (0 = unknown).
    pub records: u64,
    /// Bytes skipped (0 = unknown).
    pub bytes: u64,
    /// Human-readable detail (at most 4096 bytes).
    pub detail: String,
}

/// Facts shared by the records of one writer (machine id, build, kernel...), as key/value
/// pairs in the order the uploader found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// The fields.
    pub fields: Vec<(String, String)>,
}

impl Context {
    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// One record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Where it is in the device's log; with the public log id this identifies it.
    pub position: Position,
    /// Index into [`Batch::contexts`].
    pub context: u32,
    /// `DOMAIN/PROBE/REST`.
    pub classification: String,
    /// 1 (low) to 4 (critical) as written by the recorder.
    pub severity: u8,
    /// Creation time, milliseconds since the Unix epoch (wall clock; a hint).
    pub wall_ms: i64,
    /// Creation time, milliseconds since boot (CLOCK_BOOTTIME) of the boot named by the context.
    pub boot_ms: u64,
    /// Event id shared by the records of one event.
    pub event_id: Option<[u8; 16]>,
    /// The payload.
    pub payload: Vec<u8>,
}

/// A decoded batch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// sha256 of the private log id.
    pub public_log_id: [u8; 32],
    /// Where the batch starts (the uploader's cursor when it built it).
    pub first: Position,
    /// Where the batch ends, exclusive (the cursor after it is acknowledged).
    pub last: Position,
    /// Contexts, referenced by index from the records.
    pub contexts: Vec<Context>,
    /// Ranges that will never arrive.
    pub gaps: Vec<Gap>,
    /// Cumulative device counters (drops by reason...), name and value.
    pub counters: Vec<(String, u64)>,
    /// Records in position order.
    pub records: Vec<Record>,
}

impl Batch {
    /// The deterministic id of this batch.
    pub fn id(&self) -> BatchId {
        BatchId::new(&self.public_log_id, self.first, self.last)
    }
}

/// A record to encode, borrowing its strings and payload.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    /// Position.
    pub position: Position,
    /// Context index returned by [`BatchEncoder::add_context`].
    pub context: u32,
    /// Classification.
    pub classification: &'a str,
    /// Severity.
    pub severity: u8,
    /// Wall-clock time, ms since the Unix epoch.
    pub wall_ms: i64,
    /// Boot-relative time, ms since boot.
    pub boot_ms: u64,
    /// Event id.
    pub event_id: Option<[u8; 16]>,
    /// Payload.
    pub payload: &'a [u8],
}
/// What the uploader does with an HTTP status (PROTOCOL.md, "Responses").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: stored or already stored; advance the cursor.
    Acknowledged,
    /// 413: split the batch in two and send each half.
    Split,
    /// 429 or 503: wait as long as `Retry-After` says (or back off), then resend.
    RetryAfter,
    /// 408, other 5xx, any other non-4xx status, or a transport error: back off, resend.
    Retry,
    /// 401, 403, 404: not the batch's fault (token, URL): stop and report; never dead-letter.
    Configuration,
    /// Other 4xx with [`HEADER_RECEIVED_DIGEST`] equal to the digest sent: the server read the
    /// whole body intact and refuses this batch; after repeated refusals, dead-letter it.
    Rejected,
    /// Other 4xx without that confirmation, and any 415: the server may have judged a body
    /// cut or damaged on the way, or the request's headers, so the batch is not at fault; back
    /// off and resend it (never dead-letter).
    Unconfirmed,
}

/// Classifies a whole answer (PROTOCOL.md section 5): the status, the server's
/// [`HEADER_RECEIVED_DIGEST`] and [`HEADER_PROTOCOL`] response headers, and the
/// `Content-Digest` the device sent. Only a refusal that confirms the body arrived intact is
/// [`Verdict::Rejected`]; a 4xx naming another protocol version is a configuration problem.
pub fn classify(
    status: u16,
    received_digest: Option<&str>,
    server_protocol: Option<&str>,
    sent_digest: &str,
) -> Verdict {
    let v = verdict(status);
    if !(400..=499).contains(&status) {
        return v;
    }
    if let Some(p) = server_protocol {
        let mine = PROTOCOL_VERSION.to_string();
        if !p.split(',').any(|x| x.trim() == mine) {
            return Verdict::Configuration;
        }
    }
    if status == 415 {
        // The device's Content-Type and Content-Encoding are fixed: never the batch's fault.
        return Verdict::Unconfirmed;
    }
    match v {
        Verdict::Rejected if received_digest.is_some_and(|d| digest_matches(d, sent_digest)) => {
            Verdict::Rejected
        }
        Verdict::Rejected => Verdict::Unconfirmed,
        other => other,
    }
}

/// Classifies a status code alone (a 4xx refusal is [`Verdict::Rejected`] here; see
/// [`classify`] for the confirmation that the device requires before dead-lettering).
pub fn verdict(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Acknowledged,
        413 => Verdict::Split,
        429 | 503 => Verdict::RetryAfter,
        408 => Verdict::Retry,
        401 | 403 | 404 => Verdict::Configuration,
        400..=499 => Verdict::Rejected,
        _ => Verdict::Retry,
    }
}

#[cfg(test)]
mod finish_tests;
#[cfg(test)]
pub(crate) mod tests;
