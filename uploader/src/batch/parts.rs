//! The pieces the batch builder streams through: the reader state (with its contexts by
//! writer slot, [`SlotContexts`]), a record carried over to the next batch, and the mapping of contexts and damage to the
//! wire.
use std::sync::Arc;

use recorder::record::{ClassRef, Context, RecordHeader, SlotContexts};
use recorder::Classification;
use segment_log::{DamageReason, Position, Reader};

use super::{Observer, MEMO};
use crate::protocol::{Gap, GapReason};

/// A record read but not yet placed in a batch.
#[derive(Debug, Clone)]
pub(super) struct Carried {
    pub(super) position: Position,
    pub(super) context: Arc<Context>,
    pub(super) class: recorder::Classification,
    pub(super) severity: u8,
    pub(super) wall_ms: i64,
    pub(super) boot_ms: u64,
    pub(super) event_id: Option<[u8; 16]>,
    pub(super) hold_until_ms: Option<i64>,
    pub(super) payload: Vec<u8>,
    pub(super) frame_len: u64,
}

pub(super) enum Pending {
    Record(Carried),
    Gap(Gap),
    Context(Position, Arc<Context>),
}

impl Pending {
    pub(super) fn start(&self) -> Position {
        match self {
            Pending::Record(r) => r.position,
            Pending::Gap(g) => g.start,
            Pending::Context(p, _) => *p,
        }
    }
}

pub(super) struct Stream {
    pub(super) reader: Reader,
    /// The contexts of the segment being read.
    pub(super) contexts: SlotContexts,
    pub(super) carry: Option<Pending>,
    /// Record frames read so far in one segment: (segment, count, position of the last
    /// one), so a trimmed gap starting inside that segment can subtract what was read.
    pub(super) seg_records: Option<(u64, u64, Position)>,
    /// The segment the stream started in, when the record frames before its start could
    /// not all be counted (that segment then gets no count).
    pub(super) uncounted: Option<u64>,
}

/// What a stream that reached the live end knew at its end `position`: the contexts of
/// its segment and its record count there ([`Stream::seg_records`]).
pub(super) struct Resume {
    pub(super) position: Position,
    pub(super) contexts: SlotContexts,
    pub(super) seg_records: Option<(u64, u64, Position)>,
    pub(super) uncounted: Option<u64>,
}

/// Splits `g` at `at` (`g.start < at < g.end`). Whole missing segments before `at`'s segment
/// go to the head, the rest to the tail; a byte count within one segment is split at `at`.
/// The records count goes to the tail; the caller recounts both sides of a trimmed gap
/// from the trim ledger.
pub(super) fn split_gap(g: Gap, at: Position) -> (Gap, Gap) {
    let mut head = Gap {
        end: at,
        detail: g.detail.clone(),
        ..g
    };
    let mut tail = Gap { start: at, ..g };
    head.segments = at.segment.saturating_sub(g.start.segment).min(g.segments);
    tail.segments = g.segments - head.segments;
    head.records = 0;
    if g.start.segment == at.segment {
        head.bytes = g.bytes.min(at.offset.saturating_sub(g.start.offset));
    } else {
        head.bytes = 0;
    }
    tail.bytes = g.bytes - head.bytes;
    (head, tail)
}

/// Notes a frame the stream read (for [`Stream::records_before`]); takes the field, as the
/// frame borrows the stream's reader.
pub(super) fn count_frame(
    seg_records: &mut Option<(u64, u64, Position)>,
    uncounted: Option<u64>,
    p: Position,
    kind: segment_log::FrameKind,
) {
    if uncounted == Some(p.segment) {
        return; // counting from here would miss the frames before the stream's start
    }
    if !seg_records.is_some_and(|(seg, _, _)| seg == p.segment) {
        *seg_records = Some((p.segment, 0, Position::default()));
    }
    if let (Some((_, n, last)), segment_log::FrameKind::Record) = (seg_records, kind) {
        *n += 1;
        *last = p;
    }
}

impl Stream {
    /// Record frames of `p`'s segment before `p`, if this stream read them all.
    pub(super) fn records_before(&self, p: Position) -> Option<u64> {
        if p.offset <= segment_log::format::HEADER_LEN {
            return Some(0);
        }
        let (seg, n, last) = self.seg_records?;
        (seg == p.segment).then(|| n - u64::from(last >= p && n > 0))
    }

