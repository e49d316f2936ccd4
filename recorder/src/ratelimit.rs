//! Rate limits that hold across every process writing to one log.
//!
//! Two limits, as in telemetrics: at most `record_burst_limit` records per
//! `record_window_length` and at most `byte_burst_limit` payload bytes per
//! `byte_window_length`. Each window is split into [`BUCKETS`] buckets of boot time (a
//! sliding window at 1/60 resolution); the counts live in `<log dir>/recorder/ratelimit.state`,
//! read and written with pread/pwrite under an flock (`File::lock`) on that file.
//!
//! Taking the lock for every record would cost more than the append, so a writer *leases*
//! allowance: it adds a chunk to the current bucket and spends it locally with one atomic
//! operation per record. Chunks start at one record's need and double while a writer keeps
//! claiming within one bucket (up to 1/64 of the limit), and what a writer did not spend is
//! given back when its lease ends, so the shared count overstates use by at most the
//! writers' outstanding leases. A refusal is cached until the bucket ends, so a flood of
//! refused records costs no I/O either.
//!
//! ```text
//! ratelimit.state (little-endian, 1960 bytes):
//!   0   magic "SGRLIM\0\1"
//!   8   boot id [16]            a new boot resets the counts
//!   24  limiter 0 (records), 968 bytes: bucket_ms u64, then 60 x (index u64, count u64)
//!   992 limiter 1 (bytes), same layout
//! ```
//! A file with another magic, boot id or bucket length is reset (it only holds counts).
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use segment_log::Clock;

use crate::config::RecorderConfig;

/// Buckets per window.
pub const BUCKETS: usize = 60;
/// The state file inside `<log dir>/recorder/`.
pub const STATE_FILE: &str = "ratelimit.state";
const MAGIC: [u8; 8] = *b"SGRLIM\x00\x01";
const LIMITER_LEN: usize = 8 + BUCKETS * 16;
const FILE_LEN: usize = 24 + 2 * LIMITER_LEN;

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `record_burst_limit`.
    Records = 0,
    /// `byte_burst_limit`.
    Bytes = 1,
}

impl Limit {
    /// The reason recorded in the dropped/spooled counters.
    pub fn reason(self) -> &'static str {
        match self {
            Limit::Records => "rate_limit_records",
            Limit::Bytes => "rate_limit_bytes",
        }
    }
}

/// The outcome of [`RateLimiter::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Within the limits.
    Allowed,
    /// Over `limit`; the window allows it again in `hold_ms` milliseconds.
    Denied {
        /// The limit that refused.
        limit: Limit,
        /// The configured maximum.
        max: u64,
        /// The configured window.
        window: Duration,
        /// Milliseconds until the window allows the record.
        hold_ms: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Spec {
    max: u64,
    window: Duration,
    bucket_ms: u64,
}

#[derive(Debug, Default)]
struct Lease {
    /// Bucket index + 1 the lease belongs to (0: none).
    bucket: AtomicU64,
    remaining: AtomicU64,
    /// While boot time (ms) is below this, refuse without I/O...
    denied_until: AtomicU64,
    /// ...and hold refused records until this boot time (ms).
    hold_until: AtomicU64,
}

#[derive(Debug, Default)]
struct ClaimState {
    chunk: [u64; 2],
    chunk_bucket: [u64; 2],
}

/// The cross-process limiter of one writer.
pub struct RateLimiter {
    file: File,
    path: PathBuf,
    specs: [Option<Spec>; 2],
    leases: [Lease; 2],
    claim: Mutex<ClaimState>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("path", &self.path)
            .field("specs", &self.specs)
            .finish()
    }
}

fn spec(max: Option<u64>, window: Duration) -> Option<Spec> {
    let max = max?;
    let ms = u64::try_from(window.as_millis())
        .unwrap_or(u64::MAX)
        .max(BUCKETS as u64);
    Some(Spec {
        max,
        window,
        bucket_ms: ms.div_ceil(BUCKETS as u64),
    })
}

struct State {
    bytes: [u8; FILE_LEN],
}

