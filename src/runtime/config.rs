//! What a [`Runtime`](super::Runtime) runs: one validated value built from
//! the command line and the config file, and the comparison of two of them
//! that a reload applies (what changed live, what needs a restart).

use std::net::SocketAddr;
use std::time::Duration;

use crate::node::config::Adapter;
use crate::node::demo::DemoParams;
use crate::node::sigserve::{ServeAddr, ServerTls};
use crate::pow::Backend;
use crate::sched::sig::EngineChoice;
use crate::topo::{PinPlan, PlanOptions, Topology, WorkerPriority};

/// Everything `hashrig run` is told; [`RuntimeConfig::validate`] checks it
/// whole before anything starts or changes.
#[derive(Clone, Debug, PartialEq)]
pub struct RuntimeConfig {
    /// Hash at all (false: `--no-mine`, signatures only).
    pub mine: bool,
    /// PoW engines asked for.
    pub cpu_mining: bool,
    pub gpu_mining: bool,
    /// Which engines verify signatures.
    pub sig_engines: EngineChoice,
    /// The GPU signature engines to start (the CPU answers until they are
    /// warm); `None`: signatures on the CPU only.
    pub sig_gpu: Option<crate::sched::sig::GpuSelection>,
    pub cpu: CpuSettings,
    /// The /metrics listener (None: not served).
    pub metrics: Option<SocketAddr>,
    pub status_interval: Duration,
    /// The embedded demo chain's settings (when no pool or node is set).
    pub demo: DemoParams,
    pub sigserve: Option<SigserveSettings>,
    /// Signatures per second of the demo feed (0: none); demo chain only.
    pub sig_demo_rate: f64,
    pub adapter: Adapter,
    /// A tracing filter ("info", "hashrig=debug,warn"); None: `HASHRIG_LOG`
    /// or "info".
    pub log_level: Option<String>,
}

/// The PoW workers' plan inputs: a change restarts them.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct CpuSettings {
    pub threads: Option<usize>,
    pub smt: bool,
    pub numa_nodes: Option<Vec<u32>>,
    pub pin: bool,
    /// None: the fastest path here.
    pub backend: Option<Backend>,
    pub priority: WorkerPriority,
}

impl CpuSettings {
    pub fn plan_options(&self) -> PlanOptions {
        PlanOptions { threads: self.threads, smt: self.smt, nodes: self.numa_nodes.clone() }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SigserveSettings {
    pub addr: ServeAddr,
    pub tls: Option<ServerTls>,
    /// On SIGTERM: how long `/readyz` answers 503 while sigserve still
    /// serves, before the stop (live).
    pub drain: Duration,
}

/// The default drain period: longer than a load balancer's checks take to
/// notice a 503 with the shipped settings (HAProxy: 2 checks 1 s apart;
/// Kubernetes: one failed probe 2 s apart, then the endpoint update).
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);

/// The longest drain accepted: systemd's default stop timeout is 90 s.
pub const MAX_DRAIN: Duration = Duration::from_secs(60);

/// A config that failed validation; the message says which key and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigInvalid(pub String);

/// What validation derives: the pinning plan and the hashing path.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub plan: PinPlan,
    pub backend: Backend,
}

