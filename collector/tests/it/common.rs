//! Shared helpers: a collector on 127.0.0.1 in a temporary directory, and small HTTP
//! clients (ureq for ordinary requests, raw TCP for the malformed ones).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use collector::fixtures;
use collector::{RunningServer, Server, ServerConfig};
use protocol::{self, Batch};
use serde_json::Value;

thread_local! {
    /// The PostgreSQL database of the test running on this thread (see [`each_backend`]);
    /// `None`: SQLite in the harness's directory.
    static POSTGRES: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` once on SQLite and once on a fresh PostgreSQL database (when PostgreSQL is
/// installed; else "SKIPPED: ..." is printed): every [`Harness`] started inside uses it.
pub fn each_backend(f: impl Fn()) {
    for db in collector::pg_server::test_dbs() {
        eprintln!("-- backend {}", db.name());
        let url = match &db {
            collector::pg_server::TestDb::Postgres(url) => Some(url.clone()),
            collector::pg_server::TestDb::Sqlite(_) => None,
        };
        POSTGRES.with(|p| *p.borrow_mut() = url);
        f();
        POSTGRES.with(|p| *p.borrow_mut() = None);
    }
}

/// Whether the test on this thread runs on PostgreSQL.
pub fn on_postgres() -> bool {
    POSTGRES.with(|p| p.borrow().is_some())
}

/// A running collector and its data directory.
pub struct Harness {
    pub dir: tempfile::TempDir,
    pub server: Option<RunningServer>,
    pub url: String,
    pub addr: SocketAddr,
}

/// The config every test starts from: port 0 on loopback, data in `dir`.
pub fn config(dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(dir.join("data"));
    c.postgres = POSTGRES.with(|p| p.borrow().clone());
    c.listen = "127.0.0.1:0".parse().unwrap();
    c.shutdown_grace = Duration::from_secs(5);
    c
}

impl Harness {
    /// Starts a collector; `tweak` adjusts the config first.
    pub fn start(tweak: impl FnOnce(&mut ServerConfig)) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        tweak(&mut c);
        let server = Server::start(c).unwrap();
        let (url, addr) = (server.url(), server.local_addr());
        Harness {
            dir,
            server: Some(server),
            url,
            addr,
        }
    }

    /// Stops the collector and starts a new one on the same data directory.
    pub fn restart(&mut self, tweak: impl FnOnce(&mut ServerConfig)) {
        if let Some(s) = self.server.take() {
            s.shutdown().unwrap();
        }
        let mut c = config(self.dir.path());
        tweak(&mut c);
        let server = Server::start(c).unwrap();
        self.url = server.url();
        self.addr = server.local_addr();
        self.server = Some(server);
    }

    /// Uploads `b` as the reference uploader would; returns the status and JSON body.
    pub fn upload(&self, private: &[u8; 32], b: &Batch) -> (u16, Value) {
        self.upload_body(private, &fixtures::body(b), Some(b.id().to_hex()), None)
    }

    /// Posts `body` to log `private`'s endpoint with the protocol's headers.
    pub fn upload_body(
        &self,
        private: &[u8; 32],
        body: &[u8],
        batch_id: Option<String>,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = agent()
            .post(format!("{}{}", self.url, fixtures::path(private)))
            .header("Content-Type", protocol::CONTENT_TYPE)
            .header("Content-Encoding", "zstd")
            .header(protocol::HEADER_PROTOCOL, "1");
        if let Some(id) = batch_id {
            req = req.header(protocol::HEADER_BATCH_ID, &id);
        }
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        json_response(req.send(body))
    }

    /// The upload endpoint of log `private`.
    pub fn upload_url(&self, private: &[u8; 32]) -> String {
        format!("{}{}", self.url, fixtures::path(private))
    }

    /// `GET path` (with query), JSON answer.
    pub fn get(&self, path_and_query: &str) -> (u16, Value) {
        json_response(agent().get(format!("{}{path_and_query}", self.url)).call())
    }

    /// `GET path`, text answer.
    pub fn get_text(&self, path_and_query: &str) -> (u16, String) {
        let r = reply(agent().get(format!("{}{path_and_query}", self.url)).call());
        (r.status, r.text)
    }

    /// All records (up to 10 000) as JSON.
    pub fn records(&self, query: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/api/records?{query}"));
        assert_eq!(s, 200, "{v}");
        v["records"].as_array().unwrap().clone()
    }
}

/// What a ureq call returns.
pub type Answer = Result<ureq::http::Response<ureq::Body>, ureq::Error>;

/// A whole HTTP answer: status, headers and body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub text: String,
}

impl Reply {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// An agent that hands back every status as an answer (4xx and 5xx are what these tests
/// look at), not as an error.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// [`agent`] that gives up on a request after `t`.
pub fn agent_with_timeout(t: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(t))
        .build()
        .into()
}

/// Reads an answer whole; `Err` only when there was no HTTP answer.
pub fn try_reply(r: Answer) -> Result<Reply, ureq::Error> {
    let mut r = r?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r
        .body_mut()
        .with_config()
        .limit(u64::MAX)
        .read_to_string()?;
    Ok(Reply {
        status,
        headers,
        text,
    })
}

/// Reads an answer whole; panics when there was no HTTP answer.
pub fn reply(r: Answer) -> Reply {
    try_reply(r).unwrap_or_else(|e| panic!("request failed: {e}"))
}

/// Status and JSON body of an answer.
pub fn json_response(r: Answer) -> (u16, Value) {
    let Reply { status, text, .. } = reply(r);
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("status {status}: not JSON: {text:?}"));
    (status, v)
}

/// Sends raw bytes on a new connection, half-closes, and returns whatever comes back.
pub fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The head of an upload request for `private` with `content_length`.
pub fn request_head(private: &[u8; 32], content_length: u64) -> String {
    format!(
        "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {}\r\nContent-Encoding: zstd\r\n\
         Seglog-Protocol: 1\r\nContent-Length: {content_length}\r\nConnection: close\r\n\r\n",
        fixtures::path(private),
        protocol::CONTENT_TYPE
    )
}

/// The status code of a raw HTTP response ("HTTP/1.1 413 ...").
pub fn status_of(response: &str) -> Option<u16> {
    response.split(' ').nth(1)?.parse().ok()
}
