//! `seglog journal verify`: checks every segment header and frame and every record's header,
//! prints each damaged range and a summary. Exit status: 0 clean, 1 damage found, 2 could not
//! read (returned as an error, which `main` maps to 2).
//!
//! On a live log, a record being written at that moment is not damage: the reader waits
//! `--hole-timeout` for a reserved frame to be committed before calling it abandoned, and the
//! space after the newest reservation is the live end, not a hole.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use segment_log::format::{FRAME_ALIGN, HEADER_LEN, OFF_RESERVED_END};
use segment_log::fs::{list_segments, SEGMENTS_DIR};
use segment_log::{Damage, DamageReason, LogId};
use serde::Serialize;

use super::source::{advance, is_newer_version, read_header, Item, Source};
use super::ReadArgs;

/// Verify a log.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// One JSON object per problem, then a summary object.
    #[arg(long)]
    pub json: bool,
    /// Print only the summary.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// `damage`, `unreadable_record`, `counter`, `foreign_segment` or `log_id`.
    pub kind: &'static str,
    /// Segment number (first missing one for missing segments).
    pub segment: u64,
    /// The file involved.
    pub file: PathBuf,
    /// Byte offset where the problem starts.
    pub offset: u64,
    /// Bytes affected (0 when unknown, e.g. missing segments).
    pub length: u64,
    /// Stable short code (`checksum`, `truncated`, `bad_header`, `missing_segments`...).
    pub code: &'static str,
    /// A sentence saying what is wrong.
    pub reason: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {} offset {} length {}: {} [{}]",
            self.segment,
            self.offset,
            self.length,
            self.reason,
            self.file.display()
        )
    }
}

/// What verify counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Live segment files.
    pub segments: u64,
    /// Records that decoded.
    pub records: u64,
    /// Writer context frames.
    pub contexts: u64,
    /// Bytes of frames examined.
    pub bytes_checked: u64,
    /// Damaged or missing ranges and other problems.
    pub problems: u64,
    /// Bytes inside damaged ranges.
    pub damaged_bytes: u64,
    /// Segment numbers reported missing.
    pub missing_segments: u64,
    /// Checksum-valid frames whose record could not be decoded.
    pub unreadable_records: u64,
    /// Segment files written by a newer seglog (reported, then exit 2: upgrade seglog).
    #[serde(skip)]
    pub newer_segments: Vec<PathBuf>,
}

