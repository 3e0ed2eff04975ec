//! The Ed25519 batch equation on the GPU (kernels/ed25519_msm.wgsl through
//! `hashrig::gpu::sig::GpuMsm`) on lavapipe against the CPU path's single
//! verification, item by item, verdict and reason: batches of 1, 2, 7, 33
//! and 64 items with none, one, a few and all invalid, under ZIP-215 and
//! strict, drawn from the published vectors (RFC 8032, Wycheproof,
//! speccheck), random valid items and their mutations, and hand-made edge
//! cases (small-order and mixed-order points, non-canonical encodings,
//! S ≥ ℓ). Besides the final verdicts, the equation itself must answer as
//! the CPU predicts: it holds exactly when no item that reaches it has a
//! bad signature (so the per-item fallback, the CPU here, is not what
//! makes the verdicts right), and items the decoder rejects (strict
//! small-order points among them) are named by the GPU and dropped before
//! a second equation. Lavapipe is found like every GPU test here: no
//! adapter is a failure, not a skip.
#![cfg(feature = "gpu")]

mod common;

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use hashrig::gpu::kernel::{FieldChoice, FieldPath};
use hashrig::gpu::sig::{Curve, Equation, GpuMsm};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_one, Reason, Scheme, SigItem, Verdict};
use rand::seq::SliceRandom;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha512};

fn gpu(path: FieldPath) -> &'static Mutex<GpuMsm> {
    static U64: OnceLock<Mutex<GpuMsm>> = OnceLock::new();
    static U32: OnceLock<Mutex<GpuMsm>> = OnceLock::new();
    let cell = if path == FieldPath::U64 { &U64 } else { &U32 };
    cell.get_or_init(|| {
        let a = common::first_adapter();
        let k = GpuMsm::with_field(&a, FieldChoice::Force(path), Curve::Ed25519)
            .unwrap_or_else(|e| panic!("Ed25519 batch-equation kernel on {}: {e}", a.summary.name));
        assert_eq!(k.field(), path, "{} has no SHADER_INT64: the u64 path cannot be tested", a.summary.name);
        Mutex::new(k)
    })
}

/// Runs `items` as one batch equation on `path`'s kernel (window width
/// `window`, or the default choice), completes the undecided items on the
/// CPU, and checks every verdict and the equation against the CPU.
/// Returns the rounds the GPU ran.
fn check_batch(path: FieldPath, window: Option<u32>, what: &str, items: &[SigItem]) -> u32 {
    let refs: Vec<&SigItem> = items.iter().collect();
    let cpu: Vec<Verdict> = items.iter().map(verify_one).collect();
    let bv = {
        let mut g = gpu(path).lock().unwrap();
        g.set_window_bits(window);
        let r = g.verify_batch_equation(&refs, Duration::from_secs(600));
        g.set_window_bits(None);
        r.unwrap_or_else(|e| panic!("{what}: GPU dispatch: {e}"))
    };
    let ctx = format!("{what} ({} field, window {window:?}, {} items)", path.name(), items.len());
    // What the equation must say: items that decode (host and GPU checks
    // passed) all reach it; it fails iff one of them has a bad signature.
    let reaching = cpu.iter().filter(|v| matches!(v, Verdict::Valid | Verdict::Invalid(Reason::BadSignature))).count();
    let bad = cpu.iter().filter(|v| **v == Verdict::Invalid(Reason::BadSignature)).count();
    let want = if reaching == 0 {
        Equation::Empty
    } else if bad > 0 {
        Equation::Fails
    } else {
        Equation::Holds
    };
    assert_eq!(bv.equation, want, "{ctx}: equation");
    // The GPU decided everything except, when the equation failed, the
    // items that reached it; what it decided is the CPU's verdict.
    let want_undecided = if want == Equation::Fails { reaching } else { 0 };
    assert_eq!(bv.undecided(), want_undecided, "{ctx}: undecided items");
    for (i, (g, c)) in bv.verdicts.iter().zip(&cpu).enumerate() {
        if let Some(g) = g {
            assert_eq!(
                g,
                c,
                "{ctx}: item {i} decided on the GPU: pk {} sig {}",
                hex::encode(&items[i].pubkey),
                hex::encode(&items[i].sig)
            );
        }
    }
    let rounds = bv.rounds;
    let mut fallback_calls = 0;
    let all = bv
        .resolve(&refs, |sub| {
            fallback_calls += 1;
            sub.iter().map(|i| verify_one(i)).collect()
        })
        .unwrap();
    assert_eq!(all, cpu, "{ctx}: final verdicts");
    assert_eq!(fallback_calls, usize::from(want_undecided > 0), "{ctx}: fallback calls");
    rounds
}

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The published vectors: speccheck's 12, Wycheproof's 151, RFC 8032's first two.
fn published() -> Vec<SigItem> {
    let mut items = Vec::new();
    let j: serde_json::Value = serde_json::from_str(&data("speccheck_cases.json")).unwrap();
    for c in j.as_array().unwrap() {
        let h = |k: &str| hex::decode(c[k].as_str().unwrap()).unwrap();
        items.push(SigItem::new(Scheme::Ed25519, h("pub_key"), h("message"), h("signature")));
    }
    let j: serde_json::Value = serde_json::from_str(&data("wycheproof_ed25519_test.json")).unwrap();
    for g in j["testGroups"].as_array().unwrap() {
        let pk = hex::decode(g["publicKey"]["pk"].as_str().unwrap()).unwrap();
        for t in g["tests"].as_array().unwrap() {
            let h = |k: &str| hex::decode(t[k].as_str().unwrap()).unwrap();
            items.push(SigItem::new(Scheme::Ed25519, pk.clone(), h("msg"), h("sig")));
        }
    }
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
    assert_eq!(items.len(), 12 + 151 + 2);
    items
}

