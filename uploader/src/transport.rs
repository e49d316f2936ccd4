//! HTTP transport (ureq, rustls for https) and response classification. When to try again
//! (`Retry-After`, backoff) is in [`crate::retry`].
use std::io::Read;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::protocol::{self, BatchId, Verdict};
use crate::retry::parse_retry_after;

/// What one POST produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server answered.
    Status {
        /// HTTP status.
        code: u16,
        /// What to do about it.
        verdict: Verdict,
        /// `Retry-After`, if present and parseable.
        retry_after: Option<Duration>,
        /// The start of the response body (at most 512 bytes), for error reports; for an
        /// OTLP error answer, the `google.rpc.Status` message when it decodes.
        body: String,
        /// OTLP only: the `partial_success` of a 2xx answer that rejected records.
        partial: Option<otlp::PartialSuccess>,
    },
    /// No answer: connection refused, host not found, timeout...
    Transport(String),
    /// A connection was made but the exchange broke (reset, closed early, an answer that is
    /// not HTTP, a failed TLS handshake): retried like [`Outcome::Transport`], and the first
    /// one of a pass makes the uploader check the URL's scheme ([`Transport::scheme_mismatch`]).
    Broken(String),
}

/// How often [`Transport::send_until`] looks at its stop condition while a request runs.
const STOP_POLL: Duration = Duration::from_millis(50);

/// The upload URL, which holds the private log id (the capability to write the log's
/// stream). Nothing prints it: `Display` and `Debug` show `<private id>` in its place, and
/// [`Endpoint::scrub`] removes it from any text that may quote it (HTTP library errors, a
/// server's answer) before that text reaches a message, `status` or `state.json`.
#[derive(Clone)]
pub struct Endpoint {
    url: String,
    /// The path segment after `/logs/`, when there is one.
    secret: Option<String>,
}

impl Endpoint {
    /// Wraps the full upload URL.
    pub fn new(url: String) -> Endpoint {
        let secret = url.find("/logs/").and_then(|i| {
            let rest = url.get(i + 6..)?;
            let id = rest.split(['/', '?', '#']).next()?;
            (!id.is_empty()).then(|| id.to_owned())
        });
        Endpoint { url, secret }
    }

    /// The URL itself, for the HTTP request only.
    fn expose(&self) -> &str {
        &self.url
    }

    /// `text` with every copy of the private id (any letter case) replaced.
    pub fn scrub(&self, text: &str) -> String {
        match self.secret.as_deref() {
            Some(secret) => replace_secret(text, secret),
            None => text.to_owned(),
        }
    }
}

/// `text` with every copy of the hex of `private` (any letter case) replaced by
/// `<private id>`: for text stored before this redaction existed (an old `state.json`).
pub fn scrub_private_id(text: &str, private: &[u8; 32]) -> String {
    replace_secret(text, &hex::encode(private))
}

fn replace_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_owned();
    }
    let (lower, needle) = (text.to_ascii_lowercase(), secret.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(i) = lower.get(at..).and_then(|l| l.find(&needle)) {
        out.push_str(text.get(at..at + i).unwrap_or(""));
        out.push_str("<private id>");
        at += i + needle.len();
    }
    out.push_str(text.get(at..).unwrap_or(""));
    out
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.scrub(&self.url))
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

/// What the requests look like: the body format and the configured extra headers.
#[derive(Debug, Clone, Default)]
pub struct Wire {
    /// The body format (seglog or OTLP).
    pub format: crate::batch::BodyFormat,
    /// `[upload] headers`.
    pub headers: Vec<(String, String)>,
}

/// Sends batches to one endpoint.
#[derive(Clone)]
pub struct Transport {
    agent: ureq::Agent,
    url: Endpoint,
    token: Option<String>,
    timeout: Duration,
    wire: Arc<Wire>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("url", &self.url).finish()
    }
}

/// The URL with the private log id hidden (for messages); see [`Endpoint`].
pub fn redact(url: &str) -> String {
    Endpoint::new(url.to_owned()).to_string()
}

impl Transport {
    /// A transport posting to `url` (the full endpoint).
    pub fn new(
        url: String,
        token: Option<String>,
        connect_timeout: Duration,
        timeout: Duration,
    ) -> Transport {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::WebPki)
            .build();
        let agent = ureq::Agent::config_builder()
            // 4xx and 5xx are answers to classify, not errors (ureq 3 makes them errors).
            .http_status_as_error(false)
            .timeout_connect(Some(connect_timeout))
            // The whole request, body included (`send_within` narrows it per request).
            .timeout_global(Some(timeout))
            // A redirect is an answer to report, not to follow (the URL holds a secret).
            .max_redirects(0)
            // As with ureq 2: no proxy from the environment.
            .proxy(None)
            .tls_config(tls)
            .user_agent(concat!("seglog-uploader/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Transport {
            agent,
            url: Endpoint::new(url),
            token,
            timeout,
            wire: Arc::new(Wire::default()),
        }
    }