/// Runs `seglog journal verify`.
pub fn run(args: VerifyArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let summary = verify(dir, &args.read, |p| {
        if args.quiet {
            return Ok(());
        }
        if args.json {
            serde_json::to_writer(
                &mut out,
                &Tagged {
                    r#type: "problem",
                    body: p,
                },
            )
            .map_err(io::Error::from)?;
            writeln!(out)
        } else {
            writeln!(out, "damaged: {p}")
        }
    })?;
    if args.json {
        serde_json::to_writer(
            &mut out,
            &Tagged {
                r#type: "summary",
                body: &summary,
            },
        )
        .map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        write_summary(&mut out, dir, &summary)?;
    }
    out.flush()?;
    if let Some(first) = summary.newer_segments.first() {
        // README exit codes: a segment written by a newer seglog is an error (2), not damage.
        anyhow::bail!(
            "segment file {} was written by a newer seglog ({} such file(s), each reported \
             above as unsupported_version); upgrade seglog to read them",
            first.display(),
            summary.newer_segments.len()
        );
    }
    Ok(if summary.problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    r#type: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

fn write_summary(out: &mut impl Write, dir: &Path, s: &Summary) -> io::Result<()> {
    write!(
        out,
        "verify {}: {} segments, {} records, {} contexts, {} bytes checked: ",
        dir.display(),
        s.segments,
        s.records,
        s.contexts,
        s.bytes_checked
    )?;
    if s.problems == 0 {
        return writeln!(out, "clean");
    }
    write!(
        out,
        "{} problems, {} bytes damaged",
        s.problems, s.damaged_bytes
    )?;
    if s.missing_segments > 0 {
        write!(out, ", {} segments missing", s.missing_segments)?;
    }
    if s.unreadable_records > 0 {
        write!(out, ", {} unreadable records", s.unreadable_records)?;
    }
    writeln!(out)
}

/// Verifies the log in `dir`, calling `report` for each problem as it is found.
pub fn verify(
    dir: &Path,
    read: &ReadArgs,
    mut report: impl FnMut(&Problem) -> io::Result<()>,
) -> anyhow::Result<Summary> {
    let mut src = Source::open(dir, read)?;
    src.report_newer_versions();
    // A live log may grow faster than it can be checked: verify what existed at the start.
    src.stop_at_current_end()?;
    let mut s = Summary::default();
    let mut emit = |s: &mut Summary, p: Problem| -> io::Result<()> {
        s.problems += 1;
        s.damaged_bytes += p.length;
        report(&p)
    };
    for p in check_headers(dir, &mut s)? {
        emit(&mut s, p)?;
    }
    let mut last = src.position();
    // Where the last whole frame of each segment ends, to check its reservation counter.
    let mut frames_end = BTreeMap::new();
    loop {
        let Some(item) = src.next_item()? else { break };
        let whole_frame = !matches!(item, Item::Damage(_));
        let problem = match item {
            Item::Record(_) => {
                s.records += 1;
                None
            }
            Item::Context => {
                s.contexts += 1;
                None
            }
            Item::Skipped { position, error } => {
                s.unreadable_records += 1;
                Some(Problem {
                    kind: "unreadable_record",
                    segment: position.segment,
                    file: src.segment_path(position.segment),
                    offset: position.offset,
                    length: 0,
                    code: error.code(),
                    reason: format!("frame is whole but its record cannot be read: {error}"),
                })
            }
            Item::Damage(d) => {
                if let DamageReason::MissingSegments { count } = d.reason {
                    s.missing_segments += count;
                }
                let mut p = damage_problem(&d, &src.segment_path(d.segment));
                if is_newer_version(&d) {
                    s.newer_segments.push(p.file.clone());
                    p.code = "unsupported_version";
                }
                Some(p)
            }
        };
        let now = src.position();
        if whole_frame {
            frames_end.insert(now.segment, now.offset);
        }
        s.bytes_checked += advance(last, now);
        last = now;
        if let Some(p) = problem {
            emit(&mut s, p)?;
        }
    }
    for (&segment, &end) in &frames_end {
        if let Some(p) = counter_problem(&src.segment_path(segment), segment, end) {
            emit(&mut s, p)?;
        }
    }
    Ok(s)
}

/// The reservation counter of a segment checked against its frames: a counter that lies
/// below the end of the last whole frame (rolled back or damaged; readers scan past it), is
/// not 8-aligned or points inside the header. Read after the frames, so a live writer's
/// counter (which only grows, and is raised before a frame is written) never reads as lying.
/// A counter at or past the capacity is a full or sealed segment.
fn counter_problem(path: &Path, segment: u64, frames_end: u64) -> Option<Problem> {
    let head = read_header(path).ok()?;
    let mut word = [0u8; 8];
    File::open(path)
        .and_then(|f| f.read_exact_at(&mut word, OFF_RESERVED_END as u64))
        .ok()?;
    let counter = u64::from_le_bytes(word);
    if counter >= head.capacity {
        return None;
    }
    let (code, why) = if counter < HEADER_LEN || counter % FRAME_ALIGN != 0 {
        (
            "bad_counter",
            "is not an 8-aligned offset past the 256-byte header",
        )
    } else if counter < frames_end {
        (
            "counter_below_frames",
            "is below the end of the last whole frame",
        )
    } else {
        return None;
    };
    Some(Problem {
        kind: "counter",
        segment,
        file: path.to_path_buf(),
        offset: OFF_RESERVED_END as u64,
        length: 0,
        code,
        reason: format!(
            "reservation counter (header offset 128) is {counter} but whole frames end at \
             {frames_end}: the counter {why} (damaged or rolled back); readers scan past it, \
             and the next writer to open the log alone raises it past the frames"
        ),
    })
}

fn damage_problem(d: &Damage, path: &Path) -> Problem {
    let (length, reason) = match &d.reason {
        DamageReason::MissingSegments { count } => (
            0,
            format!(
                "segment files {}..={} are missing (deleted, or trimmed while being read)",
                d.segment,
                d.segment.saturating_add(count.saturating_sub(1))
            ),
        ),
        DamageReason::BadHeader(_) | DamageReason::Unreadable(_) if d.len == 0 => {
            // The whole segment is skipped: its size is the damaged length.
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            (len, format!("whole segment skipped: {}", d.reason))
        }
        _ => (d.len, d.reason.to_string()),
    };
    Problem {
        kind: "damage",
        segment: d.segment,
        file: path.to_path_buf(),
        offset: d.offset,
        length,
        code: d.reason.code(),
        reason,
    }
}

/// Checks what the frame reader does not: the log-id file, and that every segment header
/// names this log (a segment copied in from another log would otherwise read as ours).
fn check_headers(dir: &Path, s: &mut Summary) -> anyhow::Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let id_path = dir.join(segment_log::fs::LOG_ID_FILE);
    let expected = match LogId::load(dir) {
        Ok(id) => id.map(|id| id.public()),
        Err(e) if e.is_corruption() => {
            problems.push(Problem {
                kind: "log_id",
                segment: 0,
                file: id_path,
                offset: 0,
                length: 0,
                code: "bad_log_id",
                reason: format!("{e}"),
            });
            None
        }
        Err(e) => return Err(anyhow::Error::new(e).context("cannot read the log id")),
    };
    let segs = list_segments(&dir.join(SEGMENTS_DIR))?;
    for seg in segs.iter().filter(|f| !f.prepared) {
        s.segments += 1;
        // Unreadable or undecodable headers are reported by the frame reader.
        let (Some(expected), Ok(h)) = (expected, read_header(&seg.path)) else {
            continue;
        };
        if h.log_id != expected {
            problems.push(Problem {
                kind: "foreign_segment",
                segment: seg.number,
                file: seg.path.clone(),
                offset: 0,
                length: 0,
                code: "foreign_segment",
                reason: format!(
                    "segment header names log {} but this log is {}: the file belongs to another log",
                    super::output::Hex(&h.log_id),
                    super::output::Hex(&expected)
                ),
            });
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_segments_name_the_range() {
        let d = Damage {
            segment: 4,
            offset: 0,
            len: 0,
            reason: DamageReason::MissingSegments { count: 3 },
        };
        let p = damage_problem(&d, Path::new("/l/segments/4.seg"));
        assert!(p.reason.contains("4..=6"), "{}", p.reason);
        assert_eq!(p.code, "missing_segments");
    }

    #[test]
    fn summary_says_clean_or_counts_problems() {
        let mut out = Vec::new();
        write_summary(
            &mut out,
            Path::new("/l"),
            &Summary {
                segments: 2,
                records: 5,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(String::from_utf8(out).unwrap().ends_with(": clean\n"));
        let mut out = Vec::new();
        let s = Summary {
            problems: 2,
            damaged_bytes: 64,
            missing_segments: 1,
            ..Default::default()
        };
        write_summary(&mut out, Path::new("/l"), &s).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("2 problems, 64 bytes damaged, 1 segments missing"),
            "{text}"
        );
    }
}
