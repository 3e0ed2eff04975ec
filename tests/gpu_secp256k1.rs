//! The secp256k1 GPU kernel (kernels/secp256k1_verify.wgsl: ECDSA and
//! BIP340) on lavapipe against the CPU path (libsecp256k1), verdict and
//! reason, item by item: the BIP340 vectors, all three Wycheproof ECDSA
//! files (with and without allow_high_s), and thousands of seeded random
//! valid and mutated items from tests/secp_items (high S with and without
//! the flag, r or s = 0 or >= n, keys off the curve, hybrid keys, non-DER
//! encodings, BIP340 with x >= p, r >= p and odd-y R). No trust policy
//! here: these are the kernel's own answers. Every test runs on both field
//! paths (u64 products, the default where the adapter has SHADER_INT64, as
//! lavapipe does; and u32 only): the random items in full on the u64 path,
//! a subset on the u32 one, to keep lavapipe's time modest.
#![cfg(feature = "gpu")]

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hashrig::gpu::kernel::{FieldChoice, FieldPath};
use hashrig::gpu::sig::GpuSigKernels;
use hashrig::sig::{verify_one, Reason, Scheme, SigItem, Verdict, FLAG_ALLOW_HIGH_S};
use rand::rngs::StdRng;
use rand::SeedableRng;
use sha2::{Digest, Sha256};

mod secp_items;

const PATHS: [FieldPath; 2] = [FieldPath::U64, FieldPath::U32];

fn gpu(path: FieldPath) -> &'static Mutex<GpuSigKernels> {
    static U64: OnceLock<Mutex<GpuSigKernels>> = OnceLock::new();
    static U32: OnceLock<Mutex<GpuSigKernels>> = OnceLock::new();
    let cell = if path == FieldPath::U64 { &U64 } else { &U32 };
    cell.get_or_init(|| {
        let a = common::first_adapter();
        let k = GpuSigKernels::with_field(&a, FieldChoice::Force(path))
            .unwrap_or_else(|e| panic!("signature kernels on {}: {e}", a.summary.name));
        assert_eq!(k.field(), path, "{} has no SHADER_INT64: the u64 path cannot be tested", a.summary.name);
        Mutex::new(k)
    })
}

