//! [`SystemClock::boot_ns`](crate::SystemClock): CLOCK_BOOTTIME, read from the kernel at
//! least every [`REANCHOR_NS`] per thread and extrapolated with the CPU's time-stamp counter
//! in between.
//!
//! Why: `Recorder::record` dates every record, and the vDSO's `clock_gettime` is about 30 ns
//! of CPU on a KVM guest (the pvclock arithmetic around an `rdtsc`), against about 12 ns for
//! a bare `rdtsc` (BENCHMARKS.md, "`Recorder::record()`"). The kernel's own clock is the TSC
//! times a rate plus an offset when its clocksource is `tsc`; this module does the same with
//! a rate it measures and an offset (the *anchor*: a TSC value and the CLOCK_BOOTTIME read
//! next to it) that each thread refreshes from the kernel at least every 100 ms of TSC time.
//!
//! It is used only when the TSC is what the kernel's clock is made of: x86-64, the CPU's
//! invariant-TSC bit (constant rate, counts in every C-state), and the kernel's clocksource
//! `tsc` (so the kernel checked that the CPUs' counters agree). Anywhere else every read is
//! `clock_gettime(CLOCK_BOOTTIME)`. This is decided once per process: a kernel that later
//! gives up on the TSC (its watchdog marks it unstable) is not noticed, though every anchor
//! is still at most 100 ms old.
//!
//! Guarantees (FORMAT.md, "Where a writer's times come from"; tested below on a simulated
//! TSC):
//! - Within a thread the value never decreases.
//! - Between anchors it is the kernel's clock to within the rate's error times 100 ms: the
//!   rate is accepted only when two successive 20 ms+ spans agree to 1e-4 and each TSC/boot
//!   pair was read within 1e-5 of its span, then refined by every later span that agrees
//!   with it to 1e-3 (about 1 µs off after 100 ms, at most 0.1 ms; records keep
//!   milliseconds).
//! - Suspend. CLOCK_BOOTTIME counts the time suspended; across a suspend the TSC either
//!   keeps counting (an invariant TSC in s2idle, a guest whose host keeps running: the
//!   extrapolation counts the suspended time too, exact), or is reset by the firmware (S3
//!   on most machines: the counter is below the anchor, the thread reads the kernel's clock
//!   at once, exact). A TSC that *paused* during suspend without a reset (not seen on an
//!   invariant TSC) leaves the first reads of each thread after resume, until the anchor is
//!   100 ms of TSC time old, dated as if the suspend had lasted no time; the next kernel
//!   read steps them forward by the suspended time. A reset TSC that happens to come back
//!   within 100 ms above the thread's anchor is the same case.
//! - A rate measured across such a pause is rejected (it disagrees with the known rate).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Longest TSC span (at the known rate) over which a thread extrapolates from its anchor.
pub const REANCHOR_NS: u64 = 100_000_000;
/// Shortest span over which a rate is measured.
const CALIBRATE_MIN_NS: u64 = 20_000_000;

/// A source of ticks and of the kernel's clock (the real one below; a simulated one in the
/// tests).
pub(crate) trait Source {
    /// The time-stamp counter.
    fn ticks(&self) -> u64;
    /// CLOCK_BOOTTIME in nanoseconds, read from the kernel.
    fn kernel_ns(&self) -> u64;
}

/// One thread's anchor and its last value (all zero: none yet).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Anchor {
    /// TSC at the anchor.
    tsc: u64,
    /// Kernel boot time read at `tsc`.
    boot: u64,
    /// Ticks after `tsc` within which this anchor is used (0: do not extrapolate).
    span: u64,
    /// Width, in ticks, of the read that gave this anchor (the two `rdtsc` around it).
    width: u64,
    /// A rate measured from the previous anchor to this one, not yet confirmed (0: none).
    candidate: u64,
    /// The last value this thread returned.
    last: u64,
}

/// Nanoseconds per tick in 32.32 fixed point: `ns = ticks * rate >> 32`.
fn ticks_to_ns(ticks: u64, rate: u64) -> u64 {
    ((u128::from(ticks) * u128::from(rate)) >> 32).min(u128::from(u64::MAX)) as u64
}

/// Ticks in `ns` at `rate` (0 for no rate).
fn ns_to_ticks(ns: u64, rate: u64) -> u64 {
    if rate == 0 {
        return 0;
    }
    ((u128::from(ns) << 32) / u128::from(rate)).min(u128::from(u64::MAX)) as u64
}

/// Whether `a` and `b` differ by at most `a >> shift`.
fn agree(a: u64, b: u64, shift: u32) -> bool {
    a.abs_diff(b) <= a >> shift
}

