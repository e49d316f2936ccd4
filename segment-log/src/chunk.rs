//! Per-writer chunks (segment format version 2; FORMAT.md, "Version 2").
//!
//! A busy writing thread reserves a *chunk* (4-64 KiB) with one `fetch_add` on the segment's
//! shared counter, then places its frames in it one after the other. The chunk's fill cursor
//! is an atomic owned by that thread, on a cache line no other thread writes: an append costs
//! one uncontended compare-and-swap there instead of a `lock xadd` on the one counter line
//! every writer of the log bounces between its cores, and two threads' frames never share a
//! cache line.
//!
//! The unused rest of a chunk is closed with a checksummed pad frame, written by whoever wins
//! the compare-and-swap of the cursor to [`CLOSED`]: the owner (the next frame does not fit,
//! the active segment changed, a large batch reserves exactly, the thread exits) or the
//! handle's closer thread (the chunk was idle for a tick, its segment is full, or the handle
//! syncs, changes its preamble or closes). Exactly one of them wins, so the owner never
//! writes where the closer padded and the closer never pads over a frame the owner placed.
//! An idle chunk is closed within two ticks ([`TICK`], 10 ms each), far below the readers'
//! hole timeouts (2 s; the journal 500 ms), so a reader waiting at a chunk's unwritten rest
//! sees the pad long before it would skip the range as abandoned. A writer killed inside its
//! chunk leaves the rest zero: readers report it as an abandoned reservation, as before.
//!
//! Chunks never leave an 8-byte remainder (no frame fits in 8 bytes, and no pad either): a
//! frame goes into a chunk only if it fills it exactly or leaves at least a frame header.
//!
//! A slow writer gains nothing from chunks and would waste most of each one on pads, so a
//! thread starts with exact reservations (as in version 1) and moves to chunks only after
//! [`RAMP_APPENDS`] appends within [`RAMP_WITHIN`]; chunk sizes double from [`CHUNK_MIN`] each
//! time the owner fills one, up to [`CHUNK_MAX`] but never past 1/[`RUN_FRACTION`] of the
//! chunk bytes the thread has filled since it ramped up, and a chunk the closer had to close
//! (the writer went idle) sends the thread back to exact reservations. The pad closing a
//! burst of appends is therefore at most [`CHUNK_MIN`] or 1/64 of the burst's bytes,
//! whichever is larger (a 380 KB burst of 100-byte records: <= 6 KiB of pad, 1.5 %; the
//! DESIGN budget is 1.3x the payload bytes on disk, frame headers included).
//!
//! The protocol (`take`, `close`) is written over [`Cursor`] and [`FrameMem`] so that the
//! loom model (`loom_tests`) runs the same code.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::format::FRAME_HEADER_LEN;
use crate::reserve::{self, FrameMem, Reservation};
use crate::segment::MappedSegment;

/// The first chunk size of a ramp.
pub(crate) const CHUNK_MIN: u64 = 4 << 10;
/// The largest chunk.
pub(crate) const CHUNK_MAX: u64 = 64 << 10;
/// The closer's period: a chunk whose cursor did not move over a whole tick is closed.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// A chunk is at most this fraction (1/n) of the chunk bytes its thread filled in this run
/// of appends (but at least [`CHUNK_MIN`]): bounds the pad a burst ends with.
pub(crate) const RUN_FRACTION: u64 = 64;
/// A thread moves from exact reservations to chunks after this many appends ...
const RAMP_APPENDS: u32 = 32;
/// ... made within this time.
const RAMP_WITHIN: Duration = Duration::from_millis(10);
/// The cursor of a closed chunk (no chunk): never a frame offset.
pub(crate) const CLOSED: u64 = u64::MAX;
/// The closer's `seen` for a chunk it has not looked at yet: never a cursor value.
const UNSEEN: u64 = u64::MAX - 1;

/// The atomic fill cursor of a chunk, as the protocol uses it (loom supplies its own).
pub(crate) trait Cursor {
    /// The current value (acquire).
    fn current(&self) -> u64;
    /// Compare-and-swap `from` to `to`; whether it succeeded.
    fn advance(&self, from: u64, to: u64) -> bool;
}

