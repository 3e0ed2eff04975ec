//! Reading a [`Topology`] out of hwloc (feature `numa`).
//!
//! Everything hwloc reports is treated as untrusted input: missing OS
//! indices, PUs outside any core, cores outside any NUMA node, machines
//! without NUMA node objects and indices beyond `u32` are all handled
//! without panicking, and hwlocality calls run under `catch_unwind` because
//! the binding panics on hwloc behaviour it considers impossible.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;
use hwlocality::topology::builder::{TopologyBuilder, TypeFilter};
use hwlocality::Topology as HwTopology;

use super::{Core, NumaNode, PciAddress, PciDevice, TopoError, Topology, TopologySource};

/// A fresh builder that keeps the PCI devices that matter (GPUs, NICs,
/// storage; not every bridge) so that their locality is known. Should
/// libhwloc refuse the filter, a plain builder: the CPU topology without
/// PCI devices.
fn builder_with_pci() -> TopologyBuilder {
    HwTopology::builder().with_io_type_filter(TypeFilter::KeepImportant).unwrap_or_else(|e| {
        tracing::debug!("hwloc refused the I/O type filter: {e}; no PCI locality");
        HwTopology::builder()
    })
}

/// Load the real machine's topology through hwloc, PCI devices included.
pub(super) fn discover() -> Result<Topology, TopoError> {
    guarded(|| {
        let hw = match builder_with_pci().build() {
            Ok(hw) => hw,
            Err(e) => {
                tracing::debug!("hwloc discovery with PCI devices failed: {e}; retrying without them");
                HwTopology::new().map_err(|e| TopoError::Hwloc(e.to_string()))?
            }
        };
        convert(&hw, TopologySource::Hwloc)
    })
}

/// Load a topology from an hwloc XML file, PCI devices included.
pub(super) fn from_xml_file(path: &std::path::Path) -> Result<Topology, TopoError> {
    let shown = path.display().to_string();
    let err = |e: String| TopoError::Hwloc(format!("cannot load hwloc XML {shown}: {e}"));
    guarded(|| {
        let hw = builder_with_pci()
            .from_xml_file(path)
            .map_err(|e| err(e.to_string()))?
            .build()
            .map_err(|e| err(e.to_string()))?;
        convert(&hw, TopologySource::Xml(shown.clone()))
    })
}

/// Build a topology from an hwloc synthetic description.
pub(super) fn synthetic(desc: &str) -> Result<Topology, TopoError> {
    let invalid = |reason: String| TopoError::InvalidSynthetic { desc: desc.to_owned(), reason };
    guarded(|| {
        let hw = HwTopology::builder()
            .from_synthetic(desc)
            .map_err(|e| invalid(e.to_string()))?
            .build()
            .map_err(|e| invalid(e.to_string()))?;
        convert(&hw, TopologySource::Synthetic(desc.to_owned()))
    })
}

/// Run `f`, turning a panic inside hwlocality into [`TopoError::Hwloc`].
fn guarded(f: impl FnOnce() -> Result<Topology, TopoError>) -> Result<Topology, TopoError> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_owned());
        Err(TopoError::Hwloc(format!("hwlocality panicked: {msg}")))
    })
}

fn to_u32(v: usize) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Index used for a package: its OS index, else its logical index.
fn package_index(obj: &TopologyObject) -> u32 {
    to_u32(obj.os_index().unwrap_or_else(|| obj.logical_index()))
}

/// A NUMA node as hwloc reports it, before cores are attached.
struct RawNode<'t> {
    os_index: u32,
    package: Option<u32>,
    obj: &'t TopologyObject,
}

impl RawNode<'_> {
    fn contains_pu(&self, pu: u32) -> bool {
        self.obj.cpuset().is_some_and(|set| set.is_set(pu as usize))
    }
}

/// A core being assembled from its PUs.
struct RawCore {
    logical_index: u32,
    pus: BTreeSet<u32>,
}

