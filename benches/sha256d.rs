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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