impl Cursor for AtomicU64 {
    #[inline(always)]
    fn current(&self) -> u64 {
        self.load(Ordering::Acquire)
    }
    #[inline(always)]
    fn advance(&self, from: u64, to: u64) -> bool {
        self.compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// Whether `len` bytes placed at `c` fit a chunk ending at `end` without leaving exactly 8
/// bytes (which neither a frame nor a pad could fill).
#[inline(always)]
pub(crate) fn fits(c: u64, len: u64, end: u64) -> bool {
    let e = c.saturating_add(len);
    e == end || e.saturating_add(FRAME_HEADER_LEN) <= end
}

/// The owner's attempt to place `len` bytes in its chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Take {
    /// The bytes at this offset are the owner's.
    At(u64),
    /// They do not fit; the cursor stood at this value (the owner closes the chunk there).
    NoRoom(u64),
    /// Someone else closed the chunk.
    Closed,
}

/// Places `len` bytes in the chunk ending at `end`. Only the owner calls this, so the only
/// other change the cursor can see is to [`CLOSED`].
#[inline(always)]
pub(crate) fn take<C: Cursor + ?Sized>(cursor: &C, end: u64, len: u64) -> Take {
    let c = cursor.current();
    if c == CLOSED {
        return Take::Closed;
    }
    if !fits(c, len, end) {
        return Take::NoRoom(c);
    }
    if cursor.advance(c, c + len) {
        Take::At(c)
    } else {
        Take::Closed
    }
}

/// Closes the chunk whose cursor was seen at `c`: whoever moves it from `c` to [`CLOSED`]
/// owns `c..end` and pads it. Returns whether this caller did.
pub(crate) fn close<C: Cursor + ?Sized, M: FrameMem + ?Sized>(
    cursor: &C,
    c: u64,
    end: u64,
    mem: &M,
    segment: u64,
) -> bool {
    if c == CLOSED || c > end || !cursor.advance(c, CLOSED) {
        return false;
    }
    reserve::write_pad(mem, segment, c, end);
    true
}

/// A cursor alone on its cache line (and the adjacent-line prefetch pair).
#[repr(align(128))]
struct Line(AtomicU64);

/// One thread's chunk of one log handle, shared with the handle's closer.
pub(crate) struct ChunkSlot {
    cursor: Line,
    /// What the closer needs; changed by the owner only while the cursor is [`CLOSED`].
    open: Mutex<Open>,
}

struct Open {
    seg: Option<Arc<MappedSegment>>,
    end: u64,
    /// The cursor the closer saw at its last tick ([`UNSEEN`]: none yet).
    seen: u64,
}

impl ChunkSlot {
    fn new() -> Self {
        ChunkSlot {
            cursor: Line(AtomicU64::new(CLOSED)),
            open: Mutex::new(Open {
                seg: None,
                end: 0,
                seen: UNSEEN,
            }),
        }
    }

