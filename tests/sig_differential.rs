//! Differential tests against second implementations over thousands of
//! random valid and mutated items:
//! * Ed25519 ZIP-215 against ed25519-zebra (single verify);
//! * Ed25519 strict against ed25519-dalek's `verify_strict` (which differs
//!   from our strict policy only on torsion components, which random and
//!   bit-flipped items do not have);
//! * batch against single for every count 0..=N, with invalid items at
//!   random places, all schemes mixed.

use ed25519_dalek::{Signer, SigningKey};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_batch, verify_one, Scheme, SigItem, Verdict};
use rand::{Rng, RngCore, SeedableRng};

const N: usize = 2000;

fn ed_items(rng: &mut rand::rngs::StdRng, scheme: Scheme) -> Vec<SigItem> {
    (0..N)
        .map(|i| {
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            let sk = SigningKey::from_bytes(&seed);
            let mut msg = vec![0u8; rng.random_range(0..100)];
            rng.fill_bytes(&mut msg);
            let sig = sk.sign(&msg);
            let item = SigItem::new(scheme, sk.verifying_key().to_bytes(), msg, sig.to_bytes());
            match i % 4 {
                0 => item,
                1 => mutate(&item, rng.next_u64()),
                2 => {
                    // Random bytes in one field.
                    let mut m = item;
                    let f = match rng.random_range(0..3) {
                        0 => &mut m.pubkey,
                        1 => &mut m.sig,
                        _ => &mut m.msg,
                    };
                    rng.fill_bytes(f);
                    m
                }
                _ => {
                    // S pushed over ℓ, or a wrong length.
                    let mut m = item;
                    if rng.random_bool(0.5) {
                        m.sig[63] |= 0xf0;
                    } else {
                        let n = rng.random_range(0..70);
                        m.sig.resize(n, 0);
                    }
                    m
                }
            }
        })
        .collect()
}

fn zebra(it: &SigItem) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(it.pubkey.as_slice()) else { return false };
    let Ok(sig) = <[u8; 64]>::try_from(it.sig.as_slice()) else { return false };
    let Ok(vk) = ed25519_zebra::VerificationKey::try_from(pk) else { return false };
    vk.verify(&ed25519_zebra::Signature::from_bytes(&sig), &it.msg).is_ok()
}

fn dalek_strict(it: &SigItem) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(it.pubkey.as_slice()) else { return false };
    let Ok(sig) = <[u8; 64]>::try_from(it.sig.as_slice()) else { return false };
    let Ok(vk) = ed25519_dalek::VerifyingKey::from_bytes(&pk) else { return false };
    vk.verify_strict(&it.msg, &ed25519_dalek::Signature::from_bytes(&sig)).is_ok()
}

#[test]
fn ed25519_zip215_vs_zebra() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(215);
    let items = ed_items(&mut rng, Scheme::Ed25519);
    let batch = verify_batch(&items);
    let mut valid = 0;
    for (i, it) in items.iter().enumerate() {
        let z = zebra(it);
        assert_eq!(verify_one(it).is_valid(), z, "item {i}: {it:?}");
        assert_eq!(batch[i].is_valid(), z, "batch item {i}");
        valid += z as usize;
    }
    assert!(valid > N / 5 && valid < N / 2, "{valid} valid of {N}");
}

#[test]
fn ed25519_strict_vs_dalek() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(8032);
    let items = ed_items(&mut rng, Scheme::Ed25519Strict);
    let batch = verify_batch(&items);
    for (i, it) in items.iter().enumerate() {
        let d = dalek_strict(it);
        assert_eq!(verify_one(it).is_valid(), d, "item {i}: {it:?}");
        assert_eq!(batch[i].is_valid(), d, "batch item {i}");
    }
}

/// Batch verdicts equal single verdicts for every count 0..=64, every
/// scheme mixed, invalid items at random places (the bisection marks
/// exactly the bad ones).
#[test]
fn batch_equals_single_every_count() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(340);
    let pool: Vec<SigItem> = (0..24).flat_map(|i| Scheme::ALL.map(|s| valid_item(s, i))).collect();
    for n in 0..=64usize {
        let items: Vec<SigItem> = (0..n)
            .map(|_| {
                let base = &pool[rng.random_range(0..pool.len())];
                if rng.random_bool(0.2) {
                    mutate(base, rng.next_u64())
                } else {
                    base.clone()
                }
            })
            .collect();
        let single: Vec<Verdict> = items.iter().map(verify_one).collect();
        assert_eq!(verify_batch(&items), single, "n = {n}");
    }
}

/// Large Ed25519 batches with a few bad items: exactly those are marked.
#[test]
fn bisection_large_batch() {
    let items: Vec<SigItem> = (0..1024).map(|i| valid_item(Scheme::Ed25519, i)).collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for bad_count in [0usize, 1, 2, 7] {
        let mut batch = items.clone();
        let mut bad = std::collections::BTreeSet::new();
        while bad.len() < bad_count {
            bad.insert(rng.random_range(0..batch.len()));
        }
        for &b in &bad {
            batch[b].msg[0] ^= 1;
        }
        let got = verify_batch(&batch);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v.is_valid(), !bad.contains(&i), "bad {bad:?}, item {i}");
        }
    }
}
