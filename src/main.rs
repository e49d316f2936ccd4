//! `seglog`: the single user-facing binary. It only parses the command line (defined in
//! `src/lib.rs`) and dispatches to the crate that owns each subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use seglog::{Cli, Command};

/// Every top-level config section of every part of seglog; any other section in a config
/// file is an error that names the file (each crate defines only its own).
fn sections() -> Vec<&'static str> {
    use config_layers::Section;
    let mut all = recorder::config::SECTIONS.to_vec();
    all.push(uploader::config::RawUpload::NAME);
    // The device build has no collector, but a config file shared with a server may still
    // carry its section: it is known, and ignored.
    all.push("collector");
    all
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = config_layers::Layers::load(&cli.global)
        .and_then(|l| l.check_sections(&sections()))
        .map_err(anyhow::Error::from)
        .and_then(|()| dispatch(cli));
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
        Command::Demo(a) => seglog::demo::run(a, &cli.global),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "collector")]
    #[test]
    fn the_collector_section_name_is_the_collectors_own() {
        use config_layers::Section;
        assert!(sections().contains(&collector::CollectorSection::NAME));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
