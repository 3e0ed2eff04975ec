//! Ed25519 point decompression, eight points at once in the lanes of
//! AVX-512 IFMA registers.
//!
//! A batch spends about half its time decompressing R: each is a square
//! root, an exponentiation of about 250 squarings that dalek runs on one
//! point at a time in 64-bit scalar code. Here each `__m512i` holds one limb
//! of eight field elements, and VPMADD52LUQ/VPMADD52HUQ give the low and
//! high 52 bits of eight 52×52-bit products per instruction.
//!
//! The arithmetic is exactly dalek's `CompressedEdwardsY::decompress`
//! (y from the low 255 bits, u = y² − 1, v = dy² + 1, the ratio square root
//! r = (uv³)(uv⁷)^((p−5)/8), the same three sign checks, the non-negative
//! root, then the sign bit applied), so the answer, valid or not and the
//! point, is the same for every encoding; the tests compare it with
//! dalek's on published vectors and on random, mutated and edge encodings.
//!
//! Field elements: five limbs of radix 2⁵¹, each kept below 2⁵² between
//! operations (IFMA reads only the low 52 bits of its inputs).
//!
//! The decoded point is handed to dalek's multi-scalar multiplication as an
//! `EdwardsPoint`; dalek has no public constructor from coordinates, so
//! [`to_edwards`] builds one from its four coordinates' limbs, checked
//! against dalek's own decompression once per process before it is used
//! (see there).

use core::arch::x86_64::*;
use std::sync::OnceLock;

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};

const MASK51: u64 = (1 << 51) - 1;

/// d = −121665/121666 and √−1, in radix 2⁵¹ (canonical).
const EDWARDS_D: [u64; 5] = [929955233495203, 466365720129213, 1662059464998953, 2033849074728123, 1442794654840575];
const SQRT_M1: [u64; 5] = [1718705420411056, 234908883556509, 2233514472574048, 2117202627021982, 765476049583133];

/// Eight field elements, limb by limb.
#[derive(Clone, Copy)]
struct Fe8([__m512i; 5]);

#[inline(always)]
unsafe fn splat(x: u64) -> __m512i {
    _mm512_set1_epi64(x as i64)
}

#[inline(always)]
unsafe fn add64(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi64(a, b)
}

/// 19·z with shifts and adds (64-bit multiplies need AVX-512DQ and are slow
/// on some cores); z < 2⁵⁹ so the product fits.
#[inline(always)]
unsafe fn times19(z: __m512i) -> __m512i {
    add64(add64(_mm512_slli_epi64::<4>(z), _mm512_slli_epi64::<1>(z)), z)
}

impl Fe8 {
    #[inline(always)]
    unsafe fn splat(l: &[u64; 5]) -> Fe8 {
        Fe8([splat(l[0]), splat(l[1]), splat(l[2]), splat(l[3]), splat(l[4])])
    }

    /// From eight elements' limbs (each limb < 2⁵²).
    #[inline(always)]
    unsafe fn from_lanes(l: &[[u64; 5]; 8]) -> Fe8 {
        let mut r = [_mm512_setzero_si512(); 5];
        for (k, x) in r.iter_mut().enumerate() {
            let w: [u64; 8] = [l[0][k], l[1][k], l[2][k], l[3][k], l[4][k], l[5][k], l[6][k], l[7][k]];
            // SAFETY: `w` is 64 readable bytes; the load is unaligned.
            *x = _mm512_loadu_si512(w.as_ptr().cast());
        }
        Fe8(r)
    }

    #[inline(always)]
    unsafe fn to_lanes(self) -> [[u64; 5]; 8] {
        let mut out = [[0u64; 5]; 8];
        for k in 0..5 {
            let mut w = [0u64; 8];
            // SAFETY: `w` is 64 writable bytes; the store is unaligned.
            _mm512_storeu_si512(w.as_mut_ptr().cast(), self.0[k]);
            for (o, v) in out.iter_mut().zip(w) {
                o[k] = v;
            }
        }
        out
    }

    /// One carry step in parallel: limbs < 2⁶³ in, < 2⁵² out (each limb
    /// keeps 51 bits and takes the carry of the one below; the top carry
    /// wraps around times 19, since 2²⁵⁵ ≡ 19).
    #[inline(always)]
    unsafe fn carry(r: [__m512i; 5]) -> Fe8 {
        let m = splat(MASK51);
        let mut c = r;
        for x in &mut c {
            *x = _mm512_srli_epi64::<51>(*x);
        }
        Fe8([
            add64(_mm512_and_si512(r[0], m), times19(c[4])),
            add64(_mm512_and_si512(r[1], m), c[0]),
            add64(_mm512_and_si512(r[2], m), c[1]),
            add64(_mm512_and_si512(r[3], m), c[2]),
            add64(_mm512_and_si512(r[4], m), c[3]),
        ])
    }

