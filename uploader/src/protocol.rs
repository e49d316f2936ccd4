//! The upload wire protocol, version 1. `PROTOCOL.md` at the repository root is the
//! specification; this module is its reference implementation, and a test checks the spec's
//! test vector byte for byte against it.
//!
//! The uploader builds batches with [`BatchEncoder`] (columns are appended as records stream
//! in, no per-record allocation) and compresses them with [`compress`]. Servers call
//! [`decode_body`], which never trusts a declared size: the body size, the decompressed size
//! (a streaming decoder behind `Read::take`), the zstd window, every count and every length are
//! bounded by [`Limits`] before anything is allocated.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Read;

use segment_log::Position;
use sha2::{Digest, Sha256};

use crate::wire::{put_bytes, put_uvarint, unzigzag, zigzag, Input};

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
/// Largest zstd window a decoder accepts (2^24 = 16 MiB; level 19 needs 2^23).
pub const MAX_WINDOW_LOG: u32 = 24;
/// Longest classification, context key or counter name (the recorder allows 140).
pub const MAX_NAME_BYTES: u64 = 255;
/// Longest context value or gap detail.
pub const MAX_TEXT_BYTES: u64 = 4096;
/// Smallest number of bytes one record occupies across the columns; bounds the record count
/// by the input size before anything is allocated.
const MIN_RECORD_BYTES: u64 = 9;

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

fn invalid(what: &'static str, detail: String) -> ProtocolError {
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
    /// Creation time, ns since the Unix epoch (wall clock; a hint).
    pub wall_ns: i64,
    /// Creation time, ns since boot (CLOCK_BOOTTIME) of the boot named by the context.
    pub boot_ns: u64,
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
    /// Wall-clock time, ns.
    pub wall_ns: i64,
    /// Boot-relative time, ns.
    pub boot_ns: u64,
    /// Event id.
    pub event_id: Option<[u8; 16]>,
    /// Payload.
    pub payload: &'a [u8],
}

/// Builds the decompressed bytes of a batch incrementally: each record is appended to the
/// columns at once, so memory is the encoded size of the batch. Reusable with [`reset`].
///
/// [`reset`]: BatchEncoder::reset
#[derive(Debug, Default)]
pub struct BatchEncoder {
    public: [u8; 32],
    first: Position,
    contexts: (u64, Vec<u8>),
    gaps: (u64, Vec<u8>),
    counters: (u64, Vec<u8>),
    classes: HashMap<Box<str>, u32>,
    class_bytes: Vec<u8>,
    last_class: Option<(Box<str>, u32)>,
    cols: Columns,
    records: u64,
    prev: Option<Position>,
    prev_wall: i64,
    prev_boot: u64,
    payload_bytes: u64,
}

#[derive(Debug, Default)]
struct Columns {
    position: Vec<u8>,
    context: Vec<u8>,
    class: Vec<u8>,
    severity: Vec<u8>,
    wall: Vec<u8>,
    boot: Vec<u8>,
    event_flag: Vec<u8>,
    event_id: Vec<u8>,
    len: Vec<u8>,
    payload: Vec<u8>,
}

impl Columns {
    fn all(&self) -> [&Vec<u8>; 10] {
        [
            &self.position,
            &self.context,
            &self.class,
            &self.severity,
            &self.wall,
            &self.boot,
            &self.event_flag,
            &self.event_id,
            &self.len,
            &self.payload,
        ]
    }
    fn clear(&mut self) {
        for c in [
            &mut self.position,
            &mut self.context,
            &mut self.class,
            &mut self.severity,
            &mut self.wall,
            &mut self.boot,
            &mut self.event_flag,
            &mut self.event_id,
            &mut self.len,
            &mut self.payload,
        ] {
            c.clear();
        }
    }
}

impl BatchEncoder {
    /// A new batch of log `public_id` starting at `first`.
    pub fn new(public_id: [u8; 32], first: Position) -> Self {
        let mut e = BatchEncoder::default();
        e.reset(public_id, first);
        e
    }

    /// Starts a new batch, keeping allocated buffers.
    pub fn reset(&mut self, public_id: [u8; 32], first: Position) {
        self.public = public_id;
        self.first = first;
        for (n, b) in [&mut self.contexts, &mut self.gaps, &mut self.counters] {
            *n = 0;
            b.clear();
        }
        self.classes.clear();
        self.class_bytes.clear();
        self.last_class = None;
        self.cols.clear();
        self.records = 0;
        self.prev = None;
        self.prev_wall = 0;
        self.prev_boot = 0;
        self.payload_bytes = 0;
    }

