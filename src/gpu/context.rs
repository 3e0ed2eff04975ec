//! One adapter's device, queue, pipeline and dispatch ring, built once.
//!
//! A dispatch is write params → clear the hit counter → dispatch → copy hits
//! (and timestamps) to that ring slot's staging buffer → submit → map. Each
//! ring slot has its own uniform, hit buffer and staging buffer, so 2–3
//! dispatches can be in flight while the host reads an earlier one back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::kernel::{self, Params, PARAMS_SIZE};
use super::{AdapterSummary, GpuAdapter, GpuError, TuneChoice};
use crate::pow::{NonceRange, SearchInput};

/// Bytes before the slots in the hit buffer: count, pad.
const HITS_HEADER: u64 = 8;
/// Largest dispatch, in nonces: keeps `first + NPT` and the count in u32.
pub const MAX_DISPATCH: u64 = 1 << 31;

#[derive(Clone, Debug)]
pub struct ContextOptions {
    /// Dispatches in flight (ring slots), 1..=4.
    pub depth: usize,
    /// Hit slots per dispatch. Hits past this are counted, not stored: the
    /// result says so and the caller re-scans that range on the CPU.
    pub hit_slots: u32,
    /// Workgroup size and nonces per thread.
    pub tune: TuneChoice,
}

impl Default for ContextOptions {
    fn default() -> Self {
        ContextOptions { depth: 3, hit_slots: 4096, tune: TuneChoice::DEFAULT }
    }
}

/// What one finished dispatch reports.
#[derive(Clone, Debug)]
pub struct DispatchResult {
    pub range: NonceRange,
    /// (nonce, hash top word as the kernel computed it), unordered.
    pub candidates: Vec<(u32, u32)>,
    /// More candidates than slots: `candidates` is incomplete and the range
    /// must be re-scanned.
    pub overflowed: bool,
    /// Kernel time from timestamp queries, where the adapter has them.
    pub kernel_seconds: Option<f64>,
    /// Submit to results read back.
    pub wall: Duration,
}

struct Slot {
    params: wgpu::Buffer,
    hits: wgpu::Buffer,
    staging: wgpu::Buffer,
    bind: wgpu::BindGroup,
    queries: Option<(wgpu::QuerySet, wgpu::Buffer)>,
    /// Set by the map callback.
    mapped: Arc<Mutex<Option<Result<(), wgpu::BufferAsyncError>>>>,
    pending: Option<Pending>,
}

struct Pending {
    range: NonceRange,
    submission: wgpu::SubmissionIndex,
    submitted: Instant,
}

pub struct GpuContext {
    pub summary: AdapterSummary,
    pub tune: TuneChoice,
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    module: wgpu::ShaderModule,
    slots: Vec<Slot>,
    hit_slots: u32,
    timestamp_period_ns: Option<f64>,
    lost: Arc<AtomicBool>,
    lost_reason: Arc<Mutex<String>>,
}

