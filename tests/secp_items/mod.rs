//! Seeded random secp256k1 items, valid and mutated in every way the
//! differential tests need, with labels, and the expected verdict of each
//! from the documented rules and k256 (never from hashrig's parsers). Shared
//! by tests/sig_differential_secp.rs (the CPU path) and
//! tests/gpu_secp256k1.rs (the GPU kernel).
#![allow(dead_code)]

use hashrig::sig::{Reason, Scheme, SigItem, Verdict, FLAG_ALLOW_HIGH_S};
use k256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use rand::rngs::StdRng;
use rand::{Rng, RngCore};

/// Group order n.
pub const N: [u8; 32] = h32("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141");
/// Field prime p.
pub const P: [u8; 32] = h32("fffffffffffffffffffffffffffffffffffffffffffffffffffffffefffffc2f");

pub const fn h32(s: &str) -> [u8; 32] {
    const fn nib(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            _ => c - b'a' + 10,
        }
    }
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut i = 0;
    while i < 32 {
        out[i] = nib(b[2 * i]) << 4 | nib(b[2 * i + 1]);
        i += 1;
    }
    out
}

// ---------------------------------------------------------------- 256-bit helpers

pub fn sub(a: &[u8; 32], b: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = a[i] as i16 - b[i] as i16 - borrow;
        out[i] = d.rem_euclid(256) as u8;
        borrow = (d < 0) as i16;
    }
    out
}

pub fn add_small(a: &[u8; 32], k: u8) -> [u8; 32] {
    let mut out = *a;
    let mut carry = k as u16;
    for i in (0..32).rev() {
        let v = out[i] as u16 + carry;
        out[i] = v as u8;
        carry = v >> 8;
    }
    out
}

pub fn half_n() -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut carry = 0u8;
    for i in 0..32 {
        out[i] = (N[i] >> 1) | (carry << 7);
        carry = N[i] & 1;
    }
    out
}

pub fn is_zero(x: &[u8; 32]) -> bool {
    x.iter().all(|&b| b == 0)
}

/// A big-endian unsigned integer of any length as 32 bytes, None if ≥ 2^256.
pub fn to32(v: &[u8]) -> Option<[u8; 32]> {
    let first = v.iter().position(|&b| b != 0).unwrap_or(v.len());
    let v = &v[first..];
    if v.len() > 32 {
        return None;
    }
    let mut out = [0u8; 32];
    out[32 - v.len()..].copy_from_slice(v);
    Some(out)
}

/// r or s in [1, n−1].
pub fn scalar_in_range(x: &[u8; 32]) -> bool {
    !is_zero(x) && *x < N
}

// ---------------------------------------------------------------- BIP66 and DER

/// BIP66 `IsValidSignatureEncoding` for a signature without the sighash
/// byte: `0x30 len 0x02 lenR R 0x02 lenS S`, nothing after, at most 72
/// bytes (73 with the sighash byte); single-byte lengths; each integer
/// non-empty, not negative, and without a zero byte that is not needed.
/// Returns the two integers' content bytes.
pub fn bip66(sig: &[u8]) -> Option<(&[u8], &[u8])> {
    if sig.len() < 8 || sig.len() > 72 {
        return None;
    }
    let (&tag, rest) = sig.split_first()?;
    let (&len, body) = rest.split_first()?;
    if tag != 0x30 || len as usize != body.len() {
        return None;
    }
    fn integer(b: &[u8]) -> Option<(&[u8], &[u8])> {
        let (&tag, b) = b.split_first()?;
        let (&len, b) = b.split_first()?;
        let len = len as usize;
        if tag != 0x02 || len == 0 || len >= 0x80 || len > b.len() {
            return None;
        }
        let (v, rest) = b.split_at(len);
        if v[0] & 0x80 != 0 {
            return None; // negative
        }
        if len > 1 && v[0] == 0 && v[1] & 0x80 == 0 {
            return None; // zero byte not needed
        }
        Some((v, rest))
    }
    let (r, body) = integer(body)?;
    let (s, body) = integer(body)?;
    if !body.is_empty() {
        return None;
    }
    Some((r, s))
}

