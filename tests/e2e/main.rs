//! End-to-end tests of the `seglog` binary and the workspace's dependency rules: one test
//! binary (each former `tests/*.rs` file is a module, its tests keep their names under it),
//! so the workspace links the binary's whole dependency stack once instead of 16 times.
//!
//! Run one group: `cargo test --test e2e upload_e2e::`; the long soak:
//! `cargo test --release --test e2e -- --ignored torture::torture_pipeline_soak` (`just torture`).

mod support {
    pub mod full_disk;
    pub mod otlp;
    pub mod proxy;
    pub mod system;
    pub mod upload_env;
}

mod architecture;
mod collector_e2e;
mod collector_modes;
mod collector_postgres;
mod config_cli;
mod demo;
mod device_footprint;
mod dist_units;
mod fuzz_replay;
mod gap_report_e2e;
mod journal;
mod journal_cli;
mod journal_counter;
mod journal_export;
mod journal_follow;
mod journal_verify;
mod otlp_e2e;
mod otlp_forward;
mod package;
mod probe_full_disk;
mod readme;
mod recorder_e2e;
mod system_mode;
mod torture;
mod trim_counts;
mod umask;
mod upload_e2e;
mod upload_manners;
mod upload_network;
mod version;
