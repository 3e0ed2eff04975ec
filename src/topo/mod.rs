//! CPU topology: NUMA nodes, physical cores and their hardware threads (PUs).
//!
//! The data model here is plain, printable and serialisable. It is filled
//! from hwloc when the `numa` feature is on ([`Topology::discover`],
//! [`Topology::synthetic`]), or built by hand ([`Topology::fallback`]) when
//! hwloc is not available.
//!
//! * [`plan`] turns a [`Topology`] into a [`PinPlan`]: which worker thread
//!   runs on which NUMA node, core and PU.
//! * [`pin`] binds the calling thread to a [`WorkerSlot`] of such a plan.
//! * [`priority`] lowers PoW workers below latency work (signatures, I/O).
//! * [`locality`] finds the NUMA node nearest each PCI device (GPU), so the
//!   CPU work that feeds a GPU runs there.
//!
//! Conventions:
//! * NUMA nodes are identified by their OS index (what `numactl` shows).
//! * Cores are identified by their hwloc *logical* index, which is unique
//!   across the machine and dense (0..core_count on a regular machine).
//! * PUs (hardware threads) are identified by their OS index, i.e. the CPU
//!   number the kernel uses (`/proc/cpuinfo`, `taskset`).

use std::collections::BTreeSet;
use std::fmt;

pub mod locality;
pub mod pin;
pub mod plan;
pub mod priority;

#[cfg(feature = "numa")]
mod hw;

pub use locality::{BadPciAddress, NodeAffinity, PciAddress, PciDevice, PciIdentity, PciMatch};
pub use pin::{pin_current_thread, pin_current_thread_to_node, pin_or_warn, pin_to_node_or_warn, PinError};
pub use plan::{PinPlan, PlanOptions, WorkerGroup, WorkerSlot};
pub use priority::WorkerPriority;

/// The machine's CPU topology, grouped by NUMA node.
///
/// `numa_nodes` is sorted by OS index; cores within a node by logical index;
/// the PUs of a core ascending. NUMA nodes without CPUs (memory-only nodes
/// such as HBM/CXL expanders) are kept with an empty `cores` list.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Topology {
    /// Where this description came from.
    pub source: TopologySource,
    /// The NUMA nodes, ascending by OS index.
    pub numa_nodes: Vec<NumaNode>,
    /// PCI devices hwloc reported, ascending by address, with the NUMA
    /// nodes nearest each ([`locality`]). Empty where hwloc has no PCI
    /// information (fallback and synthetic topologies included).
    pub pci: Vec<PciDevice>,
}

/// Origin of a [`Topology`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum TopologySource {
    /// Discovered on this machine through hwloc.
    Hwloc,
    /// Built by hwloc from a synthetic description (tests, planning dry runs).
    Synthetic(String),
    /// Loaded by hwloc from an XML export (`lstopo file.xml`) at this path.
    Xml(String),
    /// No hwloc: `available_parallelism` cores as one NUMA node, one PU each.
    Fallback,
}

/// One NUMA node and the cores whose PUs are local to it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NumaNode {
    /// OS index of the node (`numactl --hardware` numbering).
    pub os_index: u32,
    /// Index of the package (socket) the node belongs to; 0 when unknown.
    pub package: u32,
    /// Cores of this node, ascending by logical index.
    pub cores: Vec<Core>,
}

/// One physical core.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Core {
    /// hwloc logical index of the core (unique across the machine).
    pub logical_index: u32,
    /// OS indices of the core's hardware threads, ascending.
    pub pus: Vec<u32>,
}

