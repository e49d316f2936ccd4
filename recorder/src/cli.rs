//! `seglog record` and `seglog probe` (skeleton; being built).
use std::process::ExitCode;

use crate::config::GlobalArgs;

/// Write one record.
#[derive(Debug, clap::Args)]
pub struct RecordArgs {}

/// Built-in probes.
#[derive(Debug, clap::Subcommand)]
pub enum ProbeCommand {}

/// Runs `seglog record`.
pub fn run_record(_args: RecordArgs, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("seglog record is not available in this build yet")
}

/// Runs `seglog probe ...`.
pub fn run_probe(cmd: ProbeCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