impl State {
    fn u64_at(&self, off: usize) -> u64 {
        let mut b = [0u8; 8];
        if let Some(s) = self.bytes.get(off..off + 8) {
            b.copy_from_slice(s);
        }
        u64::from_le_bytes(b)
    }
    fn set_u64(&mut self, off: usize, v: u64) {
        if let Some(s) = self.bytes.get_mut(off..off + 8) {
            s.copy_from_slice(&v.to_le_bytes());
        }
    }
    fn base(k: Limit) -> usize {
        24 + k as usize * LIMITER_LEN
    }
    fn slot(&self, k: Limit, i: usize) -> (u64, u64) {
        let off = Self::base(k) + 8 + i * 16;
        (self.u64_at(off), self.u64_at(off + 8))
    }
    fn set_slot(&mut self, k: Limit, i: usize, index: u64, count: u64) {
        let off = Self::base(k) + 8 + i * 16;
        self.set_u64(off, index);
        self.set_u64(off + 8, count);
    }
    /// Resets a limiter whose bucket length differs (another config wrote it).
    fn prepare(&mut self, k: Limit, bucket_ms: u64) {
        if self.u64_at(Self::base(k)) != bucket_ms {
            for i in 0..BUCKETS {
                self.set_slot(k, i, 0, 0);
            }
            self.set_u64(Self::base(k), bucket_ms);
        }
    }
    /// Count in the window ending at bucket `cur` (slot indexes are bucket index + 1).
    fn used(&self, k: Limit, cur: u64) -> u64 {
        (0..BUCKETS)
            .map(|i| self.slot(k, i))
            .filter(|&(idx, _)| idx != 0 && idx - 1 + BUCKETS as u64 > cur && idx - 1 <= cur)
            .map(|(_, c)| c)
            .fold(0u64, u64::saturating_add)
    }
}

impl RateLimiter {
    /// The limiter for `cfg`, or `None` when rate limiting is off or both limits are off.
    pub fn open(
        dir: &Path,
        cfg: &RecorderConfig,
        clock: Arc<dyn Clock>,
    ) -> std::io::Result<Option<RateLimiter>> {
        if !cfg.rate_limit_enabled {
            return Ok(None);
        }
        let specs = [
            spec(cfg.record_burst_limit, cfg.record_window),
            spec(cfg.byte_burst_limit, cfg.byte_window),
        ];
        if specs.iter().all(Option::is_none) {
            return Ok(None);
        }
        let (state, sharing) = crate::counters::ensure_state_dir(dir)?;
        let path = state.join(STATE_FILE);
        let file = sharing
            .open_or_create(std::fs::OpenOptions::new().read(true).write(true), &path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
        Ok(Some(RateLimiter {
            file,
            path,
            specs,
            leases: Default::default(),
            claim: Mutex::new(ClaimState::default()),
            clock,
        }))
    }

    fn now_ms(&self) -> u64 {
        self.clock.boot_ns() / 1_000_000
    }

    fn take_local(&self, k: Limit, n: u64, now: u64) -> bool {
        let Some(spec) = self.specs[k as usize] else {
            return true;
        };
        let lease = &self.leases[k as usize];
        if lease.bucket.load(Ordering::Acquire) != now / spec.bucket_ms + 1 {
            return false;
        }
        lease
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| r.checked_sub(n))
            .is_ok()
    }

    fn cached_denial(&self, k: Limit, now: u64) -> Option<Admission> {
        let spec = self.specs[k as usize]?;
        let lease = &self.leases[k as usize];
        (now < lease.denied_until.load(Ordering::Acquire)).then(|| Admission::Denied {
            limit: k,
            max: spec.max,
            window: spec.window,
            hold_ms: lease.hold_until.load(Ordering::Acquire).saturating_sub(now),
        })
    }

    /// Admits one record of `bytes` payload bytes, or says which limit refuses it and when
    /// the window allows it.
    pub fn admit(&self, bytes: u64) -> std::io::Result<Admission> {
        self.admit_at(bytes, self.now_ms())
    }

