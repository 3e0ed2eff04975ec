//! Ed25519 batches on the GPU as one multi-scalar multiplication
//! (kernels/ed25519_msm.wgsl): the cofactored batch equation
//! `[8](Σ zᵢRᵢ + Σ zᵢkᵢAᵢ − (Σ zᵢsᵢ)B) = 0` over the 2n + 1 points of a
//! batch, with Pippenger's bucket method.
//!
//! Split of the work: the host does everything that is integer or scalar
//! work (lengths and S < ℓ, k = SHA-512(R‖A‖M) mod ℓ, the random 128-bit
//! weights zᵢ from ChaCha20 seeded per batch from the thread's CSPRNG, the
//! three kinds of scalars, their signed c-bit windows, and the counting
//! sort of point indices into buckets); the GPU does every point operation:
//! decoding (with the strict policy's checks, so a strict item's small-order
//! A or R never enters the sum), bucket sums, the per-window reduction, the
//! Horner combination of the windows and the identity test.
//!
//! The answer is per batch: the equation holds (every item that reached it
//! is valid, except with probability 2⁻¹²⁸ per batch), or it fails (at
//! least one is invalid, but not which). Items the host or the decoder
//! rejected carry their reasons, exactly the CPU path's. When decoding
//! rejected some items the equation is run a second time over the rest (the
//! B coefficient of the first run counted them). When the equation fails,
//! the items it covered stay undecided and [`BatchVerdict::resolve`] hands
//! them to a per-item verifier (the CPU's or the per-item kernel): simple
//! and exact; bisection on the GPU is a later refinement, and which to use
//! per batch is the scheduler's business (`sched::sig::gpu`), from
//! [`predicted_cost`].
//!
//! The window width c comes from a small cost model ([`window_bits`]),
//! bounded by [`WINDOW_BITS_MAX`]; both are first guesses made on lavapipe
//! (a CPU) and are to be tuned on real hardware, where the serial parts
//! (the reduction, 2·2^(c−1) additions per window in one invocation, and
//! the Horner pass) weigh differently.

use std::sync::Arc;
use std::time::{Duration, Instant};

use curve25519_dalek::scalar::Scalar;
use parking_lot::Mutex;
use rand::Rng;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::build::{make_pipeline, module, storage_entry};
use super::Loss;
use crate::gpu::kernel::{self, FieldChoice, FieldPath};
use crate::gpu::{GpuAdapter, GpuError};
use crate::sig::ed25519::{batch_parts, BatchParts};
use crate::sig::{SigItem, Verdict};

const WORKGROUP: u32 = 64;
/// Items in one batch equation at most (2n + 1 points must fit a dispatch
/// of 65535 workgroups of 64).
pub const MAX_BATCH: usize = 1 << 20;
/// Every scalar in the sum is reduced mod ℓ < 2²⁵³ (the weights are < 2¹²⁸).
const SCALAR_BITS: u32 = 253;
/// Bounds of the window width; see [`window_bits`].
pub const WINDOW_BITS_MIN: u32 = 4;
pub const WINDOW_BITS_MAX: u32 = 12;
/// Words per point in the kernel's input: the encoding and a flag word.
const POINT_WORDS: usize = 9;
const FLAG_STRICT: u32 = 1;
const FLAG_CANONICAL: u32 = 2;
const FLAG_KEY: u32 = 4;
/// The four phases of the kernel, in dispatch order.
const PHASES: u32 = 4;

/// Windows for width `c`: with digits in (−2^(c−1), 2^(c−1)] the top window
/// holds 253 mod c < c bits plus a carry, so no carry leaves it.
pub fn windows(c: u32) -> u32 {
    SCALAR_BITS / c + 1
}

