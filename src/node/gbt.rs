//! Solo mining through a node's getblocktemplate (BIP22/23, segwit rules).
//!
//! Each template is checked before it is mined: every transaction is decoded
//! (rust-bitcoin) and its txid and wtxid compared with what the node says, the
//! witness commitment we compute from the wtxids must equal the node's
//! `default_witness_commitment`, and the payout address must belong to the
//! node's chain. The coinbase carries the BIP34 height and an 8-byte
//! extranonce; the block is serialised with the template's transactions and
//! sent with submitblock, and the node's answer is logged and counted.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::address::NetworkUnchecked;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::Hash as _;
use crossbeam_channel::Receiver;
use serde_json::{json, Value};

use crate::chain::coinbase::{self, TxOut};
use crate::chain::{merkle, sha256d, BlockHash, CompactTarget, Target, Txid, WorkTemplate};
use crate::metrics::Metrics;
use crate::sched::{Hit, PowJob, PowScheduler, Stats};

/// Bytes of extranonce in the coinbase scriptSig (rolled by the scheduler).
const EXTRANONCE_LEN: usize = 8;
/// BIP141's witness reserved value: 32 zero bytes in the coinbase witness.
const WITNESS_RESERVED: [u8; 32] = [0; 32];
const MAX_RESPONSE: u64 = 64 << 20;

#[derive(Clone, Debug, PartialEq)]
pub enum RpcAuth {
    UserPass {
        user: String,
        pass: String,
    },
    /// Bitcoin Core's `.cookie` file (`__cookie__:password`), re-read on
    /// every call since the node rewrites it when it restarts.
    Cookie(PathBuf),
}

#[derive(Clone, Debug, PartialEq)]
pub struct GbtConfig {
    /// `http://host:port` of the node's RPC.
    pub url: String,
    pub auth: RpcAuth,
    /// Where the block reward goes: any address type of the node's chain.
    pub payout: String,
    /// Text after the height and extranonce in the coinbase scriptSig.
    pub coinbase_tag: String,
    /// Seconds between template refreshes (new transactions, ntime); with
    /// longpoll a new block is seen at once regardless.
    pub poll_secs: u64,
    pub longpoll: bool,
    /// Every block found is written here (`<height>-<hash>.hex`, the hex
    /// submitblock takes) before it is submitted, so no answer, crash or
    /// network fault loses it.
    pub blocks_dir: PathBuf,
    /// Longest one RPC call may take (longpoll excepted): a node that
    /// accepts the connection and never answers is an error (counted in
    /// `hashrig_rpc_errors_total`) after this, and polling goes on.
    pub rpc_timeout_secs: u64,
}

/// Where found blocks are saved by default: systemd's `$STATE_DIRECTORY`,
/// else `$XDG_STATE_HOME/hashrig/blocks`, else
/// `~/.local/state/hashrig/blocks`, else `./hashrig-blocks`.
pub fn default_blocks_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd may list several, separated by ':'.
        let first = d.to_string_lossy().split(':').next().unwrap_or_default().to_owned();
        return PathBuf::from(first).join("blocks");
    }
    if let Some(d) = env("XDG_STATE_HOME") {
        return d.join("hashrig").join("blocks");
    }
    if let Some(h) = env("HOME") {
        return h.join(".local/state/hashrig/blocks");
    }
    PathBuf::from("hashrig-blocks")
}

/// Writes a found block to `dir` (created 0700 if missing); returns the file.
pub fn save_block(dir: &std::path::Path, height: u32, hash: &BlockHash, hex: &str) -> std::io::Result<PathBuf> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{height}-{hash}.hex"));
    let tmp = dir.join(format!(".{height}-{hash}.hex.tmp"));
    std::fs::write(&tmp, format!("{hex}\n"))?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// How long a block is resubmitted after transport errors (while the node's
/// tip is still its parent).
const SUBMIT_RETRY_FOR: Duration = Duration::from_secs(60);