    /// [`admit`](Self::admit) at boot time `now` (milliseconds; the caller read the clock).
    pub fn admit_at(&self, bytes: u64, now: u64) -> std::io::Result<Admission> {
        for k in [Limit::Records, Limit::Bytes] {
            if let Some(d) = self.cached_denial(k, now) {
                return Ok(d);
            }
        }
        if self.take_local(Limit::Records, 1, now) {
            if self.take_local(Limit::Bytes, bytes, now) {
                return Ok(Admission::Allowed);
            }
            self.give_back(Limit::Records, 1);
        }
        self.admit_slow(bytes, now)
    }

    /// Gives back what [`admit_at`](Self::admit_at) at boot time `now` took for an allowed
    /// record that was then not written (the append failed): to this writer's lease when it
    /// is still the one of that bucket, else to the shared state (under the lock). Clears a
    /// refusal cached meanwhile.
    pub(crate) fn refund(&self, bytes: u64, now: u64) -> std::io::Result<()> {
        let mut shared: Vec<(Limit, u64, u64)> = Vec::new();
        for (k, n) in [(Limit::Records, 1), (Limit::Bytes, bytes)] {
            let Some(spec) = self.specs[k as usize] else {
                continue;
            };
            let lease = &self.leases[k as usize];
            lease.denied_until.store(0, Ordering::Release);
            if lease.bucket.load(Ordering::Acquire) == now / spec.bucket_ms + 1 {
                lease.remaining.fetch_add(n, Ordering::AcqRel);
            } else {
                shared.push((k, n, spec.bucket_ms));
            }
        }
        if shared.is_empty() {
            return Ok(());
        }
        let _claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        self.file.lock()?;
        let result = (|| {
            let mut st = self.read_state()?;
            for (k, n, bucket_ms) in shared {
                st.prepare(k, bucket_ms);
                let cur = now / bucket_ms;
                let i = (cur % BUCKETS as u64) as usize;
                let (idx, count) = st.slot(k, i);
                if idx == cur + 1 {
                    st.set_slot(k, i, idx, count.saturating_sub(n));
                }
            }
            self.file.write_all_at(&st.bytes, 0)
        })();
        let _ = self.file.unlock();
        result
    }

    fn give_back(&self, k: Limit, n: u64) {
        if self.specs[k as usize].is_some() {
            self.leases[k as usize]
                .remaining
                .fetch_add(n, Ordering::AcqRel);
        }
    }

