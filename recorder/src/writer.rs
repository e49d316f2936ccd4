//! [`Recorder`]: validates, rate-limits and appends records; keeps the writer's context.
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use segment_log::{Clock, Log, Position};

use crate::config::{Config, RateLimitStrategy};
use crate::counters::PendingCounters;
pub use crate::errors::{OpenError, RecordError};
use crate::ratelimit::{Admission, RateLimiter};
use crate::record::{
    encode_context, encode_record, encode_v2_header, ClassRef, Context, Receipt, RecordHeader,
    RecordTime, MAX_CLASSIFICATIONS, MAX_V2_HEADER, RECORD_VERSION,
};
use crate::system::{MachineId, SystemInfo};
pub use builder::RecordBuilder;
use state::{acquire_slot, ClassIndex, WriterState};
use tally::Tally;

/// Largest slot number tried; more simultaneous writers than this on one log is an error.
pub const MAX_SLOTS: u32 = 4096;
/// Directory of slot lock files inside `<log dir>/recorder/`.
pub const SLOTS_DIR: &str = "slots";
/// Largest record header (layout 2 with event id and hold): 1 + 5 + 5 + 1 + 10 + 10 + 16 + 10.
pub const MAX_HEADER_LEN: usize = crate::record::MAX_V2_HEADER;
/// How often (in boot-time milliseconds) a writer re-reads the wall clock: one clock read
/// per record instead of two, and a wall-clock step shows in records within a second.
pub const WALL_RECHECK_MS: u64 = 1000;
/// Boot-delta above which a writer takes a new base time when it is in a new segment anyway
/// (2^21 ms, about 35 minutes: deltas below it take at most 3 bytes).
const REBASE_SOFT_MS: u64 = 1 << 21;
/// Boot-delta above which a writer always takes a new base time (2^28 ms, about 3 days).
const REBASE_HARD_MS: u64 = 1 << 28;

/// A writer of records into one log directory.
///
/// `Recorder` is `Send + Sync`: share it between threads. Any number of processes may each
/// open their own on the same directory; each holds a *writer slot* (an flock on
/// `<dir>/recorder/slots/<n>.lock`) that its records name to find its context. Appends do
/// not lock (segment-log's reservation protocol); context changes (a new classification,
/// machine id rotation, a new base time) briefly exclude this process's own appends.
/// Durability is the log's `sync` policy.
pub struct Recorder {
    log: Log,
    public_id: [u8; 32],
    _slot: File,
    state: RwLock<WriterState>,
    limiter: Option<RateLimiter>,
    strategy: RateLimitStrategy,
    counters: PendingCounters,
    machine: MachineId,
    clock: Arc<dyn Clock>,
    max_payload: usize,
    wall_offset_ms: AtomicI64,
    wall_checked_at: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("log", &self.log)
            .field("limiter", &self.limiter)
            .finish()
    }
}

fn ms(ns: u64) -> u64 {
    ns / 1_000_000
}

impl Recorder {
    /// Opens (creating if needed) the log in `config.log.dir` for writing records.
    pub fn open(config: &Config) -> Result<Recorder, OpenError> {
        Self::open_with(config, segment_log::Options::default().clock, true)
    }