impl RuntimeConfig {
    /// Checks every value (plan, backend, durations, filter, TLS files)
    /// against this machine, without starting anything.
    pub fn validate(&self, topo: &Topology) -> Result<Resolved, ConfigInvalid> {
        let bad = |s: String| ConfigInvalid(s);
        let plan = PinPlan::build(topo, &self.cpu.plan_options()).map_err(|e| bad(format!("cpu: {e}")))?;
        let backend = match self.cpu.backend {
            None => crate::pow::detect(),
            Some(b) if crate::pow::available().contains(&b) => b,
            Some(b) => {
                let list = crate::pow::available().iter().map(|b| b.name()).collect::<Vec<_>>().join(", ");
                return Err(bad(format!("backend {} is not available on this CPU (available: {list})", b.name())));
            }
        };
        if !(self.sig_demo_rate >= 0.0 && self.sig_demo_rate.is_finite()) {
            return Err(bad(format!("sig demo rate must be zero or a positive number, got {}", self.sig_demo_rate)));
        }
        if self.demo.initial_difficulty.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
            return Err(bad("the demo difficulty must be a positive number".into()));
        }
        if !(self.demo.share_rate > 0.0 && self.demo.share_rate.is_finite()) || self.demo.retarget.is_zero() {
            return Err(bad("the demo's share rate and retarget window must be positive".into()));
        }
        if self.status_interval.is_zero() {
            return Err(bad("the status interval must be at least one second".into()));
        }
        if let Some(l) = &self.log_level {
            tracing_subscriber::EnvFilter::try_new(l).map_err(|e| bad(format!("log_level {l:?}: {e}")))?;
        }
        if let Some(s) = &self.sigserve {
            if s.drain > MAX_DRAIN {
                return Err(bad(format!("sigserve drain_secs: at most {} s", MAX_DRAIN.as_secs())));
            }
            if let Some(t) = &s.tls {
                if matches!(s.addr, ServeAddr::Unix(_)) {
                    return Err(bad("sigserve: TLS is for TCP addresses".into()));
                }
                t.config().map_err(|e| bad(format!("sigserve TLS: {e}")))?;
            }
        }
        match &self.adapter {
            Adapter::Pool(c) => c.validate().map_err(|e| bad(e.to_string()))?,
            Adapter::Solo(_) | Adapter::Demo => {}
        }
        if !self.mine && !matches!(self.adapter, Adapter::Demo) {
            return Err(bad(
                "--no-mine runs no node adapter: leave out --pool, --node and the config's pool/node sections".into(),
            ));
        }
        Ok(Resolved { plan, backend })
    }
}

/// What a reload changes, key by key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Pools, `[stratum]` or `[node]`: the adapter is replaced.
    pub adapter: bool,
    /// The PoW workers' plan, path or priority: they are restarted.
    pub cpu: bool,
    pub sig_demo_rate: bool,
    pub log_level: bool,
    pub metrics: bool,
    pub status_interval: bool,
    /// `[sigserve] drain_secs` (read at the stop).
    pub sigserve_drain: bool,
    /// Keys that changed and take effect only after a restart (or a live
    /// upgrade, which is one).
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    pub fn none(&self) -> bool {
        *self == Changes::default()
    }
}

/// Compares the running config with a new one.
pub fn diff(old: &RuntimeConfig, new: &RuntimeConfig) -> Changes {
    let mut restart = Vec::new();
    let mut need = |changed: bool, key: &'static str| {
        if changed {
            restart.push(key);
        }
    };
    need(old.mine != new.mine, "no_mine");
    need(old.cpu_mining != new.cpu_mining || old.gpu_mining != new.gpu_mining, "engines");
    need(old.sig_engines != new.sig_engines || old.sig_gpu != new.sig_gpu, "sig_engines");
    need(old.demo != new.demo, "demo");
    need(old.sigserve.as_ref().map(|s| &s.addr) != new.sigserve.as_ref().map(|s| &s.addr), "sigserve.addr");
    let tls = |c: &RuntimeConfig| c.sigserve.as_ref().and_then(|s| s.tls.clone());
    need(tls(old) != tls(new), "sigserve.tls");
    // The signature pools are sized from the plan once, at start.
    let plan_inputs = |c: &RuntimeConfig| (c.cpu.threads, c.cpu.smt, c.cpu.numa_nodes.clone(), c.cpu.pin);
    need(plan_inputs(old) != plan_inputs(new), "cpu (signature pools keep their threads)");
    Changes {
        adapter: old.adapter != new.adapter,
        cpu: old.cpu != new.cpu,
        sig_demo_rate: old.sig_demo_rate != new.sig_demo_rate,
        log_level: old.log_level != new.log_level,
        metrics: old.metrics != new.metrics,
        status_interval: old.status_interval != new.status_interval,
        sigserve_drain: old.sigserve.as_ref().map(|s| s.drain) != new.sigserve.as_ref().map(|s| s.drain)
            && old.sigserve.is_some()
            && new.sigserve.is_some(),
        need_restart: restart,
    }
}

