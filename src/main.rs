//! `seglog`: the single user-facing binary. It only parses the command line and dispatches
//! to the crate that owns each subcommand.
#![forbid(unsafe_code)]

mod config_cmd;
#[cfg(feature = "collector")]
mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use config_layers::GlobalArgs;

/// On-device telemetry buffer: record, inspect, upload, collect.
///
/// Exit codes: 0 success; 1 the command ran and found a problem (journal verify found damage,
/// upload once/flush did not deliver everything, e.g. the server was unreachable: transient,
/// the next pass retries); 2 error (bad arguments or configuration, no or wrong upload URL,
/// unreadable files); 3 nothing to do because policy forbids it (upload once).
#[derive(Debug, Parser)]
#[command(name = "seglog", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Every command refuses a configuration with an unknown section, key or type in any
    // file; `config check` lists every such problem itself.
    let checked = match &cli.command {
        Command::Config(config_cmd::ConfigCommand::Check(_)) => Ok(()),
        _ => config_layers::Layers::load(&cli.global)
            .map_err(anyhow::Error::from)
            .and_then(|l| config_cmd::check_layers(&l)),
    };
    let result = checked.and_then(|()| dispatch(cli));
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("seglog: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Record(a) => recorder::cli::run_record(a, &cli.global),
        Command::Probe(c) => recorder::cli::run_probe(c, &cli.global),
        Command::Upload(c) => uploader::cli::run(c, &cli.global),
        Command::Journal(a) => journal::run(a, &cli.global),
        #[cfg(feature = "collector")]
        Command::Collector(c) => collector::cli::run(c, &cli.global),
        #[cfg(feature = "collector")]
        Command::Demo(a) => demo::run(a, &cli.global),
        Command::Config(c) => config_cmd::run(c, &cli.global),
    }
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
