//! The `[log]` and `[recorder]` sections (layering itself is the `config-layers` crate).
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use config_layers::spec::{duration_value, size_value, string_value, DefaultValue, SectionSpec};
use config_layers::{
    default_dir, ConfigError, DurationValue, GlobalArgs, Layers, Section, SizeValue, DIR_ENV,
};

/// A value of `[section].key` that parses but is not allowed.
fn invalid(section: &'static str, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        origin: None,
        section,
        key: Some(key.to_owned()),
        message: message.into(),
    }
}

/// The top-level sections this crate reads: `[log]` (shared by every part of seglog that
/// opens the log) and `[recorder]`.
pub const SECTIONS: &[&str] = &[RawLog::NAME, RawRecorder::NAME];

/// `[log]` as written (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawLog {
    /// Log directory.
    pub dir: Option<PathBuf>,
    /// Segment file size.
    pub segment_size: Option<SizeValue>,
    /// Largest record.
    pub max_record_size: Option<SizeValue>,
    /// `never`, `always` or `interval=<ms>`.
    pub sync: Option<String>,
    /// Disk budget; 0 or negative: unlimited.
    pub max_bytes: Option<SizeValue>,
    /// Oldest data kept; 0: unlimited.
    pub max_age: Option<DurationValue>,
}
impl Section for RawLog {
    const NAME: &'static str = "log";
}

/// The resolved `[log]` section: where the log is and how segment-log opens it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Log directory (default: see [`default_dir`]).
    pub dir: PathBuf,
    /// Segment file size in bytes (default 16 MiB).
    pub segment_size: u64,
    /// Largest record in bytes, header included (default 1 MiB, or a quarter of
    /// `segment_size` when that is less: [`derived_max_record_size`]).
    pub max_record_size: u64,
    /// Durability policy (default `never`).
    pub sync: segment_log::SyncPolicy,
    /// Disk budget (default 256 MiB); `None`: unlimited.
    pub max_bytes: Option<u64>,
    /// Oldest data kept (default 30 days); `None`: unlimited.
    pub max_age: Option<Duration>,
}

/// Default segment size: 16 MiB (segment-log's default; fine-grained retention steps).
pub const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;
/// Default record size limit: 1 MiB (crash reports fit; a runaway probe does not).
pub const DEFAULT_MAX_RECORD_SIZE: u64 = 1 << 20;
/// The largest `max_record_size` a segment of `segment_size` bytes allows: a quarter of it,
/// so that the writer's context frame (itself at most `max_record_size`) and a record of the
/// largest size always fit in a fresh segment together, with room to spare (segment-log's
/// own rule, `Options::validate`, is half a segment minus headers, which this implies).
pub fn largest_record_size(segment_size: u64) -> u64 {
    segment_size / 4
}

/// `max_record_size` when no layer sets it: [`DEFAULT_MAX_RECORD_SIZE`], or less when
/// `segment_size` is too small for it (`segment_size = "64KiB"` alone gives 16 KiB).
pub fn derived_max_record_size(segment_size: u64) -> u64 {
    DEFAULT_MAX_RECORD_SIZE.min(largest_record_size(segment_size))
}

/// Default disk budget: 256 MiB (weeks of telemetry on a device, a small share of its disk).
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// Default maximum age: 30 days (data older than that is rarely worth uploading).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

impl LogConfig {
    /// Defaults, with `dir` as the log directory.
    pub fn for_dir(dir: impl Into<PathBuf>) -> LogConfig {
        LogConfig {
            dir: dir.into(),
            segment_size: DEFAULT_SEGMENT_SIZE,
            max_record_size: DEFAULT_MAX_RECORD_SIZE,
            sync: segment_log::SyncPolicy::Never,
            max_bytes: Some(DEFAULT_MAX_BYTES),
            max_age: Some(DEFAULT_MAX_AGE),
        }
    }

    /// Resolves `[log]` from a merged table: flags and `SEGLOG_DIR` override `log.dir`.
    pub fn from_table(table: &toml::Table, global: &GlobalArgs) -> Result<LogConfig, ConfigError> {
        Self::from_raw(config_layers::parse_section::<RawLog>(table)?, global)
    }

