//! BIP340's share of the batch equation: the byte checks and the challenge
//! per item (`sig::secp::gpu::bip340_parts`, libsecp256k1's order of
//! reasons), the x coordinates of P and R (lifted to even y on the GPU),
//! and the scalars zᵢeᵢ (P), zᵢ (R) and −Σ zᵢsᵢ (G). BIP340 draws a₂…a_u
//! from [1, n−1] (and a₁ = 1); 128-bit weights bound the chance that an
//! invalid batch passes by 2⁻¹²⁸ just the same, and keep the R points in
//! the low windows.

use k256::Scalar;
use rand::Rng;
use rand_chacha::ChaCha20Rng;

use super::{Entry, FLAG_BAD_IF_KEY_DECODES, FLAG_KEY, POINT_WORDS};
use crate::gpu::GpuError;
use crate::sig::secp::gpu::{bip340_parts, words};
use crate::sig::{Reason, Scheme, SigItem};

pub(super) struct Parts {
    s: Scalar,
    e: Scalar,
}

/// A big-endian 32-byte number as kernel input.
fn xwords(be: &[u8; 32], flags: u32) -> [u32; POINT_WORDS] {
    let mut w = [0u32; POINT_WORDS];
    w[..8].copy_from_slice(&words(be));
    w[8] = flags;
    w
}

pub(super) fn prepare(at: usize, it: &SigItem) -> Result<Result<Entry<Parts>, Reason>, GpuError> {
    if it.scheme != Scheme::Schnorr {
        return Err(GpuError::Unsupported(format!("the BIP340 batch equation got a {} item (item {at})", it.scheme)));
    }
    Ok(bip340_parts(it).map(|p| {
        let bad = if p.sig_bad { FLAG_BAD_IF_KEY_DECODES } else { 0 };
        Entry { at, key: xwords(&p.x, FLAG_KEY | bad), r: xwords(&p.r, 0), parts: Parts { s: p.s, e: p.e } }
    }))
}

fn le(s: &Scalar) -> [u8; 32] {
    let mut b: [u8; 32] = s.to_bytes().into();
    b.reverse();
    b
}

pub(super) fn scalars(entries: &[Entry<Parts>], rng: &mut ChaCha20Rng) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(2 * entries.len() + 1);
    let mut zs = Scalar::ZERO;
    for e in entries {
        let mut be = [0u8; 32];
        be[16..].copy_from_slice(&rng.random::<u128>().to_be_bytes());
        // Below 2^128 < n: always a canonical scalar.
        let z: Scalar =
            Option::from(<Scalar as k256::elliptic_curve::PrimeField>::from_repr(be.into())).unwrap_or(Scalar::ONE);
        zs += z * e.parts.s;
        out.push(le(&(z * e.parts.e)));
        out.push(le(&z));
    }
    out.push(le(&-zs));
    out
}

/// G's x coordinate (its y is even, so lift_x gives G).
pub(super) fn base() -> [u32; POINT_WORDS] {
    const GX: [u8; 32] = [
        0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce, 0x87, 0x0b, 0x07, 0x02, 0x9b,
        0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2, 0x81, 0x5b, 0x16, 0xf8, 0x17, 0x98,
    ];
    xwords(&GX, 0)
}
