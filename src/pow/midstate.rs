//! Nonce loop on the `sha2` crate's block function, from the header's midstate.
//!
//! `sha2::block_api::compress256` picks SHA-NI (or ARMv8 SHA2) itself at run
//! time, so this is the portable "fast enough everywhere" path and a second
//! opinion on our own SHA-256.

use super::SearchInput;

fn words_to_block(w: &[u32; 16]) -> [u8; 64] {
    let mut b = [0u8; 64];
    for (i, x) in w.iter().enumerate() {
        b[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    b
}

pub fn scan(input: &SearchInput, start: u32, end: u64, hits: &mut Vec<u32>) {
    let mut block2 = words_to_block(&super::scalar::block2_words(&input.tail, 0));
    // The second hash's block: 32 digest bytes, then fixed padding for a 256-bit message.
    let mut block3 = [0u8; 64];
    block3[32] = 0x80;
    block3[62] = 0x01; // 256 bits, big-endian in the last 8 bytes
    let mut n = start as u64;
    while n < end {
        let nonce = n as u32;
        block2[12..16].copy_from_slice(&nonce.to_le_bytes());
        let mut h1 = input.midstate;
        sha2::block_api::compress256(&mut h1, core::slice::from_ref(&block2));
        for (i, x) in h1.iter().enumerate() {
            block3[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
        }
        let mut h2 = super::scalar::H0;
        sha2::block_api::compress256(&mut h2, core::slice::from_ref(&block3));
        // h2[7] byte-swapped is the hash's most significant LE word: filter on it first.
        if h2[7].swap_bytes() <= input.target[7] && input.confirm(nonce) {
            hits.push(nonce);
        }
        n += 1;
    }
}
