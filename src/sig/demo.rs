//! Real signatures for the demo feed (`node::sigfeed`), the benches and
//! tests: deterministic valid items of every scheme, and mutations that make
//! them invalid.

use secp256k1::{ecdsa, schnorr, Keypair, Message, SecretKey};
use sha2::{Digest, Sha256};

use super::{ed25519, Scheme, SigItem};

fn seed(scheme: Scheme, i: u64) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"hashrig demo key");
    h.update([scheme.wire()]);
    h.update(i.to_le_bytes());
    h.finalize().into()
}

/// A valid item of `scheme`, a pure function of `i` (key and message differ per `i`).
pub fn valid_item(scheme: Scheme, i: u64) -> SigItem {
    let s = seed(scheme, i);
    let msg: Vec<u8> = Sha256::digest([&s[..], b"msg"].concat()).to_vec();
    match scheme {
        Scheme::Ed25519 | Scheme::Ed25519Strict => {
            let (pk, sig) = ed25519::sign(&s, &msg);
            SigItem::new(scheme, pk, msg, sig)
        }
        Scheme::Ecdsa => {
            // A SHA-256 output is a valid secret key except with negligible
            // probability; fall back to a fixed one rather than panic.
            let sk = SecretKey::from_secret_bytes(s)
                .unwrap_or_else(|_| SecretKey::from_secret_bytes([1; 32]).expect("1 is a valid key"));
            let digest: [u8; 32] = msg.as_slice().try_into().expect("SHA-256 output is 32 bytes");
            let sig = ecdsa::sign(Message::from_digest(digest), &sk);
            let pk = secp256k1::PublicKey::from_secret_key(&sk).serialize();
            SigItem::new(scheme, pk.to_vec(), msg, sig.serialize_compact().to_vec())
        }
        Scheme::Schnorr => {
            let sk = SecretKey::from_secret_bytes(s)
                .unwrap_or_else(|_| SecretKey::from_secret_bytes([1; 32]).expect("1 is a valid key"));
            let kp = Keypair::from_secret_key(&sk);
            let sig = schnorr::sign_no_aux_rand(&msg, &kp);
            let (xonly, _) = kp.x_only_public_key();
            SigItem::new(scheme, xonly.to_byte_array().to_vec(), msg, sig.to_byte_array().to_vec())
        }
    }
}

/// A copy of `item` with one bit flipped: in the message, the signature or
/// the key (chosen by `k`). The result is invalid (possibly malformed).
pub fn mutate(item: &SigItem, k: u64) -> SigItem {
    let mut m = item.clone();
    let bit = (k >> 2) as usize;
    let field = match k % 3 {
        0 if !m.msg.is_empty() => &mut m.msg,
        1 => &mut m.pubkey,
        _ => &mut m.sig,
    };
    if !field.is_empty() {
        let len = field.len();
        field[(bit / 8) % len] ^= 1 << (bit % 8);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sig::{verify_one, Verdict};

    #[test]
    fn valid_and_mutated() {
        for s in Scheme::ALL {
            for i in 0..4 {
                let it = valid_item(s, i);
                assert_eq!(verify_one(&it), Verdict::Valid, "{s} {i}");
                for k in 0..6 {
                    assert!(!verify_one(&mutate(&it, k * 13 + i)).is_valid(), "{s} {i} {k}");
                }
            }
        }
    }
}
