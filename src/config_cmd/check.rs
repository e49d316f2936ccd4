//! `seglog config check`: every file on its own with every section's parser, then the merged
//! result with each section's own resolution (ranges, keys that must go together, token
//! files).
use std::io::ErrorKind;
use std::process::ExitCode;

use config_layers::spec::ParseFn;
use config_layers::{ConfigError, GlobalArgs, Layers};
use serde_json::json;

use super::{overrides, parsers, read_files, with_origin, CheckArgs, FileState, Files, Override};

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    /// The file at fault, when known.
    pub file: Option<String>,
    /// The section.
    pub section: Option<String>,
    /// The key.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Problem {
    /// A file that could not be parsed as a whole.
    pub fn file(origin: &str, e: &ConfigError) -> Problem {
        let message = match e {
            // The parser's report starts "TOML parse error at line L, column C".
            ConfigError::Toml { source, .. } => {
                let full = source.to_string();
                let at = full.lines().next().unwrap_or_default().to_owned();
                format!("not valid TOML: {at}: {}", source.message().trim())
            }
            ConfigError::NotATable { key, .. } => format!("`{key}` must be a table ([{key}])"),
            other => other.to_string(),
        };
        Problem {
            file: Some(origin.to_owned()),
            section: None,
            key: None,
            message,
        }
    }

    fn from_config(e: ConfigError) -> Problem {
        match e {
            ConfigError::Value {
                origin,
                section,
                key,
                message,
            } => Problem {
                file: origin,
                section: Some(section.to_owned()),
                key,
                message,
            },
            other => Problem {
                file: None,
                section: None,
                key: None,
                message: other.to_string(),
            },
        }
    }

    fn in_key(section: &str, key: &str, message: String) -> Problem {
        Problem {
            file: None,
            section: Some(section.to_owned()),
            key: Some(key.to_owned()),
            message,
        }
    }

    /// `FILE: [section].key: message`.
    pub fn line(&self) -> String {
        let mut s = String::new();
        if let Some(f) = &self.file {
            s.push_str(f);
            s.push_str(": ");
        }
        if let Some(sec) = &self.section {
            s.push_str(&format!("[{sec}]"));
            if let Some(k) = &self.key {
                s.push('.');
                s.push_str(k);
            }
            s.push_str(": ");
        }
        s.push_str(&self.message);
        s
    }

    fn json(&self) -> serde_json::Value {
        json!({"file": self.file, "section": self.section, "key": self.key,
               "message": self.message})
    }
}

