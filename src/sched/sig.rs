//! The signature engine: one rayon pool per NUMA worker group (threads
//! pinned to the cores of the [`PinPlan`]), batches scheduled by deadline
//! and size.
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
//! * Queued batches are taken by dispatcher threads (one per worker): a
//!   small batch runs on the dispatcher, a large one is split over the
//!   pools while the dispatcher waits. Under load, small queued batches are
//!   coalesced up to `inline_max` items and verified as one (see
//!   `Inner::dispatch`). Pool threads only ever run leaf
//!   chunks and never wait on another pool, so groups cannot deadlock on
//!   each other.
//! * GPU engines ([`GpuSigEngine`], added once their kernels are built) take
//!   a batch (Ed25519, ECDSA, BIP340 or a mix) only where it is predicted to
//!   finish sooner there than on the CPU, from measured costs per scheme
//!   family, counting what each already has queued; a large batch is cut
//!   so that both parts finish together (CPU the head, GPU the tail). A
//!   batch with a deadline never goes where the prediction misses it. See
//!   [`Inner::route`] and docs/gpu-signatures.md.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "gpu")]
use parking_lot::RwLock;
use parking_lot::{Condvar, Mutex};
use rayon::prelude::*;

#[cfg(feature = "gpu")]
use super::sig_gpu::GpuSigEngine;
use crate::metrics::Metrics;
use crate::sig::{scheme_label, size_class, verify_batch, Scheme, SigItem, Verdict};
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

/// How a batch was run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecPath {
    Inline,
    /// Verified in one go with other small queued batches.
    Coalesced,
    Split {
        groups: usize,
        chunks: usize,
    },
    /// Verified on a GPU.
    Gpu,
    /// The head on the CPU, the last `gpu_items` on a GPU.
    GpuSplit {
        gpu_items: usize,
    },
}

impl ExecPath {
    pub fn label(self) -> &'static str {
        match self {
            ExecPath::Inline => "inline",
            ExecPath::Coalesced => "coalesced",
            ExecPath::Split { .. } => "split",
            ExecPath::Gpu => "gpu",
            ExecPath::GpuSplit { .. } => "gpu_split",
        }
    }
}

/// The answer for a batch.
#[derive(Clone, Debug)]
pub struct BatchReport {
    /// One verdict per item, in order.
    pub verdicts: Vec<Verdict>,
    pub path: ExecPath,
    /// From submission (or the call) to the last verdict.
    pub elapsed: Duration,
    /// Finished after its deadline.
    pub deadline_missed: bool,
}

struct Group {
    pool: rayon::ThreadPool,
    threads: usize,
    /// Measured items/s of the whole group (f64 bits); 0 until measured.
    rate: AtomicU64,
}

type Done = Box<dyn FnOnce(BatchReport) + Send + 'static>;

struct Queued {
    deadline: Option<Instant>,
    seq: u64,
    submitted: Instant,
    items: Vec<SigItem>,
    done: Done,
}

impl Queued {
    fn key(&self) -> (bool, Option<Instant>, u64) {
        (self.deadline.is_none(), self.deadline, self.seq)
    }
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // BinaryHeap is a max-heap: the earliest deadline must compare greatest.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.key().cmp(&self.key())
    }
}

struct Inner {
    groups: Vec<Group>,
    cfg: SigEngineConfig,
    queue: Mutex<Queue>,
    ready: Condvar,
    seq: AtomicU64,
    queued_items: AtomicUsize,
    verified: AtomicU64,
    /// Items the CPU verified (the rest went to GPUs).
    cpu_items: AtomicU64,
    metrics: Option<Arc<Metrics>>,
    /// Dispatcher threads (one per worker).
    dispatchers: usize,
    #[cfg(feature = "gpu")]
    gpus: RwLock<Vec<Arc<GpuSigEngine>>>,
    /// Measured seconds per item on one CPU thread, per scheme family
    /// (`Scheme::family`; f64 bits).
    cpu_item_secs: [AtomicU64; 3],
}