/// y + p for small y: a non-canonical encoding of the point with that y.
fn non_canonical(y: u8, sign: bool) -> [u8; 32] {
    let mut b = [0xffu8; 32];
    b[0] = 0xed + y;
    b[31] = 0x7f | if sign { 0x80 } else { 0 };
    b
}

/// A signature on `msg` for secret `a`, key bytes `pk` as given, nonce point
/// encoded as `r_bytes` for nonce `r` (the torsion part is the caller's).
fn sign_raw(a: Scalar, pk: &[u8; 32], r: Scalar, r_bytes: [u8; 32], msg: &[u8]) -> Vec<u8> {
    let mut h = Sha512::new();
    h.update(r_bytes);
    h.update(pk);
    h.update(msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let mut sig = r_bytes.to_vec();
    sig.extend_from_slice((r + k * a).as_bytes());
    sig
}

/// Edge cases: small-order keys and R with S = 0 (valid under ZIP-215,
/// rejected by strict), valid signatures under mixed-order keys and R,
/// non-canonical keys and R, non-decoding y, S + ℓ, and their bit flips.
fn edge_cases(rng: &mut rand::rngs::StdRng) -> Vec<SigItem> {
    let mut items = Vec::new();
    let small: Vec<[u8; 32]> = EIGHT_TORSION.iter().map(|t| t.compress().to_bytes()).collect();
    for (i, a) in small.iter().enumerate() {
        let mut sig = small[(i * 3 + 1) % 8].to_vec();
        sig.extend_from_slice(&[0u8; 32]);
        items.push(SigItem::new(Scheme::Ed25519, a.to_vec(), b"small".to_vec(), sig));
    }
    for i in 0..24u64 {
        let a = Scalar::from(rng.random::<u64>()) * Scalar::from(rng.random::<u64>());
        let r = Scalar::from(rng.random::<u64>());
        let a_pt = ED25519_BASEPOINT_POINT * a + EIGHT_TORSION[(i % 8) as usize];
        let pk = a_pt.compress().to_bytes();
        let r_bytes = (ED25519_BASEPOINT_POINT * r + EIGHT_TORSION[((i / 3) % 8) as usize]).compress().to_bytes();
        let msg = i.to_le_bytes();
        let sig = sign_raw(a, &pk, r, r_bytes, &msg);
        items.push(SigItem::new(Scheme::Ed25519, pk.to_vec(), msg.to_vec(), sig.clone()));
        let mut bad = sig;
        bad[40] ^= 1;
        items.push(SigItem::new(Scheme::Ed25519, pk.to_vec(), msg.to_vec(), bad));
    }
    // Non-canonical encodings (y + p) and y values off the curve, as key
    // and as R, with a real signature's S.
    let base = valid_item(Scheme::Ed25519, 999);
    for y in 0..19u8 {
        for sign in [false, true] {
            let e = non_canonical(y, sign);
            items.push(SigItem::new(Scheme::Ed25519, e.to_vec(), base.msg.clone(), base.sig.clone()));
            let mut sig = e.to_vec();
            sig.extend_from_slice(&base.sig[32..]);
            items.push(SigItem::new(Scheme::Ed25519, base.pubkey.clone(), base.msg.clone(), sig));
        }
    }
    // S + ℓ (not reduced).
    let mut m = valid_item(Scheme::Ed25519, 5);
    m.sig[63] |= 0x80;
    items.push(m);
    items
}

/// Every candidate item under `scheme`, split into CPU-valid and CPU-invalid.
fn pools(scheme: Scheme) -> (Vec<SigItem>, Vec<SigItem>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0002_5519_0415);
    let mut all = published();
    all.extend(edge_cases(&mut rng));
    for i in 0..120u64 {
        let it = valid_item(Scheme::Ed25519, 1000 + i);
        if i % 2 == 0 {
            all.push(mutate(&it, rng.next_u64()));
        }
        all.push(it);
    }
    let (mut valid, mut invalid) = (Vec::new(), Vec::new());
    for mut it in all {
        it.scheme = scheme;
        if verify_one(&it).is_valid() {
            valid.push(it);
        } else {
            invalid.push(it);
        }
    }
    valid.shuffle(&mut rng);
    invalid.shuffle(&mut rng);
    (valid, invalid)
}

