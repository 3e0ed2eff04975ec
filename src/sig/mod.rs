//! Signature verification: the semantics of each scheme, CPU verifiers
//! (batch with bisection for Ed25519 and BIP340 Schnorr, libsecp256k1 for
//! ECDSA and for single Schnorr items),
//! and the engine that schedules batches by deadline and size over the
//! pinned worker groups. The rules per scheme are written down, as a table,
//! in `docs/sig-semantics.md`.
//!
//! Nothing here panics on input: every malformed item gets
//! [`Verdict::Invalid`] with a [`Reason`].

use std::fmt;
use std::str::FromStr;

mod cache;
pub mod demo;
pub mod ed25519;
pub mod jsonl;
pub mod secp;

pub use ed25519::Ed25519Policy;

/// A signature scheme together with its acceptance policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// Ed25519 under ZIP-215 (the default Ed25519 policy).
    Ed25519,
    /// Ed25519, canonical encodings only, small-order A and R rejected.
    Ed25519Strict,
    /// ECDSA over secp256k1 on a 32-byte digest.
    Ecdsa,
    /// BIP340 Schnorr over secp256k1.
    Schnorr,
}

impl Scheme {
    pub const ALL: [Scheme; 4] = [Scheme::Ed25519, Scheme::Ed25519Strict, Scheme::Ecdsa, Scheme::Schnorr];

    /// The name used in JSON, the CLI and metric labels.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Ed25519 => "ed25519",
            Scheme::Ed25519Strict => "ed25519-strict",
            Scheme::Ecdsa => "ecdsa",
            Scheme::Schnorr => "schnorr",
        }
    }

    /// The byte that names the scheme on the wire (docs/sigserve-protocol.md).
    pub fn wire(self) -> u8 {
        match self {
            Scheme::Ed25519 => 1,
            Scheme::Ed25519Strict => 2,
            Scheme::Ecdsa => 3,
            Scheme::Schnorr => 4,
        }
    }

    pub fn from_wire(b: u8) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.wire() == b)
    }

    /// Its cost family: schemes that run the same verification code (both
    /// Ed25519 policies) cost the same.
    pub fn family(self) -> Family {
        match self {
            Scheme::Ed25519 | Scheme::Ed25519Strict => Family::Ed25519,
            Scheme::Ecdsa => Family::Ecdsa,
            Scheme::Schnorr => Family::Schnorr,
        }
    }

    pub fn ed25519_policy(self) -> Option<Ed25519Policy> {
        match self {
            Scheme::Ed25519 => Some(Ed25519Policy::Zip215),
            Scheme::Ed25519Strict => Some(Ed25519Policy::Strict),
            _ => None,
        }
    }
}

/// What verifying an item costs, by the code that verifies it
/// ([`Scheme::family`]): the CPU's and each GPU's time per item are kept
/// per family, in a [`PerFamily`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// Both Ed25519 policies.
    Ed25519,
    /// ECDSA over secp256k1.
    Ecdsa,
    /// BIP340 Schnorr over secp256k1.
    Schnorr,
}

impl Family {
    pub const ALL: [Family; 3] = [Family::Ed25519, Family::Ecdsa, Family::Schnorr];

    /// The label value (the `scheme` label of `hashrig_sig_gpu_item_seconds`).
    pub fn name(self) -> &'static str {
        match self {
            Family::Ed25519 => "ed25519",
            Family::Ecdsa => "ecdsa",
            Family::Schnorr => "schnorr",
        }
    }
}

/// One `T` per [`Family`], read and written through the family
/// (`costs[item.scheme.family()]`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PerFamily<T> {
    pub ed25519: T,
    pub ecdsa: T,
    pub schnorr: T,
}

impl<T> PerFamily<T> {
    /// `f` of each family.
    pub fn from_fn(mut f: impl FnMut(Family) -> T) -> PerFamily<T> {
        PerFamily { ed25519: f(Family::Ed25519), ecdsa: f(Family::Ecdsa), schnorr: f(Family::Schnorr) }
    }

