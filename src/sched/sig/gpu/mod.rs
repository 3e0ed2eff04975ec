//! Signature checks on a GPU (or a simulated one) under the trust policy,
//! with the cost model the signature engine routes by
//! (docs/gpu-signatures.md). The device side (kernels, buffers, dispatch)
//! is `gpu::sig`; this is the policy side.
//!
//! **A GPU that never waits.** A job is booked on the engine's backlog the
//! moment it is queued ([`GpuSigEngine::submit`] does not block), so every
//! prediction sees what is ahead. The feeder thread takes every queued job
//! that fits in one dispatch (small jobs share one L0), places the
//! canaries, encodes (on the GPU's own host pool) and submits; up to the
//! device's ring size of dispatches are in flight. The completion thread
//! waits for each, checks the canaries, re-verifies what the policy asks
//! for on the host pool (all its threads, not the feeder's), learns the
//! model and answers each job through its callback.
//!
//! **Locality.** The feeder and the host pool (encoding and re-checks) run
//! on the NUMA node nearest the adapter's PCIe slot where hwloc knows it.
//!
//! **Stopping.** [`GpuSigEngine::shutdown`] answers what is queued, joins
//! both threads and gives the adapter back; dropping the engine does the
//! same, so no thread outlives it holding the device.

pub mod device;
pub mod equation;
pub mod model;
mod pipeline;
pub mod sim;
mod trust;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

pub use device::{DeviceError, DeviceInfo, SigDevice};
use model::Model;
pub use sim::{SimDevice, SimFaults, SimSpec};
use trust::Canaries;
pub use trust::TrustPolicy;

use crate::metrics::Metrics;
use crate::sig::{Scheme, SigItem, Verdict};
use crate::topo::NodeAffinity;

/// What the engine answered for one job.
#[derive(Clone, Debug)]
pub struct GpuAnswer {
    pub verdicts: Vec<Verdict>,
    /// Device time of the dispatch the job was in: submitted to readable.
    pub wall: Duration,
    /// This job's verdicts re-verified on the CPU (canaries not counted).
    pub rechecked: usize,
    /// The GPU disagreed with the CPU in this job's dispatch: these verdicts
    /// are all the CPU's, and the adapter is now off signature work.
    pub mismatch: bool,
}

/// Why a job was not verified on this GPU (the caller answers it on the CPU).
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refused {
    #[error("the adapter is off signature work: {0}")]
    Off(String),
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// When a batch would be answered on a GPU, in seconds: the fixed latency,
/// the work ahead of it (booked jobs and its canaries), and its own work.
#[derive(Clone, Copy, Debug)]
pub struct Prediction {
    pub l0: f64,
    pub ahead: f64,
    pub work: f64,
}

impl Prediction {
    pub fn total(&self) -> f64 {
        self.l0 + self.ahead + self.work
    }
}

/// Items, CPU re-checks and mismatches since start, for summaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuSigTotals {
    pub items: u64,
    pub rechecked: u64,
    pub mismatches: u64,
    pub dispatches: u64,
}

/// Called once with a job's answer, from the engine's completion thread.
pub type Reply = Box<dyn FnOnce(Result<GpuAnswer, Refused>) + Send + 'static>;

/// A queued job: a range of shared items (no copy), its booked work.
struct Job {
    items: Arc<Vec<SigItem>>,
    range: Range<usize>,
    booked_ns: u64,
    reply: Reply,
}

impl Job {
    fn items(&self) -> &[SigItem] {
        &self.items[self.range.clone()]
    }
}

struct Queue {
    jobs: VecDeque<Job>,
    closing: bool,
}

/// A dispatch between the feeder and the completion thread.
struct Flight {
    flight: Box<dyn device::InFlight>,
    jobs: Vec<Job>,
    /// (position in the dispatch, canary), positions ascending.
    canaries: Vec<(usize, usize)>,
    submitted: Instant,
    predicted: f64,
    _hold: Option<Box<dyn Send>>,
}

/// State shared by the engine handle and its two threads.
struct Shared {
    dev: Box<dyn SigDevice>,
    label: String,
    policy: TrustPolicy,
    active: AtomicBool,
    off_reason: Mutex<String>,
    dispatches: AtomicU64,
    items: AtomicU64,
    rechecked: AtomicU64,
    mismatches: AtomicU64,
    /// Predicted work (ns) of every job queued or in flight here.
    backlog_ns: AtomicU64,
    model: Mutex<Model>,
    canaries: Canaries,
    /// Items left in the warm-up (every verdict re-checked).
    warm_left: AtomicU64,
    /// Test hook: flip the verdict of every n-th item of a dispatch (0 = off).
    fault_every: AtomicU32,
    metrics: Option<Arc<Metrics>>,
    queue: Mutex<Queue>,
    more: Condvar,
    /// Encoding and re-checks, on the GPU's NUMA node (rayon's global pool
    /// when the node is unknown).
    host: Option<rayon::ThreadPool>,
    /// Items in one dispatch at most (canaries included).
    max_dispatch: usize,
}

