//! Layered TOML configuration shared by every part of seglog. This crate knows how layers
//! are found, parsed, merged and reported; it knows no section: each crate defines its own
//! and the `seglog` binary passes the list of all of them to [`Layers::check_sections`].
//!
//! # Layers (later wins)
//! 1. built-in defaults,
//! 2. `/usr/share/defaults/seglog/seglog.toml` (the distribution's defaults),
//! 3. `/etc/seglog/seglog.toml` (the administrator's),
//! 4. `--config FILE`,
//! 5. the environment (`SEGLOG_DIR` sets `log.dir`),
//! 6. flags (`--dir`).
//!
//! Tables merge key by key, so a layer only states what it changes. A missing layer-2/3 file
//! is skipped; a missing `--config` file is an error. Unknown top-level sections and unknown
//! keys are errors that name the key and the file.
//!
//! # Sections
//! Each crate owns its section: it defines a struct with `#[serde(default,
//! deny_unknown_fields)]`, implements [`Section`] for it, and exports the section name; the
//! binary checks every file's top-level tables against the names of all crates
//! ([`Layers::check_sections`]), so an unknown section is an error that names the file.
//! A crate also describes its keys and their defaults with a [`spec::SectionSpec`], which
//! `seglog config check` runs on each layer on its own and `seglog config show` prints:
//!
//! ```
//! use config_layers::{self as config, Section};
//! #[derive(Debug, Default, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Upload { url: Option<String>, zstd_level: Option<i32> }
//! impl Section for Upload { const NAME: &'static str = "upload"; }
//!
//! let layers = config::Layers::from_sources(vec![(
//!     "inline".into(),
//!     "[upload]\nurl = \"http://127.0.0.1:1\"\n".into(),
//! )])?;
//! layers.check_sections(&["log", "upload"])?;
//! let up: Upload = layers.section()?;
//! assert_eq!(up.url.as_deref(), Some("http://127.0.0.1:1"));
//! # Ok::<(), config::ConfigError>(())
//! ```
#![forbid(unsafe_code)]
pub mod spec;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;

/// What went wrong reading the configuration. Every variant names the file (or other
/// origin) it comes from, and the key where there is one.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file exists but cannot be read (or a required one is missing).
    #[error("cannot read config file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not TOML.
    #[error("{origin}: not valid TOML")]
    Toml {
        /// The file (or other origin).
        origin: String,
        /// The parser's report (line and column).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A top-level key that is not a table.
    #[error("{origin}: `{key}` must be a table ([{key}])")]
    NotATable {
        /// The file.
        origin: String,
        /// The key.
        key: String,
    },
    /// A top-level table no part of seglog reads.
    #[error("{origin}: unknown section `{name}`; known sections are {known}")]
    UnknownSection {
        /// The file.
        origin: String,
        /// The section as written.
        name: String,
        /// The known sections, comma-separated.
        known: String,
    },
    /// A key of a section has a wrong type or value, or is unknown.
    #[error("{}[{section}]{}: {message}", origin.as_ref().map(|o| format!("in {o}: ")).unwrap_or_default(), key.as_ref().map(|k| format!(".{k}")).unwrap_or_default())]
    Value {
        /// The file that introduced the bad value, when known.
        origin: Option<String>,
        /// The section.
        section: &'static str,
        /// The key, when known.
        key: Option<String>,
        /// What is wrong.
        message: String,
    },
}

/// Flags every subcommand accepts.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GlobalArgs {
    /// Log directory (overrides the config file and SEGLOG_DIR).
    #[arg(long, global = true, env = "SEGLOG_DIR")]
    pub dir: Option<PathBuf>,
    /// Extra configuration file, applied after /usr/share/defaults/seglog/seglog.toml and
    /// /etc/seglog/seglog.toml.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

/// The distribution's defaults file (layer 2).
pub const DEFAULTS_FILE: &str = "/usr/share/defaults/seglog/seglog.toml";
/// The administrator's file (layer 3).
pub const SYSTEM_FILE: &str = "/etc/seglog/seglog.toml";
/// Environment variable that sets `log.dir` (layer 5).
pub const DIR_ENV: &str = "SEGLOG_DIR";

/// A config section owned by one crate.
pub trait Section: DeserializeOwned + Default {
    /// The top-level table name.
    const NAME: &'static str;
}

/// The config files that were read, in order, and their merge.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    layers: Vec<(String, toml::Table)>,
    merged: toml::Table,
}

fn merge(into: &mut toml::Table, from: &toml::Table) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

