//! Opening a log for the journal and turning its frames into records.
//!
//! [`Source`] wraps [`segment_log::Reader`] (pread, no locks: writer detection is off, see the
//! module docs of `journal`) and pairs each record with its writer's context
//! ([`records::SlotContexts`], through [`super::record::observe`]). Problems that make the
//! log unreadable as a whole become errors with the file named (permission denied, a segment
//! written by a newer seglog); damaged ranges and undecodable records are items the caller
//! reports and skips.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use records::{RecordId, ResolveError, SlotContexts};
use segment_log::format::{SegmentHeader, HEADER_LEN};
use segment_log::fs::{live_segments, segment_file_name, SEGMENTS_DIR, SEG_EXT};
use segment_log::{Damage, DamageReason, Entry, LogId, Position, Reader, ReaderOptions};

use super::record::{observe, Observed, Rec};
use super::ReadArgs;

/// What the log holds next.
pub enum Item<'a> {
    /// A record with its context.
    Record(Rec<'a>),
    /// A writer's context frame (records after it resolve against it).
    Context,
    /// A checksum-valid frame that holds no readable record.
    Skipped {
        /// Where the frame is.
        position: Position,
        /// Why it cannot be read.
        error: ResolveError,
    },
    /// A damaged or missing range (segment-log's report).
    Damage(Damage),
}

/// A read-only record stream over a log directory.
pub struct Source {
    dir: PathBuf,
    seg_dir: PathBuf,
    reader: Reader,
    contexts: SlotContexts,
    public_id: Option<[u8; 32]>,
    /// Where reading stops (see [`Source::stop_at_current_end`]); `None`: tail forever.
    limit: Option<Position>,
    /// Segments of a newer format version are damage items, not errors (`verify`).
    newer_as_damage: bool,
}

impl Source {
    /// Opens `dir` at its oldest record.
    pub fn open(dir: &Path, read: &ReadArgs) -> anyhow::Result<Source> {
        Self::open_at(dir, read, Position::default())
    }

    /// Opens `dir` at `from`, which must be the start of a segment (offset 0) or
    /// [`Position::default()`]: contexts are read from the start of each segment.
    pub fn open_at(dir: &Path, read: &ReadArgs, from: Position) -> anyhow::Result<Source> {
        let opts = ReaderOptions {
            // 1 MiB per pread: large enough that syscalls cost nothing next to decoding.
            chunk_size: 1 << 20,
            hole_timeout: read.hole_timeout,
            // The journal takes no locks, not even the writer probe.
            detect_writers: false,
            include_preambles: true,
        };
        if !dir.exists() {
            bail!(
                "log directory {} does not exist; check --dir or SEGLOG_DIR",
                dir.display()
            );
        }
        // A shared log this user may not read: say which group to join.
        segment_log::perms::check_access(dir, false)?;
        let reader = Reader::open(dir, from, opts)
            .with_context(|| format!("cannot read log directory {}", dir.display()))?;
        let seg_dir = dir.join(SEGMENTS_DIR);
        let public_id = public_log_id(dir, &seg_dir);
        Ok(Source {
            dir: dir.to_path_buf(),
            seg_dir,
            reader,
            contexts: SlotContexts::new(),
            public_id,
            limit: None,
            newer_as_damage: false,
        })
    }

    /// Makes reading end at what was reserved when this is called: the newest live segment's
    /// reservation counter. Without it, a log that grows faster than it can be read would
    /// never end (`list` without `--follow`, `verify`, `stats`, `export`). Reservations
    /// made before this point are still waited for (`--hole-timeout`).
    pub fn stop_at_current_end(&mut self) -> anyhow::Result<()> {
        let newest = live_segments(&self.seg_dir)
            .map_err(|e| read_error(e, &self.dir))?
            .last()
            .copied();
        self.limit = Some(match newest {
            // An empty log: everything that appears later is past the end.
            None => Position::default(),
            Some(n) => {
                // Not the bare counter: one that lies (rolled back) must not hide the frames
                // written past it.
                let end =
                    segment_log::written_end(&self.seg_dir.join(segment_file_name(n, SEG_EXT)));
                Position {
                    segment: n,
                    offset: end.unwrap_or(u64::MAX),
                }
            }
        });
        Ok(())
    }

    /// Makes a segment written by a newer seglog a damage item (`bad_header`, "upgrade
    /// seglog"; see [`is_newer_version`]) instead of an error, so `verify` can report it by
    /// file and go on checking the other segments.
    pub fn report_newer_versions(&mut self) {
        self.newer_as_damage = true;
    }

