//! The forwarder thread: reads the queue from the cursor, maps each batch to OTLP, posts it,
//! retries until the receiver takes it, then moves and saves the cursor.
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use segment_log::{Entry, FrameKind, Position, Reader, ReaderOptions};

use super::{cursor, ForwardConfig, Forwarder};

/// The running forwarder thread; stopping it (or dropping it) leaves the cursor at the last
/// acknowledged batch.
#[derive(Debug)]
pub struct Running {
    fwd: Arc<Forwarder>,
    thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Starts forwarding `fwd`'s queue as `cfg` says, decoding batches within `limits`.
    pub fn start(
        fwd: Arc<Forwarder>,
        cfg: ForwardConfig,
        limits: protocol::Limits,
    ) -> std::io::Result<Running> {
        let f = fwd.clone();
        let thread = std::thread::Builder::new()
            .name("seglog-forward".into())
            .spawn(move || Sender::new(f, cfg, limits).run())?;
        Ok(Running {
            fwd,
            thread: Some(thread),
        })
    }

    /// The queue side (counters).
    pub fn forwarder(&self) -> &Arc<Forwarder> {
        &self.fwd
    }

    /// Stops the thread (an in-flight request is abandoned after its timeout at most).
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.fwd.request_stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// What became of one batch.
enum Done {
    /// Acknowledged (or refused for good and kept): move on.
    Next,
    /// Stop requested before it was acknowledged.
    Stopped,
}

struct Sender {
    fwd: Arc<Forwarder>,
    cfg: ForwardConfig,
    limits: protocol::Limits,
    agent: ureq::Agent,
    enc: otlp::Encoder,
    pb: Vec<u8>,
}

fn log(msg: &str) {
    eprintln!("seglog collector: forward: {msg}");
}

impl Sender {
    fn new(fwd: Arc<Forwarder>, cfg: ForwardConfig, limits: protocol::Limits) -> Sender {
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(ureq::tls::RootCerts::WebPki)
            .build();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .max_redirects(0)
            .proxy(None)
            .tls_config(tls)
            .user_agent(concat!("seglog-collector/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Sender {
            fwd,
            cfg,
            limits,
            agent,
            enc: otlp::Encoder::new(),
            pb: Vec::new(),
        }
    }

    fn run(mut self) {
        let dir = self.fwd.dir().to_path_buf();
        let queue = dir.join("queue");
        let mut from = match cursor::load(&dir) {
            Ok(p) => p.unwrap_or_default(),
            Err(e) => {
                log(&format!(
                    "{}: {e}; forwarding the whole queue again (at least once)",
                    cursor::path(&dir).display()
                ));
                Position::default()
            }
        };
        let mut seen = 0u64;
        'reopen: while !self.fwd.stopping() {
            let mut reader = match Reader::open(&queue, from, ReaderOptions::default()) {
                Ok(r) => r,
                Err(e) => {
                    log(&format!("cannot read the queue: {e}"));
                    self.fwd.wait(&mut seen, Duration::from_secs(1));
                    continue;
                }
            };
            loop {
                let (body, kind) = match reader.next_entry() {
                    Ok(None) => {
                        // At the live end: wait for an append, then read with a fresh reader.
                        self.fwd.wait(&mut seen, Duration::from_secs(1));
                        continue 'reopen;
                    }
                    Ok(Some(Entry::Damage(d))) => {
                        log(&format!("skipping a damaged range of the queue: {d}"));
                        (None, FrameKind::Record)
                    }
                    Ok(Some(Entry::Frame(f))) => (Some(f.payload.to_vec()), f.kind),
                    Err(e) => {
                        log(&format!("reading the queue: {e}"));
                        self.fwd.wait(&mut seen, Duration::from_secs(1));
                        continue 'reopen;
                    }
                };
                let next = reader.position();
                if let (Some(body), FrameKind::Record) = (body, kind) {
                    match self.deliver(&body) {
                        Done::Next => {}
                        Done::Stopped => return,
                    }
                }
                from = next;
                if let Err(e) = cursor::save(&dir, from) {
                    // The batch goes again after a restart: at least once.
                    log(&format!(
                        "cannot save {}: {e}",
                        cursor::path(&dir).display()
                    ));
                }
                remove_consumed(&queue, from.segment);
            }
        }
    }

    /// Sends one queued body until the receiver takes it or refuses it for good.
    fn deliver(&mut self, body: &[u8]) -> Done {
        let batch = match protocol::decode_body(body, &self.limits) {
            Ok(b) => b,
            Err(e) => {
                // Checked before it was queued: only a damaged disk gets here.
                log(&format!("a queued batch does not decode ({e}); skipped"));
                self.fwd.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                return Done::Next;
            }
        };
        let id = batch.id();
        self.pb.clear();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
        self.enc.encode(&batch, now, &mut self.pb);
        let compressed = match self.cfg.encoding {
            Some("zstd") => zstd::bulk::compress(&self.pb, 3).map_err(|e| e.to_string()),
            Some("gzip") => otlp::gzip(&self.pb, 6).ok_or_else(|| "no gzip in this build".into()),
            _ => Ok(self.pb.clone()),
        };
        let (wire, encoding) = match compressed {
            Ok(z) => (z, self.cfg.encoding),
            Err(e) => {
                log(&format!("compressing: {e}; sending uncompressed"));
                (self.pb.clone(), None)
            }
        };
        self.send_loop(&id, &wire, encoding, batch.records.len())
    }

