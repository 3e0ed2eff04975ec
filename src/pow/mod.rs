//! CPU proof-of-work kernels: sha256d over 80-byte block headers, nonce by nonce.
//!
//! [`SearchInput`] holds what every kernel derives once per header; [`scan`]
//! runs one [`Backend`] over a [`NonceRange`]. All backends report exactly the
//! same hits: fast paths only pre-filter on the hash's top 32 bits, and every
//! candidate is confirmed with the scalar reference before it is reported.

#[cfg(target_arch = "x86_64")]
pub mod avx2;
// AVX-512 intrinsics are stable since Rust 1.89 (the crate's rust-version),
// as is the curve25519-dalek IFMA backend that .cargo/config.toml builds in.
#[cfg(target_arch = "x86_64")]
pub mod avx512;
pub mod backend;
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub mod hybrid;
#[cfg(target_arch = "x86_64")]
mod lanes;
pub mod midstate;
pub mod scalar;
#[cfg(target_arch = "x86_64")]
pub mod shani;

pub use backend::{available, compiled, detect, measure, selection, Backend, PathRate, Selection};

/// Everything a kernel needs for one 80-byte header, computed once per header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchInput {
    /// The header; the nonce bytes (76..80) are ignored.
    pub header: [u8; 80],
    /// SHA-256 state after compressing header[0..64].
    pub midstate: [u32; 8],
    /// header[64..76] as three big-endian u32 words.
    pub tail: [u32; 3],
    /// 256-bit target as little-endian u32 words; target[7] is most significant.
    pub target: [u32; 8],
}

impl SearchInput {
    /// `target_le_bytes`: the target as a 32-byte little-endian integer
    /// (Bitcoin's internal order).
    pub fn new(header: &[u8; 80], target_le_bytes: &[u8; 32]) -> Self {
        let mut midstate = scalar::H0;
        scalar::compress(&mut midstate, header[..64].try_into().expect("64 bytes"));
        let be = |i: usize| u32::from_be_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let mut target = [0u32; 8];
        for (i, t) in target.iter_mut().enumerate() {
            *t = u32::from_le_bytes(target_le_bytes[4 * i..4 * i + 4].try_into().expect("4 bytes"));
        }
        SearchInput { header: *header, midstate, tail: [be(64), be(68), be(72)], target }
    }

    /// sha256d of the header with this nonce (internal byte order), via the
    /// scalar path over the whole 80 bytes, independent of `midstate`, so it
    /// also guards the fast paths' precomputation.
    pub fn hash(&self, nonce: u32) -> [u8; 32] {
        let mut h = self.header;
        h[76..80].copy_from_slice(&nonce.to_le_bytes());
        scalar::sha256d(&h)
    }

    /// `hash`, read as a little-endian 256-bit integer, <= target.
    pub fn meets(&self, hash: &[u8; 32]) -> bool {
        for i in (0..8).rev() {
            let h = u32::from_le_bytes(hash[4 * i..4 * i + 4].try_into().expect("4 bytes"));
            if h != self.target[i] {
                return h < self.target[i];
            }
        }
        true
    }

    /// Exact check of one candidate from a fast path's 32-bit pre-filter.
    #[inline(never)]
    pub(crate) fn confirm(&self, nonce: u32) -> bool {
        self.meets(&self.hash(nonce))
    }
}

/// Half-open nonce range start..end, end <= 2^32 (so it can reach the last nonce 0xFFFF_FFFF).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonceRange {
    pub start: u32,
    pub end: u64,
}

/// One past the last nonce.
pub const NONCE_END: u64 = 1 << 32;

impl NonceRange {
    /// `count` nonces from `start`, clamped so that `end` never passes 2^32.
    pub fn new(start: u32, count: u64) -> Self {
        NonceRange { start, end: (start as u64).saturating_add(count).min(NONCE_END) }
    }
    pub fn len(&self) -> u64 {
        self.end.saturating_sub(self.start as u64)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Scans every nonce in `range` exactly once with `backend`, pushes every nonce whose
/// sha256d meets the target (exact, full 256-bit comparison) onto `hits` in ascending order,
/// and returns the number of nonces hashed (== range.len()).
///
/// A backend this CPU cannot run (see [`available`]) falls back to
/// [`Backend::Scalar`] rather than executing illegal instructions.
pub fn scan(backend: Backend, input: &SearchInput, range: NonceRange, hits: &mut Vec<u32>) -> u64 {
    // An `end` past 2^32 (built by hand, not by `new`) would wrap nonces; clamp it.
    let end = range.end.min(NONCE_END);
    let (start, len) = (range.start, end.saturating_sub(range.start as u64));
    if len == 0 {
        return 0;
    }
    match backend.runnable() {
        Backend::Scalar => scalar::scan(input, start, end, hits),
        Backend::Midstate => midstate::scan(input, start, end, hits),
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `runnable` returned ShaNi only after detecting sha, sse4.1 and ssse3 at run time.
        Backend::ShaNi => unsafe { shani::scan(input, start, end, hits) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `runnable` returned Avx2 only after detecting avx2 at run time.
        Backend::Avx2 => unsafe { avx2::scan(input, start, end, hits) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `runnable` returned Avx512 only after detecting avx512f at run time.
        Backend::Avx512 => unsafe { avx512::scan(input, start, end, hits) },
        #[cfg(not(target_arch = "x86_64"))]
        Backend::ShaNi | Backend::Avx2 | Backend::Avx512 => scalar::scan(input, start, end, hits),
    }
    len
}
