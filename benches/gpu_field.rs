//! secp256k1 field multiplication on the GPU, two reductions on the same
//! 13-bit limbs (tools/gen-secp256k1-field-wgsl.py): the special-prime fold
//! the kernels use (2^260 = 2^36 + 2^13 + 7440 mod p) against Montgomery
//! form (R = 2^260, generated with `--montgomery` for this measurement only).
//! Each invocation squares its value `CHAIN` times with the product under
//! test; the two must agree (Montgomery in and out of its domain), which
//! is checked before timing. Runs on the first Vulkan adapter (lavapipe on
//! a machine without a GPU; HASHRIG_BENCH_GPU=N picks another).
//!
//! `cargo bench --bench gpu_field`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const CHAIN: u32 = 256;
const INVOCATIONS: u32 = 4096;

const PROBE: &str = r#"
@group(0) @binding(0) var<storage, read> inp: array<u32>;
@group(0) @binding(1) var<storage, read_write> outp: array<u32>;

fn load(at: u32) -> Fe {
    var r: Fe;
    LOAD
    return r;
}

fn store(at: u32, a: Fe) {
    let f = fe_freeze(a);
    STORE
}

@compute @workgroup_size(64)
fn special(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = inp[arrayLength(&inp) - 1u];
    var x = load(20u * gid.x);
    for (var k = 0u; k < CHAINu + fe_loop_zero; k++) {
        x = fe_mul(x, x);
    }
    store(20u * gid.x, x);
}

@compute @workgroup_size(64)
fn montgomery(@builtin(global_invocation_id) gid: vec3<u32>) {
    fe_loop_zero = inp[arrayLength(&inp) - 1u];
    var x = fe_mont_mul(load(20u * gid.x), FE_MONT_R2);
    for (var k = 0u; k < CHAINu + fe_loop_zero; k++) {
        x = fe_mont_mul(x, x);
    }
    store(20u * gid.x, fe_mont_mul(x, FE_ONE));
}
"#;

struct Probe {
    device: wgpu::Device,
    queue: wgpu::Queue,
    bind: [wgpu::BindGroup; 2],
    out: wgpu::Buffer,
    staging: wgpu::Buffer,
    special: wgpu::ComputePipeline,
    montgomery: wgpu::ComputePipeline,
    lost: std::sync::Arc<std::sync::atomic::AtomicBool>,
    why: std::sync::Arc<parking_lot::Mutex<String>>,
}

impl Probe {
    fn new() -> Probe {
        let pick = std::env::var("HASHRIG_BENCH_GPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        let a = hashrig::gpu::adapters().into_iter().nth(pick).expect("a Vulkan adapter (lavapipe: make deps)");
        eprintln!("gpu_field on {}", a.summary.name);
        let (device, queue, (lost, why)) =
            hashrig::gpu::open_device(&a, "gpu_field bench", wgpu::Features::empty()).unwrap();
        let gen = std::process::Command::new("python3")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tools/gen-secp256k1-field-wgsl.py"))
            .arg("--montgomery")
            .output()
            .expect("python3 runs the field generator");
        assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
        let load: String = (0..20).map(|i| format!("r[{i}] = inp[at + {i}u];\n    ")).collect();
        let store: String = (0..20).map(|i| format!("outp[at + {i}u] = f[{i}];\n    ")).collect();
        let src = String::from_utf8(gen.stdout).unwrap()
            + &PROBE.replace("LOAD", &load).replace("STORE", &store).replace("CHAIN", &CHAIN.to_string());
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("gpu_field"),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
        let pipeline = |entry| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        let (special, montgomery) = (pipeline("special"), pipeline("montgomery"));
        if let Some(e) = pollster::block_on(scope.pop()) {
            panic!("the probe kernel does not build: {e}");
        }
        // Random limbs below 2^13 (values below 2^260: loose, as the kernels' are).
        let mut words: Vec<u32> =
            (0..20 * INVOCATIONS).map(|i| (i.wrapping_mul(2_654_435_761) >> 7) & 0x1fff).collect();
        words.push(0);
        let inp = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4 * words.len() as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        queue.write_buffer(&inp, 0, bytemuck::cast_slice(&words));
        let size = 4 * 20 * INVOCATIONS as u64;
        let out = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        // Automatic layouts belong to one pipeline each: one bind group each.
        let bind = [&special, &montgomery].map(|p| {
            device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &p.get_bind_group_layout(0),
                entries: &[
                    wgpu::BindGroupEntry { binding: 0, resource: inp.as_entire_binding() },
                    wgpu::BindGroupEntry { binding: 1, resource: out.as_entire_binding() },
                ],
            })
        });
        Probe { device, queue, bind, out, staging, special, montgomery, lost, why }
    }

    /// One dispatch of `pipeline` over every invocation; the results.
    fn run(&self, montgomery: bool) -> Vec<u32> {
        let p = if montgomery { &self.montgomery } else { &self.special };
        let mut enc = self.device.create_command_encoder(&Default::default());
        // No result of an earlier run can pass for this one's.
        enc.clear_buffer(&self.out, 0, None);
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(p);
            pass.set_bind_group(0, &self.bind[montgomery as usize], &[]);
            pass.dispatch_workgroups(INVOCATIONS / 64, 1, 1);
        }
        enc.copy_buffer_to_buffer(&self.out, 0, &self.staging, 0, self.out.size());
        self.queue.submit([enc.finish()]);
        self.staging.slice(..).map_async(wgpu::MapMode::Read, |r| r.expect("map"));
        self.device
            .poll(wgpu::PollType::Wait { submission_index: None, timeout: Some(Duration::from_secs(600)) })
            .expect("poll");
        let v = bytemuck::cast_slice(&self.staging.slice(..).get_mapped_range().unwrap()).to_vec();
        self.staging.unmap();
        assert!(!self.lost.load(std::sync::atomic::Ordering::Acquire), "GPU error: {}", self.why.lock());
        v
    }
}

fn field_mul(c: &mut Criterion) {
    let probe = Probe::new();
    // Same values from both reductions, and not the input back.
    let (a, b) = (probe.run(false), probe.run(true));
    assert_eq!(a, b, "special-prime and Montgomery chains disagree");
    assert!(a.iter().any(|&w| w != 0));
    let mut g = c.benchmark_group("secp256k1_fe_mul_gpu");
    g.sample_size(10);
    g.throughput(Throughput::Elements((CHAIN * INVOCATIONS) as u64));
    g.bench_function("special_prime", |bn| bn.iter(|| probe.run(false)));
    g.bench_function("montgomery", |bn| bn.iter(|| probe.run(true)));
    g.finish();
}

criterion_group!(benches, field_mul);
criterion_main!(benches);
