//! What a [`Runtime`](super::Runtime) runs: one validated value built from
//! the command line and the config file, and the comparison of two of them
//! that a reload applies (what changed live, what needs a restart).

use std::net::SocketAddr;
use std::time::Duration;

use super::gpus::{GpuDevices, GpuTune};
use crate::health::monitor::GuardConfig;
use crate::health::SensorSource;
use crate::node::config::Adapter;
use crate::node::demo::DemoParams;
use crate::node::sigserve::{ServeAddr, ServerTls};
use crate::pow::Backend;
use crate::sched::sig::{EngineChoice, GpuSelection};
use crate::topo::{PinPlan, PlanOptions, Topology, WorkerPriority};

/// Everything `hashrig run` is told, in two parts: what is fixed at start
/// and what a reload changes ([`Runtime::reload`](super::Runtime::reload)
/// takes only the live part). [`RuntimeConfig::validate`] checks it whole
/// before anything starts or changes.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct RuntimeConfig {
    pub fixed: Fixed,
    pub live: Live,
}

/// Read once, at start: a change needs a restart (or a live upgrade, which
/// is one). [`Fixed::changed_keys`] names the ones that differ.
#[derive(Clone, Debug, PartialEq)]
pub struct Fixed {
    /// Whether and on what to hash.
    pub mining: Mining,
    /// Which engines verify signatures; with a GPU among them the GPU
    /// signature engines start on [`Fixed::gpus`] (the CPU answers until they
    /// are warm).
    pub sig_engines: EngineChoice,
    /// The adapters GPU engines (PoW and signatures) may use.
    pub gpus: GpuDevices,
    /// The embedded demo chain's settings (when no pool or node is set).
    pub demo: DemoParams,
    /// sigserve's address and TLS (its drain period is live).
    pub sigserve: Option<SigserveListen>,
    /// Where GPU health (and the thermal guard's temperatures) comes from.
    pub sensor: SensorSource,
}

/// What a reload applies while the run goes on.
#[derive(Clone, Debug, PartialEq)]
pub struct Live {
    /// The PoW workers' plan inputs: a change restarts them (the signature
    /// pools keep the plan they started with).
    pub cpu: CpuSettings,
    /// The /metrics listener (None: not served).
    pub metrics: Option<SocketAddr>,
    pub status_interval: Duration,
    /// Signatures per second of the demo feed (0: none); demo chain only.
    pub sig_demo_rate: f64,
    /// Pools, `[stratum]` or `[node]`: a change replaces the adapter.
    pub adapter: Adapter,
    /// A tracing filter ("info", "hashrig=debug,warn"); None: `HASHRIG_LOG`
    /// or "info".
    pub log_level: Option<String>,
    /// On SIGTERM: how long `/readyz` answers 503 while sigserve still
    /// serves, before the stop (read at the stop).
    pub sigserve_drain: Duration,
    /// The thermal guard's limit and gap (off without a limit).
    pub thermal: GuardConfig,
}

/// Whether and on what to hash: only the combinations that mean something.
#[derive(Clone, Debug, PartialEq)]
pub enum Mining {
    /// `--no-mine`: no PoW engine and no node adapter, signatures only.
    Off,
    Cpu,
    /// GPUs only; the CPU mines when no GPU is usable.
    Gpu(GpuTune),
    CpuAndGpu(GpuTune),
}

impl Mining {
    pub fn on(&self) -> bool {
        *self != Mining::Off
    }

    /// The GPU tune, when GPUs mine.
    pub fn gpu(&self) -> Option<&GpuTune> {
        match self {
            Mining::Gpu(t) | Mining::CpuAndGpu(t) => Some(t),
            Mining::Off | Mining::Cpu => None,
        }
    }

    /// The CPU mines; with [`Mining::Gpu`] only when no GPU engine started.
    pub fn cpu(&self, gpus_started: bool) -> bool {
        match self {
            Mining::Off => false,
            Mining::Cpu | Mining::CpuAndGpu(_) => true,
            Mining::Gpu(_) => !gpus_started,
        }
    }
}

/// sigserve's listening side (its drain period is in [`Live`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SigserveListen {
    pub addr: ServeAddr,
    pub tls: Option<ServerTls>,
}

