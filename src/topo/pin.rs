//! Binding worker threads to the PU of their [`WorkerSlot`].
//!
//! Pinning is best effort: containers, cgroup cpusets and some kernels refuse
//! it. [`pin_or_warn`] is what worker threads call: it logs the first failure
//! of the process as a warning (later ones only at debug level, so a pool of
//! hundreds of workers does not spam the log) and lets the worker go on
//! unpinned.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{NodeAffinity, WorkerSlot};

/// Why a thread could not be pinned.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// hashrig was built without the `numa` feature (no hwloc).
    #[error("thread pinning is unsupported: hashrig was built without the `numa` feature (hwloc)")]
    Unsupported,
    /// hwloc could not load this machine's topology.
    #[error("thread pinning is unavailable: hwloc topology discovery failed: {0}")]
    Topology(String),
    /// The slot's PU is not one this process may run on.
    #[error("worker {worker}: PU {pu} is not among this process's allowed CPUs")]
    UnknownPu {
        /// Worker id of the slot.
        worker: usize,
        /// OS index of the PU.
        pu: u32,
    },
    /// None of a node's PUs is one this process may run on.
    #[error("NUMA node {node}: none of its PUs is among this process's allowed CPUs")]
    NodeNotAllowed {
        /// OS index of the node.
        node: u32,
    },
    /// The operating system refused binding the thread to a node's PUs.
    #[error("binding the thread to NUMA node {node}'s PUs failed: {reason}")]
    NodeBind {
        /// OS index of the node.
        node: u32,
        /// The error hwloc / the OS reported.
        reason: String,
    },
    /// The operating system refused the binding.
    #[error("worker {worker}: binding the thread to PU {pu} failed: {reason}")]
    Bind {
        /// Worker id of the slot.
        worker: usize,
        /// OS index of the PU.
        pu: u32,
        /// The error hwloc / the OS reported.
        reason: String,
    },
}

/// Bind the calling thread to `slot.pu` (hwloc `set_cpubind` with the
/// THREAD flag). Uses one process-wide hwloc topology, loaded on first use.
///
/// Without the `numa` feature this always returns [`PinError::Unsupported`].
pub fn pin_current_thread(slot: &WorkerSlot) -> Result<(), PinError> {
    #[cfg(feature = "numa")]
    {
        hw::pin(slot)
    }
    #[cfg(not(feature = "numa"))]
    {
        let _ = slot;
        Err(PinError::Unsupported)
    }
}

/// Bind the calling thread to the PUs of one NUMA node (those of them this
/// process may run on), e.g. a GPU's feeder thread to the node nearest the
/// GPU ([`super::Topology::feeder_affinity`]). The thread may move between
/// the node's PUs; the kernel then places the memory it touches first on
/// that node.
///
/// Without the `numa` feature this always returns [`PinError::Unsupported`].
pub fn pin_current_thread_to_node(affinity: &NodeAffinity) -> Result<(), PinError> {
    #[cfg(feature = "numa")]
    {
        hw::pin_to_pus(affinity)
    }
    #[cfg(not(feature = "numa"))]
    {
        let _ = affinity;
        Err(PinError::Unsupported)
    }
}

/// [`pin_current_thread_to_node`], logging the outcome (`who` names the
/// thread, e.g. `"gpu0 feeder"`): a failure is a warning and the thread goes
/// on unpinned. Returns whether the thread is now bound to the node.
pub fn pin_to_node_or_warn(affinity: &NodeAffinity, who: &str) -> bool {
    match pin_current_thread_to_node(affinity) {
        Ok(()) => {
            tracing::debug!(node = affinity.numa_node, "{who} runs on NUMA node {}", affinity.numa_node);
            true
        }
        Err(err) => {
            tracing::warn!(error = %err, "{who}: could not bind to NUMA node {}; running unpinned", affinity.numa_node);
            false
        }
    }
}

/// Set once the first pinning failure has been logged as a warning.
static WARNED: AtomicBool = AtomicBool::new(false);

/// [`pin_current_thread`], logging a failure instead of returning it.
///
/// The first failure in the process is logged with `tracing::warn!` (the
/// workers go on unpinned), later ones with `tracing::debug!`. Returns
/// whether the thread is now pinned.
pub fn pin_or_warn(slot: &WorkerSlot) -> bool {
    match pin_current_thread(slot) {
        Ok(()) => {
            tracing::trace!(worker = slot.id, core = slot.core, pu = slot.pu, "worker thread pinned");
            true
        }
        Err(err) => {
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    error = %err,
                    "could not pin worker threads to CPUs; running unpinned \
                     (further pinning failures are logged at debug level)"
                );
            } else {
                tracing::debug!(error = %err, "worker thread left unpinned");
            }
            false
        }
    }
}

#[cfg(feature = "numa")]
mod hw {
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::OnceLock;

    use hwlocality::cpu::binding::CpuBindingFlags;
    use hwlocality::cpu::cpuset::CpuSet;
    use hwlocality::Topology as HwTopology;

    use super::{NodeAffinity, PinError, WorkerSlot};

    /// The process-wide hwloc topology used for binding. `hwlocality::Topology`
    /// is `Send + Sync` and binding only needs `&self`, so no lock is needed.
    static TOPOLOGY: OnceLock<Result<HwTopology, String>> = OnceLock::new();

    fn topology() -> Result<&'static HwTopology, PinError> {
        TOPOLOGY
            .get_or_init(|| {
                catch_unwind(HwTopology::new)
                    .map_err(|_| "hwlocality panicked while loading the topology".to_owned())
                    .and_then(|r| r.map_err(|e| e.to_string()))
            })
            .as_ref()
            .map_err(|e| PinError::Topology(e.clone()))
    }

    pub(super) fn pin(slot: &WorkerSlot) -> Result<(), PinError> {
        let topo = topology()?;
        let unknown = || PinError::UnknownPu { worker: slot.id, pu: slot.pu };
        // hwloc bitmaps refuse (panic on) indices above i32::MAX.
        if slot.pu > i32::MAX as u32 || !topo.allowed_cpuset().is_set(slot.pu as usize) {
            return Err(unknown());
        }
        let mut set = CpuSet::new();
        set.set(slot.pu as usize);
        let result = catch_unwind(AssertUnwindSafe(|| topo.bind_cpu(&set, CpuBindingFlags::THREAD)));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(PinError::Bind { worker: slot.id, pu: slot.pu, reason: err.to_string() }),
            Err(_) => Err(PinError::Bind {
                worker: slot.id,
                pu: slot.pu,
                reason: "hwlocality panicked during set_cpubind".to_owned(),
            }),
        }
    }

    pub(super) fn pin_to_pus(affinity: &NodeAffinity) -> Result<(), PinError> {
        let topo = topology()?;
        let node = affinity.numa_node;
        let allowed = topo.allowed_cpuset();
        let mut set = CpuSet::new();
        // hwloc bitmaps refuse (panic on) indices above i32::MAX.
        for &pu in affinity.pus.iter().filter(|&&pu| pu <= i32::MAX as u32) {
            if allowed.is_set(pu as usize) {
                set.set(pu as usize);
            }
        }
        if set.is_empty() {
            return Err(PinError::NodeNotAllowed { node });
        }
        let result = catch_unwind(AssertUnwindSafe(|| topo.bind_cpu(&set, CpuBindingFlags::THREAD)));
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(PinError::NodeBind { node, reason: err.to_string() }),
            Err(_) => Err(PinError::NodeBind { node, reason: "hwlocality panicked during set_cpubind".to_owned() }),
        }
    }
}
