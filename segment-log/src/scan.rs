//! Scanning one segment file with `pread`: yields frames and damaged ranges, never writes.
//!
//! Reading with `pread` instead of a mapping means a file truncated underneath the scanner
//! produces short reads (reported as damage), never SIGBUS. Memory is bounded by the chunk
//! size plus the format's maximum frame ([`format::MAX_PAYLOAD_LEN`]).
#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::format::{
    self, FrameCheck, FrameError, FrameKind, SegmentHeader, FRAME_ALIGN, FRAME_HEADER_LEN,
    HEADER_LEN,
};

/// Why a range was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DamageReason {
    /// A frame failed its checks.
    Frame(FrameError),
    /// Space reserved by a writer that never committed it (crashed writer).
    AbandonedReservation,
    /// The segment header is unreadable or invalid; the whole segment is skipped.
    BadHeader(String),
    /// The file is shorter than its header's capacity.
    Truncated,
    /// Segment files are missing (removed by retention, or deleted) between two positions.
    MissingSegments {
        /// How many segment numbers are missing.
        count: u64,
    },
    /// The file could not be read.
    Unreadable(String),
}

impl DamageReason {
    /// A stable short name.
    pub fn code(&self) -> &'static str {
        match self {
            DamageReason::Frame(e) => e.code(),
            DamageReason::AbandonedReservation => "abandoned_reservation",
            DamageReason::BadHeader(_) => "bad_header",
            DamageReason::Truncated => "truncated",
            DamageReason::MissingSegments { .. } => "missing_segments",
            DamageReason::Unreadable(_) => "unreadable",
        }
    }
}

impl std::fmt::Display for DamageReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DamageReason::Frame(e) => write!(f, "invalid frame ({})", e.code()),
            DamageReason::AbandonedReservation => {
                write!(f, "reserved but never written (writer crashed)")
            }
            DamageReason::BadHeader(why) => write!(f, "bad segment header: {why}"),
            DamageReason::Truncated => write!(f, "segment file truncated"),
            DamageReason::MissingSegments { count } => write!(f, "{count} segment(s) missing"),
            DamageReason::Unreadable(why) => write!(f, "unreadable: {why}"),
        }
    }
}

/// A skipped range. For `MissingSegments`, `segment` is the first missing number and
/// `offset`/`len` are 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Segment number.
    pub segment: u64,
    /// Byte offset in the segment file where the damage starts.
    pub offset: u64,
    /// Length of the skipped range in bytes.
    pub len: u64,
    /// Why it was skipped.
    pub reason: DamageReason,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "segment {} offset {} length {}: {}",
            self.segment, self.offset, self.len, self.reason
        )
    }
}

/// What the scanner found next.
#[derive(Debug)]
pub(crate) enum Step {
    /// A verified frame; its payload is `buf[start..start + len]` (see [`SegmentScanner::bytes`]).
    Frame {
        offset: u64,
        kind: FrameKind,
        start: usize,
        len: usize,
    },
    /// A damaged range that was skipped (boxed: rare, and it keeps `Step` a few words, which
    /// matters on the per-frame path).
    Damage(Box<Damage>),
    /// Nothing more is committed right now; try again later.
    Pending,
    /// The segment is finished (sealed, full, or damaged to its end).
    End,
}

/// How long a reader lets other writers' in-flight frames commit after it decided a hole is
/// abandoned (writers alive), before it looks for the next frame: a frame reserved just
/// after the hole and still being copied would otherwise be skipped as part of it.
const SETTLE: Duration = Duration::from_millis(20);

/// How far below the reservation counter a frame that fails its checks may still be
/// settling (written moments ago, read before its bytes were all visible to `pread`): such a
/// frame is re-read until the hole timeout before it is reported. Farther back, frames
/// committed long ago, and a failure is damage at once.
const LIVE_WINDOW: u64 = 1 << 20;

/// How to treat reservations that are not committed yet.
#[derive(Debug, Clone)]
pub(crate) struct HolePolicy {
    /// No writer can be alive (the caller knows): every hole is abandoned.
    pub quiescent: bool,
    /// `writers.lock` of the log, probed (non-blocking flock) each time the answer matters:
    /// a writer may start after the scanner opened the segment.
    pub probe: Option<PathBuf>,
    /// How long to wait for a live writer to commit a frame that others follow.
    pub timeout: Duration,
}