    /// Closes the chunk if it is open (and `filter` accepts its segment number); `idle_only`:
    /// only if its cursor did not move since the last call, or its segment is full. Returns
    /// whether the chunk is still open afterwards.
    fn close_if(&self, idle_only: bool, filter: impl Fn(u64) -> bool) -> bool {
        let mut o = lock(&self.open);
        let c = self.cursor.0.current();
        let Some(seg) = o.seg.clone().filter(|_| c != CLOSED) else {
            o.seg = None;
            return false;
        };
        if !filter(seg.number) {
            return true;
        }
        let due = !idle_only || c == o.seen || seg.load_reserved() >= seg.capacity;
        if !due {
            o.seen = c;
            return true;
        }
        if close(&self.cursor.0, c, o.end, &*seg, seg.number) {
            o.seg = None;
            return false;
        }
        // The owner moved on meanwhile (or closed it itself).
        let now = self.cursor.0.current();
        o.seen = now;
        if now == CLOSED {
            o.seg = None;
        }
        now != CLOSED
    }
}

/// A version 1 reservation of exactly `total` bytes.
#[inline(always)]
fn exact(seg: &MappedSegment, total: u64) -> (Reservation, u64) {
    let r = reserve::reserve(seg, total);
    let reach = match r {
        Reservation::At(o) => o + total,
        Reservation::Full { .. } => 0,
    };
    (r, reach)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The chunks of one log handle and its closer thread.
pub(crate) struct Chunks {
    slots: Mutex<Vec<Arc<ChunkSlot>>>,
    /// Set when a chunk is opened, cleared by the closer when it found none open: the
    /// closer sleeps without a timeout while it is clear (an idle writer has no wake-ups).
    armed: AtomicBool,
    stop: Mutex<bool>,
    cond: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The closer could not be started (or the handle is closing): no chunks.
    disabled: AtomicBool,
    /// Tests: threads use chunks from their first append (no ramp).
    eager: AtomicBool,
    /// Itself, for the closer thread started from `&self`.
    me: std::sync::OnceLock<std::sync::Weak<Chunks>>,
}

impl Chunks {
    pub(crate) fn new() -> Arc<Self> {
        let c = Arc::new(Chunks {
            slots: Mutex::new(Vec::new()),
            armed: AtomicBool::new(false),
            stop: Mutex::new(false),
            cond: Condvar::new(),
            thread: Mutex::new(None),
            disabled: AtomicBool::new(false),
            eager: AtomicBool::new(false),
            me: std::sync::OnceLock::new(),
        });
        let _ = c.me.set(Arc::downgrade(&c));
        c
    }

    /// Reserves `total` bytes of `seg` for the calling thread: from its chunk when it has
    /// ramped up to chunks (opening a new one when needed), else exactly as in version 1.
    /// Either way the bytes are the caller's alone, and a thread's frames keep the order of
    /// its appends. The second value is how far this call took the counter, at least (the
    /// end of a chunk it opened), for the preparer's threshold.
    #[inline]
    pub(crate) fn reserve(
        &self,
        local: Option<&mut Local>,
        seg: &Arc<MappedSegment>,
        total: u64,
    ) -> (Reservation, u64) {
        let Some(l) = local else {
            return exact(seg, total);
        };
        if l.size != 0 && l.seg.as_ref().is_some_and(|o| o.number == seg.number) {
            match take(&l.slot.cursor.0, l.end, total) {
                Take::At(o) => return (Reservation::At(o), o + total),
                Take::NoRoom(c) => {
                    if let Some(s) = l.seg.take() {
                        close(&l.slot.cursor.0, c, l.end, &*s, s.number);
                    }
                    l.run = l.run.saturating_add(l.size);
                    l.size = next_size(l.size, l.run);
                }
                Take::Closed => {
                    // The closer found the chunk idle (or the handle closed it): back to
                    // exact reservations until the thread is busy again.
                    l.seg = None;
                    l.size = 0;
                    l.streak = 0;
                }
            }
        }
        self.reserve_cold(l, seg, total)
    }

    #[cold]
    #[inline(never)]
    fn reserve_cold(
        &self,
        l: &mut Local,
        seg: &Arc<MappedSegment>,
        total: u64,
    ) -> (Reservation, u64) {
        // A chunk in another segment, or one this append bypasses: closed first, so this
        // thread's frames stay in the order of its appends.
        l.close_own();
        if l.size == 0 {
            l.ramp(self);
        }
        if l.size != 0 && !l.registered {
            // The first chunk of this thread: the closer must know it (and run).
            l.registered = self.register(&l.slot);
            if !l.registered {
                l.size = 0;
            }
        }
        let size = l.size;
        if size == 0
            || seg.version < 2
            || total.saturating_mul(2) > size
            || seg.load_reserved().saturating_add(size) > seg.capacity
        {
            return exact(seg, total);
        }
        match reserve::reserve(&**seg, size) {
            Reservation::At(start) => {
                {
                    let mut o = lock(&l.slot.open);
                    o.seg = Some(seg.clone());
                    o.end = start + size;
                    o.seen = UNSEEN;
                    // Inside the lock: a closer tick that finds the slot after this sees the
                    // chunk, one before it cleared `armed` first (below).
                    l.slot.cursor.0.store(start + total, Ordering::Release);
                }
                l.seg = Some(seg.clone());
                l.end = start + size;
                if !self.armed.swap(true, Ordering::AcqRel) {
                    let _g = lock(&self.stop);
                    self.cond.notify_all();
                }
                (Reservation::At(start), start + size)
            }
            full => (full, 0),
        }
    }

    /// Registers a thread's slot and starts the closer if it is not running: at the
    /// thread's first chunk, so a writer that never ramps up (a one-shot `seglog record`)
    /// starts no thread. False when chunks are off for this handle.
    fn register(&self, slot: &Arc<ChunkSlot>) -> bool {
        if self.disabled.load(Ordering::Acquire) {
            return false;
        }
        {
            let mut t = lock(&self.thread);
            if t.is_none() {
                let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
                    return false;
                };
                match std::thread::Builder::new()
                    .name("seglog-chunks".into())
                    .spawn(move || me.run())
                {
                    Ok(h) => *t = Some(h),
                    Err(_) => {
                        self.disabled.store(true, Ordering::Release);
                        return false;
                    }
                }
            }
        }
        lock(&self.slots).push(slot.clone());
        true
    }

    /// The closer thread: while a chunk is open, every [`TICK`] it closes the chunks that
    /// stayed idle since the last tick or whose segment filled up.
    fn run(self: Arc<Self>) {
        loop {
            {
                let g = lock(&self.stop);
                let g = self
                    .cond
                    .wait_while(g, |stop| !*stop && !self.armed.load(Ordering::Acquire))
                    .unwrap_or_else(|p| p.into_inner());
                if *g {
                    return;
                }
                let (g, _) = self
                    .cond
                    .wait_timeout_while(g, TICK, |stop| !*stop)
                    .unwrap_or_else(|p| p.into_inner());
                if *g {
                    return;
                }
            }
            self.armed.store(false, Ordering::Release);
            if self.sweep(true, |_| true) {
                self.armed.store(true, Ordering::Release);
            }
        }
    }

    /// Closes the open chunks (`idle_only`: the idle ones) of segments `filter` accepts.
    /// Returns whether any chunk is still open. Slots of threads that exited are dropped.
    fn sweep(&self, idle_only: bool, filter: impl Fn(u64) -> bool) -> bool {
        let mut slots = lock(&self.slots);
        let mut open = false;
        slots.retain(|s| {
            let still = s.close_if(idle_only, &filter);
            open |= still;
            still || Arc::strong_count(s) > 1
        });
        open
    }

    /// Closes every open chunk now: before a sync, a preamble change and the handle's close,
    /// so what was appended before is followed by frames or pads, never by a wait.
    pub(crate) fn close_all(&self) {
        self.sweep(false, |_| true);
    }

    /// Closes the chunks in segments before `active` (after this handle rotated), so no
    /// frame is placed in an older segment once a newer one is live.
    pub(crate) fn close_before(&self, active: u64) {
        self.sweep(false, |n| n < active);
    }

    /// Tests: every thread uses chunks from its first append.
    pub(crate) fn set_eager(&self) {
        self.eager.store(true, Ordering::Relaxed);
    }

    /// Tests: what a writer killed now leaves: every open chunk is closed *without* its pad
    /// (its rest stays zero, an abandoned reservation for readers).
    pub(crate) fn abandon_all(&self) {
        for s in lock(&self.slots).iter() {
            let mut o = lock(&s.open);
            let c = s.cursor.0.current();
            if c != CLOSED && s.cursor.0.advance(c, CLOSED) {
                o.seg = None;
            }
        }
    }

    /// Closes every chunk, stops the closer and turns chunks off (the handle is closing).
    pub(crate) fn shutdown(&self) {
        self.disabled.store(true, Ordering::Release);
        {
            let mut stop = lock(&self.stop);
            *stop = true;
            self.cond.notify_all();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        self.close_all();
    }
}

/// The size of the chunk after one of `size` bytes was filled, `run` bytes filled in all:
/// doubled, at most [`CHUNK_MAX`] and 1/[`RUN_FRACTION`] of `run`, at least [`CHUNK_MIN`];
/// always a multiple of [`CHUNK_MIN`] (chunks start and end frame-aligned).
#[inline]
pub(crate) fn next_size(size: u64, run: u64) -> u64 {
    let cap = (run / RUN_FRACTION) & !(CHUNK_MIN - 1);
    (size * 2).min(CHUNK_MAX).min(cap).max(CHUNK_MIN)
}

/// A thread's chunk state for one log handle (thread-local: see [`with_local`]).
pub(crate) struct Local {
    log_uid: u64,
    slot: Arc<ChunkSlot>,
    /// Whether `slot` is in the handle's list (done at the thread's first chunk).
    registered: bool,
    /// The segment of the open chunk (`None`: no chunk open).
    seg: Option<Arc<MappedSegment>>,
    end: u64,
    /// The next chunk's size; 0: exact reservations.
    size: u64,
    /// Bytes of the chunks this thread filled since it ramped up to chunks (meaningful
    /// while `size` is not 0; [`Local::start_chunks`] resets it).
    run: u64,
    streak: u32,
    since: Option<Instant>,
    /// `preamble_mark(segment, version)` of the last preamble this thread wrote: in a chunk
    /// a thread's frames may lie before frames other threads placed earlier, so each thread
    /// puts the preamble before its own first record in a segment.
    pub(crate) pre_mark: u64,
}

impl Local {
    /// Whether the next append may go to a chunk (the preamble rule then is per thread).
    #[inline(always)]
    pub(crate) fn chunked(&self) -> bool {
        self.size != 0
    }

    /// Closes this thread's open chunk, if any.
    fn close_own(&mut self) {
        if let Some(s) = self.seg.take() {
            let c = self.slot.cursor.0.current();
            close(&self.slot.cursor.0, c, self.end, &*s, s.number);
        }
    }

    /// Moves the thread to chunks: a new run, from the smallest size.
    fn start_chunks(&mut self) {
        self.size = CHUNK_MIN;
        self.run = 0;
    }

    /// Counts an exact reservation towards the ramp to chunks.
    fn ramp(&mut self, chunks: &Chunks) {
        if chunks.disabled.load(Ordering::Relaxed) {
            return;
        }
        if chunks.eager.load(Ordering::Relaxed) {
            self.start_chunks();
            return;
        }
        self.streak += 1;
        if self.streak == 1 {
            self.since = Some(Instant::now());
        } else if self.streak >= RAMP_APPENDS {
            self.streak = 0;
            if self.since.is_some_and(|t| t.elapsed() <= RAMP_WITHIN) {
                self.start_chunks();
            }
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        // Thread exit, or the thread moved to another log handle.
        self.close_own();
    }
}

thread_local! {
    static LOCAL: std::cell::RefCell<Option<Local>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with the calling thread's chunk state for the handle `uid` (made on first use),
/// or `None` when there is none (chunks off, or the thread is exiting).
#[inline(always)]
pub(crate) fn with_local<R>(
    chunks: &Arc<Chunks>,
    uid: u64,
    f: impl FnOnce(Option<&mut Local>) -> R,
) -> R {
    let mut f = Some(f);
    let mut out = None;
    let _ = LOCAL.try_with(|cell| {
        let Ok(mut c) = cell.try_borrow_mut() else {
            return;
        };
        if !matches!(&*c, Some(l) if l.log_uid == uid) {
            if chunks.disabled.load(Ordering::Relaxed) {
                return;
            }
            // Drops (and so closes) the thread's chunk of another handle.
            *c = Some(Local {
                log_uid: uid,
                slot: Arc::new(ChunkSlot::new()),
                registered: false,
                seg: None,
                end: 0,
                size: 0,
                run: 0,
                streak: 0,
                since: None,
                pre_mark: u64::MAX,
            });
        }
        if let (Some(l), Some(f)) = (c.as_mut(), f.take()) {
            out = Some(f(Some(l)));
        }
    });
    match (out, f) {
        (Some(r), _) => r,
        (None, Some(f)) => f(None),
        (None, None) => unreachable!("the closure runs exactly once"),
    }
}