    /// Resolves an already parsed `[log]`.
    pub fn from_raw(raw: RawLog, global: &GlobalArgs) -> Result<LogConfig, ConfigError> {
        let env_dir = std::env::var_os(DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from);
        let dir = global
            .dir
            .clone()
            .or(env_dir)
            .or(raw.dir)
            .unwrap_or_else(default_dir);
        let mut c = LogConfig::for_dir(dir);
        if let Some(v) = raw.segment_size {
            c.segment_size = v
                .bytes()
                .ok_or_else(|| invalid("log", "segment_size", "must be positive"))?;
        }
        c.max_record_size = match raw.max_record_size {
            Some(v) => v
                .bytes()
                .ok_or_else(|| invalid("log", "max_record_size", "must be positive"))?,
            None => derived_max_record_size(c.segment_size),
        };
        if let Some(s) = raw.sync {
            c.sync = s.parse().map_err(|e: String| invalid("log", "sync", e))?;
        }
        if let Some(v) = raw.max_bytes {
            c.max_bytes = v.bytes().filter(|&b| b > 0);
        }
        if let Some(v) = raw.max_age {
            c.max_age = Some(v.get()).filter(|d| !d.is_zero());
        }
        c.check_sizes()?;
        Ok(c)
    }

    /// The size rules, as errors that name the key at fault.
    fn check_sizes(&self) -> Result<(), ConfigError> {
        if !self.segment_size.is_multiple_of(4096) || self.segment_size < 8192 {
            return Err(invalid(
                "log",
                "segment_size",
                format!(
                    "{} bytes must be a multiple of 4096 and at least 8192",
                    self.segment_size
                ),
            ));
        }
        let most = largest_record_size(self.segment_size);
        if self.max_record_size == 0 || self.max_record_size > most {
            return Err(invalid(
                "log",
                "max_record_size",
                format!(
                    "{} bytes must be between 1 and a quarter of segment_size ({} bytes), so at \
                     most {most}; lower max_record_size, raise segment_size, or leave \
                     max_record_size unset to derive it from segment_size",
                    self.max_record_size, self.segment_size
                ),
            ));
        }
        Ok(())
    }

    /// segment-log options for this configuration (retention runs in the writer's
    /// background thread, so probes alone keep the directory within budget).
    pub fn options(&self) -> Result<segment_log::Options, String> {
        self.check_sizes().map_err(|e| e.to_string())?;
        let retention = (self.max_bytes.is_some() || self.max_age.is_some()).then_some(
            segment_log::RetentionPolicy {
                max_bytes: self.max_bytes,
                max_age: self.max_age,
            },
        );
        Ok(segment_log::Options {
            segment_size: self.segment_size,
            max_record_size: self.max_record_size,
            sync: self.sync,
            retention,
            ..segment_log::Options::default()
        })
    }
}

/// The group a log made at `dir` is shared with: root making the system log
/// ([`config_layers::SYSTEM_LOG_DIR`]) itself, when no package made it, makes it 2770 with
/// group [`config_layers::SYSTEM_GROUP`] if that group exists. `None`: a private log (0700).
pub fn system_log_group(dir: &Path) -> Option<u32> {
    if dir != Path::new(config_layers::SYSTEM_LOG_DIR)
        || segment_log::perms::effective_uid() != 0
        || dir.exists()
    {
        return None;
    }
    segment_log::perms::group_id(config_layers::SYSTEM_GROUP)
}

/// What happens to a record over a rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitStrategy {
    /// Refuse it and count it as dropped.
    Drop,
    /// Keep it in the log, marked so the uploader holds it back until the window allows.
    Spool,
}

/// `[recorder]` as written (every key optional).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRecorder {
    /// Master switch of both limits.
    pub rate_limit_enabled: Option<bool>,
    /// Records per record window; -1 disables.
    pub record_burst_limit: Option<i64>,
    /// Record window.
    pub record_window_length: Option<DurationValue>,
    /// Payload bytes per byte window; -1 disables.
    pub byte_burst_limit: Option<SizeValue>,
    /// Byte window.
    pub byte_window_length: Option<DurationValue>,
    /// `drop` or `spool`.
    pub rate_limit_strategy: Option<RateLimitStrategy>,
    /// Static machine id file.
    pub static_machine_id_file: Option<PathBuf>,
    /// Secret the rotating machine id is derived from.
    pub machine_id_secret_file: Option<PathBuf>,
    /// Machine id rotation period.
    pub machine_id_rotation: Option<DurationValue>,
}
impl Section for RawRecorder {
    const NAME: &'static str = "recorder";
}

