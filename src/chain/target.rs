//! Proof-of-work targets: the compact form in headers (nBits), the 256-bit
//! target it expands to, and difficulty (how many times harder than the
//! difficulty-1 target `0x00000000FFFF0000…`, which Bitcoin and Stratum pools
//! share).

use super::hash::BlockHash;
use super::uint::U256;
use super::ChainError;

/// nBits as found in a header: a base-256 float, 1 byte exponent and a
/// 23-bit mantissa with a sign bit, following Bitcoin Core's `SetCompact`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CompactTarget(u32);

impl CompactTarget {
    pub const fn from_consensus(bits: u32) -> Self {
        CompactTarget(bits)
    }
    pub const fn to_consensus(self) -> u32 {
        self.0
    }
    /// Parses the 8 hex characters a Stratum `mining.notify` or an RPC sends
    /// (big-endian, as printed: "1d00ffff").
    pub fn from_hex(s: &str) -> Result<Self, ChainError> {
        let b = super::hash::decode_hex_array::<4>("nBits", s)?;
        Ok(CompactTarget(u32::from_be_bytes(b)))
    }
    pub fn to_hex(self) -> String {
        format!("{:08x}", self.0)
    }
}

impl std::fmt::Display for CompactTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// Why an nBits value does not describe a usable target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CompactError {
    #[error("nBits {0:08x} has the sign bit set with a non-zero mantissa (negative target)")]
    Negative(u32),
    #[error("nBits {0:08x} expands past 256 bits")]
    Overflow(u32),
}

/// A 256-bit target. A hash meets it when the hash, read as a little-endian
/// integer, is at most the target.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Target(U256);

impl Target {
    pub const ZERO: Target = Target(U256::ZERO);
    pub const MAX: Target = Target(U256::MAX);
    /// Difficulty 1: 0xFFFF × 2^208 (nBits 0x1d00ffff), Bitcoin's and every
    /// Stratum pool's reference for difficulty.
    pub const DIFF1: Target = Target(U256([0, 0, 0, 0x0000_0000_FFFF_0000]));
    /// Regtest's proof-of-work limit (nBits 0x207fffff).
    pub const REGTEST_LIMIT: Target = Target(U256([0, 0, 0, 0x7fff_ff00_0000_0000]));

    pub const fn from_u256(v: U256) -> Self {
        Target(v)
    }
    pub const fn to_u256(self) -> U256 {
        self.0
    }