/// A batch of `n` with `bad` invalid items at random places.
fn batch(rng: &mut rand::rngs::StdRng, valid: &[SigItem], invalid: &[SigItem], n: usize, bad: usize) -> Vec<SigItem> {
    let mut items: Vec<SigItem> = (0..n - bad).map(|_| valid[rng.random_range(0..valid.len())].clone()).collect();
    items.extend((0..bad).map(|_| invalid[rng.random_range(0..invalid.len())].clone()));
    items.shuffle(rng);
    items
}

#[test]
fn batches_match_single_verification() {
    for scheme in [Scheme::Ed25519, Scheme::Ed25519Strict] {
        let (valid, invalid) = pools(scheme);
        assert!(valid.len() > 100 && invalid.len() > 100, "{scheme}: {} valid, {} invalid", valid.len(), invalid.len());
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x6d736d);
        for n in [1usize, 2, 7, 33, 64] {
            let mut bads = vec![0, 1, 3.min(n), n];
            bads.dedup();
            for bad in bads {
                let items = batch(&mut rng, &valid, &invalid, n, bad);
                check_batch(FieldPath::U64, None, &format!("{scheme} {bad} bad"), &items);
            }
        }
    }
}

/// The published vectors and edge cases in full, in batches of 64, both
/// policies: every reason the decoder can give comes out of the GPU.
#[test]
fn published_and_edge_cases_in_batches() {
    for scheme in [Scheme::Ed25519, Scheme::Ed25519Strict] {
        let (valid, invalid) = pools(scheme);
        let mut all: Vec<SigItem> = valid.into_iter().chain(invalid).collect();
        all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(7));
        for chunk in all.chunks(64) {
            check_batch(FieldPath::U64, None, &format!("{scheme} vectors"), chunk);
        }
    }
}

/// Items the decoder rejects (strict small-order points, non-decoding y)
/// among valid ones: the GPU names them and the equation over the rest,
/// run again, holds, so nothing goes to the fallback.
#[test]
fn decoder_rejects_then_the_rest_holds() {
    let mut items: Vec<SigItem> = (0..30).map(|i| valid_item(Scheme::Ed25519Strict, 2000 + i)).collect();
    let small = EIGHT_TORSION[3].compress().to_bytes();
    let mut sig = EIGHT_TORSION[5].compress().to_bytes().to_vec();
    sig.extend_from_slice(&[0u8; 32]);
    items.insert(4, SigItem::new(Scheme::Ed25519Strict, small.to_vec(), b"s".to_vec(), sig.clone()));
    // The first small y with no point on the curve.
    let off = (2u8..)
        .map(|y| {
            let mut b = [0u8; 32];
            b[0] = y;
            b
        })
        .find(|b| CompressedEdwardsY(*b).decompress().is_none())
        .unwrap();
    items.insert(17, SigItem::new(Scheme::Ed25519, off.to_vec(), b"s".to_vec(), valid_item(Scheme::Ed25519, 3).sig));
    // The same small-order item is valid under ZIP-215 and stays in.
    items.push(SigItem::new(Scheme::Ed25519, small.to_vec(), b"s".to_vec(), sig));
    let cpu: Vec<Verdict> = items.iter().map(verify_one).collect();
    assert_eq!(cpu[4], Verdict::Invalid(Reason::SmallOrderPubkey));
    assert_eq!(cpu[17], Verdict::Invalid(Reason::PubkeyEncoding));
    assert_eq!(cpu[32], Verdict::Valid);
    for path in [FieldPath::U64, FieldPath::U32] {
        assert_eq!(check_batch(path, None, "decoder rejects", &items), 2, "{}: rounds", path.name());
    }
}

/// Other window widths than the default choice (the recoding and the
/// bucket layout change with it), and the u32 field path.
#[test]
fn window_widths_and_the_u32_field() {
    let (valid, invalid) = pools(Scheme::Ed25519);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xc0ffee);
    for (path, c) in [(FieldPath::U64, Some(4)), (FieldPath::U64, Some(9)), (FieldPath::U32, None)] {
        for bad in [0, 1] {
            let items = batch(&mut rng, &valid, &invalid, 33, bad);
            check_batch(path, c, "widths", &items);
        }
    }
}

#[test]
fn empty_batch_and_other_schemes() {
    let g = gpu(FieldPath::U64).lock().unwrap();
    let bv = g.verify_batch_equation(&[], Duration::from_secs(60)).unwrap();
    assert_eq!((bv.equation, bv.rounds, bv.verdicts.len()), (Equation::Empty, 0, 0));
    let e = valid_item(Scheme::Ecdsa, 1);
    assert!(g.verify_batch_equation(&[&e], Duration::from_secs(60)).is_err());
}
