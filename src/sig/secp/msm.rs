//! Multi-scalar multiplication on secp256k1: is Σ kᵢ Pᵢ the point at
//! infinity? Variable time (everything here is public data).
//!
//! Pippenger's bucket method over GLV halves: each kᵢ Pᵢ becomes
//! k1 Pᵢ + k2 λ(Pᵢ) with |k1|, |k2| < 2^128 ([`super::glv::split`]), so
//! twice the points and half the windows; each half is cut into signed
//! c-bit digits. Filling the buckets is the bulk of the work, and there
//! every point is affine: the points of one bucket are summed as a tree, one
//! round of pairs after another, each pair an affine addition, and all
//! pairs of a round (every bucket of every window) share one field
//! inversion by Montgomery's trick (~6 products per addition instead of ~11
//! for a mixed Jacobian one). Each window's buckets are then combined by
//! the usual running sum in Jacobian coordinates, and the windows by
//! doubling (Horner).

use k256::Scalar;

use super::glv;
use super::point::{Affine, Fe, Jacobian};

/// Rough costs in field products, for picking the window.
const AFFINE_ADD: usize = 6;
const BUCKET_REDUCE: usize = 21;

/// The window width that minimises the estimated cost for `m` points whose
/// scalars have at most `bits` bits.
fn window(m: usize, bits: usize) -> usize {
    (1..=12).min_by_key(|&c| (bits + 1).div_ceil(c) * (AFFINE_ADD * m + BUCKET_REDUCE * (1 << (c - 1)))).unwrap_or(4)
}

/// Little-endian 64-bit words of a scalar magnitude.
fn words(m: &k256::U256) -> [u64; 4] {
    let b = m.to_be_bytes();
    std::array::from_fn(|i| u64::from_be_bytes(b[24 - 8 * i..32 - 8 * i].try_into().expect("8 bytes")))
}

fn bits_at(w: &[u64; 4], at: usize, c: usize) -> i32 {
    if at >= 256 {
        return 0;
    }
    let (i, o) = (at / 64, at % 64);
    let mut v = w[i] >> o;
    if o + c > 64 && i + 1 < 4 {
        v |= w[i + 1] << (64 - o);
    }
    (v & ((1u64 << c) - 1)) as i32
}

/// Signed digits d in [−2^(c−1), 2^(c−1)], least significant first, with
/// Σ d·2^(c·j) = the magnitude, into `out` (n_windows of them).
fn recode(w: &[u64; 4], c: usize, out: &mut [i16]) {
    let half = 1i32 << (c - 1);
    let mut carry = 0;
    let last = out.len() - 1;
    for (j, d) in out.iter_mut().enumerate() {
        let mut v = bits_at(w, j * c, c) + carry;
        carry = 0;
        if j < last && v > half {
            v -= 1 << c;
            carry = 1;
        }
        *d = v as i16;
    }
}

/// True iff Σ scalar·point is the point at infinity.
pub fn is_identity(terms: &[(Affine, Scalar)]) -> bool {
    sum(terms).is_some_and(|s| s.is_infinity())
}

/// The buffers of a sum, kept per thread from one sum to the next.
///
/// A batch of 256 BIP340 items needs about 2 MB of them (bucket entries
/// 1.2 MB, the inversion's products 0.6 MB). Allocated afresh for every sum,
/// they were above glibc's mmap threshold or trimmed back after use, so
/// every sum page-faulted its buffers in again: `hashrig bench sig`
/// counted 186,000 page faults in a run and its batch of 256 took 12%
/// longer than with the same buffers kept (docs/cpu-paths.md).
#[derive(Default)]
struct Scratch {
    pts: Vec<Affine>,
    negs: Vec<Affine>,
    mags: Vec<[u64; 4]>,
    digits: Vec<i16>,
    start: Vec<u32>,
    fill: Vec<u32>,
    idx: Vec<u32>,
    buf: Vec<Affine>,
    len: Vec<u32>,
    rounds: Rounds,
}

/// A round's pairs: their kinds, denominators and the inversion's running
/// products.
#[derive(Default)]
struct Rounds {
    kinds: Vec<Pair>,
    den: Vec<Fe>,
    pre: Vec<Fe>,
}

/// What a thread keeps between sums at most (a batch of 4096 items needs
/// about 30 MB once; it is freed afterwards).
const SCRATCH_KEPT: usize = 8 << 20;

