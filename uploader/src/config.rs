//! The `[upload]` configuration section (documented with its defaults in README.md), parsed
//! through the recorder's layered loader, and its resolution into [`UploadConfig`].
use std::path::{Path, PathBuf};
use std::time::Duration;

use config_layers::spec::{duration_value, size_value, string_value, DefaultValue, SectionSpec};
use config_layers::{ConfigError, DurationValue, GlobalArgs, Layers, Section, SizeValue};

/// `[upload].key` holds a value that parses but is not allowed.
fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        origin: None,
        section: "upload",
        key: Some(key.to_owned()),
        message: message.into(),
    }
}
use recorder::config::LogConfig;
use serde::Deserialize;

use crate::policy::{Mode, Policy};

/// `[upload]` as written; every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpload {
    /// Collector base URL.
    pub url: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// File holding the bearer token (first line).
    pub token_file: Option<PathBuf>,
    /// false: never upload.
    pub server_delivery: Option<bool>,
    /// `on-demand` or `interval`.
    pub mode: Option<Mode>,
    /// Least time between scheduled passes.
    pub interval: Option<DurationValue>,
    /// Scheduled passes wait for this backlog...
    pub min_backlog_bytes: Option<SizeValue>,
    /// ...or for the oldest record to be this old (0: never by age).
    pub max_delay: Option<DurationValue>,
    /// Wire bytes per UTC day (negative or 0: unlimited).
    pub daily_budget: Option<SizeValue>,
    /// Whether the opt-in marker is required.
    pub require_opt_in: Option<bool>,
    /// Opt-in marker path.
    pub opt_in_file: Option<PathBuf>,
    /// zstd level 1-19.
    pub zstd_level: Option<i32>,
    /// Payload bytes per batch.
    pub batch_max_bytes: Option<SizeValue>,
    /// Records per batch.
    pub batch_max_records: Option<u64>,
    /// TCP connect timeout.
    pub connect_timeout: Option<DurationValue>,
    /// Whole-request timeout.
    pub timeout: Option<DurationValue>,
    /// First backoff step.
    pub backoff_base: Option<DurationValue>,
    /// Longest backoff (and Retry-After) wait.
    pub backoff_cap: Option<DurationValue>,
    /// Random delay before the daemon's first upload.
    pub startup_delay: Option<DurationValue>,
    /// Attempts before a refused batch is dead-lettered.
    pub dead_letter_after: Option<u32>,
    /// Dead-letter folder size cap.
    pub dead_letter_max_bytes: Option<SizeValue>,
    /// Attempts per batch in `once` and `flush` before giving up.
    pub max_attempts: Option<u32>,
    /// Run retention ([log] max_bytes / max_age) after uploading.
    pub retention: Option<bool>,
    /// `seglog` (the collector's protocol) or `otlp` (OTLP/HTTP logs, OTLP.md).
    pub protocol: Option<WireProtocol>,
    /// `Content-Encoding` of OTLP requests: `zstd` or `none`.
    pub compression: Option<Compression>,
    /// Extra request headers (vendor API keys...).
    pub headers: Option<std::collections::BTreeMap<String, String>>,
}

/// What the uploader speaks (`[upload] protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireProtocol {
    /// seglog's own protocol (PROTOCOL.md), to seglog's collector.
    #[default]
    Seglog,
    /// OTLP/HTTP logs, binary protobuf (OTLP.md), to any OTLP receiver.
    Otlp,
}

impl WireProtocol {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            WireProtocol::Seglog => "seglog",
            WireProtocol::Otlp => "otlp",
        }
    }
}

/// `Content-Encoding` of the request body (`[upload] compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// zstd at `zstd_level` (the seglog protocol requires it).
    #[default]
    Zstd,
    /// gzip at `zstd_level` clamped to 1-9 (OTLP only; not in device builds, which are
    /// built without the `gzip` feature).
    Gzip,
    /// No compression (OTLP only).
    None,
}

impl Compression {
    /// The configuration value.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::Zstd => "zstd",
            Compression::Gzip => "gzip",
            Compression::None => "none",
        }
    }
}

