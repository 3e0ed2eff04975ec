//! `hashrig run`: wires metrics, topology, the scheduler, the CPU engine and
//! a node adapter together, prints a status line every 10 s, and stops
//! cleanly on Ctrl-C (or after `--duration`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::metrics::{Metrics, MetricsServer};
use crate::node::demo::{DemoNode, DemoParams};
use crate::node::sigfeed as sigdemo;
use crate::node::sigserve::{ServeAddr, ServerConfig, SigServer};
use crate::sched::{CpuEngine, PowScheduler, Stats};
use crate::sched::{RateMeter, SigEngine, SigEngineConfig};
use crate::topo::{PinPlan, Topology};

#[derive(Args, Debug)]
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
    /// Address of the Prometheus /metrics endpoint (port 9787 on loopback by default).
    #[arg(long, default_value_t = super::default_metrics_addr())]
    pub metrics: SocketAddr,
    /// Do not serve /metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 10)]
    pub status_interval: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Demo node: block time the difficulty retargets toward, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub demo_block_time: f64,
    /// Demo node: difficulty of the first block (1 = 2^32 hashes per block).
    #[arg(long, default_value_t = 0.01)]
    pub demo_difficulty: f64,
    /// Serve signature verification to validators on this address (HOST:PORT, unix:PATH).
    #[arg(long, num_args = 0..=1, default_missing_value = crate::node::sigserve::DEFAULT_ADDR)]
    pub sigserve: Option<ServeAddr>,
    /// sigserve over TLS: this server certificate chain (PEM; with --sigserve-tls-key).
    #[arg(long, value_name = "FILE", requires_all = ["sigserve", "sigserve_tls_key"])]
    pub sigserve_tls_cert: Option<std::path::PathBuf>,
    /// Key of --sigserve-tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "sigserve_tls_cert")]
    pub sigserve_tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by the CAs in this PEM file (mutual TLS).
    #[arg(long, value_name = "FILE", requires = "sigserve_tls_cert")]
    pub sigserve_client_ca: Option<std::path::PathBuf>,
    /// Demo: signatures per second the demo feed sends through the engine (0 = no feed).
    #[arg(long, default_value_t = 2000.0)]
    pub sig_demo_rate: f64,
    /// Node adapter: --pool / --node / --config (issue 5).
    #[command(flatten)]
    pub adapter: crate::node::config::AdapterArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineKind {
    Cpu,
    Gpu,
}

fn status_line(stats: &Stats, metrics: &Metrics) -> String {
    format!(
        "{} | accepted {} rejected {} stale {} | hw errors {} | blocks {} | mining height {} share diff {}",
        stats.speed_line(),
        stats.accepted.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        stats.stale.load(Ordering::Relaxed),
        stats.hw_errors.load(Ordering::Relaxed),
        stats.blocks.load(Ordering::Relaxed),
        metrics.chain_height.get(),
        fmt_difficulty(metrics.share_difficulty.get()),
    )
}

/// Six significant digits whatever the magnitude (demo difficulties are tiny).
fn fmt_difficulty(d: f64) -> String {
    if d >= 1.0 {
        format!("{d:.0}")
    } else {
        format!("{d:.6e}")
    }
}