    /// The ten product columns (low halves `lo[k]` at 2⁵¹ᵏ, high halves
    /// `hi[k]` at 2⁵¹ᵏ⁺⁵², so twice 2⁵¹⁽ᵏ⁺¹⁾) folded to five limbs and
    /// carried. Column sums stay below 2⁵⁷, and r[k] below 2⁶¹.
    #[inline(always)]
    unsafe fn reduce(lo: [__m512i; 9], hi: [__m512i; 9]) -> Fe8 {
        // (Plain loops: closures here, as in `array::from_fn`, would not
        // inherit the target features and end up as calls.)
        let mut z = [_mm512_setzero_si512(); 10];
        z[..9].copy_from_slice(&lo);
        for k in 1..10 {
            z[k] = add64(z[k], _mm512_slli_epi64::<1>(hi[k - 1]));
        }
        let mut r = [_mm512_setzero_si512(); 5];
        for k in 0..5 {
            r[k] = add64(z[k], times19(z[k + 5]));
        }
        Fe8::carry(r)
    }

    #[inline(always)]
    unsafe fn mul(&self, b: &Fe8) -> Fe8 {
        let (a, b) = (&self.0, &b.0);
        let mut lo = [_mm512_setzero_si512(); 9];
        let mut hi = [_mm512_setzero_si512(); 9];
        for i in 0..5 {
            for j in 0..5 {
                lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a[i], b[j]);
                hi[i + j] = _mm512_madd52hi_epu64(hi[i + j], a[i], b[j]);
            }
        }
        Fe8::reduce(lo, hi)
    }

    #[inline(always)]
    unsafe fn square(&self) -> Fe8 {
        let a = &self.0;
        let mut lo = [_mm512_setzero_si512(); 9];
        let mut hi = [_mm512_setzero_si512(); 9];
        // Cross products once, doubled, then the squares added on top.
        for i in 0..5 {
            for j in i + 1..5 {
                lo[i + j] = _mm512_madd52lo_epu64(lo[i + j], a[i], a[j]);
                hi[i + j] = _mm512_madd52hi_epu64(hi[i + j], a[i], a[j]);
            }
        }
        for k in 0..9 {
            lo[k] = _mm512_slli_epi64::<1>(lo[k]);
            hi[k] = _mm512_slli_epi64::<1>(hi[k]);
        }
        for i in 0..5 {
            lo[2 * i] = _mm512_madd52lo_epu64(lo[2 * i], a[i], a[i]);
            hi[2 * i] = _mm512_madd52hi_epu64(hi[2 * i], a[i], a[i]);
        }
        Fe8::reduce(lo, hi)
    }

    #[inline(always)]
    unsafe fn square_n(&self, n: u32) -> Fe8 {
        let mut x = *self;
        for _ in 0..n {
            x = x.square();
        }
        x
    }

    #[inline(always)]
    unsafe fn add(&self, b: &Fe8) -> Fe8 {
        let mut r = self.0;
        for (x, y) in r.iter_mut().zip(&b.0) {
            *x = add64(*x, *y);
        }
        Fe8::carry(r)
    }

    /// self − b, as self + 4p − b (each limb of 4p exceeds any limb < 2⁵²).
    #[inline(always)]
    unsafe fn sub(&self, b: &Fe8) -> Fe8 {
        const FOUR_P: [u64; 5] = [4 * ((1 << 51) - 19), 4 * MASK51, 4 * MASK51, 4 * MASK51, 4 * MASK51];
        let mut r = self.0;
        for k in 0..5 {
            r[k] = _mm512_sub_epi64(add64(r[k], splat(FOUR_P[k])), b.0[k]);
        }
        Fe8::carry(r)
    }

    #[inline(always)]
    unsafe fn neg(&self) -> Fe8 {
        Fe8([_mm512_setzero_si512(); 5]).sub(self)
    }

    /// The canonical representative (value < p, limbs < 2⁵¹).
    #[inline(always)]
    unsafe fn freeze(&self) -> Fe8 {
        let m = splat(MASK51);
        let mut a = self.0;
        // Full carry, top wrapped: value < 2²⁵⁵ + 2⁶ afterwards.
        for k in 0..4 {
            a[k + 1] = add64(a[k + 1], _mm512_srli_epi64::<51>(a[k]));
            a[k] = _mm512_and_si512(a[k], m);
        }
        a[0] = add64(a[0], times19(_mm512_srli_epi64::<51>(a[4])));
        a[4] = _mm512_and_si512(a[4], m);
        // q = 1 exactly when value ≥ p, i.e. value + 19 ≥ 2²⁵⁵.
        let mut q = _mm512_srli_epi64::<51>(add64(a[0], splat(19)));
        for l in &a[1..] {
            q = _mm512_srli_epi64::<51>(add64(*l, q));
        }
        a[0] = add64(a[0], times19(q));
        for k in 0..4 {
            a[k + 1] = add64(a[k + 1], _mm512_srli_epi64::<51>(a[k]));
            a[k] = _mm512_and_si512(a[k], m);
        }
        a[4] = _mm512_and_si512(a[4], m);
        Fe8(a)
    }

    /// Lanes where the two canonical elements are equal.
    #[inline(always)]
    unsafe fn eq_canonical(&self, b: &Fe8) -> __mmask8 {
        let mut m: __mmask8 = 0xff;
        for k in 0..5 {
            m &= _mm512_cmpeq_epi64_mask(self.0[k], b.0[k]);
        }
        m
    }

    /// `b` in the lanes of `mask`, else self.
    #[inline(always)]
    unsafe fn select(&self, mask: __mmask8, b: &Fe8) -> Fe8 {
        let mut r = self.0;
        for (x, y) in r.iter_mut().zip(&b.0) {
            *x = _mm512_mask_blend_epi64(mask, *x, *y);
        }
        Fe8(r)
    }

    /// self^((p−5)/8) = self^(2²⁵² − 3).
    #[inline(always)]
    unsafe fn pow_p58(&self) -> Fe8 {
        let x = self;
        let x2 = x.square();
        let x9 = x.mul(&x2.square_n(2));
        let x11 = x2.mul(&x9);
        let e5 = x9.mul(&x11.square()); // 2⁵ − 1
        let e10 = e5.square_n(5).mul(&e5);
        let e20 = e10.square_n(10).mul(&e10);
        let e40 = e20.square_n(20).mul(&e20);
        let e50 = e40.square_n(10).mul(&e10);
        let e100 = e50.square_n(50).mul(&e50);
        let e200 = e100.square_n(100).mul(&e100);
        let e250 = e200.square_n(50).mul(&e50);
        e250.square_n(2).mul(x)
    }
}

