//! Reading records back: [`ContextTracker`] pairs records with their writer's context (the
//! rule itself is [`SlotContexts`]), and [`RecordReader`] does that over a log directory.

use std::path::Path;
use std::sync::Arc;

use segment_log::format::{SegmentHeader, HEADER_LEN};
use segment_log::{Damage, Entry, FrameKind, FrameRef, LogId, Position, Reader, ReaderOptions};

use super::codec::DecodeError;
use super::contexts::{SlotContexts, SlotFrame};
use super::{Context, RecordHeader, RecordId, Resolved};

/// Why a record frame could not be turned into a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The frame does not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No context of the record's slot precedes it in its segment (its preamble was damaged
    /// or the segment was cut).
    #[error("record of writer slot {slot} has no context frame before it in its segment")]
    MissingContext {
        /// The slot.
        slot: u32,
    },
    /// The class index is outside the context's table.
    #[error("class index {index} is outside the context's table of {len} classifications")]
    ClassIndex {
        /// The index.
        index: u32,
        /// The table's length.
        len: usize,
    },
}

impl ResolveError {
    /// A stable short code for skip counters.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::Decode(e) => e.code(),
            ResolveError::MissingContext { .. } => "missing_context",
            ResolveError::ClassIndex { .. } => "class_index",
        }
    }
}

/// A record read back, with its context. The payload is borrowed from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Where it is.
    pub position: Position,
    /// Its id.
    pub id: RecordId,
    /// Header fields resolved against the context.
    pub meta: Resolved,
    /// The header as stored.
    pub header: RecordHeader,
    /// The writer's context.
    pub context: Arc<Context>,
    /// The payload.
    pub payload: &'a [u8],
}

/// Pairs records with their contexts and resolves them: [`SlotContexts`] (the context
/// rule) plus [`RecordHeader::resolve`] and [`RecordId::derive`]. Feed it every frame of a
/// log in position order (preambles included); contexts are scoped to their segment.
///
/// Each record costs a sha256 (its id) and a clone of its context's `Arc` and
/// classification; hot paths that need neither use [`SlotContexts`] directly.
#[derive(Debug, Default, Clone)]
pub struct ContextTracker {
    contexts: SlotContexts,
}

/// What [`ContextTracker::observe`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed<'a> {
    /// A context frame, now tracked for its slot.
    Context(Arc<Context>),
    /// A record, resolved against its context.
    Record(RecordView<'a>),
}

impl ContextTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// The context a slot currently has, if any.
    pub fn context(&self, slot: u32) -> Option<&Arc<Context>> {
        self.contexts.get(slot)
    }

    /// Observes one frame. A preamble updates the tracked context of its slot; a record is
    /// resolved against its slot's context, or the error says why it cannot be.
    pub fn observe<'a>(
        &mut self,
        frame: &FrameRef<'a>,
        public_log_id: &[u8; 32],
    ) -> Result<Observed<'a>, ResolveError> {
        match self.contexts.observe(frame)? {
            SlotFrame::Context(ctx) => Ok(Observed::Context(ctx.clone())),
            SlotFrame::Record {
                header,
                payload,
                context,
                ..
            } => {
                let meta = header.resolve(context)?;
                Ok(Observed::Record(RecordView {
                    position: frame.position,
                    id: RecordId::derive(public_log_id, frame.position),
                    meta,
                    header,
                    context: context.clone(),
                    payload,
                }))
            }
        }
    }
}

/// What a [`RecordReader`] found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordEntry<'a> {
    /// A record.
    Record(RecordView<'a>),
    /// A frame that holds no readable record, and why (counted as a corrupt skip).
    Skipped {
        /// Where the frame is.
        position: Position,
        /// Why it was skipped.
        error: ResolveError,
    },
    /// A writer's context (preamble frame); records after it in the segment resolve
    /// against it. Most consumers ignore these.
    Context {
        /// Where the frame is.
        position: Position,
        /// The context.
        context: Arc<Context>,
    },
    /// A damaged or missing range reported by segment-log.
    Damage(Damage),
}

