//! Retention: trims the oldest whole segments by total size and by age, and [`stats`].
//!
//! Rules: never the newest live segment (appends go there); only whole segments, oldest
//! first; usage is recomputed from the directory each time (prepared segments count, since
//! they occupy disk). Age of a segment is the age of its *successor's* creation, because a
//! segment's last record was written before the next segment was created. Within one boot the
//! age uses CLOCK_BOOTTIME, so wall-clock jumps cannot age anything; across boots the wall
//! clock is used, and a segment stamped in the future has age zero (kept).
//!
//! Every pass records what it removes in the trim ledger ([`crate::ledger`]): one entry per
//! segment with its record count, appended before the segment is unlinked when the count is
//! final (the segment's sealed record count, [`crate::seal_count`], or a scan under the lock
//! that met no hole), else counted through a descriptor opened before the unlink and
//! appended right after. Whoever finds the segment missing later states the exact count.

use std::path::Path;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FrameKind, SegmentHeader, HEADER_LEN};
use crate::fs::{self as lfs, Clock, SegmentFile};
use crate::ledger::{self, TrimEntry, TrimReason};
use crate::scan::{DamageReason, HolePolicy, SegmentScanner, Step};
use crate::seal_count;
use crate::Position;

/// Limits on what the log keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Keep total disk use (all segments, the active one included) at or under this.
    pub max_bytes: Option<u64>,
    /// Drop segments whose newest record is older than this.
    pub max_age: Option<Duration>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segment numbers removed, ascending.
    pub removed: Vec<u64>,
    /// Number of segments removed.
    pub segments_removed: u64,
    /// Records (not preambles) in the removed segments.
    pub records_removed: u64,
    /// Disk bytes freed.
    pub bytes_removed: u64,
    /// Records removed at or after the given cursor: data lost before it was consumed.
    pub unconsumed_records: u64,
    /// Disk bytes in use after the pass.
    pub bytes_after: u64,
    /// Why the pass could not append to the trim ledger, if it could not.
    pub ledger_error: Option<String>,
}

fn read_header(path: &Path) -> Option<SegmentHeader> {
    let f = std::fs::File::open(path).ok()?;
    let mut b = [0u8; HEADER_LEN as usize];
    let n = crate::scan::read_full(&f, &mut b, 0).ok()?;
    SegmentHeader::decode(b.get(..n)?).ok()
}

fn age_of(next: &SegmentHeader, clock: &dyn Clock) -> Duration {
    let ns = if next.boot_id == clock.boot_id() && next.boot_id != [0; 16] {
        clock.boot_ns().saturating_sub(next.created_boot_ns)
    } else {
        u64::try_from(clock.wall_ns().saturating_sub(next.created_wall_ns)).unwrap_or(0)
    };
    Duration::from_nanos(ns)
}

/// How long counting waits for a live writer to commit a frame in a segment being removed.
/// A writer that reserved space just before a rotation may still be copying its payload into
/// a segment that is no longer the newest; counting its reservation as a hole would
/// under-report what retention removed (found by tests/e2e/torture.rs).
const COUNT_HOLE_TIMEOUT: Duration = Duration::from_secs(1);

/// Counts records of a removed segment (all, and those at or after `cursor`), read through
/// a descriptor opened before the file was unlinked: a writer still committing into its
/// mapping lands in the same inode. Runs without the rotate lock, since it may wait for
/// such a writer (`writers_lock` is probed, as readers do).
fn count_records(
    file: std::fs::File,
    seg: &SegmentFile,
    cursor: Option<Position>,
    writers_lock: Option<&Path>,
) -> Counted {
    count_with(file, seg, cursor, writers_lock, COUNT_HOLE_TIMEOUT)
}

/// How long a count that must not hold anyone up (under the rotate lock, or in a writer's
/// background thread) waits for a reservation to be committed; a segment with a hole left
/// after it is counted later ([`count_records`]), not sealed or recorded early.
const QUICK_HOLE_TIMEOUT: Duration = Duration::from_millis(50);