/// Errors from topology discovery and plan building.
#[derive(Debug, thiserror::Error)]
pub enum TopoError {
    /// hwloc failed to load or describe the machine topology.
    #[error("hwloc topology discovery failed: {0}")]
    Hwloc(String),
    /// hwloc rejected a synthetic topology description.
    #[error("invalid synthetic topology description {desc:?}: {reason}")]
    InvalidSynthetic {
        /// The description that was passed in.
        desc: String,
        /// Why hwloc refused it.
        reason: String,
    },
    /// The operation needs hwloc, but hashrig was built without it.
    #[error("{0} needs hwloc, but hashrig was built without the `numa` feature")]
    NumaFeatureDisabled(&'static str),
    /// hwloc described a machine without any usable processing unit.
    #[error("the topology has no usable CPUs (no processing units with an OS index)")]
    NoCpus,
    /// `PlanOptions::threads` was `Some(0)`.
    #[error("the worker thread count must be at least 1, got 0")]
    ZeroThreads,
    /// `PlanOptions::nodes` named NUMA nodes this topology does not have.
    #[error("unknown NUMA node(s) {unknown:?}; this machine has node(s) {available:?}")]
    UnknownNodes {
        /// The requested node OS indices that do not exist.
        unknown: Vec<u32>,
        /// The node OS indices that do exist.
        available: Vec<u32>,
    },
    /// The selection left no CPU to run a worker on.
    #[error("the pinning plan is empty: the selected NUMA node(s) {nodes:?} have no CPU cores")]
    EmptyPlan {
        /// The NUMA nodes that were considered.
        nodes: Vec<u32>,
    },
}

impl Topology {
    /// Describe the real machine.
    ///
    /// With the `numa` feature this asks hwloc (source [`TopologySource::Hwloc`])
    /// and fails with [`TopoError::Hwloc`]/[`TopoError::NoCpus`] if hwloc does;
    /// see [`Topology::discover_or_fallback`] for a variant that cannot fail.
    /// Without the feature it returns [`Topology::fallback`] sized by
    /// `std::thread::available_parallelism`.
    pub fn discover() -> Result<Topology, TopoError> {
        #[cfg(feature = "numa")]
        {
            hw::discover()
        }
        #[cfg(not(feature = "numa"))]
        {
            Ok(Topology::fallback(available_cpus()))
        }
    }

    /// [`Topology::discover`], falling back (with a `tracing` warning) to
    /// [`Topology::fallback`] sized by `available_parallelism` when hwloc fails.
    pub fn discover_or_fallback() -> Topology {
        match Topology::discover() {
            Ok(topo) => topo,
            Err(err) => {
                let cpus = available_cpus();
                tracing::warn!(
                    error = %err,
                    cpus,
                    "CPU topology discovery failed; assuming one NUMA node with {cpus} cores"
                );
                Topology::fallback(cpus)
            }
        }
    }

    /// Build a topology from an hwloc synthetic description, e.g.
    /// `"pack:2 numa:2 core:8 pu:2"`. PU OS indices are numbered in order,
    /// so the example's core 0 has PUs 0 and 1.
    ///
    /// Without the `numa` feature this returns [`TopoError::NumaFeatureDisabled`].
    pub fn synthetic(desc: &str) -> Result<Topology, TopoError> {
        #[cfg(feature = "numa")]
        {
            hw::synthetic(desc)
        }
        #[cfg(not(feature = "numa"))]
        {
            let _ = desc;
            Err(TopoError::NumaFeatureDisabled("a synthetic topology"))
        }
    }

    /// Load a topology from an hwloc XML file (as `lstopo file.xml` or
    /// `hwloc-gather-topology` write it), PCI devices included: for tests
    /// and for planning another machine's layout. Binding threads still
    /// uses this machine's topology.
    ///
    /// Without the `numa` feature this returns [`TopoError::NumaFeatureDisabled`].
    pub fn from_xml_file(path: impl AsRef<std::path::Path>) -> Result<Topology, TopoError> {
        #[cfg(feature = "numa")]
        {
            hw::from_xml_file(path.as_ref())
        }
        #[cfg(not(feature = "numa"))]
        {
            let _ = path;
            Err(TopoError::NumaFeatureDisabled("an XML topology"))
        }
    }

    /// One NUMA node (OS index 0, package 0) with `cpus` cores of one PU
    /// each; core `i` has logical index `i` and PU `i`.
    pub fn fallback(cpus: usize) -> Topology {
        let cores = (0..cpus)
            .map(|i| {
                let i = u32::try_from(i).unwrap_or(u32::MAX);
                Core { logical_index: i, pus: vec![i] }
            })
            .collect();
        Topology {
            source: TopologySource::Fallback,
            numa_nodes: vec![NumaNode { os_index: 0, package: 0, cores }],
            pci: Vec::new(),
        }
    }

