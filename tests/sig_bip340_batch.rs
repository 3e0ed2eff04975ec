//! BIP340 batch verification (src/sig/secp/batch.rs) against single
//! verification by two implementations nobody here wrote: libsecp256k1
//! (the `secp256k1` crate, called directly) and k256's BIP340 `verify_raw`
//! with the documented reason order (tests/secp_items's `expect_schnorr`).
//!
//! Items: the 19 published BIP340 vectors, and the seeded random/mutated
//! generator of tests/secp_items (valid signatures from both libraries,
//! bit flips, bad r and s, keys off the curve, wrong lengths, …). Batches of
//! 1, 2, 3, 64, 257, 1024 and 4096 items with no, one, a few and only
//! invalid items, at random places, with repeated items (the sum then adds
//! a point to itself). Each batch goes through the equation with bisection
//! down to single items (no per-item shortcut, so every equation path
//! runs), through the default adaptive policy, and through
//! `verify_batch`; verdict and reason must equal the references item by
//! item.

use hashrig::sig::secp::batch::{verify, BatchOptions, Item};
use hashrig::sig::{verify_batch, verify_one, Reason, Scheme, SigItem, Verdict};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

mod secp_items;
use secp_items::{expect_schnorr, schnorr_items};

/// The equation everywhere, bisected to single items.
const EQUATION: BatchOptions = BatchOptions { min_batch: 1, adaptive: false };

/// The reference verdict: k256 with the documented reason order, checked
/// against libsecp256k1's own verify for well-formed items.
fn reference(it: &SigItem) -> Verdict {
    let want = expect_schnorr(it);
    if it.flags == 0 && it.pubkey.len() == 32 && it.sig.len() == 64 {
        if let Ok(pk) = secp256k1::XOnlyPublicKey::from_byte_array(it.pubkey.as_slice().try_into().unwrap()) {
            let sig = secp256k1::schnorr::Signature::from_byte_array(it.sig.as_slice().try_into().unwrap());
            let ok = secp256k1::schnorr::verify(&sig, &it.msg, &pk).is_ok();
            assert_eq!(ok, want.is_valid(), "k256 and libsecp256k1 disagree on {it:?}");
        }
    }
    want
}

/// Check one batch every way; returns the number of invalid items.
fn check(items: &[SigItem], what: &str) -> usize {
    let want: Vec<Verdict> = items.iter().map(reference).collect();
    // The batch API takes flag-free items (flags are checked before it).
    let plain: Vec<Item> = items.iter().map(|it| (&it.pubkey[..], &it.msg[..], &it.sig[..])).collect();
    let no_flags: Vec<Verdict> = items.iter().map(|it| expect_schnorr(&SigItem { flags: 0, ..it.clone() })).collect();
    for (opts, name) in [(EQUATION, "equation"), (BatchOptions::default(), "adaptive")] {
        let got = verify(&plain, &opts);
        assert_eq!(got.len(), items.len());
        for (i, (g, w)) in got.iter().zip(&no_flags).enumerate() {
            assert_eq!(Verdict::from(*g), *w, "{what} ({name}) item {i}: {:?}", items[i]);
        }
    }
    let got = verify_batch(items);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "{what} (verify_batch) item {i}: {:?}", items[i]);
        if items.len() <= 64 {
            assert_eq!(verify_one(&items[i]), *w, "{what} (verify_one) item {i}");
        }
    }
    want.iter().filter(|v| !v.is_valid()).count()
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn bip340_vectors_in_batches() {
    let csv =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bip340_test_vectors.csv")).unwrap();
    let mut items = Vec::new();
    let mut valid = Vec::new();
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        items.push(SigItem::new(Scheme::Schnorr, unhex(f[2]), unhex(f[4]), unhex(f[5])));
        valid.push(f[6] == "TRUE");
    }
    assert_eq!(items.len(), 19);
    for (i, it) in items.iter().enumerate() {
        assert_eq!(reference(it).is_valid(), valid[i], "vector {i}");
        check(std::slice::from_ref(it), &format!("vector {i} alone"));
    }
    assert_eq!(check(&items, "all 19 vectors"), valid.iter().filter(|v| !**v).count());
    // The valid ones together (they pass the equation), then with each
    // invalid one added in turn.
    let good: Vec<SigItem> = items.iter().zip(&valid).filter(|(_, v)| **v).map(|(it, _)| it.clone()).collect();
    assert_eq!(check(&good, "valid vectors"), 0);
    for (i, it) in items.iter().enumerate().filter(|(i, _)| !valid[*i]) {
        let mut b = good.clone();
        b.insert(i % (b.len() + 1), it.clone());
        assert_eq!(check(&b, &format!("valid vectors + vector {i}")), 1);
    }
    // Repeated and shuffled to 64 and 257 items.
    let mut rng = StdRng::seed_from_u64(340);
    for n in [64, 257] {
        let mut b: Vec<SigItem> = items.iter().cycle().take(n).cloned().collect();
        b.shuffle(&mut rng);
        check(&b, &format!("vectors x{n}"));
    }
    // Vector 5's key is not on the curve: a reason, not a failed equation.
    let got = verify(&[(&items[5].pubkey[..], &items[5].msg[..], &items[5].sig[..])], &EQUATION);
    assert_eq!(got[0], Err(Reason::PubkeyEncoding));
}

