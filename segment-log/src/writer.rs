//! The writer side: [`Log`], opening/recovery, append, rotation, the preparer and syncer threads.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::chunk::{self, Chunks};
use crate::error::{Error, Result};
use crate::format::{self, FrameKind, SegmentHeader, FORMAT_VERSION, HEADER_LEN};
use crate::fs::{self as lfs, LogId, PREP_EXT, SEG_EXT};
use crate::perms::Sharing;
use crate::reserve::{self, FrameMem, Reservation};
use crate::retention::{self, RetentionPolicy, RetentionReport};
use crate::segment::{self, MappedSegment};
use crate::{Options, Position, SyncPolicy};

struct Preamble {
    bytes: Vec<u8>,
    version: u64,
}

/// What the background thread is woken for. It sleeps on `Shared::cond` without a timeout
/// until one of these is set: an idle writer process has no periodic wake-ups.
#[derive(Default)]
struct Signal {
    /// The handle rotated: prepare the next segment, count the one left, apply retention.
    rotated: bool,
    /// An append of this handle reached the active segment's `prepare_at`.
    crossed: bool,
    stop: bool,
}

/// How fast the log filled while this handle watched: `bytes` reserved (by every writer of
/// the log) over `elapsed` boot-clock nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fill {
    pub(crate) bytes: u64,
    pub(crate) elapsed_ns: u64,
}

/// The fill clock of the active segment: since when (boot ns) and from which counter value
/// this handle has watched it, and the last rate measured.
struct FillClock {
    segment: u64,
    since_ns: u64,
    from: u64,
    last: Option<Fill>,
}

struct Shared {
    dir: PathBuf,
    seg_dir: PathBuf,
    /// The log's permission policy, decided by its directory at open.
    sharing: Sharing,
    opts: Options,
    log_id: LogId,
    active: ArcSwap<MappedSegment>,
    prepared: Mutex<Option<Arc<MappedSegment>>>,
    rotate_mutex: Mutex<()>,
    rotate_lock: std::fs::File,
    writers_lock: std::fs::File,
    poisoned: AtomicBool,
    preamble: ArcSwapOption<Preamble>,
    /// Version of the current preamble, 0 when none: the append fast path compares it with
    /// `preamble_mark` and loads `preamble` only when a preamble must be written.
    current_preamble: AtomicU64,
    /// Source of preamble versions.
    preamble_version: AtomicU64,
    /// `mark(segment, version)` of the last preamble this handle wrote.
    preamble_mark: AtomicU64,
    /// Retired segments that the syncer has not flushed yet (sync != never).
    unsynced: Mutex<Vec<Arc<MappedSegment>>>,
    /// Directory entries created since the last directory fsync.
    dir_dirty: AtomicBool,
    signal: Mutex<Signal>,
    cond: Condvar,
    fill: Mutex<FillClock>,
    /// The background thread (preparer, retention counts, unmapping), once started: at open
    /// with `prepare_ahead`, else at the first rotation when a retention policy needs it. A
    /// one-shot writer never starts it.
    worker: Mutex<Option<JoinHandle<()>>>,
    rotations: AtomicU64,
    /// Unique id of this handle (keys the per-thread active-segment cache).
    uid: u64,
    /// Bumped after every change of `active`: per-thread caches reload when it moves.
    epoch: AtomicU64,
    /// Retired mappings, unmapped by the background thread so `munmap` (milliseconds for a
    /// 16 MiB mapping) never runs on an appending thread.
    retired: Mutex<Vec<Arc<MappedSegment>>>,
    /// Whether a background thread exists or will be started at the first rotation, to
    /// drop `retired` and count trimmed segments.
    background: bool,
    last_retention: Mutex<Option<RetentionReport>>,
    /// Segments removed under the rotate lock whose records the preparer has yet to count
    /// (counting may wait for a late writer, so it never runs under the lock or on the
    /// appending thread).
    uncounted: Mutex<Vec<retention::Removed>>,
    /// Per-thread chunks of this handle and their closer (format version 2, `chunk.rs`).
    chunks: Arc<Chunks>,
}

/// An open log: the writer handle of one process.
///
/// `Log` is `Send + Sync`; share it between threads with `Arc` or by reference. Any number of
/// processes may open the same directory at once. Appends are lock-free (one atomic
/// `fetch_add` on the shared counter in the mapped segment header, or, for a busy thread,
/// one uncontended compare-and-swap on the cursor of its own chunk: `chunk.rs`, FORMAT.md
/// "Version 2"); rotation and retention
/// are serialised across processes with an flock on `rotate.lock`.
///
/// Durability: a record is in the page cache once `append` returns and survives the crash of
/// any process. What survives power loss depends on [`SyncPolicy`].
pub struct Log {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.shared.dir)
            .field("active_segment", &self.active_segment())
            .field("options", &self.shared.opts)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Releases an flock (`File::lock`) when dropped.
struct FlockGuard<'a>(&'a std::fs::File);
impl Drop for FlockGuard<'_> {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
fn flock<'a>(file: &'a std::fs::File, path: &Path) -> Result<FlockGuard<'a>> {
    file.lock().map_err(|e| Error::io("lock", path, e))?;
    Ok(FlockGuard(file))
}

/// The rotate lock of a handle: the in-process mutex, then the flock on `rotate.lock`. An
/// flock belongs to the open file description, which every thread of the process shares, so
/// without the mutex two threads (an appender rotating, the preparer) both "held" it and the
/// first to unlock released it for the other too, letting another process rotate at the
/// same time (it then replaced a segment this process was writing to). Fields drop in
/// order: the flock is released before the mutex.
struct RotateGuard<'a> {
    _flock: FlockGuard<'a>,
    _mutex: MutexGuard<'a, ()>,
}

/// The preparer is woken when the active segment's counter passes this fraction (1/8) of
/// what was left of it when it became active (or when this handle opened it).
const PREPARE_AT_SHIFT: u32 = 3;

