//! `[collector.forward]`: the collector passes what it stores on to an OTLP/HTTP logs
//! endpoint (OTLP.md), at least once, so a site can keep seglog's collector as the
//! deduplicating gateway in front of its existing pipeline (an OpenTelemetry Collector,
//! Grafana Alloy, Vector, a vendor).
//!
//! The durable queue is a segment-log log (`<data_dir>/forward/queue`): every batch that
//! decodes and checks is appended there (its compressed body, as the device sent it) before
//! the store commits it, so a batch the store has is always in the queue. A forwarder thread
//! reads the queue from its own persistent cursor (`<data_dir>/forward/cursor`), maps each
//! batch with the `otlp` crate (the same mapping as the uploader's `protocol = "otlp"`),
//! posts it, and moves the cursor only after the receiver answered 2xx (or refused the batch
//! for good, which is counted and kept in `forward/dead-letter/`). Segments wholly before the
//! cursor are removed.
//!
//! A resent batch (the device did not see the first answer) is recognised by its batch id
//! among the last [`RECENT_IDS`] queued and not queued again; a resend after a collector
//! restart, or a crash between the queue append and the receiver's answer, forwards a batch
//! twice, with the same `Seglog-Batch-Id` header and `seglog.batch_id` scope attribute.
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::Deserialize;

mod cursor;
mod sender;

pub use sender::Running;

/// Batch ids remembered to drop resends before they are queued.
pub const RECENT_IDS: usize = 65_536;

/// `[collector.forward]` as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardSection {
    /// The OTLP/HTTP logs endpoint (e.g. `http://otel-collector:4318/v1/logs`).
    pub url: Option<String>,
    /// Extra request headers (API keys).
    pub headers: Option<BTreeMap<String, String>>,
    /// `zstd` (default), `gzip` or `none`.
    pub compression: Option<String>,
    /// Request timeout (default 30 s).
    pub timeout: Option<config_layers::DurationValue>,
    /// Longest wait between retries, also the cap on `Retry-After` (default 5 min).
    pub backoff_cap: Option<config_layers::DurationValue>,
}

/// The resolved forward configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardConfig {
    /// The endpoint.
    pub url: String,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// `Content-Encoding` of the bodies: `Some("zstd")`, `Some("gzip")` or `None`.
    pub encoding: Option<&'static str>,
    /// Request timeout.
    pub timeout: Duration,
    /// Backoff cap.
    pub backoff_cap: Duration,
}

impl ForwardSection {
    /// Checks and resolves; `Err` is a sentence naming the key.
    pub fn resolve(&self) -> Result<ForwardConfig, String> {
        let url = self
            .url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or("forward.url is required: the OTLP/HTTP logs endpoint, e.g. \"http://otel-collector:4318/v1/logs\"")?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "forward.url {url:?} must start with http:// or https://"
            ));
        }
        let encoding = match self.compression.as_deref() {
            None | Some("zstd") => Some("zstd"),
            Some("gzip") => Some("gzip"),
            Some("none") => None,
            Some(o) => {
                return Err(format!(
                    "forward.compression {o:?}: use \"zstd\", \"gzip\" or \"none\""
                ))
            }
        };
        let mut headers = Vec::new();
        for (k, v) in self.headers.clone().unwrap_or_default() {
            let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
            if k.is_empty() || !k.chars().all(token) {
                return Err(format!("forward.headers: {k:?} is not a valid header name"));
            }
            let lower = k.to_ascii_lowercase();
            if [
                "content-type",
                "content-encoding",
                "content-length",
                "host",
                "seglog-batch-id",
            ]
            .contains(&lower.as_str())
            {
                return Err(format!(
                    "forward.headers: {k:?} is set by the forwarder itself"
                ));
            }
            if v.chars().any(|c| c.is_control() && c != '\t') {
                return Err(format!(
                    "forward.headers: the value of {k:?} holds a control character"
                ));
            }
            headers.push((k, v));
        }
        Ok(ForwardConfig {
            url,
            headers,
            encoding,
            timeout: self.timeout.map_or(Duration::from_secs(30), |d| d.get()),
            backoff_cap: self
                .backoff_cap
                .map_or(Duration::from_secs(300), |d| d.get())
                .max(Duration::from_millis(10)),
        })
    }
}

