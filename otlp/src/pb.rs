//! A minimal protobuf writer: varints, fixed64, length-delimited fields and nested messages
//! (proto3 wire format, <https://protobuf.dev/programming-guides/encoding/>). Only what the
//! OTLP logs messages need; field numbers live with the messages in `encode.rs`.

/// Wire type 0: varint.
const VARINT: u8 = 0;
/// Wire type 1: 64-bit little-endian.
const I64: u8 = 1;
/// Wire type 2: length-delimited.
const LEN: u8 = 2;

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes `put_varint` takes for `v`.
pub fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

fn tag(out: &mut Vec<u8>, field: u32, wire: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire));
}

/// A varint field (uint32/uint64/int64/enum; a negative int64 takes ten bytes, as in protobuf).
pub fn uint(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, VARINT);
    put_varint(out, v);
}

/// A `fixed64` field.
pub fn fixed64(out: &mut Vec<u8>, field: u32, v: u64) {
    tag(out, field, I64);
    out.extend_from_slice(&v.to_le_bytes());
}

/// A `bytes` field.
pub fn bytes(out: &mut Vec<u8>, field: u32, b: &[u8]) {
    tag(out, field, LEN);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A `string` field.
pub fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    bytes(out, field, s.as_bytes());
}

/// A nested message field: `body` writes the message's fields after the tag, and its length
/// is filled in afterwards (one byte is reserved; a longer length moves the body along).
pub fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    if len < 0x80 {
        out[at] = len as u8;
        return;
    }
    let mut prefix = Vec::with_capacity(10);
    put_varint(&mut prefix, len as u64);
    let extra = prefix.len() - 1;
    out.resize(out.len() + extra, 0);
    out.copy_within(at + 1..at + 1 + len, at + 1 + extra);
    out[at..at + prefix.len()].copy_from_slice(&prefix);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_leb128() {
        for (v, want) in [
            (0u64, &[0u8][..]),
            (1, &[1]),
            (127, &[0x7f]),
            (128, &[0x80, 1]),
            (300, &[0xac, 0x02]),
            (
                u64::MAX,
                &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            ),
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, want, "{v}");
            assert_eq!(varint_len(v), want.len(), "{v}");
        }
    }

    #[test]
    fn nested_lengths_are_exact_at_every_size() {
        for n in [0usize, 1, 127, 128, 200, 16383, 16384, 70_000] {
            let mut out = vec![9];
            message(&mut out, 3, |o| o.extend(std::iter::repeat_n(7u8, n)));
            let mut want = vec![9, 0x1a];
            put_varint(&mut want, n as u64);
            want.extend(std::iter::repeat_n(7u8, n));
            assert_eq!(out, want, "{n}");
        }
    }
}
