//! Stratum V1 on the wire: newline-delimited JSON-RPC 1.0-ish messages.
//! Everything here is pure (no I/O) so that every way a pool can get a
//! message wrong is a unit test: bad JSON, wrong types, missing fields, odd
//! lengths all come back as [`ProtoError`], never a panic.

use serde_json::{json, Value};

use crate::chain::{BlockHash, CompactTarget};

/// Longest line accepted from a pool. Real `mining.notify` lines are a few
/// KiB (a merkle branch of 12 hashes is under 1 KiB); 64 KiB is generous.
pub const MAX_LINE: usize = 64 * 1024;

/// What the client asks for in mining.configure (BIP310): every bit BIP320
/// leaves to miners.
pub const DEFAULT_VERSION_MASK: u32 = 0x1fff_e000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProtoError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON-RPC message (no method and no id)")]
    NotRpc,
    #[error("{0}: missing or of the wrong type")]
    Field(&'static str),
    #[error("{0}: bad hex or length")]
    Hex(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

/// One message from the pool.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// An answer to one of our requests (our ids are always integers).
    Response { id: u64, result: Value, error: Value },
    /// A request or notification from the pool (`id` null for notifications).
    Request { id: Value, method: String, params: Value },
}

pub fn parse_line(line: &str) -> Result<Incoming, ProtoError> {
    let v: Value = serde_json::from_str(line).map_err(|e| ProtoError::Json(e.to_string()))?;
    let Value::Object(mut o) = v else { return Err(ProtoError::NotRpc) };
    if let Some(method) = o.get("method").and_then(Value::as_str).map(str::to_owned) {
        let params = o.remove("params").unwrap_or(Value::Array(vec![]));
        let id = o.remove("id").unwrap_or(Value::Null);
        return Ok(Incoming::Request { id, method, params });
    }
    let id = o.get("id").and_then(Value::as_u64).ok_or(ProtoError::NotRpc)?;
    Ok(Incoming::Response {
        id,
        result: o.remove("result").unwrap_or(Value::Null),
        error: o.remove("error").unwrap_or(Value::Null),
    })
}

/// A request line, newline included.
pub fn request(id: u64, method: &str, params: Value) -> String {
    let mut s = json!({"id": id, "method": method, "params": params}).to_string();
    s.push('\n');
    s
}

/// An answer to a pool's request, newline included.
pub fn response(id: &Value, result: Value) -> String {
    let mut s = json!({"id": id, "result": result, "error": null}).to_string();
    s.push('\n');
    s
}

/// The nine fields of mining.notify, decoded into consensus types.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub job_id: String,
    pub prev_blockhash: BlockHash,
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
    /// Internal byte order, as sent.
    pub merkle_branch: Vec<[u8; 32]>,
    pub version: i32,
    pub bits: CompactTarget,
    pub ntime: u32,
    pub clean_jobs: bool,
}

fn arr<'a>(params: &'a Value, what: &'static str) -> Result<&'a Vec<Value>, ProtoError> {
    params.as_array().ok_or(ProtoError::Field(what))
}

fn str_at<'a>(a: &'a [Value], i: usize, what: &'static str) -> Result<&'a str, ProtoError> {
    a.get(i).and_then(Value::as_str).ok_or(ProtoError::Field(what))
}

fn hex_bytes(s: &str, what: &'static str, max: usize) -> Result<Vec<u8>, ProtoError> {
    if s.len() > 2 * max {
        return Err(ProtoError::Hex(what));
    }
    hex::decode(s).map_err(|_| ProtoError::Hex(what))
}

/// A big-endian 32-bit hex field (version, nbits, ntime, version mask).
pub fn hex_u32(s: &str, what: &'static str) -> Result<u32, ProtoError> {
    if s.is_empty() || s.len() > 8 {
        return Err(ProtoError::Hex(what));
    }
    u32::from_str_radix(s, 16).map_err(|_| ProtoError::Hex(what))
}

/// Stratum's prevhash: the internal-order hash with each 4-byte word
/// byte-swapped (what a miner copies word by word into the header).
pub fn parse_prevhash(s: &str) -> Result<BlockHash, ProtoError> {
    let b = hex_bytes(s, "prevhash", 32)?;
    let b: [u8; 32] = b.try_into().map_err(|_| ProtoError::Hex("prevhash"))?;
    let mut internal = [0u8; 32];
    for (i, w) in b.chunks_exact(4).enumerate() {
        for j in 0..4 {
            internal[4 * i + j] = w[3 - j];
        }
    }
    Ok(BlockHash::from_byte_array(internal))
}

