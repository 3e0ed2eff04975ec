//! The host's half of secp256k1 verification on the GPU
//! (kernels/secp256k1_verify.wgsl): every check that needs only the bytes,
//! in the CPU path's order of reasons, and the words the kernel reads.
//!
//! Parsing is libsecp256k1's own (the signature parsers of the `secp256k1`
//! crate, shared with the CPU path through [`super::parse_ecdsa_sig`]), so
//! the GPU sees exactly the r and s the CPU path verifies. Scalar work is
//! here, on k256's arithmetic mod n: ECDSA's u1 = z/s and u2 = r/s (one
//! inversion per batch, Montgomery's trick), BIP340's challenge
//! e = H_tag(r || P || m) and -e, and the GLV split of each into halves
//! below 2^128. What needs field arithmetic (decompressing the key, the
//! curve equation, the double multiplication) is the kernel's.

use k256::elliptic_curve::ops::Reduce;
use k256::{Scalar, U256};
use sha2::{Digest, Sha256};

use super::glv::{self, Half};
use super::parse_ecdsa_sig;
use crate::sig::{Reason, Scheme, SigItem, FLAG_ALLOW_HIGH_S};

/// u32 words per item (the layout is in the kernel's header).
pub const GPU_ITEM_WORDS: usize = 66;

const FLAG_X_ONLY: u32 = 1;
const FLAG_Y_ODD: u32 = 2;
const FLAG_R_PLUS_N: u32 = 4;
const FLAG_BIP340: u32 = 8;

const P_HEX: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEFFFFFC2F";
const N_HEX: &str = "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141";

/// What the host made of one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Encoded {
    /// For the kernel.
    Words(Box<[u32; GPU_ITEM_WORDS]>),
    /// Decided from the bytes alone.
    Verdict(Reason),
    /// Not for this kernel (another scheme, or a scalar the kernel's digit
    /// layout cannot hold, which the GLV split never produces): the CPU
    /// answers it.
    Cpu,
}

/// A 256-bit big-endian number as 8 little-endian u32 words (word 0 the
/// least significant): the kernel's `fe_from_words` makes the limbs of
/// whichever field it was built with.
pub fn words(be: &[u8; 32]) -> [u32; 8] {
    let mut out = [0u32; 8];
    for (w, c) in out.iter_mut().zip(be.rchunks_exact(4)) {
        *w = u32::from_be_bytes(c.try_into().expect("4 bytes"));
    }
    out
}

fn below(be: &[u8; 32], hex: &str) -> bool {
    U256::from_be_slice(be) < U256::from_be_hex(hex)
}

fn to32(b: &[u8]) -> [u8; 32] {
    let mut a = [0u8; 32];
    a.copy_from_slice(b);
    a
}

/// [1..8]G, then [1..8](lambda G), each as x then y in words (16 × 16
/// words): the kernel's `g_table`, from libsecp256k1's serialisations.
pub fn g_table() -> Vec<u32> {
    let lambda = <Scalar as Reduce<U256>>::reduce(&U256::from_be_hex(glv::LAMBDA_HEX));
    let mut out = Vec::with_capacity(16 * 16);
    for mult in [Scalar::ONE, lambda] {
        for k in 1..=8u64 {
            let s = mult * Scalar::from(k);
            let sk = secp256k1::SecretKey::from_secret_bytes(s.to_bytes().into()).expect("k lambda is not 0 mod n");
            let pk = secp256k1::PublicKey::from_secret_key(&sk).serialize_uncompressed();
            out.extend_from_slice(&words(&to32(&pk[1..33])));
            out.extend_from_slice(&words(&to32(&pk[33..65])));
        }
    }
    out
}

