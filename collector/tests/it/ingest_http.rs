//! Uploads over HTTP on 127.0.0.1, built with `protocol::encode_batch`, read back
//! through the API: storage, dedupe (also across a restart), concurrency, authentication,
//! gaps, and hostile bodies.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::common::{agent, raw_exchange, reply, request_head, status_of, Harness};
use collector::fixtures;
use protocol::{self, GapReason};

#[test]
fn uploaded_batches_can_be_queried_back_field_by_field() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let p = fixtures::private_id(1);
        let b = fixtures::batch(&p, 0, 40, "4242");
        let (s, ack) = h.upload(&p, &b);
        assert_eq!(s, 200, "{ack}");
        assert_eq!(ack["batch_id"], b.id().to_hex());
        assert_eq!(ack["records"], 40);
        assert_eq!(ack["duplicate"], false);

        let recs = h.records("");
        assert_eq!(recs.len(), 40);
        let newest = &recs[0];
        let last = &b.records[39];
        let public = fixtures::public_id(&p);
        assert_eq!(newest["log_id"], hex::encode(public));
        assert_eq!(
            newest["record_id"],
            records::RecordId::derive(&public, last.position).to_string()
        );
        assert_eq!(newest["classification"], last.classification);
        assert_eq!(newest["severity"], last.severity);
        assert_eq!(
            newest["payload"],
            String::from_utf8(last.payload.clone()).unwrap()
        );
        assert_eq!(newest["created_ms"], last.wall_ms);
        assert_eq!(newest["boot_ms"], last.boot_ms);
        assert_eq!(newest["machine_id"], fixtures::machine_id(&p));
        assert_eq!(newest["build"], "4242");
        assert_eq!(newest["machine_type"], "Example Inc.|Board 9000|1.0");
        assert_eq!(newest["position"]["segment"], last.position.segment);
        assert_eq!(newest["position"]["offset"], last.position.offset);
        assert_eq!(newest["context"]["site"], "lab <3>");
        assert!(newest["ts_reception"].as_str().unwrap().ends_with('Z'));
        // The private id is never stored or shown.
        let text = h.get_text("/api/records").1;
        assert!(!text.contains(&hex::encode(p)), "private id leaked");
        if let Some(path) = h.server.as_ref().unwrap().database_path() {
            let db = std::fs::read(path).unwrap();
            assert!(!db.windows(32).any(|w| w == p), "private id stored");
        }
    });
}

#[test]
fn a_resent_batch_is_acknowledged_as_duplicate_and_stored_once() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let p = fixtures::private_id(2);
        let b = fixtures::batch(&p, 0, 10, "1");
        assert_eq!(h.upload(&p, &b).1["duplicate"], false);
        for _ in 0..3 {
            let (s, ack) = h.upload(&p, &b);
            assert_eq!(s, 200, "{ack}");
            assert_eq!(ack["duplicate"], true);
            assert_eq!(ack["batch_id"], b.id().to_hex());
        }
        assert_eq!(h.records("").len(), 10);
        let (_, st) = h.get("/api/stats");
        assert_eq!(st["batches"]["received"], 1);
        assert_eq!(st["batches"]["duplicates"], 3);
    });
}

#[test]
fn dedupe_survives_a_collector_restart() {
    crate::common::each_backend(|| {
        let mut h = Harness::start(|_| {});
        let p = fixtures::private_id(3);
        let first = fixtures::batch(&p, 0, 10, "1");
        assert_eq!(h.upload(&p, &first).0, 200);
        h.restart(|_| {});
        let (s, ack) = h.upload(&p, &first);
        assert_eq!((s, ack["duplicate"].clone()), (200, true.into()), "{ack}");
        let second = fixtures::batch(&p, 10, 10, "1");
        assert_eq!(h.upload(&p, &second).1["duplicate"], false);
        let recs = h.records("");
        assert_eq!(recs.len(), 20);
        let mut ids: Vec<_> = recs
            .iter()
            .map(|r| r["record_id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 20);
    });
}

#[test]
fn concurrent_uploads_from_many_devices_are_all_stored_once() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        std::thread::scope(|s| {
            for dev in 0..6u8 {
                let h = &h;
                s.spawn(move || {
                    let p = fixtures::private_id(100 + dev);
                    for i in 0..8 {
                        let b = fixtures::batch(&p, i * 25, 25, "9");
                        let (st, ack) = h.upload(&p, &b);
                        assert_eq!(st, 200, "device {dev} batch {i}: {ack}");
                        // Every other batch is resent at once, as after a lost acknowledgement.
                        if i % 2 == 0 {
                            assert_eq!(h.upload(&p, &b).1["duplicate"], true);
                        }
                    }
                });
            }
        });
        let (_, st) = h.get("/api/stats");
        assert_eq!(st["records"], 6 * 8 * 25);
        assert_eq!(st["logs"], 6);
        assert_eq!(st["batches"]["received"], 6 * 8);
        assert_eq!(st["batches"]["duplicates"], 6 * 4);
    });
}