    /// Number of physical cores over all NUMA nodes.
    pub fn core_count(&self) -> usize {
        self.numa_nodes.iter().map(|n| n.cores.len()).sum()
    }

    /// Number of PUs (hardware threads) over all NUMA nodes.
    pub fn pu_count(&self) -> usize {
        self.numa_nodes.iter().map(NumaNode::pu_count).sum()
    }

    /// Number of distinct packages (sockets) the NUMA nodes belong to.
    pub fn package_count(&self) -> usize {
        self.numa_nodes.iter().map(|n| n.package).collect::<BTreeSet<_>>().len()
    }

    /// The node with this OS index, if any.
    pub fn node(&self, os_index: u32) -> Option<&NumaNode> {
        self.numa_nodes.iter().find(|n| n.os_index == os_index)
    }
}

impl NumaNode {
    /// Number of PUs (hardware threads) of this node's cores.
    pub fn pu_count(&self) -> usize {
        self.cores.iter().map(|c| c.pus.len()).sum()
    }
}

/// `available_parallelism`, or 1 when even that is unknown.
fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Compact list of integers: `[0,1,2,3,8,10,11]` → `"0-3,8,10-11"`.
pub(crate) fn fmt_ranges(values: impl IntoIterator<Item = u32>) -> String {
    let sorted: BTreeSet<u32> = values.into_iter().collect();
    let mut out = String::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek().is_some_and(|&next| Some(next) == end.checked_add(1)) {
            end = iter.next().unwrap_or(end);
        }
        if !out.is_empty() {
            out.push(',');
        }
        if end == start {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    if out.is_empty() {
        out.push('-');
    }
    out
}

impl fmt::Display for TopologySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologySource::Hwloc => f.write_str("hwloc"),
            TopologySource::Synthetic(desc) => write!(f, "synthetic \"{desc}\""),
            TopologySource::Xml(path) => write!(f, "hwloc XML {path}"),
            TopologySource::Fallback => f.write_str("fallback, no hwloc"),
        }
    }
}

/// First line: `"2 packages, 4 NUMA nodes, 32 cores, 64 PUs (hwloc)"`; then
/// one line per node: its package, cores (logical indices) and PUs (OS
/// indices) as compact ranges, e.g.
/// `"  node 0 (package 0): 8 cores 0-7, 16 PUs 0-15"`; then one line per
/// GPU-class PCI device and the node nearest it, e.g.
/// `"  gpu 0000:17:00.0 [10de:2335]: node 0"` (`node unknown` where hwloc
/// attaches it to the whole machine).
impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}, {}, {}, {} ({})",
            plural(self.package_count(), "package"),
            plural(self.numa_nodes.len(), "NUMA node"),
            plural(self.core_count(), "core"),
            plural(self.pu_count(), "PU"),
            self.source
        )?;
        for node in &self.numa_nodes {
            write!(
                f,
                "\n  node {} (package {}): {} {}, {} {}",
                node.os_index,
                node.package,
                plural(node.cores.len(), "core"),
                fmt_ranges(node.cores.iter().map(|c| c.logical_index)),
                plural(node.pu_count(), "PU"),
                fmt_ranges(node.cores.iter().flat_map(|c| c.pus.iter().copied())),
            )?;
        }
        for dev in self.pci.iter().filter(|d| d.is_gpu()) {
            let node = self.nearest_node(dev).map_or_else(|| "unknown".to_owned(), |n| n.to_string());
            write!(f, "\n  gpu {} [{:04x}:{:04x}]: node {node}", dev.address, dev.vendor_id, dev.device_id)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(fmt_ranges([0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(fmt_ranges([5]), "5");
        assert_eq!(fmt_ranges([]), "-");
        assert_eq!(fmt_ranges([u32::MAX - 1, u32::MAX]), "4294967294-4294967295");
    }

    #[test]
    fn fallback_shape() {
        let t = Topology::fallback(3);
        assert_eq!(t.core_count(), 3);
        assert_eq!(t.pu_count(), 3);
        assert_eq!(
            t.to_string().lines().next().unwrap(),
            "1 package, 1 NUMA node, 3 cores, 3 PUs (fallback, no hwloc)"
        );
    }
}
