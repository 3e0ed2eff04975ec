//! Signature checks on a GPU, under a trust policy, with the cost model the
//! signature engine's split uses (docs/gpu-signatures.md).
//!
//! **Trust policy: no wrong verdict leaves.** Every dispatch carries
//! known-answer canaries (valid and invalid items, the edge cases among
//! them) at random positions; every GPU "invalid" is re-verified on the
//! CPU; a sample of GPU "valid" verdicts (every one for the first
//! dispatches after start-up) is re-verified too. On any disagreement the
//! batch is answered from the CPU and the adapter is taken off signature
//! work for good (log line, `hashrig_sig_gpu_mismatches_total`); a PoW
//! engine on the same adapter is not affected.
//!
//! **Locality.** Each engine has one feeder thread, bound to the NUMA node
//! nearest the adapter's PCIe slot where hwloc knows it: the hashing and
//! packing of items, the dispatches and the CPU re-checks all run there.
//!
//! **Cost model.** Each dispatch measures its wall time (submit to verdicts
//! readable); tiny dispatches update the fixed latency L0, larger ones the
//! time per item of each kernel family (Ed25519, ECDSA, BIP340: their costs
//! differ), all as moving averages. [`GpuSigEngine::predict`] adds what is
//! already queued on this GPU.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::Rng;

use crate::gpu::sig::GpuSigKernels;
use crate::gpu::{GpuAdapter, GpuError};
use crate::metrics::Metrics;
use crate::sig::{demo, verify_batch, verify_one, Reason, Scheme, SigItem, Verdict, FAMILIES};
use crate::topo::NodeAffinity;

/// How far GPU verdicts are trusted.
#[derive(Clone, Debug)]
pub struct TrustPolicy {
    /// Re-verify one in this many GPU "valid" verdicts on the CPU (1 = all).
    pub sample_one_in: u32,
    /// Dispatches after start-up whose every verdict is re-verified.
    pub warmup_dispatches: u64,
    /// Known-answer items added to every dispatch.
    pub canaries: usize,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy { sample_one_in: 256, warmup_dispatches: 16, canaries: 4 }
    }
}

/// What [`GpuSigEngine::verify`] did with a batch.
#[derive(Clone, Debug)]
pub struct GpuAnswer {
    pub verdicts: Vec<Verdict>,
    /// GPU wall time of the dispatch.
    pub wall: Duration,
    /// Verdicts re-verified on the CPU (canaries not counted).
    pub rechecked: usize,
    /// The GPU disagreed with the CPU: these verdicts are all the CPU's, and
    /// the adapter is now off signature work.
    pub mismatch: bool,
}

/// Why a batch was not verified on this GPU (the caller answers it on the CPU).
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the adapter is off signature work: {0}")]
    Off(String),
    #[error(transparent)]
    Gpu(#[from] GpuError),
}

/// Items, CPU re-checks and mismatches since start, for summaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct GpuSigTotals {
    pub items: u64,
    pub rechecked: u64,
    pub mismatches: u64,
    pub dispatches: u64,
}

/// Measured fixed latency and time per item of each family.
#[derive(Clone, Copy, Debug)]
struct Model {
    l0: f64,
    per_item: [f64; 3],
}

impl Model {
    /// Predicted seconds of kernel work for `items` (without L0).
    fn work(&self, items: &[SigItem]) -> f64 {
        items.iter().map(|i| self.per_item[i.scheme.family()]).sum()
    }
}

/// A batch handed to the feeder thread.
struct Job {
    items: Vec<SigItem>,
    reply: crossbeam_channel::Sender<Result<GpuAnswer, Refused>>,
}