impl GpuContext {
    /// Builds the device, pipeline and ring for `adapter`.
    pub fn new(adapter: &GpuAdapter, opts: &ContextOptions) -> Result<GpuContext, GpuError> {
        let a = &adapter.adapter;
        let summary = adapter.summary.clone();
        // Ask only for what the adapter has: request_device panics otherwise.
        let timestamps = a.features().contains(wgpu::Features::TIMESTAMP_QUERY);
        let features = if timestamps { wgpu::Features::TIMESTAMP_QUERY } else { wgpu::Features::empty() };
        // The adapter's own limits (the largest workgroups and dispatches it has).
        let (device, queue, (lost, lost_reason)) = super::open_device(adapter, "hashrig pow", features)?;
        let src =
            kernel::source(kernel::SHA256D_FILE).ok_or_else(|| GpuError::Compile("kernel source incomplete".into()))?;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        // SAFETY: the kernel indexes only `hits.slots[slot]` with `slot <
        // p.cfg.w`, and the host sizes the buffer for exactly `p.cfg.w` slots
        // (`Slot` below); its only loop is bounded by `last` <= first + NPT.
        // So bounds checks and loop guards can go (naga still validates it).
        let module = unsafe {
            device.create_shader_module_trusted(
                wgpu::ShaderModuleDescriptor {
                    label: Some(kernel::SHA256D_LABEL),
                    source: wgpu::ShaderSource::Wgsl(src.into()),
                },
                wgpu::ShaderRuntimeChecks::unchecked(),
            )
        };
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Compile(e.to_string()));
        }
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("sha256d bind group"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(PARAMS_SIZE),
                    },
                    count: None,
                },
                wgpu::BindGroupLayoutEntry {
                    binding: 1,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage { read_only: false },
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(HITS_HEADER + 8),
                    },
                    count: None,
                },
            ],
        });
        let timestamp_period_ns = timestamps.then(|| queue.get_timestamp_period() as f64);
        let tune = opts.tune.clamped(&summary);
        let pipeline = build_pipeline(&device, &layout, &module, tune)?;
        let mut ctx = GpuContext {
            summary,
            tune,
            device,
            queue,
            layout,
            pipeline,
            module,
            slots: Vec::new(),
            hit_slots: opts.hit_slots.max(1),
            timestamp_period_ns,
            lost,
            lost_reason,
        };
        let depth = opts.depth.clamp(1, 4);
        for i in 0..depth {
            let s = ctx.make_slot(i);
            ctx.slots.push(s);
        }
        ctx.check()?;
        Ok(ctx)
    }

    fn make_slot(&self, i: usize) -> Slot {
        let hits_size = HITS_HEADER + 8 * self.hit_slots as u64;
        let params = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("sha256d params {i}")),
            size: PARAMS_SIZE,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let hits = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("sha256d hits {i}")),
            size: hits_size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let ts_bytes = if self.timestamp_period_ns.is_some() { 16 } else { 0 };
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("sha256d staging {i}")),
            size: hits_size + ts_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&format!("sha256d bind {i}")),
            layout: &self.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: hits.as_entire_binding() },
            ],
        });
        let queries = self.timestamp_period_ns.map(|_| {
            let set = self.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some(&format!("sha256d timestamps {i}")),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            });
            let resolve = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(&format!("sha256d timestamp resolve {i}")),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            (set, resolve)
        });
        Slot { params, hits, staging, bind, queries, mapped: Arc::new(Mutex::new(None)), pending: None }
    }

    /// Switches to another workgroup size / nonces per thread (autotune).
    /// Only with no dispatch in flight.
    pub fn set_tune(&mut self, tune: TuneChoice) -> Result<(), GpuError> {
        let tune = tune.clamped(&self.summary);
        self.pipeline = build_pipeline(&self.device, &self.layout, &self.module, tune)?;
        self.tune = tune;
        self.check()
    }

    pub fn depth(&self) -> usize {
        self.slots.len()
    }

    pub fn hit_slots(&self) -> u32 {
        self.hit_slots
    }

    pub fn has_timestamps(&self) -> bool {
        self.timestamp_period_ns.is_some()
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// A handle that marks this device lost, as the driver's loss callback
    /// does (an operator taking a GPU out; tests of the loss path).
    pub fn loss_handle(&self) -> LossHandle {
        LossHandle { lost: self.lost.clone(), reason: self.lost_reason.clone() }
    }

    fn check(&self) -> Result<(), GpuError> {
        if self.is_lost() {
            Err(GpuError::DeviceLost(self.lost_reason.lock().clone()))
        } else {
            Ok(())
        }
    }

    /// Is ring slot `i` free for [`submit`](Self::submit)?
    pub fn is_free(&self, i: usize) -> bool {
        self.slots.get(i).is_some_and(|s| s.pending.is_none())
    }

    /// Starts a dispatch over `range` (at most [`MAX_DISPATCH`] nonces) in
    /// ring slot `i`, which must be free.
    pub fn submit(&mut self, i: usize, params: &Params, range: NonceRange) -> Result<(), GpuError> {
        self.check()?;
        let len = range.len();
        if len == 0 || len > MAX_DISPATCH {
            return Err(GpuError::Driver(format!("dispatch of {len} nonces (1..={MAX_DISPATCH})")));
        }
        let tune = self.tune;
        let max_groups = self.summary.max_compute_workgroups_per_dimension.max(1) as u64;
        let threads = len.div_ceil(tune.npt as u64);
        let groups = threads.div_ceil(tune.wg as u64);
        let gx = groups.min(max_groups);
        let gy = groups.div_ceil(gx);
        if gy > max_groups {
            return Err(GpuError::Driver(format!("{len} nonces need more than {max_groups}^2 workgroups")));
        }
        let Some(slot) = self.slots.get_mut(i) else {
            return Err(GpuError::Driver(format!("no ring slot {i}")));
        };
        if slot.pending.is_some() {
            return Err(GpuError::Driver(format!("ring slot {i} is busy")));
        }
        let p = params.with_range(range, self.hit_slots);
        self.queue.write_buffer(&slot.params, 0, &p.to_bytes());
        let mut enc =
            self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("sha256d dispatch") });
        enc.clear_buffer(&slot.hits, 0, Some(HITS_HEADER));
        {
            let timestamp_writes = slot.queries.as_ref().map(|(set, _)| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            });
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("sha256d"), timestamp_writes });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &slot.bind, &[]);
            pass.dispatch_workgroups(gx as u32, gy as u32, 1);
        }
        let hits_size = slot.hits.size();
        enc.copy_buffer_to_buffer(&slot.hits, 0, &slot.staging, 0, hits_size);
        if let Some((set, resolve)) = &slot.queries {
            enc.resolve_query_set(set, 0..2, resolve, 0);
            enc.copy_buffer_to_buffer(resolve, 0, &slot.staging, hits_size, 16);
        }
        let submitted = Instant::now();
        let submission = self.queue.submit([enc.finish()]);
        *slot.mapped.lock() = None;
        let mapped = slot.mapped.clone();
        slot.staging.slice(..).map_async(wgpu::MapMode::Read, move |r| *mapped.lock() = Some(r));
        slot.pending = Some(Pending { range, submission, submitted });
        self.check()
    }

    /// Waits for ring slot `i`'s dispatch (at most `timeout`) and reads it back.
    pub fn wait(&mut self, i: usize, timeout: Duration) -> Result<DispatchResult, GpuError> {
        let Some(slot) = self.slots.get_mut(i) else {
            return Err(GpuError::Driver(format!("no ring slot {i}")));
        };
        let Some(pending) = slot.pending.take() else {
            return Err(GpuError::Driver(format!("ring slot {i} has no dispatch")));
        };
        let deadline = Instant::now() + timeout;
        loop {
            if slot.mapped.lock().is_some() {
                break;
            }
            if self.lost.load(Ordering::Acquire) {
                return Err(GpuError::DeviceLost(self.lost_reason.lock().clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.lost.store(true, Ordering::Release);
                *self.lost_reason.lock() =
                    format!("dispatch of {} nonces still running after {timeout:?}", pending.range.len());
                return Err(GpuError::Timeout(timeout));
            }
            let poll = self.device.poll(wgpu::PollType::Wait {
                submission_index: Some(pending.submission.clone()),
                timeout: Some(left.min(Duration::from_millis(500))),
            });
            match poll {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => {
                    self.lost.store(true, Ordering::Release);
                    *self.lost_reason.lock() = e.to_string();
                    return Err(GpuError::DeviceLost(e.to_string()));
                }
            }
        }
        if let Some(Err(e)) = slot.mapped.lock().take() {
            self.lost.store(true, Ordering::Release);
            return Err(GpuError::DeviceLost(format!("mapping the results failed: {e}")));
        }
        let hits_size = slot.hits.size();
        let result = {
            let view = slot
                .staging
                .slice(..)
                .get_mapped_range()
                .map_err(|e| GpuError::Driver(format!("reading the results: {e}")))?;
            let word = |at: usize| u32::from_le_bytes([view[at], view[at + 1], view[at + 2], view[at + 3]]);
            let count = word(0);
            let stored = count.min(self.hit_slots) as usize;
            let candidates = (0..stored)
                .map(|k| {
                    let at = HITS_HEADER as usize + 8 * k;
                    (word(at), word(at + 4))
                })
                .collect();
            let kernel_seconds = self.timestamp_period_ns.and_then(|period| {
                let at = hits_size as usize;
                let t0 = u64::from_le_bytes(view[at..at + 8].try_into().ok()?);
                let t1 = u64::from_le_bytes(view[at + 8..at + 16].try_into().ok()?);
                (t1 > t0).then(|| (t1 - t0) as f64 * period * 1e-9)
            });
            DispatchResult {
                range: pending.range,
                candidates,
                overflowed: count > self.hit_slots,
                kernel_seconds,
                wall: pending.submitted.elapsed(),
            }
        };
        slot.staging.unmap();
        self.check()?;
        Ok(result)
    }

    /// Scans `range` (which may cross many dispatches) keeping the ring full,
    /// with dispatches of `per_dispatch` nonces. Returns every nonce whose hash
    /// meets `input`'s target, ascending, exactly as `pow::scan` does: GPU
    /// candidates are confirmed on the CPU, and a dispatch whose hits overflow
    /// the slots is re-scanned on the CPU. Also returns how many candidates
    /// disagreed with the CPU on the hash's top word (hardware errors).
    pub fn scan(&mut self, input: &SearchInput, range: NonceRange, per_dispatch: u64) -> Result<ScanOutcome, GpuError> {
        let params = Params::for_header(input);
        let per = per_dispatch.clamp(1, MAX_DISPATCH);
        let end = range.end.min(crate::pow::NONCE_END);
        let mut next = range.start as u64;
        let mut out = ScanOutcome::default();
        let mut order: std::collections::VecDeque<usize> = Default::default();
        loop {
            for i in 0..self.slots.len() {
                if next < end && self.is_free(i) {
                    let r = NonceRange { start: next as u32, end: (next + per).min(end) };
                    self.submit(i, &params, r)?;
                    next = r.end;
                    order.push_back(i);
                }
            }
            let Some(i) = order.pop_front() else { break };
            let res = self.wait(i, dispatch_timeout(per))?;
            out.absorb(input, &res);
        }
        out.hits.sort_unstable();
        Ok(out)
    }
}

/// See [`GpuContext::loss_handle`].
#[derive(Clone)]
pub struct LossHandle {
    lost: Arc<AtomicBool>,
    reason: Arc<Mutex<String>>,
}

impl LossHandle {
    pub fn mark_lost(&self, reason: &str) {
        *self.reason.lock() = reason.to_string();
        self.lost.store(true, Ordering::Release);
    }
}

/// What [`GpuContext::scan`] found.
#[derive(Clone, Debug, Default)]
pub struct ScanOutcome {
    pub hits: Vec<u32>,
    pub hashes: u64,
    pub hardware_errors: Vec<u32>,
    pub overflows: u64,
}

/// One candidate checked on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Meets the target.
    Hit,
    /// The kernel's top word is right, but the full 256-bit compare fails
    /// (top word equal to the target's): not an error.
    Miss,
    /// The kernel's top word differs from the CPU's: a hardware error.
    Mismatch { cpu_top: u32 },
}