    /// Like [`open`](Self::open) with an injected clock; `prepare_ahead` off suits one-shot
    /// writers (`seglog record`), which never fill a segment.
    pub fn open_with(
        config: &Config,
        clock: Arc<dyn Clock>,
        prepare_ahead: bool,
    ) -> Result<Recorder, OpenError> {
        let mut opts = config.log.options().map_err(OpenError::Config)?;
        opts.clock = clock.clone();
        opts.prepare_ahead = prepare_ahead;
        let dir = &config.log.dir;
        if let Some(gid) = crate::config::system_log_group(dir) {
            opts.dir_mode = segment_log::perms::SHARED_DIR_MODE;
            opts.dir_group = Some(gid);
        }
        let log = Log::open(dir, opts)?;
        let (state_dir, sharing) =
            crate::counters::ensure_state_dir(dir).map_err(|source| OpenError::State {
                path: dir.clone(),
                source,
            })?;
        let (slot, slot_file) = acquire_slot(&state_dir, sharing)?;
        let r = &config.recorder;
        let machine = MachineId::resolve(
            &r.static_machine_id_file,
            &r.machine_id_secret_file,
            &state_dir,
            r.machine_id_rotation,
        )
        .map_err(|source| OpenError::State {
            path: state_dir.join(crate::system::SECRET_FILE),
            source,
        })?;
        let limiter =
            RateLimiter::open(dir, r, clock.clone()).map_err(|source| OpenError::State {
                path: state_dir.join(crate::ratelimit::STATE_FILE),
                source,
            })?;
        let sys = SystemInfo::get();
        let ctx = Context {
            slot,
            generation: 0,
            record_format_version: RECORD_VERSION,
            machine_id: String::new(),
            boot_id: clock.boot_id(),
            arch: sys.arch.clone(),
            host_type: sys.host_type.clone(),
            build: sys.build.clone(),
            system_name: sys.system_name.clone(),
            kernel_version: sys.kernel_version.clone(),
            board_name: sys.board_name.clone(),
            cpu_model: sys.cpu_model.clone(),
            bios_version: sys.bios_version.clone(),
            base_wall_ms: 0,
            base_boot_ms: 0,
            classifications: Vec::new(),
            extra: Vec::new(),
        };
        let state = WriterState {
            ctx,
            index: ClassIndex::default(),
            machine_valid_until_ms: i64::MIN,
            base_segment: 0,
        };
        let max_payload = usize::try_from(config.log.max_record_size)
            .unwrap_or(usize::MAX)
            .saturating_sub(MAX_HEADER_LEN);
        Ok(Recorder {
            public_id: log.log_id().public(),
            log,
            _slot: slot_file,
            state: RwLock::new(state),
            limiter,
            strategy: r.strategy,
            counters: PendingCounters::new(dir),
            machine,
            clock,
            max_payload,
            wall_offset_ms: AtomicI64::new(0),
            wall_checked_at: AtomicU64::new(u64::MAX),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        self.log.dir()
    }

    /// The log's public id (record ids derive from it).
    pub fn public_log_id(&self) -> &[u8; 32] {
        &self.public_id
    }

    /// The underlying log handle.
    pub fn log(&self) -> &Log {
        &self.log
    }

    /// This writer's slot.
    pub fn slot(&self) -> u32 {
        self.read_state().ctx.slot
    }

    /// The context this writer currently stores (machine id, OS facts, classification table).
    pub fn context(&self) -> Context {
        self.read_state().ctx.clone()
    }

    /// What happens to a record over a rate limit (`[recorder] rate_limit_strategy`); probes
    /// apply the same choice to a full disk (spool: hold and wait, drop: drop and count).
    pub fn strategy(&self) -> RateLimitStrategy {
        self.strategy
    }

    /// Largest payload accepted.
    pub fn max_payload(&self) -> usize {
        self.max_payload
    }

    /// Wall and boot time in milliseconds. The wall clock is read at most once per
    /// [`WALL_RECHECK_MS`] of boot time; in between, wall time is boot time plus the offset
    /// last seen, so a step of the wall clock shows in records within that time.
    fn now_ms(&self) -> (i64, u64) {
        let boot_ms = ms(self.clock.boot_ns());
        let checked = self.wall_checked_at.load(Ordering::Acquire);
        if checked != u64::MAX && boot_ms >= checked && boot_ms - checked < WALL_RECHECK_MS {
            let offset = self.wall_offset_ms.load(Ordering::Relaxed);
            return ((boot_ms as i64).saturating_add(offset), boot_ms);
        }
        let wall_ms = self.clock.wall_ns().div_euclid(1_000_000);
        self.wall_offset_ms
            .store(wall_ms.saturating_sub(boot_ms as i64), Ordering::Relaxed);
        self.wall_checked_at.store(boot_ms, Ordering::Release);
        (wall_ms, boot_ms)
    }

    fn read_state(&self) -> RwLockReadGuard<'_, WriterState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts records a probe refused itself (e.g. invalid events) under `reason`, in the
    /// same persisted counters as rate-limit drops (see [`crate::counters`]).
    pub fn count_dropped(&self, reason: &str, n: u64) {
        self.counters.count(reason, n, false);
    }

    /// Writes any pending dropped/spooled counts to the shared counters file now.
    pub fn flush_counters(&self) -> std::io::Result<()> {
        self.counters.flush()
    }

    /// Validates, rate-limits and appends one record; returns its [`Receipt`]: the record's
    /// position, from which [`Receipt::id`] derives its [`RecordId`](crate::RecordId) on demand (the same id
    /// as always; writing a record does not compute it).
    pub fn record(&self, rec: &RecordBuilder<'_>) -> Result<Receipt, RecordError> {
        let now = self.now_ms();
        if self.limiter.is_none() {
            // No rate limits: nothing to count or refund, so no tally to build, move and
            // drop (about 5 % of a record's CPU: BENCHMARKS.md, "`Recorder::record()`").
            self.check_size(rec)?;
            let mut pos = Position::default();
            self.append_admitted(&[(rec, None)], now, |p| pos = p)?;
            return Ok(Receipt::new(self.public_id, pos));
        }
        let mut tally = Tally::default();
        let hold = match self.admit(rec, now, &mut tally) {
            Ok(h) => h,
            Err(e) => {
                tally.commit(&self.counters);
                return Err(e);
            }
        };
        let mut pos = Position::default();
        self.settle(
            tally,
            now.1,
            self.append_admitted(&[(rec, hold)], now, |p| pos = p),
        )?;
        Ok(Receipt::new(self.public_id, pos).held_until(held_until(now.0, hold)))
    }

    /// Applies `tally` after an append at boot time `now_ms`: counted when it worked,
    /// refunded when not.
    fn settle(
        &self,
        tally: Tally,
        now_ms: u64,
        appended: Result<(), RecordError>,
    ) -> Result<(), RecordError> {
        match appended {
            Ok(()) => {
                tally.commit(&self.counters);
                Ok(())
            }
            Err(e) => {
                tally.undo(self.limiter.as_ref(), now_ms);
                Err(e)
            }
        }
    }

    /// Appends several records in one reservation (contiguous, in order, in one segment).
    /// Each record gets its own outcome: a [`Receipt`] (its id derived on demand, as for
    /// [`record`](Self::record)), or why it was refused (rate limit with strategy `drop`,
    /// payload too large); the outer error is a failure of the log itself (e.g. the batch
    /// does not fit in one segment).
    pub fn record_batch(
        &self,
        recs: &[RecordBuilder<'_>],
    ) -> Result<Vec<Result<Receipt, RecordError>>, RecordError> {
        let now = self.now_ms();
        let mut outcomes: Vec<Result<Receipt, RecordError>> = Vec::with_capacity(recs.len());
        let mut admitted = Vec::with_capacity(recs.len());
        let mut tally = Tally::default();
        for r in recs {
            match self.admit(r, now, &mut tally) {
                Ok(hold) => {
                    admitted.push((r, hold));
                    outcomes.push(Ok(Receipt::new(self.public_id, Position::default())
                        .held_until(held_until(now.0, hold))));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        let mut positions = Vec::with_capacity(admitted.len());
        // A failed append leaves no trace: the caller may retry the same records.
        self.settle(
            tally,
            now.1,
            self.append_admitted(&admitted, now, |p| positions.push(p)),
        )?;
        let mut positions = positions.into_iter();
        for o in outcomes.iter_mut().filter(|o| o.is_ok()) {
            if let (Some(p), Ok(r)) = (positions.next(), o.as_ref()) {
                *o = Ok(Receipt::new(self.public_id, p).held_until(r.held_back_until()));
            }
        }
        Ok(outcomes)
    }

    /// Checks size and rate limits; `Ok(Some(hold_ms))` for a spooled record. What is to be
    /// counted goes into `tally`.
    fn admit(
        &self,
        rec: &RecordBuilder<'_>,
        (wall_ms, boot_ms): (i64, u64),
        tally: &mut Tally,
    ) -> Result<Option<u64>, RecordError> {
        self.check_size(rec)?;
        let Some(limiter) = &self.limiter else {
            return Ok(None);
        };
        match limiter
            .admit_at(rec.payload.len() as u64, boot_ms)
            .map_err(RecordError::State)?
        {
            Admission::Allowed => {
                tally.allowed(rec.payload.len() as u64);
                Ok(None)
            }
            Admission::Denied {
                limit,
                max,
                window,
                hold_ms,
            } => match self.strategy {
                RateLimitStrategy::Spool => {
                    let hold = hold_ms.max(1);
                    let until = held_until(wall_ms, Some(hold)).unwrap_or(i64::MAX);
                    tally.spooled(limit.reason(), until);
                    Ok(Some(hold))
                }
                RateLimitStrategy::Drop => {
                    tally.dropped(limit.reason());
                    let (what, key) = match limit {
                        crate::ratelimit::Limit::Records => ("records", "record_burst_limit"),
                        crate::ratelimit::Limit::Bytes => ("bytes", "byte_burst_limit"),
                    };
                    Err(RecordError::RateLimited {
                        what,
                        key,
                        max,
                        window,
                    })
                }
            },
        }
    }

    #[inline]
    fn check_size(&self, rec: &RecordBuilder<'_>) -> Result<(), RecordError> {
        if rec.payload.len() > self.max_payload {
            return Err(RecordError::PayloadTooLarge {
                len: rec.payload.len(),
                max: self.max_payload,
            });
        }
        Ok(())
    }

    fn append_admitted(
        &self,
        admitted: &[Admitted<'_, '_>],
        (wall_ms, boot_ms): (i64, u64),
        on_pos: impl FnMut(Position),
    ) -> Result<(), RecordError> {
        if admitted.is_empty() {
            return Ok(());
        }
        loop {
            {
                let st = self.read_state();
                if !self.needs_update(&st, admitted, wall_ms, boot_ms) {
                    return self.encode_and_append(st, admitted, wall_ms, boot_ms, on_pos);
                }
            }
            self.update_context(admitted, wall_ms, boot_ms)?;
        }
    }

    fn needs_update(
        &self,
        st: &WriterState,
        admitted: &[Admitted<'_, '_>],
        wall_ms: i64,
        boot_ms: u64,
    ) -> bool {
        if wall_ms >= st.machine_valid_until_ms || boot_ms < st.ctx.base_boot_ms {
            return true;
        }
        let delta = boot_ms - st.ctx.base_boot_ms;
        if delta >= REBASE_HARD_MS
            || (delta >= REBASE_SOFT_MS && self.log.active_segment() != st.base_segment)
        {
            return true;
        }
        admitted
            .iter()
            .any(|(r, _)| st.class_index(&r.classification).is_none())
    }

    fn update_context(
        &self,
        admitted: &[Admitted<'_, '_>],
        wall_ms: i64,
        boot_ms: u64,
    ) -> Result<(), RecordError> {
        let mut st = self.state.write().unwrap_or_else(|p| p.into_inner());
        if !self.needs_update(&st, admitted, wall_ms, boot_ms) {
            return Ok(()); // another thread did it
        }
        let mut next = st.ctx.clone();
        next.generation = next.generation.wrapping_add(1);
        let mut index = st.index.clone();
        let mut machine_valid_until_ms = st.machine_valid_until_ms;
        if wall_ms >= machine_valid_until_ms {
            let (id, until) = self.machine.at(wall_ms);
            next.machine_id = id;
            machine_valid_until_ms = until;
        }
        let mut base_segment = st.base_segment;
        if next.generation == 1
            || boot_ms < next.base_boot_ms
            || boot_ms - next.base_boot_ms >= REBASE_SOFT_MS
        {
            next.base_wall_ms = wall_ms;
            next.base_boot_ms = boot_ms;
            base_segment = self.log.active_segment();
        }
        let missing = admitted
            .iter()
            .filter(|(r, _)| !index.contains_key(&r.classification))
            .count();
        if next.classifications.len() + missing > MAX_CLASSIFICATIONS {
            // Start a fresh table; records already written name the old context, which
            // precedes them in their segment.
            next.classifications.clear();
            index.clear();
        }
        for (r, _) in admitted {
            if !index.contains_key(&r.classification) {
                index.insert(r.classification.clone(), next.classifications.len() as u32);
                next.classifications.push(r.classification.clone());
            }
        }
        let bytes = encode_context(&next)
            .map_err(|e| RecordError::State(std::io::Error::other(e.to_string())))?;
        let max = self.log.options().max_record_size;
        if bytes.len() as u64 > max {
            return Err(RecordError::ContextTooLarge {
                len: bytes.len(),
                max,
            });
        }
        self.log.set_preamble(Some(bytes))?;
        *st = WriterState {
            ctx: next,
            index,
            machine_valid_until_ms,
            base_segment,
        };
        Ok(())
    }

    /// Encodes and appends `admitted` under the context lock `st`. A single record is
    /// written as its header (encoded on the stack) and the caller's payload, and the lock is
    /// let go as soon as the record's place in the log is fixed: a context change can then
    /// only be ordered after it, which is all it needs (FORMAT.md of records: a record
    /// follows the context frame it names), and the release is not a locked instruction
    /// waiting behind the frame's stores.
    fn encode_and_append(
        &self,
        guard: RwLockReadGuard<'_, WriterState>,
        admitted: &[Admitted<'_, '_>],
        wall_ms: i64,
        boot_ms: u64,
        mut on_pos: impl FnMut(Position),
    ) -> Result<(), RecordError> {
        let st = &*guard;
        let boot_delta_ms = boot_ms - st.ctx.base_boot_ms;
        let expected = st
            .ctx
            .base_wall_ms
            .saturating_add(i64::try_from(boot_delta_ms).unwrap_or(i64::MAX));
        let header = |(r, hold_ms): &Admitted<'_, '_>| {
            let own = r.wall_ms.unwrap_or(wall_ms);
            // A hold counts from the record's time: one dated earlier is held that much
            // longer, so its release time stays now + hold.
            let earlier = u64::try_from(wall_ms.saturating_sub(own)).unwrap_or(0);
            RecordHeader {
                slot: st.ctx.slot,
                class: ClassRef::Index(st.class_index(&r.classification).unwrap_or(u32::MAX)),
                severity: r.severity,
                time: RecordTime::Relative {
                    boot_delta_ms,
                    wall_skew_ms: own.saturating_sub(expected),
                },
                event_id: r.event_id,
                hold_ms: hold_ms.map(|h| h.saturating_add(earlier)),
            }
        };
        let state_err = |e: crate::record::EncodeError| {
            RecordError::State(std::io::Error::other(e.to_string()))
        };
        if let [one] = admitted {
            let mut head = [0u8; MAX_V2_HEADER];
            let n = encode_v2_header(&header(one), &mut head).map_err(state_err)?;
            let mut guard = Some(guard);
            let pos =
                self.log
                    .append_parts(head.get(..n).unwrap_or_default(), one.0.payload, || {
                        drop(guard.take())
                    })?;
            on_pos(pos);
            return Ok(());
        }
        let encode = |a: &Admitted<'_, '_>, out: &mut Vec<u8>| {
            encode_record(&header(a), a.0.payload, out).map_err(state_err)
        };
        // All frames in one buffer (one allocation per batch, not one per record), sliced.
        let total: usize = admitted
            .iter()
            .map(|a| a.0.payload.len() + MAX_HEADER_LEN)
            .sum();
        let mut buf = Vec::with_capacity(total);
        let mut ends = Vec::with_capacity(admitted.len());
        for a in admitted {
            encode(a, &mut buf)?;
            ends.push(buf.len());
        }
        let mut start = 0;
        let frames: Vec<&[u8]> = ends
            .iter()
            .map(|&end| {
                let frame = buf.get(start..end).unwrap_or_default();
                start = end;
                frame
            })
            .collect();
        self.log.append_batch(&frames)?.into_iter().for_each(on_pos);
        Ok(())
    }
}

/// The release time of a record written at `wall_ms` and held `hold_ms` (the record
/// header's rule, [`RecordHeader::hold_until_wall_ms`]).
fn held_until(wall_ms: i64, hold_ms: Option<u64>) -> Option<i64> {
    hold_ms.map(|h| wall_ms.saturating_add(i64::try_from(h).unwrap_or(i64::MAX)))
}

type Admitted<'r, 'p> = (&'r RecordBuilder<'p>, Option<u64>);

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.counters.flush();
    }
}

mod builder;
mod state;
mod tally;

#[cfg(test)]
pub(crate) mod tests;
