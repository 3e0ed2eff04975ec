//! The signature engine: one rayon pool per NUMA worker group (threads
//! pinned to the cores of the [`PinPlan`]), GPU engines beside them, and
//! batches scheduled by deadline, size and measured cost.
//!
//! * A batch of at most `inline_max` items is verified at once on the thread
//!   that runs it (no hand-off: its latency is its own verify time).
//! * A larger batch is split between the worker groups in proportion to each
//!   group's measured rate (so the parts end together), and within a group
//!   into one chunk per thread of at least `chunk_min` items (each chunk is
//!   one Ed25519 batch equation).
//! * Queued batches ([`SigEngine::submit`]) run earliest deadline first;
//!   batches without a deadline come after all that have one, in arrival
//!   order. A batch is never dropped for missing its deadline: it is
//!   answered and counted in `hashrig_sig_deadline_missed_total`.
//! * Queued batches are taken by dispatcher threads (one per worker); under
//!   load, small ones are coalesced up to `inline_max` items (queue.rs).
//!   Pool threads only ever run leaf chunks and never wait on another
//!   pool, so groups cannot deadlock on each other.
//! * GPU engines ([`GpuSigEngine`], added once their kernels are built; a
//!   simulated one with `--simulate-gpu`) take a batch, or the tail of one,
//!   only where it is predicted to finish sooner there (route.rs). Handing
//!   work to a GPU never blocks a dispatcher: the GPU answers through a
//!   callback while the dispatcher goes on verifying on the CPU.
//! * [`SigEngine::shutdown`] (or dropping the last handle) answers what is
//!   queued, joins every thread it started and stops its GPU engines.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex, RwLock};

mod cpu;
pub mod gpu;
mod queue;
mod report;
mod route;
mod start;

use cpu::Group;
pub use gpu::{GpuSigEngine, SimSpec, TrustPolicy};
use queue::Queue;
pub use report::{BatchReport, ExecPath, RateMeter};
use route::{Costs, Route};
pub use start::{GpuSelection, GpuStartError, StartMode};

use crate::metrics::Metrics;
use crate::sig::{Scheme, SigItem, Verdict};
use crate::topo::{pin_or_warn, PinPlan};

/// Engine settings.
#[derive(Clone, Debug)]
pub struct SigEngineConfig {
    pub plan: PinPlan,
    /// Bind pool threads to their cores.
    pub pin: bool,
    /// Batches up to this many items run inline on one thread.
    pub inline_max: usize,
    /// Smallest chunk a split batch is cut into.
    pub chunk_min: usize,
    /// Which engines may verify.
    pub engines: EngineChoice,
    /// The process's adapter shares: a GPU signature engine registers in
    /// its adapter's, where the PoW engine on that adapter sees it (a
    /// fresh set by default: nothing else runs on the adapters).
    pub adapters: crate::gpu::AdapterShares,
}

/// Which engines verify signatures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EngineChoice {
    Cpu,
    /// Every batch to a GPU (tests and measurements); the CPU still
    /// answers what no active GPU can take.
    Gpu,
    /// Per batch, wherever it is predicted to finish first.
    #[default]
    Auto,
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(EngineChoice::Cpu),
            "gpu" => Ok(EngineChoice::Gpu),
            "auto" => Ok(EngineChoice::Auto),
            _ => Err(format!("unknown engine {s:?} (cpu, gpu, auto)")),
        }
    }
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineChoice::Cpu => "cpu",
            EngineChoice::Gpu => "gpu",
            EngineChoice::Auto => "auto",
        })
    }
}

impl SigEngineConfig {
    pub const DEFAULT_INLINE_MAX: usize = 64;
    pub const DEFAULT_CHUNK_MIN: usize = 64;

