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
    /// Bytes kept free before the payload column (`cols.payload[..head]`), where
    /// [`BatchEncoder::finish_in_place`] writes the rest of the batch.
    head: usize,
    /// The batch up to the payload column, built by `finish_in_place`.
    prefix: Vec<u8>,
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
    /// The headroom (`BatchEncoder::head` bytes), then the payloads.
    payload: Vec<u8>,
}

impl Columns {
    /// The columns before the payload column.
    fn meta(&self) -> [&Vec<u8>; 9] {
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
        ]
    }
    fn meta_len(&self) -> usize {
        self.meta().iter().map(|c| c.len()).sum()
    }
    /// Empties every column; the payload column keeps its first `head` bytes.
    fn clear(&mut self, head: usize) {
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
        ] {
            c.clear();
        }
        self.payload.truncate(head);
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
        self.cols.clear(self.head);
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
        let cols = self.cols.meta_len() + self.payload_column().len();
        64 + self.contexts.1.len()
            + self.gaps.1.len()
            + self.counters.1.len()
            + self.class_bytes.len()
            + cols
    }

    /// The payloads added, back to back (the last column).
    fn payload_column(&self) -> &[u8] {
        self.cols.payload.get(self.head..).unwrap_or_default()
    }

    /// Keeps at least `bytes` free before the payload column, so that
    /// [`finish_in_place`](BatchEncoder::finish_in_place) can write the rest of the batch
    /// there without moving the payloads (about 64 bytes plus the contexts, gaps, counters,
    /// classifications and 10 to 40 bytes per record). Best called before adding records,
    /// while there is nothing to move. The room is allocated zeroed but not written, so
    /// its untouched part costs address space, not memory.
    pub fn reserve_headroom(&mut self, bytes: usize) {
        if bytes > self.head {
            self.regrow(bytes);
        }
    }

    /// Moves the payloads behind `room` bytes of headroom (one copy).
    fn regrow(&mut self, room: usize) {
        let payload = self.payload_column();
        // Zeroed by the allocator (fresh pages are not written); the payloads' capacity
        // comes along, so the next batches do not grow it again.
        let capacity = self.cols.payload.capacity().saturating_sub(self.head);
        let mut buf = vec![0u8; room + capacity.max(payload.len())];
        buf.truncate(room);
        buf.extend_from_slice(payload);
        self.cols.payload = buf;
        self.head = room;
    }

    fn check_last(&self, last: Position) -> Result<(), ProtocolError> {
        if last < self.first || self.prev.is_some_and(|p| p >= last) {
            return Err(invalid(
                "last position",
                format!("{last} must follow the batch's records"),
            ));
        }
        Ok(())
    }

    /// The batch up to the payload column.
    fn write_prefix(&self, last: Position, out: &mut Vec<u8>) {
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
        for c in self.cols.meta() {
            out.extend_from_slice(c);
        }
    }

    /// Writes the decompressed batch ending at `last` (exclusive) into `out` (cleared first)
    /// and returns its id.
    pub fn finish(&self, last: Position, out: &mut Vec<u8>) -> Result<BatchId, ProtocolError> {
        self.check_last(last)?;
        out.clear();
        out.reserve(self.encoded_len());
        self.write_prefix(last, out);
        out.extend_from_slice(self.payload_column());
        Ok(BatchId::new(&self.public, self.first, last))
    }

    /// [`finish`](BatchEncoder::finish) without copying the payloads: the rest of the batch
    /// is written into the room kept before the payload column, and the batch is returned
    /// as one slice of the encoder's buffer (the same bytes `finish` writes), valid until
    /// the next change. When the room is too small the payloads are moved once, and the
    /// room kept for the following batches grows.
    pub fn finish_in_place(&mut self, last: Position) -> Result<(BatchId, &[u8]), ProtocolError> {
        self.check_last(last)?;
        let mut prefix = std::mem::take(&mut self.prefix);
        prefix.clear();
        self.write_prefix(last, &mut prefix);
        let need = prefix.len();
        if need > self.head {
            // Room for this batch and a quarter more for the next ones.
            self.regrow(need + need / 4);
        }
        let start = self.head - need;
        if let Some(room) = self.cols.payload.get_mut(start..self.head) {
            room.copy_from_slice(&prefix);
        }
        self.prefix = prefix;
        let id = BatchId::new(&self.public, self.first, last);
        Ok((id, self.cols.payload.get(start..).unwrap_or_default()))
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
    add_batch(&mut e, batch)?;
    let mut out = Vec::new();
    e.finish(batch.last, &mut out)?;
    Ok(out)
}

/// Adds `batch`'s contexts, gaps, counters and records to `e`.
pub(crate) fn add_batch(e: &mut BatchEncoder, batch: &Batch) -> Result<(), ProtocolError> {
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
    Ok(())
}

/// Encodes and compresses `batch` (zstd `level`): the HTTP body.
pub fn encode_batch(batch: &Batch, level: i32) -> Result<Vec<u8>, ProtocolError> {
    compress(&encode_batch_raw(batch)?, level)
}

/// Compresses decompressed batch bytes into one zstd frame.
pub fn compress(raw: &[u8], level: i32) -> Result<Vec<u8>, ProtocolError> {
    zstd::bulk::compress(raw, level).map_err(|e| ProtocolError::Decompress(e.to_string()))
}
