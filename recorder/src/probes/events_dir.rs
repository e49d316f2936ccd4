//! `seglog probe events-dir DIR`: the Azure Linux agent's event collection.
//!
//! Sources: `DIR` itself (named after its last path component) and each subdirectory
//! `DIR/<name>/` or `DIR/<name>/events/` (named `<name>`). In each, files named
//! `<digits>.json` hold one event object or an array of them, oldest file (smallest number)
//! first. An event needs the fields `Version`, `Timestamp`, `TaskName`, `EventLevel`,
//! `Message`, `EventPid`, `EventTid` and `OperationId` (names case-insensitive; other fields
//! are ignored); values are strings (`EventPid`/`EventTid` may be integers).
//!
//! Caps: a file over 4 MiB is dropped whole; `Message` is cut to 3072 characters; an event
//! whose fields add up to more than 6144 characters is dropped; at most `--max-events`
//! events per source per `--period` are recorded (files that do not fit wait for the next
//! period; a single file larger than the cap keeps its first events and drops the rest).
//! A file that does not parse is retried (it may still be being written); after the third
//! try it is moved, with the file too large for the cap and one that holds no event object,
//! into `DIR/.quarantine/<reason>/` (named `<source>_<file>`) for a person to look at,
//! never deleted. A file is deleted only after its events were appended.
//!
//! Each event becomes a record `<class-prefix>/<source>` with severity from `EventLevel`
//! (Critical 4, Error 3, Warning 2, else 1), an event id from `OperationId` when it is a
//! GUID, the event's own `Timestamp` (RFC 3339, UTC when it has no offset) as the record
//! time (the time of collection when it does not parse), and the normalised event as a JSON
//! payload. Dropped events are counted by reason
//! in the log's counters (`events_dir.<reason>`) and reported on standard error.
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::full_disk::FullDisk;
use crate::record::{Classification, EventId, Severity, MAX_CLASSIFICATION_LEN};
use crate::{RecordBuilder, Recorder};

/// Largest event file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;
/// Largest event (sum of its field lengths, in characters).
pub const MAX_EVENT_CHARS: usize = 6 * 1024;
/// `Message` is cut to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 3 * 1024;
/// Tries to parse a file before it is dropped as invalid.
pub const PARSE_TRIES: u32 = 3;
/// Where files that cannot be parsed are kept, under the events directory (never scanned).
pub const QUARANTINE_DIR: &str = ".quarantine";
/// The fields every event must have.
pub const REQUIRED_FIELDS: [&str; 8] = [
    "Version",
    "Timestamp",
    "TaskName",
    "EventLevel",
    "Message",
    "EventPid",
    "EventTid",
    "OperationId",
];

/// Options of `seglog probe events-dir`.
#[derive(Debug, Clone, clap::Args)]
pub struct EventsDirArgs {
    /// The directory to collect event files from.
    // Its own id: `dir` is the global --dir (the log directory).
    #[arg(id = "events_dir", value_name = "DIR")]
    pub dir: PathBuf,
    /// Collect what is there now, then exit (the default).
    #[arg(long, conflicts_with = "watch")]
    pub once: bool,
    /// Keep collecting every --scan-interval.
    #[arg(long)]
    pub watch: bool,
    /// Time between scans with --watch.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    pub scan_interval: Duration,
    /// Stop watching after this long (default: run until killed).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, requires = "watch")]
    pub duration: Option<Duration>,
    /// Most events recorded per source per period.
    #[arg(long, value_name = "N", default_value_t = 360)]
    pub max_events: u64,
    /// The period of --max-events.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub period: Duration,
    /// Wait between tries of a file that does not parse yet.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_delay: Duration,
    /// DOMAIN/PROBE of the records; the source name is the third part.
    #[arg(long, value_name = "DOMAIN/PROBE", default_value = "org.seglog/events")]
    pub class_prefix: String,
}

