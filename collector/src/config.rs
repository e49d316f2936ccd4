//! The `[collector]` section of seglog's TOML configuration, and the resolved
//! [`ServerConfig`] the server runs with.
//!
//! Every key is optional; the defaults are listed in `collector/README.md` and on each field.
//! Unknown keys are an error that names the key.

use std::net::{AddrParseError, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use config_layers::spec::{duration_value, size_value, string_value, DefaultValue, SectionSpec};
use config_layers::{DurationValue, GlobalArgs, Layers, Section, SizeValue};
use serde::Deserialize;

/// Default listen address: loopback only, so an unconfigured collector is never exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8780";
/// Most records one `GET /api/records` returns (the telemetrics backend's limit).
pub const MAX_QUERY_LIMIT: u32 = 10_000;

/// Why a configuration was refused. Every message names the key at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The configuration files could not be read or parsed, or the `[collector]` section has
    /// an unknown key or a value of the wrong type (the error names the file and the key).
    #[error(transparent)]
    File(#[from] config_layers::ConfigError),
    /// `listen` is not an address.
    #[error("[collector] listen = {value:?} is not an address; use e.g. \"127.0.0.1:8780\"")]
    Listen {
        /// The value given.
        value: String,
        /// Why it does not parse.
        source: AddrParseError,
    },
    /// A token file could not be read.
    #[error("reading token file {}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value is out of its range, or two values do not fit together.
    #[error("[collector] {0}")]
    Invalid(String),
}

/// Returns `Err(ConfigError::Invalid(..))` with the message unless `cond` holds.
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(ConfigError::Invalid(format!($($msg)+)));
        }
    };
}

/// The `[collector]` section as written in the file. All keys are optional; sizes take
/// bytes or strings such as `"16MiB"`, durations seconds or strings such as `"10s"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorSection {
    /// `listen`: address to bind (default `127.0.0.1:8780`).
    pub listen: Option<String>,
    /// `data_dir`: where the SQLite database lives.
    pub data_dir: Option<PathBuf>,
    /// `database`: `"postgres://user@host:port/db"` stores in PostgreSQL instead of SQLite.
    pub database: Option<String>,
    /// `tokens`: bearer tokens accepted for uploads (none = uploads are open).
    pub tokens: Option<Vec<String>>,
    /// `token_file`: a file with one accepted upload token per line (`#` comments allowed).
    pub token_file: Option<PathBuf>,
    /// `api_tokens`: bearer tokens required to read the API, UI and metrics (none = open).
    pub api_tokens: Option<Vec<String>>,
    /// `tls_cert`: PEM certificate chain; with `tls_key`, the collector serves HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// `tls_key`: PEM private key for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `max_body_bytes`: largest compressed upload body.
    pub max_body_bytes: Option<SizeValue>,
    /// `max_decompressed_bytes`: largest decompressed batch.
    pub max_decompressed_bytes: Option<SizeValue>,
    /// `max_records_per_batch`: most records in one batch.
    pub max_records_per_batch: Option<u64>,
    /// `max_concurrent_uploads`: uploads decoded at once; bounds memory.
    pub max_concurrent_uploads: Option<usize>,
    /// `upload_queue_timeout`: how long an upload waits for a slot before 503.
    pub upload_queue_timeout: Option<DurationValue>,
    /// `max_response_bytes`: payload bytes one API response carries before it is cut and
    /// continued with `next_cursor`.
    pub max_response_bytes: Option<SizeValue>,
    /// `shutdown_grace`: how long in-flight requests may finish at shutdown.
    pub shutdown_grace: Option<DurationValue>,
    /// `max_connections`: open connections served at once; more are closed at once.
    pub max_connections: Option<usize>,
    /// `idle_timeout`: how long a connection may stay silent (before its first byte, between
    /// requests, inside an upload body).
    pub idle_timeout: Option<DurationValue>,
    /// `body_timeout`: how long a whole upload body may take to arrive.
    pub body_timeout: Option<DurationValue>,
    /// `receive_buffer_bytes`: upload body bytes held in memory at once while they arrive.
    pub receive_buffer_bytes: Option<SizeValue>,
    /// `[collector.forward]`: forward what is stored to an OTLP/HTTP endpoint.
    pub forward: Option<crate::forward::ForwardSection>,
    /// `ingest_queue_bytes`: decoded batches waiting for the database writer (429 above).
    pub ingest_queue_bytes: Option<SizeValue>,
    /// `retain_days`: delete what was received more than this many days ago (none = keep).
    pub retain_days: Option<u32>,
}

