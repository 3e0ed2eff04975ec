//! Signature verification on one adapter: the Ed25519 kernel
//! (kernels/ed25519_verify.wgsl) and the secp256k1 one (ECDSA and BIP340,
//! kernels/secp256k1_verify.wgsl) on one device, with their pipelines and
//! buffers. This layer runs dispatches and nothing else: which items come
//! here, the canaries and the CPU re-checks are the scheduler's
//! (`sched::sig::gpu`); building the kernels is `build.rs`, the item encodings are
//! [`crate::sig::ed25519::gpu_encode`] and [`crate::sig::secp::gpu`].
//!
//! A dispatch is: write the items → clear the verdict words → one compute
//! pass → copy verdicts to a staging buffer → map. Verdict bytes come back
//! exactly as the kernel wrote them (0 valid, else a `sig::Reason` code).
//!
//! [`msm`] is the other way to check an Ed25519 or BIP340 batch: one batch
//! equation as a multi-scalar multiplication, with its own device and kernel.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::GpuError;
use crate::sig::ed25519::{gpu_encode, GPU_ITEM_WORDS};
use crate::sig::secp::gpu as secp_gpu;
use crate::sig::{Reason, SigItem, Verdict};

mod build;
pub mod msm;
use build::Kernel;
pub use msm::{BatchVerdict, Curve, Equation, GpuMsm};

const WORKGROUP: u32 = 64;
/// Items per dispatch at most (larger calls are cut into several).
pub const MAX_ITEMS: usize = 1 << 20;

/// The device's "lost" flag and why, shared with its error handler.
pub(super) struct Loss {
    lost: Arc<AtomicBool>,
    reason: Arc<Mutex<String>>,
}

impl Loss {
    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<(), GpuError> {
        if self.is_lost() {
            Err(GpuError::DeviceLost(self.reason.lock().clone()))
        } else {
            Ok(())
        }
    }

    fn set(&self, why: String) {
        *self.reason.lock() = why;
        self.lost.store(true, Ordering::Release);
    }
}

/// Both signature kernels on one adapter, built once (the pipelines compile
/// in the constructor: seconds on some drivers, so callers build it off the
/// hot path).
pub struct GpuSigKernels {
    pub name: String,
    pub software: bool,
    device: wgpu::Device,
    queue: wgpu::Queue,
    ed25519: Kernel,
    secp256k1: Kernel,
    loss: Loss,
    /// The ring of buffer sets ([`build::Slot`]), the free ones, and a
    /// signal when one comes free.
    slots: Vec<Mutex<build::Slot>>,
    free: Mutex<Vec<usize>>,
    freed: Condvar,
    /// Queue submissions made (a mixed batch is one).
    submissions: std::sync::atomic::AtomicU64,
}

impl GpuSigKernels {
    pub fn is_lost(&self) -> bool {
        self.loss.is_lost()
    }

