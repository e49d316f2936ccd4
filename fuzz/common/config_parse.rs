//! The config-file decoder under fuzzing, shared by `fuzz/fuzz_targets/config_parse.rs`
//! (cargo-fuzz) and `tests/e2e/fuzz_replay.rs` (the stable replay of the committed corpus).
//!
//! Arbitrary text goes through seglog's layered TOML loader (`config_layers::Layers`,
//! the parse-from-string entry point every `--config FILE` takes), then every section is
//! resolved the way the binaries do (`[log]` + `[recorder]`, `[upload]`, `[collector]`), and
//! the resolved upload policy and backoff are exercised. Errors are fine; a panic is a bug.
//! Keys that would make the resolver read a file (`token_file`, TLS files) are left out, so
//! the target never touches the filesystem.
use std::path::{Path, PathBuf};

use config_layers::{GlobalArgs, Layers};
use recorder::config::Config;

/// Parses and resolves `data` as a seglog configuration file.
pub fn fuzz_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let layers = match Layers::from_sources(vec![("fuzz.toml".to_owned(), text.to_owned())])
        .and_then(|l| {
            l.check_sections(&["log", "recorder", "upload", "collector"])
                .map(|()| l)
        }) {
        Ok(l) => l,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    // Keys naming a file the resolver would read.
    let t = layers.merged();
    let has = |section: &str, keys: &[&str]| {
        t.get(section)
            .and_then(|s| s.as_table())
            .is_some_and(|s| keys.iter().any(|k| s.contains_key(*k)))
    };
    if has("upload", &["token_file"]) || has("collector", &["token_file", "tls_cert", "tls_key"]) {
        return;
    }
    let global = GlobalArgs {
        dir: Some(PathBuf::from("/nonexistent/seglog-fuzz")),
        config: None,
    };
    let config = match Config::from_layers(&layers, &global) {
        Ok(c) => c,
        Err(e) => {
            let _ = format!("{e:#}");
            return;
        }
    };
    let _ = config.log.options().map(|o| format!("{o:?}"));
    let upload = layers
        .section::<uploader::config::RawUpload>()
        .and_then(|raw| uploader::config::UploadConfig::resolve(raw, &config.log));
    match upload {
        Ok(u) => exercise_upload(&u),
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
    match layers
        .section::<collector::config::CollectorSection>()
        .map_err(anyhow::Error::from)
        .and_then(|c| Ok(c.resolve(Path::new("/nonexistent/seglog-fuzz-collector"))?))
    {
        Ok(c) => {
            let _ = (
                c.is_open_on_network(),
                c.limits.protocol(),
                format!("{c:?}"),
            );
        }
        Err(e) => {
            let _ = format!("{e:#}");
        }
    }
}

fn exercise_upload(u: &uploader::config::UploadConfig) {
    use uploader::policy::{Inputs, Trigger};
    let _ = u.endpoint(&[7u8; 32]);
    for now_ms in [0, 1_700_000_000_000, i64::MAX, i64::MIN] {
        for last in [None, Some(0), Some(now_ms), Some(i64::MIN), Some(i64::MAX)] {
            let i = Inputs {
                now_ms,
                opted_in: true,
                backlog_bytes: 1,
                oldest_record_ms: last,
                last_pass_ms: last,
                budget_used: 0,
            };
            let _ = u.policy.decide(Trigger::Scheduled, &i);
            let _ = u.policy.decide(Trigger::Flush, &i);
        }
    }
    let mut b = uploader::retry::Backoff::new(u.backoff_base, u.backoff_cap);
    for _ in 0..40 {
        let d = b.next_delay();
        assert!(
            d <= u.backoff_cap.max(u.backoff_base),
            "backoff {d:?} over its cap"
        );
    }
    let _ = uploader::retry::random_delay(u.startup_delay);
}
