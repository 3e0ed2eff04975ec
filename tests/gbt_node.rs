//! `hashrig run --node …` solo mining against a bitcoind-like JSON-RPC node
//! written here: it serves getblocktemplate in Bitcoin Core's documented
//! format (regtest, segwit rules, longpoll) with real transactions (legacy
//! and segwit) and a witness commitment, and validates every submitted block
//! with rust-bitcoin (not hashrig's code): deserialisation, link to the tip,
//! nBits, proof of work, merkle root, witness commitment, BIP34 height, the
//! template's transactions, and the coinbase paying at most the reward to the
//! payout address.
//!
//! The node holds a longpoll carrying the current longpollid until the
//! template changes (a transaction arrives, a block moves the tip) or a
//! timeout, and logs which request got which template, so the longpoll test
//! can tell that hashrig learnt of a change through its held longpoll, and
//! that after another miner's block it drops the old work.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Target, Transaction, TxIn, TxOut, Witness,
};
use serde_json::{json, Value};

// BIP173 test vector, regtest form.
const PAYOUT: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
const BITS: u32 = 0x207fffff;
const FEE: u64 = 1_000;

fn tx(i: u8, segwit: bool) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: bitcoin::Txid::from_byte_array([i; 32]), vout: i as u32 },
            script_sig: if segwit { ScriptBuf::new() } else { ScriptBuf::from_bytes(vec![0x51]) },
            sequence: Sequence::MAX,
            witness: if segwit { Witness::from_slice(&[vec![0x30; 71], vec![0x02; 33]]) } else { Witness::new() },
        }],
        output: vec![TxOut {
            value: Amount::from_sat(10_000 + i as u64),
            script_pubkey: ScriptBuf::from_bytes(vec![0x00, 0x14].into_iter().chain([i; 20]).collect()),
        }],
    }
}

