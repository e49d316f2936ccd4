//! `seglog upload ...`: clap arguments and dispatch. Exit codes: 0 delivered everything (or
//! nothing was pending), 1 ran but did not deliver everything (the server unreachable
//! included: transient, the next pass retries), 2 error (arguments, configuration, no or wrong
//! URL, token refused), 3 the policy forbids uploading now.
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use config_layers::GlobalArgs;

use crate::config::UploadConfig;

mod pass;
mod waiter;

pub use pass::{Delivered, Report, Verdict};

/// Upload commands.
#[derive(Debug, clap::Subcommand)]
#[command(
    after_help = "The collector URL comes from --url URL, else the environment variable \
SEGLOG_UPLOAD_URL, else url in the [upload] section of the config files. With \
[upload] protocol = \"otlp\" it is the full OTLP/HTTP logs endpoint (e.g. \
http://otel-collector:4318/v1/logs; OTLP.md). \
Exit status of once and flush: 0 everything delivered (or nothing pending); 1 not everything \
delivered (server unreachable, deadline, held-back records: the next pass retries); \
2 error (arguments, configuration, no or wrong URL, token refused); 3 the policy says not now."
)]
pub enum UploadCommand {
    /// Run the upload daemon: upload whenever the policy allows, serve `flush` on the
    /// control socket, run retention; stops cleanly on SIGTERM/SIGINT.
    Run(RunArgs),
    /// One policy-gated upload pass, for cron and systemd timers. Exit 0: delivered (or
    /// nothing pending), 1: not everything delivered (server unreachable included), 2: error,
    /// 3: policy says not now.
    Once(OnceArgs),
    /// Upload everything written before this call and wait for the server's acknowledgement
    /// (through the running daemon, or directly when none runs). Bypasses the schedule,
    /// not opt-in.
    Flush(FlushArgs),
    /// Show the cursor, backlog, last success and error, and dropped/expired/dead-lettered
    /// counts.
    Status(StatusArgs),
    /// Allow uploads from this machine (creates the opt-in marker).
    OptIn,
    /// Stop uploads from this machine (removes the opt-in marker); recording continues.
    OptOut,
}

/// `--url`, shared by the commands that upload or show the URL.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct UrlArg {
    /// Collector base URL, e.g. http://127.0.0.1:8780/ (with [upload] protocol = "otlp": the
    /// OTLP/HTTP logs endpoint). Overrides the environment variable SEGLOG_UPLOAD_URL, which
    /// overrides upload.url in the config files.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

/// `seglog upload run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Start uploading at once instead of after a random delay of up to `startup_delay`.
    #[arg(long)]
    pub no_startup_delay: bool,
    /// `--url`.
    #[command(flatten)]
    pub url: UrlArg,
}

/// `seglog upload once`.
#[derive(Debug, clap::Args)]
pub struct OnceArgs {
    /// Print the result as one JSON object on stdout (fields in the uploader's README).
    #[arg(long)]
    pub json: bool,
    /// `--url`.
    #[command(flatten)]
    pub url: UrlArg,
}

/// `seglog upload flush`.
#[derive(Debug, clap::Args)]
pub struct FlushArgs {
    /// Give up after this long (e.g. 30s, 5m), a request in progress included.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Print the result as one JSON object on stdout (fields in the uploader's README).
    #[arg(long)]
    pub json: bool,
    /// `--url`.
    #[command(flatten)]
    pub url: UrlArg,
}

/// `seglog upload status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// `--url`.
    #[command(flatten)]
    pub url: UrlArg,
}

/// The configuration with the URL from `--url` (over SEGLOG_UPLOAD_URL, over the files).
fn load(global: &GlobalArgs, url: &UrlArg) -> anyhow::Result<UploadConfig> {
    let mut cfg = UploadConfig::load(global)?;
    if let Some(u) = &url.url {
        cfg.override_url(u, crate::config::URL_FLAG)?;
    }
    Ok(cfg)
}