/// y's limbs from an encoding: the low 255 bits, as dalek reads them.
fn y_limbs(b: &[u8; 32]) -> [u64; 5] {
    let w: [u64; 4] = std::array::from_fn(|i| u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().expect("8 bytes")));
    [
        w[0] & MASK51,
        (w[0] >> 51 | w[1] << 13) & MASK51,
        (w[1] >> 38 | w[2] << 26) & MASK51,
        (w[2] >> 25 | w[3] << 39) & MASK51,
        (w[3] >> 12) & MASK51,
    ]
}

/// Canonical affine coordinates of a decoded point, and t = x·y.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Coords {
    x: [u64; 5],
    y: [u64; 5],
    t: [u64; 5],
}

/// Decompress eight encodings: `None` where dalek's `decompress` says none.
///
/// # Safety
/// The CPU must support avx512f and avx512ifma.
#[target_feature(enable = "avx512f,avx512ifma")]
unsafe fn decompress8(enc: &[[u8; 32]; 8]) -> [Option<Coords>; 8] {
    let ys: [[u64; 5]; 8] = std::array::from_fn(|i| y_limbs(&enc[i]));
    let sign: __mmask8 = (0..8).fold(0, |m, i| m | (enc[i][31] >> 7) << i);
    let one = Fe8::splat(&[1, 0, 0, 0, 0]);
    let i = Fe8::splat(&SQRT_M1);
    let y = Fe8::from_lanes(&ys);
    let yy = y.square();
    let u = yy.sub(&one);
    let v = yy.mul(&Fe8::splat(&EDWARDS_D)).add(&one);
    let v3 = v.square().mul(&v);
    let v7 = v3.square().mul(&v);
    let r = u.mul(&v3).mul(&u.mul(&v7).pow_p58());
    let check = v.mul(&r.square()).freeze();
    let neg_u = u.neg();
    let correct = check.eq_canonical(&u.freeze());
    let flipped = check.eq_canonical(&neg_u.freeze());
    let flipped_i = check.eq_canonical(&neg_u.mul(&i).freeze());
    let r = r.select(flipped | flipped_i, &i.mul(&r)).freeze();
    // The non-negative root (even canonical value), then the sign bit's.
    let odd = _mm512_test_epi64_mask(r.0[0], splat(1));
    let r_neg = r.neg().freeze();
    let root = r.select(odd, &r_neg);
    let x = root.select(sign, &r_neg.select(odd, &r));
    let t = x.mul(&y).freeze();
    let valid = correct | flipped;
    let (xs, ys, ts) = (x.to_lanes(), y.freeze().to_lanes(), t.to_lanes());
    std::array::from_fn(|l| (valid >> l & 1 == 1).then_some(Coords { x: xs[l], y: ys[l], t: ts[l] }))
}

