//! The trust policy: no wrong verdict leaves a GPU engine.
//!
//! Every dispatch carries known-answer canaries (valid and invalid items,
//! the edge cases among them) at random positions; every GPU "invalid" is
//! re-verified on the CPU; a sample of GPU "valid" verdicts is re-verified
//! too, every one of the first [`TrustPolicy::warmup_items`] items after
//! start-up. On any disagreement the dispatch is answered from the CPU and
//! the adapter is taken off signature work for good.
//!
//! CPU cost per GPU item: the re-check of every invalid item, plus one
//! verification per `sample_one_in` valid items (1/256: 0.4% of a CPU
//! verification), plus the warm-up's items once. Canaries cost no CPU
//! time: their answers are known.

use rand::Rng;

use crate::sig::{demo, verify_one, Family, PerFamily, Scheme, SigItem, Verdict};

/// How far GPU verdicts are trusted.
#[derive(Clone, Debug, PartialEq)]
pub struct TrustPolicy {
    /// Re-verify one in this many GPU "valid" verdicts on the CPU (1 = all).
    pub sample_one_in: u32,
    /// Items after start-up whose every verdict is re-verified (counted in
    /// items, not dispatches: a short job is not verified twice).
    pub warmup_items: u64,
    /// Known-answer items added to every dispatch.
    pub canaries: usize,
    /// A dispatch still running after ten times its prediction, and at
    /// least this long, counts as a hung device (taken off).
    pub hung_after: std::time::Duration,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        TrustPolicy {
            sample_one_in: 256,
            warmup_items: 1024,
            canaries: 4,
            hung_after: std::time::Duration::from_secs(10),
        }
    }
}

/// The canary pool, each with the CPU path's verdict, indexed by family.
pub(super) struct Canaries {
    pub(super) items: Vec<(SigItem, Verdict)>,
    by_family: PerFamily<Vec<usize>>,
}

impl Canaries {
    pub(super) fn new() -> Canaries {
        let items = canary_pool();
        let mut by_family: PerFamily<Vec<usize>> = Default::default();
        for (i, (it, _)) in items.iter().enumerate() {
            by_family[it.scheme.family()].push(i);
        }
        Canaries { items, by_family }
    }

    /// `k` canaries for a dispatch of `items`, for each kernel it runs in
    /// turn, and where each goes: `(position in the dispatch, canary)`,
    /// positions ascending, in a dispatch of `n + k` slots.
    pub(super) fn place<'a>(
        &self,
        items: impl Iterator<Item = &'a SigItem>,
        n: usize,
        k: usize,
    ) -> Vec<(usize, usize)> {
        let mut rng = rand::rng();
        let mut present = PerFamily::<bool>::default();
        for it in items {
            present[it.scheme.family()] = true;
        }
        let mut fams: Vec<Family> = Family::ALL.into_iter().filter(|&f| present[f]).collect();
        if fams.is_empty() {
            fams.push(Family::Ed25519);
        }
        let mut next = rng.random_range(0..fams.len());
        let mut pos: Vec<usize> = (0..k).map(|_| rng.random_range(0..=n + k - 1)).collect();
        pos.sort_unstable();
        pos.dedup();
        // Distinct positions: fill any duplicate with the next free slot.
        while pos.len() < k {
            let p = rng.random_range(0..n + k);
            if let Err(at) = pos.binary_search(&p) {
                pos.insert(at, p);
            }
        }
        pos.into_iter()
            .map(|p| {
                let own = &self.by_family[fams[next % fams.len()]];
                next += 1;
                (p, own[rng.random_range(0..own.len())])
            })
            .collect()
    }
}

/// Known-answer items for canaries, each with the CPU path's verdict: valid
/// items of both policies, bad signatures, and edge cases (small-order and
/// non-canonical encodings).
fn canary_pool() -> Vec<(SigItem, Verdict)> {
    let mut items = Vec::new();
    for i in 0..24u64 {
        let scheme = if i % 2 == 0 { Scheme::Ed25519 } else { Scheme::Ed25519Strict };
        let v = demo::valid_item(scheme, 0xca9a_0000 + i);
        items.push(demo::mutate(&v, i * 7 + 1));
        items.push(v);
    }
    // Small-order key and R (the identity, y = 1) with S = 0: valid under
    // ZIP-215, small_order_pubkey under strict.
    let mut id = [0u8; 32];
    id[0] = 1;
    let sig: Vec<u8> = id.iter().chain([0u8; 32].iter()).copied().collect();
    for scheme in [Scheme::Ed25519, Scheme::Ed25519Strict] {
        items.push(SigItem::new(scheme, id.to_vec(), b"canary".to_vec(), sig.clone()));
        // y = p + 1: a non-canonical encoding of the identity.
        let mut nc = [0xffu8; 32];
        nc[0] = 0xee;
        nc[31] = 0x7f;
        items.push(SigItem::new(scheme, nc.to_vec(), b"canary".to_vec(), sig.clone()));
        // y = 2 does not decode.
        let mut bad = [0u8; 32];
        bad[0] = 2;
        items.push(SigItem::new(scheme, bad.to_vec(), b"canary".to_vec(), sig.clone()));
    }
    // secp256k1: valid and mutated ECDSA (both high-S rules) and BIP340
    // items, a high-S signature, and keys that fail only on the curve
    // (x with no square root, a point off the curve).
    for i in 0..12u64 {
        for scheme in [Scheme::Ecdsa, Scheme::Schnorr] {
            let v = demo::valid_item(scheme, 0xca9b_0000 + i);
            items.push(demo::mutate(&v, i * 5 + 2));
            if i % 3 == 0 && scheme == Scheme::Ecdsa {
                items.push(v.clone().allow_high_s());
            }
            items.push(v);
        }
    }
    let ecdsa = demo::valid_item(Scheme::Ecdsa, 0xca9b_1000);
    if let Ok(sig) = secp256k1::ecdsa::Signature::from_compact(&ecdsa.sig) {
        // (r, n - s): high S, valid only under allow_high_s.
        let mut high = ecdsa.clone();
        let n_minus_s =
            secp256k1::SecretKey::from_secret_bytes(sig.serialize_compact()[32..].try_into().unwrap_or([1; 32]))
                .map(|s| s.negate().to_secret_bytes());
        if let Ok(ns) = n_minus_s {
            high.sig[32..].copy_from_slice(&ns);
            items.push(high.clone());
            items.push(high.allow_high_s());
        }
    }
    let mut off_curve = ecdsa.clone();
    off_curve.pubkey = [&[2u8][..], &[0u8; 31], &[5u8]].concat(); // x = 5: 5^3 + 7 is not a square
    items.push(off_curve.clone());
    off_curve.pubkey = [&[4u8][..], &[0u8; 31], &[1u8], &[0u8; 31], &[1u8]].concat(); // (1, 1)
    items.push(off_curve);
    let schnorr = demo::valid_item(Scheme::Schnorr, 0xca9b_2000);
    let mut no_root = schnorr.clone();
    no_root.pubkey = [&[0u8; 31][..], &[5u8]].concat();
    items.push(no_root);
    items.into_iter().map(|it| (it.clone(), verify_one(&it))).collect()
}
