//! `seglog config check` and `seglog config show`, and the check of every section of every
//! configuration file that runs before every other command.
//!
//! Each crate describes its own section (`recorder::config::log_spec`, ...); this module puts
//! them side by side, because only the binary knows every part of seglog.
use std::path::PathBuf;
use std::process::ExitCode;

use config_layers::spec::{parse_only, ParseFn, SectionSpec};
use config_layers::{ConfigError, GlobalArgs, Layers, Section, DIR_ENV};

mod check;
mod show;
#[cfg(test)]
mod tests;

/// Check the configuration files or show the configuration in effect.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate every section of every configuration file (exit 2 on a problem).
    ///
    /// Reads the distribution's defaults (/usr/share/defaults/seglog/seglog.toml), the
    /// administrator's file (/etc/seglog/seglog.toml) and --config FILE, each on its own with
    /// the parser of each section ([log], [recorder], [upload], [collector]), then resolves
    /// the merged result with SEGLOG_DIR and --dir (ranges, keys that go together, token
    /// files). Prints the files read; each problem is printed as FILE: [section].key: what is
    /// wrong. A build without the collector says that it cannot check [collector] keys.
    ///
    /// Exit codes: 0 valid, 2 a problem (listed on stderr, or in the JSON).
    Check(CheckArgs),
    /// Print the configuration in effect and where each value came from.
    ///
    /// Every key of every section, as commented TOML: its value, then where it came from
    /// (default, derived from another key, from FILE, from SEGLOG_DIR, from --dir). Keys with
    /// no value and secrets (tokens, shown as "(set)", never in clear) are comments, so the
    /// output is itself a valid configuration file.
    Show(ShowArgs),
}

/// `seglog config check` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Print the result as one JSON object: {"ok", "files", "overrides", "problems",
    /// "notes"}.
    #[arg(long)]
    pub json: bool,
}

/// `seglog config show` flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// Print one JSON object: {"files", "overrides", "sections": {section: {key: {"value",
    /// "source", "origin", "default"}}}}.
    #[arg(long)]
    pub json: bool,
}

/// Runs `seglog config ...`.
pub fn run(cmd: ConfigCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        ConfigCommand::Check(a) => check::run(&a, global),
        ConfigCommand::Show(a) => show::run(&a, global),
    }
}

