//! The WGSL kernels compiled into the binary, and what the host computes per
//! header for `kernels/sha256d.wgsl`.
//!
//! A kernel file names the shared pieces it needs in `// requires: a.wgsl`
//! lines; [`source`] prepends them (WGSL has no include).

use crate::pow::scalar::{small_sigma0, small_sigma1, K};
use crate::pow::{NonceRange, SearchInput};

/// Every kernels/*.wgsl file, by file name, compiled in.
pub const FILES: &[(&str, &str)] = &[
    ("sha256_common.wgsl", include_str!("../../kernels/sha256_common.wgsl")),
    ("sha256d.wgsl", include_str!("../../kernels/sha256d.wgsl")),
    ("ed25519_field.wgsl", include_str!("../../kernels/ed25519_field.wgsl")),
    ("ed25519_point.wgsl", include_str!("../../kernels/ed25519_point.wgsl")),
    ("ed25519_verify.wgsl", include_str!("../../kernels/ed25519_verify.wgsl")),
    ("ed25519_table.wgsl", include_str!("../../kernels/ed25519_table.wgsl")),
    ("secp256k1_field.wgsl", include_str!("../../kernels/secp256k1_field.wgsl")),
    ("secp256k1_point.wgsl", include_str!("../../kernels/secp256k1_point.wgsl")),
    ("secp256k1_verify.wgsl", include_str!("../../kernels/secp256k1_verify.wgsl")),
];

/// Ed25519 verification (entry `verify`) and its base table (`build_table`).
pub const ED25519_VERIFY_FILE: &str = "ed25519_verify.wgsl";
pub const ED25519_TABLE_FILE: &str = "ed25519_table.wgsl";
/// secp256k1 ECDSA and BIP340 verification (entry `verify`).
pub const SECP256K1_VERIFY_FILE: &str = "secp256k1_verify.wgsl";

/// The nonce search entry point (in sha256d.wgsl).
pub const SHA256D_FILE: &str = "sha256d.wgsl";
pub const SHA256D_ENTRY: &str = "search";
pub const SHA256D_LABEL: &str = "hashrig sha256d search (kernels/sha256d.wgsl)";

/// The shared files `text` asks for in its `// requires:` lines.
pub fn requires(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("// requires:"))
        .flat_map(|r| r.split([',', ' ']).map(str::trim).filter(|s| !s.is_empty()).map(String::from))
        .collect()
}

/// `name`'s full source: its required pieces (from `files`), then itself.
/// `None` when `name` or a piece it requires is missing.
pub fn compose(files: &[(&str, &str)], name: &str) -> Option<String> {
    let find = |n: &str| files.iter().find(|(f, _)| *f == n).map(|(_, t)| *t);
    let text = find(name)?;
    let mut out = String::new();
    for r in requires(text) {
        out.push_str(find(&r)?);
        out.push('\n');
    }
    out.push_str(text);
    Some(out)
}

/// The composed source of a compiled-in kernel file.
pub fn source(name: &str) -> Option<String> {
    compose(FILES, name)
}

/// 64-bit FNV-1a of the composed sha256d kernel: part of the autotune cache key,
/// so a changed kernel is tuned again.
pub fn kernel_hash() -> u64 {
    let src = source(SHA256D_FILE).unwrap_or_default();
    src.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}

/// The uniform of sha256d.wgsl (`struct Params`), 96 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Params {
    pub mid: [u32; 8],
    /// Block 2 state after rounds 0..=2.
    pub s2: [u32; 8],
    /// W16, W17, W18 - sigma0(W3), W19 - W3.
    pub w: [u32; 4],
    /// First nonce, nonces in the dispatch, target top word, slot capacity.
    pub cfg: [u32; 4],
}

pub const PARAMS_SIZE: u64 = 96;

impl Params {
    /// The per-header part: midstate, first three rounds and the nonce-free
    /// schedule words of block 2.
    pub fn for_header(input: &SearchInput) -> Params {
        let [w0, w1, w2] = input.tail;
        let mut s = input.midstate;
        for (t, w) in [w0, w1, w2].into_iter().enumerate() {
            crate::pow::scalar::round(&mut s, w.wrapping_add(K[t]));
        }
        // Block 2: W4 = 0x80000000, W5..W14 = 0, W15 = 640 (bits).
        let w16 = small_sigma0(w1).wrapping_add(w0);
        let w17 = small_sigma1(640).wrapping_add(small_sigma0(w2)).wrapping_add(w1);
        let w18c = small_sigma1(w16).wrapping_add(w2);
        let w19c = small_sigma1(w17).wrapping_add(small_sigma0(0x8000_0000));
        Params { mid: input.midstate, s2: s, w: [w16, w17, w18c, w19c], cfg: [0, 0, input.target[7], 0] }
    }

    /// This header's parameters for one dispatch over `range` (len < 2^32).
    pub fn with_range(mut self, range: NonceRange, capacity: u32) -> Params {
        self.cfg[0] = range.start;
        self.cfg[1] = range.len().min(u32::MAX as u64) as u32;
        self.cfg[3] = capacity;
        self
    }

    pub fn to_bytes(&self) -> [u8; PARAMS_SIZE as usize] {
        let mut b = [0u8; PARAMS_SIZE as usize];
        let words = self.mid.iter().chain(&self.s2).chain(&self.w).chain(&self.cfg);
        for (i, w) in words.enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_composes() {
        for (name, _) in FILES {
            assert!(source(name).is_some(), "{name} requires a missing piece");
        }
        assert_eq!(requires(FILES[1].1), vec!["sha256_common.wgsl".to_string()]);
    }

    /// The host's W16..W19 parts against the full schedule of a real block 2.
    #[test]
    fn precomputed_schedule_words_match_the_full_schedule() {
        let mut header = [0u8; 80];
        for (i, b) in header.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(101).wrapping_add(7);
        }
        let input = SearchInput::new(&header, &[0xff; 32]);
        let p = Params::for_header(&input);
        let nonce_word = 0x1234_5678u32;
        let mut block = [0u32; 16];
        block[..3].copy_from_slice(&input.tail);
        block[3] = nonce_word;
        block[4] = 0x8000_0000;
        block[15] = 640;
        let w = crate::pow::scalar::schedule(&block);
        assert_eq!(w[16], p.w[0]);
        assert_eq!(w[17], p.w[1]);
        assert_eq!(w[18], p.w[2].wrapping_add(small_sigma0(nonce_word)));
        assert_eq!(w[19], p.w[3].wrapping_add(nonce_word));
    }
}
