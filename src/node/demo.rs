//! The embedded demo node: an in-process regtest-style chain that hashrig
//! mines when nothing else is configured, so `make run` shows real work.
//!
//! It is a small node, not a mock: its own genesis, a difficulty that retargets
//! toward a block time, a fresh template (coinbase with BIP34 height, a few
//! transactions) after every block, and an independent check of every block it
//! receives (link to the tip, nBits, timestamps, coinbase height, merkle root,
//! proof of work) before the block joins the chain it keeps in memory.
//!
//! Like a pool it also hands out an easier share target (1/16 of the block
//! difficulty), so the status line shows accepted shares between blocks.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::chain::coinbase::{self, TxOut};
use crate::chain::{merkle, BlockHash, CompactTarget, Header, PowError, Target, Txid, WorkTemplate};
use crate::metrics::Metrics;
use crate::sched::{Hit, PowJob, PowScheduler, Stats};

#[derive(Clone, Debug, PartialEq)]
pub struct DemoParams {
    /// Block time the difficulty retargets toward.
    pub block_time: Duration,
    /// Difficulty of the first block after genesis.
    pub initial_difficulty: f64,
    /// Blocks between retargets.
    pub retarget_interval: u32,
    /// Shares per block on average (share difficulty = block difficulty / this).
    pub shares_per_block: f64,
}

impl Default for DemoParams {
    fn default() -> Self {
        DemoParams {
            block_time: Duration::from_secs(10),
            initial_difficulty: 0.01,
            retarget_interval: 5,
            shares_per_block: 16.0,
        }
    }
}

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
    #[error("nBits {got} where the chain requires {want}")]
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
    received: Instant,
}

pub struct DemoChain {
    params: DemoParams,
    blocks: Vec<Stored>,
    next_bits: CompactTarget,
}

/// The demo chain's proof-of-work limit, as regtest's.
pub const POW_LIMIT: Target = Target::REGTEST_LIMIT;
const PAYOUT_SCRIPT: [u8; 1] = [0x51]; // OP_TRUE: the demo has no wallet
const BLOCK_REWARD: u64 = 50 * 100_000_000;
const MAX_FUTURE_SECS: u32 = 2 * 60 * 60;

fn unix_now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as u32).unwrap_or(0)
}

fn bits_for(difficulty: f64) -> CompactTarget {
    let t = Target::from_difficulty(difficulty).unwrap_or(POW_LIMIT);
    t.min(POW_LIMIT).to_compact()
}

