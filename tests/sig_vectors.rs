//! Every published vector in tests/data (copied from the project's shared
//! vectors with their licences): BIP340, Wycheproof ECDSA secp256k1 in its
//! three forms, Wycheproof Ed25519, speccheck; and RFC 8032's vectors.
//! Each is checked single (`verify_one`) and in one batch (`verify_batch`).

use hashrig::sig::{verify_batch, verify_one, Reason, Scheme, SigItem, Verdict};
use sha2::{Digest, Sha256};

fn data(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// Single and batch must give the same verdicts; returns them.
fn both(items: &[SigItem]) -> Vec<Verdict> {
    let single: Vec<Verdict> = items.iter().map(verify_one).collect();
    let batch = verify_batch(items);
    assert_eq!(single, batch, "single and batch verification disagree");
    single
}

#[test]
fn bip340() {
    let csv = data("bip340_test_vectors.csv");
    let mut items = Vec::new();
    let mut expect = Vec::new();
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        items.push(SigItem::new(Scheme::Schnorr, unhex(f[2]), unhex(f[4]), unhex(f[5])));
        expect.push(f[6] == "TRUE");
    }
    assert_eq!(items.len(), 19);
    let got = both(&items);
    for (i, (v, e)) in got.iter().zip(&expect).enumerate() {
        assert_eq!(v.is_valid(), *e, "BIP340 vector {i}: {v:?}");
    }
    // Vector 5: public key not on the curve → malformed, with its reason.
    assert_eq!(got[5], Verdict::Invalid(Reason::PubkeyEncoding));
}

struct Wy {
    id: u64,
    item: SigItem,
    result: String,
    flags: Vec<String>,
}