impl Default for GbtConfig {
    fn default() -> Self {
        GbtConfig {
            url: "http://127.0.0.1:8332".into(),
            auth: RpcAuth::Cookie(PathBuf::from(".cookie")),
            payout: String::new(),
            coinbase_tag: "/hashrig/".into(),
            poll_secs: 30,
            longpoll: true,
            blocks_dir: default_blocks_dir(),
            rpc_timeout_secs: 60,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GbtError {
    #[error("RPC {method}: {why}")]
    Rpc { method: &'static str, why: String },
    #[error("template: {0}")]
    Template(String),
    #[error("payout address: {0}")]
    Payout(String),
}

fn rpc_err(method: &'static str, why: impl ToString) -> GbtError {
    GbtError::Rpc { method, why: why.to_string() }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON-RPC 1.0 client as bitcoind speaks it.
pub struct Rpc {
    url: String,
    auth: RpcAuth,
    agent: ureq::Agent,
    longpoll_agent: ureq::Agent,
}

impl Rpc {
    /// `timeout_secs` bounds each call; the longpoll call has an hour.
    pub fn new(url: &str, auth: RpcAuth, timeout_secs: u64) -> Rpc {
        let mk = |t: u64| -> ureq::Agent {
            ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(t)))
                .http_status_as_error(false)
                .build()
                .into()
        };
        Rpc {
            url: url.trim_end_matches('/').to_owned(),
            auth,
            agent: mk(timeout_secs.max(1)),
            longpoll_agent: mk(3600),
        }
    }

    fn auth_header(&self) -> Result<String, String> {
        let pair = match &self.auth {
            RpcAuth::UserPass { user, pass } => format!("{user}:{pass}"),
            RpcAuth::Cookie(p) => std::fs::read_to_string(p)
                .map_err(|e| format!("cannot read cookie file {}: {e}", p.display()))?
                .trim()
                .to_owned(),
        };
        Ok(format!("Basic {}", base64(pair.as_bytes())))
    }

    pub fn call(&self, method: &'static str, params: Value) -> Result<Value, GbtError> {
        self.call_with(&self.agent, method, params)
    }

    fn call_with(&self, agent: &ureq::Agent, method: &'static str, params: Value) -> Result<Value, GbtError> {
        let body = json!({"jsonrpc": "1.0", "id": "hashrig", "method": method, "params": params}).to_string();
        let auth = self.auth_header().map_err(|e| rpc_err(method, e))?;
        let mut resp = agent
            .post(&self.url)
            .header("Authorization", &auth)
            .header("Content-Type", "application/json")
            .send(body)
            .map_err(|e| rpc_err(method, e))?;
        let status = resp.status().as_u16();
        if status == 401 || status == 403 {
            return Err(rpc_err(method, format!("HTTP {status}: check --rpc-user/--rpc-pass or --rpc-cookie")));
        }
        let text =
            resp.body_mut().with_config().limit(MAX_RESPONSE).read_to_string().map_err(|e| rpc_err(method, e))?;
        let v: Value =
            serde_json::from_str(&text).map_err(|e| rpc_err(method, format!("HTTP {status}, not JSON: {e}")))?;
        match v.get("error") {
            Some(e) if !e.is_null() => Err(rpc_err(method, hashrig_printable(&e.to_string()))),
            _ => v.get("result").cloned().ok_or_else(|| rpc_err(method, format!("HTTP {status}, no result"))),
        }
    }
}

fn hashrig_printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(300).collect()
}

/// A template transaction, checked.
#[derive(Clone, Debug)]
pub struct TemplateTx {
    pub data: Vec<u8>,
    pub txid: Txid,
    pub wtxid: [u8; 32],
}

/// A getblocktemplate result, checked and turned into work.
#[derive(Clone, Debug)]
pub struct Template {
    pub height: u32,
    pub prev_blockhash: BlockHash,
    pub bits: CompactTarget,
    pub target: Target,
    pub txs: Vec<TemplateTx>,
    pub coinbase_value: u64,
    pub longpollid: Option<String>,
    pub work: WorkTemplate,
    /// Whether the coinbase carries a witness commitment (and so the witness
    /// reserved value).
    pub segwit: bool,
}

fn field<'a>(v: &'a Value, k: &'static str) -> Result<&'a Value, GbtError> {
    v.get(k).ok_or_else(|| GbtError::Template(format!("missing {k}")))
}

fn u64_field(v: &Value, k: &'static str) -> Result<u64, GbtError> {
    field(v, k)?.as_u64().ok_or_else(|| GbtError::Template(format!("{k} is not a non-negative integer")))
}

fn str_field<'a>(v: &'a Value, k: &'static str) -> Result<&'a str, GbtError> {
    field(v, k)?.as_str().ok_or_else(|| GbtError::Template(format!("{k} is not a string")))
}

/// The witness commitment output script for `wtxids` (the coinbase's own
/// wtxid counts as zero), as BIP141 defines it.
pub fn witness_commitment_script(wtxids: &[[u8; 32]]) -> Vec<u8> {
    let mut leaves = vec![Txid::ZERO];
    leaves.extend(wtxids.iter().map(|w| Txid::from_byte_array(*w)));
    let root = merkle::root(&leaves).expect("at least the coinbase");
    let mut buf = root.to_byte_array().to_vec();
    buf.extend_from_slice(&WITNESS_RESERVED);
    let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
    script.extend_from_slice(&sha256d(&buf));
    script
}

/// Checks a template and builds the work for it, paying `payout`.
pub fn build_template(v: &Value, payout: &bitcoin::ScriptBuf, tag: &[u8]) -> Result<Template, GbtError> {
    let t = |e: String| GbtError::Template(e);
    let height = u32::try_from(u64_field(v, "height")?).map_err(|_| t("height above u32".into()))?;
    let prev_blockhash = BlockHash::from_str(str_field(v, "previousblockhash")?).map_err(|e| t(e.to_string()))?;
    let bits = CompactTarget::from_hex(str_field(v, "bits")?).map_err(|e| t(e.to_string()))?;
    let target = Target::from_compact(bits).map_err(|e| t(e.to_string()))?;
    let version =
        field(v, "version")?.as_i64().and_then(|x| i32::try_from(x).ok().or(u32::try_from(x).ok().map(|u| u as i32)));
    let version = version.ok_or_else(|| t("version is not a 32-bit integer".into()))?;
    let curtime = u32::try_from(u64_field(v, "curtime")?).map_err(|_| t("curtime above u32".into()))?;
    let coinbase_value = u64_field(v, "coinbasevalue")?;
    let list = field(v, "transactions")?.as_array().ok_or_else(|| t("transactions is not a list".into()))?;
    let mut txs = Vec::with_capacity(list.len());
    let mut any_witness = false;
    for (i, tx) in list.iter().enumerate() {
        let data = hex::decode(str_field(tx, "data")?).map_err(|_| t(format!("transaction {i}: bad hex")))?;
        let parsed: bitcoin::Transaction = deserialize(&data).map_err(|e| t(format!("transaction {i}: {e}")))?;
        let txid = Txid::from_byte_array(parsed.compute_txid().to_byte_array());
        let wtxid = parsed.compute_wtxid().to_byte_array();
        if str_field(tx, "txid")? != txid.to_string() {
            return Err(t(format!("transaction {i}: txid does not match its data")));
        }
        if let Some(h) = tx.get("hash").and_then(Value::as_str) {
            let mut rev = wtxid;
            rev.reverse();
            if h != hex::encode(rev) {
                return Err(t(format!("transaction {i}: hash (wtxid) does not match its data")));
            }
        }
        any_witness |= parsed.input.iter().any(|i| !i.witness.is_empty());
        txs.push(TemplateTx { data, txid, wtxid });
    }
    let default_commitment = match v.get("default_witness_commitment").and_then(Value::as_str) {
        Some(s) => Some(hex::decode(s).map_err(|_| t("default_witness_commitment: bad hex".into()))?),
        None => None,
    };
    let ours = witness_commitment_script(&txs.iter().map(|x| x.wtxid).collect::<Vec<_>>());
    if let Some(d) = &default_commitment {
        if *d != ours {
            return Err(t(format!(
                "default_witness_commitment {} differs from ours {}",
                hex::encode(d),
                hex::encode(&ours)
            )));
        }
    } else if any_witness {
        return Err(t("witness transactions but no default_witness_commitment".into()));
    }
    let segwit = default_commitment.is_some();
    let mut outputs = vec![TxOut { value: coinbase_value, script_pubkey: payout.to_bytes() }];
    if segwit {
        outputs.push(TxOut { value: 0, script_pubkey: ours });
    }
    let tag = &tag[..tag.len().min(40)];
    let parts = coinbase::build(height, EXTRANONCE_LEN, tag, &outputs).map_err(|e| t(e.to_string()))?;
    let mut ids = vec![Txid::ZERO];
    ids.extend(txs.iter().map(|x| x.txid));
    let work = WorkTemplate {
        version,
        prev_blockhash,
        coinb1: parts.coinb1,
        coinb2: parts.coinb2,
        extranonce1: Vec::new(),
        extranonce2_size: EXTRANONCE_LEN,
        merkle_branch: merkle::branch_for_coinbase(&ids),
        bits,
        time: curtime,
        version_mask: 0,
        fixed_merkle_root: None,
    };
    let longpollid = v.get("longpollid").and_then(Value::as_str).map(str::to_owned);
    Ok(Template { height, prev_blockhash, bits, target, txs, coinbase_value, longpollid, work, segwit })
}

/// The full block for a hit on `tpl`, serialised (rust-bitcoin), coinbase
/// with its witness reserved value when the block commits to witnesses.
pub fn block_hex(tpl: &Template, hit: &Hit) -> Result<String, GbtError> {
    let t = |e: String| GbtError::Template(e);
    let (en2, _) = tpl.work.split_roll(hit.extranonce2);
    let cb = tpl.work.coinbase(en2).map_err(|e| t(e.to_string()))?;
    let mut coinbase: bitcoin::Transaction = deserialize(&cb).map_err(|e| t(format!("own coinbase: {e}")))?;
    if tpl.segwit {
        coinbase.input[0].witness = bitcoin::Witness::from_slice(&[WITNESS_RESERVED]);
    }
    let header: bitcoin::block::Header = deserialize(&hit.header.to_bytes()).map_err(|e| t(format!("header: {e}")))?;
    let mut txdata = vec![coinbase];
    for x in &tpl.txs {
        txdata.push(deserialize(&x.data).map_err(|e| t(format!("template tx: {e}")))?);
    }
    let block = bitcoin::Block { header, txdata };
    if !block.check_merkle_root() || (tpl.segwit && !block.check_witness_commitment()) {
        return Err(t("assembled block fails its own merkle or witness check".into()));
    }
    Ok(hex::encode(serialize(&block)))
}

/// The payout script, checked against the node's chain name
/// ("main", "test", "testnet4", "signet", "regtest").
pub fn payout_script(address: &str, chain: &str) -> Result<bitcoin::ScriptBuf, GbtError> {
    let network = bitcoin::Network::from_core_arg(chain)
        .map_err(|e| GbtError::Payout(format!("unknown chain {chain:?}: {e}")))?;
    let a: bitcoin::Address<NetworkUnchecked> =
        address.parse().map_err(|e| GbtError::Payout(format!("{address:?}: {e}")))?;
    let a = a
        .require_network(network)
        .map_err(|e| GbtError::Payout(format!("{address:?} is not a {chain} address: {e}")))?;
    Ok(a.script_pubkey())
}

/// Classifies submitblock's answer (the `answer` label).
pub fn answer_label(result: &Value) -> &'static str {
    match result.as_str() {
        None if result.is_null() => "accepted",
        Some(s) if s.starts_with("duplicate") => "duplicate",
        Some("inconclusive") => "inconclusive",
        _ => "rejected",
    }
}

struct Miner {
    cfg: GbtConfig,
    rpc: Arc<Rpc>,
    payout: bitcoin::ScriptBuf,
    sched: Arc<PowScheduler>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    /// Templates being mined, by scheduler sequence (same prevhash only).
    by_seq: HashMap<u64, Arc<Template>>,
    current: Option<Arc<Template>>,
}

impl Miner {
    fn fetch(&mut self, trigger: &'static str) -> Result<(), GbtError> {
        let v = self.rpc.call("getblocktemplate", json!([{"rules": ["segwit"]}])).inspect_err(|_| {
            self.metrics.rpc_errors.with_label_values(&["getblocktemplate"]).inc();
        })?;
        self.take(v, trigger)
    }

