//! Records as the journal sees them: a frame paired with its writer's context by
//! [`records::SlotContexts`] (the one implementation of the rule: a record's context is the
//! most recent context frame of the same writer slot in the same segment) and resolved
//! against it ([`records::RecordHeader::resolve`]).
//!
//! This is the journal's hot path, so it differs from [`records::ContextTracker`] in two ways
//! that cost nothing in meaning: the record id (a sha256) is derived only when asked for
//! ([`Rec::id`]), since `verify`, `stats` and filters that reject a record never need it; and
//! contexts are borrowed from the tracker rather than reference-counted per record.

use std::sync::Arc;

use records::{decode_frame, Context, Decoded, RecordId, ResolveError, Resolved, SlotContexts};
use segment_log::{FrameRef, Position};

/// A record with its context; the payload and the context are borrowed from the reader.
#[derive(Debug)]
pub struct Rec<'a> {
    /// Where it is.
    pub position: Position,
    /// Header fields resolved against the context (classification, severity, times...).
    pub meta: Resolved,
    /// The writer's context.
    pub context: &'a Context,
    /// Identifies `context` among all contexts this reader has seen (a counter), so
    /// renderers can reuse work done for the same context.
    pub context_serial: u64,
    /// The payload.
    pub payload: &'a [u8],
    public_id: &'a [u8; 32],
}

impl Rec<'_> {
    /// The record id: derived from the log's public id and the position (a sha256).
    pub fn id(&self) -> RecordId {
        RecordId::derive(self.public_id, self.position)
    }
}

/// What a frame turned out to be.
pub enum Observed<'a> {
    /// A writer's context, now current for its slot.
    Context,
    /// A record.
    Record(Rec<'a>),
}

/// Observes one frame, in position order (preambles included): a preamble becomes the
/// context of its slot; a record is resolved against its slot's context.
pub fn observe<'a>(
    contexts: &'a mut SlotContexts,
    frame: &FrameRef<'a>,
    public_id: &'a [u8; 32],
) -> Result<Observed<'a>, ResolveError> {
    // `insert` and `context_for` enter the frame's segment (a frame that does not decode
    // changes no context, so it need not).
    let segment = frame.position.segment;
    match decode_frame(frame.kind, frame.payload)? {
        Decoded::Context(c) => {
            contexts.insert(segment, Arc::from(c));
            Ok(Observed::Context)
        }
        Decoded::Record { header, payload } => {
            let (context_serial, context) = contexts.context_for(segment, header.slot)?;
            let meta = header.resolve(context)?;
            Ok(Observed::Record(Rec {
                position: frame.position,
                meta,
                context,
                context_serial,
                payload,
                public_id,
            }))
        }
    }
}

/// A record for unit tests of the renderers and filters.
#[cfg(test)]
pub mod fixture {
    use super::*;
    use records::{Classification, EventId, Severity};

    /// A context like a real writer's.
    pub fn context() -> Context {
        Context {
            slot: 0,
            generation: 0,
            record_format_version: 2,
            machine_id: "m".repeat(32),
            boot_id: [0xb0; 16],
            arch: "x86_64".into(),
            host_type: "blank".into(),
            build: "1".into(),
            system_name: "os".into(),
            kernel_version: "6.1".into(),
            board_name: "board".into(),
            cpu_model: "cpu".into(),
            bios_version: "bios".into(),
            base_wall_ms: 0,
            base_boot_ms: 0,
            classifications: Vec::new(),
            extra: Vec::new(),
        }
    }

