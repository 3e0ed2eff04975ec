//! Per-header constants shared by the lane-parallel kernels (AVX2, AVX-512):
//! one nonce per 32-bit lane, so every constant is a plain `u32` that the
//! kernel broadcasts.
//!
//! - block 2: rounds 0..=2 and the nonce-free part of round 3 are per-header
//!   constants; message words and schedule terms that do not depend on the
//!   nonce (word 3) are folded into per-header constants (`c1`);
//! - hash 2: round 0 is a constant plus W0; padding words 8..15 and their
//!   schedule terms are folded into constants (`c2`).

use super::scalar::{big_sigma0, big_sigma1, ch, maj, round, small_sigma0, small_sigma1, H0, K};
use super::SearchInput;

/// Is block-2 schedule word `i` nonce-dependent?
pub(super) const fn var1(i: usize) -> bool {
    i == 3 || i >= 18
}
/// Is hash-2 schedule word `i` digest-dependent?
pub(super) const fn var2(i: usize) -> bool {
    i < 8 || i >= 16
}

/// Constant part of every schedule word, given which words are variable:
/// the full W+K for constant words, the sum of the constant terms otherwise.
fn fold(w: &[u32; 16], var: fn(usize) -> bool) -> ([u32; 64], [u32; 64]) {
    let mut full = [0u32; 64]; // value of constant words (0 for variable ones)
    let mut part = [0u32; 64]; // constant part of each word
    for t in 0..16 {
        if !var(t) {
            full[t] = w[t];
            part[t] = w[t];
        }
    }
    for t in 16..64 {
        let terms = [
            (t - 2, small_sigma1(full[t - 2])),
            (t - 7, full[t - 7]),
            (t - 15, small_sigma0(full[t - 15])),
            (t - 16, full[t - 16]),
        ];
        part[t] = terms.iter().filter(|(i, _)| !var(*i)).fold(0u32, |a, (_, x)| a.wrapping_add(*x));
        if !var(t) {
            full[t] = part[t];
        }
    }
    let mut wk = [0u32; 64];
    for t in 0..64 {
        wk[t] = part[t].wrapping_add(K[t]);
    }
    (part, wk)
}

pub(super) struct Ctx {
    /// Block 2 state after round 3, without the nonce word (added to a and e).
    pub(super) s3: [u32; 8],
    /// Midstate, for the feed-forward of hash 1.
    pub(super) mid: [u32; 8],
    pub(super) c1: [u32; 64],
    pub(super) wk1: [u32; 64],
    /// Hash 2 state after round 0, without W0 (added to a and e).
    pub(super) s0: [u32; 8],
    pub(super) c2: [u32; 64],
    pub(super) wk2: [u32; 64],
    pub(super) target7: u32,
}

impl Ctx {
    pub(super) fn new(input: &SearchInput) -> Ctx {
        let w = super::scalar::block2_words(&input.tail, 0);
        let mut s = input.midstate;
        for t in 0..3 {
            round(&mut s, w[t].wrapping_add(K[t]));
        }
        let s3 = partial_round(&s, 3);
        let (c1, wk1) = fold(&w, var1);
        let s0 = partial_round(&H0, 0);
        let (c2, wk2) = fold(&super::scalar::hash2_block(&[0; 8]), var2);
        Ctx { s3, mid: input.midstate, c1, wk1, s0, c2, wk2, target7: input.target[7] }
    }
}

/// Round `t` without its message word: the word adds linearly to a and e.
fn partial_round(s: &[u32; 8], t: usize) -> [u32; 8] {
    let t1 = s[7].wrapping_add(big_sigma1(s[4])).wrapping_add(ch(s[4], s[5], s[6])).wrapping_add(K[t]);
    let t2 = big_sigma0(s[0]).wrapping_add(maj(s[0], s[1], s[2]));
    [t1.wrapping_add(t2), s[0], s[1], s[2], s[3].wrapping_add(t1), s[4], s[5], s[6]]
}