impl Scratch {
    fn bytes(&self) -> usize {
        use std::mem::size_of;
        (self.pts.capacity() + self.negs.capacity() + self.buf.capacity()) * size_of::<Affine>()
            + self.mags.capacity() * 32
            + self.digits.capacity() * 2
            + (self.start.capacity() + self.fill.capacity() + self.idx.capacity() + self.len.capacity()) * 4
            + self.rounds.kinds.capacity() * size_of::<Pair>()
            + (self.rounds.den.capacity() + self.rounds.pre.capacity()) * size_of::<Fe>()
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch::default());
}

/// Σ scalar·point; `None` only if a field inversion that cannot fail did
/// (a caller then treats the sum as unknown, never as infinity).
pub fn sum(terms: &[(Affine, Scalar)]) -> Option<Jacobian> {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut s) => {
            let r = sum_in(terms, &mut s);
            if s.bytes() > SCRATCH_KEPT {
                *s = Scratch::default();
            }
            r
        }
        // Not reentrant today; should it become so, a fresh set.
        Err(_) => sum_in(terms, &mut Scratch::default()),
    })
}

fn sum_in(terms: &[(Affine, Scalar)], s: &mut Scratch) -> Option<Jacobian> {
    // GLV halves, the sign folded into the point.
    let (pts, mags) = (&mut s.pts, &mut s.mags);
    pts.clear();
    mags.clear();
    for (p, k) in terms {
        let (k1, k2) = glv::split(k);
        for (q, h) in [(*p, k1), (p.endo(), k2)] {
            if h.magnitude == k256::U256::ZERO {
                continue;
            }
            pts.push(if h.negative { q.neg() } else { q });
            mags.push(words(&h.magnitude));
        }
    }
    let m = pts.len();
    if m == 0 {
        return Some(Jacobian::INFINITY);
    }
    let bits = mags.iter().map(|w| 256 - w.iter().rev().fold((0u32, true), leading).0 as usize).max().unwrap_or(1);
    let c = window(m, bits);
    // One more bit than the magnitudes have, for the last digit's carry.
    let nw = (bits + 1).div_ceil(c);
    let nb = 1usize << (c - 1);
    let digits = &mut s.digits;
    digits.clear();
    digits.resize(m * nw, 0);
    for (i, w) in mags.iter().enumerate() {
        recode(w, c, &mut digits[i * nw..(i + 1) * nw]);
    }

    // Counting sort of (point, digit) into buckets (window-major).
    let bucket_of = |d: i16, j: usize| j * nb + d.unsigned_abs() as usize - 1;
    let start = &mut s.start;
    start.clear();
    start.resize(nw * nb + 1, 0);
    for i in 0..m {
        for (j, &d) in digits[i * nw..(i + 1) * nw].iter().enumerate() {
            if d != 0 {
                start[bucket_of(d, j) + 1] += 1;
            }
        }
    }
    for b in 0..nw * nb {
        start[b + 1] += start[b];
    }
    let total = start[nw * nb] as usize;
    // Bucket entries as point indices (bit 0: negated); the first round of
    // sums reads the points through them, so no copy of every point per
    // window is made.
    let (fill, idx) = (&mut s.fill, &mut s.idx);
    fill.clear();
    fill.extend_from_slice(&start[..nw * nb]);
    idx.clear();
    idx.resize(total, 0);
    for i in 0..m {
        for (j, &d) in digits[i * nw..(i + 1) * nw].iter().enumerate() {
            if d != 0 {
                let b = bucket_of(d, j);
                idx[fill[b] as usize] = (i as u32) << 1 | (d < 0) as u32;
                fill[b] += 1;
            }
        }
    }
    s.negs.clear();
    s.negs.extend(pts.iter().map(Affine::neg));
    // Every entry the sums read is written first (the first round writes
    // each bucket's results or moves its odd point over); kept contents
    // need no clearing.
    s.buf.resize(total, Affine { x: Fe::ZERO, y: Fe::ZERO });
    s.len.clear();
    s.len.extend((0..nw * nb).map(|b| start[b + 1] - start[b]));
    let (buf, len) = (&mut s.buf, &mut s.len);
    reduce_buckets(Src::Indexed(idx, pts, &s.negs), buf, start, len, &mut s.rounds)?;

    // Running sums, every window at once (the windows' chains are
    // independent, so one window's addition need not wait for the last),
    // then the windows by Horner.
    let mut running = vec![Jacobian::INFINITY; nw];
    let mut win = vec![Jacobian::INFINITY; nw];
    for k in (0..nb).rev() {
        for j in 0..nw {
            let b = j * nb + k;
            if len[b] == 1 {
                running[j] = running[j].add_affine(&buf[start[b] as usize]);
            }
            win[j] = win[j].add(&running[j]);
        }
    }
    let mut acc = Jacobian::INFINITY;
    for w in win.iter().rev() {
        for _ in 0..c {
            acc = acc.double();
        }
        acc = acc.add(w);
    }
    Some(acc)
}

