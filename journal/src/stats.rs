//! `seglog journal stats`: segments, bytes, records, oldest and newest record, the uploader's
//! cursor and backlog, and the recorder's dropped counts.
//!
//! By default one pass over the log counts records exactly (it runs at the speed of
//! `verify`); `--estimate` reads only the segment headers, the first MiB of each segment and
//! the newest segments, for a quick look at a large log.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use records::RecordId;
use segment_log::format::HEADER_LEN;
use segment_log::fs::{list_segments, SEGMENTS_DIR};
use segment_log::Position;
use serde::Serialize;

use super::output::Hex;
use super::record::Rec;
use super::source::{advance, public_log_id, read_reserved_end, Item, Source};
use super::timefmt::Time;
use super::upload_state::{self, UploadState};
use super::ReadArgs;

/// Show statistics.
#[derive(Debug, Clone, clap::Args)]
pub struct StatsArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Estimate the record count from a sample instead of reading every segment.
    #[arg(long)]
    pub estimate: bool,
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Where a record is and when it was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordRef {
    /// Record id (32 hex characters).
    pub record_id: String,
    /// Segment number.
    pub segment: u64,
    /// Offset in the segment.
    pub offset: u64,
    /// Creation time (RFC 3339).
    pub time: String,
    /// Creation time, ms since the epoch.
    pub wall_ms: i64,
}

impl RecordRef {
    fn of(r: &Rec<'_>) -> Self {
        RawRef::of(r).render(r.id())
    }
}

/// What [`RecordRef`] is made of, kept without allocating (or hashing) while scanning.
#[derive(Clone, Copy)]
struct RawRef {
    position: Position,
    wall_ms: i64,
}

impl RawRef {
    fn of(r: &Rec<'_>) -> Self {
        RawRef {
            position: r.position,
            wall_ms: r.meta.wall_ms,
        }
    }

    fn render(self, id: RecordId) -> RecordRef {
        RecordRef {
            record_id: Hex(id.as_bytes()).to_string(),
            segment: self.position.segment,
            offset: self.position.offset,
            time: Time(self.wall_ms).to_string(),
            wall_ms: self.wall_ms,
        }
    }
}

/// Everything `stats` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The log directory.
    pub dir: PathBuf,
    /// Public log id (hex), when known.
    pub log_id: Option<String>,
    /// Live segments.
    pub segments: u64,
    /// Oldest and newest live segment numbers.
    pub first_segment: Option<u64>,
    /// Newest live segment number.
    pub last_segment: Option<u64>,
    /// Segments prepared ahead of need (allocated, not live yet).
    pub prepared_segments: u64,
    /// Disk bytes allocated by segment files.
    pub bytes_on_disk: u64,
    /// Bytes of frames reserved (committed or being written).
    pub bytes_used: u64,
    /// Records.
    pub records: u64,
    /// Whether `records` is exact (`false` with `--estimate`).
    pub records_exact: bool,
    /// Records by severity (exact mode only).
    pub by_severity: BTreeMap<u8, u64>,
    /// Damaged or missing ranges seen while counting (exact mode only).
    pub damaged_ranges: u64,
    /// Whole frames whose record cannot be read (exact mode only).
    pub unreadable_records: u64,
    /// The first record in position order.
    pub oldest: Option<RecordRef>,
    /// The last record in position order.
    pub newest: Option<RecordRef>,
    /// The uploader's cursor and backlog.
    pub upload: Option<UploadState>,
    /// Records the recorder refused (rate limits, invalid input), by reason.
    pub dropped: BTreeMap<String, u64>,
    /// Records kept but held back from upload by the rate limiter, by reason.
    pub spooled: BTreeMap<String, u64>,
    /// The latest release time of a spooled record (wall ms since the Unix epoch): the
    /// uploader holds spooled records back until then.
    pub spooled_until_ms: Option<i64>,
    /// Problems reading the side files (counters, cursor), reported but not fatal.
    pub warnings: Vec<String>,
    /// Segments retention removed, from the trim ledger (FORMAT.md; the uploader drops the
    /// entries of segments its cursor passed once there are more than 256).
    pub trimmed: Trimmed,
}

/// What the trim ledger lists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Trimmed {
    /// Segments listed.
    pub segments: u64,
    /// Records they held.
    pub records: u64,
    /// Lowest and highest segment number listed.
    pub first_segment: Option<u64>,
    /// Highest segment number listed.
    pub last_segment: Option<u64>,
}

