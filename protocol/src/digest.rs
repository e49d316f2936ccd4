//! RFC 9530 `Content-Digest` (`sha-256=:<base64>:`) of a request body, and the comparison
//! a server's `Seglog-Received-Digest` is checked with (PROTOCOL.md sections 2 and 5).
use sha2::{Digest, Sha256};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 section 4), as RFC 8941 byte sequences use.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                let idx = ((n >> shift) & 63) as usize;
                out.push(char::from(B64.get(idx).copied().unwrap_or(b'A')));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `Content-Digest` field value of `body`: `sha-256=:<base64 of sha256(body)>:`.
pub fn content_digest(body: &[u8]) -> String {
    format!("sha-256=:{}:", base64(&Sha256::digest(body)))
}

/// The `sha-256` member of a `Content-Digest`-style dictionary (`sha-256=:...:`, other
/// members such as `sha-512` ignored), as its base64 text.
fn sha256_member(field: &str) -> Option<&str> {
    field.split(',').find_map(|m| {
        let (k, v) = m.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("sha-256") {
            return None;
        }
        v.trim().strip_prefix(':')?.strip_suffix(':')
    })
}

/// Whether the field `got` carries the same `sha-256` digest as the field `want`.
pub fn digest_matches(got: &str, want: &str) -> bool {
    match (sha256_member(got), sha256_member(want)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// Checks a request's `Content-Digest` against the body received. `None`: the field has
/// no `sha-256` member (nothing to check); `Some(false)`: the body is not what was sent.
pub fn verify_content_digest(field: &str, body: &[u8]) -> Option<bool> {
    let sent = sha256_member(field)?;
    Some(sha256_member(&content_digest(body)) == Some(sent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o, "{i:?}");
        }
    }

    #[test]
    fn content_digest_matches_rfc_9530_example() {
        // RFC 9530 section 2's example body `{"hello": "world"}`.
        assert_eq!(
            content_digest(b"{\"hello\": \"world\"}"),
            "sha-256=:X48E9qOokqqrvdts8nOJRJN3OWDUoyWxBf7kbu9DBPE=:"
        );
    }

    #[test]
    fn digests_compare_by_their_sha256_member() {
        let d = content_digest(b"body");
        assert!(digest_matches(&d, &d));
        assert!(digest_matches(&format!("sha-512=:AAAA:, {d}"), &d));
        assert!(!digest_matches(&content_digest(b"bod"), &d));
        assert!(!digest_matches("garbage", &d));
        assert_eq!(verify_content_digest(&d, b"body"), Some(true));
        assert_eq!(verify_content_digest(&d, b"bod"), Some(false));
        assert_eq!(verify_content_digest("md5=:abc:", b"body"), None);
    }
}
