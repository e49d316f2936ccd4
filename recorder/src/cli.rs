//! `seglog record` and `seglog probe`.
use std::io::{IsTerminal, Read};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::config::Config;
use crate::probes;
use crate::record::{Classification, EventId, Severity};
use crate::{RecordBuilder, Recorder};
use config_layers::GlobalArgs;

/// Write one record and print its id (options as in telemetrics' telem-record-gen).
///
/// The payload comes from -p, from -P FILE, or from standard input.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Classification DOMAIN/PROBE/REST, e.g. org.example/crash/segfault (three non-empty
    /// parts of printable ASCII, at most 140 bytes).
    #[arg(short = 'c', long = "class", value_name = "CLASS")]
    pub class: Classification,
    /// Severity: 1 (low), 2 (medium), 3 (high) or 4 (critical), or the name (the record's own
    /// severity; `journal -s` selects records of exactly this severity, `journal -p` a range).
    #[arg(short = 's', long = "severity", value_name = "SEV")]
    pub severity: Severity,
    /// The payload text.
    #[arg(
        short = 'p',
        long = "payload",
        value_name = "PAYLOAD",
        conflicts_with = "payload_file"
    )]
    pub payload: Option<String>,
    /// Read the payload from FILE ("-" for standard input).
    #[arg(short = 'P', long = "payload-file", value_name = "FILE")]
    pub payload_file: Option<PathBuf>,
    /// Event id grouping records of one event: 32 hex characters (either case).
    #[arg(short = 'e', long = "event-id", value_name = "EVENT_ID")]
    pub event_id: Option<EventId>,
}

/// Reads at most `max + 1` bytes, so an oversized input is detected without reading it all.
pub(crate) fn read_bounded(r: impl Read, max: usize, what: &str) -> anyhow::Result<Vec<u8>> {
    let mut buf = Vec::new();
    r.take(max as u64 + 1)
        .read_to_end(&mut buf)
        .with_context(|| format!("cannot read the payload from {what}"))?;
    if buf.len() > max {
        bail!("payload from {what} is larger than the maximum of {max} bytes (log.max_record_size minus the header); split it or raise log.max_record_size");
    }
    Ok(buf)
}

/// Opens a recorder from the layered configuration.
pub(crate) fn open_recorder(global: &GlobalArgs, prepare_ahead: bool) -> anyhow::Result<Recorder> {
    let cfg = Config::load(global)?;
    match Recorder::open_with(&cfg, segment_log::Options::default().clock, prepare_ahead) {
        Ok(rec) => Ok(rec),
        // The sentence names the directory, its group and what to do.
        Err(crate::OpenError::Log(e @ segment_log::Error::NoAccess { .. })) => Err(e.into()),
        Err(e) => Err(anyhow::Error::new(e).context(format!(
            "cannot open the log in {} (set --dir or SEGLOG_DIR)",
            cfg.log.dir.display()
        ))),
    }
}

/// Runs `seglog record`.
pub fn run_record(args: RecordArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let rec = open_recorder(global, false)?;
    let max = rec.max_payload();
    let payload = match (&args.payload, &args.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(f)) if f.as_os_str() == "-" => {
            read_bounded(std::io::stdin().lock(), max, "standard input")?
        }
        (None, Some(f)) => {
            let file = std::fs::File::open(f)
                .with_context(|| format!("cannot open payload file {}", f.display()))?;
            read_bounded(file, max, &f.display().to_string())?
        }
        (None, None) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                bail!("no payload: give -p PAYLOAD, -P FILE, or pipe it on standard input (use -p '' for an empty payload)");
            }
            read_bounded(stdin.lock(), max, "standard input")?
        }
    };
    let mut b = RecordBuilder::new(args.class, args.severity).payload(&payload);
    if let Some(e) = args.event_id {
        b = b.event_id(e);
    }
    let receipt = rec.record(&b)?;
    println!("{}", receipt.id());
    Ok(ExitCode::SUCCESS)
}

