//! Building batches by streaming records from the log with bounded memory.
//!
//! A [`BatchBuilder`] keeps one segment-log [`Reader`] open across batches, decodes record
//! frames and pairs them with their writer's context (the preamble frames, scoped to their
//! segment) with [`SlotContexts`], and appends them to a [`BatchEncoder`]. Memory is the
//! encoder's columns (bounded by `max_bytes` + `max_records`), the reader's chunk, and one
//! carried-over record: whatever the backlog. The batch is finished around the payload
//! column ([`BatchEncoder::finish_in_place`]) and compressed from there, with no second copy.
//!
//! A reader that reached the live end is not reused (a fresh one sees what was appended
//! since), but what it learnt is: the contexts of its segment and the record frames read in
//! it, so the next pass continues from its end without re-reading the segment from its start
//! (the frames before it do not change; `resume_tests` checks the count under trims and
//! rolled-back counters).
//!
//! A batch covers `[first, last)`. It ends before the first record that does not fit (that
//! record is carried into the next batch), before a record the rate limiter holds back, or at
//! the live end. Building the same range again ([`BatchBuilder::build`] with `until = last`)
//! yields the same records and therefore the same batch id.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use recorder::record::{decode_frame, Context, Decoded, SlotContexts};
use segment_log::format::HEADER_LEN;
use segment_log::{DamageReason, Entry, FrameKind, Position, Reader, ReaderOptions};

use crate::protocol::{BatchEncoder, BatchId, Gap, RecordRef};

pub use body::{encode as encode_body, BodyFormat};
pub use parts::{context_fields, gap_reason, BuildError};
use parts::{undecodable, Candidate, Pending, Resume, Step, Stream, BAD_CLASS, MISSING_CONTEXT};

/// How big a batch may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimits {
    /// Payload bytes (a single larger record still makes a batch of its own).
    pub max_bytes: u64,
    /// Records.
    pub max_records: u64,
    /// Gap entries.
    pub max_gaps: u64,
}

/// Why a batch ended where it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A limit was reached; more records follow.
    Full,
    /// The live end of the log.
    CaughtUp,
    /// The next record is held back by the rate limiter until this wall time (ms).
    Held {
        /// When it may go.
        until_ms: i64,
    },
    /// The requested end position.
    Target,
}

/// A built batch.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its id.
    pub id: BatchId,
    /// Start (inclusive).
    pub first: Position,
    /// End (exclusive): the cursor once it is acknowledged.
    pub last: Position,
    /// The zstd body.
    pub body: Vec<u8>,
    /// Decompressed size.
    pub raw_len: usize,
    /// Records.
    pub records: u64,
    /// Payload bytes.
    pub payload_bytes: u64,
    /// Frame bytes read from the log for these records (headers + payloads).
    pub frame_bytes: u64,
    /// Gaps in the batch.
    pub gaps: Vec<Gap>,
    /// Why it ended.
    pub end: End,
    /// Wall time of its first record.
    pub oldest_wall_ms: Option<i64>,
    /// Record frames of `last`'s segment before `last`, if the builder knows them (kept
    /// with the cursor, so a trimmed gap that starts there can state its exact count).
    pub last_records_before: Option<u64>,
}

impl Built {
    /// Whether there is nothing to send (only context frames in the range).
    pub fn is_empty(&self) -> bool {
        self.records == 0 && self.gaps.is_empty()
    }
}

/// Builds batches from one log directory.
pub struct BatchBuilder {
    dir: PathBuf,
    public: [u8; 32],
    level: i32,
    reader_opts: ReaderOptions,
    enc: BatchEncoder,
    compressor: zstd::bulk::Compressor<'static>,
    last_ctx: Option<(usize, u32)>,
    stream: Option<Stream>,
    resume: Option<Resume>,
    ctx_by_ptr: HashMap<usize, u32>,
    ctx_by_fields: HashMap<Vec<(String, String)>, u32>,
    ctx_keep: Vec<Arc<Context>>,
    frame_bytes: u64,
    oldest: Option<i64>,
    memo: std::collections::VecDeque<(Position, u64)>,
    format: BodyFormat,
    otlp: otlp::Encoder,
    obuf: Vec<u8>,
}

