//! The demo chain itself: genesis, templates, and the independent check of
//! every block before it joins the chain kept in memory.
//!
//! Its rules, simplified from Bitcoin's: the header links to the tip; nBits
//! is the difficulty the node last set for that height (the node sets it from
//! the hashrate it measures, see the module above; a block carrying an older
//! one is refused); timestamps do not go back and are at most 2 h ahead (no
//! median-time-past rule: demo blocks can come several per second); the
//! coinbase carries the BIP34 height; the merkle root matches the
//! transactions; the proof of work meets nBits, itself within regtest's limit.

use crate::chain::coinbase::{self, TxOut};
use crate::chain::{merkle, BlockHash, CompactTarget, Header, PowError, Target, Txid, WorkTemplate};

/// A block: header and transactions (legacy serialisation, coinbase first).
#[derive(Clone, Debug)]
pub struct Block {
    pub header: Header,
    pub txs: Vec<Vec<u8>>,
}

/// Why the demo node refused a block.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Reject {
    #[error("does not build on the tip (prev {0})")]
    NotOnTip(BlockHash),
    #[error("nBits {got} where the chain now requires {want}")]
    BadBits { got: CompactTarget, want: CompactTarget },
    #[error("timestamp {0} is before its parent's or too far in the future")]
    BadTime(u32),
    #[error("no transactions")]
    Empty,
    #[error("bad coinbase: {0}")]
    BadCoinbase(String),
    #[error("coinbase height {got}, expected {want}")]
    BadHeight { got: u32, want: u32 },
    #[error("merkle root does not match the transactions")]
    BadMerkleRoot,
    #[error(transparent)]
    Pow(#[from] PowError),
}

struct Stored {
    header: Header,
    hash: BlockHash,
    txs: usize,
}

pub struct DemoChain {
    blocks: Vec<Stored>,
    next_bits: CompactTarget,
}

/// The demo chain's proof-of-work limit, as regtest's.
pub const POW_LIMIT: Target = Target::REGTEST_LIMIT;
const PAYOUT_SCRIPT: [u8; 1] = [0x51]; // OP_TRUE: the demo has no wallet
const BLOCK_REWARD: u64 = 50 * 100_000_000;
const MAX_FUTURE_SECS: u32 = 2 * 60 * 60;

fn unix_now() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

/// nBits for `difficulty`, never easier than the proof-of-work limit.
fn bits_for(difficulty: f64) -> CompactTarget {
    let t = Target::from_difficulty(difficulty).unwrap_or(POW_LIMIT);
    t.min(POW_LIMIT).to_compact()
}

/// A few deterministic, well-formed transactions per height so blocks have a
/// real merkle tree. They spend made-up outputs: the demo keeps no UTXO set.
pub fn demo_transactions(height: u32) -> Vec<Vec<u8>> {
    (0..(2 + height % 5))
        .map(|i| {
            let mut tx = Vec::new();
            tx.extend_from_slice(&2u32.to_le_bytes());
            tx.push(1);
            tx.extend_from_slice(&crate::chain::hash::sha256(&[height.to_le_bytes(), i.to_le_bytes()].concat()));
            tx.extend_from_slice(&i.to_le_bytes());
            tx.push(0); // empty scriptSig
            tx.extend_from_slice(&u32::MAX.to_le_bytes());
            tx.push(1);
            tx.extend_from_slice(&(1000 + i as u64).to_le_bytes());
            tx.push(1);
            tx.push(0x51);
            tx.extend_from_slice(&0u32.to_le_bytes());
            tx
        })
        .collect()
}

impl DemoChain {
    /// A chain holding only a freshly mined genesis block; the first block
    /// after it needs `difficulty`.
    pub fn new(difficulty: f64) -> DemoChain {
        let cb = coinbase::build(
            0,
            1,
            b"hashrig demo genesis",
            &[TxOut { value: BLOCK_REWARD, script_pubkey: PAYOUT_SCRIPT.to_vec() }],
        )
        .expect("static coinbase");
        let cb = coinbase::assemble(&cb.coinb1, &[0], &[], &cb.coinb2);
        let mut header = Header {
            version: 1,
            prev_blockhash: BlockHash::ZERO,
            merkle_root: merkle::root(&[coinbase::txid(&cb)]).expect("one tx"),
            time: unix_now(),
            bits: POW_LIMIT.to_compact(),
            nonce: 0,
        };
        // Half of all hashes meet the regtest limit: a handful of tries.
        while header.check_pow(POW_LIMIT).is_err() {
            header.nonce += 1;
        }
        let genesis = Stored { hash: header.block_hash(), header, txs: 1 };
        DemoChain { blocks: vec![genesis], next_bits: bits_for(difficulty) }
    }