impl Layers {
    /// Parses and merges `(origin, text)` pairs, later overriding earlier. `origin` names
    /// the source in errors (usually the path).
    pub fn from_sources(sources: Vec<(String, String)>) -> Result<Layers, ConfigError> {
        let mut out = Layers::default();
        for (origin, text) in sources {
            let table: toml::Table = match toml::from_str(&text) {
                Ok(t) => t,
                Err(e) => {
                    return Err(ConfigError::Toml {
                        origin,
                        source: Box::new(e),
                    })
                }
            };
            if let Some((k, _)) = table.iter().find(|(_, v)| !v.is_table()) {
                return Err(ConfigError::NotATable {
                    origin,
                    key: k.clone(),
                });
            }
            merge(&mut out.merged, &table);
            out.layers.push((origin, table));
        }
        Ok(out)
    }

    /// Fails on the first top-level table, in any layer, that is not one of `known` (the
    /// sections of every part of seglog; the binary passes them all).
    pub fn check_sections(&self, known: &[&str]) -> Result<(), ConfigError> {
        for (origin, table) in &self.layers {
            if let Some(k) = table.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(ConfigError::UnknownSection {
                    origin: origin.clone(),
                    name: k.clone(),
                    known: known.join(", "),
                });
            }
        }
        Ok(())
    }

    /// The origins (file paths) of the layers that were read, in order.
    pub fn origins(&self) -> impl Iterator<Item = &str> {
        self.layers.iter().map(|(o, _)| o.as_str())
    }

    /// Reads the standard files (layers 2-4) for `global`.
    pub fn load(global: &GlobalArgs) -> Result<Layers, ConfigError> {
        Self::load_files(&files(global))
    }

    /// Each layer's origin and table, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &toml::Table)> {
        self.layers.iter().map(|(o, t)| (o.as_str(), t))
    }

    /// The origin of the last layer that sets `[section].key`.
    pub fn set_by(&self, section: &str, key: &str) -> Option<&str> {
        self.layers
            .iter()
            .rev()
            .find(|(_, t)| {
                t.get(section)
                    .and_then(toml::Value::as_table)
                    .is_some_and(|s| s.contains_key(key))
            })
            .map(|(o, _)| o.as_str())
    }

    /// Names the file in a [`ConfigError::Value`] that names a key but no file: the last
    /// layer that sets that key (a resolved section's range checks cannot know it).
    pub fn attribute(&self, e: ConfigError) -> ConfigError {
        match e {
            ConfigError::Value {
                origin: None,
                section,
                key: Some(key),
                message,
            } => ConfigError::Value {
                origin: self.set_by(section, &key).map(str::to_owned),
                section,
                key: Some(key),
                message,
            },
            other => other,
        }
    }

    /// The first `n` layers alone.
    pub fn prefix(&self, n: usize) -> Layers {
        let mut out = Layers::default();
        for (origin, table) in self.layers.iter().take(n) {
            merge(&mut out.merged, table);
            out.layers.push((origin.clone(), table.clone()));
        }
        out
    }

    /// How many layers were read.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether no file was read.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Reads `(path, required)` files in order; a missing optional file is skipped.
    pub fn load_files(files: &[(PathBuf, bool)]) -> Result<Layers, ConfigError> {
        let mut sources = Vec::new();
        for (path, required) in files {
            match std::fs::read_to_string(path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Self::from_sources(sources)
    }

    /// The merged table.
    pub fn merged(&self) -> &toml::Table {
        &self.merged
    }

    /// Parses section `T` from the merged table. On an error (an unknown key, a wrong
    /// type), names the file that introduced it.
    pub fn section<T: Section>(&self) -> Result<T, ConfigError> {
        match parse_section::<T>(&self.merged) {
            Ok(v) => Ok(v),
            Err(e) => {
                for (origin, table) in &self.layers {
                    if let Err(ConfigError::Value {
                        section,
                        key,
                        message,
                        ..
                    }) = parse_section::<T>(table)
                    {
                        return Err(ConfigError::Value {
                            origin: Some(origin.clone()),
                            section,
                            key,
                            message,
                        });
                    }
                }
                Err(e)
            }
        }
    }
}

/// Parses section `T` (absent: `T::default()`) from a merged table. Errors name the
/// offending key (`[log].sync: ...`).
pub fn parse_section<T: Section>(table: &toml::Table) -> Result<T, ConfigError> {
    let Some(v) = table.get(T::NAME) else {
        return Ok(T::default());
    };
    let err = match T::deserialize(v.clone()) {
        Ok(t) => return Ok(t),
        Err(e) => e,
    };
    // Find the key: with every key optional, a table of just that key fails alone.
    if let Some(t) = v.as_table() {
        for (k, kv) in t {
            let mut one = toml::Table::new();
            one.insert(k.clone(), kv.clone());
            if let Err(e) = T::deserialize(toml::Value::Table(one)) {
                return Err(ConfigError::Value {
                    origin: None,
                    section: T::NAME,
                    key: Some(k.clone()),
                    message: e.message().trim().to_string(),
                });
            }
        }
    }
    Err(ConfigError::Value {
        origin: None,
        section: T::NAME,
        key: None,
        message: err.message().trim().to_string(),
    })
}

/// The files of layers 2-4 for `global`, in order, each with whether it must exist (only
/// `--config FILE` must).
pub fn files(global: &GlobalArgs) -> Vec<(PathBuf, bool)> {
    let mut files: Vec<(PathBuf, bool)> =
        vec![(DEFAULTS_FILE.into(), false), (SYSTEM_FILE.into(), false)];
    if let Some(p) = &global.config {
        files.push((p.clone(), true));
    }
    files
}

/// Reads and merges layers 2-4 (see [`Layers::load`]).
pub fn load_table(global: &GlobalArgs) -> Result<toml::Table, ConfigError> {
    Ok(Layers::load(global)?.merged)
}

/// A size: an integer number of bytes or a string such as `"16MiB"`, `"500KB"`, `"1G"`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: use bytes or e.g. \"16MiB\""))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use B, KiB, MiB, GiB, TiB (or KB, MB, GB, TB)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// A size as written in TOML: integer bytes (negative means "disabled" where a key allows
/// it) or a string with a unit such as `"16MiB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeValue(i64);

impl SizeValue {
    /// `None` when negative (disabled).
    pub fn bytes(self) -> Option<u64> {
        u64::try_from(self.0).ok()
    }
}

impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a size: bytes as an integer, or a string like \"16MiB\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<SizeValue, E> {
                Ok(SizeValue(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                i64::try_from(v)
                    .map(SizeValue)
                    .map_err(|_| E::custom("size is too large"))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                let b = parse_size(v).map_err(E::custom)?;
                i64::try_from(b)
                    .map(SizeValue)
                    .map_err(|_| E::custom("size is too large"))
            }
        }
        d.deserialize_any(V)
    }
}

