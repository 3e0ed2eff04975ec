//! x86_64 AVX2 kernel: 8 nonces in the 8 lanes of `__m256i`, for CPUs
//! without SHA-NI.
//!
//! Same shortcuts as the SHA-NI path, in scalar-per-lane form (the per-header
//! constants are shared with the AVX-512 path, in `lanes.rs`):
//! - block 2: rounds 0..=2 and the nonce-free part of round 3 are per-header
//!   constants; message words and schedule terms that do not depend on the
//!   nonce (word 3) are folded into per-header constants (`c1`);
//! - hash 2: round 0 is a constant plus W0; padding words 8..15 and their
//!   schedule terms are folded into constants (`c2`); rounds stop at 60, where
//!   state word 7 (the hash's top 32 bits) is final, for the pre-filter.
//!
//! Candidates are confirmed with the scalar path.

use super::lanes::{var1, var2, Ctx};
use super::scalar::{H0, K};
use super::SearchInput;
use core::arch::x86_64::*;

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