pub struct GpuSigEngine {
    /// "gpu0", "gpu1", … (the adapter's enumeration index): metric label.
    pub label: String,
    pub name: String,
    pub software: bool,
    /// The adapter's enumeration index (`gpu::priority`).
    index: usize,
    dev: Mutex<GpuSigKernels>,
    policy: TrustPolicy,
    active: AtomicBool,
    off_reason: Mutex<String>,
    dispatches: AtomicU64,
    items: AtomicU64,
    rechecked: AtomicU64,
    mismatches: AtomicU64,
    /// Predicted work (ns) handed to this GPU and not yet answered.
    queued_ns: AtomicU64,
    model: Mutex<Model>,
    canaries: Vec<(SigItem, Verdict)>,
    /// Positions in `canaries` by family.
    canary_index: [Vec<usize>; 3],
    /// Test hook: flip the verdict of every n-th item the GPU returns (0 = off).
    fault_every: AtomicU32,
    metrics: Option<Arc<Metrics>>,
    /// To the feeder thread (which exits when this engine is dropped).
    jobs: Mutex<Option<crossbeam_channel::Sender<Job>>>,
    /// Registered on the adapter while on signature work (`gpu::priority`).
    on_adapter: Mutex<Option<crate::gpu::priority::SigEngineOn>>,
}

/// Known-answer items for canaries, each with the CPU path's verdict: valid
/// items of both policies, bad signatures, and edge cases (small-order and
/// non-canonical encodings).
fn canary_pool() -> Vec<(SigItem, Verdict)> {
    let mut items = Vec::new();
    for i in 0..24u64 {
        let scheme = if i % 2 == 0 { Scheme::Ed25519 } else { Scheme::Ed25519Strict };
        let v = demo::valid_item(scheme, 0xca9a_0000 + i);
        items.push(demo::mutate(&v, i * 7 + 1));
        items.push(v);
    }
    // Small-order key and R (the identity, y = 1) with S = 0: valid under
    // ZIP-215, small_order_pubkey under strict.
    let mut id = [0u8; 32];
    id[0] = 1;
    let sig: Vec<u8> = id.iter().chain([0u8; 32].iter()).copied().collect();
    for scheme in [Scheme::Ed25519, Scheme::Ed25519Strict] {
        items.push(SigItem::new(scheme, id.to_vec(), b"canary".to_vec(), sig.clone()));
        // y = p + 1: a non-canonical encoding of the identity.
        let mut nc = [0xffu8; 32];
        nc[0] = 0xee;
        nc[31] = 0x7f;
        items.push(SigItem::new(scheme, nc.to_vec(), b"canary".to_vec(), sig.clone()));
        // y = 2 does not decode.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        items.push(SigItem::new(scheme, bad.to_vec(), b"canary".to_vec(), sig.clone()));
    }
    // secp256k1: valid and mutated ECDSA (both high-S rules) and BIP340
    // items, a high-S signature, and keys that fail only on the curve
    // (x with no square root, a point off the curve).
    for i in 0..12u64 {
        for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
            let v = demo::valid_item(scheme, 0xca9b_0000 + i);
            items.push(demo::mutate(&v, i * 5 + 2));
            if i % 3 == 0 && scheme == Scheme::Ecdsa {
                items.push(v.clone().allow_high_s());
            }
            items.push(v);
        }
    }
    let ecdsa = demo::valid_item(Scheme::Ecdsa, 0xca9b_1000);
    if let Ok(sig) = secp256k1::ecdsa::Signature::from_compact(&ecdsa.sig) {
        // (r, n - s): high S, valid only under allow_high_s.
        let mut high = ecdsa.clone();
        let n_minus_s =
            secp256k1::SecretKey::from_secret_bytes(sig.serialize_compact()[32..].try_into().unwrap_or([1; 32]))
                .map(|s| s.negate().to_secret_bytes());
        if let Ok(ns) = n_minus_s {
            high.sig[32..].copy_from_slice(&ns);
            items.push(high.clone());
            items.push(high.allow_high_s());
        }
    }
    let mut off_curve = ecdsa.clone();
    off_curve.pubkey = [&[2u8][..], &[0u8; 31], &[5u8]].concat(); // x = 5: 5^3 + 7 is not a square
    items.push(off_curve.clone());
    off_curve.pubkey = [&[4u8][..], &[0u8; 31], &[1u8], &[0u8; 31], &[1u8]].concat(); // (1, 1)
    items.push(off_curve);
    let schnorr = demo::valid_item(Scheme::Schnorr, 0xca9b_2000);
    let mut no_root = schnorr.clone();
    no_root.pubkey = [&[0u8; 31][..], &[5u8]].concat();
    items.push(no_root);
    items.into_iter().map(|it| (it.clone(), verify_one(&it))).collect()
}

