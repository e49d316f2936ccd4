//! Encoding and bounded, defensive decoding of record and context frames.
//!
//! Decoding never panics and never allocates more than the input's size: every length is
//! checked against the bytes that remain, and every value is validated.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use segment_log::FrameKind;
use serde::{Deserialize, Serialize};

use super::{
    ClassRef, Classification, Context, EventId, RecordHeader, RecordTime, Severity,
    CONTEXT_VERSION, MIN_RECORD_VERSION, RECORD_VERSION,
};

/// Why a frame could not be decoded. Every variant names what was being decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload is empty (no version byte).
    #[error("empty {what} frame: no version byte")]
    Empty {
        /// `record` or `context`.
        what: &'static str,
    },
    /// Written by a newer (or unknown) layout version.
    #[error("{what} layout version {found} is not supported (this build reads {min} to {max}); upgrade seglog")]
    UnsupportedVersion {
        /// `record` or `context`.
        what: &'static str,
        /// Version found.
        found: u8,
        /// Oldest version supported.
        min: u8,
        /// Newest version supported.
        max: u8,
    },
    /// The bytes do not parse (truncated, bad varint, bad UTF-8...).
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// `record` or `context`.
        what: &'static str,
        /// The parser's message.
        detail: String,
    },
    /// The bytes parse but a value is out of bounds.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A context frame has bytes after its end.
    #[error("context frame has {len} trailing bytes")]
    TrailingBytes {
        /// How many.
        len: usize,
    },
    /// Not a record or preamble frame.
    #[error("frame kind {kind:?} holds no record or context")]
    UnexpectedKind {
        /// The kind.
        kind: FrameKind,
    },
}

impl DecodeError {
    /// A stable short code for skip counters.
    pub fn code(&self) -> &'static str {
        match self {
            DecodeError::Empty { .. } => "empty",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
            DecodeError::Malformed { .. } => "malformed",
            DecodeError::Invalid { .. } => "invalid",
            DecodeError::TrailingBytes { .. } => "trailing_bytes",
            DecodeError::UnexpectedKind { .. } => "unexpected_kind",
        }
    }

    /// Whether the data was written by a newer seglog (as opposed to being damaged).
    pub fn is_unsupported_version(&self) -> bool {
        matches!(self, DecodeError::UnsupportedVersion { .. })
    }
}

/// Why a header could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The header mixes layout 1 and layout 2 parts.
    #[error("record header mixes layouts: an index class needs relative times (layout 2), an inline class needs absolute times and no hold (layout 1)")]
    MixedLayout,
    /// The context breaks a decoder bound.
    #[error("context cannot be encoded: {0}")]
    Context(#[from] DecodeError),
    /// postcard refused the value.
    #[error("encoding failed: {0}")]
    Postcard(String),
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A writer's context (preamble frame).
    Context(Box<Context>),
    /// A record: its header and its payload (borrowed from the frame).
    Record {
        /// The header.
        header: RecordHeader,
        /// The payload.
        payload: &'a [u8],
    },
}

const META_SEVERITY: u8 = 0b0000_0011;
const META_EVENT_ID: u8 = 0b0000_0100;
const META_HOLD: u8 = 0b0000_1000;
const META_KNOWN: u8 = META_SEVERITY | META_EVENT_ID | META_HOLD;
/// Longest layout-2 header: version, slot and class (5 + 5), meta, boot delta (10), skew
/// (10), event id (16), hold (10).
pub const MAX_V2_HEADER: usize = 1 + 5 + 5 + 1 + 10 + 10 + 16 + 10;

/// The fixed part of a layout-2 header.
///
/// # Warning
/// On-disk layout: do not add, remove, retype or reorder fields.
#[derive(Serialize, Deserialize)]
struct V2Fixed {
    slot: u32,
    class: u32,
    meta: u8,
    boot_delta_ms: u64,
    wall_skew_ms: i64,
}

/// A layout-1 header.
///
/// # Warning
/// On-disk layout: do not add, remove, retype or reorder fields.
#[derive(Serialize, Deserialize)]
struct V1Header {
    slot: u32,
    classification: String,
    severity: u8,
    wall_ms: i64,
    boot_ms: u64,
    event_id: Option<[u8; 16]>,
}

fn pc(what: &'static str) -> impl Fn(postcard::Error) -> DecodeError {
    move |e| DecodeError::Malformed {
        what,
        detail: e.to_string(),
    }
}

fn enc(e: postcard::Error) -> EncodeError {
    EncodeError::Postcard(e.to_string())
}

