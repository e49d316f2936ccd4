//! Scheduling of the writer's background thread.

/// Puts the calling thread under `SCHED_BATCH` (same nice level, same CPU share): the
/// scheduler then never lets its wake-up preempt a running thread. For the preparer, which
/// the rotating append wakes: with the other CPU busy, the woken preparer took the
/// appender's CPU on the way out of that append's futex wake and kept it for its time slice
/// (issue 14: 56 of 52 slow rotating appends in one run at load 7 were switched out at
/// `exit_to_user_mode_loop <- syscall` for `seglog-prepare`, `perf record -e
/// sched:sched_switch -g`). The preparer still runs as soon as a CPU is free or the
/// appender's slice ends. Best effort: returns whether the policy was applied.
pub(crate) fn no_wakeup_preemption() -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid `sched_param` for the duration of the call, which only
    // reads it; pid 0 means the calling thread.
    #[expect(unsafe_code, reason = "libc sched_setscheduler(SCHED_BATCH)")]
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    rc == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_calling_thread_gets_sched_batch() {
        std::thread::spawn(|| {
            assert!(super::no_wakeup_preemption());
            // SAFETY: no arguments; reads the calling thread's policy.
            #[expect(unsafe_code, reason = "libc sched_getscheduler")]
            let policy = unsafe { libc::sched_getscheduler(0) };
            assert_eq!(policy, libc::SCHED_BATCH);
        })
        .join()
        .unwrap();
    }
}
