//! Which uploads the writer takes while it is overloaded, and when a refused device should
//! come back (`Retry-After`): a calendar of the writer's time, second by second, as plain
//! code over what the writer sees, so that `fleet-sim` runs this very code on virtual time.
//!
//! A device refused now comes back after exactly the `Retry-After` it got (the uploader
//! honours it, up to its backoff cap). Picking that time at random still sends more devices
//! back in some seconds than the writer can take, and they are refused again. Instead, each
//! refusal books the device's return: [`ReturnSchedule`] keeps, for each of the next
//! [`MAX_RETRY_AFTER_SECS`] seconds, the records booked to arrive in it, and gives the refused
//! batch the earliest second after the queue has drained that still has room (a share
//! [`BOOK_SHARE`] of the writer's measured rate; a batch larger than that spills over the
//! following seconds, as the writer's time does). A device that comes back in its booked
//! second is taken even over the queue's limit (up to twice it), so a crowd that never got a
//! booking cannot push it out again; one that comes back early (a backoff cap below the
//! booked wait) is told the rest of its wait without booking anew. When every second up to
//! the horizon is booked, the device is sent to the horizon without a firm booking and
//! books there (the return rate then mirrors the refusal rate, the lowest the cap allows).

use std::collections::{HashMap, VecDeque};

/// Longest `Retry-After` sent, and how far ahead the calendar books (the uploader's
/// default backoff cap is 600 s; a device honours `Retry-After` up to its cap).
pub const MAX_RETRY_AFTER_SECS: u64 = 600;
/// Share of the writer's rate that bookings may fill in one second; the rest is left for
/// uploads nobody scheduled (regular passes, devices back from an outage).
pub const BOOK_SHARE: f64 = 0.8;
/// Most devices remembered with a booking (about 64 MiB at most); beyond it a refused device
/// still gets a `Retry-After` but no priority when it returns.
const MAX_BOOKINGS: usize = 1 << 20;
/// Before its booked second, a device is early by this much at most and still counted as
/// on time (it rounds `Retry-After` to milliseconds, its clock starts at a different point
/// of the second).
const EARLY_GRACE_MS: i64 = 1_500;

/// What the writer sees when an upload arrives.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Records waiting in the queue.
    pub queued_records: u64,
    /// The queue's limit would be passed by this upload (and the queue is not empty).
    pub full: bool,
    /// The upload would pass twice the limit: not even a booked device is taken.
    pub over_hard_limit: bool,
    /// Records per second the writer manages (measured; 0 or nonsense before the first
    /// commit, when a slow writer is assumed).
    pub rate: f64,
}

/// The answer to one upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it.
    Take,
    /// Refuse it (429) and ask the device to come back in this many seconds.
    Refuse {
        /// `Retry-After`, 1..=[`MAX_RETRY_AFTER_SECS`].
        retry_after_secs: u64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Booking {
    /// Absolute second the device is due.
    due_sec: i64,
    /// Record-equivalents booked for it (to give back when it comes early and is taken).
    cost: u64,
    /// A booking inside the capacity (priority on return), or a horizon overflow.
    firm: bool,
}

/// The calendar of booked returns, keyed by device (`public_log_id`).
#[derive(Debug, Default)]
pub struct ReturnSchedule {
    /// Absolute second of `booked[0]`.
    start_sec: i64,
    /// Record-equivalents booked per second from `start_sec`.
    booked: VecDeque<u64>,
    bookings: HashMap<[u8; 32], Booking>,
    /// Refusals that booked a firm slot / overflowed to the horizon; devices taken on their
    /// booking.
    pub stats: ScheduleStats,
}

/// Counters of a [`ReturnSchedule`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleStats {
    /// Refusals booked inside the capacity.
    pub booked: u64,
    /// Refusals sent to the horizon with every second before it full.
    pub overflowed: u64,
    /// Refusals of a device that came before its booking (given the rest of its wait).
    pub early: u64,
    /// Uploads taken because they came on their booking while the queue was full.
    pub taken_on_booking: u64,
}

fn sane_rate(rate: f64) -> f64 {
    // Unknown before the first commit: assume a slow writer.
    if rate.is_finite() {
        rate.max(1000.0)
    } else {
        1000.0
    }
}

