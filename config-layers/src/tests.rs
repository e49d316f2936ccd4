use std::time::Duration;

use super::*;

fn layers(srcs: &[(&str, &str)]) -> Result<Layers, ConfigError> {
    Layers::from_sources(
        srcs.iter()
            .map(|(o, t)| (o.to_string(), t.to_string()))
            .collect(),
    )
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Collector {
    listen: Option<String>,
    budget: Option<SizeValue>,
    every: Option<DurationValue>,
}
impl Section for Collector {
    const NAME: &'static str = "collector";
}

#[test]
fn unknown_section_is_an_error_naming_it_and_the_file() {
    let l = layers(&[
        ("a.toml", "[log]\nsync = \"never\"\n"),
        ("c.toml", "[uplaod]\nurl = \"x\"\n"),
    ])
    .unwrap();
    let e = l
        .check_sections(&["log", "upload"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("uplaod") && e.contains("c.toml"), "{e}");
    assert!(e.contains("log, upload"), "{e}");
    assert!(l.check_sections(&["log", "uplaod"]).is_ok());
    let e = layers(&[("c.toml", "log = 3\n")]).unwrap_err().to_string();
    assert!(e.contains("must be a table") && e.contains("c.toml"), "{e}");
    let e = layers(&[("d.toml", "[log\n")]).unwrap_err().to_string();
    assert!(e.contains("d.toml") && e.contains("not valid TOML"), "{e}");
}

#[test]
fn a_section_parses_strictly_and_errors_name_the_key_and_the_file() {
    let l = layers(&[(
        "f",
        "[collector]\nlisten = \"127.0.0.1:0\"\nbudget = \"1KiB\"\nevery = \"1h\"\n",
    )])
    .unwrap();
    let c = l.section::<Collector>().unwrap();
    assert_eq!(c.listen.as_deref(), Some("127.0.0.1:0"));
    assert_eq!(c.budget.and_then(SizeValue::bytes), Some(1024));
    assert_eq!(
        c.every.map(DurationValue::get),
        Some(Duration::from_secs(3600))
    );
    let l = layers(&[
        ("a.toml", "[collector]\nlisten = \"x\"\n"),
        ("g.toml", "[collector]\nlisen = 1\n"),
    ])
    .unwrap();
    let e = l.section::<Collector>().unwrap_err().to_string();
    assert!(e.contains("lisen") && e.contains("g.toml"), "{e}");
    let l = layers(&[("h.toml", "[collector]\nbudget = \"3 parsecs\"\n")]).unwrap();
    let e = l.section::<Collector>().unwrap_err().to_string();
    assert!(
        e.contains("[collector].budget") && e.contains("h.toml"),
        "{e}"
    );
    // An absent section is its default.
    assert!(layers(&[])
        .unwrap()
        .section::<Collector>()
        .unwrap()
        .listen
        .is_none());
}

#[test]
fn missing_optional_files_are_skipped_but_a_missing_config_flag_file_is_an_error() {
    let d = tempfile::tempdir().unwrap();
    let present = d.path().join("p.toml");
    std::fs::write(&present, "[collector]\nlisten = \"a\"\n").unwrap();
    let l = Layers::load_files(&[
        (d.path().join("absent.toml"), false),
        (present.clone(), true),
    ])
    .unwrap();
    assert_eq!(
        l.origins().collect::<Vec<_>>(),
        [present.display().to_string()]
    );
    let e = Layers::load_files(&[(d.path().join("absent.toml"), true)]).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }));
    assert!(e.to_string().contains("absent.toml"), "{e}");
}

#[test]
fn sizes_and_durations_parse_with_units() {
    assert_eq!(parse_size("16MiB"), Ok(16 << 20));
    assert_eq!(parse_size("500KB"), Ok(500_000));
    assert_eq!(parse_size("1G"), Ok(1 << 30));
    assert_eq!(parse_size("42"), Ok(42));
    assert!(parse_size("1 parsec").is_err());
    assert!(parse_size("99999999999TiB").is_err());
}

#[test]
fn default_dir_is_under_xdg_state_home_for_users_and_var_lib_for_root() {
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        default_dir_for(Some(0), false, os("/x"), os("/root")),
        PathBuf::from("/var/lib/seglog")
    );
    assert_eq!(
        default_dir_for(Some(1000), false, os("/xdg/state"), os("/home/u")),
        PathBuf::from("/xdg/state/seglog")
    );
    assert_eq!(
        default_dir_for(Some(1000), false, os("relative"), os("/home/u")),
        PathBuf::from("/home/u/.local/state/seglog"),
        "a relative XDG_STATE_HOME is ignored"
    );
    assert_eq!(
        default_dir_for(Some(1000), false, None, os("/home/u")),
        PathBuf::from("/home/u/.local/state/seglog")
    );
    assert_eq!(
        default_dir_for(Some(1000), false, None, None),
        PathBuf::from("/tmp/seglog-1000")
    );
    assert!(default_dir().ends_with("seglog"));
}

#[test]
fn default_dir_is_the_system_log_for_every_user_once_installed() {
    let os = |s: &str| Some(std::ffi::OsString::from(s));
    assert_eq!(
        default_dir_for(Some(1000), true, os("/xdg/state"), os("/home/u")),
        PathBuf::from(SYSTEM_LOG_DIR)
    );
    assert_eq!(
        default_dir_for(Some(0), true, None, None),
        PathBuf::from(SYSTEM_LOG_DIR)
    );
    assert!(own_default_dir().ends_with("seglog"));
}