/// Point additions (and doublings) a batch equation over `points` points
/// costs with width `c`: bucket sums (one per nonzero digit, about
/// points × windows, fewer for the 128-bit weights), the reduction (2 per
/// bucket) and the Horner pass.
fn ops(points: u64, c: u32) -> u64 {
    let w = u64::from(windows(c));
    let r_points = points / 2;
    let r_windows = u64::from(128 / c + 1);
    (points - r_points) * w + r_points * r_windows + 2 * w * (1u64 << (c - 1)) + u64::from(c) * w
}

/// The window width for a sum over `points` points: the cheapest by [`ops`]
/// within [`WINDOW_BITS_MIN`]..=[`WINDOW_BITS_MAX`].
pub fn window_bits(points: usize) -> u32 {
    (WINDOW_BITS_MIN..=WINDOW_BITS_MAX).min_by_key(|&c| ops(points as u64, c)).unwrap_or(WINDOW_BITS_MIN)
}

/// What a batch equation over `n` decodable items costs, for a scheduler's
/// model: point decodings (each a square root, about 270 field products),
/// point operations spread over many invocations (bucket sums), and point
/// operations in long serial chains (reduction per window, the Horner pass),
/// which bound the latency on a wide device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsmCost {
    pub decodes: u64,
    pub parallel_ops: u64,
    pub serial_ops: u64,
    pub window_bits: u32,
}

pub fn predicted_cost(n: usize) -> MsmCost {
    let points = 2 * n as u64 + 1;
    let c = window_bits(points as usize);
    let w = u64::from(windows(c));
    let all = ops(points, c);
    let serial = 2 * (1u64 << (c - 1)) + u64::from(c) * w;
    MsmCost { decodes: points, parallel_ops: all - serial, serial_ops: serial, window_bits: c }
}

/// How the equation came out for a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Equation {
    /// Every item that reached it is valid.
    Holds,
    /// At least one item that reached it is invalid.
    Fails,
    /// No item reached it (the host or the decoder rejected them all).
    Empty,
}

/// The outcome of [`GpuEd25519Msm::verify_batch_equation`].
#[derive(Clone, Debug)]
pub struct BatchVerdict {
    /// Per item: its verdict where known (host checks, decoding, or valid
    /// because the equation holds); `None` where the equation failed.
    pub verdicts: Vec<Option<Verdict>>,
    /// The last equation run (the one over the items that decoded).
    pub equation: Equation,
    /// Equations run: 1, or 2 when decoding rejected some items.
    pub rounds: u32,
    /// Wall time from the first submission to the last readback.
    pub gpu_time: Duration,
}

impl BatchVerdict {
    /// Items left undecided (the equation over them failed).
    pub fn undecided(&self) -> usize {
        self.verdicts.iter().filter(|v| v.is_none()).count()
    }

    /// Every item's verdict: the undecided ones from `per_item` (called once,
    /// with those items in order, when there are any), e.g.
    /// `|v| v.iter().map(|i| crate::sig::verify_one(i)).collect()`.
    pub fn resolve(
        self,
        items: &[&SigItem],
        per_item: impl FnOnce(&[&SigItem]) -> Vec<Verdict>,
    ) -> Result<Vec<Verdict>, GpuError> {
        let open: Vec<usize> = (0..self.verdicts.len()).filter(|&i| self.verdicts[i].is_none()).collect();
        let mut out = self.verdicts;
        if !open.is_empty() {
            let sub: Vec<&SigItem> = open.iter().map(|&i| items[i]).collect();
            let got = per_item(&sub);
            if got.len() != sub.len() {
                return Err(GpuError::Driver(format!("per-item fallback gave {} verdicts for {}", got.len(), sub.len())));
            }
            for (i, v) in open.into_iter().zip(got) {
                out[i] = Some(v);
            }
        }
        Ok(out.into_iter().map(|v| v.expect("every item decided")).collect())
    }
}

/// The batch-equation kernel on one adapter, with its own device.
pub struct GpuEd25519Msm {
    pub name: String,
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    field: FieldPath,
    loss: Loss,
    /// Bytes between the phases' parameter blocks (the device's uniform
    /// offset alignment).
    align: u64,
    /// A fixed window width instead of [`window_bits`]'s (tests, tuning).
    window_override: Option<u32>,
}

