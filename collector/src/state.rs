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

    /// Writes pending rejection counts to the database.
    pub(crate) fn flush_rejects(&self) -> Result<(), StoreError> {
        let pending = match self.pending_rejects.lock() {
            Ok(mut p) => std::mem::take(&mut *p),
            Err(_) => return Err(StoreError::Poisoned),
        };
        for (reason, n) in pending {
            self.store.bump_counter(&format!("rejected.{reason}"), n)?;
        }
        Ok(())
    }

    /// Pending (not yet flushed) rejection counts, so stats are current.
    fn pending_rejects(&self) -> BTreeMap<&'static str, u64> {
        self.pending_rejects
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
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

    /// Stats from the database plus rejections not flushed yet.
    pub(crate) async fn current_stats(self: &Arc<Self>) -> Result<Stats, ApiError> {
        let mut stats = self.blocking(|s| s.store.stats()).await?;
        for (reason, n) in self.pending_rejects() {
            *stats.rejected.entry(reason.to_owned()).or_default() += n;
        }
        Ok(stats)
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
