//! A fault-injecting TCP proxy on 127.0.0.1 for end-to-end and torture tests.
//!
//! It forwards connections to a target address and, depending on its current [`Fault`],
//! delays, resets, truncates, black-holes them, or answers HTTP requests itself with an error
//! status (429 with Retry-After, 500) without reaching the target.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Forward faithfully.
    Pass,
    /// Forward, but wait this long before forwarding the request.
    Delay(Duration),
    /// Accept, then reset the connection at once.
    Reset,
    /// Forward only this many request bytes, then close both sides.
    Truncate(usize),
    /// Forward the whole request, but only this many bytes of the answer, then close both
    /// sides: the server may have stored the batch while the client hears nothing.
    TruncateResponse(usize),
    /// Forward the request head and only this many bytes of its body (fewer than its
    /// `Content-Length`), then half-close towards the server, read the rest of the body from
    /// the client, and relay the server's answer: a network cut in the middle of a body.
    CutBody(usize),
    /// Accept and read, never answer (the client must time out).
    Blackhole,
    /// Answer every request with this HTTP status (429 carries `Retry-After: 1`).
    Status(u16),
    /// Answer every request with this 4xx as a server that read the whole body and judged the
    /// batch invalid: the answer confirms receipt with `Seglog-Received-Digest` (the request's
    /// `Content-Digest`, when the whole body arrived), so the device may dead-letter it.
    Refuse(u16),
}

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub faults: AtomicU64,
}

/// A running proxy. Dropping it stops accepting.
pub struct Proxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
    target: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
    pub stats: Arc<ProxyStats>,
}

impl Proxy {
    /// Starts a proxy to `target` on a free loopback port.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let fault = Arc::new(Mutex::new(Fault::Pass));
        let target = Arc::new(Mutex::new(target));
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(ProxyStats::default());
        let (f, t, s, st) = (fault.clone(), target.clone(), stop.clone(), stats.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        st.connections.fetch_add(1, Ordering::Relaxed);
                        let fault = *f.lock().unwrap_or_else(|p| p.into_inner());
                        if fault != Fault::Pass {
                            st.faults.fetch_add(1, Ordering::Relaxed);
                        }
                        let target = *t.lock().unwrap_or_else(|p| p.into_inner());
                        std::thread::spawn(move || handle(conn, target, fault));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Proxy {
            addr,
            fault,
            target,
            stop,
            stats,
        }
    }

    /// Changes what happens to new connections.
    pub fn set(&self, fault: Fault) {
        *self.fault.lock().unwrap_or_else(|p| p.into_inner()) = fault;
    }

    /// Points the proxy at a new target (a restarted server on a new port).
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// The URL of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn handle(conn: TcpStream, target: SocketAddr, fault: Fault) {
    let _ = conn.set_nodelay(true);
    match fault {
        Fault::Reset => {
            // SO_LINGER 0 is not reachable from std; closing with unread data makes the
            // kernel send RST, which is what a crashing server looks like.
            let _ = conn.set_read_timeout(Some(Duration::from_millis(50)));
            let mut buf = [0u8; 16];
            let _ = (&conn).read(&mut buf);
            drop(conn);
        }
        Fault::Blackhole => {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
            let mut buf = vec![0u8; 64 << 10];
            while let Ok(n) = (&conn).read(&mut buf) {
                if n == 0 {
                    break;
                }
            }
        }
        Fault::Status(code) => answer_status(conn, code, false),
        Fault::Refuse(code) => answer_status(conn, code, true),
        Fault::CutBody(n) => cut_body(conn, target, n),
        Fault::Pass | Fault::Delay(_) | Fault::Truncate(_) | Fault::TruncateResponse(_) => {
            forward(conn, target, fault)
        }
    }
}

/// Reads one HTTP request (headers + Content-Length body) and answers with `code`.
fn answer_status(mut conn: TcpStream, code: u16, confirm: bool) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 8192];
    let mut need: Option<usize> = None;
    loop {
        if let Some(n) = need {
            if req.len() >= n {
                break;
            }
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if need.is_none() {
            if let Some(end) = find(&req, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap_or(0))
                    })
                    .unwrap_or(0usize);
                need = Some(end + 4 + len);
            }
        }
    }
    let reason = match code {
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        413 => "Payload Too Large",
        _ => "Internal Server Error",
    };
    let mut extra = if code == 429 || code == 503 {
        "Retry-After: 1\r\n".to_string()
    } else {
        String::new()
    };
    let whole = need.is_some_and(|n| req.len() >= n);
    if confirm && whole {
        let end = find(&req, b"\r\n\r\n").unwrap_or(0);
        let head = String::from_utf8_lossy(&req[..end]).into_owned();
        if let Some(d) = head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-digest")
                .then(|| v.trim().to_string())
        }) {
            extra.push_str(&format!("Seglog-Received-Digest: {d}\r\n"));
        }
    }
    let body = format!("{{\"error\":\"injected {code}\"}}");
    let _ = write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.shutdown(Shutdown::Both);
}

/// See [`Fault::CutBody`].
fn cut_body(mut client: TcpStream, target: SocketAddr, keep: usize) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 8192];
    let (end, len) = loop {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if let Some(end) = find(&req, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&req[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0usize);
            break (end + 4, len);
        }
    };
    while req.len() < end + len {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    let Ok(mut server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return;
    };
    let cut = end + keep.min(len.saturating_sub(1));
    let _ = server.write_all(&req[..cut.min(req.len())]);
    let _ = server.shutdown(Shutdown::Write);
    let _ = server.set_read_timeout(Some(Duration::from_secs(10)));
    let mut answer = Vec::new();
    let _ = server.read_to_end(&mut answer);
    let _ = client.write_all(&answer);
    let _ = client.shutdown(Shutdown::Both);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn forward(client: TcpStream, target: SocketAddr, fault: Fault) {
    let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
        return; // target down: the client sees the connection close
    };
    let _ = server.set_nodelay(true);
    if let Fault::Delay(d) = fault {
        std::thread::sleep(d);
    }
    let (limit, answer_limit) = match fault {
        Fault::Truncate(n) => (Some(n), None),
        Fault::TruncateResponse(n) => (None, Some(n)),
        _ => (None, None),
    };
    let (c2, s2) = match (client.try_clone(), server.try_clone()) {
        (Ok(c), Ok(s)) => (c, s),
        _ => return,
    };
    let up = std::thread::spawn(move || pump(c2, s2, limit));
    pump(server, client, answer_limit);
    let _ = up.join();
}

/// Copies `from` to `to` until EOF (or `limit` bytes, then closes both).
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<usize>) {
    let mut buf = vec![0u8; 64 << 10];
    let mut sent = 0usize;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = match limit {
            Some(l) if sent + n >= l => {
                let _ = to.write_all(&buf[..l - sent]);
                let _ = to.shutdown(Shutdown::Both);
                let _ = from.shutdown(Shutdown::Both);
                return;
            }
            _ => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
    }
    let _ = to.shutdown(Shutdown::Write);
}
