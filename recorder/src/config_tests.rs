use std::time::Duration;

use std::path::PathBuf;

use config_layers::{GlobalArgs, Layers, DIR_ENV};

use super::*;

fn layers(srcs: &[(&str, &str)]) -> Result<Layers, config_layers::ConfigError> {
    Layers::from_sources(
        srcs.iter()
            .map(|(o, t)| (o.to_string(), t.to_string()))
            .collect(),
    )
}

fn global(dir: Option<&str>) -> GlobalArgs {
    GlobalArgs {
        dir: dir.map(PathBuf::from),
        config: None,
    }
}

#[test]
fn defaults_apply_when_no_file_sets_anything() {
    let l = layers(&[]).unwrap();
    let c = Config::from_layers(&l, &global(Some("/x"))).unwrap();
    assert_eq!(c, Config::for_dir("/x"));
    assert_eq!(c.log.segment_size, 16 << 20);
    assert_eq!(
        c.recorder.machine_id_rotation,
        Duration::from_secs(3 * 86_400)
    );
    assert_eq!(c.recorder.strategy, RateLimitStrategy::Spool);
}

#[test]
fn later_layers_override_earlier_ones_key_by_key() {
    let l = layers(&[
        ("defaults", "[log]\nsegment_size = \"8MiB\"\nsync = \"always\"\n[recorder]\nrecord_burst_limit = 5\n"),
        ("etc", "[log]\nsync = \"interval=250\"\n"),
        ("user", "[recorder]\nrate_limit_strategy = \"drop\"\nbyte_burst_limit = -1\n"),
    ])
    .unwrap();
    let c = Config::from_layers(&l, &global(Some("/flag"))).unwrap();
    assert_eq!(c.log.segment_size, 8 << 20);
    assert_eq!(
        c.log.sync,
        segment_log::SyncPolicy::Interval(Duration::from_millis(250))
    );
    assert_eq!(c.recorder.record_burst_limit, Some(5));
    assert_eq!(c.recorder.byte_burst_limit, None);
    assert_eq!(c.recorder.strategy, RateLimitStrategy::Drop);
}

#[test]
fn flag_dir_overrides_the_config_files_dir() {
    let l = layers(&[("etc", "[log]\ndir = \"/from/file\"\n")]).unwrap();
    assert_eq!(
        Config::from_layers(&l, &global(Some("/from/flag")))
            .unwrap()
            .log
            .dir,
        PathBuf::from("/from/flag")
    );
    if std::env::var_os(DIR_ENV).is_none() {
        assert_eq!(
            Config::from_layers(&l, &global(None)).unwrap().log.dir,
            PathBuf::from("/from/file")
        );
    }
}

#[test]
fn unknown_key_is_an_error_naming_the_key_and_the_file() {
    let l = layers(&[
        ("a.toml", "[log]\nsync = \"never\"\n"),
        ("b.toml", "[recorder]\nrecord_burst_limt = 3\n"),
    ])
    .unwrap();
    let e = format!(
        "{:#}",
        Config::from_layers(&l, &global(Some("/x"))).unwrap_err()
    );
    assert!(e.contains("record_burst_limt"), "{e}");
    assert!(e.contains("b.toml"), "{e}");
}

#[test]
fn bad_values_name_the_key() {
    for (text, key) in [
        ("[log]\nsync = \"sometimes\"\n", "[log].sync"),
        ("[log]\nsegment_size = 5000\n", "[log].segment_size"),
        ("[log]\nsegment_size = \"12 parsecs\"\n", "segment_size"),
        (
            "[recorder]\nrecord_window_length = \"0s\"\n",
            "record_window_length",
        ),
        (
            "[recorder]\nrate_limit_strategy = \"keep\"\n",
            "rate_limit_strategy",
        ),
    ] {
        let l = layers(&[("f.toml", text)]).unwrap();
        let e = format!(
            "{:#}",
            Config::from_layers(&l, &global(Some("/x"))).unwrap_err()
        );
        assert!(e.contains(key), "{text}: {e}");
    }
}

#[test]
fn missing_optional_files_are_skipped_but_a_missing_config_flag_file_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let present = d.path().join("p.toml");
    std::fs::write(&present, "[log]\nmax_bytes = 0\nmax_age = \"0s\"\n").unwrap();
    let l = Layers::load_files(&[
        (d.path().join("absent.toml"), false),
        (present.clone(), true),
    ])
    .unwrap();
    let c = Config::from_layers(&l, &global(Some("/x"))).unwrap();
    assert_eq!(c.log.max_bytes, None);
    assert_eq!(c.log.max_age, None);
    assert!(c.log.options().unwrap().retention.is_none());
    let e = Layers::load_files(&[(d.path().join("absent.toml"), true)]).unwrap_err();
    assert!(format!("{e:#}").contains("absent.toml"));
}

