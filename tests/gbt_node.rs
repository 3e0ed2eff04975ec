//! `hashrig run --node …` solo mining against a bitcoind-like JSON-RPC node
//! written here: it serves getblocktemplate in Bitcoin Core's documented
//! format (regtest, segwit rules, longpoll) with real transactions (legacy
//! and segwit) and a witness commitment, and validates every submitted block
//! with rust-bitcoin (not hashrig's code): deserialisation, link to the tip,
//! nBits, proof of work, merkle root, witness commitment, BIP34 height, the
//! template's transactions, and the coinbase paying at most the reward to the
//! payout address.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bitcoin::absolute::LockTime;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash;
use bitcoin::transaction::Version;
use bitcoin::{Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Target, Transaction, TxIn, TxOut, Witness};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");
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
        output: vec![TxOut { value: Amount::from_sat(10_000 + i as u64), script_pubkey: ScriptBuf::from_bytes(vec![0x00, 0x14].into_iter().chain([i; 20]).collect()) }],
    }
}

struct Node {
    height: u64,
    tip: BlockHash,
    txs: Vec<Transaction>,
    accepted: Vec<BlockHash>,
    rejected: Vec<String>,
}

impl Node {
    fn template(&self) -> Value {
        let h = self.height + 1;
        let wtxids: Vec<_> = std::iter::once(bitcoin::Wtxid::all_zeros()).chain(self.txs.iter().map(|t| t.compute_wtxid())).collect();
        let root = bitcoin::merkle_tree::calculate_root(wtxids.into_iter()).unwrap();
        let commitment = Block::compute_witness_commitment(&bitcoin::WitnessMerkleNode::from_raw_hash(root.to_raw_hash()), &[0u8; 32]);
        let mut dwc = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
        dwc.extend_from_slice(commitment.as_byte_array());
        let target = Target::from_compact(CompactTarget::from_consensus(BITS));
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
            "longpollid": format!("{}{}", self.tip, self.height),
            "target": hex::encode(target.to_be_bytes()),
            "mintime": 1_700_000_000u64,
            "mutable": ["time", "transactions", "prevblock"],
            "noncerange": "00000000ffffffff",
            "sigoplimit": 80000,
            "sizelimit": 4000000,
            "weightlimit": 4000000,
            "curtime": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
            "bits": format!("{BITS:08x}"),
            "height": h,
            "default_witness_commitment": hex::encode(dwc),
        })
    }

    /// Full validation of a submitted block, with rust-bitcoin.
    fn submit(&mut self, hex_block: &str) -> Value {
        let r = (|| -> Result<BlockHash, String> {
            let bytes = hex::decode(hex_block).map_err(|_| "bad hex")?;
            let block: Block = deserialize(&bytes).map_err(|e| format!("deserialise: {e}"))?;
            let hash = block.block_hash();
            if self.accepted.contains(&hash) {
                return Err("duplicate".into());
            }
            if block.header.prev_blockhash != self.tip {
                return Err("prev-blk-not-found".into());
            }
            if block.header.bits.to_consensus() != BITS {
                return Err("bad-diffbits".into());
            }
            block.header.validate_pow(Target::from_compact(block.header.bits)).map_err(|_| "high-hash")?;
            if !block.check_merkle_root() {
                return Err("bad-txnmrklroot".into());
            }
            if !block.check_witness_commitment() {
                return Err("bad-witness-merkle-match".into());
            }
            let cb = &block.txdata[0];
            if !cb.is_coinbase() || cb.input[0].witness.len() != 1 || cb.input[0].witness.nth(0) != Some(&[0u8; 32][..]) {
                return Err("bad-cb-witness-nonce".into());
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
            if block.weight().to_wu() > 4_000_000 {
                return Err("bad-blk-weight".into());
            }
            Ok(hash)
        })();
        match r {
            Ok(hash) => {
                self.accepted.push(hash);
                self.tip = hash;
                self.height += 1;
                Value::Null
            }
            Err(e) => {
                self.rejected.push(e.clone());
                json!(e)
            }
        }
    }
}

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
                let result = match v["method"].as_str().unwrap_or("") {
                    "getblockchaininfo" => json!({"chain": "regtest", "blocks": node.lock().unwrap().height}),
                    "getblocktemplate" => {
                        let rules = &v["params"][0]["rules"];
                        assert_eq!(rules, &json!(["segwit"]), "segwit rules requested");
                        if let Some(id) = v["params"][0]["longpollid"].as_str() {
                            let until = Instant::now() + Duration::from_secs(5);
                            while Instant::now() < until && node.lock().unwrap().template()["longpollid"] == json!(id) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                        }
                        node.lock().unwrap().template()
                    }
                    "submitblock" => node.lock().unwrap().submit(v["params"][0].as_str().unwrap_or("")),
                    _ => Value::Null,
                };
                let resp = json!({"result": result, "error": null, "id": v["id"]}).to_string();
                let _ = req.respond(tiny_http::Response::from_string(resp));
            });
        }
    });
    addr
}

fn scrape(addr: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    resp.split_once("\r\n\r\n").unwrap().1.to_owned()
}

#[test]
fn solo_mining_blocks_pass_full_validation() {
    let genesis = BlockHash::from_str("0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206").unwrap(); // regtest genesis hash, as a stand-in tip
    let node = Arc::new(Mutex::new(Node { height: 199, tip: genesis, txs: vec![tx(1, false), tx(2, true), tx(3, true)], accepted: vec![], rejected: vec![] }));
    let addr = serve(node.clone());
    let mut child = Command::new(BIN)
        .args(["run", "--metrics", "127.0.0.1:0", "--threads", "1", "--no-pin", "--status-interval", "1", "--duration", "120"])
        .args(["--node", &format!("http://{addr}"), "--rpc-user", "alice", "--rpc-pass", "s3cret", "--payout", PAYOUT])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            println!("hashrig: {line}");
            let _ = tx.send(line);
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    while node.lock().unwrap().accepted.len() < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let lines: Vec<String> = rx.try_iter().collect();
    let maddr = lines.iter().find_map(|l| l.split("metrics: http://").nth(1).map(|r| r.trim_end_matches("/metrics").to_owned())).unwrap();
    let body = scrape(&maddr);
    let _ = child.kill();
    let _ = child.wait();
    let n = node.lock().unwrap();
    assert!(n.accepted.len() >= 2, "blocks accepted: {}, rejected: {:?}", n.accepted.len(), n.rejected);
    assert!(n.rejected.iter().all(|r| r == "prev-blk-not-found" || r == "duplicate"), "rejected: {:?}", n.rejected);
    assert!(body.contains("hashrig_block_submit_answers_total{answer=\"accepted\"}"), "{body}");
    assert!(body.contains("hashrig_gbt_templates_total{trigger=\"initial\"} 1"));
}
