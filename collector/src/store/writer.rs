//! The single SQLite writer: one thread owns the write connection and commits ingested
//! batches in groups. Every batch queued while the previous group was being written joins
//! the next group: one transaction, one fsync (WAL, `synchronous = FULL`), then every batch
//! in it is answered. When anything in a group fails, the group is rolled back and its
//! batches are written again one transaction each, so only the bad batch fails; nothing is
//! acknowledged before the transaction holding it has committed.
//!
//! The queue in front of the writer is bounded by the memory of the decoded batches it
//! holds ([`WriterLimits::queue_bytes`]); [`Writer::try_submit`] refuses at once when it is
//! full (the HTTP layer answers 429 with `Retry-After`), [`Writer::submit`] waits for room.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use protocol::Batch;
use rusqlite::Connection;

use super::ingest_sql::{Caches, Inserter};
use super::{IngestMeta, IngestOutcome, StoreError};

/// The write connection of one of the two backends: the seam between the writer (queue,
/// groups, acknowledgements) and the SQL that stores a group.
pub(crate) enum Conn {
    /// The embedded default.
    Sqlite(Connection),
    /// `[collector] database = "postgres://..."`.
    Pg(Box<super::pg::Writer>),
}

/// Most records written in one transaction (bounds how long one commit holds the lock and
/// how much is redone after a failed commit).
const GROUP_MAX_RECORDS: u64 = 200_000;
/// Most batches in one transaction.
const GROUP_MAX_BATCHES: usize = 4096;
/// Memory counted for each record of a decoded batch on top of its payload (the `Record`
/// struct, its classification string and allocator overhead).
const RECORD_OVERHEAD_BYTES: u64 = 160;

/// Bounds of the queue in front of the writer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLimits {
    /// Memory of decoded batches waiting for the writer (estimated: raw size plus a fixed
    /// cost per record). A batch that would pass it is refused, unless the queue is empty or
    /// the batch's device is back on its booked return (`store::shed`: up to twice it).
    pub queue_bytes: u64,
}

impl Default for WriterLimits {
    fn default() -> Self {
        WriterLimits {
            queue_bytes: 256 << 20,
        }
    }
}

/// The answer to a queued batch.
pub type Reply = tokio::sync::oneshot::Receiver<Result<IngestOutcome, StoreError>>;

type ExecFn = Box<dyn FnOnce(&mut Conn, &mut Caches) + Send>;

enum Job {
    Ingest {
        batch: Batch,
        meta: IngestMeta,
        cost: u64,
        reply: tokio::sync::oneshot::Sender<Result<IngestOutcome, StoreError>>,
    },
    /// Anything else that writes (counters, retention): runs alone, outside a group.
    Exec(ExecFn),
}

/// The queue is full: retry after this many seconds (the device's booked return,
/// `store::shed`; at least 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// Suggested `Retry-After`, seconds.
    pub retry_after_secs: u64,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    bytes: u64,
    records: u64,
    shed: super::shed::ReturnSchedule,
    stop: bool,
}

/// Writer statistics, for the metrics endpoint.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Batches waiting in the queue.
    pub queued_batches: AtomicU64,
    /// Estimated bytes of the batches waiting.
    pub queued_bytes: AtomicU64,
    /// Batches refused because the queue was full.
    pub shed: AtomicU64,
    /// Transactions committed by the ingest path.
    pub commits: AtomicU64,
    /// Batches written in those transactions.
    pub committed_batches: AtomicU64,
    /// Records per second the writer managed recently (exponential average), times 1000.
    rate_milli: AtomicU64,
}

impl WriterStats {
    fn rate(&self) -> f64 {
        self.rate_milli.load(Ordering::Relaxed) as f64 / 1000.0
    }
}

struct Shared {
    /// Told after each commit (SQLite: the checkpoint thread, `store::checkpoint`).
    committed: Option<super::checkpoint::Nudge>,
    queue: Mutex<Queue>,
    /// Signalled when a job arrives (the writer waits) and when room frees up (submitters).
    changed: Condvar,
    limits: WriterLimits,
    stats: WriterStats,
}

/// Handle to the writer thread; dropping it finishes the queue and joins the thread.
pub(crate) struct Writer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("limits", &self.shared.limits)
            .finish_non_exhaustive()
    }
}