/// Headers the uploader sets itself; `[upload] headers` may not name them.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-encoding",
    "content-length",
    "content-digest",
    "host",
    "transfer-encoding",
    "seglog-batch-id",
    "seglog-protocol",
];

/// Checks one `[upload] headers` entry: an RFC 9110 token as the name, a value without
/// control characters.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!("{name:?} is not a valid header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(format!("{name:?} is set by the uploader itself"));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!("the value of {name:?} holds a control character"));
    }
    Ok(())
}

impl Section for RawUpload {
    const NAME: &'static str = "upload";
}

/// The resolved configuration of an uploader.
#[derive(Debug, Clone)]
pub struct UploadConfig {
    /// Log directory.
    pub dir: PathBuf,
    /// Collector base URL (`None`: not configured).
    pub url: Option<String>,
    /// Where `url` came from: `--url`, `SEGLOG_UPLOAD_URL` or `[upload] url` (`None`: unset).
    pub url_source: Option<&'static str>,
    /// Bearer token.
    pub token: Option<String>,
    /// Policy.
    pub policy: Policy,
    /// Opt-in marker.
    pub opt_in_file: PathBuf,
    /// zstd level (default 3).
    pub zstd_level: i32,
    /// Payload bytes per batch (default 4 MiB).
    pub batch_max_bytes: u64,
    /// Records per batch (default 50 000).
    pub batch_max_records: u64,
    /// Connect timeout (default 10 s).
    pub connect_timeout: Duration,
    /// Whole-request timeout (default 60 s).
    pub timeout: Duration,
    /// First backoff step (default 1 s).
    pub backoff_base: Duration,
    /// Backoff cap (default 40 min, `DEFAULT_BACKOFF_CAP`).
    pub backoff_cap: Duration,
    /// Daemon start-up jitter (default 30 s).
    pub startup_delay: Duration,
    /// Refusals before dead-lettering (default 3).
    pub dead_letter_after: u32,
    /// Dead-letter cap (default 64 MiB; the oldest files go first).
    pub dead_letter_max_bytes: u64,
    /// Attempts per batch for `once`/`flush` (default 5).
    pub max_attempts: u32,
    /// Retention limits applied by the uploader (`None`: retention off).
    pub retention: Option<segment_log::RetentionPolicy>,
    /// What the uploader speaks (default seglog).
    pub protocol: WireProtocol,
    /// Body compression (default zstd).
    pub compression: Compression,
    /// Extra request headers, in name order.
    pub headers: Vec<(String, String)>,
}

/// Default payload bytes per batch: 4 MiB compresses to ~0.5 MiB, far inside the server's
/// 16 MiB body limit, and keeps the encoder's buffers small.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 4 << 20;
/// Default longest wait between two attempts (and the cap on `Retry-After`): 40 minutes.
/// With equal jitter a device at the cap retries on average every 30 minutes, less often
/// than its scheduled uploads at the default 15-minute interval, so a fleet retrying
/// through an outage comes back at no more than its usual request rate (fleet-sim: the
/// peak after a 1-hour outage is 2.3-2.8x the steady mean with this cap, 4.1-4.6x with
/// 10 minutes). `flush` does not wait it out: a flush cuts the daemon's current wait short.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(40 * 60);
/// Default records per batch (a quarter of the protocol's 200 000).
pub const DEFAULT_BATCH_MAX_RECORDS: u64 = 50_000;

impl UploadConfig {
    /// Defaults for log directory `dir` (no URL).
    pub fn for_dir(dir: impl Into<PathBuf>) -> UploadConfig {
        let dir = dir.into();
        UploadConfig {
            opt_in_file: crate::state::upload_dir(&dir).join(crate::state::OPT_IN_FILE),
            dir,
            url: None,
            url_source: None,
            token: None,
            policy: Policy::default(),
            zstd_level: 1,
            batch_max_bytes: DEFAULT_BATCH_MAX_BYTES,
            batch_max_records: DEFAULT_BATCH_MAX_RECORDS,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            backoff_base: Duration::from_secs(1),
            backoff_cap: DEFAULT_BACKOFF_CAP,
            startup_delay: Duration::from_secs(30),
            dead_letter_after: 3,
            dead_letter_max_bytes: 64 << 20,
            max_attempts: 5,
            retention: None,
            protocol: WireProtocol::Seglog,
            compression: Compression::Zstd,
            headers: Vec::new(),
        }
    }