    /// Adds a context and returns its index.
    pub fn add_context<K: AsRef<str>, V: AsRef<str>>(&mut self, fields: &[(K, V)]) -> u32 {
        let (n, b) = &mut self.contexts;
        put_uvarint(b, fields.len() as u64);
        for (k, v) in fields {
            put_bytes(b, clip(k.as_ref(), MAX_NAME_BYTES).as_bytes());
            put_bytes(b, clip(v.as_ref(), MAX_TEXT_BYTES).as_bytes());
        }
        *n += 1;
        (*n - 1) as u32
    }

    /// Number of contexts added.
    pub fn contexts(&self) -> u32 {
        self.contexts.0 as u32
    }

    /// Adds a gap entry.
    pub fn add_gap(&mut self, g: &Gap) {
        let (n, b) = &mut self.gaps;
        b.push(g.reason.code());
        for v in [
            g.start.segment,
            g.start.offset,
            g.end.segment,
            g.end.offset,
            g.segments,
            g.records,
            g.bytes,
        ] {
            put_uvarint(b, v);
        }
        put_bytes(b, clip(&g.detail, MAX_TEXT_BYTES).as_bytes());
        *n += 1;
    }

    /// Number of gaps added.
    pub fn gaps(&self) -> u64 {
        self.gaps.0
    }

    /// Adds a counter.
    pub fn add_counter(&mut self, name: &str, value: u64) {
        let (n, b) = &mut self.counters;
        put_bytes(b, clip(name, MAX_NAME_BYTES).as_bytes());
        put_uvarint(b, value);
        *n += 1;
    }

    fn class_index(&mut self, class: &str) -> u32 {
        if let Some((c, i)) = &self.last_class {
            if **c == *class {
                return *i;
            }
        }
        let i = match self.classes.get(class) {
            Some(&i) => i,
            None => {
                let i = self.classes.len() as u32;
                put_bytes(&mut self.class_bytes, class.as_bytes());
                self.classes.insert(class.into(), i);
                i
            }
        };
        self.last_class = Some((class.into(), i));
        i
    }

    /// Appends a record. Positions must increase and lie at or after `first`; the context
    /// must exist; the classification must be at most 255 bytes.
    pub fn add_record(&mut self, r: &RecordRef<'_>) -> Result<(), ProtocolError> {
        let floor = self.prev.unwrap_or(self.first);
        if r.position < floor || (self.prev.is_some() && r.position == floor) {
            return Err(invalid(
                "record position",
                format!("{} does not follow {floor}", r.position),
            ));
        }
        if u64::from(r.context) >= self.contexts.0 {
            return Err(invalid(
                "context index",
                format!("{} but {} contexts", r.context, self.contexts.0),
            ));
        }
        if r.classification.len() as u64 > MAX_NAME_BYTES {
            return Err(ProtocolError::LimitExceeded {
                what: "classification length",
                value: r.classification.len() as u64,
                max: MAX_NAME_BYTES,
            });
        }
        let class = self.class_index(r.classification);
        let c = &mut self.cols;
        let seg_delta = r.position.segment - floor.segment;
        put_uvarint(&mut c.position, seg_delta);
        put_uvarint(
            &mut c.position,
            if seg_delta == 0 {
                r.position.offset - floor.offset
            } else {
                r.position.offset
            },
        );
        put_uvarint(&mut c.context, u64::from(r.context));
        put_uvarint(&mut c.class, u64::from(class));
        c.severity.push(r.severity);
        let d_wall = r.wall_ns.wrapping_sub(self.prev_wall);
        put_uvarint(&mut c.wall, zigzag(d_wall));
        let d_boot = r
            .boot_ns
            .wrapping_sub(self.prev_boot)
            .wrapping_sub(d_wall as u64);
        put_uvarint(&mut c.boot, zigzag(d_boot as i64));
        match r.event_id {
            Some(id) => {
                c.event_flag.push(1);
                c.event_id.extend_from_slice(&id);
            }
            None => c.event_flag.push(0),
        }
        put_uvarint(&mut c.len, r.payload.len() as u64);
        c.payload.extend_from_slice(r.payload);
        self.prev = Some(r.position);
        self.prev_wall = r.wall_ns;
        self.prev_boot = r.boot_ns;
        self.records += 1;
        self.payload_bytes += r.payload.len() as u64;
        Ok(())
    }