    /// The id of the record at `position` (derived from the log's public id).
    pub fn record_id(&self, position: Position) -> RecordId {
        RecordId::derive(self.public_id.as_ref().unwrap_or(&[0; 32]), position)
    }

    /// The path of segment `n`.
    pub fn segment_path(&self, n: u64) -> PathBuf {
        self.seg_dir.join(segment_file_name(n, SEG_EXT))
    }

    /// Where the next entry starts (everything before it was returned).
    pub fn position(&self) -> Position {
        self.reader.position()
    }

    /// The next item, or `None` at the live end (call again later to tail).
    pub fn next_item(&mut self) -> anyhow::Result<Option<Item<'_>>> {
        let entry = match self.reader.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => return Ok(None),
            Err(e) => return Err(read_error(e, &self.dir)),
        };
        if let Some(limit) = self.limit {
            let at = match &entry {
                Entry::Frame(f) => f.position,
                Entry::Damage(d) => Position {
                    segment: d.segment,
                    offset: d.offset,
                },
            };
            if at >= limit {
                // Past the end fixed at start: stay ended.
                self.limit = Some(Position::default());
                return Ok(None);
            }
        }
        match entry {
            Entry::Damage(d) => {
                let path = self.seg_dir.join(segment_file_name(d.segment, SEG_EXT));
                if self.newer_as_damage && is_newer_version(&d) {
                    return Ok(Some(Item::Damage(d)));
                }
                Ok(Some(Item::Damage(check_damage(d, &path)?)))
            }
            Entry::Frame(f) => {
                if self.public_id.is_none() {
                    // No log-id file and no readable segment at open (a copy made while
                    // the log was empty, say): the id is in this frame's segment header.
                    let path = self
                        .seg_dir
                        .join(segment_file_name(f.position.segment, SEG_EXT));
                    self.public_id = Some(read_header(&path).map(|h| h.log_id).unwrap_or_default());
                }
                let public_id = self.public_id.as_ref().unwrap_or(&[0; 32]);
                match observe(&mut self.contexts, &f, public_id) {
                    Ok(Observed::Record(rec)) => Ok(Some(Item::Record(rec))),
                    Ok(Observed::Context) => Ok(Some(Item::Context)),
                    Err(ResolveError::Decode(e)) if e.is_unsupported_version() => {
                        let path = self
                            .seg_dir
                            .join(segment_file_name(f.position.segment, SEG_EXT));
                        bail!(
                            "the record at {} in {} was written by a newer seglog: {e}",
                            f.position,
                            path.display()
                        )
                    }
                    Err(error) => Ok(Some(Item::Skipped {
                        position: f.position,
                        error,
                    })),
                }
            }
        }
    }
}

/// Frame bytes the reader passed between two of its positions (a new segment starts after
/// its header; the unused tail of the previous one is not counted).
pub fn advance(from: Position, to: Position) -> u64 {
    if to.segment == from.segment {
        to.offset.saturating_sub(from.offset)
    } else {
        to.offset.saturating_sub(HEADER_LEN)
    }
}

/// Turns a reader error into one that names the file and says what to do.
fn read_error(e: segment_log::Error, dir: &Path) -> anyhow::Error {
    let hint = match &e {
        segment_log::Error::Io { source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied =>
        {
            "permission denied: run as the log's owner (or root), or read a copy"
        }
        _ => "the log directory could not be read",
    };
    anyhow::Error::new(e).context(format!("{hint} ({})", dir.display()))
}

/// Whether `d` is a segment written by a newer seglog (its header is valid, its version is
/// newer than this build reads).
pub fn is_newer_version(d: &Damage) -> bool {
    matches!(&d.reason, DamageReason::BadHeader(why) if why.contains("upgrade seglog"))
}

/// Damage that means the log cannot be read as a whole becomes an error; a segment that
/// vanished (retention removed it after it was listed) becomes a missing segment.
fn check_damage(d: Damage, path: &Path) -> anyhow::Result<Damage> {
    match &d.reason {
        DamageReason::BadHeader(why) if is_newer_version(&d) => {
            bail!(
                "segment {} ({}) was written by a newer seglog: {why}",
                d.segment,
                path.display()
            )
        }
        DamageReason::Unreadable(why) => match File::open(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Damage {
                reason: DamageReason::MissingSegments { count: 1 },
                offset: 0,
                len: 0,
                ..d
            }),
            Err(e) => Err(unreadable_segment(path, e)),
            Ok(_) => bail!("cannot read segment file {}: {why}", path.display()),
        },
        _ => Ok(d),
    }
}