/// Fold for counting leading zero bits over words, most significant first.
fn leading((n, still): (u32, bool), w: &u64) -> (u32, bool) {
    if !still {
        (n, false)
    } else if *w == 0 {
        (n + 64, true)
    } else {
        (n + w.leading_zeros(), false)
    }
}

/// Independent product chains in a round's Montgomery trick.
const LANES: usize = 4;

/// The inverses of the chains' products, with one field inversion.
fn lane_inverses(acc: &[Fe; LANES]) -> Option<[Fe; LANES]> {
    let (a01, a23) = (acc[0] * acc[1], acc[2] * acc[3]);
    let inv = (a01 * a23).invert_vartime()?;
    let (i01, i23) = (inv * a23, inv * a01);
    Some([i01 * acc[1], i01 * acc[0], i23 * acc[3], i23 * acc[2]])
}

/// One pair of a round: the two points at `a` and `a + 1`.
#[derive(Clone, Copy)]
enum Pair {
    /// x differ: the usual chord.
    Chord,
    /// The same point: the tangent.
    Tangent,
    /// P + (−P): nothing left.
    Vanish,
}

/// Where a round reads its points.
#[derive(Clone, Copy)]
enum Src<'a> {
    /// Through bucket entries (index << 1 | negated) into the points.
    Indexed(&'a [u32], &'a [Affine], &'a [Affine]),
    /// From the output buffer itself (every round after the first).
    InPlace,
}

fn load(src: Src, buf: &[Affine], pos: usize) -> Affine {
    match src {
        Src::Indexed(idx, pts, negs) => {
            let e = idx[pos] as usize;
            if e & 1 == 1 {
                negs[e >> 1]
            } else {
                pts[e >> 1]
            }
        }
        Src::InPlace => buf[pos],
    }
}

