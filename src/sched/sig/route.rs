//! Where a batch goes: both cost models in one place.
//!
//!   CPU: t_cpu = A / T + n·c        (inline, one thread)
//!        t_cpu = (A + n·c) / T      (split over all T threads)
//!   GPU: t_gpu = L0 + B + n·g + n·r·c / T
//!
//! with c the CPU's seconds per item (learnt from CPU time, per family), A
//! the CPU work already ahead (booked by batches running on the CPU and
//! batches still queued), g the GPU's seconds per item, B its booked
//! backlog (queued and in flight, booked when a job is queued there), and
//! r the share of GPU verdicts the trust policy re-verifies on the CPU (the
//! observed invalid rate plus the sample): a flood of invalid signatures
//! makes the GPU cost CPU time too, and then the CPU wins.
//!
//! A batch small enough to run inline goes whole to whichever ends first. A
//! larger one is split where that ends sooner than the CPU alone (even when
//! the whole batch would not be faster on the GPU): the GPU gets the share
//! f of the tail that makes both parts end together:
//!   A/T + (1 − f)·n·c/T = L0 + B + f·n·(g + r·c/T)
//!   ⇒ f = (n·c/T + A/T − L0 − B) / (n·(c/T + g + r·c/T))
//! The GPU (whole or split) must win by a tenth of the batch's own CPU
//! time and 0.2 ms: a marginal win
//! buys nothing and a prediction's error can turn it into a later answer.
//! A deadline vetoes the GPU where its prediction misses it and the CPU's
//! does not.
//!
//! Each side's cost is learnt only from the work it is given, so a cost
//! estimated too high would never be corrected once the other side takes
//! everything. The GPU has its calibration; the CPU is probed: when its
//! cost for a batch's families has not been measured for `CPU_PROBE_AFTER`,
//! one batch the GPU would take runs on the CPU instead (at most one per
//! interval). One measurement counts as at most four times the estimate,
//! so a burst on a noisy neighbour moves it little, and one under half the
//! estimate halves it at once, so a high estimate heals in a few probes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::gpu::GpuSigEngine;
use super::{EngineChoice, Inner};
use crate::sig::{Family, PerFamily, SigItem};

/// The GPU must win by this much to be used: a tenth of the batch's own
/// CPU time, and 0.2 ms. Predictions carry errors (a thread hop or two, a
/// wake-up, the canaries' share) that can turn a marginal win into a later
/// answer, and a marginal win buys nothing.
const GPU_MARGIN: f64 = 0.1;
const GPU_MARGIN_SECS: f64 = 200e-6;

/// Whether finishing at `t_gpu` instead of `t_cpu` is worth a hand-off,
/// `own` being the batch's own share of `t_cpu` (without the work ahead).
fn gpu_wins(t_gpu: f64, t_cpu: f64, own: f64) -> bool {
    t_cpu - t_gpu > GPU_MARGIN * own + GPU_MARGIN_SECS
}

/// Seconds per item on one thread until measured, per family: an Ed25519
/// batch on a 2020s server core ~17 µs, libsecp256k1's ECDSA and BIP340
/// ~40 µs (README, performance).
const CPU_ITEM_SECS_DEFAULT: PerFamily<f64> = PerFamily { ed25519: 20e-6, ecdsa: 40e-6, schnorr: 38e-6 };

/// Batches of at least this many items teach the CPU's cost per item:
/// smaller ones are dominated by per-batch costs (an Ed25519 batch of one
/// is a single verification, several times a batched item's cost).
pub(super) const CPU_LEARN_MIN: usize = 16;

/// A family's CPU cost not measured for this long is probed (module doc).
const CPU_PROBE_AFTER: Duration = Duration::from_millis(250);

/// One measurement above the CPU's estimate counts as at most this many
/// times it (one burst on a noisy neighbour must not lock the CPU out).
const CPU_SAMPLE_CLAMP: f64 = 4.0;

fn load(a: &AtomicU64) -> f64 {
    f64::from_bits(a.load(Ordering::Relaxed))
}

fn store(a: &AtomicU64, x: f64) {
    a.store(x.to_bits(), Ordering::Relaxed)
}

