//! Generates the man pages and shell completions of `seglog` from its clap definition
//! (`seglog::Cli`), for packaging (`packaging/deb/build.sh`):
//!
//! ```sh
//! cargo run --example gen-docs -- OUTDIR [NAME]                           # the default build
//! cargo run --example gen-docs --no-default-features -- OUTDIR [NAME]     # the device CLI
//! ```
//!
//! writes `OUTDIR/man/NAME.1`, `OUTDIR/man/NAME-SUBCOMMAND.1` for every subcommand (nested
//! ones too: `seglog-upload-run.1`), and `OUTDIR/completions/{NAME.bash,_NAME,NAME.fish}`.
//! NAME (default `seglog`) is the installed program name (`seglog-server` for the server
//! package). clap_mangen and clap_complete are dev-dependencies: the binary never links them.
use std::path::Path;

use clap::CommandFactory;

/// Writes the man pages and completions of `cmd`, renamed to `name`, under `out`.
pub fn generate(cmd: clap::Command, name: &str, out: &Path) -> std::io::Result<()> {
    // clap's `Command::name` takes a `&'static str` without its `string` feature (not enabled
    // in the binary); this process writes the docs once and exits.
    let static_name: &'static str = Box::leak(name.to_owned().into_boxed_str());
    let cmd = cmd.name(static_name).bin_name(name);
    let man = out.join("man");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    let comp = out.join("completions");
    std::fs::create_dir_all(&comp)?;
    for shell in [
        clap_complete::Shell::Bash,
        clap_complete::Shell::Zsh,
        clap_complete::Shell::Fish,
    ] {
        clap_complete::generate_to(shell, &mut cmd.clone(), name, &comp)?;
    }
    Ok(())
}

#[allow(dead_code)] // tests/e2e/package.rs includes this file for `generate` only
fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, name) = match args.as_slice() {
        [out] => (out.as_str(), "seglog"),
        [out, name] => (out.as_str(), name.as_str()),
        _ => {
            eprintln!("usage: gen-docs OUTDIR [NAME]");
            return std::process::ExitCode::from(2);
        }
    };
    match generate(seglog::Cli::command(), name, Path::new(out)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-docs: error: cannot write under {out}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
