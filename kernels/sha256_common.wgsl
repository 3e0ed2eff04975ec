// SHA-256 building blocks (FIPS 180-4, 4.1.2), shared by the kernels that
// name this file in a `// requires:` line; the host prepends it.

fn rotr(x: u32, n: u32) -> u32 {
    return (x >> n) | (x << (32u - n));
}

fn bsig0(x: u32) -> u32 {
    return rotr(x, 2u) ^ rotr(x, 13u) ^ rotr(x, 22u);
}

fn bsig1(x: u32) -> u32 {
    return rotr(x, 6u) ^ rotr(x, 11u) ^ rotr(x, 25u);
}

fn ssig0(x: u32) -> u32 {
    return rotr(x, 7u) ^ rotr(x, 18u) ^ (x >> 3u);
}

fn ssig1(x: u32) -> u32 {
    return rotr(x, 17u) ^ rotr(x, 19u) ^ (x >> 10u);
}

// (e & f) ^ (~e & g) in three operations.
fn ch(e: u32, f: u32, g: u32) -> u32 {
    return g ^ (e & (f ^ g));
}

// (a & b) ^ (a & c) ^ (b & c) in four operations.
fn maj(a: u32, b: u32, c: u32) -> u32 {
    return (a & b) | (c & (a | b));
}

// Byte swap: SHA-256 words are big-endian, Bitcoin's nonce and hash integers little-endian.
fn bswap32(x: u32) -> u32 {
    return (x << 24u) | ((x << 8u) & 0x00ff0000u) | ((x >> 8u) & 0x0000ff00u) | (x >> 24u);
}