pub fn main(a: RunArgs) -> anyhow::Result<ExitCode> {
    let demo_block_time = super::args::duration("--demo-block-time", a.demo_block_time, false)?;
    let run_for = a.duration.map(|d| super::args::duration("--duration", d, true)).transpose()?;
    if !(a.demo_difficulty > 0.0 && a.demo_difficulty.is_finite()) {
        anyhow::bail!("--demo-difficulty must be a positive number");
    }
    let file_text = match &a.adapter.config {
        Some(p) => Some(crate::node::config::load_file(p)?),
        None => None,
    };
    let adapter = crate::node::config::resolve(&a.adapter, file_text.as_deref())?;
    for w in crate::node::config::secret_warnings(&a.adapter) {
        tracing::warn!("{w}");
    }
    if a.no_mine && !matches!(adapter, crate::node::config::Adapter::Demo) {
        anyhow::bail!("--no-mine runs no node adapter: leave out --pool, --node and the config's pool/node sections");
    }
    let backend = a.cpu.backend()?;
    let topo = Topology::discover_or_fallback();
    let plan = PinPlan::build(&topo, &a.cpu.plan_options())?;
    for w in plan.warnings() {
        tracing::warn!("{w}");
    }

    let metrics = Metrics::new();
    metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), backend.name()]).set(1);
    let _server = if a.no_metrics {
        None
    } else {
        let s = MetricsServer::start(a.metrics, metrics.clone())
            .with_context(|| format!("cannot serve metrics on {}", a.metrics))?;
        tracing::info!("metrics: http://{}/metrics", s.addr);
        Some(s)
    };

    let stop = Arc::new(AtomicBool::new(false));
    // SIGINT and SIGTERM stop cleanly (polled below); SIGHUP is logged.
    if let Err(e) = super::signals::install() {
        tracing::warn!("{e}");
    }
    // GPU health metrics and the thermal guard (NVML; one line without it).
    let _health = super::health::start(&a.health, &metrics, &stop)?;
    if let Some(d) = run_for {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(d);
            stop.store(true, Ordering::Relaxed);
        });
    }

    if a.no_mine {
        tracing::info!("not mining (--no-mine): signature verification only");
    } else {
        tracing::info!(
            "cpu: {} workers on {} NUMA node(s), sha256d path {}, priority {}, topology: {}",
            plan.worker_count(),
            plan.groups.len(),
            backend.name(),
            a.cpu.cpu_priority,
            topo.to_string().lines().next().unwrap_or("")
        );
        if a.cpu.backend.is_none() {
            tracing::info!("sha256d path: {}", crate::pow::selection());
        }
    }
    let stats = Arc::new(Stats::new());
    let engine_plan = plan.clone();
    let (sched, hits) = PowScheduler::new(metrics.clone());
    let gpu_engines =
        if a.no_mine { Vec::new() } else { start_gpu_engines(&a, &topo, &sched, &stats, &metrics, &stop)? };
    // With no GPU engine the CPU mines even when only `--engines gpu` was asked for.
    let use_cpu = !a.no_mine && (a.engines.contains(&EngineKind::Cpu) || gpu_engines.is_empty());
    let engine = if use_cpu {
        Some(CpuEngine::start(
            a.cpu.engine_config(plan, backend),
            sched.clone(),
            stats.clone(),
            metrics.clone(),
            stop.clone(),
        )?)
    } else {
        None
    };

    // Signatures: one pool per NUMA worker group, the demo feed, sigserve.
    let mut sig_cfg = SigEngineConfig::new(engine_plan);
    sig_cfg.pin = !a.cpu.no_pin;
    // The CPU always answers what no GPU can take; "gpu" alone sends every
    // batch (Ed25519, ECDSA, BIP340) to the GPUs.
    sig_cfg.engines = match (a.sig_engines.contains(&EngineKind::Cpu), a.sig_engines.contains(&EngineKind::Gpu)) {
        (_, false) => crate::sched::sig::EngineChoice::Cpu,
        (true, true) => crate::sched::sig::EngineChoice::Auto,
        (false, true) => crate::sched::sig::EngineChoice::Gpu,
    };
    let sig_engine = SigEngine::start(sig_cfg, Some(metrics.clone()))?;
    #[cfg(feature = "gpu")]
    if a.sig_engines.contains(&EngineKind::Gpu) {
        // Kernels build in the background: seconds on some drivers.
        super::gpu::start_sig_gpus(&sig_engine, &a.gpu, Some(metrics.clone()), true)?;
    }
    // The demo feed runs on the embedded demo only; a real node's validator
    // talks to sigserve instead.
    let sig_feed = if matches!(adapter, crate::node::config::Adapter::Demo)
        && a.sig_demo_rate > 0.0
        && a.sig_demo_rate.is_finite()
    {
        let p = sigdemo::FeedParams { rate: a.sig_demo_rate, ..sigdemo::FeedParams::default() };
        tracing::info!(
            "sig: demo feed of {:.0} signatures/s (ed25519, ecdsa, schnorr; valid and invalid mixed)",
            p.rate
        );
        Some(sigdemo::spawn_feed(sig_engine.clone(), p, Arc::new(sigdemo::FeedStats::default()), stop.clone())?)
    } else {
        None
    };
    let sig_server = match &a.sigserve {
        Some(addr) => {
            let mut cfg = ServerConfig::new(addr.clone());
            cfg.tls = match (&a.sigserve_tls_cert, &a.sigserve_tls_key) {
                (Some(cert), Some(key)) => Some(crate::node::sigserve::ServerTls {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: a.sigserve_client_ca.clone(),
                }),
                _ => None,
            };
            let guard = match &cfg.tls {
                Some(t) if t.client_ca.is_some() => "TLS, client certificates required",
                Some(_) => "TLS, any client",
                None => "plain",
            };
            if !addr.is_local() && cfg.tls.as_ref().is_none_or(|t| t.client_ca.is_none()) {
                tracing::warn!(
                    "sigserve: {addr} is reachable from other machines and any client may use it; \
                     --sigserve-client-ca requires client certificates"
                );
            }
            let s = SigServer::start(cfg, sig_engine.clone(), Some(metrics.clone()))
                .with_context(|| format!("cannot serve signatures on {addr}"))?;
            tracing::info!("sigserve: listening on {} ({guard})", s.local_addr());
            Some(s)
        }
        None => None,
    };

    let status = {
        let mut sig_rate = RateMeter::new(sig_engine.clone());
        let (stats, metrics, stop) = (stats.clone(), metrics.clone(), stop.clone());
        let every = Duration::from_secs(a.status_interval.max(1));
        let no_mine = a.no_mine;
        std::thread::Builder::new().name("status".into()).spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                stats.sample();
                if last.elapsed() >= every {
                    last = Instant::now();
                    if no_mine {
                        tracing::info!("sig {}", sig_rate.line());
                    } else {
                        tracing::info!("{} | sig {}", status_line(&stats, &metrics), sig_rate.line());
                    }
                }
            }
        })?
    };

    // The node adapter runs on a thread of its own with a stop flag of its
    // own: at the stop the engines stop first, then the adapter takes the
    // hits they left and hands them on (shares submitted, blocks submitted
    // or saved), within ADAPTER_STOP_DEADLINE.
    let adapter_stop = Arc::new(AtomicBool::new(false));
    let adapter_thread = if a.no_mine {
        None
    } else {
        let (sched, stats, metrics, stop, astop) =
            (sched.clone(), stats.clone(), metrics.clone(), stop.clone(), adapter_stop.clone());
        let demo =
            DemoParams { block_time: demo_block_time, initial_difficulty: a.demo_difficulty, ..DemoParams::default() };
        Some(std::thread::Builder::new().name("adapter".into()).spawn(move || {
            let r: anyhow::Result<()> = match adapter {
                crate::node::config::Adapter::Pool(cfg) => {
                    tracing::info!(
                        "node: Stratum pool(s) {}",
                        cfg.pools.iter().map(|p| p.url.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    crate::node::stratum::run(cfg, sched, hits, stats, metrics, astop).map_err(Into::into)
                }
                crate::node::config::Adapter::Solo(cfg) => {
                    tracing::info!("node: solo mining on {} (getblocktemplate)", cfg.url);
                    crate::node::gbt::run(cfg, sched, hits, stats, metrics, astop).map_err(Into::into)
                }
                crate::node::config::Adapter::Demo => {
                    tracing::info!("node: embedded demo chain (no --pool or --node configured)");
                    DemoNode::new(demo).run(sched, hits, stats, metrics, astop);
                    Ok(())
                }
            };
            // An adapter that gave up (e.g. the node refused our RPC
            // credentials) stops the engines too.
            stop.store(true, Ordering::Relaxed);
            r
        })?)
    };

    while !stop.load(Ordering::Relaxed) {
        let sig = super::signals::take();
        if sig.stop {
            tracing::info!("stopping (signal): engines, then the node adapter, then sigserve");
            stop.store(true, Ordering::Relaxed);
        }
        if sig.hangup {
            tracing::warn!("SIGHUP: configuration reload is not supported yet; running on with the current settings");
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    // Stop order: engines (no new hits), then the adapter drains the hits,
    // then the signature side answers what it accepted.
    if let Some(e) = engine {
        e.join();
    }
    join_gpu_engines(gpu_engines);
    adapter_stop.store(true, Ordering::Relaxed);
    let adapter_result = match adapter_thread {
        None => Ok(()),
        Some(t) => {
            let until = Instant::now() + ADAPTER_STOP_DEADLINE;
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(20));
            }
            if t.is_finished() {
                t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the node adapter panicked")))
            } else {
                tracing::error!(
                    "the node adapter did not stop within {ADAPTER_STOP_DEADLINE:?}; exiting without waiting for it"
                );
                Ok(())
            }
        }
    };
    if let Some(f) = sig_feed {
        let _ = f.join();
    }
    let sig_summary = sig_server.map(|s| {
        let st = s.shared_stats();
        s.shutdown();
        (st.batches_accepted.load(Ordering::Relaxed), st.batches_answered.load(Ordering::Relaxed))
    });
    let _ = status.join();
    stats.sample();
    let sig_line = match sig_summary {
        Some((accepted, answered)) => format!(" | sigserve batches accepted {accepted} answered {answered}"),
        None => String::new(),
    };
    if a.no_mine {
        tracing::info!("stopped{sig_line}");
    } else {
        tracing::info!("stopped: {}{sig_line}", status_line(&stats, &metrics));
    }
    adapter_result?;
    Ok(ExitCode::SUCCESS)
}

/// How long the node adapter has, once the engines are stopped, to hand on
/// the last hits (submit shares, submit or save blocks) and disconnect.
const ADAPTER_STOP_DEADLINE: Duration = Duration::from_secs(15);

#[cfg(feature = "gpu")]
type GpuEngines = Vec<crate::sched::GpuEngine>;
#[cfg(not(feature = "gpu"))]
type GpuEngines = Vec<()>;

/// One GPU engine per usable adapter when `--engines` has gpu; with none,
/// one warning and the CPU mines alone.
#[cfg(feature = "gpu")]
fn start_gpu_engines(
    a: &RunArgs,
    topo: &Topology,
    sched: &Arc<PowScheduler>,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<GpuEngines> {
    if !a.engines.contains(&EngineKind::Gpu) {
        return Ok(Vec::new());
    }
    let (gpus, why) = super::gpu::start_contexts(&a.gpu, true);
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
    Ok(crate::sched::gpu::start_engines(gpus, topo, sched, stats, metrics, stop)?)
}

#[cfg(not(feature = "gpu"))]
fn start_gpu_engines(
    a: &RunArgs,
    _: &Topology,
    _: &Arc<PowScheduler>,
    _: &Arc<Stats>,
    _: &Arc<Metrics>,
    _: &Arc<AtomicBool>,
) -> anyhow::Result<GpuEngines> {
    if a.engines.contains(&EngineKind::Gpu) && a.engines.len() == 1 {
        tracing::warn!("{}; mining on the CPU", super::gpu::gpu_unavailable_reason());
    }
    Ok(Vec::new())
}

#[cfg(feature = "gpu")]
fn join_gpu_engines(engines: GpuEngines) {
    for e in engines {
        e.join();
    }
}

#[cfg(not(feature = "gpu"))]
fn join_gpu_engines(_: GpuEngines) {}
