//! Batch equations inside the GPU signature engine, on lavapipe: with the
//! equation kernels forced on (`EquationMode::Always`), the Ed25519 and
//! BIP340 items of every dispatch go through one multi-scalar
//! multiplication and, when it fails, its bisection, under the trust
//! policy's canaries; the verdicts (valid, or the reason) must equal the
//! CPU path's single verification item by item, for batches of 1 to 4096
//! items with none, one, a few and all invalid, mixed with ECDSA items the
//! per-item kernel checks, and the published vectors of tests/data. A
//! kernel that reports a failed equation as holding is caught by the
//! invalid canaries and the adapter taken off signature work, with every
//! answer still the CPU's. Lavapipe is found like every GPU test here: no
//! adapter is a failure, not a skip.
#![cfg(feature = "gpu")]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hashrig::sched::sig::gpu::device::WgpuDevice;
use hashrig::sched::sig::gpu::equation::EquationMode;
use hashrig::sched::{GpuSigEngine, TrustPolicy};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_one, Scheme, SigItem, Verdict};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

fn engine(policy: TrustPolicy, lie: bool) -> (Arc<GpuSigEngine>, Arc<AtomicU64>) {
    let a = common::first_adapter();
    let share = Arc::new(hashrig::gpu::AdapterShare::new());
    let dev =
        WgpuDevice::open_with(&a, share, EquationMode::Always).unwrap_or_else(|e| panic!("{}: {e}", a.summary.name));
    let count = dev.equation_counter().expect("equations are forced on");
    if lie {
        dev.lie_after_start();
    }
    let g = GpuSigEngine::with_device(Box::new(dev), policy, None, None)
        .unwrap_or_else(|e| panic!("{}: {e}", a.summary.name));
    (g, count)
}

fn data(name: &str) -> String {
    let p = format!("{}/tests/data/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

/// Published vectors of tests/data as items: BIP340's, Wycheproof's and
/// speccheck's Ed25519 ones under both policies.
fn published() -> Vec<SigItem> {
    let mut items = Vec::new();
    for line in data("bip340_test_vectors.csv").lines().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let h = |i: usize| hex::decode(f[i]).unwrap();
        items.push(SigItem::new(Scheme::Schnorr, h(2), h(4), h(5)));
    }
    let mut ed = Vec::new();
    let j: serde_json::Value = serde_json::from_str(&data("speccheck_cases.json")).unwrap();
    for c in j.as_array().unwrap() {
        let h = |k: &str| hex::decode(c[k].as_str().unwrap()).unwrap();
        ed.push((h("pub_key"), h("message"), h("signature")));
    }
    let j: serde_json::Value = serde_json::from_str(&data("wycheproof_ed25519_test.json")).unwrap();
    for g in j["testGroups"].as_array().unwrap() {
        let pk = hex::decode(g["publicKey"]["pk"].as_str().unwrap()).unwrap();
        for t in g["tests"].as_array().unwrap() {
            let h = |k: &str| hex::decode(t[k].as_str().unwrap()).unwrap();
            ed.push((pk.clone(), h("msg"), h("sig")));
        }
    }
    for (pk, msg, sig) in ed {
        for s in [Scheme::Ed25519, Scheme::Ed25519Strict] {
            items.push(SigItem::new(s, pk.clone(), msg.clone(), sig.clone()));
        }
    }
    items
}

/// `n` items: Ed25519 (both policies), BIP340 and a few ECDSA, `bad` of
/// them mutated (bad signatures, bad encodings), shuffled.
fn batch(rng: &mut rand::rngs::StdRng, n: usize, bad: usize) -> Vec<SigItem> {
    let schemes = [Scheme::Ed25519, Scheme::Schnorr, Scheme::Ed25519Strict, Scheme::Schnorr, Scheme::Ecdsa];
    let mut items: Vec<SigItem> = (0..n)
        .map(|i| {
            let it = valid_item(schemes[i % schemes.len()], rng.random());
            if i < bad {
                mutate(&it, rng.random())
            } else {
                it
            }
        })
        .collect();
    items.shuffle(rng);
    items
}

fn check(g: &GpuSigEngine, what: &str, items: &[SigItem]) {
    let ans = g.verify(items).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(!ans.mismatch, "{what}: the trust policy saw a wrong verdict");
    let want: Vec<Verdict> = items.iter().map(verify_one).collect();
    for (i, (got, want)) in ans.verdicts.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "{what}: item {i} ({}) differs", items[i].scheme);
    }
    assert_eq!(ans.verdicts.len(), items.len());
}

#[test]
fn equation_verdicts_equal_single_verification() {
    let policy = TrustPolicy { warmup_items: 0, ..TrustPolicy::default() };
    let (g, count) = engine(policy, false);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xe9);
    let before = count.load(Ordering::Relaxed);
    for n in [1usize, 2, 40, 257, 1024, 4096] {
        for bad in [0, 1, 3, n] {
            // All 4096 invalid is 500 equations on lavapipe: 1024 covers it.
            if bad > n || (n == 4096 && bad == n) {
                continue;
            }
            check(&g, &format!("{n} items, {bad} invalid"), &batch(&mut rng, n, bad));
        }
    }
    let mut pubs = published();
    assert!(pubs.len() > 300, "{} published items", pubs.len());
    pubs.shuffle(&mut rng);
    check(&g, "published vectors", &pubs);
    let run = count.load(Ordering::Relaxed) - before;
    assert!(run >= 20, "only {run} batch equations ran: the equation path was not taken");
    assert!(g.is_active());
}

#[test]
fn a_kernel_that_hides_invalid_items_is_caught_by_the_canaries() {
    // No warm-up and almost no sampling: only the canaries can catch it.
    let policy = TrustPolicy { warmup_items: 0, sample_one_in: 1 << 30, ..TrustPolicy::default() };
    let (g, count) = engine(policy, true);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xca);
    let mut caught = None;
    for round in 0..30 {
        // Valid items only: a wrong "valid" can come from the canaries alone.
        let items = batch(&mut rng, 48, 0);
        let ans = g.verify(&items).expect("answered");
        let want: Vec<Verdict> = items.iter().map(verify_one).collect();
        assert_eq!(ans.verdicts, want, "round {round}: every answer is the CPU's");
        if ans.mismatch {
            caught = Some(round);
            break;
        }
    }
    assert!(caught.is_some(), "30 dispatches with canaries and the lie was never seen");
    assert!(!g.is_active(), "the adapter is taken off signature work");
    assert!(count.load(Ordering::Relaxed) > 0);
}