/// The key words and flags of an ECDSA key, or why it does not parse from
/// its bytes alone (libsecp256k1's secp256k1_eckey_pubkey_parse: prefix,
/// x and y < p, the parity of a hybrid key; the curve equation and the
/// square root are the kernel's).
fn ecdsa_key(pk: &[u8], w: &mut [u32; GPU_ITEM_WORDS]) -> Result<(), Reason> {
    match (pk.len(), pk[0]) {
        (33, 2 | 3) => {
            let x = to32(&pk[1..]);
            if !below(&x, P_HEX) {
                return Err(Reason::PubkeyEncoding);
            }
            w[0] |= FLAG_X_ONLY | if pk[0] == 3 { FLAG_Y_ODD } else { 0 };
            w[1..9].copy_from_slice(&words(&x));
            Ok(())
        }
        (65, 4 | 6 | 7) => {
            let (x, y) = (to32(&pk[1..33]), to32(&pk[33..]));
            if !below(&x, P_HEX) || !below(&y, P_HEX) || (pk[0] != 4 && (y[31] & 1) != (pk[0] & 1)) {
                return Err(Reason::PubkeyEncoding);
            }
            w[1..9].copy_from_slice(&words(&x));
            w[9..17].copy_from_slice(&words(&y));
            Ok(())
        }
        _ => Err(Reason::PubkeyEncoding),
    }
}

/// The digit words of the four halves (G, lambda G, Q, lambda Q).
fn put_digits(halves: [Half; 4], w: &mut [u32; GPU_ITEM_WORDS]) -> bool {
    let mut ds = [[0i8; 33]; 4];
    for (d, h) in ds.iter_mut().zip(&halves) {
        match glv::digits33(h) {
            Some(x) => *d = x,
            None => return false,
        }
    }
    for win in 0..33 {
        let mut word = 0u32;
        for (k, d) in ds.iter().enumerate() {
            word |= ((d[win] + 8) as u32) << (8 * k);
        }
        w[33 + win] = word;
    }
    true
}

fn put_double_mult(u1: &Scalar, u2: &Scalar, w: &mut [u32; GPU_ITEM_WORDS]) -> bool {
    let (a1, b1) = glv::split(u1);
    let (a2, b2) = glv::split(u2);
    put_digits([a1, b1, a2, b2], w)
}

/// An ECDSA item up to the scalar work: the words without digits and
/// (r, s, z), or the verdict its bytes decide.
struct EcdsaParsed {
    words: Box<[u32; GPU_ITEM_WORDS]>,
    /// r, s and the digest as scalars; `None` when the kernel only decodes
    /// the key and answers the host's verdict (flags bits 8..15).
    rsz: Option<(Scalar, Scalar, Scalar)>,
}

fn parse_ecdsa(it: &SigItem) -> Result<EcdsaParsed, Reason> {
    it.check_flags()?;
    let digest: [u8; 32] = it.msg.as_slice().try_into().map_err(|_| Reason::MsgLength)?;
    if !matches!(it.pubkey.len(), 33 | 65) {
        return Err(Reason::PubkeyLength);
    }
    let mut w = Box::new([0u32; GPU_ITEM_WORDS]);
    ecdsa_key(&it.pubkey, &mut w)?;
    // From here a reason applies only if the key is on the curve, which the
    // kernel decides: it answers PubkeyEncoding first, else this.
    let sig = match parse_ecdsa_sig(&it.sig, it.flags & FLAG_ALLOW_HIGH_S != 0) {
        Ok(s) => s,
        Err(r) => {
            w[0] |= (r.code() as u32) << 8;
            return Ok(EcdsaParsed { words: w, rsz: None });
        }
    };
    let rs = sig.serialize_compact();
    let (r_be, s_be) = (to32(&rs[..32]), to32(&rs[32..]));
    let r = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&r_be));
    let s = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&s_be));
    if bool::from(r.is_zero()) || bool::from(s.is_zero()) {
        // libsecp256k1 parses an out-of-range DER integer as 0, and
        // secp256k1_ecdsa_verify fails on a zero r or s.
        w[0] |= (Reason::BadSignature.code() as u32) << 8;
        return Ok(EcdsaParsed { words: w, rsz: None });
    }
    w[17..25].copy_from_slice(&words(&r_be));
    // x(R) may be r + n only when r + n < p, i.e. r < p - n (comparing a
    // sum instead would wrap at 2^256: Wycheproof has that case).
    let r_int = U256::from_be_slice(&r_be);
    if r_int < U256::from_be_hex(P_HEX).wrapping_sub(&U256::from_be_hex(N_HEX)) {
        let r_plus_n = r_int.wrapping_add(&U256::from_be_hex(N_HEX));
        w[0] |= FLAG_R_PLUS_N;
        w[25..33].copy_from_slice(&words(&r_plus_n.to_be_bytes().into()));
    }
    let z = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&digest));
    Ok(EcdsaParsed { words: w, rsz: Some((r, s, z)) })
}