impl ReturnSchedule {
    /// Devices holding a booking.
    pub fn bookings(&self) -> usize {
        self.bookings.len()
    }

    fn advance(&mut self, now_sec: i64) {
        if now_sec <= self.start_sec {
            return;
        }
        let gone = usize::try_from(now_sec - self.start_sec).unwrap_or(usize::MAX);
        if gone >= self.booked.len() {
            self.booked.clear();
        } else {
            self.booked.drain(..gone);
        }
        self.start_sec = now_sec;
        // Bookings whose device did not come within a second of its slot are void. Only
        // swept now and then: the map is small next to a second of uploads.
        if now_sec % 16 == 0 {
            self.bookings.retain(|_, b| b.due_sec + 2 > now_sec);
        }
    }

    /// Adds `cost` from slot `k` on, each second up to `per_sec` (the last slot takes what
    /// is left over at the horizon).
    fn charge(&mut self, mut k: usize, mut cost: u64, per_sec: u64) {
        let last = MAX_RETRY_AFTER_SECS as usize;
        while cost > 0 {
            if self.booked.len() <= k {
                self.booked.resize(k + 1, 0);
            }
            let room = per_sec.saturating_sub(self.booked[k]);
            let put = if k >= last { cost } else { room.min(cost) };
            self.booked[k] = self.booked[k].saturating_add(put);
            cost -= put;
            k += 1;
        }
    }

    /// Decides on an upload of `records` from `device` at `now_ms` under `load`.
    pub fn offer(&mut self, now_ms: i64, device: [u8; 32], records: u64, load: Load) -> Verdict {
        self.advance(now_ms.div_euclid(1000));
        // A clock stepping back is seen as standing still.
        let now_sec = now_ms.div_euclid(1000).max(self.start_sec);
        let cost = records.max(1);
        if let Some(b) = self.bookings.get(&device).copied() {
            if b.due_sec + 2 <= now_sec {
                // Void: it did not come within a second of its slot.
                self.bookings.remove(&device);
            }
        }
        if let Some(b) = self.bookings.get(&device).copied() {
            let on_time = b.due_sec.saturating_mul(1000) - EARLY_GRACE_MS <= now_ms;
            if on_time {
                self.bookings.remove(&device);
                if !load.full || (b.firm && !load.over_hard_limit) {
                    if load.full {
                        self.stats.taken_on_booking += 1;
                    }
                    return Verdict::Take;
                }
            } else if load.full {
                // Early (its backoff cap is below the booked wait): the rest of the wait.
                self.stats.early += 1;
                let secs = u64::try_from(b.due_sec - now_sec).unwrap_or(1);
                return Verdict::Refuse {
                    retry_after_secs: secs.clamp(1, MAX_RETRY_AFTER_SECS),
                };
            } else {
                // Early, but there is room: take it and free its booked time.
                self.bookings.remove(&device);
                let k = usize::try_from(b.due_sec - now_sec).unwrap_or(0);
                if let Some(slot) = self.booked.get_mut(k) {
                    *slot = slot.saturating_sub(b.cost);
                }
                return Verdict::Take;
            }
        }
        if !load.full {
            return Verdict::Take;
        }
        let rate = sane_rate(load.rate);
        let per_sec = ((rate * BOOK_SHARE) as u64).max(1);
        // The queue drains first: nothing is booked before it has.
        let need =
            ((load.queued_records as f64 / rate).ceil() as u64).clamp(1, MAX_RETRY_AFTER_SECS);
        let first = usize::try_from(need).unwrap_or(usize::MAX);
        let last = MAX_RETRY_AFTER_SECS as usize;
        let free = (first..last).find(|&k| self.booked.get(k).is_none_or(|&b| b < per_sec));
        let (k, firm) = match free {
            Some(k) => (k, true),
            None => (last, false),
        };
        self.charge(k, cost, per_sec);
        if firm {
            self.stats.booked += 1;
        } else {
            self.stats.overflowed += 1;
        }
        if self.bookings.len() < MAX_BOOKINGS || self.bookings.contains_key(&device) {
            self.bookings.insert(
                device,
                Booking {
                    due_sec: now_sec + k as i64,
                    cost,
                    firm,
                },
            );
        }
        Verdict::Refuse {
            retry_after_secs: k as u64,
        }
    }
}

#[cfg(test)]
mod tests;