    fn read_state(&self) -> std::io::Result<State> {
        let mut st = State {
            bytes: [0u8; FILE_LEN],
        };
        let mut read = 0;
        while read < FILE_LEN {
            match self.file.read_at(&mut st.bytes[read..], read as u64) {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let boot_id = self.clock.boot_id();
        if read < FILE_LEN || st.bytes[..8] != MAGIC || st.bytes[8..24] != boot_id {
            st.bytes = [0u8; FILE_LEN];
            st.bytes[..8].copy_from_slice(&MAGIC);
            st.bytes[8..24].copy_from_slice(&boot_id);
        }
        Ok(st)
    }

    /// Under the file lock: ends the current lease of `k` (gives its unspent allowance back to
    /// its bucket).
    fn return_lease(&self, st: &mut State, k: Limit) {
        let lease = &self.leases[k as usize];
        let bucket = lease.bucket.swap(0, Ordering::AcqRel);
        let left = lease.remaining.swap(0, Ordering::AcqRel);
        if bucket == 0 || left == 0 {
            return;
        }
        let i = ((bucket - 1) % BUCKETS as u64) as usize;
        let (idx, count) = st.slot(k, i);
        if idx == bucket {
            st.set_slot(k, i, idx, count.saturating_sub(left));
        }
    }

    fn admit_slow(&self, bytes: u64, now: u64) -> std::io::Result<Admission> {
        let mut claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        self.file.lock().map_err(|e| {
            std::io::Error::new(e.kind(), format!("lock {}: {e}", self.path.display()))
        })?;
        let result = (|| {
            let mut st = self.read_state()?;
            let mut taken: Vec<(Limit, u64)> = Vec::new();
            let mut outcome = Admission::Allowed;
            for (k, n) in [(Limit::Records, 1), (Limit::Bytes, bytes)] {
                let Some(spec) = self.specs[k as usize] else {
                    continue;
                };
                if self.take_local(k, n, now) {
                    taken.push((k, n));
                    continue;
                }
                st.prepare(k, spec.bucket_ms);
                self.return_lease(&mut st, k);
                let cur = now / spec.bucket_ms;
                let used = st.used(k, cur);
                let avail = spec.max.saturating_sub(used);
                if avail < n {
                    let hold_until = self.hold_until(&st, k, spec, cur, used, n);
                    let lease = &self.leases[k as usize];
                    lease.hold_until.store(hold_until, Ordering::Release);
                    lease
                        .denied_until
                        .store((cur + 1) * spec.bucket_ms, Ordering::Release);
                    outcome = Admission::Denied {
                        limit: k,
                        max: spec.max,
                        window: spec.window,
                        hold_ms: hold_until.saturating_sub(now),
                    };
                    break;
                }
                let ki = k as usize;
                if claim.chunk_bucket[ki] != cur + 1 {
                    claim.chunk_bucket[ki] = cur + 1;
                    claim.chunk[ki] = n.max(1);
                } else {
                    claim.chunk[ki] = claim.chunk[ki]
                        .saturating_mul(2)
                        .min((spec.max / 64).max(n).max(1));
                }
                let grant = claim.chunk[ki].max(n).min(avail);
                let i = (cur % BUCKETS as u64) as usize;
                let (idx, count) = st.slot(k, i);
                let count = if idx == cur + 1 { count } else { 0 };
                st.set_slot(k, i, cur + 1, count.saturating_add(grant));
                let lease = &self.leases[ki];
                lease.remaining.store(grant - n, Ordering::Release);
                lease.bucket.store(cur + 1, Ordering::Release);
                taken.push((k, n));
            }
            if matches!(outcome, Admission::Denied { .. }) {
                for (k, n) in taken {
                    self.give_back(k, n);
                }
            }
            self.file.write_all_at(&st.bytes, 0)?;
            Ok(outcome)
        })();
        let _ = self.file.unlock();
        result
    }

    /// Boot time (ms) at which enough of the window has expired for `n` more.
    fn hold_until(&self, st: &State, k: Limit, spec: Spec, cur: u64, used: u64, n: u64) -> u64 {
        let mut slots: Vec<(u64, u64)> = (0..BUCKETS)
            .map(|i| st.slot(k, i))
            .filter(|&(idx, c)| {
                c > 0 && idx != 0 && idx - 1 + BUCKETS as u64 > cur && idx - 1 <= cur
            })
            .collect();
        slots.sort_unstable();
        let mut left = used;
        for (idx, c) in slots {
            left = left.saturating_sub(c);
            if left.saturating_add(n) <= spec.max {
                return (idx - 1 + BUCKETS as u64).saturating_mul(spec.bucket_ms);
            }
        }
        // Larger than the whole limit: it never fits; hold it for a window.
        (cur + BUCKETS as u64).saturating_mul(spec.bucket_ms)
    }

    /// Gives unspent allowance back to the shared state (also done on drop).
    pub fn release(&self) -> std::io::Result<()> {
        let _claim = self.claim.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .leases
            .iter()
            .all(|l| l.bucket.load(Ordering::Acquire) == 0)
        {
            return Ok(());
        }
        self.file.lock()?;
        let r = (|| {
            let mut st = self.read_state()?;
            for k in [Limit::Records, Limit::Bytes] {
                if let Some(spec) = self.specs[k as usize] {
                    st.prepare(k, spec.bucket_ms);
                    self.return_lease(&mut st, k);
                }
            }
            self.file.write_all_at(&st.bytes, 0)
        })();
        let _ = self.file.unlock();
        r
    }
}

impl Drop for RateLimiter {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests;