/// Where one batch goes.
#[derive(Clone)]
enum Route {
    Cpu,
    #[cfg(feature = "gpu")]
    Gpu(Arc<GpuSigEngine>),
    /// The last `usize` items to the GPU, the rest on the CPU.
    #[cfg(feature = "gpu")]
    Split(Arc<GpuSigEngine>, usize),
}

/// Seconds per item on one thread until measured, per family: an Ed25519
/// batch on a 2020s server core ~17 µs, libsecp256k1's ECDSA and BIP340
/// ~40 µs (README, performance).
const CPU_ITEM_SECS_DEFAULT: [f64; 3] = [20e-6, 40e-6, 38e-6];

struct Queue {
    heap: BinaryHeap<Queued>,
    /// Set when the last [`SigEngine`] handle is dropped: dispatchers
    /// finish what is queued, then exit.
    closing: bool,
}

/// Stops the dispatchers when the last handle goes.
struct Guard(Arc<Inner>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.queue.lock().closing = true;
        self.0.ready.notify_all();
    }
}

/// The engine; cheap to clone (shared). Dropping the last clone lets the
/// dispatchers finish the queue and exit.
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
        let inner = Arc::new(Inner {
            groups,
            cfg,
            queue: Mutex::new(Queue { heap: BinaryHeap::new(), closing: false }),
            ready: Condvar::new(),
            seq: AtomicU64::new(0),
            queued_items: AtomicUsize::new(0),
            verified: AtomicU64::new(0),
            cpu_items: AtomicU64::new(0),
            metrics,
            dispatchers: threads,
            #[cfg(feature = "gpu")]
            gpus: RwLock::new(Vec::new()),
            cpu_item_secs: CPU_ITEM_SECS_DEFAULT.map(|x| AtomicU64::new(x.to_bits())),
        });
        let guard = Arc::new(Guard(inner.clone()));
        for i in 0..threads {
            let me = inner.clone();
            std::thread::Builder::new()
                .name(format!("sig-dispatch-{i}"))
                .spawn(move || me.dispatch())
                .map_err(|e| EngineError::Pool(e.to_string()))?;
        }
        Ok(SigEngine { inner, _guard: guard })
    }

    /// Items verified on the CPU since start (the rest went to GPUs).
    pub fn cpu_items_total(&self) -> u64 {
        self.inner.cpu_items.load(Ordering::Relaxed)
    }

    /// Adds a GPU engine (started, kernels built): from now on batches may
    /// go to it.
    #[cfg(feature = "gpu")]
    pub fn add_gpu(&self, gpu: Arc<GpuSigEngine>) {
        self.inner.gpus.write().push(gpu);
    }

    /// The GPU engines added so far (active or taken off).
    #[cfg(feature = "gpu")]
    pub fn gpus(&self) -> Vec<Arc<GpuSigEngine>> {
        self.inner.gpus.read().clone()
    }

    /// Measured seconds per Ed25519 item on one CPU thread.
    pub fn cpu_item_secs(&self) -> f64 {
        self.cpu_item_secs_for(Scheme::Ed25519)
    }

    /// Measured seconds per item of `scheme` on one CPU thread.
    pub fn cpu_item_secs_for(&self, scheme: Scheme) -> f64 {
        self.inner.cpu_secs(scheme.family())
    }

    /// Worker threads over all groups.
    pub fn threads(&self) -> usize {
        self.inner.groups.iter().map(|g| g.threads).sum()
    }

    /// Items verified since start (valid or not).
    pub fn verified_total(&self) -> u64 {
        self.inner.verified.load(Ordering::Relaxed)
    }

    /// Items accepted by [`submit`](Self::submit) and not yet answered.
    pub fn queued_items(&self) -> usize {
        self.inner.queued_items.load(Ordering::Relaxed)
    }

    /// Verify `items` now, blocking the caller: inline when small, else split
    /// over the worker groups.
    pub fn verify(&self, items: &[SigItem], deadline: Option<Instant>) -> BatchReport {
        self.inner.run(items, deadline, Instant::now())
    }

    /// Queue a batch; `done` is called exactly once, from a worker thread,
    /// with its verdicts. Queued batches run earliest deadline first.
    /// Bounding what is queued is the caller's job (the server holds a
    /// permit per item until `done`).
    pub fn submit(
        &self,
        items: Vec<SigItem>,
        deadline: Option<Instant>,
        done: impl FnOnce(BatchReport) + Send + 'static,
    ) {
        let inner = &self.inner;
        inner.queued_items.fetch_add(items.len(), Ordering::Relaxed);
        let q = Queued {
            deadline,
            seq: inner.seq.fetch_add(1, Ordering::Relaxed),
            submitted: Instant::now(),
            items,
            done: Box::new(done),
        };
        inner.queue.lock().heap.push(q);
        inner.ready.notify_one();
        if let Some(m) = &inner.metrics {
            m.sig_queued_items.set(inner.queued_items.load(Ordering::Relaxed) as i64);
        }
    }
}