impl Section for CollectorSection {
    const NAME: &'static str = "collector";
}

fn size(key: &str, v: Option<SizeValue>, default: u64) -> Result<u64, ConfigError> {
    match v {
        None => Ok(default),
        Some(v) => v
            .bytes()
            .ok_or_else(|| ConfigError::Invalid(format!("{key} must not be negative"))),
    }
}

impl CollectorSection {
    /// Parses the `[collector]` table of one TOML document (absent = all defaults).
    pub fn from_toml_str(doc: &str) -> Result<Self, ConfigError> {
        Ok(Layers::from_sources(vec![("inline".to_owned(), doc.to_owned())])?.section()?)
    }

    /// Reads the section from seglog's layered configuration (the `config-layers` crate).
    pub fn load(global: &GlobalArgs) -> Result<Self, ConfigError> {
        Ok(Layers::load(global)?.section()?)
    }

    /// Validates and resolves the section into a [`ServerConfig`]; `default_data_dir` is used
    /// when `data_dir` is not set.
    pub fn resolve(&self, default_data_dir: &Path) -> Result<ServerConfig, ConfigError> {
        let d = ServerConfig::new(default_data_dir.to_path_buf());
        let listen = match &self.listen {
            Some(s) => s
                .parse::<SocketAddr>()
                .map_err(|source| ConfigError::Listen {
                    value: s.clone(),
                    source,
                })?,
            None => d.listen,
        };
        let mut tokens = self.tokens.clone().unwrap_or_default();
        if let Some(path) = &self.token_file {
            tokens.extend(read_token_file(path)?);
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(TlsFiles {
                cert: c.clone(),
                key: k.clone(),
            }),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "tls_cert and tls_key must be set together".to_owned(),
                ))
            }
        };
        let dl = d.limits;
        let limits = Limits {
            max_body_bytes: size("max_body_bytes", self.max_body_bytes, dl.max_body_bytes)?,
            max_decompressed_bytes: size(
                "max_decompressed_bytes",
                self.max_decompressed_bytes,
                dl.max_decompressed_bytes,
            )?,
            max_records_per_batch: self
                .max_records_per_batch
                .unwrap_or(dl.max_records_per_batch),
            max_concurrent_uploads: self
                .max_concurrent_uploads
                .unwrap_or(dl.max_concurrent_uploads),
            upload_queue_timeout: self
                .upload_queue_timeout
                .map_or(dl.upload_queue_timeout, DurationValue::get),
            max_response_bytes: size(
                "max_response_bytes",
                self.max_response_bytes,
                dl.max_response_bytes,
            )?,
            max_connections: self.max_connections.unwrap_or(dl.max_connections),
            idle_timeout: self
                .idle_timeout
                .map_or(dl.idle_timeout, DurationValue::get),
            body_timeout: self
                .body_timeout
                .map_or(dl.body_timeout, DurationValue::get),
            receive_buffer_bytes: size(
                "receive_buffer_bytes",
                self.receive_buffer_bytes,
                dl.receive_buffer_bytes,
            )?,
            ingest_queue_bytes: size(
                "ingest_queue_bytes",
                self.ingest_queue_bytes,
                dl.ingest_queue_bytes,
            )?,
        };
        let cfg = ServerConfig {
            listen,
            data_dir: self.data_dir.clone().unwrap_or(d.data_dir),
            postgres: match &self.database {
                None => None,
                Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    Some(url.clone())
                }
                Some(url) => {
                    // Only what follows any `user:password@` is shown.
                    return Err(ConfigError::Invalid(format!(
                        "database = {:?} is not a PostgreSQL URL; write \
                         \"postgres://user@host:port/db\", or leave database out to use \
                         SQLite in data_dir",
                        url.split('@').next_back().unwrap_or("")
                    )));
                }
            },
            tokens,
            api_tokens: self.api_tokens.clone().unwrap_or_default(),
            tls,
            limits,
            shutdown_grace: self
                .shutdown_grace
                .map_or(d.shutdown_grace, DurationValue::get),
            handle_signals: false,
            forward: self
                .forward
                .as_ref()
                .map(|f| f.resolve().map_err(ConfigError::Invalid))
                .transpose()?,
            retain_days: self.retain_days,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Reads one token per line; blank lines and lines starting with `#` are skipped.