fn count_with(
    file: std::fs::File,
    seg: &SegmentFile,
    cursor: Option<Position>,
    writers_lock: Option<&Path>,
    timeout: Duration,
) -> Counted {
    let holes = HolePolicy {
        quiescent: writers_lock.is_none(),
        probe: writers_lock.map(Path::to_path_buf),
        timeout,
    };
    let mut c = Counted::default();
    let Ok(mut sc) = SegmentScanner::from_file(file, &seg.path, seg.number, 1 << 20, holes) else {
        c.unsettled = true;
        return c;
    };
    while let Ok(step) = sc.next_step() {
        match step {
            Step::Frame {
                offset,
                kind: FrameKind::Record,
                ..
            } => {
                c.all += 1;
                if c.first_offset == 0 {
                    c.first_offset = offset;
                }
                c.last_offset = offset;
                if cursor.is_some_and(|c| {
                    Position {
                        segment: seg.number,
                        offset,
                    } >= c
                }) {
                    c.unconsumed += 1;
                }
            }
            Step::Frame { .. } => {}
            // A reservation not committed (yet): a writer may still fill it.
            Step::Damage(d) if d.reason == DamageReason::AbandonedReservation => {
                c.unsettled = true;
            }
            // Damaged bytes stay damaged: the count is what verifies.
            Step::Damage(_) => {}
            // Nothing committed past here: a removed segment was never the newest, so it
            // is sealed (or was left by a crash) and gets no new reservations.
            Step::Pending => {
                c.unsettled = true;
                break;
            }
            Step::End => break,
        }
    }
    c
}

/// What [`count_records`] found in one segment.
#[derive(Debug, Default, Clone)]
struct Counted {
    all: u64,
    unconsumed: u64,
    first_offset: u64,
    last_offset: u64,
    /// A hole (a reservation not committed) was skipped, or the scan could not finish: a
    /// writer may still add a record, so the count is not final.
    unsettled: bool,
}

impl Counted {
    fn entry(
        &self,
        seg: &SegmentFile,
        cursor: Option<Position>,
        reason: TrimReason,
        now: i64,
    ) -> TrimEntry {
        let inside = cursor.filter(|p| inside(*p, seg.number));
        TrimEntry {
            segment: seg.number,
            records: self.all,
            bytes: seg.disk_bytes,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            from_offset: inside.map_or(0, |p| p.offset),
            records_from: if inside.is_some() { self.unconsumed } else { 0 },
            wall_ns: now,
            reason,
        }
    }
}

/// Applies `policy`. Takes the rotate lock, so it is safe to run while writers append.
pub fn enforce(
    dir: &Path,
    policy: &RetentionPolicy,
    cursor: Option<Position>,
    clock: &dyn Clock,
) -> Result<RetentionReport> {
    let path = dir.join(lfs::ROTATE_LOCK);
    let sharing = crate::Sharing::of_dir(dir).map_err(|e| Error::io("stat", dir, e))?;
    let lock = lfs::open_lock_file(sharing, &path)?;
    lock.lock().map_err(|e| Error::io("lock", &path, e))?;
    let r = remove_locked(dir, policy, cursor, clock);
    let _ = lock.unlock();
    Ok(r?.count(cursor, Some(&dir.join(lfs::WRITERS_LOCK)), clock))
}

/// Segments removed under the rotate lock whose records are not counted yet.
pub(crate) struct Removed {
    log_dir: std::path::PathBuf,
    files: Vec<RemovedFile>,
    report: RetentionReport,
}

struct RemovedFile {
    file: std::fs::File,
    seg: SegmentFile,
    reason: TrimReason,
    /// The count, when the ledger entry was written before unlinking (from the sealed record
    /// count, or a scan under the lock that found no hole).
    pre: Option<Counted>,
}

impl Removed {
    /// Number of segments removed.
    pub(crate) fn segments_removed(&self) -> u64 {
        self.report.segments_removed
    }

    /// Counts the records of the removed segments (call after releasing the rotate lock),
    /// appends a trim-ledger entry for each segment that had none yet (so whoever finds it
    /// missing later can state how many records it held) and completes the report.
    /// `cursor` must be the one given to [`remove_locked`].
    pub(crate) fn count(
        self,
        cursor: Option<Position>,
        writers_lock: Option<&Path>,
        clock: &dyn Clock,
    ) -> RetentionReport {
        let mut report = self.report;
        let mut entries = Vec::with_capacity(self.files.len());
        for RemovedFile {
            file,
            seg,
            reason,
            pre,
        } in self.files
        {
            let c = match pre {
                Some(c) => c,
                None => {
                    let c = count_records(file, &seg, cursor, writers_lock);
                    entries.push(c.entry(&seg, cursor, reason, clock.wall_ns()));
                    c
                }
            };
            report.records_removed += c.all;
            report.unconsumed_records += c.unconsumed;
        }
        if let Err(e) = ledger::append(&self.log_dir, &entries) {
            // The segments are gone either way; a gap over them will say "count unknown".
            report.ledger_error = Some(e.to_string());
        }
        report
    }
}