    pub fn map<U>(self, mut f: impl FnMut(T) -> U) -> PerFamily<U> {
        PerFamily { ed25519: f(self.ed25519), ecdsa: f(self.ecdsa), schnorr: f(self.schnorr) }
    }

    pub fn each_ref(&self) -> PerFamily<&T> {
        PerFamily { ed25519: &self.ed25519, ecdsa: &self.ecdsa, schnorr: &self.schnorr }
    }

    /// Each family with its value, in [`Family::ALL`]'s order.
    pub fn iter(&self) -> impl Iterator<Item = (Family, &T)> {
        Family::ALL.into_iter().map(move |f| (f, &self[f]))
    }
}

impl<T> std::ops::Index<Family> for PerFamily<T> {
    type Output = T;
    fn index(&self, f: Family) -> &T {
        match f {
            Family::Ed25519 => &self.ed25519,
            Family::Ecdsa => &self.ecdsa,
            Family::Schnorr => &self.schnorr,
        }
    }
}

impl<T> std::ops::IndexMut<Family> for PerFamily<T> {
    fn index_mut(&mut self, f: Family) -> &mut T {
        match f {
            Family::Ed25519 => &mut self.ed25519,
            Family::Ecdsa => &mut self.ecdsa,
            Family::Schnorr => &mut self.schnorr,
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scheme {
    type Err = Reason;
    fn from_str(s: &str) -> Result<Scheme, Reason> {
        Scheme::ALL.into_iter().find(|x| x.name() == s).ok_or(Reason::UnknownScheme)
    }
}

/// Why an item is not valid. The numeric codes are part of the wire
/// protocol and never change meaning; 0 is "valid".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reason {
    /// Well-formed, but the equation does not hold.
    BadSignature = 1,
    PubkeyLength = 2,
    SigLength = 3,
    /// ECDSA: the digest is not 32 bytes.
    MsgLength = 4,
    /// The public key does not decode to a curve point.
    PubkeyEncoding = 5,
    /// Ed25519 strict: A is not canonically encoded.
    NonCanonicalPubkey = 6,
    /// Ed25519 strict: A has small order.
    SmallOrderPubkey = 7,
    /// Ed25519: R does not decode to a curve point.
    REncoding = 8,
    /// Ed25519 strict: R is not canonically encoded.
    NonCanonicalR = 9,
    /// Ed25519 strict: R has small order.
    SmallOrderR = 10,
    /// Ed25519: S ≥ ℓ.
    SNotReduced = 11,
    /// ECDSA: not strict DER, or r/s out of range in r‖s form.
    SigEncoding = 12,
    /// ECDSA: S > n/2 and high S not allowed.
    HighS = 13,
    /// The scheme byte or name is not one hashrig knows.
    UnknownScheme = 14,
    /// Flags this scheme does not define were set.
    BadFlags = 15,
    /// The input line could not be parsed at all (CLI / JSON only).
    BadInput = 16,
}

impl Reason {
    pub const ALL: [Reason; 16] = [
        Reason::BadSignature,
        Reason::PubkeyLength,
        Reason::SigLength,
        Reason::MsgLength,
        Reason::PubkeyEncoding,
        Reason::NonCanonicalPubkey,
        Reason::SmallOrderPubkey,
        Reason::REncoding,
        Reason::NonCanonicalR,
        Reason::SmallOrderR,
        Reason::SNotReduced,
        Reason::SigEncoding,
        Reason::HighS,
        Reason::UnknownScheme,
        Reason::BadFlags,
        Reason::BadInput,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == c)
    }

    /// Short snake_case name, as JSON output prints it.
    pub fn name(self) -> &'static str {
        match self {
            Reason::BadSignature => "bad_signature",
            Reason::PubkeyLength => "pubkey_length",
            Reason::SigLength => "sig_length",
            Reason::MsgLength => "msg_length",
            Reason::PubkeyEncoding => "pubkey_encoding",
            Reason::NonCanonicalPubkey => "non_canonical_pubkey",
            Reason::SmallOrderPubkey => "small_order_pubkey",
            Reason::REncoding => "r_encoding",
            Reason::NonCanonicalR => "non_canonical_r",
            Reason::SmallOrderR => "small_order_r",
            Reason::SNotReduced => "s_not_reduced",
            Reason::SigEncoding => "sig_encoding",
            Reason::HighS => "high_s",
            Reason::UnknownScheme => "unknown_scheme",
            Reason::BadFlags => "bad_flags",
            Reason::BadInput => "bad_input",
        }
    }