/// The inverse of [`parse_prevhash`].
pub fn format_prevhash(h: &BlockHash) -> String {
    let b = h.as_byte_array();
    let mut out = [0u8; 32];
    for i in 0..8 {
        for j in 0..4 {
            out[4 * i + j] = b[4 * i + 3 - j];
        }
    }
    hex::encode(out)
}

pub fn parse_notify(params: &Value) -> Result<Notify, ProtoError> {
    let a = arr(params, "mining.notify params")?;
    if a.len() < 9 {
        return Err(ProtoError::Field("mining.notify: nine params"));
    }
    let job_id = str_at(a, 0, "job_id")?;
    if job_id.is_empty() || job_id.len() > 128 {
        return Err(ProtoError::Invalid("job_id must be 1..=128 characters"));
    }
    let branch = a[4].as_array().ok_or(ProtoError::Field("merkle_branch"))?;
    if branch.len() > 32 {
        return Err(ProtoError::Invalid("merkle_branch longer than 32"));
    }
    let mut merkle_branch = Vec::with_capacity(branch.len());
    for b in branch {
        let s = b.as_str().ok_or(ProtoError::Field("merkle_branch entry"))?;
        let v = hex_bytes(s, "merkle_branch entry", 32)?;
        merkle_branch.push(v.try_into().map_err(|_| ProtoError::Hex("merkle_branch entry"))?);
    }
    let clean_jobs = match &a[8] {
        Value::Bool(b) => *b,
        // Some pools send 0/1.
        Value::Number(n) => n.as_u64().is_some_and(|n| n != 0),
        _ => return Err(ProtoError::Field("clean_jobs")),
    };
    Ok(Notify {
        job_id: job_id.to_owned(),
        prev_blockhash: parse_prevhash(str_at(a, 1, "prevhash")?)?,
        coinb1: hex_bytes(str_at(a, 2, "coinb1")?, "coinb1", 16 * 1024)?,
        coinb2: hex_bytes(str_at(a, 3, "coinb2")?, "coinb2", 16 * 1024)?,
        merkle_branch,
        version: hex_u32(str_at(a, 5, "version")?, "version")? as i32,
        bits: CompactTarget::from_consensus(hex_u32(str_at(a, 6, "nbits")?, "nbits")?),
        ntime: hex_u32(str_at(a, 7, "ntime")?, "ntime")?,
        clean_jobs,
    })
}

/// mining.set_difficulty: a positive finite number.
pub fn parse_difficulty(params: &Value) -> Result<f64, ProtoError> {
    let d = arr(params, "mining.set_difficulty params")?
        .first()
        .and_then(Value::as_f64)
        .ok_or(ProtoError::Field("difficulty"))?;
    if d.is_finite() && d > 0.0 {
        Ok(d)
    } else {
        Err(ProtoError::Invalid("difficulty must be positive and finite"))
    }
}

/// Extranonce2 sizes a pool may set (0 is legal: a pool that rolls for us).
pub const MAX_EXTRANONCE2_SIZE: usize = 32;

fn extranonce(en1: &Value, size: &Value) -> Result<(Vec<u8>, usize), ProtoError> {
    let en1 = hex_bytes(en1.as_str().ok_or(ProtoError::Field("extranonce1"))?, "extranonce1", 64)?;
    let size = size.as_u64().ok_or(ProtoError::Field("extranonce2_size"))? as usize;
    if size > MAX_EXTRANONCE2_SIZE {
        return Err(ProtoError::Invalid("extranonce2_size above 32"));
    }
    Ok((en1, size))
}

/// The result of mining.subscribe.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribed {
    /// The id to resume the session with (the mining.notify subscription id).
    pub session_id: Option<String>,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
}

/// `[[["mining.set_difficulty", id], ["mining.notify", id]], extranonce1, size]`
/// (some pools send a single pair instead of a list of pairs).
pub fn parse_subscribe_result(result: &Value) -> Result<Subscribed, ProtoError> {
    let a = arr(result, "mining.subscribe result")?;
    if a.len() < 3 {
        return Err(ProtoError::Field("mining.subscribe result: three items"));
    }
    let mut session_id = None;
    let pairs: Vec<&Value> = match a[0].as_array() {
        Some(v) if v.first().is_some_and(Value::is_array) => v.iter().collect(),
        Some(_) => vec![&a[0]],
        None => vec![],
    };
    for p in pairs {
        if let Some([m, id]) = p.as_array().map(Vec::as_slice) {
            if m.as_str() == Some("mining.notify") {
                session_id = id.as_str().filter(|s| !s.is_empty() && s.len() <= 128).map(str::to_owned);
            }
        }
    }
    let (extranonce1, extranonce2_size) = extranonce(&a[1], &a[2])?;
    Ok(Subscribed { session_id, extranonce1, extranonce2_size })
}

