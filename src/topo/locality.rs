//! PCI locality: which NUMA node is nearest each PCI device (GPUs above
//! all), and which CPUs should feed a GPU.
//!
//! hwloc places every PCI device under the CPU-side object its host bridge
//! hangs off (a package, a NUMA group, the machine); that object's nodeset is
//! the device's locality. [`Topology::pci`] keeps it as plain data
//! ([`PciDevice`]), filled by hwloc discovery or from an hwloc XML file, and
//! empty where hwloc has no PCI information (fallback and synthetic
//! topologies, hwloc built without PCI support, containers without sysfs).
//!
//! A GPU adapter is matched to its PCI device ([`Topology::pci_device_for`])
//! by bus id when the driver reports one (Vulkan's `VK_EXT_pci_bus_info`,
//! wgpu's `device_pci_bus_id`), else by vendor:device ids when that pair
//! names one device, or several that all sit on the same node. The CPU work
//! that feeds the GPU is then bound to that node's PUs ([`NodeAffinity`],
//! [`super::pin_current_thread_to_node`]).

use std::fmt;
use std::str::FromStr;

use super::Topology;

/// A PCI address, `domain:bus:device.function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PciAddress {
    /// PCI domain (segment).
    pub domain: u32,
    /// Bus number.
    pub bus: u8,
    /// Device number on the bus (0..32).
    pub device: u8,
    /// Function number (0..8).
    pub function: u8,
}

/// `"0000:17:00.0"`, lower-case hex, as `lspci -D`, hwloc and wgpu write it.
impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04x}:{:02x}:{:02x}.{:x}", self.domain, self.bus, self.device, self.function)
    }
}

/// A bus id that is not `[domain:]bus:device.function` in hex.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a PCI bus id (domain:bus:device.function in hex): {0:?}")]
pub struct BadPciAddress(pub String);

/// Parses `"0000:17:00.0"` or, with domain 0, `"17:00.0"` (hex, any case,
/// surrounding whitespace ignored).
impl FromStr for PciAddress {
    type Err = BadPciAddress;

    fn from_str(s: &str) -> Result<PciAddress, BadPciAddress> {
        let bad = || BadPciAddress(s.to_owned());
        let t = s.trim();
        let (head, function) = t.rsplit_once('.').ok_or_else(bad)?;
        let parts: Vec<&str> = head.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [d, b, v] => (*d, *b, *v),
            [b, v] => ("0", *b, *v),
            _ => return Err(bad()),
        };
        let hex = |x: &str, max: u32| {
            if x.is_empty() || x.len() > 8 {
                return None;
            }
            u32::from_str_radix(x, 16).ok().filter(|&v| v <= max)
        };
        let domain = hex(domain, u32::MAX).ok_or_else(bad)?;
        let bus = hex(bus, 0xff).ok_or_else(bad)?;
        let device = hex(device, 0x1f).ok_or_else(bad)?;
        let function = hex(function, 0x7).ok_or_else(bad)?;
        // The filters above bound every value to u8.
        let b = |v: u32| u8::try_from(v).unwrap_or(u8::MAX);
        Ok(PciAddress { domain, bus: b(bus), device: b(device), function: b(function) })
    }
}

impl serde::Serialize for PciAddress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One PCI device hwloc reported, with its locality.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PciDevice {
    /// Where it sits on the bus.
    pub address: PciAddress,
    /// PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel, …).
    pub vendor_id: u16,
    /// PCI device id.
    pub device_id: u16,
    /// PCI class and subclass, e.g. 0x0302 (3D controller), 0x0300 (VGA).
    pub class_id: u16,
    /// OS indices of the NUMA nodes local to the device (the nodeset of its
    /// first non-I/O ancestor), ascending. Usually one; several when the
    /// host bridge hangs off a package split into sub-NUMA clusters, all of
    /// them when it hangs off the machine (no locality known).
    pub numa_nodes: Vec<u32>,
}

impl PciDevice {
    /// A display controller (PCI base class 0x03: VGA, XGA, 3D): a GPU.
    pub fn is_gpu(&self) -> bool {
        self.class_id >> 8 == 0x03
    }
}

/// What identifies a GPU adapter on the PCI bus, as its driver reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PciIdentity<'a> {
    /// PCI vendor id as the graphics API reports it (a `u32`: non-PCI
    /// adapters such as Mesa's software ones use ids above 0xffff).
    pub vendor: u32,
    /// PCI device id.
    pub device: u32,
    /// The bus id, e.g. `"0000:17:00.0"`; empty when the driver gives none.
    pub bus_id: &'a str,
}