fn wycheproof(file: &str, scheme: Scheme) -> Vec<Wy> {
    let j: serde_json::Value = serde_json::from_str(&data(file)).unwrap();
    let mut out = Vec::new();
    for g in j["testGroups"].as_array().unwrap() {
        let pk = match scheme {
            Scheme::Ecdsa => unhex(g["publicKey"]["uncompressed"].as_str().unwrap()),
            _ => unhex(g["publicKey"]["pk"].as_str().unwrap()),
        };
        for t in g["tests"].as_array().unwrap() {
            let msg = unhex(t["msg"].as_str().unwrap());
            let msg = if scheme == Scheme::Ecdsa { Sha256::digest(&msg).to_vec() } else { msg };
            out.push(Wy {
                id: t["tcId"].as_u64().unwrap(),
                item: SigItem::new(scheme, pk.clone(), msg, unhex(t["sig"].as_str().unwrap())),
                result: t["result"].as_str().unwrap().to_string(),
                flags: t["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect(),
            });
        }
    }
    out
}

/// Check a Wycheproof file; `valid`/`invalid` must match, `acceptable` may
/// go either way. Returns the tcIds whose verdict differs from the file.
fn check_wycheproof(cases: &[Wy]) -> Vec<u64> {
    let items: Vec<SigItem> = cases.iter().map(|c| c.item.clone()).collect();
    let got = both(&items);
    let mut diff = Vec::new();
    for (c, v) in cases.iter().zip(&got) {
        let ok = match c.result.as_str() {
            "valid" => v.is_valid(),
            "invalid" => !v.is_valid(),
            _ => true,
        };
        if !ok {
            diff.push(c.id);
        }
    }
    diff
}

#[test]
fn wycheproof_ecdsa_bitcoin_default_rules() {
    // Bitcoin rules (high S rejected, strict DER) are our default.
    let cases = wycheproof("wycheproof_ecdsa_secp256k1_sha256_bitcoin_test.json", Scheme::Ecdsa);
    assert!(cases.len() > 400);
    assert_eq!(check_wycheproof(&cases), Vec::<u64>::new());
}

#[test]
fn wycheproof_ecdsa_der_with_high_s_allowed() {
    // Plain ECDSA rules accept high S: that is our allow_high_s option.
    let cases: Vec<Wy> = wycheproof("wycheproof_ecdsa_secp256k1_sha256_test.json", Scheme::Ecdsa)
        .into_iter()
        .map(|mut c| {
            c.item = c.item.allow_high_s();
            c
        })
        .collect();
    assert_eq!(check_wycheproof(&cases), Vec::<u64>::new());
}

#[test]
fn wycheproof_ecdsa_der_default_rejects_exactly_high_s() {
    let cases = wycheproof("wycheproof_ecdsa_secp256k1_sha256_test.json", Scheme::Ecdsa);
    let diff = check_wycheproof(&cases);
    assert!(!diff.is_empty());
    for c in cases.iter().filter(|c| diff.contains(&c.id)) {
        assert_eq!(verify_one(&c.item), Verdict::Invalid(Reason::HighS), "tcId {}", c.id);
    }
}

#[test]
fn wycheproof_ecdsa_p1363() {
    let raw = wycheproof("wycheproof_ecdsa_secp256k1_sha256_p1363_test.json", Scheme::Ecdsa);
    let high: Vec<Wy> = raw
        .iter()
        .map(|c| Wy { id: c.id, item: c.item.clone().allow_high_s(), result: c.result.clone(), flags: c.flags.clone() })
        .collect();
    assert_eq!(check_wycheproof(&high), Vec::<u64>::new());
    // Under the default (low S) every difference is a high-S signature.
    let diff = check_wycheproof(&raw);
    for c in raw.iter().filter(|c| diff.contains(&c.id)) {
        assert_eq!(verify_one(&c.item), Verdict::Invalid(Reason::HighS), "tcId {} {:?}", c.id, c.flags);
    }
}

#[test]
fn wycheproof_ed25519() {
    // Strict matches Wycheproof (RFC 8032 decoding) on every case.
    let strict = wycheproof("wycheproof_ed25519_test.json", Scheme::Ed25519Strict);
    assert!(strict.len() >= 150);
    assert_eq!(check_wycheproof(&strict), Vec::<u64>::new());
    // ZIP-215 differs exactly where it accepts an encoding RFC 8032 rejects:
    // tcId 151, R = (x = 0 with the sign bit set, y = 1) — a "negative zero"
    // that ZIP-215 decodes as the identity.
    let zip = wycheproof("wycheproof_ed25519_test.json", Scheme::Ed25519);
    assert_eq!(check_wycheproof(&zip), vec![151]);
}

/// The 12 cases of "Taming the many EdDSAs" and our verdict under each
/// policy (V = valid). ZIP-215's row is ed25519-zebra's published row in
/// speccheck_results.md.
#[test]
fn speccheck() {
    const ZIP215: &str = "VVVVVVXXXVVV";
    const STRICT: &str = "XXXVVVXXXXXX";
    let j: serde_json::Value = serde_json::from_str(&data("speccheck_cases.json")).unwrap();
    let cases = j.as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for (scheme, want) in [(Scheme::Ed25519, ZIP215), (Scheme::Ed25519Strict, STRICT)] {
        let items: Vec<SigItem> = cases
            .iter()
            .map(|c| {
                SigItem::new(
                    scheme,
                    unhex(c["pub_key"].as_str().unwrap()),
                    unhex(c["message"].as_str().unwrap()),
                    unhex(c["signature"].as_str().unwrap()),
                )
            })
            .collect();
        let got: String = both(&items).iter().map(|v| if v.is_valid() { 'V' } else { 'X' }).collect();
        assert_eq!(got, want, "{scheme}: {:?}", both(&items));
    }
}

/// RFC 8032 section 7.1, TEST 1–3: our signer reproduces the signatures
/// from the secret keys, and both policies accept them.
#[test]
fn rfc8032() {
    let v = [
        (
            "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
            "",
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        ),
        (
            "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
            "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
            "72",
            "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        ),
        (
            "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
            "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
            "af82",
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        ),
    ];
    for (sk, pk, msg, sig) in v {
        let seed: [u8; 32] = unhex(sk).try_into().unwrap();
        let (p, s) = hashrig::sig::ed25519::sign(&seed, &unhex(msg));
        assert_eq!(hex::encode(p), pk);
        assert_eq!(hex::encode(s), sig);
        for scheme in [Scheme::Ed25519, Scheme::Ed25519Strict] {
            let items = vec![SigItem::new(scheme, unhex(pk), unhex(msg), unhex(sig))];
            assert_eq!(both(&items), vec![Verdict::Valid]);
        }
    }
}

/// Every 32-byte point encoding in the Ed25519 vectors (Wycheproof's keys
/// and R values, speccheck's), as given and with the sign bit flipped,
/// through `decompress_many` (eight IFMA lanes where this CPU has them):
/// the same answer and the same point as curve25519-dalek's `decompress`.
#[test]
fn ed25519_vector_points_decompress_as_dalek() {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    let mut encs: Vec<[u8; 32]> = Vec::new();
    let mut add = |b: &[u8]| {
        if let Ok(e) = <[u8; 32]>::try_from(b) {
            let mut flipped = e;
            flipped[31] ^= 0x80;
            encs.extend([e, flipped]);
        }
    };
    for w in wycheproof("wycheproof_ed25519_test.json", Scheme::Ed25519) {
        add(&w.item.pubkey);
        add(&w.item.sig[..w.item.sig.len().min(32)]);
    }
    let j: serde_json::Value = serde_json::from_str(&data("speccheck_cases.json")).unwrap();
    for c in j.as_array().unwrap() {
        add(&unhex(c["pub_key"].as_str().unwrap()));
        add(&unhex(&c["signature"].as_str().unwrap()[..64]));
    }
    assert!(encs.len() >= 300, "{}", encs.len());
    let got = hashrig::sig::ed25519::decompress_many(&encs);
    assert_eq!(got.len(), encs.len());
    let mut invalid = 0;
    for (e, g) in encs.iter().zip(&got) {
        let want = CompressedEdwardsY(*e).decompress();
        assert_eq!(want.is_some(), g.is_some(), "{}", hex::encode(e));
        if let (Some(w), Some(g)) = (want, g) {
            assert!(w == *g && w.compress() == g.compress(), "{}", hex::encode(e));
        } else {
            invalid += 1;
        }
    }
    // The vectors include encodings off the curve.
    assert!(invalid > 0);
}
