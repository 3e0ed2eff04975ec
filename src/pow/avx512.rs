//! x86_64 AVX-512 kernel: 16 nonces in the 16 lanes of `__m512i`.
//!
//! The same algorithm and per-header constants as the AVX2 path
//! (`lanes.rs`: midstate, block-2 rounds 0..=3 precomputed, constant schedule
//! terms folded, hash 2 stopped after round 60 where state word 7 is final),
//! on twice the lanes and with cheaper round functions: VPRORD rotates in one
//! instruction (AVX2 needs shift, shift, or) and VPTERNLOGD computes any
//! three-input bit function in one (Ch, Maj, the three-way XORs of the
//! sigmas). A round costs 16 instructions here against ~35 in AVX2.
//!
//! Only AVX-512F is used (the byte swaps are rotates and a bit select), so
//! every AVX-512 CPU runs it, Skylake-SP included.
//!
//! Candidates are confirmed with the scalar path.

use super::lanes::{var1, var2, Ctx};
use super::scalar::{H0, K};
use super::SearchInput;
use core::arch::x86_64::*;

/// VPTERNLOGD truth tables, operands (a, b, c) = (0xF0, 0xCC, 0xAA).
const XOR3: i32 = 0x96;
/// a ? b : c (Ch, and the byte-swap select).
const SELECT: i32 = 0xCA;
/// Majority of a, b, c.
const MAJ: i32 = 0xE8;

#[inline(always)]
pub(super) unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
    _mm512_add_epi32(a, b)
}
#[inline(always)]
pub(super) unsafe fn splat(x: u32) -> __m512i {
    _mm512_set1_epi32(x as i32)
}
#[inline(always)]
unsafe fn xor3(a: __m512i, b: __m512i, c: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<XOR3>(a, b, c)
}
#[inline(always)]
unsafe fn s0v(x: __m512i) -> __m512i {
    xor3(_mm512_ror_epi32::<7>(x), _mm512_ror_epi32::<18>(x), _mm512_srli_epi32::<3>(x))
}
#[inline(always)]
unsafe fn s1v(x: __m512i) -> __m512i {
    xor3(_mm512_ror_epi32::<17>(x), _mm512_ror_epi32::<19>(x), _mm512_srli_epi32::<10>(x))
}

/// Byte swap within each 32-bit lane: bytes 3 and 1 of the result come from
/// a right rotate by 8, bytes 2 and 0 from a left rotate by 8. (VPSHUFB on
/// zmm would need AVX-512BW; this runs once per 16 nonces.)
#[inline(always)]
pub(super) unsafe fn bswap(x: __m512i) -> __m512i {
    _mm512_ternarylogic_epi32::<SELECT>(splat(0xff00_ff00), _mm512_ror_epi32::<8>(x), _mm512_rol_epi32::<8>(x))
}

/// One round on 16 lanes; `wk` = W+K.
#[inline(always)]
pub(super) unsafe fn round16(s: &mut [__m512i; 8], wk: __m512i) {
    let [a, b, c, d, e, f, g, h] = *s;
    let sig1 = xor3(_mm512_ror_epi32::<6>(e), _mm512_ror_epi32::<11>(e), _mm512_ror_epi32::<25>(e));
    let chv = _mm512_ternarylogic_epi32::<SELECT>(e, f, g);
    // h + W+K does not wait for e: summed first, it leaves the chain shorter.
    let t1 = add(add(h, wk), add(sig1, chv));
    let sig0 = xor3(_mm512_ror_epi32::<2>(a), _mm512_ror_epi32::<13>(a), _mm512_ror_epi32::<22>(a));
    let majv = _mm512_ternarylogic_epi32::<MAJ>(a, b, c);
    *s = [add(t1, add(sig0, majv)), a, b, c, add(d, t1), e, f, g];
}