    /// Where the logical stream continues.
    pub(super) fn position(&self) -> Position {
        self.carry
            .as_ref()
            .map_or_else(|| self.reader.position(), Pending::start)
    }
}

/// What the builder remembers of record counts (see [`MEMO`]).
impl super::BatchBuilder {
    /// Remembers that `before` record frames of `p`'s segment lie before `p`.
    pub(super) fn remember(&mut self, p: Position, before: u64) {
        if self.memo.iter().any(|&(q, _)| q == p) {
            return;
        }
        if self.memo.len() >= MEMO {
            self.memo.pop_front();
        }
        self.memo.push_back((p, before));
    }

    /// Record frames of `p`'s segment before `p`, if known.
    pub(super) fn records_before(&self, s: &Stream, p: Position) -> Option<u64> {
        s.records_before(p)
            .or_else(|| self.memo.iter().find(|&&(q, _)| q == p).map(|&(_, n)| n))
    }

    /// The records count of a trimmed gap over the missing segments `[first, end.segment)`
    /// starting at `start`.
    pub(super) fn trimmed_count(
        &self,
        s: &Stream,
        notes: &mut dyn Observer,
        start: Position,
        end: Position,
        segments: u64,
    ) -> Option<u64> {
        if segments == 0 {
            return Some(0);
        }
        let first = end.segment.saturating_sub(segments);
        let first = if start.segment > first && start.segment < end.segment {
            start.segment
        } else {
            first
        };
        let count = end.segment.saturating_sub(first);
        let before = (start.segment == first)
            .then(|| self.records_before(s, start))
            .flatten();
        notes.trimmed_records(start, first, count, before)
    }
}

/// Flattens a recorder context into the wire's key/value pairs (PROTOCOL.md 3.3).
pub fn context_fields(c: &Context) -> Vec<(String, String)> {
    let mut f = vec![
        ("machine_id".to_owned(), c.machine_id.clone()),
        ("boot_id".to_owned(), c.boot_id_hex()),
        ("arch".to_owned(), c.arch.clone()),
        ("host_type".to_owned(), c.host_type.clone()),
        ("build".to_owned(), c.build.clone()),
        ("system_name".to_owned(), c.system_name.clone()),
        ("kernel_version".to_owned(), c.kernel_version.clone()),
        ("board_name".to_owned(), c.board_name.clone()),
        ("cpu_model".to_owned(), c.cpu_model.clone()),
        ("bios_version".to_owned(), c.bios_version.clone()),
        (
            "record_format_version".to_owned(),
            c.record_format_version.to_string(),
        ),
    ];
    f.extend(c.extra.iter().cloned());
    f
}

/// Maps a segment-log damage report to a gap reason.
pub fn gap_reason(r: &DamageReason) -> GapReason {
    match r {
        DamageReason::Frame(_) => GapReason::CorruptFrame,
        DamageReason::AbandonedReservation => GapReason::AbandonedReservation,
        DamageReason::BadHeader(_) => GapReason::BadSegmentHeader,
        DamageReason::Truncated => GapReason::TruncatedSegment,
        DamageReason::MissingSegments { .. } => GapReason::Trimmed,
        _ => GapReason::Unreadable,
    }
}

pub(super) const MISSING_CONTEXT: &str =
    "no context frame of the record's writer precedes it in its segment";
pub(super) const BAD_CLASS: &str = "class index outside the context's table";

pub(super) enum Step {
    Bad(Position, String),
    Damage(segment_log::Damage),
}

/// A record about to be placed, borrowing from the reader.
pub(super) struct Candidate<'a> {
    pub(super) position: Position,
    pub(super) context: &'a Arc<Context>,
    pub(super) class: &'a recorder::Classification,
    pub(super) severity: u8,
    pub(super) wall_ms: i64,
    pub(super) boot_ms: u64,
    pub(super) event_id: Option<[u8; 16]>,
    pub(super) hold_until_ms: Option<i64>,
    pub(super) payload: &'a [u8],
    pub(super) frame_len: u64,
}

impl Candidate<'_> {
    pub(super) fn to_owned(&self) -> Carried {
        Carried {
            position: self.position,
            context: self.context.clone(),
            class: self.class.clone(),
            severity: self.severity,
            wall_ms: self.wall_ms,
            boot_ms: self.boot_ms,
            event_id: self.event_id,
            hold_until_ms: self.hold_until_ms,
            payload: self.payload.to_vec(),
            frame_len: self.frame_len,
        }
    }
}