impl HolePolicy {
    /// Whether a writer is known to be alive right now (the probe says so). Without a probe
    /// (liveness unknown) this is false: callers must then rely on proofs that hold whatever
    /// writers do (a counter re-read after the data it should cover).
    fn writer_known_alive(&self) -> bool {
        !self.quiescent && self.probe.as_deref().is_some_and(crate::fs::writers_alive)
    }

    /// Whether no writer can be alive right now.
    fn no_writer_alive(&self) -> bool {
        self.quiescent
            || self
                .probe
                .as_deref()
                .is_some_and(|p| !crate::fs::writers_alive(p))
    }
}

/// What follows a segment's reservation counter.
enum DataEnd {
    /// Only zeroes up to the capacity.
    Zero,
    /// The file ends before its capacity.
    Truncated,
    /// Non-zero bytes end here (8-aligned).
    At(u64),
}

/// Scanner over one segment file.
pub(crate) struct SegmentScanner {
    pub number: u64,
    pub path: PathBuf,
    file: File,
    pub header: SegmentHeader,
    pub pos: u64,
    buf: Vec<u8>,
    win_start: u64,
    win_len: usize,
    chunk: usize,
    reserved: u64,
    hole_seen: Option<(u64, Instant)>,
    /// The hole at this offset was re-read after the counter and the liveness check.
    hole_fresh: Option<u64>,
    retried_at: Option<u64>,
    /// A frame failing its checks near the live end, and since when (see `unsettled`).
    bad_seen: Option<(u64, Instant)>,
    holes: HolePolicy,
    /// `(offset, counter)` for which the bytes past the counter were found to be zero.
    tail_checked: Option<(u64, u64)>,
}

impl SegmentScanner {
    /// Opens a segment file; the error is the damage to report for the whole segment.
    pub fn open(path: &Path, number: u64, chunk: usize, holes: HolePolicy) -> Result<Self, Damage> {
        let whole = |reason| Damage {
            segment: number,
            offset: 0,
            len: 0,
            reason,
        };
        let file = File::open(path).map_err(|e| whole(DamageReason::Unreadable(e.to_string())))?;
        Self::from_file(file, path, number, chunk, holes)
    }

    /// Like [`open`](Self::open), on a descriptor already open (the file may be unlinked).
    pub fn from_file(
        file: File,
        path: &Path,
        number: u64,
        chunk: usize,
        holes: HolePolicy,
    ) -> Result<Self, Damage> {
        let whole = |reason| Damage {
            segment: number,
            offset: 0,
            len: 0,
            reason,
        };
        let mut head = [0u8; HEADER_LEN as usize];
        let n = read_full(&file, &mut head, 0)
            .map_err(|e| whole(DamageReason::Unreadable(e.to_string())))?;
        let header = SegmentHeader::decode(head.get(..n).unwrap_or_default())
            .map_err(|e| whole(DamageReason::BadHeader(e.to_string())))?;
        if header.segment != number {
            return Err(whole(DamageReason::BadHeader(format!(
                "header says segment {} but the file is named {number}",
                header.segment
            ))));
        }
        let reserved = format::reserved_end(&head);
        Ok(SegmentScanner {
            number,
            path: path.to_path_buf(),
            file,
            pos: HEADER_LEN,
            buf: Vec::new(),
            win_start: 0,
            win_len: 0,
            chunk: chunk.max(4096),
            reserved,
            hole_seen: None,
            hole_fresh: None,
            retried_at: None,
            bad_seen: None,
            holes,
            tail_checked: None,
            header,
        })
    }

    /// Sets the next offset to examine (a frame start).
    pub fn seek(&mut self, offset: u64) {
        self.pos = offset.max(HEADER_LEN).next_multiple_of(FRAME_ALIGN);
    }

    /// The payload bytes of the last `Step::Frame`.
    pub fn bytes(&self, start: usize, len: usize) -> &[u8] {
        self.buf.get(start..start + len).unwrap_or_default()
    }

    fn capacity(&self) -> u64 {
        self.header.capacity
    }

    /// Re-reads the reservation counter. It only grows (a counter found damaged was raised
    /// to the capacity by [`distrust_counter_if_data_follows`](Self::distrust_counter_if_data_follows)
    /// and stays there).
    fn refresh_reserved(&mut self) {
        let mut w = [0u8; 8];
        if let Ok(8) = read_full(&self.file, &mut w, format::OFF_RESERVED_END as u64) {
            self.reserved = self.reserved.max(u64::from_le_bytes(w));
        }
    }

