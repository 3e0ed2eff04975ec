//! Signature batches on the GPU as one multi-scalar multiplication:
//!
//! * Ed25519 (kernels/ed25519_msm.wgsl): the cofactored batch equation
//!   `[8](Σ zᵢRᵢ + Σ zᵢkᵢAᵢ − (Σ zᵢsᵢ)B) = 0` of the CPU batch
//!   (`sig::ed25519::check_batch`), under ZIP-215 or strict;
//! * BIP340 (kernels/secp256k1_msm.wgsl): BIP340's batch equation
//!   `Σ zᵢRᵢ + Σ zᵢeᵢPᵢ − (Σ zᵢsᵢ)G = 0` with R = lift_x(r), P = lift_x(pk);
//!
//! each over the 2n + 1 points of a batch, by Pippenger's bucket method.
//!
//! Split of the work: the host does everything that is integer or scalar
//! work (the byte checks of the CPU path, the challenges, the random 128-bit
//! weights zᵢ from ChaCha20 seeded per equation from the thread's CSPRNG,
//! the scalars, their signed c-bit windows, and the counting sort of point
//! indices into buckets: `dispatch.rs`); the GPU does every point
//! operation: decoding (with the strict policy's checks, so a strict item's
//! small-order A or R never enters the sum), bucket sums, the per-window
//! reduction, the Horner combination of the windows and the identity test.
//! The curve's item preparation is `ed25519.rs` and `bip340.rs`.
//!
//! The answer is per batch: the equation holds (every item that reached it
//! is valid, except with probability 2⁻¹²⁸ per equation), or it fails (at
//! least one is invalid, but not which). Items the host or the decoder
//! rejected carry their reasons, exactly the CPU path's. When decoding
//! rejected some items the equation is run a second time over the rest (the
//! base point's coefficient in the first run counted them). When the
//! equation fails, the items it covered stay undecided and
//! [`BatchVerdict::resolve`] hands them to a per-item verifier (the CPU's or
//! the per-item kernel): simple and exact; bisection on the GPU is a later
//! refinement, and which path a batch takes is the scheduler's business
//! (`sched::sig::gpu`), from [`predicted_cost`].
//!
//! The window width c comes from a count of point operations
//! ([`window_bits`]), bounded by [`WINDOW_BITS_MAX`]: a first guess, to be
//! tuned on real hardware, where the serial parts (the reduction, 2·2^(c−1)
//! additions per window in one invocation, and the Horner pass) weigh
//! differently.

use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::build::{make_pipeline, module, storage_entry};
use super::Loss;
use crate::gpu::kernel::{self, FieldChoice, FieldPath};
use crate::gpu::{GpuAdapter, GpuError};
use crate::sig::{Reason, SigItem, Verdict};

mod bip340;
mod dispatch;
mod ed25519;

use dispatch::{Sum, PARAMS_BYTES};

/// Items in one batch equation at most (2n + 1 points must fit a dispatch
/// of 65535 workgroups of 64).
pub const MAX_BATCH: usize = 1 << 20;
/// Bounds of the window width; see [`window_bits`].
pub const WINDOW_BITS_MIN: u32 = 4;
pub const WINDOW_BITS_MAX: u32 = 12;
/// Words per point in the kernels' input: the encoding and a flag word.
const POINT_WORDS: usize = 9;
/// Flag word bits (the kernels' input layout).
const FLAG_STRICT: u32 = 1;
const FLAG_CANONICAL: u32 = 2;
const FLAG_KEY: u32 = 4;
const FLAG_BAD_IF_KEY_DECODES: u32 = 8;

/// Which batch equation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Curve {
    /// Ed25519 under either policy.
    Ed25519,
    /// BIP340 Schnorr on secp256k1.
    Bip340,
}

impl Curve {
    fn file(self) -> &'static str {
        match self {
            Curve::Ed25519 => kernel::ED25519_MSM_FILE,
            Curve::Bip340 => kernel::SECP256K1_MSM_FILE,
        }
    }

    /// Field elements per stored point: Ed25519's Cached (Y+X, Y−X, Z, 2dT),
    /// secp256k1's projective (X, Y, Z).
    fn fe_per_point(self) -> u32 {
        match self {
            Curve::Ed25519 => 4,
            Curve::Bip340 => 3,
        }
    }

    /// Scalars are reduced mod ℓ < 2²⁵³ or mod n < 2²⁵⁶.
    pub fn scalar_bits(self) -> u32 {
        match self {
            Curve::Ed25519 => 253,
            Curve::Bip340 => 256,
        }
    }
}

