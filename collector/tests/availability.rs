//! Collector availability under idle and slow peers (issue 11, item 10): connections that
//! never send a byte and uploads whose bodies trickle in must neither starve `/healthz` nor
//! hold every upload slot, and the collector drops them after its timeouts.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use collector::fixtures;
use common::{request_head, Harness};

/// A GET with a client-side timeout; the status, or the error.
fn get_within(url: &str, t: Duration) -> Result<u16, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(t))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(r) => Ok(r.status().as_u16()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn idle_and_slow_peers_do_not_starve_health_or_uploads() {
    let h = Harness::start(|c| {
        c.limits.max_concurrent_uploads = 4;
    });
    // 300 connections that never send a byte.
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(h.addr).unwrap())
        .collect();
    // 6 uploads (more than the slots) that send their head and a few body bytes, then stall.
    let p = fixtures::private_id(3);
    let body = fixtures::body(&fixtures::batch(&p, 0, 50, "1"));
    let slow: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(h.addr).unwrap();
            s.write_all(request_head(&p, body.len() as u64).as_bytes())
                .unwrap();
            s.write_all(&body[..10]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    assert_eq!(
        get_within(&format!("{}/healthz", h.url), Duration::from_secs(10)),
        Ok(200),
        "/healthz with 300 idle and 6 slow peers"
    );
    // A real upload is served while the slow ones hold their connections.
    let q = fixtures::private_id(4);
    let (s, v) = h.upload(&q, &fixtures::batch(&q, 0, 20, "1"));
    assert_eq!(s, 200, "{v}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "served only after {:?}",
        start.elapsed()
    );
    drop(idle);
    drop(slow);
}

#[test]
fn a_peer_that_never_sends_a_byte_is_disconnected() {
    let h = Harness::start(|c| {
        c.limits.idle_timeout = Duration::from_millis(500);
    });
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    // The server closes the connection (EOF or reset) instead of holding it forever.
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    assert!(start.elapsed() < Duration::from_secs(15));
}

#[test]
fn a_body_that_trickles_slower_than_the_timeout_gets_408_and_frees_its_slot() {
    let h = Harness::start(|c| {
        c.limits.max_concurrent_uploads = 1;
        c.limits.body_timeout = Duration::from_millis(500);
    });
    let p = fixtures::private_id(5);
    let body = fixtures::body(&fixtures::batch(&p, 0, 20, "1"));
    let mut s = TcpStream::connect(h.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(request_head(&p, body.len() as u64).as_bytes())
        .unwrap();
    s.write_all(&body[..5]).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 408"), "{resp}");
    // The only slot is free again.
    let (st, v) = h.upload(&p, &fixtures::batch(&p, 0, 20, "1"));
    assert_eq!(st, 200, "{v}");
}

#[test]
fn connections_beyond_the_cap_are_closed_and_served_again_once_others_leave() {
    let h = Harness::start(|c| {
        c.limits.max_connections = 5;
    });
    let held: Vec<TcpStream> = (0..5)
        .map(|_| TcpStream::connect(h.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(h.addr).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 64];
    assert_eq!(extra.read(&mut buf).unwrap_or(0), 0, "served past the cap");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        get_within(&format!("{}/healthz", h.url), Duration::from_secs(10)),
        Ok(200)
    );
}