impl Default for RuntimeConfig {
    /// The defaults of `hashrig run` with no flags: the demo chain, every
    /// engine, metrics on loopback.
    fn default() -> Self {
        RuntimeConfig {
            mine: true,
            cpu_mining: true,
            gpu_mining: true,
            sig_engines: EngineChoice::Auto,
            sig_gpu: Some(crate::sched::sig::GpuSelection::default()),
            cpu: CpuSettings { pin: true, ..CpuSettings::default() },
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], crate::metrics::DEFAULT_METRICS_PORT))),
            status_interval: Duration::from_secs(10),
            demo: DemoParams::default(),
            sigserve: None,
            sig_demo_rate: 2000.0,
            adapter: Adapter::Demo,
            log_level: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_what_changed() {
        let a = RuntimeConfig::default();
        assert!(diff(&a, &a).none());
        let b = RuntimeConfig { cpu: CpuSettings { threads: Some(3), ..a.cpu.clone() }, ..a.clone() };
        let d = diff(&a, &b);
        assert!(d.cpu && !d.adapter);
        assert_eq!(d.need_restart, vec!["cpu (signature pools keep their threads)"]);
        let c = RuntimeConfig {
            sigserve: Some(SigserveSettings { addr: "unix:/x".parse().unwrap(), tls: None, drain: DEFAULT_DRAIN }),
            ..a.clone()
        };
        assert_eq!(diff(&a, &c).need_restart, vec!["sigserve.addr"]);
        let p = RuntimeConfig { cpu: CpuSettings { priority: WorkerPriority::Normal, ..a.cpu.clone() }, ..a.clone() };
        let d = diff(&a, &p);
        assert!(d.cpu && d.need_restart.is_empty(), "priority is live");
        let mut e = c.clone();
        e.sigserve.as_mut().unwrap().drain = Duration::from_secs(9);
        let d = diff(&c, &e);
        assert!(d.sigserve_drain && d.need_restart.is_empty(), "the drain period is live: {d:?}");
        let m = RuntimeConfig { metrics: None, sig_demo_rate: 5.0, ..a.clone() };
        let d = diff(&a, &m);
        assert!(d.metrics && d.sig_demo_rate && d.need_restart.is_empty());
    }

    #[test]
    fn validation_refuses_bad_values() {
        let topo = Topology::fallback(2);
        let ok = RuntimeConfig::default();
        assert!(ok.validate(&topo).is_ok());
        let bad = RuntimeConfig { sig_demo_rate: f64::NAN, ..ok.clone() };
        assert!(bad.validate(&topo).is_err());
        let long = SigserveSettings { addr: "unix:/x".parse().unwrap(), tls: None, drain: MAX_DRAIN * 2 };
        let bad = RuntimeConfig { sigserve: Some(long), ..ok.clone() };
        assert!(bad.validate(&topo).unwrap_err().to_string().contains("drain_secs"));
        let demo = DemoParams { initial_difficulty: Some(0.0), ..DemoParams::default() };
        assert!(RuntimeConfig { demo, ..ok.clone() }.validate(&topo).is_err());
        let demo = DemoParams { share_rate: f64::INFINITY, ..DemoParams::default() };
        assert!(RuntimeConfig { demo, ..ok.clone() }.validate(&topo).is_err());
        let bad = RuntimeConfig { log_level: Some("[[[".into()), ..ok.clone() };
        assert!(bad.validate(&topo).is_err());
        let bad = RuntimeConfig { cpu: CpuSettings { numa_nodes: Some(vec![77]), ..ok.cpu.clone() }, ..ok.clone() };
        assert!(bad.validate(&topo).is_err());
    }
}