/// What `config check` found.
pub(super) struct Report {
    /// (path, layer, read).
    pub files: Vec<(String, &'static str, FileState)>,
    pub overrides: Vec<Override>,
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
}

pub(super) fn run(args: &CheckArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let r = check(global);
    let code = if r.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    };
    if args.json {
        let v = json!({
            "ok": r.problems.is_empty(),
            "files": files_json(&r.files),
            "overrides": overrides_json(&r.overrides),
            "problems": r.problems.iter().map(Problem::json).collect::<Vec<_>>(),
            "notes": r.notes,
        });
        println!("{v:#}");
        return Ok(code);
    }
    for (path, layer, state) in &r.files {
        match state {
            FileState::Read => println!("read {path} ({layer})"),
            other => println!("{}: {path} ({layer})", other.as_str()),
        }
    }
    for o in &r.overrides {
        println!(
            "{} sets [{}] {} = {:?}",
            o.origin, o.section, o.key, o.value
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
    if r.problems.is_empty() {
        println!("ok: every section of every file is valid");
    } else {
        for p in &r.problems {
            eprintln!("error: {}", p.line());
        }
        eprintln!(
            "seglog config check: {} problem{} found",
            r.problems.len(),
            if r.problems.len() == 1 { "" } else { "s" }
        );
    }
    Ok(code)
}

pub(super) fn files_json(files: &[(String, &'static str, FileState)]) -> serde_json::Value {
    files
        .iter()
        .map(|(p, l, s)| {
            json!({"path": p, "layer": l, "read": *s == FileState::Read, "state": s.as_str()})
        })
        .collect()
}

pub(super) fn overrides_json(o: &[Override]) -> serde_json::Value {
    o.iter()
        .map(|o| {
            json!({"section": o.section, "key": o.key, "value": o.value,
                   "source": o.source, "origin": o.origin})
        })
        .collect()
}

/// Checks the configuration for `global`.
pub(super) fn check(global: &GlobalArgs) -> Report {
    let Files {
        list,
        layers,
        mut problems,
    } = read_files(global);
    let parsers = parsers();
    let names: Vec<&str> = parsers.iter().map(|(n, _)| *n).collect();
    let mut notes = Vec::new();
    for (origin, table) in layers.iter() {
        for (name, value) in table {
            let Some((_, parse)) = parsers.iter().find(|(n, _)| n == name) else {
                problems.push(Problem {
                    file: Some(origin.to_owned()),
                    section: Some(name.clone()),
                    key: None,
                    message: format!("unknown section; known sections are {}", names.join(", ")),
                });
                continue;
            };
            let Some(t) = value.as_table() else { continue };
            match parse {
                Some(parse) => problems.extend(section_problems(origin, name, t, *parse)),
                None if !t.is_empty() => notes.push(format!(
                    "{origin}: the keys of [{name}] are not checked: this seglog was built \
                     without the collector"
                )),
                None => {}
            }
        }
    }
    // Values are checked on the merge only when every file parses: a value check on a
    // broken file would report the same typo twice.
    if problems.is_empty() {
        problems.extend(resolve_problems(&layers, global, &mut notes));
    }
    Report {
        files: list,
        overrides: overrides(global),
        problems,
        notes,
    }
}

/// Every bad key of `[name]` in one file (the parser stops at the first; here each key is
/// parsed on its own, so every typo is listed).
fn section_problems(origin: &str, name: &str, t: &toml::Table, parse: ParseFn) -> Vec<Problem> {
    let wrap = |section: toml::Table| {
        let mut doc = toml::Table::new();
        doc.insert(name.to_owned(), toml::Value::Table(section));
        doc
    };
    let mut out: Vec<Problem> = t
        .iter()
        .filter_map(|(k, v)| {
            let mut one = toml::Table::new();
            one.insert(k.clone(), v.clone());
            parse(&wrap(one)).err()
        })
        .map(|e| Problem::from_config(with_origin(e, origin)))
        .collect();
    if out.is_empty() {
        if let Err(e) = parse(&wrap(t.clone())) {
            out.push(Problem::from_config(with_origin(e, origin)));
        }
    }
    out
}

/// Names the file of a problem found on the merged configuration: the file that last set
/// its key, else the first file after which the configuration no longer resolves.
fn blame(layers: &Layers, mut p: Problem, resolves: impl Fn(&Layers) -> bool) -> Problem {
    if p.file.is_some() {
        return p;
    }
    if let (Some(s), Some(k)) = (&p.section, &p.key) {
        if let Some(o) = layers.set_by(s, k) {
            p.file = Some(o.to_owned());
            return p;
        }
    }
    if let Some(n) = (0..layers.len())
        .rev()
        .find(|&n| resolves(&layers.prefix(n)))
    {
        p.file = layers.iter().nth(n).map(|(o, _)| o.to_owned());
    }
    p
}

/// A token file this user cannot read is a note, not a problem: the uploader's (or the
/// collector's) user may well be able to.
fn unreadable_token_file(
    layers: &Layers,
    section: &str,
    path: &std::path::Path,
    source: &std::io::Error,
    notes: &mut Vec<String>,
) -> Option<Problem> {
    let file = layers.set_by(section, "token_file").map(str::to_owned);
    if source.kind() == ErrorKind::PermissionDenied {
        notes.push(format!(
            "{}[{section}].token_file: {} is not readable by this user ({source}); the \
             user the {} runs as must be able to read it",
            file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default(),
            path.display(),
            if section == "upload" {
                "uploader"
            } else {
                "collector"
            }
        ));
        return None;
    }
    Some(Problem {
        file,
        ..Problem::in_key(
            section,
            "token_file",
            format!("cannot read {}: {source}", path.display()),
        )
    })
}

/// Each section's own resolution on the merged configuration.
fn resolve_problems(layers: &Layers, global: &GlobalArgs, notes: &mut Vec<String>) -> Vec<Problem> {
    use recorder::config::Config;
    use uploader::config::UploadConfig;
    let mut out = Vec::new();
    if let Err(e) = Config::from_layers(layers, global) {
        out.push(blame(layers, Problem::from_config(e), |l| {
            Config::from_layers(l, global).is_ok()
        }));
    }
    match UploadConfig::from_layers(layers, global) {
        Ok(_) => {}
        // A [log] problem, reported above.
        Err(ConfigError::Value { section, .. }) if section != "upload" => {}
        Err(ConfigError::Read { path, source }) => {
            out.extend(unreadable_token_file(
                layers, "upload", &path, &source, notes,
            ));
        }
        Err(e) => out.push(blame(layers, Problem::from_config(e), |l| {
            UploadConfig::from_layers(l, global).is_ok()
        })),
    }
    #[cfg(feature = "collector")]
    out.extend(collector_problem(layers, notes));
    out
}

#[cfg(feature = "collector")]
fn collector_problem(layers: &Layers, notes: &mut Vec<String>) -> Option<Problem> {
    use collector::config::{default_data_dir, CollectorSection};
    use collector::ConfigError as E;
    let resolve = |l: &Layers| -> Result<(), E> {
        let s: CollectorSection = l.section()?;
        s.resolve(&default_data_dir()).map(drop)
    };
    let p = match resolve(layers).err()? {
        E::File(e) => Problem::from_config(e),
        E::Listen { value, source } => Problem::in_key(
            "collector",
            "listen",
            format!("{value:?} is not an address ({source}); use e.g. \"127.0.0.1:8780\""),
        ),
        E::TokenFile { path, source } => {
            return unreadable_token_file(layers, "collector", &path, &source, notes)
        }
        E::Invalid(message) => {
            let keys = config_layers::spec::fields::<CollectorSection>();
            let key = first_key_named(&message, keys);
            Problem {
                file: None,
                section: Some("collector".to_owned()),
                key: key.map(str::to_owned),
                message,
            }
        }
        other => Problem {
            file: None,
            section: Some("collector".to_owned()),
            key: None,
            message: other.to_string(),
        },
    };
    Some(blame(layers, p, |l| resolve(l).is_ok()))
}

/// The key of `keys` that `message` names first (as a whole word).
#[cfg_attr(not(feature = "collector"), allow(dead_code))]
pub(super) fn first_key_named<'k>(message: &str, keys: &[&'k str]) -> Option<&'k str> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    keys.iter()
        .filter_map(|k| {
            message
                .match_indices(k)
                .find(|(at, _)| {
                    let before = message[..*at].chars().next_back();
                    let after = message[at + k.len()..].chars().next();
                    !before.is_some_and(word) && !after.is_some_and(word)
                })
                .map(|(at, _)| (at, *k))
        })
        .min()
        .map(|(_, k)| k)
}