/// Built-in probes.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProbeCommand {
    /// Write one "hello" record (org.seglog/hello/world) and print its id: checks that
    /// recording works.
    Hello,
    /// Poll /proc/net/dev at 10 Hz and write the non-zero per-interface byte deltas as one
    /// record every 10 s.
    Netstat(probes::netstat::NetstatArgs),
    /// Ingest `<digits>.json` event files from a directory (one event or an array each) and
    /// delete each file once its events are recorded.
    EventsDir(probes::events_dir::EventsDirArgs),
    /// Record each line of standard input (for logger, rsyslog omprog, `journalctl -f | ...`).
    Pipe(probes::pipe::PipeArgs),
}

/// Runs `seglog probe ...`.
pub fn run_probe(cmd: ProbeCommand, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    match cmd {
        ProbeCommand::Hello => {
            let rec = open_recorder(global, false)?;
            let receipt = probes::hello(&rec)?;
            println!("{}", receipt.id());
            Ok(ExitCode::SUCCESS)
        }
        // Arguments are checked before the log is opened (a bad flag creates nothing).
        ProbeCommand::Netstat(a) => {
            a.check()?;
            probes::netstat::run(a, &open_recorder(global, true)?)
        }
        ProbeCommand::EventsDir(a) => {
            let probe = probes::events_dir::EventsDir::new(a)?;
            probes::events_dir::run(probe, &open_recorder(global, false)?)
        }
        ProbeCommand::Pipe(a) => {
            a.check()?;
            probes::pipe::run(a, &open_recorder(global, true)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct T {
        #[command(flatten)]
        global: GlobalArgs,
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Record(RecordArgs),
        #[command(subcommand)]
        Probe(ProbeCommand),
    }

    #[test]
    fn cli_definition_is_consistent() {
        T::command().debug_assert();
    }

    #[test]
    fn record_flags_parse_like_telem_record_gen() {
        let t = T::try_parse_from([
            "seglog",
            "record",
            "-c",
            "org.example/a/b",
            "-s",
            "3",
            "-p",
            "x",
            "-e",
            "5de9de8d5f3c6a7d445d75ba01cc3322",
        ])
        .unwrap();
        let Cmd::Record(r) = t.cmd else { panic!() };
        assert_eq!(r.class.as_str(), "org.example/a/b");
        assert_eq!(r.severity, Severity::HIGH);
        assert_eq!(r.payload.as_deref(), Some("x"));
        assert!(r.event_id.is_some());
    }

    #[test]
    fn bad_record_flags_name_the_field() {
        for (args, needle) in [
            (vec!["-c", "nope", "-s", "1"], "DOMAIN/PROBE/REST"),
            (vec!["-c", "a/b/c", "-s", "9"], "severity"),
            (vec!["-c", "a/b/c", "-s", "1", "-e", "XYZ"], "event id"),
            (
                vec!["-c", "a/b/c", "-s", "1", "-p", "x", "-P", "f"],
                "cannot be used with",
            ),
        ] {
            let e = T::try_parse_from([&["seglog", "record"][..], &args].concat())
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{args:?}: {e}");
        }
    }

    #[test]
    fn events_dir_positional_does_not_clobber_the_global_dir() {
        let t = T::try_parse_from([
            "seglog",
            "--dir",
            "/log",
            "probe",
            "events-dir",
            "/events",
            "--once",
        ])
        .unwrap();
        assert_eq!(t.global.dir, Some(PathBuf::from("/log")));
        let Cmd::Probe(ProbeCommand::EventsDir(a)) = t.cmd else {
            panic!("not events-dir")
        };
        assert_eq!(a.dir, PathBuf::from("/events"));
    }

    #[test]
    fn bounded_reads_refuse_oversized_payloads() {
        assert_eq!(read_bounded(&b"abc"[..], 3, "x").unwrap(), b"abc");
        let e = read_bounded(&b"abcd"[..], 3, "x").unwrap_err().to_string();
        assert!(e.contains("larger than the maximum of 3 bytes"), "{e}");
    }
}
