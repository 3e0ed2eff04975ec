//! One batch equation on the device: the host's half (signed windows and
//! the counting sort into buckets) and the four dispatches of the kernel.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{window_bits, windows, GpuMsm, POINT_WORDS};
use crate::gpu::kernel::FieldPath;
use crate::gpu::GpuError;

const WORKGROUP: u32 = 64;
/// The four phases of the kernels, in dispatch order.
pub(super) const PHASES: u32 = 4;
/// Bytes of one phase's parameters (the kernels' `Params`).
pub(super) const PARAMS_BYTES: u64 = 64;

/// The host's half of one equation: the input words (points, bucket
/// offsets, bucket entries) and the shape of the sum.
pub(super) struct Sum {
    pub(super) points: usize,
    c: u32,
    windows: u32,
    buckets: u32,
    offsets_at: u32,
    entries_at: u32,
    words: Vec<u32>,
}

impl Sum {
    /// `point_words`: POINT_WORDS per point; `scalars`: one per point,
    /// little-endian, below 2^`scalar_bits`; width `c` or [`window_bits`]'s.
    pub(super) fn new(mut words: Vec<u32>, scalars: &[[u8; 32]], scalar_bits: u32, c: Option<u32>) -> Sum {
        let points = scalars.len();
        debug_assert_eq!(words.len(), points * POINT_WORDS);
        let c = c.unwrap_or_else(|| window_bits(points, scalar_bits));
        let nw = windows(c, scalar_bits);
        let nb = 1u32 << (c - 1);
        let slots = (nw * nb) as usize;
        // Counting sort of (point, window) by bucket: counts, prefix sums,
        // then the entries.
        let mut digits = Vec::with_capacity(points * nw as usize);
        for s in scalars {
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

/// Appends the `windows` signed digits of the little-endian `s` in width
/// `c`, least significant first, each in (−2^(c−1), 2^(c−1)], so that
/// Σ dᵢ 2^(c·i) = s. No carry leaves the top window when s < 2^b and
/// windows = b / c + 1: it holds b mod c < c bits plus a carry.
pub(super) fn signed_digits(s: &[u8; 32], c: u32, windows: u32, out: &mut Vec<i32>) {
    let limbs: [u64; 4] = std::array::from_fn(|j| u64::from_le_bytes(s[8 * j..8 * j + 8].try_into().expect("8 bytes")));
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
    debug_assert_eq!(carry, 0, "the top window takes the last carry");
}

/// An equation's buffers and their bind group, kept from one equation to
/// the next and replaced by larger ones when a batch outgrows them
/// (capacities in powers of two). The kernel reads nothing it has not
/// written in the same equation, and the host reads only what the
/// equation wrote (an equation whose points did not all decode is run
/// again without them), so what an earlier batch left there is never seen.
pub(super) struct Buffers {
    params: wgpu::Buffer,
    input: wgpu::Buffer,
    pts: wgpu::Buffer,
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

impl Buffers {
    fn fits(&self, input: u64, pts: u64, out: u64) -> bool {
        self.input.size() >= input && self.pts.size() >= pts && self.out.size() >= out
    }
}

impl GpuMsm {
    /// Buffers for an equation of these sizes (bytes): the kept ones if
    /// they are large enough, else new ones.
    fn buffers(&self, input: u64, pts: u64, out: u64) -> Buffers {
        if let Some(b) = self.buffers.lock().take().filter(|b| b.fits(input, pts, out)) {
            return b;
        }
        let device = &self.device;
        let buf = |label: &str, size: u64, usage: wgpu::BufferUsages| {
            let size = size.next_power_of_two().max(256);
            device.create_buffer(&wgpu::BufferDescriptor { label: Some(label), size, usage, mapped_at_creation: false })
        };
        let params = buf(
            "msm params",
            self.align * u64::from(PHASES),
            wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        );
        let input = buf("msm input", input, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST);
        let pts = buf("msm points", pts, wgpu::BufferUsages::STORAGE);
        let out = buf("msm out", out, wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC);
        let staging = buf("msm staging", out.size(), wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST);
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("msm bind"),
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
        Buffers { params, input, pts, out, staging, bind }
    }

    /// One equation: the reason code of every point (key then R per item,
    /// then the base point's) and whether the sum is the identity.
    pub(super) fn run(&self, sum: &Sum, timeout: Duration) -> Result<(Vec<u32>, bool), GpuError> {
        let (device, queue) = (&self.device, &self.queue);
        let points = sum.points as u64;
        let fe_bytes: u64 = if self.field == FieldPath::U64 { 40 } else { 80 };
        let point_bytes = u64::from(self.curve.fe_per_point()) * fe_bytes;
        let pts_count = points + u64::from(sum.windows * sum.buckets + sum.windows);
        let out_bytes = 4 * (points + 1);
        // Taken for this equation and put back after it, so no lock is held
        // while the device works (a second equation at the same time would
        // make its own).
        let bufs = self.buffers(4 * sum.words.len() as u64, point_bytes * pts_count, out_bytes);
        let Buffers { params, input, out, staging, bind, .. } = &bufs;
        let counts = [sum.points as u32, sum.windows * sum.buckets, sum.windows, 1];
        let mut block = vec![0u8; (self.align * u64::from(PHASES)) as usize];
        for (phase, n) in counts.iter().enumerate() {
            let mut p = [0u32; (PARAMS_BYTES / 4) as usize];
            p[..9].copy_from_slice(&[
                phase as u32,
                *n,
                0,
                sum.points as u32,
                sum.c,
                sum.windows,
                sum.buckets,
                sum.offsets_at,
                sum.entries_at,
            ]);
            let at = phase * self.align as usize;
            block[at..at + PARAMS_BYTES as usize].copy_from_slice(bytemuck::cast_slice(&p));
        }
        queue.write_buffer(params, 0, &block);
        queue.write_buffer(input, 0, bytemuck::cast_slice(&sum.words));
        let mut cmd = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("msm") });
        // One pass per phase: each reads what the previous one wrote.
        for (phase, n) in counts.iter().enumerate() {
            let mut pass =
                cmd.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("msm"), timestamp_writes: None });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, bind, &[(phase as u64 * self.align) as u32]);
            pass.dispatch_workgroups(n.div_ceil(WORKGROUP), 1, 1);
        }
        cmd.copy_buffer_to_buffer(out, 0, staging, 0, out_bytes);
        let sub = queue.submit([cmd.finish()]);
        let done: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>> = Arc::new(Mutex::new(None));
        let d = done.clone();
        staging.slice(..out_bytes).map_async(wgpu::MapMode::Read, move |r| *d.lock() = Some(r));
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
                .slice(..out_bytes)
                .get_mapped_range()
                .map_err(|e| GpuError::Driver(format!("reading the batch equation's result: {e}")))?;
            view.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        };
        staging.unmap();
        self.loss.check()?;
        *self.buffers.lock() = Some(bufs);
        let holds = match words[sum.points] {
            1 => true,
            2 => false,
            w => return Err(GpuError::Driver(format!("the msm kernel's identity test wrote {w}"))),
        };
        let mut codes = words;
        codes.truncate(sum.points);
        Ok((codes, holds))
    }
}