/// Minimal positive DER integer content for a 32-byte big-endian value.
pub fn der_content(x: &[u8; 32]) -> Vec<u8> {
    let first = x.iter().position(|&b| b != 0).unwrap_or(31);
    let mut v = x[first..].to_vec();
    if v[0] & 0x80 != 0 {
        v.insert(0, 0);
    }
    v
}

pub fn der_from_contents(r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut out = vec![0x30, (4 + r.len() + s.len()) as u8, 0x02, r.len() as u8];
    out.extend_from_slice(r);
    out.extend_from_slice(&[0x02, s.len() as u8]);
    out.extend_from_slice(s);
    out
}

pub fn der(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    der_from_contents(&der_content(r), &der_content(s))
}

// ---------------------------------------------------------------- expected verdicts

/// The key as k256 sees it, under libsecp256k1's `ec_pubkey_parse` rules
/// (the documented ones): 33 bytes 02/03, 65 bytes 04, or hybrid 06/07 whose
/// low bit must match y's parity.
pub fn k256_ecdsa_key(pk: &[u8]) -> Result<k256::ecdsa::VerifyingKey, Reason> {
    let bad = Reason::PubkeyEncoding;
    match pk.len() {
        33 if matches!(pk[0], 2 | 3) => k256::ecdsa::VerifyingKey::from_sec1_bytes(pk).map_err(|_| bad),
        65 if pk[0] == 4 => k256::ecdsa::VerifyingKey::from_sec1_bytes(pk).map_err(|_| bad),
        65 if matches!(pk[0], 6 | 7) => {
            if pk[64] & 1 != pk[0] & 1 {
                return Err(bad);
            }
            let mut u = pk.to_vec();
            u[0] = 4;
            k256::ecdsa::VerifyingKey::from_sec1_bytes(&u).map_err(|_| bad)
        }
        33 | 65 => Err(bad),
        _ => Err(Reason::PubkeyLength),
    }
}

/// Expected ECDSA verdict. For a strict-DER signature whose r or s is 0 or
/// ≥ n, the documented reason is not pinned down (sig_encoding is
/// documented for r‖s only), so there `alt` lists the reasons accepted
/// besides the returned one.
pub fn expect_ecdsa(it: &SigItem) -> (Verdict, &'static [Reason]) {
    let inv = |r| (Verdict::Invalid(r), &[][..]);
    if it.flags & !FLAG_ALLOW_HIGH_S != 0 {
        return inv(Reason::BadFlags);
    }
    let allow_high = it.flags & FLAG_ALLOW_HIGH_S != 0;
    if it.msg.len() != 32 {
        return inv(Reason::MsgLength);
    }
    let vk = match k256_ecdsa_key(&it.pubkey) {
        Ok(k) => k,
        Err(r) => return inv(r),
    };
    let (r, s, is_der) = if it.sig.len() == 64 {
        // A 64-byte signature is r‖s, even if it happens to look like DER.
        (to32(&it.sig[..32]).unwrap(), to32(&it.sig[32..]).unwrap(), false)
    } else if it.sig.first() == Some(&0x30) {
        let Some((r, s)) = bip66(&it.sig) else { return inv(Reason::SigEncoding) };
        let big = [0xffu8; 32]; // stands for any value ≥ 2^256: out of range as well
        (to32(r).unwrap_or(big), to32(s).unwrap_or(big), true)
    } else {
        return inv(Reason::SigLength);
    };
    if !scalar_in_range(&r) || !scalar_in_range(&s) {
        if is_der {
            return (Verdict::Invalid(Reason::BadSignature), &[Reason::SigEncoding, Reason::HighS]);
        }
        return inv(Reason::SigEncoding);
    }
    let low = s <= half_n();
    let s_norm = if low { s } else { sub(&N, &s) };
    let k_sig = |s: [u8; 32]| k256::ecdsa::Signature::from_scalars(r, s).expect("r, s in range");
    let ok_norm = vk.verify_prehash(&it.msg, &k_sig(s_norm)).is_ok();
    // k256 enforces low S on its own: "k256 accepts" = "S low and the
    // normalised signature verifies".
    let ok_direct = vk.verify_prehash(&it.msg, &k_sig(s)).is_ok();
    assert_eq!(ok_direct, low && ok_norm, "k256 low-S rule, item {it:?}");
    if !low && !allow_high {
        return inv(Reason::HighS);
    }
    if ok_norm {
        (Verdict::Valid, &[])
    } else {
        inv(Reason::BadSignature)
    }
}

