//! `hashrig run`: the flags and the config file, turned into the library's
//! [`RuntimeConfig`]; the [`Runtime`] does the rest (see `runtime/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use crate::node::config::{self as adapter_config};
use crate::node::demo::DemoParams;
use crate::node::sigserve::ServeAddr;
use crate::runtime::supervise::{self, Supervisor};
use crate::runtime::{self, CpuSettings, Hooks, Inherited, Runtime, RuntimeConfig, SigserveSettings};
use crate::sched::sig::EngineChoice;

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub cpu: super::CpuArgs,
    /// Engines to mine with (default: every one, the GPUs where usable).
    #[arg(long, value_delimiter = ',', value_enum, default_values = ["cpu", "gpu"])]
    pub engines: Vec<EngineKind>,
    /// Do not mine: no PoW engine and no node adapter, only signature
    /// verification (--sigserve, and the demo feed) on every core.
    #[arg(long, conflicts_with = "engines")]
    pub no_mine: bool,
    #[command(flatten)]
    pub gpu: super::gpu::GpuArgs,
    #[command(flatten)]
    pub health: super::health::HealthArgs,
    /// Engines that verify signatures (default: the CPU, and the GPUs where
    /// usable: each batch goes where it is predicted to finish first;
    /// the CPU answers until a GPU's kernels are built).
    #[arg(long, value_delimiter = ',', value_enum, default_values = ["cpu", "gpu"])]
    pub sig_engines: Vec<EngineKind>,
    /// Address of the Prometheus /metrics endpoint [default: 127.0.0.1:9787,
    /// or [metrics] addr in the config file].
    #[arg(long)]
    pub metrics: Option<SocketAddr>,
    /// Do not serve /metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 10)]
    pub status_interval: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Demo node: block time the block difficulty aims at, in seconds (the
    /// share difficulty aims at a few shares per second).
    #[arg(long, default_value_t = 10.0)]
    pub demo_block_time: f64,
    /// Demo node: difficulty of the first block (1 = 2^32 hashes per block)
    /// [default: from the engines' hashrate, measured at start].
    #[arg(long)]
    pub demo_difficulty: Option<f64>,
    /// Serve signature verification to validators on this address (HOST:PORT, unix:PATH).
    #[arg(long, num_args = 0..=1, default_missing_value = crate::node::sigserve::DEFAULT_ADDR)]
    pub sigserve: Option<ServeAddr>,
    /// sigserve over TLS: this server certificate chain (PEM; with --sigserve-tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["sigserve", "sigserve_tls_key"])]
    pub sigserve_tls_cert: Option<PathBuf>,
    /// Key of --sigserve-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "sigserve_tls_cert")]
    pub sigserve_tls_key: Option<PathBuf>,
    /// Require client certificates signed by the CAs in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "sigserve_tls_cert")]
    pub sigserve_client_ca: Option<PathBuf>,
    /// On SIGTERM, seconds /readyz answers 503 while sigserve keeps serving,
    /// so that a load balancer moves new connections first (a second
    /// SIGTERM, or SIGINT, stops at once) [default: 5, or [sigserve]
    /// drain_secs in the config file].
    #[arg(long, value_name = "SECS")]
    pub sigserve_drain_secs: Option<f64>,
    /// Demo: signatures per second the demo feed sends through the engine
    /// (0 = no feed) [default: 2000, or [sig] demo_rate in the config file].
    #[arg(long)]
    pub sig_demo_rate: Option<f64>,
    /// Reload the config file (--config) when it changes, as on SIGHUP.
    #[arg(long, requires = "config")]
    pub watch: bool,
    /// Write the pid here; a live upgrade's new process rewrites it.
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<PathBuf>,
    /// Node adapter: --pool / --node / --config (none: the embedded demo node).
    #[command(flatten)]
    pub adapter: adapter_config::AdapterArgs,
    /// --cpu-priority was given (it then wins over the file's [cpu] priority).
    #[arg(skip)]
    pub priority_given: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Cpu,
    Gpu,
}