/// The resolved `[recorder]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecorderConfig {
    /// Whether rate limits apply at all (default true).
    pub rate_limit_enabled: bool,
    /// Most records per `record_window` across all writers (default 100000); `None`: off.
    pub record_burst_limit: Option<u64>,
    /// Window of the record limit (default 1 minute).
    pub record_window: Duration,
    /// Most payload bytes per `byte_window` (default 64 MiB); `None`: off.
    pub byte_burst_limit: Option<u64>,
    /// Window of the byte limit (default 1 minute).
    pub byte_window: Duration,
    /// What happens over a limit (default spool).
    pub strategy: RateLimitStrategy,
    /// When this file exists, its first 32 characters are the machine id (default
    /// `/etc/seglog/opt-in-static-machine-id`).
    pub static_machine_id_file: PathBuf,
    /// The secret the rotating machine id is derived from (default `/etc/machine-id`; when
    /// unreadable, a random secret kept in `<log dir>/recorder/machine-secret`).
    pub machine_id_secret_file: PathBuf,
    /// Machine id rotation period (default 3 days).
    pub machine_id_rotation: Duration,
}

impl Default for RecorderConfig {
    fn default() -> Self {
        RecorderConfig {
            rate_limit_enabled: true,
            // A probe gone wild is stopped; a busy log pipe (~1.6k lines/s) is not.
            record_burst_limit: Some(100_000),
            record_window: Duration::from_secs(60),
            byte_burst_limit: Some(64 << 20),
            byte_window: Duration::from_secs(60),
            strategy: RateLimitStrategy::Spool,
            static_machine_id_file: PathBuf::from("/etc/seglog/opt-in-static-machine-id"),
            machine_id_secret_file: PathBuf::from("/etc/machine-id"),
            machine_id_rotation: Duration::from_secs(3 * 86_400),
        }
    }
}

fn window(v: DurationValue, key: &str) -> Result<Duration, ConfigError> {
    let d = v.get();
    if d < Duration::from_secs(1) || d > Duration::from_secs(86_400) {
        return Err(invalid(
            "recorder",
            key,
            format!("{d:?} must be between 1s and 1d"),
        ));
    }
    Ok(d)
}

impl RecorderConfig {
    /// Resolves `[recorder]` from a merged table.
    pub fn from_table(table: &toml::Table) -> Result<RecorderConfig, ConfigError> {
        Self::from_raw(config_layers::parse_section::<RawRecorder>(table)?)
    }

    /// Resolves an already parsed `[recorder]`.
    pub fn from_raw(raw: RawRecorder) -> Result<RecorderConfig, ConfigError> {
        let mut c = RecorderConfig::default();
        if let Some(v) = raw.rate_limit_enabled {
            c.rate_limit_enabled = v;
        }
        if let Some(v) = raw.record_burst_limit {
            c.record_burst_limit = u64::try_from(v).ok();
        }
        if let Some(v) = raw.record_window_length {
            c.record_window = window(v, "record_window_length")?;
        }
        if let Some(v) = raw.byte_burst_limit {
            c.byte_burst_limit = v.bytes();
        }
        if let Some(v) = raw.byte_window_length {
            c.byte_window = window(v, "byte_window_length")?;
        }
        if let Some(v) = raw.rate_limit_strategy {
            c.strategy = v;
        }
        if let Some(v) = raw.static_machine_id_file {
            c.static_machine_id_file = v;
        }
        if let Some(v) = raw.machine_id_secret_file {
            c.machine_id_secret_file = v;
        }
        if let Some(v) = raw.machine_id_rotation {
            let d = v.get();
            if d < Duration::from_secs(60) {
                return Err(invalid(
                    "recorder",
                    "machine_id_rotation",
                    format!("{d:?} must be at least 1m"),
                ));
            }
            c.machine_id_rotation = d;
        }
        Ok(c)
    }

