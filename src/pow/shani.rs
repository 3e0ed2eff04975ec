//! x86_64 SHA-NI kernel: `N` nonces interleaved through the SHA unit.
//!
//! `sha256rnds2` is latency-bound (on Zen 3: 4 cycles latency, one issue per
//! 2 cycles), so independent chains are interleaved to keep it busy. Per
//! nonce this does 60 `sha256rnds2` instead of the textbook 64:
//! - block 2 of the header: rounds 0..=2 only see header words, and round 3
//!   adds the nonce word linearly to a and e, so the state after round 3 is a
//!   per-header constant plus the nonce word (rounds 4..=63: 30 instructions);
//! - the second hash starts from the constant IV, so round 0 is likewise a
//!   constant plus its first message word; and only its state word 7 is needed
//!   for the pre-filter, which is final after round 60 (rounds 1..=60: 30
//!   instructions, taken in pairs one word off the 4-word schedule grid).
//!
//! Constant message words (padding, header words) and their schedule terms
//! are folded into per-header vectors. Candidates whose top 32 hash bits pass
//! are confirmed with the scalar path.
//!
//! State vectors use the SHA-NI layout: ABEF = lanes [F, E, B, A] (lane 0
//! first), CDGH = lanes [H, G, D, C].

use super::scalar::{big_sigma0, big_sigma1, ch, maj, round, H0, K};
use super::SearchInput;
use core::arch::x86_64::*;

/// Ways interleaved. Zen 3: `sha256rnds2` has 4 cycles latency and one per
/// cycle throughput; 2 ways already reach 25.3 Mnonce/s, 3 and 4 measured the
/// same (other ops and register pressure), so 2 keeps the tail short.
pub const WAYS: usize = 2;

/// Per-header constants, all in SHA-NI vector form.
pub(super) struct Ctx {
    /// ABEF/CDGH after round 3 of block 2, minus the nonce word in lanes A and E.
    abef3: __m128i,
    cdgh3: __m128i,
    /// Midstate in ABEF/CDGH form, for the feed-forward of hash 1.
    mid_abef: __m128i,
    mid_cdgh: __m128i,
    /// Block 2 words 0..3 with word 3 (the nonce) zero.
    m0: __m128i,
    /// W+K for rounds 4..=15 of block 2 (all padding words).
    wk1: [__m128i; 3],
    pub(super) target7: u32,
}

#[inline(always)]
unsafe fn v(w: [u32; 4]) -> __m128i {
    _mm_set_epi32(w[3] as i32, w[2] as i32, w[1] as i32, w[0] as i32)
}

#[inline(always)]
unsafe fn kq(q: usize) -> __m128i {
    v([K[4 * q], K[4 * q + 1], K[4 * q + 2], K[4 * q + 3]])
}

/// [a..h] state to (ABEF, CDGH) vectors.
#[inline(always)]
unsafe fn to_sha_layout(s: &[u32; 8]) -> (__m128i, __m128i) {
    (v([s[5], s[4], s[1], s[0]]), v([s[7], s[6], s[3], s[2]]))
}

impl Ctx {
    #[inline(always)]
    pub(super) unsafe fn new(input: &SearchInput) -> Ctx {
        let w = super::scalar::block2_words(&input.tail, 0);
        // Rounds 0..=2 of block 2 touch only header words.
        let mut s = input.midstate;
        for t in 0..3 {
            round(&mut s, w[t].wrapping_add(K[t]));
        }
        // Round 3 without its message word: a3 = t1 + t2 + W3, e3 = d + t1 + W3.
        let t1 = s[7].wrapping_add(big_sigma1(s[4])).wrapping_add(ch(s[4], s[5], s[6])).wrapping_add(K[3]);
        let t2 = big_sigma0(s[0]).wrapping_add(maj(s[0], s[1], s[2]));
        let s3 = [t1.wrapping_add(t2), s[0], s[1], s[2], s[3].wrapping_add(t1), s[4], s[5], s[6]];
        let (abef3, cdgh3) = to_sha_layout(&s3);
        let (mid_abef, mid_cdgh) = to_sha_layout(&input.midstate);
        let wkq = |q: usize| {
            v([
                w[4 * q].wrapping_add(K[4 * q]),
                w[4 * q + 1].wrapping_add(K[4 * q + 1]),
                w[4 * q + 2].wrapping_add(K[4 * q + 2]),
                w[4 * q + 3].wrapping_add(K[4 * q + 3]),
            ])
        };
        Ctx {
            abef3,
            cdgh3,
            mid_abef,
            mid_cdgh,
            m0: v([w[0], w[1], w[2], 0]),
            wk1: [wkq(1), wkq(2), wkq(3)],
            target7: input.target[7],
        }
    }
}