/// An `EdwardsPoint` from canonical affine coordinates: (X : Y : Z : T) =
/// (x : y : 1 : xy).
///
/// dalek keeps `EdwardsPoint`'s four coordinates private; in its 64-bit
/// field backend each is five u64 limbs of radix 2⁵¹, 160 bytes in all.
/// `transmute` checks the size at compile time; every bit pattern of plain
/// u64 limbs is a valid value whatever the field order, so the
/// construction is sound in any case. Whether it means the intended point
/// (the order X, Y, Z, T and the radix) is what [`layout_ok`] checks, once
/// per process, against dalek's own decompression; if that fails the
/// caller never gets here ([`available`] is false).
fn to_edwards(c: &Coords) -> EdwardsPoint {
    let mut w = [0u64; 20];
    w[..5].copy_from_slice(&c.x);
    w[5..10].copy_from_slice(&c.y);
    w[10] = 1;
    w[15..].copy_from_slice(&c.t);
    // SAFETY: [u64; 20] and EdwardsPoint are both 160 bytes (checked by
    // transmute), and EdwardsPoint is four [u64; 5] fields: no padding, no
    // invalid values.
    unsafe { core::mem::transmute::<[u64; 20], EdwardsPoint>(w) }
}

/// Canonical limbs of a value held as five limbs below 2⁶³ (scalar code,
/// for the one-time layout check).
fn freeze_scalar(l: [u64; 5]) -> [u64; 5] {
    let mut a = l;
    for _ in 0..3 {
        let c: [u64; 5] = std::array::from_fn(|k| a[k] >> 51);
        for k in 0..5 {
            a[k] = (a[k] & MASK51) + if k == 0 { 19 * c[4] } else { c[k - 1] };
        }
    }
    let mut q = (a[0] + 19) >> 51;
    for l in &a[1..] {
        q = (l + q) >> 51;
    }
    a[0] += 19 * q;
    for k in 0..4 {
        a[k + 1] += a[k] >> 51;
        a[k] &= MASK51;
    }
    a[4] &= MASK51;
    a
}

/// Whether points built by [`to_edwards`] are the ones dalek's decompress
/// gives: the same four coordinates (Z = 1 there too), read back from
/// dalek's point through the same layout assumption, on a few points.
fn layout_ok() -> bool {
    use curve25519_dalek::scalar::Scalar;
    let encs: [[u8; 32]; 8] =
        std::array::from_fn(|k| EdwardsPoint::mul_base(&Scalar::from(1 + 1_000_003 * k as u64)).compress().to_bytes());
    // SAFETY: `available` has just found avx512f and avx512ifma.
    let ours = unsafe { decompress8(&encs) };
    encs.iter().zip(ours).all(|(e, c)| {
        let (Some(c), Some(p)) = (c, CompressedEdwardsY(*e).decompress()) else {
            return false;
        };
        // SAFETY: as in `to_edwards`, in the other direction: an
        // EdwardsPoint's 160 bytes are all initialised u64 limbs.
        let w = unsafe { core::mem::transmute::<EdwardsPoint, [u64; 20]>(p) };
        let coord = |k: usize| freeze_scalar(w[5 * k..5 * k + 5].try_into().expect("5 limbs"));
        coord(0) == c.x && coord(1) == c.y && coord(2) == [1, 0, 0, 0, 0] && coord(3) == c.t && to_edwards(&c) == p
    })
}

/// Whether this CPU runs the eight-lane path (avx512f + avx512ifma) and
/// the point layout checked out; decided once per process.
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512ifma") && layout_ok())
}

