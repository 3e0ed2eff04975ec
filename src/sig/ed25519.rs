//! Ed25519 under two policies, single and batch, both with the cofactored
//! equation `[8](S·B − k·A − R) = 0`, so single and batch always agree.
//!
//! * [`Ed25519Policy::Zip215`]: A and R may use any encoding that decodes to a
//!   curve point (non-canonical y ≥ p, "negative zero" x), small-order points
//!   allowed; S must be < ℓ. `k = SHA-512(R_bytes ‖ A_bytes ‖ M)` over the
//!   bytes as sent.
//! * [`Ed25519Policy::Strict`]: as above, plus A and R must be canonical
//!   encodings and must not be of small order.
//!
//! The batch verifier checks `[8](Σ zᵢRᵢ + Σ zᵢkᵢAᵢ − (Σ zᵢsᵢ)B) = 0` with
//! 128-bit random zᵢ; when that fails it bisects (reusing the decoded points
//! and hashes) until exactly the failing items are marked.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::Rng;
use sha2::{Digest, Sha512};

use super::Reason;

#[cfg(all(target_arch = "x86_64", curve25519_dalek_backend = "avx512"))]
mod ifma;

/// Which Ed25519 encodings and points are accepted (the equation is always
/// the cofactored one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ed25519Policy {
    /// ZIP-215 (Zcash, Penumbra, ed25519-zebra, ed25519-consensus).
    Zip215,
    /// Canonical encodings only, small-order A and R rejected.
    Strict,
}

/// An item decoded and hashed, ready for the equation.
#[derive(Clone, Debug)]
pub struct Prepared {
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Whether a 32-byte encoding is canonical, from the bytes alone: y < p,
/// and no sign bit on x = 0 (x = 0 only for y = 1 and y = p − 1). The
/// encoding must decode; this only says whether it is the canonical one.
fn is_canonical(b: &[u8; 32]) -> bool {
    let sign = b[31] >> 7;
    let mut y = *b;
    y[31] &= 0x7f;
    // y ≥ p = 2^255 − 19 ⇔ y[0] ≥ 0xed and every other byte is all ones.
    let ge_p = y[0] >= 0xed && y[1..31].iter().all(|&v| v == 0xff) && y[31] == 0x7f;
    if ge_p {
        return false;
    }
    const ONE: [u8; 32] = {
        let mut o = [0u8; 32];
        o[0] = 1;
        o
    };
    const P_MINUS_1: [u8; 32] = {
        let mut o = [0xffu8; 32];
        o[0] = 0xec;
        o[31] = 0x7f;
        o
    };
    !(sign == 1 && (y == ONE || y == P_MINUS_1))
}

/// A decoded point and what the strict policy needs to know about it.
#[derive(Clone, Copy)]
struct Decoded {
    point: EdwardsPoint,
    canonical: bool,
    small_order: bool,
}

fn decode_raw(bytes: &[u8; 32]) -> Option<Decoded> {
    let point = CompressedEdwardsY(*bytes).decompress()?;
    Some(Decoded { point, canonical: is_canonical(bytes), small_order: point.is_small_order() })
}

/// Decoded Ed25519 keys: 16 × 1024 entries (≈ 4 MiB at most).
fn key_cache() -> &'static super::cache::KeyCache<[u8; 32], Option<Decoded>> {
    static C: std::sync::OnceLock<super::cache::KeyCache<[u8; 32], Option<Decoded>>> = std::sync::OnceLock::new();
    C.get_or_init(|| super::cache::KeyCache::new(1024))
}

fn decode(bytes: &[u8; 32], policy: Ed25519Policy, is_key: bool) -> Result<EdwardsPoint, Reason> {
    if is_key {
        return key_checks(key_cache().get_or_insert(bytes, bytes[0], decode_raw), policy);
    }
    let p = CompressedEdwardsY(*bytes).decompress().ok_or(Reason::REncoding)?;
    if policy == Ed25519Policy::Strict {
        if !is_canonical(bytes) {
            return Err(Reason::NonCanonicalR);
        }
        if p.is_small_order() {
            return Err(Reason::SmallOrderR);
        }
    }
    Ok(p)
}

