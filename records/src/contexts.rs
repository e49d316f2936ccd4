//! The context rule, implemented once: a record's context is the latest context (preamble)
//! frame of its writer slot **in its segment**, in position order.
//!
//! [`SlotContexts`] is that rule and nothing more: it is scoped to one segment (entering
//! another forgets every context), finds a slot's context in O(1), and allocates only when a
//! context frame arrives, never per record. Everything that pairs records with contexts is
//! built on it: [`ContextTracker`](crate::ContextTracker) (and through it
//! [`RecordReader`](crate::RecordReader)), the uploader's batch builder and the journal.

use std::collections::HashMap;
use std::sync::Arc;

use segment_log::FrameRef;

use crate::codec::{decode_frame, Decoded};
use crate::{Context, RecordHeader, ResolveError};

/// Writer slots a log hands out: a writer holds one of `0..MAX_SLOTS` while it is open (the
/// recorder's slot locks; `recorder::MAX_SLOTS` is checked against this at compile time).
///
/// [`SlotContexts`] keeps the contexts of these slots in a table indexed by slot (at most
/// `MAX_SLOTS` entries, 16 bytes each); any other slot number (a foreign or damaged writer,
/// a crafted frame) goes to a map, so a hostile slot number cannot grow the table.
pub const MAX_SLOTS: u32 = 4096;

#[derive(Debug, Clone)]
struct Entry {
    serial: u64,
    context: Arc<Context>,
}

/// The contexts of the segment being read, by writer slot: the one implementation of the
/// context rule, *a record's context is the latest context frame of its slot in its segment,
/// in position order*.
///
/// Scoped to one segment: entering another forgets every context. Slots below
/// [`MAX_SLOTS`] are found in O(1) in a table indexed by slot; other slot numbers in a map.
/// Memory is bounded by the contexts one segment holds; a record costs no allocation.
///
/// Feed it the frames of a log in position order, preambles included, with
/// [`observe`](Self::observe); or decode them yourself ([`decode_frame`]) and call
/// [`insert`](Self::insert) for a context and [`context_for`](Self::context_for) for a
/// record, as the journal and the uploader do on their hot paths (that saves moving the
/// decoded header through [`SlotFrame`], about 20 instructions a record). Both enter the
/// frame's segment themselves, so a frame that does not decode can simply be skipped.
///
/// Contexts are shared ([`Arc`]): a caller that keeps one past the next context of its
/// slot clones the `Arc`; one that only borrows it per record pays no reference count.
///
/// Each inserted context gets a *serial*, a counter over the tracker's whole life (not
/// reset by a new segment): two records with the same serial have the very same context, so
/// renderers can reuse work done for it.
#[derive(Debug, Default, Clone)]
pub struct SlotContexts {
    segment: Option<u64>,
    direct: Vec<Option<Entry>>,
    other: HashMap<u32, Entry>,
    serial: u64,
}

/// What [`SlotContexts::observe`] found in a frame. The context is borrowed from the
/// tracker, the payload from the frame.
#[derive(Debug)]
pub enum SlotFrame<'c, 'f> {
    /// A context frame, now the context of its slot.
    Context(&'c Arc<Context>),
    /// A record frame and its slot's current context (not yet resolved against it: see
    /// [`RecordHeader::resolve`]).
    Record {
        /// The record's header as stored.
        header: RecordHeader,
        /// The record's payload.
        payload: &'f [u8],
        /// The context of the record's slot.
        context: &'c Arc<Context>,
        /// The context's serial.
        serial: u64,
    },
}

impl SlotContexts {
    /// An empty tracker, in no segment yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The segment being tracked, if any frame was seen.
    #[inline]
    pub fn segment(&self) -> Option<u64> {
        self.segment
    }

    /// Makes `segment` the current one. Entering a segment other than the current one
    /// forgets every context (they belong to their segment); returns whether it did.
    #[inline]
    pub fn enter(&mut self, segment: u64) -> bool {
        if self.segment == Some(segment) {
            return false;
        }
        self.switch_to(segment);
        true
    }