/// Encodes a layout-2 record header (index class, relative times) into `buf`; returns its
/// length. The record's frame payload is these bytes followed by the payload, so a writer
/// can hand both to the log without copying the payload into a buffer first
/// (`encode_record` is this plus the payload).
pub fn encode_v2_header(
    header: &RecordHeader,
    buf: &mut [u8; MAX_V2_HEADER],
) -> Result<usize, EncodeError> {
    let (
        ClassRef::Index(class),
        RecordTime::Relative {
            boot_delta_ms,
            wall_skew_ms,
        },
    ) = (&header.class, header.time)
    else {
        return Err(EncodeError::MixedLayout);
    };
    let mut meta = header.severity.get() - 1;
    if header.event_id.is_some() {
        meta |= META_EVENT_ID;
    }
    if header.hold_ms.is_some() {
        meta |= META_HOLD;
    }
    // The bytes postcard writes for `V2Fixed` (`v2_fixed_is_postcards_encoding` checks),
    // written directly: varints into the caller's stack buffer, no serde walk and no
    // per-byte bounds checks of a serializer (this runs once per `Recorder::record`).
    let mut w = HeaderWriter { buf, len: 0 };
    w.byte(RECORD_VERSION);
    w.varint(u64::from(header.slot));
    w.varint(u64::from(*class));
    w.byte(meta);
    w.varint(boot_delta_ms);
    w.varint(zigzag(wall_skew_ms));
    if let Some(e) = header.event_id {
        for &b in e.as_bytes() {
            w.byte(b);
        }
    }
    if let Some(h) = header.hold_ms {
        w.varint(h);
    }
    Ok(w.len)
}

/// postcard's encoding of a signed integer: zigzag, then a varint.
#[inline(always)]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Writes a layout-2 header into a buffer of [`MAX_V2_HEADER`] bytes, which holds the
/// longest one (every field at its longest varint), so no write falls outside it.
struct HeaderWriter<'a> {
    buf: &'a mut [u8; MAX_V2_HEADER],
    len: usize,
}

impl HeaderWriter<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) {
        if let Some(d) = self.buf.get_mut(self.len) {
            *d = b;
        }
        self.len += 1;
    }
    /// LEB128, 7 bits a byte, low first (postcard's varint for u16..u64).
    #[inline(always)]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }
}

/// Appends the encoded `header` and `payload` to `out`. Index class + relative times is
/// written as layout 2; inline class + absolute times as layout 1 (kept for tools and tests).
pub fn encode_record(
    header: &RecordHeader,
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match (&header.class, header.time) {
        (ClassRef::Index(_), RecordTime::Relative { .. }) => {
            let mut buf = [0u8; MAX_V2_HEADER];
            let len = encode_v2_header(header, &mut buf)?;
            out.reserve(len + payload.len());
            out.extend_from_slice(buf.get(..len).unwrap_or_default());
        }
        (ClassRef::Inline(c), RecordTime::Absolute { wall_ms, boot_ms })
            if header.hold_ms.is_none() =>
        {
            out.push(1);
            let v1 = V1Header {
                slot: header.slot,
                classification: c.as_str().to_owned(),
                severity: header.severity.get(),
                wall_ms,
                boot_ms,
                event_id: header.event_id.map(|e| *e.as_bytes()),
            };
            let buf = std::mem::take(out);
            *out = postcard::to_extend(&v1, buf).map_err(enc)?;
        }
        _ => return Err(EncodeError::MixedLayout),
    }
    out.extend_from_slice(payload);
    Ok(())
}

/// Encodes a context frame payload (version byte + postcard). Fails when the context breaks
/// a bound that decoders enforce.
pub fn encode_context(ctx: &Context) -> Result<Vec<u8>, EncodeError> {
    ctx.validate()?;
    postcard::to_extend(ctx, vec![CONTEXT_VERSION]).map_err(enc)
}

/// Decodes a record frame payload into its header and payload.
pub fn decode_record(bytes: &[u8]) -> Result<(RecordHeader, &[u8]), DecodeError> {
    const WHAT: &str = "record";
    let (&version, rest) = bytes
        .split_first()
        .ok_or(DecodeError::Empty { what: WHAT })?;
    match version {
        2 => {
            let (fixed, mut rest) = postcard::take_from_bytes::<V2Fixed>(rest).map_err(pc(WHAT))?;
            if fixed.meta & !META_KNOWN != 0 {
                return Err(DecodeError::Invalid {
                    field: "meta",
                    reason: format!("unknown flag bits {:#04x}", fixed.meta & !META_KNOWN),
                });
            }
            let severity =
                Severity::new(i64::from(fixed.meta & META_SEVERITY) + 1).map_err(|e| {
                    DecodeError::Invalid {
                        field: "severity",
                        reason: e.to_string(),
                    }
                })?;
            let mut event_id = None;
            if fixed.meta & META_EVENT_ID != 0 {
                let (id, r) = rest
                    .split_first_chunk::<16>()
                    .ok_or(DecodeError::Malformed {
                        what: WHAT,
                        detail: "event id truncated".into(),
                    })?;
                event_id = Some(EventId::from_bytes(*id));
                rest = r;
            }
            let mut hold_ms = None;
            if fixed.meta & META_HOLD != 0 {
                let (h, r) = postcard::take_from_bytes::<u64>(rest).map_err(pc(WHAT))?;
                hold_ms = Some(h);
                rest = r;
            }
            let header = RecordHeader {
                slot: fixed.slot,
                class: ClassRef::Index(fixed.class),
                severity,
                time: RecordTime::Relative {
                    boot_delta_ms: fixed.boot_delta_ms,
                    wall_skew_ms: fixed.wall_skew_ms,
                },
                event_id,
                hold_ms,
            };
            Ok((header, rest))
        }
        1 => {
            let (v1, rest) = postcard::take_from_bytes::<V1Header>(rest).map_err(pc(WHAT))?;
            let class =
                Classification::try_from(v1.classification).map_err(|e| DecodeError::Invalid {
                    field: "classification",
                    reason: e.to_string(),
                })?;
            let severity =
                Severity::new(i64::from(v1.severity)).map_err(|e| DecodeError::Invalid {
                    field: "severity",
                    reason: e.to_string(),
                })?;
            let header = RecordHeader {
                slot: v1.slot,
                class: ClassRef::Inline(class),
                severity,
                time: RecordTime::Absolute {
                    wall_ms: v1.wall_ms,
                    boot_ms: v1.boot_ms,
                },
                event_id: v1.event_id.map(EventId::from_bytes),
                hold_ms: None,
            };
            Ok((header, rest))
        }
        found => Err(DecodeError::UnsupportedVersion {
            what: WHAT,
            found,
            min: MIN_RECORD_VERSION,
            max: RECORD_VERSION,
        }),
    }
}

