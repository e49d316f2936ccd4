//! Decoding a receiver's answer: `ExportLogsServiceResponse` (its `partial_success`) on 2xx,
//! `google.rpc.Status` on errors. The bytes come from outside: every length is checked
//! against what remains, the input is capped at [`crate::MAX_RESPONSE_BYTES`], and nothing
//! panics (fuzz target `otlp_response`).

/// Why an answer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResponseError {
    /// More than [`crate::MAX_RESPONSE_BYTES`].
    #[error("response of {0} bytes is larger than the {max} accepted", max = crate::MAX_RESPONSE_BYTES)]
    TooLarge(usize),
    /// The bytes end inside a field.
    #[error("response ends inside a field")]
    Truncated,
    /// A varint longer than ten bytes or above u64.
    #[error("malformed varint")]
    Varint,
    /// Field number 0, or a group / unknown wire type.
    #[error("malformed field tag {0}")]
    Tag(u64),
}

/// `ExportLogsPartialSuccess`: the receiver accepted the request but dropped some records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialSuccess {
    /// `rejected_log_records` (a negative value from a broken receiver reads as 0).
    pub rejected_log_records: u64,
    /// `error_message` (at most 4096 bytes kept, invalid UTF-8 replaced).
    pub error_message: String,
}

/// `google.rpc.Status`, the body of an OTLP/HTTP error answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpcStatus {
    /// The gRPC code.
    pub code: i32,
    /// The message (at most 4096 bytes kept).
    pub message: String,
}

const MAX_TEXT: usize = 4096;

enum Field<'a> {
    Varint(u64),
    Len(&'a [u8]),
    Other,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ResponseError> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(ResponseError::Truncated)?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(ResponseError::Varint);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ResponseError::Varint)
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], ResponseError> {
        let n = usize::try_from(n).map_err(|_| ResponseError::Truncated)?;
        if n > self.buf.len() {
            return Err(ResponseError::Truncated);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    /// The next field (number, value), or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Field<'a>)>, ResponseError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let tag = self.varint()?;
        let number = tag >> 3;
        if number == 0 || number > u64::from(u32::MAX >> 3) {
            return Err(ResponseError::Tag(tag));
        }
        let value = match tag & 7 {
            0 => Field::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Field::Other
            }
            2 => {
                let n = self.varint()?;
                Field::Len(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Field::Other
            }
            _ => return Err(ResponseError::Tag(tag)),
        };
        Ok(Some((number, value)))
    }
}

fn reader(b: &[u8]) -> Result<Reader<'_>, ResponseError> {
    if b.len() > crate::MAX_RESPONSE_BYTES {
        return Err(ResponseError::TooLarge(b.len()));
    }
    Ok(Reader { buf: b })
}

fn text(b: &[u8]) -> String {
    let b = b.get(..MAX_TEXT).unwrap_or(b);
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes an `ExportLogsServiceResponse`; `Ok(None)` when it has no `partial_success` (or
/// one that reports nothing: 0 rejected and no message), the full success.
pub fn decode_response(b: &[u8]) -> Result<Option<PartialSuccess>, ResponseError> {
    let mut r = reader(b)?;
    let mut out: Option<PartialSuccess> = None;
    while let Some((n, f)) = r.field()? {
        if let (1, Field::Len(inner)) = (n, f) {
            // Repeated occurrences of an embedded message merge (protobuf rules).
            let p = out.get_or_insert_with(PartialSuccess::default);
            let mut ir = reader(inner)?;
            while let Some((n, f)) = ir.field()? {
                match (n, f) {
                    (1, Field::Varint(v)) => {
                        p.rejected_log_records = u64::try_from(v as i64).unwrap_or(0)
                    }
                    (2, Field::Len(s)) => p.error_message = text(s),
                    _ => {}
                }
            }
        }
    }
    Ok(out.filter(|p| p.rejected_log_records > 0 || !p.error_message.is_empty()))
}

/// Decodes a `google.rpc.Status` (`details` are skipped).
pub fn decode_status(b: &[u8]) -> Result<RpcStatus, ResponseError> {
    let mut r = reader(b)?;
    let mut s = RpcStatus::default();
    while let Some((n, f)) = r.field()? {
        match (n, f) {
            (1, Field::Varint(v)) => s.code = v as i32,
            (2, Field::Len(m)) => s.message = text(m),
            _ => {}
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;
    use proptest::prelude::*;

    #[test]
    fn partial_success_and_status_decode() {
        let mut b = Vec::new();
        pb::message(&mut b, 1, |o| {
            pb::uint(o, 1, 3);
            pb::string(o, 2, "3 records too old");
        });
        assert_eq!(
            decode_response(&b).unwrap(),
            Some(PartialSuccess {
                rejected_log_records: 3,
                error_message: "3 records too old".into()
            })
        );
        assert_eq!(decode_response(&[]).unwrap(), None);
        // An empty partial_success is a full success.
        assert_eq!(decode_response(&[0x0a, 0x00]).unwrap(), None);
        let mut s = Vec::new();
        pb::uint(&mut s, 1, 3);
        pb::string(&mut s, 2, "bad timestamp");
        pb::message(&mut s, 3, |o| pb::string(o, 1, "type.googleapis.com/x"));
        pb::fixed64(&mut s, 9, 7);
        assert_eq!(
            decode_status(&s).unwrap(),
            RpcStatus {
                code: 3,
                message: "bad timestamp".into()
            }
        );
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert_eq!(
            decode_status(&[0x12, 0x05, b'a']),
            Err(ResponseError::Truncated)
        );
        assert_eq!(decode_status(&[0x00]), Err(ResponseError::Tag(0)));
        assert_eq!(decode_status(&[0x0b]), Err(ResponseError::Tag(0x0b)));
        assert!(decode_status(&[0x08; 12]).is_ok());
        assert_eq!(
            decode_status(&[0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]),
            Err(ResponseError::Varint)
        );
        let big = vec![0u8; crate::MAX_RESPONSE_BYTES + 1];
        assert_eq!(
            decode_response(&big),
            Err(ResponseError::TooLarge(big.len()))
        );
    }

    proptest! {
        #[test]
        fn never_panics(b in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_response(&b);
            let _ = decode_status(&b);
        }
    }
}
