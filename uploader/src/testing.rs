//! A small HTTP/1.1 collector for tests, on 127.0.0.1, that misbehaves on purpose: error
//! statuses, `Retry-After`, 413 above a size, connections reset mid-body, stalls past the
//! client's timeout, and acknowledging a batch and then dying before the answer. It decodes
//! every batch with [`protocol::decode_body`], checks the `Seglog-Batch-Id` header against the
//! body, and dedupes by batch id like a real collector. Not part of the stable API.
#![allow(missing_docs)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::protocol::{self, Batch, BatchId, Limits, Record};

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// Store and answer 200.
    Ok,
    /// Answer this status (not stored); a 4xx confirms, with `Seglog-Received-Digest`, that
    /// the whole body arrived (a real refusal of an intact batch).
    Status(u16),
    /// Answer this status without that confirmation (a refusal the device must not trust).
    StatusUnconfirmed(u16),
    /// Answer this status with `Retry-After: secs`.
    RetryAfter(u16, u64),
    /// Read half of the body, then drop the connection.
    ResetMidBody,
    /// Read the request, then say nothing for this long and drop the connection.
    Stall(Duration),
    /// Store the batch, then drop the connection without answering.
    AckThenDie,
}

/// Everything the server saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests received (complete or not).
    pub requests: u64,
    /// Stored batches by id.
    pub batches: HashMap<BatchId, Batch>,
    /// Batch ids in arrival order of every stored-or-duplicate request.
    pub arrivals: Vec<BatchId>,
    /// Requests whose batch id was already stored.
    pub duplicates: u64,
    /// Problems (header/body id mismatch, undecodable bodies): must stay empty.
    pub errors: Vec<String>,
    /// Authorization headers seen.
    pub auth: Vec<Option<String>>,
}

struct Shared {
    script: Mutex<VecDeque<Behavior>>,
    seen: Mutex<Seen>,
    max_body: Mutex<Option<usize>>,
    delay: Mutex<Duration>,
    stop: AtomicBool,
}

/// The server; stops when dropped.
pub struct FlakyServer {
    addr: std::net::SocketAddr,
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FlakyServer {
    /// Starts a server that follows `script` request by request, then answers 200.
    pub fn start(script: Vec<Behavior>) -> FlakyServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            script: Mutex::new(script.into()),
            seen: Mutex::new(Seen::default()),
            max_body: Mutex::new(None),
            delay: Mutex::new(Duration::ZERO),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        FlakyServer { addr, shared }
    }

    /// The base URL (`http://127.0.0.1:port/`).
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Answers 413 to bodies larger than `n` bytes from now on.
    pub fn set_max_body(&self, n: Option<usize>) {
        *lock(&self.shared.max_body) = n;
    }

    /// Stores each accepted batch, then waits this long before answering (so a client can
    /// be killed between send and acknowledgement).
    pub fn set_delay(&self, d: Duration) {
        *lock(&self.shared.delay) = d;
    }

    /// Appends behaviours to the script.
    pub fn push(&self, b: impl IntoIterator<Item = Behavior>) {
        lock(&self.shared.script).extend(b);
    }

    /// What was seen so far.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        lock(&self.shared.seen)
    }

    /// Every stored record (unique batches), in position order, and whether any position
    /// appeared twice.
    pub fn records(&self) -> (Vec<Record>, bool) {
        let seen = self.seen();
        let mut v: Vec<Record> = seen
            .batches
            .values()
            .flat_map(|b| b.records.iter().cloned())
            .collect();
        v.sort_by_key(|r| r.position);
        let dup = v.windows(2).any(|w| w[0].position == w[1].position);
        (v, dup)
    }
}

impl Drop for FlakyServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }
}

struct Request {
    headers: HashMap<String, String>,
    body: Vec<u8>,
    complete: bool,
}

fn read_head(r: &mut BufReader<TcpStream>) -> Option<HashMap<String, String>> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            return Some(headers);
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
}

fn read_body(
    r: &mut BufReader<TcpStream>,
    headers: HashMap<String, String>,
    half: bool,
) -> Option<Request> {
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let want = if half { len / 2 } else { len };
    let mut body = vec![0u8; want];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        headers,
        body,
        complete: want == len,
    })
}

