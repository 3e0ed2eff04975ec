//! The runtime behind `hashrig run`: starts the engines, the node adapter,
//! sigserve, the metrics listener and the demo feed from one validated
//! [`RuntimeConfig`], applies a new config live ([`Runtime::reload`]), hands
//! its listening sockets to a successor ([`upgrade`]) and stops in order.
//!
//! - `config`: the config value, its validation, and what a reload changes;
//! - `file`: the runtime's keys of the config file;
//! - `adapter`: the node adapter's thread, stopped and replaced;
//! - `listeners`: sockets inherited from a predecessor or systemd;
//! - `upgrade`: the live binary upgrade, the pid file, systemd notes;
//! - `signals` and `supervise`: the process loop of `hashrig run`.
//!
//! Stop order: the engines first (no new hits), then the adapter hands on
//! what they found, then the signature side answers what it accepted. In a
//! handover sigserve and /metrics stop accepting first, so that clients move
//! to the successor at once.

pub mod adapter;
pub mod config;
pub mod file;
pub mod listeners;
pub mod signals;
pub mod supervise;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::metrics::{Metrics, MetricsServer};
use crate::node::config::Adapter;
use crate::node::sigfeed;
use crate::node::sigserve::{ServerConfig, SigServer};
use crate::sched::{CpuConfig, CpuEngine, Hit, PowScheduler, RateMeter, SigEngine, SigEngineConfig, Stats};
use crate::topo::Topology;

pub use adapter::ADAPTER_STOP_DEADLINE;
pub use config::{
    diff, Changes, ConfigInvalid, CpuSettings, Resolved, RuntimeConfig, SigserveSettings, DEFAULT_DRAIN, MAX_DRAIN,
};
pub use listeners::Inherited;

#[cfg(feature = "gpu")]
pub type GpuEngines = Vec<crate::sched::GpuEngine>;
#[cfg(not(feature = "gpu"))]
pub type GpuEngines = Vec<()>;

/// What GPU engines start from (the runtime's scheduler and counters).
pub struct GpuEnv<'a> {
    pub topo: &'a Topology,
    pub sched: &'a Arc<PowScheduler>,
    pub stats: &'a Arc<Stats>,
    pub metrics: &'a Arc<Metrics>,
    pub stop: &'a Arc<AtomicBool>,
    /// Each engine gets its adapter's share (`gpu::share`).
    pub shares: &'a crate::gpu::AdapterShares,
}

pub type StartPowGpus = Box<dyn FnOnce(&GpuEnv) -> Result<GpuEngines, String>>;
pub type SetLogFilter = Box<dyn Fn(Option<&str>) -> Result<(), String> + Send>;

/// What the caller brings: device bring-up from its own flags, and the
/// process's log filter (the library owns neither).
#[derive(Default)]
pub struct Hooks {
    /// Starts the PoW GPU engines (called when the config asks for GPU mining).
    pub pow_gpus: Option<StartPowGpus>,
    /// Sets the log filter (None: back to the start-up one).
    pub set_log_filter: Option<SetLogFilter>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigInvalid),
    #[error("{0}: {1}")]
    Start(&'static str, String),
    #[error("node adapter: {0}")]
    Adapter(String),
}

fn start_err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> RuntimeError {
    move |e| RuntimeError::Start(what, e.to_string())
}

/// How [`Runtime::stop`] ends the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Stop everything; a Unix socket's path is removed.
    Normal,
    /// A successor took the sockets: stop accepting first, leave the paths.
    Handover,
}

struct CpuWorkers {
    engine: CpuEngine,
    stop: Arc<AtomicBool>,
    cfg: CpuConfig,
}

