//! The `[collector]` section of seglog's TOML configuration, and the resolved
//! [`ServerConfig`] the server runs with.
//!
//! Every key is optional; the defaults are listed in `collector/README.md` and on each field.
//! Unknown keys are an error that names the key.

use std::net::{AddrParseError, SocketAddr};
use std::path::{Path, PathBuf};

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

mod server;
pub use server::{Limits, ServerConfig, TlsFiles};

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
mod tests;