/// What one collection pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Files deleted after processing (or dropped whole).
    pub files: u64,
    /// Events recorded.
    pub recorded: u64,
    /// Files left for a later period (cap reached).
    pub deferred: u64,
    /// Files moved to the quarantine folder (they do not parse).
    pub quarantined: u64,
    /// Dropped events (files, for file-level reasons) by reason.
    pub dropped: BTreeMap<&'static str, u64>,
    /// Events the rate limiter spooled (recorded, held back from upload).
    pub spooled: u64,
    /// The latest release time of those (wall ms since the Unix epoch).
    pub spooled_until_ms: Option<i64>,
    /// Whether the pass stopped because the log is out of space (the files not recorded
    /// stay where they are, for the next pass).
    pub out_of_space: bool,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "events-dir: {} files, {} events recorded, {} files deferred",
            self.files, self.recorded, self.deferred
        )?;
        if self.quarantined > 0 {
            write!(
                f,
                ", {} unparseable files moved to {QUARANTINE_DIR}/",
                self.quarantined
            )?;
        }
        if !self.dropped.is_empty() {
            let parts: Vec<String> = self
                .dropped
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            write!(f, ", dropped: {}", parts.join(" "))?;
        }
        if self.spooled > 0 {
            write!(
                f,
                ", {} held back by the rate limit (spooled)",
                self.spooled
            )?;
            if let Some(u) = self.spooled_until_ms {
                let now = crate::counters::now_wall_ms();
                write!(f, " {}", crate::counters::describe_release(u, now))?;
            }
        }
        if self.out_of_space {
            write!(
                f,
                "; stopped: the log is out of space (files left in place)"
            )?;
        }
        Ok(())
    }
}

/// Why an event (or file) was dropped.
fn drop_reason_key(reason: &'static str) -> String {
    format!("events_dir.{reason}")
}

/// A validated event: its normalised fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Canonical field name to value.
    pub fields: BTreeMap<&'static str, String>,
}

impl Event {
    /// Severity from `EventLevel`.
    pub fn severity(&self) -> Severity {
        match self
            .fields
            .get("EventLevel")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            Some("critical") => Severity::CRITICAL,
            Some("error") => Severity::HIGH,
            Some("warning") => Severity::MEDIUM,
            _ => Severity::LOW,
        }
    }

    /// `Timestamp` as milliseconds since the epoch: RFC 3339 (`2024-05-01T12:00:00.1234567Z`,
    /// any number of fraction digits; no offset means UTC); `None` when it does not parse.
    pub fn wall_ms(&self) -> Option<i64> {
        let t = self.fields.get("Timestamp")?.trim();
        let t = t.strip_suffix(['Z', 'z']).unwrap_or(t);
        let at = humantime::parse_rfc3339_weak(t).ok()?;
        let ms = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
        i64::try_from(ms).ok()
    }

    /// `OperationId` as an event id when it is a GUID (or 32 hex characters).
    pub fn event_id(&self) -> Option<EventId> {
        let op = self.fields.get("OperationId")?;
        let hex: String = op
            .chars()
            .filter(|c| *c != '-')
            .collect::<String>()
            .to_ascii_lowercase();
        EventId::parse(&hex).ok()
    }
}

/// Validates one event against the schema; the error is the drop reason.
pub fn validate(v: &Value) -> Result<Event, &'static str> {
    let obj = v.as_object().ok_or("not_an_object")?;
    let mut fields = BTreeMap::new();
    for (k, val) in obj {
        let Some(name) = REQUIRED_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(k)) else {
            continue;
        };
        let s = match val {
            Value::String(s) => s.trim().to_string(),
            Value::Number(n) if matches!(*name, "EventPid" | "EventTid") && n.is_u64() => {
                n.to_string()
            }
            _ => return Err("invalid_field"),
        };
        fields.insert(*name, s);
    }
    let msg = fields.get_mut("Message").ok_or("missing_field")?;
    if msg.is_empty() {
        return Err("empty_message");
    }
    if msg.chars().count() > MAX_MESSAGE_CHARS {
        *msg = msg.chars().take(MAX_MESSAGE_CHARS).collect();
    }
    if REQUIRED_FIELDS.iter().any(|f| !fields.contains_key(f)) {
        return Err("missing_field");
    }
    if fields.values().map(|s| s.chars().count()).sum::<usize>() > MAX_EVENT_CHARS {
        return Err("event_too_large");
    }
    Ok(Event { fields })
}

enum FileRead {
    Events(Vec<Value>),
    Dropped(&'static str),
    Gone,
}

/// Reads and parses an event file, retrying while it may still be being written.
fn read_file(path: &Path, retry_delay: Duration) -> std::io::Result<FileRead> {
    let mut tries = 0;
    loop {
        tries += 1;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FileRead::Gone),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Ok(FileRead::Dropped("file_too_large"));
        }
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Array(a)) => return Ok(FileRead::Events(a)),
            Ok(v @ Value::Object(_)) => return Ok(FileRead::Events(vec![v])),
            Ok(_) => return Ok(FileRead::Dropped("not_an_object")),
            Err(_) if tries < PARSE_TRIES => std::thread::sleep(retry_delay),
            Err(_) => return Ok(FileRead::Dropped("invalid_json")),
        }
    }
}

