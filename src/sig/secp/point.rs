//! secp256k1 points in affine and Jacobian coordinates over the field of
//! [`super::field`] (4×64-bit limbs), for the BIP340 batch equation's
//! multi-scalar multiplication.
//!
//! Why not k256's `ProjectivePoint`: its complete addition formulas cost
//! 12 products whether or not one side is affine, and it offers no affine
//! addition; a Pippenger sum spends most of its time adding affine points
//! into buckets, where an affine addition sharing one inversion with a
//! whole round (Montgomery's trick) costs about 6 products. Measured side by
//! side in docs/cpu-paths.md.
//!
//! Formulas: doubling dbl-2009-l (a = 0), additions as libsecp256k1's
//! `gej_add_ge_var` / `gej_add_var` (variable time: only public data goes
//! through here).

pub use super::field::Fe;

/// beta, a cube root of unity mod p: lambda (x, y) = (beta x, y).
pub fn beta() -> Fe {
    static B: std::sync::OnceLock<Fe> = std::sync::OnceLock::new();
    *B.get_or_init(|| {
        let bytes = hex32(super::glv::BETA_HEX);
        Fe::from_bytes(&bytes).expect("beta < p")
    })
}

fn hex32(s: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex constant");
    }
    out
}

/// A finite affine point.
#[derive(Clone, Copy, Debug)]
pub struct Affine {
    pub x: Fe,
    pub y: Fe,
}

impl Affine {
    /// The generator G.
    pub fn generator() -> Affine {
        static G: std::sync::OnceLock<Affine> = std::sync::OnceLock::new();
        *G.get_or_init(|| {
            let x = hex32("79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798");
            let y = hex32("483ADA7726A3C4655DA4FBFC0E1108A8FD17B448A68554199C47D08FFB10D4B8");
            Affine { x: Fe::from_bytes(&x).expect("G.x"), y: Fe::from_bytes(&y).expect("G.y") }
        })
    }

    /// The point with x = `x` and even y (BIP340's lift_x), `None` when
    /// `x` ≥ p or x³ + 7 is not a square.
    pub fn lift_x(x: &[u8; 32]) -> Option<Affine> {
        let x = Fe::from_bytes(x)?;
        let y = (x.square() * x + Fe::from_u64(7)).sqrt()?;
        Some(Affine { x, y: if y.is_odd() { -y } else { y } })
    }

    /// [`Affine::lift_x`] of each x, four square roots at a time
    /// ([`super::field::sqrt_many`]).
    pub fn lift_x_many(xs: &[&[u8; 32]]) -> Vec<Option<Affine>> {
        const N: usize = 4;
        let mut out = Vec::with_capacity(xs.len());
        for chunk in xs.chunks(N) {
            // Lanes past the end, and x ≥ p, take x = 0 and are dropped.
            let x: [Option<Fe>; N] = std::array::from_fn(|l| chunk.get(l).and_then(|x| Fe::from_bytes(x)));
            let c: [Fe; N] = std::array::from_fn(|l| {
                let v = x[l].unwrap_or(Fe::ZERO);
                v.square() * v + Fe::from_u64(7)
            });
            let y = super::field::sqrt_many(&c);
            for (x, y) in x.iter().zip(y).take(chunk.len()) {
                out.push(x.zip(y).map(|(x, y)| Affine { x, y: if y.is_odd() { -y } else { y } }));
            }
        }
        out
    }

    /// lift_x through libsecp256k1: the compressed key 02‖x parsed (its
    /// square root is ~1.6× faster than k256's here, measured in
    /// docs/cpu-paths.md), y read back from its uncompressed form. The same
    /// point and the same `None`s as [`Affine::lift_x`] (tested).
    pub fn lift_x_libsecp(x: &[u8; 32]) -> Option<Affine> {
        let mut c = [2u8; 33];
        c[1..].copy_from_slice(x);
        let pk = secp256k1::PublicKey::from_slice(&c).ok()?;
        let u = pk.serialize_uncompressed();
        Affine::from_xy(x, u[33..].try_into().ok()?)
    }

