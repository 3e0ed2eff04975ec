//! Every backend this CPU can run must report exactly the scalar reference's
//! hits, over random headers, awkward ranges and real mainnet blocks.

use hashrig::pow::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Mainnet headers: height, header hex, block hash (display order).
const MAINNET: &str = include_str!("data/mainnet_headers.tsv");

fn run(b: Backend, input: &SearchInput, range: NonceRange) -> Vec<u32> {
    let mut hits = Vec::new();
    let n = scan(b, input, range, &mut hits);
    assert_eq!(n, range.len(), "{b}: nonces hashed");
    hits
}

/// Target with the top `zero_bits` bits clear and all others set.
fn easy_target(zero_bits: u32) -> [u8; 32] {
    let mut t = [0xffu8; 32];
    for bit in 0..zero_bits {
        let i = 255 - bit as usize;
        t[i / 8] &= !(1 << (i % 8));
    }
    t
}

fn random_input(rng: &mut StdRng, target: &[u8; 32]) -> SearchInput {
    let mut header = [0u8; 80];
    rng.fill(&mut header[..]);
    SearchInput::new(&header, target)
}

/// Brute force from first principles: the full header hashed nonce by nonce.
fn brute(input: &SearchInput, range: NonceRange) -> Vec<u32> {
    (range.start as u64..range.end).map(|n| n as u32).filter(|&n| input.meets(&input.hash(n))).collect()
}

#[test]
fn available_backends_are_compiled_and_scalar_first_class() {
    let avail = available();
    assert!(avail.contains(&Backend::Scalar) && avail.contains(&Backend::Midstate));
    for b in &avail {
        assert!(compiled().contains(b));
        assert_eq!(b.name().parse::<Backend>().unwrap(), *b);
    }
    assert!(avail.contains(&detect()));
    assert!("sha512".parse::<Backend>().is_err());
}

#[test]
fn random_headers_match_scalar() {
    let mut rng = StdRng::seed_from_u64(0x5ead_beef);
    let mut total = 0;
    for round in 0..6 {
        let input = random_input(&mut rng, &easy_target(8));
        let start = if round == 0 { 0 } else { rng.random::<u32>() | (round & 1) };
        let range = NonceRange::new(start, 3000 + round as u64 * 7);
        let want = run(Backend::Scalar, &input, range);
        if round < 2 {
            assert_eq!(want, brute(&input, range));
        }
        total += want.len();
        for b in available() {
            assert_eq!(run(b, &input, range), want, "{b} round {round}");
        }
    }
    assert!(total > 20, "easy target should give hits, got {total}");
}

#[test]
fn every_short_range_hashes_each_nonce_once() {
    // With the all-ones target every nonce is a hit, so the hit list is the
    // list of nonces hashed: any skip or repeat shows up.
    let mut rng = StdRng::seed_from_u64(7);
    let all = SearchInput::new(&[0x42; 80], &[0xff; 32]);
    let half = random_input(&mut rng, &easy_target(1));
    let starts = [0u32, 1, 6, 0x1234_5677, 0xffff_ffe3, 0xffff_fff0, 0xffff_fffb, 0xffff_ffff];
    for b in available() {
        for &start in &starts {
            for len in 0..=20u64 {
                let range = NonceRange::new(start, len);
                let every: Vec<u32> = (start as u64..range.end).map(|n| n as u32).collect();
                assert_eq!(run(b, &all, range), every, "{b} {start:#x}+{len}");
                assert_eq!(run(b, &half, range), run(Backend::Scalar, &half, range), "{b} {start:#x}+{len}");
            }
        }
        // The full tail up to 2^32, through the last nonce.
        let range = NonceRange { start: 0xffff_fff0, end: 1 << 32 };
        assert_eq!(run(b, &all, range).last(), Some(&u32::MAX), "{b}");
    }
}

#[test]
fn nonce_range_clamps_at_2_pow_32() {
    let r = NonceRange::new(0xffff_fff0, 100);
    assert_eq!((r.end, r.len()), (1 << 32, 16));
    assert!(NonceRange::new(5, 0).is_empty());
    assert_eq!(NonceRange::new(u32::MAX, 1).len(), 1);
}

#[test]
fn hard_target_gives_no_hits() {
    let mut rng = StdRng::seed_from_u64(99);
    let input = random_input(&mut rng, &[0u8; 32]);
    for b in available() {
        assert!(run(b, &input, NonceRange::new(rng.random(), 5000)).is_empty(), "{b}");
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

/// nBits to the 32-byte little-endian target: mantissa * 256^(exponent - 3).
fn expand_bits(bits: u32) -> [u8; 32] {
    let (exp, mant) = ((bits >> 24) as usize, bits & 0x007f_ffff);
    let mut t = [0u8; 32];
    for k in 0..3 {
        let byte = (mant >> (8 * k)) as u8;
        if exp + k >= 3 && exp + k - 3 < 32 {
            t[exp + k - 3] = byte;
        }
    }
    t
}

#[test]
fn mainnet_blocks_are_found_by_every_backend() {
    let mut seen = 0;
    for line in MAINNET.lines().filter(|l| l.starts_with(|c: char| c.is_ascii_digit())) {
        let cols: Vec<&str> = line.split('\t').collect();
        let header: [u8; 80] = unhex(cols[1]).try_into().unwrap();
        let mut hash = unhex(cols[2]);
        hash.reverse(); // display order -> internal order
        let bits = u32::from_le_bytes(header[72..76].try_into().unwrap());
        let nonce = u32::from_le_bytes(header[76..80].try_into().unwrap());
        let input = SearchInput::new(&header, &expand_bits(bits));
        assert_eq!(input.hash(nonce).to_vec(), hash, "height {}", cols[0]);
        assert!(input.meets(&input.hash(nonce)));
        let range = NonceRange::new(nonce.saturating_sub(60_001), 100_000);
        assert!(range.start as u64 <= nonce as u64 && (nonce as u64) < range.end);
        for b in available() {
            assert_eq!(run(b, &input, range), vec![nonce], "{b} height {}", cols[0]);
        }
        seen += 1;
    }
    assert!(seen >= 2);
}