    /// Loads the layered configuration for `global` (files, `SEGLOG_DIR`, `--dir`), then the
    /// upload URL from `SEGLOG_UPLOAD_URL` when set (it overrides `[upload] url`; `--url`
    /// overrides both: [`UploadConfig::override_url`]).
    pub fn load(global: &GlobalArgs) -> Result<UploadConfig, ConfigError> {
        let layers = Layers::load(global)?;
        Self::from_layers(&layers, global)
    }

    /// Resolves `[upload]` (and the `[log]` it needs) from already loaded layers; a value
    /// error names the file that set the key.
    pub fn from_layers(layers: &Layers, global: &GlobalArgs) -> Result<UploadConfig, ConfigError> {
        let log =
            LogConfig::from_raw(layers.section()?, global).map_err(|e| layers.attribute(e))?;
        let raw: RawUpload = layers.section()?;
        let mut c = Self::resolve(raw, &log).map_err(|e| layers.attribute(e))?;
        if let Ok(url) = std::env::var(URL_ENV) {
            c.override_url(&url, URL_ENV)?;
        }
        Ok(c)
    }

    /// Sets the URL from a source that overrides the config files (`source` names it in
    /// errors and in `status`: `--url` or `SEGLOG_UPLOAD_URL`). An empty value changes nothing.
    pub fn override_url(&mut self, url: &str, source: &'static str) -> Result<(), ConfigError> {
        let url = url.trim();
        if url.is_empty() {
            return Ok(());
        }
        check_url(url).map_err(|message| ConfigError::Value {
            origin: Some(source.to_owned()),
            section: "upload",
            key: Some("url".to_owned()),
            message,
        })?;
        self.url = Some(url.to_owned());
        self.url_source = Some(source);
        Ok(())
    }

