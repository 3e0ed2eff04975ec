//! secp256k1's base field, p = 2^256 − 2^32 − 977, for the batch
//! equation's point arithmetic: four 64-bit limbs, products through u128.
//!
//! Why not k256's `FieldElement` (5×52 bits): its product took about a
//! third longer here than this one, and the multi-scalar multiplication is
//! almost nothing but field products (measured in docs/cpu-paths.md). A
//! 4×64 product needs 16 word products against 5×52's 25; a square 10.
//!
//! Values are kept lazily reduced: a limb vector is any number below 2^256
//! congruent to the element (so p itself stands for 0, and p + k for k with
//! k < 2^32 + 977). Every operation takes and gives such values; only
//! [`Fe::normalize`] (and what is built on it: comparison, parity, bytes)
//! brings them below p. Since 2^256 ≡ C = 2^32 + 977 (mod p), a carry out
//! of the top limb is folded back in as C.

use std::ops::{Add, Mul, Neg, Sub};

/// p, little-endian limbs.
const P: [u64; 4] = [0xFFFF_FFFE_FFFF_FC2F, u64::MAX, u64::MAX, u64::MAX];
/// 2^256 mod p.
const C: u64 = 0x1_0000_03D1;

/// An element of the field mod p (lazily reduced, see the module comment).
#[derive(Clone, Copy, Debug, Default)]
pub struct Fe(pub(crate) [u64; 4]);

/// s + k (k < 2^64) and the carry out of the top limb.
#[inline(always)]
fn add_word(s: [u64; 4], k: u64) -> ([u64; 4], bool) {
    let (r0, c0) = s[0].overflowing_add(k);
    let (r1, c1) = s[1].overflowing_add(c0 as u64);
    let (r2, c2) = s[2].overflowing_add(c1 as u64);
    let (r3, c3) = s[3].overflowing_add(c2 as u64);
    ([r0, r1, r2, r3], c3)
}

/// s − k (k < 2^64) and the borrow out of the top limb.
#[inline(always)]
fn sub_word(s: [u64; 4], k: u64) -> ([u64; 4], bool) {
    let (r0, b0) = s[0].overflowing_sub(k);
    let (r1, b1) = s[1].overflowing_sub(b0 as u64);
    let (r2, b2) = s[2].overflowing_sub(b1 as u64);
    let (r3, b3) = s[3].overflowing_sub(b2 as u64);
    ([r0, r1, r2, r3], b3)
}

/// r + top·2^256 reduced below 2^256 (top < 2^64).
#[inline(always)]
fn fold(r: [u64; 4], top: u64) -> [u64; 4] {
    let v = top as u128 * C as u128 + r[0] as u128;
    let (hi, lo) = ((v >> 64) as u64, v as u64);
    let (r1, c1) = r[1].overflowing_add(hi);
    let (r2, c2) = r[2].overflowing_add(c1 as u64);
    let (r3, c3) = r[3].overflowing_add(c2 as u64);
    // A carry out of the top limb leaves r1 ≤ hi < 2^34 and r2 = r3 = 0:
    // adding C once more cannot carry past r1.
    let v = c3 as u128 * C as u128 + lo as u128;
    [v as u64, r1 + (v >> 64) as u64, r2, r3]
}

/// A 512-bit product t reduced below 2^256: t_lo + t_hi·C, then the
/// remaining top word once more.
#[inline(always)]
fn reduce(t: [u64; 8]) -> [u64; 4] {
    let mut r = [0u64; 4];
    let mut carry = 0u64;
    for i in 0..4 {
        let v = t[4 + i] as u128 * C as u128 + t[i] as u128 + carry as u128;
        r[i] = v as u64;
        carry = (v >> 64) as u64;
    }
    fold(r, carry)
}

impl Fe {
    pub const ZERO: Fe = Fe([0; 4]);
    pub const ONE: Fe = Fe([1, 0, 0, 0]);

    pub const fn from_u64(v: u64) -> Fe {
        Fe([v, 0, 0, 0])
    }

    /// From 32 big-endian bytes; `None` when they encode p or more.
    pub fn from_bytes(b: &[u8; 32]) -> Option<Fe> {
        let limb = |i: usize| u64::from_be_bytes(b[24 - 8 * i..32 - 8 * i].try_into().expect("8 bytes"));
        let v = [limb(0), limb(1), limb(2), limb(3)];
        (!ge_p(&v)).then_some(Fe(v))
    }