/// Whether `cursor` lies inside segment `n`, past its first frame.
fn inside(cursor: Position, n: u64) -> bool {
    cursor.segment == n && cursor.offset > HEADER_LEN
}

/// Removes what `policy` says must go; the caller holds the rotate lock. Segments with a
/// sealed record count (and not holding `cursor`) get their trim-ledger entry before they
/// are unlinked; the others are counted by [`Removed::count`].
pub(crate) fn remove_locked(
    log_dir: &Path,
    policy: &RetentionPolicy,
    cursor: Option<Position>,
    clock: &dyn Clock,
) -> Result<Removed> {
    let seg_dir = &log_dir.join(lfs::SEGMENTS_DIR);
    lfs::remove_orphan_temp_files(seg_dir);
    let files = lfs::list_segments(seg_dir)?;
    let mut total: u64 = files.iter().map(|f| f.disk_bytes).sum();
    let live: Vec<&SegmentFile> = files.iter().filter(|f| !f.prepared).collect();
    let mut report = RetentionReport::default();
    let mut chosen = Vec::new();
    // Candidates: every live segment but the newest, oldest first.
    for (i, seg) in live.iter().enumerate().take(live.len().saturating_sub(1)) {
        let over_size = policy.max_bytes.is_some_and(|max| total > max);
        let too_old = policy.max_age.is_some_and(|max| {
            live.get(i + 1)
                .and_then(|next| read_header(&next.path))
                .is_some_and(|h| age_of(&h, clock) > max)
        });
        if !over_size && !too_old {
            break;
        }
        let reason = if over_size {
            TrimReason::Size
        } else {
            TrimReason::Age
        };
        let file = match std::fs::File::open(&seg.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("open segment", &seg.path, e)),
        };
        let pre = count_before_unlink(&file, seg, cursor, &log_dir.join(lfs::WRITERS_LOCK));
        total = total.saturating_sub(seg.disk_bytes);
        chosen.push(RemovedFile {
            file,
            seg: (*seg).clone(),
            reason,
            pre,
        });
    }
    let now = clock.wall_ns();
    let known: Vec<TrimEntry> = chosen
        .iter()
        .filter_map(|r| Some(r.pre.as_ref()?.entry(&r.seg, cursor, r.reason, now)))
        .collect();
    if let Err(e) = ledger::append(log_dir, &known) {
        // Count them after unlinking instead (the entry is then written by `count`).
        report.ledger_error = Some(e.to_string());
        for r in &mut chosen {
            r.pre = None;
        }
    }
    let mut removed = Vec::with_capacity(chosen.len());
    for r in chosen {
        match std::fs::remove_file(&r.seg.path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                total += r.seg.disk_bytes;
                continue;
            }
            Err(e) => return Err(Error::io("remove segment", &r.seg.path, e)),
        }
        report.removed.push(r.seg.number);
        report.segments_removed += 1;
        report.bytes_removed += r.seg.disk_bytes;
        removed.push(r);
    }
    report.bytes_after = total;
    Ok(Removed {
        log_dir: log_dir.to_path_buf(),
        files: removed,
        report,
    })
}

/// Writes the sealed record count of the newest segment but one, if it has none: called by a
/// writer's background thread after it rotated (no lock held; the count waits for
/// reservations still being committed, as [`Removed::count`] does).
pub(crate) fn seal_previous(log_dir: &Path, writers_lock: &Path) {
    let seg_dir = log_dir.join(lfs::SEGMENTS_DIR);
    let Ok(files) = lfs::list_segments(&seg_dir) else {
        return;
    };
    let live: Vec<&SegmentFile> = files.iter().filter(|f| !f.prepared).collect();
    let Some(seg) = live.len().checked_sub(2).and_then(|i| live.get(i)) else {
        return;
    };
    let Ok(file) = std::fs::File::open(&seg.path) else {
        return;
    };
    if seal_count::read(&file, seg.number).is_some() {
        return;
    }
    let c = count_with(file, seg, None, Some(writers_lock), QUICK_HOLE_TIMEOUT);
    if c.unsettled {
        return; // a writer may still commit into it: retention counts it when it trims
    }
    // A hint: if it is lost (crash, no fsync), retention scans the segment instead.
    let _ = seal_count::write(&seg.path, seg.number, c.all);
}

