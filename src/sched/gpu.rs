//! The GPU engine: one thread per adapter, keeping its context's dispatch
//! ring full with chunks of the current job, sized to the measured rate so a
//! dispatch takes about `dispatch_time`.
//!
//! - A new job is noticed before every submit, so it reaches the GPU within
//!   one dispatch; the switch is complete (metric `hashrig_job_switch_seconds
//!   {engine="gpu"}`) when the last dispatch of an older job has retired.
//! - Every candidate is re-hashed on the CPU before it leaves the engine; a
//!   top word that disagrees is a hardware error, never a share.
//! - The engine thread (packing headers, submitting, re-checking hits) runs
//!   on the NUMA node nearest the GPU's PCIe slot where hwloc knows it
//!   (`GpuConfig::feeder`, `topo::locality`), best effort.
//! - Device loss (or a hung dispatch): the engine gives its in-flight chunks
//!   back to the scheduler, counts and logs the loss, and stops; the other
//!   engines carry on.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::chain::Header;
use crate::gpu::context::{dispatch_timeout, verify, DispatchResult, Verdict, MAX_DISPATCH};
use crate::gpu::kernel::Params;
use crate::gpu::{AdapterShare, AdapterShares, GpuContext, GpuError};
use crate::metrics::Metrics;
use crate::pow::{self, NonceRange, SearchInput};
use crate::topo::{NodeAffinity, Topology};

use super::job::{ActiveJob, Chunk, Hit, PowScheduler};
use super::stats::Stats;

/// Kernel time one dispatch aims at. With 3 in flight a new job waits at
/// most about 3 of these for the last stale dispatch: well under 100 ms.
pub const DEFAULT_DISPATCH_TIME: Duration = Duration::from_millis(20);

#[derive(Clone, Debug)]
pub struct GpuConfig {
    /// Metrics label, "gpu0", "gpu1", … ([`crate::gpu::label`])
    pub device: String,
    pub dispatch_time: Duration,
    /// The CPUs the engine thread is bound to (the NUMA node nearest the
    /// GPU); `None` leaves it unpinned.
    pub feeder: Option<NodeAffinity>,
    /// What the engine shares with the signature engine and the thermal
    /// guard on its adapter: it yields to signature dispatches and pauses
    /// for the duty cycle it reads there.
    pub share: Arc<AdapterShare>,
}

pub struct GpuEngine {
    thread: JoinHandle<()>,
    pub device: String,
    pub adapter: String,
    lost: Arc<AtomicBool>,
}

impl GpuEngine {
    /// Runs `ctx` (built and tuned by the caller) on its own thread. The
    /// engine first runs a known-answer self-test on the GPU and stops
    /// (leaving mining to the other engines) if it fails.
    pub fn start(
        ctx: GpuContext,
        cfg: GpuConfig,
        sched: Arc<PowScheduler>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<GpuEngine> {
        let lost = Arc::new(AtomicBool::new(false));
        let adapter = ctx.summary.name.clone();
        metrics
            .gpu
            .adapter_info
            .with_label_values(&[
                &cfg.device,
                &adapter,
                &ctx.summary.driver,
                &ctx.summary.backend,
                &ctx.tune.to_string(),
            ])
            .set(1);
        let w = Worker { ctx, cfg: cfg.clone(), sched, stats, metrics, stop, lost: lost.clone() };
        let thread = std::thread::Builder::new().name(format!("{}-engine", cfg.device)).spawn(move || w.run())?;
        Ok(GpuEngine { thread, device: cfg.device, adapter, lost })
    }

    /// The device was lost (or failed its self-test) and the engine stopped.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    pub fn join(self) {
        let _ = self.thread.join();
    }
}

/// One engine per (device label, context), with the default dispatch time,
/// each fed from the NUMA node nearest its GPU in `topo` (unpinned where
/// that is unknown) and given its adapter's share of `shares`.
pub fn start_engines(
    gpus: Vec<(String, GpuContext)>,
    topo: &Topology,
    shares: &AdapterShares,
    sched: &Arc<PowScheduler>,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
    stop: &Arc<AtomicBool>,
) -> std::io::Result<Vec<GpuEngine>> {
    gpus.into_iter()
        .map(|(device, ctx)| {
            let feeder = ctx.summary.feeder_affinity(topo);
            match &feeder {
                Some(f) => tracing::info!(
                    "{device}: fed from NUMA node {} (PUs {})",
                    f.numa_node,
                    crate::topo::fmt_ranges(f.pus.iter().copied())
                ),
                None => tracing::debug!(
                    "{device}: NUMA node of the GPU unknown (bus id {:?}); its engine thread is not pinned",
                    ctx.summary.pci_bus_id
                ),
            }
            let share = shares.of(ctx.summary.index);
            let cfg = GpuConfig { device, dispatch_time: DEFAULT_DISPATCH_TIME, feeder, share };
            GpuEngine::start(ctx, cfg, sched.clone(), stats.clone(), metrics.clone(), stop.clone())
        })
        .collect()
}

