//! Just enough unsigned 256-bit arithmetic for targets: shifts, comparison,
//! division by a 64-bit integer, conversion to f64. Limbs are little-endian.

use std::cmp::Ordering;

#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct U256(pub [u64; 4]);

impl U256 {
    pub const ZERO: U256 = U256([0; 4]);
    pub const MAX: U256 = U256([u64::MAX; 4]);

    pub const fn from_u64(v: u64) -> Self {
        U256([v, 0, 0, 0])
    }

    pub fn from_le_bytes(b: &[u8; 32]) -> Self {
        let mut l = [0u64; 4];
        for (i, limb) in l.iter_mut().enumerate() {
            *limb = u64::from_le_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
        }
        U256(l)
    }

    pub fn to_le_bytes(self) -> [u8; 32] {
        let mut b = [0u8; 32];
        for i in 0..4 {
            b[8 * i..8 * i + 8].copy_from_slice(&self.0[i].to_le_bytes());
        }
        b
    }

    pub fn from_be_bytes(b: &[u8; 32]) -> Self {
        let mut le = *b;
        le.reverse();
        Self::from_le_bytes(&le)
    }

    pub fn to_be_bytes(self) -> [u8; 32] {
        let mut b = self.to_le_bytes();
        b.reverse();
        b
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 4]
    }

    pub fn low_u64(&self) -> u64 {
        self.0[0]
    }

    /// Number of significant bits (0 for zero).
    pub fn bits(&self) -> u32 {
        for i in (0..4).rev() {
            if self.0[i] != 0 {
                return 64 * i as u32 + 64 - self.0[i].leading_zeros();
            }
        }
        0
    }

    /// Shift left; bits shifted past 256 are lost (callers check `bits()` first).
    pub fn shl_bits(self, n: u32) -> Self {
        if n >= 256 {
            return U256::ZERO;
        }
        let (limbs, bits) = ((n / 64) as usize, n % 64);
        let mut r = [0u64; 4];
        for i in (limbs..4).rev() {
            let src = i - limbs;
            r[i] = self.0[src] << bits;
            if bits > 0 && src > 0 {
                r[i] |= self.0[src - 1] >> (64 - bits);
            }
        }
        U256(r)
    }

    #[allow(clippy::needless_range_loop)] // limb arithmetic reads clearer indexed
    pub fn shr_bits(self, n: u32) -> Self {
        if n >= 256 {
            return U256::ZERO;
        }
        let (limbs, bits) = ((n / 64) as usize, n % 64);
        let mut r = [0u64; 4];
        for i in 0..4 - limbs {
            let src = i + limbs;
            r[i] = self.0[src] >> bits;
            if bits > 0 && src + 1 < 4 {
                r[i] |= self.0[src + 1] << (64 - bits);
            }
        }
        U256(r)
    }

    /// Nearest f64 (exact for values below 2^53, rounded above).
    pub fn to_f64(&self) -> f64 {
        let mut v = 0.0f64;
        for i in (0..4).rev() {
            v = v * 18446744073709551616.0 + self.0[i] as f64;
        }
        v
    }

    /// floor((self << shift) / divisor), computed in 512 bits so the shift
    /// cannot overflow; saturates at MAX when the result needs more than 256 bits.
    pub fn shl_div(self, shift: u32, divisor: u64) -> Self {
        assert!(divisor != 0, "division by zero");
        if shift >= 256 {
            // Only reachable for absurd difficulties; the answer is above MAX
            // unless self is zero.
            return if self.is_zero() { U256::ZERO } else { U256::MAX };
        }
        let mut wide = [0u64; 8];
        wide[..4].copy_from_slice(&self.0);
        // shift the 512-bit number left
        let (limbs, bits) = ((shift / 64) as usize, shift % 64);
        let mut shifted = [0u64; 8];
        for i in (limbs..8).rev() {
            let src = i - limbs;
            shifted[i] = wide[src] << bits;
            if bits > 0 && src > 0 {
                shifted[i] |= wide[src - 1] >> (64 - bits);
            }
        }
        // long division by a u64, most significant limb first
        let mut q = [0u64; 8];
        let mut rem: u128 = 0;
        for i in (0..8).rev() {
            let cur = (rem << 64) | shifted[i] as u128;
            q[i] = (cur / divisor as u128) as u64;
            rem = cur % divisor as u128;
        }
        if q[4..].iter().any(|&l| l != 0) {
            return U256::MAX;
        }
        U256([q[0], q[1], q[2], q[3]])
    }
}

impl Ord for U256 {
    fn cmp(&self, other: &Self) -> Ordering {
        for i in (0..4).rev() {
            match self.0[i].cmp(&other.0[i]) {
                Ordering::Equal => continue,
                o => return o,
            }
        }
        Ordering::Equal
    }
}

impl PartialOrd for U256 {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl std::fmt::Debug for U256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{}", hex::encode(self.to_be_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_round_trip() {
        let v = U256([0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210, 7, 0]);
        for n in [0, 1, 13, 63, 64, 65, 100, 124, 125] {
            assert_eq!(v.shl_bits(n).shr_bits(n), v, "shift {n}");
        }
        assert_eq!(U256::from_u64(1).shl_bits(255).bits(), 256);
        assert_eq!(U256::from_u64(1).shl_bits(256), U256::ZERO);
    }

    #[test]
    fn shl_div_matches_small_arithmetic() {
        for (v, s, d) in [(1000u64, 3u32, 7u64), (u64::MAX, 10, 3), (5, 0, 5), (12345, 60, 999)] {
            let expect = ((v as u128) << s) / d as u128;
            let got = U256::from_u64(v).shl_div(s, d);
            assert_eq!(got.0[0] as u128 | (got.0[1] as u128) << 64, expect);
        }
        assert_eq!(U256::MAX.shl_div(1, 1), U256::MAX);
    }

    #[test]
    fn ordering_is_numeric() {
        assert!(U256([0, 0, 0, 1]) > U256([u64::MAX, u64::MAX, u64::MAX, 0]));
        assert!(U256::from_u64(2) > U256::from_u64(1));
    }
}
