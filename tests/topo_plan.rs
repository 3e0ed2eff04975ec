//! Topology discovery, pinning plans and thread pinning (`hashrig::topo`).

use std::collections::BTreeSet;

use hashrig::topo::*;

fn opts(threads: Option<usize>, smt: bool, nodes: Option<Vec<u32>>) -> PlanOptions {
    PlanOptions { threads, smt, nodes }
}

fn per_group(plan: &PinPlan) -> Vec<(u32, usize)> {
    plan.groups.iter().map(|g| (g.numa_node, g.workers.len())).collect()
}

/// Ids are 0..n in order, and every slot's node matches its group.
fn assert_well_formed(plan: &PinPlan) {
    let ids: Vec<usize> = plan.groups.iter().flat_map(|g| g.workers.iter().map(|w| w.id)).collect();
    assert_eq!(ids, (0..plan.worker_count()).collect::<Vec<_>>());
    for g in &plan.groups {
        assert!(!g.workers.is_empty());
        assert!(g.workers.iter().all(|w| w.numa_node == g.numa_node));
    }
    let pus: BTreeSet<u32> = plan.workers().map(|w| w.pu).collect();
    assert_eq!(pus.len(), plan.worker_count(), "a PU is used twice");
}

#[test]
fn fallback_topology_plans_one_worker_per_cpu() {
    let topo = Topology::fallback(4);
    assert_eq!(topo.source, TopologySource::Fallback);
    assert_eq!((topo.numa_nodes.len(), topo.core_count(), topo.pu_count()), (1, 4, 4));
    let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
    assert_eq!(per_group(&plan), [(0, 4)]);
    assert_well_formed(&plan);
    let plan = PinPlan::build(&topo, &opts(None, true, None)).unwrap();
    assert_eq!(plan.worker_count(), 4);
}

#[test]
fn plan_option_errors() {
    let topo = Topology::fallback(2);
    let err = PinPlan::build(&topo, &opts(Some(0), false, None)).unwrap_err();
    assert!(matches!(err, TopoError::ZeroThreads), "{err}");
    let err = PinPlan::build(&topo, &opts(None, false, Some(vec![0, 7]))).unwrap_err();
    assert!(matches!(&err, TopoError::UnknownNodes { unknown, .. } if unknown == &[7]), "{err}");
    assert!(err.to_string().contains('7'), "{err}");
    let err = PinPlan::build(&topo, &opts(None, false, Some(vec![]))).unwrap_err();
    assert!(matches!(err, TopoError::EmptyPlan { .. }), "{err}");
}

#[test]
fn plan_display_lists_every_worker() {
    let topo = Topology::fallback(3);
    let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
    let text = plan.to_string();
    for w in plan.workers() {
        let row = format!("{:>6} {:>5} {:>5}", w.id, w.core, w.pu);
        assert!(text.contains(&row), "missing {row:?} in\n{text}");
    }
    assert!(text.contains("NUMA node 0"), "{text}");
}

#[test]
fn clamped_thread_count_is_reported() {
    let topo = Topology::fallback(2);
    let plan = PinPlan::build(&topo, &opts(Some(5), false, None)).unwrap();
    assert_eq!(plan.worker_count(), 2);
    assert!(plan.clamped);
    assert_eq!(plan.requested_threads, Some(5));
    assert_eq!(plan.warnings().len(), 1);
    let plan = PinPlan::build(&topo, &opts(Some(2), false, None)).unwrap();
    assert!(!plan.clamped && plan.warnings().is_empty());
}

#[test]
fn real_machine_discovers_and_plans() {
    let topo = Topology::discover().expect("topology discovery");
    assert!(topo.core_count() >= 1 && topo.pu_count() >= topo.core_count());
    #[cfg(feature = "numa")]
    assert_eq!(topo.source, TopologySource::Hwloc);
    let plan = PinPlan::build(&topo, &PlanOptions::default()).expect("plan");
    assert!(plan.worker_count() >= 1);
    assert_well_formed(&plan);
    println!("{topo}\n{plan}");
    let json = serde_json::to_string(&plan).unwrap();
    assert!(json.contains("\"groups\""));
}

