//! `seglog config show`: every key of every section with its value and where it came from.
use std::process::ExitCode;

use config_layers::spec::{DefaultValue, SectionSpec};
use config_layers::{GlobalArgs, Layers};
use serde_json::json;

use super::check::{files_json, overrides_json};
use super::{overrides, read_files, specs, FileState, Files, Override, ShowArgs};

/// Shown instead of a secret's value.
pub(super) const SECRET: &str = "(set)";

/// One key as it is in effect.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Entry {
    pub key: String,
    /// `None`: not set (the feature is off).
    pub value: Option<toml::Value>,
    /// `default`, `derived`, `file`, `env` or `flag`.
    pub source: &'static str,
    /// The file, variable, flag or key it came from; for a machine-dependent default, on
    /// what it depends.
    pub origin: Option<String>,
    /// The built-in default (`None`: none).
    pub default: Option<toml::Value>,
}

/// One section as it is in effect.
#[derive(Debug, Clone)]
pub(super) struct Shown {
    pub name: &'static str,
    pub entries: Vec<Entry>,
    /// Said above the section (keys this build does not know).
    pub note: Option<&'static str>,
}

pub(super) fn run(args: &ShowArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let Files {
        list,
        layers,
        problems,
    } = read_files(global);
    if let Some(p) = problems.first() {
        anyhow::bail!("{}; `seglog config check` lists every problem", p.line());
    }
    let ovr = overrides(global);
    let shown = effective(&layers, &specs(&layers, global), &ovr);
    if args.json {
        let sections: serde_json::Map<String, serde_json::Value> = shown
            .iter()
            .map(|s| {
                let keys: serde_json::Map<String, serde_json::Value> = s
                    .entries
                    .iter()
                    .map(|e| {
                        (
                            e.key.clone(),
                            json!({"value": e.value, "source": e.source, "origin": e.origin,
                                   "default": e.default}),
                        )
                    })
                    .collect();
                (s.name.to_owned(), serde_json::Value::Object(keys))
            })
            .collect();
        let v = json!({
            "files": files_json(&list),
            "overrides": overrides_json(&ovr),
            "sections": sections,
        });
        println!("{v:#}");
    } else {
        print!("{}", render(&list, &ovr, &shown));
    }
    Ok(ExitCode::SUCCESS)
}

fn is_secret(spec: Option<&SectionSpec>, key: &str) -> bool {
    match spec.and_then(|s| s.keys.as_ref()) {
        Some(_) => spec.and_then(|s| s.key(key)).is_some_and(|k| k.secret),
        // Keys this build does not know: anything that looks like a token is hidden.
        None => key.contains("token") && !key.ends_with("_file"),
    }
}

/// Hides a secret: an empty list stays visible (it says "none"), anything else is "(set)".
fn hide(v: toml::Value) -> toml::Value {
    match &v {
        toml::Value::Array(a) if a.is_empty() => v,
        _ => toml::Value::String(SECRET.to_owned()),
    }
}

/// Every key of every section in effect.
pub(super) fn effective(
    layers: &Layers,
    specs: &[SectionSpec],
    overrides: &[Override],
) -> Vec<Shown> {
    let merged = layers.merged();
    specs
        .iter()
        .map(|spec| {
            let written = merged.get(spec.name).and_then(toml::Value::as_table);
            let from_file = |key: &str| -> Option<Entry> {
                let v = written?.get(key)?.clone();
                Some(Entry {
                    key: key.to_owned(),
                    value: Some(v),
                    source: "file",
                    origin: layers.set_by(spec.name, key).map(str::to_owned),
                    default: None,
                })
            };
            let Some(keys) = &spec.keys else {
                let entries = written
                    .map(|t| t.keys().filter_map(|k| from_file(k)).collect())
                    .unwrap_or_default();
                return Shown {
                    name: spec.name,
                    entries: hide_secrets(entries, Some(spec)),
                    note: Some("keys not checked: this seglog was built without the collector"),
                };
            };
            let entries = keys
                .iter()
                .map(|k| {
                    let default = k.default.value().cloned();
                    let set = overrides
                        .iter()
                        .find(|o| o.section == spec.name && o.key == k.name)
                        .map(|o| Entry {
                            key: k.name.to_owned(),
                            value: Some(toml::Value::String(o.value.clone())),
                            source: o.source,
                            origin: Some(o.origin.to_owned()),
                            default: None,
                        })
                        .or_else(|| from_file(k.name));
                    let e = set.unwrap_or_else(|| {
                        let (source, origin) = match &k.default {
                            DefaultValue::Derived { from, .. } => ("derived", Some(*from)),
                            DefaultValue::Machine { note, .. } => ("default", Some(*note)),
                            DefaultValue::Value(_) | DefaultValue::Unset => ("default", None),
                        };
                        Entry {
                            key: k.name.to_owned(),
                            value: default.clone(),
                            source,
                            origin: origin.map(str::to_owned),
                            default: None,
                        }
                    });
                    Entry { default, ..e }
                })
                .collect();
            Shown {
                name: spec.name,
                entries: hide_secrets(entries, Some(spec)),
                note: None,
            }
        })
        .collect()
}