/// One item that reaches the equation: where it came from and its parts.
struct Entry<'a> {
    at: usize,
    strict: bool,
    parts: &'a BatchParts,
}

impl GpuEd25519Msm {
    /// On `adapter`, with `HASHRIG_GPU_FIELD`'s field arithmetic.
    pub fn new(adapter: &GpuAdapter) -> Result<GpuEd25519Msm, GpuError> {
        Self::with_field(adapter, FieldChoice::from_env().map_err(GpuError::Unsupported)?)
    }

    pub fn with_field(adapter: &GpuAdapter, choice: FieldChoice) -> Result<GpuEd25519Msm, GpuError> {
        let a = &adapter.adapter;
        let (field, why) = choice.resolve(a.features().contains(wgpu::Features::SHADER_INT64));
        if let Some(why) = why {
            tracing::warn!(adapter = %adapter.summary.name, "{}: {why}", kernel::FIELD_ENV);
        }
        let int64 = if field == FieldPath::U64 { wgpu::Features::SHADER_INT64 } else { wgpu::Features::empty() };
        let (device, queue, (lost, reason)) = crate::gpu::open_device(adapter, "hashrig ed25519 msm", int64)?;
        let t0 = Instant::now();
        let m = module(&device, kernel::ED25519_MSM_FILE, field)?;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ed25519 msm bind group"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: true,
                        min_binding_size: wgpu::BufferSize::new(PARAMS_BYTES),
                    },
                    count: None,
                },
                storage_entry(1, true),
                storage_entry(2, false),
                storage_entry(3, false),
            ],
        });
        let pipeline = make_pipeline(&device, &layout, &m, "msm", None)?;
        tracing::info!(
            adapter = %adapter.summary.name,
            "Ed25519 batch-equation kernel built ({} field) in {:.2} s",
            field.name(),
            t0.elapsed().as_secs_f64()
        );
        let align = u64::from(device.limits().min_uniform_buffer_offset_alignment).max(PARAMS_BYTES);
        let me = GpuEd25519Msm {
            name: adapter.summary.name.clone(),
            device,
            queue,
            layout,
            pipeline,
            field,
            loss: Loss { lost, reason },
            align,
            window_override: None,
        };
        me.loss.check()?;
        Ok(me)
    }

    pub fn field(&self) -> FieldPath {
        self.field
    }

    pub fn is_lost(&self) -> bool {
        self.loss.is_lost()
    }

    /// Use width `c` for every batch (clamped to 1..=16), or `None` for
    /// [`window_bits`]'s choice.
    pub fn set_window_bits(&mut self, c: Option<u32>) {
        self.window_override = c.map(|c| c.clamp(1, 16));
    }

    /// The batch equation over `items` (Ed25519 under either policy; any
    /// other scheme is an error). See the module documentation for what the
    /// verdicts mean; [`BatchVerdict::resolve`] completes them.
    pub fn verify_batch_equation(&self, items: &[&SigItem], timeout: Duration) -> Result<BatchVerdict, GpuError> {
        self.loss.check()?;
        if items.len() > MAX_BATCH {
            return Err(GpuError::Driver(format!("{} items in one batch equation (at most {MAX_BATCH})", items.len())));
        }
        let mut verdicts = vec![None; items.len()];
        let mut parts = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let Some(policy) = it.scheme.ed25519_policy() else {
                return Err(GpuError::Unsupported(format!("the batch equation is Ed25519 only, item {i} is {}", it.scheme)));
            };
            match it.check_flags().and_then(|()| batch_parts(&it.pubkey, &it.msg, &it.sig)) {
                Ok(p) => parts.push((i, policy == crate::sig::Ed25519Policy::Strict, p)),
                Err(r) => verdicts[i] = Some(Verdict::Invalid(r)),
            }
        }
        let mut entries: Vec<Entry> = parts.iter().map(|(at, strict, p)| Entry { at: *at, strict: *strict, parts: p }).collect();
        let start = Instant::now();
        let mut rounds = 0;
        let mut equation = Equation::Empty;
        // At most two rounds: after the first, every entry left decodes.
        while !entries.is_empty() && rounds < 2 {
            rounds += 1;
            let (codes, holds) = self.run(&entries, timeout)?;
            let mut rejected = false;
            let mut kept = Vec::with_capacity(entries.len());
            for (e, c) in entries.into_iter().zip(codes.chunks_exact(2)) {
                // A's reason first, as the CPU path decodes A before R.
                let code = if c[0] != 0 { c[0] } else { c[1] };
                if code == 0 {
                    kept.push(e);
                    continue;
                }
                let v = u8::try_from(code)
                    .ok()
                    .and_then(Verdict::from_code)
                    .ok_or_else(|| GpuError::Driver(format!("the msm kernel returned reason code {code}")))?;
                verdicts[e.at] = Some(v);
                rejected = true;
            }
            entries = kept;
            if rejected {
                equation = Equation::Empty;
                continue;
            }
            equation = if holds { Equation::Holds } else { Equation::Fails };
            if holds {
                for e in &entries {
                    verdicts[e.at] = Some(Verdict::Valid);
                }
            }
            break;
        }
        Ok(BatchVerdict { verdicts, equation, rounds, gpu_time: start.elapsed() })
    }

    /// One equation over `entries` (at least one): the reason code of each
    /// point (A then R per entry, then B's) and whether the sum is the identity.
    fn run(&self, entries: &[Entry], timeout: Duration) -> Result<(Vec<u32>, bool), GpuError> {
        let sum = Sum::build(entries, self.window_override);
        let (device, queue) = (&self.device, &self.queue);
        let points = sum.points as u64;
        let fe_bytes: u64 = if self.field == FieldPath::U64 { 40 } else { 80 };
        let cached = 4 * fe_bytes;
        let pts_count = points + u64::from(sum.windows * sum.buckets + sum.windows);
        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
        };
        let params = buf("msm params", self.align * u64::from(PHASES), wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST);
        let input = buf("msm input", 4 * sum.words.len() as u64, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
        let pts = buf("msm points", cached * pts_count, wgpu::BufferUsages::STORAGE);
        let out_bytes = 4 * (points + 1);
        let out = buf("msm out", out_bytes, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
        let staging = buf("msm staging", out_bytes, wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let counts = [sum.points as u32, sum.windows * sum.buckets, sum.windows, 1];
        let mut block = vec![0u8; (self.align * u64::from(PHASES)) as usize];
        for (phase, n) in counts.iter().enumerate() {
            let p: [u32; 16] = [
                phase as u32,
                *n,
                0,
                sum.points as u32,
                sum.c,
                sum.windows,
                sum.buckets,
                sum.offsets_at,
                sum.entries_at,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
            ];
            let at = phase * self.align as usize;
            block[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::cast_slice(&p));
        }
        queue.write_buffer(&params, 0, &block);
        queue.write_buffer(&input, 0, bytemuck::cast_slice(&sum.words));
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("ed25519 msm bind"),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params,
                        offset: 0,
                        size: wgpu::BufferSize::new(PARAMS_BYTES),
                    }),
                },
                wgpu::BindGroupEntry { binding: 1, resource: input.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: pts.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: out.as_entire_binding() },
            ],
        });
        let mut cmd = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ed25519 msm") });
        // One pass per phase: each reads what the previous one wrote.
        for (phase, n) in counts.iter().enumerate() {
            let mut pass =
                cmd.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("ed25519 msm"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &bind, &[(phase as u64 * self.align) as u32]);
            pass.dispatch_workgroups(n.div_ceil(WORKGROUP), 1, 1);
        }
        cmd.copy_buffer_to_buffer(&out, 0, &staging, 0, out_bytes);
        let sub = queue.submit([cmd.finish()]);
        let done: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>> = Arc::new(Mutex::new(None));
        let d = done.clone();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| *d.lock() = Some(r));
        let deadline = Instant::now() + timeout;
        while done.lock().is_none() {
            self.loss.check()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.loss.set(format!("a batch equation over {points} points still ran after {timeout:?}"));
                return Err(GpuError::Timeout(timeout));
            }
            match device.poll(wgpu::PollType::Wait {
                submission_index: Some(sub.clone()),
                timeout: Some(left.min(Duration::from_millis(500))),
            }) {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => {
                    self.loss.set(e.to_string());
                    return Err(GpuError::DeviceLost(e.to_string()));
                }
            }
        }
        if let Some(Err(e)) = done.lock().take() {
            self.loss.set(format!("mapping the batch equation's result failed: {e}"));
            return Err(GpuError::DeviceLost(format!("mapping the batch equation's result failed: {e}")));
        }
        let words: Vec<u32> = {
            let view = staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Driver(format!("reading the batch equation's result: {e}")))?;
            view.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        staging.unmap();
        self.loss.check()?;
        let holds = match words[sum.points] {
            1 => true,
            2 => false,
            w => return Err(GpuError::Driver(format!("the msm kernel's identity test wrote {w}"))),
        };
        let codes = words[..2 * entries.len()].to_vec();
        // B is a multiple of itself: it always decodes.
        if words[sum.points - 1] != 0 {
            return Err(GpuError::Driver(format!("the base point failed to decode (code {})", words[sum.points - 1])));
        }
        Ok((codes, holds))
    }
}

