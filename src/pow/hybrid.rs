//! Lab: one loop that keeps the SHA unit and the 512-bit vector unit busy at
//! once, two nonces through SHA-NI beside sixteen lanes of AVX-512, in
//! lockstep (four vector rounds after each SHA-NI step) or one after the
//! other.
//!
//! Not a shipped backend: it must beat both paths alone, and on AMD Zen 5 it
//! does not. One core, 100 alternated 10 ms slices, best slice: AVX-512
//! 49.4 M nonces/s, SHA-NI 26.2 M, lockstep 46.2 M, one after the other
//! 46.3 M. 18 nonces take 390 ns in the hybrid against 324 + 76 = 400 ns for
//! the two paths alone: the times add up, the SHA instructions and the
//! 512-bit integer work do not overlap on this core (as if both issued to
//! the same vector pipes). It stays here, with
//! its test and benchmark, for re-measuring on other CPUs
//! (`cargo bench --bench sha256d`; docs/cpu-paths.md).

use super::avx512::{add, bswap, round16, rounds, sched, splat, Lanes};
use super::lanes::{var1, var2, Ctx};
use super::scalar::{H0, K};
use super::{shani, SearchInput};
use core::arch::x86_64::*;

/// Nonces per iteration: 2 on the SHA unit, 16 in the vector lanes.
pub const GROUP: u64 = 2 + 16;

/// The 16 lanes' rounds, run four at a time between SHA-NI's steps: both
/// do rounds 4..=63 of block 2, then 1..=60 of hash 2, so 30 steps each.
struct Lockstep<'a> {
    lc: &'a Ctx,
    s: [__m512i; 8],
    w: [__m512i; 64],
    w2: [__m512i; 64],
}

impl shani::Side for Lockstep<'_> {
    #[inline(always)]
    unsafe fn step(&mut self, q: usize) {
        let lc = self.lc;
        match q {
            0 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 4 5 6 7),
            1 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 8 9 10 11),
            2 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 12 13 14 15),
            3 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 16 17 18 19),
            4 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 20 21 22 23),
            5 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 24 25 26 27),
            6 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 28 29 30 31),
            7 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 32 33 34 35),
            8 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 36 37 38 39),
            9 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 40 41 42 43),
            10 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 44 45 46 47),
            11 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 48 49 50 51),
            12 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 52 53 54 55),
            13 => rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 56 57 58 59),
            14 => {
                rounds!(self.s, self.w, lc.c1, lc.wk1, var1; 60 61 62 63);
                // Hash 1 done: its digest (feed-forward from the midstate) is hash 2's message.
                for i in 0..8 {
                    self.w2[i] = add(self.s[i], splat(lc.mid[i]));
                }
                self.s = lc.s0.map(|x| splat(x));
                self.s[0] = add(self.s[0], self.w2[0]);
                self.s[4] = add(self.s[4], self.w2[0]);
            }
            15 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 1 2 3 4),
            16 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 5 6 7 8),
            17 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 9 10 11 12),
            18 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 13 14 15 16),
            19 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 17 18 19 20),
            20 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 21 22 23 24),
            21 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 25 26 27 28),
            22 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 29 30 31 32),
            23 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 33 34 35 36),
            24 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 37 38 39 40),
            25 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 41 42 43 44),
            26 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 45 46 47 48),
            27 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 49 50 51 52),
            28 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 53 54 55 56),
            29 => rounds!(self.s, self.w2, lc.c2, lc.wk2, var2; 57 58 59 60),
            _ => unreachable!("30 steps"),
        }
    }
}

/// Top words of 2 SHA-NI nonces and 16 lane nonces, the two computations
/// in lockstep.
#[inline(always)]
unsafe fn hash_top_both(sc: &shani::Ctx, l: &Lanes, w3s: [u32; 2], w3v: __m512i) -> ([u32; 2], __m512i) {
    let mut v = Lockstep {
        lc: &l.ctx,
        s: l.ctx.s3.map(|x| splat(x)),
        w: [_mm512_setzero_si512(); 64],
        w2: [_mm512_setzero_si512(); 64],
    };
    v.w[3] = w3v;
    v.s[0] = add(v.s[0], w3v);
    v.s[4] = add(v.s[4], w3v);
    let top2 = shani::hash_top_with::<2, _>(sc, w3s, &mut v);
    // After round 60, e holds the final h before the feed-forward.
    (top2, add(v.s[4], splat(H0[7])))
}