fn hide_secrets(entries: Vec<Entry>, spec: Option<&SectionSpec>) -> Vec<Entry> {
    entries
        .into_iter()
        .map(|e| {
            if is_secret(spec, &e.key) {
                Entry {
                    value: e.value.map(hide),
                    default: e.default.map(hide),
                    ..e
                }
            } else {
                e
            }
        })
        .collect()
}

/// Commented TOML.
pub(super) fn render(
    files: &[(String, &'static str, FileState)],
    overrides: &[Override],
    shown: &[Shown],
) -> String {
    let mut out = String::from(
        "# The seglog configuration in effect (`seglog config show`). Layers, later ones win:\n\
         #   built-in defaults\n",
    );
    for (path, layer, state) in files {
        out.push_str(&format!("#   {path} ({layer}): {}\n", state.as_str()));
    }
    for o in overrides {
        out.push_str(&format!(
            "#   {} ({}): sets [{}] {}\n",
            o.origin, o.source, o.section, o.key
        ));
    }
    for s in shown {
        out.push_str(&format!("\n[{}]\n", s.name));
        if let Some(n) = s.note {
            out.push_str(&format!("# {n}\n"));
        }
        let lines: Vec<(String, String)> = s.entries.iter().map(line).collect();
        let width = lines
            .iter()
            .map(|(l, _)| l.len())
            .filter(|&w| w <= 44)
            .max()
            .unwrap_or(0);
        for (l, comment) in lines {
            out.push_str(&format!("{l:width$}  # {comment}\n"));
        }
    }
    out
}

/// A key's `key = value` part and its comment.
fn line(e: &Entry) -> (String, String) {
    let comment = match (e.source, e.origin.as_deref()) {
        ("derived", Some(from)) => format!("derived from {from}"),
        ("default", Some(note)) => format!("default {note}"),
        ("default", None) => "default".to_owned(),
        (_, Some(origin)) => format!("from {origin}"),
        (source, None) => format!("from {source}"),
    };
    match &e.value {
        None => (format!("# {} = (not set)", e.key), comment),
        // Commented out, so the output never turns into a file with a token of "(set)".
        Some(toml::Value::String(s)) if s == SECRET => (
            format!("# {} = {SECRET}", e.key),
            format!("{comment}; secret"),
        ),
        Some(v) => (format!("{} = {}", e.key, toml_text(v)), comment),
    }
}

/// `v` as TOML. (`toml::Value`'s own `Display` links toml's whole writer, ~100 KB of the
/// device binary, for these few lines.)
pub(super) fn toml_text(v: &toml::Value) -> String {
    // A JSON string is a valid TOML basic string: the same quotes and escapes.
    let quoted = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    match v {
        toml::Value::String(s) => quoted(s),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) if f.is_finite() && f.fract() == 0.0 => format!("{f:.1}"),
        toml::Value::Float(f) if f.is_nan() => "nan".to_owned(),
        toml::Value::Float(f) if f.is_infinite() => {
            if *f > 0.0 { "inf" } else { "-inf" }.to_owned()
        }
        toml::Value::Float(f) => f.to_string(),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(a) => {
            let items: Vec<String> = a.iter().map(toml_text).collect();
            format!("[{}]", items.join(", "))
        }
        toml::Value::Table(t) => {
            let bare = |k: &str| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            };
            let items: Vec<String> = t
                .iter()
                .map(|(k, v)| {
                    let k = if bare(k) { k.clone() } else { quoted(k) };
                    format!("{k} = {}", toml_text(v))
                })
                .collect();
            if items.is_empty() {
                "{}".to_owned()
            } else {
                format!("{{ {} }}", items.join(", "))
            }
        }
    }
}