    pub fn new(plan: PinPlan) -> SigEngineConfig {
        SigEngineConfig {
            plan,
            pin: true,
            inline_max: Self::DEFAULT_INLINE_MAX,
            chunk_min: Self::DEFAULT_CHUNK_MIN,
            engines: EngineChoice::Auto,
            adapters: crate::gpu::AdapterShares::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the pinning plan has no workers")]
    NoWorkers,
    #[error("could not start the signature worker pool: {0}")]
    Pool(String),
}

/// Called once with a batch's answer.
pub(super) type Done = Box<dyn FnOnce(BatchReport) + Send + 'static>;

pub(super) struct Inner {
    groups: Vec<Group>,
    cfg: SigEngineConfig,
    queue: Mutex<Queue>,
    ready: Condvar,
    seq: AtomicU64,
    /// Items submitted and not yet answered.
    queued_items: AtomicUsize,
    /// Items waiting in the queue (not yet taken by a dispatcher).
    heap_items: AtomicUsize,
    verified: AtomicU64,
    /// Items the CPU verified (the rest went to GPUs).
    cpu_items: AtomicU64,
    metrics: Option<Arc<Metrics>>,
    /// Dispatcher threads (one per worker).
    dispatchers: usize,
    gpus: RwLock<Vec<Arc<GpuSigEngine>>>,
    costs: Arc<Costs>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    me: Weak<Inner>,
}

/// Stops the engine when the last handle goes.
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.shutdown();
    }
}

/// The engine; cheap to clone (shared). Dropping the last clone (or
/// [`shutdown`](Self::shutdown)) answers what is queued and stops it.
#[derive(Clone)]
pub struct SigEngine {
    inner: Arc<Inner>,
    _guard: Arc<Guard>,
}

impl SigEngine {
    /// Start one pool per worker group of `cfg.plan`.
    pub fn start(cfg: SigEngineConfig, metrics: Option<Arc<Metrics>>) -> Result<SigEngine, EngineError> {
        if cfg.plan.worker_count() == 0 {
            return Err(EngineError::NoWorkers);
        }
        let mut groups = Vec::new();
        for g in &cfg.plan.groups {
            let slots = g.workers.clone();
            let numa = g.numa_node;
            let pin = cfg.pin;
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(slots.len())
                .thread_name(move |i| format!("sig-n{numa}-{i}"))
                .start_handler(move |i| {
                    if pin {
                        if let Some(s) = slots.get(i) {
                            pin_or_warn(s);
                        }
                    }
                })
                .build()
                .map_err(|e| EngineError::Pool(e.to_string()))?;
            groups.push(Group { pool, threads: g.workers.len(), rate: AtomicU64::new(0) });
        }
        let threads: usize = groups.iter().map(|g| g.threads).sum();
        let inner = Arc::new_cyclic(|me| Inner {
            groups,
            cfg,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            seq: AtomicU64::new(0),
            queued_items: AtomicUsize::new(0),
            heap_items: AtomicUsize::new(0),
            verified: AtomicU64::new(0),
            cpu_items: AtomicU64::new(0),
            metrics,
            dispatchers: threads,
            gpus: RwLock::new(Vec::new()),
            costs: Arc::new(Costs::new()),
            threads: Mutex::new(Vec::new()),
            me: me.clone(),
        });
        let guard = Arc::new(Guard(inner.clone()));
        for i in 0..threads {
            let me = inner.clone();
            let t = std::thread::Builder::new()
                .name(format!("sig-dispatch-{i}"))
                .spawn(move || me.dispatch())
                .map_err(|e| EngineError::Pool(e.to_string()))?;
            inner.threads.lock().push(t);
        }
        Ok(SigEngine { inner, _guard: guard })
    }

    /// Items verified on the CPU since start (the rest went to GPUs).
    pub fn cpu_items_total(&self) -> u64 {
        self.inner.cpu_items.load(Ordering::Relaxed)
    }

    /// Adds a GPU engine (started, kernels built): from now on batches may
    /// go to it.
    pub fn add_gpu(&self, gpu: Arc<GpuSigEngine>) {
        self.inner.gpus.write().push(gpu);
    }

    /// The GPU engines added so far (active or taken off).
    pub fn gpus(&self) -> Vec<Arc<GpuSigEngine>> {
        self.inner.gpus.read().clone()
    }

    /// Measured seconds per Ed25519 item on one CPU thread.
    pub fn cpu_item_secs(&self) -> f64 {
        self.cpu_item_secs_for(Scheme::Ed25519)
    }

