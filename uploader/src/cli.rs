//! `seglog upload ...` (skeleton; being built).
use std::process::ExitCode;

use recorder::config::GlobalArgs;

/// Upload commands.
#[derive(Debug, clap::Subcommand)]
pub enum UploadCommand {}

/// Runs `seglog upload ...`.
pub fn run(cmd: UploadCommand, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {}
}