#[test]
fn uploads_need_a_configured_token() {
    let mut h = Harness::start(|c| c.tokens = vec!["s3cret".into(), "other".into()]);
    let p = fixtures::private_id(4);
    let b = fixtures::batch(&p, 0, 5, "1");
    let body = fixtures::body(&b);
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        let (s, v) = h.upload_body(&p, &body, None, token);
        assert_eq!(s, 401, "{token:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains("token"), "{v}");
    }
    assert_eq!(h.upload_body(&p, &body, None, Some("other")).0, 200);
    assert_eq!(h.records("").len(), 5);
    let (_, st) = h.get("/api/stats");
    assert_eq!(st["batches"]["rejected_by_reason"]["unauthorized"], 4);
    assert_eq!(st["batches"]["rejected"], 4);
    let r = reply(agent().post(h.upload_url(&p)).send(&body));
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    // Rejection counts are persistent.
    h.restart(|c| c.tokens = vec!["s3cret".into()]);
    let (_, st) = h.get("/api/stats");
    assert_eq!(st["batches"]["rejected_by_reason"]["unauthorized"], 5);
}

#[test]
fn gap_entries_and_device_counters_are_stored() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let p = fixtures::private_id(5);
        let b = fixtures::with_gap(fixtures::batch(&p, 100, 5, "1"), GapReason::Trimmed, 100);
        let b = fixtures::with_gap(b, GapReason::Other(200), 0);
        assert_eq!(h.upload(&p, &b).0, 200);
        let (s, g) = h.get(&format!(
            "/api/gaps?log_id={}",
            hex::encode(fixtures::public_id(&p))
        ));
        assert_eq!(s, 200, "{g}");
        let gaps = g["gaps"].as_array().unwrap();
        assert_eq!(gaps.len(), 2);
        let reasons: Vec<_> = gaps.iter().map(|g| g["reason"].as_str().unwrap()).collect();
        assert!(
            reasons.contains(&"trimmed") && reasons.contains(&"other"),
            "{reasons:?}"
        );
        let (_, st) = h.get("/api/stats");
        assert_eq!(st["gaps"]["entries"], 2);
        assert_eq!(st["gaps"]["records_lost"], 100);
        assert_eq!(
            st["device_counters"][0]["key"],
            "recorder.dropped.rate_limit"
        );
        assert_eq!(st["device_counters"][0]["count"], 100);
    });
}

#[test]
fn a_zip_bomb_is_refused_with_413_and_the_collector_keeps_working() {
    let h = Harness::start(|c| c.limits.max_decompressed_bytes = 4 << 20);
    let p = fixtures::private_id(6);
    let bomb = fixtures::zip_bomb(1 << 30);
    assert!(bomb.len() < 1 << 20, "bomb is {} bytes", bomb.len());
    let (s, v) = h.upload_body(&p, &bomb, None, None);
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("decompressed"), "{v}");
    assert_eq!(h.upload(&p, &fixtures::batch(&p, 0, 3, "1")).0, 200);
    let (_, st) = h.get("/api/stats");
    assert_eq!(
        st["batches"]["rejected_by_reason"]["decompressed_too_large"],
        1
    );
}

#[test]
fn a_body_over_the_limit_is_refused_from_its_content_length_without_reading_it() {
    let h = Harness::start(|c| c.limits.max_body_bytes = 1 << 20);
    let p = fixtures::private_id(7);
    // Declares 1 TB and sends nothing: the answer must come without the body.
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request_head(&p, 1 << 40).as_bytes()).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap();
    let resp = String::from_utf8_lossy(&buf[..n]);
    assert_eq!(status_of(&resp), Some(413), "{resp}");
    // Without a Content-Length (chunked), reading stops at the limit.
    let big = vec![7u8; (1 << 20) + 10];
    let (st, v) = crate::common::json_response(
        agent()
            .post(h.upload_url(&p))
            .header("Content-Type", protocol::CONTENT_TYPE)
            .header("Content-Encoding", "zstd")
            .send(ureq::SendBody::from_reader(&mut &big[..])),
    );
    assert_eq!(st, 413, "{v}");
}