impl std::fmt::Debug for BatchBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchBuilder")
            .field("dir", &self.dir)
            .field("level", &self.level)
            .finish()
    }
}

/// Callbacks for what the builder meets besides records.
pub trait Observer {
    /// Records lost in the missing segments `[first, first + count)`, for a gap that starts
    /// at `start` (inside `first` when the reader had reached a position in it); `before`:
    /// the record frames of `start`'s segment before `start`, when the builder knows them.
    /// `None`: unknown (sent as 0, PROTOCOL.md); the engine answers from the trim ledger.
    fn trimmed_records(
        &mut self,
        start: Position,
        first_segment: u64,
        count: u64,
        before: Option<u64>,
    ) -> Option<u64> {
        let _ = (start, first_segment, count, before);
        None
    }

    /// The device counters the batch carries, taken once its content is known, so they
    /// count what `gaps` (the batch's own gaps) add.
    fn counters(&mut self, gaps: &[Gap]) -> Vec<(String, u64)> {
        let _ = gaps;
        Vec::new()
    }
}

/// How many (position, records before it in its segment) pairs the builder remembers, so a
/// stream reopened at a batch end inside a segment that was trimmed meanwhile still knows
/// how many of the segment's records were read.
const MEMO: usize = 32;

/// An observer that knows nothing.
pub struct NoNotes;
impl Observer for NoNotes {}

impl BatchBuilder {
    /// A builder for the log in `dir` (public id `public`), compressing at `level`.
    pub fn new(
        dir: &Path,
        public: [u8; 32],
        level: i32,
        reader_opts: ReaderOptions,
    ) -> std::io::Result<Self> {
        let compressor = zstd::bulk::Compressor::new(level)?;
        Ok(BatchBuilder {
            dir: dir.to_path_buf(),
            public,
            level,
            reader_opts: ReaderOptions {
                include_preambles: true,
                ..reader_opts
            },
            enc: BatchEncoder::default(),
            compressor,
            last_ctx: None,
            stream: None,
            resume: None,
            ctx_by_ptr: HashMap::new(),
            ctx_by_fields: HashMap::new(),
            ctx_keep: Vec::new(),
            frame_bytes: 0,
            oldest: None,
            memo: std::collections::VecDeque::new(),
            format: BodyFormat::Seglog,
            otlp: otlp::Encoder::new(),
            obuf: Vec::new(),
        })
    }