    fn take(&mut self, v: Value, trigger: &'static str) -> Result<(), GbtError> {
        let tpl = Arc::new(build_template(&v, &self.payout, self.cfg.coinbase_tag.as_bytes())?);
        self.metrics.gbt_templates.with_label_values(&[trigger]).inc();
        if self.current.as_ref().is_some_and(|c| c.prev_blockhash != tpl.prev_blockhash) {
            self.by_seq.clear();
        }
        if self.current.as_ref().is_none_or(|c| c.prev_blockhash != tpl.prev_blockhash) {
            tracing::info!(
                "gbt: mining height {} on {} ({} transactions, reward {} sat, difficulty {:.3})",
                tpl.height,
                tpl.prev_blockhash,
                tpl.txs.len(),
                tpl.coinbase_value,
                tpl.target.difficulty()
            );
        }
        let seq = self.sched.publish(PowJob {
            id: format!("gbt-{}", tpl.height),
            template: tpl.work.clone(),
            share_target: tpl.target,
            height: Some(tpl.height),
            source: "gbt",
        });
        self.by_seq.insert(seq, tpl.clone());
        while self.by_seq.len() > 8 {
            let oldest = *self.by_seq.keys().min().expect("non-empty");
            self.by_seq.remove(&oldest);
        }
        self.current = Some(tpl);
        Ok(())
    }