    /// Measured seconds per item of `scheme` on one CPU thread.
    pub fn cpu_item_secs_for(&self, scheme: Scheme) -> f64 {
        self.inner.costs.cpu_secs(scheme.family())
    }

    /// Worker threads over all groups.
    pub fn threads(&self) -> usize {
        self.inner.threads()
    }

    /// Items verified since start (valid or not).
    pub fn verified_total(&self) -> u64 {
        self.inner.verified.load(Ordering::Relaxed)
    }

    /// What the router sees ahead on the CPU: booked CPU seconds of batches
    /// running there, and items still queued (for diagnosing a split).
    #[doc(hidden)]
    pub fn cpu_ahead(&self) -> (f64, usize) {
        (self.inner.costs.cpu_booked(), self.inner.heap_items())
    }

    /// Overrides the CPU's measured cost per item of `scheme`'s family (a
    /// test that a wrong estimate heals).
    #[doc(hidden)]
    pub fn set_cpu_item_secs_for(&self, scheme: Scheme, secs: f64) {
        self.inner.costs.set_cpu_secs(scheme.family(), secs)
    }

    /// Items accepted by [`submit`](Self::submit) and not yet answered.
    pub fn queued_items(&self) -> usize {
        self.inner.queued_items.load(Ordering::Relaxed)
    }

