use super::*;
use crate::fixtures;
use protocol::Limits;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(*k, v.parse().unwrap());
    }
    h
}

#[test]
fn the_public_id_is_sha256_of_the_url_bytes_not_the_hex() {
    // PROTOCOL.md test vector.
    let id = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    let public = public_id_from_path(id).unwrap();
    assert_eq!(
        hex::encode(public),
        "630dcd2966c4336691125448bbb25b4ff412a49c732db2c8abc1b8581bd710dd"
    );
}

#[test]
fn malformed_url_ids_are_400() {
    for id in [
        "",
        "00",
        &"0".repeat(63),
        &"0".repeat(65),
        &"A".repeat(64),
        &"g".repeat(64),
    ] {
        let r = public_id_from_path(id).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{id}");
    }
}

#[test]
fn header_checks_follow_the_protocol() {
    let id = "ab".repeat(32);
    // Content-Type and Content-Encoding are required (PROTOCOL.md section 2).
    assert_eq!(
        check_headers(&HeaderMap::new()).unwrap_err().status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let minimal = headers(&[
        ("content-encoding", "zstd"),
        ("content-type", "application/vnd.seglog.batch; x=1"),
    ]);
    assert_eq!(check_headers(&minimal).unwrap(), None);
    let ok = headers(&[
        ("seglog-protocol", "1"),
        ("content-encoding", "zstd"),
        ("content-type", "application/vnd.seglog.batch"),
        ("seglog-batch-id", &id),
    ]);
    assert_eq!(check_headers(&ok).unwrap(), Some([0xab; 32]));
    let cases: [(&'static str, &str, StatusCode); 4] = [
        ("seglog-protocol", "2", StatusCode::BAD_REQUEST),
        (
            "content-encoding",
            "gzip",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "content-type",
            "application/json",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        ("seglog-batch-id", "xyz", StatusCode::BAD_REQUEST),
    ];
    for (k, v, status) in cases {
        let mut h = minimal.clone();
        h.insert(
            axum::http::HeaderName::from_static(k),
            axum::http::HeaderValue::from_str(v).unwrap(),
        );
        assert_eq!(check_headers(&h).unwrap_err().status, status, "{k}: {v}");
    }
}

#[test]
fn a_fixture_batch_decodes_and_matches_its_url_and_header() {
    let p = fixtures::private_id(1);
    let b = fixtures::batch(&p, 0, 20, "7");
    let body = fixtures::body(&b);
    let public = fixtures::public_id(&p);
    let (got, raw_len) =
        decode_upload(&body, &public, Some(&b.id().0), &Limits::default()).unwrap();
    assert_eq!(got, b);
    assert!(raw_len > body.len() as u64);
}

#[test]
fn a_batch_posted_to_another_logs_url_is_refused() {
    let b = fixtures::batch(&fixtures::private_id(1), 0, 3, "7");
    let other = fixtures::public_id(&fixtures::private_id(2));
    let r = decode_upload(&fixtures::body(&b), &other, None, &Limits::default()).unwrap_err();
    assert_eq!(
        (r.status, r.reason),
        (StatusCode::BAD_REQUEST, "log_id_mismatch")
    );
}

#[test]
fn a_batch_id_header_that_disagrees_with_the_body_is_refused() {
    let p = fixtures::private_id(1);
    let b = fixtures::batch(&p, 0, 3, "7");
    let r = decode_upload(
        &fixtures::body(&b),
        &fixtures::public_id(&p),
        Some(&[7; 32]),
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        (r.status, r.reason),
        (StatusCode::BAD_REQUEST, "batch_id_mismatch")
    );
}

#[test]
fn sizes_and_counts_over_the_limits_are_413_and_malformed_bodies_400() {
    let p = fixtures::private_id(1);
    let public = fixtures::public_id(&p);
    let b = fixtures::batch(&p, 0, 50, "7");
    let body = fixtures::body(&b);
    let small = |f: fn(&mut Limits)| {
        let mut l = Limits::default();
        f(&mut l);
        decode_upload(&body, &public, None, &l).unwrap_err()
    };
    type Shrink = fn(&mut Limits);
    let cases: [(Shrink, &str); 4] = [
        (|l| l.max_body_bytes = 10, "body_too_large"),
        (|l| l.max_decompressed_bytes = 100, "decompressed_too_large"),
        (|l| l.max_records = 49, "limit_exceeded"),
        (|l| l.max_payload_bytes = 5, "limit_exceeded"),
    ];
    for (f, reason) in cases {
        let r = small(f);
        assert_eq!(
            (r.status, r.reason),
            (StatusCode::PAYLOAD_TOO_LARGE, reason),
            "{}",
            r.message
        );
    }
    let r = decode_upload(&body[..body.len() / 2], &public, None, &Limits::default()).unwrap_err();
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.message);
    let r = decode_upload(b"not zstd at all", &public, None, &Limits::default()).unwrap_err();
    assert_eq!((r.status, r.reason), (StatusCode::BAD_REQUEST, "bad_zstd"));
    let raw = protocol::encode_batch_raw(&b).unwrap();
    let r = decode_upload(
        &zstd::bulk::compress(&raw[..raw.len() - 1], 3).unwrap(),
        &public,
        None,
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!((r.status, r.reason), (StatusCode::BAD_REQUEST, "bad_batch"));
}

#[test]
fn an_over_long_string_is_400_not_413() {
    let e = ProtocolError::LimitExceeded {
        what: "context key",
        value: 300,
        max: 255,
    };
    assert_eq!(refusal_for(&e).status, StatusCode::BAD_REQUEST);
    let e = ProtocolError::LimitExceeded {
        what: "gap count",
        value: 1 << 20,
        max: 65_536,
    };
    assert_eq!(refusal_for(&e).status, StatusCode::PAYLOAD_TOO_LARGE);
}