    /// 32 big-endian bytes of the value below p.
    pub fn to_bytes(&self) -> [u8; 32] {
        let n = self.normalize();
        let mut out = [0u8; 32];
        for i in 0..4 {
            out[24 - 8 * i..32 - 8 * i].copy_from_slice(&n.0[i].to_be_bytes());
        }
        out
    }

    /// The same element below p.
    #[inline]
    pub fn normalize(&self) -> Fe {
        // Below 2^256 < 2p: at most one subtraction of p, i.e. adding C
        // and dropping 2^256.
        if ge_p(&self.0) {
            Fe(add_word(self.0, C).0)
        } else {
            *self
        }
    }

    /// Whether the element is 0 (the value is 0 or p).
    #[inline]
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 4] || self.0 == P
    }

    pub fn is_odd(&self) -> bool {
        self.normalize().0[0] & 1 == 1
    }

    #[inline(always)]
    pub fn double(&self) -> Fe {
        *self + *self
    }

    /// self · k for a small k.
    #[inline(always)]
    pub fn mul_small(&self, k: u32) -> Fe {
        let mut r = [0u64; 4];
        let mut carry = 0u64;
        for (i, o) in r.iter_mut().enumerate() {
            let v = self.0[i] as u128 * k as u128 + carry as u128;
            *o = v as u64;
            carry = (v >> 64) as u64;
        }
        Fe(fold(r, carry))
    }

    #[inline(always)]
    pub fn square(&self) -> Fe {
        #[cfg(target_arch = "x86_64")]
        if super::mulx::available() {
            // SAFETY: `available` found BMI2 and ADX.
            return Fe(unsafe { super::mulx::square(&self.0) });
        }
        self.square_u128()
    }

    /// [`Fe::square`] in portable code (`u128` products).
    #[inline(always)]
    fn square_u128(&self) -> Fe {
        let a = &self.0;
        let mut t = [0u64; 8];
        // Products a_i a_j with i < j, then doubled, then the squares a_i².
        for i in 0..3 {
            let mut carry = 0u64;
            for j in (i + 1)..4 {
                let v = a[i] as u128 * a[j] as u128 + t[i + j] as u128 + carry as u128;
                t[i + j] = v as u64;
                carry = (v >> 64) as u64;
            }
            t[i + 4] = carry;
        }
        t[7] = t[6] >> 63;
        for k in (2..7).rev() {
            t[k] = (t[k] << 1) | (t[k - 1] >> 63);
        }
        t[1] <<= 1;
        let mut carry = 0u128;
        for i in 0..4 {
            let d = a[i] as u128 * a[i] as u128;
            let v = t[2 * i] as u128 + (d as u64) as u128 + carry;
            t[2 * i] = v as u64;
            let v2 = t[2 * i + 1] as u128 + (d >> 64) + (v >> 64);
            t[2 * i + 1] = v2 as u64;
            carry = v2 >> 64;
        }
        Fe(reduce(t))
    }

    /// self^(2^k).
    fn square_n(&self, k: usize) -> Fe {
        let mut x = *self;
        for _ in 0..k {
            x = x.square();
        }
        x
    }

    /// 1/self in variable time (public data only), `None` for 0: k256's
    /// (Bernstein–Yang) inversion, called once per round of a sum.
    pub fn invert_vartime(&self) -> Option<Fe> {
        use k256::elliptic_curve::hazmat::FieldArithmetic;
        type K = <k256::Secp256k1 as FieldArithmetic>::FieldElement;
        let k: K = Option::from(K::from_bytes(&self.to_bytes().into()))?;
        let inv: K = Option::from(k.invert_vartime())?;
        Fe::from_bytes(&inv.to_bytes().into())
    }

    /// A square root, `None` when there is none: self^((p+1)/4) (p ≡ 3 mod
    /// 4), by libsecp256k1's addition chain (253 squares, 13 products).
    pub fn sqrt(&self) -> Option<Fe> {
        let x2 = self.square() * *self;
        let x3 = x2.square() * *self;
        let x6 = x3.square_n(3) * x3;
        let x9 = x6.square_n(3) * x3;
        let x11 = x9.square_n(2) * x2;
        let x22 = x11.square_n(11) * x11;
        let x44 = x22.square_n(22) * x22;
        let x88 = x44.square_n(44) * x44;
        let x176 = x88.square_n(88) * x88;
        let x220 = x176.square_n(44) * x44;
        let x223 = x220.square_n(3) * x3;
        let r = (x223.square_n(23) * x22).square_n(6) * x2;
        let r = r.square_n(2);
        (r.square() == *self).then_some(r)
    }
}

