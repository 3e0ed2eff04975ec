//! secp256k1 ECDSA and BIP340 Schnorr through libsecp256k1 (the `secp256k1`
//! crate), with the input checks that give every malformed item a reason.

use secp256k1::{ecdsa, schnorr, Message, PublicKey, XOnlyPublicKey};

use super::cache::KeyCache;
use super::Reason;

pub mod batch;
pub mod field;
pub mod glv;
pub mod gpu;
pub mod msm;
#[cfg(target_arch = "x86_64")]
pub mod mulx;
pub mod point;

/// Parsed ECDSA keys (33 or 65 bytes): 16 × 1024 entries.
fn ecdsa_keys() -> &'static KeyCache<Box<[u8]>, Option<PublicKey>> {
    static C: std::sync::OnceLock<KeyCache<Box<[u8]>, Option<PublicKey>>> = std::sync::OnceLock::new();
    C.get_or_init(|| KeyCache::new(1024))
}

/// Parsed x-only keys: 16 × 1024 entries.
fn xonly_keys() -> &'static KeyCache<[u8; 32], Option<XOnlyPublicKey>> {
    static C: std::sync::OnceLock<KeyCache<[u8; 32], Option<XOnlyPublicKey>>> = std::sync::OnceLock::new();
    C.get_or_init(|| KeyCache::new(1024))
}

/// BIP66 strict DER for a signature *without* Bitcoin's trailing sighash
/// byte: `30 len 02 lenR R 02 lenS S`, minimal lengths, positive minimal
/// integers, no trailing bytes.
pub fn is_strict_der(sig: &[u8]) -> bool {
    let len = sig.len();
    if !(8..=72).contains(&len) {
        return false;
    }
    if sig[0] != 0x30 || sig[1] as usize != len - 2 || sig[2] != 0x02 {
        return false;
    }
    let len_r = sig[3] as usize;
    if len_r == 0 || 5 + len_r >= len {
        return false;
    }
    let len_s = sig[5 + len_r] as usize;
    if len_r + len_s + 6 != len || sig[4 + len_r] != 0x02 || len_s == 0 {
        return false;
    }
    // R: positive, no unnecessary leading zero.
    if sig[4] & 0x80 != 0 || (len_r > 1 && sig[4] == 0 && sig[5] & 0x80 == 0) {
        return false;
    }
    // S: the same.
    let s0 = 6 + len_r;
    if sig[s0] & 0x80 != 0 || (len_s > 1 && sig[s0] == 0 && sig[s0 + 1] & 0x80 == 0) {
        return false;
    }
    true
}

/// ECDSA over a 32-byte digest. `sig` is 64-byte r‖s or strict DER.
/// libsecp256k1 rejects high S; `allow_high_s` normalises S first (Bitcoin
/// consensus before the low-S policy).
pub fn verify_ecdsa(pubkey: &[u8], digest: &[u8], sig: &[u8], allow_high_s: bool) -> Result<(), Reason> {
    let digest: [u8; 32] = digest.try_into().map_err(|_| Reason::MsgLength)?;
    if !matches!(pubkey.len(), 33 | 65) {
        return Err(Reason::PubkeyLength);
    }
    // The last byte (x or y) is uniform; the first is only the prefix.
    let pk = ecdsa_keys()
        .get_or_insert(pubkey, pubkey[pubkey.len() - 1], |b| PublicKey::from_slice(b).ok())
        .ok_or(Reason::PubkeyEncoding)?;
    let s = parse_ecdsa_sig(sig, allow_high_s)?;
    ecdsa::verify(&s, Message::from_digest(digest), &pk).map_err(|_| Reason::BadSignature)
}

/// An ECDSA signature as libsecp256k1 parses it (64-byte r‖s or strict
/// DER), low-S normalised; `Err` with the reason when it does not parse or
/// is high-S without `allow_high_s`. Shared by the CPU path and the GPU
/// encoding, so both see the same r and s.
pub fn parse_ecdsa_sig(sig: &[u8], allow_high_s: bool) -> Result<ecdsa::Signature, Reason> {
    let mut s = if sig.len() == 64 {
        // libsecp256k1's compact parser rejects r, s ≥ n but takes 0; the
        // documented range is [1, n−1], so 0 is sig_encoding too.
        if sig[..32].iter().all(|&b| b == 0) || sig[32..].iter().all(|&b| b == 0) {
            return Err(Reason::SigEncoding);
        }
        ecdsa::Signature::from_compact(sig).map_err(|_| Reason::SigEncoding)?
    } else if sig.first() == Some(&0x30) {
        if !is_strict_der(sig) {
            return Err(Reason::SigEncoding);
        }
        ecdsa::Signature::from_der(sig).map_err(|_| Reason::SigEncoding)?
    } else {
        return Err(Reason::SigLength);
    };
    let before = s;
    s.normalize_s();
    if s != before && !allow_high_s {
        return Err(Reason::HighS);
    }
    Ok(s)
}

/// An x-only key decoded through the cache (the decoding's square root is
/// paid once per key), `None` when it is not an x coordinate.
fn xonly_key(pk: &[u8; 32]) -> Option<XOnlyPublicKey> {
    xonly_keys().get_or_insert(pk, pk[0], |b| XOnlyPublicKey::from_byte_array(*b).ok())
}

/// An x-only key as a point for the batch equation (lift_x, once per key
/// through the cache), `None` when it is not an x coordinate: exactly the
/// keys libsecp256k1's parser rejects (x ≥ p, or x³ + 7 not a square).
pub(crate) fn xonly_point(pk: &[u8; 32]) -> Option<point::Affine> {
    static C: std::sync::OnceLock<KeyCache<[u8; 32], Option<point::Affine>>> = std::sync::OnceLock::new();
    C.get_or_init(|| KeyCache::new(1024)).get_or_insert(pk, pk[0], point::Affine::lift_x_libsecp)
}

/// BIP340 Schnorr: 32-byte x-only key, 64-byte signature, message of any length.
pub fn verify_schnorr(pubkey: &[u8], msg: &[u8], sig: &[u8]) -> Result<(), Reason> {
    let pk: [u8; 32] = pubkey.try_into().map_err(|_| Reason::PubkeyLength)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| Reason::SigLength)?;
    let pk = xonly_key(&pk).ok_or(Reason::PubkeyEncoding)?;
    schnorr::verify(&schnorr::Signature::from_byte_array(sig), msg, &pk).map_err(|_| Reason::BadSignature)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_shapes() {
        // Minimal valid: r = 1, s = 1.
        assert!(is_strict_der(&[0x30, 6, 2, 1, 1, 2, 1, 1]));
        // Negative r.
        assert!(!is_strict_der(&[0x30, 6, 2, 1, 0x81, 2, 1, 1]));
        // Unneeded leading zero.
        assert!(!is_strict_der(&[0x30, 7, 2, 2, 0, 1, 2, 1, 1]));
        // Trailing byte, wrong outer length, truncation.
        assert!(!is_strict_der(&[0x30, 6, 2, 1, 1, 2, 1, 1, 0]));
        assert!(!is_strict_der(&[0x30, 7, 2, 1, 1, 2, 1, 1]));
        assert!(!is_strict_der(&[0x30, 6, 2, 1, 1, 2, 1]));
        assert!(!is_strict_der(&[]));
    }
}
