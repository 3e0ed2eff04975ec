//! Building the signature kernels on one device: shader modules, pipelines
//! (through the driver's pipeline cache on disk), the constant tables, and
//! the per-kernel buffers that grow with the largest dispatch.

use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::{GpuSigKernels, Loss, Which};
use crate::gpu::kernel::{self, FieldChoice, FieldPath};
use crate::gpu::{GpuAdapter, GpuError};
use crate::sig::ed25519::GPU_ITEM_WORDS;
use crate::sig::secp::gpu as secp_gpu;

pub(super) struct Buffers {
    pub(super) params: wgpu::Buffer,
    pub(super) capacity: usize,
    pub(super) items: wgpu::Buffer,
    pub(super) verdicts: wgpu::Buffer,
    pub(super) staging: wgpu::Buffer,
    pub(super) bind: wgpu::BindGroup,
}

/// One verification kernel: its pipeline and its constant table (binding 2).
pub(super) struct Kernel {
    pub(super) label: &'static str,
    /// The field arithmetic the kernel was built with.
    pub(super) field: FieldPath,
    pub(super) item_words: usize,
    pub(super) layout: wgpu::BindGroupLayout,
    pub(super) pipeline: wgpu::ComputePipeline,
    pub(super) table: wgpu::Buffer,
}

pub(super) fn storage_entry(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
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

pub(super) fn module(device: &wgpu::Device, file: &str, field: FieldPath) -> Result<wgpu::ShaderModule, GpuError> {
    let src = kernel::source_with_field(file, field)
        .ok_or_else(|| GpuError::Compile(format!("{file}: source incomplete")))?;
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

pub(super) fn make_pipeline(
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
                Some(crate::gpu::tune::default_cache_path()?.with_file_name(format!("{key}.bin")))
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
    /// serialisations. The field arithmetic is `HASHRIG_GPU_FIELD`'s
    /// (u32, u64 or auto; unset: auto).
    pub fn new(adapter: &GpuAdapter) -> Result<GpuSigKernels, GpuError> {
        Self::with_field(adapter, FieldChoice::from_env().map_err(GpuError::Unsupported)?)
    }

    /// [`GpuSigKernels::new`] with the field path given: U64 (products
    /// through u64) where the adapter has `SHADER_INT64` and `choice`
    /// allows it, else U32.
    pub fn with_field(adapter: &GpuAdapter, choice: FieldChoice) -> Result<GpuSigKernels, GpuError> {
        let a = &adapter.adapter;
        let (field, why) = choice.resolve(a.features().contains(wgpu::Features::SHADER_INT64));
        if let Some(why) = why {
            tracing::warn!(adapter = %adapter.summary.name, "{}: {why}", kernel::FIELD_ENV);
        }
        let int64 = if field == FieldPath::U64 { wgpu::Features::SHADER_INT64 } else { wgpu::Features::empty() };
        let cache_features = a.features() & wgpu::Features::PIPELINE_CACHE;
        let (device, queue, (lost, lost_reason)) =
            crate::gpu::open_device(adapter, "hashrig signatures", cache_features | int64)?;
        let cache = DiskCache::open(&device, a, !cache_features.is_empty());
        let t0 = Instant::now();
        let ed25519 = Self::ed25519_kernel(&device, &queue, cache.cache.as_ref(), field)?;
        let t1 = Instant::now();
        let secp256k1 = Self::secp256k1_kernel(&device, &queue, cache.cache.as_ref(), field)?;
        tracing::info!(
            adapter = %adapter.summary.name,
            "signature kernels built ({} field): Ed25519 in {:.2} s, secp256k1 in {:.2} s{}",
            field.name(),
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
            slots: (0..RING_SLOTS).map(|_| Mutex::new(Slot::default())).collect(),
            free: Mutex::new((0..RING_SLOTS).rev().collect()),
            freed: Condvar::new(),
            submissions: std::sync::atomic::AtomicU64::new(0),
        };
        me.loss.check()?;
        Ok(me)
    }

    fn ed25519_kernel(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        cache: Option<&wgpu::PipelineCache>,
        field: FieldPath,
    ) -> Result<Kernel, GpuError> {
        let verify_module = module(device, kernel::ED25519_VERIFY_FILE, field)?;
        let table_module = module(device, kernel::ED25519_TABLE_FILE, field)?;
        let layout = verify_layout(device, "ed25519 verify bind group");
        let table_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("ed25519 table bind group"),
            entries: &[storage_entry(0, true), storage_entry(1, false)],
        });
        let pipeline = make_pipeline(device, &layout, &verify_module, "verify", cache)?;
        let table_pipeline = make_pipeline(device, &table_layout, &table_module, "build_table", cache)?;
        // 8 Cached points of 4 field elements of up to 20 u32 (10 on the
        // u64 path: the buffer is larger than that binding needs).
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
        Ok(Kernel { label: "ed25519", field, item_words: GPU_ITEM_WORDS, layout, pipeline, table })
    }

    fn secp256k1_kernel(
        device: &wgpu::Device,
        queue: &wgpu::Queue,
        cache: Option<&wgpu::PipelineCache>,
        field: FieldPath,
    ) -> Result<Kernel, GpuError> {
        let m = module(device, kernel::SECP256K1_VERIFY_FILE, field)?;
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
        Ok(Kernel { label: "secp256k1", field, item_words: secp_gpu::GPU_ITEM_WORDS, layout, pipeline, table })
    }

    /// The field arithmetic both kernels were built with.
    pub fn field(&self) -> FieldPath {
        self.secp256k1.field
    }
}

/// Dispatches in flight per device: one being written, one running, one
/// being read back.
const RING_SLOTS: usize = 3;

/// One buffer set of the ring: per kernel, grown to its largest dispatch.
#[derive(Default)]
pub(super) struct Slot {
    ed25519: Option<Buffers>,
    secp256k1: Option<Buffers>,
}

impl Slot {
    pub(super) fn get(&self, which: Which) -> Option<&Buffers> {
        match which {
            Which::Ed25519 => self.ed25519.as_ref(),
            Which::Secp256k1 => self.secp256k1.as_ref(),
        }
    }

    /// `which`'s buffers, with room for `n` items.
    pub(super) fn ensure(&mut self, which: Which, k: &Kernel, device: &wgpu::Device, n: usize) -> &Buffers {
        let b = match which {
            Which::Ed25519 => &mut self.ed25519,
            Which::Secp256k1 => &mut self.secp256k1,
        };
        if b.as_ref().is_none_or(|b| b.capacity < n) {
            *b = Some(Buffers::new(k, device, n));
        }
        b.as_ref().expect("just made")
    }
}

impl Buffers {
    fn new(k: &Kernel, device: &wgpu::Device, n: usize) -> Buffers {
        let capacity = n.next_power_of_two().max(256);
        let params = params_buffer(device, k.label);
        let items = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("signature items"),
            size: (capacity * 4 * k.item_words) as u64,
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
            layout: &k.layout,
            entries: &[
                wgpu::BindGroupEntry { binding: 0, resource: params.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 1, resource: items.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 2, resource: k.table.as_entire_binding() },
                wgpu::BindGroupEntry { binding: 3, resource: verdicts.as_entire_binding() },
            ],
        });
        Buffers { capacity, params, items, verdicts, staging, bind }
    }
}
