//! Building batches: [`BatchEncoder`] appends records to per-field columns as they stream in.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::collections::HashMap;

use segment_log::Position;

use super::{
    invalid, Batch, BatchId, Gap, ProtocolError, RecordRef, BATCH_MAGIC, MAX_NAME_BYTES,
    MAX_TEXT_BYTES, PROTOCOL_VERSION,
};
use crate::wire::{put_bytes, put_uvarint, zigzag};

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
        let d_wall = r.wall_ms.wrapping_sub(self.prev_wall);
        put_uvarint(&mut c.wall, zigzag(d_wall));
        let d_boot = r
            .boot_ms
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
        self.prev_wall = r.wall_ms;
        self.prev_boot = r.boot_ms;
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
            wall_ms: r.wall_ms,
            boot_ms: r.boot_ms,
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