pub fn expect_schnorr(it: &SigItem) -> Verdict {
    let inv = Verdict::Invalid;
    if it.flags != 0 {
        return inv(Reason::BadFlags);
    }
    if it.pubkey.len() != 32 {
        return inv(Reason::PubkeyLength);
    }
    if it.sig.len() != 64 {
        return inv(Reason::SigLength);
    }
    let Ok(vk) = k256::schnorr::VerifyingKey::from_slice(&it.pubkey) else { return inv(Reason::PubkeyEncoding) };
    let ok = k256::schnorr::Signature::from_slice(&it.sig).is_ok_and(|sig| vk.verify_raw(&it.msg, &sig).is_ok());
    if ok {
        Verdict::Valid
    } else {
        inv(Reason::BadSignature)
    }
}

// ---------------------------------------------------------------- generation

pub fn secret(rng: &mut StdRng) -> [u8; 32] {
    loop {
        let mut sk = [0u8; 32];
        rng.fill_bytes(&mut sk);
        if scalar_in_range(&sk) {
            return sk;
        }
    }
}

pub fn flip_bit(rng: &mut StdRng, v: &mut Vec<u8>) {
    if v.is_empty() {
        v.push(rng.random());
    } else {
        let i = rng.random_range(0..v.len() * 8);
        v[i / 8] ^= 1 << (i % 8);
    }
}

/// A value ≥ n: n, n + small, p, or all ones.
pub fn over_n(rng: &mut StdRng) -> [u8; 32] {
    match rng.random_range(0..4) {
        0 => N,
        1 => add_small(&N, rng.random_range(1..=200)),
        2 => P,
        _ => [0xff; 32],
    }
}

/// One valid ECDSA signature and its key in both SEC1 forms, made by k256
/// (`by_k256`) or by libsecp256k1.
pub struct EcdsaBase {
    pub compressed: Vec<u8>,
    pub uncompressed: Vec<u8>,
    pub digest: [u8; 32],
    pub r: [u8; 32],
    pub s: [u8; 32],
    /// The signing library's own DER output.
    pub lib_der: Vec<u8>,
}

pub fn ecdsa_base(rng: &mut StdRng, by_k256: bool) -> EcdsaBase {
    let sk = secret(rng);
    let mut digest = [0u8; 32];
    rng.fill_bytes(&mut digest);
    if by_k256 {
        let key = k256::ecdsa::SigningKey::from_bytes(&sk.into()).unwrap();
        let sig: k256::ecdsa::Signature = key.sign_prehash(&digest).unwrap();
        let (r, s) = sig.split_bytes();
        let vk = key.verifying_key();
        EcdsaBase {
            compressed: vk.to_sec1_point(true).as_bytes().to_vec(),
            uncompressed: vk.to_sec1_point(false).as_bytes().to_vec(),
            digest,
            r: r.into(),
            s: s.into(),
            lib_der: sig.to_der().as_bytes().to_vec(),
        }
    } else {
        let key = secp256k1::SecretKey::from_secret_bytes(sk).unwrap();
        let sig = secp256k1::ecdsa::sign(secp256k1::Message::from_digest(digest), &key);
        let c = sig.serialize_compact();
        let pk = secp256k1::PublicKey::from_secret_key(&key);
        EcdsaBase {
            compressed: pk.serialize().to_vec(),
            uncompressed: pk.serialize_uncompressed().to_vec(),
            digest,
            r: c[..32].try_into().unwrap(),
            s: c[32..].try_into().unwrap(),
            lib_der: sig.serialize_der().to_vec(),
        }
    }
}

