//! Portable SHA-256 and the scalar nonce loop.
//!
//! This is the reference path: every other kernel is tested against it, and
//! every candidate they report is confirmed with [`sha256d`] before it counts
//! as a hit. It is written for clarity first; it uses no midstate tricks
//! beyond reusing the header's first-block state.

use super::SearchInput;

/// Round constants (FIPS 180-4, 4.2.2).
pub const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// Initial hash value (FIPS 180-4, 5.3.3).
pub const H0: [u32; 8] =
    [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

#[inline(always)]
pub(crate) fn big_sigma0(x: u32) -> u32 {
    x.rotate_right(2) ^ x.rotate_right(13) ^ x.rotate_right(22)
}
#[inline(always)]
pub(crate) fn big_sigma1(x: u32) -> u32 {
    x.rotate_right(6) ^ x.rotate_right(11) ^ x.rotate_right(25)
}
#[inline(always)]
pub(crate) fn small_sigma0(x: u32) -> u32 {
    x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3)
}
#[inline(always)]
pub(crate) fn small_sigma1(x: u32) -> u32 {
    x.rotate_right(17) ^ x.rotate_right(19) ^ (x >> 10)
}
#[inline(always)]
pub(crate) fn ch(e: u32, f: u32, g: u32) -> u32 {
    (e & f) ^ (!e & g)
}
#[inline(always)]
pub(crate) fn maj(a: u32, b: u32, c: u32) -> u32 {
    (a & b) ^ (a & c) ^ (b & c)
}

/// One SHA-256 round on `s` = [a, b, c, d, e, f, g, h] with `wk` = W[t] + K[t].
#[inline(always)]
pub(crate) fn round(s: &mut [u32; 8], wk: u32) {
    let t1 = s[7].wrapping_add(big_sigma1(s[4])).wrapping_add(ch(s[4], s[5], s[6])).wrapping_add(wk);
    let t2 = big_sigma0(s[0]).wrapping_add(maj(s[0], s[1], s[2]));
    *s = [t1.wrapping_add(t2), s[0], s[1], s[2], s[3].wrapping_add(t1), s[4], s[5], s[6]];
}

/// Expands a 16-word block to the full 64-word message schedule.
pub(crate) fn schedule(block: &[u32; 16]) -> [u32; 64] {
    let mut w = [0u32; 64];
    w[..16].copy_from_slice(block);
    for t in 16..64 {
        w[t] =
            small_sigma1(w[t - 2]).wrapping_add(w[t - 7]).wrapping_add(small_sigma0(w[t - 15])).wrapping_add(w[t - 16]);
    }
    w
}

/// SHA-256 compression of one block given as 16 big-endian words.
pub fn compress_words(state: &mut [u32; 8], block: &[u32; 16]) {
    let w = schedule(block);
    let mut s = *state;
    for t in 0..64 {
        round(&mut s, w[t].wrapping_add(K[t]));
    }
    for i in 0..8 {
        state[i] = state[i].wrapping_add(s[i]);
    }
}

/// SHA-256 compression of one 64-byte block.
pub fn compress(state: &mut [u32; 8], block: &[u8; 64]) {
    let mut w = [0u32; 16];
    for (i, c) in block.chunks_exact(4).enumerate() {
        w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
    }
    compress_words(state, &w);
}

fn state_bytes(state: &[u32; 8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (i, w) in state.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// SHA-256 of an arbitrary byte slice (with standard padding).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut state = H0;
    let mut chunks = data.chunks_exact(64);
    for c in &mut chunks {
        compress(&mut state, c.try_into().expect("64-byte chunk"));
    }
    let rest = chunks.remainder();
    // Padding: 0x80, zeros, then the bit length as a big-endian u64; one or two blocks.
    let mut tail = [0u8; 128];
    tail[..rest.len()].copy_from_slice(rest);
    tail[rest.len()] = 0x80;
    let blocks = if rest.len() < 56 { 1 } else { 2 };
    let bits = (data.len() as u64).wrapping_mul(8);
    tail[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
    for b in 0..blocks {
        compress(&mut state, tail[b * 64..b * 64 + 64].try_into().expect("64-byte block"));
    }
    state_bytes(&state)
}

/// Double SHA-256, the Bitcoin proof-of-work hash, in internal byte order.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    sha256(&sha256(data))
}

/// The 16 words of the header's second block (bytes 64..80 plus the constant
/// padding of an 80-byte message) for one nonce.
#[inline(always)]
pub(crate) fn block2_words(tail: &[u32; 3], nonce: u32) -> [u32; 16] {
    let mut w = [0u32; 16];
    w[..3].copy_from_slice(tail);
    // Header bytes 76..80 hold the nonce little-endian; SHA-256 reads them big-endian.
    w[3] = nonce.swap_bytes();
    w[4] = 0x8000_0000;
    w[15] = 80 * 8;
    w
}

/// The block of the second hash: the first digest followed by padding for 32 bytes.
#[inline(always)]
pub(crate) fn hash2_block(h1: &[u32; 8]) -> [u32; 16] {
    let mut w = [0u32; 16];
    w[..8].copy_from_slice(h1);
    w[8] = 0x8000_0000;
    w[15] = 32 * 8;
    w
}

/// sha256d of the header with `nonce`, from the midstate: two compressions.
pub(crate) fn hash_from_midstate(input: &SearchInput, nonce: u32) -> [u8; 32] {
    let mut h1 = input.midstate;
    compress_words(&mut h1, &block2_words(&input.tail, nonce));
    let mut h2 = H0;
    compress_words(&mut h2, &hash2_block(&h1));
    state_bytes(&h2)
}

/// Scalar nonce loop over `start..end`; pushes exact hits in ascending order.
pub fn scan(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let mut n = start as u64;
    while n < end {
        let nonce = n as u32;
        if input.meets(&hash_from_midstate(input, nonce)) {
            hits.push(nonce);
        }
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn nist_vectors() {
        assert_eq!(hex(&sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(hex(&sha256(b"")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(
            hex(&sha256(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn matches_sha2_crate_all_lengths() {
        // Every length up to three blocks crosses each padding boundary (55/56/64).
        let data: Vec<u8> = (0..200u32).map(|i| (i * 151 + 7) as u8).collect();
        for len in 0..data.len() {
            let ours = sha256(&data[..len]);
            let theirs: [u8; 32] = Sha256::digest(&data[..len]).into();
            assert_eq!(ours, theirs, "len {len}");
            let d2: [u8; 32] = Sha256::digest(theirs).into();
            assert_eq!(sha256d(&data[..len]), d2, "sha256d len {len}");
        }
    }
}