/// The append horizon a prepared segment is pre-faulted for: the bytes the log is expected
/// to receive in this time at the measured rate. Kept well under the kernel's dirty-page
/// expiry (`vm.dirty_expire_centisecs`, 30 s by default), so pre-faulted (dirty) zero pages
/// are overwritten by records before writeback would write the zeros to disk.
const PREFAULT_HORIZON_NS: u64 = 10_000_000_000;

/// Pre-faulting is done in whole steps of this size (and not at all below one).
const PREFAULT_STEP: u64 = 2 << 20;

/// How many bytes of a prepared segment to pre-fault, given how fast the log filled
/// (`None`: not measured yet, nothing). A fast writer gets the whole segment, so its appends
/// take no page faults; a slow one gets nothing: for it a fault per 4 KiB page costs
/// nothing measurable, while pre-faulting dirties the whole segment, which the kernel would
/// write to disk as zeros long before records overwrite them (16 MiB of writes for a writer
/// of a few KiB/s). In between, the bytes expected within [`PREFAULT_HORIZON_NS`], in whole
/// [`PREFAULT_STEP`]s.
pub(crate) fn prefault_len(fill: Option<Fill>, capacity: u64) -> u64 {
    let Some(f) = fill else { return 0 };
    let expected =
        u128::from(f.bytes) * u128::from(PREFAULT_HORIZON_NS) / u128::from(f.elapsed_ns.max(1));
    if expected >= u128::from(capacity) {
        return capacity;
    }
    // Below the capacity, so it fits in u64.
    (expected as u64) / PREFAULT_STEP * PREFAULT_STEP
}

/// Bytes of one huge page-cache folio (one PMD with 4 KiB pages).
const HUGE_FOLIO: u64 = 2 << 20;

/// Whether a prepared segment that will be pre-faulted for `len` bytes should ask for 2 MiB
/// page-cache folios without read-ahead ([`MappedSegment::for_fast_writer`]): only when it is pre-faulted
/// whole (a fast writer), and only where a folio dirtied as a whole costs no write
/// amplification worth the name. With `sync = never` the whole segment is dirtied by the
/// pre-fault anyway. With `sync = interval` every sync writes back the partly written folio
/// at the reserved end whole, so huge folios only when the log receives at least ten folios
/// (20 MiB) per interval (at most 10 % more written; the benchmark's full speed is 80 MiB
/// per 100 ms). Never with `sync = always`, which writes after every append.
pub(crate) fn huge_folios(fill: Option<Fill>, len: u64, capacity: u64, sync: &SyncPolicy) -> bool {
    if len < capacity {
        return false;
    }
    match sync {
        SyncPolicy::Never => true,
        SyncPolicy::Interval(every) => fill.is_some_and(|f| {
            let per_sync = u128::from(f.bytes) * every.as_nanos() / u128::from(f.elapsed_ns.max(1));
            per_sync >= 10 * u128::from(HUGE_FOLIO)
        }),
        SyncPolicy::Always => false,
    }
}

/// The counter value whose crossing wakes the preparer, for a segment that became active
/// with its counter at `reserved`.
fn prepare_threshold(reserved: u64, capacity: u64) -> u64 {
    let r = reserved.clamp(HEADER_LEN, capacity);
    r + ((capacity - r) >> PREPARE_AT_SHIFT)
}

static NEXT_LOG_UID: AtomicU64 = AtomicU64::new(1);

/// A thread's cached reference to the active segment of one log handle.
struct ActiveCache {
    log_uid: u64,
    epoch: u64,
    seg: Arc<MappedSegment>,
}

