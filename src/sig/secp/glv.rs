//! The GLV split of a scalar for secp256k1's endomorphism
//! lambda (x, y) = (beta x, y): k = k1 + k2 lambda (mod n) with
//! |k1|, |k2| < 2^128, so a GPU multiplies by two half-length scalars and
//! shares the doublings (libsecp256k1's secp256k1_scalar_split_lambda, the
//! same lattice basis and rounding constants). Scalar arithmetic mod n is
//! k256's; the only thing written here is the rounded product
//! c = round(k g / 2^384).

use k256::elliptic_curve::ops::Reduce;
use k256::elliptic_curve::scalar::IsHigh;
use k256::{Scalar, U256};

/// lambda, a cube root of unity mod n.
pub const LAMBDA_HEX: &str = "5363AD4CC05C30E0A5261C028812645A122E22EA20816678DF02967C1B23BD72";
/// beta, the cube root of unity mod p with lambda G = (beta x(G), y(G)).
pub const BETA_HEX: &str = "7AE96A2B657C07106E64479EAC3434E99CF0497512F58995C1396C28719501EE";

// The short lattice basis (a1, b1), (a2, b2) of {(x, y): x + y lambda = 0}
// as libsecp256k1 uses it: -b1, -b2 mod n, and g1 = round(2^384 b2 / n),
// g2 = round(2^384 (-b1) / n).
const MINUS_B1: &str = "00000000000000000000000000000000E4437ED6010E88286F547FA90ABFE4C3";
const MINUS_B2: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFE8A280AC50774346DD765CDA83DB1562C";
const G1: &str = "3086D221A7D46BCDE86C90E49284EB153DAA8A1471E8CA7FE893209A45DBB031";
const G2: &str = "E4437ED6010E88286F547FA90ABFE4C4221208AC9DF506C61571B4AE8AC47F71";

/// A half of a split: sign and magnitude (below 2^128 for every scalar).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Half {
    pub negative: bool,
    pub magnitude: U256,
}

fn scalar(hex: &str) -> Scalar {
    <Scalar as Reduce<U256>>::reduce(&U256::from_be_hex(hex))
}

/// round(k g / 2^384) for k < 2^256.
fn mul_shift_384(k: &U256, g: &U256) -> U256 {
    let (_lo, hi) = k.widening_mul(g);
    let round = hi.bit_vartime(127);
    let c = hi.shr_vartime(128);
    if round {
        c.wrapping_add(&U256::ONE)
    } else {
        c
    }
}

fn half(x: Scalar) -> Half {
    if bool::from(x.is_high()) {
        Half { negative: true, magnitude: U256::from(-x) }
    } else {
        Half { negative: false, magnitude: U256::from(x) }
    }
}

/// The constants as numbers, parsed once (split runs for every scalar of
/// a batch equation: parsing them per call cost as much as the split).
struct Consts {
    g1: U256,
    g2: U256,
    minus_b1: Scalar,
    minus_b2: Scalar,
    lambda: Scalar,
}

fn consts() -> &'static Consts {
    static C: std::sync::OnceLock<Consts> = std::sync::OnceLock::new();
    C.get_or_init(|| Consts {
        g1: U256::from_be_hex(G1),
        g2: U256::from_be_hex(G2),
        minus_b1: scalar(MINUS_B1),
        minus_b2: scalar(MINUS_B2),
        lambda: scalar(LAMBDA_HEX),
    })
}

/// (k1, k2) with k = k1 + k2 lambda (mod n).
pub fn split(k: &Scalar) -> (Half, Half) {
    let c = consts();
    let kk = U256::from(k);
    let c1 = <Scalar as Reduce<U256>>::reduce(&mul_shift_384(&kk, &c.g1));
    let c2 = <Scalar as Reduce<U256>>::reduce(&mul_shift_384(&kk, &c.g2));
    let k2 = c1 * c.minus_b1 + c2 * c.minus_b2;
    let k1 = *k - k2 * c.lambda;
    (half(k1), half(k2))
}

/// Signed radix-16 digits (each in -8..=7, least significant first) of a
/// half, sign included; `None` when the magnitude needs more than 33
/// digits (never for a split's halves, which stay below 2^128).
pub fn digits33(h: &Half) -> Option<[i8; 33]> {
    if h.magnitude.bits_vartime() > 130 {
        return None;
    }
    let bytes = h.magnitude.to_be_bytes();
    let mut d = [0i8; 33];
    let mut carry = 0i16;
    for (i, slot) in d.iter_mut().enumerate() {
        let byte = bytes[31 - i / 2];
        let nib = if i % 2 == 0 { byte & 15 } else { byte >> 4 };
        let mut v = nib as i16 + carry;
        carry = 0;
        if v >= 8 {
            v -= 16;
            carry = 1;
        }
        *slot = if h.negative { -v as i8 } else { v as i8 };
    }
    (carry == 0).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    fn to_scalar(h: &Half) -> Scalar {
        let m = <Scalar as Reduce<U256>>::reduce(&h.magnitude);
        if h.negative {
            -m
        } else {
            m
        }
    }

    fn from_digits(d: &[i8; 33]) -> Scalar {
        d.iter().rev().fold(Scalar::ZERO, |acc, &x| {
            let v = Scalar::from(x.unsigned_abs() as u64);
            acc * Scalar::from(16u64) + if x < 0 { -v } else { v }
        })
    }

    #[test]
    fn split_recombines_with_short_halves() {
        let mut rng = rand::rng();
        let n_minus = |x: u64| -Scalar::from(x);
        let mut cases: Vec<Scalar> = (0..2000)
            .map(|_| {
                let mut b = [0u8; 32];
                rng.fill_bytes(&mut b);
                <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&b))
            })
            .collect();
        cases.extend([Scalar::ZERO, Scalar::ONE, n_minus(1), n_minus(2), scalar(LAMBDA_HEX), -scalar(LAMBDA_HEX)]);
        cases.push(<Scalar as Reduce<U256>>::reduce(&U256::ONE.shl_vartime(128)));
        let lambda = scalar(LAMBDA_HEX);
        for k in cases {
            let (a, b) = split(&k);
            assert!(a.magnitude.bits_vartime() <= 128 && b.magnitude.bits_vartime() <= 128, "{k:?}");
            assert_eq!(to_scalar(&a) + to_scalar(&b) * lambda, k);
            for h in [a, b] {
                let d = digits33(&h).expect("a half has 33 digits");
                assert!(d.iter().all(|&x| (-8..=8).contains(&x)));
                assert_eq!(from_digits(&d), to_scalar(&h));
            }
        }
    }

    #[test]
    fn lambda_and_beta_are_cube_roots_of_one() {
        let l = scalar(LAMBDA_HEX);
        assert_eq!(l * l * l, Scalar::ONE);
        assert_ne!(l, Scalar::ONE);
    }
}