/// Decodes a context frame payload.
pub fn decode_context(bytes: &[u8]) -> Result<Context, DecodeError> {
    const WHAT: &str = "context";
    let (&version, rest) = bytes
        .split_first()
        .ok_or(DecodeError::Empty { what: WHAT })?;
    if version != CONTEXT_VERSION {
        return Err(DecodeError::UnsupportedVersion {
            what: WHAT,
            found: version,
            min: CONTEXT_VERSION,
            max: CONTEXT_VERSION,
        });
    }
    let (ctx, rest) = postcard::take_from_bytes::<Context>(rest).map_err(pc(WHAT))?;
    if !rest.is_empty() {
        return Err(DecodeError::TrailingBytes { len: rest.len() });
    }
    ctx.validate()?;
    Ok(ctx)
}

/// Decodes one segment-log frame: a preamble is a [`Context`], a record frame a header and
/// payload. Seal frames (and any other kind) are an [`DecodeError::UnexpectedKind`].
pub fn decode_frame(kind: FrameKind, payload: &[u8]) -> Result<Decoded<'_>, DecodeError> {
    match kind {
        FrameKind::Record => {
            decode_record(payload).map(|(header, payload)| Decoded::Record { header, payload })
        }
        FrameKind::Preamble => decode_context(payload).map(|c| Decoded::Context(Box::new(c))),
        kind => Err(DecodeError::UnexpectedKind { kind }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::{EventId, Severity};
    use proptest::prelude::*;

    /// Integers of every varint length (1..=10 bytes), not only the long ones `any` favours.
    fn spread() -> impl Strategy<Value = u64> {
        (any::<u64>(), 0u32..64).prop_map(|(v, shift)| v >> shift)
    }

    proptest! {
        /// The hand-written header encoder writes exactly what postcard wrote for it before
        /// (the on-disk layout is postcard's): every field at every varint length.
        #[test]
        fn v2_fixed_is_postcards_encoding(
            slot in spread(), class in spread(), sev in 1i64..=4, boot in spread(),
            skew in spread(), negative: bool, event in proptest::option::of(any::<[u8; 16]>()),
            hold in proptest::option::of(spread()),
        ) {
            let skew = if negative { !(skew as i64) } else { skew as i64 };
            let h = RecordHeader {
                slot: slot as u32,
                class: ClassRef::Index(class as u32),
                severity: Severity::new(sev).unwrap(),
                time: RecordTime::Relative { boot_delta_ms: boot, wall_skew_ms: skew },
                event_id: event.map(EventId::from_bytes),
                hold_ms: hold,
            };
            let mut buf = [0u8; MAX_V2_HEADER];
            let n = encode_v2_header(&h, &mut buf).unwrap();
            let fixed = V2Fixed {
                slot: slot as u32,
                class: class as u32,
                meta: (sev - 1) as u8
                    | if event.is_some() { META_EVENT_ID } else { 0 }
                    | if hold.is_some() { META_HOLD } else { 0 },
                boot_delta_ms: boot,
                wall_skew_ms: skew,
            };
            let mut want = vec![RECORD_VERSION];
            want.extend(postcard::to_allocvec(&fixed).unwrap());
            if let Some(e) = event {
                want.extend_from_slice(&e);
            }
            if let Some(h) = hold {
                want.extend(postcard::to_allocvec(&h).unwrap());
            }
            prop_assert_eq!(&buf[..n], &want[..]);
            let (back, rest) = decode_record(&buf[..n]).unwrap();
            prop_assert_eq!(back, h);
            prop_assert!(rest.is_empty());
        }
    }
}
