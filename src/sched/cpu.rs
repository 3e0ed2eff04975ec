//! The CPU engine: one worker group per NUMA node, one pinned thread per
//! core, each pulling chunks sized to its own measured rate.
//!
//! Hot-loop counters stay local to the thread and are flushed once a chunk
//! (a chunk is ~10 ms of work, so that is ~100 atomic adds a second).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::chain::Header;
use crate::metrics::Metrics;
use crate::pow::{self, Backend, NonceRange, SearchInput};
use crate::topo::{PinPlan, WorkerPriority, WorkerSlot};

use super::job::{Hit, PowScheduler, MAX_HITS_PER_CHUNK};
use super::stats::Stats;

/// How long one chunk should take. Also the worst-case delay before a worker
/// notices a new job, so it bounds the job switch latency.
pub const DEFAULT_CHUNK_TIME: Duration = Duration::from_millis(10);

const MIN_CHUNK: u64 = 1 << 10;
const MAX_CHUNK: u64 = 1 << 28;

#[derive(Clone, Debug)]
pub struct CpuConfig {
    pub plan: PinPlan,
    pub backend: Backend,
    pub chunk_time: Duration,
    /// Bind threads to their cores (on by default; off for shared machines).
    pub pin: bool,
    /// How workers compete for their cores with latency work (see `topo::priority`).
    pub priority: WorkerPriority,
}

pub struct CpuEngine {
    threads: Vec<JoinHandle<()>>,
    pub backend: Backend,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("the pinning plan has no workers")]
    NoWorkers,
    #[error("could not start a worker thread: {0}")]
    Spawn(std::io::Error),
}

/// Mainnet block 100000 and its search input under its own target: the
/// known answer every engine's start-up self-test looks for.
pub fn known_answer() -> (Header, SearchInput) {
    const HEADER: &str = "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710";
    let header = Header::from_hex(HEADER).expect("a constant, valid header");
    let target = header.target().expect("block 100000's nBits are valid");
    (header, SearchInput::new(&header.to_bytes(), &target.to_le_bytes()))
}

/// Block 100000: a range of 64 nonces around its real nonce must yield exactly
/// it under the block's own target. Cheap (64 hashes) and it exercises the
/// whole path: midstate, tail, both hashes, the early exit and the full compare.
pub fn self_test(backend: Backend) -> Result<(), String> {
    let (header, input) = known_answer();
    let mut hits = Vec::new();
    let start = header.nonce - 37;
    pow::scan(backend, &input, NonceRange::new(start, 64), &mut hits);
    if hits == [header.nonce] {
        Ok(())
    } else {
        Err(format!("{} found {:?}, expected [{}]", backend.name(), hits, header.nonce))
    }
}