/// Schedule word `t` from its constant part and its variable terms.
#[inline(always)]
pub(super) unsafe fn sched(w: &[__m512i; 64], t: usize, c: u32, var: fn(usize) -> bool) -> __m512i {
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

/// Rounds `$t...` with schedule words from `$w`, constants `$c`/`$wk`,
/// variable-word test `$var`. Written out per round (the indices are
/// literals) so that every `var` test folds away, the schedule window lives
/// in registers and the state rotation is a renaming, not 8 moves: as a loop
/// LLVM kept it rolled, with the window in memory.
macro_rules! rounds {
    ($s:expr, $w:expr, $c:expr, $wk:expr, $var:ident; $($t:literal)*) => {{
        $({
            let wk = if $var($t) {
                if $t >= 16 {
                    $w[$t] = sched(&$w, $t, $c[$t], $var);
                }
                add($w[$t], splat(K[$t]))
            } else {
                splat($wk[$t])
            };
            round16(&mut $s, wk);
        })*
    }};
}
pub(super) use rounds;

/// Top 32 bits of the hash (state word 7, not byte-swapped) for 16 nonce words.
#[inline(always)]
unsafe fn hash_top16(c: &Ctx, w3: __m512i) -> __m512i {
    let mut w = [_mm512_setzero_si512(); 64];
    // ---- hash 1, block 2, from round 4.
    w[3] = w3;
    let mut s = c.s3.map(|x| splat(x));
    s[0] = add(s[0], w3);
    s[4] = add(s[4], w3);
    rounds!(s, w, c.c1, c.wk1, var1;
        4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23
        24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43
        44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63
    );
    // ---- hash 2: message = digest of hash 1 (feed-forward from the midstate).
    let mut w2 = [_mm512_setzero_si512(); 64];
    for i in 0..8 {
        w2[i] = add(s[i], splat(c.mid[i]));
    }
    let mut s = c.s0.map(|x| splat(x));
    s[0] = add(s[0], w2[0]);
    s[4] = add(s[4], w2[0]);
    rounds!(s, w2, c.c2, c.wk2, var2;
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20
        21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40
        41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60
    );
    // After round 60, e holds the final h before the feed-forward.
    add(s[4], splat(H0[7]))
}

/// Per-loop constants of [`scan`] and the hybrid loop.
pub(super) struct Lanes {
    pub(super) ctx: Ctx,
    pub(super) target7: __m512i,
    pub(super) lane: __m512i,
}

impl Lanes {
    /// # Safety
    /// avx512f.
    #[inline(always)]
    pub(super) unsafe fn new(input: &SearchInput) -> Lanes {
        let ctx = Ctx::new(input);
        let target7 = splat(ctx.target7);
        let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        Lanes { ctx, target7, lane }
    }

    /// Hashes nonces `n .. n + count` (count 1..=16) and pushes the confirmed
    /// hits in ascending order. A short group repeats its last nonce in the
    /// spare lanes; their results are masked off.
    ///
    /// # Safety
    /// avx512f.
    #[inline(always)]
    pub(super) unsafe fn group(&self, input: &SearchInput, n: u32, count: u32, hits: &mut Vec<u32>) {
        let idx = _mm512_min_epu32(self.lane, splat(count - 1));
        let w3 = bswap(add(splat(n), idx));
        let top = bswap(hash_top16(&self.ctx, w3));
        let mut mask = (_mm512_cmple_epu32_mask(top, self.target7) as u32) & (u32::MAX >> (32 - count));
        while mask != 0 {
            let i = mask.trailing_zeros();
            mask &= mask - 1;
            let nonce = n.wrapping_add(i);
            if input.confirm(nonce) {
                hits.push(nonce);
            }
        }
    }
}

/// AVX-512 nonce loop over `start..end`; pushes exact hits in ascending order.
///
/// # Safety
/// The CPU must support `avx512f` (see `Backend::is_available`).
#[target_feature(enable = "avx512f")]
pub unsafe fn scan(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let l = Lanes::new(input);
    let mut n = start as u64;
    while n < end {
        let count = (end - n).min(16) as u32;
        l.group(input, n as u32, count, hits);
        n += count as u64;
    }
}