/// Every top-level section of every part of seglog and its strict parser. The device build
/// has no collector, but a config file shared with a server may still carry its section: it
/// is known, and its keys are not checked.
fn parsers() -> [(&'static str, Option<ParseFn>); 4] {
    use recorder::config::{RawLog, RawRecorder};
    use uploader::config::RawUpload;
    #[cfg(feature = "collector")]
    let collector: (&str, Option<ParseFn>) = (
        collector::CollectorSection::NAME,
        Some(parse_only::<collector::CollectorSection>),
    );
    #[cfg(not(feature = "collector"))]
    let collector: (&str, Option<ParseFn>) = (COLLECTOR, None);
    [
        (RawLog::NAME, Some(parse_only::<RawLog>)),
        (RawRecorder::NAME, Some(parse_only::<RawRecorder>)),
        (RawUpload::NAME, Some(parse_only::<RawUpload>)),
        collector,
    ]
}

/// The collector's section name, known to the device build too.
#[cfg_attr(feature = "collector", allow(dead_code))]
const COLLECTOR: &str = "collector";

/// What runs before every command but `config check`: an unknown section, or an unknown key
/// or a wrong type in any known section of any file, is an error naming the file, the
/// section and the key. No I/O and no value checks (each command resolves the sections it
/// reads); on a config file of every section it costs microseconds.
pub fn check_layers(layers: &Layers) -> anyhow::Result<()> {
    let parsers = parsers();
    let names: Vec<&str> = parsers.iter().map(|(n, _)| *n).collect();
    layers.check_sections(&names)?;
    for (origin, table) in layers.iter() {
        for (name, parse) in &parsers {
            if let (Some(parse), true) = (parse, table.contains_key(*name)) {
                parse(table).map_err(|e| {
                    anyhow::anyhow!(
                        "{}; `seglog config check` lists every problem",
                        with_origin(e, origin)
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// `e` with `origin` as its file when it names none.
fn with_origin(e: ConfigError, origin: &str) -> ConfigError {
    match e {
        ConfigError::Value {
            origin: None,
            section,
            key,
            message,
        } => ConfigError::Value {
            origin: Some(origin.to_owned()),
            section,
            key,
            message,
        },
        other => other,
    }
}

/// Every section with its keys and defaults, in the order `config show` prints them.
fn specs(layers: &Layers, global: &GlobalArgs) -> Vec<SectionSpec> {
    let dir = effective_dir(layers, global);
    let mut out = vec![
        recorder::config::log_spec(layers.merged()),
        recorder::config::recorder_spec(),
        uploader::config::upload_spec(&dir),
    ];
    #[cfg(feature = "collector")]
    out.push(collector::config::collector_spec());
    #[cfg(not(feature = "collector"))]
    out.push(SectionSpec::unknown_keys(COLLECTOR));
    out
}

/// A value set by the environment or a flag rather than a file.
#[derive(Debug, Clone)]
struct Override {
    section: &'static str,
    key: &'static str,
    value: String,
    /// `env` or `flag`.
    source: &'static str,
    /// The variable or the flag.
    origin: &'static str,
}

/// The environment variables and flags that set keys (layers 5 and 6).
fn overrides(global: &GlobalArgs) -> Vec<Override> {
    let mut out = Vec::new();
    if let Some(d) = &global.dir {
        // clap fills `dir` from SEGLOG_DIR too; the flag wins when both are given.
        let flag =
            std::env::args_os().any(|a| a == "--dir" || a.to_string_lossy().starts_with("--dir="));
        let (source, origin) = if flag {
            ("flag", "--dir")
        } else {
            ("env", DIR_ENV)
        };
        out.push(Override {
            section: "log",
            key: "dir",
            value: d.display().to_string(),
            source,
            origin,
        });
    }
    // `upload --url` is a flag of the upload commands only; the variable applies everywhere.
    if let Ok(url) = std::env::var(uploader::config::URL_ENV) {
        if !url.trim().is_empty() {
            out.push(Override {
                section: "upload",
                key: "url",
                value: url.trim().to_owned(),
                source: "env",
                origin: uploader::config::URL_ENV,
            });
        }
    }
    out
}

/// The log directory in effect, without checking the rest of `[log]`.
fn effective_dir(layers: &Layers, global: &GlobalArgs) -> PathBuf {
    let env = std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    global
        .dir
        .clone()
        .or(env)
        .or_else(|| {
            config_layers::parse_section::<recorder::config::RawLog>(layers.merged())
                .ok()
                .and_then(|l| l.dir)
        })
        .unwrap_or_else(config_layers::default_dir)
}

/// Which layer a file is.
fn layer_name(path: &std::path::Path, global: &GlobalArgs) -> &'static str {
    if global.config.as_deref() == Some(path) {
        "--config"
    } else if path == std::path::Path::new(config_layers::DEFAULTS_FILE) {
        "defaults"
    } else {
        "system"
    }
}

/// Whether a config file was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileState {
    Read,
    /// Skipped: an optional layer that does not exist.
    Absent,
    /// Exists (or is required) but cannot be read: a problem.
    Unreadable,
}

impl FileState {
    fn as_str(self) -> &'static str {
        match self {
            FileState::Read => "read",
            FileState::Absent => "not present",
            FileState::Unreadable => "cannot be read",
        }
    }
}

/// The files of layers 2-4, each with whether it was there; files that exist but cannot be
/// read or parsed are problems.
struct Files {
    /// (path, layer name, state).
    list: Vec<(String, &'static str, FileState)>,
    /// The files that parsed.
    layers: Layers,
    problems: Vec<check::Problem>,
}

fn read_files(global: &GlobalArgs) -> Files {
    let mut list = Vec::new();
    let mut sources = Vec::new();
    let mut problems = Vec::new();
    for (path, required) in config_layers::files(global) {
        let shown = path.display().to_string();
        let layer = layer_name(&path, global);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                match Layers::from_sources(vec![(shown.clone(), text.clone())]) {
                    Ok(_) => sources.push((shown.clone(), text)),
                    Err(e) => problems.push(check::Problem::file(&shown, &e)),
                }
                list.push((shown, layer, FileState::Read));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                list.push((shown, layer, FileState::Absent));
            }
            Err(e) => {
                problems.push(check::Problem {
                    file: Some(shown.clone()),
                    section: None,
                    key: None,
                    message: format!("cannot read it: {e}"),
                });
                list.push((shown, layer, FileState::Unreadable));
            }
        }
    }
    // Each source parsed on its own above, so together they parse too.
    let layers = Layers::from_sources(sources).unwrap_or_default();
    Files {
        list,
        layers,
        problems,
    }
}