/// Next schedule quad: W[t..t+4] from the four previous quads.
#[inline(always)]
unsafe fn sched(q0: __m128i, q1: __m128i, q2: __m128i, q3: __m128i) -> __m128i {
    let x = _mm_add_epi32(_mm_sha256msg1_epu32(q0, q1), _mm_alignr_epi8(q3, q2, 4));
    _mm_sha256msg2_epu32(x, q3)
}

/// Four rounds on all ways; `wk[i]` holds W+K for the 4 rounds of way i.
#[inline(always)]
unsafe fn rounds4<const N: usize>(s0: &mut [__m128i; N], s1: &mut [__m128i; N], wk: [__m128i; N]) {
    for i in 0..N {
        s1[i] = _mm_sha256rnds2_epu32(s1[i], s0[i], wk[i]);
    }
    for i in 0..N {
        s0[i] = _mm_sha256rnds2_epu32(s0[i], s1[i], _mm_shuffle_epi32(wk[i], 0x0E));
    }
}

/// Hashes nonces `w3[i]` (already byte-swapped) and returns each way's
/// final state word 7 (before byte swap), the hash's top 32 bits.
#[inline(always)]
unsafe fn hash_top<const N: usize>(c: &Ctx, w3: [u32; N]) -> [u32; N] {
    hash_top_with(c, w3, &mut ())
}

/// Work run between the four-round steps of [`hash_top_with`].
pub(super) trait Side {
    /// Called with q = 0..30 in order, after each step (15 per hash).
    ///
    /// # Safety
    /// Runs inside the SHA-NI loop's target features.
    unsafe fn step(&mut self, q: usize);
}

impl Side for () {
    #[inline(always)]
    unsafe fn step(&mut self, _: usize) {}
}

