//! `seglog collector ...`: the reference collector's command line.
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use config_layers::GlobalArgs;

use crate::config::{default_data_dir, read_token_file, CollectorSection, ServerConfig, TlsFiles};
use crate::server::Server;

/// Collector commands.
#[derive(Debug, clap::Subcommand)]
pub enum CollectorCommand {
    /// Receive uploads, store them in SQLite, serve the query API, web UI and metrics.
    ///
    /// Flags override the `[collector]` section of the config file. Stops gracefully on
    /// SIGINT or SIGTERM. Exit codes: 0 after a clean shutdown, 2 on an error.
    Serve(ServeArgs),
}

/// `seglog collector serve` flags (each overrides the `[collector]` key of the same name).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8780; port 0 picks a free port].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Directory of the SQLite database [default: ~/.local/state/seglog-collector, or
    /// /var/lib/seglog-collector for root].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Accept uploads carrying this bearer token (repeatable). With no token configured,
    /// uploads are open. Prefer --token-file: arguments are visible to other users.
    #[arg(long = "token", value_name = "TOKEN", env = "SEGLOG_COLLECTOR_TOKEN")]
    pub tokens: Vec<String>,
    /// Read accepted upload tokens from FILE, one per line.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate chain; with --tls-key, serve HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Print the bound address as `listening on http://ADDR` on stdout once ready (for
    /// scripts that start the collector on port 0).
    #[arg(long)]
    pub print_address: bool,
}

impl ServeArgs {
    /// Applies the flags over the config file's section and validates the result.
    pub fn into_config(self, section: &CollectorSection) -> anyhow::Result<ServerConfig> {
        let mut cfg = section.resolve(&default_data_dir())?;
        if let Some(l) = self.listen {
            cfg.listen = l;
        }
        if let Some(d) = self.data_dir {
            cfg.data_dir = d;
        }
        if !self.tokens.is_empty() || self.token_file.is_some() {
            cfg.tokens = self.tokens;
            if let Some(f) = &self.token_file {
                cfg.tokens.extend(read_token_file(f)?);
            }
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            cfg.tls = Some(TlsFiles { cert, key });
        }
        cfg.handle_signals = true;
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Runs `seglog collector ...`.
pub fn run(cmd: CollectorCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        CollectorCommand::Serve(args) => serve(args, global),
    }
}

fn serve(args: ServeArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let print = args.print_address;
    let cfg = args.into_config(&CollectorSection::load(global)?)?;
    if cfg.is_open_on_network() {
        eprintln!(
            "seglog collector: warning: listening on {} without upload tokens: anyone who can \
             reach it can upload; set [collector] tokens or --token-file",
            cfg.listen
        );
    }
    let data = match &cfg.postgres {
        Some(_) => "PostgreSQL".to_owned(),
        None => cfg.data_dir.display().to_string(),
    };
    let server = Server::start(cfg)?;
    eprintln!(
        "seglog collector: listening on {} (database {}, UI {}/ui/records)",
        server.url(),
        server
            .database_path()
            .map_or_else(|| "PostgreSQL".to_owned(), |p| p.display().to_string()),
        server.url()
    );
    if print {
        println!("listening on {}", server.url());
        use std::io::Write as _;
        std::io::stdout().flush()?;
    }
    server.wait()?;
    eprintln!("seglog collector: stopped (data in {data})");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: CollectorCommand,
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_config_section() {
        let cli = Cli::try_parse_from([
            "x",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/d",
            "--token",
            "a",
            "--token",
            "b",
        ])
        .unwrap();
        let CollectorCommand::Serve(args) = cli.cmd;
        let section = CollectorSection::from_toml_str(
            "[collector]\nlisten = \"127.0.0.1:9\"\ntokens = [\"z\"]\n",
        )
        .unwrap();
        let cfg = args.into_config(&section).unwrap();
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:0");
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(cfg.tokens, ["a", "b"]);
        assert!(cfg.handle_signals);
    }

    #[test]
    fn tls_cert_without_key_is_refused_by_the_parser() {
        assert!(Cli::try_parse_from(["x", "serve", "--tls-cert", "c.pem"]).is_err());
    }
}
