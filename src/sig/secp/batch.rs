//! BIP340 batch verification, as the BIP's "Batch Verification" section
//! specifies: for items i = 1..u with R_i = lift_x(r_i), P_i = lift_x(pk_i),
//! e_i = H_challenge(r_i ‖ pk_i ‖ m_i), and weights a_1 = 1, a_2..a_u drawn
//! in [1, n−1] from ChaCha20 seeded by a hash of every input of the batch,
//! all are valid iff
//!
//!   (s_1 + a_2 s_2 + …) G = R_1 + a_2 R_2 + … + e_1 P_1 + (a_2 e_2) P_2 + …
//!
//! checked as one multi-scalar multiplication ([`super::msm`]). When the
//! equation fails, bisection names the invalid items; every verdict and
//! reason equals libsecp256k1's single verification ([`super::verify_schnorr`])
//! item by item: malformed items get their reason before any arithmetic,
//! and a set of one item under the equation is exactly BIP340's check.
//!
//! When the batch equation does not pay, items go to libsecp256k1 one by
//! one: small batches (below [`MIN_BATCH`], measured), and while the
//! observed share of invalid items is high enough that a batch would likely
//! fail (an attacker flooding invalid items then costs what per-item checks
//! cost, plus at most one failed equation before the rate is learnt). A
//! failed equation is bisected only where that costs less than checking
//! the failing set item by item (the measured [`equation_cost`]), and not
//! once two invalid items are known.

use std::sync::atomic::{AtomicU64, Ordering};

use k256::elliptic_curve::ops::Reduce;
use k256::elliptic_curve::PrimeField;
use k256::{FieldBytes, Scalar};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};

use super::msm;
use super::point::Affine;
use crate::sig::Reason;

/// Below this many items the batch equation costs more per item than
/// libsecp256k1's single verification (measured crossover between 16 and
/// 32: docs/cpu-paths.md).
pub const MIN_BATCH: usize = 32;

/// Cost per item of the batch equation over `n` items, relative to one
/// single verification: measured on one core (docs/cpu-paths.md), linear
/// in log2(n) between the points, the last one held beyond.
fn equation_cost(n: usize) -> f64 {
    const MEASURED: [(f64, f64); 4] = [(32.0, 0.84), (256.0, 0.64), (1024.0, 0.56), (4096.0, 0.50)];
    let x = (n.max(1) as f64).log2();
    let mut prev = (MEASURED[0].0.log2(), MEASURED[0].1);
    if x <= prev.0 {
        return prev.1;
    }
    for (m, c) in MEASURED.iter().skip(1) {
        let (lx, lc) = (m.log2(), *c);
        if x <= lx {
            return prev.1 + (lc - prev.1) * (x - prev.0) / (lx - prev.0);
        }
        prev = (lx, lc);
    }
    prev.1
}

/// How a batch is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Sets smaller than this go to single verification.
    pub min_batch: usize,
    /// Consult (and update) the process-wide invalid rate: per-item checks
    /// while batches would likely fail, and stop bisecting once two invalid
    /// regions are known. Off: always the equation, bisected to single
    /// items (tests use this to exercise every path).
    pub adaptive: bool,
}

impl Default for BatchOptions {
    fn default() -> BatchOptions {
        BatchOptions { min_batch: MIN_BATCH, adaptive: true }
    }
}

/// Share of well-formed items found invalid, an average over recent
/// batches (f64 bits). Shared by all threads; races only blur it.
static INVALID_RATE: AtomicU64 = AtomicU64::new(0);

fn invalid_rate() -> f64 {
    f64::from_bits(INVALID_RATE.load(Ordering::Relaxed))
}

fn observe(invalid: usize, n: usize) {
    if n == 0 {
        return;
    }
    let r = invalid as f64 / n as f64;
    let old = invalid_rate();
    INVALID_RATE.store((0.9 * old + 0.1 * r).to_bits(), Ordering::Relaxed);
}

/// Probability that a set of `n` items holds an invalid one, at rate `p`.
fn p_fail(p: f64, n: usize) -> f64 {
    1.0 - (1.0 - p).powi(n.min(i32::MAX as usize) as i32)
}

/// The batch equation is worth trying for `n` items: its cost plus the
/// per-item checks a failure leads to stays below per-item checks alone.
fn equation_pays(n: usize, opts: &BatchOptions) -> bool {
    n >= opts.min_batch && (!opts.adaptive || equation_cost(n) + p_fail(invalid_rate(), n) < 1.0)
}