impl Inner {
    /// A dispatcher: take the most urgent batch, run it, answer it; exit
    /// once the engine is closing and the queue is empty.
    ///
    /// Under load small batches are coalesced: with at least two batches
    /// queued per dispatcher, a dispatcher takes its share of them (queued
    /// ÷ dispatchers, in deadline order) while they fit in `inline_max`
    /// items together, verifies them as one batch (one Ed25519 batch
    /// equation, one hand-off) and answers each with exactly its own
    /// verdicts. An idle engine never coalesces, so a lone small batch
    /// keeps its own latency.
    fn dispatch(&self) {
        loop {
            let mut taken = {
                let mut g = self.queue.lock();
                let first = loop {
                    if let Some(q) = g.heap.pop() {
                        break q;
                    }
                    if g.closing {
                        return;
                    }
                    self.ready.wait(&mut g);
                };
                // A fair share of the queue: as many batches as every
                // dispatcher would get, so coalescing never leaves another
                // dispatcher without work (what stays queued is at least
                // (dispatchers - 1) × share).
                let share = (g.heap.len() + 1) / self.dispatchers.max(1);
                let mut n = first.items.len();
                let mut taken = vec![first];
                while n < self.cfg.inline_max && taken.len() < share {
                    match g.heap.peek() {
                        Some(next) if n + next.items.len() <= self.cfg.inline_max => {
                            n += next.items.len();
                            taken.extend(g.heap.pop());
                        }
                        _ => break,
                    }
                }
                taken
            };
            if taken.len() == 1 {
                let q = taken.pop().expect("one batch");
                let n = q.items.len();
                let report = self.run(&q.items, q.deadline, q.submitted);
                self.finish(n);
                (q.done)(report);
            } else {
                self.run_coalesced(taken);
            }
        }
    }

    fn finish(&self, items: usize) {
        self.queued_items.fetch_sub(items, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.sig_queued_items.set(self.queued_items.load(Ordering::Relaxed) as i64);
        }
    }

    /// Several small queued batches verified as one, answered one by one.
    fn run_coalesced(&self, mut taken: Vec<Queued>) {
        let lens: Vec<usize> = taken.iter().map(|q| q.items.len()).collect();
        let mut all = Vec::with_capacity(lens.iter().sum());
        for q in &mut taken {
            all.append(&mut q.items);
        }
        let deadline = taken.iter().filter_map(|q| q.deadline).min();
        let (verdicts, path) = self.execute(&all, deadline);
        // A coalesced group the CPU ran inline is labelled as coalesced.
        let path = if path == ExecPath::Inline { ExecPath::Coalesced } else { path };
        let end = Instant::now();
        self.verified.fetch_add(all.len() as u64, Ordering::Relaxed);
        self.finish(all.len());
        let mut at = 0;
        for (q, len) in taken.into_iter().zip(lens) {
            let report = BatchReport {
                verdicts: verdicts[at..at + len].to_vec(),
                path,
                elapsed: end.saturating_duration_since(q.submitted),
                deadline_missed: q.deadline.is_some_and(|d| end > d),
            };
            if let Some(m) = &self.metrics {
                record(m, &all[at..at + len], &report);
            }
            at += len;
            (q.done)(report);
        }
    }