    /// No rate limits (for benches and tools that ingest a known amount).
    pub fn unlimited() -> RecorderConfig {
        RecorderConfig {
            rate_limit_enabled: false,
            ..RecorderConfig::default()
        }
    }
}

/// Everything the recorder needs: `[log]` and `[recorder]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `[log]`.
    pub log: LogConfig,
    /// `[recorder]`.
    pub recorder: RecorderConfig,
}

impl Config {
    /// Loads all layers for `global` (files, `SEGLOG_DIR`, flags).
    pub fn load(global: &GlobalArgs) -> Result<Config, ConfigError> {
        let layers = Layers::load(global)?;
        Self::from_layers(&layers, global)
    }

    /// Resolves from already loaded layers.
    pub fn from_layers(layers: &Layers, global: &GlobalArgs) -> Result<Config, ConfigError> {
        let log = LogConfig::from_raw(layers.section::<RawLog>()?, global)
            .map_err(|e| layers.attribute(e))?;
        let recorder = RecorderConfig::from_raw(layers.section::<RawRecorder>()?)
            .map_err(|e| layers.attribute(e))?;
        Ok(Config { log, recorder })
    }

    /// Built-in defaults with `dir` as the log directory (reads no files).
    pub fn for_dir(dir: impl Into<PathBuf>) -> Config {
        Config {
            log: LogConfig::for_dir(dir),
            recorder: RecorderConfig::default(),
        }
    }
}

/// `[log]` for `seglog config show` and `config check`: every key with its built-in default.
/// `merged` is the merged configuration, from which `max_record_size`'s default is derived.
pub fn log_spec(merged: &toml::Table) -> SectionSpec {
    let segment_size = config_layers::parse_section::<RawLog>(merged)
        .ok()
        .and_then(|raw| raw.segment_size)
        .and_then(SizeValue::bytes)
        .unwrap_or(DEFAULT_SEGMENT_SIZE);
    let d = LogConfig::for_dir(default_dir());
    SectionSpec::new::<RawLog>(
        vec![
            (
                "dir",
                DefaultValue::Machine {
                    value: string_value(d.dir.display().to_string()),
                    note: "for this user",
                },
            ),
            (
                "segment_size",
                DefaultValue::Value(size_value(d.segment_size)),
            ),
            (
                "max_record_size",
                DefaultValue::Derived {
                    value: size_value(derived_max_record_size(segment_size)),
                    from: "segment_size",
                },
            ),
            ("sync", DefaultValue::Value(string_value("never"))),
            (
                "max_bytes",
                DefaultValue::Value(size_value(d.max_bytes.unwrap_or(0))),
            ),
            (
                "max_age",
                DefaultValue::Value(duration_value(d.max_age.unwrap_or_default())),
            ),
        ],
        &[],
    )
}

/// `[recorder]` for `seglog config show` and `config check`.
pub fn recorder_spec() -> SectionSpec {
    let d = RecorderConfig::default();
    let limit = |l: Option<u64>| l.map_or(toml::Value::Integer(-1), size_value);
    let v = DefaultValue::Value;
    SectionSpec::new::<RawRecorder>(
        vec![
            (
                "rate_limit_enabled",
                v(toml::Value::Boolean(d.rate_limit_enabled)),
            ),
            (
                "record_burst_limit",
                v(toml::Value::Integer(
                    d.record_burst_limit
                        .and_then(|l| i64::try_from(l).ok())
                        .unwrap_or(-1),
                )),
            ),
            ("record_window_length", v(duration_value(d.record_window))),
            ("byte_burst_limit", v(limit(d.byte_burst_limit))),
            ("byte_window_length", v(duration_value(d.byte_window))),
            (
                "rate_limit_strategy",
                v(string_value(match d.strategy {
                    RateLimitStrategy::Drop => "drop",
                    RateLimitStrategy::Spool => "spool",
                })),
            ),
            (
                "static_machine_id_file",
                v(string_value(d.static_machine_id_file.display().to_string())),
            ),
            (
                "machine_id_secret_file",
                v(string_value(d.machine_id_secret_file.display().to_string())),
            ),
            (
                "machine_id_rotation",
                v(duration_value(d.machine_id_rotation)),
            ),
        ],
        &[],
    )
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