struct Feed {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

pub struct Runtime {
    cfg: RuntimeConfig,
    topo: Topology,
    metrics: Arc<Metrics>,
    stats: Arc<Stats>,
    sched: Arc<PowScheduler>,
    hits: Receiver<Hit>,
    /// Raised when the run should end on its own (the adapter gave up).
    done: Arc<AtomicBool>,
    metrics_server: Option<MetricsServer>,
    cpu: Option<CpuWorkers>,
    gpus: GpuEngines,
    gpu_stop: Arc<AtomicBool>,
    sig_engine: SigEngine,
    feed: Option<Feed>,
    sigserve: Option<SigServer>,
    adapter: Option<adapter::AdapterRun>,
    status: JoinHandle<()>,
    status_stop: Arc<AtomicBool>,
    status_every: Arc<AtomicU64>,
    set_log_filter: Option<SetLogFilter>,
    /// What the engines and the health monitor on each adapter share.
    shares: crate::gpu::AdapterShares,
}

impl Runtime {
    /// Validates `cfg` and starts every part, serving on `inherited`
    /// sockets where they match.
    pub fn start(cfg: RuntimeConfig, hooks: Hooks, inherited: &mut Inherited) -> Result<Runtime, RuntimeError> {
        let topo = Topology::discover_or_fallback();
        let resolved = cfg.validate(&topo)?;
        for w in resolved.plan.warnings() {
            tracing::warn!("{w}");
        }
        if let (Some(l), Some(set)) = (&cfg.log_level, &hooks.set_log_filter) {
            set(Some(l)).map_err(start_err("log_level"))?;
        }
        let metrics = Metrics::new();
        if cfg.sigserve.is_some() {
            metrics.probes.expect_sigserve();
        }
        metrics.build_info.with_label_values(&[env!("CARGO_PKG_VERSION"), resolved.backend.name()]).set(1);
        let metrics_server = match cfg.metrics {
            None => None,
            Some(addr) => Some(start_metrics(addr, inherited.take_metrics(addr), &metrics)?),
        };
        if cfg.mine {
            tracing::info!(
                "cpu: {} workers on {} NUMA node(s), sha256d path {}, priority {}, topology: {}",
                resolved.plan.worker_count(),
                resolved.plan.groups.len(),
                resolved.backend.name(),
                cfg.cpu.priority,
                topo.to_string().lines().next().unwrap_or("")
            );
            if cfg.cpu.backend.is_none() {
                tracing::info!("sha256d path: {}", crate::pow::selection());
            }
        } else {
            tracing::info!("not mining (--no-mine): signature verification only");
        }
        let stats = Arc::new(Stats::new());
        let (sched, hits) = PowScheduler::new(metrics.clone());
        let gpu_stop = Arc::new(AtomicBool::new(false));
        let shares = crate::gpu::AdapterShares::new();
        let gpus = match (cfg.mine && cfg.gpu_mining, hooks.pow_gpus) {
            (true, Some(start)) => {
                let env = GpuEnv {
                    topo: &topo,
                    sched: &sched,
                    stats: &stats,
                    metrics: &metrics,
                    stop: &gpu_stop,
                    shares: &shares,
                };
                start(&env).map_err(start_err("gpu"))?
            }
            _ => GpuEngines::new(),
        };
        let mut rt_cpu = None;
        // With no GPU engine the CPU mines even when only GPUs were asked for.
        if cfg.mine && (cfg.cpu_mining || gpus.is_empty()) {
            rt_cpu = Some(start_cpu(cpu_config(&cfg, &resolved), &sched, &stats, &metrics)?);
        }

        // Signatures: one pool per NUMA worker group, the demo feed, sigserve.
        let mut sig_cfg = SigEngineConfig::new(resolved.plan.clone());
        sig_cfg.pin = cfg.cpu.pin;
        sig_cfg.engines = cfg.sig_engines;
        sig_cfg.adapters = shares.clone();
        let sig_engine = SigEngine::start(sig_cfg, Some(metrics.clone())).map_err(start_err("signature engine"))?;
        if let Some(sel) = &cfg.sig_gpu {
            sig_engine
                .start_gpus(sel, crate::sched::sig::StartMode::Background)
                .map_err(start_err("gpu signatures"))?;
        }
        let feed = start_feed(&cfg, &sig_engine)?;
        let sigserve = match &cfg.sigserve {
            Some(s) => Some(start_sigserve(s, inherited, &sig_engine, &metrics)?),
            None => None,
        };
        metrics.probes.set_sigserve_listening(sigserve.is_some());
        let left = inherited.leftover();
        if !left.is_empty() {
            tracing::warn!("inherited sockets not configured here, closed: {}", left.join(", "));
        }

        let status_stop = Arc::new(AtomicBool::new(false));
        let status_every = Arc::new(AtomicU64::new(cfg.status_interval.as_secs().max(1)));
        let status = spawn_status(&cfg, &stats, &metrics, &sig_engine, &status_stop, &status_every)?;
        let done = Arc::new(AtomicBool::new(false));
        // What a pool is told the miner does before the live rate exists.
        let first_rate = rt_cpu.as_ref().map(|_| cpu_rate_at_start(&resolved));
        let adapter = if cfg.mine {
            Some(start_adapter(&cfg, &sched, &hits, &stats, &metrics, &done, first_rate)?)
        } else {
            None
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
            cpu: rt_cpu,
            gpus,
            gpu_stop,
            sig_engine,
            feed,
            sigserve,
            adapter,
            status,
            status_stop,
            status_every,
            set_log_filter: hooks.set_log_filter,
            shares,
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// What the engines on each GPU adapter share, for a health monitor
    /// whose thermal guard slows them.
    pub fn adapter_shares(&self) -> &crate::gpu::AdapterShares {
        &self.shares
    }

    /// The run should end: its adapter gave up.
    pub fn finished(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }

    /// `/readyz` answers 503 from now on; everything keeps serving. The
    /// first step of a stop that lets a load balancer move new connections
    /// elsewhere first.
    pub fn begin_drain(&self) {
        self.metrics.probes.begin_drain();
    }

    /// How long a stop on SIGTERM keeps serving after turning unready (zero:
    /// no sigserve, nothing to drain).
    pub fn drain_period(&self) -> Duration {
        match (&self.cfg.sigserve, &self.sigserve) {
            (Some(s), Some(_)) => s.drain,
            _ => Duration::ZERO,
        }
    }

    /// Where sigserve and /metrics listen (after binding port 0).
    pub fn sigserve_addr(&self) -> Option<&crate::node::sigserve::ServeAddr> {
        self.sigserve.as_ref().map(|s| s.local_addr())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|m| m.addr)
    }

    /// A reload whose config could not be read or validated: the old one
    /// runs on; logged and counted.
    pub fn reload_rejected(&self, why: &str) {
        self.metrics.runtime.config_reloads.with_label_values(&["invalid"]).inc();
        tracing::error!("reload: keeping the running config: {why}");
    }

    /// Applies `new` live: validated whole first (an invalid config changes
    /// nothing), then only what changed is touched. Keys that need a restart
    /// are named in the log and keep their running values.
    pub fn reload(&mut self, mut new: RuntimeConfig) -> Changes {
        let resolved = match new.validate(&self.topo) {
            Ok(r) => r,
            Err(e) => {
                self.reload_rejected(&e.to_string());
                return Changes::default();
            }
        };
        let changes = diff(&self.cfg, &new);
        if !changes.need_restart.is_empty() {
            tracing::warn!(
                "reload: changed, but needs a restart (or a live upgrade, SIGUSR2) to take effect: {}",
                changes.need_restart.join(", ")
            );
        }
        // What needs a restart keeps its running value.
        new.mine = self.cfg.mine;
        new.cpu_mining = self.cfg.cpu_mining;
        new.gpu_mining = self.cfg.gpu_mining;
        new.sig_engines = self.cfg.sig_engines;
        new.sig_gpu = self.cfg.sig_gpu.clone();
        new.demo = self.cfg.demo.clone();
        // sigserve's address and TLS need a restart; its drain period is
        // read at the stop, so it is live.
        let drain = new.sigserve.as_ref().map(|s| s.drain);
        new.sigserve = self.cfg.sigserve.clone();
        if let (Some(s), Some(d)) = (new.sigserve.as_mut(), drain) {
            s.drain = d;
        }
        let mut failed = Vec::new();
        let mut applied = Vec::new();
        if changes.log_level {
            match &self.set_log_filter {
                Some(set) => match set(new.log_level.as_deref()) {
                    Ok(()) => applied.push("log_level"),
                    Err(e) => {
                        failed.push(format!("log_level: {e}"));
                        new.log_level = self.cfg.log_level.clone();
                    }
                },
                None => failed.push("log_level: this process cannot change its log filter".into()),
            }
        }
        if changes.metrics {
            match self.apply_metrics(new.metrics) {
                Ok(()) => applied.push("metrics"),
                Err(e) => {
                    failed.push(e);
                    new.metrics = self.cfg.metrics;
                }
            }
        }
        if changes.sigserve_drain {
            applied.push("sigserve.drain_secs");
        }
        if changes.status_interval {
            self.status_every.store(new.status_interval.as_secs().max(1), Ordering::Relaxed);
            applied.push("status_interval");
        }
        if changes.cpu {
            match self.apply_cpu(&new, &resolved) {
                Ok(true) => applied.push("cpu"),
                Ok(false) => {}
                Err(e) => {
                    failed.push(e);
                    new.cpu = self.cfg.cpu.clone();
                }
            }
        }
        if changes.adapter && self.cfg.mine {
            match self.apply_adapter(&new) {
                Ok(()) => applied.push("adapter"),
                Err(e) => {
                    failed.push(e);
                    new.adapter = self.cfg.adapter.clone();
                }
            }
        }
        let feed_was = self.cfg.sig_demo_rate;
        if changes.sig_demo_rate || changes.adapter {
            self.cfg.sig_demo_rate = new.sig_demo_rate;
            self.cfg.adapter = new.adapter.clone();
            match self.restart_feed() {
                Ok(()) => {
                    if changes.sig_demo_rate {
                        applied.push("sig.demo_rate")
                    }
                }
                Err(e) => {
                    failed.push(e);
                    new.sig_demo_rate = feed_was;
                }
            }
        }
        self.cfg = new;
        let result = if !failed.is_empty() {
            tracing::error!("reload: could not apply: {}", failed.join("; "));
            "failed"
        } else if applied.is_empty() {
            "unchanged"
        } else {
            "applied"
        };
        if result != "failed" {
            let what = if applied.is_empty() { "nothing live changed".to_owned() } else { applied.join(", ") };
            tracing::info!("reload: applied ({what})");
        }
        self.metrics.runtime.config_reloads.with_label_values(&[result]).inc();
        changes
    }

    fn apply_metrics(&mut self, addr: Option<SocketAddr>) -> Result<(), String> {
        match addr {
            None => {
                self.metrics_server = None;
                tracing::info!("metrics: no longer served");
            }
            Some(a) => {
                // Bind the new address before letting the old one go.
                let s = start_metrics(a, None, &self.metrics).map_err(|e| e.to_string())?;
                self.metrics_server = Some(s);
            }
        }
        Ok(())
    }

    /// Restarts the PoW workers if their plan, path or priority changed.
    fn apply_cpu(&mut self, new: &RuntimeConfig, resolved: &Resolved) -> Result<bool, String> {
        let Some(old) = &self.cpu else { return Ok(false) };
        let want = cpu_config(new, resolved);
        let same = old.cfg.plan.groups == want.plan.groups
            && old.cfg.backend == want.backend
            && old.cfg.pin == want.pin
            && old.cfg.priority == want.priority;
        if same {
            tracing::info!("reload: the PoW workers' plan is unchanged; they keep running");
            return Ok(false);
        }
        tracing::info!(
            "reload: restarting the PoW workers: {} → {} workers, path {}, priority {}",
            old.cfg.plan.worker_count(),
            want.plan.worker_count(),
            want.backend.name(),
            want.priority
        );
        if let Some(old) = self.cpu.take() {
            old.stop.store(true, Ordering::Relaxed);
            old.engine.join();
        }
        let workers = start_cpu(want, &self.sched, &self.stats, &self.metrics).map_err(|e| e.to_string())?;
        self.cpu = Some(workers);
        Ok(true)
    }

    /// Replaces the node adapter: the old one is stopped with its work
    /// withdrawn, so the shares found for its jobs still reach it (and its
    /// pool), and only then does the new one start.
    fn apply_adapter(&mut self, new: &RuntimeConfig) -> Result<(), String> {
        tracing::info!("reload: node adapter changed; handing on the old one's shares, then switching");
        if let Some(old) = self.adapter.take() {
            if let Err(e) = old.stop(Some(&self.sched)) {
                tracing::warn!("the old node adapter ended with: {e}");
            }
        }
        let a = start_adapter(new, &self.sched, &self.hits, &self.stats, &self.metrics, &self.done, None)
            .map_err(|e| e.to_string())?;
        self.adapter = Some(a);
        Ok(())
    }

    fn restart_feed(&mut self) -> Result<(), String> {
        if let Some(f) = self.feed.take() {
            f.stop.store(true, Ordering::Relaxed);
            let _ = f.thread.join();
        }
        self.feed = start_feed(&self.cfg, &self.sig_engine).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The listening sockets to hand a successor, by name.
    pub fn handover_fds(&self) -> std::io::Result<Vec<(&'static str, std::os::fd::OwnedFd)>> {
        let mut out = Vec::new();
        if let Some(s) = &self.sigserve {
            out.push((listeners::SIGSERVE, s.listener_dup()?));
        }
        if let Some(m) = &self.metrics_server {
            out.push((listeners::METRICS, m.listener_dup()?.into()));
        }
        Ok(out)
    }

    /// Stops every part in order and logs the summary; the adapter's error
    /// if it gave up on its own.
    pub fn stop(mut self, mode: StopMode) -> Result<(), RuntimeError> {
        // Not ready from the first step of any stop (already, after a drain).
        self.metrics.probes.begin_drain();
        let mut sigserve = self.sigserve.take();
        if mode == StopMode::Handover {
            // Clients move to the successor at once; what was read here is
            // answered here.
            if let Some(s) = sigserve.take() {
                let st = s.shared_stats();
                s.shutdown_handed_over();
                tracing::info!(
                    "sigserve: handed over; batches accepted {} answered {}",
                    st.batches_accepted.load(Ordering::Relaxed),
                    st.batches_answered.load(Ordering::Relaxed)
                );
            }
            self.metrics_server = None;
        }
        // Engines (no new hits), then the adapter drains the hits, then the
        // signature side answers what it accepted.
        if let Some(c) = self.cpu.take() {
            c.stop.store(true, Ordering::Relaxed);
            c.engine.join();
        }
        self.gpu_stop.store(true, Ordering::Relaxed);
        join_gpus(std::mem::take(&mut self.gpus));
        let adapter_result = match self.adapter.take() {
            Some(a) => a.stop(None).map_err(RuntimeError::Adapter),
            None => Ok(()),
        };
        if let Some(f) = self.feed.take() {
            f.stop.store(true, Ordering::Relaxed);
            let _ = f.thread.join();
        }
        let sig_summary = sigserve.map(|s| {
            let st = s.shared_stats();
            s.shutdown();
            (st.batches_accepted.load(Ordering::Relaxed), st.batches_answered.load(Ordering::Relaxed))
        });
        self.status_stop.store(true, Ordering::Relaxed);
        let _ = self.status.join();
        self.stats.sample();
        let sig_line = match sig_summary {
            Some((accepted, answered)) => format!(" | sigserve batches accepted {accepted} answered {answered}"),
            None => String::new(),
        };
        if self.cfg.mine {
            tracing::info!("stopped: {}{sig_line}", status_line(&self.stats, &self.metrics));
        } else {
            tracing::info!("stopped{sig_line}");
        }
        adapter_result
    }
}

/// The CPU workers' rate from the start-up timing of the hashing path (one
/// core's rate × the workers).
fn cpu_rate_at_start(resolved: &Resolved) -> f64 {
    let rates = &crate::pow::selection().rates;
    let per_core = rates.iter().find(|r| r.backend == resolved.backend).map_or(0.0, |r| r.hashes_per_sec);
    per_core * resolved.plan.worker_count() as f64
}

fn cpu_config(cfg: &RuntimeConfig, resolved: &Resolved) -> CpuConfig {
    CpuConfig {
        plan: resolved.plan.clone(),
        backend: resolved.backend,
        chunk_time: crate::sched::cpu::DEFAULT_CHUNK_TIME,
        pin: cfg.cpu.pin,
        priority: cfg.cpu.priority,
    }
}

fn start_cpu(
    cfg: CpuConfig,
    sched: &Arc<PowScheduler>,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
) -> Result<CpuWorkers, RuntimeError> {
    let stop = Arc::new(AtomicBool::new(false));
    let engine = CpuEngine::start(cfg.clone(), sched.clone(), stats.clone(), metrics.clone(), stop.clone())
        .map_err(start_err("cpu"))?;
    Ok(CpuWorkers { engine, stop, cfg })
}

fn start_metrics(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
    metrics: &Arc<Metrics>,
) -> Result<MetricsServer, RuntimeError> {
    let s = match inherited {
        Some(l) => MetricsServer::serve(l, metrics.clone()),
        None => MetricsServer::start(addr, metrics.clone()),
    }
    .map_err(|e| RuntimeError::Start("metrics", format!("cannot serve on {addr}: {e}")))?;
    tracing::info!("metrics: http://{}/metrics", s.addr);
    Ok(s)
}

/// The demo feed runs on the embedded demo only; a real node's validator
/// talks to sigserve instead.
fn start_feed(cfg: &RuntimeConfig, engine: &SigEngine) -> Result<Option<Feed>, RuntimeError> {
    if !(matches!(cfg.adapter, Adapter::Demo) && cfg.sig_demo_rate > 0.0 && cfg.sig_demo_rate.is_finite()) {
        return Ok(None);
    }
    let p = sigfeed::FeedParams { rate: cfg.sig_demo_rate, ..sigfeed::FeedParams::default() };
    tracing::info!("sig: demo feed of {:.0} signatures/s (ed25519, ecdsa, schnorr; valid and invalid mixed)", p.rate);
    let stop = Arc::new(AtomicBool::new(false));
    let thread = sigfeed::spawn_feed(engine.clone(), p, Arc::new(sigfeed::FeedStats::default()), stop.clone())
        .map_err(start_err("sig demo feed"))?;
    Ok(Some(Feed { thread, stop }))
}

fn start_sigserve(
    s: &SigserveSettings,
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
        .map_err(|e| RuntimeError::Start("sigserve", format!("cannot serve signatures on {addr}: {e}")))?;
    if systemd {
        srv.leave_path_at_stop();
    }
    tracing::info!("sigserve: listening on {} ({guard}{handed})", srv.local_addr());
    Ok(srv)
}

fn start_adapter(
    cfg: &RuntimeConfig,
    sched: &Arc<PowScheduler>,
    hits: &Receiver<Hit>,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
    done: &Arc<AtomicBool>,
    first_rate: Option<f64>,
) -> Result<adapter::AdapterRun, RuntimeError> {
    let env = adapter::AdapterEnv {
        sched: sched.clone(),
        hits: hits.clone(),
        stats: stats.clone(),
        metrics: metrics.clone(),
        done: done.clone(),
        first_rate,
    };
    adapter::AdapterRun::start(cfg.adapter.clone(), cfg.demo.clone(), env).map_err(start_err("node adapter"))
}

fn spawn_status(
    cfg: &RuntimeConfig,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
    sig_engine: &SigEngine,
    stop: &Arc<AtomicBool>,
    every: &Arc<AtomicU64>,
) -> Result<JoinHandle<()>, RuntimeError> {
    let mut sig_rate = RateMeter::new(sig_engine.clone());
    let (stats, metrics, stop, every) = (stats.clone(), metrics.clone(), stop.clone(), every.clone());
    let no_mine = !cfg.mine;
    std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            let mut last = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                stats.sample();
                if last.elapsed() >= Duration::from_secs(every.load(Ordering::Relaxed)) {
                    last = Instant::now();
                    if no_mine {
                        tracing::info!("sig {}", sig_rate.line());
                    } else {
                        tracing::info!("{} | sig {}", status_line(&stats, &metrics), sig_rate.line());
                    }
                }
            }
        })
        .map_err(start_err("status thread"))
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

#[cfg(feature = "gpu")]
fn join_gpus(engines: GpuEngines) {
    for e in engines {
        e.join();
    }
}

#[cfg(not(feature = "gpu"))]
fn join_gpus(_: GpuEngines) {}