    fn open_stream(
        &mut self,
        from: Position,
        resume: Option<Resume>,
    ) -> Result<Stream, segment_log::Error> {
        let mut s = Stream {
            reader: Reader::open(&self.dir, from, self.reader_opts.clone())?,
            contexts: SlotContexts::new(),
            carry: None,
            seg_records: None,
            uncounted: None,
        };
        if let Some(r) = resume.filter(|r| r.position == from) {
            // The last build read up to `from` and stopped at the live end: the contexts and
            // the record count of `from`'s segment are what priming would find again (the
            // frames before `from` do not change), without re-reading the segment up to it.
            s.contexts = r.contexts;
            s.contexts.enter(from.segment);
            s.seg_records = r.seg_records;
            s.uncounted = r.uncounted;
        } else if from.offset <= HEADER_LEN {
            s.seg_records = Some((from.segment, 0, Position::default()));
        } else {
            // Records after `from` need the contexts written earlier in its segment.
            let start = Position {
                segment: from.segment,
                offset: HEADER_LEN,
            };
            let mut prime = Reader::open(&self.dir, start, self.reader_opts.clone())?;
            let (mut records, mut last, mut gone, mut reached) =
                (0u64, Position::default(), false, false);
            while let Some(e) = prime.next_entry()? {
                match e {
                    Entry::Frame(f) if f.position.segment != from.segment || f.position >= from => {
                        reached = true;
                        break;
                    }
                    Entry::Frame(f) if f.kind == FrameKind::Preamble => {
                        // A preamble that does not decode leaves its slot as it was, as it
                        // does when read in `fill`.
                        let _ = s.contexts.observe(&f);
                    }
                    Entry::Frame(f) => {
                        if f.kind == FrameKind::Record {
                            records += 1;
                            last = f.position;
                        }
                    }
                    Entry::Damage(d)
                        if matches!(d.reason, DamageReason::MissingSegments { .. }) =>
                    {
                        gone = true;
                        break;
                    }
                    Entry::Damage(d) if d.segment != from.segment || d.offset >= from.offset => {
                        reached = true;
                        break;
                    }
                    Entry::Damage(_) => {}
                }
            }
            s.contexts.enter(from.segment);
            // The reader stops at the segment's reservation counter: one lowered below `from`
            // (rolled back or damaged) hides frames before `from`, so their count is unknown,
            // not `records` (a trimmed gap from there would state too many).
            if !gone && (reached || prime.position() >= from) {
                s.seg_records = Some((from.segment, records, last));
            } else {
                s.uncounted = Some(from.segment);
            }
        }
        if let Some(n) = s.records_before(from) {
            self.remember(from, n);
        }
        Ok(s)
    }

    /// Forgets the open reader and what it knew (the next build reopens at its `from` and
    /// reads that segment's contexts again).
    pub fn reset(&mut self) {
        self.stream = None;
        self.resume = None;
    }

    fn context_index(&mut self, ctx: &Arc<Context>) -> u32 {
        let key = Arc::as_ptr(ctx) as usize;
        if let Some((k, i)) = self.last_ctx {
            if k == key {
                return i;
            }
        }
        if let Some(&i) = self.ctx_by_ptr.get(&key) {
            self.last_ctx = Some((key, i));
            return i;
        }
        let fields = context_fields(ctx);
        let i = match self.ctx_by_fields.get(&fields) {
            Some(&i) => i,
            None => {
                let i = self.enc.add_context(&fields);
                self.ctx_by_fields.insert(fields, i);
                i
            }
        };
        self.ctx_by_ptr.insert(key, i);
        self.ctx_keep.push(ctx.clone()); // keeps the pointer key unique for this batch
        self.last_ctx = Some((key, i));
        i
    }

    /// Builds the batch starting at `from`: at most `limits`, never past `until`, holding
    /// back records whose rate-limit hold ends after `now_ms`.
    pub fn build(
        &mut self,
        from: Position,
        limits: &BatchLimits,
        until: Option<Position>,
        now_ms: i64,
        notes: &mut dyn Observer,
    ) -> Result<Built, BuildError> {
        let resume = self.resume.take();
        let mut stream = match self.stream.take() {
            Some(s) if s.position() == from => s,
            _ => self.open_stream(from, resume)?,
        };
        let r = self.fill(&mut stream, from, limits, until, now_ms, notes);
        // A reader that reached the live end is not reused: segment-log's scanner decides at
        // open whether writers are alive and may keep stale bytes past the old end, so a
        // fresh one reads what was appended since. What it learnt about the frames before
        // the end is kept, so the next pass does not prime from the segment's start.
        match &r {
            Ok(b) if b.end == End::CaughtUp => {
                self.resume = Some(Resume {
                    position: stream.position(),
                    contexts: stream.contexts,
                    seg_records: stream.seg_records,
                    uncounted: stream.uncounted,
                });
            }
            Ok(_) => self.stream = Some(stream),
            Err(_) => {}
        }
        r
    }