    fn run(&self, items: &[SigItem], deadline: Option<Instant>, since: Instant) -> BatchReport {
        let (verdicts, path) = self.execute(items, deadline);
        let end = Instant::now();
        let report = BatchReport {
            verdicts,
            path,
            elapsed: end.saturating_duration_since(since),
            deadline_missed: deadline.is_some_and(|d| end > d),
        };
        self.verified.fetch_add(items.len() as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            record(m, items, &report);
        }
        report
    }

    fn threads(&self) -> usize {
        self.groups.iter().map(|g| g.threads).sum()
    }

    /// Verdicts for `items` from wherever [`route`](Self::route) sends them.
    /// A GPU that refuses (taken off, device lost) leaves its part to the CPU.
    fn execute(&self, items: &[SigItem], deadline: Option<Instant>) -> (Vec<Verdict>, ExecPath) {
        match self.route(items, deadline) {
            Route::Cpu => self.execute_cpu(items),
            #[cfg(feature = "gpu")]
            Route::Gpu(g) => match g.verify(items) {
                Ok(ans) => (ans.verdicts, ExecPath::Gpu),
                Err(_) => self.execute_cpu(items),
            },
            #[cfg(feature = "gpu")]
            Route::Split(g, gpu_n) => {
                let (head, tail) = items.split_at(items.len() - gpu_n);
                let (mut cpu, gpu) = std::thread::scope(|s| {
                    let t = s.spawn(|| g.verify(tail));
                    let cpu = self.execute_cpu(head).0;
                    (cpu, t.join())
                });
                match gpu {
                    Ok(Ok(ans)) => {
                        cpu.extend(ans.verdicts);
                        (cpu, ExecPath::GpuSplit { gpu_items: gpu_n })
                    }
                    _ => {
                        cpu.extend(self.execute_cpu(tail).0);
                        (cpu, ExecPath::Split { groups: self.groups.len(), chunks: 0 })
                    }
                }
            }
        }
    }