    /// Ensures the window holds bytes from `off` (up to `need` of them if the file has them).
    /// Returns (index into buf of `off`, bytes available from there).
    fn window(&mut self, off: u64, need: u64, force: bool) -> std::io::Result<(usize, usize)> {
        let win_end = self.win_start + self.win_len as u64;
        if !force && off >= self.win_start && off + need <= win_end {
            let i = (off - self.win_start) as usize;
            return Ok((i, self.win_len - i));
        }
        let want = need
            .max(self.chunk as u64)
            .min(self.capacity().saturating_sub(off)) as usize;
        if self.buf.len() < want {
            self.buf.resize(want, 0);
        }
        let dst = self.buf.get_mut(..want).unwrap_or_default();
        let n = read_full(&self.file, dst, off)?;
        self.win_start = off;
        self.win_len = n;
        Ok((0, n))
    }

    /// Examines the next frame.
    pub fn next_step(&mut self) -> std::io::Result<Step> {
        loop {
            let o = self.pos;
            let cap = self.capacity();
            if o + FRAME_HEADER_LEN > cap {
                return Ok(Step::End);
            }
            if o >= self.reserved.min(cap) {
                self.refresh_reserved();
                if o >= self.reserved.min(cap) {
                    // With no writer alive nobody can extend the segment, so data past the
                    // counter means the counter itself is damaged.
                    if !self.holes.writer_known_alive()
                        && self.distrust_counter_if_data_follows(o)?
                    {
                        continue;
                    }
                    return Ok(if self.reserved >= cap {
                        Step::End
                    } else {
                        Step::Pending
                    });
                }
            }
            let (i, avail) = self.window(o, FRAME_HEADER_LEN, false)?;
            if (avail as u64) < FRAME_HEADER_LEN {
                return Ok(self.truncated(o));
            }
            let check = {
                let w = self.buf.get(i..i + avail).unwrap_or_default();
                format::check_frame(w, self.number, o, cap)
            };
            match check {
                FrameCheck::Valid {
                    kind,
                    payload_start,
                    payload_len,
                    total,
                } => {
                    self.pos = o + total;
                    self.hole_seen = None;
                    self.hole_fresh = None;
                    self.retried_at = None;
                    self.bad_seen = None;
                    if kind == FrameKind::Seal {
                        return Ok(Step::End);
                    }
                    if kind == FrameKind::Pad {
                        // The unused rest of a writer's chunk: neither a record nor damage.
                        continue;
                    }
                    return Ok(Step::Frame {
                        offset: o,
                        kind,
                        start: i + payload_start,
                        len: payload_len,
                    });
                }
                FrameCheck::NeedMore { need } => {
                    let (_, avail) = self.window(o, need, true)?;
                    if (avail as u64) < need {
                        return self.cut_short(o);
                    }
                }
                FrameCheck::Empty => {
                    // Space reserved but not committed. A live writer commits within
                    // microseconds; wait (bounded) before calling it abandoned.
                    //
                    // The decision must rest on bytes read *after* the counter and the
                    // liveness check: the window may be older than both (read while this was
                    // the live end, before the frame here and those after it were written),
                    // and a stale window would hide committed frames. So: counter, then
                    // liveness, then (after letting in-flight frames settle) a fresh read.
                    self.refresh_reserved();
                    let none_alive = self.holes.no_writer_alive();
                    if !none_alive {
                        if nap_until_settled(&mut self.hole_seen, o, self.holes.timeout) {
                            self.window(o, FRAME_HEADER_LEN, true)?;
                            continue;
                        }
                        // Abandoned. Other writers' frames reserved before the counter was
                        // read may be mid-commit right now; give them time (once), so resync
                        // does not skip them as part of the hole.
                        if self.hole_fresh != Some(o) {
                            std::thread::sleep(SETTLE);
                        }
                    }
                    if self.hole_fresh != Some(o) {
                        self.hole_fresh = Some(o);
                        self.window(o, FRAME_HEADER_LEN, true)?;
                        continue;
                    }
                    self.hole_fresh = None;
                    self.hole_seen = None;
                    return self.skip_damage(o, DamageReason::AbandonedReservation);
                }
                FrameCheck::Bad(err) => {
                    // A live writer may be mid-commit or the read may be torn: re-read once.
                    if self.retried_at != Some(o) {
                        self.retried_at = Some(o);
                        self.window(o, FRAME_HEADER_LEN, true)?;
                        continue;
                    }
                    // `pread` gives no acquire ordering: on a weakly ordered CPU a reader can
                    // see a frame's first word published and stale bytes after it, and the
                    // checksum fails for a committed frame. Near the live end, while a writer
                    // may be alive, that is "not settled yet": wait (bounded by the hole
                    // timeout, as for holes) and read again before calling it damage.
                    if self.unsettled(o)
                        && nap_until_settled(&mut self.bad_seen, o, self.holes.timeout)
                    {
                        self.window(o, FRAME_HEADER_LEN, true)?;
                        continue;
                    }
                    self.retried_at = None;
                    self.bad_seen = None;
                    return self.skip_damage(o, DamageReason::Frame(err));
                }
            }
        }
    }

