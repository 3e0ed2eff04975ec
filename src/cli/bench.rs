//! `hashrig bench pow`: whole-engine figures, through the same scheduler and
//! pinned workers `run` uses, on a job no hash can meet.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::chain::{BlockHash, CompactTarget, Target, WorkTemplate};
use crate::metrics::Metrics;
use crate::sched::{CpuConfig, CpuEngine, PowJob, PowScheduler, Stats};
use crate::topo::{PinPlan, PlanOptions, Topology};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// SHA-256d hashrate: one thread, then all threads.
    Pow(PowBenchArgs),
    /// Signature verification: every scheme at batch sizes 1…65536, latency and throughput.
    Sig(Box<super::sigbench::SigBenchArgs>),
}

#[derive(Args, Debug)]
pub struct PowBenchArgs {
    #[command(flatten)]
    pub cpu: super::CpuArgs,
    /// Seconds measured per phase (after one second of warm-up).
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Print one JSON object; `hashes_per_sec` is the all-thread total.
    #[arg(long)]
    pub json: bool,
    /// Write (or update the [pow_cpu] / [[pow_gpu]] sections of) a hardware profile TOML.
    #[arg(long)]
    pub profile_out: Option<std::path::PathBuf>,
    /// Also measure every SHA-256d path this CPU runs (one thread, then all,
    /// through the same engine), alternated in this run, beside the chosen one.
    #[arg(long)]
    pub paths: bool,
    /// Which engines: cpu, gpu, or all (CPU and every usable GPU at once).
    #[arg(long, value_enum, default_value = "cpu")]
    pub engine: BenchEngine,
    #[command(flatten)]
    pub gpu: super::gpu::GpuArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchEngine {
    Cpu,
    Gpu,
    All,
}

/// One GPU's share of a measurement.
#[derive(Clone, Debug, Default)]
struct GpuRate {
    device: String,
    adapter: String,
    tune: String,
    hashes_per_sec: f64,
    /// Mean kernel time per dispatch over the measured window.
    dispatch_seconds: f64,
    /// Its power over the window, where NVML reads this GPU.
    power: Option<crate::health::energy::Power>,
}

impl GpuRate {
    fn hashes_per_joule(&self) -> Option<f64> {
        self.power.as_ref().map(|p| self.hashes_per_sec / p.watts)
    }
}

#[cfg(feature = "gpu")]
type Gpus = Vec<(String, crate::gpu::GpuContext)>;
#[cfg(not(feature = "gpu"))]
type Gpus = Vec<(String, ())>;

/// Hashes per second of `plan`'s workers over `seconds`, after a warm-up.
fn measure(cpu: CpuConfig, topo: &Topology, seconds: f64) -> anyhow::Result<f64> {
    Ok(measure_engines(Some(cpu), Vec::new(), topo, seconds)?.0)
}

/// Total hashes per second of the CPU workers of `cpu` (if any) and the
/// GPU engines (each fed from its NUMA node in `topo`), run together on one
/// job, and each GPU's share.
fn measure_engines(
    cpu: Option<CpuConfig>,
    gpus: Gpus,
    topo: &Topology,
    seconds: f64,
) -> anyhow::Result<(f64, Vec<GpuRate>)> {
    let metrics = Metrics::new();
    let stats = Arc::new(Stats::new());
    let (sched, _hits) = PowScheduler::new(metrics.clone());
    sched.publish(PowJob {
        id: "bench".into(),
        template: WorkTemplate {
            version: 0x2000_0000,
            prev_blockhash: BlockHash::ZERO,
            coinb1: b"hashrig bench".to_vec(),
            coinb2: Vec::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 8,
            merkle_branch: Vec::new(),
            bits: CompactTarget::from_consensus(0x1d00ffff),
            time: 0,
            version_mask: 0,
            fixed_merkle_root: None,
        },
        // Nothing meets a zero target (but an all-zero hash): pure hashing.
        share_target: Target::ZERO,
        height: None,
        source: "demo",
    });
    let stop = Arc::new(AtomicBool::new(false));
    let engine = match cpu {
        Some(cfg) => Some(CpuEngine::start(cfg, sched.clone(), stats.clone(), metrics.clone(), stop.clone())?),
        None => None,
    };
    let mut rates: Vec<GpuRate> = Vec::new();
    // Power of the GPUs over the measured window (NVML, where there is one).
    let mut meter: Option<crate::health::energy::EnergyMeter> = None;
    #[cfg(feature = "gpu")]
    let gpu_engines = {
        if !gpus.is_empty() {
            let refs: Vec<_> = gpus
                .iter()
                .map(|(_, c)| crate::health::AdapterRef {
                    index: c.summary.index,
                    name: c.summary.name.clone(),
                    pci_bus_id: c.summary.pci_bus_id.clone(),
                })
                .collect();
            meter = crate::health::energy::EnergyMeter::open(&refs);
        }
        for (device, ctx) in &gpus {
            rates.push(GpuRate {
                device: device.clone(),
                adapter: ctx.summary.name.clone(),
                tune: ctx.tune.to_string(),
                ..Default::default()
            });
        }
        // Nothing else runs on the adapters: shares of their own.
        let shares = crate::gpu::AdapterShares::new();
        crate::sched::gpu::start_engines(gpus, topo, &shares, &sched, &stats, &metrics, &stop)?
    };
    #[cfg(not(feature = "gpu"))]
    let _ = (gpus, topo);
    let gpu_counts = |r: &GpuRate| {
        let h = metrics.hashes.with_label_values(&["gpu", &r.device]).get();
        let d = metrics.gpu.dispatch_seconds.with_label_values(&[&r.device]);
        (h, d.get_sample_sum(), d.get_sample_count())
    };
    // Warm-up: one second, and at least until every GPU has finished its
    // self-test and a few dispatches (software adapters take a while).
    let warm = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    while warm.elapsed() < Duration::from_secs(30) && rates.iter().any(|r| gpu_counts(r).2 < 3) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let before: Vec<_> = rates.iter().map(gpu_counts).collect();
    let window = meter.as_mut().map(|m| m.start());
    let (t0, h0) = (Instant::now(), stats.hashes.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (dt, h1) = (t0.elapsed().as_secs_f64(), stats.hashes.load(Ordering::Relaxed));
    let power = match (meter.as_mut(), window) {
        (Some(m), Some(w)) => m.finish(w),
        _ => Vec::new(),
    };
    for r in rates.iter_mut() {
        r.power = power.iter().find(|(a, _)| crate::gpu::label(*a) == r.device).map(|(_, p)| p.clone());
    }
    for (r, (h, sum, n)) in rates.iter_mut().zip(before) {
        let (h2, sum2, n2) = gpu_counts(r);
        r.hashes_per_sec = (h2 - h) as f64 / dt;
        r.dispatch_seconds = if n2 > n { (sum2 - sum) / (n2 - n) as f64 } else { 0.0 };
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(e) = engine {
        e.join();
    }
    #[cfg(feature = "gpu")]
    for e in gpu_engines {
        e.join();
    }
    Ok(((h1 - h0) as f64 / dt, rates))
}

pub fn main(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let a = match cmd {
        BenchCommand::Pow(a) => a,
        BenchCommand::Sig(a) => return super::sigbench::main(*a),
    };
    super::args::duration("--seconds", a.seconds, false)?;
    let backend = a.cpu.backend()?;
    let topo = Topology::discover_or_fallback();
    let all = PinPlan::build(&topo, &a.cpu.plan_options())?;
    let one = PinPlan::build(&topo, &PlanOptions { threads: Some(1), ..a.cpu.plan_options() })?;
    let threads = all.worker_count();
    let use_cpu = a.engine != BenchEngine::Gpu;
    let gpus = if a.engine == BenchEngine::Cpu { Vec::new() } else { start_gpus(&a.gpu)? };
    if !a.json {
        if use_cpu {
            println!("cpu: {} | path {} | {} threads", super::devices::cpu_model(), backend.name(), threads);
        }
        #[cfg(feature = "gpu")]
        for (d, c) in &gpus {
            println!("{d}: {} | {} | driver {} {}", c.summary.name, c.tune, c.summary.driver, c.summary.driver_info);
        }
    }
    if use_cpu && !a.json {
        match a.cpu.backend {
            None => println!("sha256d path: {}", crate::pow::selection()),
            Some(b) => println!("sha256d path: {b} (--backend)"),
        }
    }
    let per_path =
        if use_cpu && a.paths { measure_paths(&a, &topo, one.clone(), all.clone(), threads)? } else { Vec::new() };
    let (mut single, mut cpu_total) = (0.0, 0.0);
    if use_cpu {
        single = measure(a.cpu.engine_config(one, backend), &topo, a.seconds)?;
        if !a.json {
            println!("1 thread:   {:>10.2} MH/s", single / 1e6);
        }
        if a.engine == BenchEngine::Cpu {
            cpu_total = if threads > 1 {
                measure(a.cpu.engine_config(all.clone(), backend), &topo, a.seconds)?
            } else {
                single
            };
        }
    }
    let (total, gpu_rates) = if a.engine == BenchEngine::Cpu {
        (cpu_total, Vec::new())
    } else {
        let cpu = use_cpu.then(|| a.cpu.engine_config(all, backend));
        let (t, r) = measure_engines(cpu, gpus, &topo, a.seconds)?;
        if use_cpu {
            cpu_total = t - r.iter().map(|g| g.hashes_per_sec).sum::<f64>();
        }
        (t, r)
    };
    let engine_name = match a.engine {
        BenchEngine::Cpu => "cpu",
        BenchEngine::Gpu => "gpu",
        BenchEngine::All => "all",
    };
    if a.json {
        let mut v = serde_json::json!({
            "engine": engine_name,
            "seconds": a.seconds,
            "hashes_per_sec": total,
        });
        if use_cpu {
            v["backend"] = backend.name().into();
            v["cpu_model"] = super::devices::cpu_model().into();
            v["threads"] = threads.into();
            v["per_thread_hashes_per_sec"] = single.into();
            v["cpu_hashes_per_sec"] = cpu_total.into();
            v["scaling"] = (cpu_total / single).into();
            if a.cpu.backend.is_none() {
                let sel = crate::pow::selection();
                v["selection"] = serde_json::json!({
                    "chosen": sel.chosen.name(),
                    "seconds_per_path": sel.per_path.as_secs_f64(),
                    "rounds": sel.rounds,
                    "rates": sel.rates.iter().map(|r| serde_json::json!({
                        "backend": r.backend.name(),
                        "per_core_hashes_per_sec": r.hashes_per_sec,
                    })).collect::<Vec<_>>(),
                });
            }
            if a.paths {
                v["paths"] = per_path
                    .iter()
                    .map(|p| {
                        serde_json::json!({
                            "backend": p.backend.name(),
                            "per_thread_hashes_per_sec": p.single,
                            "all_threads_hashes_per_sec": p.all,
                        })
                    })
                    .collect::<Vec<_>>()
                    .into();
            }
        }
        if a.engine != BenchEngine::Cpu {
            v["gpu_hashes_per_sec"] = gpu_rates.iter().map(|g| g.hashes_per_sec).sum::<f64>().into();
            v["gpus"] = gpu_rates
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "device": g.device,
                        "adapter": g.adapter,
                        "tune": g.tune,
                        "hashes_per_sec": g.hashes_per_sec,
                        "dispatch_seconds": g.dispatch_seconds,
                        "watts": g.power.as_ref().map(|p| p.watts),
                        "hashes_per_joule": g.hashes_per_joule(),
                    })
                })
                .collect::<Vec<_>>()
                .into();
        }
        println!("{v}");
    } else {
        if use_cpu {
            println!("{threads} threads: {:>10.2} MH/s ({:.2}x one thread)", cpu_total / 1e6, cpu_total / single);
        }
        for g in &gpu_rates {
            let power = match (&g.power, g.hashes_per_joule()) {
                (Some(p), Some(hj)) => format!(" | {:.0} W ({}), {:.2} MH/J", p.watts, p.method, hj / 1e6),
                _ => String::new(),
            };
            println!(
                "{}: {:>10.2} MH/s | {:.2} ms kernel time per dispatch | {}{power}",
                g.device,
                g.hashes_per_sec / 1e6,
                g.dispatch_seconds * 1e3,
                g.adapter
            );
        }
        if a.engine == BenchEngine::All {
            println!("total:      {:>10.2} MH/s", total / 1e6);
        }
    }
    if let Some(path) = &a.profile_out {
        let mut p = crate::profile::HwProfile::load_for_update(path, &topo, super::devices::cpu_model())?;
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        if use_cpu {
            p.pow_cpu = Some(crate::profile::PowCpu {
                hashrig_version: env!("CARGO_PKG_VERSION").to_string(),
                date: crate::date::utc_date(),
                command: command.clone(),
                backend: backend.name().to_string(),
                threads,
                seconds: a.seconds,
                per_thread_hashes_per_sec: single,
                all_threads_hashes_per_sec: cpu_total,
                scaling: cpu_total / single,
            });
        }
        if a.engine != BenchEngine::Cpu {
            // One entry per (device, alone or beside the CPU): a gpu run and an
            // all run of the same machine both stay.
            p.pow_gpu.retain(|old| old.with_cpu != use_cpu || !gpu_rates.iter().any(|g| g.device == old.device));
            let fresh: Vec<_> = gpu_rates
                .iter()
                .map(|g| crate::profile::PowGpu {
                    hashrig_version: env!("CARGO_PKG_VERSION").to_string(),
                    date: crate::date::utc_date(),
                    command: command.clone(),
                    device: g.device.clone(),
                    adapter: g.adapter.clone(),
                    tune: g.tune.clone(),
                    seconds: a.seconds,
                    hashes_per_sec: g.hashes_per_sec,
                    dispatch_seconds: g.dispatch_seconds,
                    with_cpu: use_cpu,
                    total_hashes_per_sec: total,
                    hashes_per_joule: g.hashes_per_joule(),
                    power: g.power.clone(),
                })
                .collect();
            p.pow_gpu.extend(fresh);
        }
        p.save(path)?;
        if !a.json {
            println!("profile written to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One path's whole-engine rates.
struct PathFigures {
    backend: crate::pow::Backend,
    single: f64,
    all: f64,
}

/// `--paths`: every runnable path through the engine, one thread then all,
/// each phase alternated over the paths so that a change of load hits all alike.
fn measure_paths(
    a: &PowBenchArgs,
    topo: &Topology,
    one: PinPlan,
    all: PinPlan,
    threads: usize,
) -> anyhow::Result<Vec<PathFigures>> {
    let paths = crate::pow::available();
    let mut figs: Vec<PathFigures> =
        paths.iter().map(|&backend| PathFigures { backend, single: 0.0, all: 0.0 }).collect();
    for f in figs.iter_mut() {
        f.single = measure(a.cpu.engine_config(one.clone(), f.backend), topo, a.seconds)?;
    }
    for f in figs.iter_mut() {
        f.all =
            if threads > 1 { measure(a.cpu.engine_config(all.clone(), f.backend), topo, a.seconds)? } else { f.single };
    }
    if !a.json {
        println!("per path, same run (MH/s):  1 thread  {threads} threads");
        for f in &figs {
            println!("  {:<24}{:>10.2}{:>10.2}", f.backend.name(), f.single / 1e6, f.all / 1e6);
        }
    }
    Ok(figs)
}

#[cfg(feature = "gpu")]
fn start_gpus(a: &super::gpu::GpuArgs) -> anyhow::Result<Gpus> {
    let (gpus, why) = super::gpu::start_contexts(a, true);
    match why {
        Some(why) => anyhow::bail!("no usable GPU: {why}"),
        None => Ok(gpus),
    }
}

#[cfg(not(feature = "gpu"))]
fn start_gpus(_: &super::gpu::GpuArgs) -> anyhow::Result<Gpus> {
    anyhow::bail!("{}", super::gpu::gpu_unavailable_reason())
}