/// A broken DER encoding of (r, s); returns it and a label.
pub fn der_mutation(rng: &mut StdRng, r: &[u8; 32], s: &[u8; 32]) -> (Vec<u8>, &'static str) {
    let (mut cr, mut cs) = (der_content(r), der_content(s));
    let good = der_from_contents(&cr, &cs);
    match rng.random_range(0..14) {
        0 => {
            let mut d = good;
            let cut = rng.random_range(1..d.len());
            d.truncate(d.len() - cut);
            (d, "der_truncated")
        }
        1 => {
            let mut d = good;
            d.push(if rng.random_bool(0.5) { 0x01 } else { rng.random() });
            (d, "der_trailing_byte")
        }
        2 => {
            let mut d = good;
            let extra = rng.random_range(2..6);
            for _ in 0..extra {
                d.push(rng.random());
            }
            d[1] = d[1].wrapping_add(extra as u8); // outer length covers them
            (d, "der_extended")
        }
        3 => {
            let mut d = good;
            d[1] = if rng.random_bool(0.5) { d[1] + 1 } else { d[1] - 1 };
            (d, "der_outer_length")
        }
        4 => {
            let mut d = good;
            d.insert(1, 0x81); // long form where the short one fits
            (d, "der_nonminimal_length")
        }
        5 => {
            let mut d = vec![0x30, 0, 0x02, 0x81, cr.len() as u8];
            d.extend_from_slice(&cr);
            d.extend_from_slice(&[0x02, cs.len() as u8]);
            d.extend_from_slice(&cs);
            d[1] = (d.len() - 2) as u8;
            (d, "der_nonminimal_int_length")
        }
        6 | 7 => {
            let c = if rng.random_bool(0.5) { &mut cr } else { &mut cs };
            if c[0] == 0 && c.len() > 1 {
                c.remove(0); // drop the sign byte: now negative
            } else {
                c[0] |= 0x80;
            }
            (der_from_contents(&cr, &cs), "der_negative")
        }
        8 => {
            let c = if rng.random_bool(0.5) { &mut cr } else { &mut cs };
            c.insert(0, 0); // zero byte not needed
            (der_from_contents(&cr, &cs), "der_padded")
        }
        9 => {
            let mut d = good;
            let at = if rng.random_bool(0.5) { 0 } else { 2 };
            d[at] = [0x31, 0x03, 0x20, 0x04][rng.random_range(0..4)];
            (d, "der_tag")
        }
        10 => {
            let d = if rng.random_bool(0.5) { der_from_contents(&[], &cs) } else { der_from_contents(&cr, &[]) };
            (d, "der_empty_int")
        }
        11 => {
            let mut d = good;
            d[3] = d[3].wrapping_add(if rng.random_bool(0.5) { 1 } else { 0xff });
            (d, "der_r_length")
        }
        12 => {
            // Strict in shape, but over 72 bytes: r ≥ 2^264.
            let mut big = vec![0x01; 35];
            big[1..].copy_from_slice(&[0x5a; 34]);
            (der_from_contents(&big, &cs), "der_too_long")
        }
        _ => {
            let mut d = vec![0u8; rng.random_range(2..80)];
            rng.fill_bytes(&mut d);
            d[0] = 0x30;
            (d, "der_garbage")
        }
    }
}

