//! Feeds arbitrary text to seglog's configuration loader and resolves every section
//! (`[log]`, `[recorder]`, `[upload]`, `[collector]`): errors are fine, panics are bugs.
//! The logic lives in `fuzz/common/config_parse.rs`, shared with the stable corpus replay
//! in `tests/e2e/fuzz_replay.rs`.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[path = "../common/config_parse.rs"]
mod config_parse;

fuzz_target!(|data: &[u8]| {
    config_parse::fuzz_config(data);
});