#[test]
fn the_readme_documents_every_key_with_its_real_default() {
    let readme = include_str!("../README.md");
    let block = readme
        .split("<!-- defaults:begin -->")
        .nth(1)
        .and_then(|r| r.split("<!-- defaults:end -->").next())
        .expect("README defaults block");
    let toml_text = block
        .trim()
        .trim_start_matches("```toml")
        .trim_end_matches("```");
    let l = layers(&[("README.md", toml_text)]).unwrap();
    assert_eq!(
        Config::from_layers(&l, &global(Some("/x"))).unwrap(),
        Config::for_dir("/x")
    );
    let keys =
        |s: &str| -> Vec<String> { l.merged()[s].as_table().unwrap().keys().cloned().collect() };
    let mut log = keys("log");
    log.push("dir".into()); // documented in a comment: its default depends on the user
    log.sort();
    assert_eq!(
        log,
        [
            "dir",
            "max_age",
            "max_bytes",
            "max_record_size",
            "segment_size",
            "sync"
        ]
    );
    assert_eq!(keys("recorder").len(), 9);
    for k in keys("recorder") {
        let one = format!("[recorder]\n{k} = {}\n", l.merged()["recorder"][&k]);
        layers(&[("one", &one)])
            .unwrap()
            .section::<RawRecorder>()
            .unwrap();
    }
}

#[test]
fn recorder_durations_parse_with_units() {
    let l = layers(&[(
        "f",
        "[recorder]\nbyte_window_length = 30\nmachine_id_rotation = \"1h\"\n",
    )])
    .unwrap();
    let c = Config::from_layers(&l, &global(Some("/x"))).unwrap();
    assert_eq!(c.recorder.byte_window, Duration::from_secs(30));
    assert_eq!(c.recorder.machine_id_rotation, Duration::from_secs(3600));
}

#[test]
fn a_small_segment_size_alone_derives_max_record_size() {
    let l = layers(&[("f.toml", "[log]\nsegment_size = \"64KiB\"\n")]).unwrap();
    let c = Config::from_layers(&l, &global(Some("/x"))).unwrap();
    assert_eq!(c.log.max_record_size, 16 << 10);
    assert!(c.log.options().is_ok());
    let big = layers(&[("f.toml", "[log]\nsegment_size = \"64MiB\"\n")]).unwrap();
    let c = Config::from_layers(&big, &global(Some("/x"))).unwrap();
    assert_eq!(c.log.max_record_size, DEFAULT_MAX_RECORD_SIZE);
    assert_eq!(derived_max_record_size(8192), 2048);
    // segment-log accepts every derived value.
    for s in [8192, 64 << 10, 4 << 20, 16 << 20] {
        let mut c = LogConfig::for_dir("/x");
        c.segment_size = s;
        c.max_record_size = derived_max_record_size(s);
        let o = c.options().unwrap();
        let d = tempfile::tempdir().unwrap();
        segment_log::Log::open(d.path(), o).unwrap();
    }
}

#[test]
fn an_explicit_record_size_too_large_for_the_segment_names_both_keys_and_the_file() {
    let l = layers(&[
        ("etc.toml", "[log]\nsegment_size = \"64KiB\"\n"),
        ("mine.toml", "[log]\nmax_record_size = \"1MiB\"\n"),
    ])
    .unwrap();
    let e = format!(
        "{:#}",
        Config::from_layers(&l, &global(Some("/x"))).unwrap_err()
    );
    assert!(e.contains("in mine.toml: [log].max_record_size"), "{e}");
    assert!(e.contains("segment_size") && e.contains("16384"), "{e}");
}

#[test]
fn the_specs_know_every_key_and_their_defaults_are_the_built_in_ones() {
    let empty = toml::Table::new();
    let mut doc = toml::Table::new();
    for (spec, raw_keys) in [
        (log_spec(&empty), config_layers::spec::fields::<RawLog>()),
        (
            recorder_spec(),
            config_layers::spec::fields::<RawRecorder>(),
        ),
    ] {
        let keys = spec.keys.unwrap();
        assert_eq!(keys.len(), raw_keys.len());
        let mut t = toml::Table::new();
        for k in keys {
            if k.name == "dir" {
                assert_eq!(
                    k.default.value().and_then(|v| v.as_str()),
                    Some(default_dir().to_str().unwrap())
                );
                continue;
            }
            let v = k.default.value().unwrap_or_else(|| panic!("{}", k.name));
            t.insert(k.name.to_owned(), v.clone());
        }
        doc.insert(spec.name.to_owned(), toml::Value::Table(t));
    }
    let l = Layers::from_sources(vec![("spec".into(), doc.to_string())]).unwrap();
    assert_eq!(
        Config::from_layers(&l, &global(Some("/x"))).unwrap(),
        Config::for_dir("/x")
    );
    let mut small = toml::Table::new();
    small.insert("log".into(), toml::toml! { segment_size = "64KiB" }.into());
    assert_eq!(
        log_spec(&small).key("max_record_size").unwrap().default,
        DefaultValue::Derived {
            value: size_value(16 << 10),
            from: "segment_size"
        }
    );
}