/// How an adapter was matched to a PCI device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PciMatch {
    /// By the bus id the driver reported.
    BusId,
    /// By vendor:device ids (the driver reported no bus id).
    VendorDevice,
}

/// The CPUs that should run the work feeding a device: one NUMA node's PUs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NodeAffinity {
    /// OS index of the NUMA node.
    pub numa_node: u32,
    /// OS indices of the node's PUs, ascending (never empty).
    pub pus: Vec<u32>,
}

impl Topology {
    /// The PCI device an adapter is, and how it was found:
    ///
    /// * with a bus id that parses, the device at that address, or `None`
    ///   (never a guess by ids: on a machine with eight identical GPUs the
    ///   ids say nothing);
    /// * without one (or with one that does not parse), the one device with
    ///   the adapter's vendor:device ids; where several have them, the first
    ///   of them if they all share the same NUMA nodes (the node is then
    ///   known even if the device is not), else `None`.
    pub fn pci_device_for(&self, id: &PciIdentity<'_>) -> Option<(&PciDevice, PciMatch)> {
        if let Ok(addr) = id.bus_id.parse::<PciAddress>() {
            return self.pci.iter().find(|d| d.address == addr).map(|d| (d, PciMatch::BusId));
        }
        let (Ok(vendor), Ok(device)) = (u16::try_from(id.vendor), u16::try_from(id.device)) else {
            return None;
        };
        let mut same = self.pci.iter().filter(|d| d.vendor_id == vendor && d.device_id == device);
        let first = same.next()?;
        same.all(|d| d.numa_nodes == first.numa_nodes).then_some((first, PciMatch::VendorDevice))
    }

    /// The NUMA node nearest the adapter's PCI slot: of the device's local
    /// nodes, the first that has CPUs (else the first). `None` when the
    /// device is not found ([`Topology::pci_device_for`]) or its locality
    /// is the whole machine of a multi-node topology (hwloc does not know
    /// where it is attached).
    pub fn numa_node_for(&self, id: &PciIdentity<'_>) -> Option<u32> {
        let (dev, _) = self.pci_device_for(id)?;
        self.nearest_node(dev)
    }

    /// The node [`Topology::numa_node_for`] picks for a device.
    pub fn nearest_node(&self, dev: &PciDevice) -> Option<u32> {
        let all: Vec<u32> = self.numa_nodes.iter().map(|n| n.os_index).collect();
        if all.len() > 1 && dev.numa_nodes == all {
            return None;
        }
        dev.numa_nodes
            .iter()
            .copied()
            .find(|&n| self.node(n).is_some_and(|node| node.pu_count() > 0))
            .or_else(|| dev.numa_nodes.first().copied())
    }

    /// The PUs of NUMA node `numa_node`; `None` when the node does not exist
    /// or has no CPUs (a memory-only node).
    pub fn node_affinity(&self, numa_node: u32) -> Option<NodeAffinity> {
        let node = self.node(numa_node)?;
        let mut pus: Vec<u32> = node.cores.iter().flat_map(|c| c.pus.iter().copied()).collect();
        pus.sort_unstable();
        pus.dedup();
        (!pus.is_empty()).then_some(NodeAffinity { numa_node, pus })
    }

    /// [`Topology::numa_node_for`] then [`Topology::node_affinity`]: the CPUs
    /// that should feed the adapter, `None` when its locality is unknown.
    pub fn feeder_affinity(&self, id: &PciIdentity<'_>) -> Option<NodeAffinity> {
        self.node_affinity(self.numa_node_for(id)?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Core, NumaNode, TopologySource};
    use super::*;

    fn addr(s: &str) -> PciAddress {
        s.parse().unwrap()
    }

    fn gpu(a: &str, device_id: u16, nodes: &[u32]) -> PciDevice {
        PciDevice { address: addr(a), vendor_id: 0x10de, device_id, class_id: 0x0302, numa_nodes: nodes.to_vec() }
    }

    /// Two nodes of two PUs each and a memory-only node 2.
    fn topo(pci: Vec<PciDevice>) -> Topology {
        let core = |l: u32, pu: u32| Core { logical_index: l, pus: vec![pu] };
        Topology {
            source: TopologySource::Fallback,
            numa_nodes: vec![
                NumaNode { os_index: 0, package: 0, cores: vec![core(0, 0), core(1, 1)] },
                NumaNode { os_index: 1, package: 1, cores: vec![core(2, 2), core(3, 3)] },
                NumaNode { os_index: 2, package: 1, cores: vec![] },
            ],
            pci,
        }
    }

    fn id(vendor: u32, device: u32, bus_id: &str) -> PciIdentity<'_> {
        PciIdentity { vendor, device, bus_id }
    }

