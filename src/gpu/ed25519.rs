//! Ed25519 verification on one adapter: kernels/ed25519_verify.wgsl behind
//! a device, its pipelines and buffers. This layer runs dispatches and
//! nothing else: which items come here, the canaries and the CPU re-checks
//! are the scheduler's (`sched::sig`), the item encoding is
//! [`crate::sig::ed25519::gpu_encode`].
//!
//! A dispatch is: write the items → clear the verdict words → one compute
//! pass → copy verdicts to a staging buffer → map. Verdict bytes come back
//! exactly as the kernel wrote them (0 valid, else a `sig::Reason` code).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::{kernel, GpuAdapter, GpuError};
use crate::sig::ed25519::{gpu_encode, GPU_ITEM_WORDS};
use crate::sig::{SigItem, Verdict};

const WORKGROUP: u32 = 64;
/// Items per dispatch at most (larger calls are cut into several).
pub const MAX_ITEMS: usize = 1 << 20;
const ITEM_BYTES: u64 = 4 * GPU_ITEM_WORDS as u64;

/// One finished call.
#[derive(Clone, Debug)]
pub struct GpuVerdicts {
    /// One byte per item: 0 valid, else the reason code.
    pub codes: Vec<u8>,
    /// From the first write to the last verdict readable.
    pub wall: Duration,
}

struct Buffers {
    capacity: usize,
    items: wgpu::Buffer,
    verdicts: wgpu::Buffer,
    staging: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

/// The Ed25519 kernel on one adapter, built once (the pipelines compile in
/// the constructor: seconds on some drivers, so callers build it off the
/// hot path).
pub struct GpuEd25519 {
    pub name: String,
    pub software: bool,
    device: wgpu::Device,
    queue: wgpu::Queue,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    params: wgpu::Buffer,
    table: wgpu::Buffer,
    buffers: Option<Buffers>,
    lost: Arc<AtomicBool>,
    lost_reason: Arc<Mutex<String>>,
}

fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn module(device: &wgpu::Device, file: &str) -> Result<wgpu::ShaderModule, GpuError> {
    let src = kernel::source(file).ok_or_else(|| GpuError::Compile(format!("{file}: source incomplete")))?;
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let m = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(file),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(GpuError::Compile(format!("{file}: {e}"))),
        None => Ok(m),
    }
}

fn make_pipeline(
    device: &wgpu::Device,
    layout: &wgpu::BindGroupLayout,
    module: &wgpu::ShaderModule,
    entry: &str,
    cache: Option<&wgpu::PipelineCache>,
) -> Result<wgpu::ComputePipeline, GpuError> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(entry),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    let p = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(entry),
        layout: Some(&pl),
        module,
        entry_point: Some(entry),
        compilation_options: wgpu::PipelineCompilationOptions::default(),
        cache,
    });
    match pollster::block_on(scope.pop()) {
        Some(e) => Err(GpuError::Compile(format!("{entry}: {e}"))),
        None => Ok(p),
    }
}