/// Bytes of one phase's parameters (kernels/ed25519_msm.wgsl `Params`).
const PARAMS_BYTES: u64 = 64;

/// The host's half of one equation: the input words (points, bucket
/// offsets, bucket entries) and the shape of the sum.
struct Sum {
    points: usize,
    c: u32,
    windows: u32,
    buckets: u32,
    offsets_at: u32,
    entries_at: u32,
    words: Vec<u32>,
}

impl Sum {
    /// Weights from ChaCha20 seeded from the thread's CSPRNG, a fresh seed
    /// per equation; points A₀, R₀, A₁, R₁, …, B.
    fn build(entries: &[Entry], window: Option<u32>) -> Sum {
        let mut rng = ChaCha20Rng::from_rng(&mut rand::rng());
        let points = 2 * entries.len() + 1;
        let mut scalars = Vec::with_capacity(points);
        let mut words = Vec::with_capacity(points * POINT_WORDS);
        let mut zs = Scalar::ZERO;
        let mut push_point = |bytes: &[u8; 32], flags: u32| {
            words.extend(bytes.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])));
            words.push(flags);
        };
        for e in entries {
            let p = e.parts;
            let z = Scalar::from(rng.random::<u128>());
            zs += z * p.s;
            scalars.push(z * p.k);
            scalars.push(z);
            let strict = if e.strict { FLAG_STRICT } else { 0 };
            let canon = |c: bool| if c { FLAG_CANONICAL } else { 0 };
            push_point(&p.a_bytes, strict | canon(p.a_canonical) | FLAG_KEY);
            push_point(&p.r_bytes, strict | canon(p.r_canonical));
        }
        scalars.push(-zs);
        push_point(curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED.as_bytes(), 0);
        let c = window.unwrap_or_else(|| window_bits(points));
        let nw = windows(c);
        let nb = 1u32 << (c - 1);
        let slots = (nw * nb) as usize;
        // Counting sort of (point, window) by bucket: counts, prefix sums,
        // then the entries.
        let mut digits = Vec::with_capacity(points * nw as usize);
        for s in &scalars {
            signed_digits(s, c, nw, &mut digits);
        }
        let mut offsets = vec![0u32; slots + 1];
        for (j, &d) in digits.iter().enumerate() {
            if d != 0 {
                let w = j % nw as usize;
                offsets[w * nb as usize + d.unsigned_abs() as usize] += 1;
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let total = offsets[slots] as usize;
        let mut cursor = offsets.clone();
        let mut bucketed = vec![0u32; total];
        for (j, &d) in digits.iter().enumerate() {
            if d != 0 {
                let (p, w) = (j / nw as usize, j % nw as usize);
                let b = w * nb as usize + d.unsigned_abs() as usize - 1;
                bucketed[cursor[b] as usize] = p as u32 | if d < 0 { 1 << 31 } else { 0 };
                cursor[b] += 1;
            }
        }
        let offsets_at = words.len() as u32;
        words.extend_from_slice(&offsets);
        let entries_at = words.len() as u32;
        words.extend_from_slice(&bucketed);
        // Storage bindings may not be empty-sized on every driver.
        words.push(0);
        Sum { points, c, windows: nw, buckets: nb, offsets_at, entries_at, words }
    }
}