    /// Dispatches this device keeps in flight at most (buffer sets in its
    /// ring): one being encoded and written, one running, one being read.
    /// Queue submissions so far: one per dispatch, whatever kernels it runs.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    pub fn max_in_flight(&self) -> usize {
        self.slots.len()
    }

    /// Verdicts for `items`: exactly what the CPU path would answer, if the
    /// device computes correctly (which the scheduler's trust policy checks).
    /// Ed25519 items run on the Ed25519 kernel, ECDSA and BIP340 ones on the
    /// secp256k1 kernel; items the host can judge from their bytes alone
    /// (lengths, flags, ranges, encodings) never reach a GPU. Also returns
    /// the GPU wall time. [`submit`](Self::submit) then [`wait`](Self::wait).
    pub fn verify_items(
        &self,
        items: &[SigItem],
        timeout: Duration,
    ) -> Result<(Vec<Option<Verdict>>, Duration), GpuError> {
        let refs: Vec<&SigItem> = items.iter().collect();
        let t = self.submit(&refs)?;
        let submitted = t.submitted;
        let done = self.wait(t, timeout)?;
        Ok((done.verdicts, done.ready.saturating_duration_since(submitted)))
    }

    /// Encodes `items` and submits them without waiting: both kernels' items
    /// in one submission (a mixed batch pays one fixed latency, not two),
    /// into a free buffer set of the ring (blocks while all are in flight).
    /// The host's share (SHA-512 for Ed25519; parsing, 1/s, the challenge
    /// and the GLV split for secp256k1) runs on the calling thread's rayon
    /// pool for large batches, so one feeder keeps a GPU fed.
    pub fn submit(&self, items: &[&SigItem]) -> Result<Ticket, GpuError> {
        self.loss.check()?;
        if items.len() > MAX_ITEMS {
            return Err(GpuError::Driver(format!("{} items in one dispatch (at most {MAX_ITEMS})", items.len())));
        }
        let enc = Encoded::new(items);
        let slot = self.take_slot();
        let res = self.record_and_submit(slot, &enc);
        if res.is_err() {
            self.give_back(slot);
        }
        let (sub, mapped) = res?;
        Ok(Ticket { slot, sub, mapped, enc, submitted: Instant::now() })
    }

    /// Blocks until `t`'s verdicts are readable (or `timeout`: then the
    /// device counts as hung and is marked lost).
    pub fn wait(&self, t: Ticket, timeout: Duration) -> Result<Done, GpuError> {
        let slot = t.slot;
        let res = self.wait_inner(t, timeout);
        self.give_back(slot);
        res
    }

    fn take_slot(&self) -> usize {
        let mut free = self.free.lock();
        loop {
            if let Some(i) = free.pop() {
                return i;
            }
            self.freed.wait(&mut free);
        }
    }

    fn give_back(&self, slot: usize) {
        self.free.lock().push(slot);
        self.freed.notify_one();
    }

    /// One command buffer: per kernel with items, its count, its items, a
    /// cleared verdict buffer, the pass and the copy to staging; then the
    /// maps of the staging buffers.
    fn record_and_submit(&self, slot: usize, enc: &Encoded) -> Result<(wgpu::SubmissionIndex, Arc<Mapped>), GpuError> {
        let (device, queue) = (&self.device, &self.queue);
        let mut s = self.slots[slot].lock();
        let mut cmd = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("signatures") });
        let mut used = Vec::new();
        for (which, k) in [(Which::Ed25519, &self.ed25519), (Which::Secp256k1, &self.secp256k1)] {
            let words = enc.words(which);
            let n = words.len() / k.item_words;
            if n == 0 {
                continue;
            }
            let b = s.ensure(which, k, device, n);
            queue.write_buffer(&b.params, 0, bytemuck::cast_slice(&[n as u32, 0, 0, 0]));
            queue.write_buffer(&b.items, 0, bytemuck::cast_slice(words));
            let verdict_bytes = (n as u64).next_multiple_of(4);
            cmd.clear_buffer(&b.verdicts, 0, Some(verdict_bytes));
            {
                let mut pass = cmd
                    .begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(k.label), timestamp_writes: None });
                pass.set_pipeline(&k.pipeline);
                pass.set_bind_group(0, &b.bind, &[]);
                pass.dispatch_workgroups((n as u32).div_ceil(WORKGROUP), 1, 1);
            }
            cmd.copy_buffer_to_buffer(&b.verdicts, 0, &b.staging, 0, verdict_bytes);
            used.push((which, verdict_bytes));
        }
        let sub = queue.submit([cmd.finish()]);
        self.submissions.fetch_add(1, Ordering::Relaxed);
        let mapped =
            Arc::new(Mapped { left: Mutex::new(used.len()), error: Mutex::new(None), ready: Mutex::new(None) });
        if used.is_empty() {
            *mapped.ready.lock() = Some(Instant::now());
        }
        for (which, bytes) in used {
            let m = mapped.clone();
            s.get(which)
                .expect("ensured above")
                .staging
                .slice(..bytes)
                .map_async(wgpu::MapMode::Read, move |r| m.arrived(r));
        }
        Ok((sub, mapped))
    }

    fn wait_inner(&self, t: Ticket, timeout: Duration) -> Result<Done, GpuError> {
        let loss = &self.loss;
        let deadline = t.submitted + timeout;
        while !t.mapped.is_done() {
            loss.check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                loss.set(format!("a dispatch of {} items still ran after {timeout:?}", t.enc.sent()));
                return Err(GpuError::Timeout(timeout));
            }
            match self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(t.sub.clone()),
                timeout: Some(left.min(Duration::from_millis(500))),
            }) {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => {
                    loss.set(e.to_string());
                    return Err(GpuError::DeviceLost(e.to_string()));
                }
            }
        }
        if let Some(e) = t.mapped.error.lock().take() {
            loss.set(format!("mapping the verdicts failed: {e}"));
            return Err(GpuError::DeviceLost(format!("mapping the verdicts failed: {e}")));
        }
        let ready = t.mapped.ready.lock().unwrap_or_else(Instant::now);
        let Encoded { mut out, ed_at, secp_at, .. } = t.enc;
        let s = self.slots[t.slot].lock();
        for (which, at) in [(Which::Ed25519, &ed_at), (Which::Secp256k1, &secp_at)] {
            if at.is_empty() {
                continue;
            }
            let b = s.get(which).ok_or_else(|| GpuError::Driver(format!("no {which:?} buffers in this slot")))?;
            let bytes = (at.len() as u64).next_multiple_of(4);
            {
                let view = b
                    .staging
                    .slice(..bytes)
                    .get_mapped_range()
                    .map_err(|e| GpuError::Driver(format!("reading the verdicts: {e}")))?;
                for (&i, &c) in at.iter().zip(view.iter()) {
                    // A code the kernel cannot produce counts as a device fault.
                    let v = Verdict::from_code(c)
                        .ok_or_else(|| GpuError::Driver(format!("the {which:?} kernel returned verdict code {c}")))?;
                    out[i] = Some(v);
                }
            }
            b.staging.unmap();
        }
        loss.check()?;
        Ok(Done { verdicts: out, ready })
    }
}

