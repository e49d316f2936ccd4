//! The resolved configuration the server runs with: [`ServerConfig`], its resource
//! [`Limits`] and their validation.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{ConfigError, DEFAULT_LISTEN};

/// PEM files for HTTPS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain (PEM).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Resource bounds of the server. Memory for uploads is at most roughly
/// `receive_buffer_bytes + max_concurrent_uploads * 2 * max_decompressed_bytes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest compressed body; larger is refused with 413 before it is read (16 MiB, the
    /// protocol's default).
    pub max_body_bytes: u64,
    /// Largest decompressed batch; a zip bomb stops here with 413 (64 MiB, the protocol's
    /// default).
    pub max_decompressed_bytes: u64,
    /// Most records in one batch (200 000, the protocol's default).
    pub max_records_per_batch: u64,
    /// Uploads decoded at once (4: decoding is CPU work, and this keeps the memory bound
    /// above small); decoded batches then wait for the writer in its queue.
    pub max_concurrent_uploads: usize,
    /// How long an upload waits for a slot before it gets 503 with `Retry-After` (30 s).
    pub upload_queue_timeout: Duration,
    /// Payload bytes per API response before it is cut short with a `next_cursor` (32 MiB).
    pub max_response_bytes: u64,
    /// Open connections served at once; a connection beyond it is closed at once (1024).
    pub max_connections: usize,
    /// How long a connection may stay silent: before its first byte, between requests, and
    /// between two pieces of an upload body (10 s). Then it is closed (408 mid-body).
    pub idle_timeout: Duration,
    /// How long a whole upload body may take to arrive (60 s); then 408.
    pub body_timeout: Duration,
    /// Bytes of upload bodies held in memory at once while they arrive, counted as they
    /// arrive (`max_concurrent_uploads * max_body_bytes`, 64 MiB by default). A body that
    /// cannot get room in time gets 503 with `Retry-After`.
    pub receive_buffer_bytes: u64,
    /// Estimated memory of decoded batches waiting for the database writer (256 MiB). An
    /// upload that finds it full is answered 429 with `Retry-After` at once (its booked
    /// return, `store::shed`; a device back on its booking may fill it up to twice this).
    pub ingest_queue_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let p = protocol::Limits::default();
        Limits {
            max_body_bytes: p.max_body_bytes,
            max_decompressed_bytes: p.max_decompressed_bytes,
            max_records_per_batch: p.max_records,
            max_concurrent_uploads: 4,
            upload_queue_timeout: Duration::from_secs(30),
            max_response_bytes: 32 << 20,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            receive_buffer_bytes: 4 * p.max_body_bytes,
            ingest_queue_bytes: 256 << 20,
        }
    }
}

impl Limits {
    /// The decoder limits for these bounds.
    pub fn protocol(&self) -> protocol::Limits {
        let d = protocol::Limits::default();
        protocol::Limits {
            max_body_bytes: self.max_body_bytes,
            max_decompressed_bytes: self.max_decompressed_bytes,
            max_records: self.max_records_per_batch,
            max_payload_bytes: d.max_payload_bytes.min(self.max_decompressed_bytes),
            ..d
        }
    }
}

/// Everything the server needs, validated. Build it with [`ServerConfig::new`] and adjust
/// fields, or from the config file with [`CollectorSection::resolve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Address to bind; port 0 picks a free port (see `RunningServer::local_addr`).
    pub listen: SocketAddr,
    /// Directory of the SQLite database (`collector.sqlite3`), created 0700 if missing.
    pub data_dir: PathBuf,
    /// PostgreSQL URL (`[collector] database`); when set, used instead of `data_dir`.
    pub postgres: Option<String>,
    /// Accepted upload bearer tokens; empty = uploads need no token.
    pub tokens: Vec<String>,
    /// Bearer tokens required for the API, UI and `/metrics`; empty = open.
    pub api_tokens: Vec<String>,
    /// HTTPS certificate and key; `None` = plain HTTP.
    pub tls: Option<TlsFiles>,
    /// Resource bounds.
    pub limits: Limits,
    /// How long in-flight requests may finish after shutdown starts (10 s).
    pub shutdown_grace: Duration,
    /// Stop gracefully on SIGINT and SIGTERM (the CLI sets this; libraries usually don't).
    pub handle_signals: bool,
    /// `[collector.forward]`, when set.
    pub forward: Option<crate::forward::ForwardConfig>,
    /// Delete records, gaps and batches received more than this many days ago (checked at
    /// start and every `RETENTION_INTERVAL`); `None` keeps everything.
    pub retain_days: Option<u32>,
}

impl ServerConfig {
    /// The database this configuration names.
    pub fn database(&self) -> crate::store::Database {
        match &self.postgres {
            Some(url) => crate::store::Database::Postgres(url.clone()),
            None => crate::store::Database::Sqlite(self.data_dir.clone()),
        }
    }

    /// Defaults: listen on `127.0.0.1:8780`, store in `data_dir`, no tokens, plain HTTP.
    pub fn new(data_dir: PathBuf) -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8780))),
            data_dir,
            postgres: None,
            tokens: Vec::new(),
            api_tokens: Vec::new(),
            tls: None,
            limits: Limits::default(),
            shutdown_grace: Duration::from_secs(10),
            handle_signals: false,
            forward: None,
            retain_days: None,
        }
    }

    /// Checks the values that could not be checked while parsing.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let l = &self.limits;
        ensure!(l.max_body_bytes > 0, "max_body_bytes must be above 0");
        ensure!(
            l.max_decompressed_bytes > 0,
            "max_decompressed_bytes must be above 0"
        );
        ensure!(
            l.max_records_per_batch > 0,
            "max_records_per_batch must be above 0"
        );
        ensure!(
            self.postgres.is_none()
                || l.max_records_per_batch <= crate::store::POSTGRES_MAX_BATCH_RECORDS,
            "max_records_per_batch ({}) is above {}, the most records the PostgreSQL store \
             (database = \"postgres://...\") numbers in one batch; lower max_records_per_batch",
            l.max_records_per_batch,
            crate::store::POSTGRES_MAX_BATCH_RECORDS
        );
        ensure!(
            (1..=1024).contains(&l.max_concurrent_uploads),
            "max_concurrent_uploads must be 1 to 1024, not {}",
            l.max_concurrent_uploads
        );
        ensure!(l.max_connections > 0, "max_connections must be above 0");
        ensure!(
            !l.idle_timeout.is_zero() && !l.body_timeout.is_zero(),
            "idle_timeout and body_timeout must be above 0"
        );
        ensure!(
            l.receive_buffer_bytes >= l.max_body_bytes,
            "receive_buffer_bytes ({}) must be at least max_body_bytes ({}), or a \
             body of the largest size could never be received",
            l.receive_buffer_bytes,
            l.max_body_bytes
        );
        ensure!(
            l.ingest_queue_bytes > 0,
            "ingest_queue_bytes must be above 0"
        );
        ensure!(
            self.retain_days != Some(0),
            "retain_days must be at least 1 (leave it out to keep everything)"
        );
        for t in self.tokens.iter().chain(&self.api_tokens) {
            ensure!(
                !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()),
                "a token is empty or contains spaces or non-ASCII characters"
            );
        }
        Ok(())
    }

    /// Whether uploads are open to anyone who can reach a non-loopback address (the CLI
    /// warns about it).
    pub fn is_open_on_network(&self) -> bool {
        self.tokens.is_empty() && !self.listen.ip().is_loopback()
    }
}