/// [`hash_top`], calling `side.step(q)` after each of its 30 four-round
/// steps. The hybrid loop runs vector rounds there, so that the SHA unit and
/// the vector unit are fed from the same stretch of code; `hash_top` passes
/// `()`, which compiles away.
///
/// Fully unrolled by macros: a rolling schedule window indexed at run time
/// would live in memory and put store-to-load forwarding on the chain.
#[inline(always)]
#[allow(unused_assignments)] // the last quad's W+K is not needed again
pub(super) unsafe fn hash_top_with<const N: usize, S: Side>(c: &Ctx, w3: [u32; N], side: &mut S) -> [u32; N] {
    let zero = _mm_setzero_si128();
    // ---- hash 1, block 2: state after round 3 is constant + W3 in lanes A and E.
    let mut s0 = [c.abef3; N];
    let mut s1 = [c.cdgh3; N];
    let mut qa = [c.m0; N];
    for i in 0..N {
        let nw = _mm_set_epi32(w3[i] as i32, 0, w3[i] as i32, 0);
        s0[i] = _mm_add_epi32(s0[i], nw);
        qa[i] = _mm_insert_epi32(c.m0, w3[i] as i32, 3);
    }
    // Rounds 4..=15: padding words only, W+K precomputed.
    for k in 0..3 {
        rounds4(&mut s0, &mut s1, [c.wk1[k]; N]);
        side.step(k);
    }
    // Words 4..15 for the schedule: [0x80000000,0,0,0], 0, [0,0,0,640].
    let mut qb = [v([0x8000_0000, 0, 0, 0]); N];
    let mut qc = [zero; N];
    let mut qd = [v([0, 0, 0, 640]); N];
    let mut wk = [zero; N];
    macro_rules! h1 {
        ($q0:ident, $q1:ident, $q2:ident, $q3:ident, $r:expr) => {
            for i in 0..N {
                $q0[i] = sched($q0[i], $q1[i], $q2[i], $q3[i]);
                wk[i] = _mm_add_epi32($q0[i], kq($r));
            }
            rounds4(&mut s0, &mut s1, wk);
            side.step($r - 1);
        };
    }
    h1!(qa, qb, qc, qd, 4);
    h1!(qb, qc, qd, qa, 5);
    h1!(qc, qd, qa, qb, 6);
    h1!(qd, qa, qb, qc, 7);
    h1!(qa, qb, qc, qd, 8);
    h1!(qb, qc, qd, qa, 9);
    h1!(qc, qd, qa, qb, 10);
    h1!(qd, qa, qb, qc, 11);
    h1!(qa, qb, qc, qd, 12);
    h1!(qb, qc, qd, qa, 13);
    h1!(qc, qd, qa, qb, 14);
    h1!(qd, qa, qb, qc, 15);
    // ---- feed-forward, then the digest words in message order.
    for i in 0..N {
        let abef = _mm_add_epi32(s0[i], c.mid_abef);
        let cdgh = _mm_add_epi32(s1[i], c.mid_cdgh);
        let feba = _mm_shuffle_epi32(abef, 0x1B); // [A, B, E, F]
        let ghcd = _mm_shuffle_epi32(cdgh, 0xB1); // [G, H, C, D]
        qa[i] = _mm_blend_epi16(feba, ghcd, 0xF0); // [A, B, C, D]
        qb[i] = _mm_alignr_epi8(ghcd, feba, 8); // [E, F, G, H]
    }
    // ---- hash 2: constant IV, so round 0 is a constant plus W0 in lanes A and E.
    let iv = H0;
    let t1 = iv[7].wrapping_add(big_sigma1(iv[4])).wrapping_add(ch(iv[4], iv[5], iv[6])).wrapping_add(K[0]);
    let t2 = big_sigma0(iv[0]).wrapping_add(maj(iv[0], iv[1], iv[2]));
    let base = v([iv[4], iv[3].wrapping_add(t1), iv[0], t1.wrapping_add(t2)]);
    let mask = v([0, !0, 0, !0]);
    let cdgh0 = v([iv[6], iv[5], iv[2], iv[1]]);
    let mut prev = [zero; N]; // W+K of the previous quad
    for i in 0..N {
        let w0 = _mm_shuffle_epi32(qa[i], 0x00);
        s0[i] = _mm_add_epi32(base, _mm_and_si128(w0, mask));
        s1[i] = cdgh0;
        prev[i] = _mm_add_epi32(qa[i], kq(0));
    }
    qc = [v([0x8000_0000, 0, 0, 0]); N];
    qd = [v([0, 0, 0, 256]); N];
    // Rounds 1..=60 in pairs (4q+1, 4q+2), (4q+3, 4q+4): W+K one word off the grid.
    let mut pair = [zero; N];
    macro_rules! h2 {
        ($q:ident, $r:expr) => {
            for i in 0..N {
                wk[i] = _mm_add_epi32($q[i], kq($r));
                pair[i] = _mm_alignr_epi8(wk[i], prev[i], 4);
            }
            rounds4(&mut s0, &mut s1, pair);
            side.step(14 + $r);
            prev = wk;
        };
        ($q0:ident, $q1:ident, $q2:ident, $q3:ident, $r:expr) => {
            for i in 0..N {
                $q0[i] = sched($q0[i], $q1[i], $q2[i], $q3[i]);
            }
            h2!($q0, $r);
        };
    }
    h2!(qb, 1);
    h2!(qc, 2);
    h2!(qd, 3);
    h2!(qa, qb, qc, qd, 4);
    h2!(qb, qc, qd, qa, 5);
    h2!(qc, qd, qa, qb, 6);
    h2!(qd, qa, qb, qc, 7);
    h2!(qa, qb, qc, qd, 8);
    h2!(qb, qc, qd, qa, 9);
    h2!(qc, qd, qa, qb, 10);
    h2!(qd, qa, qb, qc, 11);
    h2!(qa, qb, qc, qd, 12);
    h2!(qb, qc, qd, qa, 13);
    h2!(qc, qd, qa, qb, 14);
    h2!(qd, qa, qb, qc, 15);
    // After round 60, lane E (1) holds e60 = final h before the feed-forward.
    let mut out = [0u32; N];
    for i in 0..N {
        out[i] = (_mm_extract_epi32(s0[i], 1) as u32).wrapping_add(iv[7]);
    }
    out
}

/// Scans `start..end` with `N` ways.
#[inline(always)]
#[allow(clippy::needless_range_loop)] // lane loops over fixed-size arrays
unsafe fn scan_n<const N: usize>(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let c = Ctx::new(input);
    let mut n = start as u64;
    while n < end {
        // The last group may be short: repeat its last nonce and drop the extras.
        let count = ((end - n) as usize).min(N);
        let mut w3 = [0u32; N];
        for i in 0..N {
            w3[i] = ((n + i.min(count - 1) as u64) as u32).swap_bytes();
        }
        let top = hash_top::<N>(&c, w3);
        for i in 0..count {
            if top[i].swap_bytes() <= c.target7 {
                let nonce = (n + i as u64) as u32;
                if input.confirm(nonce) {
                    hits.push(nonce);
                }
            }
        }
        n += count as u64;
    }
}

