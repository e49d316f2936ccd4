//! The frame checksum (FORMAT.md, "Frames") in one pass: crc32c of the 24-byte position
//! prefix (segment, offset, length, kind, flags) followed by the payload, fed to the CPU's
//! `crc32` instruction straight from registers. The prefix needs no stack buffer and the
//! payload no second call through the `crc32c` crate's dispatch, which at 100-200-byte
//! frames cost as much as the checksum itself (BENCHMARKS.md, "Append").
//!
//! Payloads longer than [`INLINE_MAX`] go to the crate's 3-way interleaved kernel after the
//! inline prefix; machines without SSE 4.2 (and other architectures) use the crate for both
//! parts. Every path computes the same value: `frames_checksum_the_same_on_every_path`.

/// Payloads up to this length are checksummed by the one-chain inline loop; longer ones
/// by the crate's interleaved kernel (faster once the chain's latency is not what counts).
pub(crate) const INLINE_MAX: usize = 512;

/// The third prefix word: length (bytes 16..20), kind (20), flags and reserved (0).
#[inline(always)]
fn prefix_word(len: u32, kind: u8) -> u64 {
    u64::from(len) | (u64::from(kind) << 32)
}

/// crc32c over `segment`, `offset`, `len`, `kind` (little-endian, 24 bytes) and `payload`.
#[inline]
pub(crate) fn frame_crc(segment: u64, offset: u64, len: u32, kind: u8, payload: &[u8]) -> u32 {
    frame_crc_parts(segment, offset, len, kind, &[], payload)
}

/// [`frame_crc`] of the payload `head` ‖ `body` (`len` is their total length).
#[inline]
pub(crate) fn frame_crc_parts(
    segment: u64,
    offset: u64,
    len: u32,
    kind: u8,
    head: &[u8],
    body: &[u8],
) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("sse4.2") {
            #[expect(unsafe_code, reason = "calling the SSE 4.2 crc32 kernel")]
            // SAFETY: the CPU supports SSE 4.2 (checked just above), which is the only
            // requirement of the `target_feature` function; it touches no raw memory.
            return unsafe { x86::frame_crc(segment, offset, prefix_word(len, kind), head, body) };
        }
    }
    portable(segment, offset, len, kind, head, body)
}

/// The same checksum through the `crc32c` crate alone.
#[inline]
pub(crate) fn portable(
    segment: u64,
    offset: u64,
    len: u32,
    kind: u8,
    head: &[u8],
    body: &[u8],
) -> u32 {
    let mut pre = [0u8; 24];
    pre[..8].copy_from_slice(&segment.to_le_bytes());
    pre[8..16].copy_from_slice(&offset.to_le_bytes());
    pre[16..24].copy_from_slice(&prefix_word(len, kind).to_le_bytes());
    let c = crc32c::crc32c_append(crc32c::crc32c(&pre), head);
    crc32c::crc32c_append(c, body)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{_mm_crc32_u16, _mm_crc32_u32, _mm_crc32_u64, _mm_crc32_u8};

    /// One chain of `crc32` instructions over the three prefix words and the payload
    /// `head` ‖ `body`.
    #[target_feature(enable = "sse4.2")]
    pub(super) fn frame_crc(segment: u64, offset: u64, w2: u64, head: &[u8], body: &[u8]) -> u32 {
        let mut c = u64::from(!0u32);
        c = _mm_crc32_u64(c, segment);
        c = _mm_crc32_u64(c, offset);
        c = _mm_crc32_u64(c, w2);
        let c = update(c as u32, head);
        !update(c, body)
    }

    /// Raw (not inverted) crc32c state `c` advanced over `data`.
    #[target_feature(enable = "sse4.2")]
    fn update(c: u32, data: &[u8]) -> u32 {
        if data.len() > super::INLINE_MAX {
            // The crate's `append` takes and returns the finalised (inverted) value.
            return !crc32c::crc32c_append(!c, data);
        }
        let mut c = u64::from(c);
        let mut words = data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            c = _mm_crc32_u64(c, u64::from_le_bytes(b));
        }
        // The 0-7 bytes left as at most three steps (4, 2, 1 bytes) rather than one per
        // byte: each step is a 3-cycle link of the same dependency chain.
        let mut c = c as u32;
        let mut rest = words.remainder();
        if let Some((w, r)) = rest.split_first_chunk::<4>() {
            c = _mm_crc32_u32(c, u32::from_le_bytes(*w));
            rest = r;
        }
        if let Some((w, r)) = rest.split_first_chunk::<2>() {
            c = _mm_crc32_u16(c, u16::from_le_bytes(*w));
            rest = r;
        }
        if let Some(&b) = rest.first() {
            c = _mm_crc32_u8(c, b);
        }
        c
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn frames_checksum_the_same_on_every_path() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in (0..40).chain([63, 64, 100, 141, 511, 512, 513, 1000, 2000]) {
            let p = &data[..len];
            for (seg, off, kind) in [(0, 256, 1), (7, 4096, 2), (u64::MAX, 1 << 40, 3)] {
                let a = frame_crc(seg, off, len as u32, kind, p);
                let b = portable(seg, off, len as u32, kind, &[], p);
                assert_eq!(a, b, "len {len} seg {seg}");
                // Split anywhere into head ‖ body: the same value.
                for cut in [0, 1, 7, 8, 13, len / 2, len] {
                    let cut = cut.min(len);
                    let (h, t) = p.split_at(cut);
                    assert_eq!(frame_crc_parts(seg, off, len as u32, kind, h, t), a);
                    assert_eq!(portable(seg, off, len as u32, kind, h, t), a);
                }
            }
        }
        // The known answer: crc32c of 24 zero bytes then "123456789" equals the crate's.
        let mut all = vec![0u8; 24];
        all.extend_from_slice(b"123456789");
        assert_eq!(frame_crc(0, 0, 0, 0, b"123456789"), crc32c::crc32c(&all));
    }
}
