//! Ed25519's share of the batch equation: the byte checks and the challenge
//! per item (`sig::ed25519::batch_parts`), the point encodings with the
//! strict policy's flags, and the scalars zᵢkᵢ (A), zᵢ (R) and −Σ zᵢsᵢ (B).

use curve25519_dalek::constants::ED25519_BASEPOINT_COMPRESSED;
use curve25519_dalek::scalar::Scalar;
use rand::Rng;
use rand_chacha::ChaCha20Rng;

use super::{point_words, Entry, FLAG_CANONICAL, FLAG_KEY, FLAG_STRICT, POINT_WORDS};
use crate::gpu::GpuError;
use crate::sig::ed25519::batch_parts;
use crate::sig::{Ed25519Policy, Reason, SigItem};

pub(super) struct Parts {
    s: Scalar,
    k: Scalar,
}

pub(super) fn prepare(at: usize, it: &SigItem) -> Result<Result<Entry<Parts>, Reason>, GpuError> {
    let Some(policy) = it.scheme.ed25519_policy() else {
        return Err(GpuError::Unsupported(format!("the Ed25519 batch equation got a {} item (item {at})", it.scheme)));
    };
    let strict = if policy == Ed25519Policy::Strict { FLAG_STRICT } else { 0 };
    let canonical = |c: bool| if c { FLAG_CANONICAL } else { 0 };
    Ok(it.check_flags().and_then(|()| batch_parts(&it.pubkey, &it.msg, &it.sig)).map(|p| Entry {
        at,
        key: point_words(&p.a_bytes, strict | canonical(p.a_canonical) | FLAG_KEY),
        r: point_words(&p.r_bytes, strict | canonical(p.r_canonical)),
        parts: Parts { s: p.s, k: p.k },
    }))
}

pub(super) fn scalars(entries: &[Entry<Parts>], rng: &mut ChaCha20Rng) -> Vec<[u8; 32]> {
    let mut out = Vec::with_capacity(2 * entries.len() + 1);
    let mut zs = Scalar::ZERO;
    for e in entries {
        let z = Scalar::from(rng.random::<u128>());
        zs += z * e.parts.s;
        out.push((z * e.parts.k).to_bytes());
        out.push(z.to_bytes());
    }
    out.push((-zs).to_bytes());
    out
}

/// B, as the kernel decodes it.
pub(super) fn base() -> [u32; POINT_WORDS] {
    point_words(ED25519_BASEPOINT_COMPRESSED.as_bytes(), 0)
}
