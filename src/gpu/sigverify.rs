//! Signature verification on one adapter: the Ed25519 kernel
//! (kernels/ed25519_verify.wgsl) and the secp256k1 one (ECDSA and BIP340,
//! kernels/secp256k1_verify.wgsl) on one device, with their pipelines and
//! buffers. This layer runs dispatches and nothing else: which items come
//! here, the canaries and the CPU re-checks are the scheduler's
//! (`sched::sig_gpu`), the item encodings are
//! [`crate::sig::ed25519::gpu_encode`] and [`crate::sig::secp::gpu`].
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
use crate::sig::secp::gpu as secp_gpu;
use crate::sig::{Reason, SigItem, Verdict};

const WORKGROUP: u32 = 64;
/// Items per dispatch at most (larger calls are cut into several).
pub const MAX_ITEMS: usize = 1 << 20;

struct Buffers {
    capacity: usize,
    items: wgpu::Buffer,
    verdicts: wgpu::Buffer,
    staging: wgpu::Buffer,
    bind: wgpu::BindGroup,
}

/// One verification kernel: its pipeline, its constant table (binding 2)
/// and the buffers of its last dispatch size.
struct Kernel {
    label: &'static str,
    item_words: usize,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    params: wgpu::Buffer,
    table: wgpu::Buffer,
    buffers: Option<Buffers>,
}

/// The device's "lost" flag and why, shared with its error handler.
struct Loss {
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

fn verify_layout(device: &wgpu::Device, label: &str) -> wgpu::BindGroupLayout {
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(label),
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
    })
}

/// The driver's pipeline cache, kept on disk, where the adapter has one:
/// the big shaders compile once per driver, not once per start.
struct DiskCache {
    cache: Option<wgpu::PipelineCache>,
    file: Option<std::path::PathBuf>,
}

impl DiskCache {
    fn open(device: &wgpu::Device, adapter: &wgpu::Adapter, enabled: bool) -> DiskCache {
        let file = enabled
            .then(|| {
                let key = wgpu::util::pipeline_cache_key(&adapter.get_info())?;
                Some(super::tune::default_cache_path()?.with_file_name(format!("{key}.bin")))
            })
            .flatten();
        let cache = file.as_ref().map(|f| {
            let data = std::fs::read(f).ok();
            // SAFETY: the data is what `get_data` returned for an adapter
            // with this key (the file is named by it), written by us; wgpu
            // checks its header (version, adapter, size) and with `fallback`
            // starts an empty cache when it does not fit.
            unsafe {
                device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                    label: Some("hashrig signature pipeline cache"),
                    data: data.as_deref(),
                    fallback: true,
                })
            }
        });
        DiskCache { cache, file }
    }

    fn save(&self) {
        if let (Some(c), Some(f)) = (&self.cache, &self.file) {
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
    }
}

fn params_buffer(device: &wgpu::Device, label: &str) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

impl GpuSigKernels {
    /// Device, the pipelines, and the constant tables: Ed25519's base point
    /// table built on the GPU from curve25519-dalek's encodings of [1..8]B,
    /// secp256k1's [1..8]G and [1..8](lambda G) from libsecp256k1's
    /// serialisations.
    pub fn new(adapter: &GpuAdapter) -> Result<GpuSigKernels, GpuError> {
        let a = &adapter.adapter;
        let cache_features = a.features() & wgpu::Features::PIPELINE_CACHE;
        let (device, queue, (lost, lost_reason)) = super::open_device(adapter, "hashrig signatures", cache_features)?;
        let cache = DiskCache::open(&device, a, !cache_features.is_empty());
        let t0 = Instant::now();
        let ed25519 = Self::ed25519_kernel(&device, &queue, cache.cache.as_ref())?;
        let t1 = Instant::now();
        let secp256k1 = Self::secp256k1_kernel(&device, &queue, cache.cache.as_ref())?;
        tracing::info!(
            adapter = %adapter.summary.name,
            "signature kernels built: Ed25519 in {:.2} s, secp256k1 in {:.2} s{}",
            (t1 - t0).as_secs_f64(),
            t1.elapsed().as_secs_f64(),
            if cache.cache.is_some() { " (driver pipeline cache on disk)" } else { "" }
        );
        cache.save();
        let me = GpuSigKernels {
            name: adapter.summary.name.clone(),
            software: adapter.summary.software,
            device,
            queue,
            ed25519,
            secp256k1,
            loss: Loss { lost, reason: lost_reason },
        };
        me.loss.check()?;
        Ok(me)
    }

    fn ed25519_kernel(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        cache: Option<&wgpu::PipelineCache>,
    ) -> Result<Kernel, GpuError> {
        let verify_module = module(device, kernel::ED25519_VERIFY_FILE)?;
        let table_module = module(device, kernel::ED25519_TABLE_FILE)?;
        let layout = verify_layout(device, "ed25519 verify bind group");
        let table_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ed25519 table bind group"),
            entries: &[storage_entry(0, true), storage_entry(1, false)],
        });
        let pipeline = make_pipeline(device, &layout, &verify_module, "verify", cache)?;
        let table_pipeline = make_pipeline(device, &table_layout, &table_module, "build_table", cache)?;
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
        Ok(Kernel {
            label: "ed25519",
            item_words: GPU_ITEM_WORDS,
            layout,
            pipeline,
            params: params_buffer(device, "ed25519 params"),
            table,
            buffers: None,
        })
    }

    fn secp256k1_kernel(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        cache: Option<&wgpu::PipelineCache>,
    ) -> Result<Kernel, GpuError> {
        let m = module(device, kernel::SECP256K1_VERIFY_FILE)?;
        let layout = verify_layout(device, "secp256k1 verify bind group");
        let pipeline = make_pipeline(device, &layout, &m, "verify", cache)?;
        let words = secp_gpu::g_table();
        let table = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("secp256k1 G table"),
            size: 4 * words.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&table, 0, bytemuck::cast_slice(&words));
        Ok(Kernel {
            label: "secp256k1",
            item_words: secp_gpu::GPU_ITEM_WORDS,
            layout,
            pipeline,
            params: params_buffer(device, "secp256k1 params"),
            table,
            buffers: None,
        })
    }

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

impl Kernel {
    fn ensure_buffers(&mut self, device: &wgpu::Device, n: usize) {
        if self.buffers.as_ref().is_some_and(|b| b.capacity >= n) {
            return;
        }
        let capacity = n.next_power_of_two().max(256);
        let items = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("signature items"),
            size: (capacity * 4 * self.item_words) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let verdict_bytes = capacity as u64; // one byte per item, capacity is a multiple of 4
        let verdicts = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("signature verdicts"),
            size: verdict_bytes,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("signature verdict staging"),
            size: verdict_bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let bind = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some("signature verify bind"),
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
}