/// A duration as written in TOML: a humantime string (`"15m"`, `"3d"`, `"250ms"`) or an
/// integer number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationValue(Duration);

impl DurationValue {
    /// The duration.
    pub fn get(self) -> Duration {
        self.0
    }
}

impl<'de> Deserialize<'de> for DurationValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = DurationValue;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a duration: seconds as an integer, or a string like \"15m\" or \"3d\"")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<DurationValue, E> {
                u64::try_from(v)
                    .map(|s| DurationValue(Duration::from_secs(s)))
                    .map_err(|_| E::custom("a duration cannot be negative"))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<DurationValue, E> {
                Ok(DurationValue(Duration::from_secs(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DurationValue, E> {
                humantime::parse_duration(v)
                    .map(DurationValue)
                    .map_err(|e| {
                        E::custom(format!(
                            "invalid duration {v:?}: {e}; use e.g. \"15m\", \"3d\""
                        ))
                    })
            }
        }
        d.deserialize_any(V)
    }
}

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// The system log directory. A system install makes it mode 2770, group [`SYSTEM_GROUP`]:
/// a shared log every member of the group can write (see "System mode" in the README).
pub const SYSTEM_LOG_DIR: &str = "/var/lib/seglog";
/// The group whose members may write the system log.
pub const SYSTEM_GROUP: &str = "seglog";

/// The default log directory: the system log [`SYSTEM_LOG_DIR`] for root, and for every
/// other user too when it exists (a system install: a user outside its group is then told
/// to join the group or to pick a per-user log with `--dir` or `SEGLOG_DIR`); else the
/// per-user `$XDG_STATE_HOME/seglog` (or `~/.local/state/seglog`).
pub fn default_dir() -> PathBuf {
    default_dir_for(
        effective_uid(),
        Path::new(SYSTEM_LOG_DIR).exists(),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// The default directory of a user's own state, whether or not there is a system log:
/// [`SYSTEM_LOG_DIR`] for root, else the per-user directory (the collector keeps its data
/// next to it).
pub fn own_default_dir() -> PathBuf {
    default_dir_for(
        effective_uid(),
        false,
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_dir`] for a given effective uid, system install and environment.
pub fn default_dir_for(
    uid: Option<u32>,
    system_log_exists: bool,
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if uid == Some(0) || system_log_exists {
        return PathBuf::from(SYSTEM_LOG_DIR);
    }
    // The XDG spec ignores relative paths.
    if let Some(x) = xdg_state_home.filter(|x| Path::new(x).is_absolute()) {
        return PathBuf::from(x).join("seglog");
    }
    match home.filter(|h| !h.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/seglog"),
        None => PathBuf::from("/tmp").join(format!("seglog-{}", uid.unwrap_or(0))),
    }
}

#[cfg(test)]
mod tests;