    /// Expands nBits exactly as Bitcoin Core's `arith_uint256::SetCompact`.
    /// A zero mantissa gives `Target::ZERO` (which no consensus check accepts,
    /// see [`Target::check_pow_limit`]).
    pub fn from_compact(bits: CompactTarget) -> Result<Target, CompactError> {
        let n = bits.0;
        let size = n >> 24;
        let mut word = n & 0x007f_ffff;
        // Core shifts a short mantissa down before testing sign and overflow,
        // so e.g. 0x01803456 is zero, not negative.
        if size <= 3 {
            word >>= 8 * (3 - size);
        }
        if word != 0 && (n & 0x0080_0000) != 0 {
            return Err(CompactError::Negative(n));
        }
        if word != 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) {
            return Err(CompactError::Overflow(n));
        }
        let v =
            if size <= 3 { U256::from_u64(word as u64) } else { U256::from_u64(word as u64).shl_bits(8 * (size - 3)) };
        Ok(Target(v))
    }

    /// The canonical nBits for this target (Bitcoin Core's `GetCompact`):
    /// precision below the 23-bit mantissa is dropped.
    pub fn to_compact(self) -> CompactTarget {
        let mut size = self.0.bits().div_ceil(8);
        let mut compact = if size <= 3 {
            (self.0.low_u64() << (8 * (3 - size))) as u32
        } else {
            self.0.shr_bits(8 * (size - 3)).low_u64() as u32
        };
        // The mantissa is signed: move a set top bit into the exponent.
        if compact & 0x0080_0000 != 0 {
            compact >>= 8;
            size += 1;
        }
        CompactTarget(compact | (size << 24))
    }

    /// Is this target usable for proof of work under `limit` (non-zero, at
    /// most the chain's limit)? Mirrors `CheckProofOfWork`'s range checks.
    pub fn check_pow_limit(self, limit: Target) -> bool {
        !self.0.is_zero() && self <= limit
    }

    /// True when `hash` (a little-endian 256-bit integer) is at most the target.
    pub fn is_met_by(&self, hash: &BlockHash) -> bool {
        U256::from_le_bytes(hash.as_byte_array()) <= self.0
    }

    /// Difficulty relative to [`Target::DIFF1`]; infinity for a zero target.
    pub fn difficulty(&self) -> f64 {
        if self.0.is_zero() {
            return f64::INFINITY;
        }
        Target::DIFF1.0.to_f64() / self.0.to_f64()
    }

    /// The target of a pool difficulty: floor(DIFF1 / difficulty). Fractional
    /// difficulties (< 1, common on test pools) are exact to f64 precision;
    /// the result saturates at `Target::MAX` and never reaches zero.
    pub fn from_difficulty(difficulty: f64) -> Result<Target, ChainError> {
        if !difficulty.is_finite() || difficulty <= 0.0 {
            return Err(ChainError::Difficulty(difficulty));
        }
        // difficulty = m × 2^e exactly, with m a 53-bit integer.
        let bits = difficulty.to_bits();
        let exp = ((bits >> 52) & 0x7ff) as i32;
        let frac = bits & ((1u64 << 52) - 1);
        let (m, e) = if exp == 0 { (frac, -1074) } else { (frac | (1 << 52), exp - 1075) };
        let tz = m.trailing_zeros();
        let (m, e) = (m >> tz, e + tz as i32);
        let v = if e <= 0 {
            Target::DIFF1.0.shl_div((-e) as u32, m)
        } else {
            Target::DIFF1.0.shl_div(0, m).shr_bits(e as u32)
        };
        Ok(Target(if v.is_zero() { U256::from_u64(1) } else { v }))
    }

    /// Little-endian bytes (Bitcoin's internal order for 256-bit numbers).
    pub fn to_le_bytes(self) -> [u8; 32] {
        self.0.to_le_bytes()
    }

    /// Parses 64 hex characters written big-endian, as people write targets.
    pub fn from_hex(s: &str) -> Result<Target, ChainError> {
        let b = super::hash::decode_hex_array::<32>("target", s)?;
        Ok(Target(U256::from_be_bytes(&b)))
    }
}