    /// Adds a record unless the batch must end before it; returns why it must.
    fn try_add(
        &mut self,
        c: &Candidate<'_>,
        limits: &BatchLimits,
        until: Option<Position>,
        now_ms: i64,
    ) -> Result<Option<End>, BuildError> {
        if until.is_some_and(|u| c.position >= u) {
            return Ok(Some(End::Target));
        }
        if let Some(until_ms) = c.hold_until_ms.filter(|&h| h > now_ms) {
            return Ok(Some(End::Held { until_ms }));
        }
        let n = self.enc.records();
        if n >= limits.max_records
            || (n > 0 && self.enc.payload_bytes() + c.payload.len() as u64 > limits.max_bytes)
        {
            return Ok(Some(End::Full));
        }
        let context = self.context_index(c.context);
        self.enc.add_record(&RecordRef {
            position: c.position,
            context,
            classification: c.class.as_str(),
            severity: c.severity,
            wall_ms: c.wall_ms,
            boot_ms: c.boot_ms,
            event_id: c.event_id,
            payload: c.payload,
        })?;
        self.frame_bytes += c.frame_len;
        self.oldest.get_or_insert(c.wall_ms);
        Ok(None)
    }

    fn fill(
        &mut self,
        s: &mut Stream,
        from: Position,
        limits: &BatchLimits,
        until: Option<Position>,
        now_ms: i64,
        notes: &mut dyn Observer,
    ) -> Result<Built, BuildError> {
        self.enc.reset(self.public, from);
        self.enc.reserve_headroom(body::headroom(limits));
        self.ctx_by_ptr.clear();
        self.ctx_by_fields.clear();
        self.ctx_keep.clear();
        self.last_ctx = None;
        self.frame_bytes = 0;
        self.oldest = None;
        let mut gaps: Vec<Gap> = Vec::new();
        let end = loop {
            let gap = match s.carry.take() {
                Some(Pending::Record(r)) => {
                    match self.try_add(&r.candidate(), limits, until, now_ms)? {
                        None => continue,
                        Some(end) => {
                            s.carry = Some(Pending::Record(r));
                            break end;
                        }
                    }
                }
                Some(Pending::Gap(g)) => g,
                Some(Pending::Context(p, c)) => {
                    if until.is_some_and(|u| p >= u) {
                        s.carry = Some(Pending::Context(p, c));
                        break End::Target;
                    }
                    s.contexts.insert(p.segment, c);
                    continue;
                }
                None => {
                    let before = s.reader.position().max(from);
                    let step = match s.reader.next_entry()? {
                        None => break End::CaughtUp,
                        Some(Entry::Damage(d)) => Step::Damage(d),
                        Some(Entry::Frame(f)) => {
                            parts::count_frame(&mut s.seg_records, s.uncounted, f.position, f.kind);
                            // `insert` and `context_for` enter the frame's segment.
                            let seg = f.position.segment;
                            match decode_frame(f.kind, f.payload) {
                                Ok(Decoded::Context(c)) => {
                                    let c = Arc::new(*c);
                                    if until.is_some_and(|u| f.position >= u) {
                                        s.carry = Some(Pending::Context(f.position, c));
                                        break End::Target;
                                    }
                                    s.contexts.insert(seg, c);
                                    continue;
                                }
                                Ok(Decoded::Record { header, payload }) => {
                                    let found = s
                                        .contexts
                                        .context_for(seg, header.slot)
                                        .map_err(|_| MISSING_CONTEXT)
                                        .and_then(|(_, c)| {
                                            parts::resolve(&header, c)
                                                .map(|m| (c, m))
                                                .ok_or(BAD_CLASS)
                                        });
                                    match found {
                                        Ok((context, m)) => {
                                            let cand = Candidate {
                                                position: f.position,
                                                context,
                                                class: m.class,
                                                severity: header.severity.get(),
                                                wall_ms: m.wall_ms,
                                                boot_ms: m.boot_ms,
                                                event_id: header.event_id.map(|e| *e.as_bytes()),
                                                hold_until_ms: m.hold_until_ms,
                                                payload,
                                                frame_len: f.payload.len() as u64,
                                            };
                                            match self.try_add(&cand, limits, until, now_ms)? {
                                                None => continue,
                                                Some(end) => {
                                                    s.carry =
                                                        Some(Pending::Record(cand.to_owned()));
                                                    break end;
                                                }
                                            }
                                        }
                                        Err(why) => Step::Bad(f.position, why.to_owned()),
                                    }
                                }
                                Err(e) => Step::Bad(f.position, e.to_string()),
                            }
                        }
                    };
                    let after = s.reader.position();
                    match step {
                        Step::Bad(pos, detail) => undecodable(pos, after, detail),
                        Step::Damage(d) => {
                            let start = before.max(Position {
                                segment: d.segment,
                                offset: d.offset,
                            });
                            let mut g = Gap {
                                reason: gap_reason(&d.reason),
                                start,
                                end: after.max(start),
                                segments: 0,
                                records: 0,
                                bytes: d.len,
                                detail: d.to_string(),
                            };
                            if let DamageReason::MissingSegments { count } = d.reason {
                                g.segments = count;
                                g.records = self
                                    .trimmed_count(s, notes, start, g.end, count)
                                    .unwrap_or(0);
                            }
                            g
                        }
                    }
                }
            };
            if until.is_some_and(|u| gap.start >= u) {
                s.carry = Some(Pending::Gap(gap));
                break End::Target;
            }
            if gaps.len() as u64 >= limits.max_gaps {
                s.carry = Some(Pending::Gap(gap));
                break End::Full;
            }
            // Rebuilding an in-flight range over data that disappeared since (retention removed
            // segments): the batch still ends at `until`, so it keeps its id and a collector
            // that stored the first send drops it; the rest of the gap opens the next batch.
            if let Some(u) = until.filter(|&u| gap.end > u) {
                let total = gap.records;
                let (mut head, mut tail) = parts::split_gap(gap, u);
                if head.reason == crate::protocol::GapReason::Trimmed && total > 0 {
                    // Each side states its own records: the tail's from the ledger and the
                    // records before `u`, the head the rest (when the tail's are unknown, the
                    // tail keeps the whole count, which is never too low).
                    let t = self.trimmed_count(s, notes, tail.start, tail.end, tail.segments);
                    if let Some(t) = t.filter(|&t| t <= total) {
                        (head.records, tail.records) = (total - t, t);
                    }
                }
                self.enc.add_gap(&head);
                gaps.push(head);
                s.carry = Some(Pending::Gap(tail));
                break End::Target;
            }
            self.enc.add_gap(&gap);
            gaps.push(gap);
        };
        for (k, v) in notes.counters(&gaps) {
            self.enc.add_counter(&k, v);
        }
        // A rebuilt range never ends past `until`, even when what lay before it is gone.
        let last = s.position().max(from);
        let last = until.map_or(last, |u| last.min(u).max(from));
        let last_records_before = self.records_before(s, last);
        if let Some(n) = last_records_before {
            self.remember(last, n);
        }
        let empty = self.enc.records() == 0 && gaps.is_empty();
        // The batch in the encoder's own buffer (no copy of the payloads).
        let (id, raw) = self.enc.finish_in_place(last)?;
        let (body, raw_len) = if empty {
            (Vec::new(), raw.len())
        } else {
            body::wire_body(
                raw,
                self.format,
                self.level,
                &mut self.compressor,
                &mut self.otlp,
                &mut self.obuf,
            )?
        };
        Ok(Built {
            id,
            first: from,
            last,
            body,
            raw_len,
            records: self.enc.records(),
            payload_bytes: self.enc.payload_bytes(),
            frame_bytes: self.frame_bytes,
            gaps,
            end,
            oldest_wall_ms: self.oldest,
            last_records_before,
        })
    }
}

mod body;
mod parts;

#[cfg(test)]
mod resume_tests;
#[cfg(test)]
mod tests;
