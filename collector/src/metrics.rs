//! Process metrics in the Prometheus text exposition format (version 0.0.4), hand-written:
//! a handful of counters, two gauges and one histogram do not justify a metrics crate.
//!
//! Counters count since the process started (Prometheus handles resets); the persistent
//! totals are in `/api/stats`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the upload duration histogram buckets.
const UPLOAD_BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// Reasons an upload is refused; each is a label value of `seglog_collector_rejected_total`.
pub const REJECT_REASONS: [&str; 16] = [
    "unauthorized",
    "body_too_large",
    "decompressed_too_large",
    "limit_exceeded",
    "bad_request",
    "bad_media_type",
    "incomplete_body",
    "damaged_body",
    "bad_zstd",
    "bad_batch",
    "unsupported_version",
    "log_id_mismatch",
    "batch_id_mismatch",
    "busy",
    "overloaded",
    "internal",
];

/// The collector's metrics. All methods take `&self` and are lock-free except the
/// histogram, which takes a short mutex.
#[derive(Debug)]
pub struct Metrics {
    started_unix: f64,
    uploads_stored: AtomicU64,
    uploads_duplicate: AtomicU64,
    rejected: [AtomicU64; REJECT_REASONS.len()],
    records_stored: AtomicU64,
    records_duplicate: AtomicU64,
    gaps: AtomicU64,
    gap_records: AtomicU64,
    body_bytes: AtomicU64,
    raw_bytes: AtomicU64,
    in_flight: AtomicI64,
    records_total: AtomicU64,
    api_requests: AtomicU64,
    api_errors: AtomicU64,
    upload_seconds: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; UPLOAD_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// New metrics; `records_total` seeds the stored-records gauge.
    pub fn new(records_total: u64) -> Self {
        let started_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        Metrics {
            started_unix,
            uploads_stored: AtomicU64::new(0),
            uploads_duplicate: AtomicU64::new(0),
            rejected: std::array::from_fn(|_| AtomicU64::new(0)),
            records_stored: AtomicU64::new(0),
            records_duplicate: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            gap_records: AtomicU64::new(0),
            body_bytes: AtomicU64::new(0),
            raw_bytes: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            records_total: AtomicU64::new(records_total),
            api_requests: AtomicU64::new(0),
            api_errors: AtomicU64::new(0),
            upload_seconds: Mutex::new(Histogram::default()),
        }
    }

