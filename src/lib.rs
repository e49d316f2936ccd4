//! The `seglog` command line as a library: the [`Cli`] definition the binary (`src/main.rs`)
//! parses and dispatches. It is a library so that `examples/gen-docs.rs` can generate the man
//! pages and shell completions from the real definition with `clap_mangen` and
//! `clap_complete`, which stay dev-dependencies, out of the device binary.
#![forbid(unsafe_code)]

pub mod config_cmd;
#[cfg(feature = "collector")]
pub mod demo;

use clap::{Parser, Subcommand};
use config_layers::GlobalArgs;

/// `seglog --version`: the package version and the commit it was built from, e.g.
/// `0.1.0 (commit 1a2b3c4d5e6f)`, `0.1.0 (commit 1a2b3c4d5e6f-dirty)` when the tree had
/// uncommitted changes, or `0.1.0 (unknown commit)` (set by `build.rs`).
pub const VERSION: &str = env!("SEGLOG_VERSION");

/// The exit statuses of every command, shown under `seglog --help` (README.md "Exit codes").
pub const EXIT_CODES: &str =
    "Exit codes: 0 success; 1 the command ran and found a problem (journal \
verify found damage, an upload did not deliver everything, e.g. the server was unreachable: the \
next pass retries); 2 error (bad arguments or configuration, no or wrong upload URL, unreadable \
files); 3 nothing done because policy forbids it (upload once).";

/// On-device telemetry buffer: record, inspect, upload, collect.
///
/// Exit codes: 0 success; 1 the command ran and found a problem (journal verify found damage,
/// upload once/flush did not deliver everything, e.g. the server was unreachable: transient,
/// the next pass retries); 2 error (bad arguments or configuration, no or wrong upload URL,
/// unreadable files); 3 nothing to do because policy forbids it (upload once).
#[derive(Debug, Parser)]
#[command(
    name = "seglog",
    version = VERSION,
    about,
    long_about = None,
    propagate_version = true,
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands; `src/main.rs` dispatches each to the crate that owns it.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write one record to the log.
    Record(recorder::cli::RecordArgs),
    /// Run a built-in probe.
    #[command(subcommand)]
    Probe(recorder::cli::ProbeCommand),
    /// Upload the log to a collector (daemon, cron pass, flush on demand, status).
    #[command(subcommand)]
    Upload(uploader::cli::UploadCommand),
    /// Inspect and verify the log offline (read-only).
    Journal(journal::JournalArgs),
    /// Run the reference collector server.
    #[cfg(feature = "collector")]
    #[command(subcommand)]
    Collector(collector::cli::CollectorCommand),
    /// Run the whole pipeline end to end on a temporary log.
    #[cfg(feature = "collector")]
    Demo(demo::DemoArgs),
    /// Check the configuration files, or show the configuration in effect.
    #[command(subcommand)]
    Config(config_cmd::ConfigCommand),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
