//! Starting a [`Runtime`]: every part from one validated config.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::adapter::{self, AdapterCount};
use super::config::{Live, Mining, Resolved, RuntimeConfig, SigserveListen};
use super::gpus::{self, GpuEngines};
use super::worker::Worker;
use super::{health, status, CpuWorkers, Hooks, Inherited, Runtime, RuntimeError, ADAPTER_STOP_DEADLINE};
use crate::metrics::{Metrics, MetricsServer};
use crate::node::config::Adapter;
use crate::node::demo::DemoParams;
use crate::node::sigfeed;
use crate::node::sigserve::{ServerConfig, SigServer};
use crate::sched::{CpuConfig, CpuEngine, Hit, PowScheduler, SigEngine, SigEngineConfig, Stats};
use crate::topo::Topology;

impl Runtime {
    /// Validates `cfg` and starts every part, serving on `inherited`
    /// sockets where they match.
    pub fn start(cfg: RuntimeConfig, hooks: Hooks, inherited: &mut Inherited) -> Result<Runtime, RuntimeError> {
        let topo = Topology::discover_or_fallback();
        let resolved = cfg.validate(&topo)?;
        for w in resolved.plan.warnings() {
            tracing::warn!("{w}");
        }
        let (fixed, live) = (&cfg.fixed, &cfg.live);
        if let (Some(l), Some(set)) = (&live.log_level, &hooks.set_log_filter) {
            set(Some(l)).map_err(RuntimeError::LogFilter)?;
        }
        let metrics = Metrics::new();
        if fixed.sigserve.is_some() {
            metrics.probes.expect_sigserve();
        }
        metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), resolved.backend.name()]).set(1);
        let metrics_server = match live.metrics {
            None => None,
            Some(addr) => Some(start_metrics(addr, inherited.take_metrics(addr), &metrics)?),
        };
        if fixed.mining.on() {
            tracing::info!(
                "cpu: {} workers on {} NUMA node(s), sha256d path {}, priority {}, topology: {}",
                resolved.plan.worker_count(),
                resolved.plan.groups.len(),
                resolved.backend.name(),
                live.cpu.priority,
                topo.to_string().lines().next().unwrap_or("")
            );
            if live.cpu.backend.is_none() {
                tracing::info!("sha256d path: {}", crate::pow::selection());
            }
        } else {
            tracing::info!("not mining (--no-mine): signature verification only");
        }
        // GPU health first: the thermal guard watches the GPUs from the
        // first dispatch on.
        // What the engines and the health monitor on each adapter share.
        let shares = crate::gpu::AdapterShares::new();
        let health = health::start(&fixed.sensor, &live.thermal, &metrics, &shares)?;
        let stats = Arc::new(Stats::new());
        let (sched, hits) = PowScheduler::new(metrics.clone());
        let gpu_stop = Arc::new(AtomicBool::new(false));
        let gpus = match fixed.mining.gpu() {
            Some(tune) => {
                if !cfg!(feature = "gpu") && matches!(fixed.mining, Mining::Gpu(_)) {
                    tracing::warn!("this hashrig was built without the gpu feature; mining on the CPU");
                }
                let env = gpus::PowEnv {
                    topo: &topo,
                    sched: &sched,
                    stats: &stats,
                    metrics: &metrics,
                    stop: &gpu_stop,
                    shares: &shares,
                };
                gpus::start_pow(&fixed.gpus, *tune, &env)?
            }
            None => GpuEngines::new(),
        };
        // With no GPU engine the CPU mines even when only GPUs were asked for.
        let cpu = match fixed.mining.cpu(!gpus.is_empty()) {
            true => Some(start_cpu(cpu_config(live, &resolved), &sched, &stats, &metrics)?),
            false => None,
        };

        // Signatures: one pool per NUMA worker group, the demo feed, sigserve.
        let mut sig_cfg = SigEngineConfig::new(resolved.plan.clone());
        sig_cfg.pin = live.cpu.pin;
        sig_cfg.engines = fixed.sig_engines;
        sig_cfg.adapters = shares.clone();
        let sig_engine =
            SigEngine::start(sig_cfg, Some(metrics.clone())).map_err(|e| RuntimeError::start("signature engine", e))?;
        if let Some(sel) = fixed.sig_gpu() {
            sig_engine
                .start_gpus(&sel, crate::sched::sig::StartMode::Background)
                .map_err(|e| RuntimeError::start("gpu signatures", e))?;
        }
        let feed = start_feed(&live.adapter, live.sig_demo_rate, &sig_engine)?;
        let sigserve = match &fixed.sigserve {
            Some(s) => Some(start_sigserve(s, inherited, &sig_engine, &metrics)?),
            None => None,
        };
        metrics.probes.set_sigserve_listening(sigserve.is_some());
        let left = inherited.leftover();
        if !left.is_empty() {
            tracing::warn!("inherited sockets not configured here, closed: {}", left.join(", "));
        }

        let status_every = Arc::new(AtomicU64::new(live.status_interval.as_secs().max(1)));
        let status = status::spawn(fixed.mining.on(), &stats, &metrics, &sig_engine, &status_every)?;
        let done = Arc::new(AtomicBool::new(false));
        let adapters = Arc::new(AdapterCount::default());
        // What a pool is told the miner does before the live rate exists.
        let first_rate = cpu.as_ref().map(|_| cpu_rate_at_start(&resolved));
        let ports = AdapterPorts { sched: &sched, hits: &hits, stats: &stats, metrics: &metrics, done: &done };
        let adapter = match fixed.mining.on() {
            true => Some(ports.start(&live.adapter, &fixed.demo, &adapters, first_rate)?),
            false => None,
        };
        // Ready once GPU signature starts under way (each holds a guard)
        // have finished too.
        metrics.probes.engines_started();
        Ok(Runtime {
            cfg,
            topo,
            metrics,
            stats,
            sched,
            hits,
            done,
            metrics_server,
            cpu,
            gpus,
            gpu_stop,
            sig_engine,
            shares,
            feed,
            sigserve,
            adapter,
            stopping_adapter: None,
            adapters,
            adapter_deadline: ADAPTER_STOP_DEADLINE,
            health,
            status,
            status_every,
            set_log_filter: hooks.set_log_filter,
        })
    }

    pub(super) fn adapter_ports(&self) -> AdapterPorts<'_> {
        AdapterPorts {
            sched: &self.sched,
            hits: &self.hits,
            stats: &self.stats,
            metrics: &self.metrics,
            done: &self.done,
        }
    }
}

