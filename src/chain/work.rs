//! A unit of mining work as every node adapter can express it: the parts of a
//! header plus a coinbase split around the extranonce. Rolling extranonce2
//! gives a fresh merkle root and so a fresh 2^32 nonce space.

use super::coinbase;
use super::hash::{BlockHash, TxMerkleNode};
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
    /// BIP310 version-rolling mask: header version bits the miner may change
    /// (0: no rolling). Rolling multiplies the space of one extranonce2.
    pub version_mask: u32,
    /// Header-only work (Stratum V2 standard channels): the pool fixed the
    /// merkle root, so the coinbase fields are unused and only version bits,
    /// nonce and time roll (`extranonce2_size` is 0).
    pub fixed_merkle_root: Option<TxMerkleNode>,
}

/// Most version bits rolled (2^16 versions per extranonce2, as ASICs use).
pub const MAX_VERSION_ROLL_BITS: u32 = 16;

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

    /// Version bits rolled: the mask's lowest set bits, at most
    /// [`MAX_VERSION_ROLL_BITS`].
    pub fn version_roll_bits(&self) -> u32 {
        self.version_mask.count_ones().min(MAX_VERSION_ROLL_BITS)
    }

    /// Headers per job: extranonce2 values × rolled versions (saturating).
    /// The scheduler's "extranonce2" cursor walks this roll index.
    pub fn roll_space(&self) -> u64 {
        let v = self.version_roll_bits();
        let en2 = self.extranonce2_space();
        if en2 > (u64::MAX >> v) {
            u64::MAX
        } else {
            en2 << v
        }
    }

    /// A roll index as (extranonce2 counter, header version). Without a mask
    /// the index is the extranonce2 counter and the version is unchanged. With
    /// one, the low bits of the index are deposited into the mask's bits
    /// (lowest first) and XORed into the version, and the rest is the
    /// extranonce2 counter. Index 0 is the template's own version; bits
    /// outside the mask never change, so a BIP310 pool rebuilds the version
    /// from `version & mask`.
    pub fn split_roll(&self, index: u64) -> (u64, i32) {
        let v = self.version_roll_bits();
        if v == 0 {
            return (index, self.version);
        }
        let mut rolled = 0u32;
        let mut bits = index & ((1u64 << v) - 1);
        let mut mask = self.version_mask;
        while bits != 0 && mask != 0 {
            let low = mask & mask.wrapping_neg();
            if bits & 1 == 1 {
                rolled |= low;
            }
            bits >>= 1;
            mask &= mask - 1;
        }
        let version = (self.version as u32 ^ rolled) as i32;
        (index >> v, version)
    }

    pub fn coinbase(&self, en2: u64) -> Result<Vec<u8>, ChainError> {
        let en2 = self.extranonce2_bytes(en2)?;
        Ok(coinbase::assemble(&self.coinb1, &self.extranonce1, &en2, &self.coinb2))
    }

    /// The header for this roll index (see [`WorkTemplate::split_roll`]; the
    /// extranonce2 counter itself when no version mask is set) and nonce.
    pub fn header(&self, roll: u64, nonce: u32) -> Result<Header, ChainError> {
        let (en2, version) = self.split_roll(roll);
        let merkle_root = match self.fixed_merkle_root {
            Some(root) if en2 == 0 => root,
            Some(_) => return Err(ChainError::Invalid("header-only work has no extranonce2 to roll")),
            None => merkle::root_from_branch(&coinbase::txid(&self.coinbase(en2)?), &self.merkle_branch),
        };
        Ok(Header {
            version,
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
            version_mask: 0,
            fixed_merkle_root: None,
        }
    }

    #[test]
    fn version_rolling_deposits_index_bits_into_the_mask() {
        let mut t = template(4);
        assert_eq!(t.split_roll(5), (5, 0x2000_0000));
        assert_eq!(t.roll_space(), 1 << 32);
        t.version_mask = 0x1fff_e000;
        assert_eq!(t.version_roll_bits(), 16);
        assert_eq!(t.roll_space(), 1 << 48);
        assert_eq!(t.split_roll(0), (0, 0x2000_0000));
        assert_eq!(t.split_roll(1), (0, 0x2000_2000));
        assert_eq!(t.split_roll(0b101), (0, 0x2000_a000));
        assert_eq!(t.split_roll((3 << 16) | 1), (3, 0x2000_2000));
        let h = t.header((3 << 16) | 1, 9).unwrap();
        assert_eq!(h.version, 0x2000_2000);
        assert_eq!(h.merkle_root, t.header(3 << 16, 9).unwrap().merkle_root);
        for i in 0..(1u64 << 16) {
            let (_, v) = t.split_roll(i);
            assert_eq!(v as u32 & !t.version_mask, 0x2000_0000);
        }
        t.version_mask = 0x0000_0006; // fewer bits than the cap
        assert_eq!(t.split_roll(7), (1, 0x2000_0006));
        t.version = 0x2000_0004; // a template that already set a mask bit
        assert_eq!(t.split_roll(0), (0, 0x2000_0004));
        assert_eq!(t.split_roll(2), (0, 0x2000_0000));
    }

    #[test]
    fn header_only_work_keeps_the_pools_merkle_root() {
        let mut t = template(0);
        t.coinb1.clear();
        t.coinb2.clear();
        t.merkle_branch.clear();
        t.fixed_merkle_root = Some(TxMerkleNode::from_byte_array([0x5a; 32]));
        t.version_mask = 0x1fff_e000;
        assert_eq!(t.roll_space(), 1 << 16, "only version bits roll");
        let h = t.header(3, 9).unwrap();
        assert_eq!(h.merkle_root.to_byte_array(), [0x5a; 32]);
        assert_eq!((h.version, h.nonce), (0x2000_6000, 9));
        assert!(t.header(1 << 16, 0).is_err(), "no extranonce2 to roll");
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