/// The CPU side's measured costs and booked work.
pub(super) struct Costs {
    /// CPU seconds per item, per family (f64 bits).
    cpu_item_secs: PerFamily<AtomicU64>,
    /// Share of items found invalid, a moving average over items (f64 bits).
    invalid_share: AtomicU64,
    /// Predicted CPU seconds (ns) of the batches running on the CPU.
    cpu_booked_ns: AtomicU64,
    /// When each family's cost was last measured, and when the CPU was
    /// last probed (ns since `epoch`).
    epoch: Instant,
    cpu_learnt_ns: PerFamily<AtomicU64>,
    probed_ns: AtomicU64,
}

impl Costs {
    pub(super) fn new() -> Costs {
        Costs {
            cpu_item_secs: CPU_ITEM_SECS_DEFAULT.map(|x| AtomicU64::new(x.to_bits())),
            invalid_share: AtomicU64::new(0),
            cpu_booked_ns: AtomicU64::new(0),
            epoch: Instant::now(),
            cpu_learnt_ns: Default::default(),
            probed_ns: AtomicU64::new(0),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    pub(super) fn cpu_secs(&self, family: Family) -> f64 {
        load(&self.cpu_item_secs[family])
    }

    /// Learns from `items` having taken `cpu_secs` of CPU time: each family
    /// in them is scaled by the measured ÷ predicted ratio (for a batch of
    /// one family, a moving average of its time per item), clamped.
    pub(super) fn learn_cpu(&self, items: &[SigItem], cpu_secs: f64) {
        let predicted = self.cpu_work(items);
        if items.len() < CPU_LEARN_MIN || !(cpu_secs > 0.0 && predicted > 0.0) {
            return;
        }
        // A moving average for the usual noise; a sample under half the
        // estimate halves the distance at once, so an estimate left high by
        // a burst heals in a few probes (too low only sends work to the CPU,
        // which is what CPU-only would do).
        let ratio = (cpu_secs / predicted).min(CPU_SAMPLE_CLAMP);
        let scale = if ratio < 0.5 { 0.5 + 0.5 * ratio } else { 0.9 + 0.1 * ratio };
        let now = self.now_ns();
        let mut seen = PerFamily::<bool>::default();
        for i in items {
            seen[i.scheme.family()] = true;
        }
        for f in Family::ALL.into_iter().filter(|&f| seen[f]) {
            store(&self.cpu_item_secs[f], self.cpu_secs(f) * scale);
            self.cpu_learnt_ns[f].store(now, Ordering::Relaxed);
        }
    }

    /// Whether `items`, which the GPU would take, run on the CPU instead to
    /// measure it again (module doc): some family in them has not been
    /// measured for `CPU_PROBE_AFTER`, and no other probe ran in that time.
    fn probe_cpu(&self, items: &[SigItem]) -> bool {
        if items.len() < CPU_LEARN_MIN {
            return false;
        }
        let now = self.now_ns();
        let after = CPU_PROBE_AFTER.as_nanos() as u64;
        let stale = items
            .iter()
            .any(|i| now.saturating_sub(self.cpu_learnt_ns[i.scheme.family()].load(Ordering::Relaxed)) > after);
        let last = self.probed_ns.load(Ordering::Relaxed);
        stale
            && now.saturating_sub(last) > after
            && self.probed_ns.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Sets a family's cost per item (tests: a wrong estimate must heal).
    pub(super) fn set_cpu_secs(&self, family: Family, secs: f64) {
        store(&self.cpu_item_secs[family], secs);
    }

    /// `invalid` of `n` items were invalid.
    pub(super) fn learn_verdicts(&self, invalid: usize, n: usize) {
        if n == 0 {
            return;
        }
        let w = (n as f64 / 1024.0).min(1.0);
        let old = load(&self.invalid_share);
        store(&self.invalid_share, old + (invalid as f64 / n as f64 - old) * w);
    }

    pub(super) fn invalid_share(&self) -> f64 {
        load(&self.invalid_share)
    }

    /// CPU seconds for `items` on one thread.
    pub(super) fn cpu_work(&self, items: &[SigItem]) -> f64 {
        let c = self.cpu_item_secs.each_ref().map(load);
        items.iter().map(|i| c[i.scheme.family()]).sum()
    }

    /// Books `secs` of CPU work until the returned guard is dropped.
    pub(super) fn book_cpu(self: &Arc<Self>, secs: f64) -> Booked {
        let ns = (secs * 1e9) as u64;
        self.cpu_booked_ns.fetch_add(ns, Ordering::Relaxed);
        Booked { costs: self.clone(), ns }
    }

    pub(super) fn cpu_booked(&self) -> f64 {
        self.cpu_booked_ns.load(Ordering::Relaxed) as f64 * 1e-9
    }
}

/// CPU work booked while a batch runs.
pub(super) struct Booked {
    costs: Arc<Costs>,
    ns: u64,
}

impl Drop for Booked {
    fn drop(&mut self) {
        self.costs.cpu_booked_ns.fetch_sub(self.ns, Ordering::Relaxed);
    }
}

/// Where one batch goes.
#[derive(Clone)]
pub(super) enum Route {
    Cpu,
    Gpu(Arc<GpuSigEngine>),
    /// The last `usize` items to the GPU, the rest on the CPU.
    Split(Arc<GpuSigEngine>, usize),
}

impl Inner {
    /// Where `items` finish first (see the module's cost models).
    /// `EngineChoice::Gpu` sends every batch to the GPU with the earliest
    /// predicted finish.
    pub(super) fn route(&self, items: &[SigItem], deadline: Option<Instant>) -> Route {
        let n = items.len();
        if self.cfg.engines == EngineChoice::Cpu || n == 0 {
            return Route::Cpu;
        }
        // No active GPU (the common case on CPU-only servers): nothing to scan.
        let best = {
            let gpus = self.gpus.read();
            gpus.iter()
                .filter(|g| g.is_active())
                .map(|g| (g.prediction(items), g.clone()))
                .min_by(|a, b| a.0.total().total_cmp(&b.0.total()))
        };
        let Some((p, gpu)) = best else { return Route::Cpu };
        if self.cfg.engines == EngineChoice::Gpu {
            return Route::Gpu(gpu);
        }
        let t = self.threads().max(1) as f64;
        let nf = n as f64;
        let work = self.costs.cpu_work(items);
        let c = work / nf; // one thread's seconds per item
        let ahead = self.costs.cpu_booked() + self.heap_items() as f64 * c;
        let inline = n <= self.cfg.inline_max || t == 1.0;
        let own = if inline { work } else { work / t };
        let t_cpu = ahead / t + own;
        // What the trust policy re-verifies on the CPU, after the GPU's answer.
        let r = (self.costs.invalid_share() + 1.0 / gpu.sample_one_in() as f64).min(1.0);
        let t_gpu = p.total() + nf * r * c / t;
        let now = Instant::now();
        let misses = |secs: f64| deadline.is_some_and(|d| now + Duration::from_secs_f64(secs) > d);
        let vetoed = |secs: f64| misses(secs) && !misses(t_cpu);
        let whole_gpu = || {
            if gpu_wins(t_gpu, t_cpu, own) && !vetoed(t_gpu) && !self.costs.probe_cpu(items) {
                Route::Gpu(gpu.clone())
            } else {
                Route::Cpu
            }
        };
        if inline {
            return whole_gpu();
        }
        // A split can pay where the whole batch on the GPU would not.
        let (l0, b, g) = (p.l0, p.ahead, p.work / nf);
        let f = ((nf * c / t + ahead / t - l0 - b) / (nf * (c / t + g + r * c / t))).clamp(0.0, 1.0);
        let gpu_n = (f * nf).round() as usize;
        let t_split = (ahead + (n - gpu_n) as f64 * c) / t;
        // Both parts end together at t_split (that is how f is chosen).
        if gpu_n == 0 || !gpu_wins(t_split, t_cpu, own) || vetoed(t_split) {
            Route::Cpu
        } else if n - gpu_n < self.cfg.chunk_min {
            whole_gpu()
        } else {
            Route::Split(gpu, gpu_n)
        }
    }
}