/// Big-endian hex, 64 characters.
impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0.to_be_bytes()))
    }
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Target({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(bits: u32) -> Result<Target, CompactError> {
        Target::from_compact(CompactTarget::from_consensus(bits))
    }

    #[test]
    fn diff1_is_1d00ffff() {
        assert_eq!(t(0x1d00ffff).unwrap(), Target::DIFF1);
        assert_eq!(Target::DIFF1.to_compact().to_consensus(), 0x1d00ffff);
        assert_eq!(Target::DIFF1.to_string(), format!("00000000ffff{}", "0".repeat(52)));
        assert_eq!(Target::DIFF1.difficulty(), 1.0);
        assert_eq!(t(0x207fffff).unwrap(), Target::REGTEST_LIMIT);
    }

    // Cases from Bitcoin Core's arith_uint256 tests (SetCompact / GetCompact).
    #[test]
    fn compact_edge_cases_match_core() {
        assert_eq!(t(0).unwrap(), Target::ZERO);
        assert_eq!(t(0x00123456).unwrap(), Target::ZERO);
        assert_eq!(t(0x01003456).unwrap(), Target::ZERO);
        assert_eq!(t(0x02000056).unwrap(), Target::ZERO);
        assert_eq!(t(0x03000000).unwrap(), Target::ZERO);
        assert_eq!(t(0x04000000).unwrap(), Target::ZERO);
        assert_eq!(t(0x00923456).unwrap(), Target::ZERO); // sign bit with zero mantissa: zero, not negative
        assert_eq!(t(0x01803456).unwrap(), Target::ZERO);
        assert_eq!(t(0x01123456).unwrap().to_u256(), U256::from_u64(0x12));
        assert_eq!(t(0x01123456).unwrap().to_compact().to_consensus(), 0x01120000);
        assert_eq!(t(0x02123456).unwrap().to_u256(), U256::from_u64(0x1234));
        assert_eq!(t(0x03123456).unwrap().to_u256(), U256::from_u64(0x123456));
        assert_eq!(t(0x04123456).unwrap().to_u256(), U256::from_u64(0x12345600));
        assert_eq!(t(0x05009234).unwrap().to_u256(), U256::from_u64(0x92340000));
        assert_eq!(t(0x05009234).unwrap().to_compact().to_consensus(), 0x05009234);
        assert_eq!(t(0x20123456).unwrap().to_u256(), U256::from_u64(0x123456).shl_bits(8 * 29));
        assert_eq!(t(0x20123456).unwrap().to_compact().to_consensus(), 0x20123456);
        assert_eq!(t(0x01fedcba), Err(CompactError::Negative(0x01fedcba)));
        assert_eq!(t(0x04923456), Err(CompactError::Negative(0x04923456)));
        assert_eq!(t(0xff123456), Err(CompactError::Overflow(0xff123456)));
        assert_eq!(t(0x23000001), Err(CompactError::Overflow(0x23000001)));
        assert_eq!(t(0x22000100), Err(CompactError::Overflow(0x22000100)));
        assert_eq!(t(0x21010000), Err(CompactError::Overflow(0x21010000)));
        assert!(t(0x22000001).is_ok());
        assert!(t(0x2100ffff).is_ok());
        // A top mantissa bit moves into the exponent when re-encoding.
        assert_eq!(Target::from_u256(U256::from_u64(0x80)).to_compact().to_consensus(), 0x02008000);
    }

    #[test]
    fn zero_target_is_not_a_pow_target() {
        assert!(!Target::ZERO.check_pow_limit(Target::DIFF1));
        assert!(Target::DIFF1.check_pow_limit(Target::DIFF1));
        assert!(!Target::REGTEST_LIMIT.check_pow_limit(Target::DIFF1));
    }

    #[test]
    fn difficulty_round_trips() {
        for d in [1.0, 2.0, 1024.0, 0.5, 0.001, 65536.0, 1e12, 3.0, 123456.789] {
            let target = Target::from_difficulty(d).unwrap();
            let back = target.difficulty();
            assert!((back - d).abs() / d < 1e-9, "{d} → {back}");
        }
        assert_eq!(Target::from_difficulty(1.0).unwrap(), Target::DIFF1);
        assert_eq!(Target::from_difficulty(2.0).unwrap().to_u256(), Target::DIFF1.to_u256().shr_bits(1));
        // difficulty 2^-32 saturates a 224-bit target up to 256 bits: still exact
        let easy = Target::from_difficulty(1.0 / 4294967296.0).unwrap();
        assert_eq!(easy.to_u256(), Target::DIFF1.to_u256().shl_bits(32));
        assert_eq!(Target::from_difficulty(1e-30).unwrap(), Target::MAX);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Target::from_difficulty(bad).is_err());
        }
    }

    #[test]
    fn hex_round_trip() {
        let s = "00000000000404cb000000000000000000000000000000000000000000000000";
        let tg = Target::from_hex(s).unwrap();
        assert_eq!(tg.to_string(), s);
        assert_eq!(tg.to_compact().to_consensus(), 0x1b0404cb);
        assert!(Target::from_hex("12").is_err());
    }
}