/// What the node did, in order: every getblocktemplate it answered and every
/// block it judged, so the test can tell which request delivered which
/// template.
#[derive(Clone, Debug)]
enum Event {
    Gbt {
        /// The longpollid the request carried (None: a plain call).
        carried: Option<String>,
        /// It carried the current longpollid, so the node held it.
        held: bool,
        /// It was answered because the template changed while it was held
        /// (not because the hold timed out).
        changed: bool,
        /// The longpollid and parent of the template it got.
        id: String,
        prev: BlockHash,
    },
    Submit {
        prev: Option<BlockHash>,
        verdict: Verdict,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Verdict {
    Accepted,
    /// Valid, but on a known block that is no longer the tip: Bitcoin Core
    /// keeps it as a side branch and answers "inconclusive".
    Stale,
    Rejected,
}

struct Node {
    height: u64,
    tip: BlockHash,
    bits: u32,
    txs: Vec<Transaction>,
    /// Bitcoin Core's nTransactionsUpdated: bumped by every mempool change;
    /// the longpollid is the tip and this, as in Core.
    updates: u64,
    /// Every block the node knows (tips past and present).
    known: Vec<BlockHash>,
    accepted: Vec<BlockHash>,
    stale: Vec<BlockHash>,
    rejected: Vec<String>,
    log: Vec<Event>,
    /// longpollids of the getblocktemplate requests being held now.
    holding: Vec<String>,
    /// Times the template's longpollid changed.
    id_changes: usize,
    /// While set, submitblock requests wait before being judged (a block
    /// still on its way to the node); `gated` counts those waiting.
    gate: bool,
    gated: usize,
    /// The next this many submitblock calls get HTTP 500 (a node in trouble).
    fail_submits: usize,
    /// Every submitblock's block hex, failed ones included, in order.
    attempts: Vec<String>,
    /// The next this many getblocktemplate calls get HTTP 500, then the next
    /// `garbage_gbt` get a body that is not JSON.
    fail_gbt: usize,
    garbage_gbt: usize,
    /// The next this many getblocktemplate calls (longpolls aside) are
    /// accepted and answered only after [`HANG`]: a node that stopped
    /// answering. `hung` counts them.
    hang_gbt: usize,
    hung: usize,
}

impl Node {
    fn new(height: u64, tip: BlockHash, bits: u32, txs: Vec<Transaction>) -> Node {
        Node {
            height,
            tip,
            bits,
            txs,
            updates: 0,
            known: vec![tip],
            accepted: vec![],
            stale: vec![],
            rejected: vec![],
            log: vec![],
            holding: vec![],
            id_changes: 0,
            gate: false,
            gated: 0,
            fail_submits: 0,
            attempts: vec![],
            fail_gbt: 0,
            garbage_gbt: 0,
            hang_gbt: 0,
            hung: 0,
        }
    }

    fn longpollid(&self) -> String {
        format!("{}{}", self.tip, self.updates)
    }

    /// A transaction reaches the mempool.
    fn add_tx(&mut self, t: Transaction) {
        self.txs.push(t);
        self.updates += 1;
        self.id_changes += 1;
    }

    /// Someone else's block on the tip, with the whole mempool in it; the
    /// next height gets `bits` (a difficulty change) and the mempool `next`.
    /// Returns the new tip.
    fn other_miner(&mut self, bits: u32, next: Vec<Transaction>) -> BlockHash {
        let header = bitcoin::block::Header {
            version: bitcoin::block::Version::from_consensus(0x2000_0000),
            prev_blockhash: self.tip,
            merkle_root: bitcoin::TxMerkleNode::from_byte_array([0x0e; 32]),
            time: 1_700_000_000,
            bits: CompactTarget::from_consensus(self.bits),
            nonce: self.height as u32,
        };
        self.tip = header.block_hash();
        self.known.push(self.tip);
        self.height += 1;
        self.bits = bits;
        self.txs = next;
        self.updates += 1;
        self.id_changes += 1;
        self.tip
    }

    fn template(&self) -> Value {
        let h = self.height + 1;
        let wtxids: Vec<_> =
            std::iter::once(bitcoin::Wtxid::all_zeros()).chain(self.txs.iter().map(|t| t.compute_wtxid())).collect();
        let root = bitcoin::merkle_tree::calculate_root(wtxids.into_iter()).unwrap();
        let commitment = Block::compute_witness_commitment(
            &bitcoin::WitnessMerkleNode::from_raw_hash(root.to_raw_hash()),
            &[0u8; 32],
        );
        let mut dwc = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        dwc.extend_from_slice(commitment.as_byte_array());
        let target = Target::from_compact(CompactTarget::from_consensus(self.bits));
        json!({
            "capabilities": ["proposal"],
            "version": 0x2000_0000,
            "rules": ["csv", "!segwit", "taproot"],
            "vbavailable": {},
            "vbrequired": 0,
            "previousblockhash": self.tip.to_string(),
            "transactions": self.txs.iter().map(|t| json!({
                "data": hex::encode(serialize(t)),
                "txid": t.compute_txid().to_string(),
                "hash": t.compute_wtxid().to_string(),
                "depends": [],
                "fee": FEE,
                "sigops": 1,
                "weight": t.weight().to_wu(),
            })).collect::<Vec<_>>(),
            "coinbaseaux": {},
            "coinbasevalue": 50 * 100_000_000u64 + FEE * self.txs.len() as u64,
            "longpollid": self.longpollid(),
            "target": hex::encode(target.to_be_bytes()),
            "mintime": 1_700_000_000u64,
            "mutable": ["time", "transactions", "prevblock"],
            "noncerange": "00000000ffffffff",
            "sigoplimit": 80000,
            "sizelimit": 4000000,
            "weightlimit": 4000000,
            "curtime": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            "bits": format!("{:08x}", self.bits),
            "height": h,
            "default_witness_commitment": hex::encode(dwc),
        })
    }

    /// Full validation of a submitted block, with rust-bitcoin: first what
    /// needs no context, then the link to the tip, then the rest.
    fn submit(&mut self, hex_block: &str) -> Value {
        let mut prev = None;
        let r = (|| -> Result<BlockHash, String> {
            let bytes = hex::decode(hex_block).map_err(|_| "bad hex")?;
            let block: Block = deserialize(&bytes).map_err(|e| format!("deserialise: {e}"))?;
            prev = Some(block.header.prev_blockhash);
            let hash = block.block_hash();
            if self.accepted.contains(&hash) || self.stale.contains(&hash) {
                return Err("duplicate".into());
            }
            block.header.validate_pow(Target::from_compact(block.header.bits)).map_err(|_| "high-hash")?;
            if !block.check_merkle_root() {
                return Err("bad-txnmrklroot".into());
            }
            if !block.check_witness_commitment() {
                return Err("bad-witness-merkle-match".into());
            }
            let cb = &block.txdata[0];
            if !cb.is_coinbase() || cb.input[0].witness.len() != 1 || cb.input[0].witness.nth(0) != Some(&[0u8; 32][..])
            {
                return Err("bad-cb-witness-nonce".into());
            }
            if block.weight().to_wu() > 4_000_000 {
                return Err("bad-blk-weight".into());
            }
            if block.header.prev_blockhash != self.tip {
                if self.known.contains(&block.header.prev_blockhash) {
                    return Err("stale".into());
                }
                return Err("prev-blk-not-found".into());
            }
            if block.header.bits.to_consensus() != self.bits {
                return Err("bad-diffbits".into());
            }
            // Core's rule: the scriptSig starts with `CScript() << height`
            // (rust-bitcoin's bip34_block_height does not take OP_1..OP_16).
            let expect = bitcoin::script::Builder::new().push_int((self.height + 1) as i64).into_script();
            if !cb.input[0].script_sig.as_bytes().starts_with(expect.as_bytes()) {
                return Err("bad-cb-height".into());
            }
            let ids: Vec<_> = block.txdata[1..].iter().map(|t| t.compute_txid()).collect();
            if ids != self.txs.iter().map(|t| t.compute_txid()).collect::<Vec<_>>() {
                return Err("bad-txns (not the template's)".into());
            }
            let reward = 50 * 100_000_000u64 + FEE * self.txs.len() as u64;
            let paid: u64 = cb.output.iter().map(|o| o.value.to_sat()).sum();
            if paid > reward {
                return Err("bad-cb-amount".into());
            }
            let payout = bitcoin::Address::from_str(PAYOUT).unwrap().assume_checked().script_pubkey();
            if !cb.output.iter().any(|o| o.script_pubkey == payout && o.value.to_sat() == reward) {
                return Err("coinbase does not pay the payout address".into());
            }
            Ok(hash)
        })();
        let (verdict, answer) = match r {
            Ok(hash) => {
                self.accepted.push(hash);
                self.known.push(hash);
                self.tip = hash;
                self.height += 1;
                // (The mempool stays: every block of ours carries the same
                // transactions, to keep checking them.)
                self.id_changes += 1;
                (Verdict::Accepted, Value::Null)
            }
            Err(e) if e == "stale" => {
                let bytes = hex::decode(hex_block).unwrap();
                self.stale.push(deserialize::<Block>(&bytes).unwrap().block_hash());
                (Verdict::Stale, json!("inconclusive"))
            }
            Err(e) => {
                self.rejected.push(e.clone());
                (Verdict::Rejected, json!(e))
            }
        };
        self.log.push(Event::Submit { prev, verdict });
        answer
    }
}

/// How long the node holds a longpoll whose template does not change.
/// (Core holds it until the tip moves, re-checking the mempool once a minute;
/// this node answers a mempool change at once, to keep the tests short.)
const LONGPOLL_HOLD: Duration = Duration::from_secs(8);

/// How long a hanging node keeps a getblocktemplate call unanswered.
const HANG: Duration = Duration::from_secs(30);

fn serve(node: Arc<Mutex<Node>>) -> String {
    let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
    let addr = server.server_addr().to_ip().unwrap().to_string();
    std::thread::spawn(move || {
        for mut req in server.incoming_requests() {
            let node = node.clone();
            std::thread::spawn(move || {
                let auth = req.headers().iter().find(|h| h.field.equiv("Authorization")).map(|h| h.value.to_string());
                // base64("alice:s3cret")
                if auth.as_deref() != Some("Basic YWxpY2U6czNjcmV0") {
                    let _ = req.respond(tiny_http::Response::from_string("").with_status_code(401));
                    return;
                }
                let mut body = String::new();
                let _ = req.as_reader().read_to_string(&mut body);
                let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
                if v["method"] == "getblocktemplate" {
                    let mut n = node.lock().unwrap();
                    if n.fail_gbt > 0 {
                        n.fail_gbt -= 1;
                        drop(n);
                        let _ = req.respond(tiny_http::Response::from_string("busy").with_status_code(500));
                        return;
                    }
                    if n.hang_gbt > 0 && v["params"][0]["longpollid"].is_null() {
                        n.hang_gbt -= 1;
                        n.hung += 1;
                        drop(n);
                        std::thread::sleep(HANG);
                        let _ = req.respond(tiny_http::Response::from_string("late"));
                        return;
                    }
                    if n.garbage_gbt > 0 {
                        n.garbage_gbt -= 1;
                        drop(n);
                        let _ = req.respond(tiny_http::Response::from_string("{\"result\": {\"height\": [oops"));
                        return;
                    }
                }
                if v["method"] == "submitblock" {
                    let mut n = node.lock().unwrap();
                    n.attempts.push(v["params"][0].as_str().unwrap_or("").to_owned());
                    if n.fail_submits > 0 {
                        n.fail_submits -= 1;
                        drop(n);
                        let _ = req.respond(tiny_http::Response::from_string("overloaded").with_status_code(500));
                        return;
                    }
                }
                let result = match v["method"].as_str().unwrap_or("") {
                    "getbestblockhash" => json!(node.lock().unwrap().tip.to_string()),
                    "getblockchaininfo" => json!({"chain": "regtest", "blocks": node.lock().unwrap().height}),
                    "getblocktemplate" => {
                        let rules = &v["params"][0]["rules"];
                        assert_eq!(rules, &json!(["segwit"]), "segwit rules requested");
                        let carried = v["params"][0]["longpollid"].as_str().map(str::to_owned);
                        let (mut held, mut changed) = (false, false);
                        if let Some(id) = &carried {
                            // BIP22 longpoll: an outdated id is answered at
                            // once, the current one when the template changes
                            // (or the hold times out).
                            {
                                let mut n = node.lock().unwrap();
                                if n.longpollid() == *id {
                                    held = true;
                                    n.holding.push(id.clone());
                                }
                            }
                            let until = Instant::now() + LONGPOLL_HOLD;
                            while held && Instant::now() < until {
                                if node.lock().unwrap().longpollid() != *id {
                                    changed = true;
                                    break;
                                }
                                std::thread::sleep(Duration::from_millis(20));
                            }
                            let mut n = node.lock().unwrap();
                            if let Some(i) = n.holding.iter().position(|h| h == id) {
                                n.holding.remove(i);
                            }
                        }
                        let mut n = node.lock().unwrap();
                        let (id, prev) = (n.longpollid(), n.tip);
                        n.log.push(Event::Gbt { carried, held, changed, id, prev });
                        n.template()
                    }
                    "submitblock" => {
                        let mut counted = false;
                        loop {
                            let mut n = node.lock().unwrap();
                            if !n.gate {
                                if counted {
                                    n.gated -= 1;
                                }
                                break n.submit(v["params"][0].as_str().unwrap_or(""));
                            }
                            if !counted {
                                n.gated += 1;
                                counted = true;
                            }
                            drop(n);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    _ => Value::Null,
                };
                let resp = json!({"result": result, "error": null, "id": v["id"]}).to_string();
                let _ = req.respond(tiny_http::Response::from_string(resp));
            });
        }
    });
    addr
}

mod metrics_common;
mod run_common;
use metrics_common::scrape;
use run_common::HashrigRun;

#[test]
fn solo_mining_blocks_pass_full_validation() {
    let genesis = BlockHash::from_str("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206").unwrap(); // regtest genesis hash, as a stand-in tip
    let node = Arc::new(Mutex::new(Node::new(199, genesis, BITS, vec![tx(1, false), tx(2, true), tx(3, true)])));
    let addr = serve(node.clone());
    let run = HashrigRun::start_small(
        &[
            "--duration",
            "120",
            "--node",
            &format!("http://{addr}"),
            "--rpc-user",
            "alice",
            "--rpc-pass",
            "s3cret",
            "--payout",
            PAYOUT,
        ],
        |_| {},
    );
    let until = Instant::now() + Duration::from_secs(60);
    while node.lock().unwrap().accepted.len() < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let body = scrape(&run.metrics_addr());
    drop(run);
    let n = node.lock().unwrap();
    assert!(n.accepted.len() >= 2, "blocks accepted: {}, rejected: {:?}", n.accepted.len(), n.rejected);
    assert!(n.rejected.iter().all(|r| r == "prev-blk-not-found" || r == "duplicate"), "rejected: {:?}", n.rejected);
    assert!(body.contains("hashrig_block_submit_answers_total{answer=\"accepted\"}"), "{body}");
    assert!(body.contains("hashrig_gbt_templates_total{trigger=\"initial\"} 1"));
}

/// A block every 2^48 hashes: none while this test runs.
const HARD_BITS: u32 = 0x1b00ffff;
/// A block every 2^16 hashes: many a second, on any machine.
const EASY_BITS: u32 = 0x1f00ffff;

/// A counter's value in a Prometheus text body (0 when absent).
fn metric(body: &str, series: &str) -> u64 {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[test]
fn longpoll_delivers_new_templates_and_tip_changes() {
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(25);
    let genesis = BlockHash::from_str("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206").unwrap();
    let node = Arc::new(Mutex::new(Node::new(199, genesis, HARD_BITS, vec![tx(1, false), tx(2, true), tx(3, true)])));
    let addr = serve(node.clone());
    // Poll every 10 minutes: within this test only a longpoll (or a block of
    // hashrig's own) can bring a new template.
    let conf = std::env::temp_dir().join(format!("hashrig-gbt-longpoll-{}.toml", std::process::id()));
    std::fs::write(
        &conf,
        format!("[node]\nurl = \"http://{addr}\"\nrpc_user = \"alice\"\nrpc_pass = \"s3cret\"\npayout = \"{PAYOUT}\"\npoll_secs = 600\nlongpoll = true\n"),
    )
    .unwrap();
    let run =
        HashrigRun::start_small(&["--engines", "cpu", "--duration", "40", "--config", conf.to_str().unwrap()], |_| {});
    let wait = |what: &str, cond: &dyn Fn() -> bool| {
        while !cond() {
            if Instant::now() > deadline {
                let n = node.lock().unwrap();
                panic!(
                    "timed out waiting for {what} after {:?}; node log: {:?}",
                    t0.elapsed(),
                    &n.log[n.log.len().saturating_sub(30)..]
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let maddr = run.metrics_addr();
    let holding = |id: &str| node.lock().unwrap().holding.iter().any(|h| h == id);

    // 1. A transaction arrives while hashrig's longpoll is held: the held
    //    request delivers the new template (no block can be found at this
    //    difficulty, and the periodic poll is 10 minutes away).
    let l0 = node.lock().unwrap().longpollid();
    wait("hashrig's longpoll to be held", &|| holding(&l0));
    let l1 = {
        let mut n = node.lock().unwrap();
        n.add_tx(tx(4, true));
        n.longpollid()
    };
    wait("the held longpoll to deliver the new template", &|| {
        node.lock().unwrap().log.iter().any(|e| matches!(e, Event::Gbt { carried: Some(c), held: true, changed: true, id, .. } if *c == l0 && *id == l1))
    });
    wait("trigger=longpoll in hashrig's metrics", &|| {
        metric(&scrape(&maddr), "hashrig_gbt_templates_total{trigger=\"longpoll\"}") >= 1
    });
    {
        let n = node.lock().unwrap();
        let plain: Vec<_> = n.log.iter().filter(|e| matches!(e, Event::Gbt { carried: None, .. })).collect();
        assert_eq!(plain.len(), 1, "only the initial getblocktemplate was a plain call: {plain:?}");
        assert!(n.accepted.is_empty() && n.stale.is_empty() && n.rejected.is_empty(), "no block at this difficulty");
    }
    let body = scrape(&maddr);
    assert_eq!(metric(&body, "hashrig_gbt_templates_total{trigger=\"initial\"}"), 1, "{body}");
    assert_eq!(metric(&body, "hashrig_gbt_templates_total{trigger=\"poll\"}"), 0, "{body}");
    assert_eq!(metric(&body, "hashrig_gbt_templates_total{trigger=\"block\"}"), 0, "{body}");

    // 2. Another miner's block moves the tip (and the difficulty drops so
    //    hashrig finds blocks): the held longpoll is hashrig's only way to
    //    learn it, and its first block must build on that tip.
    wait("hashrig's longpoll to be held on the new template", &|| holding(&l1));
    let b1 = node.lock().unwrap().other_miner(EASY_BITS, vec![tx(5, true)]);
    wait("a block from hashrig", &|| !node.lock().unwrap().accepted.is_empty());
    {
        let n = node.lock().unwrap();
        let first_submit = n.log.iter().position(|e| matches!(e, Event::Submit { .. })).unwrap();
        let delivered = n.log[..first_submit].iter().position(|e| matches!(e, Event::Gbt { prev, .. } if *prev == b1));
        let delivered =
            delivered.expect("the template on the other miner's block was served before hashrig's first block");
        assert!(
            matches!(&n.log[delivered], Event::Gbt { carried: Some(c), held: true, changed: true, .. } if *c == l1),
            "the held longpoll delivered it: {:?}",
            n.log[delivered]
        );
        assert!(
            matches!(n.log[first_submit], Event::Submit { prev: Some(p), verdict: Verdict::Accepted } if p == b1),
            "{:?}",
            n.log[first_submit]
        );
    }

    // 3. hashrig mines its own chain; one of its blocks is still on its way
    //    to the node (held at the gate) when another miner's block moves the
    //    tip. That block is stale; hashrig drops the old work and its next
    //    accepted block links to the other miner's.
    wait("a few more blocks from hashrig", &|| node.lock().unwrap().accepted.len() >= 3);
    node.lock().unwrap().gate = true;
    wait("a block of hashrig's at the gate", &|| node.lock().unwrap().gated >= 1);
    let (old_tip, b2, mark) = {
        let mut n = node.lock().unwrap();
        let old = n.tip;
        let b2 = n.other_miner(EASY_BITS, vec![tx(6, true), tx(7, false)]);
        (old, b2, n.log.len())
    };
    wait("the longpoll to deliver the other miner's tip", &|| {
        node.lock().unwrap().log[mark..]
            .iter()
            .any(|e| matches!(e, Event::Gbt { carried: Some(_), prev, .. } if *prev == b2))
    });
    // hashrig's main loop is stuck in submitblock meanwhile; give a
    // misbehaving longpoll loop time to show itself.
    std::thread::sleep(Duration::from_millis(500));
    node.lock().unwrap().gate = false;
    wait("hashrig's first block on the other miner's tip", &|| {
        node.lock().unwrap().log[mark..].iter().any(|e| matches!(e, Event::Submit { verdict: Verdict::Accepted, .. }))
    });
    let stale_on_old_tip;
    {
        let n = node.lock().unwrap();
        let after: Vec<_> = n.log[mark..]
            .iter()
            .filter_map(|e| if let Event::Submit { prev, verdict } = e { Some((*prev, *verdict)) } else { None })
            .collect();
        let first_ok = after.iter().position(|(_, v)| *v == Verdict::Accepted).unwrap();
        assert_eq!(after[first_ok].0, Some(b2), "hashrig's next accepted block links to the other miner's tip");
        stale_on_old_tip = after.iter().filter(|(p, v)| *p == Some(old_tip) && *v == Verdict::Stale).count();
        assert!(stale_on_old_tip >= 1, "the block held at the gate, on the displaced tip, was judged stale: {after:?}");
        assert!(
            after.iter().all(|(p, v)| *p != Some(old_tip) || *v == Verdict::Stale),
            "every block on the old tip is stale: {after:?}"
        );
    }

    // Settle the accounts: stop hashrig at its next submission, so that every
    // earlier answer is in its metrics, and compare with the node's verdicts.
    node.lock().unwrap().gate = true;
    wait("hashrig to pause at the gate", &|| node.lock().unwrap().gated >= 1);
    let body = scrape(&maddr);
    let n = node.lock().unwrap();
    println!(
        "node: {} accepted, {} stale ({stale_on_old_tip} on the displaced tip), rejected {:?}; {} templates served ({} longpolls), {} longpollid changes; hashrig dropped {} outdated hits itself; {:?}",
        n.accepted.len(),
        n.stale.len(),
        n.rejected,
        n.log.iter().filter(|e| matches!(e, Event::Gbt { .. })).count(),
        n.log.iter().filter(|e| matches!(e, Event::Gbt { carried: Some(_), .. })).count(),
        n.id_changes,
        metric(&body, "hashrig_blocks_total{result=\"stale\"}"),
        t0.elapsed(),
    );
    assert!(n.rejected.iter().all(|r| r == "duplicate"), "rejected: {:?}", n.rejected);
    assert_eq!(
        metric(&body, "hashrig_block_submit_answers_total{answer=\"accepted\"}"),
        n.accepted.len() as u64,
        "{body}"
    );
    assert_eq!(
        metric(&body, "hashrig_block_submit_answers_total{answer=\"inconclusive\"}"),
        n.stale.len() as u64,
        "{body}"
    );
    assert_eq!(
        metric(&body, "hashrig_block_submit_answers_total{answer=\"duplicate\"}"),
        n.rejected.len() as u64,
        "{body}"
    );
    assert_eq!(metric(&body, "hashrig_gbt_templates_total{trigger=\"poll\"}"), 0, "{body}");
    assert!(metric(&body, "hashrig_gbt_templates_total{trigger=\"longpoll\"}") >= 2, "{body}");
    // A longpoll that carries an outdated id is answered at once; a client
    // that re-arms with the id it was just given sends one at most once per
    // template change (the change falling between answer and re-arm).
    let outdated = n.log.iter().filter(|e| matches!(e, Event::Gbt { carried: Some(_), held: false, .. })).count();
    assert!(
        outdated <= n.id_changes,
        "{outdated} longpolls carried an outdated id, for {} template changes; last events: {:#?}",
        n.id_changes,
        &n.log[n.log.len().saturating_sub(40)..]
    );
    let _ = std::fs::remove_file(&conf);
}

/// A node that answers the first submitblock calls with HTTP 500: the block
/// is resubmitted while the tip is unchanged (the same block is accepted,
/// not a later one), and every block found is in the log and in a file
/// before the node sees it.
#[test]
fn failed_submitblock_is_retried_and_every_block_is_saved() {
    let genesis = BlockHash::from_str("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206").unwrap();
    let node = Arc::new(Mutex::new(Node::new(199, genesis, EASY_BITS, vec![tx(1, false), tx(2, true)])));
    node.lock().unwrap().fail_submits = 2;
    let addr = serve(node.clone());
    let dir = std::env::temp_dir().join(format!("hashrig-gbt-blocks-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let conf = std::env::temp_dir().join(format!("hashrig-gbt-retry-{}.toml", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "[node]\nurl = \"http://{addr}\"\nrpc_user = \"alice\"\nrpc_pass = \"s3cret\"\npayout = \"{PAYOUT}\"\nblocks_dir = \"{}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut run =
        HashrigRun::start_small(&["--engines", "cpu", "--duration", "60", "--config", conf.to_str().unwrap()], |_| {});
    let until = Instant::now() + Duration::from_secs(30);
    while node.lock().unwrap().accepted.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = scrape(&run.metrics_addr());
    let status = run.interrupt();
    let _ = std::fs::remove_file(&conf);
    let n = node.lock().unwrap();
    assert!(status.success());
    assert!(!n.accepted.is_empty(), "no block accepted; attempts {}", n.attempts.len());
    // The first block found failed twice and was then accepted: the same block.
    assert!(n.attempts.len() >= 3 && n.attempts[0] == n.attempts[1] && n.attempts[1] == n.attempts[2]);
    let first: Block = deserialize(&hex::decode(&n.attempts[0]).unwrap()).unwrap();
    assert_eq!(n.accepted[0], first.block_hash(), "the retried block is the one accepted");
    assert!(metric(&body, "hashrig_rpc_errors_total{method=\"submitblock\"}") >= 2);
    // Every block sent is in the log and in a file, byte for byte.
    let lines = run.lines();
    let saved: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap().trim().to_owned())
        .collect();
    for hex_block in n.attempts.iter() {
        assert!(saved.contains(hex_block), "a submitted block is not saved");
        assert!(lines.iter().any(|l| l.contains(hex_block.as_str())), "a submitted block is not logged");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node in trouble: getblocktemplate answers HTTP 500, then a body that is
/// not JSON. hashrig logs, counts, backs off and mines once the node is
/// well; nothing panics and the blocks it then finds are accepted.
#[test]
fn getblocktemplate_errors_and_garbage_are_survived() {
    let genesis = BlockHash::from_str("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206").unwrap();
    let node = Arc::new(Mutex::new(Node::new(199, genesis, EASY_BITS, vec![tx(1, false)])));
    {
        let mut n = node.lock().unwrap();
        n.fail_gbt = 2;
        n.garbage_gbt = 1;
    }
    let addr = serve(node.clone());
    let dir = std::env::temp_dir().join(format!("hashrig-gbt-faults-{}", std::process::id()));
    let conf = std::env::temp_dir().join(format!("hashrig-gbt-faults-{}.toml", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "[node]\nurl = \"http://{addr}\"\nrpc_user = \"alice\"\nrpc_pass = \"s3cret\"\npayout = \"{PAYOUT}\"\nblocks_dir = \"{}\"\n",
            dir.display()
        ),
    )
    .unwrap();
    let mut run =
        HashrigRun::start_small(&["--engines", "cpu", "--duration", "60", "--config", conf.to_str().unwrap()], |_| {});
    let until = Instant::now() + Duration::from_secs(30);
    while node.lock().unwrap().accepted.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let body = scrape(&run.metrics_addr());
    let status = run.interrupt();
    let _ = std::fs::remove_file(&conf);
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success(), "exit status {status}");
    assert!(!node.lock().unwrap().accepted.is_empty(), "no block after the node recovered");
    assert!(metric(&body, "hashrig_rpc_errors_total{method=\"getblocktemplate\"}") >= 3, "{body}");
}

/// A node that accepts getblocktemplate calls and does not answer them
/// (for 30 s): with `[node] rpc_timeout_secs = 1` each call is an error
/// after a second, counted; hashrig retries, mines once the node answers,
/// and keeps polling through a second silence mid-run.
#[test]
fn getblocktemplate_timeouts_are_counted_and_polling_goes_on() {
    let genesis = BlockHash::from_str("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206").unwrap();
    let node = Arc::new(Mutex::new(Node::new(199, genesis, EASY_BITS, vec![tx(1, false)])));
    node.lock().unwrap().hang_gbt = 2;
    let addr = serve(node.clone());
    let dir = std::env::temp_dir().join(format!("hashrig-gbt-hang-{}", std::process::id()));
    let conf = std::env::temp_dir().join(format!("hashrig-gbt-hang-{}.toml", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "[node]\nurl = \"http://{addr}\"\nrpc_user = \"alice\"\nrpc_pass = \"s3cret\"\npayout = \"{PAYOUT}\"\nblocks_dir = \"{}\"\npoll_secs = 1\nlongpoll = false\nrpc_timeout_secs = 1\n",
            dir.display()
        ),
    )
    .unwrap();
    let t0 = Instant::now();
    let mut run =
        HashrigRun::start_small(&["--engines", "cpu", "--duration", "60", "--config", conf.to_str().unwrap()], |_| {});
    let until = Instant::now() + Duration::from_secs(20);
    while node.lock().unwrap().accepted.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let first_block = t0.elapsed();
    // The node goes silent again, mid-run.
    let before = {
        let mut n = node.lock().unwrap();
        n.hang_gbt = 2;
        n.log.len()
    };
    let t1 = Instant::now();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let n = node.lock().unwrap();
        let answered_after = n.log[before..].iter().filter(|e| matches!(e, Event::Gbt { .. })).count();
        if (n.hung == 4 && answered_after >= 1) || Instant::now() > until {
            break;
        }
        drop(n);
        std::thread::sleep(Duration::from_millis(50));
    }
    let recovered = t1.elapsed();
    let body = scrape(&run.metrics_addr());
    let status = run.interrupt();
    let _ = std::fs::remove_file(&conf);
    let _ = std::fs::remove_dir_all(&dir);
    let n = node.lock().unwrap();
    let answered_after = n.log[before..].iter().filter(|e| matches!(e, Event::Gbt { .. })).count();
    println!(
        "first block after {first_block:?} (2 silent calls first); a second silence of 2 calls over in {recovered:?}"
    );
    assert!(status.success(), "exit status {status}");
    assert!(!n.accepted.is_empty(), "no block after the node answered");
    assert!(first_block < Duration::from_secs(15), "the silent calls were not cut short: {first_block:?}");
    assert_eq!(n.hung, 4, "the second silence was met by polls");
    assert!(answered_after >= 1, "polling went on after the second silence");
    assert!(recovered < Duration::from_secs(15), "{recovered:?}");
    assert!(metric(&body, "hashrig_rpc_errors_total{method=\"getblocktemplate\"}") >= 4, "{body}");
}