/// Windows of width `c` for scalars below 2^`bits`.
pub fn windows(c: u32, bits: u32) -> u32 {
    bits / c + 1
}

/// Point additions and doublings of an equation over `points` points with
/// width `c`: bucket sums (one per nonzero digit: the keys' and the base
/// point's scalars span every window, the 128-bit weights of the R points
/// the low ones), the reduction (2 per bucket) and the Horner pass.
fn ops(points: u64, c: u32, bits: u32) -> u64 {
    let w = u64::from(windows(c, bits));
    let r_points = points / 2;
    let r_windows = u64::from(128 / c + 1);
    (points - r_points) * w + r_points * r_windows + 2 * w * (1u64 << (c - 1)) + u64::from(c) * w
}

/// The window width for a sum over `points` points: the cheapest by [`ops`]
/// within [`WINDOW_BITS_MIN`]..=[`WINDOW_BITS_MAX`].
pub fn window_bits(points: usize, bits: u32) -> u32 {
    (WINDOW_BITS_MIN..=WINDOW_BITS_MAX).min_by_key(|&c| ops(points as u64, c, bits)).unwrap_or(WINDOW_BITS_MIN)
}

/// What a batch equation over `n` decodable items costs, for a scheduler's
/// model: point decodings (each a square root, about 270 field products),
/// point operations spread over many invocations (bucket sums), and point
/// operations in long serial chains (reduction per window, the Horner
/// pass), which bound the latency on a wide device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsmCost {
    pub decodes: u64,
    pub parallel_ops: u64,
    pub serial_ops: u64,
    pub window_bits: u32,
}

pub fn predicted_cost(curve: Curve, n: usize) -> MsmCost {
    let bits = curve.scalar_bits();
    let points = 2 * n as u64 + 1;
    let c = window_bits(points as usize, bits);
    let w = u64::from(windows(c, bits));
    let all = ops(points, c, bits);
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

/// The outcome of [`GpuMsm::verify_batch_equation`].
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

    /// Every item's verdict, `items` being the batch the verdict is for:
    /// the undecided ones from `per_item` (called once, with those items in
    /// order, when there are any), e.g.
    /// `|v| v.iter().map(|i| crate::sig::verify_one(i)).collect()`.
    pub fn resolve(
        self,
        items: &[&SigItem],
        per_item: impl FnOnce(&[&SigItem]) -> Vec<Verdict>,
    ) -> Result<Vec<Verdict>, GpuError> {
        if items.len() != self.verdicts.len() {
            return Err(GpuError::Driver(format!("{} items for {} verdicts", items.len(), self.verdicts.len())));
        }
        let open: Vec<usize> = (0..self.verdicts.len()).filter(|&i| self.verdicts[i].is_none()).collect();
        let mut out = self.verdicts;
        if !open.is_empty() {
            let sub: Vec<&SigItem> = open.iter().map(|&i| items[i]).collect();
            let got = per_item(&sub);
            if got.len() != sub.len() {
                return Err(GpuError::Driver(format!(
                    "per-item fallback gave {} verdicts for {}",
                    got.len(),
                    sub.len()
                )));
            }
            for (i, v) in open.into_iter().zip(got) {
                out[i] = Some(v);
            }
        }
        out.into_iter().map(|v| v.ok_or_else(|| GpuError::Driver("an item left without a verdict".into()))).collect()
    }
}

/// One item's share of an equation, as a curve prepares it: its two points
/// as kernel input (key first) and what its scalars are made from.
struct Entry<P> {
    at: usize,
    key: [u32; POINT_WORDS],
    r: [u32; POINT_WORDS],
    parts: P,
}

/// A curve's preparation of one item: its entry, or its verdict, or an
/// error for a scheme the kernel does not take.
type Prepare<P> = fn(usize, &SigItem) -> Result<Result<Entry<P>, Reason>, GpuError>;
/// A curve's scalars for its entries' points under fresh weights.
type Scalars<P> = fn(&[Entry<P>], &mut ChaCha20Rng) -> Vec<[u8; 32]>;