thread_local! {
    /// Per-thread cache of the active segment, so an append costs a plain load and compare
    /// instead of an `arc_swap` load and guard drop (two locked instructions). A thread keeps
    /// at most one retired mapping alive until it appends again or exits.
    static ACTIVE: std::cell::RefCell<Option<ActiveCache>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` on the active segment of `s`, through the thread's cache when it is current.
#[inline(always)]
fn with_active<R>(s: &Shared, f: impl FnOnce(&Arc<MappedSegment>) -> R) -> R {
    let epoch = s.epoch.load(Ordering::Acquire);
    let mut f = Some(f);
    let mut out = None;
    let _ = ACTIVE.try_with(|cell| {
        let Ok(mut c) = cell.try_borrow_mut() else {
            return;
        };
        let current = matches!(&*c, Some(e) if e.log_uid == s.uid && e.epoch == epoch);
        if !current {
            let old = c.replace(ActiveCache {
                log_uid: s.uid,
                epoch,
                seg: s.active.load_full(),
            });
            // Only the last reference unmaps: that one goes to the background thread.
            if let Some(old) = old.filter(|o| Arc::strong_count(&o.seg) == 1) {
                s.retire(old.seg);
            }
        }
        if let (Some(e), Some(f)) = (c.as_ref(), f.take()) {
            out = Some(f(&e.seg));
        }
    });
    match (out, f) {
        (Some(r), _) => r,
        (None, Some(f)) => f(&s.active.load_full()),
        (None, None) => unreachable!("the closure runs exactly once"),
    }
}

/// A record's payload as the append path sees it: one slice, or a head and a body written
/// one after the other.
trait FramePayload {
    fn parts(&self) -> (&[u8], &[u8]);
    fn len(&self) -> usize {
        let (h, b) = self.parts();
        h.len() + b.len()
    }
}

impl<T: AsRef<[u8]>> FramePayload for T {
    #[inline(always)]
    fn parts(&self) -> (&[u8], &[u8]) {
        (&[], self.as_ref())
    }
}

/// The payload of [`Log::append_parts`].
struct Parts<'a> {
    head: &'a [u8],
    body: &'a [u8],
}

impl FramePayload for Parts<'_> {
    #[inline(always)]
    fn parts(&self) -> (&[u8], &[u8]) {
        (self.head, self.body)
    }
}

fn preamble_mark(segment: u64, version: u64) -> u64 {
    (version << 40) ^ segment
}

impl Log {
    /// Opens the log in `dir`, creating it (mode `opts.dir_mode`, 0700 by default) when
    /// missing, and recovering after a crash. Files are 0600, or 0660 when the directory is
    /// group-writable (a shared log, see [`crate::perms`]); a directory this user may not
    /// write is an [`Error::NoAccess`] that says what to do. After a crash the newest segment's reservation counter is checked against
    /// its contents when no other writer is alive, and a counter that cannot be trusted is
    /// raised past the written data (or the segment sealed) so nothing is ever overwritten.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Log> {
        opts.validate()?;
        let dir = dir.as_ref().to_path_buf();
        let seg_dir = dir.join(lfs::SEGMENTS_DIR);
        let sharing = crate::perms::prepare_log_dir(&dir, opts.dir_mode, opts.dir_group)?;
        lfs::ensure_dir(sharing, &seg_dir)?;
        let log_id = LogId::load_or_create(&dir, sharing)?;
        // Created (with space reserved) now, so retention can record counts on a full disk.
        let _ = crate::ledger::prepare(&dir);

        let open_path = dir.join(lfs::OPEN_LOCK);
        let open_lock = lfs::open_lock_file(sharing, &open_path)?;
        let _open_guard = flock(&open_lock, &open_path)?;
        let writers_path = dir.join(lfs::WRITERS_LOCK);
        let writers_lock = lfs::open_lock_file(sharing, &writers_path)?;
        let sole = writers_lock.try_lock().is_ok();
        if sole {
            let _ = writers_lock.unlock();
        }
        writers_lock
            .lock_shared()
            .map_err(|e| Error::io("lock", &writers_path, e))?;

        let rotate_path = dir.join(lfs::ROTATE_LOCK);
        let rotate_lock = lfs::open_lock_file(sharing, &rotate_path)?;
        let active = {
            let _g = flock(&rotate_lock, &rotate_path)?;
            open_active(&seg_dir, sharing, &opts, &log_id, sole)?
        };
        let now = opts.clock.boot_ns();
        let reserved = active.load_reserved();
        if opts.prepare_ahead {
            active.prepare_at.store(
                prepare_threshold(reserved, active.capacity),
                Ordering::Relaxed,
            );
        }
        let fill = FillClock {
            segment: active.number,
            since_ns: now,
            from: reserved,
            last: None,
        };

        let shared = Arc::new(Shared {
            dir,
            seg_dir,
            sharing,
            log_id,
            active: ArcSwap::from_pointee(active),
            prepared: Mutex::new(None),
            rotate_mutex: Mutex::new(()),
            rotate_lock,
            writers_lock,
            poisoned: AtomicBool::new(false),
            preamble: ArcSwapOption::empty(),
            current_preamble: AtomicU64::new(0),
            preamble_version: AtomicU64::new(0),
            preamble_mark: AtomicU64::new(u64::MAX),
            unsynced: Mutex::new(Vec::new()),
            dir_dirty: AtomicBool::new(false),
            signal: Mutex::new(Signal::default()),
            cond: Condvar::new(),
            fill: Mutex::new(fill),
            worker: Mutex::new(None),
            rotations: AtomicU64::new(0),
            uid: NEXT_LOG_UID.fetch_add(1, Ordering::Relaxed),
            epoch: AtomicU64::new(0),
            retired: Mutex::new(Vec::new()),
            background: opts.prepare_ahead || opts.retention.is_some(),
            last_retention: Mutex::new(None),
            uncounted: Mutex::new(Vec::new()),
            chunks: Chunks::new(),
            opts,
        });
        let mut threads = Vec::new();
        // A writer that prepares ahead starts its background thread now (it sleeps until an
        // append or a rotation wakes it); one that only needs retention starts it at its
        // first rotation (`Shared::start_worker`), so a one-shot writer starts none.
        if shared.opts.prepare_ahead {
            shared.start_worker()?;
        }
        if let SyncPolicy::Interval(every) = shared.opts.sync {
            let s = shared.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("seglog-sync".into())
                    .spawn(move || s.syncer_loop(every))
                    .map_err(|e| Error::io("spawn sync thread", &shared.dir, e))?,
            );
        }
        Ok(Log { shared, threads })
    }

    /// Whether this handle's background thread (which prepares segments ahead, counts the
    /// records of trimmed segments and unmaps retired ones) is running. It starts at open
    /// when [`Options::prepare_ahead`] is set, else at the first rotation if a retention
    /// policy needs it; a short-lived writer that never rotates never starts one.
    pub fn background_thread_started(&self) -> bool {
        lock(&self.shared.worker).is_some()
    }

    /// The number of the segment this handle has prepared (allocated, mapped and pre-faulted
    /// as far as it decided) and not rotated into yet.
    #[cfg(test)]
    pub(crate) fn prepared_segment(&self) -> Option<u64> {
        lock(&self.shared.prepared)
            .as_ref()
            .filter(|p| p.prefaulted.load(Ordering::Acquire))
            .map(|p| p.number)
    }

    /// The directory of this log.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// The log's permission policy (private, or shared with its directory's group), decided
    /// at open: every file made in the log must follow it.
    pub fn sharing(&self) -> Sharing {
        self.shared.sharing
    }

    /// The log's identity.
    pub fn log_id(&self) -> &LogId {
        &self.shared.log_id
    }

    /// The options the log was opened with.
    pub fn options(&self) -> &Options {
        &self.shared.opts
    }

    /// Number of the segment appends currently go to.
    pub fn active_segment(&self) -> u64 {
        self.shared.active.load().number
    }

    /// How many rotations this handle performed.
    pub fn rotations(&self) -> u64 {
        self.shared.rotations.load(Ordering::Relaxed)
    }

    /// Sets (or clears) this handle's preamble: a frame written into each segment before this
    /// handle's first record there, in the same reservation, so every segment carries the
    /// context of every writer that wrote to it. Setting a new value writes it again before
    /// the next record.
    pub fn set_preamble(&self, preamble: Option<Vec<u8>>) -> Result<()> {
        if let Some(p) = &preamble {
            self.check_len(p.len())?;
        }
        // Every frame reserved before this call lies below every chunk opened after it: a
        // record placed with the old context never follows the new preamble.
        self.shared.chunks.close_all();
        let version = self.shared.preamble_version.fetch_add(1, Ordering::AcqRel) + 1;
        let current = if preamble.is_some() { version } else { 0 };
        // The value first, then the version that announces it (release): an appender that
        // sees version v finds v or newer in `preamble`.
        self.shared
            .preamble
            .store(preamble.map(|bytes| Arc::new(Preamble { bytes, version })));
        self.shared
            .current_preamble
            .store(current, Ordering::Release);
        Ok(())
    }

    fn check_len(&self, len: usize) -> Result<()> {
        let max = self.shared.opts.max_record_size;
        if len as u64 > max {
            return Err(Error::RecordTooLarge {
                len: len as u64,
                max,
            });
        }
        Ok(())
    }

    /// Appends one record; returns its position. Never blocks on I/O with `sync = never`
    /// except when it has to rotate to a new segment, which is prepared ahead of time.
    #[inline]
    pub fn append(&self, payload: &[u8]) -> Result<Position> {
        let mut pos = Position::default();
        self.append_with(std::slice::from_ref(&payload), |p| pos = p, || ())?;
        Ok(pos)
    }

    /// Appends one record whose payload is `head` followed by `body`, without joining them
    /// first (a writer's encoded header and its caller's bytes). `reserved` runs once, as
    /// soon as the record's place in the log is fixed and before its bytes are written:
    /// a caller that must keep something from changing until its record is ordered (the
    /// recorder's context lock) can let go there, before the frame's stores, rather than
    /// after them. It does not run when the append fails before reserving.
    #[inline]
    pub fn append_parts(
        &self,
        head: &[u8],
        body: &[u8],
        reserved: impl FnOnce(),
    ) -> Result<Position> {
        let mut pos = Position::default();
        let parts = Parts { head, body };
        self.append_with(std::slice::from_ref(&parts), |p| pos = p, reserved)?;
        Ok(pos)
    }

    /// Appends several records in one reservation: they land contiguously, in order, in the
    /// same segment. Fails with `BatchTooLarge` when they cannot fit in one segment.
    pub fn append_batch<R: AsRef<[u8]>>(&self, payloads: &[R]) -> Result<Vec<Position>> {
        let mut out = Vec::with_capacity(payloads.len());
        self.append_with(payloads, |p| out.push(p), || ())?;
        Ok(out)
    }

    fn append_with<R: FramePayload>(
        &self,
        records: &[R],
        mut on_pos: impl FnMut(Position),
        reserved: impl FnOnce(),
    ) -> Result<()> {
        let s = &*self.shared;
        if s.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned);
        }
        let mut body = 0u64;
        for r in records {
            let len = r.len();
            self.check_len(len)?;
            body += format::frame_len(len as u64);
        }
        if body == 0 {
            return Ok(());
        }
        let usable = s.opts.segment_size - HEADER_LEN;
        if body > usable {
            return Err(Error::BatchTooLarge {
                len: body,
                max: usable,
            });
        }
        let wanted = s.current_preamble.load(Ordering::Acquire);
        // The closure returns a register-sized code (0: done; otherwise the number of the full
        // segment to rotate from) and parks the rare error aside: a wide `Result` copied back
        // through the stack after the frame stores measurably slowed every append.
        let mut failed: Option<Error> = None;
        let mut reserved = Some(reserved);
        loop {
            let full = with_active(s, |seg| -> u64 {
                chunk::with_local(&s.chunks, s.uid, |mut local| -> u64 {
                    // The preamble is loaded only when this handle has not written the current
                    // one into this segment yet (once per segment): the common path touches no
                    // reference count. A thread placing frames in its chunk may place them below
                    // frames other threads reserved earlier, so it goes by its own mark.
                    let mark = preamble_mark(seg.number, wanted);
                    let need_pre = wanted != 0
                        && match local.as_deref() {
                            Some(l) if l.chunked() => l.pre_mark != mark,
                            _ => s.preamble_mark.load(Ordering::Relaxed) != mark,
                        };
                    let guard = need_pre.then(|| s.preamble.load());
                    let preamble: Option<&Preamble> = guard.as_ref().and_then(|g| g.as_deref());
                    let pre_len = preamble.map_or(0, |p| format::frame_len(p.bytes.len() as u64));
                    if body + pre_len > usable {
                        failed = Some(Error::BatchTooLarge {
                            len: body + pre_len,
                            max: usable,
                        });
                        return 0;
                    }
                    let total = body + pre_len;
                    let (place, reach) = s.chunks.reserve(local.as_deref_mut(), seg, total);
                    match place {
                        Reservation::At(start) => {
                            if let Some(f) = reserved.take() {
                                f();
                            }
                            let mut off = start;
                            if let Some(p) = preamble {
                                off = reserve::write_frame(
                                    &**seg,
                                    seg.number,
                                    off,
                                    FrameKind::Preamble,
                                    &p.bytes,
                                );
                            }
                            for r in records {
                                on_pos(Position {
                                    segment: seg.number,
                                    offset: off,
                                });
                                let (head, body) = r.parts();
                                off = reserve::write_frame_parts(
                                    &**seg,
                                    seg.number,
                                    off,
                                    FrameKind::Record,
                                    head,
                                    body,
                                );
                            }
                            if let Some(p) = preamble {
                                // Safe for exact reservations whatever this one was: any made
                                // after this store starts past every chunk reserved before it.
                                let m = preamble_mark(seg.number, p.version);
                                s.preamble_mark.store(m, Ordering::Relaxed);
                                if let Some(l) = local {
                                    l.pre_mark = m;
                                }
                            }
                            if matches!(s.opts.sync, SyncPolicy::Always) {
                                if let Err(e) = seg.flush_range(start, total) {
                                    s.poisoned.store(true, Ordering::Relaxed);
                                    failed = Some(Error::io("msync", seg.path(), e));
                                }
                            }
                            // One load and compare: only the append that reaches the armed
                            // threshold (it is disarmed then) takes the cold path.
                            if reach >= seg.prepare_at.load(Ordering::Relaxed) {
                                s.crossed(seg);
                            }
                            0
                        }
                        Reservation::Full { seal_at } => {
                            if let Some(at) = seal_at {
                                reserve::seal(&**seg, seg.number, at);
                            }
                            seg.number
                        }
                    }
                })
            });
            if let Some(e) = failed.take() {
                return Err(e);
            }
            if full == 0 {
                return Ok(());
            }
            self.shared.rotate(full, true)?;
            // No frame of this handle goes to an older segment once a newer one is live.
            s.chunks.close_before(s.active.load().number);
        }
    }

    /// Makes everything appended so far durable (msync of every segment written since the
    /// last sync, fsync of the directory). A failure poisons the log.
    pub fn sync(&self) -> Result<()> {
        // Open chunks are closed first, so readers find what was appended followed by
        // frames or pads, not by space a live writer still holds.
        self.shared.chunks.close_all();
        self.shared.sync_all()
    }

    /// Test hook (not a stable API): this handle's threads place their frames in chunks
    /// from their first append instead of ramping up to them.
    #[doc(hidden)]
    pub fn test_eager_chunks(&self) {
        self.shared.chunks.set_eager();
    }

    /// Test hook (not a stable API): leaves every open chunk of this handle as a killed
    /// writer would (no pad: the rest stays zero). Appends go on in new chunks.
    #[doc(hidden)]
    pub fn test_abandon_chunks(&self) {
        self.shared.chunks.abandon_all();
    }

    /// Forces a rotation now (seals the active segment). Mostly for tests and tools.
    pub fn rotate(&self) -> Result<()> {
        let s = &*self.shared;
        let seg = s.active.load();
        // Reserving a whole segment's worth always overflows: exactly one caller gets to seal.
        if let Reservation::Full { seal_at: Some(at) } = reserve::reserve(&**seg, seg.capacity) {
            reserve::seal(&**seg, seg.number, at);
        }
        let n = seg.number;
        drop(seg);
        self.shared.rotate(n, false)?;
        s.chunks.close_before(s.active.load().number);
        Ok(())
    }

    /// Applies a retention policy now (see [`crate::retention`]). `cursor` is the position
    /// the consumer will read next, to count what is removed unread.
    pub fn enforce_retention(
        &self,
        policy: &RetentionPolicy,
        cursor: Option<Position>,
    ) -> Result<RetentionReport> {
        let s = &*self.shared;
        let removed = {
            let _g = s.lock_rotate()?;
            retention::remove_locked(&s.dir, policy, cursor, &*s.opts.clock)?
        };
        Ok(removed.count(cursor, Some(&s.dir.join(lfs::WRITERS_LOCK)), &*s.opts.clock))
    }

    /// The report of the last retention pass run by the background thread, if any.
    pub fn last_background_retention(&self) -> Option<RetentionReport> {
        lock(&self.shared.last_retention).clone()
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        let s = &*self.shared;
        // Every chunk closed (pads written) before the clean-close mark below, which does
        // not move the counter: chunks were reserved in full when they opened.
        s.chunks.shutdown();
        {
            let mut sig = lock(&s.signal);
            sig.stop = true;
            s.cond.notify_all();
        }
        let worker = lock(&s.worker).take();
        let had_worker = worker.is_some();
        for t in self.threads.drain(..).chain(worker) {
            let _ = t.join();
        }
        if !had_worker {
            // Segments trimmed by a rotation of a handle without a background thread.
            s.count_trimmed();
        }
        if !matches!(s.opts.sync, SyncPolicy::Never) {
            let _ = s.sync_all();
        }
        s.mark_clean_close();
    }
}

fn new_header(opts: &Options, log_id: &LogId, number: u64) -> SegmentHeader {
    SegmentHeader {
        version: FORMAT_VERSION,
        segment: number,
        capacity: opts.segment_size,
        created_wall_ns: opts.clock.wall_ns(),
        created_boot_ns: opts.clock.boot_ns(),
        boot_id: opts.clock.boot_id(),
        log_id: log_id.public(),
    }
}

fn seg_path(seg_dir: &Path, n: u64, ext: &str) -> PathBuf {
    seg_dir.join(lfs::segment_file_name(n, ext))
}

fn tmp_path(seg_dir: &Path, n: u64) -> PathBuf {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    seg_dir.join(format!(
        ".tmp-{n}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ))
}

/// Creates live segment `n` directly (no prepared file available).
fn create_live(
    seg_dir: &Path,
    sharing: Sharing,
    opts: &Options,
    log_id: &LogId,
    n: u64,
) -> Result<MappedSegment> {
    let dest = seg_path(seg_dir, n, SEG_EXT);
    let header = new_header(opts, log_id, n);
    let file = segment::create_file(sharing, &tmp_path(seg_dir, n), &dest, &header)?;
    MappedSegment::map(file, dest)
}

/// Picks the segment to append to at open time. Caller holds the rotate lock.
fn open_active(
    seg_dir: &Path,
    sharing: Sharing,
    opts: &Options,
    log_id: &LogId,
    sole: bool,
) -> Result<MappedSegment> {
    // One pass over the directory, names only (no stat per segment: a one-shot writer
    // opens a log of many segments).
    let mut latest: Option<u64> = None;
    let mut prepared = Vec::new();
    let mut temps = Vec::new();
    let rd = std::fs::read_dir(seg_dir).map_err(|e| Error::io("list", seg_dir, e))?;
    for e in rd {
        let e = e.map_err(|e| Error::io("list", seg_dir, e))?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        match lfs::parse_segment_file_name(name) {
            Some((n, SEG_EXT)) => latest = latest.max(Some(n)),
            Some((n, PREP_EXT)) => prepared.push((n, e.path())),
            _ if name.starts_with(".tmp-") => temps.push(e.path()),
            _ => {}
        }
    }
    if sole {
        // Leftovers of crashed rotations: temp files (no other writer is alive to be
        // creating one).
        for t in temps {
            let _ = std::fs::remove_file(t);
        }
    }
    // Prepared files that are not ahead of the newest live segment.
    for (_, p) in prepared.iter().filter(|(n, _)| Some(*n) <= latest) {
        let _ = std::fs::remove_file(p);
    }
    let Some(latest) = latest else {
        let seg = create_live(seg_dir, sharing, opts, log_id, 1)?;
        lfs::sync_dir(seg_dir)?;
        return Ok(seg);
    };
    let path = seg_path(seg_dir, latest, SEG_EXT);
    let mapped = segment::open_rw(&path).and_then(|f| MappedSegment::map(f, path.clone()));
    let seg = match mapped {
        Ok(seg) => seg,
        Err(e @ Error::UnsupportedVersion { .. }) => return Err(e),
        // A damaged newest segment is left for readers to report; writing continues after it.
        Err(_) => {
            let seg = create_live(seg_dir, sharing, opts, log_id, latest + 1)?;
            lfs::sync_dir(seg_dir)?;
            return Ok(seg);
        }
    };
    if sole && !closed_cleanly(&seg) {
        crate::recovery::repair_counter(&seg)?;
    }
    // From now on the counter may move: an old mark must not vouch for it any more.
    seg.clear_close_mark();
    Ok(seg)
}

/// Whether the newest segment's counter can be trusted without reading the whole segment:
/// the last writer closed the log cleanly with exactly this counter value (FORMAT.md,
/// "Clean-close mark"), and the bytes just past it are still unwritten
/// ([`crate::recovery::CHECK_AFTER_MARK`]). The second check catches what most often lands
/// there after a clean close: a torn or stray write past the counter, and frames a writer
/// appended after the mark whose counter update did not reach the disk before a power loss
/// (its first frame starts at the marked value).
fn closed_cleanly(seg: &MappedSegment) -> bool {
    let counter = seg.load_reserved();
    if seg.close_mark() != Some(counter) {
        return false;
    }
    counter >= seg.capacity || crate::recovery::unwritten_after(seg, counter)
}

impl Shared {
    /// Takes the rotate lock (see [`RotateGuard`]).
    fn lock_rotate(&self) -> Result<RotateGuard<'_>> {
        let mutex = lock(&self.rotate_mutex);
        let path = self.dir.join(lfs::ROTATE_LOCK);
        Ok(RotateGuard {
            _flock: flock(&self.rotate_lock, &path)?,
            _mutex: mutex,
        })
    }

    /// Drops a reference to a segment that is no longer active. The last reference unmaps
    /// it (`munmap` of 16 MiB: milliseconds), so while the background thread runs the
    /// reference goes to it instead of being dropped on an appending thread.
    #[cold]
    #[inline(never)]
    fn retire(&self, seg: Arc<MappedSegment>) {
        if lock(&self.worker).is_some() {
            lock(&self.retired).push(seg);
        }
    }

    /// Rotates away from segment `from` (full, or forced full when `filled` is false).
    fn rotate(self: &Arc<Self>, from: u64, filled: bool) -> Result<()> {
        let _g = self.lock_rotate()?;
        let left = self.active.load().capacity;
        if self.active.load().number != from {
            return Ok(()); // another thread of this process already rotated
        }
        let worker = self.background && self.start_worker().is_ok();
        let mut current = from;
        loop {
            let seg = self.next_segment(current)?;
            let full = seg.load_reserved() >= seg.capacity;
            current = seg.number;
            if !full {
                self.activated(&seg, filled.then_some((from, left)));
            }
            let old = self.active.swap(seg);
            self.epoch.fetch_add(1, Ordering::Release);
            if !matches!(self.opts.sync, SyncPolicy::Never) {
                lock(&self.unsynced).push(old.clone());
            }
            if worker {
                lock(&self.retired).push(old);
            }
            self.rotations.fetch_add(1, Ordering::Relaxed);
            if !full {
                break;
            }
        }
        if matches!(self.opts.sync, SyncPolicy::Always) {
            lfs::sync_dir(&self.seg_dir)?;
        } else {
            self.dir_dirty.store(true, Ordering::Relaxed);
        }
        if worker {
            let mut sig = lock(&self.signal);
            sig.rotated = true;
            self.cond.notify_all();
        }
        Ok(())
    }

    /// Notes that `seg` becomes the active segment (before it is published): restarts the
    /// fill clock, keeping the rate measured over the segment `left` (number, capacity)
    /// that appends filled, when this handle watched it, and arms the preparer's threshold.
    fn activated(&self, seg: &MappedSegment, left: Option<(u64, u64)>) {
        let now = self.opts.clock.boot_ns();
        let reserved = seg.load_reserved();
        {
            let mut f = lock(&self.fill);
            if let Some((_, capacity)) = left.filter(|l| l.0 == f.segment) {
                f.last = Some(Fill {
                    bytes: capacity.saturating_sub(f.from),
                    elapsed_ns: now.saturating_sub(f.since_ns),
                });
            }
            f.segment = seg.number;
            f.since_ns = now;
            f.from = reserved;
        }
        if self.opts.prepare_ahead {
            seg.prepare_at
                .store(prepare_threshold(reserved, seg.capacity), Ordering::Relaxed);
        }
    }

    /// Starts the background thread unless it runs already.
    fn start_worker(self: &Arc<Self>) -> Result<()> {
        let mut w = lock(&self.worker);
        if w.is_some() {
            return Ok(());
        }
        let s = self.clone();
        *w = Some(
            std::thread::Builder::new()
                .name("seglog-prepare".into())
                .spawn(move || {
                    crate::thread_sched::no_wakeup_preemption();
                    s.worker_loop()
                })
                .map_err(|e| Error::io("spawn preparer thread", &self.dir, e))?,
        );
        Ok(())
    }

    /// An append reached `seg`'s threshold: the first to disarm it wakes the preparer
    /// (once per segment and handle; off the hot path).
    #[cold]
    #[inline(never)]
    fn crossed(&self, seg: &MappedSegment) {
        if seg.prepare_at.swap(u64::MAX, Ordering::Relaxed) == u64::MAX {
            return;
        }
        let mut sig = lock(&self.signal);
        sig.crossed = true;
        self.cond.notify_all();
    }

    /// On close: if no other writer is alive, writes the clean-close mark into the active
    /// segment, so the next writer to open the log trusts its counter without reading the
    /// segment (FORMAT.md, "Clean-close mark"). Our shared lock on `writers.lock` becomes
    /// exclusive only if nobody else holds it; if the conversion fails the shared lock is
    /// gone too, which is what closing does anyway.
    fn mark_clean_close(&self) {
        if self.poisoned.load(Ordering::Relaxed) || self.writers_lock.try_lock().is_err() {
            return;
        }
        let seg = self.active.load();
        let counter = seg.load_reserved();
        if counter < seg.capacity {
            seg.set_close_mark(counter);
        }
        let _ = self.writers_lock.unlock();
    }

    /// The segment after `from`: one another process already made live, our prepared one,
    /// another process's prepared one, or a fresh one. Caller holds the rotate lock.
    fn next_segment(&self, from: u64) -> Result<Arc<MappedSegment>> {
        let mut n = from + 1;
        // Another process may have rotated (several times) already.
        while seg_path(&self.seg_dir, n + 1, SEG_EXT).exists() {
            n += 1;
        }
        let live = seg_path(&self.seg_dir, n, SEG_EXT);
        let prepared = lock(&self.prepared).take();
        if live.exists() {
            let file = segment::open_rw(&live)?;
            return MappedSegment::map(file, live).map(Arc::new);
        }
        let prep = seg_path(&self.seg_dir, n, PREP_EXT);
        if prep.exists() {
            segment::rename_noreplace(&prep, &live)?;
            if let Some(p) = prepared.filter(|p| p.number == n) {
                if let Ok(meta) = std::fs::metadata(&live) {
                    use std::os::unix::fs::MetadataExt;
                    if (meta.dev(), meta.ino()) == p.ino {
                        // Our mapping is of the same inode; only its path changed. The
                        // preparer may still be pre-faulting it: it is used as it is, never
                        // mapped again here (an mmap would wait for the populate's lock).
                        p.renamed(live);
                        return Ok(p);
                    }
                }
            }
            let file = segment::open_rw(&live)?;
            return MappedSegment::map(file, live).map(Arc::new);
        }
        self.trim_locked();
        create_live(&self.seg_dir, self.sharing, &self.opts, &self.log_id, n).map(Arc::new)
    }

    /// The background thread: prepares the next segment and applies retention. It sleeps
    /// without a timeout until a rotation, an append that reached the active segment's
    /// threshold, or the handle's close wakes it, so an idle writer costs no wake-ups.
    ///
    /// A short-lived writer must not pay for allocating and faulting 16 MiB it will never
    /// use, so the next segment is prepared only once the active one filled an eighth of
    /// what was left of it (the append that gets there wakes this thread), or right after a
    /// rotation. How much of it is pre-faulted depends on how fast the log fills
    /// ([`prefault_len`]).
    fn worker_loop(self: Arc<Self>) {
        loop {
            let (rotated, crossed) = {
                let sig = lock(&self.signal);
                let mut sig = self
                    .cond
                    .wait_while(sig, |s| !s.rotated && !s.crossed && !s.stop)
                    .unwrap_or_else(|p| p.into_inner());
                if sig.stop {
                    // A rotation signalled just before the close still gets its seal count
                    // and its retention pass (a busy machine can leave one pending here:
                    // skipped, the closed log stayed a segment over its budget).
                    let rotated = std::mem::take(&mut sig.rotated);
                    drop(sig);
                    if rotated {
                        self.after_rotation();
                    }
                    // Segments trimmed since the last count still need their ledger entries.
                    self.count_trimmed();
                    return;
                }
                (
                    std::mem::take(&mut sig.rotated),
                    std::mem::take(&mut sig.crossed),
                )
            };
            if crossed {
                self.measure_fill();
            }
            // The next segment first: the appender reaches it in one segment's fill time (20 ms
            // at full speed), and what this thread does before it (unmapping, counting) only
            // delays the mapping and the pre-fault that its appends need (issue 14).
            if self.opts.prepare_ahead && (rotated || crossed) {
                let _ = self.prepare_next();
            }
            // Unmapped after the lock is released: in `drop(take(&mut *lock(..)))` the guard,
            // a temporary, lives to the end of the statement, so the `munmap` of every
            // retired segment (2 ms for 16 MiB, far more when this thread is preempted) ran
            // under `retired`, and an appender rotating meanwhile waited for it there
            // (`perf record -e sched:sched_switch -g`: futex waits in `Shared::rotate`).
            let retired = std::mem::take(&mut *lock(&self.retired));
            drop(retired);
            if rotated {
                self.after_rotation();
            }
            self.count_trimmed();
        }
    }

    /// What the background thread does after a rotation: the segment rotated away from gets
    /// its record count (FORMAT.md), then retention runs.
    fn after_rotation(&self) {
        retention::seal_previous(&self.dir, &self.dir.join(lfs::WRITERS_LOCK));
        if self.opts.retention.is_some() {
            if let Ok(_g) = self.lock_rotate() {
                self.trim_locked();
            }
        }
    }

    /// Measures how fast the active segment filled since it became active (or since this
    /// handle opened it), counting every writer's reservations.
    fn measure_fill(&self) {
        let seg = self.active.load();
        let now = self.opts.clock.boot_ns();
        let mut f = lock(&self.fill);
        if f.segment == seg.number {
            f.last = Some(Fill {
                bytes: seg.load_reserved().min(seg.capacity).saturating_sub(f.from),
                elapsed_ns: now.saturating_sub(f.since_ns),
            });
        }
    }

    /// Applies the retention policy, if any; the caller holds the rotate lock. Runs before
    /// every new segment file is created (and after rotations), so disk use never passes
    /// `max_bytes` plus the one segment being added, even when a writer died between its
    /// rotation and its retention pass. Records are counted later by the preparer.
    fn trim_locked(&self) {
        let Some(policy) = &self.opts.retention else {
            return;
        };
        if let Ok(removed) = retention::remove_locked(&self.dir, policy, None, &*self.opts.clock) {
            if removed.segments_removed() > 0 {
                lock(&self.uncounted).push(removed);
            }
        }
    }

    /// Counts the records of segments trimmed so far (preparer thread, no lock held).
    fn count_trimmed(&self) {
        let pending: Vec<_> = std::mem::take(&mut *lock(&self.uncounted));
        if pending.is_empty() {
            return;
        }
        let probe = self.dir.join(lfs::WRITERS_LOCK);
        let mut total = RetentionReport::default();
        for r in pending {
            let r = r.count(None, Some(&probe), &*self.opts.clock);
            total.removed.extend(r.removed);
            total.segments_removed += r.segments_removed;
            total.records_removed += r.records_removed;
            total.bytes_removed += r.bytes_removed;
            total.unconsumed_records += r.unconsumed_records;
            total.bytes_after = r.bytes_after;
        }
        *lock(&self.last_retention) = Some(total);
    }

    /// Allocates and maps the segment after the active one, and pre-faults as much of it as
    /// the measured fill rate says will be written soon ([`prefault_len`]).
    fn prepare_next(&self) -> Result<()> {
        let want = self.active.load().number + 1;
        if lock(&self.prepared)
            .as_ref()
            .is_some_and(|p| p.number == want)
        {
            return Ok(());
        }
        let prep = seg_path(&self.seg_dir, want, PREP_EXT);
        // The allocation stays under the rotate lock: retention runs just before it, so disk
        // use stays within `max_bytes` plus the one segment being added, whatever other
        // writers do meanwhile (an allocation outside the lock broke that bound in the
        // torture harness).
        let file = {
            let _g = self.lock_rotate()?;
            if seg_path(&self.seg_dir, want, SEG_EXT).exists() {
                return Ok(());
            }
            if prep.exists() {
                segment::open_rw(&prep)?
            } else {
                self.trim_locked();
                segment::create_file(
                    self.sharing,
                    &tmp_path(&self.seg_dir, want),
                    &prep,
                    &new_header(&self.opts, &self.log_id, want),
                )?
            }
        };
        // Published before it is pre-faulted: a rotation that comes before the populate is
        // done takes this mapping as it is (its appends fault in what is not populated yet)
        // rather than waiting for the preparer or mapping the file again.
        let seg = Arc::new(MappedSegment::map(file, prep)?);
        // Not `prefault_len(lock(..).last, ..)` inside another call: the guard of a temporary
        // lives to the end of the statement, and a rotation (`activated`) would wait for the
        // whole populate on `fill`.
        let last = lock(&self.fill).last;
        let len = prefault_len(last, seg.capacity);
        if huge_folios(last, len, seg.capacity, &self.opts.sync) {
            seg.for_fast_writer();
        }
        *lock(&self.prepared) = Some(seg.clone());
        seg.prefault(len);
        seg.prefaulted.store(true, Ordering::Release);
        Ok(())
    }

    fn syncer_loop(self: Arc<Self>, every: Duration) {
        loop {
            {
                let sig = lock(&self.signal);
                let (sig, _) = self
                    .cond
                    .wait_timeout_while(sig, every, |s| !s.stop)
                    .unwrap_or_else(|p| p.into_inner());
                if sig.stop {
                    drop(sig);
                    // Segments trimmed since the last count still need their ledger entries.
                    self.count_trimmed();
                    return;
                }
            }
            let _ = self.sync_all();
        }
    }

    fn sync_all(&self) -> Result<()> {
        if self.poisoned.load(Ordering::Relaxed) {
            return Err(Error::Poisoned);
        }
        let retired: Vec<_> = std::mem::take(&mut *lock(&self.unsynced));
        let active = self.active.load_full();
        for seg in retired.iter().chain(std::iter::once(&active)) {
            // Only what was reserved so far (every append before this call ends at or before
            // the counter read here). Syncing the pre-faulted rest would write zeros and
            // write-protect pages the appender is about to fill: one fault per page.
            let used = seg.load_reserved().min(seg.capacity);
            seg.release_written(used);
            if let Err(e) = seg.flush_range(0, used) {
                self.poisoned.store(true, Ordering::Relaxed);
                return Err(Error::io("msync", seg.path(), e));
            }
        }
        if self.dir_dirty.swap(false, Ordering::Relaxed) {
            if let Err(e) = lfs::sync_dir(&self.seg_dir) {
                self.poisoned.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(())
    }
}