/// A decoded key (from the cache or just decoded) under `policy`.
fn key_checks(d: Option<Decoded>, policy: Ed25519Policy) -> Result<EdwardsPoint, Reason> {
    let d = d.ok_or(Reason::PubkeyEncoding)?;
    if policy == Ed25519Policy::Strict {
        if !d.canonical {
            return Err(Reason::NonCanonicalPubkey);
        }
        if d.small_order {
            return Err(Reason::SmallOrderPubkey);
        }
    }
    Ok(d.point)
}

/// The checks before decoding, in the order of reasons: key and signature
/// lengths, then S < ℓ. Returns A's bytes, R's bytes and S.
fn split<'a>(pubkey: &'a [u8], sig: &[u8]) -> Result<(&'a [u8; 32], [u8; 32], Scalar), Reason> {
    let pk: &[u8; 32] = pubkey.try_into().map_err(|_| Reason::PubkeyLength)?;
    let sig: &[u8; 64] = sig.try_into().map_err(|_| Reason::SigLength)?;
    let mut r_bytes = [0u8; 32];
    let mut s_bytes = [0u8; 32];
    r_bytes.copy_from_slice(&sig[..32]);
    s_bytes.copy_from_slice(&sig[32..]);
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)).ok_or(Reason::SNotReduced)?;
    Ok((pk, r_bytes, s))
}

/// k = SHA-512(R_bytes ‖ A_bytes ‖ M) mod ℓ, over the bytes as sent.
fn challenge(r_bytes: &[u8; 32], pk: &[u8; 32], msg: &[u8]) -> Scalar {
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(pk);
    h.update(msg);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h.finalize());
    Scalar::from_bytes_mod_order_wide(&wide)
}

/// Decode and hash one item; a malformed item gets its reason.
pub fn prepare(policy: Ed25519Policy, pubkey: &[u8], msg: &[u8], sig: &[u8]) -> Result<Prepared, Reason> {
    let (pk, r_bytes, s) = split(pubkey, sig)?;
    let a = decode(pk, policy, true)?;
    let r = decode(&r_bytes, policy, false)?;
    let k = challenge(&r_bytes, pk, msg);
    Ok(Prepared { a, r, s, k })
}

/// One item for [`prepare_many`]: policy, public key, message, signature.
pub type Input<'a> = (Ed25519Policy, &'a [u8], &'a [u8], &'a [u8]);

