//! The state every handler shares: configuration, the store, metrics, the upload slots and
//! receive budget, the accepted tokens, and rejection counts not yet written to the database.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;

use crate::api::ApiError;
use crate::auth::{Access, Gate, TokenSet};
use crate::config::ServerConfig;
use crate::metrics::Metrics;
use crate::store::{Stats, Store, StoreError};

/// State shared by all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Metrics,
    pub(crate) cfg: ServerConfig,
    pub(crate) upload_slots: Semaphore,
    /// Bytes of upload bodies held while they arrive (`Limits::receive_buffer_bytes`).
    pub(crate) receive_budget: Semaphore,
    upload_tokens: TokenSet,
    api_tokens: TokenSet,
    pending_rejects: Mutex<BTreeMap<&'static str, u64>>,
    /// Held while pending rejections move to the database and while stats read both, so a
    /// stats reader never sees a count in neither place (or in both). `reject` never takes it:
    /// the async handlers do not wait on a database write.
    reject_flush: Mutex<()>,
    /// `[collector.forward]`'s queue, when forwarding.
    pub(crate) forward: Option<Arc<crate::forward::Forwarder>>,
}

impl AppState {
    /// The state for `cfg`, serving `store` (which holds `records` records).
    pub(crate) fn new(cfg: ServerConfig, store: Arc<Store>, records: u64) -> AppState {
        AppState {
            store,
            metrics: Metrics::new(records),
            upload_slots: Semaphore::new(cfg.limits.max_concurrent_uploads),
            receive_budget: Semaphore::new(
                usize::try_from(cfg.limits.receive_buffer_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ),
            upload_tokens: TokenSet::new(&cfg.tokens),
            api_tokens: TokenSet::new(&cfg.api_tokens),
            pending_rejects: Mutex::new(BTreeMap::new()),
            reject_flush: Mutex::new(()),
            forward: None,
            cfg,
        }
    }

    /// Counts a refused upload, in the metrics at once and in the database soon.
    pub(crate) fn reject(&self, reason: &'static str) {
        self.metrics.rejected(reason);
        if let Ok(mut p) = self.pending_rejects.lock() {
            *p.entry(reason).or_default() += 1;
        }
    }

    /// Writes pending rejection counts to the database. A count whose write fails stays
    /// pending for the next flush.
    pub(crate) fn flush_rejects(&self) -> Result<(), StoreError> {
        let _flush = self.reject_flush.lock().map_err(|_| StoreError::Poisoned)?;
        let pending = match self.pending_rejects.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Err(StoreError::Poisoned),
        };
        let mut rest = pending.into_iter();
        while let Some((reason, n)) = rest.next() {
            if let Err(e) = self.store.bump_counter(&format!("rejected.{reason}"), n) {
                if let Ok(mut p) = self.pending_rejects.lock() {
                    for (r, k) in std::iter::once((reason, n)).chain(rest) {
                        *p.entry(r).or_default() += k;
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Runs a blocking store operation off the async threads.
    pub(crate) async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&AppState) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let me = self.clone();
        match tokio::task::spawn_blocking(move || f(&me)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ApiError::internal(e)),
            Err(e) => Err(ApiError::internal(e)),
        }
    }

    /// Stats from the database plus rejections not flushed yet, read with no flush between
    /// the two so every rejection is counted exactly once.
    pub(crate) async fn current_stats(self: &Arc<Self>) -> Result<Stats, ApiError> {
        self.blocking(|s| {
            let _flush = s.reject_flush.lock().map_err(|_| StoreError::Poisoned)?;
            let mut stats = s.store.stats()?;
            let pending = s.pending_rejects.lock().map_err(|_| StoreError::Poisoned)?;
            for (reason, n) in pending.iter() {
                *stats.rejected.entry((*reason).to_owned()).or_default() += n;
            }
            Ok(stats)
        })
        .await
    }
}

impl Gate for AppState {
    fn tokens(&self, access: Access) -> &TokenSet {
        match access {
            Access::Upload => &self.upload_tokens,
            // `Open` routes are never checked; the stricter set is the safe answer anyway.
            Access::Read | Access::Open => &self.api_tokens,
        }
    }

    fn refused(&self, access: Access) {
        match access {
            Access::Upload => self.reject("unauthorized"),
            Access::Read | Access::Open => self.metrics.api_request(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The flush that moves pending rejections to the database ran between the two reads of
    /// `current_stats` and made a rejection vanish from `/api/stats` (CI, stop 19). A flusher
    /// racing the reader must never change the total the reader sees.
    #[test]
    fn stats_count_every_rejection_exactly_once_while_flushes_run() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let cfg = ServerConfig::new(dir.path().to_path_buf());
        let st = Arc::new(AppState::new(cfg, store, 0));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flusher = {
            let (st, stop) = (st.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut flushes = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    st.flush_rejects().unwrap();
                    flushes += 1;
                }
                flushes
            })
        };
        for i in 1..=300u64 {
            st.reject("bad_batch");
            let stats = rt.block_on(st.current_stats()).unwrap();
            assert_eq!(
                stats.rejected.get("bad_batch"),
                Some(&i),
                "after {i} rejections"
            );
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(flusher.join().unwrap() > 0, "the flusher never ran");
        st.flush_rejects().unwrap();
        let stats = rt.block_on(st.current_stats()).unwrap();
        assert_eq!(stats.rejected.get("bad_batch"), Some(&300));
    }
}