    /// A point from its coordinates, as big-endian bytes (taken as given:
    /// the caller has them from a decoded key).
    pub fn from_xy(x: &[u8; 32], y: &[u8; 32]) -> Option<Affine> {
        Some(Affine { x: Fe::from_bytes(x)?, y: Fe::from_bytes(y)? })
    }

    pub fn neg(&self) -> Affine {
        Affine { x: self.x, y: -self.y }
    }

    /// lambda(self) = (beta x, y).
    pub fn endo(&self) -> Affine {
        Affine { x: self.x * beta(), y: self.y }
    }
}

/// A Jacobian point (X/Z², Y/Z³), or infinity.
#[derive(Clone, Copy, Debug)]
pub struct Jacobian {
    x: Fe,
    y: Fe,
    z: Fe,
    inf: bool,
}

impl Jacobian {
    pub const INFINITY: Jacobian = Jacobian { x: Fe::ZERO, y: Fe::ZERO, z: Fe::ZERO, inf: true };

    pub fn from_affine(a: &Affine) -> Jacobian {
        Jacobian { x: a.x, y: a.y, z: Fe::ONE, inf: false }
    }

    pub fn is_infinity(&self) -> bool {
        self.inf
    }

    /// 2·self. secp256k1 has no point of order 2, so a finite point
    /// doubles to a finite point.
    pub fn double(&self) -> Jacobian {
        if self.inf {
            return *self;
        }
        let a = self.x.square();
        let b = self.y.square();
        let c = b.square();
        let d = ((self.x + b).square() - a - c).double();
        let e = a.mul_small(3);
        let x3 = e.square() - d.double();
        let y3 = e * (d - x3) - c.mul_small(8);
        let z3 = (self.y * self.z).double();
        Jacobian { x: x3, y: y3, z: z3, inf: false }
    }

    /// self + b, b affine.
    pub fn add_affine(&self, b: &Affine) -> Jacobian {
        if self.inf {
            return Jacobian::from_affine(b);
        }
        let z12 = self.z.square();
        let u1 = self.x;
        let u2 = b.x * z12;
        let s1 = self.y;
        let s2 = b.y * z12 * self.z;
        let h = u2 - u1;
        let i = s1 - s2;
        if h.is_zero() {
            return if i.is_zero() { self.double() } else { Jacobian::INFINITY };
        }
        let z3 = self.z * h;
        Self::finish(u1, s1, h, i, z3)
    }

    /// self + b.
    pub fn add(&self, b: &Jacobian) -> Jacobian {
        if self.inf {
            return *b;
        }
        if b.inf {
            return *self;
        }
        let z22 = b.z.square();
        let z12 = self.z.square();
        let u1 = self.x * z22;
        let u2 = b.x * z12;
        let s1 = self.y * z22 * b.z;
        let s2 = b.y * z12 * self.z;
        let h = u2 - u1;
        let i = s1 - s2;
        if h.is_zero() {
            return if i.is_zero() { self.double() } else { Jacobian::INFINITY };
        }
        let z3 = self.z * b.z * h;
        Self::finish(u1, s1, h, i, z3)
    }

    /// The common tail of both additions (h = u2 − u1, i = s1 − s2): x3 = i² − h³ − 2 u1 h², y3 = −i (u1 h² − x3)·(−1)
    /// − s1 h³, as libsecp256k1 writes it.
    fn finish(u1: Fe, s1: Fe, h: Fe, i: Fe, z3: Fe) -> Jacobian {
        let h2 = -h.square();
        let h3 = h2 * h;
        let t = u1 * h2;
        let x3 = i.square() + h3 + t.double();
        let y3 = (x3 + t) * i + h3 * s1;
        Jacobian { x: x3, y: y3, z: z3, inf: false }
    }