/// A batch-equation kernel (one curve) on one adapter, with its own device
/// and one pipeline.
pub struct GpuMsm {
    pub name: String,
    curve: Curve,
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    field: FieldPath,
    loss: Loss,
    /// Bytes between the phases' parameter blocks (the device's storage
    /// offset alignment).
    align: u64,
    /// A fixed window width instead of [`window_bits`]'s (tests, tuning).
    window_override: Option<u32>,
    /// The last equation's buffers, for the next one.
    buffers: parking_lot::Mutex<Option<dispatch::Buffers>>,
}

impl GpuMsm {
    /// `curve`'s kernel on `adapter`, with `HASHRIG_GPU_FIELD`'s field arithmetic.
    pub fn new(adapter: &GpuAdapter, curve: Curve) -> Result<GpuMsm, GpuError> {
        Self::with_field(adapter, FieldChoice::from_env().map_err(GpuError::Unsupported)?, curve)
    }

    pub fn with_field(adapter: &GpuAdapter, choice: FieldChoice, curve: Curve) -> Result<GpuMsm, GpuError> {
        let a = &adapter.adapter;
        let (field, why) = choice.resolve(a.features().contains(wgpu::Features::SHADER_INT64));
        if let Some(why) = why {
            tracing::warn!(adapter = %adapter.summary.name, "{}: {why}", kernel::FIELD_ENV);
        }
        let int64 = if field == FieldPath::U64 { wgpu::Features::SHADER_INT64 } else { wgpu::Features::empty() };
        let (device, queue, (lost, reason)) = crate::gpu::open_device(adapter, "hashrig batch equation", int64)?;
        let t0 = Instant::now();
        let m = module(&device, curve.file(), field)?;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("msm bind group"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: true },
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
            "{curve:?} batch-equation kernel built ({} field) in {:.2} s",
            field.name(),
            t0.elapsed().as_secs_f64()
        );
        let align = u64::from(device.limits().min_storage_buffer_offset_alignment).max(PARAMS_BYTES);
        let me = GpuMsm {
            name: adapter.summary.name.clone(),
            curve,
            device,
            queue,
            layout,
            pipeline,
            field,
            loss: Loss { lost, reason },
            align,
            window_override: None,
            buffers: parking_lot::Mutex::new(None),
        };
        me.loss.check()?;
        Ok(me)
    }

    pub fn curve(&self) -> Curve {
        self.curve
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

    /// The batch equation over `items`: Ed25519 items (either policy) for
    /// the Ed25519 kernel, BIP340 ones for the BIP340 kernel; another
    /// scheme is an error. See the module documentation for what the
    /// verdicts mean; [`BatchVerdict::resolve`] completes them.
    pub fn verify_batch_equation(&self, items: &[&SigItem], timeout: Duration) -> Result<BatchVerdict, GpuError> {
        self.loss.check()?;
        if items.len() > MAX_BATCH {
            return Err(GpuError::Driver(format!("{} items in one batch equation (at most {MAX_BATCH})", items.len())));
        }
        match self.curve {
            Curve::Ed25519 => self.equation(items, ed25519::prepare, ed25519::scalars, ed25519::base(), timeout),
            Curve::Bip340 => self.equation(items, bip340::prepare, bip340::scalars, bip340::base(), timeout),
        }
    }

    /// The rounds of an equation: `prepare` gives each item's entry or its
    /// verdict (or an error for a scheme this kernel does not take),
    /// `scalars` the scalars of the entries' points (key, R per entry, then
    /// the base point's) under weights from the given generator.
    fn equation<P>(
        &self,
        items: &[&SigItem],
        prepare: Prepare<P>,
        scalars: Scalars<P>,
        base: [u32; POINT_WORDS],
        timeout: Duration,
    ) -> Result<BatchVerdict, GpuError> {
        let mut verdicts = vec![None; items.len()];
        let mut entries = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            match prepare(i, it)? {
                Ok(e) => entries.push(e),
                Err(r) => verdicts[i] = Some(Verdict::Invalid(r)),
            }
        }
        let start = Instant::now();
        let mut rounds = 0;
        let mut equation = Equation::Empty;
        // At most two rounds: after the first, every entry left decodes.
        while !entries.is_empty() && rounds < 2 {
            rounds += 1;
            let mut words = Vec::with_capacity((2 * entries.len() + 1) * POINT_WORDS);
            for e in &entries {
                words.extend_from_slice(&e.key);
                words.extend_from_slice(&e.r);
            }
            words.extend_from_slice(&base);
            let mut rng = ChaCha20Rng::from_rng(&mut rand::rng());
            let sum = Sum::new(words, &scalars(&entries, &mut rng), self.curve.scalar_bits(), self.window_override);
            let (codes, holds) = self.run(&sum, timeout)?;
            // The base point is a multiple of itself: it always decodes.
            if codes[sum.points - 1] != 0 {
                return Err(GpuError::Driver(format!(
                    "the base point failed to decode (code {})",
                    codes[sum.points - 1]
                )));
            }
            let mut rejected = false;
            let mut kept = Vec::with_capacity(entries.len());
            for (e, c) in entries.into_iter().zip(codes.chunks_exact(2)) {
                // The key's reason first, as the CPU path decodes it first.
                let code = if c[0] != 0 { c[0] } else { c[1] };
                if code == 0 {
                    kept.push(e);
                    continue;
                }
                let v = u8::try_from(code)
                    .ok()
                    .and_then(Verdict::from_code)
                    .filter(|v| !v.is_valid())
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
}

/// A 32-byte encoding as 8 little-endian words, then its flag word.
fn point_words(bytes: &[u8; 32], flags: u32) -> [u32; POINT_WORDS] {
    let mut w = [0u32; POINT_WORDS];
    for (o, c) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    w[8] = flags;
    w
}

#[cfg(test)]
mod tests {
    use super::dispatch::signed_digits;
    use super::*;
    use rand::Rng;

    /// acc += sign · v · 2^shift, modulo 2^320.
    fn add_shifted(acc: &mut [u64; 5], v: u64, shift: u32, negative: bool) {
        let mut t = [0u64; 6];
        let (limb, off) = ((shift / 64) as usize, shift % 64);
        if limb < 5 {
            t[limb] = v << off;
            if off > 0 {
                t[limb + 1] = v >> (64 - off);
            }
        }
        let mut carry = 0u128;
        let mut borrow = 0i128;
        for i in 0..5 {
            if negative {
                let d = i128::from(acc[i]) - i128::from(t[i]) + borrow;
                acc[i] = d as u64;
                borrow = if d < 0 { -1 } else { 0 };
            } else {
                let s = u128::from(acc[i]) + u128::from(t[i]) + carry;
                acc[i] = s as u64;
                carry = s >> 64;
            }
        }
    }

    /// Σ dᵢ 2^(c·i) gives the number back, for every width, both scalar
    /// sizes, and numbers at both ends of the range.
    #[test]
    fn signed_digits_recompose() {
        let mut rng = rand::rng();
        let mut samples: Vec<[u8; 32]> = vec![[0; 32], [0xff; 32], {
            let mut b = [0u8; 32];
            b[0] = 1;
            b
        }];
        for _ in 0..50 {
            samples.push(rng.random());
        }
        for bits in [253u32, 256] {
            for c in 1..=16 {
                let nw = windows(c, bits);
                for s in &samples {
                    let mut s = *s;
                    if bits == 253 {
                        s[31] &= 0x1f;
                    }
                    let mut d = Vec::new();
                    signed_digits(&s, c, nw, &mut d);
                    assert_eq!(d.len(), nw as usize);
                    let half = 1i32 << (c - 1);
                    assert!(d.iter().all(|&x| x > -half && x <= half), "c = {c}: {d:?}");
                    let mut acc = [0u64; 5];
                    for (i, &x) in d.iter().enumerate() {
                        add_shifted(&mut acc, u64::from(x.unsigned_abs()), c * i as u32, x < 0);
                    }
                    let want: [u64; 5] = std::array::from_fn(|j| {
                        if j < 4 {
                            u64::from_le_bytes(s[8 * j..8 * j + 8].try_into().unwrap())
                        } else {
                            0
                        }
                    });
                    assert_eq!(acc, want, "bits {bits}, c = {c}");
                }
            }
        }
    }

    #[test]
    fn window_choice_grows_with_the_batch() {
        for bits in [253, 256] {
            assert!(window_bits(3, bits) <= window_bits(129, bits));
            assert!(window_bits(129, bits) <= window_bits(1 << 17, bits));
            assert_eq!(window_bits(1 << 21, bits), WINDOW_BITS_MAX);
        }
        let c = predicted_cost(Curve::Ed25519, 64);
        assert_eq!(c.decodes, 129);
        assert!(c.parallel_ops > 0 && c.serial_ops > 0);
    }
}