fn sanitize(name: &str, room: usize) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '/' {
                c
            } else {
                '_'
            }
        })
        .take(room)
        .collect();
    if s.is_empty() {
        "_".into()
    } else {
        s
    }
}

fn event_files(dir: &Path) -> Vec<(u128, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<(u128, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let stem = name
                .strip_suffix(".json")
                .or_else(|| name.strip_suffix(".JSON"))?;
            if stem.is_empty()
                || !stem.bytes().all(|b| b.is_ascii_digit())
                || !e.file_type().ok()?.is_file()
            {
                return None;
            }
            Some((stem.parse().unwrap_or(u128::MAX), e.path()))
        })
        .collect();
    files.sort();
    files
}

/// The collector's state across passes.
pub struct EventsDir {
    args: EventsDirArgs,
    prefix_room: usize,
    period_use: HashMap<String, (Instant, u64)>,
    full: FullDisk,
}

impl EventsDir {
    /// Checks the options (the events directory must exist).
    pub fn new(args: EventsDirArgs) -> anyhow::Result<EventsDir> {
        anyhow::ensure!(
            args.dir.is_dir(),
            "{} is not a directory (events-dir DIR)",
            args.dir.display()
        );
        Classification::new(&format!("{}/x", args.class_prefix))
            .map_err(|e| anyhow::anyhow!("--class-prefix must be DOMAIN/PROBE: {e}"))?;
        anyhow::ensure!(args.max_events > 0, "--max-events must be at least 1");
        let prefix_room = MAX_CLASSIFICATION_LEN - args.class_prefix.len() - 1;
        Ok(EventsDir {
            args,
            prefix_room,
            period_use: HashMap::new(),
            full: FullDisk::new("events-dir"),
        })
    }

    /// `(--watch, --scan-interval, --duration)`.
    fn schedule(&self) -> (bool, Duration, Option<Duration>) {
        (self.args.watch, self.args.scan_interval, self.args.duration)
    }

    /// `(source name, directory)` pairs to scan.
    fn sources(&self) -> Vec<(String, PathBuf)> {
        let dir = &self.args.dir;
        let own = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "events".into());
        let mut out = vec![(sanitize(&own, self.prefix_room), dir.clone())];
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut subs: Vec<_> = rd
                .flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .collect();
            subs.sort_by_key(|e| e.file_name());
            for e in subs {
                if e.file_name() == QUARANTINE_DIR {
                    continue;
                }
                let name = sanitize(&e.file_name().to_string_lossy(), self.prefix_room);
                out.push((name.clone(), e.path()));
                let nested = e.path().join("events");
                if nested.is_dir() {
                    out.push((name, nested));
                }
            }
        }
        out
    }

    /// One collection pass over every source.
    pub fn pass(&mut self, rec: &Recorder) -> anyhow::Result<Report> {
        let mut report = Report::default();
        for (source, dir) in self.sources() {
            self.collect_source(rec, &source, &dir, &mut report)?;
            if report.out_of_space {
                break;
            }
        }
        for (reason, n) in &report.dropped {
            rec.count_dropped(&drop_reason_key(reason), *n);
        }
        rec.flush_counters().ok();
        Ok(report)
    }

    fn collect_source(
        &mut self,
        rec: &Recorder,
        source: &str,
        dir: &Path,
        report: &mut Report,
    ) -> anyhow::Result<()> {
        let class = Classification::new(&format!("{}/{source}", self.args.class_prefix))?;
        let period = self.args.period;
        let files = event_files(dir);
        for (i, (_, path)) in files.iter().enumerate() {
            let entry = self
                .period_use
                .entry(source.to_string())
                .or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= period {
                *entry = (Instant::now(), 0);
            }
            let allowance = self.args.max_events.saturating_sub(entry.1);
            if allowance == 0 {
                report.deferred += (files.len() - i) as u64;
                return Ok(());
            }
            let events = match read_file(path, self.args.retry_delay)? {
                FileRead::Gone => continue,
                FileRead::Dropped(reason) => {
                    *report.dropped.entry(reason).or_default() += 1;
                    quarantine(&self.args.dir, source, path, reason)?;
                    report.quarantined += 1;
                    report.files += 1;
                    continue;
                }
                FileRead::Events(ev) => ev,
            };
            let mut events = events;
            if events.len() as u64 > allowance {
                if entry.1 > 0 {
                    // Fits in a fresh period: wait for it.
                    report.deferred += (files.len() - i) as u64;
                    return Ok(());
                }
                let over = events.len() as u64 - allowance;
                *report.dropped.entry("over_cap").or_default() += over;
                events.truncate(allowance as usize);
            }
            let mut valid = Vec::with_capacity(events.len());
            for v in &events {
                match validate(v) {
                    Ok(mut ev) => {
                        ev.fields.insert("Source", source.to_string());
                        valid.push(ev);
                    }
                    Err(reason) => *report.dropped.entry(reason).or_default() += 1,
                }
            }
            let (recorded, no_space) = record_events(rec, &class, &valid, report)?;
            match no_space {
                Some(e) => {
                    // The file is the spool: it stays until its events fit (a file that
                    // took more than one append may have some of them recorded twice).
                    self.full.failed(
                        &e,
                        "leaving event files in place until space returns (they are the spool; nothing is dropped)",
                    );
                    report.out_of_space = true;
                    report.recorded += recorded;
                    report.deferred += (files.len() - i) as u64;
                    return Ok(());
                }
                None => self.full.succeeded(),
            }
            let refused = valid.len() as u64 - recorded;
            if refused > 0 {
                *report.dropped.entry("rate_limited").or_default() += refused;
            }
            report.recorded += recorded;
            entry.1 += recorded;
            remove(path)?;
            report.files += 1;
        }
        Ok(())
    }
}