/// mining.set_extranonce params: `[extranonce1, extranonce2_size]`.
pub fn parse_set_extranonce(params: &Value) -> Result<(Vec<u8>, usize), ProtoError> {
    let a = arr(params, "mining.set_extranonce params")?;
    if a.len() < 2 {
        return Err(ProtoError::Field("mining.set_extranonce: two params"));
    }
    extranonce(&a[0], &a[1])
}

/// mining.set_version_mask params: `[mask]`.
pub fn parse_version_mask(params: &Value) -> Result<u32, ProtoError> {
    let a = arr(params, "mining.set_version_mask params")?;
    hex_u32(str_at(a, 0, "version mask")?, "version mask")
}

/// The version-rolling part of a mining.configure result: the mask the pool
/// allows, or `None` when it refused or did not understand.
pub fn parse_configure_result(result: &Value) -> Option<u32> {
    let o = result.as_object()?;
    if o.get("version-rolling").and_then(Value::as_bool) != Some(true) {
        return None;
    }
    hex_u32(o.get("version-rolling.mask")?.as_str()?, "version-rolling.mask").ok()
}

/// client.reconnect params: `[host, port, wait_seconds]`, all optional.
#[derive(Debug, Clone, PartialEq)]
pub struct Reconnect {
    pub host: Option<String>,
    pub port: Option<u16>,
    pub wait_secs: u64,
}

pub fn parse_reconnect(params: &Value) -> Result<Reconnect, ProtoError> {
    let empty = vec![];
    let a = params.as_array().unwrap_or(&empty);
    let host = a.first().and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    if host.as_ref().is_some_and(|h| h.len() > 255) {
        return Err(ProtoError::Invalid("client.reconnect: host too long"));
    }
    let port = match a.get(1) {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => {
            Some(n.as_u64().and_then(|p| u16::try_from(p).ok()).ok_or(ProtoError::Field("port"))?)
        }
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(s.parse().map_err(|_| ProtoError::Field("port"))?),
        _ => return Err(ProtoError::Field("port")),
    };
    let wait_secs = match a.get(2) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    Ok(Reconnect { host, port, wait_secs })
}