    fn execute_cpu(&self, items: &[SigItem]) -> (Vec<Verdict>, ExecPath) {
        let threads = self.threads();
        let t0 = Instant::now();
        let out = if items.len() <= self.cfg.inline_max || threads <= 1 {
            (verify_batch(items), ExecPath::Inline)
        } else {
            self.split(items)
        };
        // The CPU's time per item and thread, per family, for the split
        // (learnt from single-family batches).
        let n = items.len();
        if let Some(f) = items.first().map(|i| i.scheme.family()) {
            if n >= 16 && items.iter().all(|i| i.scheme.family() == f) {
                let used = if out.1 == ExecPath::Inline { 1 } else { threads };
                let per = t0.elapsed().as_secs_f64() * used as f64 / n as f64;
                let old = self.cpu_secs(f);
                self.cpu_item_secs[f].store((0.9 * old + 0.1 * per).to_bits(), Ordering::Relaxed);
            }
        }
        self.cpu_items.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.sig_gpu.engine_items.with_label_values(&["cpu"]).inc_by(n as u64);
        }
        out
    }

    fn cpu_secs(&self, family: usize) -> f64 {
        f64::from_bits(self.cpu_item_secs[family].load(Ordering::Relaxed))
    }

    /// Where `items` finish first. `EngineChoice::Gpu` sends every batch to
    /// the GPU with the earliest predicted finish; `Auto` compares
    /// predictions, each item costed by its scheme family:
    ///   CPU: what is queued ahead / threads + Σ (per-thread time) / (1
    ///        thread when inline, all when split);
    ///   GPU: L0 + queued on it + Σ its time per item.
    /// When the GPU wins on a batch large enough to split, the GPU gets the
    /// fraction f of the tail that makes both parts end together:
    ///   (1 − f)·n·c = L0 + (q + f·n)·g  ⇒  f = (n·c − L0 − q·g) / (n·(c + g))
    /// with c and g the batch's mean times per item (the CPU's over all
    /// threads). A deadline vetoes
    /// the GPU when its prediction misses it and the CPU's does not.
    #[cfg(not(feature = "gpu"))]
    fn route(&self, _: &[SigItem], _: Option<Instant>) -> Route {
        Route::Cpu
    }

    #[cfg(feature = "gpu")]
    fn route(&self, items: &[SigItem], deadline: Option<Instant>) -> Route {
        let n = items.len();
        if self.cfg.engines == EngineChoice::Cpu || n == 0 {
            return Route::Cpu;
        }
        // No active GPU (the common case on CPU-only servers): nothing to scan.
        let best = {
            let gpus = self.gpus.read();
            gpus.iter()
                .filter(|g| g.is_active())
                .map(|g| (g.predict(items), g.clone()))
                .min_by(|a, b| a.0.total_cmp(&b.0))
        };
        let Some((t_gpu, gpu)) = best else { return Route::Cpu };
        if self.cfg.engines == EngineChoice::Gpu {
            return Route::Gpu(gpu);
        }
        let threads = self.threads().max(1);
        let cpu_secs = self.cpu_item_secs.each_ref().map(|a| f64::from_bits(a.load(Ordering::Relaxed)));
        let c1 = items.iter().map(|i| cpu_secs[i.scheme.family()]).sum::<f64>() / n as f64;
        let inline = n <= self.cfg.inline_max || threads == 1;
        let ahead = self.queued_items.load(Ordering::Relaxed).saturating_sub(n) as f64 * c1 / threads as f64;
        let t_cpu = ahead + if inline { n as f64 * c1 } else { n as f64 * c1 / threads as f64 };
        let now = Instant::now();
        let misses = |t: f64| deadline.is_some_and(|d| now + Duration::from_secs_f64(t) > d);
        if t_gpu >= t_cpu || (misses(t_gpu) && !misses(t_cpu)) {
            return Route::Cpu;
        }
        if inline {
            return Route::Gpu(gpu);
        }
        let (l0, _) = gpu.model();
        let g = gpu.work(items) / n as f64;
        let q = t_gpu - l0 - n as f64 * g; // queued work (and canaries) on the GPU, in seconds
        let c = c1 / threads as f64;
        let f = ((n as f64 * c - l0 - q) / (n as f64 * (c + g))).clamp(0.0, 1.0);
        let gpu_n = (f * n as f64).round() as usize;
        if gpu_n == 0 {
            Route::Cpu
        } else if n - gpu_n < self.cfg.chunk_min {
            Route::Gpu(gpu)
        } else {
            Route::Split(gpu, gpu_n)
        }
    }

    fn split(&self, items: &[SigItem]) -> (Vec<Verdict>, ExecPath) {
        let n = items.len();
        // Shares in proportion to measured group rates; unmeasured groups
        // count by their thread count.
        let rates: Vec<f64> = self
            .groups
            .iter()
            .map(|g| {
                let r = f64::from_bits(g.rate.load(Ordering::Relaxed));
                if r > 0.0 {
                    r
                } else {
                    g.threads as f64
                }
            })
            .collect();
        let measured = self.groups.iter().all(|g| g.rate.load(Ordering::Relaxed) != 0);
        let total: f64 = if measured { rates.iter().sum() } else { self.groups.iter().map(|g| g.threads as f64).sum() };
        let mut shares = Vec::with_capacity(self.groups.len());
        let mut start = 0;
        for (i, g) in self.groups.iter().enumerate() {
            let w = if measured { rates[i] } else { g.threads as f64 };
            let len =
                if i + 1 == self.groups.len() { n - start } else { ((n as f64 * w / total) as usize).min(n - start) };
            shares.push(start..start + len);
            start += len;
        }
        let chunk_min = self.cfg.chunk_min.max(1);
        let mut out = vec![Verdict::Valid; n];
        let mut chunks = 0;
        let mut groups_used = 0;
        {
            let mut outs: Vec<&mut [Verdict]> = Vec::new();
            let mut rest: &mut [Verdict] = &mut out;
            for r in &shares {
                let (a, b) = rest.split_at_mut(r.len());
                outs.push(a);
                rest = b;
            }
            let jobs: Vec<_> = self
                .groups
                .iter()
                .zip(shares.iter())
                .zip(outs)
                .filter(|((_, r), _)| !r.is_empty())
                .map(|((g, r), o)| {
                    let chunk = r.len().div_ceil(g.threads).max(chunk_min);
                    chunks += r.len().div_ceil(chunk);
                    groups_used += 1;
                    (g, &items[r.clone()], o, chunk)
                })
                .collect();
            let run_group = |g: &Group, part: &[SigItem], o: &mut [Verdict], chunk: usize| {
                let t0 = Instant::now();
                g.pool.install(|| {
                    part.par_chunks(chunk).zip(o.par_chunks_mut(chunk)).for_each(|(src, dst)| {
                        dst.copy_from_slice(&verify_batch(src));
                    })
                });
                let secs = t0.elapsed().as_secs_f64();
                if secs > 0.0 && part.len() >= chunk_min {
                    let r = part.len() as f64 / secs;
                    let old = f64::from_bits(g.rate.load(Ordering::Relaxed));
                    let new = if old > 0.0 { 0.8 * old + 0.2 * r } else { r };
                    g.rate.store(new.to_bits(), Ordering::Relaxed);
                }
            };
            let mut jobs = jobs.into_iter();
            if let Some(first) = jobs.next() {
                std::thread::scope(|s| {
                    for (g, part, o, chunk) in jobs {
                        s.spawn(move || run_group(g, part, o, chunk));
                    }
                    let (g, part, o, chunk) = first;
                    run_group(g, part, o, chunk);
                });
            }
        }
        (out, ExecPath::Split { groups: groups_used, chunks })
    }
}

