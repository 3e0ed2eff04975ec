//! The runtime behind `hashrig run`: starts the engines (CPU and GPU), the
//! node adapter, sigserve, the metrics listener, the demo feed and the GPU
//! health monitor with its thermal guard from one validated
//! [`RuntimeConfig`], applies a new config's live part
//! ([`Runtime::reload`]), hands its listening sockets to a successor
//! ([`upgrade`]) and stops in order.
//!
//! - `config`: the config value (fixed at start, and live), its validation,
//!   and what a reload changes;
//! - `start`, `reload`, `status`: starting every part, applying a reload,
//!   the status line;
//! - `gpus` and `health`: the PoW GPU engines, GPU health and the thermal guard;
//! - `file`: the runtime's keys of the config file;
//! - `adapter`: the node adapter's thread, stopped and replaced;
//! - `worker`: one thread and its stop flag, as every part holds them;
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
pub mod gpus;
mod health;
pub mod listeners;
mod reload;
pub mod signals;
mod start;
mod status;
pub mod supervise;
pub mod upgrade;
pub mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::metrics::{Metrics, MetricsServer};
use crate::node::sigserve::SigServer;
use crate::sched::{CpuConfig, CpuEngine, Hit, PowScheduler, SigEngine, Stats};
use crate::topo::Topology;

pub use adapter::{AdapterError, ADAPTER_STOP_DEADLINE};
pub use config::{
    diff, Changes, ConfigInvalid, CpuSettings, Fixed, Live, Mining, Resolved, RuntimeConfig, SigserveListen,
    DEFAULT_DRAIN, MAX_DRAIN,
};
pub use gpus::{GpuDevices, GpuEngines, GpuTune};
pub use listeners::Inherited;

/// An error with its causes, boxed (the runtime's parts fail in their own types).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub type SetLogFilter = Box<dyn Fn(Option<&str>) -> Result<(), BoxError> + Send>;

/// What the caller brings: the process's log filter (the library does not
/// own the process's logging).
#[derive(Default)]
pub struct Hooks {
    /// Sets the log filter (None: back to the start-up one).
    pub set_log_filter: Option<SetLogFilter>,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigInvalid),
    /// A part did not start: which, and why.
    #[error("{what}")]
    Start {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("node adapter")]
    Adapter(#[source] AdapterError),
    #[error(
        "the old node adapter is still stopping ({0:?} after it was asked to); no other starts beside it: \
         reload again once it has stopped"
    )]
    AdapterStopping(Duration),
    #[error("log_level")]
    LogFilter(#[source] BoxError),
    #[error("log_level: this process cannot change its log filter")]
    NoLogFilter,
}

impl RuntimeError {
    pub(crate) fn start(what: impl Into<String>, e: impl Into<BoxError>) -> RuntimeError {
        RuntimeError::Start { what: what.into(), source: e.into() }
    }
}

/// An error and its causes on one line, as logs show them.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
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

impl CpuWorkers {
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.engine.join();
    }
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
    feed: Option<worker::Worker>,
    sigserve: Option<SigServer>,
    adapter: Option<adapter::AdapterRun>,
    /// An adapter replaced by a reload that had not stopped by its
    /// deadline: owned until it ends; no new one starts meanwhile.
    stopping_adapter: Option<adapter::AdapterRun>,
    adapters: Arc<adapter::AdapterCount>,
    adapter_deadline: Duration,
    health: Option<health::HealthRun>,
    status: worker::Worker,
    status_every: Arc<AtomicU64>,
    set_log_filter: Option<SetLogFilter>,
    /// What the engines and the health monitor on each adapter share.
    shares: crate::gpu::AdapterShares,
}

impl Runtime {
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
        match &self.sigserve {
            Some(_) => self.cfg.live.sigserve_drain,
            None => Duration::ZERO,
        }
    }

    /// Where sigserve and /metrics listen (after binding port 0).
    pub fn sigserve_addr(&self) -> Option<&crate::node::sigserve::ServeAddr> {
        self.sigserve.as_ref().map(|s| s.local_addr())
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_server.as_ref().map(|m| m.addr)
    }

    /// How many PoW GPU engines run.
    pub fn gpu_engines(&self) -> usize {
        self.gpus.len()
    }

    /// Node adapter threads running now, and the most that ever ran at once.
    #[doc(hidden)]
    pub fn adapter_threads(&self) -> (usize, usize) {
        (self.adapters.running(), self.adapters.most_at_once())
    }

    /// How long a replaced or stopped adapter has to end
    /// ([`ADAPTER_STOP_DEADLINE`] unless set; tests shorten it).
    #[doc(hidden)]
    pub fn set_adapter_stop_deadline(&mut self, d: Duration) {
        self.adapter_deadline = d;
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
            c.stop();
        }
        self.gpu_stop.store(true, Ordering::Relaxed);
        gpus::join(std::mem::take(&mut self.gpus));
        let adapter_result = self.stop_adapters();
        if let Some(f) = self.feed.take() {
            let _ = f.stop();
        }
        let sig_summary = sigserve.map(|s| {
            let st = s.shared_stats();
            s.shutdown();
            (st.batches_accepted.load(Ordering::Relaxed), st.batches_answered.load(Ordering::Relaxed))
        });
        let _ = self.status.stop();
        if let Some(h) = self.health.take() {
            h.stop();
        }
        self.stats.sample();
        let sig_line = match sig_summary {
            Some((accepted, answered)) => format!(" | sigserve batches accepted {accepted} answered {answered}"),
            None => String::new(),
        };
        if self.cfg.fixed.mining.on() {
            tracing::info!("stopped: {}{sig_line}", status::status_line(&self.stats, &self.metrics));
        } else {
            tracing::info!("stopped{sig_line}");
        }
        adapter_result
    }

    /// The adapter (and one still stopping after a reload), each given the
    /// deadline. One that outlives it is left to the process's exit, which
    /// follows: the runtime has stopped the engines it could publish to.
    fn stop_adapters(&mut self) -> Result<(), RuntimeError> {
        let mut result = Ok(());
        for (a, current) in [(self.stopping_adapter.take(), false), (self.adapter.take(), true)] {
            let Some(a) = a else { continue };
            match a.stop(None, self.adapter_deadline) {
                adapter::Stopped::Ended(Err(e)) if current => result = Err(RuntimeError::Adapter(e)),
                adapter::Stopped::Ended(_) => {}
                adapter::Stopped::Late(_) => tracing::error!(
                    "the node adapter did not stop within {:?}; going on without it",
                    self.adapter_deadline
                ),
            }
        }
        result
    }
}
