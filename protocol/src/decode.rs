//! Decoding bodies defensively: bounded decompression, then every count, length, index and
//! ordering rule checked before anything is allocated.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::io::Read;

use segment_log::Position;

use super::{
    invalid, Batch, Context, Gap, GapReason, Limits, ProtocolError, Record, BATCH_MAGIC,
    MAX_NAME_BYTES, MAX_TEXT_BYTES, MAX_WINDOW_LOG, MIN_GAP_BYTES, MIN_RECORD_BYTES,
    PROTOCOL_VERSION,
};
use crate::wire::{unzigzag, Input};

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
    b.gaps.reserve_exact(fit(&i, n, MIN_GAP_BYTES, "gaps")?);
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
    let mut distinct = std::collections::HashSet::with_capacity(classes.capacity());
    for _ in 0..n {
        let c = i.str("classification", MAX_NAME_BYTES)?;
        if !distinct.insert(c) {
            return Err(invalid(
                "classification table",
                format!("{c:?} is listed twice"),
            ));
        }
        classes.push(c);
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
            wall_ms: 0,
            boot_ms: 0,
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
    // Canonical table: entries appear in the order records first use them, and all are used.
    let mut next_new = 0u64;
    for r in recs.iter_mut() {
        let c = i.uvarint("record classification")?;
        if c > next_new {
            return Err(invalid(
                "record classification",
                format!("index {c} is used before index {next_new}"),
            ));
        }
        next_new += u64::from(c == next_new);
        let s = usize::try_from(c).ok().and_then(|c| classes.get(c));
        let s = s.ok_or_else(|| {
            invalid(
                "record classification",
                format!("index {c} but {} classifications", classes.len()),
            )
        })?;
        r.classification = (*s).to_owned();
    }
    if next_new != classes.len() as u64 {
        return Err(invalid(
            "classification table",
            format!("{} entries but records use {next_new}", classes.len()),
        ));
    }
    for r in recs.iter_mut() {
        r.severity = i.u8("record severity")?;
    }
    let mut prev_wall = 0i64;
    for r in recs.iter_mut() {
        prev_wall = prev_wall.wrapping_add(unzigzag(i.uvarint("record wall time")?));
        r.wall_ms = prev_wall;
    }
    let (mut prev_wall, mut prev_boot) = (0i64, 0u64);
    for r in recs.iter_mut() {
        let d_wall = r.wall_ms.wrapping_sub(prev_wall);
        let adj = unzigzag(i.uvarint("record boot time")?) as u64;
        prev_boot = prev_boot.wrapping_add(d_wall as u64).wrapping_add(adj);
        r.boot_ms = prev_boot;
        prev_wall = r.wall_ms;
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
