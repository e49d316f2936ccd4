//! The entry point of the cargo-fuzz target `collector_request`
//! (`fuzz/fuzz_targets/collector_request.rs`) and its stable corpus replay. Not part of the
//! stable API.
//!
//! Input format (so the fuzzer reaches every check of the upload path): the bytes up to the
//! first `\n\n` are the request head: line 1 is the log id from the URL, each further line
//! a `Name: value` header. The rest is the body. Input without `\n\n` is all body, sent to
//! a valid URL with no headers.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use protocol::{self, Batch};
use sha2::{Digest, Sha256};

use crate::ingest::{self, Refusal};

/// Small limits so the fuzzer hits them.
pub fn limits() -> protocol::Limits {
    protocol::Limits {
        max_body_bytes: 1 << 16,
        max_decompressed_bytes: 1 << 18,
        max_records: 1000,
        max_payload_bytes: 1 << 16,
        ..protocol::Limits::default()
    }
}

/// The log id used when the input has no head (the PROTOCOL.md test vector's).
pub const DEFAULT_ID: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

/// Splits a fuzz input into (URL log id, headers, body). An input without a head gets the
/// required `Content-Type` and `Content-Encoding`, so raw bodies reach the decoder.
pub fn split(data: &[u8]) -> (String, HeaderMap, &[u8]) {
    let Some(at) = data.windows(2).position(|w| w == b"\n\n") else {
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static(protocol::CONTENT_TYPE),
        );
        headers.insert(
            axum::http::header::CONTENT_ENCODING,
            HeaderValue::from_static("zstd"),
        );
        return (DEFAULT_ID.to_owned(), headers, data);
    };
    let (head, body) = data.split_at(at);
    let body = body.get(2..).unwrap_or_default();
    let head = String::from_utf8_lossy(head);
    let mut lines = head.lines();
    let id = lines.next().unwrap_or_default().to_owned();
    let mut headers = HeaderMap::new();
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    (id, headers, body)
}

/// Runs the server's request checks and bounded decode on one request, as the upload
/// handler does before it stores anything.
pub fn decode_request(
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
    limits: &protocol::Limits,
) -> Result<Batch, Refusal> {
    let public = ingest::public_id_from_path(id)?;
    let header_id = ingest::check_headers(headers)?;
    ingest::decode_upload(body, &public, header_id.as_ref(), limits).map(|(b, _)| b)
}

/// The fuzz target. Panics only when an invariant breaks: a refusal is always 400, 413 or
/// 415 with a reason and a message; an accepted batch belongs to the URL's log, matches the
/// batch id header, respects the limits, and decodes again to itself after re-encoding.
pub fn collector_request(data: &[u8]) {
    let limits = limits();
    let (id, headers, body) = split(data);
    match decode_request(&id, &headers, body, &limits) {
        Err(r) => {
            assert!(
                [
                    StatusCode::BAD_REQUEST,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                ]
                .contains(&r.status),
                "unexpected status {} for {:?}",
                r.status,
                r.message
            );
            assert!(!r.reason.is_empty() && !r.message.is_empty());
        }
        Ok(b) => {
            let mut private = [0u8; 32];
            assert!(
                hex::decode_to_slice(&id, &mut private).is_ok(),
                "accepted a bad URL id {id:?}"
            );
            let public: [u8; 32] = Sha256::digest(private).into();
            assert_eq!(b.public_log_id, public, "accepted a batch of another log");
            if let Ok(Some(h)) = ingest::check_headers(&headers) {
                assert_eq!(
                    b.id().0,
                    h,
                    "accepted a batch id header that does not match"
                );
            }
            assert!(b.records.len() as u64 <= limits.max_records);
            assert!(b
                .records
                .iter()
                .all(|r| r.position >= b.first && r.position < b.last));
            let again = protocol::encode_batch(&b, 1).expect("a decoded batch re-encodes");
            let b2 = decode_request(&id, &headers, &again, &protocol::Limits::default())
                .expect("re-encoded batch decodes");
            assert_eq!(b, b2);
        }
    }
}

