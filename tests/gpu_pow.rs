//! The sha256d kernel on a real Vulkan driver (lavapipe in CI, `make test`
//! installs mesa-vulkan-drivers), against the CPU's scalar reference: real
//! mainnet headers, an easy target with thousands of hits (including slot
//! overflow), and chunk, range and 2^32 edges. Sizes are small: lavapipe on
//! two cores does a few MH/s.
//!
//! No adapter is a failure, not a skip: a CI without Vulkan would otherwise
//! pass without running a single kernel.
#![cfg(feature = "gpu")]

mod common;

use std::sync::OnceLock;

use hashrig::chain::{Header, Target};
use hashrig::gpu::{ContextOptions, GpuContext, TuneChoice};
use hashrig::pow::{self, Backend, NonceRange, SearchInput};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};

/// One context for the whole file (building one compiles the kernel, which
/// takes seconds on lavapipe); tests take turns on it.
fn ctx() -> parking_lot::MutexGuard<'static, GpuContext> {
    static CTX: OnceLock<Mutex<GpuContext>> = OnceLock::new();
    CTX.get_or_init(|| {
        let a = common::first_adapter();
        eprintln!("GPU tests on: {}", a.summary.line());
        let opts = ContextOptions { depth: 3, hit_slots: 1024, tune: TuneChoice { wg: 64, npt: 16 } };
        Mutex::new(GpuContext::new(&a, &opts).unwrap_or_else(|e| panic!("GPU context on {}: {e}", a.summary.name)))
    })
    .lock()
}

fn cpu_hits(input: &SearchInput, range: NonceRange) -> Vec<u32> {
    let mut hits = Vec::new();
    pow::scan(Backend::Scalar, input, range, &mut hits);
    hits
}

fn gpu_hits(input: &SearchInput, range: NonceRange, per_dispatch: u64) -> Vec<u32> {
    let out = ctx().scan(input, range, per_dispatch).expect("GPU scan");
    assert!(out.hardware_errors.is_empty(), "GPU top words disagree with the CPU for {:?}", out.hardware_errors);
    assert_eq!(out.hashes, range.len());
    out.hits
}

fn mainnet() -> Vec<(u32, Header)> {
    let text = include_str!("data/mainnet_headers.tsv");
    text.lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), Header::from_hex(f[1]).unwrap())
        })
        .collect()
}

#[test]
fn mainnet_headers_yield_exactly_their_nonce() {
    let headers = mainnet();
    assert!(!headers.is_empty());
    for (height, h) in headers {
        let target = h.target().unwrap();
        let input = SearchInput::new(&h.to_bytes(), &target.to_le_bytes());
        // 20000 nonces around the real one, over several dispatches.
        let start = h.nonce.saturating_sub(7_777).min(u32::MAX - 20_000);
        let range = NonceRange::new(start, 20_000);
        let hits = gpu_hits(&input, range, 4096);
        assert_eq!(hits, vec![h.nonce], "block {height}");
    }
}

/// A target whose top word is `top`: about `top / 2^32` of nonces meet it.
fn easy_target(top: u32) -> [u8; 32] {
    let mut t = [0xffu8; 32];
    t[28..32].copy_from_slice(&top.to_le_bytes());
    t
}

#[test]
fn random_headers_with_an_easy_target_match_the_cpu() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut total = 0;
    for round in 0..4 {
        let mut header = [0u8; 80];
        rng.fill(&mut header[..]);
        // 1/32 of nonces: ~2000 hits in 64k nonces, about 500 per dispatch.
        let input = SearchInput::new(&header, &easy_target(0x07ff_ffff));
        let start: u32 = rng.random();
        let range = NonceRange::new(start, 1 << 16);
        let gpu = gpu_hits(&input, range, 1 << 14);
        assert_eq!(gpu, cpu_hits(&input, range), "round {round}");
        total += gpu.len();
    }
    assert!(total > 4000, "only {total} hits: the target is not easy enough to test");
}

