//! Signature verification on one adapter: the Ed25519 kernel
//! (kernels/ed25519_verify.wgsl) and the secp256k1 one (ECDSA and BIP340,
//! kernels/secp256k1_verify.wgsl) on one device, with their pipelines and
//! buffers. This layer runs dispatches and nothing else: which items come
//! here, the canaries and the CPU re-checks are the scheduler's
//! (`sched::sig_gpu`); building the kernels is `build.rs`, the item encodings are
//! [`crate::sig::ed25519::gpu_encode`] and [`crate::sig::secp::gpu`].
//!
//! A dispatch is: write the items → clear the verdict words → one compute
//! pass → copy verdicts to a staging buffer → map. Verdict bytes come back
//! exactly as the kernel wrote them (0 valid, else a `sig::Reason` code).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{GpuAdapter, GpuError};
use crate::sig::ed25519::{gpu_encode, GPU_ITEM_WORDS};
use crate::sig::secp::gpu as secp_gpu;
use crate::sig::{Reason, SigItem, Verdict};

mod build;
use build::Kernel;

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
}

impl GpuSigKernels {
    pub fn is_lost(&self) -> bool {
        self.loss.is_lost()
    }

    /// Verdicts for `items`: exactly what the CPU path would answer, if the
    /// device computes correctly (which the scheduler's trust policy checks).
    /// Ed25519 items run on the Ed25519 kernel, ECDSA and BIP340 ones on the
    /// secp256k1 kernel; items the host can judge from their bytes alone
    /// (lengths, flags, ranges, encodings) never reach a GPU. Also returns
    /// the GPU wall time.
    pub fn verify_items(
        &mut self,
        items: &[SigItem],
        timeout: Duration,
    ) -> Result<(Vec<Option<Verdict>>, Duration), GpuError> {
        let t0 = Instant::now();
        let mut out = vec![None; items.len()];
        let (ed_at, secp_at): (Vec<usize>, Vec<usize>) =
            (0..items.len()).partition(|&i| items[i].scheme.ed25519_policy().is_some());
        // The host's share (SHA-512 for Ed25519; parsing, 1/s, the
        // challenge and the GLV split for secp256k1: ~3 µs an item) runs on
        // every core for large batches, so one feeder keeps a GPU fed.
        let ed_enc: Vec<Result<[u32; GPU_ITEM_WORDS], Reason>> = par_map(&ed_at, PAR_CHUNK, |chunk| {
            chunk
                .iter()
                .map(|&i| {
                    let it = &items[i];
                    let pol = it.scheme.ed25519_policy().unwrap_or(crate::sig::Ed25519Policy::Zip215);
                    it.check_flags().and_then(|()| gpu_encode(pol, &it.pubkey, &it.msg, &it.sig))
                })
                .collect()
        });
        let mut ed_words = Vec::with_capacity(ed_at.len() * GPU_ITEM_WORDS);
        let mut ed_sent = Vec::with_capacity(ed_at.len());
        for (&i, enc) in ed_at.iter().zip(ed_enc) {
            match enc {
                Ok(w) => {
                    ed_words.extend_from_slice(&w);
                    ed_sent.push(i);
                }
                Err(r) => out[i] = Some(Verdict::Invalid(r)),
            }
        }
        let secp_enc = par_map(&secp_at, PAR_CHUNK, |chunk| {
            let subset: Vec<&SigItem> = chunk.iter().map(|&i| &items[i]).collect();
            secp_gpu::encode_batch(&subset)
        });
        let mut secp_words = Vec::with_capacity(secp_at.len() * secp_gpu::GPU_ITEM_WORDS);
        let mut secp_sent = Vec::with_capacity(secp_at.len());
        for (&i, enc) in secp_at.iter().zip(secp_enc) {
            match enc {
                secp_gpu::Encoded::Words(w) => {
                    secp_words.extend_from_slice(&w[..]);
                    secp_sent.push(i);
                }
                secp_gpu::Encoded::Verdict(r) => out[i] = Some(Verdict::Invalid(r)),
                secp_gpu::Encoded::Cpu => out[i] = Some(crate::sig::verify_one(&items[i])),
            }
        }
        for (which, words, at) in [(Which::Ed25519, &ed_words, &ed_sent), (Which::Secp256k1, &secp_words, &secp_sent)] {
            let mut codes = Vec::with_capacity(at.len());
            let per = match which {
                Which::Ed25519 => self.ed25519.item_words,
                Which::Secp256k1 => self.secp256k1.item_words,
            };
            for part in words.chunks(MAX_ITEMS * per) {
                self.dispatch(which, part, timeout, &mut codes)?;
            }
            for (&i, &c) in at.iter().zip(&codes) {
                // A code the kernel cannot produce counts as a device fault.
                let v = Verdict::from_code(c)
                    .ok_or_else(|| GpuError::Driver(format!("the {which:?} kernel returned verdict code {c}")))?;
                out[i] = Some(v);
            }
        }
        Ok((out, t0.elapsed()))
    }