/// A submitted dispatch, to hand to [`GpuSigKernels::wait`] (from any thread).
pub struct Ticket {
    slot: usize,
    sub: wgpu::SubmissionIndex,
    mapped: Arc<Mapped>,
    enc: Encoded,
    /// When the submission was made.
    pub submitted: Instant,
}

/// The verdicts of a dispatch and when the device had them ready (the last
/// map callback), for the cost model.
pub struct Done {
    pub verdicts: Vec<Option<Verdict>>,
    pub ready: Instant,
}

/// The staging maps of one dispatch: how many are still pending, the first
/// error, and when the last one arrived.
struct Mapped {
    left: Mutex<usize>,
    error: Mutex<Option<wgpu::BufferAsyncError>>,
    ready: Mutex<Option<Instant>>,
}

impl Mapped {
    fn arrived(&self, r: Result<(), wgpu::BufferAsyncError>) {
        if let Err(e) = r {
            self.error.lock().get_or_insert(e);
        }
        let mut left = self.left.lock();
        *left = left.saturating_sub(1);
        if *left == 0 {
            *self.ready.lock() = Some(Instant::now());
        }
    }

    fn is_done(&self) -> bool {
        *self.left.lock() == 0
    }
}

/// A batch on the host side: the words of each kernel's items in order,
/// where each item came from, and the verdicts the host already knows
/// (items whose bytes alone decide them).
struct Encoded {
    out: Vec<Option<Verdict>>,
    ed_words: Vec<u32>,
    ed_at: Vec<usize>,
    secp_words: Vec<u32>,
    secp_at: Vec<usize>,
}

impl Encoded {
    fn new(items: &[&SigItem]) -> Encoded {
        let mut out = vec![None; items.len()];
        let (ed_idx, secp_idx): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| items[i].scheme.ed25519_policy().is_some());
        let ed_enc: Vec<Result<[u32; GPU_ITEM_WORDS], Reason>> = par_map(&ed_idx, PAR_CHUNK, |chunk| {
            chunk
                .iter()
                .map(|&i| {
                    let it = items[i];
                    let pol = it.scheme.ed25519_policy().unwrap_or(crate::sig::Ed25519Policy::Zip215);
                    it.check_flags().and_then(|()| gpu_encode(pol, &it.pubkey, &it.msg, &it.sig))
                })
                .collect()
        });
        let mut ed_words = Vec::with_capacity(ed_idx.len() * GPU_ITEM_WORDS);
        let mut ed_at = Vec::with_capacity(ed_idx.len());
        for (&i, enc) in ed_idx.iter().zip(ed_enc) {
            match enc {
                Ok(w) => {
                    ed_words.extend_from_slice(&w);
                    ed_at.push(i);
                }
                Err(r) => out[i] = Some(Verdict::Invalid(r)),
            }
        }
        let secp_enc = par_map(&secp_idx, PAR_CHUNK, |chunk| {
            let subset: Vec<&SigItem> = chunk.iter().map(|&i| items[i]).collect();
            secp_gpu::encode_batch(&subset)
        });
        let mut secp_words = Vec::with_capacity(secp_idx.len() * secp_gpu::GPU_ITEM_WORDS);
        let mut secp_at = Vec::with_capacity(secp_idx.len());
        for (&i, enc) in secp_idx.iter().zip(secp_enc) {
            match enc {
                secp_gpu::Encoded::Words(w) => {
                    secp_words.extend_from_slice(&w[..]);
                    secp_at.push(i);
                }
                secp_gpu::Encoded::Verdict(r) => out[i] = Some(Verdict::Invalid(r)),
                secp_gpu::Encoded::Cpu => out[i] = Some(crate::sig::verify_one(items[i])),
            }
        }
        Encoded { out, ed_words, ed_at, secp_words, secp_at }
    }

    fn words(&self, which: Which) -> &[u32] {
        match which {
            Which::Ed25519 => &self.ed_words,
            Which::Secp256k1 => &self.secp_words,
        }
    }

    /// Items that go to a kernel.
    fn sent(&self) -> usize {
        self.ed_at.len() + self.secp_at.len()
    }
}

/// Items per parallel encoding task (and the size below which one thread
/// encodes the whole batch: hand-offs cost more than they save there).
const PAR_CHUNK: usize = 256;

/// `f` over `idx` in chunks of `chunk`, on rayon's threads when there is
/// more than one chunk; results in order.
fn par_map<T: Send>(idx: &[usize], chunk: usize, f: impl Fn(&[usize]) -> Vec<T> + Sync) -> Vec<T> {
    use rayon::prelude::*;
    if idx.len() <= chunk {
        return f(idx);
    }
    idx.par_chunks(chunk).map(&f).collect::<Vec<Vec<T>>>().into_iter().flatten().collect()
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Which {
    Ed25519,
    Secp256k1,
}
