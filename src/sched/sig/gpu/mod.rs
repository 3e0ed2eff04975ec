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
pub mod model;
pub mod sim;
mod trust;

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use rand::Rng;
use rayon::prelude::*;

pub use device::{DeviceError, DeviceInfo, SigDevice};
use model::Model;
pub use sim::{SimDevice, SimFaults, SimSpec};
use trust::Canaries;
pub use trust::TrustPolicy;

use crate::metrics::Metrics;
use crate::sig::{verify_one, Reason, Scheme, SigItem, Verdict, FAMILIES};
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

/// A dispatch whose verdicts came back, for the trust policy.
struct Dispatched {
    jobs: Vec<Job>,
    canaries: Vec<(usize, usize)>,
    predicted: f64,
    wall: Duration,
}

fn interleave<'a>(jobs: &'a [Job], at: &[(usize, usize)], canaries: &'a Canaries) -> Vec<&'a SigItem> {
    let n: usize = jobs.iter().map(|j| j.range.len()).sum();
    let mut real = jobs.iter().flat_map(|j| j.items().iter());
    let mut at = at.iter().peekable();
    (0..n + at.len())
        .filter_map(|p| match at.peek() {
            Some(&&(q, c)) if q == p => {
                at.next();
                Some(&canaries.items[c].0)
            }
            _ => real.next(),
        })
        .collect()
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
    /// [`with_device`](Self::with_device).
    #[cfg(feature = "gpu")]
    pub fn start(
        adapter: &crate::gpu::GpuAdapter,
        policy: TrustPolicy,
        metrics: Option<Arc<Metrics>>,
        feeder: Option<NodeAffinity>,
    ) -> Result<Arc<GpuSigEngine>, DeviceError> {
        let dev = device::WgpuDevice::open(adapter)?;
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
        let m = *self.s.model.lock();
        let work = m.work(items);
        let avg = if items.is_empty() { m.per_item[0] } else { work / items.len() as f64 };
        m.l0 + self.backlog() + work + self.s.policy.canaries as f64 * avg
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
        .map_err(|e| tracing::warn!("{label}: no host pool on NUMA node {} ({e}); using the global one", node.numa_node))
        .ok()
}

impl Shared {
    fn on_host<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.host {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// One dispatch, waited for: the self-test and the first measurements.
    fn run_once(&self, batch: &[&SigItem]) -> Result<(Vec<Option<Verdict>>, Duration), DeviceError> {
        let t0 = Instant::now();
        let f = self.on_host(|| self.dev.submit(batch))?;
        let a = f.wait(Duration::from_secs(600))?;
        Ok((a.verdicts, a.ready.saturating_duration_since(t0)))
    }

    /// Self-test and first measurements: every canary once (all must match
    /// the CPU), then L0 from single-item dispatches and the time per item
    /// of each family from one larger dispatch of its canaries.
    fn calibrate(&self, info: &DeviceInfo) -> Result<(), DeviceError> {
        let all: Vec<&SigItem> = self.canaries.items.iter().map(|(i, _)| i).collect();
        let (got, _) = self.run_once(&all)?;
        for ((it, want), g) in self.canaries.items.iter().zip(&got) {
            if *g != Some(*want) {
                return Err(DeviceError::Driver(format!(
                    "self-test: {} known answer: GPU {g:?}, CPU {want:?} (key {})",
                    it.scheme,
                    hex::encode(&it.pubkey)
                )));
            }
        }
        let mut l0 = f64::INFINITY;
        for _ in 0..3 {
            l0 = l0.min(self.run_once(&all[1..2])?.1.as_secs_f64());
        }
        let n = if info.software { 256 } else { 16384 };
        let mut per_item = [0.0; 3];
        for (f, slot) in per_item.iter_mut().enumerate() {
            let own: Vec<&SigItem> = all.iter().copied().filter(|i| i.scheme.family() == f).collect();
            let big: Vec<&SigItem> = (0..n).map(|i| own[i % own.len()]).collect();
            let wall = self.run_once(&big)?.1.as_secs_f64();
            *slot = ((wall - l0).max(wall * 0.5)) / n as f64;
        }
        *self.model.lock() = Model { l0, per_item };
        self.publish_model();
        tracing::info!(
            adapter = %info.name,
            "signatures on {}: L0 {:.2} ms; verifies/s: Ed25519 {:.0}, ECDSA {:.0}, BIP340 {:.0}",
            self.label,
            l0 * 1e3,
            1.0 / per_item[0],
            1.0 / per_item[1],
            1.0 / per_item[2]
        );
        Ok(())
    }

    fn publish_model(&self) {
        if let Some(m) = &self.metrics {
            let md = *self.model.lock();
            m.sig_gpu.l0_seconds.with_label_values(&[&self.label]).set(md.l0);
            for (f, name) in FAMILIES.iter().enumerate() {
                m.sig_gpu.item_seconds.with_label_values(&[self.label.as_str(), name]).set(md.per_item[f]);
            }
        }
    }

    fn take_off(&self, why: String) {
        if self.active.swap(false, Ordering::AcqRel) {
            tracing::error!(adapter = %self.dev.info().name, "{} taken off signature work: {why}", self.label);
            *self.off_reason.lock() = why;
            // Mining on the adapter gets its full ring back.
            self.dev.release();
            if let Some(m) = &self.metrics {
                m.sig_gpu.active.with_label_values(&[&self.label, &self.dev.info().name]).set(0);
            }
        }
    }

    fn unbook(&self, jobs: &[Job]) {
        let ns: u64 = jobs.iter().map(|j| j.booked_ns).sum();
        self.backlog_ns.fetch_sub(ns.min(self.backlog_ns.load(Ordering::Relaxed)), Ordering::Relaxed);
    }

    /// Answers `jobs` with a refusal (the callers verify on the CPU).
    fn refuse(&self, jobs: Vec<Job>, why: Refused) {
        self.unbook(&jobs);
        for j in jobs {
            (j.reply)(Err(why.clone()));
        }
    }

    /// The feeder: every queued job that fits goes into the next dispatch.
    fn feed(&self, tx: crossbeam_channel::Sender<Flight>) {
        let k = self.policy.canaries.min(self.canaries.items.len());
        loop {
            let jobs = {
                let mut q = self.queue.lock();
                while q.jobs.is_empty() && !q.closing {
                    self.more.wait(&mut q);
                }
                if q.jobs.is_empty() {
                    return;
                }
                let mut n = 0;
                let mut jobs = Vec::new();
                while let Some(j) = q.jobs.front() {
                    if !jobs.is_empty() && n + j.range.len() + k > self.max_dispatch {
                        break;
                    }
                    n += j.range.len();
                    jobs.extend(q.jobs.pop_front());
                }
                jobs
            };
            if !self.active.load(Ordering::Acquire) {
                let why = self.off_reason.lock().clone();
                self.refuse(jobs, Refused::Off(why));
                continue;
            }
            let n: usize = jobs.iter().map(|j| j.range.len()).sum();
            let canaries = self.canaries.place(jobs.iter().flat_map(|j| j.items().iter()), n, k);
            let predicted = {
                let m = *self.model.lock();
                m.l0 + self.backlog_ns.load(Ordering::Relaxed) as f64 * 1e-9
            };
            let hold = self.dev.hold_adapter();
            let submitted = Instant::now();
            let res = {
                let batch = interleave(&jobs, &canaries, &self.canaries);
                self.on_host(|| self.dev.submit(&batch))
            };
            self.dispatches.fetch_add(1, Ordering::Relaxed);
            match res {
                Ok(flight) => {
                    let f = Flight { flight, jobs, canaries, submitted, predicted, _hold: hold };
                    if let Err(e) = tx.send(f) {
                        // The completion thread is gone: nobody will answer.
                        self.take_off("the completion thread stopped".into());
                        self.refuse(e.into_inner().jobs, Refused::Off("the completion thread stopped".into()));
                    }
                }
                Err(e) => {
                    self.device_failed(&e);
                    self.refuse(jobs, Refused::Device(e));
                }
            }
        }
    }

    fn device_failed(&self, e: &DeviceError) {
        self.take_off(format!("device error: {e}"));
        if let Some(m) = &self.metrics {
            m.gpu.device_lost.with_label_values(&[&self.label]).inc();
        }
    }

    /// The completion thread: each dispatch in order, judged and answered.
    fn complete(&self, rx: crossbeam_channel::Receiver<Flight>) {
        let mut prev_ready: Option<Instant> = None;
        while let Ok(Flight { flight, jobs, canaries, submitted, predicted, _hold }) = rx.recv() {
            let work = self.model.lock().work(interleave(&jobs, &canaries, &self.canaries));
            let res = flight.wait(dispatch_timeout(predicted + work, self.policy.hung_after));
            drop(_hold);
            match res {
                Ok(ans) => {
                    let batch = interleave(&jobs, &canaries, &self.canaries);
                    self.model.lock().learn(&batch, submitted, ans.ready, prev_ready);
                    drop(batch);
                    self.publish_model();
                    prev_ready = Some(ans.ready);
                    let d = Dispatched { jobs, canaries, predicted, wall: ans.ready.saturating_duration_since(submitted) };
                    self.judge(d, ans.verdicts);
                }
                Err(e) => {
                    self.device_failed(&e);
                    self.refuse(jobs, Refused::Device(e));
                }
            }
        }
    }

    /// Canaries, re-checks, answers: the trust policy on one dispatch.
    fn judge(&self, f: Dispatched, mut got: Vec<Option<Verdict>>) {
        let wall = f.wall;
        let every = self.fault_every.load(Ordering::Relaxed);
        if every > 0 {
            for (i, g) in got.iter_mut().enumerate() {
                if (i as u32).is_multiple_of(every) {
                    *g = g.map(|v| if v.is_valid() { Verdict::Invalid(Reason::BadSignature) } else { Verdict::Valid });
                }
            }
        }
        let mut mismatch = None;
        for &(pos, c) in &f.canaries {
            let want = self.canaries.items[c].1;
            if got.get(pos).copied().flatten() != Some(want) {
                mismatch = Some(format!("canary: GPU {:?}, known answer {want:?}", got.get(pos)));
            }
        }
        self.count_recheck("canary", f.canaries.len());
        // The real items' verdicts, in job order, and which the CPU must see.
        let mut at = f.canaries.iter().map(|c| c.0).peekable();
        let mut verdicts = Vec::with_capacity(got.len().saturating_sub(f.canaries.len()));
        for (p, g) in got.into_iter().enumerate() {
            if at.peek() == Some(&p) {
                at.next();
            } else {
                verdicts.push(g);
            }
        }
        let items: Vec<&SigItem> = f.jobs.iter().flat_map(|j| j.items().iter()).collect();
        let n = items.len();
        let warm = self.take_warm(n as u64) as usize;
        let sample = self.policy.sample_one_in.max(1);
        let mut rng = rand::rng();
        let mut out = vec![Verdict::Valid; n];
        let mut recheck = Vec::new();
        let (mut n_invalid, mut n_sampled) = (0, 0);
        for (i, g) in verdicts.iter().enumerate().take(n) {
            match g {
                // No kernel for the item: the CPU answers it.
                None => out[i] = verify_one(items[i]),
                Some(v) => {
                    out[i] = *v;
                    if !v.is_valid() {
                        n_invalid += 1;
                        recheck.push(i);
                    } else if i < warm || rng.random_range(0..sample) == 0 {
                        n_sampled += 1;
                        recheck.push(i);
                    }
                }
            }
        }
        if verdicts.len() != n {
            mismatch.get_or_insert(format!("{} verdicts for {n} items", verdicts.len()));
        }
        if mismatch.is_none() && !recheck.is_empty() {
            let cpu = self.verify_on_host(&recheck.iter().map(|&i| items[i]).collect::<Vec<_>>());
            if let Some((&i, c)) = recheck.iter().zip(&cpu).find(|(&i, c)| out[i] != **c) {
                mismatch = Some(format!("item {i}: GPU {:?}, CPU {c:?}", out[i]));
            }
        }
        self.count_recheck("invalid", n_invalid);
        self.count_recheck("sampled", n_sampled);
        self.rechecked.fetch_add((n_invalid + n_sampled) as u64, Ordering::Relaxed);
        let mismatched = mismatch.is_some();
        if let Some(why) = mismatch {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.sig_gpu.mismatches.with_label_values(&[&self.label]).inc();
            }
            self.take_off(format!("verdict mismatch ({why}); this dispatch was answered from the CPU"));
            out = self.verify_on_host(&items);
        }
        self.items.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            let g = &m.sig_gpu;
            g.batch_seconds.with_label_values(&[&self.label]).observe(wall.as_secs_f64());
            let predicted = f.predicted + self.model.lock().work(items.iter().copied());
            if predicted > 0.0 {
                g.prediction_ratio.with_label_values(&[&self.label]).observe(wall.as_secs_f64() / predicted);
            }
            g.engine_items.with_label_values(&[&self.label]).inc_by(n as u64);
        }
        drop(items);
        self.unbook(&f.jobs);
        let mut start = 0;
        let mut is_rechecked = vec![false; n];
        for &i in &recheck {
            is_rechecked[i] = true;
        }
        for j in f.jobs {
            let len = j.range.len();
            let rechecked =
                if mismatched { len } else { is_rechecked[start..start + len].iter().filter(|x| **x).count() };
            let ans = GpuAnswer { verdicts: out[start..start + len].to_vec(), wall, rechecked, mismatch: mismatched };
            start += len;
            (j.reply)(Ok(ans));
        }
    }

    /// Items of the warm-up this dispatch takes (at most `n`).
    fn take_warm(&self, n: u64) -> u64 {
        let mut left = self.warm_left.load(Ordering::Relaxed);
        loop {
            let take = left.min(n);
            if take == 0 {
                return 0;
            }
            match self.warm_left.compare_exchange(left, left - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }

    /// The CPU path's verdicts on the host pool's threads.
    fn verify_on_host(&self, items: &[&SigItem]) -> Vec<Verdict> {
        self.on_host(|| {
            if items.len() <= 16 {
                return items.iter().map(|i| verify_one(i)).collect();
            }
            items.par_iter().map(|i| verify_one(i)).collect()
        })
    }

    fn count_recheck(&self, why: &str, n: usize) {
        if n > 0 {
            if let Some(m) = &self.metrics {
                m.sig_gpu.rechecks.with_label_values(&[&self.label, why]).inc_by(n as u64);
            }
        }
    }
}

/// How long a dispatch may run before the device counts as hung: ten times
/// the prediction, never below `floor`.
fn dispatch_timeout(predicted: f64, floor: Duration) -> Duration {
    Duration::from_secs_f64((10.0 * predicted).clamp(floor.as_secs_f64(), 3600.0_f64.max(floor.as_secs_f64())))
}
