//! `seglog journal`: offline, read-only inspection and verification of a log directory.
//!
//! The journal never modifies anything and takes no locks: it reads segments with `pread`
//! through [`segment_log::Reader`] with writer detection switched off, so it works the same on
//! a live log, on a copied directory and on a damaged one, and a segment truncated underneath
//! it produces a reported damaged range, never a crash.
//!
//! Holes: a record whose space was reserved but not yet committed is waited for up to
//! `--hole-timeout` (default [`DEFAULT_HOLE_TIMEOUT`]) before it is reported as an abandoned
//! reservation; a live writer commits within microseconds, so a record being written at that
//! moment is never reported as damage. Space past the newest reservation (the live end of the
//! newest segment) is simply where the log ends, never damage.
//!
//! Layout: this file holds the clap arguments and the dispatch; [`source`] opens the log and
//! turns frames into decoded records; [`filter`] selects records (times read by [`when`], in
//! the local zone unless `--utc`); [`short`] renders the journalctl-like text forms and
//! [`output`] JSON; [`pager`] pipes a terminal's output through `$PAGER`; [`list`],
//! [`verify`], [`stats`] and [`export`] are the subcommands.

#![forbid(unsafe_code)]

mod export;
mod filter;
mod list;
mod output;
mod pager;
mod record;
mod short;
mod source;
mod stats;
mod timefmt;
mod upload_state;
mod verify;
mod warnings;
mod when;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use config_layers::GlobalArgs;

/// How long a reserved but uncommitted frame is waited for before it counts as abandoned
/// (a live writer commits within microseconds; 500 ms leaves room for a descheduled writer on
/// a loaded machine while keeping a damaged copy with many holes quick to read).
pub const DEFAULT_HOLE_TIMEOUT: Duration = Duration::from_millis(500);

/// Help text shared by the journal commands.
const EXIT_CODES: &str = "\
Exit codes: 0 success (verify: no damage); 1 verify found damage; 2 error (not a log directory, \
unreadable file, segment written by a newer seglog, bad arguments).

The journal is read-only and takes no locks: it works on a live log and on a copied or damaged \
directory.";

/// Inspect and verify a log directory offline (read-only, no locks).
///
/// Without a subcommand, lists records (the same as `seglog journal list`).
#[derive(Debug, clap::Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = EXIT_CODES
)]
pub struct JournalArgs {
    // Boxed: the arguments are a few hundred bytes and `main`'s command enum stays small.
    #[command(subcommand)]
    command: Option<Box<JournalCommand>>,
    #[command(flatten)]
    list: Box<list::ListArgs>,
}

#[derive(Debug, clap::Subcommand)]
enum JournalCommand {
    /// List records, one line each like `journalctl` (the default).
    #[command(after_help = EXIT_CODES)]
    List(list::ListArgs),
    /// Check every segment header and frame; print each damaged range and a summary.
    ///
    /// Exit status: 0 clean, 1 damage found, 2 could not read.
    ///
    /// On a live log, a record being written at that moment is not damage: space a writer
    /// reserved is waited for (--hole-timeout) before it counts as abandoned, and the space
    /// after the newest reservation is simply where the log ends. Verify checks what existed
    /// when it started.
    #[command(after_help = EXIT_CODES)]
    Verify(verify::VerifyArgs),
    /// Segments, bytes, records, oldest and newest record, uploader cursor and backlog.
    #[command(after_help = EXIT_CODES)]
    Stats(stats::StatsArgs),
    /// Write every record (with its payload and context) as JSON lines, to stdout or
    /// --output-file.
    #[command(after_help = EXIT_CODES)]
    Export(export::ExportArgs),
}

/// Options every reading command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct ReadArgs {
    /// How long to wait for a reserved but uncommitted record before reporting it as
    /// abandoned (a writer that crashed mid-append), and for a record near the live end whose
    /// checksum does not verify yet (its bytes may still be becoming visible). Use 0 on a
    /// copied directory that no writer can be appending to.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = parse_duration)]
    pub hole_timeout: Duration,
}

impl Default for ReadArgs {
    fn default() -> Self {
        ReadArgs {
            hole_timeout: DEFAULT_HOLE_TIMEOUT,
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 0, 250ms, 2s)"))
}

/// Runs `seglog journal`.
pub fn run(args: JournalArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let dir = log_dir(global)?;
    let result = match args.command.map(|c| *c) {
        None => list::run(*args.list, &dir),
        Some(JournalCommand::List(a)) => list::run(a, &dir),
        Some(JournalCommand::Verify(a)) => verify::run(a, &dir),
        Some(JournalCommand::Stats(a)) => stats::run(a, &dir),
        Some(JournalCommand::Export(a)) => export::run(a, &dir),
    };
    match result {
        // `seglog journal | head` closes the pipe early: that is success, quietly.
        Err(e) if output::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        other => other,
    }
}

/// The log directory to read: `--dir`, else `SEGLOG_DIR`, else `log.dir` from the layered
/// configuration, else the default directory.
fn log_dir(global: &GlobalArgs) -> anyhow::Result<PathBuf> {
    if let Some(d) = &global.dir {
        // An explicit directory needs no configuration (and works with a broken one).
        return Ok(d.clone());
    }
    let layers = config_layers::Layers::load(global)?;
    let raw = layers.section()?;
    Ok(recorder::config::LogConfig::from_raw(raw, global)
        .map_err(|e| layers.attribute(e))?
        .dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(flatten)]
        journal: JournalArgs,
    }

    #[test]
    fn journal_cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bare_journal_parses_list_flags_without_a_subcommand() {
        let cli =
            Cli::try_parse_from(["journal", "-n", "5", "--json", "-c", "org.seglog/*"]).unwrap();
        assert!(cli.journal.command.is_none());
        assert_eq!(cli.journal.list.lines, Some(5));
        assert!(cli.journal.list.json);
    }

    #[test]
    fn lines_without_a_value_is_ten_and_output_takes_the_journalctl_modes() {
        let cli = Cli::try_parse_from(["journal", "-n", "-o", "json-pretty"]).unwrap();
        assert_eq!(cli.journal.list.lines, Some(10));
        assert_eq!(cli.journal.list.output, list::OutputMode::JsonPretty);
        let cli = Cli::try_parse_from(["journal", "list", "-n"]).unwrap();
        match cli.journal.command.map(|c| *c) {
            Some(JournalCommand::List(l)) => assert_eq!(l.lines, Some(10)),
            other => panic!("expected list, got {other:?}"),
        }
        assert!(Cli::try_parse_from(["journal", "-o", "xml"]).is_err());
    }

    #[test]
    fn verify_subcommand_parses_hole_timeout() {
        let cli = Cli::try_parse_from(["journal", "verify", "--hole-timeout", "0"]).unwrap();
        match cli.journal.command.map(|c| *c) {
            Some(JournalCommand::Verify(v)) => assert_eq!(v.read.hole_timeout, Duration::ZERO),
            other => panic!("expected verify, got {other:?}"),
        }
    }

    #[test]
    fn bad_durations_are_refused_with_examples() {
        let err = parse_duration("soon").unwrap_err();
        assert!(err.contains("examples"), "{err}");
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
    }
}