/// Block 100000 around its real nonce, on the GPU, through the same ring.
pub fn self_test(ctx: &mut GpuContext) -> Result<(), GpuError> {
    let (header, input) = super::cpu::known_answer();
    let out = ctx.scan(&input, NonceRange::new(header.nonce - 5000, 10_000), 4096)?;
    if out.hits == [header.nonce] && out.hardware_errors.is_empty() {
        Ok(())
    } else {
        Err(GpuError::SelfTest(format!(
            "found {:?} (hardware errors {:?}), expected [{}]",
            out.hits, out.hardware_errors, header.nonce
        )))
    }
}

struct InFlight {
    slot: usize,
    chunk: Chunk,
    work: Arc<Work>,
}

/// A header being mined and what the kernel and the re-check need of it.
struct Work {
    seq: u64,
    extranonce2: u64,
    header: Header,
    input: SearchInput,
    params: Params,
}

struct Worker {
    ctx: GpuContext,
    cfg: GpuConfig,
    sched: Arc<PowScheduler>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    lost: Arc<AtomicBool>,
}

/// The worker's per-device metric handles, resolved once.
struct Meters {
    hashes: prometheus::IntCounter,
    hw_errors: prometheus::IntCounter,
    switch: prometheus::Histogram,
    dispatch_seconds: prometheus::Histogram,
    overflows: prometheus::IntCounter,
}

/// The dispatch ring and what the worker measures as it turns.
struct Ring {
    /// Slots free to submit into.
    free: Vec<usize>,
    /// Submitted dispatches, oldest first.
    inflight: VecDeque<InFlight>,
    /// The header being mined (reused while the job and extranonce stay).
    work: Option<Arc<Work>>,
    /// Nonces/s; the first dispatches measure it.
    rate: f64,
    /// The newest job seen.
    seen_seq: u64,
    /// (new job's seq, when it was published) until the last older
    /// dispatch retires.
    switching: Option<(u64, Instant)>,
    last_done: Option<Instant>,
    /// Dispatches smaller than this do not update the rate.
    min_dispatch: u64,
}

impl Ring {
    /// The job switch is complete once no dispatch of an older job is left.
    fn note_switch(&mut self, switch: &prometheus::Histogram) {
        if let Some((seq, published)) = self.switching {
            if self.inflight.iter().all(|f| f.work.seq >= seq) {
                switch.observe(published.elapsed().as_secs_f64());
                self.switching = None;
            }
        }
    }
}

impl Worker {
    fn run(mut self) {
        let dev = self.cfg.device.clone();
        if let Some(feeder) = &self.cfg.feeder {
            crate::topo::pin_to_node_or_warn(feeder, &format!("{dev} engine thread"));
        }
        if !self.passes_self_test() {
            return;
        }
        let m = &self.metrics;
        let meters = Meters {
            hashes: m.hashes.with_label_values(&["gpu", &dev]),
            hw_errors: m.hardware_errors.with_label_values(&["gpu", &dev]),
            switch: m.job_switch_seconds.with_label_values(&["gpu"]),
            dispatch_seconds: m.gpu.dispatch_seconds.with_label_values(&[&dev]),
            overflows: m.gpu.hit_overflows.with_label_values(&[&dev]),
        };
        let mut ring = Ring {
            free: (0..self.ctx.depth()).rev().collect(),
            inflight: VecDeque::new(),
            work: None,
            rate: 50e6,
            seen_seq: 0,
            switching: None,
            last_done: None,
            min_dispatch: (self.ctx.tune.wg as u64 * self.ctx.tune.npt as u64).max(1024),
        };
        let failure = loop {
            if self.stop.load(Ordering::Relaxed) {
                break None;
            }
            if let Err(e) = self.fill(&mut ring) {
                break Some(e);
            }
            ring.note_switch(&meters.switch);
            let Some(f) = ring.inflight.pop_front() else {
                if self.cfg.share.sig_pending() {
                    std::thread::sleep(Duration::from_micros(200));
                    continue;
                }
                self.sched.wait_for_change(ring.seen_seq, Duration::from_millis(100));
                continue;
            };
            let res = match self.ctx.wait(f.slot, dispatch_timeout(f.chunk.range.len())) {
                Ok(r) => r,
                Err(e) => {
                    self.sched.return_chunk(f.chunk);
                    break Some(e);
                }
            };
            ring.free.push(f.slot);
            self.account(&mut ring, &meters, &res);
            self.check_hits(&f, &res, &meters);
            ring.note_switch(&meters.switch);
        };
        self.finish(ring, failure);
    }