fn challenge_hasher() -> &'static Sha256 {
    static H: std::sync::OnceLock<Sha256> = std::sync::OnceLock::new();
    H.get_or_init(|| {
        let tag = Sha256::digest(b"BIP0340/challenge");
        let mut h = Sha256::new();
        h.update(tag);
        h.update(tag);
        h
    })
}

fn encode_schnorr(it: &SigItem) -> Encoded {
    if let Err(r) = it.check_flags() {
        return Encoded::Verdict(r);
    }
    if it.pubkey.len() != 32 {
        return Encoded::Verdict(Reason::PubkeyLength);
    }
    if it.sig.len() != 64 {
        return Encoded::Verdict(Reason::SigLength);
    }
    let x = to32(&it.pubkey);
    if !below(&x, P_HEX) {
        return Encoded::Verdict(Reason::PubkeyEncoding);
    }
    let mut w = Box::new([0u32; GPU_ITEM_WORDS]);
    w[0] = FLAG_X_ONLY | FLAG_BIP340;
    w[1..9].copy_from_slice(&words(&x));
    let (r_be, s_be) = (to32(&it.sig[..32]), to32(&it.sig[32..]));
    // libsecp256k1's schnorrsig_verify: r >= p or s >= n fail (once the key
    // has parsed, which the kernel decides).
    if !below(&r_be, P_HEX) || !below(&s_be, N_HEX) {
        w[0] |= (Reason::BadSignature.code() as u32) << 8;
        return Encoded::Words(w);
    }
    w[17..25].copy_from_slice(&words(&r_be));
    let mut h = challenge_hasher().clone();
    h.update(r_be);
    h.update(x);
    h.update(&it.msg);
    let e = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&h.finalize()));
    let s = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&s_be));
    // R = s G - e P
    if put_double_mult(&s, &-e, &mut w) {
        Encoded::Words(w)
    } else {
        Encoded::Cpu
    }
}

/// What the GPU's BIP340 batch equation (src/gpu/sig/msm) needs of one
/// item, or its verdict when the bytes alone decide it, in libsecp256k1's
/// order: flags, lengths, key x < p (whether x is on the curve, the GPU
/// decides). r ≥ p or s ≥ n make `sig_bad`: a failed signature once the key
/// has decoded (then `r` is a copy of `x` and `s`, `e` are zero).
pub struct Bip340Parts {
    /// Big-endian, as sent.
    pub x: [u8; 32],
    pub r: [u8; 32],
    pub sig_bad: bool,
    pub s: Scalar,
    pub e: Scalar,
}

pub fn bip340_parts(it: &SigItem) -> Result<Bip340Parts, Reason> {
    it.check_flags()?;
    if it.pubkey.len() != 32 {
        return Err(Reason::PubkeyLength);
    }
    if it.sig.len() != 64 {
        return Err(Reason::SigLength);
    }
    let x = to32(&it.pubkey);
    if !below(&x, P_HEX) {
        return Err(Reason::PubkeyEncoding);
    }
    let (r, s_be) = (to32(&it.sig[..32]), to32(&it.sig[32..]));
    if !below(&r, P_HEX) || !below(&s_be, N_HEX) {
        return Ok(Bip340Parts { x, r: x, sig_bad: true, s: Scalar::ZERO, e: Scalar::ZERO });
    }
    let mut h = challenge_hasher().clone();
    h.update(r);
    h.update(x);
    h.update(&it.msg);
    let e = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&h.finalize()));
    let s = <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(&s_be));
    Ok(Bip340Parts { x, r, sig_bad: false, s, e })
}