    /// Verify `items` now, blocking the caller: inline when small, else split
    /// over the worker groups (and a GPU, where it finishes sooner).
    pub fn verify(&self, items: &[SigItem], deadline: Option<Instant>) -> BatchReport {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let since = Instant::now();
        let shared = Arc::new(items.to_vec());
        self.inner.start(
            shared.clone(),
            deadline,
            since,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        // Every path answers; should one ever drop the answer, the CPU
        // path's verdicts, never a made-up one.
        rx.recv().unwrap_or_else(|_| fallback_report(&shared, since, deadline))
    }

    /// Queue a batch; `done` is called exactly once, from an engine thread,
    /// with its verdicts. Queued batches run earliest deadline first.
    /// Bounding what is queued is the caller's job (the server holds a
    /// permit per item until `done`).
    pub fn submit(
        &self,
        items: Vec<SigItem>,
        deadline: Option<Instant>,
        done: impl FnOnce(BatchReport) + Send + 'static,
    ) {
        self.inner.enqueue(items, deadline, Box::new(done));
    }

    /// Answers what is queued, joins the dispatcher threads and stops every
    /// GPU engine (joining its threads, giving its adapter back). Batches
    /// submitted afterwards are verified on the caller's thread.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }
}

impl Inner {
    fn shutdown(&self) {
        self.queue.lock().closing = true;
        self.ready.notify_all();
        let me = std::thread::current().id();
        for t in self.threads.lock().drain(..) {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        let gpus = std::mem::take(&mut *self.gpus.write());
        for g in &gpus {
            g.shutdown();
        }
    }

    /// Runs `items` wherever [`route`](Self::route) sends them; `done` gets
    /// the report (from this thread, or a GPU engine's). The CPU's part runs
    /// on this thread; a GPU's part is handed over without waiting.
    fn start(&self, items: Arc<Vec<SigItem>>, deadline: Option<Instant>, since: Instant, done: Done) {
        self.start_as(items, deadline, since, done, true)
    }

    /// [`start`](Self::start); `record`: count the batch in the metrics
    /// (a coalesced group counts each of its batches instead).
    fn start_as(&self, items: Arc<Vec<SigItem>>, deadline: Option<Instant>, since: Instant, done: Done, record: bool) {
        let n = items.len();
        match self.route(&items, deadline) {
            Route::Cpu => {
                let (verdicts, path) = self.run_cpu(&items);
                self.answer(&items, verdicts, path, (deadline, since, record), done);
            }
            Route::Gpu(g) => {
                let me = self.me.clone();
                let it = items.clone();
                g.submit(
                    items,
                    0..n,
                    Box::new(move |r| {
                        let Some(me) = me.upgrade() else {
                            done(fallback_report(&it, since, deadline));
                            return;
                        };
                        let (verdicts, path) = match r {
                            Ok(a) => (a.verdicts, ExecPath::Gpu),
                            Err(_) => me.run_cpu(&it),
                        };
                        me.answer(&it, verdicts, path, (deadline, since, record), done);
                    }),
                );
            }
            Route::Split(g, gpu_n) => {
                let head = n - gpu_n;
                let join = Arc::new(Join { parts: Mutex::new((None, None)), done: Mutex::new(Some(done)) });
                let (me, j, it) = (self.me.clone(), join.clone(), items.clone());
                g.submit(
                    items.clone(),
                    head..n,
                    Box::new(move |r| {
                        let Some(me) = me.upgrade() else {
                            if let Some(done) = j.done.lock().take() {
                                done(fallback_report(&it, since, deadline));
                            }
                            return;
                        };
                        let part = match r {
                            Ok(a) => (a.verdicts, true),
                            Err(_) => (me.run_cpu(&it[head..]).0, false),
                        };
                        j.parts.lock().1 = Some(part);
                        me.finish_split(&it, &j, (deadline, since, record));
                    }),
                );
                let cpu = self.run_cpu(&items[..head]).0;
                join.parts.lock().0 = Some(cpu);
                self.finish_split(&items, &join, (deadline, since, record));
            }
        }
    }

    /// Verifies on the CPU with the work booked while it runs.
    fn run_cpu(&self, items: &[SigItem]) -> (Vec<Verdict>, ExecPath) {
        let _booked = self.costs.book_cpu(self.costs.cpu_work(items));
        self.execute_cpu(items)
    }

    /// The second half of a split to arrive answers the batch.
    fn finish_split(&self, items: &[SigItem], j: &Join, when: When) {
        let (cpu, gpu) = {
            let mut p = j.parts.lock();
            if p.0.is_none() || p.1.is_none() {
                return;
            }
            (p.0.take().unwrap_or_default(), p.1.take().unwrap_or_default())
        };
        let Some(done) = j.done.lock().take() else { return };
        let (gpu_verdicts, on_gpu) = gpu;
        let path = if on_gpu {
            ExecPath::GpuSplit { gpu_items: gpu_verdicts.len() }
        } else {
            ExecPath::Split { groups: self.groups.len(), chunks: 0 }
        };
        let mut verdicts = cpu;
        verdicts.extend(gpu_verdicts);
        self.answer(items, verdicts, path, when, done);
    }

    /// Counts and answers one batch.
    fn answer(
        &self,
        items: &[SigItem],
        verdicts: Vec<Verdict>,
        path: ExecPath,
        (deadline, since, record): When,
        done: Done,
    ) {
        let end = Instant::now();
        let report = BatchReport {
            verdicts,
            path,
            elapsed: end.saturating_duration_since(since),
            deadline_missed: deadline.is_some_and(|d| end > d),
        };
        self.verified.fetch_add(items.len() as u64, Ordering::Relaxed);
        let invalid = report.verdicts.iter().filter(|v| !v.is_valid()).count();
        self.costs.learn_verdicts(invalid, items.len());
        if let (Some(m), true) = (&self.metrics, record) {
            report::record(m, items, &report);
        }
        done(report);
    }

    fn heap_items(&self) -> usize {
        self.heap_items.load(Ordering::Relaxed)
    }
}

/// A batch's deadline, start, and whether the metrics count it.
type When = (Option<Instant>, Instant, bool);

/// The GPU's part of a split: its verdicts, and whether the GPU gave them
/// (false: it refused, and the CPU answered).
type GpuPart = (Vec<Verdict>, bool);

/// The two halves of a split batch, whichever ends first waiting for the other.
struct Join {
    /// (CPU head, GPU tail).
    parts: Mutex<(Option<Vec<Verdict>>, Option<GpuPart>)>,
    done: Mutex<Option<Done>>,
}

/// The engine is gone (a GPU answered after it stopped): the CPU path's
/// verdicts, on this thread.
fn fallback_report(items: &[SigItem], since: Instant, deadline: Option<Instant>) -> BatchReport {
    let verdicts = crate::sig::verify_batch(items);
    let end = Instant::now();
    BatchReport {
        verdicts,
        path: ExecPath::Inline,
        elapsed: end.saturating_duration_since(since),
        deadline_missed: deadline.is_some_and(|d| end > d),
    }
}