/// A few deterministic, well-formed transactions per height so blocks have a
/// real merkle tree. They spend made-up outputs: the demo keeps no UTXO set.
fn demo_transactions(height: u32) -> Vec<Vec<u8>> {
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
    /// A chain holding only a freshly mined genesis block.
    pub fn new(params: DemoParams) -> DemoChain {
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
        let genesis = Stored { hash: header.block_hash(), header, txs: 1, received: Instant::now() };
        let next_bits = bits_for(params.initial_difficulty);
        DemoChain { params, blocks: vec![genesis], next_bits }
    }

    pub fn height(&self) -> u32 {
        (self.blocks.len() - 1) as u32
    }

    pub fn tip_hash(&self) -> BlockHash {
        self.blocks.last().expect("genesis").hash
    }

    pub fn next_target(&self) -> Target {
        Target::from_compact(self.next_bits).expect("we only store valid nBits")
    }

    /// Work for the next block: the template miners fill in, and the other
    /// transactions the block carries.
    pub fn template(&self, extranonce2_size: usize) -> (WorkTemplate, Vec<Vec<u8>>) {
        let height = self.height() + 1;
        let txs = demo_transactions(height);
        let parts = coinbase::build(
            height,
            extranonce2_size,
            b"/hashrig demo/",
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

    /// Checks `block` independently of how it was made and appends it.
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
        self.blocks.push(Stored { header: *h, hash, txs: block.txs.len(), received: Instant::now() });
        self.retarget();
        Ok(hash)
    }

    /// Every `retarget_interval` blocks, scale difficulty by how far the
    /// measured block time was from the goal (at most 4× either way). Measured
    /// on the node's own clock: header times have one-second resolution and
    /// demo blocks can come faster than that.
    fn retarget(&mut self) {
        let n = self.params.retarget_interval.max(1) as usize;
        let height = self.height() as usize;
        if !height.is_multiple_of(n) || height < n + 1 {
            return;
        }
        let span = self.blocks[height].received.duration_since(self.blocks[height - n].received);
        let actual = span.as_secs_f64() / n as f64;
        let ratio = (self.params.block_time.as_secs_f64() / actual.max(1e-3)).clamp(0.25, 4.0);
        let difficulty = self.next_target().difficulty() * ratio;
        self.next_bits = bits_for(difficulty);
    }

    /// Total transactions stored (for the log line).
    pub fn tx_count(&self) -> usize {
        self.blocks.iter().map(|b| b.txs).sum()
    }
}

/// The demo as a node adapter: publishes jobs, takes hits, checks shares,
/// submits blocks to the embedded chain.
pub struct DemoNode {
    pub chain: DemoChain,
    extranonce2_size: usize,
}

impl DemoNode {
    pub fn new(params: DemoParams) -> DemoNode {
        DemoNode { chain: DemoChain::new(params), extranonce2_size: 4 }
    }

    fn publish(&self, sched: &PowScheduler) -> (u64, Vec<Vec<u8>>) {
        let (template, txs) = self.chain.template(self.extranonce2_size);
        let block_target = self.chain.next_target();
        let share_diff = block_target.difficulty() / self.chain.params.shares_per_block.max(1.0);
        let share_target = Target::from_difficulty(share_diff).unwrap_or(Target::MAX).max(block_target);
        let height = self.chain.height() + 1;
        let seq = sched.publish(PowJob {
            id: format!("demo-{height}"),
            template,
            share_target,
            height: Some(height),
            source: "demo",
        });
        (seq, txs)
    }

    /// Runs until `stop` is set, then takes the hits still queued (the
    /// engines are stopped first, so nothing found is left behind).
    pub fn run(
        mut self,
        sched: Arc<PowScheduler>,
        hits: Receiver<Hit>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) {
        let (mut seq, mut txs) = self.publish(&sched);
        let mut seen: HashSet<(u64, u64, u32)> = HashSet::new();
        loop {
            let hit = if stop.load(Ordering::Relaxed) {
                match hits.try_recv() {
                    Ok(h) => h,
                    Err(_) => break,
                }
            } else {
                match hits.recv_timeout(Duration::from_millis(200)) {
                    Ok(h) => h,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            if hit.job.seq != seq {
                metrics.shares.with_label_values(&["stale"]).inc();
                stats.stale.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            // The "pool" side checks the share itself, as a real pool would.
            let hash = hit.header.block_hash();
            let dup = !seen.insert((hit.extranonce2, hit.header.time as u64, hit.header.nonce));
            if dup || !hit.job.job.share_target.is_met_by(&hash) {
                metrics.shares.with_label_values(&["rejected"]).inc();
                stats.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(nonce = hit.header.nonce, dup, "demo: share rejected");
                continue;
            }
            metrics.shares.with_label_values(&["accepted"]).inc();
            stats.accepted.fetch_add(1, Ordering::Relaxed);
            if !self.chain.next_target().is_met_by(&hash) {
                continue;
            }
            let coinbase = match hit.job.job.template.coinbase(hit.extranonce2) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("demo: cannot rebuild coinbase: {e}");
                    continue;
                }
            };
            let mut block_txs = vec![coinbase];
            block_txs.extend(txs.iter().cloned());
            let block = Block { header: hit.header, txs: block_txs };
            match self.chain.submit(&block) {
                Ok(hash) => {
                    metrics.blocks.with_label_values(&["accepted"]).inc();
                    stats.blocks.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(
                        height = self.chain.height(),
                        %hash,
                        txs = block.txs.len(),
                        engine = hit.engine,
                        "demo: block accepted, next difficulty {:.6}",
                        self.chain.next_target().difficulty()
                    );
                    seen.clear();
                    (seq, txs) = self.publish(&sched);
                }
                Err(e) => {
                    metrics.blocks.with_label_values(&["rejected"]).inc();
                    tracing::error!("demo: block rejected: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mine(chain: &DemoChain) -> Block {
        let (t, txs) = chain.template(4);
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

    fn easy() -> DemoParams {
        DemoParams { initial_difficulty: 1.0 / 65536.0, ..DemoParams::default() }
    }

    #[test]
    fn accepts_mined_blocks_and_links_them() {
        let mut c = DemoChain::new(easy());
        for _ in 0..3 {
            let b = mine(&c);
            let hash = c.submit(&b).unwrap();
            assert_eq!(c.tip_hash(), hash);
        }
        assert_eq!(c.height(), 3);
    }

    #[test]
    fn rejects_tampered_blocks() {
        let mut c = DemoChain::new(easy());
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
}
