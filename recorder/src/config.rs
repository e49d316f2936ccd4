//! Layered TOML configuration shared by every part of seglog.
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
//! deny_unknown_fields)]`, implements [`Section`] for it, and adds the section name to
//! [`SECTIONS`] (the registry that makes unknown top-level sections an error):
//!
//! ```
//! use recorder::config::{self, Section};
//! #[derive(Debug, Default, serde::Deserialize)]
//! #[serde(default, deny_unknown_fields)]
//! struct Upload { url: Option<String>, zstd_level: Option<i32> }
//! impl Section for Upload { const NAME: &'static str = "upload"; }
//!
//! let layers = config::Layers::from_sources(vec![(
//!     "inline".into(),
//!     "[upload]\nurl = \"http://127.0.0.1:1\"\n".into(),
//! )])?;
//! let up: Upload = layers.section()?;
//! assert_eq!(up.url.as_deref(), Some("http://127.0.0.1:1"));
//! # Ok::<(), anyhow::Error>(())
//! ```
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context as _};
use serde::de::DeserializeOwned;
use serde::Deserialize;

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

/// Every top-level section seglog knows. A crate that adds a section adds its name here;
/// any other top-level key in a config file is an error.
pub const SECTIONS: &[&str] = &["log", "recorder", "upload", "collector", "journal"];

/// A config section owned by one crate.
pub trait Section: DeserializeOwned + Default {
    /// The top-level table name, listed in [`SECTIONS`].
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
    pub fn from_sources(sources: Vec<(String, String)>) -> anyhow::Result<Layers> {
        let mut out = Layers::default();
        for (origin, text) in sources {
            let table: toml::Table =
                toml::from_str(&text).with_context(|| format!("{origin}: not valid TOML"))?;
            for (k, v) in &table {
                if !SECTIONS.contains(&k.as_str()) {
                    bail!(
                        "{origin}: unknown section `{k}`; known sections are {}",
                        SECTIONS.join(", ")
                    );
                }
                if !v.is_table() {
                    bail!("{origin}: `{k}` must be a table ([{k}])");
                }
            }
            merge(&mut out.merged, &table);
            out.layers.push((origin, table));
        }
        Ok(out)
    }

    /// Reads the standard files (layers 2-4) for `global`.
    pub fn load(global: &GlobalArgs) -> anyhow::Result<Layers> {
        let mut files: Vec<(PathBuf, bool)> =
            vec![(DEFAULTS_FILE.into(), false), (SYSTEM_FILE.into(), false)];
        if let Some(p) = &global.config {
            files.push((p.clone(), true));
        }
        Self::load_files(&files)
    }

    /// Reads `(path, required)` files in order; a missing optional file is skipped.
    pub fn load_files(files: &[(PathBuf, bool)]) -> anyhow::Result<Layers> {
        let mut sources = Vec::new();
        for (path, required) in files {
            match std::fs::read_to_string(path) {
                Ok(text) => sources.push((path.display().to_string(), text)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(e) => {
                    return Err(anyhow!(e))
                        .with_context(|| format!("cannot read config file {}", path.display()))
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
    pub fn section<T: Section>(&self) -> anyhow::Result<T> {
        match parse_section::<T>(&self.merged) {
            Ok(v) => Ok(v),
            Err(e) => {
                for (origin, table) in &self.layers {
                    if let Err(le) = parse_section::<T>(table) {
                        return Err(le.context(format!("in {origin}")));
                    }
                }
                Err(e)
            }
        }
    }
}

/// Parses section `T` (absent: `T::default()`) from a merged table. Errors name the
/// offending key (`[log].sync: ...`).
pub fn parse_section<T: Section>(table: &toml::Table) -> anyhow::Result<T> {
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
                return Err(anyhow!("[{}].{k}: {}", T::NAME, e.message().trim()));
            }
        }
    }
    Err(anyhow!("[{}]: {}", T::NAME, err.message().trim()))
}

/// Reads and merges layers 2-4 (see [`Layers::load`]).
pub fn load_table(global: &GlobalArgs) -> anyhow::Result<toml::Table> {
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

/// The default log directory: `/var/lib/seglog` for root, else
/// `$XDG_STATE_HOME/seglog` (or `~/.local/state/seglog`).
pub fn default_dir() -> PathBuf {
    default_dir_for(
        effective_uid(),
        std::env::var_os("XDG_STATE_HOME"),
        std::env::var_os("HOME"),
    )
}

/// [`default_dir`] for a given effective uid and environment.
pub fn default_dir_for(
    uid: Option<u32>,
    xdg_state_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    if uid == Some(0) {
        return PathBuf::from("/var/lib/seglog");
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

mod sections;
pub use sections::{Config, LogConfig, RateLimitStrategy, RawLog, RawRecorder, RecorderConfig};

#[cfg(test)]
mod tests;