    /// The known-answer test before any work; a failure takes the engine
    /// off (the other engines mine on).
    fn passes_self_test(&mut self) -> bool {
        match self_test(&mut self.ctx) {
            Ok(()) => {
                self.metrics.self_tests.with_label_values(&["gpu", "passed"]).inc();
                true
            }
            Err(e) => {
                self.metrics.self_tests.with_label_values(&["gpu", "failed"]).inc();
                tracing::error!(device = %self.cfg.device, adapter = %self.ctx.summary.name, "GPU self-test failed: {e}; the GPU engine stops");
                self.lost.store(true, Ordering::Release);
                false
            }
        }
    }

    /// Fill the ring with chunks of the current job; an error is a lost
    /// device (the chunk that failed went back to the scheduler).
    fn fill(&mut self, ring: &mut Ring) -> Result<(), GpuError> {
        while let Some(&slot) = ring.free.last() {
            // Signature dispatches on this adapter go first (gpu::share):
            // none while one is pending, one in flight while they may come.
            // A GPU the thermal guard slowed also keeps one in flight, and
            // pauses after it (`account`).
            let share = &self.cfg.share;
            if share.sig_pending() || ((share.sig_engine_on() || share.throttled()) && !ring.inflight.is_empty()) {
                break;
            }
            let Some(job) = self.sched.current() else { break };
            if job.seq != ring.seen_seq {
                ring.seen_seq = job.seq;
                ring.switching = Some((job.seq, job.published));
            }
            let want = self.dispatch_size(&job, ring.rate, ring.min_dispatch);
            let Some(chunk) = self.sched.next_chunk(&job, want) else { break };
            let Some(w) = self.work_for(&job, &chunk, &mut ring.work) else {
                self.sched.return_chunk(chunk);
                break;
            };
            if let Err(e) = self.ctx.submit(slot, &w.params, chunk.range) {
                self.sched.return_chunk(chunk);
                return Err(e);
            }
            ring.free.pop();
            ring.inflight.push_back(InFlight { slot, chunk, work: w });
        }
        Ok(())
    }

    /// Count a retired dispatch's hashes, learn the rate from it, and keep
    /// the thermal guard's duty cycle.
    fn account(&self, ring: &mut Ring, meters: &Meters, res: &DispatchResult) {
        let now = Instant::now();
        let n = res.range.len();
        meters.hashes.inc_by(n);
        self.stats.hashes.fetch_add(n, Ordering::Relaxed);
        // Throughput: kernel time where measured, else the gap between
        // completions (the ring keeps the GPU busy, so that is its pace).
        let busy = res
            .kernel_seconds
            .or_else(|| ring.last_done.map(|t| now.duration_since(t).as_secs_f64().min(res.wall.as_secs_f64())));
        ring.last_done = Some(now);
        if let Some(dt) = busy.filter(|d| *d > 0.0) {
            meters.dispatch_seconds.observe(dt);
            if n >= ring.min_dispatch {
                ring.rate = 0.7 * ring.rate + 0.3 * (n as f64 / dt);
            }
            // Thermal guard (the share's duty cycle): idle for the rest of the cycle.
            if let Some(pause) = self.cfg.share.pause_after(Duration::from_secs_f64(dt)) {
                std::thread::sleep(pause);
                ring.last_done = Some(Instant::now());
            }
        }
    }