#[test]
fn truncated_bodies_are_refused_and_store_nothing() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let p = fixtures::private_id(8);
        let body = fixtures::body(&fixtures::batch(&p, 0, 30, "1"));
        // 1. The connection ends before Content-Length bytes arrived.
        let mut req = request_head(&p, body.len() as u64).into_bytes();
        req.extend_from_slice(&body[..body.len() / 2]);
        // That is a transport failure (408, resend), never a verdict on the batch.
        let resp = raw_exchange(h.addr, &req);
        assert_eq!(status_of(&resp), Some(408), "{resp}");
        assert!(resp.contains("did not arrive complete"), "{resp}");
        let lower = resp.to_ascii_lowercase();
        assert!(!lower.contains("seglog-received-digest"), "{resp}");
        // 2. A complete request whose zstd frame is cut short: the server read every byte that
        // was sent and says so with the digest of what it read.
        let cut = &body[..body.len() - 9];
        let (s, v) = h.upload_body(&p, cut, None, None);
        assert_eq!(s, 400, "{v}");
        assert!(!v["error"].as_str().unwrap().is_empty());
        // 3. Garbage.
        let (s, _) = h.upload_body(&p, b"\x28\xb5\x2f\xfd garbage", None, None);
        assert_eq!(s, 400);
        assert!(h.records("").is_empty());
        assert_eq!(h.upload(&p, &fixtures::batch(&p, 0, 30, "1")).0, 200);
    });
}

#[test]
fn content_digest_tells_a_damaged_body_from_an_invalid_batch() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let p = fixtures::private_id(11);
        let b = fixtures::batch(&p, 0, 20, "1");
        let body = fixtures::body(&b);
        let post = |body: &[u8], digest: &str| {
            reply(
                agent()
                    .post(h.upload_url(&p))
                    .header("Content-Type", protocol::CONTENT_TYPE)
                    .header("Content-Encoding", "zstd")
                    .header(protocol::HEADER_CONTENT_DIGEST, digest)
                    .send(body),
            )
        };
        // A body that is not what the device sent: damaged on the way, 408, no confirmation.
        let mut damaged = body.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0xff;
        let r = post(&damaged, &protocol::content_digest(&body));
        assert_eq!(r.status, 408, "{r:?}");
        assert_eq!(r.header(protocol::HEADER_RECEIVED_DIGEST), None);
        assert_eq!(r.header("connection"), Some("close"));
        // An intact body that is not a valid batch: 400 confirmed by the digest it read.
        let r = post(&damaged, &protocol::content_digest(&damaged));
        assert_eq!(r.status, 400, "{r:?}");
        let got = r.header(protocol::HEADER_RECEIVED_DIGEST).unwrap_or("");
        assert!(
            protocol::digest_matches(got, &protocol::content_digest(&damaged)),
            "{got}"
        );
        assert!(h.records("").is_empty());
        // The intact valid body with its digest is stored.
        let r = post(&body, &protocol::content_digest(&body));
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(h.records("").len(), 20);
    });
}

#[test]
fn content_type_and_encoding_are_required() {
    let h = Harness::start(|_| {});
    let p = fixtures::private_id(12);
    let body = fixtures::body(&fixtures::batch(&p, 0, 3, "1"));
    let url = h.upload_url(&p);
    let r = agent()
        .post(&url)
        .header("Content-Type", protocol::CONTENT_TYPE)
        .send(&body);
    assert_eq!(reply(r).status, 415);
    let r = agent()
        .post(&url)
        .header("Content-Encoding", "zstd")
        .send(&body);
    assert_eq!(reply(r).status, 415);
    assert!(h.records("").is_empty());
}

#[test]
fn a_batch_sent_to_the_wrong_log_or_with_a_wrong_id_is_400() {
    crate::common::each_backend(|| {
        let h = Harness::start(|_| {});
        let (p, q) = (fixtures::private_id(9), fixtures::private_id(10));
        let b = fixtures::batch(&p, 0, 3, "1");
        let (s, v) = h.upload(&q, &b);
        assert_eq!(s, 400, "{v}");
        let (s, v) = h.upload_body(&p, &fixtures::body(&b), Some("00".repeat(32)), None);
        assert_eq!(s, 400, "{v}");
        let r = agent()
            .post(format!("{}/v1/logs/NOTHEX/batches", h.url))
            .send(b"x");
        assert_eq!(reply(r).status, 400);
        let r = agent()
            .post(h.upload_url(&p))
            .header("Seglog-Protocol", "2")
            .send(&fixtures::body(&b));
        assert_eq!(reply(r).status, 400);
        assert!(h.records("").is_empty());
    });
}

