//! Scheduling priority of the PoW worker threads.
//!
//! Mining is throughput work with no deadline; signature checks, the node
//! adapter's network loop and the GPU feeders are latency work. On Linux a
//! CPU worker drops itself to `SCHED_IDLE` by default, so any of those wakes
//! up on a busy core at once instead of waiting out a miner's time slice
//! (measured: p99 of a one-signature sigserve round trip on a mining machine
//! went from milliseconds to tens of microseconds; see README). On a machine
//! with nothing else to run, idle threads get every cycle, so the hashrate
//! is unchanged. Lowering one's own priority needs no privilege.

use std::fmt;
use std::str::FromStr;

/// How a PoW worker thread competes for its core.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WorkerPriority {
    /// `SCHED_IDLE`: runs only when nothing else on the core wants to.
    #[default]
    Idle,
    /// Normal scheduling class at nice 19: yields most of the core, not all.
    Low,
    /// Leave the thread as it was created (the process's own priority).
    Normal,
}

impl WorkerPriority {
    pub fn name(self) -> &'static str {
        match self {
            WorkerPriority::Idle => "idle",
            WorkerPriority::Low => "low",
            WorkerPriority::Normal => "normal",
        }
    }
}

impl fmt::Display for WorkerPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WorkerPriority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        <Self as clap::ValueEnum>::from_str(s, true)
    }
}

/// Apply `p` to the calling thread.
pub fn set_current_thread(p: WorkerPriority) -> std::io::Result<()> {
    imp::set(p)
}

/// [`set_current_thread`], logging a failure once per process (the worker
/// goes on at the priority it has). Returns whether `p` is now in effect.
pub fn set_or_warn(p: WorkerPriority) -> bool {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    match set_current_thread(p) {
        Ok(()) => true,
        Err(e) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!("cannot set worker priority {p}: {e}; workers keep the default priority");
            }
            false
        }
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::WorkerPriority;

    pub(super) fn set(p: WorkerPriority) -> std::io::Result<()> {
        // On Linux both calls act on one thread when given a thread id
        // (pid 0 / who 0 is the calling thread), not on the whole process.
        let rc = match p {
            WorkerPriority::Normal => return Ok(()),
            WorkerPriority::Idle => {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: plain syscall on the calling thread with a valid pointer.
                unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) }
            }
            // SAFETY: plain syscall on the calling thread.
            WorkerPriority::Low => unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) },
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::WorkerPriority;

    pub(super) fn set(p: WorkerPriority) -> std::io::Result<()> {
        match p {
            WorkerPriority::Normal => Ok(()),
            _ => Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "per-thread priority needs Linux")),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn policy_and_nice() -> (i32, i32) {
        // SAFETY: plain syscalls on the calling thread.
        unsafe {
            *libc::__errno_location() = 0;
            (libc::sched_getscheduler(0), libc::getpriority(libc::PRIO_PROCESS, 0))
        }
    }

    #[test]
    fn idle_and_low_apply_to_the_calling_thread_only() {
        let before = policy_and_nice();
        let idle = std::thread::spawn(|| {
            set_current_thread(WorkerPriority::Idle).unwrap();
            policy_and_nice().0
        })
        .join()
        .unwrap();
        assert_eq!(idle, libc::SCHED_IDLE);
        let low = std::thread::spawn(|| {
            set_current_thread(WorkerPriority::Low).unwrap();
            policy_and_nice()
        })
        .join()
        .unwrap();
        assert_eq!(low, (libc::SCHED_OTHER, 19));
        // The test's own thread kept its policy and nice value.
        assert_eq!(policy_and_nice(), before);
    }

    #[test]
    fn names_parse_back() {
        for p in [WorkerPriority::Idle, WorkerPriority::Low, WorkerPriority::Normal] {
            assert_eq!(p.name().parse::<WorkerPriority>().unwrap(), p);
        }
        assert!("realtime".parse::<WorkerPriority>().is_err());
    }
}
