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
                obj.insert("numa_node".into(), a.summary.numa_node(topo).into());
                // The signature engine's host pool (encoding, re-checks) on that node.
                let host = a.summary.feeder_affinity(topo).map(|f| f.pus.len());
                obj.insert("sig_host_threads".into(), host.into());
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

/// `"fed from NUMA node 1 (4 host threads; PCI 0000:9a:00.0)"`, or why the
/// node is unknown. The host threads are the GPU signature engine's pool
/// for encoding and re-checks, pinned to the node's PUs.
#[cfg(feature = "gpu")]
fn feeder_text(topo: &Topology, a: &crate::gpu::AdapterSummary) -> String {
    let bus = if a.pci_bus_id.is_empty() { "no PCI bus id".to_string() } else { format!("PCI {}", a.pci_bus_id) };
    match a.numa_node(topo) {
        Some(node) => {
            let threads = a.feeder_affinity(topo).map_or(0, |f| f.pus.len());
            format!("fed from NUMA node {node} ({threads} host threads; {bus})")
        }
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
            ("avx512vl", std::arch::is_x86_feature_detected!("avx512vl")),
            ("avx512ifma", std::arch::is_x86_feature_detected!("avx512ifma")),
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
        pow::selection()
    ));
    let dalek: Vec<&str> = ed25519_backends_compiled().iter().map(|b| b.name()).collect();
    s.push_str(&format!(
        "ed25519 (curve25519-dalek): compiled [{}], runs {}\n",
        dalek.join(" "),
        ed25519_backend().name()
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
            "pow_path_rates": pow::selection()
                .rates
                .iter()
                .map(|r| serde_json::json!({"backend": r.backend.name(), "per_core_hashes_per_sec": r.hashes_per_sec}))
                .collect::<Vec<_>>(),
            "ed25519_backend": ed25519_backend().name(),
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

/// A curve25519-dalek backend (the field arithmetic behind every Ed25519 check).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DalekBackend {
    /// 52-bit multiply-add in AVX-512 (IFMA + VL): Zen 4 and later, Ice Lake and later.
    Avx512Ifma,
    Avx2,
    Serial,
}

impl DalekBackend {
    pub fn name(&self) -> &'static str {
        match self {
            DalekBackend::Avx512Ifma => "avx512ifma",
            DalekBackend::Avx2 => "avx2",
            DalekBackend::Serial => "serial",
        }
    }
}

/// What curve25519-dalek 5 runs, from what its build contains and what the
/// CPU has: it checks at run time (cpufeatures) for avx512ifma and avx512vl
/// together, then avx2, then falls back to its serial code. A mirror of its
/// `backend::get_selected_backend`, which is private.
pub fn dalek_select(built_ifma: bool, built_avx2: bool, ifma: bool, vl: bool, avx2: bool) -> DalekBackend {
    if built_ifma && ifma && vl {
        DalekBackend::Avx512Ifma
    } else if built_avx2 && avx2 {
        DalekBackend::Avx2
    } else {
        DalekBackend::Serial
    }
}

/// The backends this build of curve25519-dalek contains, in its order of
/// preference, as its build script decides: only on 64-bit x86_64; the IFMA
/// one when `--cfg curve25519_dalek_backend="avx512"` is set (this project's
/// .cargo/config.toml) or the target enables avx512ifma and avx512vl; the
/// AVX2 one unless the backend is forced to serial or fiat. The rustflags
/// cfg reaches every crate of the build, so it is visible here too.
pub fn ed25519_backends_compiled() -> Vec<DalekBackend> {
    let simd_capable = cfg!(all(target_arch = "x86_64", target_pointer_width = "64"))
        && !cfg!(curve25519_dalek_bits = "32")
        && !cfg!(any(curve25519_dalek_backend = "serial", curve25519_dalek_backend = "fiat"));
    let forced_simd = cfg!(curve25519_dalek_backend = "simd");
    let avx512 = simd_capable
        && (cfg!(curve25519_dalek_backend = "avx512")
            || (!forced_simd && cfg!(all(target_feature = "avx512ifma", target_feature = "avx512vl"))));
    let mut v = Vec::new();
    if avx512 {
        v.push(DalekBackend::Avx512Ifma);
    }
    if simd_capable {
        v.push(DalekBackend::Avx2);
    }
    v.push(DalekBackend::Serial);
    v
}

/// The backend curve25519-dalek runs on this CPU.
pub fn ed25519_backend() -> DalekBackend {
    let built = ed25519_backends_compiled();
    #[cfg(target_arch = "x86_64")]
    let (ifma, vl, avx2) = (
        std::arch::is_x86_feature_detected!("avx512ifma"),
        std::arch::is_x86_feature_detected!("avx512vl"),
        std::arch::is_x86_feature_detected!("avx2"),
    );
    #[cfg(not(target_arch = "x86_64"))]
    let (ifma, vl, avx2) = (false, false, false);
    dalek_select(built.contains(&DalekBackend::Avx512Ifma), built.contains(&DalekBackend::Avx2), ifma, vl, avx2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use DalekBackend::*;

    /// Every combination of build and CPU; IFMA needs VL beside it, and the
    /// fallback is AVX2, then serial.
    #[test]
    fn dalek_selection_on_every_feature_combination() {
        for bits in 0u32..32 {
            let [has512, has2, ifma, vl, avx2] = core::array::from_fn(|i| (bits >> i) & 1 == 1);
            let got = dalek_select(has512, has2, ifma, vl, avx2);
            let want = match (has512 && ifma && vl, has2 && avx2) {
                (true, _) => Avx512Ifma,
                (false, true) => Avx2,
                (false, false) => Serial,
            };
            assert_eq!(got, want, "build avx512 {has512} avx2 {has2}; cpu ifma {ifma} vl {vl} avx2 {avx2}");
        }
        // Named machines, build with both vector backends.
        let cpu = |ifma, vl, avx2| dalek_select(true, true, ifma, vl, avx2);
        assert_eq!(cpu(true, true, true), Avx512Ifma, "Zen 4/5, Ice Lake-SP and later");
        assert_eq!(cpu(false, true, true), Avx2, "Skylake-SP/Cascade Lake: AVX-512 without IFMA");
        assert_eq!(cpu(false, false, true), Avx2, "Zen 3, Haswell..Coffee Lake");
        assert_eq!(cpu(true, false, true), Avx2, "IFMA alone is not enough");
        assert_eq!(cpu(false, false, false), Serial, "no AVX2 (Atom-class)");
        // A build without the cfg on an IFMA CPU stays on AVX2.
        assert_eq!(dalek_select(false, true, true, true, true), Avx2);
    }

    #[test]
    fn this_build_contains_the_ifma_backend_and_runs_what_the_cpu_allows() {
        let built = ed25519_backends_compiled();
        assert_eq!(built.last(), Some(&Serial));
        // .cargo/config.toml builds the IFMA backend in on x86_64 (unless an
        // RUSTFLAGS variable replaced that list, as for a before/after bench).
        if cfg!(all(target_arch = "x86_64", curve25519_dalek_backend = "avx512")) {
            assert_eq!(built, [Avx512Ifma, Avx2, Serial]);
        }
        let runs = ed25519_backend();
        assert!(built.contains(&runs));
        #[cfg(target_arch = "x86_64")]
        if built.contains(&Avx512Ifma) {
            let ifma =
                std::arch::is_x86_feature_detected!("avx512ifma") && std::arch::is_x86_feature_detected!("avx512vl");
            assert_eq!(runs == Avx512Ifma, ifma);
        }
    }
}