/// Bisecting a failing set of `n` items (one invalid item expected) beats
/// per-item checks of all `n`: the left half's equation, the right half's
/// in half the cases, then per-item checks of the failing half, against
/// `n` single verifications.
fn bisection_pays(n: usize) -> bool {
    0.75 * equation_cost(n / 2) + 0.5 < 1.0
}

/// One well-formed item, ready for the equation.
struct Prepared {
    r: Affine,
    p: Affine,
    /// a_i (a_1 = 1).
    a: Scalar,
    /// a_i e_i.
    ae: Scalar,
    /// a_i s_i.
    as_: Scalar,
}

fn challenge_prefix() -> &'static Sha256 {
    static H: std::sync::OnceLock<Sha256> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let tag = Sha256::digest(b"BIP0340/challenge");
        let mut h = Sha256::new();
        h.update(tag);
        h.update(tag);
        h
    })
}

/// An item as bytes: (x-only key, message, signature).
pub type Item<'a> = (&'a [u8], &'a [u8], &'a [u8]);

/// Decode one item but for R: `Err` with the reason single verification
/// gives, in the same order (key length, signature length, key encoding;
/// then r ≥ p, r not an x coordinate, s ≥ n are all a failed signature, so
/// R, lifted later for the whole batch at once, may fail after s).
fn decode<'a>(it: &Item<'a>) -> Result<(&'a [u8; 32], Affine, Scalar, Scalar), Reason> {
    let (pk, msg, sig) = *it;
    let pk: &[u8; 32] = pk.try_into().map_err(|_| Reason::PubkeyLength)?;
    let sig: &[u8; 64] = sig.try_into().map_err(|_| Reason::SigLength)?;
    let p = super::xonly_point(pk).ok_or(Reason::PubkeyEncoding)?;
    let r_bytes: &[u8; 32] = sig[..32].try_into().expect("32");
    let s_bytes: [u8; 32] = sig[32..].try_into().expect("32");
    let s: Scalar = Option::from(Scalar::from_repr(s_bytes.into())).ok_or(Reason::BadSignature)?;
    let mut h = challenge_prefix().clone();
    h.update(r_bytes);
    h.update(pk);
    h.update(msg);
    let e = <Scalar as Reduce<FieldBytes>>::reduce(&h.finalize());
    Ok((r_bytes, p, s, e))
}

/// The weights' seed: SHA-256 of every input of the batch (keys, messages
/// with their lengths, since BIP340 messages have any length, signatures).
fn seed(items: &[Item], at: &[usize]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hashrig/BIP0340/batch");
    h.update((at.len() as u64).to_le_bytes());
    for &i in at {
        h.update(items[i].0);
    }
    for &i in at {
        h.update((items[i].1.len() as u64).to_le_bytes());
        h.update(items[i].1);
    }
    for &i in at {
        h.update(items[i].2);
    }
    h.finalize().into()
}

/// a_2, a_3, …: 256-bit ChaCha20 outputs, skipping those not in [1, n−1].
fn weight(rng: &mut ChaCha20Rng) -> Scalar {
    loop {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        if let Some(a) = Option::<Scalar>::from(Scalar::from_repr(b.into())) {
            if !bool::from(a.is_zero()) {
                return a;
            }
        }
    }
}

/// Verify BIP340 items: `out[i]` is what [`super::verify_schnorr`] says of
/// `items[i]`.
pub fn verify(items: &[Item], opts: &BatchOptions) -> Vec<Result<(), Reason>> {
    let n = items.len();
    if !equation_pays(n, opts) {
        let out: Vec<_> = items.iter().map(|(pk, m, s)| super::verify_schnorr(pk, m, s)).collect();
        if opts.adaptive {
            observe(out.iter().filter(|r| r.is_err()).count(), n);
        }
        return out;
    }
    let mut out: Vec<Result<(), Reason>> = vec![Ok(()); n];
    let mut parsed = Vec::with_capacity(n);
    let mut parsed_at = Vec::with_capacity(n);
    for (i, it) in items.iter().enumerate() {
        match decode(it) {
            Ok(d) => {
                parsed.push(d);
                parsed_at.push(i);
            }
            Err(r) => out[i] = Err(r),
        }
    }
    let rs: Vec<&[u8; 32]> = parsed.iter().map(|d| d.0).collect();
    let mut decoded = Vec::with_capacity(parsed.len());
    let mut at = Vec::with_capacity(parsed.len());
    for ((i, (_, p, s, e)), r) in parsed_at.into_iter().zip(parsed).zip(Affine::lift_x_many(&rs)) {
        match r {
            Some(r) => {
                decoded.push((r, p, s, e));
                at.push(i);
            }
            None => out[i] = Err(Reason::BadSignature),
        }
    }
    let mut rng = ChaCha20Rng::from_seed(seed(items, &at));
    let prepared: Vec<Prepared> = decoded
        .into_iter()
        .enumerate()
        .map(|(k, (r, p, s, e))| {
            let a = if k == 0 { Scalar::ONE } else { weight(&mut rng) };
            Prepared { r, p, a, ae: a * e, as_: a * s }
        })
        .collect();
    let mut b = Bisect { items, at: &at, prepared: &prepared, opts, out: &mut out };
    let all: Vec<usize> = (0..prepared.len()).collect();
    if all.len() < opts.min_batch.max(1) {
        b.per_item(&all);
    } else if !b.holds(&all) {
        b.bisect(&all);
    }
    if opts.adaptive {
        let bad = at.iter().filter(|&&i| out[i].is_err()).count();
        observe(bad, at.len());
    }
    out
}