pub fn read_token_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::TokenFile {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

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

/// The data directory used when none is configured: `seglog-collector` next to seglog's
/// default log directory (`/var/lib/seglog-collector` for root, else
/// `$XDG_STATE_HOME/seglog-collector` or `~/.local/state/seglog-collector`).
pub fn default_data_dir() -> PathBuf {
    let log = config_layers::own_default_dir();
    match log.parent() {
        Some(p) => p.join("seglog-collector"),
        None => PathBuf::from("seglog-collector"),
    }
}

/// `[collector]` for `seglog config show` and `config check`: every key with its built-in
/// default.
pub fn collector_spec() -> SectionSpec {
    let d = ServerConfig::new(default_data_dir());
    let l = d.limits;
    let v = DefaultValue::Value;
    let int = |x: u64| v(toml::Value::Integer(i64::try_from(x).unwrap_or(i64::MAX)));
    let count = |x: usize| int(u64::try_from(x).unwrap_or(u64::MAX));
    SectionSpec::new::<CollectorSection>(
        vec![
            ("listen", v(string_value(d.listen.to_string()))),
            (
                "data_dir",
                DefaultValue::Machine {
                    value: string_value(d.data_dir.display().to_string()),
                    note: "for this user",
                },
            ),
            ("tokens", v(toml::Value::Array(Vec::new()))),
            ("api_tokens", v(toml::Value::Array(Vec::new()))),
            ("max_body_bytes", v(size_value(l.max_body_bytes))),
            (
                "max_decompressed_bytes",
                v(size_value(l.max_decompressed_bytes)),
            ),
            ("max_records_per_batch", int(l.max_records_per_batch)),
            ("max_concurrent_uploads", count(l.max_concurrent_uploads)),
            (
                "upload_queue_timeout",
                v(duration_value(l.upload_queue_timeout)),
            ),
            ("max_response_bytes", v(size_value(l.max_response_bytes))),
            ("shutdown_grace", v(duration_value(d.shutdown_grace))),
            ("max_connections", count(l.max_connections)),
            ("idle_timeout", v(duration_value(l.idle_timeout))),
            ("body_timeout", v(duration_value(l.body_timeout))),
            (
                "receive_buffer_bytes",
                v(size_value(l.receive_buffer_bytes)),
            ),
            ("ingest_queue_bytes", v(size_value(l.ingest_queue_bytes))),
        ],
        // `database` may carry a password (postgres://user:password@host/db).
        &["database", "tokens", "api_tokens", "forward"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_document_resolves_to_the_documented_defaults() {
        let s = CollectorSection::from_toml_str("").unwrap();
        let c = s.resolve(Path::new("/tmp/x")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8780");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert!(c.tokens.is_empty());
        assert_eq!(c.limits.max_body_bytes, 16 << 20);
        assert_eq!(c.limits.max_decompressed_bytes, 64 << 20);
        assert_eq!(c.shutdown_grace, Duration::from_secs(10));
        assert!(!c.is_open_on_network());
    }

    #[test]
    fn every_key_is_read() {
        let doc = r#"
            [collector]
            listen = "0.0.0.0:9000"
            data_dir = "/srv/c"
            tokens = ["a", "b"]
            api_tokens = ["r"]
            tls_cert = "/c.pem"
            tls_key = "/k.pem"
            max_body_bytes = 1000
            max_decompressed_bytes = 2000
            max_records_per_batch = 30
            max_concurrent_uploads = 2
            upload_queue_timeout = "2s"
            max_response_bytes = 4000
            shutdown_grace = "500ms"
        "#;
        let c = CollectorSection::from_toml_str(doc)
            .unwrap()
            .resolve(Path::new("/x"))
            .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(c.data_dir, PathBuf::from("/srv/c"));
        assert_eq!(c.tokens, ["a", "b"]);
        assert_eq!(c.api_tokens, ["r"]);
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        assert_eq!(c.limits.max_body_bytes, 1000);
        assert_eq!(c.limits.max_decompressed_bytes, 2000);
        assert_eq!(c.limits.max_records_per_batch, 30);
        assert_eq!(c.limits.max_concurrent_uploads, 2);
        assert_eq!(c.limits.upload_queue_timeout, Duration::from_secs(2));
        assert_eq!(c.limits.max_response_bytes, 4000);
        assert_eq!(c.shutdown_grace, Duration::from_millis(500));
        assert!(!c.is_open_on_network());
    }

    #[test]
    fn the_spec_knows_every_key_and_its_defaults_are_the_built_in_ones() {
        let spec = collector_spec();
        let keys = spec.keys.clone().unwrap();
        assert_eq!(
            keys.len(),
            config_layers::spec::fields::<CollectorSection>().len()
        );
        let (doc, unset) = spec.defaults_document();
        assert_eq!(
            unset,
            [
                "database",
                "token_file",
                "tls_cert",
                "tls_key",
                "forward",
                "retain_days"
            ]
        );
        let c = CollectorSection::from_toml_str(&doc)
            .unwrap()
            .resolve(Path::new("/elsewhere"))
            .unwrap();
        assert_eq!(c, ServerConfig::new(default_data_dir()));
    }

    #[test]
    fn database_selects_postgres_and_anything_else_is_refused_without_echoing_a_password() {
        let c = CollectorSection::from_toml_str(
            "[collector]\ndatabase = \"postgres://seglog@db.example:5432/telemetry\"\n",
        )
        .unwrap()
        .resolve(Path::new("/d"))
        .unwrap();
        assert_eq!(
            c.database(),
            crate::store::Database::Postgres("postgres://seglog@db.example:5432/telemetry".into())
        );
        let e = CollectorSection::from_toml_str(
            "[collector]\ndatabase = \"mysql://u:hunter2@db.example/t\"\n",
        )
        .unwrap()
        .resolve(Path::new("/d"))
        .unwrap_err()
        .to_string();
        assert!(e.contains("database") && e.contains("postgres://"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let d = CollectorSection::from_toml_str("[collector]\n")
            .unwrap()
            .resolve(Path::new("/d"))
            .unwrap();
        assert_eq!(d.database(), crate::store::Database::Sqlite("/d".into()));
    }

    #[test]
    fn a_batch_limit_above_what_the_postgres_store_numbers_is_refused() {
        let doc = |n: u64, db: &str| format!("[collector]\n{db}max_records_per_batch = {n}\n");
        let check = |n: u64, db: &str| {
            CollectorSection::from_toml_str(&doc(n, db))
                .unwrap()
                .resolve(Path::new("/d"))
                .map(drop)
        };
        let pg = "database = \"postgres://seglog@127.0.0.1/t\"\n";
        let max = crate::store::POSTGRES_MAX_BATCH_RECORDS;
        assert!(check(max, pg).is_ok());
        let e = check(max + 1, pg).unwrap_err().to_string();
        assert!(
            e.contains("max_records_per_batch") && e.contains("PostgreSQL"),
            "{e}"
        );
        assert!(check(max + 1, "").is_ok(), "SQLite has no such bound");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let e = CollectorSection::from_toml_str("[collector]\nlisten_addr = \"x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("listen_addr"), "{e:#}");
    }

    #[test]
    fn bad_values_are_errors_naming_the_key() {
        let cases = [
            ("listen = \"nope\"", "listen"),
            ("tls_cert = \"/c\"", "tls_cert and tls_key"),
            ("max_concurrent_uploads = 0", "max_concurrent_uploads"),
            ("shutdown_grace = \"soon\"", "shutdown_grace"),
            ("tokens = [\"has space\"]", "token"),
        ];
        for (line, key) in cases {
            let e = CollectorSection::from_toml_str(&format!("[collector]\n{line}\n"))
                .and_then(|s| s.resolve(Path::new("/x")))
                .unwrap_err();
            assert!(format!("{e:#}").contains(key), "{line}: {e:#}");
        }
    }

    #[test]
    fn sizes_and_durations_take_units() {
        let doc = "[collector]\nmax_body_bytes = \"1MiB\"\nshutdown_grace = 3\n";
        let c = CollectorSection::from_toml_str(doc)
            .unwrap()
            .resolve(Path::new("/x"))
            .unwrap();
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert_eq!(c.shutdown_grace, Duration::from_secs(3));
        let e = CollectorSection::from_toml_str("[collector]\nmax_body_bytes = -1\n")
            .unwrap()
            .resolve(Path::new("/x"))
            .unwrap_err();
        assert!(format!("{e:#}").contains("max_body_bytes"), "{e:#}");
    }

    #[test]
    fn open_uploads_on_a_network_address_are_flagged() {
        let mut c = ServerConfig::new("/x".into());
        c.listen = "0.0.0.0:8780".parse().unwrap();
        assert!(c.is_open_on_network());
        c.tokens.push("t".into());
        assert!(!c.is_open_on_network());
    }

    #[test]
    fn token_file_skips_comments_and_blank_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("tokens");
        std::fs::write(&p, "# fleet A\nabc\n\n  def  \n").unwrap();
        assert_eq!(read_token_file(&p).unwrap(), ["abc", "def"]);
    }
}