    /// The affine form (one inversion), `None` for infinity.
    pub fn to_affine(&self) -> Option<Affine> {
        if self.inf {
            return None;
        }
        let zi = self.z.invert_vartime()?;
        let zi2 = zi.square();
        Some(Affine { x: (self.x * zi2).normalize(), y: (self.y * zi2 * zi).normalize() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::elliptic_curve::group::Group;
    use k256::elliptic_curve::point::AffineCoordinates;
    use k256::elliptic_curve::sec1::ToSec1Point;
    use k256::{ProjectivePoint, Scalar};

    /// (x, y) bytes of a k256 point, the reference.
    fn k256_xy(p: &ProjectivePoint) -> ([u8; 32], [u8; 32]) {
        let e = p.to_affine().to_sec1_point(false);
        let b = e.as_bytes();
        (b[1..33].try_into().unwrap(), b[33..65].try_into().unwrap())
    }

    fn ours(p: &ProjectivePoint) -> Affine {
        let (x, y) = k256_xy(p);
        Affine::from_xy(&x, &y).unwrap()
    }

    fn same(j: &Jacobian, p: &ProjectivePoint) -> bool {
        match j.to_affine() {
            None => bool::from(p.is_identity()),
            Some(a) => {
                let (x, y) = k256_xy(p);
                a.x.to_bytes().as_slice() == x && a.y.to_bytes().as_slice() == y
            }
        }
    }

    #[test]
    fn both_lift_x_agree() {
        // Random x (about half are on the curve), x = 0, p − 1, p, 2^256 − 1.
        let mut xs: Vec<[u8; 32]> = (0u64..300)
            .map(|i| {
                use sha2::Digest;
                sha2::Sha256::digest(i.to_le_bytes()).into()
            })
            .collect();
        let p_minus_1 = hex32("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2E");
        xs.extend([
            [0; 32],
            p_minus_1,
            hex32("FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F"),
            [0xff; 32],
        ]);
        let mut some = 0;
        let refs: Vec<&[u8; 32]> = xs.iter().collect();
        let many = Affine::lift_x_many(&refs);
        for (x, m) in xs.iter().zip(&many) {
            let (a, b) = (Affine::lift_x(x), Affine::lift_x_libsecp(x));
            assert_eq!(m.map(|p| (p.x, p.y)), a.map(|p| (p.x, p.y)), "{x:?}");
            assert_eq!(a.is_some(), b.is_some(), "{x:?}");
            if let (Some(a), Some(b)) = (a, b) {
                assert!(a.x == b.x && a.y == b.y);
                assert!(!b.y.is_odd());
                some += 1;
            }
        }
        assert!(some > 100 && some < 250, "{some}");
    }

    #[test]
    fn formulas_match_k256() {
        let g = ProjectivePoint::GENERATOR;
        for k in 1u64..40 {
            let p = g * Scalar::from(k * 7919 + 3);
            let q = g * Scalar::from(k * 104729 + 11);
            let jp = Jacobian::from_affine(&ours(&p)).double().add(&Jacobian::INFINITY);
            let jq = Jacobian::from_affine(&ours(&q)).double();
            assert!(same(&jp.double(), &(p.double().double())), "double {k}");
            assert!(same(&jp.add(&jq), &(p.double() + q.double())), "add {k}");
            assert!(same(&jp.add_affine(&ours(&q)), &(p.double() + q)), "add_affine {k}");
            // The special cases: P + P, P + (−P), through both additions.
            assert!(same(&jp.add(&jp), &p.double().double()), "add doubling {k}");
            let j2p = Jacobian::from_affine(&ours(&p.double()));
            assert!(same(&j2p.add_affine(&ours(&p.double())), &p.double().double()));
            assert!(j2p.add_affine(&ours(&p.double()).neg()).is_infinity());
            assert!(jp.add(&Jacobian::from_affine(&ours(&-p.double()))).is_infinity());
            let e = ours(&p).endo();
            assert!(same(&Jacobian::from_affine(&e), &p.endomorphism()), "endo {k}");
        }
        let lx = Affine::lift_x(&g.to_affine().x().into()).unwrap();
        assert!(same(&Jacobian::from_affine(&lx), &g));
        let lx = Affine::lift_x_libsecp(&g.to_affine().x().into()).unwrap();
        assert!(same(&Jacobian::from_affine(&lx), &g));
        assert!(same(&Jacobian::from_affine(&Affine::generator()), &g));
    }
}