fn batch_cost(b: &Batch, meta: &IngestMeta) -> u64 {
    meta.raw_bytes
        .max(b.records.iter().map(|r| r.payload.len() as u64).sum())
        .saturating_add(b.records.len() as u64 * RECORD_OVERHEAD_BYTES)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Writer {
    /// Starts the writer thread on `conn`; `committed` is nudged after each commit.
    pub(crate) fn start(
        conn: Conn,
        limits: WriterLimits,
        committed: Option<super::checkpoint::Nudge>,
    ) -> Result<Writer, StoreError> {
        let shared = Arc::new(Shared {
            committed,
            queue: Mutex::new(Queue::default()),
            changed: Condvar::new(),
            limits,
            stats: WriterStats::default(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("seglog-collector-writer".into())
            .spawn(move || run(conn, &s))
            .map_err(|source| StoreError::Thread { source })?;
        Ok(Writer {
            shared,
            thread: Some(thread),
        })
    }

    pub(crate) fn stats(&self) -> &WriterStats {
        &self.shared.stats
    }

    fn push(&self, q: &mut Queue, job: Job, cost: u64) {
        q.bytes += cost;
        if let Job::Ingest { batch, .. } = &job {
            q.records += batch.records.len() as u64;
        }
        q.jobs.push_back(job);
        self.shared
            .stats
            .queued_batches
            .store(q.jobs.len() as u64, Ordering::Relaxed);
        self.shared
            .stats
            .queued_bytes
            .store(q.bytes, Ordering::Relaxed);
        self.shared.changed.notify_all();
    }

    /// Queues `batch` unless the queue is full.
    pub(crate) fn try_submit(&self, batch: Batch, meta: IngestMeta) -> Result<Reply, Overloaded> {
        let cost = batch_cost(&batch, &meta);
        let mut q = match self.shared.queue.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        // Full: the batch would pass the limit (an empty queue takes any batch). A device
        // back on the return it was given is taken up to twice the limit (`store::shed`).
        let limit = self.shared.limits.queue_bytes;
        let after = q.bytes.saturating_add(cost);
        let load = super::shed::Load {
            queued_records: q.records,
            full: !q.jobs.is_empty() && after > limit,
            over_hard_limit: !q.jobs.is_empty() && after > limit.saturating_mul(2),
            rate: self.shared.stats.rate(),
        };
        let records = batch.records.len() as u64;
        let verdict = q.shed.offer(now_ms(), batch.public_log_id, records, load);
        if let super::shed::Verdict::Refuse { retry_after_secs } = verdict {
            self.shared.stats.shed.fetch_add(1, Ordering::Relaxed);
            return Err(Overloaded { retry_after_secs });
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(
            &mut q,
            Job::Ingest {
                batch,
                meta,
                cost,
                reply: tx,
            },
            cost,
        );
        Ok(rx)
    }

    /// Queues `batch`, waiting for room.
    pub(crate) fn submit(&self, batch: Batch, meta: IngestMeta) -> Result<Reply, StoreError> {
        let cost = batch_cost(&batch, &meta);
        let mut q = self.shared.queue.lock().map_err(|_| StoreError::Poisoned)?;
        while !q.jobs.is_empty() && q.bytes.saturating_add(cost) > self.shared.limits.queue_bytes {
            q = self
                .shared
                .changed
                .wait(q)
                .map_err(|_| StoreError::Poisoned)?;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.push(
            &mut q,
            Job::Ingest {
                batch,
                meta,
                cost,
                reply: tx,
            },
            cost,
        );
        Ok(rx)
    }

    /// Runs `f` on the write connection (between groups) and returns its result.
    pub(crate) fn exec<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Conn, &mut Caches) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job = Job::Exec(Box::new(move |c, caches| {
            let _ = tx.send(f(c, caches));
        }));
        {
            let mut q = self.shared.queue.lock().map_err(|_| StoreError::Poisoned)?;
            self.push(&mut q, job, 0);
        }
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }
}

/// Keeps the writer busy until dropped (tests: fill the queue deterministically).
#[cfg(any(test, feature = "test-support"))]
#[derive(Debug)]
pub struct WriterHold(Option<std::sync::mpsc::Sender<()>>);

#[cfg(any(test, feature = "test-support"))]
impl Drop for WriterHold {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[cfg(any(test, feature = "test-support"))]
impl Writer {
    /// Returns once the writer thread is parked in a job that ends when the hold drops.
    pub(crate) fn hold(&self) -> Result<WriterHold, StoreError> {
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel::<()>(1);
        let job = Job::Exec(Box::new(move |_, _| {
            let _ = started_tx.send(());
            let _ = release_rx.recv();
        }));
        {
            let mut q = self.shared.queue.lock().map_err(|_| StoreError::Poisoned)?;
            self.push(&mut q, job, 0);
        }
        started_rx.recv().map_err(|_| StoreError::WriterGone)?;
        Ok(WriterHold(Some(release_tx)))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Ok(mut q) = self.shared.queue.lock() {
            q.stop = true;
        }
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes the next group: all queued ingest jobs up to the group bounds, or one exec job.
fn next_group(shared: &Shared) -> Option<Vec<Job>> {
    let mut q = match shared.queue.lock() {
        Ok(q) => q,
        Err(p) => p.into_inner(),
    };
    while q.jobs.is_empty() {
        if q.stop {
            return None;
        }
        q = match shared.changed.wait(q) {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
    }
    let mut group = Vec::new();
    let mut records = 0u64;
    while let Some(front) = q.jobs.front() {
        match front {
            Job::Exec(_) if group.is_empty() => {
                group.extend(q.jobs.pop_front());
                break;
            }
            Job::Exec(_) => break,
            Job::Ingest { batch, .. } => {
                let n = batch.records.len() as u64;
                if !group.is_empty()
                    && (records + n > GROUP_MAX_RECORDS || group.len() >= GROUP_MAX_BATCHES)
                {
                    break;
                }
                records += n;
                if let Some(Job::Ingest { cost, .. }) = q.jobs.front() {
                    q.bytes = q.bytes.saturating_sub(*cost);
                }
                q.records = q.records.saturating_sub(n);
                group.extend(q.jobs.pop_front());
            }
        }
    }
    shared
        .stats
        .queued_batches
        .store(q.jobs.len() as u64, Ordering::Relaxed);
    shared.stats.queued_bytes.store(q.bytes, Ordering::Relaxed);
    // Room freed up: wake submitters waiting for it.
    shared.changed.notify_all();
    Some(group)
}

fn run(mut conn: Conn, shared: &Shared) {
    let mut caches = Caches::default();
    while let Some(group) = next_group(shared) {
        let mut ingests = Vec::with_capacity(group.len());
        for job in group {
            match job {
                Job::Exec(f) => f(&mut conn, &mut caches),
                Job::Ingest {
                    batch, meta, reply, ..
                } => ingests.push((batch, meta, reply)),
            }
        }
        if !ingests.is_empty() {
            write_group(&mut conn, &mut caches, ingests, &shared.stats);
        }
        if let Some(n) = &shared.committed {
            n.committed();
        }
    }
}

type Pending = (
    Batch,
    IngestMeta,
    tokio::sync::oneshot::Sender<Result<IngestOutcome, StoreError>>,
);

fn write_group(conn: &mut Conn, caches: &mut Caches, group: Vec<Pending>, stats: &WriterStats) {
    let started = Instant::now();
    let records: u64 = group.iter().map(|(b, ..)| b.records.len() as u64).sum();
    let n = group.len() as u64;
    // Fast path: the whole group in one transaction, no savepoints (they copy every page a
    // batch touches into the statement journal).
    let batches: Vec<(&Batch, IngestMeta)> = group.iter().map(|(b, m, _)| (b, *m)).collect();
    let all = write_batches(conn, caches, &batches);
    let results: Vec<Result<IngestOutcome, StoreError>> = match all {
        Ok(out) => {
            stats.commits.fetch_add(1, Ordering::Relaxed);
            stats.committed_batches.fetch_add(n, Ordering::Relaxed);
            out.into_iter().map(Ok).collect()
        }
        Err(_) if group.len() > 1 => {
            // Something in the group failed and all of it was rolled back: write each batch
            // in its own transaction so that only the bad one fails.
            caches.clear();
            group
                .iter()
                .map(|(batch, meta, _)| {
                    let r = write_batches(conn, caches, &[(batch, *meta)]).map(|mut v| v.remove(0));
                    match &r {
                        Ok(_) => {
                            stats.commits.fetch_add(1, Ordering::Relaxed);
                            stats.committed_batches.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => caches.clear(),
                    }
                    r
                })
                .collect()
        }
        Err(e) => {
            caches.clear();
            vec![Err(e)]
        }
    };
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let rate = records.max(1) as f64 / secs;
    let old = stats.rate();
    let new = if old == 0.0 {
        rate
    } else {
        0.8 * old + 0.2 * rate
    };
    stats
        .rate_milli
        .store((new * 1000.0) as u64, Ordering::Relaxed);
    for ((_, _, reply), r) in group.into_iter().zip(results) {
        let _ = reply.send(r);
    }
}

/// Stores `batches` in one transaction of the backend: all of them, or (on error) none.
fn write_batches(
    conn: &mut Conn,
    caches: &mut Caches,
    batches: &[(&Batch, IngestMeta)],
) -> Result<Vec<IngestOutcome>, StoreError> {
    match conn {
        Conn::Sqlite(conn) => {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let mut out = Vec::with_capacity(batches.len());
            {
                let mut ins = Inserter::new(&tx, caches)?;
                for (batch, meta) in batches {
                    out.push(ins.ingest(batch, *meta)?);
                }
            }
            tx.commit()?;
            Ok(out)
        }
        Conn::Pg(client) => super::pg::ingest::write_batches(client, caches, batches),
    }
}

#[cfg(test)]
mod tests;