struct Bisect<'a> {
    items: &'a [Item<'a>],
    /// items[at[k]] is prepared[k].
    at: &'a [usize],
    prepared: &'a [Prepared],
    opts: &'a BatchOptions,
    out: &'a mut [Result<(), Reason>],
}

impl Bisect<'_> {
    /// The batch equation over prepared items `set`.
    fn holds(&self, set: &[usize]) -> bool {
        let mut terms = Vec::with_capacity(2 * set.len() + 1);
        let mut g = Scalar::ZERO;
        for &k in set {
            let p = &self.prepared[k];
            terms.push((p.r, p.a));
            terms.push((p.p, p.ae));
            g += p.as_;
        }
        terms.push((Affine::generator(), -g));
        msm::is_identity(&terms)
    }

    /// Single verification of each item; whether one was invalid.
    fn per_item(&mut self, set: &[usize]) -> bool {
        let mut bad = false;
        for &k in set {
            let (pk, m, s) = self.items[self.at[k]];
            let r = super::verify_schnorr(pk, m, s);
            bad |= r.is_err();
            self.out[self.at[k]] = r;
        }
        bad
    }

    /// Whether `set` holds an invalid item, and whether its verdicts are
    /// already written: the equation, or per-item checks for a set too
    /// small for it.
    fn has_invalid(&mut self, set: &[usize]) -> (bool, bool) {
        if set.len() < self.opts.min_batch.max(1) {
            (self.per_item(set), true)
        } else {
            (!self.holds(set), false)
        }
    }

    /// Name the invalid items of `set`, which holds at least one.
    fn bisect(&mut self, set: &[usize]) {
        if set.len() < self.opts.min_batch.max(1) || (self.opts.adaptive && !bisection_pays(set.len())) {
            self.per_item(set);
            return;
        }
        if set.len() == 1 {
            // One item with a_i ≠ 0: the equation is BIP340's own check.
            self.out[self.at[set[0]]] = Err(Reason::BadSignature);
            return;
        }
        let (l, r) = set.split_at(set.len() / 2);
        let (left_bad, left_done) = self.has_invalid(l);
        if !left_bad {
            // Left all valid: the invalid item is on the right.
            self.bisect(r);
            return;
        }
        let (right_bad, right_done) = self.has_invalid(r);
        if right_bad && self.opts.adaptive {
            // Two invalid items at least: more are likely, and per-item
            // checks then cost less than further equations.
            if !left_done {
                self.per_item(l);
            }
            if !right_done {
                self.per_item(r);
            }
            return;
        }
        if !left_done {
            self.bisect(l);
        }
        if right_bad && !right_done {
            self.bisect(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p_fail_model() {
        assert_eq!(p_fail(0.0, 256), 0.0);
        assert!((p_fail(0.5, 1) - 0.5).abs() < 1e-12);
        assert!(p_fail(0.01, 256) > 0.9);
    }

    #[test]
    fn cost_model_follows_the_table() {
        assert_eq!(equation_cost(1), 0.84);
        assert!((equation_cost(256) - 0.64).abs() < 1e-12);
        assert!(equation_cost(64) < 0.84 && equation_cost(64) > 0.64);
        assert_eq!(equation_cost(1 << 20), 0.50);
        // A clean stream uses the equation from the crossover on.
        assert!(equation_cost(MIN_BATCH) < 1.0);
    }
}