/// Sum each bucket `b` (points `start[b] .. start[b] + len[b]` of `first`)
/// down to at most one point, left at `buf[start[b]]`; `len[b]` becomes 0
/// or 1.
fn reduce_buckets(first: Src, buf: &mut [Affine], start: &[u32], len: &mut [u32], r: &mut Rounds) -> Option<()> {
    let Rounds { kinds, den, pre } = r;
    let mut src = first;
    loop {
        kinds.clear();
        den.clear();
        for (b, &l) in len.iter().enumerate() {
            let s = start[b] as usize;
            for k in 0..(l as usize) / 2 {
                let (p, q) = (load(src, buf, s + 2 * k), load(src, buf, s + 2 * k + 1));
                let dx = q.x - p.x;
                if !dx.is_zero() {
                    kinds.push(Pair::Chord);
                    den.push(dx);
                } else if (q.y - p.y).is_zero() {
                    kinds.push(Pair::Tangent);
                    den.push(p.y.double());
                } else {
                    kinds.push(Pair::Vanish);
                }
            }
        }
        if kinds.is_empty() {
            if let Src::Indexed(..) = src {
                // No bucket had two points: move the single ones over.
                for (b, &l) in len.iter().enumerate() {
                    if l == 1 {
                        buf[start[b] as usize] = load(src, buf, start[b] as usize);
                    }
                }
            }
            return Some(());
        }
        // Montgomery's trick: one inversion for the whole round. The
        // products run in LANES interleaved chains (element i in chain
        // i % LANES), so consecutive products do not wait on each other.
        pre.clear();
        let mut acc = [Fe::ONE; LANES];
        for (i, d) in den.iter().enumerate() {
            let l = i % LANES;
            acc[l] = acc[l] * *d;
            pre.push(acc[l]);
        }
        // Never None: every denominator is a non-zero x difference or
        // 2y ≠ 0 (secp256k1 has no point of order 2).
        let mut inv = lane_inverses(&acc)?;
        for i in (0..den.len()).rev() {
            let l = i % LANES;
            let d = den[i];
            den[i] = if i >= LANES { inv[l] * pre[i - LANES] } else { inv[l] };
            inv[l] = inv[l] * d;
        }
        // Results in place, bucket by bucket, in increasing order (pair k of
        // a bucket lands at or before its own first point).
        let mut di = 0;
        let mut ki = 0;
        for (b, l) in len.iter_mut().enumerate() {
            let s = start[b] as usize;
            let pairs = *l as usize / 2;
            let mut out = s;
            for k in 0..pairs {
                let (p, q) = (load(src, buf, s + 2 * k), load(src, buf, s + 2 * k + 1));
                let kind = kinds[ki];
                ki += 1;
                let num = match kind {
                    Pair::Vanish => continue,
                    Pair::Chord => q.y - p.y,
                    Pair::Tangent => p.x.square().mul_small(3),
                };
                let lambda = num * den[di];
                di += 1;
                let x3 = lambda.square() - p.x - q.x;
                let y3 = lambda * (p.x - x3) - p.y;
                buf[out] = Affine { x: x3, y: y3 };
                out += 1;
            }
            if *l % 2 == 1 {
                buf[out] = load(src, buf, s + *l as usize - 1);
                out += 1;
            }
            *l = (out - s) as u32;
        }
        src = Src::InPlace;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k256::elliptic_curve::group::Group;
    use k256::elliptic_curve::ops::Reduce;
    use k256::elliptic_curve::sec1::ToSec1Point;
    use k256::ProjectivePoint;
    use rand::{RngCore, SeedableRng};

    fn rand_scalar(rng: &mut rand::rngs::StdRng) -> Scalar {
        let mut b = [0u8; 32];
        rng.fill_bytes(&mut b);
        <Scalar as Reduce<k256::FieldBytes>>::reduce(&b.into())
    }

    fn ours(p: &ProjectivePoint) -> Affine {
        let e = p.to_affine().to_sec1_point(false);
        let b = e.as_bytes();
        Affine::from_xy(b[1..33].try_into().unwrap(), b[33..65].try_into().unwrap()).unwrap()
    }

    fn same(j: &Jacobian, p: &ProjectivePoint) -> bool {
        match j.to_affine() {
            None => bool::from(p.is_identity()),
            Some(a) => ours(p).x == a.x && ours(p).y == a.y,
        }
    }

    #[test]
    fn recode_sums_back() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for c in 1..=12 {
            for _ in 0..50 {
                let w = [rng.next_u64(), rng.next_u64(), 0, 0];
                let nw = 130usize.div_ceil(c);
                let mut d = vec![0i16; nw];
                recode(&w, c, &mut d);
                let half = 1i32 << (c - 1);
                assert!(d.iter().all(|&x| (x as i32).abs() <= half), "c={c} {d:?}");
                let v = d.iter().rev().fold(0i128, |a, &x| (a << c) + x as i128);
                assert_eq!(v as u128, w[0] as u128 | (w[1] as u128) << 64, "c={c}");
            }
        }
    }

    #[test]
    fn sums_match_k256() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let g = ProjectivePoint::GENERATOR;
        for n in [1usize, 2, 3, 5, 17, 64, 200] {
            let base: Vec<ProjectivePoint> = (0..n).map(|_| g * rand_scalar(&mut rng)).collect();
            // Repeated points and opposite points, so buckets see tangents
            // and vanishing pairs.
            let pts: Vec<ProjectivePoint> = (0..n)
                .map(|i| match i % 4 {
                    0 => base[0],
                    1 => -base[0],
                    _ => base[i],
                })
                .collect();
            let ks: Vec<Scalar> = (0..n)
                .map(|i| if i % 5 == 3 { Scalar::from(1u64 << (i % 60)) } else { rand_scalar(&mut rng) })
                .collect();
            let want = pts.iter().zip(&ks).fold(ProjectivePoint::IDENTITY, |a, (p, k)| a + p * k);
            let terms: Vec<(Affine, Scalar)> = pts.iter().map(ours).zip(ks.iter().copied()).collect();
            assert!(same(&sum(&terms).unwrap(), &want), "n={n}");
            // The same with one more term that cancels the sum.
            let mut zero = terms.clone();
            zero.push((Affine::generator(), Scalar::ZERO));
            let neg = -want;
            if !bool::from(neg.is_identity()) {
                zero.push((ours(&neg), Scalar::ONE));
                assert!(is_identity(&zero), "n={n}");
            }
        }
        // All points equal, scalars equal: every bucket is one point repeated.
        let p = ours(&(g * Scalar::from(12345u64)));
        let terms: Vec<(Affine, Scalar)> = (0..300).map(|_| (p, Scalar::from(0xdead_beefu64))).collect();
        assert!(same(&sum(&terms).unwrap(), &(g * Scalar::from(12345u64 * 0xdead_beef * 300))));
    }
}
