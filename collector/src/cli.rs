//! `seglog collector ...` (skeleton; being built).
use std::process::ExitCode;

use recorder::config::GlobalArgs;

/// Collector commands.
#[derive(Debug, clap::Subcommand)]
pub enum CollectorCommand {}

/// Runs `seglog collector ...`.
pub fn run(cmd: CollectorCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