    /// Resolves a parsed section against the `[log]` section.
    pub fn resolve(raw: RawUpload, log: &LogConfig) -> Result<UploadConfig, ConfigError> {
        let mut c = UploadConfig::for_dir(&log.dir);
        let d = |v: Option<DurationValue>, default: Duration| {
            v.map(DurationValue::get).unwrap_or(default)
        };
        if let Some(url) = raw.url.filter(|u| !u.trim().is_empty()) {
            check_url(&url).map_err(|m| invalid("url", m))?;
            c.url = Some(url);
            c.url_source = Some(URL_KEY);
        }
        c.token = match (raw.token, raw.token_file) {
            (Some(_), Some(_)) => {
                return Err(invalid("token", "set token or token_file, not both"))
            }
            (Some(t), None) => Some(t),
            (None, Some(p)) => Some(read_token(&p)?),
            (None, None) => None,
        };
        c.policy = Policy {
            mode: raw.mode.unwrap_or(c.policy.mode),
            interval: d(raw.interval, c.policy.interval),
            min_backlog_bytes: raw
                .min_backlog_bytes
                .and_then(SizeValue::bytes)
                .unwrap_or(0),
            max_delay: match raw.max_delay.map(DurationValue::get) {
                Some(z) if z.is_zero() => None,
                Some(v) => Some(v),
                None => c.policy.max_delay,
            },
            daily_budget: raw
                .daily_budget
                .and_then(SizeValue::bytes)
                .filter(|&b| b > 0),
            server_delivery: raw.server_delivery.unwrap_or(true),
            require_opt_in: raw.require_opt_in.unwrap_or(true),
        };
        if c.policy.interval.is_zero() {
            return Err(invalid("interval", "must be greater than 0"));
        }
        if let Some(p) = raw.opt_in_file {
            c.opt_in_file = p;
        }
        if let Some(l) = raw.zstd_level {
            if !(1..=19).contains(&l) {
                return Err(invalid(
                    "zstd_level",
                    format!("{l} must be between 1 and 19"),
                ));
            }
            c.zstd_level = l;
        }
        if let Some(b) = raw.batch_max_bytes {
            let b = b.bytes().filter(|&b| {
                (1024..=crate::protocol::Limits::default().max_payload_bytes).contains(&b)
            });
            c.batch_max_bytes =
                b.ok_or_else(|| invalid("batch_max_bytes", "must be between 1 KiB and 16 MiB"))?;
        }
        if let Some(r) = raw.batch_max_records {
            if !(1..=crate::protocol::Limits::default().max_records).contains(&r) {
                return Err(invalid(
                    "batch_max_records",
                    format!("{r} must be between 1 and 200000"),
                ));
            }
            c.batch_max_records = r;
        }
        c.connect_timeout = d(raw.connect_timeout, c.connect_timeout);
        c.timeout = d(raw.timeout, c.timeout);
        c.backoff_base = d(raw.backoff_base, c.backoff_base).max(Duration::from_millis(1));
        c.backoff_cap = d(raw.backoff_cap, c.backoff_cap).max(c.backoff_base);
        c.startup_delay = d(raw.startup_delay, c.startup_delay);
        c.dead_letter_after = raw.dead_letter_after.unwrap_or(c.dead_letter_after).max(1);
        if let Some(b) = raw.dead_letter_max_bytes {
            c.dead_letter_max_bytes = b.bytes().unwrap_or(0);
        }
        c.max_attempts = raw.max_attempts.unwrap_or(c.max_attempts).max(1);
        c.protocol = raw.protocol.unwrap_or_default();
        c.compression = raw.compression.unwrap_or_default();
        if c.protocol == WireProtocol::Seglog && c.compression != Compression::Zstd {
            return Err(invalid(
                "compression",
                "the seglog protocol is always zstd; \"gzip\" and \"none\" are for protocol = \"otlp\"",
            ));
        }
        if c.compression == Compression::Gzip && !otlp::GZIP_AVAILABLE {
            return Err(invalid(
                "compression",
                "\"gzip\": this seglog was built without gzip (a device build, \
                 --no-default-features); use \"zstd\" (the OpenTelemetry Collector takes it) \
                 or a build with the `gzip` feature",
            ));
        }
        for (k, v) in raw.headers.unwrap_or_default() {
            check_header(&k, &v).map_err(|m| invalid("headers", m))?;
            c.headers.push((k, v));
        }
        if raw.retention.unwrap_or(true) && (log.max_bytes.is_some() || log.max_age.is_some()) {
            c.retention = Some(segment_log::RetentionPolicy {
                max_bytes: log.max_bytes,
                max_age: log.max_age,
            });
        }
        Ok(c)
    }

    /// The full upload URL for log private id `private`.
    pub fn endpoint(&self, private: &[u8; 32]) -> Option<String> {
        let base = self.url.as_deref()?;
        if self.protocol == WireProtocol::Otlp {
            // The full OTLP/HTTP logs endpoint, as configured (usually `.../v1/logs`).
            return Some(base.to_owned());
        }
        let sep = if base.ends_with('/') { "" } else { "/" };
        Some(format!(
            "{base}{sep}{}",
            crate::protocol::upload_path(private)
        ))
    }

    /// The uploader's directory `<log dir>/upload`.
    pub fn upload_dir(&self) -> PathBuf {
        crate::state::upload_dir(&self.dir)
    }

    /// Whether the opt-in marker exists.
    pub fn opted_in(&self) -> bool {
        self.opt_in_file.exists()
    }
}

/// Environment variable holding the collector URL; overrides `[upload] url`, `--url`
/// overrides it.
pub const URL_ENV: &str = "SEGLOG_UPLOAD_URL";
/// The command-line flag for the collector URL.
pub const URL_FLAG: &str = "--url";
/// The config key for the collector URL, as `status` names its source.
pub const URL_KEY: &str = "[upload] url";

/// What to do when no URL is configured: every way to set one.
pub const URL_HOWTO: &str = "pass --url URL, set the environment variable SEGLOG_UPLOAD_URL=URL, \
     or set url = \"URL\" in the [upload] section of /etc/seglog/seglog.toml (or of a file \
     given with --config FILE); URL is the collector's base URL, e.g. http://127.0.0.1:8780/";