/// The error for a segment file that cannot be opened: names the file, and for permission
/// problems says what to do.
fn unreadable_segment(path: &Path, e: io::Error) -> anyhow::Error {
    let msg = if e.kind() == io::ErrorKind::PermissionDenied {
        format!(
            "cannot read segment file {}: permission denied; run as the log's owner (or root), or read a copy",
            path.display()
        )
    } else {
        format!("cannot read segment file {}", path.display())
    };
    anyhow::Error::new(e).context(msg)
}

/// The reservation counter of a segment (where its reserved space ends), capped at its
/// capacity; `None` when the header cannot be read or decoded.
pub fn read_reserved_end(path: &Path) -> Option<u64> {
    let f = File::open(path).ok()?;
    let mut head = [0u8; HEADER_LEN as usize];
    f.read_exact_at(&mut head, 0).ok()?;
    let h = SegmentHeader::decode(&head).ok()?;
    Some(segment_log::format::reserved_end(&head).min(h.capacity))
}

/// Reads and decodes the header of one segment file.
pub fn read_header(path: &Path) -> anyhow::Result<SegmentHeader> {
    let f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = [0u8; HEADER_LEN as usize];
    let mut n = 0;
    while n < buf.len() {
        let dst = buf.get_mut(n..).unwrap_or_default();
        match f.read_at(dst, n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                return Err(anyhow::Error::new(e).context(format!("cannot read {}", path.display())))
            }
        }
    }
    SegmentHeader::decode(buf.get(..n).unwrap_or_default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The log's public id: sha256 of the private id in `log-id`, else (a copy without it, or
/// one we may not read) the id stored in the first segment header that decodes.
pub fn public_log_id(dir: &Path, seg_dir: &Path) -> Option<[u8; 32]> {
    if let Ok(Some(id)) = LogId::load(dir) {
        return Some(id.public());
    }
    live_segments(seg_dir).ok()?.into_iter().find_map(|n| {
        read_header(&seg_dir.join(segment_file_name(n, SEG_EXT)))
            .ok()
            .map(|h| h.log_id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_counts_within_and_across_segments() {
        let p = |segment, offset| Position { segment, offset };
        assert_eq!(advance(p(1, 256), p(1, 512)), 256);
        assert_eq!(advance(p(1, 4096), p(2, 256 + 40)), 40);
        assert_eq!(advance(p(0, 0), p(1, 256)), 0);
    }

    #[test]
    fn a_newer_segment_version_is_an_error_that_says_upgrade() {
        let d = Damage {
            segment: 7,
            offset: 0,
            len: 0,
            reason: DamageReason::BadHeader(
                "segment format version 2 is newer than this seglog supports (1); upgrade seglog"
                    .into(),
            ),
        };
        let e = format!(
            "{:#}",
            check_damage(d, Path::new("/log/segments/7.seg")).unwrap_err()
        );
        assert!(
            e.contains("segment 7 (/log/segments/7.seg) was written by a newer seglog"),
            "{e}"
        );
        assert!(e.contains("upgrade seglog"), "{e}");
    }

    #[test]
    fn a_segment_removed_after_listing_reads_as_missing_not_unreadable() {
        let dir = tempfile::tempdir().unwrap();
        let d = Damage {
            segment: 3,
            offset: 0,
            len: 0,
            reason: DamageReason::Unreadable("No such file or directory (os error 2)".into()),
        };
        let got = check_damage(d, &dir.path().join("gone.seg")).unwrap();
        assert_eq!(got.reason, DamageReason::MissingSegments { count: 1 });
    }

    #[test]
    fn permission_denied_names_the_file_and_what_to_do() {
        let e = unreadable_segment(
            Path::new("/log/segments/9.seg"),
            io::Error::from(io::ErrorKind::PermissionDenied),
        );
        let msg = format!("{e:#}");
        assert!(
            msg.contains("cannot read segment file /log/segments/9.seg: permission denied"),
            "{msg}"
        );
        assert!(msg.contains("log's owner"), "{msg}");
        let e = unreadable_segment(Path::new("/x.seg"), io::Error::other("EIO"));
        assert!(
            format!("{e:#}").starts_with("cannot read segment file /x.seg: EIO"),
            "{e:#}"
        );
    }

    #[test]
    fn other_damage_passes_through_unchanged() {
        let d = Damage {
            segment: 1,
            offset: 256,
            len: 64,
            reason: DamageReason::Truncated,
        };
        assert_eq!(check_damage(d.clone(), Path::new("/x")).unwrap(), d);
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        let e = Source::open(&missing, &ReadArgs::default()).err().unwrap();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        let e = Source::open(dir.path(), &ReadArgs::default())
            .err()
            .unwrap();
        assert!(
            format!("{e:#}").contains("is not a seglog log directory"),
            "{e:#}"
        );
    }
}