/// Encodes a batch: ECDSA's 1/s for all items by one inversion
/// (Montgomery's trick), everything else item by item. `out[i]` is for
/// `items[i]`.
pub fn encode_batch(items: &[&SigItem]) -> Vec<Encoded> {
    let mut out = vec![Encoded::Cpu; items.len()];
    let mut ecdsa: Vec<(usize, EcdsaParsed)> = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match it.scheme {
            Scheme::Schnorr => out[i] = encode_schnorr(it),
            Scheme::Ecdsa => match parse_ecdsa(it) {
                Ok(p) if p.rsz.is_none() => out[i] = Encoded::Words(p.words),
                Ok(p) => ecdsa.push((i, p)),
                Err(r) => out[i] = Encoded::Verdict(r),
            },
            _ => {}
        }
    }
    // Prefix products of s, one inversion, then each 1/s from the back.
    let s_of = |p: &EcdsaParsed| p.rsz.map_or(Scalar::ONE, |(_, s, _)| s);
    let mut prefix = Vec::with_capacity(ecdsa.len());
    let mut acc = Scalar::ONE;
    for (_, p) in &ecdsa {
        prefix.push(acc);
        acc *= s_of(p);
    }
    // Every s is nonzero, so the product is invertible.
    let mut inv = acc.invert_vartime().unwrap_or(Scalar::ZERO);
    for ((i, mut p), pre) in ecdsa.into_iter().zip(prefix).rev() {
        let (r, s, z) = p.rsz.expect("kept only with scalars");
        let s_inv = inv * pre;
        inv *= s;
        let (u1, u2) = (z * s_inv, r * s_inv);
        out[i] = if put_double_mult(&u1, &u2, &mut p.words) { Encoded::Words(p.words) } else { Encoded::Cpu };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_hold_the_number() {
        let mut be = [0u8; 32];
        for (i, b) in be.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37) ^ 0xa5;
        }
        let w = words(&be);
        assert_eq!(w[0], u32::from_be_bytes([be[28], be[29], be[30], be[31]]));
        assert_eq!(w[7], u32::from_be_bytes([be[0], be[1], be[2], be[3]]));
        let back: Vec<u8> = w.iter().rev().flat_map(|x| x.to_be_bytes()).collect();
        assert_eq!(back, be);
    }

    #[test]
    fn the_g_table_starts_with_g() {
        let t = g_table();
        assert_eq!(t.len(), 16 * 16);
        let gx = hex::decode("79BE667EF9DCBBAC55A06295CE870B07029BFCDB2DCE28D959F2815B16F81798").unwrap();
        assert_eq!(&t[..8], &words(&to32(&gx)));
    }

    #[test]
    fn byte_level_verdicts_follow_the_cpu_order() {
        let key = [2u8; 33];
        let it = SigItem::new(Scheme::Ecdsa, key.to_vec(), vec![0; 31], vec![0; 64]);
        assert_eq!(encode_batch(&[&it]), vec![Encoded::Verdict(Reason::MsgLength)]);
        let it = SigItem::new(Scheme::Ecdsa, vec![2; 32], vec![0; 32], vec![0; 64]);
        assert_eq!(encode_batch(&[&it]), vec![Encoded::Verdict(Reason::PubkeyLength)]);
        let mut bad_prefix = key;
        bad_prefix[0] = 5;
        let it = SigItem::new(Scheme::Ecdsa, bad_prefix.to_vec(), vec![0; 32], vec![0; 64]);
        assert_eq!(encode_batch(&[&it]), vec![Encoded::Verdict(Reason::PubkeyEncoding)]);
        // A key that may be on the curve with a zero signature: the kernel
        // decides between pubkey_encoding and the host's sig_encoding.
        let it = SigItem::new(Scheme::Ecdsa, key.to_vec(), vec![0; 32], vec![0; 64]);
        match &encode_batch(&[&it])[0] {
            Encoded::Words(w) => assert_eq!(w[0] >> 8, Reason::SigEncoding.code() as u32),
            other => panic!("{other:?}"),
        }
        let it = SigItem::new(Scheme::Schnorr, vec![0xff; 32], vec![], vec![0; 64]);
        assert_eq!(encode_batch(&[&it]), vec![Encoded::Verdict(Reason::PubkeyEncoding)]);
    }
}