    pub fn height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.blocks.last().expect("genesis").hash
    }

    /// The target the next block must carry (its nBits).
    pub fn next_target(&self) -> Target {
        Target::from_compact(self.next_bits).expect("we only store valid nBits")
    }

    pub fn next_bits(&self) -> CompactTarget {
        self.next_bits
    }

    /// Sets the difficulty the next block needs, from now on: blocks of work
    /// handed out before carry the old nBits and are refused.
    pub fn set_difficulty(&mut self, difficulty: f64) {
        self.next_bits = bits_for(difficulty);
    }

    /// Work for the next block: the template miners fill in, and the other
    /// transactions the block carries. `job` goes into the coinbase, so that
    /// every job at one height has headers of its own (an engine restarts at
    /// nonce 0 on each job; without it two jobs would repeat each other's
    /// shares).
    pub fn template(&self, extranonce2_size: usize, job: u32) -> (WorkTemplate, Vec<Vec<u8>>) {
        let height = self.height() + 1;
        let txs = demo_transactions(height);
        let parts = coinbase::build(
            height,
            extranonce2_size,
            format!("/hashrig demo/{job}/").as_bytes(),
            &[TxOut { value: BLOCK_REWARD, script_pubkey: PAYOUT_SCRIPT.to_vec() }],
        )
        .expect("extranonce size checked by caller");
        let mut ids = vec![Txid::ZERO];
        ids.extend(txs.iter().map(|t| coinbase::txid(t)));
        let tip = self.blocks.last().expect("genesis");
        let template = WorkTemplate {
            version: 0x2000_0000,
            prev_blockhash: tip.hash,
            coinb1: parts.coinb1,
            coinb2: parts.coinb2,
            extranonce1: Vec::new(),
            extranonce2_size,
            merkle_branch: merkle::branch_for_coinbase(&ids),
            bits: self.next_bits,
            time: unix_now().max(tip.header.time),
            version_mask: 0,
            fixed_merkle_root: None,
        };
        (template, txs)
    }

    /// Checks `block` independently of how it was made and appends it. The
    /// next block needs the same difficulty until [`set_difficulty`](Self::set_difficulty).
    pub fn submit(&mut self, block: &Block) -> Result<BlockHash, Reject> {
        let tip = self.blocks.last().expect("genesis");
        let h = &block.header;
        if h.prev_blockhash != tip.hash {
            return Err(Reject::NotOnTip(h.prev_blockhash));
        }
        if h.bits != self.next_bits {
            return Err(Reject::BadBits { got: h.bits, want: self.next_bits });
        }
        if h.time < tip.header.time || h.time > unix_now().saturating_add(MAX_FUTURE_SECS) {
            return Err(Reject::BadTime(h.time));
        }
        let cb = block.txs.first().ok_or(Reject::Empty)?;
        let ss = coinbase::coinbase_script_sig(cb).map_err(|e| Reject::BadCoinbase(e.to_string()))?;
        let got = coinbase::parse_bip34_height(ss).map_err(|e| Reject::BadCoinbase(e.to_string()))?;
        let want = self.height() + 1;
        if got != want {
            return Err(Reject::BadHeight { got, want });
        }
        let ids: Vec<Txid> = block.txs.iter().map(|t| coinbase::txid(t)).collect();
        if merkle::root(&ids) != Some(h.merkle_root) {
            return Err(Reject::BadMerkleRoot);
        }
        let hash = h.check_pow(POW_LIMIT)?;
        self.blocks.push(Stored { header: *h, hash, txs: block.txs.len() });
        Ok(hash)
    }

    /// Total transactions stored (for the log line).
    pub fn tx_count(&self) -> usize {
        self.blocks.iter().map(|b| b.txs).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine_job(chain: &DemoChain, job: u32) -> Block {
        let (t, txs) = chain.template(4, job);
        let target = chain.next_target();
        for en2 in 0.. {
            let mut h = t.header(en2, 0).unwrap();
            for nonce in 0..=u32::MAX {
                h.nonce = nonce;
                if target.is_met_by(&h.block_hash()) {
                    let mut all = vec![t.coinbase(en2).unwrap()];
                    all.extend(txs);
                    return Block { header: h, txs: all };
                }
            }
        }
        unreachable!()
    }

    fn mine(chain: &DemoChain) -> Block {
        mine_job(chain, 0)
    }

    const EASY: f64 = 1.0 / 65536.0;

    #[test]
    fn accepts_mined_blocks_and_links_them() {
        let mut c = DemoChain::new(EASY);
        for _ in 0..3 {
            let b = mine(&c);
            let hash = c.submit(&b).unwrap();
            assert_eq!(c.tip_hash(), hash);
        }
        assert_eq!(c.height(), 3);
    }

    #[test]
    fn rejects_tampered_blocks() {
        let mut c = DemoChain::new(EASY);
        let good = mine(&c);

        let mut b = good.clone();
        b.txs.pop();
        assert_eq!(c.submit(&b), Err(Reject::BadMerkleRoot));

        let mut b = good.clone();
        b.header.prev_blockhash = BlockHash::ZERO;
        assert!(matches!(c.submit(&b), Err(Reject::NotOnTip(_))));

        let mut b = good.clone();
        b.header.bits = CompactTarget::from_consensus(0x207fffff);
        assert!(matches!(c.submit(&b), Err(Reject::BadBits { .. })));

        // A nonce that misses the target.
        let mut b = good.clone();
        while c.next_target().is_met_by(&b.header.block_hash()) {
            b.header.nonce = b.header.nonce.wrapping_add(1);
        }
        assert!(matches!(c.submit(&b), Err(Reject::Pow(PowError::HashAboveTarget { .. }))));

        // Wrong height in the coinbase: build next-next height's coinbase.
        let mut b = good.clone();
        let parts = coinbase::build(c.height() + 2, 4, b"", &[]).unwrap();
        b.txs[0] = coinbase::assemble(&parts.coinb1, &[], &[0; 4], &parts.coinb2);
        assert!(matches!(c.submit(&b), Err(Reject::BadHeight { .. })));

        assert_eq!(c.height(), 0, "nothing bad was appended");
        c.submit(&good).unwrap();
        assert_eq!(c.submit(&good), Err(Reject::NotOnTip(good.header.prev_blockhash)), "no duplicate");
    }

    #[test]
    fn jobs_at_one_height_have_their_own_headers_and_each_makes_a_block() {
        let c = DemoChain::new(EASY);
        let (a, _) = c.template(4, 0);
        let (b, _) = c.template(4, 1);
        assert_ne!(a.header(0, 0).unwrap().merkle_root, b.header(0, 0).unwrap().merkle_root);
        for job in [0, 1] {
            let mut c2 = DemoChain::new(EASY);
            // Same genesis time is not guaranteed: mine on c2's own template.
            let block = mine_job(&c2, job);
            c2.submit(&block).unwrap();
        }
    }

    #[test]
    fn a_new_difficulty_applies_at_once_and_refuses_the_old_nbits() {
        let mut c = DemoChain::new(EASY);
        let old = mine(&c);
        c.set_difficulty(EASY * 2.0);
        assert!(matches!(c.submit(&old), Err(Reject::BadBits { .. })));
        let new = mine(&c);
        assert_eq!(new.header.bits, bits_for(EASY * 2.0));
        c.submit(&new).unwrap();
        // The difficulty holds for the next height until set again.
        assert_eq!(c.next_bits(), bits_for(EASY * 2.0));
        // Never easier than the proof-of-work limit.
        c.set_difficulty(1e-30);
        assert_eq!(c.next_target(), Target::from_compact(POW_LIMIT.to_compact()).unwrap());
    }
}