/// ECDSA items (with and without `allow_high_s`) and their labels.
pub fn ecdsa_items(rng: &mut StdRng, n: usize) -> Vec<(SigItem, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let by_k256 = i % 2 == 0;
        let b = ecdsa_base(rng, by_k256);
        let use_der = rng.random_bool(0.5);
        let compact = |r: &[u8; 32], s: &[u8; 32]| [&r[..], &s[..]].concat();
        let enc = |r: &[u8; 32], s: &[u8; 32], der_form: bool| if der_form { der(r, s) } else { compact(r, s) };
        let pk = if rng.random_bool(0.5) { b.compressed.clone() } else { b.uncompressed.clone() };
        let sig = if use_der { b.lib_der.clone() } else { compact(&b.r, &b.s) };
        assert!(b.s <= half_n(), "signers produce low S");
        assert_eq!(b.lib_der, der(&b.r, &b.s), "the signer's DER is ours");
        let mut it = SigItem::new(Scheme::Ecdsa, pk, b.digest, sig);
        let form = if use_der { "der" } else { "rs" };
        let label: String = match (i / 2) % 15 {
            0..=2 => format!("valid_{form}"),
            3 => {
                it.sig = enc(&b.r, &sub(&N, &b.s), use_der);
                format!("high_s_{form}")
            }
            4 => {
                flip_bit(rng, &mut it.msg);
                "flip_msg".into()
            }
            5 => {
                flip_bit(rng, &mut it.sig);
                format!("flip_sig_{form}")
            }
            6 => {
                flip_bit(rng, &mut it.pubkey);
                "flip_pubkey".into()
            }
            7 => {
                it.sig = enc(&b.s, &b.r, use_der);
                format!("swap_rs_{form}")
            }
            8 => {
                let (r, s) = if rng.random_bool(0.5) { ([0; 32], b.s) } else { (b.r, [0; 32]) };
                it.sig = enc(&r, &s, use_der);
                format!("zero_{form}")
            }
            9 => {
                let (r, s) = if rng.random_bool(0.5) { (over_n(rng), b.s) } else { (b.r, over_n(rng)) };
                it.sig = enc(&r, &s, use_der);
                format!("over_n_{form}")
            }
            10 | 11 => {
                let (d, l) = der_mutation(rng, &b.r, &b.s);
                it.sig = d;
                l.into()
            }
            12 => {
                // Key forms: the other SEC1 form (valid), hybrid with the
                // right or wrong parity, a bad prefix, x not on the curve,
                // wrong lengths.
                let y_odd = b.uncompressed[64] & 1;
                match rng.random_range(0..6) {
                    0 => {
                        it.pubkey = if it.pubkey.len() == 33 { b.uncompressed.clone() } else { b.compressed.clone() };
                        "key_other_form".into()
                    }
                    1 => {
                        it.pubkey = b.uncompressed.clone();
                        it.pubkey[0] = 6 | y_odd;
                        "key_hybrid".into()
                    }
                    2 => {
                        it.pubkey = b.uncompressed.clone();
                        it.pubkey[0] = 6 | (y_odd ^ 1);
                        "key_hybrid_wrong_parity".into()
                    }
                    3 => {
                        // The other form's prefix for this length, or one no form has.
                        let other = if it.pubkey.len() == 33 { 0x04 } else { 0x02 };
                        it.pubkey[0] = [0x00, 0x01, 0x05, 0x08, other][rng.random_range(0..5)];
                        "key_bad_prefix".into()
                    }
                    4 => {
                        it.pubkey = b.compressed.clone();
                        rng.fill_bytes(&mut it.pubkey[1..]);
                        "key_random_x".into()
                    }
                    _ => {
                        let n = [0, 32, 34, 64, 66][rng.random_range(0..5)];
                        it.pubkey.resize(n, 0);
                        "key_length".into()
                    }
                }
            }
            13 => {
                let n = [0, 31, 33, 64][rng.random_range(0..4)];
                it.msg.resize(n, 0);
                "msg_length".into()
            }
            _ => {
                if rng.random_bool(0.5) {
                    it.flags = [0x02, 0x80, 0x03][rng.random_range(0..3)];
                    "unknown_flags".into()
                } else {
                    let mut g = vec![0u8; [0, 1, 63, 65, 71][rng.random_range(0..5)]];
                    rng.fill_bytes(&mut g);
                    if g.first() == Some(&0x30) {
                        g[0] = 0x31;
                    }
                    it.sig = g;
                    "sig_length".into()
                }
            }
        };
        let by = if by_k256 { "k256" } else { "secp" };
        let allow = it.clone().allow_high_s();
        out.push((it, format!("{label}/{by}")));
        out.push((allow, format!("{label}/{by}/allow_high_s")));
    }
    out
}

