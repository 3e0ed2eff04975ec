//! Single-thread sha256d throughput per backend, in nonces per second.
//!
//! The target is zero, so no nonce is a hit and no candidate reaches the
//! scalar confirmation: this measures the kernels alone.
//! Run: cargo bench --bench sha256d -- --warm-up-time 1 --measurement-time 3

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use hashrig::pow::{available, scan, Backend, NonceRange, SearchInput};
use std::hint::black_box;

const NONCES: u64 = 1 << 16;

fn bench(c: &mut Criterion) {
    let mut header = [0u8; 80];
    for (i, b) in header.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(11);
    }
    let input = SearchInput::new(&header, &[0u8; 32]);
    let mut g = c.benchmark_group("sha256d");
    g.throughput(Throughput::Elements(NONCES));
    for b in available() {
        // The reference paths are ~10x slower; fewer samples keep the run short.
        if matches!(b, Backend::Scalar | Backend::Midstate) {
            g.sample_size(10);
        } else {
            g.sample_size(30);
        }
        let mut start = 0u32;
        g.bench_with_input(BenchmarkId::from_parameter(b.name()), &b, |bch, &b| {
            let mut hits = Vec::new();
            bch.iter(|| {
                start = start.wrapping_add(NONCES as u32);
                black_box(scan(b, black_box(&input), NonceRange::new(start, NONCES), &mut hits))
            })
        });
    }
    // The SHA-NI + AVX-512 lab loop (not a backend unless it beats both).
    #[cfg(target_arch = "x86_64")]
    if hashrig::pow::hybrid::is_available() {
        g.sample_size(30);
        let mut start = 0u32;
        g.bench_function(BenchmarkId::from_parameter("sha-ni+avx512"), |bch| {
            let mut hits = Vec::new();
            bch.iter(|| {
                start = start.wrapping_add(NONCES as u32);
                let end = start as u64 + NONCES;
                // SAFETY: features checked by `is_available`.
                unsafe { hashrig::pow::hybrid::scan(black_box(&input), start, end, &mut hits) };
                black_box(&hits);
            })
        });
    }
    g.finish();
}

/// The GPU kernel through its dispatch ring: `sha256d-gpu/<adapter>`, one
/// iteration = 2^22 nonces. Hardware adapters first; skipped with a note
/// when there is no Vulkan adapter at all.
#[cfg(feature = "gpu")]
fn bench_gpu(c: &mut Criterion) {
    use hashrig::gpu::{self, ContextOptions, GpuContext};
    const GPU_NONCES: u64 = 1 << 22;
    let mut all = gpu::adapters();
    all.sort_by_key(|a| a.summary.software);
    let Some(a) = all.first() else {
        eprintln!("sha256d-gpu: no Vulkan adapter, GPU bench skipped");
        return;
    };
    let mut ctx = match GpuContext::new(a, &ContextOptions::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sha256d-gpu: {} unusable ({e}), GPU bench skipped", a.summary.name);
            return;
        }
    };
    let input = SearchInput::new(&[0x3c; 80], &[0u8; 32]);
    let mut g = c.benchmark_group("sha256d-gpu");
    g.throughput(Throughput::Elements(GPU_NONCES));
    g.sample_size(10);
    let id = format!("{} {}x{}", a.summary.name, ctx.tune.wg, ctx.tune.npt);
    let mut start = 0u32;
    g.bench_function(BenchmarkId::from_parameter(id), |b| {
        b.iter(|| {
            start = start.wrapping_add(GPU_NONCES as u32);
            black_box(ctx.scan(&input, NonceRange::new(start, GPU_NONCES), GPU_NONCES / 4).map(|o| o.hashes))
        })
    });
    g.finish();
}

#[cfg(not(feature = "gpu"))]
fn bench_gpu(_: &mut Criterion) {
    eprintln!("sha256d-gpu: built without the gpu feature, GPU bench skipped");
}

criterion_group!(benches, bench, bench_gpu);
criterion_main!(benches);