/// Seed inputs: (file name, bytes). Written to `fuzz/corpus/collector_request/` by the
/// ignored test `write_collector_request_corpus`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::fixtures;
    let p = fixtures::private_id(1);
    let b = fixtures::with_gap(
        fixtures::batch(&p, 0, 5, "1"),
        protocol::GapReason::CorruptFrame,
        1,
    );
    let body = fixtures::body(&b);
    let id = hex::encode(p);
    let req = |head: &str, body: &[u8]| {
        let mut v = head.as_bytes().to_vec();
        v.extend_from_slice(b"\n\n");
        v.extend_from_slice(body);
        v
    };
    let good_head = format!(
        "{id}\nSeglog-Protocol: 1\nContent-Type: {}\nContent-Encoding: zstd\nSeglog-Batch-Id: {}",
        protocol::CONTENT_TYPE,
        b.id()
    );
    // The headers every request must carry (PROTOCOL.md section 2); the optional ones vary.
    let base = format!(
        "{id}\nContent-Type: {}\nContent-Encoding: zstd",
        protocol::CONTENT_TYPE
    );
    let bomb = protocol::compress(&vec![0u8; 1 << 20], 1).unwrap_or_default();
    let raw = protocol::encode_batch_raw(&b).unwrap_or_default();
    let other = hex::encode(fixtures::private_id(2));
    vec![
        ("valid_request", req(&good_head, &body)),
        ("valid_no_headers", req(&base, &body)),
        (
            "wrong_batch_id",
            req(
                &format!("{base}\nSeglog-Batch-Id: {}", "00".repeat(32)),
                &body,
            ),
        ),
        ("other_logs_url", req(&base.replacen(&id, &other, 1), &body)),
        ("bad_url_id", req(&base.replacen(&id, "XYZ", 1), &body)),
        (
            "protocol_2",
            req(&format!("{base}\nSeglog-Protocol: 2"), &body),
        ),
        (
            "gzip_encoding",
            req(&base.replace("Encoding: zstd", "Encoding: gzip"), &body),
        ),
        (
            "no_content_encoding",
            req(
                &format!("{id}\nContent-Type: {}", protocol::CONTENT_TYPE),
                &body,
            ),
        ),
        ("zip_bomb", req(&base, &bomb)),
        (
            "truncated_body",
            req(&base, body.get(..body.len() / 2).unwrap_or_default()),
        ),
        ("raw_not_compressed", req(&base, &raw)),
        ("garbage", b"\x28\xb5\x2f\xfd\x00\x00garbage".to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/collector_request")
    }

    /// Replays the committed seed corpus (and any crash saved into it) on stable.
    #[test]
    fn collector_request_corpus_replays_without_panics() {
        let mut n = 0;
        let mut accepted = 0;
        for entry in std::fs::read_dir(corpus_dir()).expect("committed corpus") {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            collector_request(&data);
            let (id, h, body) = split(&data);
            accepted += usize::from(decode_request(&id, &h, body, &limits()).is_ok());
            n += 1;
        }
        assert!(n >= 10, "corpus has only {n} files");
        assert!(
            accepted >= 2,
            "the corpus must reach the accepting path, {accepted} did"
        );
    }

    #[test]
    fn the_seeds_reach_the_refusals_they_are_named_after() {
        let l = limits();
        let status = |name: &str| {
            let (_, data) = seeds().into_iter().find(|(n, _)| *n == name).unwrap();
            let (id, h, body) = split(&data);
            decode_request(&id, &h, body, &l)
                .map(|_| StatusCode::OK)
                .unwrap_or_else(|r| r.status)
        };
        assert_eq!(status("valid_request"), StatusCode::OK);
        assert_eq!(status("valid_no_headers"), StatusCode::OK);
        assert_eq!(status("wrong_batch_id"), StatusCode::BAD_REQUEST);
        assert_eq!(status("other_logs_url"), StatusCode::BAD_REQUEST);
        assert_eq!(status("bad_url_id"), StatusCode::BAD_REQUEST);
        assert_eq!(status("protocol_2"), StatusCode::BAD_REQUEST);
        assert_eq!(status("gzip_encoding"), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            status("no_content_encoding"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(status("zip_bomb"), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status("truncated_body"), StatusCode::BAD_REQUEST);
        assert_eq!(status("raw_not_compressed"), StatusCode::BAD_REQUEST);
    }

    /// Regenerates the seed corpus:
    /// `cargo test -p collector write_collector_request_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus/collector_request"]
    fn write_collector_request_corpus() {
        let dir = corpus_dir();
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in seeds() {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