fn record(m: &Metrics, items: &[SigItem], rep: &BatchReport) {
    let label = scheme_label(items);
    m.sig_batch_seconds.with_label_values(&[label, size_class(items.len())]).observe(rep.elapsed.as_secs_f64());
    m.sig_batches.with_label_values(&[rep.path.label()]).inc();
    if rep.deadline_missed {
        m.sig_deadline_missed.with_label_values(&[label]).inc();
    }
    // Count locally, then one add per (scheme, result).
    let mut counts = [[0u64; 3]; 4];
    for (it, v) in items.iter().zip(&rep.verdicts) {
        let s = Scheme::ALL.iter().position(|x| *x == it.scheme).unwrap_or(0);
        let r = match v {
            Verdict::Valid => 0,
            Verdict::Invalid(r) if r.is_malformed() => 2,
            Verdict::Invalid(_) => 1,
        };
        counts[s][r] += 1;
    }
    for (s, row) in counts.iter().enumerate() {
        for (r, &c) in row.iter().enumerate() {
            if c > 0 {
                let result = ["valid", "invalid", "malformed"][r];
                m.sig_verdicts.with_label_values(&[Scheme::ALL[s].name(), result]).inc_by(c);
            }
        }
    }
}

/// Verifies per second between two calls, for status lines.
pub struct RateMeter {
    engine: SigEngine,
    last: (Instant, u64),
}

impl RateMeter {
    pub fn new(engine: SigEngine) -> RateMeter {
        let n = engine.verified_total();
        RateMeter { engine, last: (Instant::now(), n) }
    }

    /// Items verified per second since the previous call.
    pub fn rate(&mut self) -> f64 {
        let now = (Instant::now(), self.engine.verified_total());
        let dt = now.0.saturating_duration_since(self.last.0).as_secs_f64();
        let r = if dt > 0.0 { (now.1 - self.last.1) as f64 / dt } else { 0.0 };
        self.last = now;
        r
    }

    /// `"12.3 k verifies/s"`.
    pub fn line(&mut self) -> String {
        let r = self.rate();
        if r >= 1000.0 {
            format!("{:.1} k verifies/s", r / 1000.0)
        } else {
            format!("{r:.0} verifies/s")
        }
    }
}
