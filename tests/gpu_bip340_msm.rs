//! BIP340's batch equation on the GPU (kernels/secp256k1_msm.wgsl through
//! `hashrig::gpu::sig::GpuMsm`) on lavapipe against single verification
//! by two implementations nobody here wrote: libsecp256k1 (through the CPU
//! path's `verify_one`) and k256 with the documented reason order
//! (tests/secp_items's `expect_schnorr`), item by item, verdict and reason.
//! Batches of 1, 2, 7, 33 and 64 with none, one, a few and all invalid, from
//! the 19 published BIP340 vectors and the seeded random/mutated generator
//! of tests/secp_items (bad r and s, keys off the curve, bit flips, wrong
//! lengths). The equation itself must answer as predicted from k256: it
//! holds exactly when no item reaching it (key and r lift, r < p, s < n)
//! has a bad signature. No adapter is a failure, not a skip.
#![cfg(feature = "gpu")]

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hashrig::gpu::kernel::{FieldChoice, FieldPath};
use hashrig::gpu::sig::{Curve, Equation, GpuMsm};
use hashrig::sig::{verify_one, Reason, Scheme, SigItem, Verdict};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

mod secp_items;
use secp_items::{expect_schnorr, is_zero, scalar_in_range, schnorr_items};

fn gpu(path: FieldPath) -> &'static Mutex<GpuMsm> {
    static U64: OnceLock<Mutex<GpuMsm>> = OnceLock::new();
    static U32: OnceLock<Mutex<GpuMsm>> = OnceLock::new();
    let cell = if path == FieldPath::U64 { &U64 } else { &U32 };
    cell.get_or_init(|| {
        let a = common::first_adapter();
        let k = GpuMsm::with_field(&a, FieldChoice::Force(path), Curve::Bip340)
            .unwrap_or_else(|e| panic!("BIP340 batch-equation kernel on {}: {e}", a.summary.name));
        assert_eq!(k.field(), path, "{} has no SHADER_INT64: the u64 path cannot be tested", a.summary.name);
        Mutex::new(k)
    })
}

/// The reference verdict: k256 with the documented order, which must be
/// libsecp256k1's (the CPU path) too.
fn reference(it: &SigItem) -> Verdict {
    let want = expect_schnorr(it);
    assert_eq!(verify_one(it), want, "k256 and libsecp256k1 disagree on {it:?}");
    want
}

/// Whether an item reaches the equation: everything the host and the
/// decoder check passes (flags, lengths, the key lifts, r < p lifts, s < n).
fn reaches(it: &SigItem, v: Verdict) -> bool {
    match v {
        Verdict::Valid => true,
        Verdict::Invalid(Reason::BadSignature) => {
            let r: [u8; 32] = it.sig[..32].try_into().unwrap();
            let s: [u8; 32] = it.sig[32..].try_into().unwrap();
            k256::schnorr::VerifyingKey::from_slice(&r).is_ok() && (is_zero(&s) || scalar_in_range(&s))
        }
        _ => false,
    }
}

fn check_batch(path: FieldPath, window: Option<u32>, what: &str, items: &[SigItem]) {
    let refs: Vec<&SigItem> = items.iter().collect();
    let want: Vec<Verdict> = items.iter().map(reference).collect();
    let bv = {
        let mut g = gpu(path).lock().unwrap();
        g.set_window_bits(window);
        let r = g.verify_batch_equation(&refs, Duration::from_secs(600));
        g.set_window_bits(None);
        r.unwrap_or_else(|e| panic!("{what}: GPU dispatch: {e}"))
    };
    let ctx = format!("{what} ({} field, window {window:?}, {} items)", path.name(), items.len());
    let reaching: Vec<bool> = items.iter().zip(&want).map(|(it, v)| reaches(it, *v)).collect();
    let n_reach = reaching.iter().filter(|r| **r).count();
    let bad = reaching.iter().zip(&want).filter(|(r, v)| **r && !v.is_valid()).count();
    let eq = if n_reach == 0 {
        Equation::Empty
    } else if bad > 0 {
        Equation::Fails
    } else {
        Equation::Holds
    };
    assert_eq!(bv.equation, eq, "{ctx}: equation");
    let undecided = if eq == Equation::Fails { n_reach } else { 0 };
    assert_eq!(bv.undecided(), undecided, "{ctx}: undecided items");
    for (i, (g, w)) in bv.verdicts.iter().zip(&want).enumerate() {
        if let Some(g) = g {
            assert_eq!(g, w, "{ctx}: item {i} decided on the GPU: {:?}", items[i]);
        }
    }
    let mut calls = 0;
    let all = bv
        .resolve(&refs, |sub| {
            calls += 1;
            sub.iter().map(|i| verify_one(i)).collect()
        })
        .unwrap();
    assert_eq!(all, want, "{ctx}: final verdicts");
    assert_eq!(calls, usize::from(undecided > 0), "{ctx}: fallback calls");
}