    /// Whether a frame at `o` that fails its checks may still be settling: a writer may be
    /// alive and `o` lies within [`LIVE_WINDOW`] of the (re-read) counter, where frames were
    /// committed moments ago.
    fn unsettled(&mut self, o: u64) -> bool {
        if self.holes.no_writer_alive() {
            return false;
        }
        self.refresh_reserved();
        self.reserved.min(self.capacity()).saturating_sub(o) <= LIVE_WINDOW
    }

    /// Called at the apparent end (`from` at or past the counter) of a segment that no writer
    /// may be extending (none alive, liveness unknown, or a newer segment exists). If bytes
    /// past the counter are not all zero, the counter was damaged (lowered: it is not
    /// checksummed): it is re-read *after* the data, and a counter that still lies below
    /// bytes already written cannot be a live writer's (a writer reserves before it writes),
    /// so the scanner reads on up to the end of the written data, where the frames after the
    /// counter are found and anything else is reported. A file shorter than its capacity
    /// (truncated) is read up to its capacity, so the truncation is reported. Returns whether
    /// there is more to scan from `from`.
    pub(crate) fn distrust_counter_if_data_follows(&mut self, from: u64) -> std::io::Result<bool> {
        let cap = self.capacity();
        if self.reserved >= cap || self.tail_checked == Some((from, self.reserved)) {
            return Ok(from < self.reserved.min(cap));
        }
        let found = self.data_end_after(from)?;
        self.refresh_reserved();
        match found {
            DataEnd::Zero => {}
            DataEnd::Truncated => self.reserved = cap,
            DataEnd::At(end) if self.reserved < end => self.reserved = end,
            DataEnd::At(_) => {}
        }
        self.tail_checked = Some((from, self.reserved));
        Ok(from < self.reserved.min(cap))
    }

    /// What lies in `from..capacity`: only zeroes, a short file, or data ending at an offset
    /// (the byte after the last non-zero byte, rounded up to the frame alignment).
    fn data_end_after(&mut self, from: u64) -> std::io::Result<DataEnd> {
        let cap = self.capacity();
        let mut p = from;
        let mut end = None;
        while p < cap {
            let (i, avail) = self.window(p, self.chunk as u64, true)?;
            if avail == 0 {
                // Segments are allocated in full before they go live: a short file was
                // truncated, and its counter cannot be trusted either.
                return Ok(DataEnd::Truncated);
            }
            let w = self.buf.get(i..i + avail).unwrap_or_default();
            // `all` vectorises: a truthful counter's zero tail is checked at memory speed.
            if !w.iter().all(|&b| b == 0) {
                end = w.iter().rposition(|&b| b != 0).map(|k| p + k as u64 + 1);
            }
            p += avail as u64;
        }
        Ok(end.map_or(DataEnd::Zero, |e| {
            DataEnd::At(e.next_multiple_of(FRAME_ALIGN).min(cap))
        }))
    }

    fn truncated(&mut self, o: u64) -> Step {
        let cap = self.capacity();
        self.pos = cap;
        Step::Damage(Box::new(Damage {
            segment: self.number,
            offset: o,
            len: cap - o,
            reason: DamageReason::Truncated,
        }))
    }

    /// The file ends inside the frame whose first word is at `o`. Either the truncation tore
    /// that frame, or its length field is damaged (claiming more than the file holds) and
    /// whole frames follow it before the end of the file. Those must not be lost with it:
    /// a verified frame after `o` means the length lied (the range up to that frame is
    /// reported as a bad length and reading goes on there); none means the file really ends
    /// in this frame, and the rest of the segment is reported as truncated.
    fn cut_short(&mut self, o: u64) -> std::io::Result<Step> {
        match self.next_valid_frame(o + FRAME_ALIGN)? {
            Ok(next) => {
                self.pos = next;
                Ok(Step::Damage(Box::new(Damage {
                    segment: self.number,
                    offset: o,
                    len: next - o,
                    reason: DamageReason::Frame(FrameError::BadLength),
                })))
            }
            Err(_) => Ok(self.truncated(o)),
        }
    }