/// Hybrid nonce loop over `start..end`; pushes exact hits in ascending order.
///
/// # Safety
/// The CPU must support `sha`, `sse4.1`, `ssse3`, `avx` and `avx512f` (see [`is_available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,avx,avx2,avx512f")]
pub unsafe fn scan(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let sc = shani::Ctx::new(input);
    let l = Lanes::new(input);
    let mut n = start as u64;
    while end - n >= GROUP {
        // Nonces n, n+1 on SHA-NI, n+2 .. n+18 in the lanes.
        let base = n as u32;
        let w3v = bswap(add(splat(base.wrapping_add(2)), l.lane));
        let (top2, topv) = hash_top_both(&sc, &l, [base.swap_bytes(), base.wrapping_add(1).swap_bytes()], w3v);
        for (i, t) in top2.iter().enumerate() {
            let nonce = base.wrapping_add(i as u32);
            if t.swap_bytes() <= sc.target7 && input.confirm(nonce) {
                hits.push(nonce);
            }
        }
        let mut mask = _mm512_cmple_epu32_mask(bswap(topv), l.target7) as u32;
        while mask != 0 {
            let nonce = base.wrapping_add(2 + mask.trailing_zeros());
            mask &= mask - 1;
            if input.confirm(nonce) {
                hits.push(nonce);
            }
        }
        n += GROUP;
    }
    while n < end {
        let count = (end - n).min(16) as u32;
        l.group(input, n as u32, count, hits);
        n += count as u64;
    }
}

/// The same 2 + 16 nonces, the two computations one after the other in the
/// loop body (left to the out-of-order core to overlap), for comparison.
///
/// # Safety
/// As [`scan`].
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,avx,avx2,avx512f")]
pub unsafe fn scan_sequential(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let sc = shani::Ctx::new(input);
    let l = Lanes::new(input);
    let mut n = start as u64;
    while end - n >= GROUP {
        let base = n as u32;
        let top = shani::hash_top_with::<2, _>(&sc, [base.swap_bytes(), base.wrapping_add(1).swap_bytes()], &mut ());
        for (i, t) in top.iter().enumerate() {
            let nonce = base.wrapping_add(i as u32);
            if t.swap_bytes() <= sc.target7 && input.confirm(nonce) {
                hits.push(nonce);
            }
        }
        l.group(input, base.wrapping_add(2), 16, hits);
        n += GROUP;
    }
    while n < end {
        let count = (end - n).min(16) as u32;
        l.group(input, n as u32, count, hits);
        n += count as u64;
    }
}

/// Whether this CPU runs [`scan`].
pub fn is_available() -> bool {
    crate::pow::Backend::ShaNi.is_available()
        && std::is_x86_feature_detected!("avx")
        && crate::pow::Backend::Avx512.is_available()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Loop = unsafe fn(&SearchInput, u32, u64, &mut Vec<u32>);

    #[test]
    fn both_loops_match_scalar_including_short_tails() {
        if !is_available() {
            return;
        }
        let header: [u8; 80] = core::array::from_fn(|i| (i as u8).wrapping_mul(53) ^ 0xa5);
        let mut target = [0xffu8; 32];
        target[31] = 0x00; // ~1 in 256 nonces
        let input = SearchInput::new(&header, &target);
        for (start, len) in [(0u32, 3000u64), (0xffff_fc17, 1001), (5, 17), (9, 18), (11, 19), (1, 1)] {
            let end = (start as u64 + len).min(1 << 32);
            let mut want = Vec::new();
            crate::pow::scalar::scan(&input, start, end, &mut want);
            assert!(len < 3000 || want.len() > 2, "the target should give hits");
            let loops: [(&str, Loop); 2] = [("lockstep", scan), ("sequential", scan_sequential)];
            for (name, f) in loops {
                let mut got = Vec::new();
                // SAFETY: features checked by `is_available` above.
                unsafe { f(&input, start, end, &mut got) };
                assert_eq!(got, want, "{name} {start:#x}+{len}");
            }
        }
    }
}
