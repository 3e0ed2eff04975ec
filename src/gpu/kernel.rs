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
    ("ed25519_field64.wgsl", include_str!("../../kernels/ed25519_field64.wgsl")),
    ("ed25519_point.wgsl", include_str!("../../kernels/ed25519_point.wgsl")),
    ("ed25519_verify.wgsl", include_str!("../../kernels/ed25519_verify.wgsl")),
    ("ed25519_table.wgsl", include_str!("../../kernels/ed25519_table.wgsl")),
    ("msm_common.wgsl", include_str!("../../kernels/msm_common.wgsl")),
    ("ed25519_msm.wgsl", include_str!("../../kernels/ed25519_msm.wgsl")),
    ("secp256k1_field.wgsl", include_str!("../../kernels/secp256k1_field.wgsl")),
    ("secp256k1_field64.wgsl", include_str!("../../kernels/secp256k1_field64.wgsl")),
    ("secp256k1_point.wgsl", include_str!("../../kernels/secp256k1_point.wgsl")),
    ("secp256k1_verify.wgsl", include_str!("../../kernels/secp256k1_verify.wgsl")),
    ("secp256k1_msm.wgsl", include_str!("../../kernels/secp256k1_msm.wgsl")),
];

/// Ed25519 verification (entry `verify`) and its base table (`build_table`).
pub const ED25519_VERIFY_FILE: &str = "ed25519_verify.wgsl";
pub const ED25519_TABLE_FILE: &str = "ed25519_table.wgsl";
/// Ed25519 batch equation as one multi-scalar multiplication (entry `msm`).
pub const ED25519_MSM_FILE: &str = "ed25519_msm.wgsl";
/// secp256k1 ECDSA and BIP340 verification (entry `verify`).
pub const SECP256K1_VERIFY_FILE: &str = "secp256k1_verify.wgsl";
/// BIP340 batch equation as one multi-scalar multiplication (entry `msm`).
pub const SECP256K1_MSM_FILE: &str = "secp256k1_msm.wgsl";

/// Each curve's two fields with one API: 20 limbs of 13 bits in u32, and
/// 10 limbs of 26 bits with u64 products (needs `Features::SHADER_INT64`).
pub const SECP256K1_FIELD_FILE: &str = "secp256k1_field.wgsl";
pub const SECP256K1_FIELD64_FILE: &str = "secp256k1_field64.wgsl";
pub const ED25519_FIELD_FILE: &str = "ed25519_field.wgsl";
pub const ED25519_FIELD64_FILE: &str = "ed25519_field64.wgsl";

/// Which field arithmetic the signature kernels are built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldPath {
    /// u32 only: 13-bit limbs, about 4x the limb products of U64.
    U32,
    /// u32 x u32 -> u64 products (10 limbs of 26 bits).
    U64,
}

impl FieldPath {
    pub fn name(self) -> &'static str {
        match self {
            FieldPath::U32 => "u32",
            FieldPath::U64 => "u64",
        }
    }
}

/// What the operator asked for (`HASHRIG_GPU_FIELD=u32|u64|auto`): `Auto`
/// is U64 where the adapter has `SHADER_INT64`, so a device run can measure
/// both paths on one adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FieldChoice {
    #[default]
    Auto,
    Force(FieldPath),
}

/// The environment variable that picks the field path.
pub const FIELD_ENV: &str = "HASHRIG_GPU_FIELD";

impl FieldChoice {
    pub fn parse(s: &str) -> Result<FieldChoice, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(FieldChoice::Auto),
            "u32" => Ok(FieldChoice::Force(FieldPath::U32)),
            "u64" => Ok(FieldChoice::Force(FieldPath::U64)),
            other => Err(format!("{FIELD_ENV}={other}: expected u32, u64 or auto")),
        }
    }

    /// From `HASHRIG_GPU_FIELD` (unset: auto).
    pub fn from_env() -> Result<FieldChoice, String> {
        std::env::var(FIELD_ENV).map_or(Ok(FieldChoice::Auto), |v| FieldChoice::parse(&v))
    }

    /// The path on an adapter with or without 64-bit integers in shaders;
    /// the second value says why when it is not what was asked for.
    pub fn resolve(self, has_int64: bool) -> (FieldPath, Option<&'static str>) {
        match (self, has_int64) {
            (FieldChoice::Auto, true) | (FieldChoice::Force(FieldPath::U64), true) => (FieldPath::U64, None),
            (FieldChoice::Auto, false) => (FieldPath::U32, None),
            (FieldChoice::Force(FieldPath::U32), _) => (FieldPath::U32, None),
            (FieldChoice::Force(FieldPath::U64), false) => {
                (FieldPath::U32, Some("u64 asked for, but the adapter has no SHADER_INT64: using u32"))
            }
        }
    }
}

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
    compose_swapped(files, name, &[])
}