impl Fixed {
    /// The GPU signature engines to start, derived from the engines and
    /// the adapters allowed; `None`: signatures on the CPU only.
    pub fn sig_gpu(&self) -> Option<GpuSelection> {
        (self.sig_engines != EngineChoice::Cpu).then(|| GpuSelection {
            allow_software: self.gpus.allow_software,
            devices: self.gpus.devices.clone(),
            ..GpuSelection::default()
        })
    }

    /// The keys that differ from `new`'s, as the log names them. Every
    /// field is listed here: a new one does not compile until it is.
    pub fn changed_keys(&self, new: &Fixed) -> Vec<&'static str> {
        let Fixed { mining, sig_engines, gpus, demo, sigserve, sensor } = self;
        let mut keys = Vec::new();
        if mining.on() != new.mining.on() {
            keys.push("no_mine");
        } else if std::mem::discriminant(mining) != std::mem::discriminant(&new.mining) {
            keys.push("engines");
        } else if *mining != new.mining {
            keys.push("gpu_tune");
        }
        if *sig_engines != new.sig_engines {
            keys.push("sig_engines");
        }
        if *gpus != new.gpus {
            keys.push("gpu_devices");
        }
        if *demo != new.demo {
            keys.push("demo");
        }
        if sigserve.as_ref().map(|s| &s.addr) != new.sigserve.as_ref().map(|s| &s.addr) {
            keys.push("sigserve.addr");
        }
        if sigserve.as_ref().and_then(|s| s.tls.as_ref()) != new.sigserve.as_ref().and_then(|s| s.tls.as_ref()) {
            keys.push("sigserve.tls");
        }
        if *sensor != new.sensor {
            keys.push("gpu health sensor");
        }
        keys
    }
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
    /// Checks every value (plan, backend, durations, filter, TLS files,
    /// thermal limits) against this machine, without starting anything.
    pub fn validate(&self, topo: &Topology) -> Result<Resolved, ConfigInvalid> {
        let bad = |s: String| ConfigInvalid(s);
        let (f, l) = (&self.fixed, &self.live);
        let plan = PinPlan::build(topo, &l.cpu.plan_options()).map_err(|e| bad(format!("cpu: {e}")))?;
        let backend = match l.cpu.backend {
            None => crate::pow::detect(),
            Some(b) if crate::pow::available().contains(&b) => b,
            Some(b) => {
                let list = crate::pow::available().iter().map(|b| b.name()).collect::<Vec<_>>().join(", ");
                return Err(bad(format!("backend {} is not available on this CPU (available: {list})", b.name())));
            }
        };
        if !(l.sig_demo_rate >= 0.0 && l.sig_demo_rate.is_finite()) {
            return Err(bad(format!("sig demo rate must be zero or a positive number, got {}", l.sig_demo_rate)));
        }
        if f.demo.initial_difficulty.is_some_and(|d| !(d > 0.0 && d.is_finite())) {
            return Err(bad("the demo difficulty must be a positive number".into()));
        }
        if !(f.demo.share_rate > 0.0 && f.demo.share_rate.is_finite()) || f.demo.retarget.is_zero() {
            return Err(bad("the demo's share rate and retarget window must be positive".into()));
        }
        if l.status_interval.is_zero() {
            return Err(bad("the status interval must be at least one second".into()));
        }
        if let Some(lv) = &l.log_level {
            tracing_subscriber::EnvFilter::try_new(lv).map_err(|e| bad(format!("log_level {lv:?}: {e}")))?;
        }
        if l.sigserve_drain > MAX_DRAIN {
            return Err(bad(format!("sigserve drain_secs: at most {} s", MAX_DRAIN.as_secs())));
        }
        if let Some(s) = &f.sigserve {
            if let Some(t) = &s.tls {
                if matches!(s.addr, ServeAddr::Unix(_)) {
                    return Err(bad("sigserve: TLS is for TCP addresses".into()));
                }
                t.config().map_err(|e| bad(format!("sigserve TLS: {e}")))?;
            }
        }
        if let Some(t) = l.thermal.temp_limit {
            if !(t.is_finite() && (30.0..=120.0).contains(&t)) {
                return Err(bad(format!("--gpu-temp-limit must be between 30 and 120 °C, got {t}")));
            }
        }
        let h = l.thermal.hysteresis;
        if !(h.is_finite() && (0.0..=30.0).contains(&h)) {
            return Err(bad(format!("--gpu-temp-hysteresis must be 0..30 °C, got {h}")));
        }
        if let Some(GpuTune::Fixed { workgroup, nonces_per_thread }) = f.mining.gpu() {
            if *workgroup == 0 || *nonces_per_thread == 0 {
                return Err(bad("--gpu-tune: the workgroup and the nonces per thread must be positive".into()));
            }
        }
        match &l.adapter {
            Adapter::Pool(c) => c.validate().map_err(|e| bad(e.to_string()))?,
            Adapter::Solo(_) | Adapter::Demo => {}
        }
        if !f.mining.on() && !matches!(l.adapter, Adapter::Demo) {
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
    /// `[sigserve] drain_secs` (read at the stop; only with sigserve).
    pub sigserve_drain: bool,
    /// The thermal guard's limit or gap.
    pub thermal: bool,
    /// Keys that changed and take effect only after a restart (or a live
    /// upgrade, which is one).
    pub need_restart: Vec<&'static str>,
}

impl Changes {
    pub fn none(&self) -> bool {
        *self == Changes::default()
    }
}

impl Live {
    /// What applying `new` over `self` changes. Every field is listed here:
    /// a new one does not compile until it is. `sigserve`: whether sigserve
    /// runs (its drain period means nothing without it).
    pub fn changes(&self, new: &Live, sigserve: bool) -> Changes {
        let Live { cpu, metrics, status_interval, sig_demo_rate, adapter, log_level, sigserve_drain, thermal } = self;
        let mut need_restart = Vec::new();
        // The signature pools are sized from the plan once, at start.
        let plan_inputs = |c: &CpuSettings| (c.threads, c.smt, c.numa_nodes.clone(), c.pin);
        if plan_inputs(cpu) != plan_inputs(&new.cpu) {
            need_restart.push("cpu (signature pools keep their threads)");
        }
        Changes {
            adapter: *adapter != new.adapter,
            cpu: *cpu != new.cpu,
            sig_demo_rate: *sig_demo_rate != new.sig_demo_rate,
            log_level: *log_level != new.log_level,
            metrics: *metrics != new.metrics,
            status_interval: *status_interval != new.status_interval,
            sigserve_drain: sigserve && *sigserve_drain != new.sigserve_drain,
            thermal: *thermal != new.thermal,
            need_restart,
        }
    }
}

/// Compares the running config with a new one: the live changes, and the
/// fixed keys that need a restart.
pub fn diff(old: &RuntimeConfig, new: &RuntimeConfig) -> Changes {
    let both_serve = old.fixed.sigserve.is_some() && new.fixed.sigserve.is_some();
    let mut c = old.live.changes(&new.live, both_serve);
    let mut restart = old.fixed.changed_keys(&new.fixed);
    restart.append(&mut c.need_restart);
    c.need_restart = restart;
    c
}

impl Default for Fixed {
    /// `hashrig run` with no flags: every engine, the demo chain, NVML.
    fn default() -> Self {
        Fixed {
            mining: Mining::CpuAndGpu(GpuTune::default()),
            sig_engines: EngineChoice::Auto,
            gpus: GpuDevices::default(),
            demo: DemoParams::default(),
            sigserve: None,
            sensor: SensorSource::Nvml,
        }
    }
}

impl Default for Live {
    /// `hashrig run` with no flags: metrics on loopback, the demo feed, no
    /// thermal guard.
    fn default() -> Self {
        Live {
            cpu: CpuSettings { pin: true, ..CpuSettings::default() },
            metrics: Some(SocketAddr::from(([127, 0, 0, 1], crate::metrics::DEFAULT_METRICS_PORT))),
            status_interval: Duration::from_secs(10),
            sig_demo_rate: 2000.0,
            adapter: Adapter::Demo,
            log_level: None,
            sigserve_drain: DEFAULT_DRAIN,
            thermal: GuardConfig { temp_limit: None, hysteresis: crate::health::guard::DEFAULT_HYSTERESIS },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_live(a: &RuntimeConfig, f: impl FnOnce(&mut Live)) -> RuntimeConfig {
        let mut b = a.clone();
        f(&mut b.live);
        b
    }

    fn serving(a: &RuntimeConfig) -> RuntimeConfig {
        let mut c = a.clone();
        c.fixed.sigserve = Some(SigserveListen { addr: "unix:/x".parse().unwrap(), tls: None });
        c
    }

    #[test]
    fn diff_names_what_changed() {
        let a = RuntimeConfig::default();
        assert!(diff(&a, &a).none());
        let b = with_live(&a, |l| l.cpu.threads = Some(3));
        let d = diff(&a, &b);
        assert!(d.cpu && !d.adapter);
        assert_eq!(d.need_restart, vec!["cpu (signature pools keep their threads)"]);
        let c = serving(&a);
        assert_eq!(diff(&a, &c).need_restart, vec!["sigserve.addr"]);
        let p = with_live(&a, |l| l.cpu.priority = WorkerPriority::Normal);
        let d = diff(&a, &p);
        assert!(d.cpu && d.need_restart.is_empty(), "priority is live");
        let e = with_live(&c, |l| l.sigserve_drain = Duration::from_secs(9));
        let d = diff(&c, &e);
        assert!(d.sigserve_drain && d.need_restart.is_empty(), "the drain period is live: {d:?}");
        assert!(!diff(&a, &with_live(&a, |l| l.sigserve_drain = Duration::from_secs(9))).sigserve_drain);
        let m = with_live(&a, |l| {
            l.metrics = None;
            l.sig_demo_rate = 5.0;
        });
        let d = diff(&a, &m);
        assert!(d.metrics && d.sig_demo_rate && d.need_restart.is_empty());
        let t = with_live(&a, |l| l.thermal.temp_limit = Some(80.0));
        let d = diff(&a, &t);
        assert!(d.thermal && d.need_restart.is_empty(), "the thermal limit is live");
    }

    #[test]
    fn fixed_keys_are_named() {
        let a = Fixed::default();
        assert!(a.changed_keys(&a).is_empty());
        let off = Fixed { mining: Mining::Off, ..a.clone() };
        assert_eq!(a.changed_keys(&off), ["no_mine"]);
        let cpu = Fixed { mining: Mining::Cpu, ..a.clone() };
        assert_eq!(a.changed_keys(&cpu), ["engines"]);
        let tuned = Fixed { mining: Mining::CpuAndGpu(GpuTune::Auto { retune: true }), ..a.clone() };
        assert_eq!(a.changed_keys(&tuned), ["gpu_tune"]);
        let sig = Fixed { sig_engines: EngineChoice::Cpu, ..a.clone() };
        assert_eq!(a.changed_keys(&sig), ["sig_engines"]);
        assert_eq!(sig.sig_gpu(), None);
        let soft = Fixed { gpus: GpuDevices { allow_software: true, devices: Some(vec![1]) }, ..a.clone() };
        assert_eq!(a.changed_keys(&soft), ["gpu_devices"]);
        let s = soft.sig_gpu().expect("the GPUs verify signatures by default");
        assert!(s.allow_software && s.devices == Some(vec![1]), "derived from the devices: {s:?}");
    }

    #[test]
    fn validation_refuses_bad_values() {
        let topo = Topology::fallback(2);
        let ok = RuntimeConfig::default();
        assert!(ok.validate(&topo).is_ok());
        let bad = with_live(&ok, |l| l.sig_demo_rate = f64::NAN);
        assert!(bad.validate(&topo).is_err());
        let bad = with_live(&serving(&ok), |l| l.sigserve_drain = MAX_DRAIN * 2);
        assert!(bad.validate(&topo).unwrap_err().to_string().contains("drain_secs"));
        let mut bad = ok.clone();
        bad.fixed.demo = DemoParams { initial_difficulty: Some(0.0), ..DemoParams::default() };
        assert!(bad.validate(&topo).is_err());
        bad.fixed.demo = DemoParams { share_rate: f64::INFINITY, ..DemoParams::default() };
        assert!(bad.validate(&topo).is_err());
        let bad = with_live(&ok, |l| l.log_level = Some("[[[".into()));
        assert!(bad.validate(&topo).is_err());
        let bad = with_live(&ok, |l| l.cpu.numa_nodes = Some(vec![77]));
        assert!(bad.validate(&topo).is_err());
        let bad = with_live(&ok, |l| l.thermal.temp_limit = Some(200.0));
        assert!(bad.validate(&topo).unwrap_err().to_string().contains("--gpu-temp-limit"));
        let bad = with_live(&ok, |l| l.thermal.hysteresis = -1.0);
        assert!(bad.validate(&topo).unwrap_err().to_string().contains("--gpu-temp-hysteresis"));
        let mut bad = ok.clone();
        bad.fixed.mining = Mining::Gpu(GpuTune::Fixed { workgroup: 0, nonces_per_thread: 64 });
        assert!(bad.validate(&topo).unwrap_err().to_string().contains("--gpu-tune"));
    }
}