#[test]
fn a_stalled_body_holds_no_slot_and_a_full_receive_buffer_answers_503_with_retry_after() {
    let p = fixtures::private_id(11);
    let body = fixtures::body(&fixtures::batch(&p, 0, 5, "1"));
    let len = body.len() as u64;
    let h = Harness::start(|c| {
        c.limits.max_concurrent_uploads = 1;
        c.limits.upload_queue_timeout = Duration::from_millis(300);
        // Room for one body in flight: a stalled half body leaves too little for another.
        c.limits.max_body_bytes = len;
        c.limits.receive_buffer_bytes = len;
    });
    let post = |body: &[u8]| {
        reply(
            agent()
                .post(h.upload_url(&p))
                .header("Content-Type", protocol::CONTENT_TYPE)
                .header("Content-Encoding", "zstd")
                .send(body),
        )
    };
    // Headers and half the body, then stall: that holds half the receive buffer, no slot.
    let mut slow = TcpStream::connect(h.addr).unwrap();
    slow.write_all(request_head(&p, len).as_bytes()).unwrap();
    slow.write_all(&body[..body.len() / 2]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let r = post(&body);
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    // The slow upload still completes, and then the buffer is free again.
    slow.write_all(&body[body.len() / 2..]).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut resp = String::new();
    let _ = slow.read_to_string(&mut resp);
    assert_eq!(status_of(&resp), Some(200), "{resp}");
    assert_eq!(post(&body).status, 200);
}

#[test]
fn shutdown_lets_an_upload_in_flight_finish() {
    crate::common::each_backend(|| {
        let mut h = Harness::start(|_| {});
        let p = fixtures::private_id(12);
        let body = fixtures::body(&fixtures::batch(&p, 0, 5, "1"));
        let mut s = TcpStream::connect(h.addr).unwrap();
        s.write_all(request_head(&p, body.len() as u64).as_bytes())
            .unwrap();
        s.write_all(&body[..10]).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let server = h.server.take().unwrap();
        let stopper = std::thread::spawn(move || server.shutdown());
        std::thread::sleep(Duration::from_millis(200));
        s.write_all(&body[10..]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        assert_eq!(status_of(&resp), Some(200), "{resp}");
        stopper.join().unwrap().unwrap();
        // New connections are refused once it stopped; the record is in the database.
        assert!(TcpStream::connect(h.addr).is_err());
        h.restart(|_| {});
        assert_eq!(h.records("").len(), 5);
    });
}

#[test]
fn a_large_incompressible_batch_within_the_limits_is_accepted() {
    let h = Harness::start(|_| {});
    let p = fixtures::private_id(13);
    let mut b = fixtures::batch(&p, 0, 6, "1");
    // xorshift noise: zstd cannot shrink it, so the body is over 6 MiB (well above axum's
    // 2 MiB default extractor limit, below the protocol's 16 MiB).
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for r in &mut b.records {
        r.payload = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
    }
    let body = fixtures::body(&b);
    assert!(body.len() > 6 << 20, "{}", body.len());
    let (s, ack) = h.upload_body(&p, &body, Some(b.id().to_hex()), None);
    assert_eq!(s, 200, "{ack}");
    let recs = h.records("include_payload=false");
    assert_eq!(recs.len(), 6);
    assert!(recs.iter().all(|r| r["payload_size"] == 1 << 20));
    let one = h.records(&format!(
        "record_id={}",
        recs[0]["record_id"].as_str().unwrap()
    ));
    assert_eq!(one[0]["payload_encoding"], "hex");
    assert_eq!(one[0]["payload"].as_str().unwrap().len(), 2 << 20);
}

/// A small body is decoded on the async thread only while it inflates to at most 32 KiB,
/// whatever its frame header states; one that inflates further is decoded again on the
/// blocking pool with the configured limit: stored when within it, refused 413 past it.
#[test]
fn a_small_body_that_inflates_past_the_inline_bound_is_decoded_with_the_configured_limit() {
    let h = Harness::start(|c| c.limits.max_decompressed_bytes = 4 << 20);
    let p = fixtures::private_id(14);
    let mut b = fixtures::batch(&p, 0, 6, "1");
    for r in &mut b.records {
        r.payload = vec![b'z'; 100 << 10];
    }
    // Two zstd frames: the first one's header states 100 bytes, the second holds the rest.
    let raw = zstd::decode_all(&fixtures::body(&b)[..]).unwrap();
    let mut body = zstd::bulk::compress(&raw[..100], 3).unwrap();
    body.extend(zstd::bulk::compress(&raw[100..], 3).unwrap());
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&body).unwrap(),
        Some(100)
    );
    assert!(body.len() < 16 << 10, "body is {} bytes", body.len());
    let (s, ack) = h.upload_body(&p, &body, Some(b.id().to_hex()), None);
    assert_eq!(s, 200, "{ack}");
    assert_eq!(ack["stored"], 6, "{ack}");
    let recs = h.records("include_payload=false");
    assert!(
        recs.iter().all(|r| r["payload_size"] == 100 << 10),
        "{recs:?}"
    );

    let mut bomb = zstd::bulk::compress(&[0u8; 100], 3).unwrap();
    bomb.extend(fixtures::zip_bomb(8 << 20));
    assert!(bomb.len() < 16 << 10, "bomb is {} bytes", bomb.len());
    let (s, v) = h.upload_body(&p, &bomb, None, None);
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().unwrap().contains("decompressed"), "{v}");
}