    /// Malformed input (as opposed to a well-formed signature that fails).
    pub fn is_malformed(self) -> bool {
        self != Reason::BadSignature
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The answer for one item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    Valid,
    Invalid(Reason),
}

impl Verdict {
    pub fn is_valid(self) -> bool {
        self == Verdict::Valid
    }
    /// 0 for valid, else the reason code.
    pub fn code(self) -> u8 {
        match self {
            Verdict::Valid => 0,
            Verdict::Invalid(r) => r.code(),
        }
    }
    pub fn from_code(c: u8) -> Option<Verdict> {
        if c == 0 {
            Some(Verdict::Valid)
        } else {
            Reason::from_code(c).map(Verdict::Invalid)
        }
    }
    pub fn reason(self) -> Option<Reason> {
        match self {
            Verdict::Valid => None,
            Verdict::Invalid(r) => Some(r),
        }
    }
}

impl From<Result<(), Reason>> for Verdict {
    fn from(r: Result<(), Reason>) -> Verdict {
        match r {
            Ok(()) => Verdict::Valid,
            Err(e) => Verdict::Invalid(e),
        }
    }
}

/// Item flag: ECDSA only, accept high S (normalise it first).
pub const FLAG_ALLOW_HIGH_S: u8 = 0x01;

/// One signature to check. For ECDSA `msg` is the 32-byte digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigItem {
    pub scheme: Scheme,
    pub pubkey: Vec<u8>,
    pub msg: Vec<u8>,
    pub sig: Vec<u8>,
    /// Bit set of `FLAG_*`; unknown bits make the item invalid ([`Reason::BadFlags`]).
    pub flags: u8,
}

impl SigItem {
    pub fn new(
        scheme: Scheme,
        pubkey: impl Into<Vec<u8>>,
        msg: impl Into<Vec<u8>>,
        sig: impl Into<Vec<u8>>,
    ) -> SigItem {
        SigItem { scheme, pubkey: pubkey.into(), msg: msg.into(), sig: sig.into(), flags: 0 }
    }

    /// ECDSA under Bitcoin consensus rules (high S valid).
    pub fn allow_high_s(mut self) -> SigItem {
        self.flags |= FLAG_ALLOW_HIGH_S;
        self
    }

    pub fn check_flags(&self) -> Result<(), Reason> {
        let allowed = if self.scheme == Scheme::Ecdsa { FLAG_ALLOW_HIGH_S } else { 0 };
        if self.flags & !allowed != 0 {
            Err(Reason::BadFlags)
        } else {
            Ok(())
        }
    }
}

/// Verify one item on its own (no batching). Always agrees with
/// [`verify_batch`].
pub fn verify_one(item: &SigItem) -> Verdict {
    let r = item.check_flags().and_then(|()| match item.scheme {
        Scheme::Ed25519 | Scheme::Ed25519Strict => {
            let pol = item.scheme.ed25519_policy().unwrap_or(Ed25519Policy::Zip215);
            ed25519::verify(pol, &item.pubkey, &item.msg, &item.sig)
        }
        Scheme::Ecdsa => secp::verify_ecdsa(&item.pubkey, &item.msg, &item.sig, item.flags & FLAG_ALLOW_HIGH_S != 0),
        Scheme::Schnorr => secp::verify_schnorr(&item.pubkey, &item.msg, &item.sig),
    });
    r.into()
}

