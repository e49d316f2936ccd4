//! The HTTP server: binding, TLS, routing, authentication, graceful shutdown.
//!
//! [`Server::start`] binds synchronously (so a taken port is an error at once, and port 0
//! works), then serves on its own tokio runtime thread until [`RunningServer::shutdown`] or,
//! with `handle_signals`, SIGINT/SIGTERM. Shutdown stops accepting, lets in-flight requests
//! finish for up to `shutdown_grace`, and flushes the rejection counters to the database.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::api::{self, ApiError};
use crate::config::{ServerConfig, TlsFiles};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::{ingest, ui};

/// How often rejection counts are written to the database (they are also written at
/// shutdown). Batching them keeps a flood of unauthenticated requests from costing an fsync
/// each.
const REJECT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);

/// State shared by all handlers.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Arc<Store>,
    pub(crate) metrics: Metrics,
    pub(crate) cfg: ServerConfig,
    pub(crate) upload_slots: Semaphore,
    /// Bytes of upload bodies held while they arrive (`Limits::receive_buffer_bytes`).
    pub(crate) receive_budget: Semaphore,
    upload_tokens: Vec<[u8; 32]>,
    api_tokens: Vec<[u8; 32]>,
    pending_rejects: Mutex<BTreeMap<&'static str, u64>>,
}

impl AppState {
    /// Counts a refused upload, in the metrics at once and in the database soon.
    pub(crate) fn reject(&self, reason: &'static str) {
        self.metrics.rejected(reason);
        if let Ok(mut p) = self.pending_rejects.lock() {
            *p.entry(reason).or_default() += 1;
        }
    }

    /// Writes pending rejection counts to the database.
    fn flush_rejects(&self) -> Result<(), StoreError> {
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
    pub(crate) fn pending_rejects(&self) -> BTreeMap<&'static str, u64> {
        self.pending_rejects
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Whether `headers` carry an accepted upload token (always true when none is set).
    pub(crate) fn upload_authorized(&self, headers: &HeaderMap) -> bool {
        authorized(&self.upload_tokens, headers)
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
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Compares digests without an early exit, so timing does not reveal a matching prefix.
fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn authorized(tokens: &[[u8; 32]], headers: &HeaderMap) -> bool {
    if tokens.is_empty() {
        return true;
    }
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
    else {
        return false;
    };
    let d = digest(presented.trim().as_bytes());
    tokens.iter().fold(false, |ok, t| ok | ct_eq(t, &d))
}

/// A 401 with the challenge header.
pub(crate) fn unauthorized() -> Response {
    let mut r = (
        StatusCode::UNAUTHORIZED,
        Json(serde_json::json!({ "error": "missing or invalid bearer token" })),
    )
        .into_response();
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    r
}

/// The collector server. See [`Server::start`].
#[derive(Debug)]
pub struct Server;

/// A started server. Dropping it shuts the server down gracefully (as [`shutdown`] does).
///
/// [`shutdown`]: RunningServer::shutdown
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    tls: bool,
    handle: axum_server::Handle,
    grace: Duration,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
    state: Arc<AppState>,
}

impl Server {
    /// Opens the database, binds `cfg.listen`, and serves on a new thread.
    pub fn start(cfg: ServerConfig) -> anyhow::Result<RunningServer> {
        cfg.validate()?;
        let store = Arc::new(
            Store::open(&cfg.data_dir)
                .with_context(|| format!("opening the database in {}", cfg.data_dir.display()))?,
        );
        let records = store.record_count()?;
        let tls = cfg.tls.as_ref().map(load_tls).transpose()?;
        let listener = std::net::TcpListener::bind(cfg.listen)
            .with_context(|| format!("binding {}", cfg.listen))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("seglog-collector")
            .build()
            .context("starting the tokio runtime")?;
        let state = Arc::new(AppState {
            store,
            metrics: Metrics::new(records),
            upload_slots: Semaphore::new(cfg.limits.max_concurrent_uploads),
            receive_budget: Semaphore::new(
                usize::try_from(cfg.limits.receive_buffer_bytes)
                    .unwrap_or(usize::MAX)
                    .min(Semaphore::MAX_PERMITS),
            ),
            upload_tokens: cfg.tokens.iter().map(|t| digest(t.as_bytes())).collect(),
            api_tokens: cfg
                .api_tokens
                .iter()
                .map(|t| digest(t.as_bytes()))
                .collect(),
            pending_rejects: Mutex::new(BTreeMap::new()),
            cfg,
        });
        let handle = axum_server::Handle::new();
        let grace = state.cfg.shutdown_grace;
        let app = router(state.clone());
        let (h, st) = (handle.clone(), state.clone());
        let is_tls = tls.is_some();
        let thread = std::thread::Builder::new()
            .name("seglog-collector-main".into())
            .spawn(move || -> anyhow::Result<()> {
                let result = runtime.block_on(serve(listener, tls, app, h, st.clone()));
                // In-flight blocking store calls finish before the runtime goes away.
                drop(runtime);
                st.flush_rejects()?;
                result
            })?;
        Ok(RunningServer {
            addr,
            tls: is_tls,
            handle,
            grace,
            thread: Some(thread),
            state,
        })
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    app: Router,
    handle: axum_server::Handle,
    state: Arc<AppState>,
) -> anyhow::Result<()> {
    let flusher = {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(REJECT_FLUSH_INTERVAL);
            loop {
                tick.tick().await;
                let s = st.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || s.flush_rejects()).await {
                    eprintln!("seglog collector: saving rejection counts: {e}");
                }
            }
        })
    };
    if state.cfg.handle_signals {
        let h = handle.clone();
        let grace = state.cfg.shutdown_grace;
        tokio::spawn(async move {
            wait_for_signal().await;
            eprintln!(
                "seglog collector: shutting down (waiting up to {grace:?} for requests; \
                 signal again to stop at once)"
            );
            h.graceful_shutdown(Some(grace));
            wait_for_signal().await;
            eprintln!("seglog collector: stopping now");
            h.shutdown();
        });
    }
    let make = app.into_make_service();
    // Bounded connections, and a silent one (before its first byte or between requests) is
    // closed after `idle_timeout` (slowloris and idle-flood bound; see `connections`).
    let idle = state.cfg.limits.idle_timeout;
    let capped = crate::connections::Capped::new(state.cfg.limits.max_connections, idle);
    let result = match tls {
        None => {
            let mut s = axum_server::from_tcp(listener)
                .acceptor(capped)
                .handle(handle);
            s.http_builder()
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle);
            s.serve(make).await
        }
        Some(c) => {
            let mut s = axum_server::from_tcp_rustls(listener, c)
                .map(|tls| tls.acceptor(capped))
                .handle(handle);
            s.http_builder()
                .http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(idle);
            s.serve(make).await
        }
    };
    flusher.abort();
    result.context("serving")
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn load_tls(files: &TlsFiles) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading TLS certificate {}", files.cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "no certificate in {}",
        files.cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading TLS key {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("TLS certificate and key do not match or are unsupported")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(axum_server::tls_rustls::RustlsConfig::from_config(
        Arc::new(config),
    ))
}

