//! `hashrig devices`: what this binary can do on this machine.

use std::process::ExitCode;

use clap::Args;

use crate::pow;
use crate::topo::{PinPlan, Topology};

#[derive(Args, Debug)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub cpu: super::CpuArgs,
    /// Print the topology and plan as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Every Vulkan adapter, as JSON values and as lines, each with the NUMA
/// node that feeds it (nearest its PCIe slot; `numa_node` null and "unknown"
/// where hwloc does not know).
#[cfg(feature = "gpu")]
fn gpu_adapters(topo: &Topology) -> (Vec<serde_json::Value>, Vec<String>) {
    let all = crate::gpu::adapters();
    let json = all
        .iter()
        .map(|a| {
            let mut v = serde_json::to_value(&a.summary).unwrap_or_default();
            if let Some(obj) = v.as_object_mut() {
                obj.insert("numa_node".into(), crate::topo::gpu_numa_node(topo, &a.summary).into());
            }
            v
        })
        .collect();
    let lines = if all.is_empty() {
        vec!["gpu: no Vulkan adapter found".to_string()]
    } else {
        all.iter().map(|a| format!("{} | {}", a.summary.line(), feeder_text(topo, &a.summary))).collect()
    };
    (json, lines)
}

/// `"fed from NUMA node 1 (PCI 0000:9a:00.0)"`, or why the node is unknown.
#[cfg(feature = "gpu")]
fn feeder_text(topo: &Topology, a: &crate::gpu::AdapterSummary) -> String {
    let bus = if a.pci_bus_id.is_empty() { "no PCI bus id".to_string() } else { format!("PCI {}", a.pci_bus_id) };
    match crate::topo::gpu_numa_node(topo, a) {
        Some(node) => format!("fed from NUMA node {node} ({bus})"),
        None => format!("fed from NUMA node unknown ({bus})"),
    }
}

#[cfg(not(feature = "gpu"))]
fn gpu_adapters(_: &Topology) -> (Vec<serde_json::Value>, Vec<String>) {
    (Vec::new(), vec!["gpu: not compiled in (feature gpu)".to_string()])
}

/// The CPU model name, from /proc/cpuinfo where there is one.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

/// Instruction sets compiled in (target features of this build) and detected
/// at run time, and the SHA-256d paths each allows.
pub fn feature_report() -> String {
    let mut s = String::new();
    #[cfg(target_arch = "x86_64")]
    {
        let compiled: Vec<&str> = [
            ("sse4.1", cfg!(target_feature = "sse4.1")),
            ("avx2", cfg!(target_feature = "avx2")),
            ("sha", cfg!(target_feature = "sha")),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
        let detected: Vec<&str> = [
            ("sse4.1", std::arch::is_x86_feature_detected!("sse4.1")),
            ("avx2", std::arch::is_x86_feature_detected!("avx2")),
            ("sha", std::arch::is_x86_feature_detected!("sha")),
            ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ]
        .iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| *n)
        .collect();
        s.push_str(&format!(
            "cpu features: compiled-in baseline [{}] (SIMD paths are gated per function); detected [{}]\n",
            compiled.join(" "),
            detected.join(" ")
        ));
    }
    let names = |v: &[pow::Backend]| v.iter().map(|b| b.name()).collect::<Vec<_>>().join(" ");
    s.push_str(&format!(
        "sha256d paths: compiled [{}], runnable here [{}], selected {}\n",
        names(pow::compiled()),
        names(&pow::available()),
        pow::detect().name()
    ));
    s.push_str(&format!(
        "features: numa {} gpu {}\n",
        if cfg!(feature = "numa") { "on" } else { "off" },
        if cfg!(feature = "gpu") { "on (wgpu, Vulkan)" } else { "off" }
    ));
    s
}

pub fn main(a: DevicesArgs) -> anyhow::Result<ExitCode> {
    let topo = Topology::discover_or_fallback();
    let plan = PinPlan::build(&topo, &a.cpu.plan_options())?;
    if a.json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "cpu_model": cpu_model(),
            "pow_backends_available": pow::available().iter().map(|b| b.name()).collect::<Vec<_>>(),
            "pow_backend_selected": pow::detect().name(),
            "topology": topo,
            "plan": plan,
            "gpu_adapters": gpu_adapters(&topo).0,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("hashrig {}", env!("CARGO_PKG_VERSION"));
    println!("cpu: {}", cpu_model());
    print!("{}", feature_report());
    for l in gpu_adapters(&topo).1 {
        println!("{l}");
    }
    println!();
    println!("topology: {topo}");
    println!();
    println!("{plan}");
    for w in plan.warnings() {
        println!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}