impl GpuEd25519 {
    /// Device, both pipelines, and the base point table (built on the GPU
    /// from curve25519-dalek's encodings of [1..8]B).
    pub fn new(adapter: &GpuAdapter) -> Result<GpuEd25519, GpuError> {
        let a = &adapter.adapter;
        // The driver's pipeline cache, kept on disk, where the adapter has
        // one: the big shader compiles once per driver, not once per start.
        let cache_features = a.features() & wgpu::Features::PIPELINE_CACHE;
        let (device, queue, (lost, lost_reason)) = super::open_device(adapter, "hashrig ed25519", cache_features)?;
        let verify_module = module(&device, kernel::ED25519_VERIFY_FILE)?;
        let table_module = module(&device, kernel::ED25519_TABLE_FILE)?;
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ed25519 verify bind group"),
            entries: &[
                wgpu::BindGroupLayoutEntry {
                    binding: 0,
                    visibility: wgpu::ShaderStages::COMPUTE,
                    ty: wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Uniform,
                        has_dynamic_offset: false,
                        min_binding_size: wgpu::BufferSize::new(16),
                    },
                    count: None,
                },
                storage_entry(1, true),
                storage_entry(2, true),
                storage_entry(3, false),
            ],
        });
        let table_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ed25519 table bind group"),
            entries: &[storage_entry(0, true), storage_entry(1, false)],
        });
        let cache_file = (!cache_features.is_empty())
            .then(|| {
                let key = wgpu::util::pipeline_cache_key(&a.get_info())?;
                Some(super::tune::default_cache_path()?.with_file_name(format!("{key}.bin")))
            })
            .flatten();
        let cache = cache_file.as_ref().map(|f| {
            let data = std::fs::read(f).ok();
            // SAFETY: the data is what `get_data` returned for an adapter
            // with this key (the file is named by it), written by us; wgpu
            // checks its header (version, adapter, size) and with `fallback`
            // starts an empty cache when it does not fit.
            unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("hashrig ed25519 pipeline cache"),
                    data: data.as_deref(),
                    fallback: true,
                })
            }
        });
        let pipeline = make_pipeline(&device, &layout, &verify_module, "verify", cache.as_ref())?;
        let table_pipeline = make_pipeline(&device, &table_layout, &table_module, "build_table", cache.as_ref())?;
        if let (Some(c), Some(f)) = (&cache, &cache_file) {
            if let Some(data) = c.get_data() {
                let tmp = f.with_extension("tmp");
                let saved = f.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| {
                    std::fs::write(&tmp, &data)?;
                    std::fs::rename(&tmp, f)
                });
                if let Err(e) = saved {
                    tracing::debug!("pipeline cache {} not saved: {e}", f.display());
                }
            }
        }
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ed25519 params"),
            size: 16,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // 8 Cached points of 4 × 20 u32.
        let table = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ed25519 base table"),
            size: 8 * 4 * 20 * 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let encoded = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("ed25519 base table input"),
            size: 8 * 32 + 4,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut bytes = Vec::with_capacity(8 * 32);
        let b = curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
        let mut m = b;
        for _ in 0..8 {
            bytes.extend_from_slice(m.compress().as_bytes());
            m += b;
        }
        bytes.extend_from_slice(&[0; 4]); // fe_loop_zero
        queue.write_buffer(&encoded, 0, &bytes);
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("ed25519 table bind"),
            layout: &table_layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: encoded.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: table.as_entire_binding() },
            ],
        });
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ed25519 table") });
        {
            let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            pass.set_pipeline(&table_pipeline);
            pass.set_bind_group(0, &bind, &[]);
            pass.dispatch_workgroups(1, 1, 1);
        }
        let sub = queue.submit([enc.finish()]);
        device
            .poll(wgpu::PollType::Wait { submission_index: Some(sub), timeout: Some(Duration::from_secs(60)) })
            .map_err(|e| GpuError::Driver(format!("building the base table: {e}")))?;
        let me = GpuEd25519 {
            name: adapter.summary.name.clone(),
            software: adapter.summary.software,
            device,
            queue,
            layout,
            pipeline,
            params,
            table,
            buffers: None,
            lost,
            lost_reason,
        };
        me.check()?;
        Ok(me)
    }

    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn check(&self) -> Result<(), GpuError> {
        if self.is_lost() {
            Err(GpuError::DeviceLost(self.lost_reason.lock().clone()))
        } else {
            Ok(())
        }
    }

    fn buffers(&mut self, n: usize) -> &Buffers {
        if self.buffers.as_ref().is_none_or(|b| b.capacity < n) {
            let capacity = n.next_power_of_two().max(256);
            let items = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ed25519 items"),
                size: capacity as u64 * ITEM_BYTES,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let verdict_bytes = capacity as u64; // one byte per item, capacity is a multiple of 4
            let verdicts = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ed25519 verdicts"),
                size: verdict_bytes,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("ed25519 verdict staging"),
                size: verdict_bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("ed25519 verify bind"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: self.params.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: items.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 2, resource: self.table.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 3, resource: verdicts.as_entire_binding() },
                ],
            });
            self.buffers = Some(Buffers { capacity, items, verdicts, staging, bind });
        }
        self.buffers.as_ref().expect("just made")
    }

    /// Verifies encoded items (`GPU_ITEM_WORDS` words each, from
    /// `gpu_encode`), blocking until every verdict is back or `timeout`
    /// passes (then the device counts as lost).
    pub fn verify(&mut self, items: &[[u32; GPU_ITEM_WORDS]], timeout: Duration) -> Result<GpuVerdicts, GpuError> {
        let t0 = Instant::now();
        let mut codes = Vec::with_capacity(items.len());
        for part in items.chunks(MAX_ITEMS) {
            self.dispatch(part, timeout, &mut codes)?;
        }
        Ok(GpuVerdicts { codes, wall: t0.elapsed() })
    }

    /// Verdicts for `items`: `None` for an item this kernel does not
    /// verify (not Ed25519), else exactly what the CPU path would answer,
    /// if the device computes correctly (which the scheduler's trust policy
    /// checks). Items the host can judge from their bytes alone (lengths,
    /// flags, S ≥ ℓ) never reach the GPU. Also returns the GPU wall time.
    pub fn verify_items(
        &mut self,
        items: &[SigItem],
        timeout: Duration,
    ) -> Result<(Vec<Option<Verdict>>, Duration), GpuError> {
        let mut out = vec![None; items.len()];
        let mut words = Vec::with_capacity(items.len());
        let mut at = Vec::with_capacity(items.len());
        for (i, it) in items.iter().enumerate() {
            let Some(pol) = it.scheme.ed25519_policy() else { continue };
            match it.check_flags().and_then(|()| gpu_encode(pol, &it.pubkey, &it.msg, &it.sig)) {
                Ok(w) => {
                    words.push(w);
                    at.push(i);
                }
                Err(r) => out[i] = Some(Verdict::Invalid(r)),
            }
        }
        let res = self.verify(&words, timeout)?;
        for (&i, &c) in at.iter().zip(&res.codes) {
            // A code the kernel cannot produce counts as a device fault.
            let v = Verdict::from_code(c)
                .ok_or_else(|| GpuError::Driver(format!("the kernel returned verdict code {c}")))?;
            out[i] = Some(v);
        }
        Ok((out, res.wall))
    }

    fn dispatch(
        &mut self,
        items: &[[u32; GPU_ITEM_WORDS]],
        timeout: Duration,
        codes: &mut Vec<u8>,
    ) -> Result<(), GpuError> {
        self.check()?;
        let n = items.len();
        if n == 0 {
            return Ok(());
        }
        let count = [n as u32, 0, 0, 0];
        self.queue.write_buffer(&self.params, 0, bytemuck::cast_slice(&count));
        let pipeline = self.pipeline.clone();
        let queue = self.queue.clone();
        let device = self.device.clone();
        let b = self.buffers(n);
        queue.write_buffer(&b.items, 0, bytemuck::cast_slice(items.as_flattened()));
        let verdict_bytes = (n as u64).next_multiple_of(4);
        let mut enc = device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("ed25519 verify") });
        enc.clear_buffer(&b.verdicts, 0, Some(verdict_bytes));
        {
            let mut pass =
                enc.begin_compute_pass(&wgpu::ComputePassDescriptor { label: Some("ed25519"), timestamp_writes: None });
            pass.set_pipeline(&pipeline);
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
            if self.lost.load(Ordering::Acquire) {
                return Err(GpuError::DeviceLost(self.lost_reason.lock().clone()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.lost.store(true, Ordering::Release);
                *self.lost_reason.lock() = format!("an Ed25519 dispatch of {n} items still ran after {timeout:?}");
                return Err(GpuError::Timeout(timeout));
            }
            match device.poll(wgpu::PollType::Wait {
                submission_index: Some(sub.clone()),
                timeout: Some(left.min(Duration::from_millis(500))),
            }) {
                Ok(_) | Err(wgpu::PollError::Timeout) => {}
                Err(e) => {
                    self.lost.store(true, Ordering::Release);
                    *self.lost_reason.lock() = e.to_string();
                    return Err(GpuError::DeviceLost(e.to_string()));
                }
            }
        }
        if let Some(Err(e)) = mapped.lock().take() {
            self.lost.store(true, Ordering::Release);
            return Err(GpuError::DeviceLost(format!("mapping the verdicts failed: {e}")));
        }
        let b = self.buffers.as_ref().expect("made above");
        {
            let view = b
                .staging
                .slice(..verdict_bytes)
                .get_mapped_range()
                .map_err(|e| GpuError::Driver(format!("reading the verdicts: {e}")))?;
            codes.extend_from_slice(&view[..n]);
        }
        b.staging.unmap();
        self.check()
    }
}