/// The CPU workers' rate from the start-up timing of the hashing path (one
/// core's rate × the workers).
fn cpu_rate_at_start(resolved: &Resolved) -> f64 {
    let rates = &crate::pow::selection().rates;
    let per_core = rates.iter().find(|r| r.backend == resolved.backend).map_or(0.0, |r| r.hashes_per_sec);
    per_core * resolved.plan.worker_count() as f64
}

pub(super) fn cpu_config(live: &Live, resolved: &Resolved) -> CpuConfig {
    CpuConfig {
        plan: resolved.plan.clone(),
        backend: resolved.backend,
        chunk_time: crate::sched::cpu::DEFAULT_CHUNK_TIME,
        pin: live.cpu.pin,
        priority: live.cpu.priority,
    }
}

pub(super) fn start_cpu(
    cfg: CpuConfig,
    sched: &Arc<PowScheduler>,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
) -> Result<CpuWorkers, RuntimeError> {
    let stop = Arc::new(AtomicBool::new(false));
    let engine = CpuEngine::start(cfg.clone(), sched.clone(), stats.clone(), metrics.clone(), stop.clone())
        .map_err(|e| RuntimeError::start("cpu", e))?;
    Ok(CpuWorkers { engine, stop, cfg })
}

pub(super) fn start_metrics(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    metrics: &Arc<Metrics>,
) -> Result<MetricsServer, RuntimeError> {
    let s = match inherited {
        Some(l) => MetricsServer::serve(l, metrics.clone()),
        None => MetricsServer::start(addr, metrics.clone()),
    }
    .map_err(|e| RuntimeError::start(format!("metrics: cannot serve on {addr}"), e))?;
    tracing::info!("metrics: http://{}/metrics", s.addr);
    Ok(s)
}

/// The demo feed runs on the embedded demo only; a real node's validator
/// talks to sigserve instead.
pub(super) fn start_feed(adapter: &Adapter, rate: f64, engine: &SigEngine) -> Result<Option<Worker>, RuntimeError> {
    if !(matches!(adapter, Adapter::Demo) && rate > 0.0 && rate.is_finite()) {
        return Ok(None);
    }
    let p = sigfeed::FeedParams { rate, ..sigfeed::FeedParams::default() };
    tracing::info!("sig: demo feed of {:.0} signatures/s (ed25519, ecdsa, schnorr; valid and invalid mixed)", p.rate);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = sigfeed::spawn_feed(engine.clone(), p, Arc::new(sigfeed::FeedStats::default()), stop.clone())
        .map_err(|e| RuntimeError::start("sig demo feed", e))?;
    Ok(Some(Worker::from_parts(thread, stop)))
}

fn start_sigserve(
    s: &SigserveListen,
    inherited: &mut Inherited,
    engine: &SigEngine,
    metrics: &Arc<Metrics>,
) -> Result<SigServer, RuntimeError> {
    let addr = &s.addr;
    let mut cfg = ServerConfig::new(addr.clone());
    cfg.tls = s.tls.clone();
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
    let (bound, systemd) = match inherited.take_sigserve(addr) {
        Some((l, systemd)) => (Some(l), systemd),
        None => (None, false),
    };
    let handed = match (&bound, systemd) {
        (Some(_), true) => ", socket from systemd",
        (Some(_), false) => ", socket inherited",
        (None, _) => "",
    };
    let srv = SigServer::start_on(cfg, bound, engine.clone(), Some(metrics.clone()))
        .map_err(|e| RuntimeError::start(format!("sigserve: cannot serve signatures on {addr}"), e))?;
    if systemd {
        srv.leave_path_at_stop();
    }
    tracing::info!("sigserve: listening on {} ({guard}{handed})", srv.local_addr());
    Ok(srv)
}

/// What a node adapter publishes to and reports through.
pub(super) struct AdapterPorts<'a> {
    sched: &'a Arc<PowScheduler>,
    hits: &'a Receiver<Hit>,
    stats: &'a Arc<Stats>,
    metrics: &'a Arc<Metrics>,
    done: &'a Arc<AtomicBool>,
}

impl AdapterPorts<'_> {
    pub(super) fn start(
        &self,
        adapter: &Adapter,
        demo: &DemoParams,
        count: &Arc<AdapterCount>,
        first_rate: Option<f64>,
    ) -> Result<adapter::AdapterRun, RuntimeError> {
        let env = adapter::AdapterEnv {
            sched: self.sched.clone(),
            hits: self.hits.clone(),
            stats: self.stats.clone(),
            metrics: self.metrics.clone(),
            done: self.done.clone(),
            first_rate,
            count: count.clone(),
        };
        adapter::AdapterRun::start(adapter.clone(), demo.clone(), env)
            .map_err(|e| RuntimeError::start("node adapter", e))
    }
}
