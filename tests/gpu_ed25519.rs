//! The Ed25519 GPU kernel (kernels/ed25519_verify.wgsl) on lavapipe against
//! the CPU path, verdict and reason, item by item: every published vector
//! (RFC 8032, Wycheproof, speccheck under both policies) and thousands of
//! random valid and mutated items, including non-canonical encodings,
//! small-order and mixed-order points and S ≥ ℓ. No trust policy here: these
//! are the kernel's own answers. Every test runs on both field paths (u64
//! products, the default where the adapter has SHADER_INT64, as lavapipe
//! does; and u32 only): the random items in full on the u64 path, every
//! fourth on the u32 one, to keep lavapipe's time modest.
#![cfg(feature = "gpu")]

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::scalar::Scalar;
use hashrig::gpu::kernel::{FieldChoice, FieldPath};
use hashrig::gpu::sig::GpuSigKernels;
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_one, Scheme, SigItem, Verdict};
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha512};

/// The group order l, little-endian.
const L_BYTES: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

const PATHS: [FieldPath; 2] = [FieldPath::U64, FieldPath::U32];

fn gpu(path: FieldPath) -> &'static Mutex<GpuSigKernels> {
    static U64: OnceLock<Mutex<GpuSigKernels>> = OnceLock::new();
    static U32: OnceLock<Mutex<GpuSigKernels>> = OnceLock::new();
    let cell = if path == FieldPath::U64 { &U64 } else { &U32 };
    cell.get_or_init(|| {
        let a = common::first_adapter();
        let k = GpuSigKernels::with_field(&a, FieldChoice::Force(path))
            .unwrap_or_else(|e| panic!("Ed25519 kernel on {}: {e}", a.summary.name));
        assert_eq!(k.field(), path, "{} has no SHADER_INT64: the u64 path cannot be tested", a.summary.name);
        Mutex::new(k)
    })
}