/// Convert an hwloc topology to the plain data model.
fn convert(hw: &HwTopology, source: TopologySource) -> Result<Topology, TopoError> {
    // PU OS indices above this are refused by hwloc bitmaps (which would panic).
    const MAX_PU: u32 = i32::MAX as u32;

    // NUMA nodes, ascending by OS index, duplicates dropped.
    let mut raw_nodes: Vec<RawNode<'_>> = Vec::new();
    for obj in hw.objects_with_type(ObjectType::NUMANode) {
        let os_index = to_u32(obj.os_index().unwrap_or_else(|| obj.logical_index()));
        if raw_nodes.iter().any(|n| n.os_index == os_index) {
            tracing::debug!(os_index, "hwloc reported NUMA node twice; ignoring the duplicate");
            continue;
        }
        let package = obj.first_ancestor_with_type(ObjectType::Package).map(package_index);
        raw_nodes.push(RawNode { os_index, package, obj });
    }
    raw_nodes.sort_by_key(|n| n.os_index);

    // Cores keyed by hwloc's global persistent id; PUs without a core
    // ancestor become single-PU cores.
    let core_logicals: Vec<u32> = hw.objects_with_type(ObjectType::Core).map(|c| to_u32(c.logical_index())).collect();
    let mut next_pseudo_core = core_logicals.iter().max().map_or(0, |m| m.saturating_add(1));
    let mut cores: BTreeMap<(u8, u64), RawCore> = BTreeMap::new();
    let mut core_package: BTreeMap<(u8, u64), Option<u32>> = BTreeMap::new();
    let mut seen_pus = BTreeSet::new();
    for pu in hw.objects_with_type(ObjectType::PU) {
        let Some(os) = pu.os_index().and_then(|os| u32::try_from(os).ok()).filter(|&os| os <= MAX_PU) else {
            tracing::debug!(logical = pu.logical_index(), "skipping PU without a usable OS index");
            continue;
        };
        if !seen_pus.insert(os) {
            continue;
        }
        let (key, logical) = match pu.first_ancestor_with_type(ObjectType::Core) {
            Some(core) => ((0u8, core.global_persistent_index()), to_u32(core.logical_index())),
            None => {
                let logical = next_pseudo_core;
                next_pseudo_core = next_pseudo_core.saturating_add(1);
                ((1u8, u64::from(logical)), logical)
            }
        };
        core_package.entry(key).or_insert_with(|| pu.first_ancestor_with_type(ObjectType::Package).map(package_index));
        cores.entry(key).or_insert_with(|| RawCore { logical_index: logical, pus: BTreeSet::new() }).pus.insert(os);
    }
    if cores.is_empty() {
        return Err(TopoError::NoCpus);
    }

    // Attach each core to the NUMA node holding its lowest PU; cores outside
    // every node (or all cores when hwloc has no NUMA objects) go to node 0.
    let mut by_node: BTreeMap<u32, Vec<Core>> = BTreeMap::new();
    let mut orphan_package: Option<u32> = None;
    let mut orphans = 0usize;
    for (key, raw) in cores {
        let Some(&first_pu) = raw.pus.iter().next() else {
            continue;
        };
        let node = raw_nodes.iter().find(|n| n.contains_pu(first_pu)).map(|n| n.os_index);
        let node = node.unwrap_or_else(|| {
            orphans += 1;
            if orphan_package.is_none() {
                orphan_package = core_package.get(&key).copied().flatten();
            }
            0
        });
        by_node
            .entry(node)
            .or_default()
            .push(Core { logical_index: raw.logical_index, pus: raw.pus.into_iter().collect() });
    }
    if orphans > 0 && !raw_nodes.is_empty() {
        tracing::debug!(orphans, "cores outside every hwloc NUMA node were put in node 0");
    }

    // Package of a node: its package ancestor; else the package of its first
    // core's PU; else 0.
    let package_of_pu = |pu: u32| {
        hw.pu_with_os_index(pu as usize)
            .and_then(|o| o.first_ancestor_with_type(ObjectType::Package))
            .map(package_index)
    };
    let mut node_ids: BTreeSet<u32> = raw_nodes.iter().map(|n| n.os_index).collect();
    node_ids.extend(by_node.keys().copied());
    let numa_nodes = node_ids
        .into_iter()
        .map(|os_index| {
            let mut cores = by_node.remove(&os_index).unwrap_or_default();
            cores.sort_by_key(|c| (c.logical_index, c.pus.first().copied()));
            let first_pu = cores.first().and_then(|c| c.pus.first().copied());
            let package = raw_nodes
                .iter()
                .find(|n| n.os_index == os_index)
                .and_then(|n| n.package)
                .or_else(|| first_pu.and_then(package_of_pu))
                .or(if os_index == 0 { orphan_package } else { None })
                .unwrap_or(0);
            NumaNode { os_index, package, cores }
        })
        .collect();

    Ok(Topology { source, numa_nodes, pci: pci_devices(hw) })
}

/// Every PCI device with its address, ids and the NUMA nodes of its first
/// non-I/O ancestor, ascending by address, duplicates dropped. Empty when
/// the topology was loaded without I/O objects.
fn pci_devices(hw: &HwTopology) -> Vec<PciDevice> {
    let mut out: Vec<PciDevice> = Vec::new();
    for obj in hw.objects_with_type(ObjectType::PCIDevice) {
        let Some(ObjectAttributes::PCIDevice(attr)) = obj.attributes() else {
            continue;
        };
        let address = PciAddress {
            domain: u32::from(attr.domain()),
            bus: attr.bus_id(),
            device: attr.bus_device(),
            function: attr.function(),
        };
        if out.iter().any(|d| d.address == address) {
            continue;
        }
        let numa_nodes = obj
            .first_non_io_ancestor()
            .and_then(|a| a.nodeset())
            .map(|set| set.iter_set().map(|i| to_u32(usize::from(i))).collect())
            .unwrap_or_default();
        out.push(PciDevice {
            address,
            vendor_id: attr.vendor_id(),
            device_id: attr.device_id(),
            class_id: attr.class_id(),
            numa_nodes,
        });
    }
    out.sort_by_key(|d| d.address);
    out
}