    #[test]
    fn address_round_trip_and_errors() {
        let a = addr("0000:9a:00.0");
        assert_eq!(a, PciAddress { domain: 0, bus: 0x9a, device: 0, function: 0 });
        assert_eq!(a.to_string(), "0000:9a:00.0");
        assert_eq!(addr("9A:1f.7"), PciAddress { domain: 0, bus: 0x9a, device: 0x1f, function: 7 });
        assert_eq!(addr(" 10000:01:02.3 ").to_string(), "10000:01:02.3");
        for bad in ["", "0000:9a:00", "0000:9a:20.0", "0000:9a:00.8", "0000:100:00.0", "x:00.0", "0:0:0:0.0", ":00.0"] {
            assert!(bad.parse::<PciAddress>().is_err(), "{bad:?} parsed");
        }
        assert_eq!(serde_json::to_string(&a).unwrap(), "\"0000:9a:00.0\"");
    }

    #[test]
    fn bus_id_wins_and_is_never_guessed() {
        let t = topo(vec![gpu("0000:17:00.0", 0x2335, &[0]), gpu("0000:9a:00.0", 0x2335, &[1])]);
        assert_eq!(t.numa_node_for(&id(0x10de, 0x2335, "0000:17:00.0")), Some(0));
        assert_eq!(t.numa_node_for(&id(0x10de, 0x2335, "0000:9a:00.0")), Some(1));
        let (_, how) = t.pci_device_for(&id(0x10de, 0x2335, "0000:9a:00.0")).unwrap();
        assert_eq!(how, PciMatch::BusId);
        // A bus id hwloc does not know: no fallback to the ids.
        assert_eq!(t.numa_node_for(&id(0x10de, 0x2335, "0000:33:00.0")), None);
        // Two identical GPUs on different nodes and no bus id: ambiguous.
        assert_eq!(t.numa_node_for(&id(0x10de, 0x2335, "")), None);
    }

    #[test]
    fn vendor_device_when_unique_or_same_node() {
        let t = topo(vec![
            gpu("0000:17:00.0", 0x2335, &[0]),
            gpu("0000:18:00.0", 0x2335, &[0]),
            gpu("0000:ca:00.0", 0x26b9, &[1]),
        ]);
        assert_eq!(t.numa_node_for(&id(0x10de, 0x26b9, "")), Some(1));
        assert_eq!(t.pci_device_for(&id(0x10de, 0x26b9, "")).unwrap().1, PciMatch::VendorDevice);
        assert_eq!(t.numa_node_for(&id(0x10de, 0x2335, "garbage")), Some(0), "both on node 0");
        assert_eq!(t.numa_node_for(&id(0x10de, 0x9999, "")), None);
        // Mesa's software adapters use vendor ids above 0xffff.
        assert_eq!(t.numa_node_for(&id(0x10005, 0, "")), None);
        assert_eq!(topo(vec![]).numa_node_for(&id(0x10de, 0x26b9, "")), None);
    }

    #[test]
    fn nearest_node_prefers_cpus_and_rejects_whole_machine() {
        let t = topo(vec![
            gpu("0000:01:00.0", 1, &[2, 1]),
            gpu("0000:02:00.0", 2, &[0, 1, 2]),
            gpu("0000:03:00.0", 3, &[2]),
        ]);
        assert_eq!(t.numa_node_for(&id(0x10de, 1, "")), Some(1), "memory-only node 2 skipped");
        assert_eq!(t.numa_node_for(&id(0x10de, 2, "")), None, "attached to the machine: unknown");
        assert_eq!(t.numa_node_for(&id(0x10de, 3, "")), Some(2));
        assert_eq!(t.feeder_affinity(&id(0x10de, 3, "")), None, "no CPUs to feed from");
        let one = Topology { pci: vec![gpu("0000:01:00.0", 1, &[0])], ..Topology::fallback(2) };
        assert_eq!(one.numa_node_for(&id(0x10de, 1, "0000:01:00.0")), Some(0), "one node: that node");
        assert_eq!(
            t.feeder_affinity(&id(0x10de, 1, "0000:01:00.0")),
            Some(NodeAffinity { numa_node: 1, pus: vec![2, 3] })
        );
        assert_eq!(t.node_affinity(7), None);
    }
}