/// Decompress many encodings, eight at a time; `out` gets one entry per
/// encoding, `None` where it is not a curve point, exactly as dalek's
/// `CompressedEdwardsY::decompress`. The caller checks [`available`].
pub(super) fn decompress_many(encs: &[[u8; 32]], out: &mut Vec<Option<EdwardsPoint>>) {
    debug_assert!(available());
    for chunk in encs.chunks(8) {
        let mut group = [[0u8; 32]; 8];
        group[..chunk.len()].copy_from_slice(chunk);
        // SAFETY: `available` checked avx512f and avx512ifma.
        let got = unsafe { decompress8(&group) };
        out.extend(got[..chunk.len()].iter().map(|c| c.as_ref().map(to_edwards)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    /// dalek's answer for each encoding against ours: valid or not, and
    /// the same point (compared projectively and by re-encoding).
    fn check_against_dalek(encs: &[[u8; 32]]) {
        let mut got = Vec::new();
        decompress_many(encs, &mut got);
        assert_eq!(got.len(), encs.len());
        for (e, g) in encs.iter().zip(&got) {
            let want = CompressedEdwardsY(*e).decompress();
            match (want, g) {
                (None, None) => {}
                (Some(w), Some(g)) => {
                    assert!(w == *g, "{e:02x?}");
                    assert_eq!(w.compress(), g.compress(), "{e:02x?}");
                    // T enters the addition formula: a sum checks it.
                    let b = curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
                    assert!(w + b == *g + b && (w + w) == (*g + *g), "{e:02x?}");
                    assert_eq!(w.is_small_order(), g.is_small_order());
                }
                (w, g) => panic!("{e:02x?}: dalek {:?}, ifma {:?}", w.is_some(), g.is_some()),
            }
        }
    }

    fn skip_without_ifma() -> bool {
        if available() {
            return false;
        }
        eprintln!("no avx512ifma here (or layout check failed): nothing to test");
        assert!(!is_x86_feature_detected!("avx512ifma") || !is_x86_feature_detected!("avx512f"), "layout check failed");
        true
    }

    #[test]
    fn constants_are_d_and_sqrt_minus_one() {
        if skip_without_ifma() {
            return;
        }
        // SAFETY: checked just above.
        unsafe { constants_inner() }
    }

    #[target_feature(enable = "avx512f,avx512ifma")]
    unsafe fn constants_inner() {
        let d = Fe8::splat(&EDWARDS_D);
        let i = Fe8::splat(&SQRT_M1);
        let small = |n: u64| Fe8::splat(&[n, 0, 0, 0, 0]);
        let zero = small(0).freeze().to_lanes();
        // d·121666 + 121665 = 0 and i² + 1 = 0.
        assert_eq!(d.mul(&small(121666)).add(&small(121665)).freeze().to_lanes(), zero);
        assert_eq!(i.square().add(&small(1)).freeze().to_lanes(), zero);
    }

    #[test]
    fn random_and_mutated_encodings_match_dalek() {
        if skip_without_ifma() {
            return;
        }
        let mut rng = rand::rng();
        let mut encs = Vec::new();
        for k in 0..200u64 {
            let p = EdwardsPoint::mul_base(&curve25519_dalek::scalar::Scalar::from(k * 7919 + 1)).compress().to_bytes();
            encs.push(p);
            // One flipped bit: mostly off the curve, sometimes another point.
            let mut m = p;
            m[(k % 32) as usize] ^= 1 << (k % 8);
            encs.push(m);
            let mut neg = p;
            neg[31] ^= 0x80;
            encs.push(neg);
        }
        for _ in 0..600 {
            let mut b = [0u8; 32];
            rng.fill_bytes(&mut b);
            encs.push(b);
        }
        // Odd lengths exercise the partly filled last group.
        check_against_dalek(&encs[..encs.len() - 3]);
    }

    #[test]
    fn edge_encodings_match_dalek() {
        if skip_without_ifma() {
            return;
        }
        let mut encs = Vec::new();
        // y = 0, 1, p − 1, p, p + 1, …, 2²⁵⁵ − 1 (non-canonical y ≥ p), small
        // values, each with both sign bits (x = 0 with the sign bit set among them).
        for low in (0u8..=20).chain(0xd0..=0xff) {
            let mut top = [0xffu8; 32];
            top[0] = low;
            top[31] = 0x7f;
            let mut small = [0u8; 32];
            small[0] = low;
            for mut b in [top, small] {
                for s in [0u8, 0x80] {
                    b[31] = (b[31] & 0x7f) | s;
                    encs.push(b);
                }
            }
        }
        // The eight small-order points, and their non-canonical twins.
        for k in 0..8u64 {
            let t = curve25519_dalek::constants::EIGHT_TORSION[k as usize];
            encs.push(t.compress().to_bytes());
        }
        // Limbs at their boundaries: all-ones runs of 51 bits.
        for k in 0..5 {
            let mut b = [0u8; 32];
            for bit in 51 * k..(51 * k + 51).min(255) {
                b[bit / 8] |= 1 << (bit % 8);
            }
            encs.push(b);
        }
        check_against_dalek(&encs);
        assert!(encs.iter().any(|e| CompressedEdwardsY(*e).decompress().is_none()));
    }
}