/// The GPU's verdicts must be the CPU's, item by item, on the kernel built
/// with `path`'s field. Returns the CPU's.
fn assert_same_on(path: FieldPath, what: &str, items: &[SigItem]) -> Vec<Verdict> {
    let (got, _) = gpu(path).lock().unwrap().verify_items(items, Duration::from_secs(600)).expect("GPU dispatch");
    let mut diffs = Vec::new();
    let mut cpu_all = Vec::new();
    for (i, (it, g)) in items.iter().zip(&got).enumerate() {
        let cpu = verify_one(it);
        cpu_all.push(cpu);
        if *g != Some(cpu) {
            diffs.push(format!(
                "{what} ({} field) item {i} ({}, flags {}): gpu {g:?} cpu {cpu:?} pk {} msg {} sig {}",
                path.name(),
                it.scheme,
                it.flags,
                hex::encode(&it.pubkey),
                hex::encode(&it.msg),
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
    cpu_all
}

/// [`assert_same_on`] on both paths; the CPU's verdicts.
fn assert_same(what: &str, items: &[SigItem]) -> Vec<Verdict> {
    let v = assert_same_on(PATHS[0], what, items);
    assert_same_on(PATHS[1], what, items);
    v
}

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn bip340_vectors() {
    let csv = data("bip340_test_vectors.csv");
    let items: Vec<SigItem> = csv
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            SigItem::new(Scheme::Schnorr, unhex(f[2]), unhex(f[4]), unhex(f[5]))
        })
        .collect();
    assert_eq!(items.len(), 19);
    let v = assert_same("bip340", &items);
    assert!(v.iter().filter(|v| v.is_valid()).count() >= 5);
    assert!(v.contains(&Verdict::Invalid(Reason::PubkeyEncoding)));
}

fn wycheproof(file: &str) -> Vec<SigItem> {
    let j: serde_json::Value = serde_json::from_str(&data(file)).unwrap();
    let mut out = Vec::new();
    for g in j["testGroups"].as_array().unwrap() {
        let key = unhex(g["publicKey"]["uncompressed"].as_str().unwrap());
        for t in g["tests"].as_array().unwrap() {
            let digest = Sha256::digest(unhex(t["msg"].as_str().unwrap())).to_vec();
            out.push(SigItem::new(Scheme::Ecdsa, key.clone(), digest, unhex(t["sig"].as_str().unwrap())));
        }
    }
    out
}

#[test]
fn wycheproof_ecdsa_all_three_files() {
    for file in [
        "wycheproof_ecdsa_secp256k1_sha256_bitcoin_test.json",
        "wycheproof_ecdsa_secp256k1_sha256_test.json",
        "wycheproof_ecdsa_secp256k1_sha256_p1363_test.json",
    ] {
        let items = wycheproof(file);
        assert!(items.len() > 200, "{file}: {} cases", items.len());
        // Default rules, then Bitcoin consensus (high S allowed).
        let mut both = items.clone();
        both.extend(items.into_iter().map(SigItem::allow_high_s));
        let v = assert_same(file, &both);
        let valid = v.iter().filter(|v| v.is_valid()).count();
        assert!(valid > 100 && valid < v.len() - 100, "{file}: {valid} of {} valid", v.len());
    }
}

#[test]
fn random_and_mutated_ecdsa() {
    let mut rng = StdRng::seed_from_u64(0x6770_7573_6563);
    let items: Vec<SigItem> = secp_items::ecdsa_items(&mut rng, 1500).into_iter().map(|(it, _)| it).collect();
    let v = assert_same_on(FieldPath::U64, "ecdsa", &items);
    assert_same_on(FieldPath::U32, "ecdsa", &items[..500]);
    let valid = v.iter().filter(|v| v.is_valid()).count();
    let high_s = v.iter().filter(|v| **v == Verdict::Invalid(Reason::HighS)).count();
    let allowed = items.iter().filter(|i| i.flags & FLAG_ALLOW_HIGH_S != 0).count();
    eprintln!("ecdsa: {} items, {valid} valid, {high_s} high_s, {allowed} with allow_high_s", items.len());
    assert!(valid >= 300 && items.len() - valid >= 500 && high_s >= 20 && allowed >= 50);
    for r in [Reason::PubkeyEncoding, Reason::SigEncoding, Reason::BadSignature, Reason::MsgLength] {
        assert!(v.contains(&Verdict::Invalid(r)), "no {r} among the random items");
    }
}

#[test]
fn random_and_mutated_schnorr() {
    let mut rng = StdRng::seed_from_u64(0x6770_7573_6368);
    let items: Vec<SigItem> = secp_items::schnorr_items(&mut rng, 2000).into_iter().map(|(it, _)| it).collect();
    let v = assert_same_on(FieldPath::U64, "schnorr", &items);
    assert_same_on(FieldPath::U32, "schnorr", &items[..500]);
    let valid = v.iter().filter(|v| v.is_valid()).count();
    eprintln!("schnorr: {} items, {valid} valid", items.len());
    assert!(valid >= 100 && items.len() - valid >= 300);
    assert!(v.contains(&Verdict::Invalid(Reason::PubkeyEncoding)));
}

#[test]
fn mixed_batch_with_ed25519_and_empty() {
    for path in PATHS {
        let (got, _) = gpu(path).lock().unwrap().verify_items(&[], Duration::from_secs(60)).unwrap();
        assert!(got.is_empty());
    }
    let mut items = Vec::new();
    for i in 0..24 {
        let scheme = [Scheme::Ed25519, Scheme::Ecdsa, Scheme::Schnorr, Scheme::Ed25519Strict][i % 4];
        let v = hashrig::sig::demo::valid_item(scheme, 0x5ec0 + i as u64);
        items.push(hashrig::sig::demo::mutate(&v, i as u64));
        items.push(v);
    }
    let v = assert_same("mixed", &items);
    assert_eq!(v.iter().filter(|v| v.is_valid()).count(), 24);
    // Both kernels' items in one submission: a mixed batch pays one fixed
    // latency, not one per kernel.
    let dev = gpu(PATHS[0]).lock().unwrap();
    let before = dev.submissions();
    dev.verify_items(&items, Duration::from_secs(60)).unwrap();
    assert_eq!(dev.submissions() - before, 1);
}

/// BIP340 signatures built by hand so that R = s G - e P has an odd y (and
/// x(R) = r): only the kernel's even-y check can reject them. Beside them
/// the same with the even R, which must verify.
#[test]
fn bip340_odd_y_r() {
    use k256::elliptic_curve::ops::Reduce;
    use k256::{Scalar, U256};
    // x(k G) and whether its y is odd, from libsecp256k1.
    let xy = |k: Scalar| {
        let sk = secp256k1::SecretKey::from_secret_bytes(k.to_bytes().into()).unwrap();
        let e = secp256k1::PublicKey::from_secret_key(&sk).serialize_uncompressed();
        (e[1..33].to_vec(), e[64] & 1 == 1)
    };
    let scalar = |b: &[u8]| <Scalar as Reduce<U256>>::reduce(&U256::from_be_slice(b));
    let tag = Sha256::digest(b"BIP0340/challenge");
    let mut items = Vec::new();
    for i in 1..=40u64 {
        let mut d = scalar(&Sha256::digest(i.to_be_bytes()));
        let (px, p_odd) = xy(d);
        if p_odd {
            d = -d;
        }
        let mut k = scalar(&Sha256::digest((i + 1000).to_be_bytes()));
        let (rx, r_odd) = xy(k);
        let msg = format!("odd R {i}").into_bytes();
        let e = scalar(
            &Sha256::new()
                .chain_update(tag)
                .chain_update(tag)
                .chain_update(&rx)
                .chain_update(&px)
                .chain_update(&msg)
                .finalize(),
        );
        // k with an odd y of kG (-k has the same x and the even y).
        if !r_odd {
            k = -k;
        }
        for k in [k, -k] {
            let sig = [rx.clone(), (k + e * d).to_bytes().to_vec()].concat();
            items.push(SigItem::new(Scheme::Schnorr, px.clone(), msg.clone(), sig));
        }
    }
    let v = assert_same("bip340 odd R", &items);
    for pair in v.chunks(2) {
        assert_eq!(pair, [Verdict::Invalid(Reason::BadSignature), Verdict::Valid]);
    }
}
