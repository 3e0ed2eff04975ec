//! Differential test of secp256k1 ECDSA and BIP340 Schnorr against a second,
//! independent implementation: RustCrypto's `k256` (hashrig itself calls
//! libsecp256k1 through the `secp256k1` crate).
//!
//! Thousands of seeded random items, signed half by k256 and half by
//! libsecp256k1 (so every valid signature of one library is verified by the
//! other), then mutated: bit flips in message / signature / key, r and s
//! swapped, high S (n − s), r or s = 0 or ≥ n, broken DER (truncated,
//! extended, trailing bytes, wrong and non-minimal lengths, negative and
//! zero-padded integers, wrong tags, over 72 bytes), compressed /
//! uncompressed / hybrid / invalid keys, wrong digest lengths, invalid
//! x-only keys, r ≥ p, Schnorr messages of 0 … 200 bytes, unknown flags.
//!
//! The expected verdict is computed here, from the documented rules
//! (docs/sig-semantics.md) and k256's verify, never from hashrig's parsers:
//! * ECDSA: the signature is r‖s when it is 64 bytes, else it must be strict
//!   BIP66 DER (checked by `bip66` below, written from BIP66's rules); r, s
//!   in [1, n−1]; by default valid iff k256 accepts it and S ≤ n/2 (k256
//!   itself rejects high S, which is checked too); with `allow_high_s` valid
//!   iff k256 accepts the signature with S normalised to n − S.
//! * Schnorr: k256's `verify_raw`, which is BIP340 over the message as given,
//!   of any length (k256's `Verifier::verify` would SHA-256 the message
//!   first, so it is not used). k256 also rejects s = 0, which BIP340 allows,
//!   but no one can make an s = 0 signature that verifies, so the verdicts
//!   cannot differ there.
//!
//! Each item goes through `verify_one` and, all together, `verify_batch`;
//! both must give the expected verdict, reason code included.

use hashrig::sig::{verify_batch, verify_one, Reason, SigItem, Verdict};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::BTreeMap;

mod secp_items;
use secp_items::{ecdsa_items, expect_ecdsa, expect_schnorr, schnorr_items};

/// Per label: (items, valid).
type Counts = BTreeMap<String, (usize, usize)>;