/// A collector URL must be http:// or https://.
fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("{url:?} must start with http:// or https://"))
    }
}

/// `[upload]` for `seglog config show` and `config check`: every key with its built-in
/// default; `log_dir` is the effective log directory (`opt_in_file` is derived from it).
pub fn upload_spec(log_dir: &Path) -> SectionSpec {
    let d = UploadConfig::for_dir(log_dir);
    let p = &d.policy;
    let v = DefaultValue::Value;
    let dur = |x: Duration| v(duration_value(x));
    let int = |x: u64| v(toml::Value::Integer(i64::try_from(x).unwrap_or(i64::MAX)));
    SectionSpec::new::<RawUpload>(
        vec![
            (
                "server_delivery",
                v(toml::Value::Boolean(p.server_delivery)),
            ),
            (
                "mode",
                v(string_value(match p.mode {
                    Mode::Interval => "interval",
                    Mode::OnDemand => "on-demand",
                })),
            ),
            ("interval", dur(p.interval)),
            ("min_backlog_bytes", v(size_value(p.min_backlog_bytes))),
            ("max_delay", dur(p.max_delay.unwrap_or_default())),
            ("daily_budget", v(size_value(p.daily_budget.unwrap_or(0)))),
            ("require_opt_in", v(toml::Value::Boolean(p.require_opt_in))),
            (
                "opt_in_file",
                DefaultValue::Derived {
                    value: string_value(d.opt_in_file.display().to_string()),
                    from: "[log] dir",
                },
            ),
            ("zstd_level", int(u64::try_from(d.zstd_level).unwrap_or(1))),
            ("batch_max_bytes", v(size_value(d.batch_max_bytes))),
            ("batch_max_records", int(d.batch_max_records)),
            ("connect_timeout", dur(d.connect_timeout)),
            ("timeout", dur(d.timeout)),
            ("backoff_base", dur(d.backoff_base)),
            ("backoff_cap", dur(d.backoff_cap)),
            ("startup_delay", dur(d.startup_delay)),
            ("dead_letter_after", int(u64::from(d.dead_letter_after))),
            (
                "dead_letter_max_bytes",
                v(size_value(d.dead_letter_max_bytes)),
            ),
            ("max_attempts", int(u64::from(d.max_attempts))),
            ("retention", v(toml::Value::Boolean(true))),
            ("protocol", v(string_value(d.protocol.as_str()))),
            ("compression", v(string_value(d.compression.as_str()))),
        ],
        &["token", "headers"],
    )
}