/// More hits than slots in one dispatch: the overflow is seen and the range
/// re-scanned, nothing is dropped.
#[test]
fn slot_overflow_is_detected_and_rescanned() {
    let header = [0x42u8; 80];
    // Half the nonces hit: 8192 hits in one dispatch of 16384, 1024 slots.
    let input = SearchInput::new(&header, &easy_target(0x7fff_ffff));
    let range = NonceRange::new(1000, 1 << 14);
    let out = ctx().scan(&input, range, 1 << 14).expect("GPU scan");
    assert!(out.overflows >= 1, "a dispatch with 8k hits must overflow 1024 slots");
    assert_eq!(out.hits, cpu_hits(&input, range));
    assert!(out.hits.len() > 7000);
}

/// A target whose top word equals the hash's top word for some nonce: the
/// kernel reports it (<=), the host's full compare decides.
#[test]
fn equal_top_word_goes_to_the_full_compare() {
    let header = [7u8; 80];
    let probe = SearchInput::new(&header, &[0xff; 32]);
    let nonce = 123_456u32;
    let hash = probe.hash(nonce);
    let mut t = hash;
    // Same top word, lower words one below the hash: not a hit; one above: a hit.
    for (below, want_hit) in [(true, false), (false, true)] {
        t.copy_from_slice(&hash);
        let lo = u32::from_le_bytes(t[0..4].try_into().unwrap());
        let lo = if below { lo.wrapping_sub(1) } else { lo.wrapping_add(1) };
        if (below && lo == u32::MAX) || (!below && lo == 0) {
            continue; // borrow/carry: skip the (astronomically unlikely) edge
        }
        t[0..4].copy_from_slice(&lo.to_le_bytes());
        let input = SearchInput::new(&header, &t);
        let range = NonceRange::new(nonce - 100, 200);
        let gpu = gpu_hits(&input, range, 64);
        assert_eq!(gpu, cpu_hits(&input, range));
        assert_eq!(gpu.contains(&nonce), want_hit);
    }
}

/// Ranges that end at the last nonce, odd sizes that leave partial
/// workgroups and threads, and dispatch sizes that do not divide the range.
#[test]
fn chunk_range_and_nonce_space_edges() {
    let mut header = [0u8; 80];
    header[..4].copy_from_slice(&0x2000_0000u32.to_le_bytes());
    let input = SearchInput::new(&header, &easy_target(0x0fff_ffff));
    let cases: [(u32, u64, u64); 6] = [
        (u32::MAX - 5000, 5001, 1000),   // ends exactly at 0xffffffff
        (u32::MAX - 5000, 1 << 20, 777), // asks past 2^32: clamped
        (u32::MAX, 1, 1),                // the very last nonce alone
        (0, 1, 1),                       // the very first
        (0, 3 * 1024 + 17, 1024),        // partial last dispatch and thread
        (12_345, 64 * 16 + 1, 64 * 16),  // one full workgroup and one nonce
    ];
    for (start, count, per) in cases {
        let range = NonceRange::new(start, count);
        assert_eq!(gpu_hits(&input, range, per), cpu_hits(&input, range), "start {start} count {count} per {per}");
    }
}

/// Several tune choices give the same hits (workgroup and nonces-per-thread
/// arithmetic in the kernel's indexing).
#[test]
fn tune_choices_agree() {
    let input = SearchInput::new(&[9u8; 80], &easy_target(0x0fff_ffff));
    let range = NonceRange::new(77, 20_000);
    let want = cpu_hits(&input, range);
    let mut c = ctx();
    let before = c.tune;
    for tune in [TuneChoice { wg: 32, npt: 1 }, TuneChoice { wg: 128, npt: 7 }, TuneChoice { wg: 256, npt: 64 }] {
        c.set_tune(tune).expect("pipeline");
        assert_eq!(c.scan(&input, range, 5000).expect("GPU scan").hits, want, "{tune}");
    }
    c.set_tune(before).expect("pipeline");
}

#[test]
fn a_zero_target_finds_nothing() {
    let input = SearchInput::new(&[1u8; 80], &Target::ZERO.to_le_bytes());
    assert!(gpu_hits(&input, NonceRange::new(0, 1 << 15), 1 << 13).is_empty());
}