/// Verify a batch on the calling thread: Ed25519 items (both policies) share
/// one batch equation, bisected on failure; BIP340 items share theirs
/// ([`secp::batch`], per item where that costs less); ECDSA items are
/// checked one by one by libsecp256k1. `result[i]` is the verdict of
/// `items[i]`.
pub fn verify_batch(items: &[SigItem]) -> Vec<Verdict> {
    let mut out = vec![Verdict::Valid; items.len()];
    // Sized up front: a growing vector of 384-byte items is copied at every step.
    let n_ed = items.iter().filter(|it| it.scheme.ed25519_policy().is_some()).count();
    // Ed25519 items are decoded together (their R points in groups of
    // eight on IFMA CPUs), after the flags check each item gets first.
    let mut ed_in = Vec::with_capacity(n_ed);
    let mut ed_at = Vec::with_capacity(n_ed);
    let mut schnorr: Vec<secp::batch::Item> = Vec::new();
    let mut schnorr_at = Vec::new();
    for (i, it) in items.iter().enumerate() {
        match it.scheme.ed25519_policy() {
            Some(pol) => match it.check_flags() {
                Ok(()) => {
                    ed_in.push((pol, it.pubkey.as_slice(), it.msg.as_slice(), it.sig.as_slice()));
                    ed_at.push(i);
                }
                Err(r) => out[i] = Verdict::Invalid(r),
            },
            None if it.scheme == Scheme::Schnorr => match it.check_flags() {
                Ok(()) => {
                    schnorr.push((&it.pubkey, &it.msg, &it.sig));
                    schnorr_at.push(i);
                }
                Err(r) => out[i] = Verdict::Invalid(r),
            },
            None => out[i] = verify_one(it),
        }
    }
    if !schnorr.is_empty() {
        let got = secp::batch::verify(&schnorr, &secp::batch::BatchOptions::default());
        for (&i, v) in schnorr_at.iter().zip(got) {
            out[i] = v.into();
        }
    }
    let mut prepared = Vec::with_capacity(n_ed);
    let mut at = Vec::with_capacity(n_ed);
    for (i, p) in ed_at.into_iter().zip(ed25519::prepare_many(&ed_in)) {
        match p {
            Ok(p) => {
                prepared.push(p);
                at.push(i);
            }
            Err(r) => out[i] = Verdict::Invalid(r),
        }
    }
    if !prepared.is_empty() {
        let refs: Vec<&ed25519::Prepared> = prepared.iter().collect();
        let mut ok = vec![false; refs.len()];
        ed25519::verify_prepared(&refs, &mut ok);
        for (&i, good) in at.iter().zip(ok) {
            if !good {
                out[i] = Verdict::Invalid(Reason::BadSignature);
            }
        }
    }
    out
}

/// Batch size classes for metric labels (bounded set).
pub fn size_class(n: usize) -> &'static str {
    match n {
        0..=1 => "1",
        2..=16 => "2-16",
        17..=256 => "17-256",
        257..=4096 => "257-4096",
        _ => "4097+",
    }
}

/// Metric label for a batch: its scheme when all items share one, else "mixed".
pub fn scheme_label(items: &[SigItem]) -> &'static str {
    match items.first() {
        None => "mixed",
        Some(f) if items.iter().all(|i| i.scheme == f.scheme) => f.scheme.name(),
        Some(_) => "mixed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both Ed25519 policies cost one family; every family has its own slot.
    #[test]
    fn schemes_fall_into_families_with_a_slot_each() {
        let fams: Vec<Family> = Scheme::ALL.iter().map(|s| s.family()).collect();
        assert_eq!(fams, [Family::Ed25519, Family::Ed25519, Family::Ecdsa, Family::Schnorr]);
        let mut per = PerFamily::<u32>::default();
        for s in Scheme::ALL {
            per[s.family()] += 1;
        }
        assert_eq!(per, PerFamily { ed25519: 2, ecdsa: 1, schnorr: 1 });
        let names = PerFamily::from_fn(Family::name);
        assert_eq!(names.iter().map(|(f, n)| (f, *n)).collect::<Vec<_>>()[2], (Family::Schnorr, "schnorr"));
        assert_eq!(Family::ALL.map(|f| names[f]), ["ed25519", "ecdsa", "schnorr"]);
    }
}
