//! x86_64 AVX2 kernel: 8 nonces in the 8 lanes of `__m256i`, for CPUs
//! without SHA-NI.
//!
//! Same shortcuts as the SHA-NI path, in scalar-per-lane form:
//! - block 2: rounds 0..=2 and the nonce-free part of round 3 are per-header
//!   constants; message words and schedule terms that do not depend on the
//!   nonce (word 3) are folded into per-header constants (`c1`);
//! - hash 2: round 0 is a constant plus W0; padding words 8..15 and their
//!   schedule terms are folded into constants (`c2`); rounds stop at 60, where
//!   state word 7 (the hash's top 32 bits) is final, for the pre-filter.
//!
//! Candidates are confirmed with the scalar path.

use super::scalar::{big_sigma0, big_sigma1, ch, maj, round, small_sigma0, small_sigma1, H0, K};
use super::SearchInput;
use core::arch::x86_64::*;

/// Is block-2 schedule word `i` nonce-dependent?
const fn var1(i: usize) -> bool {
    i == 3 || i >= 18
}
/// Is hash-2 schedule word `i` digest-dependent?
const fn var2(i: usize) -> bool {
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

struct Ctx {
    /// Block 2 state after round 3, without the nonce word (added to a and e).
    s3: [u32; 8],
    /// Midstate, for the feed-forward of hash 1.
    mid: [u32; 8],
    c1: [u32; 64],
    wk1: [u32; 64],
    /// Hash 2 state after round 0, without W0 (added to a and e).
    s0: [u32; 8],
    c2: [u32; 64],
    wk2: [u32; 64],
    target7: u32,
}

impl Ctx {
    fn new(input: &SearchInput) -> Ctx {
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

macro_rules! ror {
    ($x:expr, $n:literal) => {
        _mm256_or_si256(_mm256_srli_epi32::<$n>($x), _mm256_slli_epi32::<{ 32 - $n }>($x))
    };
}

#[inline(always)]
unsafe fn add(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(a, b)
}
#[inline(always)]
unsafe fn splat(x: u32) -> __m256i {
    _mm256_set1_epi32(x as i32)
}
#[inline(always)]
unsafe fn s0v(x: __m256i) -> __m256i {
    _mm256_xor_si256(_mm256_xor_si256(ror!(x, 7), ror!(x, 18)), _mm256_srli_epi32::<3>(x))
}
#[inline(always)]
unsafe fn s1v(x: __m256i) -> __m256i {
    _mm256_xor_si256(_mm256_xor_si256(ror!(x, 17), ror!(x, 19)), _mm256_srli_epi32::<10>(x))
}

/// One round on 8 lanes; `wk` = W+K.
#[inline(always)]
unsafe fn round8(s: &mut [__m256i; 8], wk: __m256i) {
    let [a, b, c, d, e, f, g, h] = *s;
    let sig1 = _mm256_xor_si256(_mm256_xor_si256(ror!(e, 6), ror!(e, 11)), ror!(e, 25));
    let chv = _mm256_xor_si256(g, _mm256_and_si256(e, _mm256_xor_si256(f, g)));
    let t1 = add(add(h, sig1), add(chv, wk));
    let sig0 = _mm256_xor_si256(_mm256_xor_si256(ror!(a, 2), ror!(a, 13)), ror!(a, 22));
    let majv = _mm256_xor_si256(b, _mm256_and_si256(_mm256_xor_si256(a, b), _mm256_xor_si256(b, c)));
    *s = [add(t1, add(sig0, majv)), a, b, c, add(d, t1), e, f, g];
}

/// Schedule word `t` from its constant part and its variable terms.
#[inline(always)]
unsafe fn sched(w: &[__m256i; 64], t: usize, c: u32, var: fn(usize) -> bool) -> __m256i {
    let mut acc = splat(c);
    if var(t - 2) {
        acc = add(acc, s1v(w[t - 2]));
    }
    if var(t - 7) {
        acc = add(acc, w[t - 7]);
    }
    if var(t - 15) {
        acc = add(acc, s0v(w[t - 15]));
    }
    if var(t - 16) {
        acc = add(acc, w[t - 16]);
    }
    acc
}

/// Top 32 bits of the hash (state word 7, not byte-swapped) for 8 nonce words.
#[inline(always)]
unsafe fn hash_top8(c: &Ctx, w3: __m256i) -> __m256i {
    let mut w = [_mm256_setzero_si256(); 64];
    // ---- hash 1, block 2, from round 4.
    w[3] = w3;
    let mut s = c.s3.map(|x| splat(x));
    s[0] = add(s[0], w3);
    s[4] = add(s[4], w3);
    for t in 4..64 {
        let wk = if var1(t) {
            w[t] = sched(&w, t, c.c1[t], var1);
            add(w[t], splat(K[t]))
        } else {
            splat(c.wk1[t])
        };
        round8(&mut s, wk);
    }
    // ---- hash 2: message = digest of hash 1 (feed-forward from the midstate).
    let mut w2 = [_mm256_setzero_si256(); 64];
    for i in 0..8 {
        w2[i] = add(s[i], splat(c.mid[i]));
    }
    let mut s = c.s0.map(|x| splat(x));
    s[0] = add(s[0], w2[0]);
    s[4] = add(s[4], w2[0]);
    for t in 1..61 {
        let wk = if var2(t) {
            if t >= 16 {
                w2[t] = sched(&w2, t, c.c2[t], var2);
            }
            add(w2[t], splat(K[t]))
        } else {
            splat(c.wk2[t])
        };
        round8(&mut s, wk);
    }
    // After round 60, e holds the final h before the feed-forward.
    add(s[4], splat(H0[7]))
}

/// AVX2 nonce loop over `start..end`; pushes exact hits in ascending order.
///
/// # Safety
/// The CPU must support `avx2` (see `Backend::is_available`).
#[target_feature(enable = "avx2")]
pub unsafe fn scan(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let c = Ctx::new(input);
    // Byte swap within each 32-bit lane, to read the top word as the hash's LE word 7.
    let bswap = _mm256_setr_epi8(
        3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
    );
    let target7 = splat(c.target7);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut n = start as u64;
    while n < end {
        // A short last group repeats its last nonce in the spare lanes; they are dropped.
        let count = (end - n).min(8) as u32;
        let last = splat(count - 1);
        let idx = _mm256_min_epu32(lane, last);
        let nonces = add(splat(n as u32), idx);
        let w3 = _mm256_shuffle_epi8(nonces, bswap);
        let top = _mm256_shuffle_epi8(hash_top8(&c, w3), bswap);
        // Unsigned top <= target7  <=>  max(top, target7) == target7.
        let pass = _mm256_cmpeq_epi32(_mm256_max_epu32(top, target7), target7);
        let mut mask = (_mm256_movemask_ps(_mm256_castsi256_ps(pass)) as u32) & ((1u32 << count) - 1);
        while mask != 0 {
            let i = mask.trailing_zeros();
            mask &= mask - 1;
            let nonce = (n as u32).wrapping_add(i);
            if input.confirm(nonce) {
                hits.push(nonce);
            }
        }
        n += count as u64;
    }
}
