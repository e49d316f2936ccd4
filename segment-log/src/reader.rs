//! [`Reader`]: iterates committed frames in position order across segments, tails a live
//! log, and reports damaged or missing ranges instead of stopping at them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::{FrameKind, HEADER_LEN};
use crate::fs as lfs;
use crate::scan::{Damage, DamageReason, HolePolicy, SegmentScanner, Step};
use crate::Position;

/// How a [`Reader`] behaves.
#[derive(Debug, Clone)]
pub struct ReaderOptions {
    /// Bytes read per `pread` (default 1 MiB). Memory use is this plus the largest frame.
    pub chunk_size: usize,
    /// How long to wait for a reserved-but-uncommitted frame before reporting it as
    /// abandoned, while writers may be alive (default 2 s). A crashed writer's hole costs
    /// one such wait; a live writer commits within microseconds. The same bound applies to a
    /// frame near the live end that fails its checksum while writers may be alive: `pread`
    /// has no acquire ordering, so its bytes may not all be visible yet (FORMAT.md).
    pub hole_timeout: Duration,
    /// Whether to check (with a non-blocking flock probe on `writers.lock`) if any writer
    /// is alive; when none is, holes are reported at once. Default true. Set false for a
    /// strictly lock-free reader (it then always waits `hole_timeout`).
    pub detect_writers: bool,
    /// Also yield preamble frames (default true).
    pub include_preambles: bool,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            chunk_size: 1 << 20,
            hole_timeout: Duration::from_secs(2),
            detect_writers: true,
            include_preambles: true,
        }
    }
}

/// A verified frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef<'a> {
    /// Where it is.
    pub position: Position,
    /// Record or preamble.
    pub kind: FrameKind,
    /// The payload.
    pub payload: &'a [u8],
}

/// What the reader found next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry<'a> {
    /// A whole, checksum-verified frame.
    Frame(FrameRef<'a>),
    /// A range that was skipped, and why. Reading continues after it.
    Damage(Damage),
}