    /// submitblock, retried after transport errors (timeouts, HTTP 500,
    /// an unreadable answer) for up to [`SUBMIT_RETRY_FOR`] while the node's
    /// tip is still the block's parent. `None`: no answer came.
    fn submit(&self, tpl: &Template, hash: &BlockHash, hex: &str) -> Option<Value> {
        let started = Instant::now();
        let mut wait = Duration::from_millis(250);
        loop {
            let e = match self.rpc.call("submitblock", json!([hex])) {
                Ok(v) => return Some(v),
                Err(e) => e,
            };
            self.metrics.rpc_errors.with_label_values(&["submitblock"]).inc();
            if started.elapsed() >= SUBMIT_RETRY_FOR {
                tracing::error!(%hash, "gbt: submitblock failed: {e}; giving up after {SUBMIT_RETRY_FOR:?} (the block is saved)");
                return None;
            }
            // A block on a replaced tip is worth nothing any more.
            if let Ok(v) = self.rpc.call("getbestblockhash", json!([])) {
                let tip = v.as_str().and_then(|s| BlockHash::from_str(s).ok());
                if tip.is_some_and(|t| t != tpl.prev_blockhash) {
                    tracing::warn!(%hash, "gbt: submitblock failed: {e}; the tip has moved on, not retrying");
                    return None;
                }
            }
            tracing::warn!(%hash, "gbt: submitblock failed: {e}; retrying in {wait:?}");
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_secs(4));
        }
    }