/// Square roots of N elements at once, each as [`Fe::sqrt`] gives it: the
/// same chain with the N lanes interleaved, so the processor overlaps
/// their squarings (one chain alone waits on each square's latency).
pub fn sqrt_many<const N: usize>(a: &[Fe; N]) -> [Option<Fe>; N] {
    let sq = |x: [Fe; N], k: usize| {
        let mut x = x;
        for _ in 0..k {
            for v in x.iter_mut() {
                *v = v.square();
            }
        }
        x
    };
    let mul = |x: [Fe; N], y: &[Fe; N]| std::array::from_fn::<Fe, N, _>(|l| x[l] * y[l]);
    let x2 = mul(sq(*a, 1), a);
    let x3 = mul(sq(x2, 1), a);
    let x6 = mul(sq(x3, 3), &x3);
    let x9 = mul(sq(x6, 3), &x3);
    let x11 = mul(sq(x9, 2), &x2);
    let x22 = mul(sq(x11, 11), &x11);
    let x44 = mul(sq(x22, 22), &x22);
    let x88 = mul(sq(x44, 44), &x44);
    let x176 = mul(sq(x88, 88), &x88);
    let x220 = mul(sq(x176, 44), &x44);
    let x223 = mul(sq(x220, 3), &x3);
    let r = sq(mul(sq(mul(sq(x223, 23), &x22), 6), &x2), 2);
    std::array::from_fn(|l| (r[l].square() == a[l]).then_some(r[l]))
}

/// Whether a limb vector is p or more.
#[inline(always)]
fn ge_p(v: &[u64; 4]) -> bool {
    v[3] == u64::MAX && v[2] == u64::MAX && v[1] == u64::MAX && v[0] >= P[0]
}

impl PartialEq for Fe {
    fn eq(&self, other: &Fe) -> bool {
        self.normalize().0 == other.normalize().0
    }
}

impl Eq for Fe {}

impl Add for Fe {
    type Output = Fe;
    #[inline(always)]
    fn add(self, b: Fe) -> Fe {
        let a = self.0;
        let mut r = [0u64; 4];
        let mut c = 0u64;
        for i in 0..4 {
            let v = a[i] as u128 + b.0[i] as u128 + c as u128;
            r[i] = v as u64;
            c = (v >> 64) as u64;
        }
        // A carry is 2^256 ≡ C; adding C may carry once more, and then the
        // value is below C, so a second C does not.
        let (r, c) = add_word(r, c * C);
        Fe(add_word(r, c as u64 * C).0)
    }
}

impl Sub for Fe {
    type Output = Fe;
    #[inline(always)]
    fn sub(self, b: Fe) -> Fe {
        let a = self.0;
        let mut r = [0u64; 4];
        let mut borrow = 0u64;
        for i in 0..4 {
            let v = (a[i] as u128).wrapping_sub(b.0[i] as u128 + borrow as u128);
            r[i] = v as u64;
            borrow = (v >> 127) as u64;
        }
        // A borrow is −2^256 ≡ −C; subtracting C may borrow once more, and
        // then the value is at least 2^256 − C, so a second C does not.
        let (r, b) = sub_word(r, borrow * C);
        Fe(sub_word(r, b as u64 * C).0)
    }
}

impl Neg for Fe {
    type Output = Fe;
    #[inline(always)]
    fn neg(self) -> Fe {
        Fe::ZERO - self
    }
}

impl Mul for Fe {
    type Output = Fe;
    #[inline(always)]
    fn mul(self, b: Fe) -> Fe {
        #[cfg(target_arch = "x86_64")]
        if super::mulx::available() {
            // SAFETY: `available` found BMI2 and ADX.
            return Fe(unsafe { super::mulx::mul(&self.0, &b.0) });
        }
        self.mul_u128(b)
    }
}

