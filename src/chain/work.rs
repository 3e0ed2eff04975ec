//! A unit of mining work as every node adapter can express it: the parts of a
//! header plus a coinbase split around the extranonce. Rolling extranonce2
//! gives a fresh merkle root and so a fresh 2^32 nonce space.

use super::coinbase;
use super::hash::BlockHash;
use super::header::Header;
use super::merkle;
use super::target::CompactTarget;
use super::ChainError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkTemplate {
    pub version: i32,
    pub prev_blockhash: BlockHash,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    pub extranonce1: Vec<u8>,
    /// Bytes of extranonce2 the miner fills in (Stratum's `extranonce2_size`).
    pub extranonce2_size: usize,
    /// Merkle siblings of the coinbase, internal byte order.
    pub merkle_branch: Vec<[u8; 32]>,
    pub bits: CompactTarget,
    pub time: u32,
}

impl WorkTemplate {
    /// The number of distinct extranonce2 values (saturating at u64::MAX).
    pub fn extranonce2_space(&self) -> u64 {
        if self.extranonce2_size >= 8 {
            u64::MAX
        } else {
            1u64 << (8 * self.extranonce2_size)
        }
    }

    /// extranonce2 as bytes: the counter little-endian, zero-padded to the
    /// negotiated size (sizes above 8 bytes are padded with zeros).
    pub fn extranonce2_bytes(&self, en2: u64) -> Result<Vec<u8>, ChainError> {
        if self.extranonce2_size < 8 && en2 >= self.extranonce2_space() {
            return Err(ChainError::Invalid("extranonce2 counter exceeds its size"));
        }
        let mut b = en2.to_le_bytes().to_vec();
        b.resize(self.extranonce2_size, 0);
        Ok(b)
    }

    pub fn coinbase(&self, en2: u64) -> Result<Vec<u8>, ChainError> {
        let en2 = self.extranonce2_bytes(en2)?;
        Ok(coinbase::assemble(&self.coinb1, &self.extranonce1, &en2, &self.coinb2))
    }

    /// The header for this extranonce2 and nonce.
    pub fn header(&self, en2: u64, nonce: u32) -> Result<Header, ChainError> {
        let cb = self.coinbase(en2)?;
        let merkle_root = merkle::root_from_branch(&coinbase::txid(&cb), &self.merkle_branch);
        Ok(Header {
            version: self.version,
            prev_blockhash: self.prev_blockhash,
            merkle_root,
            time: self.time,
            bits: self.bits,
            nonce,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(size: usize) -> WorkTemplate {
        WorkTemplate {
            version: 0x2000_0000,
            prev_blockhash: BlockHash::ZERO,
            coinb1: vec![1, 2],
            coinb2: vec![3],
            extranonce1: vec![0xaa],
            extranonce2_size: size,
            merkle_branch: vec![[7; 32]],
            bits: CompactTarget::from_consensus(0x207fffff),
            time: 1,
        }
    }

    #[test]
    fn extranonce2_is_exactly_its_size() {
        let t = template(4);
        assert_eq!(t.extranonce2_bytes(0x0102).unwrap(), vec![2, 1, 0, 0]);
        assert!(t.extranonce2_bytes(1 << 32).is_err());
        assert_eq!(t.coinbase(1).unwrap(), vec![1, 2, 0xaa, 1, 0, 0, 0, 3]);
        assert_eq!(template(10).extranonce2_bytes(u64::MAX).unwrap().len(), 10);
        assert_ne!(t.header(1, 0).unwrap().merkle_root, t.header(2, 0).unwrap().merkle_root);
    }
}