impl RunningServer {
    /// The bound address (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr` or `https://addr`: the base URL for uploaders and browsers.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The database file.
    pub fn database_path(&self) -> &std::path::Path {
        self.state.store.path()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and waits
    /// for the server thread.
    pub fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop()
    }

    /// Blocks until the server stops (after a signal when `handle_signals` is set).
    pub fn wait(mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("collector thread panicked"))?,
            None => Ok(()),
        }
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        self.handle.graceful_shutdown(Some(self.grace));
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow::anyhow!("collector thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("seglog collector: {e:#}");
        }
    }
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/logs/:id/batches", post(ingest::upload))
        .route("/api/records", get(api_records))
        .route("/api/gaps", get(api_gaps))
        .route("/api/stats", get(api_stats))
        .route("/", get(|| async { Redirect::to("/ui/records") }))
        .route("/ui/records", get(ui::records_page))
        .route("/ui/stats", get(ui::stats_page))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(serde_json::json!({ "error": "no such endpoint" })),
            )
        })
        .with_state(state)
}

/// Checks the API token; `Some` is the refusal to send.
pub(crate) fn api_guard(state: &AppState, headers: &HeaderMap) -> Option<Response> {
    if authorized(&state.api_tokens, headers) {
        None
    } else {
        state.metrics.api_request(true);
        Some(unauthorized())
    }
}

/// Splits a raw query string into pairs (percent-decoded; `+` is a space).
pub(crate) fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    match raw {
        None => Ok(Vec::new()),
        Some(q) => serde_urlencoded::from_str::<Vec<(String, String)>>(q).map_err(|e| ApiError {
            status: StatusCode::BAD_REQUEST,
            parameter: None,
            message: format!("the query string is malformed: {e}"),
        }),
    }
}

fn finish<T: IntoResponse>(state: &AppState, r: Result<T, ApiError>) -> Response {
    state.metrics.api_request(r.is_err());
    match r {
        Ok(v) => v.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn api_records(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = api_guard(&st, &headers) {
        return r;
    }
    let r = async {
        let mut query = api::parse_records_query(
            &query_pairs(q.as_deref())?,
            crate::config::MAX_QUERY_LIMIT,
            api::now_ms(),
        )?;
        query.max_payload_bytes = st.cfg.limits.max_response_bytes;
        let page = st.blocking(move |s| s.store.query_records(&query)).await?;
        Ok(Json(api::page_json(&page)))
    }
    .await;
    finish(&st, r)
}

async fn api_gaps(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = api_guard(&st, &headers) {
        return r;
    }
    let r = async {
        let (log, limit) = api::parse_gaps_query(&query_pairs(q.as_deref())?)?;
        let gaps = st.blocking(move |s| s.store.query_gaps(log, limit)).await?;
        Ok(Json(
            serde_json::json!({ "gaps": gaps.iter().map(api::gap_json).collect::<Vec<_>>() }),
        ))
    }
    .await;
    finish(&st, r)
}

/// Stats from the database plus rejections not flushed yet.
pub(crate) async fn current_stats(st: &Arc<AppState>) -> Result<crate::store::Stats, ApiError> {
    let mut stats = st.blocking(|s| s.store.stats()).await?;
    for (reason, n) in st.pending_rejects() {
        *stats.rejected.entry(reason.to_owned()).or_default() += n;
    }
    Ok(stats)
}

async fn api_stats(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Some(r) = api_guard(&st, &headers) {
        return r;
    }
    let r = async {
        if let Some((k, _)) = query_pairs(q.as_deref())?.first() {
            let k: String = k.chars().take(64).collect();
            return Err(ApiError::bad(
                &k,
                format!("unknown parameter {k:?}; /api/stats takes none"),
            ));
        }
        Ok(Json(api::stats_json(&current_stats(&st).await?)))
    }
    .await;
    finish(&st, r)
}

async fn healthz(State(st): State<Arc<AppState>>) -> Response {
    match st
        .blocking(|s| {
            s.store
                .read(|c| Ok(c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
        })
        .await
    {
        Ok(_) => (StatusCode::OK, "ok\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response(),
    }
}

async fn metrics(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = api_guard(&st, &headers) {
        return r;
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.metrics.render(),
    )
        .into_response()
}