impl Carried {
    pub(super) fn candidate(&self) -> Candidate<'_> {
        Candidate {
            position: self.position,
            context: &self.context,
            class: &self.class,
            severity: self.severity,
            wall_ms: self.wall_ms,
            boot_ms: self.boot_ms,
            event_id: self.event_id,
            hold_until_ms: self.hold_until_ms,
            payload: &self.payload,
            frame_len: self.frame_len,
        }
    }
}

/// Why a batch could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Reading the log failed.
    #[error("reading the log: {0}")]
    Log(#[from] segment_log::Error),
    /// Encoding failed (a bug: records arrive in order).
    #[error("encoding the batch: {0}")]
    Protocol(#[from] crate::protocol::ProtocolError),
    /// Compression failed.
    #[error("compressing the batch: {0}")]
    Io(#[from] std::io::Error),
}

pub(super) fn undecodable(position: Position, end: Position, detail: String) -> Gap {
    Gap {
        reason: GapReason::UndecodableRecord,
        start: position,
        end: end.max(position),
        segments: 0,
        records: 1,
        bytes: 0,
        detail,
    }
}

/// A record header combined with its context, borrowing instead of cloning (the recorder's
/// `RecordHeader::resolve` clones the classification, an atomic increment and decrement per
/// record on the upload hot path). `resolve_matches_the_recorder` checks both agree.
pub(super) struct Meta<'a> {
    pub(super) class: &'a Classification,
    pub(super) wall_ms: i64,
    pub(super) boot_ms: u64,
    pub(super) hold_until_ms: Option<i64>,
}

/// `None` when the class index is outside the context's table.
pub(super) fn resolve<'a>(h: &'a RecordHeader, ctx: &'a Context) -> Option<Meta<'a>> {
    let class = match &h.class {
        ClassRef::Index(i) => ctx.classifications.get(usize::try_from(*i).ok()?)?,
        ClassRef::Inline(c) => c,
    };
    let (wall_ms, boot_ms) = h.times(ctx);
    let hold_until_ms = h.hold_until_wall_ms(wall_ms);
    Some(Meta {
        class,
        wall_ms,
        boot_ms,
        hold_until_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use recorder::record::{EventId, RecordTime, Severity};

    fn context() -> Context {
        let d = tempfile::tempdir().unwrap();
        let r = recorder::Recorder::open(&crate::testutil::config(d.path(), 1 << 20)).unwrap();
        let mut c = r.context();
        c.classifications = vec![
            Classification::new("a/b/c").unwrap(),
            Classification::new("d/e/f").unwrap(),
        ];
        c
    }

    proptest! {
        #[test]
        fn resolve_matches_the_recorder(
            index in 0u32..4,
            inline in any::<bool>(),
            relative in any::<bool>(),
            a in any::<i64>(),
            b in any::<u64>(),
            hold in proptest::option::of(any::<u64>()),
            base_wall in any::<i64>(),
            base_boot in any::<u64>(),
        ) {
            let mut ctx = context();
            ctx.base_wall_ms = base_wall;
            ctx.base_boot_ms = base_boot;
            let h = RecordHeader {
                slot: 0,
                class: if inline { ClassRef::Inline(Classification::new("x/y/z").unwrap()) } else { ClassRef::Index(index) },
                severity: Severity::new(2).unwrap(),
                time: if relative { RecordTime::Relative { boot_delta_ms: b, wall_skew_ms: a } } else { RecordTime::Absolute { wall_ms: a, boot_ms: b } },
                event_id: Some(EventId::from_bytes([1; 16])),
                hold_ms: hold,
            };
            match (h.resolve(&ctx), resolve(&h, &ctx)) {
                (Ok(r), Some(m)) => {
                    prop_assert_eq!(&r.classification, m.class);
                    prop_assert_eq!((r.wall_ms, r.boot_ms, r.hold_until_wall_ms), (m.wall_ms, m.boot_ms, m.hold_until_ms));
                }
                (Err(_), None) => {}
                (r, m) => prop_assert!(false, "recorder {:?} vs ours {:?}", r.is_ok(), m.is_some()),
            }
        }
    }
}