/// An owned frame (what the `Iterator` impl yields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedFrame {
    /// Where it is.
    pub position: Position,
    /// Record or preamble.
    pub kind: FrameKind,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Owned version of [`Entry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedEntry {
    /// A whole frame.
    Frame(OwnedFrame),
    /// A skipped range.
    Damage(Damage),
}

/// Reads a log directory in position order. Takes no locks (except the optional writer
/// probe), never writes, reads with `pread`. Returns `None` when it reached the live end;
/// call again later to see newer records (tailing).
pub struct Reader {
    dir: PathBuf,
    seg_dir: PathBuf,
    opts: ReaderOptions,
    scanner: Option<SegmentScanner>,
    /// The first segment number that may be opened next.
    next_segment: u64,
    /// Whether a gap before `next_segment` should be reported (we expected it to exist).
    expect_contiguous: bool,
    from: Position,
    /// Position after the last entry returned.
    position: Position,
    /// The current segment reported Pending while a newer segment existed; one more look
    /// (which re-reads its counter) decides whether it is finished.
    pending_with_newer: bool,
}

impl Reader {
    /// Opens a reader positioned at `from` (use `Position::default()` for the oldest
    /// record). If `from` lies in a segment that no longer exists, the reader reports the
    /// missing segments as damage and continues at the oldest remaining one.
    pub fn open(dir: impl AsRef<Path>, from: Position, opts: ReaderOptions) -> Result<Reader> {
        let dir = dir.as_ref().to_path_buf();
        let seg_dir = dir.join(lfs::SEGMENTS_DIR);
        match std::fs::metadata(&seg_dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(Error::NotALog { path: dir }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotALog { path: dir })
            }
            Err(e) => return Err(Error::io("open", &seg_dir, e)),
        }
        Ok(Reader {
            dir,
            seg_dir,
            opts,
            scanner: None,
            next_segment: from.segment,
            expect_contiguous: from.segment > 0,
            from,
            position: from,
            pending_with_newer: false,
        })
    }

    /// The position just after the last entry returned: where a consumer that processed
    /// everything so far would resume.
    pub fn position(&self) -> Position {
        self.position
    }

    /// The directory being read.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Returns the next frame or damaged range, or `None` at the live end.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>> {
        loop {
            if self.scanner.is_none() {
                match self.open_next()? {
                    Some(Ok(())) => {}
                    Some(Err(d)) => return Ok(Some(Entry::Damage(d))),
                    None => return Ok(None),
                }
            }
            let Some(sc) = self.scanner.as_mut() else {
                continue;
            };
            let step = sc
                .next_step()
                .map_err(|e| Error::io("read segment", &sc.path, e))?;
            match step {
                Step::Frame {
                    offset,
                    kind,
                    start,
                    len,
                } => {
                    self.pending_with_newer = false;
                    let number = sc.number;
                    self.position = Position {
                        segment: number,
                        offset: sc.pos,
                    };
                    if kind == FrameKind::Preamble && !self.opts.include_preambles {
                        continue;
                    }
                    let sc = self.scanner.as_ref().ok_or(Error::Poisoned)?;
                    return Ok(Some(Entry::Frame(FrameRef {
                        position: Position {
                            segment: number,
                            offset,
                        },
                        kind,
                        payload: sc.bytes(start, len),
                    })));
                }
                Step::Damage(d) => {
                    self.position = Position {
                        segment: sc.number,
                        offset: sc.pos,
                    };
                    return Ok(Some(Entry::Damage(*d)));
                }
                Step::End => {
                    self.pending_with_newer = false;
                    self.next_segment = sc.number + 1;
                    self.position = Position {
                        segment: sc.number + 1,
                        offset: HEADER_LEN,
                    };
                    self.expect_contiguous = true;
                    self.scanner = None;
                }
                Step::Pending => {
                    // A newer segment exists only once this one's counter passed its
                    // capacity, so it will get no more reservations. Look once more (the
                    // scanner re-reads the counter) before moving on: the counter we saw may
                    // predate the rotation, and frames up to the capacity must not be skipped.
                    let n = sc.number;
                    if newer_segment_exists(&self.seg_dir, n) {
                        if !self.pending_with_newer {
                            self.pending_with_newer = true;
                            continue;
                        }
                        self.pending_with_newer = false;
                        // A finished segment whose counter hides data was damaged.
                        let more = sc.distrust_counter_if_data_follows(sc.pos);
                        if more.map_err(|e| Error::io("read segment", &sc.path, e))? {
                            continue;
                        }
                        self.next_segment = n + 1;
                        self.expect_contiguous = true;
                        self.scanner = None;
                        continue;
                    }
                    // The live end: everything before the scanner's position was returned
                    // or was a pad (format version 2), so a consumer resumes there, not
                    // before the pad (it would count the pad's bytes as a backlog).
                    self.position = self.position.max(Position {
                        segment: n,
                        offset: sc.pos,
                    });
                    return Ok(None);
                }
            }
        }
    }

    /// Opens the next segment to read. `None`: no segment yet. `Some(Err)`: damage to report.
    fn open_next(&mut self) -> Result<Option<std::result::Result<(), Damage>>> {
        let live = lfs::live_segments(&self.seg_dir)?;
        let Some(&n) = live.iter().find(|&&s| s >= self.next_segment) else {
            return Ok(None);
        };
        if n > self.next_segment && self.expect_contiguous {
            let missing = Damage {
                segment: self.next_segment,
                offset: 0,
                len: 0,
                reason: DamageReason::MissingSegments {
                    count: n - self.next_segment,
                },
            };
            self.next_segment = n;
            self.position = Position {
                segment: n,
                offset: HEADER_LEN,
            };
            return Ok(Some(Err(missing)));
        }
        self.next_segment = n + 1;
        self.expect_contiguous = true;
        let holes = HolePolicy {
            quiescent: false,
            probe: self
                .opts
                .detect_writers
                .then(|| self.dir.join(lfs::WRITERS_LOCK)),
            timeout: self.opts.hole_timeout,
        };
        let path = self.seg_dir.join(lfs::segment_file_name(n, lfs::SEG_EXT));
        match SegmentScanner::open(&path, n, self.opts.chunk_size, holes) {
            Ok(mut sc) => {
                if n == self.from.segment {
                    sc.seek(self.from.offset);
                }
                self.scanner = Some(sc);
                Ok(Some(Ok(())))
            }
            Err(d) => {
                self.position = Position {
                    segment: n + 1,
                    offset: HEADER_LEN,
                };
                Ok(Some(Err(d)))
            }
        }
    }
}

fn newer_segment_exists(seg_dir: &Path, n: u64) -> bool {
    lfs::live_segments(seg_dir)
        .map(|v| v.iter().any(|&s| s > n))
        .unwrap_or(false)
}

impl Iterator for Reader {
    type Item = Result<OwnedEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.next_entry() {
            Ok(Some(Entry::Frame(f))) => Some(Ok(OwnedEntry::Frame(OwnedFrame {
                position: f.position,
                kind: f.kind,
                payload: f.payload.to_vec(),
            }))),
            Ok(Some(Entry::Damage(d))) => Some(Ok(OwnedEntry::Damage(d))),
            Ok(None) => None,
            Err(e) => Some(Err(e)),
        }
    }
}