    fn skip_damage(&mut self, o: u64, reason: DamageReason) -> std::io::Result<Step> {
        let next = self.resync(o + FRAME_ALIGN)?;
        self.pos = next;
        Ok(Step::Damage(Box::new(Damage {
            segment: self.number,
            offset: o,
            len: next - o,
            reason,
        })))
    }

    /// The offset of the next verifiable frame at or after `from`, or the end of the
    /// committed area when there is none.
    fn resync(&mut self, from: u64) -> std::io::Result<u64> {
        Ok(self.next_valid_frame(from)?.unwrap_or_else(|end| end))
    }

    /// `Ok` with the offset of the next verifiable frame at or after `from`, or `Err` with
    /// the end of the committed area (or of the file, if it is shorter) when there is none.
    fn next_valid_frame(&mut self, from: u64) -> std::io::Result<Result<u64, u64>> {
        let cap = self.capacity();
        let limit = self.reserved.min(cap);
        let mut p = from;
        while p + FRAME_HEADER_LEN <= limit {
            let (i, avail) = self.window(p, FRAME_HEADER_LEN, false)?;
            if avail < FRAME_HEADER_LEN as usize {
                return Ok(Err(p.max(limit.min(self.win_start + self.win_len as u64))));
            }
            let found = {
                let w = self.buf.get(i..i + avail).unwrap_or_default();
                format::find_marker(w, 0)
            };
            let Some(rel) = found else {
                // No marker in this window; continue after it (aligned).
                p += (avail as u64) & !(FRAME_ALIGN - 1);
                continue;
            };
            let c = p + rel as u64;
            if c + FRAME_HEADER_LEN > limit {
                break;
            }
            let (ci, cavail) = self.window(c, FRAME_HEADER_LEN, false)?;
            let mut check = {
                let w = self.buf.get(ci..ci + cavail).unwrap_or_default();
                format::check_frame(w, self.number, c, cap)
            };
            if let FrameCheck::NeedMore { need } = check {
                let (ci, cavail) = self.window(c, need, true)?;
                let w = self.buf.get(ci..ci + cavail).unwrap_or_default();
                check = format::check_frame(w, self.number, c, cap);
            }
            if let FrameCheck::Valid { .. } = check {
                return Ok(Ok(c));
            }
            p = c + FRAME_ALIGN;
        }
        Ok(Err(limit.max(from.min(cap))))
    }
}

/// Where the written part of the segment file at `path` ends now, for a reader that stops at
/// the end a log has at one moment (`seglog journal`): its reservation counter, capped at the
/// capacity, or, when non-zero bytes follow a counter that lies (lowered by damage or rolled
/// back), the end of those bytes (8-aligned). A short (truncated) file ends at its capacity,
/// so the reader reaches and reports the truncation. `None` when the header cannot be read
/// or decoded. Reads the tail of the segment once.
pub fn written_end(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let mut head = [0u8; HEADER_LEN as usize];
    let n = read_full(&file, &mut head, 0).ok()?;
    let number = SegmentHeader::decode(head.get(..n)?).ok()?.segment;
    let holes = HolePolicy {
        quiescent: false,
        probe: None,
        timeout: Duration::ZERO,
    };
    let mut sc = SegmentScanner::from_file(file, path, number, 1 << 20, holes).ok()?;
    let cap = sc.capacity();
    let counter = sc.reserved.min(cap);
    if counter >= cap {
        return Some(cap);
    }
    Some(match sc.data_end_after(counter.max(HEADER_LEN)).ok()? {
        DataEnd::Zero => counter,
        DataEnd::Truncated => cap,
        DataEnd::At(end) => end.max(counter),
    })
}

/// pread until `buf` is full or EOF; returns bytes read.
pub(crate) fn read_full(file: &File, buf: &mut [u8], mut off: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let dst = buf.get_mut(done..).unwrap_or_default();
        match file.read_at(dst, off) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// One short wait for the bytes at `o` to settle (a hole being filled, a frame becoming
/// visible), unless they have already been waited for `timeout` since `seen` first met `o`.
/// Returns whether it waited: the caller reads `o` again.
fn nap_until_settled(seen: &mut Option<(u64, Instant)>, o: u64, timeout: Duration) -> bool {
    let since = match *seen {
        Some((at, t)) if at == o => t,
        _ => {
            let now = Instant::now();
            *seen = Some((o, now));
            now
        }
    };
    let waited = since.elapsed();
    if waited >= timeout {
        return false;
    }
    std::thread::sleep((timeout - waited).min(Duration::from_micros(200)));
    true
}