    #[cold]
    fn switch_to(&mut self, segment: u64) {
        self.segment = Some(segment);
        self.direct.clear();
        self.other.clear();
    }

    /// Makes `context` the context of its slot in `segment` (entered first, see
    /// [`enter`](Self::enter)); returns its serial.
    pub fn insert(&mut self, segment: u64, context: Arc<Context>) -> u64 {
        self.enter(segment);
        self.put(context).serial
    }

    fn put(&mut self, context: Arc<Context>) -> &Entry {
        self.serial += 1;
        let slot = context.slot;
        let entry = Entry {
            serial: self.serial,
            context,
        };
        if slot < MAX_SLOTS {
            let i = slot as usize;
            if self.direct.len() <= i {
                self.direct.resize_with(i + 1, || None);
            }
            if let Some(e) = self.direct.get_mut(i) {
                return e.insert(entry);
            }
        }
        match self.other.entry(slot) {
            std::collections::hash_map::Entry::Occupied(mut o) => {
                o.insert(entry);
                o.into_mut()
            }
            std::collections::hash_map::Entry::Vacant(v) => v.insert(entry),
        }
    }

    #[inline]
    fn entry(&self, slot: u32) -> Option<&Entry> {
        if slot < MAX_SLOTS {
            self.direct.get(slot as usize).and_then(Option::as_ref)
        } else {
            self.other.get(&slot)
        }
    }

    /// The current context of `slot` in the current segment.
    #[inline]
    pub fn get(&self, slot: u32) -> Option<&Arc<Context>> {
        self.entry(slot).map(|e| &e.context)
    }

    /// The current context of `slot` and its serial.
    #[inline]
    pub fn get_with_serial(&self, slot: u32) -> Option<(u64, &Arc<Context>)> {
        self.entry(slot).map(|e| (e.serial, &e.context))
    }

    /// The context of a record of `slot` in `segment` (entered first, see
    /// [`enter`](Self::enter)) and its serial: the latest context of that slot inserted
    /// since the segment was entered, or [`ResolveError::MissingContext`].
    #[inline]
    pub fn context_for(
        &mut self,
        segment: u64,
        slot: u32,
    ) -> Result<(u64, &Arc<Context>), ResolveError> {
        self.enter(segment);
        self.get_with_serial(slot)
            .ok_or(ResolveError::MissingContext { slot })
    }