    fn on_hit(&mut self, hit: Hit) {
        let Some(tpl) = self.by_seq.get(&hit.job.seq).cloned() else {
            tracing::debug!("gbt: a block for an outdated template; dropped");
            self.metrics.blocks.with_label_values(&["stale"]).inc();
            return;
        };
        // Re-check against the template's own target before bothering the node.
        let hash = hit.header.block_hash();
        if !tpl.target.is_met_by(&hash) || hit.header.prev_blockhash != tpl.prev_blockhash {
            tracing::error!(%hash, "gbt: hit fails the block re-check; not submitted");
            return;
        }
        let hex = match block_hex(&tpl, &hit) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!("gbt: cannot assemble the block: {e}");
                return;
            }
        };
        // Found work is never lost: the block goes to the log and to a file
        // before the node sees it.
        tracing::info!(height = tpl.height, %hash, "gbt: found a block, submitting: {hex}");
        match save_block(&self.cfg.blocks_dir, tpl.height, &hash, &hex) {
            Ok(p) => tracing::info!(%hash, "gbt: block saved to {}", p.display()),
            Err(e) => tracing::error!(
                %hash,
                "gbt: cannot save the block under {}: {e} (its hex is in the log line above)",
                self.cfg.blocks_dir.display()
            ),
        }
        let Some(answer) = self.submit(&tpl, &hash, &hex) else {
            self.metrics.block_submit_answers.with_label_values(&["error"]).inc();
            self.metrics.blocks.with_label_values(&["rejected"]).inc();
            if let Err(e) = self.fetch("block") {
                tracing::warn!("gbt: {e}");
            }
            return;
        };
        let label = answer_label(&answer);
        self.metrics.block_submit_answers.with_label_values(&[label]).inc();
        if label == "accepted" {
            self.metrics.blocks.with_label_values(&["accepted"]).inc();
            self.stats.blocks.fetch_add(1, Ordering::Relaxed);
            self.stats.accepted.fetch_add(1, Ordering::Relaxed);
            tracing::info!(height = tpl.height, %hash, "gbt: block accepted by the node");
        } else {
            self.metrics.blocks.with_label_values(&["rejected"]).inc();
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(height = tpl.height, %hash, "gbt: the node answered {}", hashrig_printable(&answer.to_string()));
        }
        if let Err(e) = self.fetch("block") {
            tracing::warn!("gbt: {e}");
        }
    }
}