    /// A batch was stored.
    pub fn stored(&self, records: u64, dup_records: u64, gaps: u64, gap_records: u64) {
        self.uploads_stored.fetch_add(1, Ordering::Relaxed);
        self.records_stored.fetch_add(records, Ordering::Relaxed);
        self.records_total.fetch_add(records, Ordering::Relaxed);
        self.records_duplicate
            .fetch_add(dup_records, Ordering::Relaxed);
        self.gaps.fetch_add(gaps, Ordering::Relaxed);
        // A device-stated count: any u64, so the total saturates instead of wrapping.
        let _ = self
            .gap_records
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_add(gap_records))
            });
    }

    /// Retention deleted `records` records.
    pub fn retained(&self, records: u64) {
        let _ = self
            .records_total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(records))
            });
    }

    /// A batch was acknowledged as a duplicate.
    pub fn duplicate(&self) {
        self.uploads_duplicate.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload was refused for `reason` (one of [`REJECT_REASONS`]; others count as
    /// `internal`).
    pub fn rejected(&self, reason: &str) {
        let i = REJECT_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(REJECT_REASONS.len() - 1);
        if let Some(c) = self.rejected.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Bytes of an upload body that was read, and what it decompressed to.
    pub fn bytes(&self, body: u64, raw: u64) {
        self.body_bytes.fetch_add(body, Ordering::Relaxed);
        self.raw_bytes.fetch_add(raw, Ordering::Relaxed);
    }

    /// Marks an upload in flight until the guard drops.
    pub fn upload_started(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Records how long an upload took.
    pub fn observe_upload(&self, d: Duration) {
        let s = d.as_secs_f64();
        if let Ok(mut h) = self.upload_seconds.lock() {
            for (b, le) in h.buckets.iter_mut().zip(UPLOAD_BUCKETS) {
                if s <= le {
                    *b += 1;
                }
            }
            h.count += 1;
            h.sum += s;
        }
    }

    /// Counts an API or UI request, and whether it failed.
    pub fn api_request(&self, failed: bool) {
        self.api_requests.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.api_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in samples {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let plain = |v: u64| vec![(String::new(), v.to_string())];
        family(
            "seglog_collector_build_info",
            "gauge",
            "Build of the running collector.",
            &[(
                format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")),
                "1".into(),
            )],
        );
        family(
            "seglog_collector_start_time_seconds",
            "gauge",
            "Start time of the process, seconds since the Unix epoch.",
            &[(String::new(), format!("{:.3}", self.started_unix))],
        );
        family(
            "seglog_collector_uploads_total",
            "counter",
            "Upload requests answered, by outcome.",
            &[
                (
                    "{outcome=\"stored\"}".into(),
                    get(&self.uploads_stored).to_string(),
                ),
                (
                    "{outcome=\"duplicate\"}".into(),
                    get(&self.uploads_duplicate).to_string(),
                ),
            ],
        );
        let rejected: Vec<_> = REJECT_REASONS
            .iter()
            .zip(&self.rejected)
            .map(|(r, c)| (format!("{{reason=\"{r}\"}}"), get(c).to_string()))
            .collect();
        family(
            "seglog_collector_rejected_total",
            "counter",
            "Uploads refused, by reason.",
            &rejected,
        );
        family(
            "seglog_collector_records_stored_total",
            "counter",
            "Records stored.",
            &plain(get(&self.records_stored)),
        );
        family(
            "seglog_collector_records_duplicate_total",
            "counter",
            "Records received again in another batch and not stored twice.",
            &plain(get(&self.records_duplicate)),
        );
        family(
            "seglog_collector_gaps_total",
            "counter",
            "Gap entries stored.",
            &plain(get(&self.gaps)),
        );
        family(
            "seglog_collector_gap_records_total",
            "counter",
            "Records reported lost by gap entries (where the device knew the number).",
            &plain(get(&self.gap_records)),
        );
        family(
            "seglog_collector_received_bytes_total",
            "counter",
            "Upload bytes, compressed as received and decompressed.",
            &[
                (
                    "{encoding=\"zstd\"}".into(),
                    get(&self.body_bytes).to_string(),
                ),
                (
                    "{encoding=\"identity\"}".into(),
                    get(&self.raw_bytes).to_string(),
                ),
            ],
        );
        family(
            "seglog_collector_uploads_in_flight",
            "gauge",
            "Uploads being read, decoded or stored.",
            &[(
                String::new(),
                self.in_flight.load(Ordering::Relaxed).to_string(),
            )],
        );
        family(
            "seglog_collector_records",
            "gauge",
            "Records in the database.",
            &plain(get(&self.records_total)),
        );
        family(
            "seglog_collector_api_requests_total",
            "counter",
            "API, UI and metrics requests, and those answered with an error.",
            &[
                (
                    "{result=\"ok\"}".into(),
                    (get(&self.api_requests) - get(&self.api_errors).min(get(&self.api_requests)))
                        .to_string(),
                ),
                (
                    "{result=\"error\"}".into(),
                    get(&self.api_errors).to_string(),
                ),
            ],
        );
        let (buckets, count, sum) = match self.upload_seconds.lock() {
            Ok(h) => (h.buckets, h.count, h.sum),
            Err(_) => ([0; UPLOAD_BUCKETS.len()], 0, 0.0),
        };
        let mut hist: Vec<(String, String)> = UPLOAD_BUCKETS
            .iter()
            .zip(buckets)
            .map(|(le, n)| (format!("_bucket{{le=\"{le}\"}}"), n.to_string()))
            .collect();
        hist.push(("_bucket{le=\"+Inf\"}".into(), count.to_string()));
        hist.push(("_sum".into(), format!("{sum:.6}")));
        hist.push(("_count".into(), count.to_string()));
        family(
            "seglog_collector_upload_duration_seconds",
            "histogram",
            "Time from the start of an upload request to its answer.",
            &hist,
        );
        o
    }
}

/// The writer's queue and group-commit figures, in the same exposition format.
pub fn render_writer(w: &crate::store::WriterStats) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    render_plain(&[
        (
            "seglog_collector_ingest_queue_batches",
            "gauge",
            "Decoded batches waiting for the database writer.",
            get(&w.queued_batches),
        ),
        (
            "seglog_collector_ingest_queue_bytes",
            "gauge",
            "Estimated memory of the batches waiting for the database writer.",
            get(&w.queued_bytes),
        ),
        (
            "seglog_collector_ingest_shed_total",
            "counter",
            "Uploads answered 429 because the writer queue was full.",
            get(&w.shed),
        ),
        (
            "seglog_collector_ingest_commits_total",
            "counter",
            "Transactions the writer committed for uploads (each holds one or more batches).",
            get(&w.commits),
        ),
        (
            "seglog_collector_ingest_committed_batches_total",
            "counter",
            "Batches written in those transactions.",
            get(&w.committed_batches),
        ),
    ])
}

/// The SQLite store's background WAL checkpoints, in the same exposition format.
pub fn render_checkpoints(runs: u64) -> String {
    render_plain(&[(
        "seglog_collector_wal_checkpoints_total",
        "counter",
        "WAL checkpoints run off the database writer's thread (SQLite).",
        runs,
    )])
}

/// Plain metrics without labels, each with its HELP and TYPE lines: (name, kind, help, value).
fn render_plain(metrics: &[(&str, &str, &str, u64)]) -> String {
    let mut o = String::with_capacity(1024);
    for (name, kind, help, v) in metrics {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
    }
    o
}

/// The forwarder's counters (`[collector.forward]`), in the same exposition format: shown
/// only when forwarding is configured.
pub fn render_forward(f: &crate::forward::ForwardStats) -> String {
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    render_plain(&[
        (
            "seglog_collector_forward_queued_batches_total",
            "counter",
            "Batches appended to the forward queue.",
            get(&f.queued),
        ),
        (
            "seglog_collector_forward_resends_skipped_total",
            "counter",
            "Resent batches not queued again (their id was queued lately).",
            get(&f.resends_skipped),
        ),
        (
            "seglog_collector_forward_batches_total",
            "counter",
            "Batches the OTLP receiver acknowledged.",
            get(&f.forwarded),
        ),
        (
            "seglog_collector_forward_records_total",
            "counter",
            "Records in the batches the OTLP receiver acknowledged.",
            get(&f.forwarded_records),
        ),
        (
            "seglog_collector_forward_rejected_records_total",
            "counter",
            "Records the OTLP receiver rejected in a partial success.",
            get(&f.rejected_records),
        ),
        (
            "seglog_collector_forward_dead_lettered_total",
            "counter",
            "Batches the OTLP receiver refused for good (kept in forward/dead-letter/).",
            get(&f.dead_lettered),
        ),
        (
            "seglog_collector_forward_retries_total",
            "counter",
            "Forward attempts that failed and are retried.",
            get(&f.retries),
        ),
    ])
}

/// Decrements the in-flight gauge when dropped.
#[derive(Debug)]
pub struct InFlight<'a>(&'a Metrics);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn counters_appear_with_their_labels_and_values() {
        let m = Metrics::new(7);
        m.stored(10, 2, 1, 5);
        m.duplicate();
        m.rejected("unauthorized");
        m.rejected("no such reason");
        m.bytes(100, 900);
        m.observe_upload(Duration::from_millis(3));
        let t = m.render();
        assert_eq!(
            sample(&t, "seglog_collector_uploads_total{outcome=\"stored\"}"),
            Some("1")
        );
        assert_eq!(
            sample(&t, "seglog_collector_uploads_total{outcome=\"duplicate\"}"),
            Some("1")
        );
        assert_eq!(
            sample(
                &t,
                "seglog_collector_rejected_total{reason=\"unauthorized\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&t, "seglog_collector_rejected_total{reason=\"internal\"}"),
            Some("1")
        );
        assert_eq!(
            sample(&t, "seglog_collector_records_stored_total"),
            Some("10")
        );
        assert_eq!(
            sample(&t, "seglog_collector_records_duplicate_total"),
            Some("2")
        );
        assert_eq!(sample(&t, "seglog_collector_records"), Some("17"));
        assert_eq!(sample(&t, "seglog_collector_gap_records_total"), Some("5"));
        assert_eq!(
            sample(
                &t,
                "seglog_collector_received_bytes_total{encoding=\"zstd\"}"
            ),
            Some("100")
        );
        assert_eq!(
            sample(
                &t,
                "seglog_collector_upload_duration_seconds_bucket{le=\"0.0025\"}"
            ),
            Some("0")
        );
        assert_eq!(
            sample(
                &t,
                "seglog_collector_upload_duration_seconds_bucket{le=\"0.005\"}"
            ),
            Some("1")
        );
        assert_eq!(
            sample(&t, "seglog_collector_upload_duration_seconds_count"),
            Some("1")
        );
    }

    #[test]
    fn every_sample_line_belongs_to_a_declared_family() {
        let t = Metrics::new(0).render();
        let mut declared = Vec::new();
        for line in t.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                declared.push(rest.split(' ').next().unwrap().to_owned());
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert!(
                    declared.iter().any(|d| name == d
                        || name
                            .strip_prefix(d.as_str())
                            .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))),
                    "{line}"
                );
                let value = line.rsplit(' ').next().unwrap();
                assert!(value.parse::<f64>().is_ok(), "{line}");
            }
        }
    }

    #[test]
    fn in_flight_gauge_follows_the_guard() {
        let m = Metrics::new(0);
        let g = m.upload_started();
        assert!(m.render().contains("seglog_collector_uploads_in_flight 1"));
        drop(g);
        assert!(m.render().contains("seglog_collector_uploads_in_flight 0"));
    }
}