#[test]
fn pinning_the_current_thread_does_not_panic() {
    let topo = Topology::discover_or_fallback();
    let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
    let slot = plan.workers().next().unwrap().clone();
    // Pin a scratch thread so the test harness thread keeps its affinity.
    let expected = slot.pu.to_string();
    let (pinned, direct, allowed) = std::thread::spawn(move || {
        let pinned = pin_or_warn(&slot);
        let direct = pin_current_thread(&slot);
        // Linux: the kernel's view of this thread's affinity.
        let allowed = std::fs::read_to_string("/proc/thread-self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_owned())));
        (pinned, direct, allowed)
    })
    .join()
    .expect("pinning thread panicked");
    println!("pinned: {pinned}, second attempt: {direct:?}, Cpus_allowed_list: {allowed:?}");
    if pinned {
        if let Some(allowed) = allowed {
            assert_eq!(allowed, expected, "thread reported pinned but its affinity is {allowed}");
        }
    }
    #[cfg(not(feature = "numa"))]
    assert!(!pinned && matches!(direct, Err(PinError::Unsupported)));
    // A PU that cannot exist is refused with an error, not a panic.
    let bogus = WorkerSlot { id: 9, numa_node: 0, core: 0, pu: u32::MAX };
    assert!(pin_current_thread(&bogus).is_err());
    assert!(!pin_or_warn(&bogus));
}

#[cfg(not(feature = "numa"))]
#[test]
fn synthetic_needs_numa_feature() {
    assert!(matches!(Topology::synthetic("numa:1 core:2 pu:1"), Err(TopoError::NumaFeatureDisabled(_))));
}

#[cfg(feature = "numa")]
mod synthetic {
    use super::*;

    const BIG: &str = "pack:2 numa:2 core:8 pu:2";

    fn big() -> Topology {
        Topology::synthetic(BIG).expect("synthetic topology")
    }

    #[test]
    fn shape() {
        let topo = big();
        assert_eq!(topo.source, TopologySource::Synthetic(BIG.to_owned()));
        assert_eq!(topo.numa_nodes.len(), 4);
        assert_eq!(topo.core_count(), 32);
        assert_eq!(topo.pu_count(), 64);
        let ids: Vec<u32> = topo.numa_nodes.iter().map(|n| n.os_index).collect();
        assert_eq!(ids, [0, 1, 2, 3]);
        let packages: Vec<u32> = topo.numa_nodes.iter().map(|n| n.package).collect();
        assert_eq!(packages, [0, 0, 1, 1]);
        for node in &topo.numa_nodes {
            assert_eq!(node.cores.len(), 8);
            for core in &node.cores {
                assert_eq!(core.pus.len(), 2);
                assert!(core.pus.windows(2).all(|w| w[0] < w[1]));
            }
        }
        let text = topo.to_string();
        assert!(text.starts_with("2 packages, 4 NUMA nodes, 32 cores, 64 PUs"), "{text}");
        assert_eq!(text.lines().count(), 5, "{text}");
    }

    #[test]
    fn default_plan_one_worker_per_core() {
        let topo = big();
        let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
        assert_eq!(plan.worker_count(), 32);
        assert_eq!(per_group(&plan), [(0, 8), (1, 8), (2, 8), (3, 8)]);
        assert!(!plan.clamped);
        assert_well_formed(&plan);
        let cores: BTreeSet<u32> = plan.workers().map(|w| w.core).collect();
        assert_eq!(cores.len(), 32, "each worker on a distinct core");
        for w in plan.workers() {
            let node = topo.node(w.numa_node).unwrap();
            let core = node.cores.iter().find(|c| c.logical_index == w.core).unwrap();
            assert_eq!(w.pu, core.pus[0], "worker {w:?} is not on its core's first PU");
        }
    }

    #[test]
    fn smt_plan_uses_every_pu_first_siblings_first() {
        let topo = big();
        let plan = PinPlan::build(&topo, &opts(None, true, None)).unwrap();
        assert_eq!(plan.worker_count(), 64);
        assert_eq!(per_group(&plan), [(0, 16), (1, 16), (2, 16), (3, 16)]);
        assert_well_formed(&plan);
        for g in &plan.groups {
            let node = topo.node(g.numa_node).unwrap();
            let firsts: Vec<u32> = node.cores.iter().map(|c| c.pus[0]).collect();
            let seconds: Vec<u32> = node.cores.iter().map(|c| c.pus[1]).collect();
            let got: Vec<u32> = g.workers.iter().map(|w| w.pu).collect();
            assert_eq!(got, [firsts, seconds].concat());
        }
    }

    #[test]
    fn thread_cap_spreads_round_robin() {
        let topo = big();
        let plan = PinPlan::build(&topo, &opts(Some(4), false, None)).unwrap();
        assert_eq!(per_group(&plan), [(0, 1), (1, 1), (2, 1), (3, 1)]);
        assert_well_formed(&plan);
        let plan = PinPlan::build(&topo, &opts(Some(6), false, None)).unwrap();
        assert_eq!(per_group(&plan), [(0, 2), (1, 2), (2, 1), (3, 1)]);
        assert_well_formed(&plan);
        // Cores in order within a node.
        let node0 = &topo.numa_nodes[0];
        let got: Vec<u32> = plan.groups[0].workers.iter().map(|w| w.core).collect();
        assert_eq!(got, [node0.cores[0].logical_index, node0.cores[1].logical_index]);
        let plan = PinPlan::build(&topo, &opts(Some(2), false, None)).unwrap();
        assert_eq!(per_group(&plan), [(0, 1), (1, 1)]);
        let plan = PinPlan::build(&topo, &opts(Some(1000), true, None)).unwrap();
        assert_eq!(plan.worker_count(), 64);
        assert!(plan.clamped);
    }

    #[test]
    fn node_selection() {
        let topo = big();
        let plan = PinPlan::build(&topo, &opts(None, false, Some(vec![1]))).unwrap();
        assert_eq!(per_group(&plan), [(1, 8)]);
        assert_well_formed(&plan);
        let plan = PinPlan::build(&topo, &opts(Some(3), false, Some(vec![3, 1]))).unwrap();
        assert_eq!(per_group(&plan), [(1, 2), (3, 1)]);
        let err = PinPlan::build(&topo, &opts(None, false, Some(vec![4]))).unwrap_err();
        assert!(
            matches!(&err, TopoError::UnknownNodes { unknown, available } if unknown == &[4] && available == &[0, 1, 2, 3]),
            "{err}"
        );
        let err = PinPlan::build(&topo, &opts(Some(0), false, None)).unwrap_err();
        assert!(matches!(err, TopoError::ZeroThreads), "{err}");
    }

    #[test]
    fn single_node_two_cores() {
        let topo = Topology::synthetic("numa:1 core:2 pu:1").unwrap();
        assert_eq!((topo.numa_nodes.len(), topo.core_count(), topo.pu_count()), (1, 2, 2));
        let plan = PinPlan::build(&topo, &opts(None, true, None)).unwrap();
        assert_eq!(per_group(&plan), [(0, 2)]);
        assert_well_formed(&plan);
    }

    #[test]
    fn no_numa_level() {
        let topo = Topology::synthetic("pack:1 core:4 pu:2").unwrap();
        assert_eq!((topo.numa_nodes.len(), topo.core_count(), topo.pu_count()), (1, 4, 8));
        assert_eq!(topo.numa_nodes[0].os_index, 0);
        let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
        assert_eq!(per_group(&plan), [(0, 4)]);
        let plan = PinPlan::build(&topo, &opts(None, true, None)).unwrap();
        assert_eq!(plan.worker_count(), 8);
        assert_well_formed(&plan);
    }

    #[test]
    fn unusual_layouts() {
        // Two packages under one machine-wide NUMA node.
        let topo = Topology::synthetic("pack:2 core:2 pu:1").unwrap();
        assert_eq!((topo.numa_nodes.len(), topo.core_count()), (1, 4));
        // No core level: every PU becomes its own core.
        let topo = Topology::synthetic("pack:1 numa:2 pu:3").unwrap();
        assert_eq!((topo.numa_nodes.len(), topo.core_count(), topo.pu_count()), (2, 6, 6));
        let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
        assert_well_formed(&plan);
        // NUMA nodes below cores' caches / groups.
        let topo = Topology::synthetic("pack:2 group:2 numa:1 l3:1 core:3 pu:4").unwrap();
        assert_eq!((topo.numa_nodes.len(), topo.core_count(), topo.pu_count()), (4, 12, 48));
        let plan = PinPlan::build(&topo, &opts(Some(5), true, None)).unwrap();
        assert_eq!(per_group(&plan), [(0, 2), (1, 1), (2, 1), (3, 1)]);
    }

    #[test]
    fn invalid_description_is_an_error() {
        for desc in ["pack:2 bogus:3", "", "core:0", "pack:2\0"] {
            match Topology::synthetic(desc) {
                Err(err @ TopoError::InvalidSynthetic { .. }) => {
                    assert!(err.to_string().contains("synthetic"))
                }
                other => panic!("{desc:?}: expected InvalidSynthetic, got {other:?}"),
            }
        }
    }

    #[test]
    fn serializes() {
        let json = serde_json::to_string(&big()).unwrap();
        assert!(json.contains("\"Synthetic\""), "{json}");
    }
}

/// Binding a thread to a whole NUMA node: it then runs on exactly that
/// node's allowed PUs; an impossible node is an error, not a panic.
#[test]
fn pinning_a_thread_to_a_node() {
    let topo = Topology::discover_or_fallback();
    let node = topo.numa_nodes.iter().find(|n| !n.cores.is_empty()).unwrap().os_index;
    let affinity = topo.node_affinity(node).expect("a node with CPUs");
    assert_eq!(affinity.numa_node, node);
    let expected: BTreeSet<u32> = affinity.pus.iter().copied().collect();
    let (pinned, allowed) = std::thread::spawn(move || {
        let pinned = pin_to_node_or_warn(&affinity, "test thread");
        let allowed = std::fs::read_to_string("/proc/thread-self/status")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:").map(|v| v.trim().to_owned())));
        (pinned, allowed)
    })
    .join()
    .expect("pinning thread panicked");
    println!("pinned: {pinned}, Cpus_allowed_list: {allowed:?}, node PUs {expected:?}");
    if let (true, Some(allowed)) = (pinned, allowed) {
        let got: BTreeSet<u32> = allowed
            .split(',')
            .flat_map(|r| match r.split_once('-') {
                Some((a, b)) => (a.parse::<u32>().unwrap()..=b.parse::<u32>().unwrap()).collect::<Vec<_>>(),
                None => vec![r.parse::<u32>().unwrap()],
            })
            .collect();
        assert!(!got.is_empty() && got.is_subset(&expected), "bound to {got:?}, node has {expected:?}");
    }
    #[cfg(not(feature = "numa"))]
    assert!(!pinned);
    let bogus = NodeAffinity { numa_node: 9, pus: vec![u32::MAX, i32::MAX as u32] };
    assert!(pin_current_thread_to_node(&bogus).is_err());
}

#[test]
fn real_machine_pci_devices_are_well_formed() {
    let topo = Topology::discover_or_fallback();
    println!("{topo}");
    for dev in &topo.pci {
        println!(
            "{} [{:04x}:{:04x}] class {:04x} nodes {:?}",
            dev.address, dev.vendor_id, dev.device_id, dev.class_id, dev.numa_nodes
        );
        assert!(dev.numa_nodes.iter().all(|&n| topo.node(n).is_some()), "{dev:?} names a node the topology lacks");
        let id = PciIdentity {
            vendor: dev.vendor_id.into(),
            device: dev.device_id.into(),
            bus_id: &dev.address.to_string(),
        };
        assert_eq!(topo.pci_device_for(&id), Some((dev, PciMatch::BusId)));
    }
    assert!(topo.pci.windows(2).all(|w| w[0].address < w[1].address));
}

#[cfg(not(feature = "numa"))]
#[test]
fn xml_needs_numa_feature() {
    assert!(matches!(Topology::from_xml_file(xml::PATH), Err(TopoError::NumaFeatureDisabled(_))));
}

/// A two-socket machine from an hwloc XML export, edited by hand: node 0
/// (PUs 0-3) has an H200 at 0000:17:00.0 and a ConnectX NIC, node 1 (PUs
/// 4-7) a second H200 behind a PCIe switch at 0000:9a:00.0 and an L40S at
/// 0000:ca:00.0.
mod xml {
    #[cfg(feature = "numa")]
    use super::*;

    pub const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hwloc-2numa-2gpu.xml");

    #[cfg(feature = "numa")]
    fn two_gpu_machine() -> Topology {
        Topology::from_xml_file(PATH).expect("hwloc XML topology")
    }

    #[cfg(feature = "numa")]
    #[test]
    fn pci_devices_and_their_nodes() {
        let topo = two_gpu_machine();
        assert_eq!(topo.source, TopologySource::Xml(PATH.to_owned()));
        assert_eq!((topo.numa_nodes.len(), topo.core_count(), topo.pu_count()), (2, 4, 8));
        let got: Vec<(String, u16, u16, u16, Vec<u32>)> = topo
            .pci
            .iter()
            .map(|d| (d.address.to_string(), d.vendor_id, d.device_id, d.class_id, d.numa_nodes.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("0000:17:00.0".to_owned(), 0x10de, 0x2335, 0x0302, vec![0]),
                ("0000:18:00.0".to_owned(), 0x15b3, 0x1021, 0x0200, vec![0]),
                ("0000:9a:00.0".to_owned(), 0x10de, 0x2335, 0x0302, vec![1]),
                ("0000:ca:00.0".to_owned(), 0x10de, 0x26b9, 0x0302, vec![1]),
            ]
        );
        let gpus: Vec<String> = topo.pci.iter().filter(|d| d.is_gpu()).map(|d| d.address.to_string()).collect();
        assert_eq!(gpus, ["0000:17:00.0", "0000:9a:00.0", "0000:ca:00.0"]);
        let text = topo.to_string();
        assert!(text.contains("gpu 0000:17:00.0 [10de:2335]: node 0"), "{text}");
        assert!(text.contains("gpu 0000:9a:00.0 [10de:2335]: node 1"), "{text}");
        assert!(!text.contains("0000:18:00.0"), "the NIC is no GPU: {text}");
        let json = serde_json::to_value(&topo).unwrap();
        assert_eq!(json["pci"][2]["address"], "0000:9a:00.0");
        assert_eq!(json["pci"][2]["numa_nodes"], serde_json::json!([1]));
    }

    #[cfg(feature = "numa")]
    #[test]
    fn adapters_match_their_nodes() {
        let topo = two_gpu_machine();
        let id = |vendor: u32, device: u32, bus_id: &'static str| PciIdentity { vendor, device, bus_id };
        // By bus id, as Vulkan reports it.
        assert_eq!(topo.numa_node_for(&id(0x10de, 0x2335, "0000:17:00.0")), Some(0));
        assert_eq!(topo.numa_node_for(&id(0x10de, 0x2335, "0000:9a:00.0")), Some(1));
        assert_eq!(topo.pci_device_for(&id(0x10de, 0x2335, "0000:9a:00.0")).unwrap().1, PciMatch::BusId);
        // Without a bus id: unique ids match, two H200s on two nodes do not.
        assert_eq!(topo.numa_node_for(&id(0x10de, 0x26b9, "")), Some(1));
        assert_eq!(topo.pci_device_for(&id(0x10de, 0x26b9, "")).unwrap().1, PciMatch::VendorDevice);
        assert_eq!(topo.numa_node_for(&id(0x10de, 0x2335, "")), None);
        // lavapipe: Mesa's vendor id, no bus id.
        assert_eq!(topo.numa_node_for(&id(0x10005, 0, "")), None);
        // The feeder of the second H200 runs on node 1's PUs.
        let f = topo.feeder_affinity(&id(0x10de, 0x2335, "0000:9a:00.0")).unwrap();
        assert_eq!(f, NodeAffinity { numa_node: 1, pus: vec![4, 5, 6, 7] });
        // Pinning plans are unchanged by PCI devices.
        let plan = PinPlan::build(&topo, &PlanOptions::default()).unwrap();
        assert_eq!(per_group(&plan), [(0, 2), (1, 2)]);
    }

    /// A GPU signature engine fed from the second H200's node does its host
    /// work (encoding, re-checks) on a pool of that node's PUs (a simulated
    /// device stands in for the GPU; where the PUs do not exist, as here,
    /// the threads run unpinned and say so).
    #[cfg(feature = "numa")]
    #[test]
    fn a_gpu_signature_engine_works_on_its_gpus_node() {
        use hashrig::sched::sig::gpu::SimDevice;
        use hashrig::sched::{GpuSigEngine, TrustPolicy};
        let topo = two_gpu_machine();
        let id = PciIdentity { vendor: 0x10de, device: 0x2335, bus_id: "0000:9a:00.0" };
        let feeder = topo.feeder_affinity(&id);
        let dev = SimDevice::new("0.1:1000000".parse().unwrap(), 0);
        let g = GpuSigEngine::with_device(Box::new(dev), TrustPolicy::default(), None, feeder).unwrap();
        assert_eq!((g.host_node, g.host_threads), (Some(1), 4));
        let items: Vec<_> = (0..300).map(|i| hashrig::sig::demo::valid_item(hashrig::sig::Scheme::Ecdsa, i)).collect();
        assert_eq!(g.verify(&items).unwrap().verdicts, hashrig::sig::verify_batch(&items));
        g.shutdown();
    }
}

/// Synthetic and fallback topologies have no PCI devices, so no adapter
/// has a known node.
#[test]
fn no_pci_information_means_unknown() {
    let topo = Topology::fallback(2);
    assert!(topo.pci.is_empty());
    let id = PciIdentity { vendor: 0x10de, device: 0x2335, bus_id: "0000:17:00.0" };
    assert_eq!(topo.numa_node_for(&id), None);
    assert_eq!(topo.feeder_affinity(&id), None);
    #[cfg(feature = "numa")]
    assert!(Topology::synthetic("pack:2 numa:1 core:2 pu:1").unwrap().pci.is_empty());
}