/// Re-hashes `nonce` on the CPU (the scalar path over the whole header).
pub fn verify(input: &SearchInput, nonce: u32, gpu_top: u32) -> Verdict {
    let hash = input.hash(nonce);
    let cpu_top = u32::from_le_bytes([hash[28], hash[29], hash[30], hash[31]]);
    if cpu_top != gpu_top || cpu_top > input.target[7] {
        Verdict::Mismatch { cpu_top }
    } else if input.meets(&hash) {
        Verdict::Hit
    } else {
        Verdict::Miss
    }
}

impl ScanOutcome {
    fn absorb(&mut self, input: &SearchInput, res: &DispatchResult) {
        self.hashes += res.range.len();
        if res.overflowed {
            self.overflows += 1;
            crate::pow::scan(crate::pow::detect(), input, res.range, &mut self.hits);
            return;
        }
        for &(nonce, top) in &res.candidates {
            match verify(input, nonce, top) {
                Verdict::Hit => self.hits.push(nonce),
                Verdict::Miss => {}
                Verdict::Mismatch { .. } => self.hardware_errors.push(nonce),
            }
        }
    }
}

/// How long a dispatch of `nonces` may take before the device counts as hung:
/// generous (software adapters do ~10 MH/s), never below 10 s.
pub fn dispatch_timeout(nonces: u64) -> Duration {
    Duration::from_secs_f64((nonces as f64 / 1e6).max(10.0))
}

fn build_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    module: &wgpu::ShaderModule,
    tune: TuneChoice,
) -> Result<wgpu::ComputePipeline, GpuError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("sha256d layout"),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    let constants = [("WG", tune.wg as f64), ("NPT", tune.npt as f64)];
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(&format!("sha256d wg{} npt{}", tune.wg, tune.npt)),
        layout: Some(&pl),
        module,
        entry_point: Some(kernel::SHA256D_ENTRY),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            zero_initialize_workgroup_memory: false,
        },
        cache: None,
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(GpuError::Compile(e.to_string())),
        None => Ok(pipeline),
    }
}