/// Runs `seglog journal stats`.
pub fn run(args: StatsArgs, dir: &Path) -> anyhow::Result<ExitCode> {
    let report = collect(dir, &args.read, args.estimate)?;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    if args.json {
        serde_json::to_writer_pretty(&mut out, &report).map_err(io::Error::from)?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report)?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Gathers the report.
pub fn collect(dir: &Path, read: &ReadArgs, estimate: bool) -> anyhow::Result<Report> {
    let mut src = Source::open(dir, read)?;
    src.stop_at_current_end()?;
    let seg_dir = dir.join(SEGMENTS_DIR);
    let mut r = Report {
        dir: dir.to_path_buf(),
        records_exact: !estimate,
        ..Report::default()
    };
    let public_id = public_log_id(dir, &seg_dir);
    r.log_id = public_id.map(|id| Hex(&id).to_string());
    for seg in list_segments(&seg_dir)? {
        if seg.prepared {
            r.prepared_segments += 1;
            r.bytes_on_disk += seg.disk_bytes;
            continue;
        }
        r.segments += 1;
        r.first_segment.get_or_insert(seg.number);
        r.last_segment = Some(seg.number);
        r.bytes_on_disk += seg.disk_bytes;
        r.bytes_used += used_bytes(&seg.path);
    }
    r.upload = upload_state::read(dir, public_id);
    let cursor = r.upload.as_ref().map(UploadState::backlog_start);
    let mut backlog = (0u64, 0u64);
    if estimate {
        r.records = segment_log::stats(dir, false)?.records;
        r.oldest = first_record(&mut src)?;
        r.newest = last_record(dir, read, &r)?;
    } else {
        let mut last = src.position();
        let mut newest = None;
        while let Some(item) = src.next_item()? {
            let mut in_backlog = false;
            match item {
                Item::Record(rec) => {
                    r.records += 1;
                    *r.by_severity.entry(rec.meta.severity.get()).or_default() += 1;
                    if r.oldest.is_none() {
                        r.oldest = Some(RecordRef::of(&rec));
                    }
                    in_backlog = cursor.is_some_and(|c| rec.position >= c);
                    // Rendered once at the end: no allocation per record.
                    newest = Some(RawRef::of(&rec));
                }
                Item::Context => {}
                Item::Skipped { .. } => r.unreadable_records += 1,
                Item::Damage(_) => r.damaged_ranges += 1,
            }
            let now = src.position();
            if in_backlog {
                backlog.0 += 1;
                backlog.1 += advance(last, now);
            }
            last = now;
        }
        r.newest = newest.map(|n: RawRef| n.render(src.record_id(n.position)));
    }
    if let (Some(up), Some(c)) = (r.upload.as_mut(), cursor) {
        if estimate {
            // From the segment headers' counters: no scan.
            up.backlog_bytes = Some(uploader::backlog::backlog_bytes(dir, c));
        } else {
            up.backlog_records = Some(backlog.0);
            up.backlog_bytes = Some(backlog.1);
        }
    }
    read_counters(dir, &mut r);
    match segment_log::ledger::read(dir) {
        Ok(l) => {
            (r.trimmed.segments, r.trimmed.records) = l.totals();
            r.trimmed.first_segment = l.entries.keys().next().copied();
            r.trimmed.last_segment = l.entries.keys().next_back().copied();
        }
        Err(e) => r.warnings.push(format!("trimmed counts unavailable: {e}")),
    }
    Ok(r)
}

/// Reserved bytes past the header of one segment (0 if its header cannot be read).
pub fn used_bytes(path: &Path) -> u64 {
    read_reserved_end(path).map_or(0, |end| end.saturating_sub(HEADER_LEN))
}

fn first_record(src: &mut Source) -> anyhow::Result<Option<RecordRef>> {
    while let Some(item) = src.next_item()? {
        if let Item::Record(rec) = item {
            return Ok(Some(RecordRef::of(&rec)));
        }
    }
    Ok(None)
}

/// The last record: reads the newest segment, then older ones until one holds a record.
fn last_record(dir: &Path, read: &ReadArgs, r: &Report) -> anyhow::Result<Option<RecordRef>> {
    let (Some(first), Some(last)) = (r.first_segment, r.last_segment) else {
        return Ok(None);
    };
    for n in (first..=last).rev() {
        if !dir
            .join(SEGMENTS_DIR)
            .join(segment_log::fs::segment_file_name(n, "seg"))
            .exists()
        {
            continue;
        }
        let mut src = Source::open_at(
            dir,
            read,
            Position {
                segment: n,
                offset: 0,
            },
        )?;
        src.stop_at_current_end()?;
        let mut newest = None;
        while let Some(item) = src.next_item()? {
            if let Item::Record(rec) = item {
                newest = Some(RecordRef::of(&rec));
            }
        }
        if newest.is_some() {
            return Ok(newest);
        }
    }
    Ok(None)
}

fn read_counters(dir: &Path, r: &mut Report) {
    match recorder::counters::read(dir) {
        Ok(c) => {
            r.dropped = c.dropped;
            r.spooled = c.spooled;
            r.spooled_until_ms = c.spooled_until_ms;
        }
        Err(e) => r.warnings.push(format!("dropped counts unavailable: {e}")),
    }
}

fn write_text(out: &mut impl Write, r: &Report) -> io::Result<()> {
    writeln!(out, "log directory     {}", r.dir.display())?;
    if let Some(id) = &r.log_id {
        writeln!(out, "public log id     {id}")?;
    }
    match (r.first_segment, r.last_segment) {
        (Some(a), Some(b)) => {
            writeln!(out, "segments          {} (numbers {a} to {b})", r.segments)?
        }
        _ => writeln!(out, "segments          0")?,
    }
    if r.prepared_segments > 0 {
        writeln!(
            out,
            "prepared          {} (allocated ahead of need)",
            r.prepared_segments
        )?;
    }
    writeln!(
        out,
        "disk              {} allocated, {} used by frames",
        Bytes(r.bytes_on_disk),
        Bytes(r.bytes_used)
    )?;
    write!(out, "records           {}", r.records)?;
    if !r.records_exact {
        write!(out, " (estimated)")?;
    }
    writeln!(out)?;
    if !r.by_severity.is_empty() {
        let parts: Vec<String> = r
            .by_severity
            .iter()
            .map(|(s, n)| format!("{s}: {n}"))
            .collect();
        writeln!(out, "by severity       {}", parts.join(", "))?;
    }
    if r.records_exact {
        writeln!(out, "damaged ranges    {}", r.damaged_ranges)?;
        if r.unreadable_records > 0 {
            writeln!(out, "unreadable        {} records", r.unreadable_records)?;
        }
    }
    for (label, rec) in [("oldest record", &r.oldest), ("newest record", &r.newest)] {
        if let Some(rec) = rec {
            writeln!(
                out,
                "{label:<17} {} ({} at {}:{})",
                rec.time, rec.record_id, rec.segment, rec.offset
            )?;
        }
    }
    match &r.upload {
        Some(up) => write_upload(out, up)?,
        None => writeln!(out, "upload            no uploader state in this directory")?,
    }
    let total_dropped: u64 = r.dropped.values().sum();
    write!(out, "dropped           {total_dropped}")?;
    if total_dropped > 0 {
        let parts: Vec<String> = r.dropped.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        write!(out, " ({})", parts.join(", "))?;
    }
    writeln!(out)?;
    let total_spooled: u64 = r.spooled.values().sum();
    write!(
        out,
        "spooled           {total_spooled} held back by the rate limit"
    )?;
    if total_spooled > 0 {
        let parts: Vec<String> = r.spooled.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        write!(out, " ({})", parts.join(", "))?;
    }
    if let Some(until) = r.spooled_until_ms {
        let now = recorder::counters::now_wall_ms();
        write!(
            out,
            "; {}",
            recorder::counters::describe_release(until, now)
        )?;
    }
    writeln!(out)?;
    if let (Some(a), Some(b)) = (r.trimmed.first_segment, r.trimmed.last_segment) {
        writeln!(
            out,
            "trimmed           {} records in {} segments ({a} to {b}; trim ledger)",
            r.trimmed.records, r.trimmed.segments
        )?;
    }
    for w in &r.warnings {
        writeln!(out, "warning           {w}")?;
    }
    Ok(())
}

fn write_upload(out: &mut impl Write, up: &UploadState) -> io::Result<()> {
    match up.cursor {
        Some(c) => writeln!(out, "upload cursor     {c}")?,
        None => writeln!(out, "upload cursor     none (starts at the oldest record)")?,
    }
    if let Some((a, b)) = up.in_flight {
        writeln!(
            out,
            "in flight         {a} to {b} (sent, not yet acknowledged)"
        )?;
    }
    match (up.backlog_records, up.backlog_bytes) {
        (Some(n), Some(b)) => writeln!(out, "upload backlog    {n} records, {}", Bytes(b))?,
        (None, Some(b)) => writeln!(out, "upload backlog    {}", Bytes(b))?,
        _ => {}
    }
    write!(out, "uploaded          {} records", up.delivered_records)?;
    if let Some(t) = up.last_success_ms {
        write!(out, ", last at {}", Time(t))?;
    }
    writeln!(out)?;
    if let Some(e) = &up.last_error {
        writeln!(out, "last upload error {e}")?;
    }
    if up.expired_records + up.dead_lettered_records + up.corrupt_ranges > 0 {
        writeln!(
            out,
            "not uploaded      {} expired by retention, {} dead-lettered, {} damaged ranges skipped",
            up.expired_records, up.dead_lettered_records, up.corrupt_ranges
        )?;
    }
    for w in &up.warnings {
        writeln!(out, "upload warning    {w}")?;
    }
    Ok(())
}

/// A byte count with a binary unit.
struct Bytes(u64);

impl std::fmt::Display for Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
        let mut v = self.0 as f64;
        let mut unit = 0;
        while v >= 1024.0 && unit + 1 < UNITS.len() {
            v /= 1024.0;
            unit += 1;
        }
        let name = UNITS.get(unit).copied().unwrap_or("B");
        if unit == 0 {
            write!(f, "{} B", self.0)
        } else {
            write!(f, "{v:.1} {name}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units() {
        assert_eq!(Bytes(512).to_string(), "512 B");
        assert_eq!(Bytes(1536).to_string(), "1.5 KiB");
        assert_eq!(Bytes(16 << 20).to_string(), "16.0 MiB");
    }
}