/// Appends the `windows` signed digits of `s` in width `c`, least
/// significant first, each in (−2^(c−1), 2^(c−1)], so that
/// Σ dᵢ 2^(c·i) = s.
fn signed_digits(s: &Scalar, c: u32, windows: u32, out: &mut Vec<i32>) {
    let b = s.as_bytes();
    let limbs: [u64; 4] = std::array::from_fn(|j| u64::from_le_bytes(b[8 * j..8 * j + 8].try_into().expect("8 bytes")));
    let mask = (1u64 << c) - 1;
    let half = 1i64 << (c - 1);
    let mut carry = 0i64;
    for w in 0..windows {
        let start = w * c;
        let mut v = 0u64;
        if start < 256 {
            let (i, off) = ((start / 64) as usize, start % 64);
            v = limbs[i] >> off;
            if off + c > 64 && i + 1 < 4 {
                v |= limbs[i + 1] << (64 - off);
            }
            v &= mask;
        }
        let v = v as i64 + carry;
        if v > half {
            out.push((v - (1i64 << c)) as i32);
            carry = 1;
        } else {
            out.push(v as i32);
            carry = 0;
        }
    }
    debug_assert_eq!(carry, 0, "a scalar below 2^253 leaves no carry");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ dᵢ 2^(c·i) gives the scalar back, for every width and for scalars
    /// at both ends of the range.
    #[test]
    fn signed_digits_recompose() {
        let mut rng = rand::rng();
        let mut samples = vec![Scalar::ZERO, Scalar::ONE, -Scalar::ONE, Scalar::from(u128::MAX)];
        for _ in 0..50 {
            samples.push(Scalar::from_bytes_mod_order(rng.random()));
        }
        for c in 1..=16 {
            let nw = windows(c);
            for s in &samples {
                let mut d = Vec::new();
                signed_digits(s, c, nw, &mut d);
                assert_eq!(d.len(), nw as usize);
                let half = 1i32 << (c - 1);
                assert!(d.iter().all(|&x| x > -half && x <= half), "c = {c}: {d:?}");
                let mut acc = Scalar::ZERO;
                let radix = Scalar::from(1u64 << c);
                for &x in d.iter().rev() {
                    let m = Scalar::from(x.unsigned_abs());
                    acc = acc * radix + if x < 0 { -m } else { m };
                }
                assert_eq!(acc, *s, "c = {c}");
            }
        }
    }

    #[test]
    fn window_choice_grows_with_the_batch() {
        assert!(window_bits(3) <= window_bits(129));
        assert!(window_bits(129) <= window_bits(1 << 17));
        assert_eq!(window_bits(1 << 21), WINDOW_BITS_MAX);
        let c = predicted_cost(64);
        assert_eq!(c.decodes, 129);
        assert!(c.parallel_ops > 0 && c.serial_ops > 0);
    }
}