/// [`prepare`] for many items, with every R decompressed together (eight
/// at a time in AVX-512 IFMA lanes where the CPU has them). `out[i]` is
/// exactly what `prepare(items[i])` returns, reasons and their order
/// included.
pub fn prepare_many(items: &[Input<'_>]) -> Vec<Result<Prepared, Reason>> {
    // Keys the cache does not hold are decoded together too, then cached.
    let mut missing: Vec<[u8; 32]> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for &(_, pubkey, _, sig) in items {
        if let Ok((pk, _, _)) = split(pubkey, sig) {
            if key_cache().get(pk, pk[0]).is_none() && seen.insert(*pk) {
                missing.push(*pk);
            }
        }
    }
    for (pk, p) in missing.iter().zip(decompress_many(&missing)) {
        let d = p.map(|point| Decoded { point, canonical: is_canonical(pk), small_order: point.is_small_order() });
        key_cache().insert(*pk, pk[0], d);
    }
    // Lengths, S and A, as `prepare` checks them; R's bytes kept.
    let mut out: Vec<Result<Prepared, Reason>> = Vec::with_capacity(items.len());
    let mut r_bytes = Vec::with_capacity(items.len());
    for &(policy, pubkey, _, sig) in items {
        match split(pubkey, sig).and_then(|(pk, r, s)| Ok((decode(pk, policy, true)?, r, s))) {
            Ok((a, r, s)) => {
                r_bytes.push(r);
                // r and k are placeholders until R is decoded below.
                out.push(Ok(Prepared { a, r: a, s, k: Scalar::ZERO }));
            }
            Err(e) => out.push(Err(e)),
        }
    }
    let rs = decompress_many(&r_bytes);
    let mut next = r_bytes.iter().zip(rs);
    for (o, &(policy, pubkey, msg, _)) in out.iter_mut().zip(items) {
        let Ok(p) = o else { continue };
        let (bytes, r) = next.next().expect("one R per item still in");
        let r = match r {
            None => Err(Reason::REncoding),
            Some(_) if policy == Ed25519Policy::Strict && !is_canonical(bytes) => Err(Reason::NonCanonicalR),
            Some(r) if policy == Ed25519Policy::Strict && r.is_small_order() => Err(Reason::SmallOrderR),
            Some(r) => Ok(r),
        };
        match r {
            Ok(r) => {
                p.r = r;
                p.k = challenge(bytes, pubkey.try_into().expect("checked by split"), msg);
            }
            Err(e) => *o = Err(e),
        }
    }
    out
}

/// A lone encoding is decompressed serially: a group of eight IFMA lanes
/// costs more than one serial decompression (measured: batch 1 lost 7%
/// through the engine when it took the lanes), two already cost less.
#[cfg(all(target_arch = "x86_64", curve25519_dalek_backend = "avx512"))]
const IFMA_MIN_POINTS: usize = 2;

/// `CompressedEdwardsY::decompress` of each encoding, eight at a time in
/// IFMA lanes when this build has that path, the CPU runs it and there
/// are at least two (`IFMA_MIN_POINTS`).
pub fn decompress_many(encs: &[[u8; 32]]) -> Vec<Option<EdwardsPoint>> {
    let mut out = Vec::with_capacity(encs.len());
    #[cfg(all(target_arch = "x86_64", curve25519_dalek_backend = "avx512"))]
    if encs.len() >= IFMA_MIN_POINTS && ifma::available() {
        ifma::decompress_many(encs, &mut out);
        return out;
    }
    out.extend(encs.iter().map(|e| CompressedEdwardsY(*e).decompress()));
    out
}

/// 32-bit words per item in the GPU kernel's input (kernels/ed25519_verify.wgsl).
pub const GPU_ITEM_WORDS: usize = 33;

/// Signed radix-16 digits of a scalar below 2^253 (each in -8..=7, least
/// significant first), stored as `digit + 8` nibbles, eight to a word.
fn radix16_words(bytes: &[u8; 32]) -> [u32; 8] {
    let mut d = [0i8; 64];
    for (i, b) in bytes.iter().enumerate() {
        d[2 * i] = (b & 15) as i8;
        d[2 * i + 1] = (b >> 4) as i8;
    }
    let mut carry = 0i8;
    for x in d.iter_mut().take(63) {
        *x += carry;
        carry = (*x + 8) >> 4;
        *x -= carry << 4;
    }
    // Top nibble of a scalar < 2^253 is at most 1, so this stays <= 2.
    d[63] += carry;
    let mut w = [0u32; 8];
    for (i, x) in d.iter().enumerate() {
        w[i / 8] |= ((*x + 8) as u32 & 15) << (4 * (i % 8));
    }
    w
}

/// What the GPU kernel needs for one item, or the item's verdict when the
/// host can already give it (lengths, S ≥ ℓ: the checks that come before
/// decoding in [`prepare`], in the same order). The kernel decodes A and R
/// and applies the strict policy itself; k is hashed here.
pub fn gpu_encode(
    policy: Ed25519Policy,
    pubkey: &[u8],
    msg: &[u8],
    sig: &[u8],
) -> Result<[u32; GPU_ITEM_WORDS], Reason> {
    let (pk, r_bytes, s) = split(pubkey, sig)?;
    let k = challenge(&r_bytes, pk, msg);
    let mut w = [0u32; GPU_ITEM_WORDS];
    for i in 0..8 {
        w[i] = u32::from_le_bytes(pk[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        w[8 + i] = u32::from_le_bytes(r_bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    }
    w[16..24].copy_from_slice(&radix16_words(s.as_bytes()));
    w[24..32].copy_from_slice(&radix16_words(k.as_bytes()));
    w[32] = u32::from(policy == Ed25519Policy::Strict)
        | u32::from(is_canonical(pk)) << 1
        | u32::from(is_canonical(&r_bytes)) << 2;
    Ok(w)
}

/// What the GPU batch equation (src/gpu/sig/msm.rs) needs of one item, or
/// its verdict when the bytes alone decide it (the checks before decoding
/// in [`prepare`], in the same order). A and R are decoded on the GPU.
pub struct BatchParts {
    pub a_bytes: [u8; 32],
    pub r_bytes: [u8; 32],
    pub a_canonical: bool,
    pub r_canonical: bool,
    pub s: Scalar,
    pub k: Scalar,
}

pub fn batch_parts(pubkey: &[u8], msg: &[u8], sig: &[u8]) -> Result<BatchParts, Reason> {
    let (pk, r_bytes, s) = split(pubkey, sig)?;
    let k = challenge(&r_bytes, pk, msg);
    Ok(BatchParts { a_bytes: *pk, r_bytes, a_canonical: is_canonical(pk), r_canonical: is_canonical(&r_bytes), s, k })
}

/// The cofactored equation for one item.
pub fn check_single(p: &Prepared) -> bool {
    // s·B − k·A
    let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &(-p.a), &p.s);
    (sb_minus_ka - p.r).mul_by_cofactor().is_identity()
}

/// Verify one item end to end.
pub fn verify(policy: Ed25519Policy, pubkey: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), Reason> {
    let p = prepare(policy, pubkey, msg, sig)?;
    if check_single(&p) {
        Ok(())
    } else {
        Err(Reason::BadSignature)
    }
}

/// Below this many items bisection stops and items are checked one by one
/// (a batch equation over 2 items costs about as much as 2 singles).
const SINGLES_BELOW: usize = 3;

/// The batch equation over `items` with fresh random weights.
pub fn check_batch(items: &[&Prepared]) -> bool {
    match items.len() {
        0 => return true,
        1 => return check_single(items[0]),
        _ => {}
    }
    let mut rng = rand::rng();
    let mut zs_sum = WideSum::default();
    // zᵢ and zᵢkᵢ per item, then B's coefficient −Σ zᵢsᵢ: the order of `point`.
    let mut scalars = Vec::with_capacity(2 * items.len() + 1);
    for p in items {
        let z: u128 = rng.random();
        zs_sum.add_product(z, p.s.as_bytes());
        let z = Scalar::from(z);
        scalars.push(z);
        scalars.push(z * p.k);
    }
    scalars.push(-zs_sum.reduce());
    // Read in place: copying 2n + 1 points (160 bytes each) into a vector
    // cost more than the rest of the bookkeeping together.
    let point = |j: usize| match items.get(j / 2) {
        Some(p) if j.is_multiple_of(2) => &p.r,
        Some(p) => &p.a,
        None => &ED25519_BASEPOINT_POINT,
    };
    EdwardsPoint::vartime_multiscalar_mul(&scalars, (0..scalars.len()).map(point)).mul_by_cofactor().is_identity()
}

/// Σ zᵢ·sᵢ as a plain 512-bit integer, reduced mod ℓ once at the end: a
/// few word multiplications per item instead of a scalar multiplication
/// (two Montgomery products). zᵢ < 2¹²⁸ and sᵢ < 2²⁵³, so it cannot
/// overflow before 2¹³¹ items.
#[derive(Default)]
struct WideSum([u64; 8]);

impl WideSum {
    fn add_product(&mut self, z: u128, s: &[u8; 32]) {
        let s: [u64; 4] = std::array::from_fn(|j| u64::from_le_bytes(s[8 * j..8 * j + 8].try_into().expect("8 bytes")));
        for (i, zi) in [z as u64, (z >> 64) as u64].into_iter().enumerate() {
            let mut carry = 0u128;
            for (j, sj) in s.into_iter().enumerate() {
                // ≤ (2⁶⁴−1) + (2⁶⁴−1)² + (2⁶⁴−1) = 2¹²⁸−1: no overflow.
                let t = u128::from(self.0[i + j]) + u128::from(zi) * u128::from(sj) + carry;
                self.0[i + j] = t as u64;
                carry = t >> 64;
            }
            for limb in &mut self.0[i + 4..] {
                let t = u128::from(*limb) + carry;
                *limb = t as u64;
                carry = t >> 64;
            }
        }
    }

    fn reduce(&self) -> Scalar {
        let mut b = [0u8; 64];
        for (c, l) in b.chunks_exact_mut(8).zip(self.0) {
            c.copy_from_slice(&l.to_le_bytes());
        }
        Scalar::from_bytes_mod_order_wide(&b)
    }
}

/// Bisection may spend at most this many times the batch's size in batch
/// equation items (the first full equation included); past that the items
/// still undecided are checked one by one. One bad item in n costs ≈ 2n;
/// a batch of only bad items (a peer trying to make us work) then costs at
/// most ≈ 1 + 4 × 0.4 + 1 single verifications per item instead of log₂ n
/// full passes.
const BISECT_BUDGET: usize = 4;

/// Verify prepared items: one batch equation, bisected on failure. `out[i]`
/// is set to whether `items[i]` verifies (the same answer [`check_single`]
/// gives, whatever else is in the batch).
pub fn verify_prepared(items: &[&Prepared], out: &mut [bool]) {
    debug_assert_eq!(items.len(), out.len());
    let mut budget = BISECT_BUDGET * items.len();
    bisect(items, out, &mut budget);
}

fn bisect(items: &[&Prepared], out: &mut [bool], budget: &mut usize) {
    if items.len() < SINGLES_BELOW || *budget < items.len() {
        for (o, p) in out.iter_mut().zip(items) {
            *o = check_single(p);
        }
        return;
    }
    *budget -= items.len();
    if check_batch(items) {
        out.iter_mut().for_each(|o| *o = true);
        return;
    }
    let mid = items.len() / 2;
    let (lo, hi) = out.split_at_mut(mid);
    bisect(&items[..mid], lo, budget);
    bisect(&items[mid..], hi, budget);
}

/// Deterministic Ed25519 signing (RFC 8032) from a 32-byte seed, for the
/// demo feed, the benches and tests. Returns (public key, signature).
pub fn sign(seed: &[u8; 32], msg: &[u8]) -> ([u8; 32], [u8; 64]) {
    let h = Sha512::digest(seed);
    let mut a_bytes = [0u8; 32];
    a_bytes.copy_from_slice(&h[..32]);
    a_bytes[0] &= 248;
    a_bytes[31] &= 127;
    a_bytes[31] |= 64;
    let a = Scalar::from_bytes_mod_order(a_bytes);
    let pk = EdwardsPoint::mul_base(&a).compress().to_bytes();
    let mut rh = Sha512::new();
    rh.update(&h[32..]);
    rh.update(msg);
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&rh.finalize());
    let r = Scalar::from_bytes_mod_order_wide(&wide);
    let big_r = EdwardsPoint::mul_base(&r).compress().to_bytes();
    let mut kh = Sha512::new();
    kh.update(big_r);
    kh.update(pk);
    kh.update(msg);
    wide.copy_from_slice(&kh.finalize());
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    let s = r + k * a;
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&big_r);
    sig[32..].copy_from_slice(s.as_bytes());
    (pk, sig)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn canonical_from_bytes_matches_reencoding() {
        let mut rng = rand::rng();
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for i in 0..40u8 {
            // y near p, y = 0/1/p−1, each with both sign bits.
            let mut b = [0xffu8; 32];
            b[0] = 0xd0 + i;
            b[31] = 0x7f;
            cases.push(b);
            let mut one = [0u8; 32];
            one[0] = i;
            cases.push(one);
        }
        let mut pm1 = [0xffu8; 32];
        pm1[0] = 0xec;
        pm1[31] = 0x7f;
        cases.push(pm1);
        for _ in 0..2000 {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            cases.push(b);
        }
        for mut b in cases {
            for sign in [0u8, 0x80] {
                b[31] = (b[31] & 0x7f) | sign;
                if let Some(p) = CompressedEdwardsY(b).decompress() {
                    assert_eq!(is_canonical(&b), p.compress().to_bytes() == b, "{b:02x?}");
                }
            }
        }
    }

    /// `n` signed items, those `bad(i)` says with a changed message (`tail`
    /// appended), through one batch: each verdict must be its own.
    fn batch_marks_exactly(n: u8, tail: u8, bad: impl Fn(u8) -> bool) {
        let items: Vec<Prepared> = (0..n)
            .map(|i| {
                let (pk, sig) = sign(&[i; 32], &[i]);
                let msg = if bad(i) { vec![i, tail] } else { vec![i] };
                prepare(Ed25519Policy::Zip215, &pk, &msg, &sig).unwrap()
            })
            .collect();
        let refs: Vec<&Prepared> = items.iter().collect();
        let mut out = vec![false; refs.len()];
        verify_prepared(&refs, &mut out);
        for (i, ok) in out.iter().enumerate() {
            assert_eq!(*ok, !bad(i as u8), "item {i}");
        }
    }

    #[test]
    fn radix16_digits_sum_to_the_scalar() {
        let mut rng = rand::rng();
        for round in 0..500 {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            let s = match round {
                0 => Scalar::ZERO,
                1 => -Scalar::ONE,
                _ => Scalar::from_bytes_mod_order(b),
            };
            let w = radix16_words(s.as_bytes());
            let mut acc = Scalar::ZERO;
            let sixteen = Scalar::from(16u8);
            for i in (0..64).rev() {
                let d = ((w[i / 8] >> (4 * (i % 8))) & 15) as i64 - 8;
                acc = acc * sixteen + if d < 0 { -Scalar::from((-d) as u64) } else { Scalar::from(d as u64) };
            }
            assert_eq!(acc, s);
        }
    }

    #[test]
    fn wide_sum_matches_scalar_arithmetic() {
        let mut rng = rand::rng();
        let l_minus_1 = -Scalar::ONE;
        let mut cases: Vec<(u128, Scalar)> = vec![(u128::MAX, l_minus_1); 300];
        cases.extend([(0, l_minus_1), (u128::MAX, Scalar::ZERO), (1, Scalar::ONE)]);
        for _ in 0..300 {
            let mut b = [0u8; 64];
            rng.fill_bytes(&mut b);
            cases.push((rng.random(), Scalar::from_bytes_mod_order_wide(&b)));
        }
        let mut wide = WideSum::default();
        let mut want = Scalar::ZERO;
        for (z, s) in cases {
            wide.add_product(z, s.as_bytes());
            want += Scalar::from(z) * s;
            assert_eq!(wide.reduce(), want);
        }
    }

    #[test]
    fn all_bad_and_every_other_bad() {
        batch_marks_exactly(50, 9, |_| true);
        batch_marks_exactly(50, 9, |i| i % 2 == 0);
    }

    #[test]
    fn sign_then_verify_both_policies() {
        let (pk, sig) = sign(&[7; 32], b"hashrig");
        for pol in [Ed25519Policy::Zip215, Ed25519Policy::Strict] {
            assert_eq!(verify(pol, &pk, b"hashrig", &sig), Ok(()));
            assert_eq!(verify(pol, &pk, b"hashriG", &sig), Err(Reason::BadSignature));
        }
    }

    /// `prepare_many` gives what `prepare` gives (keys decoded without the
    /// cache), item by item, on valid,
    /// mutated and malformed items under both policies: R off the curve,
    /// small-order and non-canonical R ("negative zero" among them), bad
    /// keys, short signatures, S ≥ ℓ, random R.
    #[test]
    fn prepare_many_equals_prepare() {
        let mut rng = rand::rng();
        type Owned = (Ed25519Policy, Vec<u8>, Vec<u8>, Vec<u8>);
        let mut owned: Vec<Owned> = Vec::new();
        for i in 0..160u8 {
            // Keys no other test uses: prepare_many meets them uncached.
            let mut seed = [0x5a; 32];
            seed[0] = i;
            let (pk, sig) = sign(&seed, &[i]);
            let (mut pk, mut sig) = (pk.to_vec(), sig.to_vec());
            let policy = if i % 2 == 0 { Ed25519Policy::Zip215 } else { Ed25519Policy::Strict };
            let i8 = usize::from(i % 8);
            match (i / 2) % 9 {
                0 => {}
                1 => sig[i8] ^= 1 << (i % 8),
                2 => pk[3 + i8] ^= 4,
                3 => sig[..32].copy_from_slice(&curve25519_dalek::constants::EIGHT_TORSION[i8].compress().to_bytes()),
                4 => {
                    // y = 1 (or p + 1, non-canonical) with the sign bit: x = 0, "negative zero".
                    let mut r = [0u8; 32];
                    r[0] = 1;
                    if i8 % 2 == 1 {
                        r = [0xff; 32];
                        r[0] = 0xee;
                    }
                    r[31] |= 0x80;
                    sig[..32].copy_from_slice(&r);
                }
                5 => sig.truncate(63),
                6 => sig[63] = 0xff,
                7 => rng.fill_bytes(&mut sig[..32]),
                _ => sig[31] ^= 0x80,
            }
            owned.push((policy, pk, vec![i], sig));
        }
        let inputs: Vec<Input<'_>> =
            owned.iter().map(|(p, a, m, s)| (*p, a.as_slice(), m.as_slice(), s.as_slice())).collect();
        let many = prepare_many(&inputs);
        assert_eq!(many.len(), inputs.len());
        let mut oks = 0;
        // The reference decodes keys itself: `prepare` would read back what
        // prepare_many put in the key cache.
        let reference = |pol, pk, msg, sig| -> Result<Prepared, Reason> {
            let (pk, r_bytes, s) = split(pk, sig)?;
            let a = key_checks(decode_raw(pk), pol)?;
            let r = decode(&r_bytes, pol, false)?;
            Ok(Prepared { a, r, s, k: challenge(&r_bytes, pk, msg) })
        };
        for (k, (&(pol, pk, msg, sig), got)) in inputs.iter().zip(many).enumerate() {
            match (reference(pol, pk, msg, sig), got) {
                (Ok(w), Ok(g)) => {
                    assert!(w.a == g.a && w.r == g.r && w.s == g.s && w.k == g.k, "item {k}");
                    oks += 1;
                }
                (Err(w), Err(g)) => assert_eq!(w, g, "item {k}"),
                (w, g) => panic!("item {k}: prepare {:?}, prepare_many {:?}", w.err(), g.err()),
            }
        }
        assert!(oks > 20 && oks < inputs.len());
    }

    #[test]
    fn bisection_marks_exactly_the_bad() {
        batch_marks_exactly(37, 1, |i| i % 11 == 3);
    }
}