/// A pool's error as text, whatever shape it came in: `[code, "msg", tb]`,
/// `{"code":…,"message":…}` or a plain string. Truncated for logs.
pub fn error_text(error: &Value) -> String {
    let s = match error {
        Value::Null => String::new(),
        Value::Array(a) => {
            let code = a.first().map(|c| c.to_string()).unwrap_or_default();
            let msg = a.get(1).and_then(Value::as_str).unwrap_or("");
            format!("{code} {msg}")
        }
        Value::Object(o) => {
            let code = o.get("code").map(|c| c.to_string()).unwrap_or_default();
            let msg = o.get("message").and_then(Value::as_str).unwrap_or("");
            format!("{code} {msg}")
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    printable(&s, 200)
}

/// Text from the network made safe for one log line.
pub fn printable(s: &str, max: usize) -> String {
    s.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// The parameters of mining.submit for one share.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubmitFields {
    pub job_id: String,
    pub extranonce2: Vec<u8>,
    pub ntime: u32,
    pub nonce: u32,
    /// The rolled version bits (`version & mask`) when version rolling is on.
    pub version_bits: Option<u32>,
}

impl SubmitFields {
    pub fn params(&self, user: &str) -> Value {
        let mut p = vec![
            json!(user),
            json!(self.job_id),
            json!(hex::encode(&self.extranonce2)),
            json!(format!("{:08x}", self.ntime)),
            json!(format!("{:08x}", self.nonce)),
        ];
        if let Some(v) = self.version_bits {
            p.push(json!(format!("{v:08x}")));
        }
        Value::Array(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // From the Stratum V1 docs (slushpool/braiins "Stratum mining protocol").
    const NOTIFY: &str = r#"{"params": ["bf", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008", "072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000", [], "00000002", "1c2ac4af", "504e86b9", false], "id": null, "method": "mining.notify"}"#;

    #[test]
    fn parses_the_documented_notify() {
        let Incoming::Request { method, params, .. } = parse_line(NOTIFY).unwrap() else { panic!() };
        assert_eq!(method, "mining.notify");
        let n = parse_notify(&params).unwrap();
        assert_eq!(n.job_id, "bf");
        assert_eq!(n.version, 2);
        assert_eq!(n.bits.to_consensus(), 0x1c2ac4af);
        assert_eq!(n.ntime, 0x504e86b9);
        assert!(!n.clean_jobs);
        assert_eq!(n.prev_blockhash.to_string(), "00000000440b921e1b77c6c0487ae5616de67f788f44ae2a5af6e2194d16b6f8");
        assert_eq!(
            format_prevhash(&n.prev_blockhash),
            "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000"
        );
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for line in ["", "{", "[]", "null", "42", r#"{"id":"x"}"#, "\u{0}", r#"{"method":5}"#] {
            assert!(parse_line(line).is_err(), "{line:?}");
        }
        for p in [
            json!(null),
            json!([]),
            json!([1, 2, 3, 4, 5, 6, 7, 8, 9]),
            json!(["a", "zz", "", "", [], "1", "1", "1", true]),
        ] {
            assert!(parse_notify(&p).is_err(), "{p}");
        }
        let mut long = json!(["j", "00".repeat(32), "", "", [], "20000000", "1d00ffff", "5", true]);
        assert!(parse_notify(&long).is_ok());
        long[5] = json!("123456789");
        assert!(parse_notify(&long).is_err());
        long[5] = json!(536870912);
        assert!(parse_notify(&long).is_err());
        for p in [json!([0]), json!([-1]), json!(["1"]), json!({}), json!([null])] {
            assert!(parse_difficulty(&p).is_err(), "{p}");
        }
        assert_eq!(parse_difficulty(&json!([0.001])).unwrap(), 0.001);
        assert!(parse_set_extranonce(&json!(["zz", 4])).is_err());
        assert!(parse_set_extranonce(&json!(["aa", 33])).is_err());
        assert!(parse_set_extranonce(&json!(["aa", -1])).is_err());
        assert_eq!(parse_set_extranonce(&json!(["aabb", 4])).unwrap(), (vec![0xaa, 0xbb], 4));
        assert!(parse_reconnect(&json!(["h", 70000])).is_err());
        assert_eq!(parse_reconnect(&json!([])).unwrap(), Reconnect { host: None, port: None, wait_secs: 0 });
        assert_eq!(
            parse_reconnect(&json!(["pool.example", "3333", 5])).unwrap(),
            Reconnect { host: Some("pool.example".into()), port: Some(3333), wait_secs: 5 }
        );
    }

    #[test]
    fn subscribe_results_in_the_shapes_pools_send() {
        // ckpool / slush: a list of pairs.
        let r = json!([
            [
                ["mining.set_difficulty", "b4b6693b72a50c7116db18d6497cac52"],
                ["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f"]
            ],
            "08000002",
            4
        ]);
        let s = parse_subscribe_result(&r).unwrap();
        assert_eq!(s.session_id.as_deref(), Some("ae6812eb4cd7735a302a8a9dd95cf71f"));
        assert_eq!((s.extranonce1, s.extranonce2_size), (vec![8, 0, 0, 2], 4));
        // A single pair.
        let r = json!([["mining.notify", "deadbeef"], "f000", 8]);
        assert_eq!(parse_subscribe_result(&r).unwrap().session_id.as_deref(), Some("deadbeef"));
        assert!(parse_subscribe_result(&json!([null, "f000"])).is_err());
        assert!(parse_subscribe_result(&json!("x")).is_err());
    }

    #[test]
    fn configure_and_errors() {
        assert_eq!(
            parse_configure_result(&json!({"version-rolling": true, "version-rolling.mask": "1fffe000"})),
            Some(0x1fffe000)
        );
        assert_eq!(parse_configure_result(&json!({"version-rolling": false})), None);
        assert_eq!(parse_configure_result(&json!(null)), None);
        assert_eq!(error_text(&json!([23, "Low difficulty share", null])), "23 Low difficulty share");
        assert_eq!(error_text(&json!({"code": 21, "message": "Job not found"})), "21 Job not found");
        assert_eq!(error_text(&json!("bad\nthing")), "badthing");
    }

    #[test]
    fn submit_params_are_exact() {
        let f = SubmitFields {
            job_id: "bf".into(),
            extranonce2: vec![0, 0, 0, 1],
            ntime: 0x504e86ed,
            nonce: 0xb2957c02,
            version_bits: None,
        };
        assert_eq!(f.params("slush.miner1"), json!(["slush.miner1", "bf", "00000001", "504e86ed", "b2957c02"]));
        let f = SubmitFields { version_bits: Some(0x0000_2000), ..f };
        assert_eq!(f.params("u").as_array().unwrap()[5], json!("00002000"));
    }
}