    /// The same transport sending `wire`'s format and headers.
    pub fn with_wire(mut self, wire: Wire) -> Transport {
        self.wire = Arc::new(wire);
        self
    }

    /// Posts one compressed batch, but gives up at `deadline` and as soon as `stop` says so
    /// (polled every 50 ms): the request runs on a helper thread, which is abandoned then (its
    /// own timeout, at most the remaining time, ends it). A hung server can therefore neither
    /// hold `upload flush --timeout` past its deadline nor delay a SIGTERM'd daemon.
    pub fn send_until(
        &self,
        id: &BatchId,
        body: &[u8],
        deadline: Option<Instant>,
        stop: &mut dyn FnMut() -> bool,
    ) -> Outcome {
        let limit = match deadline {
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Outcome::Transport("deadline reached before sending".into());
                }
                left.min(self.timeout)
            }
            None => self.timeout,
        };
        let (tx, rx) = mpsc::channel();
        let me = self.clone();
        let (id, body): (BatchId, Arc<[u8]>) = (*id, Arc::from(body));
        let spawned = std::thread::Builder::new()
            .name("seglog-upload-request".into())
            .spawn(move || {
                let _ = tx.send(me.send_within(&id, &body, limit));
            });
        if let Err(e) = spawned {
            return Outcome::Transport(format!("cannot start the request thread: {e}"));
        }
        loop {
            match rx.recv_timeout(STOP_POLL) {
                Ok(outcome) => return outcome,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Outcome::Transport("the request thread ended without an answer".into())
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if stop() {
                return Outcome::Transport("request abandoned: stop requested".into());
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Outcome::Transport("no answer before the deadline".into());
            }
        }
    }

    /// `text` with the private id removed (see [`Endpoint::scrub`]).
    pub fn scrub(&self, text: &str) -> String {
        self.url.scrub(text)
    }

    /// Whether the server at the URL's address speaks another scheme than the URL's
    /// (see [`crate::scheme`]): the sentence to show, or `None`.
    pub fn scheme_mismatch(&self, timeout: Duration) -> Option<String> {
        crate::scheme::mismatch(self.url.expose(), timeout)
    }

    /// Posts one compressed batch (blocking, up to the configured timeout).
    pub fn send(&self, id: &BatchId, body: &[u8]) -> Outcome {
        self.send_within(id, body, self.timeout)
    }

    /// Posts one compressed batch; the whole request takes at most `limit`.
    fn send_within(&self, id: &BatchId, body: &[u8], limit: Duration) -> Outcome {
        let digest = protocol::content_digest(body);
        let mut req = self
            .agent
            .post(self.url.expose())
            .config()
            .timeout_global(Some(limit))
            .build();
        let otlp = match self.wire.format {
            crate::batch::BodyFormat::Seglog => {
                req = req
                    .header("Content-Type", protocol::CONTENT_TYPE)
                    .header("Content-Encoding", "zstd")
                    .header(
                        protocol::HEADER_PROTOCOL,
                        protocol::PROTOCOL_VERSION.to_string(),
                    )
                    .header(protocol::HEADER_BATCH_ID, id.to_hex())
                    .header(protocol::HEADER_CONTENT_DIGEST, &digest);
                false
            }
            crate::batch::BodyFormat::Otlp { compression } => {
                req = req
                    .header("Content-Type", otlp::CONTENT_TYPE)
                    .header(otlp::HEADER_BATCH_ID, id.to_hex());
                match compression {
                    crate::config::Compression::Zstd => {
                        req = req.header("Content-Encoding", "zstd");
                    }
                    crate::config::Compression::Gzip => {
                        req = req.header("Content-Encoding", "gzip");
                    }
                    crate::config::Compression::None => {}
                }
                true
            }
        };
        for (k, v) in &self.wire.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        if otlp {
            return self.answer_otlp(req.send(body));
        }
        let mut resp = match req.send(body) {
            Ok(r) => r,
            // With `http_status_as_error(false)` every status is an `Ok` response: an error
            // here is a transport failure (connect, TLS, timeout, a broken answer).
            Err(e) => {
                let msg = self.url.scrub(&format!("{}: {e}", self.url));
                return if is_unreachable(&e) {
                    Outcome::Transport(msg)
                } else {
                    Outcome::Broken(msg)
                };
            }
        };
        let code = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        let retry_after =
            header("Retry-After").and_then(|v| parse_retry_after(v, std::time::SystemTime::now()));
        let verdict = protocol::classify(
            code,
            header(protocol::HEADER_RECEIVED_DIGEST),
            header(protocol::HEADER_PROTOCOL),
            &digest,
        );
        let mut buf = Vec::new();
        // Read (a bounded amount of) the body so the connection can be reused.
        let _ = resp.body_mut().as_reader().take(512).read_to_end(&mut buf);
        Outcome::Status {
            code,
            verdict,
            retry_after,
            body: self.url.scrub(&String::from_utf8_lossy(&buf)),
            partial: None,
        }
    }
}