/// Reads records of a log directory in position order, resolving contexts. Read-only, like
/// [`segment_log::Reader`], which it wraps; returns `None` at the live end (call again to
/// tail).
pub struct RecordReader {
    inner: Reader,
    tracker: ContextTracker,
    public_id: [u8; 32],
}

impl std::fmt::Debug for RecordReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordReader")
            .field("position", &self.inner.position())
            .finish()
    }
}

/// The public log id of `dir`: from `log-id` if present, else from a segment header.
pub(crate) fn public_log_id(dir: &Path) -> Result<[u8; 32], segment_log::Error> {
    if let Some(id) = LogId::load(dir)? {
        return Ok(id.public());
    }
    let seg_dir = dir.join(segment_log::fs::SEGMENTS_DIR);
    for n in segment_log::fs::live_segments(&seg_dir)? {
        let path = seg_dir.join(segment_log::fs::segment_file_name(
            n,
            segment_log::fs::SEG_EXT,
        ));
        let Ok(bytes) = std::fs::read(&path).map(|mut b| {
            b.truncate(HEADER_LEN as usize);
            b
        }) else {
            continue;
        };
        if let Ok(h) = SegmentHeader::decode(&bytes) {
            return Ok(h.log_id);
        }
    }
    Err(segment_log::Error::NotALog {
        path: dir.to_path_buf(),
    })
}

impl RecordReader {
    /// Opens a reader at `from` (`Position::default()` for the oldest record). When `from`
    /// is inside a segment, the contexts written earlier in that segment are read first, so
    /// records after `from` resolve.
    pub fn open(
        dir: impl AsRef<Path>,
        from: Position,
        opts: ReaderOptions,
    ) -> Result<Self, segment_log::Error> {
        let dir = dir.as_ref();
        let public_id = public_log_id(dir)?;
        let mut tracker = ContextTracker::new();
        if from.offset > HEADER_LEN {
            let start = Position {
                segment: from.segment,
                offset: HEADER_LEN,
            };
            let mut prime = Reader::open(
                dir,
                start,
                ReaderOptions {
                    include_preambles: true,
                    ..opts.clone()
                },
            )?;
            while let Some(e) = prime.next_entry()? {
                match e {
                    Entry::Frame(f) if f.position.segment != from.segment || f.position >= from => {
                        break
                    }
                    Entry::Frame(f) if f.kind == FrameKind::Preamble => {
                        let _ = tracker.observe(&f, &public_id);
                    }
                    Entry::Frame(_) => {}
                    Entry::Damage(d) if d.segment != from.segment || d.offset >= from.offset => {
                        break
                    }
                    Entry::Damage(_) => {}
                }
            }
        }
        let inner = Reader::open(
            dir,
            from,
            ReaderOptions {
                include_preambles: true,
                ..opts
            },
        )?;
        Ok(RecordReader {
            inner,
            tracker,
            public_id,
        })
    }

    /// The log's public id.
    pub fn public_log_id(&self) -> &[u8; 32] {
        &self.public_id
    }

    /// The position after the last entry returned (where to resume).
    pub fn position(&self) -> Position {
        self.inner.position()
    }

    /// The next record, context, skipped frame or damaged range; `None` at the live end.
    pub fn next_entry(&mut self) -> Result<Option<RecordEntry<'_>>, segment_log::Error> {
        let Some(entry) = self.inner.next_entry()? else {
            return Ok(None);
        };
        Ok(Some(match entry {
            Entry::Damage(d) => RecordEntry::Damage(d),
            Entry::Frame(f) => match self.tracker.observe(&f, &self.public_id) {
                Ok(Observed::Record(view)) => RecordEntry::Record(view),
                Ok(Observed::Context(context)) => RecordEntry::Context {
                    position: f.position,
                    context,
                },
                Err(error) => RecordEntry::Skipped {
                    position: f.position,
                    error,
                },
            },
        }))
    }
}