fn respond(w: &mut TcpStream, code: u16, extra: &str, body: &str) -> bool {
    let msg = format!("HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}\r\n{body}", body.len());
    w.write_all(msg.as_bytes()).is_ok()
}

/// The header confirming that the whole body arrived (PROTOCOL.md section 5).
fn received(req: &Request) -> String {
    format!(
        "{}: {}\r\n",
        protocol::HEADER_RECEIVED_DIGEST,
        protocol::content_digest(&req.body)
    )
}

fn store(s: &Shared, req: &Request) -> Result<String, String> {
    let mut seen = lock(&s.seen);
    let batch = match protocol::decode_body(&req.body, &Limits::default()) {
        Ok(b) => b,
        Err(e) => {
            seen.errors.push(format!("undecodable body: {e}"));
            return Err(e.to_string());
        }
    };
    let id = batch.id();
    if req.headers.get("seglog-batch-id").map(String::as_str) != Some(id.to_hex().as_str()) {
        seen.errors.push(format!(
            "Seglog-Batch-Id header {:?} does not match the body's {id}",
            req.headers.get("seglog-batch-id")
        ));
    }
    seen.arrivals.push(id);
    let n = batch.records.len();
    let dup = seen.batches.contains_key(&id);
    if dup {
        seen.duplicates += 1;
        if seen
            .batches
            .get(&id)
            .is_some_and(|old| old.records != batch.records || old.gaps != batch.gaps)
        {
            seen.errors
                .push(format!("batch {id} was resent with different records"));
        }
    } else {
        seen.batches.insert(id, batch);
    }
    Ok(format!(
        "{{\"batch_id\":\"{id}\",\"records\":{n},\"duplicate\":{dup}}}"
    ))
}

fn serve(conn: TcpStream, s: &Shared) {
    let Ok(mut w) = conn.try_clone() else { return };
    let mut r = BufReader::new(conn);
    loop {
        // A TLS ClientHello (an https:// client, or the uploader's scheme probe): answer as
        // a plain-HTTP server does, 400, without taking a scripted behaviour.
        if r.fill_buf().ok().and_then(|b| b.first().copied()) == Some(0x16) {
            let _ = respond(
                &mut w,
                400,
                "Connection: close\r\n",
                "{\"error\":\"not HTTP\"}",
            );
            let _ = w.shutdown(Shutdown::Both);
            return;
        }
        let Some(head) = read_head(&mut r) else {
            return;
        };
        let behavior = lock(&s.script).pop_front().unwrap_or(Behavior::Ok);
        let half = behavior == Behavior::ResetMidBody;
        let Some(req) = read_body(&mut r, head, half) else {
            return;
        };
        {
            let mut seen = lock(&s.seen);
            seen.requests += 1;
            seen.auth.push(req.headers.get("authorization").cloned());
        }
        let too_big = lock(&s.max_body).is_some_and(|m| req.body.len() > m);
        let ok = match behavior {
            _ if !req.complete => {
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Behavior::Stall(d) => {
                std::thread::sleep(d);
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Behavior::AckThenDie => {
                let _ = store(s, &req);
                let _ = w.shutdown(Shutdown::Both);
                return;
            }
            Behavior::Status(code) => {
                respond(&mut w, code, &received(&req), "{\"error\":\"scripted\"}")
            }
            Behavior::StatusUnconfirmed(code) => {
                respond(&mut w, code, "", "{\"error\":\"scripted\"}")
            }
            Behavior::RetryAfter(code, secs) => respond(
                &mut w,
                code,
                &format!("Retry-After: {secs}\r\n"),
                "{\"error\":\"busy\"}",
            ),
            Behavior::Ok | Behavior::ResetMidBody if too_big => {
                respond(&mut w, 413, "", "{\"error\":\"too large\"}")
            }
            Behavior::Ok | Behavior::ResetMidBody => match store(s, &req) {
                Ok(body) => {
                    let delay = *lock(&s.delay);
                    std::thread::sleep(delay);
                    respond(&mut w, 200, "", &body)
                }
                Err(e) => respond(
                    &mut w,
                    400,
                    &received(&req),
                    &format!("{{\"error\":{e:?}}}"),
                ),
            },
        };
        if !ok {
            return;
        }
    }
}