/// The boot time now, from `anchor` when it is fresh, else from the kernel (and a new
/// anchor). `rate` is the process's measured rate (0: not yet).
#[inline]
pub(crate) fn read<S: Source>(src: &S, anchor: &mut Anchor, rate: &AtomicU64) -> u64 {
    let t = src.ticks();
    let dt = t.wrapping_sub(anchor.tsc);
    // `t < anchor.tsc` wraps to a huge `dt`: a TSC that went back is never extrapolated.
    if dt < anchor.span {
        let r = rate.load(Ordering::Relaxed);
        let ns = anchor
            .boot
            .saturating_add(ticks_to_ns(dt, r))
            .max(anchor.last);
        anchor.last = ns;
        return ns;
    }
    reanchor(src, anchor, rate)
}

#[cold]
#[inline(never)]
fn reanchor<S: Source>(src: &S, anchor: &mut Anchor, rate: &AtomicU64) -> u64 {
    let t0 = src.ticks();
    let boot = src.kernel_ns();
    let t1 = src.ticks();
    let tsc = t0 / 2 + t1 / 2 + (t0 & t1 & 1);
    let width = t1.wrapping_sub(t0);
    let out = boot.max(anchor.last);
    let had = anchor.span != 0 || anchor.boot != 0;
    let span_ns = boot.wrapping_sub(anchor.boot);
    let span_ticks = tsc.wrapping_sub(anchor.tsc);
    let mut r = rate.load(Ordering::Relaxed);
    if had && tsc > anchor.tsc && boot > anchor.boot && span_ns < CALIBRATE_MIN_NS && r == 0 {
        // Not calibrated yet and the span is still short: keep the anchor, answer exactly.
        anchor.last = out;
        return out;
    }
    let mut candidate = 0;
    if had
        && tsc > anchor.tsc
        && boot > anchor.boot
        && span_ns >= CALIBRATE_MIN_NS
        && width <= span_ticks / 100_000
        && anchor.width <= span_ticks / 100_000
    {
        let c =
            ((u128::from(span_ns) << 32) / u128::from(span_ticks)).min(u128::from(u64::MAX)) as u64;
        if r == 0 {
            // Two spans in a row that agree to 1e-4: the first rate of the process.
            if anchor.candidate != 0 && agree(anchor.candidate, c, 13) {
                r = c;
                rate.store(c, Ordering::Relaxed);
            }
        } else if agree(r, c, 10) {
            r = c;
            rate.store(c, Ordering::Relaxed);
        }
        candidate = c;
    }
    *anchor = Anchor {
        tsc,
        boot,
        span: ns_to_ticks(REANCHOR_NS, r),
        width,
        candidate,
        last: out,
    };
    out
}

/// The machine's TSC and kernel clock.
struct Tsc;

impl Source for Tsc {
    #[inline(always)]
    fn ticks(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            #[expect(unsafe_code, reason = "rdtsc")]
            // SAFETY: `rdtsc` reads the time-stamp counter; it has no memory operands and is
            // available on every x86-64 CPU (`usable` checked the invariant-TSC bit first).
            return unsafe { std::arch::x86_64::_rdtsc() };
        }
        #[cfg(not(target_arch = "x86_64"))]
        0
    }
    fn kernel_ns(&self) -> u64 {
        crate::fs::boot_time_ns()
    }
}

/// Whether the TSC may stand in for the kernel's clock on this machine (decided once).
fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // CPUID 0x8000_0007 EDX bit 8: invariant TSC.
            let max_ext = std::arch::x86_64::__cpuid(0x8000_0000).eax;
            let invariant = max_ext >= 0x8000_0007
                && std::arch::x86_64::__cpuid(0x8000_0007).edx & (1 << 8) != 0;
            let source = std::fs::read_to_string(
                "/sys/devices/system/clocksource/clocksource0/current_clocksource",
            )
            .unwrap_or_default();
            invariant && source.trim() == "tsc"
        }
        #[cfg(not(target_arch = "x86_64"))]
        false
    })
}

static RATE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static ANCHOR: Cell<Anchor> = const {
        Cell::new(Anchor { tsc: 0, boot: 0, span: 0, width: 0, candidate: 0, last: 0 })
    };
}

/// CLOCK_BOOTTIME in nanoseconds, through this thread's TSC anchor when the machine allows
/// (module docs): never decreasing within a thread.
#[inline]
pub fn boot_ns() -> u64 {
    if !usable() {
        return crate::fs::boot_time_ns();
    }
    ANCHOR
        .try_with(|cell| {
            let mut a = cell.get();
            let ns = read(&Tsc, &mut a, &RATE);
            cell.set(a);
            ns
        })
        .unwrap_or_else(|_| crate::fs::boot_time_ns())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