    /// Every candidate re-hashed on the CPU before it is reported; a GPU
    /// whose hits overflowed its slots has its range re-scanned on the CPU.
    fn check_hits(&self, f: &InFlight, res: &DispatchResult, meters: &Meters) {
        if res.overflowed {
            meters.overflows.inc();
            let n = res.range.len();
            tracing::warn!(device = %self.cfg.device, "more hits than GPU slots in one dispatch; re-scanning {n} nonces on the CPU");
            let mut hits = Vec::new();
            pow::scan(pow::detect(), &f.work.input, res.range, &mut hits);
            if hits.len() > super::job::MAX_HITS_PER_CHUNK {
                self.sched.dropped_hits("chunk_cap", (hits.len() - super::job::MAX_HITS_PER_CHUNK) as u64);
                hits.truncate(super::job::MAX_HITS_PER_CHUNK);
            }
            for nonce in hits {
                self.report(f, nonce);
            }
            return;
        }
        for &(nonce, top) in &res.candidates {
            match verify(&f.work.input, nonce, top) {
                Verdict::Hit => self.report(f, nonce),
                Verdict::Miss => {}
                Verdict::Mismatch { cpu_top } => {
                    meters.hw_errors.inc();
                    self.stats.hw_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(device = %self.cfg.device, nonce, gpu_top = top, cpu_top, "hardware error: GPU hit fails the CPU re-check");
                }
            }
        }
    }

    /// Stopping: let the ring drain so the device is idle when dropped. Lost:
    /// give the unfinished chunks back to the other engines.
    fn finish(&mut self, mut ring: Ring, failure: Option<GpuError>) {
        let Some(e) = failure else {
            for f in ring.inflight.drain(..) {
                let _ = self.ctx.wait(f.slot, dispatch_timeout(f.chunk.range.len()));
            }
            return;
        };
        for f in ring.inflight.drain(..) {
            self.sched.return_chunk(f.chunk);
        }
        self.lost.store(true, Ordering::Release);
        let dev = &self.cfg.device;
        self.metrics.gpu.device_lost.with_label_values(&[dev]).inc();
        tracing::error!(
            device = %dev,
            adapter = %self.ctx.summary.name,
            "GPU engine stops: {e}; its unfinished work went back to the other engines"
        );
    }

    /// Nonces for the next dispatch: `dispatch_time` at the measured rate,
    /// and few enough that the expected hits fit the slots four times over.
    fn dispatch_size(&self, job: &ActiveJob, rate: f64, min: u64) -> u64 {
        let mut n = (rate * self.cfg.dispatch_time.as_secs_f64()) as u64;
        let top = job.job.share_target.to_le_bytes();
        let p_hit = (u32::from_le_bytes([top[28], top[29], top[30], top[31]]) as f64 + 1.0) / 4294967296.0;
        let fits = (self.ctx.hit_slots() as f64 / 4.0 / p_hit) as u64;
        n = n.min(fits);
        n.clamp(min.min(fits.max(1)), MAX_DISPATCH)
    }

    /// The header for `chunk`, built once per (job, extranonce2).
    fn work_for(&self, job: &Arc<ActiveJob>, chunk: &Chunk, cache: &mut Option<Arc<Work>>) -> Option<Arc<Work>> {
        if let Some(w) = cache.as_ref().filter(|w| w.seq == job.seq && w.extranonce2 == chunk.extranonce2) {
            return Some(w.clone());
        }
        let header = match job.job.template.header(chunk.extranonce2, 0) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(job = %job.job.id, "cannot build header: {e}");
                return None;
            }
        };
        let input = SearchInput::new(&header.to_bytes(), &job.job.share_target.to_le_bytes());
        let params = Params::for_header(&input);
        let w = Arc::new(Work { seq: job.seq, extranonce2: chunk.extranonce2, header, input, params });
        *cache = Some(w.clone());
        Some(w)
    }

    /// Re-checks `nonce` through the independent header hash and reports it.
    fn report(&self, f: &InFlight, nonce: u32) {
        let mut h = f.work.header;
        h.nonce = nonce;
        let hash = h.block_hash();
        if f.chunk.job.job.share_target.is_met_by(&hash) {
            self.sched.report(Hit {
                job: f.chunk.job.clone(),
                extranonce2: f.chunk.extranonce2,
                header: h,
                hash,
                engine: "gpu",
                device: self.cfg.device.clone(),
            });
        } else {
            self.metrics.hardware_errors.with_label_values(&["gpu", &self.cfg.device]).inc();
            self.stats.hw_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(device = %self.cfg.device, nonce, %hash, "hardware error: hit fails the header re-check");
        }
    }
}