fn read_token(p: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
        path: p.to_owned(),
        source,
    })?;
    let t = text.lines().next().unwrap_or("").trim().to_owned();
    if t.is_empty() {
        return Err(invalid("token_file", format!("{} is empty", p.display())));
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml: &str) -> Result<UploadConfig, ConfigError> {
        let layers = Layers::from_sources(vec![("test.toml".into(), toml.into())])?;
        let log = LogConfig::from_table(
            layers.merged(),
            &GlobalArgs {
                dir: Some("/tmp/x".into()),
                config: None,
            },
        )?;
        UploadConfig::resolve(layers.section()?, &log)
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = parse("").unwrap();
        assert_eq!(c.zstd_level, 1);
        assert_eq!(c.batch_max_bytes, 4 << 20);
        assert_eq!(c.policy, Policy::default());
        assert_eq!(c.opt_in_file, PathBuf::from("/tmp/x/upload/opt-in"));
        assert!(
            c.retention.is_some(),
            "[log] has a default budget, so the uploader trims"
        );
        assert_eq!(c.url, None);
    }

    #[test]
    fn every_key_parses() {
        let c = parse(
            r#"[upload]
url = "http://127.0.0.1:9/"
token = "t"
server_delivery = true
mode = "on-demand"
interval = "5m"
min_backlog_bytes = "64KiB"
max_delay = "0s"
daily_budget = "10MiB"
require_opt_in = false
opt_in_file = "/etc/seglog/opt-in"
zstd_level = 9
batch_max_bytes = "1MiB"
batch_max_records = 1000
connect_timeout = 3
timeout = "20s"
backoff_base = "100ms"
backoff_cap = "1m"
startup_delay = "0s"
dead_letter_after = 2
dead_letter_max_bytes = "1MiB"
max_attempts = 9
retention = false
"#,
        )
        .unwrap();
        assert_eq!(c.policy.mode, Mode::OnDemand);
        assert_eq!(c.policy.min_backlog_bytes, 64 << 10);
        assert_eq!(c.policy.max_delay, None);
        assert_eq!(c.policy.daily_budget, Some(10 << 20));
        assert_eq!(
            (c.zstd_level, c.batch_max_bytes, c.batch_max_records),
            (9, 1 << 20, 1000)
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.retention, None);
        assert_eq!(
            c.endpoint(&[0; 32]).unwrap(),
            format!("http://127.0.0.1:9/v1/logs/{}/batches", "00".repeat(32))
        );
    }

    #[test]
    fn the_spec_knows_every_key_and_its_defaults_are_the_built_in_ones() {
        let spec = upload_spec(Path::new("/tmp/x"));
        let keys = spec.keys.clone().unwrap();
        assert_eq!(keys.len(), config_layers::spec::fields::<RawUpload>().len());
        let (doc, unset) = spec.defaults_document();
        assert_eq!(unset, ["url", "token", "token_file", "headers"]);
        assert!(keys.iter().any(|k| k.name == "token" && k.secret));
        let c = parse(&doc).unwrap();
        assert_eq!(
            format!("{c:?}"),
            format!("{:?}", parse("").unwrap()),
            "the spec's defaults resolve to the built-in configuration"
        );
    }

    #[test]
    fn a_value_error_names_the_file_that_set_it() {
        let layers = Layers::from_sources(vec![
            (
                "a.toml".into(),
                "[upload]
zstd_level = 3
"
                .into(),
            ),
            (
                "b.toml".into(),
                "[upload]
zstd_level = 30
"
                .into(),
            ),
        ])
        .unwrap();
        let global = GlobalArgs {
            dir: Some("/tmp/x".into()),
            config: None,
        };
        let e = UploadConfig::from_layers(&layers, &global)
            .unwrap_err()
            .to_string();
        assert!(e.contains("in b.toml: [upload].zstd_level"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        for (toml, key) in [
            ("[upload]\nzstd_level = 30", "zstd_level"),
            ("[upload]\nurl = \"ftp://x\"", "url"),
            ("[upload]\nbogus = 1", "bogus"),
            ("[upload]\nmode = \"sometimes\"", "sometimes"),
            ("[upload]\nbatch_max_records = 0", "batch_max_records"),
            ("[upload]\nprotocol = \"grpc\"", "grpc"),
            ("[upload]\ncompression = \"none\"", "compression"),
            ("[upload]\ncompression = \"gzip\"", "compression"),
            (
                "[upload]\nprotocol = \"otlp\"\nheaders = { \"bad name\" = \"x\" }",
                "headers",
            ),
            (
                "[upload]\nprotocol = \"otlp\"\nheaders = { \"Content-Type\" = \"x\" }",
                "headers",
            ),
            (
                "[upload]\nprotocol = \"otlp\"\nheaders = { \"x-key\" = \"a\\nb\" }",
                "headers",
            ),
        ] {
            let e = format!("{:#}", parse(toml).unwrap_err());
            assert!(e.contains(key), "{toml}: {e}");
        }
    }

    /// gzip is there in the default build (the `gzip` feature, through `otlp`) and refused
    /// with a sentence naming the key and the way out in a build without it (the device
    /// build): `cargo test -p uploader` runs the second case, the workspace the first.
    #[test]
    fn gzip_is_accepted_where_the_build_has_it_and_refused_clearly_where_not() {
        let r = parse("[upload]\nprotocol = \"otlp\"\ncompression = \"gzip\"");
        if otlp::GZIP_AVAILABLE {
            assert_eq!(r.unwrap().compression, Compression::Gzip);
        } else {
            let e = format!("{:#}", r.unwrap_err());
            assert!(
                e.contains("compression") && e.contains("built without gzip") && e.contains("zstd"),
                "{e}"
            );
        }
    }
}
