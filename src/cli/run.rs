//! `hashrig run`: the flags and the config file, turned into the library's
//! [`RuntimeConfig`]; the [`Runtime`] does the rest (see `runtime/`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::node::config::{self as adapter_config};
use crate::node::demo::DemoParams;
use crate::node::sigserve::ServeAddr;
use crate::runtime::supervise::{self, Supervisor};
use crate::runtime::{
    self, CpuSettings, Fixed, Hooks, Inherited, Live, Mining, Runtime, RuntimeConfig, SigserveListen,
};
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
        (Some(p), Some(t)) => runtime::file::parse(p, t)?,
        _ => runtime::file::RuntimeFile::default(),
    };
    let d = Live::default();
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
    let sigserve_drain = match drain_secs {
        Some(s) => super::args::duration("--sigserve-drain-secs", s, true)?,
        None => runtime::DEFAULT_DRAIN,
    };
    let file_addr = file.sigserve.as_ref().and_then(|s| s.addr.as_ref());
    let sigserve = match (&a.sigserve, file_addr, &file.sigserve) {
        (Some(addr), _, _) => Some(SigserveListen {
            addr: addr.clone(),
            tls: tls(a.sigserve_tls_cert.clone(), a.sigserve_tls_key.clone(), a.sigserve_client_ca.clone())?,
        }),
        (None, Some(addr), Some(s)) => Some(SigserveListen {
            addr: addr.parse().map_err(|e| anyhow::anyhow!("[sigserve] addr: {e}"))?,
            tls: tls(s.tls_cert.clone(), s.tls_key.clone(), s.client_ca.clone())?,
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
    let tune = a.gpu.tune(true);
    let mining = match (a.no_mine, a.engines.contains(&EngineKind::Cpu), a.engines.contains(&EngineKind::Gpu)) {
        (true, _, _) => Mining::Off,
        (false, true, true) => Mining::CpuAndGpu(tune),
        (false, false, true) => Mining::Gpu(tune),
        // No engine named: the CPU mines, as it does when no GPU is usable.
        (false, _, false) => Mining::Cpu,
    };
    Ok(RuntimeConfig {
        fixed: Fixed {
            mining,
            sig_engines,
            gpus: a.gpu.devices(),
            demo: DemoParams { block_time, initial_difficulty: a.demo_difficulty, ..DemoParams::default() },
            sigserve,
            sensor: crate::health::SensorSource::Nvml,
        },
        live: Live {
            cpu,
            metrics,
            status_interval: std::time::Duration::from_secs(a.status_interval.max(1)),
            sig_demo_rate,
            adapter,
            log_level: file.log_level,
            sigserve_drain,
            thermal: a.health.guard(&file.gpu),
        },
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
        tracing::warn!("{}", runtime::chain(&e));
    }
    let hooks = Hooks { set_log_filter: super::log_filter_setter() };
    let rt = Runtime::start(cfg, hooks, &mut inherited)?;
    let exec = runtime::upgrade::SelfExec::current()
        .inspect_err(|e| tracing::warn!("live upgrade unavailable: cannot find this binary: {e}"))
        .ok();
    let watch = if a.watch { a.adapter.config.clone() } else { None };
    let pid_file = a.pid_file.clone();
    let load = Box::new(move || config(&a).map_err(runtime::BoxError::from));
    supervise::run(rt, Supervisor { load, watch, run_for, pid_file, exec, ready_pipe })?;
    Ok(ExitCode::SUCCESS)
}