pub fn schnorr_items(rng: &mut StdRng, n: usize) -> Vec<(SigItem, String)> {
    let mut out = Vec::new();
    for i in 0..n {
        let by_k256 = i % 2 == 0;
        let sk = secret(rng);
        let mut aux = [0u8; 32];
        rng.fill_bytes(&mut aux);
        let len = match rng.random_range(0..8) {
            0 => 0,
            1 => 32,
            2 => 100,
            3 => 1,
            4 => 33,
            _ => rng.random_range(0..200),
        };
        let mut msg = vec![0u8; len];
        rng.fill_bytes(&mut msg);
        let (pk, sig): ([u8; 32], [u8; 64]) = if by_k256 {
            let key = k256::schnorr::SigningKey::from_bytes(&sk.into()).unwrap();
            // `sign_raw` is BIP340 over the message as given (any length).
            let sig = key.sign_raw(&msg, &aux).unwrap();
            (key.verifying_key().to_bytes().into(), sig.to_bytes())
        } else {
            let kp = secp256k1::Keypair::from_secret_bytes(sk).unwrap();
            let sig = secp256k1::schnorr::sign_with_aux_rand(&msg, &kp, &aux);
            (secp256k1::XOnlyPublicKey::from_keypair(&kp).0.to_byte_array(), sig.to_byte_array())
        };
        let mut it = SigItem::new(Scheme::Schnorr, pk, msg, sig);
        let r: [u8; 32] = sig[..32].try_into().unwrap();
        let s: [u8; 32] = sig[32..].try_into().unwrap();
        let label: String = match (i / 2) % 12 {
            0..=2 => format!("valid_len{}", if matches!(len, 0 | 32 | 100) { len.to_string() } else { "other".into() }),
            3 => {
                flip_bit(rng, &mut it.msg);
                "flip_msg".into()
            }
            4 => {
                flip_bit(rng, &mut it.sig);
                "flip_sig".into()
            }
            5 => {
                flip_bit(rng, &mut it.pubkey);
                "flip_pubkey".into()
            }
            6 => {
                if it.msg.is_empty() || rng.random_bool(0.5) {
                    it.msg.push(0);
                } else {
                    it.msg.pop();
                }
                "msg_length_changed".into()
            }
            7 => {
                let s2 = match rng.random_range(0..4) {
                    0 => [0u8; 32],
                    1 => sub(&N, &s),
                    _ => over_n(rng),
                };
                it.sig[32..].copy_from_slice(&s2);
                "bad_s".into()
            }
            8 => {
                let r2 = match rng.random_range(0..3) {
                    0 => [0u8; 32],
                    1 => add_small(&P, rng.random_range(0..=200)),
                    _ => [0xff; 32],
                };
                it.sig[..32].copy_from_slice(&r2);
                "bad_r".into()
            }
            9 => {
                match rng.random_range(0..3) {
                    0 => rng.fill_bytes(&mut it.pubkey), // about half are not an x coordinate
                    1 => it.pubkey = add_small(&P, rng.random_range(0..=200)).to_vec(),
                    _ => it.pubkey = [0xff; 32].to_vec(),
                }
                "bad_xonly_key".into()
            }
            10 => {
                it.sig = [&s[..], &r[..]].concat();
                "swap_rs".into()
            }
            _ => match rng.random_range(0..4) {
                0 => {
                    it.pubkey.insert(0, 2);
                    "key_length".into()
                }
                1 => {
                    let n = [0, 63, 65, 72][rng.random_range(0..4)];
                    it.sig.resize(n, 0);
                    "sig_length".into()
                }
                _ => {
                    it.flags = [0x01, 0x02, 0x80][rng.random_range(0..3)];
                    "flags".into()
                }
            },
        };
        let by = if by_k256 { "k256" } else { "secp" };
        out.push((it, format!("{label}/{by}")));
    }
    out
}

// ---------------------------------------------------------------- the tests