    /// Observes one frame, in position order: enters its segment and decodes it; a context
    /// becomes the context of its slot, a record is paired with its slot's context. Errors:
    /// the frame does not decode ([`ResolveError::Decode`], also for a frame kind that is
    /// neither record nor preamble), or no context of the record's slot precedes it in its
    /// segment ([`ResolveError::MissingContext`]).
    #[inline]
    pub fn observe<'c, 'f>(
        &'c mut self,
        frame: &FrameRef<'f>,
    ) -> Result<SlotFrame<'c, 'f>, ResolveError> {
        self.enter(frame.position.segment);
        match decode_frame(frame.kind, frame.payload)? {
            Decoded::Context(ctx) => {
                let entry = self.put(Arc::from(ctx));
                Ok(SlotFrame::Context(&entry.context))
            }
            Decoded::Record { header, payload } => {
                let (serial, context) = self.context_for(frame.position.segment, header.slot)?;
                Ok(SlotFrame::Record {
                    header,
                    payload,
                    context,
                    serial,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;
    use segment_log::{FrameKind, Position};

    use super::*;
    use crate::{
        encode_context, encode_record, ClassRef, Classification, ContextTracker, DecodeError,
        Observed, RecordId, RecordTime, Severity,
    };

    fn frame(position: Position, kind: FrameKind, payload: &[u8]) -> FrameRef<'_> {
        FrameRef {
            position,
            kind,
            payload,
        }
    }

    fn p(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }

    fn context(slot: u32, machine: &str) -> Context {
        Context {
            slot,
            generation: 0,
            record_format_version: 2,
            machine_id: machine.into(),
            boot_id: [0xb0; 16],
            arch: "x86_64".into(),
            host_type: "blank".into(),
            build: "1".into(),
            system_name: "os".into(),
            kernel_version: "6.1".into(),
            board_name: "board".into(),
            cpu_model: "cpu".into(),
            bios_version: "bios".into(),
            base_wall_ms: 1000,
            base_boot_ms: 0,
            classifications: vec![Classification::new("a/b/c").unwrap()],
            extra: Vec::new(),
        }
    }

    fn ctx_bytes(slot: u32, machine: &str) -> Vec<u8> {
        encode_context(&context(slot, machine)).unwrap()
    }

    fn record_bytes(slot: u32, class: u32) -> Vec<u8> {
        let header = RecordHeader {
            slot,
            class: ClassRef::Index(class),
            severity: Severity::new(2).unwrap(),
            time: RecordTime::Relative {
                boot_delta_ms: 10,
                wall_skew_ms: 0,
            },
            event_id: None,
            hold_ms: None,
        };
        let mut out = Vec::new();
        encode_record(&header, b"body", &mut out).unwrap();
        out
    }

    /// The machine id and serial of the context `observe` paired a record with.
    fn record_context(
        cx: &mut SlotContexts,
        at: Position,
        bytes: &[u8],
    ) -> Result<(String, u64), ResolveError> {
        match cx.observe(&frame(at, FrameKind::Record, bytes))? {
            SlotFrame::Record {
                context, serial, ..
            } => Ok((context.machine_id.clone(), serial)),
            SlotFrame::Context(_) => panic!("record expected"),
        }
    }

    const ID: [u8; 32] = [9; 32];

    #[test]
    fn records_resolve_against_the_latest_context_of_their_slot_in_their_segment() {
        let mut cx = SlotContexts::new();
        let (c0, c7) = (ctx_bytes(0, "zero"), ctx_bytes(7, "seven"));
        let c0_new = ctx_bytes(0, "zero-rotated");
        for (at, bytes, machine) in [(p(1, 256), &c0, "zero"), (p(1, 300), &c7, "seven")] {
            match cx.observe(&frame(at, FrameKind::Preamble, bytes)) {
                Ok(SlotFrame::Context(c)) => assert_eq!(c.machine_id, machine),
                other => panic!("context expected, got {other:?}"),
            }
        }
        let (r0, r7) = (record_bytes(0, 0), record_bytes(7, 0));
        match cx.observe(&frame(p(1, 400), FrameKind::Record, &r7)) {
            Ok(SlotFrame::Record {
                header,
                payload,
                context,
                serial,
            }) => {
                assert_eq!(context.machine_id, "seven");
                assert_eq!(serial, 2);
                assert_eq!(payload, b"body");
                let meta = header.resolve(context).unwrap();
                assert_eq!(meta.classification.as_str(), "a/b/c");
                assert_eq!(meta.wall_ms, 1010);
            }
            other => panic!("record expected, got {other:?}"),
        }
        assert_eq!(
            record_context(&mut cx, p(1, 450), &r0).unwrap(),
            ("zero".into(), 1)
        );
        cx.observe(&frame(p(1, 500), FrameKind::Preamble, &c0_new))
            .unwrap();
        assert_eq!(
            record_context(&mut cx, p(1, 600), &r0).unwrap(),
            ("zero-rotated".into(), 3),
            "a replaced context gets a new serial"
        );
        // A new segment starts without contexts, for small and huge slots alike.
        let e = record_context(&mut cx, p(2, 256), &r0).unwrap_err();
        assert!(matches!(e, ResolveError::MissingContext { slot: 0 }), "{e}");
        assert_eq!(cx.segment(), Some(2));
        assert!(cx.get(7).is_none());
    }

    #[test]
    fn a_huge_slot_number_does_not_grow_the_slot_vector() {
        let mut cx = SlotContexts::new();
        for slot in [MAX_SLOTS, u32::MAX] {
            let c = ctx_bytes(slot, "far");
            cx.observe(&frame(p(1, 256), FrameKind::Preamble, &c))
                .unwrap();
            assert!(cx.direct.is_empty());
            let got = record_context(&mut cx, p(1, 512), &record_bytes(slot, 0));
            assert_eq!(got.unwrap().0, "far");
        }
        assert_eq!(cx.other.len(), 2);
        // The largest direct slot takes the table to its bound, never past it.
        let c = ctx_bytes(MAX_SLOTS - 1, "last");
        cx.observe(&frame(p(1, 600), FrameKind::Preamble, &c))
            .unwrap();
        assert_eq!(cx.direct.len(), MAX_SLOTS as usize);
        assert_eq!(cx.get(MAX_SLOTS - 1).unwrap().machine_id, "last");
        // Entering another segment forgets both.
        assert!(cx.enter(2));
        assert!(cx.direct.is_empty() && cx.other.is_empty());
        assert!(
            !cx.enter(2),
            "entering the current segment again keeps its contexts"
        );
    }

    #[test]
    fn an_undecodable_context_frame_keeps_the_slot_s_context() {
        let mut cx = SlotContexts::new();
        cx.observe(&frame(p(1, 256), FrameKind::Preamble, &ctx_bytes(3, "m")))
            .unwrap();
        let mut bad = ctx_bytes(3, "other");
        bad.truncate(bad.len() / 2);
        let e = cx
            .observe(&frame(p(1, 512), FrameKind::Preamble, &bad))
            .unwrap_err();
        assert!(matches!(e, ResolveError::Decode(_)), "{e}");
        let e = cx
            .observe(&frame(p(1, 600), FrameKind::Seal, b"seal"))
            .unwrap_err();
        assert!(
            matches!(e, ResolveError::Decode(DecodeError::UnexpectedKind { .. })),
            "{e}"
        );
        assert_eq!(
            record_context(&mut cx, p(1, 700), &record_bytes(3, 0)).unwrap(),
            ("m".into(), 1)
        );
    }

    #[test]
    fn a_class_index_outside_the_table_is_an_error() {
        let mut t = ContextTracker::new();
        t.observe(
            &frame(p(1, 256), FrameKind::Preamble, &ctx_bytes(0, "m")),
            &ID,
        )
        .unwrap();
        let e = t
            .observe(
                &frame(p(1, 512), FrameKind::Record, &record_bytes(0, 5)),
                &ID,
            )
            .unwrap_err();
        assert!(
            matches!(e, ResolveError::ClassIndex { index: 5, len: 1 }),
            "{e}"
        );
        assert_eq!(e.code(), "class_index");
    }

    #[test]
    fn the_tracker_resolves_records_and_derives_their_ids() {
        let mut t = ContextTracker::new();
        let c7 = ctx_bytes(7, "seven");
        match t.observe(&frame(p(1, 256), FrameKind::Preamble, &c7), &ID) {
            Ok(Observed::Context(c)) => assert_eq!(c.machine_id, "seven"),
            other => panic!("context expected, got {other:?}"),
        }
        match t.observe(
            &frame(p(1, 400), FrameKind::Record, &record_bytes(7, 0)),
            &ID,
        ) {
            Ok(Observed::Record(v)) => {
                assert_eq!(v.context.machine_id, "seven");
                assert!(Arc::ptr_eq(&v.context, t.context(7).unwrap()));
                assert_eq!(v.meta.wall_ms, 1010);
                assert_eq!(v.payload, b"body");
                assert_eq!(v.id, RecordId::derive(&ID, p(1, 400)));
            }
            other => panic!("record expected, got {other:?}"),
        }
        let e = t
            .observe(
                &frame(p(2, 256), FrameKind::Record, &record_bytes(7, 0)),
                &ID,
            )
            .unwrap_err();
        assert_eq!(e.code(), "missing_context");
    }

    #[test]
    fn context_for_enters_the_record_s_segment() {
        let mut cx = SlotContexts::new();
        let serial = cx.insert(1, Arc::new(context(4, "four")));
        let (s, c) = cx.context_for(1, 4).unwrap();
        assert_eq!((s, c.machine_id.as_str()), (serial, "four"));
        let e = cx.context_for(1, 5).unwrap_err();
        assert!(matches!(e, ResolveError::MissingContext { slot: 5 }), "{e}");
        // A record of the next segment does not see it.
        let e = cx.context_for(2, 4).unwrap_err();
        assert!(matches!(e, ResolveError::MissingContext { slot: 4 }), "{e}");
        assert_eq!(cx.segment(), Some(2));
        assert!(cx.get(4).is_none());
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Go on in the next segment.
        NextSegment,
        /// A context frame of this slot.
        Context(u32),
        /// A record frame of this slot.
        Record(u32),
        /// A frame that does not decode.
        Garbage,
    }

    fn arb_slot() -> impl Strategy<Value = u32> {
        prop_oneof![
            0u32..4,
            MAX_SLOTS - 2..MAX_SLOTS + 2,
            Just(u32::MAX),
            any::<u32>()
        ]
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop_oneof![
            1 => Just(Op::NextSegment),
            3 => arb_slot().prop_map(Op::Context),
            6 => arb_slot().prop_map(Op::Record),
            1 => Just(Op::Garbage),
        ]
    }

    proptest! {
        /// The rule against the plainest model of it: a map per segment, thrown away at the
        /// next segment. Frames go through `observe`, or (`by_hand`) through `decode_frame`,
        /// `insert` and `context_for` as the journal and the uploader do, skipping frames
        /// that do not decode.
        #[test]
        fn the_rule_matches_a_map_per_segment(
            ops in proptest::collection::vec(arb_op(), 0..60),
            by_hand in proptest::collection::vec(any::<bool>(), 60),
        ) {
            let mut cx = SlotContexts::new();
            let mut model: HashMap<u32, String> = HashMap::new();
            let (mut segment, mut offset) = (1u64, 256u64);
            for (i, (op, by_hand)) in ops.into_iter().zip(by_hand).enumerate() {
                offset += 64;
                let at = p(segment, offset);
                match op {
                    Op::NextSegment => {
                        segment += 1;
                        offset = 256;
                        model.clear();
                    }
                    Op::Context(slot) => {
                        let machine = format!("m{i}");
                        let bytes = ctx_bytes(slot, &machine);
                        if by_hand {
                            match decode_frame(FrameKind::Preamble, &bytes).unwrap() {
                                Decoded::Context(c) => cx.insert(segment, Arc::from(c)),
                                Decoded::Record { .. } => unreachable!(),
                            };
                        } else {
                            cx.observe(&frame(at, FrameKind::Preamble, &bytes)).unwrap();
                        }
                        model.insert(slot, machine);
                    }
                    Op::Record(slot) => {
                        let got = if by_hand {
                            cx.context_for(segment, slot).ok().map(|(_, c)| c.machine_id.clone())
                        } else {
                            record_context(&mut cx, at, &record_bytes(slot, 0)).ok().map(|(m, _)| m)
                        };
                        prop_assert_eq!(got.as_ref(), model.get(&slot));
                        prop_assert_eq!(cx.get(slot).map(|c| &c.machine_id), model.get(&slot));
                    }
                    Op::Garbage => {
                        if !by_hand {
                            let e = cx.observe(&frame(at, FrameKind::Record, &[0xff, 1, 2]));
                            prop_assert!(matches!(e, Err(ResolveError::Decode(_))));
                        }
                    }
                }
            }
            prop_assert!(cx.direct.len() <= MAX_SLOTS as usize);
        }
    }
}
