use std::collections::BTreeSet;
use std::path::PathBuf;

use super::check::{first_key_named, Problem};
use super::show::{effective, render, toml_text, SECRET};
use super::*;

fn layers(srcs: &[(&str, &str)]) -> Layers {
    Layers::from_sources(
        srcs.iter()
            .map(|(o, t)| (o.to_string(), t.to_string()))
            .collect(),
    )
    .unwrap()
}

fn global(dir: &str) -> GlobalArgs {
    GlobalArgs {
        dir: Some(PathBuf::from(dir)),
        config: None,
    }
}

const EXAMPLE: &str = include_str!("../../dist/seglog.toml");

/// The example file with every key that has a default uncommented, the keys it holds as
/// (section, key), and the keys marked "(no default)" (left commented).
/// `(section, key)` pairs.
type Keys = BTreeSet<(String, String)>;

fn example() -> (String, Keys, Keys) {
    let (mut out, mut keys, mut unset) = (String::new(), BTreeSet::new(), BTreeSet::new());
    let (mut section, mut no_default) = (String::new(), false);
    for line in EXAMPLE.lines() {
        if let Some(s) = line.strip_prefix('[') {
            section = s.trim_end_matches(']').to_owned();
        }
        let key = line
            .strip_prefix('#')
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .and_then(|l| l.split_once(" = "))
            .map(|(k, _)| k.to_owned());
        match key.clone() {
            Some(k) => {
                keys.insert((section.clone(), k.clone()));
                if no_default {
                    unset.insert((section.clone(), k));
                    out.push_str(line);
                } else {
                    out.push_str(&line[1..]);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
        no_default = line.starts_with("# (no default)")
            || (no_default && line.starts_with("# ") && key.is_none());
    }
    (out, keys, unset)
}

#[test]
fn every_section_has_a_parser_and_a_spec_in_the_same_order() {
    let l = layers(&[]);
    let names: Vec<&str> = specs(&l, &global("/x")).iter().map(|s| s.name).collect();
    let parsed: Vec<&str> = parsers().iter().map(|(n, _)| *n).collect();
    assert_eq!(names, parsed);
    assert_eq!(names, ["log", "recorder", "upload", "collector"]);
    #[cfg(feature = "collector")]
    assert_eq!(COLLECTOR, <collector::CollectorSection as Section>::NAME);
}

#[cfg(not(feature = "collector"))]
#[test]
fn the_device_build_accepts_the_example_file_and_shows_the_collector_keys_as_written() {
    let (text, _, _) = example();
    let l = layers(&[("dist/seglog.toml", &text)]);
    check_layers(&l).unwrap();
    let shown = effective(&l, &specs(&l, &global("/x")), &[]);
    let c = shown.iter().find(|s| s.name == COLLECTOR).unwrap();
    assert!(c.note.is_some_and(|n| n.contains("not checked")));
    assert!(c
        .entries
        .iter()
        .any(|e| e.key == "listen" && e.source == "file"));
}

#[cfg(feature = "collector")]
#[test]
fn the_example_file_holds_every_key_and_uncommented_it_is_the_built_in_defaults() {
    let (text, keys, unset) = example();
    let l = layers(&[("dist/seglog.toml", &text)]);
    check_layers(&l).unwrap();
    let g = global("/var/lib/seglog");
    let specs = specs(&l, &g);
    let mut known = BTreeSet::new();
    let mut no_default = BTreeSet::new();
    for s in &specs {
        for k in s.keys.as_ref().unwrap() {
            known.insert((s.name.to_owned(), k.name.to_owned()));
            if k.default.value().is_none() {
                no_default.insert((s.name.to_owned(), k.name.to_owned()));
            }
        }
    }
    assert_eq!(
        keys, known,
        "dist/seglog.toml and the sections' keys differ"
    );
    assert_eq!(unset, no_default, "keys marked (no default)");
    let shown = effective(&l, &specs, &[]);
    for s in &shown {
        for e in &s.entries {
            if unset.contains(&(s.name.to_owned(), e.key.clone())) {
                assert_eq!(e.value, None);
                continue;
            }
            assert_eq!(e.source, "file", "[{}] {}", s.name, e.key);
            // Defaults that depend on the user: the example shows root's.
            match (s.name, e.key.as_str()) {
                ("log", "dir") => assert_eq!(e.value, Some("/var/lib/seglog".into())),
                ("collector", "data_dir") => {
                    assert_eq!(e.value, Some("/var/lib/seglog-collector".into()));
                }
                _ => assert_eq!(e.value, e.default, "[{}] {}", s.name, e.key),
            }
        }
    }
    // The resolved configurations too, not only the values as written.
    let c = recorder::config::Config::from_layers(&l, &g).unwrap();
    assert_eq!(c, recorder::config::Config::for_dir("/var/lib/seglog"));
    let u = uploader::config::UploadConfig::from_layers(&l, &g).unwrap();
    let d = uploader::config::UploadConfig::from_layers(&layers(&[]), &g).unwrap();
    assert_eq!(format!("{u:?}"), format!("{d:?}"));
    #[cfg(feature = "collector")]
    {
        let s: collector::CollectorSection = l.section().unwrap();
        assert_eq!(
            s.resolve(std::path::Path::new("/elsewhere")).unwrap(),
            collector::ServerConfig::new("/var/lib/seglog-collector".into())
        );
    }
}

#[test]
fn a_typo_in_any_section_of_any_file_is_refused_naming_the_file_and_the_key() {
    for (section, key) in [
        ("log", "segment_sise"),
        ("recorder", "rate_limit"),
        ("upload", "urll"),
        ("collector", "listn"),
    ] {
        let l = layers(&[
            ("a.toml", "[log]\nsync = \"never\"\n"),
            ("b.toml", &format!("[{section}]\n{key} = 1\n")),
        ]);
        if cfg!(feature = "collector") || section != "collector" {
            let e = check_layers(&l).unwrap_err().to_string();
            assert!(e.contains(&format!("in b.toml: [{section}].{key}")), "{e}");
        } else {
            // The device build cannot know the collector's keys (`config check` says so).
            assert!(check_layers(&l).is_ok());
        }
    }
    let e = check_layers(&layers(&[("c.toml", "[uplaod]\nurl = \"x\"\n")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.toml") && e.contains("uplaod"), "{e}");
}

#[test]
fn a_problem_line_names_file_section_and_key() {
    let p = Problem {
        file: Some("/etc/seglog/seglog.toml".into()),
        section: Some("upload".into()),
        key: Some("urll".into()),
        message: "unknown field".into(),
    };
    assert_eq!(
        p.line(),
        "/etc/seglog/seglog.toml: [upload].urll: unknown field"
    );
    let keys = [
        "tls_cert",
        "tls_key",
        "max_body_bytes",
        "receive_buffer_bytes",
    ];
    assert_eq!(
        first_key_named(
            "receive_buffer_bytes (1) must be at least max_body_bytes (2)",
            &keys
        ),
        Some("receive_buffer_bytes")
    );
    assert_eq!(
        first_key_named("tls_cert and tls_key must be set together", &keys),
        Some("tls_cert")
    );
    assert_eq!(first_key_named("xtls_cert", &keys), None);
}

#[test]
fn show_names_the_layer_of_every_value_and_hides_secrets() {
    let l = layers(&[
        (
            "/etc/seglog/seglog.toml",
            "[log]\nsegment_size = \"64KiB\"\n[upload]\ntoken = \"hunter2\"\n",
        ),
        ("mine.toml", "[log]\nsync = \"always\"\n"),
    ]);
    let g = global("/from/env");
    let o = [Override {
        section: "log",
        key: "dir",
        value: "/from/env".into(),
        source: "env",
        origin: DIR_ENV,
    }];
    let shown = effective(&l, &specs(&l, &g), &o);
    let get = |s: &str, k: &str| {
        shown
            .iter()
            .find(|x| x.name == s)
            .and_then(|x| x.entries.iter().find(|e| e.key == k))
            .cloned()
            .unwrap()
    };
    assert_eq!(get("log", "dir").origin.as_deref(), Some("SEGLOG_DIR"));
    assert_eq!(
        get("log", "segment_size").origin.as_deref(),
        Some("/etc/seglog/seglog.toml")
    );
    let m = get("log", "max_record_size");
    assert_eq!((m.source, m.value), ("derived", Some("16KiB".into())));
    assert_eq!(get("log", "sync").origin.as_deref(), Some("mine.toml"));
    assert_eq!(get("log", "max_age").source, "default");
    assert_eq!(get("upload", "token").value, Some(SECRET.into()));
    assert_eq!(get("upload", "url").value, None);
    let text = render(&[], &o, &shown);
    assert!(!text.contains("hunter2"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("dir = \"/from/env\" ") && l.ends_with("  # from SEGLOG_DIR")),
        "{text}"
    );
    assert!(text.contains("max_record_size = \"16KiB\""), "{text}");
    assert!(text.contains("# derived from segment_size"), "{text}");
    assert!(text.contains("# token = (set)"), "{text}");
    assert!(text.contains("# url = (not set)"), "{text}");
    // The output, secrets and unset keys being comments, is a valid config file.
    let back = layers(&[("shown", &text)]);
    check_layers(&back).unwrap();
}

#[test]
fn values_are_written_as_toml_that_reads_back() {
    let doc = r#"
        s = "a \"quoted\" \\ line\nnext\u0001 é"
        i = -3
        f = 1.5
        g = 2.0
        b = true
        d = 1979-05-27T07:32:00Z
        a = [1, "x", [true]]
        t = { a = 1, "b c" = "d" }
        e = []
    "#;
    let t: toml::Table = doc.parse().unwrap();
    for (k, v) in &t {
        let line = format!("{k} = {}", toml_text(v));
        let back: toml::Table = line.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(&back[k], v, "{line}");
    }
}