/// Valid and invalid items from the shared generator.
fn pools(seed: u64, keys: usize) -> (Vec<SigItem>, Vec<SigItem>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (it, _label) in schnorr_items(&mut rng, keys) {
        if reference(&it).is_valid() {
            good.push(it);
        } else {
            bad.push(it);
        }
    }
    (good, bad)
}

/// A batch of `n` items, `k` of them invalid at random places; valid items
/// repeat when the pool is smaller than the batch.
fn batch(rng: &mut StdRng, good: &[SigItem], bad: &[SigItem], n: usize, k: usize) -> Vec<SigItem> {
    let start = rng.random_range(0..good.len());
    let mut b: Vec<SigItem> = good.iter().cycle().skip(start).take(n - k).cloned().collect();
    for _ in 0..k {
        let at = rng.random_range(0..=b.len());
        b.insert(at, bad[rng.random_range(0..bad.len())].clone());
    }
    b
}

#[test]
fn generated_batches_match_single_verification() {
    let (good, bad) = pools(0x4249_5033_3430_6261, 1600);
    assert!(good.len() >= 300 && bad.len() >= 900, "{} valid, {} invalid", good.len(), bad.len());
    // Every kind of invalid item is in the pool, reasons included.
    for r in [Reason::BadSignature, Reason::PubkeyEncoding, Reason::PubkeyLength, Reason::SigLength, Reason::BadFlags] {
        assert!(bad.iter().any(|it| reference(it) == Verdict::Invalid(r)), "no {r:?} in the pool");
    }
    // Invalid only because the equation fails (well-formed): the hard case
    // for bisection, since nothing rejects them before the sum.
    let unsound: Vec<SigItem> =
        bad.iter().filter(|it| reference(it) == Verdict::Invalid(Reason::BadSignature)).cloned().collect();
    let mut rng = StdRng::seed_from_u64(7);
    for n in [1usize, 2, 3, 64, 257, 1024] {
        for k in [0, 1, 3.min(n), n] {
            assert_eq!(check(&batch(&mut rng, &good, &bad, n, k), &format!("n={n} k={k}")), k);
            // Only well-formed invalid items: every one costs equations down
            // to a single item (skipped for all 1024, the slowest case).
            if k > 0 && !(n >= 1024 && k == n) {
                assert_eq!(check(&batch(&mut rng, &good, &unsound, n, k), &format!("n={n} k={k} bad sig")), k);
            }
        }
    }
}

#[test]
fn batches_of_4096() {
    let (good, bad) = pools(0x0409_6000, 600);
    let unsound: Vec<SigItem> =
        bad.iter().filter(|it| reference(it) == Verdict::Invalid(Reason::BadSignature)).cloned().collect();
    let mut rng = StdRng::seed_from_u64(4096);
    assert_eq!(check(&batch(&mut rng, &good, &bad, 4096, 0), "n=4096 k=0"), 0);
    assert_eq!(check(&batch(&mut rng, &good, &unsound, 4096, 1), "n=4096 k=1"), 1);
    assert_eq!(check(&batch(&mut rng, &good, &unsound, 4096, 5), "n=4096 k=5"), 5);
}

#[test]
fn one_key_many_messages() {
    // The same key in every item, and the same item twice: equal points in
    // one bucket (the tangent case of the bucket sums).
    let sk = secp256k1::Keypair::from_secret_bytes([0x42; 32]).unwrap();
    let pk = secp256k1::XOnlyPublicKey::from_keypair(&sk).0.to_byte_array();
    let mut items: Vec<SigItem> = (0..300u32)
        .map(|i| {
            let msg = i.to_le_bytes().to_vec();
            let sig = secp256k1::schnorr::sign_no_aux_rand(&msg, &sk);
            SigItem::new(Scheme::Schnorr, pk, msg, sig.to_byte_array())
        })
        .collect();
    let dup = items[17].clone();
    items.push(dup.clone());
    items.push(dup);
    assert_eq!(check(&items, "one key"), 0);
    items[100].msg.push(1);
    items[250].sig[63] ^= 1;
    assert_eq!(check(&items, "one key, two bad"), 2);
}