impl GpuSigEngine {
    /// Builds the kernel on `adapter` (slow: shader compilation), checks it
    /// on every canary and measures L0 and the rate, then starts the feeder
    /// thread (on `feeder`'s NUMA node when given). A GPU that gets a canary
    /// wrong is refused here.
    pub fn start(
        adapter: &GpuAdapter,
        policy: TrustPolicy,
        metrics: Option<Arc<Metrics>>,
        feeder: Option<NodeAffinity>,
    ) -> Result<Arc<GpuSigEngine>, GpuError> {
        let dev = GpuSigKernels::new(adapter)?;
        let canaries = canary_pool();
        let label = format!("gpu{}", adapter.summary.index);
        let me = GpuSigEngine {
            label,
            name: adapter.summary.name.clone(),
            software: adapter.summary.software,
            index: adapter.summary.index,
            dev: Mutex::new(dev),
            policy,
            active: AtomicBool::new(true),
            off_reason: Mutex::new(String::new()),
            dispatches: AtomicU64::new(0),
            items: AtomicU64::new(0),
            rechecked: AtomicU64::new(0),
            mismatches: AtomicU64::new(0),
            queued_ns: AtomicU64::new(0),
            model: Mutex::new(Model { l0: 0.0, per_item: [0.0; 3] }),
            canary_index: {
                let mut by: [Vec<usize>; 3] = Default::default();
                for (i, (it, _)) in canaries.iter().enumerate() {
                    by[it.scheme.family()].push(i);
                }
                by
            },
            canaries,
            fault_every: AtomicU32::new(0),
            metrics,
            jobs: Mutex::new(None),
            on_adapter: Mutex::new(None),
        };
        me.calibrate()?;
        if let Some(m) = &me.metrics {
            m.sig_gpu.active.with_label_values(&[&me.label, &me.name]).set(1);
        }
        let me = Arc::new(me);
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let weak = Arc::downgrade(&me);
        let who = format!("{} signature feeder", me.label);
        std::thread::Builder::new()
            .name(format!("sig-{}", me.label))
            .spawn(move || {
                if let Some(f) = &feeder {
                    crate::topo::pin_to_node_or_warn(f, &who);
                }
                while let Ok(job) = rx.recv() {
                    let Some(me) = weak.upgrade() else { break };
                    let _ = job.reply.send(me.verify_here(&job.items));
                }
            })
            .map_err(|e| GpuError::Driver(format!("starting the feeder thread: {e}")))?;
        *me.jobs.lock() = Some(tx);
        *me.on_adapter.lock() = Some(crate::gpu::priority::register_sig_engine(me.index));
        Ok(me)
    }

