//! A Template Provider for SRI's pool role (`pool_sv2`), written from SRI's
//! template-distribution crates: the Noise responder of tests/sv2_pool,
//! SetupConnection.Success, per block a future NewTemplate and the
//! SetNewPrevHash that activates it, RequestTransactionData answered (the
//! templates carry no transactions), and every SubmitSolution re-checked
//! here: its header, built from the template, must meet the template's
//! nBits.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::Hash;
use common_messages_sv2::{Protocol, SetupConnectionSuccess};
use parsers_sv2::{AnyMessage, AnyMessageOwned, CommonMessages, TemplateDistribution, TemplateDistributionOwned};
use template_distribution_sv2::{NewTemplateOwned, RequestTransactionDataSuccessOwned, SetNewPrevHashOwned};

use crate::sv2_pool::{accept_noise, keys, PoolConn, AUTHORITY_PUBLIC, AUTHORITY_SECRET};

/// nBits no share of a test meets (a 2012 mainnet block's, difficulty
/// ~1.2 million: one core finds a difficulty-1 block every few minutes), and
/// nBits every share meets (regtest's limit).
pub const HARD_BITS: u32 = 0x1903_a30c;
pub const EASY_BITS: u32 = 0x207f_ffff;

enum Cmd {
    NewBlock(u32),
}

/// What the Template Provider saw.
#[derive(Default)]
pub struct TpCounts {
    pub setups: AtomicU64,
    pub templates: AtomicU64,
    /// SubmitSolution whose header meets its template's nBits.
    pub valid_solutions: AtomicU64,
    pub invalid_solutions: AtomicU64,
    pub tx_data_requests: AtomicU64,
}

pub struct Tp {
    pub addr: SocketAddr,
    pub counts: Arc<TpCounts>,
    cmd: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
}

/// The template's header fields a solution completes.
struct Block {
    prev_hash: [u8; 32],
    nbits: u32,
}

impl Tp {
    /// Listens on a free port; serves the first pool that connects, with a
    /// first block of `nbits`.
    pub fn start(nbits: u32) -> Tp {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let counts = Arc::new(TpCounts::default());
        let (tx, rx) = mpsc::channel();
        let c = counts.clone();
        let thread = std::thread::spawn(move || {
            let conn = accept_noise(&l, keys(AUTHORITY_PUBLIC, AUTHORITY_SECRET), None);
            serve(conn, rx, &c, nbits);
        });
        Tp { addr, counts, cmd: tx, thread: Some(thread) }
    }

    /// A new block on top of the last: a future template, then its
    /// SetNewPrevHash.
    pub fn new_block(&self, nbits: u32) {
        self.cmd.send(Cmd::NewBlock(nbits)).unwrap();
    }
}

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

fn serve(mut c: PoolConn, rx: mpsc::Receiver<Cmd>, counts: &TpCounts, first_bits: u32) {
    let mut blocks: HashMap<u64, Block> = HashMap::new();
    let mut setup_done = false;
    let mut first = Some(first_bits);
    loop {
        match rx.try_recv() {
            Ok(Cmd::NewBlock(bits)) => send_block(&mut c, &mut blocks, counts, bits),
            Err(mpsc::TryRecvError::Disconnected) => return,
            Err(mpsc::TryRecvError::Empty) => {}
        }
        if !c.readable(Duration::from_millis(100)) {
            continue;
        }
        let Some(mut f) = c.next_frame(Instant::now() + Duration::from_secs(10)) else { return };
        match f.message() {
            AnyMessage::Common(CommonMessages::SetupConnection(s)) => {
                assert_eq!(s.protocol, Protocol::TemplateDistributionProtocol);
                counts.setups.fetch_add(1, Ordering::Relaxed);
                c.send(AnyMessage::Common(CommonMessages::SetupConnectionSuccess(SetupConnectionSuccess {
                    used_version: 2,
                    flags: 0,
                })));
                setup_done = true;
            }
            AnyMessage::TemplateDistribution(TemplateDistribution::CoinbaseOutputConstraints(_)) => {}
            AnyMessage::TemplateDistribution(TemplateDistribution::RequestTransactionData(r)) => {
                counts.tx_data_requests.fetch_add(1, Ordering::Relaxed);
                let template_id = r.template_id;
                c.send_owned(AnyMessageOwned::TemplateDistribution(
                    TemplateDistributionOwned::RequestTransactionDataSuccess(RequestTransactionDataSuccessOwned {
                        template_id,
                        excess_data: Vec::<u8>::new().try_into().unwrap(),
                        transaction_list: vec![].try_into().unwrap(),
                    }),
                ));
            }
            AnyMessage::TemplateDistribution(TemplateDistribution::SubmitSolution(s)) => {
                let ok = blocks.get(&s.template_id).is_some_and(|b| {
                    meets_bits(b, s.version, s.header_timestamp, s.header_nonce, s.coinbase_tx.as_ref())
                });
                let n = if ok { &counts.valid_solutions } else { &counts.invalid_solutions };
                n.fetch_add(1, Ordering::Relaxed);
            }
            other => panic!("template provider: unexpected {other:?}"),
        }
        if setup_done {
            if let Some(bits) = first.take() {
                send_block(&mut c, &mut blocks, counts, bits);
            }
        }
    }
}

fn send_block(c: &mut PoolConn, blocks: &mut HashMap<u64, Block>, counts: &TpCounts, nbits: u32) {
    let id = counts.templates.fetch_add(1, Ordering::Relaxed) + 1;
    let height = 1000 + id as u32;
    let h = height.to_le_bytes();
    let template = NewTemplateOwned {
        template_id: id,
        future_template: true,
        version: 0x2000_0000,
        coinbase_tx_version: 2,
        // BIP34: the height, pushed.
        coinbase_prefix: vec![3, h[0], h[1], h[2]].try_into().unwrap(),
        coinbase_tx_input_sequence: 0xffff_fffe,
        coinbase_tx_value_remaining: 50_0000_0000,
        coinbase_tx_outputs_count: 0,
        coinbase_tx_outputs: vec![].try_into().unwrap(),
        coinbase_tx_locktime: 0,
        merkle_path: vec![].try_into().unwrap(),
    };
    let mut prev = [0u8; 32];
    prev[..8].copy_from_slice(&(id * 0x9e37_79b9).to_le_bytes());
    let target = bitcoin::Target::from_compact(bitcoin::CompactTarget::from_consensus(nbits)).to_le_bytes();
    let snph = SetNewPrevHashOwned {
        template_id: id,
        prev_hash: prev.into(),
        header_timestamp: now(),
        n_bits: nbits,
        target: target.into(),
    };
    blocks.insert(id, Block { prev_hash: prev, nbits });
    c.send_owned(AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(template)));
    c.send_owned(AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::SetNewPrevHash(snph)));
}

/// The solution's header (no transactions but the coinbase: the merkle root
/// is the coinbase's txid) hashed and compared with the template's nBits.
fn meets_bits(b: &Block, version: u32, time: u32, nonce: u32, coinbase: &[u8]) -> bool {
    let Ok(tx) = bitcoin::consensus::deserialize::<bitcoin::Transaction>(coinbase) else { return false };
    let header = bitcoin::block::Header {
        version: bitcoin::block::Version::from_consensus(version as i32),
        prev_blockhash: bitcoin::BlockHash::from_byte_array(b.prev_hash),
        merkle_root: bitcoin::TxMerkleNode::from_byte_array(tx.compute_txid().to_byte_array()),
        time,
        bits: bitcoin::CompactTarget::from_consensus(b.nbits),
        nonce,
    };
    header.validate_pow(header.target()).is_ok()
}