    fn send_loop(
        &self,
        id: &protocol::BatchId,
        wire: &[u8],
        encoding: Option<&str>,
        records: usize,
    ) -> Done {
        let mut attempt = 0u32;
        loop {
            if self.fwd.stopping() {
                return Done::Stopped;
            }
            let mut req = self
                .agent
                .post(&self.cfg.url)
                .header("Content-Type", otlp::CONTENT_TYPE)
                .header(otlp::HEADER_BATCH_ID, id.to_hex());
            if let Some(e) = encoding {
                req = req.header("Content-Encoding", e);
            }
            for (k, v) in &self.cfg.headers {
                req = req.header(k.as_str(), v.as_str());
            }
            let (wait, why) = match req.send(wire) {
                Err(e) => (None, format!("{}: {e}", self.cfg.url)),
                Ok(mut resp) => {
                    let code = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("Retry-After")
                        .and_then(|v| v.to_str().ok())
                        .and_then(retry_after);
                    let mut buf = Vec::new();
                    let _ = resp
                        .body_mut()
                        .as_reader()
                        .take(otlp::MAX_RESPONSE_BYTES as u64)
                        .read_to_end(&mut buf);
                    match code {
                        200..=299 => {
                            let s = &self.fwd.stats;
                            s.forwarded.fetch_add(1, Ordering::Relaxed);
                            s.forwarded_records
                                .fetch_add(records as u64, Ordering::Relaxed);
                            if let Ok(Some(p)) = otlp::decode_response(&buf) {
                                s.rejected_records
                                    .fetch_add(p.rejected_log_records, Ordering::Relaxed);
                                log(&format!(
                                    "batch {id}: the receiver rejected {} records: {}",
                                    p.rejected_log_records, p.error_message
                                ));
                            }
                            return Done::Next;
                        }
                        429 | 502 | 503 | 504 | 408 => (retry_after, format!("HTTP {code}")),
                        401 | 403 | 404 | 415 => {
                            // Not the batch's fault: never dropped; fix [collector.forward].
                            (
                                None,
                                format!(
                                    "HTTP {code} ({}): check [collector.forward]",
                                    message(&buf)
                                ),
                            )
                        }
                        400..=499 => {
                            self.dead_letter(id, wire, code, &message(&buf));
                            return Done::Next;
                        }
                        _ => (None, format!("HTTP {code}: {}", message(&buf))),
                    }
                }
            };
            self.fwd.stats.retries.fetch_add(1, Ordering::Relaxed);
            let cap = self.cfg.backoff_cap;
            let step = Duration::from_millis(100)
                .saturating_mul(1u32 << attempt.min(16))
                .min(cap);
            let wait = wait.map_or_else(|| jitter(step), |w| w.min(cap));
            attempt = attempt.saturating_add(1);
            if attempt == 1 || attempt.is_power_of_two() {
                log(&format!(
                    "batch {id}: {why}; retrying in {wait:?} (attempt {attempt})"
                ));
            }
            let until = Instant::now() + wait;
            let mut seen = u64::MAX;
            while Instant::now() < until && !self.fwd.stopping() {
                self.fwd
                    .wait(&mut seen, until.saturating_duration_since(Instant::now()));
            }
        }
    }

    fn dead_letter(&self, id: &protocol::BatchId, wire: &[u8], code: u16, why: &str) {
        self.fwd.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let d = self.fwd.dir().join("dead-letter");
        let saved = std::fs::create_dir_all(&d)
            .and_then(|()| std::fs::write(d.join(format!("{id}.otlp")), wire))
            .and_then(|()| {
                std::fs::write(d.join(format!("{id}.txt")), format!("HTTP {code}: {why}\n"))
            });
        log(&format!(
            "batch {id} refused for good (HTTP {code}: {why}); kept in {}{}",
            d.display(),
            saved
                .err()
                .map(|e| format!(" (could not write it: {e})"))
                .unwrap_or_default()
        ));
    }
}

/// The message of an error answer: a google.rpc.Status, else the text.
fn message(buf: &[u8]) -> String {
    match otlp::decode_status(buf) {
        Ok(s) if !s.message.is_empty() => s.message,
        _ => String::from_utf8_lossy(buf.get(..512).unwrap_or(buf)).into_owned(),
    }
}

/// `Retry-After`: seconds or an HTTP date.
fn retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(v.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A wait in `[d/2, d]`.
fn jitter(d: Duration) -> Duration {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |t| t.subsec_nanos());
    let half = d / 2;
    half + half.mul_f64(f64::from(nanos % 1000) / 1000.0)
}

/// Removes the queue's segments wholly before `segment` (all forwarded).
fn remove_consumed(queue: &std::path::Path, segment: u64) {
    let dir = queue.join(segment_log::fs::SEGMENTS_DIR);
    let Ok(segs) = segment_log::fs::list_segments(&dir) else {
        return;
    };
    for s in segs {
        if s.number < segment && !s.prepared {
            let _ = std::fs::remove_file(&s.path);
        }
    }
}