    /// Records added.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Payload bytes added.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// Where the batch starts.
    pub fn first(&self) -> Position {
        self.first
    }

    /// Position of the last record added.
    pub fn last_record(&self) -> Option<Position> {
        self.prev
    }

    /// The size [`finish`](BatchEncoder::finish) will produce, within a few bytes.
    pub fn encoded_len(&self) -> usize {
        let cols: usize = self.cols.all().iter().map(|c| c.len()).sum();
        64 + self.contexts.1.len()
            + self.gaps.1.len()
            + self.counters.1.len()
            + self.class_bytes.len()
            + cols
    }

    /// Writes the decompressed batch ending at `last` (exclusive) into `out` (cleared first)
    /// and returns its id.
    pub fn finish(&self, last: Position, out: &mut Vec<u8>) -> Result<BatchId, ProtocolError> {
        if last < self.first || self.prev.is_some_and(|p| p >= last) {
            return Err(invalid(
                "last position",
                format!("{last} must follow the batch's records"),
            ));
        }
        out.clear();
        out.reserve(self.encoded_len());
        out.extend_from_slice(&BATCH_MAGIC);
        out.push(PROTOCOL_VERSION);
        out.push(0); // flags, reserved
        out.extend_from_slice(&self.public);
        for v in [
            self.first.segment,
            self.first.offset,
            last.segment,
            last.offset,
        ] {
            put_uvarint(out, v);
        }
        for (n, b) in [&self.contexts, &self.gaps, &self.counters] {
            put_uvarint(out, *n);
            out.extend_from_slice(b);
        }
        put_uvarint(out, self.classes.len() as u64);
        out.extend_from_slice(&self.class_bytes);
        put_uvarint(out, self.records);
        for c in self.cols.all() {
            out.extend_from_slice(c);
        }
        Ok(BatchId::new(&self.public, self.first, last))
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn clip(s: &str, max: u64) -> &str {
    let max = max as usize;
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

/// Encodes `batch` to its decompressed bytes.
pub fn encode_batch_raw(batch: &Batch) -> Result<Vec<u8>, ProtocolError> {
    let mut e = BatchEncoder::new(batch.public_log_id, batch.first);
    for c in &batch.contexts {
        e.add_context(&c.fields);
    }
    for g in &batch.gaps {
        e.add_gap(g);
    }
    for (k, v) in &batch.counters {
        e.add_counter(k, *v);
    }
    for r in &batch.records {
        e.add_record(&RecordRef {
            position: r.position,
            context: r.context,
            classification: &r.classification,
            severity: r.severity,
            wall_ns: r.wall_ns,
            boot_ns: r.boot_ns,
            event_id: r.event_id,
            payload: &r.payload,
        })?;
    }
    let mut out = Vec::new();
    e.finish(batch.last, &mut out)?;
    Ok(out)
}

/// Encodes and compresses `batch` (zstd `level`): the HTTP body.
pub fn encode_batch(batch: &Batch, level: i32) -> Result<Vec<u8>, ProtocolError> {
    compress(&encode_batch_raw(batch)?, level)
}

/// Compresses decompressed batch bytes into one zstd frame.
pub fn compress(raw: &[u8], level: i32) -> Result<Vec<u8>, ProtocolError> {
    zstd::bulk::compress(raw, level).map_err(|e| ProtocolError::Decompress(e.to_string()))
}

/// Decompresses a body with hard caps: at most `limits.max_body_bytes` in, at most
/// `limits.max_decompressed_bytes` out, zstd window at most 2^[`MAX_WINDOW_LOG`].
pub fn decompress_body(body: &[u8], limits: &Limits) -> Result<Vec<u8>, ProtocolError> {
    if body.len() as u64 > limits.max_body_bytes {
        return Err(ProtocolError::BodyTooLarge {
            len: body.len() as u64,
            max: limits.max_body_bytes,
        });
    }
    let mut dec = zstd::stream::read::Decoder::with_buffer(body)
        .map_err(|e| ProtocolError::Decompress(e.to_string()))?;
    dec.window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| ProtocolError::Decompress(e.to_string()))?;
    let cap = limits.max_decompressed_bytes;
    // The initial capacity trusts nothing declared: a small multiple of the body, capped.
    let mut out = Vec::with_capacity(
        (body.len().saturating_mul(8))
            .min(cap as usize)
            .min(8 << 20),
    );
    dec.take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ProtocolError::Decompress(e.to_string()))?;
    if out.len() as u64 > cap {
        return Err(ProtocolError::DecompressedTooLarge { max: cap });
    }
    Ok(out)
}

/// Decodes an HTTP body: bounded decompression, then [`decode_batch_raw`].
pub fn decode_body(body: &[u8], limits: &Limits) -> Result<Batch, ProtocolError> {
    decode_batch_raw(&decompress_body(body, limits)?, limits)
}

/// Alias of [`decode_body`] under the name the spec uses.
pub fn decode_batch(body: &[u8], limits: &Limits) -> Result<Batch, ProtocolError> {
    decode_body(body, limits)
}

fn position(i: &mut Input<'_>, what: &'static str) -> Result<Position, ProtocolError> {
    Ok(Position {
        segment: i.uvarint(what)?,
        offset: i.uvarint(what)?,
    })
}

fn fit(i: &Input<'_>, n: u64, min_each: u64, what: &'static str) -> Result<usize, ProtocolError> {
    if n.saturating_mul(min_each) > i.remaining() as u64 {
        return Err(ProtocolError::Truncated { what });
    }
    usize::try_from(n).map_err(|_| ProtocolError::Truncated { what })
}

/// Decodes decompressed batch bytes, checking every count, length, index and ordering rule.
pub fn decode_batch_raw(raw: &[u8], limits: &Limits) -> Result<Batch, ProtocolError> {
    let mut i = Input::new(raw);
    if i.array::<4>("magic")? != BATCH_MAGIC {
        return Err(ProtocolError::BadMagic);
    }
    let version = i.u8("version")?;
    if version != PROTOCOL_VERSION {
        return Err(ProtocolError::UnsupportedVersion {
            found: version,
            max: PROTOCOL_VERSION,
        });
    }
    let flags = i.u8("flags")?;
    if flags != 0 {
        return Err(invalid(
            "flags",
            format!("{flags:#04x}, must be 0 in version 1"),
        ));
    }
    let mut b = Batch {
        public_log_id: i.array("public log id")?,
        ..Batch::default()
    };
    b.first = position(&mut i, "first position")?;
    b.last = position(&mut i, "last position")?;
    if b.last < b.first {
        return Err(invalid(
            "last position",
            format!("{} is before first {}", b.last, b.first),
        ));
    }

    let n = i.count("context count", limits.max_contexts)?;
    b.contexts.reserve_exact(fit(&i, n, 1, "contexts")?);
    for _ in 0..n {
        let nf = i.count("context field count", limits.max_context_fields)?;
        let mut fields = Vec::with_capacity(fit(&i, nf, 2, "context fields")?);
        for _ in 0..nf {
            let k = i.str("context key", MAX_NAME_BYTES)?.to_owned();
            let v = i.str("context value", MAX_TEXT_BYTES)?.to_owned();
            fields.push((k, v));
        }
        b.contexts.push(Context { fields });
    }

    let n = i.count("gap count", limits.max_gaps)?;
    b.gaps.reserve_exact(fit(&i, n, 13, "gaps")?);
    for _ in 0..n {
        let reason = GapReason::from_code(i.u8("gap reason")?);
        let start = position(&mut i, "gap start")?;
        let end = position(&mut i, "gap end")?;
        let (segments, records, bytes) = (
            i.uvarint("gap segments")?,
            i.uvarint("gap records")?,
            i.uvarint("gap bytes")?,
        );
        let detail = i.str("gap detail", MAX_TEXT_BYTES)?.to_owned();
        if start > end || start < b.first || end > b.last {
            return Err(invalid(
                "gap range",
                format!("{start}..{end} outside the batch {}..{}", b.first, b.last),
            ));
        }
        b.gaps.push(Gap {
            reason,
            start,
            end,
            segments,
            records,
            bytes,
            detail,
        });
    }

    let n = i.count("counter count", limits.max_counters)?;
    b.counters.reserve_exact(fit(&i, n, 2, "counters")?);
    for _ in 0..n {
        let k = i.str("counter name", MAX_NAME_BYTES)?.to_owned();
        b.counters.push((k, i.uvarint("counter value")?));
    }

    let n = i.count("classification count", limits.max_classifications)?;
    let mut classes = Vec::with_capacity(fit(&i, n, 1, "classifications")?);
    for _ in 0..n {
        classes.push(i.str("classification", MAX_NAME_BYTES)?);
    }

    let n = i.count("record count", limits.max_records)?;
    let n = fit(&i, n, MIN_RECORD_BYTES, "records")?;
    let mut recs: Vec<Record> = Vec::with_capacity(n);
    let mut prev: Option<Position> = None;
    for _ in 0..n {
        let floor = prev.unwrap_or(b.first);
        let seg_delta = i.uvarint("record segment delta")?;
        let off = i.uvarint("record offset")?;
        let segment = floor
            .segment
            .checked_add(seg_delta)
            .ok_or_else(|| invalid("record position", "segment overflows".into()))?;
        let offset = if seg_delta == 0 {
            floor
                .offset
                .checked_add(off)
                .ok_or_else(|| invalid("record position", "offset overflows".into()))?
        } else {
            off
        };
        let p = Position { segment, offset };
        if prev.is_some_and(|q| p <= q) || p >= b.last {
            return Err(invalid(
                "record position",
                format!("{p} out of order or not before last {}", b.last),
            ));
        }
        prev = Some(p);
        recs.push(Record {
            position: p,
            context: 0,
            classification: String::new(),
            severity: 0,
            wall_ns: 0,
            boot_ns: 0,
            event_id: None,
            payload: Vec::new(),
        });
    }
    for r in recs.iter_mut() {
        let c = i.uvarint("record context")?;
        if c >= b.contexts.len() as u64 {
            return Err(invalid(
                "record context",
                format!("index {c} but {} contexts", b.contexts.len()),
            ));
        }
        r.context = c as u32;
    }
    for r in recs.iter_mut() {
        let c = i.uvarint("record classification")?;
        let s = usize::try_from(c).ok().and_then(|c| classes.get(c));
        let s = s.ok_or_else(|| {
            invalid(
                "record classification",
                format!("index {c} but {} classifications", classes.len()),
            )
        })?;
        r.classification = (*s).to_owned();
    }
    for r in recs.iter_mut() {
        r.severity = i.u8("record severity")?;
    }
    let mut prev_wall = 0i64;
    for r in recs.iter_mut() {
        prev_wall = prev_wall.wrapping_add(unzigzag(i.uvarint("record wall time")?));
        r.wall_ns = prev_wall;
    }
    let (mut prev_wall, mut prev_boot) = (0i64, 0u64);
    for r in recs.iter_mut() {
        let d_wall = r.wall_ns.wrapping_sub(prev_wall);
        let adj = unzigzag(i.uvarint("record boot time")?) as u64;
        prev_boot = prev_boot.wrapping_add(d_wall as u64).wrapping_add(adj);
        r.boot_ns = prev_boot;
        prev_wall = r.wall_ns;
    }
    let flags = i.take(n, "event flags")?;
    for (r, &f) in recs.iter_mut().zip(flags) {
        match f {
            0 => {}
            1 => r.event_id = Some([0; 16]),
            f => return Err(invalid("event flag", format!("{f}, must be 0 or 1"))),
        }
    }
    for r in recs.iter_mut() {
        if let Some(id) = r.event_id.as_mut() {
            *id = i.array("event id")?;
        }
    }
    let mut lens = Vec::with_capacity(n);
    let mut total: u64 = 0;
    for _ in 0..n {
        let l = i.count("payload length", limits.max_payload_bytes)?;
        total = total.saturating_add(l);
        lens.push(l as usize);
    }
    if total != i.remaining() as u64 {
        return Err(invalid(
            "payloads",
            format!("lengths sum to {total} but {} bytes remain", i.remaining()),
        ));
    }
    for (r, l) in recs.iter_mut().zip(lens) {
        r.payload = i.take(l, "payload")?.to_vec();
    }
    if i.remaining() != 0 {
        return Err(ProtocolError::TrailingBytes {
            count: i.remaining() as u64,
        });
    }
    b.records = recs;
    Ok(b)
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
    /// Other 4xx: the server refuses this batch; after repeated refusals, dead-letter it.
    Rejected,
}

/// Classifies a status code.
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
#[path = "protocol_tests.rs"]
pub(crate) mod tests;