    /// One dispatch of `words` (whole items of the kernel's size).
    fn dispatch(
        &mut self,
        which: Which,
        words: &[u32],
        timeout: Duration,
        codes: &mut Vec<u8>,
    ) -> Result<(), GpuError> {
        let (device, queue, loss) = (&self.device, &self.queue, &self.loss);
        let k = match which {
            Which::Ed25519 => &mut self.ed25519,
            Which::Secp256k1 => &mut self.secp256k1,
        };
        loss.check()?;
        let n = words.len() / k.item_words;
        if n == 0 {
            return Ok(());
        }
        let count = [n as u32, 0, 0, 0];
        queue.write_buffer(&k.params, 0, bytemuck::cast_slice(&count));
        k.ensure_buffers(device, n);
        let label = k.label;
        let b = k.buffers.as_ref().expect("just made");
        queue.write_buffer(&b.items, 0, bytemuck::cast_slice(words));
        let verdict_bytes = (n as u64).next_multiple_of(4);
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) });
        enc.clear_buffer(&b.verdicts, 0, Some(verdict_bytes));
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some(label), timestamp_writes: None });
            pass.set_pipeline(&k.pipeline);
            pass.set_bind_group(0, &b.bind, &[]);
            pass.dispatch_workgroups((n as u32).div_ceil(WORKGROUP), 1, 1);
        }
        enc.copy_buffer_to_buffer(&b.verdicts, 0, &b.staging, 0, verdict_bytes);
        let sub = queue.submit([enc.finish()]);
        let mapped: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>> = Arc::new(Mutex::new(None));
        let m = mapped.clone();
        b.staging.slice(..verdict_bytes).map_async(wgpu::MapMode::Read, move |r| *m.lock() = Some(r));
        let deadline = Instant::now() + timeout;
        while mapped.lock().is_none() {
            loss.check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                loss.set(format!("a {label} dispatch of {n} items still ran after {timeout:?}"));
                return Err(GpuError::Timeout(timeout));
            }
            match device.poll(wgpu::PollType::Wait {
                submission_index: Some(sub.clone()),
                timeout: Some(left.min(Duration::from_millis(500))),
            }) {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => {
                    loss.set(e.to_string());
                    return Err(GpuError::DeviceLost(e.to_string()));
                }
            }
        }
        if let Some(Err(e)) = mapped.lock().take() {
            loss.set(format!("mapping the verdicts failed: {e}"));
            return Err(GpuError::DeviceLost(format!("mapping the verdicts failed: {e}")));
        }
        {
            let view = b
                .staging
                .slice(..verdict_bytes)
                .get_mapped_range()
                .map_err(|e| GpuError::Driver(format!("reading the verdicts: {e}")))?;
            codes.extend_from_slice(&view[..n]);
        }
        b.staging.unmap();
        loss.check()
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
enum Which {
    Ed25519,
    Secp256k1,
}