/// [`compose`] with required pieces replaced: `(asked, used)` pairs, e.g.
/// one field file for another with the same API.
pub fn compose_swapped(files: &[(&str, &str)], name: &str, swap: &[(&str, &str)]) -> Option<String> {
    let find = |n: &str| files.iter().find(|(f, _)| *f == n).map(|(_, t)| *t);
    let text = find(name)?;
    let mut out = String::new();
    for r in requires(text) {
        let used = swap.iter().find(|(asked, _)| *asked == r).map_or(r.as_str(), |(_, u)| *u);
        out.push_str(find(used)?);
        out.push('\n');
    }
    out.push_str(text);
    Some(out)
}

/// The composed source of a compiled-in kernel file.
pub fn source(name: &str) -> Option<String> {
    compose(FILES, name)
}

/// The composed source of a compiled-in kernel file built with the field
/// of `path`.
pub fn source_with_field(name: &str, path: FieldPath) -> Option<String> {
    match path {
        FieldPath::U32 => compose(FILES, name),
        FieldPath::U64 => compose_swapped(
            FILES,
            name,
            &[(SECP256K1_FIELD_FILE, SECP256K1_FIELD64_FILE), (ED25519_FIELD_FILE, ED25519_FIELD64_FILE)],
        ),
    }
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

    #[test]
    fn the_u64_path_swaps_the_fields() {
        let u32_src = source_with_field(SECP256K1_VERIFY_FILE, FieldPath::U32).unwrap();
        let u64_src = source_with_field(SECP256K1_VERIFY_FILE, FieldPath::U64).unwrap();
        assert!(u32_src.contains("alias Fe = array<u32, 20>;") && !u32_src.contains("u64"));
        assert!(u64_src.contains("alias Fe = array<u32, 10>;") && !u64_src.contains("array<u32, 20>"));
        assert!(u64_src.ends_with(FILES.iter().find(|(f, _)| *f == SECP256K1_VERIFY_FILE).unwrap().1));
        for file in [ED25519_VERIFY_FILE, ED25519_TABLE_FILE, ED25519_MSM_FILE, SECP256K1_MSM_FILE] {
            let u64_src = source_with_field(file, FieldPath::U64).unwrap();
            assert!(u64_src.contains("alias Fe = array<u32, 10>;") && !u64_src.contains("array<u32, 20>"));
            assert!(source_with_field(file, FieldPath::U32).unwrap().contains("alias Fe = array<u32, 20>;"));
        }
    }

    #[test]
    fn field_choice_parses_and_resolves() {
        assert_eq!(FieldChoice::parse("auto"), Ok(FieldChoice::Auto));
        assert_eq!(FieldChoice::parse(" U64 "), Ok(FieldChoice::Force(FieldPath::U64)));
        assert_eq!(FieldChoice::parse("u32"), Ok(FieldChoice::Force(FieldPath::U32)));
        assert!(FieldChoice::parse("u128").is_err());
        assert_eq!(FieldChoice::Auto.resolve(true), (FieldPath::U64, None));
        assert_eq!(FieldChoice::Auto.resolve(false), (FieldPath::U32, None));
        assert_eq!(FieldChoice::Force(FieldPath::U32).resolve(true), (FieldPath::U32, None));
        let (p, why) = FieldChoice::Force(FieldPath::U64).resolve(false);
        assert_eq!(p, FieldPath::U32);
        assert!(why.is_some());
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