/// Runs `seglog upload ...`.
pub fn run(cmd: UploadCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let no_url = UrlArg::default();
    let url = match &cmd {
        UploadCommand::Run(a) => &a.url,
        UploadCommand::Once(a) => &a.url,
        UploadCommand::Flush(a) => &a.url,
        UploadCommand::Status(a) => &a.url,
        UploadCommand::OptIn | UploadCommand::OptOut => &no_url,
    };
    // With --json, even a configuration error is reported as the JSON object.
    let cfg = match (&cmd, load(global, url)) {
        (_, Ok(cfg)) => cfg,
        (UploadCommand::Once(OnceArgs { json: true, .. }), Err(e)) => {
            return pass::report("once", true, |_, _| Err(e))
        }
        (UploadCommand::Flush(FlushArgs { json: true, .. }), Err(e)) => {
            return pass::report("flush", true, |_, _| Err(e))
        }
        (_, Err(e)) => return Err(e),
    };
    // A shared log this user may not use: say which group to join (status only reads).
    let writes = !matches!(cmd, UploadCommand::Status(_));
    segment_log::perms::check_access(&cfg.dir, writes)?;
    match cmd {
        UploadCommand::Run(a) => {
            if cfg.url.is_none() && cfg.policy.server_delivery {
                anyhow::bail!("no collector URL configured: {}", crate::config::URL_HOWTO);
            }
            crate::daemon::run(
                cfg,
                &crate::daemon::DaemonOptions {
                    no_startup_delay: a.no_startup_delay,
                },
                &mut |m| eprintln!("seglog upload: {m}"),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        UploadCommand::Once(a) => pass::report("once", a.json, |r, h| pass::once(cfg, r, h)),
        UploadCommand::Flush(a) => {
            pass::report("flush", a.json, |r, h| pass::flush(cfg, a.timeout, r, h))
        }
        UploadCommand::Status(a) => {
            let v = crate::status::collect(&cfg)?;
            if a.json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                crate::status::print(&v, &mut std::io::stdout().lock())?;
            }
            Ok(ExitCode::SUCCESS)
        }
        UploadCommand::OptIn => {
            let p = &cfg.opt_in_file;
            // In the log directory the marker follows the log's policy (0660 in a shared
            // log, so every uploader of the group sees it); elsewhere it is private.
            let mut sharing = segment_log::Sharing::Private;
            if let Some(parent) = p.parent() {
                if parent == cfg.upload_dir() {
                    sharing = crate::state::ensure_dir(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                } else if !parent.is_dir() {
                    segment_log::Sharing::Private
                        .create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
            }
            sharing
                .write_file(
                    p,
                    format!(
                        "opted in at {}\n",
                        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                    )
                    .as_bytes(),
                )
                .with_context(|| format!("cannot create {}", p.display()))?;
            println!("opted in: uploads are allowed ({} created)", p.display());
            Ok(ExitCode::SUCCESS)
        }
        UploadCommand::OptOut => {
            match std::fs::remove_file(&cfg.opt_in_file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot remove {}", cfg.opt_in_file.display()))
                }
            }
            println!("opted out: nothing will be uploaded; records are still kept locally");
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: UploadCommand,
    }

    #[test]
    fn cli_definition_is_consistent_and_parses() {
        use clap::{CommandFactory, Parser};
        Cli::command().debug_assert();
        let c = Cli::try_parse_from(["x", "flush", "--timeout", "30s"]).unwrap();
        assert!(
            matches!(c.cmd, UploadCommand::Flush(FlushArgs { timeout, json: false, .. }) if timeout == Duration::from_secs(30))
        );
        assert!(Cli::try_parse_from(["x", "flush", "--timeout", "soon"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["x", "status", "--json"]).unwrap().cmd,
            UploadCommand::Status(StatusArgs { json: true, .. })
        ));
        for cmd in ["run", "once", "flush", "status"] {
            let c = Cli::try_parse_from(["x", cmd, "--url", "http://h:1/"]).unwrap();
            let url = match c.cmd {
                UploadCommand::Run(a) => a.url,
                UploadCommand::Once(a) => a.url,
                UploadCommand::Flush(a) => a.url,
                UploadCommand::Status(a) => a.url,
                _ => panic!("{cmd}"),
            };
            assert_eq!(url.url.as_deref(), Some("http://h:1/"), "{cmd}");
        }
        assert!(matches!(
            Cli::try_parse_from(["x", "once", "--json"]).unwrap().cmd,
            UploadCommand::Once(OnceArgs { json: true, .. })
        ));
        assert!(matches!(
            Cli::try_parse_from(["x", "opt-in"]).unwrap().cmd,
            UploadCommand::OptIn
        ));
    }
}