/// SHA-NI nonce loop over `start..end`; pushes exact hits in ascending order.
///
/// Where AVX is present the same loop runs VEX-encoded (three-operand forms
/// drop most register copies around the destructive SHA instructions):
/// measured 25.3 vs 19.5 Mnonce/s on Zen 3. SHA-NI CPUs without AVX (Intel
/// Goldmont/Tremont) get the legacy-SSE build.
///
/// # Safety
/// The CPU must support `sha`, `sse4.1` and `ssse3` (see `Backend::is_available`).
pub unsafe fn scan(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    if std::is_x86_feature_detected!("avx") {
        // SAFETY: the caller guarantees sha/ssse3/sse4.1; avx was just detected.
        unsafe { scan_vex(input, start, end, hits) }
    } else {
        // SAFETY: the caller guarantees sha/ssse3/sse4.1.
        unsafe { scan_sse(input, start, end, hits) }
    }
}

/// # Safety
/// sha, ssse3, sse4.1.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
unsafe fn scan_sse(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    scan_n::<WAYS>(input, start, end, hits)
}

/// # Safety
/// sha, ssse3, sse4.1, avx.
#[target_feature(enable = "sha,sse2,ssse3,sse4.1,avx")]
unsafe fn scan_vex(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    // The SHA instructions have no VEX form. Intel CPUs penalise legacy-SSE
    // ops while a caller's upper YMM halves are dirty; clear them once here.
    _mm256_zeroupper();
    scan_n::<WAYS>(input, start, end, hits)
}

/// Lab hook: the loop with `N` ways, SSE or VEX encoded, for benchmarking.
///
/// # Safety
/// As [`scan`], plus `avx` when `vex` is true.
#[doc(hidden)]
pub unsafe fn scan_ways<const N: usize>(vex: bool, input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    unsafe fn sse_n<const N: usize>(i: &SearchInput, s: u32, e: u64, h: &mut Vec<u32>) {
        scan_n::<N>(i, s, e, h)
    }
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1,avx")]
    unsafe fn vex_n<const N: usize>(i: &SearchInput, s: u32, e: u64, h: &mut Vec<u32>) {
        _mm256_zeroupper();
        scan_n::<N>(i, s, e, h)
    }
    // SAFETY: forwarded from the caller.
    unsafe {
        if vex_ok(vex) {
            vex_n::<N>(input, start, end, hits)
        } else {
            sse_n::<N>(input, start, end, hits)
        }
    }
}

fn vex_ok(want: bool) -> bool {
    want && std::is_x86_feature_detected!("avx")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both encodings and several widths agree with the scalar loop, including
    /// short tails; the shipped `scan` covers only one of them on a given CPU.
    #[test]
    fn every_width_and_encoding_matches_scalar() {
        if !crate::pow::Backend::ShaNi.is_available() {
            return;
        }
        let header: [u8; 80] = core::array::from_fn(|i| (i as u8).wrapping_mul(91) ^ 0x5a);
        let mut target = [0xffu8; 32];
        target[31] = 0x00; // top 8 bits zero: ~1 in 256 nonces
        let input = SearchInput::new(&header, &target);
        for (start, len) in [(0u32, 2000u64), (0xffff_fc17, 1001), (5, 3), (9, 1)] {
            let end = (start as u64 + len).min(1 << 32);
            let mut want = Vec::new();
            crate::pow::scalar::scan(&input, start, end, &mut want);
            for vex in [false, true] {
                let mut got = Vec::new();
                // SAFETY: sha/ssse3/sse4.1 checked above; `scan_ways` checks avx itself.
                unsafe { scan_ways::<1>(vex, &input, start, end, &mut got) };
                assert_eq!(got, want, "1 way vex={vex} {start:#x}+{len}");
                got.clear();
                unsafe { scan_ways::<2>(vex, &input, start, end, &mut got) };
                assert_eq!(got, want, "2 ways vex={vex} {start:#x}+{len}");
                got.clear();
                unsafe { scan_ways::<3>(vex, &input, start, end, &mut got) };
                assert_eq!(got, want, "3 ways vex={vex} {start:#x}+{len}");
            }
        }
    }
}