/// Mines on the node until `stop` is set.
pub fn run(
    cfg: GbtConfig,
    sched: Arc<PowScheduler>,
    hits: Receiver<Hit>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> Result<(), GbtError> {
    let rpc = Arc::new(Rpc::new(&cfg.url, cfg.auth.clone(), cfg.rpc_timeout_secs));
    let info = rpc.call("getblockchaininfo", json!([]))?;
    let chain = info.get("chain").and_then(Value::as_str).unwrap_or("main").to_owned();
    let payout = payout_script(&cfg.payout, &chain)?;
    tracing::info!("gbt: node {} on chain {chain}, paying to {}", cfg.url, cfg.payout);
    let mut m = Miner { cfg, rpc: rpc.clone(), payout, sched, stats, metrics, by_seq: HashMap::new(), current: None };
    let mut backoff = Duration::from_millis(500);
    while let Err(e) = m.fetch("initial") {
        tracing::warn!("gbt: {e}; retrying in {backoff:?}");
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    // Longpoll on its own thread: the call blocks until the node has a new
    // template (a new block, or new transactions after a while).
    let (ltx, mut lrx) = crossbeam_channel::unbounded::<Value>();
    let first_id = m.current.as_ref().and_then(|t| t.longpollid.clone());
    if let (true, Some(mut id)) = (m.cfg.longpoll, first_id) {
        let (rpc, stop, metrics) = (rpc.clone(), stop.clone(), m.metrics.clone());
        std::thread::Builder::new()
            .name("gbt-longpoll".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match rpc.call_with(
                        &rpc.longpoll_agent,
                        "getblocktemplate",
                        json!([{"rules": ["segwit"], "longpollid": id}]),
                    ) {
                        Ok(v) => {
                            // Re-arm with the id of the template just received,
                            // not with the one the main loop mines (it may not
                            // have taken this one yet): the node answers an
                            // outdated id at once, which would spin.
                            let next = v.get("longpollid").and_then(Value::as_str).map(str::to_owned);
                            if ltx.send(v).is_err() {
                                break;
                            }
                            match next {
                                Some(n) => id = n,
                                None => break,
                            }
                        }
                        Err(e) => {
                            metrics.rpc_errors.with_label_values(&["getblocktemplate"]).inc();
                            tracing::warn!("gbt: longpoll: {e}");
                            std::thread::sleep(Duration::from_secs(2));
                        }
                    }
                }
            })
            .map_err(|e| rpc_err("getblocktemplate", e))?;
    }
    let poll = Duration::from_secs(m.cfg.poll_secs.max(1));
    let mut last_poll = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            // The engines are stopped before the adapter: submit (and save)
            // what they left.
            while let Ok(h) = hits.try_recv() {
                m.on_hit(h);
            }
            break;
        }
        crossbeam_channel::select! {
            recv(hits) -> h => match h {
                Ok(h) => m.on_hit(h),
                Err(_) => break,
            },
            recv(lrx) -> v => match v {
                // A longpoll answer can be older than what was fetched since
                // (after a block of ours): mining it would go back to a
                // replaced tip. One identical to the current template would
                // only restart its nonce space.
                Ok(v) if m.current.as_ref().is_some_and(|c| {
                    v.get("height").and_then(Value::as_u64).is_some_and(|h| h < u64::from(c.height))
                        || (c.longpollid.is_some() && v.get("longpollid").and_then(Value::as_str) == c.longpollid.as_deref())
                }) => tracing::debug!("gbt: longpoll template not newer than the current one; skipped"),
                Ok(v) => {
                    if let Err(e) = m.take(v, "longpoll") {
                        tracing::warn!("gbt: {e}");
                    }
                }
                // The longpoll thread is gone (the node stopped offering it).
                Err(_) => lrx = crossbeam_channel::never(),
            },
            default(Duration::from_millis(200)) => {}
        }
        if last_poll.elapsed() >= poll {
            last_poll = Instant::now();
            if let Err(e) = m.fetch("poll") {
                tracing::warn!("gbt: {e}");
            }
        }
    }
    m.sched.withdraw();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        for (i, o) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn payout_any_address_type() {
        // BIP173/BIP350 test vectors and a regtest P2PKH.
        assert!(payout_script("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest").is_ok());
        assert!(payout_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "main").is_ok());
        assert!(payout_script("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0", "main").is_ok());
        assert!(payout_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "main").is_ok());
        assert!(payout_script("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", "regtest").is_err());
        assert!(payout_script("nonsense", "main").is_err());
        assert!(payout_script("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "moon").is_err());
    }

    #[test]
    fn answers() {
        assert_eq!(answer_label(&Value::Null), "accepted");
        assert_eq!(answer_label(&json!("duplicate")), "duplicate");
        assert_eq!(answer_label(&json!("duplicate-inconclusive")), "duplicate");
        assert_eq!(answer_label(&json!("inconclusive")), "inconclusive");
        assert_eq!(answer_label(&json!("high-hash")), "rejected");
    }

    #[test]
    fn bad_templates_are_errors() {
        let script = bitcoin::ScriptBuf::new();
        for v in [json!(null), json!({}), json!({"height": -1}), json!({"height": 1, "previousblockhash": "zz"})] {
            assert!(build_template(&v, &script, b"").is_err());
        }
    }
}
