//! The HTTP server: binding, TLS, the runtime, graceful shutdown. Routes are in `routes`,
//! authentication in `auth`, the shared state in `state`.
//!
//! [`Server::start`] binds synchronously (so a taken port is an error at once, and port 0
//! works), then serves on its own tokio runtime thread until [`RunningServer::shutdown`] or,
//! with `handle_signals`, SIGINT/SIGTERM. Shutdown stops accepting, lets in-flight requests
//! finish for up to `shutdown_grace`, and flushes the rejection counters to the database.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;

use crate::config::{ConfigError, ServerConfig, TlsFiles};
use crate::state::AppState;
use crate::store::{Store, StoreError, WriterLimits};

/// How often rejection counts are written to the database (they are also written at
/// shutdown). Batching them keeps a flood of unauthenticated requests from costing an fsync
/// each.
const REJECT_FLUSH_INTERVAL: Duration = Duration::from_secs(2);
/// How often `retain_days` is applied (also once at start).
pub const RETENTION_INTERVAL: Duration = Duration::from_secs(600);

/// Why the server could not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened (or migrated).
    #[error("opening the database in {}", dir.display())]
    OpenDatabase {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: StoreError,
    },
    /// The PostgreSQL database (`[collector] database`) could not be reached or migrated.
    #[error("opening the PostgreSQL database of [collector] database (check the URL, that the server runs and that it accepts this user)")]
    OpenPostgres {
        /// Why.
        source: StoreError,
    },
    /// The database failed (counting records at start, saving counters at shutdown).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A TLS certificate or key file could not be read.
    #[error("reading TLS {what} {}", path.display())]
    TlsFile {
        /// `certificate` or `key`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("no certificate in {}", .0.display())]
    NoCertificate(PathBuf),
    /// rustls refused the certificate and key.
    #[error("TLS certificate and key do not match or are unsupported")]
    Tls(#[source] rustls::Error),
    /// The `[collector.forward]` queue could not be opened, or its thread started.
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    /// The listen address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or its thread could not be started, or the socket set up.
    #[error("starting the server")]
    Start(#[source] std::io::Error),
    /// Serving stopped with an error.
    #[error("serving")]
    Serve(#[source] std::io::Error),
    /// The server thread panicked.
    #[error("collector thread panicked")]
    Panicked,
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
    handle: axum_server::Handle<SocketAddr>,
    grace: Duration,
    thread: Option<JoinHandle<Result<(), ServerError>>>,
    state: Arc<AppState>,
    /// The `[collector.forward]` thread, stopped after the server.
    forward: Option<crate::forward::Running>,
}

impl Server {
    /// Opens the database, binds `cfg.listen`, and serves on a new thread.
    pub fn start(cfg: ServerConfig) -> Result<RunningServer, ServerError> {
        cfg.validate()?;
        let store = Arc::new(
            Store::open_database(
                &cfg.database(),
                WriterLimits {
                    queue_bytes: cfg.limits.ingest_queue_bytes,
                },
            )
            .map_err(|source| match cfg.postgres {
                Some(_) => ServerError::OpenPostgres { source },
                None => ServerError::OpenDatabase {
                    dir: cfg.data_dir.clone(),
                    source,
                },
            })?,
        );
        let records = store.record_count()?;
        let tls = cfg.tls.as_ref().map(load_tls).transpose()?;
        let listener =
            std::net::TcpListener::bind(cfg.listen).map_err(|source| ServerError::Bind {
                addr: cfg.listen,
                source,
            })?;
        listener.set_nonblocking(true).map_err(ServerError::Start)?;
        let addr = listener.local_addr().map_err(ServerError::Start)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("seglog-collector")
            .build()
            .map_err(ServerError::Start)?;
        let forward = match &cfg.forward {
            Some(fc) => {
                let f = crate::forward::Forwarder::open(&cfg.data_dir, cfg.limits.max_body_bytes)?;
                let limits = cfg.limits.protocol();
                let running = crate::forward::Running::start(f, fc.clone(), limits)
                    .map_err(|source| crate::forward::ForwardError::Thread { source })?;
                Some(running)
            }
            None => None,
        };
        let mut state = AppState::new(cfg, store, records);
        state.forward = forward.as_ref().map(|r| r.forwarder().clone());
        let state = Arc::new(state);
        let handle = axum_server::Handle::new();
        let grace = state.cfg.shutdown_grace;
        let app = crate::routes::router(state.clone());
        let (h, st) = (handle.clone(), state.clone());
        let is_tls = tls.is_some();
        let thread = std::thread::Builder::new()
            .name("seglog-collector-main".into())
            .spawn(move || -> Result<(), ServerError> {
                let result = runtime.block_on(serve(listener, tls, app, h, st.clone()));
                // In-flight blocking store calls finish before the runtime goes away.
                drop(runtime);
                st.flush_rejects()?;
                result
            })
            .map_err(ServerError::Start)?;
        Ok(RunningServer {
            addr,
            tls: is_tls,
            handle,
            grace,
            thread: Some(thread),
            state,
            forward,
        })
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    app: Router,
    handle: axum_server::Handle<SocketAddr>,
    state: Arc<AppState>,
) -> Result<(), ServerError> {
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
    let retention = state.cfg.retain_days.map(|days| {
        let st = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(RETENTION_INTERVAL);
            loop {
                tick.tick().await;
                let s = st.clone();
                let cutoff = crate::api::now_ms() - i64::from(days) * 86_400_000;
                match tokio::task::spawn_blocking(move || s.store.retain(cutoff)).await {
                    Ok(Ok(p)) => st.metrics.retained(p.records),
                    Ok(Err(e)) => eprintln!("seglog collector: retention: {e}"),
                    Err(_) => {}
                }
            }
        })
    });
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
                .map_err(ServerError::Start)?
                .acceptor(capped)
                .handle(handle);
            s.http_builder().http1().header_read_timeout(idle);
            s.serve(make).await
        }
        Some(c) => {
            let mut s = axum_server::from_tcp_rustls(listener, c)
                .map_err(ServerError::Start)?
                .map(|tls| tls.acceptor(capped))
                .handle(handle);
            s.http_builder().http1().header_read_timeout(idle);
            s.serve(make).await
        }
    };
    flusher.abort();
    if let Some(r) = retention {
        r.abort();
    }
    result.map_err(ServerError::Serve)
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

fn load_tls(files: &TlsFiles) -> Result<axum_server::tls_rustls::RustlsConfig, ServerError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| ServerError::TlsFile {
            what: "certificate",
            path: files.cert.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(ServerError::NoCertificate(files.cert.clone()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| ServerError::TlsFile {
        what: "key",
        path: files.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(ServerError::Tls)?;
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

    /// The counters of the `[collector.forward]` forwarder, when forwarding.
    pub fn forward_stats(&self) -> Option<&crate::forward::ForwardStats> {
        self.forward.as_ref().map(|f| &f.forwarder().stats)
    }

    /// `http://addr` or `https://addr`: the base URL for uploaders and browsers.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// The database file (SQLite; `None` with PostgreSQL).
    pub fn database_path(&self) -> Option<&std::path::Path> {
        self.state.store.path()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), and waits
    /// for the server thread.
    pub fn shutdown(mut self) -> Result<(), ServerError> {
        self.stop()
    }

    /// [`shutdown`](Self::shutdown), then the uploads answered 429 because the writer queue
    /// was full over the server's whole life (`seglog_collector_ingest_shed_total`),
    /// including those answered while in-flight requests finished.
    pub fn shutdown_counting_shed(mut self) -> Result<u64, ServerError> {
        let state = self.state.clone();
        self.stop()?;
        Ok(state
            .store
            .writer_stats()
            .shed
            .load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Blocks until the server stops (after a signal when `handle_signals` is set).
    pub fn wait(mut self) -> Result<(), ServerError> {
        self.join()
    }

    fn stop(&mut self) -> Result<(), ServerError> {
        self.handle.graceful_shutdown(Some(self.grace));
        self.join()
    }

    fn join(&mut self) -> Result<(), ServerError> {
        let r = match self.thread.take() {
            Some(t) => t.join().map_err(|_| ServerError::Panicked)?,
            None => Ok(()),
        };
        // No upload can queue anything any more: the forwarder stops at its cursor.
        if let Some(f) = self.forward.take() {
            f.stop();
        }
        r
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("seglog collector: {e:#}");
        }
    }
}
