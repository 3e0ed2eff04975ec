//! Real signatures for the demo feed, the benches and tests: deterministic
//! valid items of every scheme, mutations that make them invalid, and the
//! feed loop `hashrig run` starts beside the PoW demo.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use secp256k1::{ecdsa, schnorr, Keypair, Message, SecretKey};
use sha2::{Digest, Sha256};

use super::{ed25519, Scheme, SigEngine, SigItem};

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

/// Demo feed settings.
#[derive(Clone, Debug)]
pub struct FeedParams {
    /// Items per second to aim for.
    pub rate: f64,
    /// Items per batch.
    pub batch: usize,
    /// One item in this many is mutated (invalid).
    pub invalid_every: usize,
    /// Deadline given to each batch.
    pub deadline: Duration,
}

impl Default for FeedParams {
    fn default() -> FeedParams {
        FeedParams { rate: 5000.0, batch: 256, invalid_every: 16, deadline: Duration::from_millis(100) }
    }
}

/// What the feed has seen.
#[derive(Debug, Default)]
pub struct FeedStats {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    pub invalid: AtomicU64,
    /// Verdicts that differ from what the feed knows the answer to be: a bug.
    pub unexpected: AtomicU64,
}

/// Feed batches of real signatures, valid and invalid mixed, into `engine`
/// until `stop`; every verdict is checked against the known answer.
pub fn run_feed(engine: &SigEngine, p: &FeedParams, stats: &FeedStats, stop: &AtomicBool) {
    const POOL: u64 = 64;
    let pool: Vec<SigItem> = (0..POOL).flat_map(|i| Scheme::ALL.into_iter().map(move |s| valid_item(s, i))).collect();
    let batch = p.batch.max(1);
    let every = p.invalid_every.max(2);
    let interval = Duration::from_secs_f64(batch as f64 / p.rate.max(1.0));
    let mut next = Instant::now();
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut items = Vec::with_capacity(batch);
        let mut expect = Vec::with_capacity(batch);
        for _ in 0..batch {
            k = k.wrapping_add(1);
            let base = &pool[(k.wrapping_mul(0x9e37_79b9) % pool.len() as u64) as usize];
            if k % every as u64 == 0 {
                items.push(mutate(base, k.wrapping_mul(7)));
                expect.push(false);
            } else {
                items.push(base.clone());
                expect.push(true);
            }
        }
        let rep = engine.verify(&items, Some(Instant::now() + p.deadline));
        let mut bad = 0;
        let mut invalid = 0;
        for (v, e) in rep.verdicts.iter().zip(&expect) {
            if !v.is_valid() {
                invalid += 1;
            }
            if v.is_valid() != *e {
                bad += 1;
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.items.fetch_add(batch as u64, Ordering::Relaxed);
        stats.invalid.fetch_add(invalid, Ordering::Relaxed);
        if bad > 0 {
            stats.unexpected.fetch_add(bad, Ordering::Relaxed);
            tracing::error!("sig demo feed: {bad} verdict(s) differ from the known answer");
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now; // fell behind: do not burst to catch up
        }
    }
}

/// Start [`run_feed`] on a thread of its own.
pub fn spawn_feed(
    engine: SigEngine,
    p: FeedParams,
    stats: Arc<FeedStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("sig-demo-feed".into()).spawn(move || run_feed(&engine, &p, &stats, &stop))
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