mod otlp_answer;
pub use otlp_answer::otlp_verdict;

/// Whether `e` means nothing answered (no connection, no answer in time), as opposed to an
/// exchange that broke.
fn is_unreachable(e: &ureq::Error) -> bool {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Timeout(_) | ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Io(io) => matches!(
            io.kind(),
            K::ConnectionRefused
                | K::TimedOut
                | K::WouldBlock
                | K::HostUnreachable
                | K::NetworkUnreachable
                | K::AddrNotAvailable
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_private_id() {
        assert_eq!(
            redact("http://h:1/v1/logs/abcdef/batches"),
            "http://h:1/v1/logs/<private id>/batches"
        );
        assert_eq!(redact("http://h:1/x"), "http://h:1/x");
    }

    #[test]
    fn a_refusal_counts_only_when_it_confirms_the_body_sent() {
        use crate::testing::{Behavior, FlakyServer};
        let s = FlakyServer::start(vec![
            Behavior::Status(400),
            Behavior::StatusUnconfirmed(400),
            Behavior::Status(415),
        ]);
        let t = Transport::new(
            format!("{}/v1/logs/{}/batches", s.url(), "cd".repeat(32)),
            None,
            Duration::from_secs(2),
            Duration::from_secs(5),
        );
        let id = BatchId([7; 32]);
        let verdict = |o: Outcome| match o {
            Outcome::Status { verdict, .. } => verdict,
            other => panic!("{other:?}"),
        };
        let never = &mut || false;
        assert_eq!(
            verdict(t.send_until(&id, b"body", None, never)),
            Verdict::Rejected
        );
        assert_eq!(
            verdict(t.send_until(&id, b"body", None, never)),
            Verdict::Unconfirmed
        );
        // 415 is about the request's headers, never the batch, confirmed or not.
        assert_eq!(verdict(t.send(&id, b"body")), Verdict::Unconfirmed);
    }

    /// https goes through rustls (the only TLS the ureq features allow): a server that
    /// answers in plain text fails the handshake with a rustls error, a broken exchange
    /// whose text does not show the private id.
    #[test]
    fn https_uses_rustls_and_a_failed_handshake_is_a_scrubbed_transport_error() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        });
        let id = "ef".repeat(32);
        let t = Transport::new(
            format!("https://{addr}/v1/logs/{id}/batches"),
            None,
            Duration::from_secs(5),
            Duration::from_secs(5),
        );
        match t.send(&BatchId([1; 32]), b"body") {
            // A connection was made and the exchange broke: the engine checks the scheme.
            Outcome::Broken(e) => {
                // rustls's own wording (the handshake error reaches us as io).
                assert!(e.contains("received corrupt message"), "{e}");
                assert!(!e.contains(&id), "{e}");
                assert!(e.contains("<private id>"), "{e}");
            }
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn an_endpoint_never_shows_its_private_id() {
        let id = "ab".repeat(32);
        let e = Endpoint::new(format!("https://h:1/base/v1/logs/{id}/batches"));
        assert_eq!(
            e.to_string(),
            "https://h:1/base/v1/logs/<private id>/batches"
        );
        assert!(!format!("{e:?}").contains(&id));
        let quoted = format!(
            "https://h:1/base/v1/logs/{id}/batches: Connection refused ({})",
            id.to_uppercase()
        );
        assert_eq!(
            e.scrub(&quoted),
            "https://h:1/base/v1/logs/<private id>/batches: Connection refused (<private id>)"
        );
        assert_eq!(
            scrub_private_id(&format!("x {id} y"), &[0xab; 32]),
            "x <private id> y"
        );
        let t = Transport::new(
            e.expose().to_owned(),
            None,
            Duration::from_secs(1),
            Duration::from_secs(1),
        );
        assert!(!format!("{t:?}").contains(&id));
    }
}