pub struct GpuSigEngine {
    /// "gpu0", "gpu1", … (the adapter's enumeration index), "sim0" for a
    /// simulated device: the metric label.
    pub label: String,
    pub name: String,
    pub software: bool,
    /// A simulated device (`--simulate-gpu`): never reported as a GPU.
    pub simulated: bool,
    /// Threads of the host pool and the NUMA node they run on.
    pub host_threads: usize,
    pub host_node: Option<u32>,
    s: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl GpuSigEngine {
    /// Builds the kernels on `adapter` (slow: shader compilation), then
    /// [`with_device`](Self::with_device). `share` is the adapter's, held
    /// by the PoW engine on it too, which gives way to signature dispatches.
    #[cfg(feature = "gpu")]
    pub fn start(
        adapter: &crate::gpu::GpuAdapter,
        share: Arc<crate::gpu::AdapterShare>,
        policy: TrustPolicy,
        metrics: Option<Arc<Metrics>>,
        feeder: Option<NodeAffinity>,
    ) -> Result<Arc<GpuSigEngine>, DeviceError> {
        let dev = device::WgpuDevice::open(adapter, share)?;
        Self::with_device(Box::new(dev), policy, metrics, feeder)
    }

    /// A simulated device (`--simulate-gpu`), the `n`-th.
    pub fn simulated(
        spec: SimSpec,
        n: usize,
        policy: TrustPolicy,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<Arc<GpuSigEngine>, DeviceError> {
        Self::with_device(Box::new(SimDevice::new(spec, n)), policy, metrics, None)
    }

    /// Checks `dev` on every canary and measures L0 and the rate of each
    /// family, then starts the feeder and completion threads (on `feeder`'s
    /// NUMA node when given). A device that gets a canary wrong is refused.
    pub fn with_device(
        dev: Box<dyn SigDevice>,
        policy: TrustPolicy,
        metrics: Option<Arc<Metrics>>,
        feeder: Option<NodeAffinity>,
    ) -> Result<Arc<GpuSigEngine>, DeviceError> {
        let info = dev.info().clone();
        let label = info.label();
        let host = feeder.as_ref().and_then(|f| host_pool(f, &label));
        let max_dispatch = dev.max_items().min(1 << 18);
        let s = Arc::new(Shared {
            dev,
            label: label.clone(),
            active: AtomicBool::new(true),
            off_reason: Mutex::new(String::new()),
            dispatches: AtomicU64::new(0),
            items: AtomicU64::new(0),
            rechecked: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            backlog_ns: AtomicU64::new(0),
            model: Mutex::new(Model::default()),
            canaries: Canaries::new(),
            warm_left: AtomicU64::new(policy.warmup_items),
            policy,
            fault_every: AtomicU32::new(0),
            metrics,
            queue: Mutex::new(Queue { jobs: VecDeque::new(), closing: false }),
            more: Condvar::new(),
            host,
            max_dispatch,
        });
        s.calibrate(&info)?;
        s.dev.started();
        if let Some(m) = &s.metrics {
            m.sig_gpu.active.with_label_values(&[&label, &info.name]).set(1);
        }
        let (tx, rx) = crossbeam_channel::bounded::<Flight>(s.dev.max_in_flight().max(1));
        let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new().name(name).spawn(f).map_err(|e| DeviceError::Driver(format!("a thread: {e}")))
        };
        let (s1, f1) = (s.clone(), feeder.clone());
        let feed = spawn(
            format!("sig-{label}-feed"),
            Box::new(move || {
                if let Some(f) = &f1 {
                    crate::topo::pin_to_node_or_warn(f, &format!("{} signature feeder", s1.label));
                }
                s1.feed(tx)
            }),
        )?;
        let (s2, f2) = (s.clone(), feeder.clone());
        let done = spawn(
            format!("sig-{label}-done"),
            Box::new(move || {
                if let Some(f) = &f2 {
                    crate::topo::pin_to_node_or_warn(f, &format!("{} signature completion", s2.label));
                }
                s2.complete(rx)
            }),
        )?;
        Ok(Arc::new(GpuSigEngine {
            label,
            name: info.name.clone(),
            software: info.software,
            simulated: info.simulated,
            host_threads: s.host.as_ref().map_or_else(rayon::current_num_threads, |p| p.current_num_threads()),
            host_node: feeder.map(|f| f.numa_node),
            s,
            threads: Mutex::new(vec![feed, done]),
        }))
    }

    /// Verifying signatures (not taken off after a mismatch or a device loss).
    pub fn is_active(&self) -> bool {
        self.s.active.load(Ordering::Acquire)
    }

    /// Measured fixed latency and seconds per Ed25519 item.
    pub fn model(&self) -> (f64, f64) {
        self.model_for(Scheme::Ed25519)
    }

    /// Measured fixed latency and seconds per item of `scheme`.
    pub fn model_for(&self, scheme: Scheme) -> (f64, f64) {
        let m = *self.s.model.lock();
        (m.l0, m.per_item[scheme.family()])
    }

    /// Predicted seconds of kernel work for `items` (without L0 and backlog).
    pub fn work(&self, items: &[SigItem]) -> f64 {
        self.s.model.lock().work(items)
    }

    /// Re-verify one in this many "valid" verdicts (the trust policy's sample).
    pub fn sample_one_in(&self) -> u32 {
        self.s.policy.sample_one_in.max(1)
    }

    /// Predicted seconds of work booked here (queued and in flight).
    pub fn backlog(&self) -> f64 {
        self.s.backlog_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }

    /// Predicted seconds until `items` would be answered here: L0, what is
    /// booked ahead, their own work and the canaries'.
    pub fn predict(&self, items: &[SigItem]) -> f64 {
        self.prediction(items).total()
    }

    /// [`predict`](Self::predict) in its parts, for the split's formula.
    pub fn prediction(&self, items: &[SigItem]) -> Prediction {
        let m = *self.s.model.lock();
        let work = m.work(items);
        let avg = if items.is_empty() { m.per_item.ed25519 } else { work / items.len() as f64 };
        Prediction { l0: m.l0, ahead: self.backlog() + self.s.policy.canaries as f64 * avg, work }
    }

    pub fn totals(&self) -> GpuSigTotals {
        let s = &self.s;
        GpuSigTotals {
            items: s.items.load(Ordering::Relaxed),
            rechecked: s.rechecked.load(Ordering::Relaxed),
            mismatches: s.mismatches.load(Ordering::Relaxed),
            dispatches: s.dispatches.load(Ordering::Relaxed),
        }
    }

    /// Test hook: the verdict of every `every`-th item of each dispatch comes
    /// back flipped (valid ↔ bad_signature), as a faulty GPU would answer.
    #[doc(hidden)]
    pub fn inject_faults(&self, every: u32) {
        self.s.fault_every.store(every, Ordering::Relaxed);
    }

    /// Queues `items[range]` and returns at once; `reply` gets the answer
    /// (or the refusal: the caller then answers on the CPU). The job's work
    /// is booked now, so the next prediction already counts it.
    pub fn submit(&self, items: Arc<Vec<SigItem>>, range: Range<usize>, reply: Reply) {
        let s = &self.s;
        if !self.is_active() {
            reply(Err(Refused::Off(s.off_reason.lock().clone())));
            return;
        }
        let booked_ns = (s.model.lock().work(&items[range.clone()]) * 1e9) as u64;
        let job = Job { items, range, booked_ns, reply };
        let mut q = s.queue.lock();
        if q.closing {
            drop(q);
            (job.reply)(Err(Refused::Off("the engine is shutting down".into())));
            return;
        }
        s.backlog_ns.fetch_add(booked_ns, Ordering::Relaxed);
        q.jobs.push_back(job);
        drop(q);
        s.more.notify_one();
    }

    /// Verifies `items` under the trust policy and waits for the answer.
    pub fn verify(&self, items: &[SigItem]) -> Result<GpuAnswer, Refused> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let n = items.len();
        self.submit(
            Arc::new(items.to_vec()),
            0..n,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.recv().unwrap_or_else(|_| Err(Refused::Off("the engine stopped".into())))
    }

    /// Answers what is queued, joins the feeder and completion threads and
    /// gives the adapter back. Later jobs are refused (the CPU answers them).
    pub fn shutdown(&self) {
        self.s.queue.lock().closing = true;
        self.s.more.notify_all();
        let me = std::thread::current().id();
        for t in self.threads.lock().drain(..) {
            // Never join oneself (a reply that drops the last handle).
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        self.s.dev.release();
    }
}

impl Drop for GpuSigEngine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A rayon pool on `node`'s PUs for a GPU's host work.
fn host_pool(node: &NodeAffinity, label: &str) -> Option<rayon::ThreadPool> {
    let pin = node.clone();
    let who = format!("{label} signature host pool");
    rayon::ThreadPoolBuilder::new()
        .num_threads(node.pus.len())
        .thread_name({
            let label = label.to_string();
            move |i| format!("sig-{label}-host{i}")
        })
        .start_handler(move |_| {
            crate::topo::pin_to_node_or_warn(&pin, &who);
        })
        .build()
        .map_err(|e| {
            tracing::warn!("{label}: no host pool on NUMA node {} ({e}); using the global one", node.numa_node)
        })
        .ok()
}
