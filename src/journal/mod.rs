//! `seglog journal`: offline, read-only inspection and verification (being built).
use std::process::ExitCode;

use recorder::config::GlobalArgs;

/// Inspect and verify a log directory.
#[derive(Debug, clap::Args)]
pub struct JournalArgs {}

/// Runs `seglog journal`.
pub fn run(_args: JournalArgs, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    anyhow::bail!("seglog journal is not available in this build yet")
}