fn vectors() -> Vec<SigItem> {
    let csv =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bip340_test_vectors.csv")).unwrap();
    let items: Vec<SigItem> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let h = |s: &str| hex::decode(s).unwrap();
            SigItem::new(Scheme::Schnorr, h(f[2]), h(f[4]), h(f[5]))
        })
        .collect();
    assert_eq!(items.len(), 19);
    items
}

fn pools() -> (Vec<SigItem>, Vec<SigItem>) {
    let mut rng = StdRng::seed_from_u64(0x4249_5033_3430_6770);
    let mut all = vectors();
    all.extend(schnorr_items(&mut rng, 400).into_iter().map(|(it, _)| it));
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for it in all {
        if reference(&it).is_valid() {
            good.push(it);
        } else {
            bad.push(it);
        }
    }
    good.shuffle(&mut rng);
    bad.shuffle(&mut rng);
    (good, bad)
}

fn batch(rng: &mut StdRng, good: &[SigItem], bad: &[SigItem], n: usize, k: usize) -> Vec<SigItem> {
    let mut b: Vec<SigItem> = (0..n - k).map(|_| good[rng.random_range(0..good.len())].clone()).collect();
    b.extend((0..k).map(|_| bad[rng.random_range(0..bad.len())].clone()));
    b.shuffle(rng);
    b
}

#[test]
fn batches_match_single_verification() {
    let (good, bad) = pools();
    assert!(good.len() > 50 && bad.len() > 100, "{} valid, {} invalid", good.len(), bad.len());
    for r in [Reason::BadSignature, Reason::PubkeyEncoding, Reason::PubkeyLength, Reason::SigLength] {
        assert!(bad.iter().any(|it| expect_schnorr(it) == Verdict::Invalid(r)), "no {r:?} in the pool");
    }
    let mut rng = StdRng::seed_from_u64(340);
    for n in [1usize, 2, 7, 33, 64] {
        let mut ks = vec![0, 1, 3.min(n), n];
        ks.dedup();
        for k in ks {
            check_batch(FieldPath::U64, None, &format!("{k} bad"), &batch(&mut rng, &good, &bad, n, k));
        }
    }
}

/// The vectors in one batch, the valid ones alone, and with each invalid
/// one added in turn; the valid ones on the u32 field and other widths.
#[test]
fn published_vectors() {
    let items = vectors();
    check_batch(FieldPath::U64, None, "all 19 vectors", &items);
    let (good, bad): (Vec<SigItem>, Vec<SigItem>) = items.iter().cloned().partition(|it| reference(it).is_valid());
    check_batch(FieldPath::U64, None, "valid vectors", &good);
    for (i, it) in bad.iter().enumerate() {
        let mut b = good.clone();
        b.insert(i % (b.len() + 1), it.clone());
        check_batch(FieldPath::U64, None, &format!("valid vectors + invalid {i}"), &b);
    }
    for (path, c) in [(FieldPath::U32, None), (FieldPath::U64, Some(4)), (FieldPath::U64, Some(9))] {
        check_batch(path, c, "vectors", &items);
        check_batch(path, c, "valid vectors", &good);
    }
}

#[test]
fn other_schemes_are_refused() {
    let g = gpu(FieldPath::U64).lock().unwrap();
    let e = hashrig::sig::demo::valid_item(Scheme::Ed25519, 1);
    assert!(g.verify_batch_equation(&[&e], Duration::from_secs(60)).is_err());
    let bv = g.verify_batch_equation(&[], Duration::from_secs(60)).unwrap();
    assert_eq!((bv.equation, bv.rounds), (Equation::Empty, 0));
}
