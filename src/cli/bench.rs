//! `hashrig bench pow`: whole-engine figures, through the same scheduler and
//! pinned workers `run` uses, on a job no hash can meet.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};

use crate::chain::{BlockHash, CompactTarget, Target, WorkTemplate};
use crate::metrics::Metrics;
use crate::pow::Backend;
use crate::sched::{cpu, CpuConfig, CpuEngine, PowJob, PowScheduler, Stats};
use crate::topo::{PinPlan, PlanOptions, Topology};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// SHA-256d hashrate: one thread, then all threads.
    Pow(PowBenchArgs),
    /// Signature verification: every scheme at batch sizes 1…65536, latency and throughput.
    Sig(super::sigbench::SigBenchArgs),
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
    /// Write (or update the [pow_cpu] section of) a hardware profile TOML.
    #[arg(long)]
    pub profile_out: Option<std::path::PathBuf>,
}

/// Hashes per second of `plan`'s workers over `seconds`, after a warm-up.
fn measure(plan: PinPlan, backend: Backend, pin: bool, seconds: f64) -> anyhow::Result<f64> {
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
        },
        // Nothing meets a zero target (but an all-zero hash): pure hashing.
        share_target: Target::ZERO,
        height: None,
        source: "demo",
    });
    let stop = Arc::new(AtomicBool::new(false));
    let engine = CpuEngine::start(
        CpuConfig { plan, backend, chunk_time: cpu::DEFAULT_CHUNK_TIME, pin },
        sched,
        stats.clone(),
        metrics,
        stop.clone(),
    )?;
    std::thread::sleep(Duration::from_secs(1));
    let (t0, h0) = (Instant::now(), stats.hashes.load(Ordering::Relaxed));
    std::thread::sleep(Duration::from_secs_f64(seconds));
    let (dt, h1) = (t0.elapsed().as_secs_f64(), stats.hashes.load(Ordering::Relaxed));
    stop.store(true, Ordering::Relaxed);
    engine.join();
    Ok((h1 - h0) as f64 / dt)
}

pub fn main(cmd: BenchCommand) -> anyhow::Result<ExitCode> {
    let a = match cmd {
        BenchCommand::Pow(a) => a,
        BenchCommand::Sig(a) => return super::sigbench::main(a),
    };
    if !(a.seconds > 0.0 && a.seconds.is_finite()) {
        anyhow::bail!("--seconds must be positive");
    }
    let backend = a.cpu.backend()?;
    let topo = Topology::discover_or_fallback();
    let all = PinPlan::build(&topo, &a.cpu.plan_options())?;
    let one = PinPlan::build(&topo, &PlanOptions { threads: Some(1), ..a.cpu.plan_options() })?;
    let threads = all.worker_count();
    if !a.json {
        println!("cpu: {} | path {} | {} threads", super::devices::cpu_model(), backend.name(), threads);
    }
    let single = measure(one, backend, !a.cpu.no_pin, a.seconds)?;
    if !a.json {
        println!("1 thread:   {:>10.2} MH/s", single / 1e6);
    }
    let total = if threads > 1 { measure(all, backend, !a.cpu.no_pin, a.seconds)? } else { single };
    if a.json {
        let v = serde_json::json!({
            "engine": "cpu",
            "backend": backend.name(),
            "cpu_model": super::devices::cpu_model(),
            "threads": threads,
            "seconds": a.seconds,
            "per_thread_hashes_per_sec": single,
            "hashes_per_sec": total,
            "scaling": total / single,
        });
        println!("{v}");
    } else {
        println!(
            "{threads} threads: {:>10.2} MH/s ({:.2}x one thread)",
            total / 1e6,
            total / single
        );
    }
    if let Some(path) = &a.profile_out {
        let mut p = crate::profile::HwProfile::load(path)?.unwrap_or_default();
        p.machine = crate::profile::Machine {
            note: p.machine.note.clone(),
            ..crate::profile::Machine::detect(&topo, super::devices::cpu_model())
        };
        p.pow_cpu = Some(crate::profile::PowCpu {
            hashrig_version: env!("CARGO_PKG_VERSION").to_string(),
            date: crate::profile::utc_date(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            backend: backend.name().to_string(),
            threads,
            seconds: a.seconds,
            per_thread_hashes_per_sec: single,
            all_threads_hashes_per_sec: total,
            scaling: total / single,
        });
        p.save(path)?;
        if !a.json {
            println!("profile written to {}", path.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
