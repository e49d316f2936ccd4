//! `seglog`: the single user-facing binary. It only parses the command line (defined in
//! `src/lib.rs`) and dispatches to the crate that owns each subcommand.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;
use seglog::config_cmd;
use seglog::{Cli, Command};

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
        Command::Demo(a) => seglog::demo::run(a, &cli.global),
        Command::Config(c) => config_cmd::run(c, &cli.global),
    }
}
