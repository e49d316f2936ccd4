//! Encoding primitives of the upload protocol (PROTOCOL.md, "Primitives"): canonical LEB128
//! varints, zigzag, length-prefixed strings and bytes, and a bounds-checked input reader.
//! Nothing here trusts a length it read: every read checks what is left first.
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use crate::ProtocolError;

/// Appends `v` as an unsigned LEB128 varint (1 to 10 bytes, canonical).
#[inline]
pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Zigzag maps signed to unsigned so small magnitudes get short varints.
#[inline]
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Inverse of [`zigzag`].
#[inline]
pub fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Appends a length-prefixed byte string.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uvarint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A bounds-checked reader over a decoded body.
pub struct Input<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Input { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// Takes `n` bytes.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], ProtocolError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(ProtocolError::Truncated { what })?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(ProtocolError::Truncated { what })?;
        self.pos = end;
        Ok(s)
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ProtocolError> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// Takes one byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ProtocolError> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or(ProtocolError::Truncated { what })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a canonical unsigned LEB128 varint of at most 10 bytes.
    pub fn uvarint(&mut self, what: &'static str) -> Result<u64, ProtocolError> {
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8(what)?;
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(ProtocolError::BadVarint { what });
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                // Canonical: no trailing zero group (except the single byte 0).
                if i > 0 && b == 0 {
                    return Err(ProtocolError::BadVarint { what });
                }
                return Ok(v);
            }
        }
        Err(ProtocolError::BadVarint { what })
    }

    /// Reads a varint and checks it against `max`.
    pub fn count(&mut self, what: &'static str, max: u64) -> Result<u64, ProtocolError> {
        let v = self.uvarint(what)?;
        if v > max {
            return Err(ProtocolError::LimitExceeded {
                what,
                value: v,
                max,
            });
        }
        Ok(v)
    }

    /// Reads a length-prefixed byte string of at most `max` bytes.
    pub fn bytes(&mut self, what: &'static str, max: u64) -> Result<&'a [u8], ProtocolError> {
        let len = self.count(what, max)?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::Truncated { what })?;
        self.take(len, what)
    }

    /// Reads a length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str(&mut self, what: &'static str, max: u64) -> Result<&'a str, ProtocolError> {
        std::str::from_utf8(self.bytes(what, max)?).map_err(|_| ProtocolError::InvalidUtf8 { what })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_every_width() {
        let mut vals = vec![0u64, 1, 127, 128, 255, 16383, 16384, u64::MAX, u64::MAX - 1];
        vals.extend((0..64).map(|s| 1u64 << s));
        for v in vals {
            let mut b = Vec::new();
            put_uvarint(&mut b, v);
            let mut i = Input::new(&b);
            assert_eq!(i.uvarint("v").unwrap(), v, "{v}");
            assert_eq!(i.remaining(), 0);
        }
    }

    #[test]
    fn overlong_and_overflowing_varints_are_rejected() {
        for bad in [
            &[0x80u8, 0x00][..],
            &[0xff; 10][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            &[0x80],
        ] {
            assert!(Input::new(bad).uvarint("v").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(unzigzag(zigzag(v)), v);
        }
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
    }

    #[test]
    fn lengths_beyond_the_input_are_errors_not_allocations() {
        let mut b = Vec::new();
        put_uvarint(&mut b, u64::MAX);
        assert!(Input::new(&b).bytes("x", u64::MAX).is_err());
        assert!(Input::new(&b).bytes("x", 10).is_err());
    }
}