impl Fe {
    /// The product in portable code (`u128` products), where MULX/ADX are
    /// missing.
    #[inline(always)]
    fn mul_u128(self, b: Fe) -> Fe {
        let (a, b) = (self.0, b.0);
        let mut t = [0u64; 8];
        for i in 0..4 {
            let mut carry = 0u64;
            for j in 0..4 {
                let v = a[i] as u128 * b[j] as u128 + t[i + j] as u128 + carry as u128;
                t[i + j] = v as u64;
                carry = (v >> 64) as u64;
            }
            t[i + 4] = carry;
        }
        Fe(reduce(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::elliptic_curve::hazmat::FieldArithmetic;
    use rand::{RngCore, SeedableRng};

    type K = <k256::Secp256k1 as FieldArithmetic>::FieldElement;

    /// The reference: k256's element for a limb vector (taken mod p first,
    /// by subtracting p once, as every value here is below 2p).
    fn k(v: &Fe) -> K {
        // Subtracting p is adding C mod 2^256.
        let f = if ge_p(&v.0) { Fe(add_word(v.0, C).0) } else { *v };
        let mut b = [0u8; 32];
        for i in 0..4 {
            b[24 - 8 * i..32 - 8 * i].copy_from_slice(&f.0[i].to_be_bytes());
        }
        Option::from(K::from_bytes(&b.into())).expect("below p")
    }

    fn same(ours: &Fe, theirs: &K) -> bool {
        ours.to_bytes() == <[u8; 32]>::from(theirs.normalize().to_bytes())
    }

    /// Random values and the edges: 0, 1, 2, p − 1, p (= 0), p + 1, 2^256 − 1
    /// (the largest lazily reduced value), C − 1, C, 2^255, 2^64 − 1.
    fn values() -> Vec<Fe> {
        let mut v = vec![
            Fe([0; 4]),
            Fe([1, 0, 0, 0]),
            Fe([2, 0, 0, 0]),
            Fe([P[0] - 1, P[1], P[2], P[3]]),
            Fe(P),
            Fe([P[0] + 1, P[1], P[2], P[3]]),
            Fe([u64::MAX; 4]),
            Fe([C - 1, 0, 0, 0]),
            Fe([C, 0, 0, 0]),
            Fe([0, 0, 0, 1 << 63]),
            Fe([u64::MAX, 0, 0, 0]),
            Fe([0, u64::MAX, u64::MAX, u64::MAX]),
        ];
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        for _ in 0..400 {
            v.push(Fe([rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()]));
        }
        v
    }

    #[test]
    fn operations_match_k256() {
        let vs = values();
        for (i, a) in vs.iter().enumerate() {
            let ka = k(a);
            assert!(same(&a.square(), &ka.square()), "square {a:?}");
            assert!(same(&-*a, &ka.negate(1)), "neg {a:?}");
            assert!(same(&a.double(), &ka.double()), "double {a:?}");
            assert!(same(&a.mul_small(3), &ka.mul_single(3)), "x3 {a:?}");
            assert!(same(&a.mul_small(8), &ka.mul_single(8)), "x8 {a:?}");
            assert_eq!(a.is_zero(), bool::from(ka.normalizes_to_zero()), "zero {a:?}");
            assert_eq!(a.is_odd(), bool::from(ka.normalize().is_odd()), "odd {a:?}");
            assert!(!ge_p(&a.normalize().0));
            for b in vs.iter().skip(i % 7).step_by(23).chain(vs.iter().take(12)) {
                let kb = k(b);
                assert!(same(&(*a * *b), &(ka * kb)), "mul {a:?} {b:?}");
                assert!(same(&(*a + *b), &(ka + kb)), "add {a:?} {b:?}");
                assert!(same(&(*a - *b), &(ka + kb.negate(1))), "sub {a:?} {b:?}");
                assert_eq!(*a == *b, bool::from((ka + kb.negate(1)).normalizes_to_zero()));
            }
            match (a.invert_vartime(), Option::<K>::from(ka.invert_vartime())) {
                (Some(x), Some(y)) => assert!(same(&x, &y)),
                (None, None) => assert!(a.is_zero()),
                _ => panic!("invert {a:?}"),
            }
            let many = sqrt_many(&[*a, vs[(i + 1) % vs.len()], *a]);
            match (a.sqrt(), Option::<K>::from(ka.sqrt())) {
                (Some(x), Some(y)) => assert!(same(&x, &y) || same(&x, &y.negate(1))),
                (None, None) => {}
                _ => panic!("sqrt {a:?}"),
            }
            assert_eq!(many[0], a.sqrt());
            assert_eq!(many[2], a.sqrt());
            assert_eq!(many[1], vs[(i + 1) % vs.len()].sqrt());
        }
    }

    /// Both products, whichever of them `*` and `square` use on this CPU:
    /// the portable one against k256, and MULX/ADX's (where the CPU has
    /// them) against the portable one on every pair of edge values (limbs
    /// of all ones, p and its neighbours, where carries run the furthest)
    /// and on random ones.
    #[test]
    fn both_products_match() {
        let vs = values();
        let edges = &vs[..12];
        let pairs = edges.iter().flat_map(|a| edges.iter().map(move |b| (a, b))).chain(vs.iter().zip(vs.iter().rev()));
        #[cfg(target_arch = "x86_64")]
        let mulx = super::super::mulx::available();
        // MULX/ADX's product and square of a, b equal the portable ones.
        #[cfg(target_arch = "x86_64")]
        let same_as_portable = |a: &Fe, b: &Fe| {
            // SAFETY: only called where `available` found BMI2 and ADX.
            let (m, q) = unsafe { (super::super::mulx::mul(&a.0, &b.0), super::super::mulx::square(&a.0)) };
            assert_eq!(Fe(m).normalize().0, a.mul_u128(*b).normalize().0, "mulx {a:?} {b:?}");
            assert_eq!(Fe(q).normalize().0, a.square_u128().normalize().0, "square mulx {a:?}");
        };
        for (a, b) in pairs {
            let (ka, kb) = (k(a), k(b));
            assert!(same(&a.mul_u128(*b), &(ka * kb)), "mul {a:?} {b:?}");
            assert!(same(&a.square_u128(), &ka.square()), "square {a:?}");
            #[cfg(target_arch = "x86_64")]
            if mulx {
                same_as_portable(a, b);
            }
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(17);
        #[cfg(target_arch = "x86_64")]
        if mulx {
            for _ in 0..200_000 {
                // Limbs drawn from edges and random words alike.
                let mut limb = || match rng.next_u64() % 4 {
                    0 => u64::MAX,
                    1 => 0,
                    2 => P[0].wrapping_add(rng.next_u64() % 3).wrapping_sub(1),
                    _ => rng.next_u64(),
                };
                let (a, b) = (Fe([limb(), limb(), limb(), limb()]), Fe([limb(), limb(), limb(), limb()]));
                same_as_portable(&a, &b);
            }
        }
    }

    #[test]
    fn bytes_round_trip_and_reject_p() {
        for a in values() {
            let b = a.to_bytes();
            assert_eq!(Fe::from_bytes(&b).expect("below p").0, a.normalize().0);
            assert!(same(&a, &k(&a)));
        }
        let mut p = [0xFF; 32];
        p[24..].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFE, 0xFF, 0xFF, 0xFC, 0x2F]);
        assert!(Fe::from_bytes(&p).is_none());
        assert!(Fe::from_bytes(&[0xFF; 32]).is_none());
        p[31] = 0x2E;
        assert_eq!(Fe::from_bytes(&p).expect("p − 1").0, [P[0] - 1, P[1], P[2], P[3]]);
    }

    #[test]
    fn chains_of_products_stay_equal() {
        // Long dependent chains through every operation, as the point
        // formulas use them, checked against k256 at the end.
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..20 {
            let mut a = Fe([rng.next_u64(), rng.next_u64(), rng.next_u64(), rng.next_u64()]);
            let b = Fe([rng.next_u64(), rng.next_u64(), rng.next_u64(), u64::MAX]);
            let (mut ka, kb) = (k(&a), k(&b));
            for s in 0..300 {
                match s % 5 {
                    0 => {
                        a = a * b;
                        ka *= kb;
                    }
                    1 => {
                        a = a.square() - b;
                        ka = (ka.square() + kb.negate(1)).normalize_weak();
                    }
                    2 => {
                        a = (a + b).mul_small(3);
                        ka = (ka + kb).normalize_weak().mul_single(3).normalize_weak();
                    }
                    3 => {
                        a = -a - a.double();
                        ka = (ka.negate(1) + ka.double().negate(2)).normalize_weak();
                    }
                    _ => {
                        a = a.mul_small(8) + b;
                        ka = (ka.mul_single(8) + kb).normalize_weak();
                    }
                }
            }
            assert!(same(&a, &ka));
        }
    }
}
