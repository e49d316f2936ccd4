//! WAL checkpoints on their own thread (SQLite). A checkpoint copies the pages committed to
//! the write-ahead log into the database file and syncs it; left to SQLite's automatic
//! checkpoint it runs on the writer thread right after a commit, so every group committed
//! behind it waited for it (a fifth of the writer's time with 10-record batches from 64
//! devices, `perf`: `sqlite3WalDefaultHook` -> `walCheckpoint`).
//!
//! Here the writer nudges this thread after each commit, and it runs a `PASSIVE` checkpoint
//! (it copies what it can without waiting for, or blocking, the writer and the readers) at
//! most every [`MIN_INTERVAL`] through its own connection. The writer's connection keeps an
//! automatic checkpoint as a backstop at [`WRITER_AUTOCHECKPOINT_PAGES`]: a passive
//! checkpoint never resets the log while commits keep coming, so under a sustained load the
//! writer's own checkpoint still restarts it now and then, and finds most pages already
//! copied by then.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::StoreError;

/// Least time between two background checkpoints.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// `wal_autocheckpoint` of the writer's connection: pages in the log before the writer
/// checkpoints itself (SQLite's default is 1,000; 16,000 pages of 4 KiB is 64 MiB).
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: i64 = 16_000;

#[derive(Default)]
struct State {
    pending: bool,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    /// Checkpoints this thread ran (tests, metrics).
    runs: AtomicU64,
}

/// What the writer holds: tells the checkpoint thread that something was committed.
#[derive(Clone)]
pub(crate) struct Nudge(Arc<Shared>);

impl Nudge {
    /// Something was committed: checkpoint soon.
    pub(crate) fn committed(&self) {
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        if !s.pending {
            s.pending = true;
            self.0.cond.notify_all();
        }
    }
}

/// The checkpoint thread; dropping it stops and joins it (after the writer, which nudges it).
pub(crate) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer")
            .field("runs", &self.runs())
            .finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens its own connection to the database at `path` and starts the thread.
    pub(crate) fn start(path: &Path, busy_timeout: Duration) -> Result<Checkpointer, StoreError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(busy_timeout)?;
        // The checkpoint syncs the database file before the log may be reused.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("seglog-collector-checkpoint".into())
            .spawn(move || run(&conn, &s))
            .map_err(|source| StoreError::Thread { source })?;
        Ok(Checkpointer {
            shared,
            thread: Some(thread),
        })
    }

    /// The handle the writer nudges.
    pub(crate) fn nudge(&self) -> Nudge {
        Nudge(self.shared.clone())
    }

    /// Checkpoints run so far.
    pub(crate) fn runs(&self) -> u64 {
        self.shared.runs.load(Ordering::Relaxed)
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.stop = true;
            self.shared.cond.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(conn: &Connection, shared: &Shared) {
    let mut last: Option<Instant> = None;
    loop {
        {
            let mut s = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if s.stop {
                    return;
                }
                // At most one checkpoint per interval: commits meanwhile wait for the next.
                let wait =
                    last.map_or(Duration::ZERO, |t| MIN_INTERVAL.saturating_sub(t.elapsed()));
                if s.pending && wait.is_zero() {
                    s.pending = false;
                    break;
                }
                s = if s.pending {
                    shared
                        .cond
                        .wait_timeout(s, wait)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                } else {
                    shared.cond.wait(s).unwrap_or_else(|p| p.into_inner())
                };
            }
        }
        last = Some(Instant::now());
        // A busy or failed checkpoint is not an error for anyone: the next one, or the
        // writer's backstop, copies the pages.
        if conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .is_ok()
        {
            shared.runs.fetch_add(1, Ordering::Relaxed);
        }
    }
}