/// The flags and the file (read now) as one config; flags given on the
/// command line win over the file.
pub fn config(a: &RunArgs) -> anyhow::Result<RuntimeConfig> {
    let block_time = super::args::duration("--demo-block-time", a.demo_block_time, false)?;
    let file_text = a.adapter.config.as_deref().map(adapter_config::load_file).transpose()?;
    let adapter = adapter_config::resolve(&a.adapter, file_text.as_deref())?;
    let file = match (&a.adapter.config, &file_text) {
        (Some(p), Some(t)) => runtime::file::parse(p, t).map_err(anyhow::Error::msg)?,
        _ => runtime::file::RuntimeFile::default(),
    };
    let d = RuntimeConfig::default();
    let fc = &file.cpu;
    let cpu = CpuSettings {
        threads: a.cpu.threads.or(fc.threads),
        smt: a.cpu.smt || fc.smt.unwrap_or(false),
        numa_nodes: a.cpu.numa_nodes.clone().or(fc.numa_nodes.clone()),
        pin: !a.cpu.no_pin && fc.pin.unwrap_or(true),
        backend: a.cpu.backend.or(fc.backend),
        priority: if a.priority_given { a.cpu.cpu_priority } else { fc.priority.unwrap_or(a.cpu.cpu_priority) },
    };
    let metrics = match (a.no_metrics, a.metrics, file.metrics.enabled) {
        (true, _, _) => None,
        (false, Some(m), _) => Some(m),
        (false, None, Some(false)) => None,
        (false, None, _) => Some(file.metrics.addr.unwrap_or(super::default_metrics_addr())),
    };
    let drain_secs = a.sigserve_drain_secs.or(file.sigserve.as_ref().and_then(|s| s.drain_secs));
    let drain = match drain_secs {
        Some(s) => super::args::duration("--sigserve-drain-secs", s, true)?,
        None => runtime::DEFAULT_DRAIN,
    };
    let file_addr = file.sigserve.as_ref().and_then(|s| s.addr.as_ref());
    let sigserve = match (&a.sigserve, file_addr, &file.sigserve) {
        (Some(addr), _, _) => Some(SigserveSettings {
            addr: addr.clone(),
            tls: tls(a.sigserve_tls_cert.clone(), a.sigserve_tls_key.clone(), a.sigserve_client_ca.clone())?,
            drain,
        }),
        (None, Some(addr), Some(s)) => Some(SigserveSettings {
            addr: addr.parse().map_err(|e| anyhow::anyhow!("[sigserve] addr: {e}"))?,
            tls: tls(s.tls_cert.clone(), s.tls_key.clone(), s.client_ca.clone())?,
            drain,
        }),
        _ => None,
    };
    let sig_demo_rate = a.sig_demo_rate.or(file.sig.demo_rate).unwrap_or(d.sig_demo_rate);
    let sig_engines = match (a.sig_engines.contains(&EngineKind::Cpu), a.sig_engines.contains(&EngineKind::Gpu)) {
        // The CPU always answers what no GPU can take; "gpu" alone sends
        // every batch (Ed25519, ECDSA, BIP340) to the GPUs.
        (_, false) => EngineChoice::Cpu,
        (true, true) => EngineChoice::Auto,
        (false, true) => EngineChoice::Gpu,
    };
    Ok(RuntimeConfig {
        mine: !a.no_mine,
        cpu_mining: a.engines.contains(&EngineKind::Cpu),
        gpu_mining: a.engines.contains(&EngineKind::Gpu),
        sig_engines,
        sig_gpu: a.sig_engines.contains(&EngineKind::Gpu).then(|| crate::sched::sig::GpuSelection {
            allow_software: a.gpu.gpu_allow_software,
            devices: a.gpu.gpu_devices.clone(),
            ..Default::default()
        }),
        cpu,
        metrics,
        status_interval: std::time::Duration::from_secs(a.status_interval.max(1)),
        demo: DemoParams { block_time, initial_difficulty: a.demo_difficulty, ..DemoParams::default() },
        sigserve,
        sig_demo_rate,
        adapter,
        log_level: file.log_level,
    })
}

fn tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    client_ca: Option<PathBuf>,
) -> anyhow::Result<Option<crate::node::sigserve::ServerTls>> {
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(crate::node::sigserve::ServerTls { cert, key, client_ca })),
        (None, None) if client_ca.is_none() => Ok(None),
        _ => anyhow::bail!("sigserve TLS needs both a certificate and its key"),
    }
}

pub fn main(a: RunArgs, mut inherited: Inherited, ready_pipe: Option<std::fs::File>) -> anyhow::Result<ExitCode> {
    let run_for = a.duration.map(|d| super::args::duration("--duration", d, true)).transpose()?;
    let cfg = config(&a)?;
    for w in adapter_config::secret_warnings(&a.adapter) {
        tracing::warn!("{w}");
    }
    // SIGINT stops cleanly, SIGTERM too after sigserve's drain, SIGHUP
    // reloads, SIGUSR2 upgrades.
    if let Err(e) = runtime::signals::install() {
        tracing::warn!("{e}");
    }
    let hooks = Hooks { pow_gpus: pow_gpus(&a), set_log_filter: super::log_filter_setter() };
    let rt = Runtime::start(cfg, hooks, &mut inherited)?;
    // GPU health metrics and the thermal guard (NVML; one line without it),
    // for the whole process: reloads and engines come and go beneath it.
    let health_stop = Arc::new(AtomicBool::new(false));
    let health = super::health::start(&a.health, rt.metrics(), rt.adapter_shares(), &health_stop)?;
    let exec = runtime::upgrade::SelfExec::current()
        .inspect_err(|e| tracing::warn!("live upgrade unavailable: cannot find this binary: {e}"))
        .ok();
    let watch = if a.watch { a.adapter.config.clone() } else { None };
    let pid_file = a.pid_file.clone();
    let load = Box::new(move || config(&a).map_err(|e| format!("{e:#}")));
    let result = supervise::run(rt, Supervisor { load, watch, run_for, pid_file, exec, ready_pipe });
    health_stop.store(true, Ordering::Relaxed);
    if let Some(h) = health {
        let _ = h.join();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

/// One GPU engine per usable adapter; with none, one warning and the CPU
/// mines alone.
#[cfg(feature = "gpu")]
fn pow_gpus(a: &RunArgs) -> Option<runtime::StartPowGpus> {
    let gpu = a.gpu.clone();
    Some(Box::new(move |env| {
        let (gpus, why) = super::gpu::start_contexts(&gpu, true);
        if let Some(why) = why {
            tracing::warn!("no usable GPU: {why}; mining on the CPU");
        }
        for (device, ctx) in &gpus {
            tracing::info!(
                "{device}: {} | {} | driver {} {}",
                ctx.summary.name,
                ctx.tune,
                ctx.summary.driver,
                ctx.summary.driver_info
            );
        }
        crate::sched::gpu::start_engines(gpus, env.topo, env.shares, env.sched, env.stats, env.metrics, env.stop)
            .map_err(|e| e.to_string())
    }))
}

#[cfg(not(feature = "gpu"))]
fn pow_gpus(a: &RunArgs) -> Option<runtime::StartPowGpus> {
    if a.engines.contains(&EngineKind::Gpu) && a.engines.len() == 1 && !a.no_mine {
        tracing::warn!("{}; mining on the CPU", super::gpu::gpu_unavailable_reason());
    }
    None
}