/// Moves a file that cannot be parsed to `<events dir>/.quarantine/<reason>/<source>_<name>`.
fn quarantine(events_dir: &Path, source: &str, path: &Path, reason: &str) -> anyhow::Result<()> {
    let folder = events_dir.join(QUARANTINE_DIR).join(reason);
    std::fs::create_dir_all(&folder).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the quarantine folder {}: {e}",
            folder.display()
        )
    })?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let to = folder.join(format!("{source}_{name}"));
    match std::fs::rename(path, &to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot move {} (it does not parse: {reason}) to {}: {e}",
            path.display(),
            to.display()
        )),
    }
}

fn remove(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(anyhow::anyhow!(
            "cannot delete {} after recording it: {e}",
            path.display()
        )),
    }
}

/// Appends `events` in batches that fit a segment; returns how many were recorded (the rest
/// were refused by the rate limit), and the error that stopped it when the log is out of
/// space.
fn record_events(
    rec: &Recorder,
    class: &Classification,
    events: &[Event],
    report: &mut Report,
) -> anyhow::Result<(u64, Option<crate::RecordError>)> {
    let payloads: Vec<Vec<u8>> = events
        .iter()
        .map(|e| serde_json::to_vec(&e.fields))
        .collect::<Result<_, _>>()?;
    let cap = usize::try_from(rec.log().options().segment_size / 4).unwrap_or(usize::MAX);
    let mut recorded = 0u64;
    let mut start = 0;
    while start < events.len() {
        let mut end = start;
        let mut bytes = 0;
        while end < events.len() && (end == start || bytes + payloads[end].len() + 128 <= cap) {
            bytes += payloads[end].len() + 128;
            end += 1;
        }
        let batch: Vec<RecordBuilder<'_>> = (start..end)
            .map(|i| {
                let mut b =
                    RecordBuilder::new(class.clone(), events[i].severity()).payload(&payloads[i]);
                if let Some(ms) = events[i].wall_ms() {
                    b = b.wall_ms(ms);
                }
                match events[i].event_id() {
                    Some(id) => b.event_id(id),
                    None => b,
                }
            })
            .collect();
        let outcomes = match rec.record_batch(&batch) {
            Ok(o) => o,
            Err(e) if e.is_no_space() => return Ok((recorded, Some(e))),
            Err(e) => return Err(e.into()),
        };
        for outcome in outcomes {
            match outcome {
                Ok(r) => {
                    recorded += 1;
                    if let Some(u) = r.held_back_until() {
                        report.spooled += 1;
                        report.spooled_until_ms = report.spooled_until_ms.max(Some(u));
                    }
                }
                Err(e) if e.is_rate_limited() => {}
                Err(e) => return Err(e.into()),
            }
        }
        start = end;
    }
    Ok((recorded, None))
}

/// Runs the probe.
pub fn run(mut collector: EventsDir, rec: &Recorder) -> anyhow::Result<ExitCode> {
    let (watch, interval, duration) = collector.schedule();
    let start = Instant::now();
    let mut k = 0u32;
    loop {
        let report = collector.pass(rec)?;
        if !watch || report.files > 0 || !report.dropped.is_empty() {
            eprintln!("{report}");
        }
        if !watch {
            // Files left for lack of space: the run did not do its job.
            return Ok(if report.out_of_space {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            });
        }
        k += 1;
        let next = start + interval.saturating_mul(k);
        if duration.is_some_and(|d| next > start + d) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

#[cfg(test)]
mod tests;