/// Why the forward queue could not be opened or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The queue (segment-log).
    #[error("forward queue {}: {source}", dir.display())]
    Queue {
        /// Its directory.
        dir: PathBuf,
        /// What failed.
        source: segment_log::Error,
    },
    /// The forwarder thread could not be started.
    #[error("starting the forwarder thread: {source}")]
    Thread {
        /// Why.
        source: std::io::Error,
    },
    /// The cursor file.
    #[error("forward cursor {}: {source}", path.display())]
    Cursor {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Counters of the forwarder (shown on `/metrics`-like surfaces and in tests).
#[derive(Debug, Default)]
pub struct ForwardStats {
    /// Batches queued.
    pub queued: AtomicU64,
    /// Resends not queued again.
    pub resends_skipped: AtomicU64,
    /// Batches the receiver acknowledged.
    pub forwarded: AtomicU64,
    /// Records in them.
    pub forwarded_records: AtomicU64,
    /// Records the receiver rejected in a partial success.
    pub rejected_records: AtomicU64,
    /// Batches the receiver refused for good (kept in `forward/dead-letter/`).
    pub dead_lettered: AtomicU64,
    /// Failed attempts (retried).
    pub retries: AtomicU64,
}

/// Batch ids queued lately: the set, and the same ids oldest first (for eviction).
type Recent = (HashSet<[u8; 32]>, VecDeque<[u8; 32]>);

/// The queue side, shared with the ingest path.
#[derive(Debug)]
pub struct Forwarder {
    log: segment_log::Log,
    dir: PathBuf,
    recent: Mutex<Recent>,
    wake: (Mutex<u64>, Condvar),
    stop: AtomicBool,
    /// Counters.
    pub stats: ForwardStats,
}

/// Queue segments: a batch body is at most `max_body_bytes` (16 MiB by default).
fn queue_options(max_body: u64) -> segment_log::Options {
    let record = max_body.max(1 << 20).next_multiple_of(4096);
    segment_log::Options {
        // A frame may take at most half a segment (its header aside).
        segment_size: (record * 2 + (1 << 20)).next_multiple_of(4096),
        // Queued batches are few and large: no segment prepared ahead.
        prepare_ahead: false,
        max_record_size: record,
        // The store's commit follows the append: the queue must be on disk as surely.
        sync: segment_log::SyncPolicy::Always,
        ..Default::default()
    }
}

impl Forwarder {
    /// Opens (or creates) the queue under `data_dir/forward`, for bodies up to `max_body`.
    pub fn open(data_dir: &Path, max_body: u64) -> Result<Arc<Forwarder>, ForwardError> {
        let dir = data_dir.join("forward");
        let queue = dir.join("queue");
        let log = segment_log::Log::open(&queue, queue_options(max_body)).map_err(|source| {
            ForwardError::Queue {
                dir: queue.clone(),
                source,
            }
        })?;
        Ok(Arc::new(Forwarder {
            log,
            dir,
            recent: Mutex::new((HashSet::new(), VecDeque::new())),
            wake: (Mutex::new(0), Condvar::new()),
            stop: AtomicBool::new(false),
            stats: ForwardStats::default(),
        }))
    }

    /// `<data_dir>/forward`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a checked batch body (before the store commits it). `Ok(false)`: a resend of
    /// a batch queued recently, not queued again.
    pub fn queue(&self, batch_id: &[u8; 32], body: &[u8]) -> Result<bool, ForwardError> {
        {
            let Ok(r) = self.recent.lock() else {
                return Ok(self.append(body)?.is_some());
            };
            if r.0.contains(batch_id) {
                self.stats.resends_skipped.fetch_add(1, Ordering::Relaxed);
                return Ok(false);
            }
        }
        self.append(body)?;
        if let Ok(mut r) = self.recent.lock() {
            if r.0.insert(*batch_id) {
                r.1.push_back(*batch_id);
                if r.1.len() > RECENT_IDS {
                    if let Some(old) = r.1.pop_front() {
                        r.0.remove(&old);
                    }
                }
            }
        }
        Ok(true)
    }

    fn append(&self, body: &[u8]) -> Result<Option<segment_log::Position>, ForwardError> {
        let p = self
            .log
            .append(body)
            .map_err(|source| ForwardError::Queue {
                dir: self.dir.join("queue"),
                source,
            })?;
        self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut n) = self.wake.0.lock() {
            *n += 1;
            self.wake.1.notify_all();
        }
        Ok(Some(p))
    }

    /// Waits until something is queued or `d` passes (or a stop).
    fn wait(&self, seen: &mut u64, d: Duration) {
        let Ok(n) = self.wake.0.lock() else { return };
        if *n != *seen || self.stop.load(Ordering::Relaxed) {
            *seen = *n;
            return;
        }
        if let Ok((n, _)) = self.wake.1.wait_timeout(n, d) {
            *seen = *n;
        }
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Ok(_n) = self.wake.0.lock() {
            self.wake.1.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_parses_as_a_table_of_collector() {
        let s = crate::config::CollectorSection::from_toml_str(
            "[collector.forward]\nurl = \"http://o:4318/v1/logs\"\ncompression = \"none\"\nheaders = { \"X-Key\" = \"k\" }\n",
        )
        .unwrap();
        let c = s.resolve(Path::new("/tmp/x")).unwrap().forward.unwrap();
        assert_eq!(c.url, "http://o:4318/v1/logs");
        assert_eq!(c.encoding, None);
        assert_eq!(c.headers, [("X-Key".to_owned(), "k".to_owned())]);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (doc, key) in [
            ("[collector.forward]\ncompression = \"gzip\"", "forward.url"),
            ("[collector.forward]\nurl = \"ftp://x\"", "forward.url"),
            (
                "[collector.forward]\nurl = \"http://x\"\ncompression = \"br\"",
                "forward.compression",
            ),
            (
                "[collector.forward]\nurl = \"http://x\"\nheaders = { \"Host\" = \"x\" }",
                "forward.headers",
            ),
            (
                "[collector.forward]\nurl = \"http://x\"\nbogus = 1",
                "bogus",
            ),
        ] {
            let e = crate::config::CollectorSection::from_toml_str(doc)
                .map_err(|e| e.to_string())
                .and_then(|s| s.resolve(Path::new("/tmp/x")).map_err(|e| e.to_string()));
            let e = e.unwrap_err();
            assert!(e.contains(key), "{doc}: {e}");
        }
    }
}