fn check(items: &[(SigItem, String)], expect: impl Fn(&SigItem) -> (Verdict, &'static [Reason])) -> Counts {
    let plain: Vec<SigItem> = items.iter().map(|(it, _)| it.clone()).collect();
    let batch = verify_batch(&plain);
    assert_eq!(batch.len(), plain.len());
    let mut counts = Counts::new();
    for (i, ((it, label), got_batch)) in items.iter().zip(&batch).enumerate() {
        let (want, alt) = expect(it);
        let got = verify_one(it);
        assert_eq!(got, *got_batch, "item {i} ({label}): verify_one vs verify_batch, {it:?}");
        let ok = got == want || got.reason().is_some_and(|r| alt.contains(&r));
        assert!(ok, "item {i} ({label}): hashrig {got:?}, expected {want:?} (or {alt:?}), {it:?}");
        let e = counts.entry(label.clone()).or_default();
        e.0 += 1;
        e.1 += want.is_valid() as usize;
    }
    counts
}

/// Sum over the labels that start with `prefix` (and contain `part`).
fn sum(c: &Counts, prefix: &str, part: &str) -> (usize, usize) {
    c.iter().filter(|(k, _)| k.starts_with(prefix) && k.contains(part)).fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
}

const ECDSA_KEYS: usize = 2400;
const SCHNORR_KEYS: usize = 1800;

#[test]
fn ecdsa_vs_k256() {
    let mut rng = StdRng::seed_from_u64(0x6b32_3536);
    let items = ecdsa_items(&mut rng, ECDSA_KEYS);
    let c = check(&items, expect_ecdsa);
    let total = items.len();
    let valid: usize = c.values().map(|v| v.1).sum();
    eprintln!("ecdsa: {total} items, {valid} valid; per label (items, valid): {c:?}");
    assert!(valid >= 900 && total - valid >= 1500, "{valid} valid of {total}");

    // Valid signatures of each library verify under both flags, with both
    // encodings; high S only with the flag.
    for by in ["k256", "secp"] {
        for form in ["rs", "der"] {
            let (n, v) = sum(&c, &format!("valid_{form}/{by}"), "");
            assert!(n >= 80 && v == n, "valid_{form}/{by}: {v} of {n}");
            let (n, v) = sum(&c, &format!("high_s_{form}/{by}/allow"), "");
            assert!(n >= 20 && v == n, "high_s_{form}/{by} allowed: {v} of {n}");
            let (n, v) = sum(&c, &format!("high_s_{form}/{by}"), "");
            assert!(n >= 40 && v * 2 == n, "high_s_{form}/{by}: {v} of {n} (only the allow_high_s half)");
        }
    }
    // Everything mutated is invalid, except a key in its other SEC1 form or
    // hybrid with the right parity.
    for (label, min) in [
        ("flip_msg", 100),
        ("flip_sig", 100),
        ("flip_pubkey", 100),
        ("swap_rs", 100),
        ("zero_", 100),
        ("over_n_", 100),
        ("der_", 300),
        ("key_hybrid_wrong_parity", 10),
        ("key_bad_prefix", 10),
        ("key_random_x", 10),
        ("key_length", 10),
        ("msg_length", 100),
        ("unknown_flags", 40),
        ("sig_length", 40),
    ] {
        let (n, v) = sum(&c, label, "");
        assert!(n >= min && v == 0, "{label}: {v} valid of {n}");
    }
    for label in ["key_other_form", "key_hybrid/"] {
        let (n, v) = sum(&c, label, "");
        assert!(n >= 10 && v == n, "{label}: {v} valid of {n}");
    }
    // Each DER mutation kind occurs.
    for kind in [
        "der_truncated",
        "der_trailing_byte",
        "der_extended",
        "der_outer_length",
        "der_nonminimal_length",
        "der_nonminimal_int_length",
        "der_negative",
        "der_padded",
        "der_tag",
        "der_empty_int",
        "der_r_length",
        "der_too_long",
        "der_garbage",
    ] {
        assert!(sum(&c, kind, "").0 >= 8, "{kind}: {:?}", sum(&c, kind, ""));
    }
}

#[test]
fn schnorr_vs_k256() {
    let mut rng = StdRng::seed_from_u64(0x4249_5033_3430);
    let items = schnorr_items(&mut rng, SCHNORR_KEYS);
    let c = check(&items, |it| (expect_schnorr(it), &[]));
    let total = items.len();
    let valid: usize = c.values().map(|v| v.1).sum();
    eprintln!("schnorr: {total} items, {valid} valid; per label (items, valid): {c:?}");
    assert!(valid >= 400 && total - valid >= 1000, "{valid} valid of {total}");
    for by in ["k256", "secp"] {
        for len in ["0", "32", "100", "other"] {
            let (n, v) = sum(&c, &format!("valid_len{len}/{by}"), "");
            assert!(n >= 15 && v == n, "valid_len{len}/{by}: {v} of {n}");
        }
    }
    for (label, min) in [
        ("flip_msg", 100),
        ("flip_sig", 100),
        ("flip_pubkey", 100),
        ("msg_length_changed", 100),
        ("bad_s", 100),
        ("bad_r", 100),
        ("bad_xonly_key", 100),
        ("swap_rs", 100),
        ("key_length", 10),
        ("sig_length", 10),
        ("flags", 20),
    ] {
        let (n, v) = sum(&c, label, "");
        assert!(n >= min && v == 0, "{label}: {v} valid of {n}");
    }
    // Invalid x-only keys really are rejected as keys (not just as signatures).
    let bad_keys = items
        .iter()
        .filter(|(it, l)| {
            l.starts_with("bad_xonly_key") && expect_schnorr(it) == Verdict::Invalid(Reason::PubkeyEncoding)
        })
        .count();
    assert!(bad_keys >= 50, "{bad_keys} bad x-only keys");
}
