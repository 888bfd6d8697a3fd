//! Scheduling priority of the job's threads when they share the machine with request
//! threads (`serve`).
//!
//! A serve process runs the job (timely workers, the runtime that writes its files) next
//! to the HTTP and PostgreSQL servers. The job's work is throughput work: an epoch ends
//! when it ends, a millisecond either way. A balance or entitlement check is latency
//! work: tens of microseconds of CPU, but while a commit keeps both cores busy, the
//! thread that answers it waits for a core. Linux's scheduler (EEVDF) lets a running
//! thread finish its time slice, ~1.5 ms on 2 cores, before a woken thread of equal or
//! higher priority gets the core, whatever their nice values; `perf sched` showed the
//! request threads waiting 1-5 ms at every commit behind job threads running 1.5-1.8 ms
//! at a time (docs/performance-notes.md, session 21).
//!
//! [`JobPriority::Idle`] runs the job's threads under `SCHED_IDLE`: a woken request
//! thread takes the core at once, and the job gets every cycle the requests leave.
//! The policy is per thread (`sched_setscheduler` on a thread id), needs no privilege,
//! and ranks the job only within its own scheduling group: with autogroups or cgroups
//! (a systemd service, a container), other processes do not starve it. A busy process
//! in the same group would, hence [`JobPriority::Normal`].

/// How the job's threads are scheduled next to the request threads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum JobPriority {
    /// `SCHED_IDLE`: the job runs whenever no request thread wants the core.
    #[default]
    Idle,
    /// The server's own priority: checks may wait for a job thread's time slice.
    Normal,
}

/// Puts the calling thread under `SCHED_IDLE` (not on Linux: does nothing).
#[cfg(target_os = "linux")]
pub fn idle_this_thread() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 names the calling thread; `param` outlives the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the calling thread under `SCHED_IDLE` (not on Linux: does nothing).
#[cfg(not(target_os = "linux"))]
pub fn idle_this_thread() -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy_of_this_thread() -> i32 {
        // SAFETY: 0 names the calling thread.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn only_the_calling_thread_becomes_idle() {
        let before = policy_of_this_thread();
        assert_ne!(before, libc::SCHED_IDLE);
        let policy = std::thread::spawn(|| {
            idle_this_thread().expect("lowering a priority needs no privilege");
            policy_of_this_thread()
        })
        .join()
        .expect("thread");
        assert_eq!(policy, libc::SCHED_IDLE);
        assert_eq!(
            policy_of_this_thread(),
            before,
            "the spawning thread keeps its own"
        );
    }
}