/// The GPU's verdicts must be the CPU's, item by item, on the kernel built
/// with `path`'s field.
fn assert_same_on(path: FieldPath, what: &str, items: &[SigItem]) {
    let (got, _) = gpu(path).lock().unwrap().verify_items(items, Duration::from_secs(600)).expect("GPU dispatch");
    let mut diffs = Vec::new();
    for (i, (it, g)) in items.iter().zip(&got).enumerate() {
        let cpu = verify_one(it);
        if *g != Some(cpu) {
            diffs.push(format!(
                "{what} ({} field) item {i} ({}): gpu {g:?} cpu {cpu:?} pk {} sig {}",
                path.name(),
                it.scheme,
                hex::encode(&it.pubkey),
                hex::encode(&it.sig)
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} differ:\n{}",
        diffs.len(),
        items.len(),
        diffs[..diffs.len().min(20)].join("\n")
    );
}

/// [`assert_same_on`] on both paths.
fn assert_same(what: &str, items: &[SigItem]) {
    for path in PATHS {
        assert_same_on(path, what, items);
    }
}

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn both_policies(items: Vec<SigItem>) -> Vec<SigItem> {
    let mut out = items.clone();
    out.extend(items.into_iter().map(|mut i| {
        i.scheme = Scheme::Ed25519Strict;
        i
    }));
    out
}

#[test]
fn published_vectors() {
    let mut items = Vec::new();
    // speccheck's 12 cases.
    let j: serde_json::Value = serde_json::from_str(&data("speccheck_cases.json")).unwrap();
    for c in j.as_array().unwrap() {
        let h = |k: &str| hex::decode(c[k].as_str().unwrap()).unwrap();
        items.push(SigItem::new(Scheme::Ed25519, h("pub_key"), h("message"), h("signature")));
    }
    assert_eq!(items.len(), 12);
    // Wycheproof's 151 cases.
    let j: serde_json::Value = serde_json::from_str(&data("wycheproof_ed25519_test.json")).unwrap();
    for g in j["testGroups"].as_array().unwrap() {
        let pk = hex::decode(g["publicKey"]["pk"].as_str().unwrap()).unwrap();
        for t in g["tests"].as_array().unwrap() {
            let h = |k: &str| hex::decode(t[k].as_str().unwrap()).unwrap();
            items.push(SigItem::new(Scheme::Ed25519, pk.clone(), h("msg"), h("sig")));
        }
    }
    assert_eq!(items.len(), 12 + 151);
    // RFC 8032 TEST 1 and TEST 2.
    for (pk, msg, sig) in [
        (
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
    ] {
        items.push(SigItem::new(Scheme::Ed25519, hex::decode(pk).unwrap(), hex::decode(msg).unwrap(), hex::decode(sig).unwrap()));
    }
    let items = both_policies(items);
    // The vectors really exercise both answers.
    let valid = items.iter().filter(|i| verify_one(i).is_valid()).count();
    assert!(valid > 50 && valid < items.len() - 50, "{valid} of {} valid", items.len());
    assert_same("published", &items);
}

/// Encodings of y = value (little-endian), sign bit as given.
fn enc(y: &[u8], sign: bool) -> [u8; 32] {
    let mut b = [0u8; 32];
    b[..y.len()].copy_from_slice(y);
    if sign {
        b[31] |= 0x80;
    }
    b
}

/// y + p for small y: non-canonical encodings of the same point.
fn non_canonical(y: u8, sign: bool) -> [u8; 32] {
    let mut b = [0xffu8; 32];
    b[0] = 0xed + y; // p = 2^255 - 19 = ...ffed
    b[31] = 0x7f;
    if sign {
        b[31] |= 0x80;
    }
    b
}

/// Signs `msg` for secret scalar `a` with public key bytes `pk` as given
/// (any encoding) and nonce point R = [r]B + torsion, hashing the bytes as sent.
fn sign_raw(a: Scalar, pk: &[u8; 32], r: Scalar, r_bytes: [u8; 32], msg: &[u8]) -> Vec<u8> {
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(pk);
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut sig = r_bytes.to_vec();
    sig.extend_from_slice(s.as_bytes());
    sig
}

#[test]
fn edge_cases_and_random_mutations() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x9d25519);
    let mut items = Vec::new();
    // Every small-order point, and non-canonical encodings of y in 0..19,
    // as keys and as R, with random S and messages.
    let mut encodings: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().to_bytes()).collect();
    for y in 0..19u8 {
        for sign in [false, true] {
            encodings.push(non_canonical(y, sign));
            encodings.push(enc(&[y], sign));
        }
    }
    for e in &encodings {
        for f in &encodings[..12] {
            let mut sig = f.to_vec();
            sig.extend_from_slice(Scalar::from(rng.random::<u64>()).as_bytes());
            items.push(SigItem::new(Scheme::Ed25519, e.to_vec(), b"m".to_vec(), sig.clone()));
            let mut sig0 = f.to_vec();
            sig0.extend_from_slice(&[0u8; 32]);
            items.push(SigItem::new(Scheme::Ed25519, e.to_vec(), b"".to_vec(), sig0));
        }
    }
    // Valid signatures under mixed-order keys and R (a torsion component
    // that only the cofactored equation forgives), and small-order keys.
    for i in 0..200u64 {
        let a = Scalar::from(rng.random::<u64>()) * Scalar::from(rng.random::<u64>());
        let r = Scalar::from(rng.random::<u64>());
        let ta = EIGHT_TORSION[(i % 8) as usize];
        let tr = EIGHT_TORSION[((i / 8) % 8) as usize];
        let a_pt = ED25519_BASEPOINT_POINT * a + if i % 3 == 0 { ta } else { EIGHT_TORSION[0] };
        let pk = a_pt.compress().to_bytes();
        let r_bytes = (ED25519_BASEPOINT_POINT * r + tr).compress().to_bytes();
        let msg = i.to_le_bytes();
        let sig = sign_raw(a, &pk, r, r_bytes, &msg);
        items.push(SigItem::new(Scheme::Ed25519, pk.to_vec(), msg.to_vec(), sig.clone()));
        let mut bad = sig;
        bad[40] ^= 1;
        items.push(SigItem::new(Scheme::Ed25519, pk.to_vec(), msg.to_vec(), bad));
    }
    // Thousands of random valid items and their mutations: bit flips, S
    // pushed over l, random bytes in a field.
    for i in 0..1500u64 {
        let it = valid_item(Scheme::Ed25519, i);
        items.push(match i % 5 {
            0 | 1 => it,
            2 => mutate(&it, rng.next_u64()),
            3 => {
                let mut m = it;
                if rng.random_bool(0.5) {
                    m.sig[63] |= 0x10 << rng.random_range(0..4);
                } else {
                    let s = Scalar::from_bytes_mod_order(m.sig[32..].try_into().unwrap());
                    // S + l: same residue, not reduced.
                    let mut wide = [0u8; 33];
                    let mut carry = 0u16;
                    let l = L_BYTES;
                    for j in 0..32 {
                        let v = s.as_bytes()[j] as u16 + l[j] as u16 + carry;
                        wide[j] = v as u8;
                        carry = v >> 8;
                    }
                    m.sig[32..].copy_from_slice(&wide[..32]);
                }
                m
            }
            _ => {
                let mut m = it;
                let f = match rng.random_range(0..3) {
                    0 => &mut m.pubkey,
                    1 => &mut m.sig,
                    _ => &mut m.msg,
                };
                rng.fill_bytes(f);
                m
            }
        });
    }
    let items = both_policies(items);
    let valid = items.iter().filter(|i| verify_one(i).is_valid()).count();
    assert!(valid > 1000, "only {valid} valid items: the mix lost its valid half");
    assert_same_on(FieldPath::U64, "edge and random", &items);
    let quarter: Vec<SigItem> = items.iter().step_by(4).cloned().collect();
    assert_same_on(FieldPath::U32, "edge and random (every fourth)", &quarter);
}

#[test]
fn empty_and_single_dispatches() {
    let it = valid_item(Scheme::Ed25519, 7);
    assert_same("single", std::slice::from_ref(&it));
    for path in PATHS {
        let (got, _) = gpu(path).lock().unwrap().verify_items(&[], Duration::from_secs(60)).unwrap();
        assert!(got.is_empty());
        // An ECDSA item beside it goes to the secp256k1 kernel, in the same call.
        let e = valid_item(Scheme::Ecdsa, 1);
        let (got, _) = gpu(path).lock().unwrap().verify_items(&[e, it.clone()], Duration::from_secs(60)).unwrap();
        assert_eq!(got, vec![Some(Verdict::Valid), Some(Verdict::Valid)]);
    }
}
