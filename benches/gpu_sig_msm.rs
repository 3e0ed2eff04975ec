//! Ed25519 and BIP340 on the GPU: one batch of n items through the batch
//! equation (kernels/ed25519_msm.wgsl, kernels/secp256k1_msm.wgsl: one
//! multi-scalar multiplication over 2n + 1 points) against the per-item
//! kernel (kernels/ed25519_verify.wgsl, kernels/secp256k1_verify.wgsl: one
//! double-scalar multiplication per item), both from `SigItem`s to verdicts
//! (host work included), on the same adapter in the same run, per scheme:
//!
//! * `all_valid/per_item`, `all_valid/batch_equation`;
//! * `one_invalid/batch_equation_then_per_item`: the equation fails and the
//!   batch goes to the per-item kernel (today's fallback), so this is the
//!   price of one bad item.
//!
//! Runs on the first Vulkan adapter (HASHRIG_BENCH_GPU=N picks another):
//! lavapipe on a machine without a GPU, where the figures say how two
//! kernels compare on a CPU's SIMD lanes, not on a GPU. n is
//! HASHRIG_BENCH_BATCH (default 64). Verdicts are checked against the CPU
//! before timing.
//!
//! `cargo bench --bench gpu_sig_msm -- --warm-up-time 1 --measurement-time 5`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hashrig::gpu::sig::{Curve, Equation, GpuMsm, GpuSigKernels};
use hashrig::sig::demo::valid_item;
use hashrig::sig::{verify_one, Scheme, SigItem, Verdict};

const TIMEOUT: Duration = Duration::from_secs(600);

fn per_item(k: &GpuSigKernels, items: &[&SigItem]) -> Vec<Verdict> {
    let owned: Vec<SigItem> = items.iter().map(|i| (*i).clone()).collect();
    let (v, _) = k.verify_items(&owned, TIMEOUT).expect("per-item dispatch");
    v.into_iter().map(|v| v.expect("every item gets a verdict")).collect()
}

fn batch_equation(m: &GpuMsm, k: &GpuSigKernels, items: &[&SigItem]) -> (Vec<Verdict>, Equation) {
    let bv = m.verify_batch_equation(items, TIMEOUT).expect("batch equation");
    let eq = bv.equation;
    (bv.resolve(items, |sub| per_item(k, sub)).expect("resolve"), eq)
}

fn compare(c: &mut Criterion) {
    let pick = std::env::var("HASHRIG_BENCH_GPU").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let n: usize = std::env::var("HASHRIG_BENCH_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    let a = hashrig::gpu::adapters().into_iter().nth(pick).expect("a Vulkan adapter (lavapipe: make deps)");
    eprintln!(
        "gpu_sig_msm on {} ({}), batch {n}",
        a.summary.name,
        if a.summary.software { "software" } else { "hardware" }
    );
    let k = GpuSigKernels::new(&a).expect("per-item kernels");
    for (scheme, curve, name) in
        [(Scheme::Ed25519, Curve::Ed25519, "ed25519"), (Scheme::Schnorr, Curve::Bip340, "bip340")]
    {
        let m = GpuMsm::new(&a, curve).expect("batch-equation kernel");
        let valid: Vec<SigItem> = (0..n as u64).map(|i| valid_item(scheme, i)).collect();
        let mut one_bad = valid.clone();
        one_bad[n / 2].msg.push(1);
        for (what, items, want) in [("all valid", &valid, Equation::Holds), ("one invalid", &one_bad, Equation::Fails)]
        {
            let refs: Vec<&SigItem> = items.iter().collect();
            let cpu: Vec<Verdict> = items.iter().map(verify_one).collect();
            assert_eq!(per_item(&k, &refs), cpu, "{name} {what}: per-item kernel");
            let (got, eq) = batch_equation(&m, &k, &refs);
            assert_eq!((got, eq), (cpu, want), "{name} {what}: batch equation");
        }
        let mut g = c.benchmark_group(format!("{name}_gpu_n{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n as u64));
        let refs: Vec<&SigItem> = valid.iter().collect();
        g.bench_function("all_valid/per_item", |b| b.iter(|| per_item(&k, &refs)));
        g.bench_function("all_valid/batch_equation", |b| b.iter(|| batch_equation(&m, &k, &refs)));
        let refs: Vec<&SigItem> = one_bad.iter().collect();
        g.bench_function("one_invalid/batch_equation_then_per_item", |b| b.iter(|| batch_equation(&m, &k, &refs)));
        g.finish();
    }
}

criterion_group!(benches, compare);
criterion_main!(benches);