impl CpuEngine {
    pub fn start(
        cfg: CpuConfig,
        sched: Arc<PowScheduler>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Result<CpuEngine, EngineError> {
        if cfg.plan.worker_count() == 0 {
            return Err(EngineError::NoWorkers);
        }
        let mut threads = Vec::new();
        for group in &cfg.plan.groups {
            for slot in &group.workers {
                let w = Worker {
                    slot: slot.clone(),
                    device: format!("numa{}", slot.numa_node),
                    backend: cfg.backend,
                    chunk_time: cfg.chunk_time,
                    pin: cfg.pin,
                    priority: cfg.priority,
                    sched: sched.clone(),
                    stats: stats.clone(),
                    metrics: metrics.clone(),
                    stop: stop.clone(),
                };
                let t = std::thread::Builder::new()
                    .name(format!("cpu-worker-{}", slot.id))
                    .spawn(move || w.run())
                    .map_err(EngineError::Spawn)?;
                threads.push(t);
            }
        }
        Ok(CpuEngine { threads, backend: cfg.backend })
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Worker {
    slot: WorkerSlot,
    device: String,
    backend: Backend,
    chunk_time: Duration,
    pin: bool,
    priority: WorkerPriority,
    sched: Arc<PowScheduler>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
}

impl Worker {
    fn run(mut self) {
        let worker = self.slot.id.to_string();
        let pinned = self.pin && crate::topo::pin_or_warn(&self.slot);
        crate::topo::priority::set_or_warn(self.priority);
        self.metrics.worker_pinned.with_label_values(&["cpu", &worker]).set(pinned as i64);
        self.metrics
            .worker_info
            .with_label_values(&[
                "cpu",
                &self.device,
                &worker,
                &self.slot.numa_node.to_string(),
                &self.slot.core.to_string(),
                &self.slot.pu.to_string(),
            ])
            .set(1);
        if !self.pass_self_test() {
            return;
        }
        let hashes = self.metrics.hashes.with_label_values(&["cpu", &self.device]);
        let hw_errors = self.metrics.hardware_errors.with_label_values(&["cpu", &self.device]);
        let switch = self.metrics.job_switch_seconds.with_label_values(&["cpu"]);

        let mut rate = 1e6_f64; // nonces/s; replaced by the first measurement
        let mut seen_seq = 0;
        let mut cached: Option<(u64, u64, Header, SearchInput)> = None;
        let mut hits = Vec::new();
        while !self.stop.load(Ordering::Relaxed) {
            let Some(job) = self.sched.current() else {
                self.sched.wait_for_change(self.sched.current_seq(), Duration::from_millis(100));
                continue;
            };
            if job.seq != seen_seq {
                seen_seq = job.seq;
                switch.observe(job.published.elapsed().as_secs_f64());
            }
            let want = ((rate * self.chunk_time.as_secs_f64()) as u64)
                .clamp(MIN_CHUNK, MAX_CHUNK)
                .min(super::job::hit_bounded_chunk(job.job.share_target.difficulty(), MIN_CHUNK));
            let Some(chunk) = self.sched.next_chunk(&job, want) else {
                // Every nonce of this job is handed out: wait for the next.
                self.sched.wait_for_change(job.seq, Duration::from_millis(100));
                continue;
            };
            if cached.as_ref().is_none_or(|(s, e, _, _)| (*s, *e) != (job.seq, chunk.extranonce2)) {
                let header = match job.job.template.header(chunk.extranonce2, 0) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::error!(job = %job.job.id, "cannot build header: {e}");
                        self.sched.wait_for_change(job.seq, Duration::from_millis(100));
                        continue;
                    }
                };
                let input = SearchInput::new(&header.to_bytes(), &job.job.share_target.to_le_bytes());
                cached = Some((job.seq, chunk.extranonce2, header, input));
            }
            let (_, _, header, input) = cached.as_ref().expect("set above");

            let t0 = Instant::now();
            hits.clear();
            let n = pow::scan(self.backend, input, chunk.range, &mut hits);
            let dt = t0.elapsed().as_secs_f64();
            hashes.inc_by(n);
            self.stats.hashes.fetch_add(n, Ordering::Relaxed);
            if dt > 0.0 && n >= MIN_CHUNK {
                // Smooth, but follow a changed clock or a noisy neighbour quickly.
                rate = 0.7 * rate + 0.3 * (n as f64 / dt);
            }

            if hits.len() > MAX_HITS_PER_CHUNK {
                self.sched.dropped_hits("chunk_cap", (hits.len() - MAX_HITS_PER_CHUNK) as u64);
                hits.truncate(MAX_HITS_PER_CHUNK);
            }
            for &nonce in &hits {
                // Re-check through the independent sha2 path before anything
                // leaves the engine.
                let mut h = *header;
                h.nonce = nonce;
                let hash = h.block_hash();
                if job.job.share_target.is_met_by(&hash) {
                    self.sched.report(Hit {
                        job: job.clone(),
                        extranonce2: chunk.extranonce2,
                        header: h,
                        hash,
                        engine: "cpu",
                        device: self.device.clone(),
                    });
                } else {
                    hw_errors.inc();
                    self.stats.hw_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(worker = self.slot.id, nonce, %hash, "hardware error: kernel hit fails the re-check");
                }
            }
        }
    }

    /// Runs the known-answer test; on failure falls back to the scalar path
    /// (slow but simple) and stops the worker if even that fails.
    fn pass_self_test(&mut self) -> bool {
        let ok = self.metrics.self_tests.with_label_values(&["cpu", "passed"]);
        let failed = self.metrics.self_tests.with_label_values(&["cpu", "failed"]);
        match self_test(self.backend) {
            Ok(()) => {
                ok.inc();
                true
            }
            Err(e) => {
                failed.inc();
                tracing::error!(worker = self.slot.id, "self-test failed: {e}; falling back to the scalar path");
                self.backend = Backend::Scalar;
                match self_test(Backend::Scalar) {
                    Ok(()) => true,
                    Err(e) => {
                        failed.inc();
                        tracing::error!(worker = self.slot.id, "scalar self-test failed too: {e}; worker stops");
                        false
                    }
                }
            }
        }
    }
}
