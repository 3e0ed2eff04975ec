//! The 80-byte block header with typed fields.

use super::hash::{BlockHash, TxMerkleNode};
use super::target::{CompactError, CompactTarget, Target};
use super::ChainError;

/// A Bitcoin block header. Serialised as: version (i32 LE), previous block hash
/// (internal order), merkle root (internal order), time (u32 LE), nBits (u32 LE),
/// nonce (u32 LE).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Header {
    pub version: i32,
    pub prev_blockhash: BlockHash,
    pub merkle_root: TxMerkleNode,
    pub time: u32,
    pub bits: CompactTarget,
    pub nonce: u32,
}

/// Why a header fails its proof of work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PowError {
    #[error(transparent)]
    BadBits(#[from] CompactError),
    #[error("nBits {0} is zero or above the chain's proof-of-work limit")]
    OutOfRange(CompactTarget),
    #[error("hash {hash} is above the target {target}")]
    HashAboveTarget { hash: BlockHash, target: Target },
}

impl Header {
    pub const SIZE: usize = 80;

    pub fn to_bytes(&self) -> [u8; 80] {
        let mut b = [0u8; 80];
        b[0..4].copy_from_slice(&self.version.to_le_bytes());
        b[4..36].copy_from_slice(self.prev_blockhash.as_byte_array());
        b[36..68].copy_from_slice(self.merkle_root.as_byte_array());
        b[68..72].copy_from_slice(&self.time.to_le_bytes());
        b[72..76].copy_from_slice(&self.bits.to_consensus().to_le_bytes());
        b[76..80].copy_from_slice(&self.nonce.to_le_bytes());
        b
    }

    /// Parses exactly 80 bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Header, ChainError> {
        let b: &[u8; 80] = b.try_into().map_err(|_| ChainError::Length {
            what: "header",
            expected: 80,
            got_hex_chars: 2 * b.len(),
        })?;
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Ok(Header {
            version: u32_at(0) as i32,
            prev_blockhash: BlockHash::from_byte_array(b[4..36].try_into().unwrap()),
            merkle_root: TxMerkleNode::from_byte_array(b[36..68].try_into().unwrap()),
            time: u32_at(68),
            bits: CompactTarget::from_consensus(u32_at(72)),
            nonce: u32_at(76),
        })
    }

    /// Parses 160 hex characters of the serialised header.
    pub fn from_hex(s: &str) -> Result<Header, ChainError> {
        let b = super::hash::decode_hex_array::<80>("header", s)?;
        Header::from_bytes(&b)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.to_bytes())
    }

    pub fn block_hash(&self) -> BlockHash {
        BlockHash::hash(&self.to_bytes())
    }

    /// The target nBits expands to.
    pub fn target(&self) -> Result<Target, CompactError> {
        Target::from_compact(self.bits)
    }

    /// Bitcoin's `CheckProofOfWork`: nBits valid, non-zero, within `limit`,
    /// and the header's hash at most the target. Returns the hash.
    pub fn check_pow(&self, limit: Target) -> Result<BlockHash, PowError> {
        let target = self.target()?;
        if !target.check_pow_limit(limit) {
            return Err(PowError::OutOfRange(self.bits));
        }
        let hash = self.block_hash();
        if !target.is_met_by(&hash) {
            return Err(PowError::HashAboveTarget { hash, target });
        }
        Ok(hash)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENESIS: &str = "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c";

    #[test]
    fn genesis_fields() {
        let h = Header::from_hex(GENESIS).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.prev_blockhash, BlockHash::ZERO);
        assert_eq!(h.merkle_root.to_string(), "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
        assert_eq!(h.time, 1231006505);
        assert_eq!(h.bits.to_consensus(), 0x1d00ffff);
        assert_eq!(h.nonce, 2083236893);
        assert_eq!(h.to_hex(), GENESIS);
    }

    #[test]
    fn wrong_lengths_are_errors() {
        assert!(Header::from_bytes(&[0u8; 79]).is_err());
        assert!(Header::from_bytes(&[0u8; 81]).is_err());
        assert!(Header::from_hex(&GENESIS[..158]).is_err());
        assert!(Header::from_hex(&format!("{}zz", &GENESIS[..158])).is_err());
    }
}
