//! `seglog journal export`: every record as a JSON line, with its payload and its writer's
//! context, to stdout or a file; a progress bar on stderr when it is a terminal.
//!
//! A file is written beside its final name and renamed into place at the end, so an
//! interrupted export never leaves a truncated file under the name asked for. It is created
//! 0600: it holds the payloads.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::SystemTime;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use segment_log::fs::{list_segments, SEGMENTS_DIR};

use super::filter::FilterArgs;
use super::list::Warnings;
use super::output::{Json, JsonShape};
use super::source::{advance, Item, Source};
use super::stats::used_bytes;
use super::ReadArgs;

/// Export records as JSON lines.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Write to FILE (created 0600; replaced when the export completes) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub output_file: Option<PathBuf>,
    /// Output form: `json` (JSON lines, the only form export writes; accepted so that `-o`
    /// means the same as in `journal list`). A file name here is refused: use --output-file.
    #[arg(short = 'o', long, value_name = "MODE", value_parser = parse_export_mode)]
    pub output: Option<String>,
    /// Never show a progress bar (it is shown only when stderr is a terminal).
    #[arg(long)]
    pub no_progress: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// `-o` on export: only `json`; anything else (such as the file name `-o` took before
/// --output-file) is refused with what to write instead.
fn parse_export_mode(s: &str) -> Result<String, String> {
    match s {
        "json" => Ok(s.to_owned()),
        _ => Err(format!(
            "export writes JSON lines only, so -o/--output takes `json`; to write to a file use \
             --output-file {s}"
        )),
    }
}

/// Update the progress bar every this many bytes of log read (its atomics and clock reads
/// stay off the per-record path).
const PROGRESS_STEP: u64 = 1 << 20;

/// What an export wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Records written.
    pub records: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
}

/// Runs `seglog journal export`.
pub fn run(args: ExportArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let filter = args
        .filter
        .clone()
        .into_filter(super::timefmt::system_time_ms(SystemTime::now()))?;
    let mut src = Source::open(dir, &args.read)?;
    src.stop_at_current_end()?;
    let progress = if !args.no_progress && io::stderr().is_terminal() {
        progress_bar(dir)
    } else {
        ProgressBar::hidden()
    };
    let mut warnings = Warnings::default();
    let exported = match &args.output_file {
        None => {
            let stdout = io::stdout();
            let mut out = BufWriter::with_capacity(256 << 10, stdout.lock());
            let n = export(&mut src, &filter, &mut out, &progress, &mut warnings)?;
            out.flush()?;
            n
        }
        Some(path) => {
            let (tmp, file) = create_beside(path)?;
            let mut out = BufWriter::with_capacity(256 << 10, file);
            let result = export(&mut src, &filter, &mut out, &progress, &mut warnings)
                .and_then(|n| {
                    let file = out.into_inner().map_err(|e| e.into_error())?;
                    file.sync_all()?;
                    Ok(n)
                })
                .and_then(|n| {
                    std::fs::rename(&tmp, path).with_context(|| {
                        format!("cannot rename {} to {}", tmp.display(), path.display())
                    })?;
                    Ok(n)
                });
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result?
        }
    };
    progress.finish_and_clear();
    warnings.finish();
    let to = args
        .output_file
        .as_ref()
        .map_or_else(|| "stdout".to_owned(), |p| p.display().to_string());
    eprintln!(
        "seglog: exported {} records ({} payload bytes) to {to}",
        exported.records, exported.payload_bytes
    );
    Ok(ExitCode::SUCCESS)
}

fn export(
    src: &mut Source,
    filter: &super::filter::Filter,
    out: &mut impl Write,
    progress: &ProgressBar,
    warnings: &mut Warnings,
) -> anyhow::Result<Exported> {
    let mut json = Json::new(JsonShape {
        payload: true,
        context: true,
        pretty: false,
    });
    let mut n = Exported::default();
    let mut last = src.position();
    let mut unreported = 0u64;
    while let Some(item) = src.next_item()? {
        match &item {
            Item::Record(r) => {
                if filter.matches(r) {
                    json.write(out, r)?;
                    n.records += 1;
                    n.payload_bytes += r.payload.len() as u64;
                }
            }
            other => warnings.note(other),
        }
        let now = src.position();
        unreported += advance(last, now);
        last = now;
        if unreported >= PROGRESS_STEP {
            progress.inc(unreported);
            progress.set_message(format!("{} records", n.records));
            unreported = 0;
        }
    }
    progress.inc(unreported);
    Ok(n)
}

fn progress_bar(dir: &Path) -> ProgressBar {
    let total = list_segments(&dir.join(SEGMENTS_DIR))
        .map(|segs| {
            segs.iter()
                .filter(|s| !s.prepared)
                .map(|s| used_bytes(&s.path))
                .sum()
        })
        .unwrap_or(0);
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Creates a fresh 0600 temp file beside `path`.
fn create_beside(path: &Path) -> anyhow::Result<(PathBuf, File)> {
    let name = path
        .file_name()
        .with_context(|| format!("--output {} names no file", path.display()))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    // An export holds the log's records: private to its maker, wherever it is written.
    let file = segment_log::Sharing::Private
        .open(
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true),
            &tmp,
        )
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    Ok((tmp, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_sits_beside_the_target_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (tmp, _f) = create_beside(&dir.path().join("out.jsonl")).unwrap();
        assert_eq!(tmp.parent(), Some(dir.path()));
        assert!(tmp
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with(".out.jsonl."));
        assert_eq!(
            std::fs::metadata(&tmp).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn an_output_path_without_a_file_name_is_refused() {
        let e = create_beside(Path::new("/")).unwrap_err();
        assert!(format!("{e:#}").contains("names no file"), "{e:#}");
    }
}