    /// A record at `position` with the given fields.
    pub fn rec<'a>(
        ctx: &'a Context,
        position: Position,
        class: &str,
        severity: u8,
        wall_ms: i64,
        event: Option<[u8; 16]>,
        payload: &'a [u8],
    ) -> Rec<'a> {
        const PUBLIC_ID: [u8; 32] = [0x11; 32];
        Rec {
            position,
            meta: Resolved {
                classification: Classification::new(class).unwrap(),
                severity: Severity::new(i64::from(severity)).unwrap(),
                wall_ms,
                boot_ms: 42,
                event_id: event.map(EventId::from_bytes),
                hold_until_wall_ms: None,
            },
            context: ctx,
            context_serial: 1,
            payload,
            public_id: &PUBLIC_ID,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The rule itself is tested with `records::SlotContexts`; these check what the journal
    //! adds: resolving, the lazy id, the serial, the error of a bad class index.
    use super::*;
    use records::{encode_context, encode_record, ClassRef, RecordHeader, RecordTime, Severity};
    use segment_log::FrameKind;

    fn frame(position: Position, kind: FrameKind, payload: &[u8]) -> FrameRef<'_> {
        FrameRef {
            position,
            kind,
            payload,
        }
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

    fn ctx_bytes(slot: u32, machine: &str) -> Vec<u8> {
        let mut c = fixture::context();
        c.slot = slot;
        c.machine_id = machine.into();
        c.base_wall_ms = 1000;
        c.classifications = vec![records::Classification::new("a/b/c").unwrap()];
        encode_context(&c).unwrap()
    }

    const ID: [u8; 32] = [9; 32];

    #[test]
    fn records_are_resolved_against_their_slot_s_context_with_its_serial() {
        let mut cx = SlotContexts::new();
        let p = |segment, offset| Position { segment, offset };
        let (c0, c7) = (ctx_bytes(0, "zero"), ctx_bytes(7, "seven"));
        let c0_new = ctx_bytes(0, "zero-rotated");
        assert!(matches!(
            observe(&mut cx, &frame(p(1, 256), FrameKind::Preamble, &c0), &ID),
            Ok(Observed::Context)
        ));
        assert!(matches!(
            observe(&mut cx, &frame(p(1, 300), FrameKind::Preamble, &c7), &ID),
            Ok(Observed::Context)
        ));
        let (r0, r7) = (record_bytes(0, 0), record_bytes(7, 0));
        match observe(&mut cx, &frame(p(1, 400), FrameKind::Record, &r7), &ID) {
            Ok(Observed::Record(r)) => {
                assert_eq!(r.context.machine_id, "seven");
                assert_eq!(r.context_serial, 2);
                assert_eq!(r.meta.classification.as_str(), "a/b/c");
                assert_eq!(r.meta.wall_ms, 1010);
                assert_eq!(r.payload, b"body");
                assert_eq!(r.id(), RecordId::derive(&ID, p(1, 400)));
            }
            _ => panic!("record expected"),
        }
        observe(
            &mut cx,
            &frame(p(1, 500), FrameKind::Preamble, &c0_new),
            &ID,
        )
        .unwrap();
        match observe(&mut cx, &frame(p(1, 600), FrameKind::Record, &r0), &ID) {
            Ok(Observed::Record(r)) => {
                assert_eq!(r.context.machine_id, "zero-rotated");
                assert_eq!(r.context_serial, 3, "a replaced context gets a new serial");
            }
            _ => panic!("record expected"),
        }
        // A new segment starts without contexts.
        let e = observe(&mut cx, &frame(p(2, 256), FrameKind::Record, &r0), &ID)
            .err()
            .unwrap();
        assert!(matches!(e, ResolveError::MissingContext { slot: 0 }), "{e}");
    }

    #[test]
    fn a_class_index_outside_the_table_is_an_error() {
        let mut cx = SlotContexts::new();
        let p = |offset| Position { segment: 1, offset };
        let c = ctx_bytes(0, "m");
        observe(&mut cx, &frame(p(256), FrameKind::Preamble, &c), &ID).unwrap();
        let r = record_bytes(0, 5);
        let e = observe(&mut cx, &frame(p(512), FrameKind::Record, &r), &ID)
            .err()
            .unwrap();
        assert!(
            matches!(e, ResolveError::ClassIndex { index: 5, len: 1 }),
            "{e}"
        );
    }
}