/// The count of a segment about to be unlinked, if it is final: its sealed record count
/// (unless `cursor` lies inside it, which needs a scan for the records after it), else a
/// scan under the lock that met no hole.
fn count_before_unlink(
    file: &std::fs::File,
    seg: &SegmentFile,
    cursor: Option<Position>,
    writers_lock: &Path,
) -> Option<Counted> {
    if !cursor.is_some_and(|c| inside(c, seg.number)) {
        if let Some(n) = seal_count::read(file, seg.number) {
            let unconsumed = if cursor.is_some_and(|c| c.segment <= seg.number) {
                n
            } else {
                0
            };
            return Some(Counted {
                all: n,
                unconsumed,
                ..Counted::default()
            });
        }
    }
    let c = count_with(
        file.try_clone().ok()?,
        seg,
        cursor,
        Some(writers_lock),
        QUICK_HOLE_TIMEOUT,
    );
    (!c.unsettled).then_some(c)
}

/// A summary of a log directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Live segments.
    pub segments: u64,
    /// Oldest live segment number.
    pub first_segment: Option<u64>,
    /// Newest live segment number.
    pub last_segment: Option<u64>,
    /// Disk bytes used by segment files (prepared ones included).
    pub bytes_on_disk: u64,
    /// Bytes of frames committed or reserved (sum of reservation counters minus headers).
    pub bytes_used: u64,
    /// Records (preambles excluded).
    pub records: u64,
    /// Whether `records` is an exact count (full scan) or an estimate.
    pub records_exact: bool,
    /// Damaged ranges seen (exact scans only).
    pub damaged_ranges: u64,
    /// Creation time of the oldest live segment (wall clock, ns since the epoch).
    pub oldest_created_wall_ns: Option<i64>,
    /// Creation time of the newest live segment (wall clock, ns since the epoch).
    pub newest_created_wall_ns: Option<i64>,
}

/// Summarises the log in `dir`. With `exact`, every segment is scanned (about 1 GB/s or
/// better); otherwise record counts are estimated from the first MiB of each segment.
pub fn stats(dir: &Path, exact: bool) -> Result<Stats> {
    let seg_dir = dir.join(lfs::SEGMENTS_DIR);
    if !seg_dir.is_dir() {
        return Err(Error::NotALog {
            path: dir.to_path_buf(),
        });
    }
    let files = lfs::list_segments(&seg_dir)?;
    let mut st = Stats {
        records_exact: exact,
        ..Stats::default()
    };
    st.bytes_on_disk = files.iter().map(|f| f.disk_bytes).sum();
    for seg in files.iter().filter(|f| !f.prepared) {
        st.segments += 1;
        st.first_segment.get_or_insert(seg.number);
        st.last_segment = Some(seg.number);
        let probe = Some(dir.join(lfs::WRITERS_LOCK));
        let holes = HolePolicy {
            quiescent: false,
            probe,
            timeout: Duration::from_millis(100),
        };
        let Ok(mut sc) = SegmentScanner::open(&seg.path, seg.number, 1 << 20, holes) else {
            st.damaged_ranges += 1;
            continue;
        };
        st.oldest_created_wall_ns
            .get_or_insert(sc.header.created_wall_ns);
        st.newest_created_wall_ns = Some(sc.header.created_wall_ns);
        let used = read_header_reserved(&seg.path)
            .min(sc.header.capacity)
            .saturating_sub(HEADER_LEN);
        st.bytes_used += used;
        let (mut records, mut scanned) = (0u64, 0u64);
        while let Ok(step) = sc.next_step() {
            match step {
                Step::Frame {
                    kind: FrameKind::Record,
                    ..
                } => records += 1,
                Step::Frame { .. } => {}
                Step::Damage(_) => st.damaged_ranges += 1,
                Step::Pending | Step::End => break,
            }
            scanned = sc.pos - HEADER_LEN;
            if !exact && scanned >= 1 << 20 {
                break;
            }
        }
        st.records += if exact || scanned >= used || scanned == 0 {
            records
        } else {
            (records as f64 * used as f64 / scanned as f64).round() as u64
        };
    }
    Ok(st)
}

fn read_header_reserved(path: &Path) -> u64 {
    let Ok(f) = std::fs::File::open(path) else {
        return 0;
    };
    let mut b = [0u8; HEADER_LEN as usize];
    match crate::scan::read_full(&f, &mut b, 0) {
        Ok(n) if n == b.len() => crate::format::reserved_end(&b),
        _ => 0,
    }
}