    /// Self-test and first measurements: every canary once (all must match
    /// the CPU), then L0 from single-item dispatches and the time per item
    /// of each family from one larger dispatch of its canaries.
    fn calibrate(&self) -> Result<(), GpuError> {
        let timeout = Duration::from_secs(600);
        let items: Vec<SigItem> = self.canaries.iter().map(|(i, _)| i.clone()).collect();
        let (got, _) = self.dev.lock().verify_items(&items, timeout)?;
        for ((it, want), g) in self.canaries.iter().zip(&got) {
            if *g != Some(*want) {
                return Err(GpuError::SelfTest(format!(
                    "{} known answer: GPU {g:?}, CPU {want:?} (key {})",
                    it.scheme,
                    hex::encode(&it.pubkey)
                )));
            }
        }
        let one = std::slice::from_ref(&items[1]);
        let mut l0 = f64::INFINITY;
        for _ in 0..3 {
            let (_, wall) = self.dev.lock().verify_items(one, timeout)?;
            l0 = l0.min(wall.as_secs_f64());
        }
        let n = if self.software { 256 } else { 16384 };
        let mut per_item = [0.0; 3];
        for (f, slot) in per_item.iter_mut().enumerate() {
            let own: Vec<&SigItem> = items.iter().filter(|i| i.scheme.family() == f).collect();
            let big: Vec<SigItem> = (0..n).map(|i| own[i % own.len()].clone()).collect();
            let (_, wall) = self.dev.lock().verify_items(&big, timeout)?;
            *slot = ((wall.as_secs_f64() - l0).max(wall.as_secs_f64() * 0.5)) / n as f64;
        }
        *self.model.lock() = Model { l0, per_item };
        self.publish_model();
        tracing::info!(
            adapter = %self.name,
            "signatures on the GPU: L0 {:.2} ms; verifies/s: Ed25519 {:.0}, ECDSA {:.0}, BIP340 {:.0}",
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

    /// Verifying signatures (not taken off after a mismatch or a device loss).
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// Measured fixed latency and seconds per Ed25519 item.
    pub fn model(&self) -> (f64, f64) {
        self.model_for(Scheme::Ed25519)
    }

    /// Measured fixed latency and seconds per item of `scheme`.
    pub fn model_for(&self, scheme: Scheme) -> (f64, f64) {
        let m = *self.model.lock();
        (m.l0, m.per_item[scheme.family()])
    }

    /// Predicted seconds of kernel work for `items` (without L0 and queue).
    pub fn work(&self, items: &[SigItem]) -> f64 {
        self.model.lock().work(items)
    }

    /// Predicted seconds until `items` would be answered here, counting
    /// what is already queued on this GPU and the canaries.
    pub fn predict(&self, items: &[SigItem]) -> f64 {
        let m = *self.model.lock();
        let queued = self.queued_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        let work = m.work(items);
        let avg = if items.is_empty() { m.per_item[0] } else { work / items.len() as f64 };
        m.l0 + queued + work + self.policy.canaries as f64 * avg
    }

    pub fn totals(&self) -> GpuSigTotals {
        GpuSigTotals {
            items: self.items.load(Ordering::Relaxed),
            rechecked: self.rechecked.load(Ordering::Relaxed),
            mismatches: self.mismatches.load(Ordering::Relaxed),
            dispatches: self.dispatches.load(Ordering::Relaxed),
        }
    }

    /// Test hook: the verdict of every `every`-th item of each dispatch comes
    /// back flipped (valid ↔ bad_signature), as a faulty GPU would answer.
    #[doc(hidden)]
    pub fn inject_faults(&self, every: u32) {
        self.fault_every.store(every, Ordering::Relaxed);
    }

    fn take_off(&self, why: String) {
        if self.active.swap(false, Ordering::AcqRel) {
            tracing::error!(adapter = %self.name, "GPU taken off signature work: {why}");
            *self.off_reason.lock() = why;
            // Mining on the adapter gets its full ring back.
            self.on_adapter.lock().take();
            if let Some(m) = &self.metrics {
                m.sig_gpu.active.with_label_values(&[&self.label, &self.name]).set(0);
            }
        }
    }

    /// Verifies `items` (Ed25519 ones on the GPU, any others on the CPU)
    /// under the trust policy, on the feeder thread. `Err` when the GPU could
    /// not take the batch: off signature work, or the device failed (then
    /// it is taken off).
    pub fn verify(&self, items: &[SigItem]) -> Result<GpuAnswer, Refused> {
        if !self.is_active() {
            return Err(Refused::Off(self.off_reason.lock().clone()));
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let sent = match self.jobs.lock().as_ref() {
            Some(tx) => tx.send(Job { items: items.to_vec(), reply }).is_ok(),
            None => false,
        };
        if !sent {
            return Err(Refused::Off("the feeder thread is gone".into()));
        }
        answer.recv().unwrap_or_else(|_| Err(Refused::Off("the feeder thread is gone".into())))
    }

    fn verify_here(&self, items: &[SigItem]) -> Result<GpuAnswer, Refused> {
        if !self.is_active() {
            return Err(Refused::Off(self.off_reason.lock().clone()));
        }
        let n = items.len();
        let work_ns = (self.work(items) * 1e9) as u64;
        self.queued_ns.fetch_add(work_ns, Ordering::Relaxed);
        let predicted = self.predict(&[]);
        let res = self.verify_inner(items);
        self.queued_ns.fetch_sub(work_ns, Ordering::Relaxed);
        let ans = res?;
        self.items.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            let g = &m.sig_gpu;
            g.batch_seconds.with_label_values(&[&self.label]).observe(ans.wall.as_secs_f64());
            if predicted > 0.0 {
                g.prediction_ratio.with_label_values(&[&self.label]).observe(ans.wall.as_secs_f64() / predicted);
            }
            g.engine_items.with_label_values(&[&self.label]).inc_by(n as u64);
        }
        Ok(ans)
    }

    fn verify_inner(&self, items: &[SigItem]) -> Result<GpuAnswer, Refused> {
        let mut rng = rand::rng();
        // Real items and canaries, shuffled in at random positions.
        let k = self.policy.canaries.min(self.canaries.len());
        let total = items.len() + k;
        let mut slots: Vec<Option<usize>> = (0..items.len()).map(Some).collect();
        let mut canary_at = Vec::with_capacity(k);
        for _ in 0..k {
            let pos = rng.random_range(0..=slots.len());
            slots.insert(pos, None);
        }
        // Canaries for each kernel the batch runs, in turn.
        let mut present: Vec<usize> = items.iter().map(|i| i.scheme.family()).collect();
        present.sort_unstable();
        present.dedup();
        if present.is_empty() {
            present.push(0);
        }
        let mut next_family = rng.random_range(0..present.len());
        let mut batch = Vec::with_capacity(total);
        for s in &slots {
            match s {
                Some(i) => batch.push(items[*i].clone()),
                None => {
                    let f = present[next_family % present.len()];
                    next_family += 1;
                    let own = &self.canary_index[f];
                    let c = own[rng.random_range(0..own.len())];
                    canary_at.push((batch.len(), c));
                    batch.push(self.canaries[c].0.clone());
                }
            }
        }
        let dispatch_no = self.dispatches.fetch_add(1, Ordering::Relaxed);
        let result = {
            // A PoW engine on this adapter holds its next dispatch meanwhile.
            let _first = crate::gpu::priority::sig_dispatch(self.index);
            let predicted = {
                let m = *self.model.lock();
                m.l0 + m.work(&batch)
            };
            self.dev.lock().verify_items(&batch, dispatch_timeout(predicted))
        };
        let (mut got, wall) = match result {
            Ok(r) => r,
            Err(e) => {
                self.take_off(format!("device error: {e}"));
                if let Some(m) = &self.metrics {
                    m.gpu.device_lost.with_label_values(&[&self.label]).inc();
                }
                return Err(Refused::Gpu(e));
            }
        };
        self.learn(&batch, wall);
        let every = self.fault_every.load(Ordering::Relaxed);
        if every > 0 {
            for (i, g) in got.iter_mut().enumerate() {
                if (i as u32).is_multiple_of(every) {
                    *g = g.map(|v| if v.is_valid() { Verdict::Invalid(Reason::BadSignature) } else { Verdict::Valid });
                }
            }
        }
        // Canaries first: a wrong one condemns the dispatch.
        let mut mismatch = None;
        for &(pos, c) in &canary_at {
            if got[pos] != Some(self.canaries[c].1) {
                mismatch = Some(format!("canary: GPU {:?}, known answer {:?}", got[pos], self.canaries[c].1));
            }
        }
        self.count_recheck("canary", canary_at.len());
        // The real items: which verdicts the CPU must see.
        let warm = dispatch_no < self.policy.warmup_dispatches;
        let sample = self.policy.sample_one_in.max(1);
        let mut verdicts = vec![Verdict::Valid; items.len()];
        let mut recheck_idx = Vec::new();
        let (mut n_invalid, mut n_sampled) = (0, 0);
        for (pos, s) in slots.iter().enumerate() {
            let Some(i) = *s else { continue };
            match got[pos] {
                // Not a kernel item (another scheme): the CPU answers it.
                None => verdicts[i] = verify_one(&items[i]),
                Some(v) => {
                    verdicts[i] = v;
                    if !v.is_valid() {
                        n_invalid += 1;
                        recheck_idx.push(i);
                    } else if warm || rng.random_range(0..sample) == 0 {
                        n_sampled += 1;
                        recheck_idx.push(i);
                    }
                }
            }
        }
        if mismatch.is_none() && !recheck_idx.is_empty() {
            let subset: Vec<SigItem> = recheck_idx.iter().map(|&i| items[i].clone()).collect();
            let cpu = verify_batch(&subset);
            for (&i, c) in recheck_idx.iter().zip(&cpu) {
                if verdicts[i] != *c {
                    mismatch = Some(format!("item {i}: GPU {:?}, CPU {c:?}", verdicts[i]));
                    break;
                }
            }
        }
        self.count_recheck("invalid", n_invalid);
        self.count_recheck("sampled", n_sampled);
        let rechecked = n_invalid + n_sampled;
        self.rechecked.fetch_add(rechecked as u64, Ordering::Relaxed);
        if let Some(why) = mismatch {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.sig_gpu.mismatches.with_label_values(&[&self.label]).inc();
            }
            self.take_off(format!("verdict mismatch ({why}); this batch was answered from the CPU"));
            return Ok(GpuAnswer { verdicts: verify_batch(items), wall, rechecked, mismatch: true });
        }
        Ok(GpuAnswer { verdicts, wall, rechecked, mismatch: false })
    }

    fn count_recheck(&self, why: &str, n: usize) {
        if n > 0 {
            if let Some(m) = &self.metrics {
                m.sig_gpu.rechecks.with_label_values(&[&self.label, why]).inc_by(n as u64);
            }
        }
    }

    /// Updates the model from one dispatch of `n` items that took `wall`.
    /// Updates the model from one dispatch of `batch` that took `wall`: L0
    /// from tiny ones, else each family present scaled by how far the
    /// prediction was off.
    fn learn(&self, batch: &[SigItem], wall: Duration) {
        let w = wall.as_secs_f64();
        {
            let mut m = self.model.lock();
            if batch.len() <= 8 {
                m.l0 = 0.8 * m.l0 + 0.2 * w;
            } else {
                let predicted = m.work(batch);
                if predicted > 0.0 {
                    let ratio = ((w - m.l0).max(w * 0.25)) / predicted;
                    for f in 0..FAMILIES.len() {
                        if batch.iter().any(|i| i.scheme.family() == f) {
                            m.per_item[f] *= 0.8 + 0.2 * ratio;
                        }
                    }
                }
            }
        }
        self.publish_model();
    }
}

/// How long a dispatch may run before the device counts as hung: ten times
/// the prediction, never below 10 s.
fn dispatch_timeout(predicted: f64) -> Duration {
    Duration::from_secs_f64((10.0 * predicted).clamp(10.0, 3600.0))
}
