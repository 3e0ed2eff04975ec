//! The JSON-lines item format of `hashrig verify` and of sigserve's JSON
//! debugging mode:
//!
//! `{"scheme":"ed25519"|"ed25519-strict"|"ecdsa"|"schnorr","pubkey":HEX,"msg":HEX,"sig":HEX}`
//! plus `"allow_high_s":true` for ECDSA under consensus rules. Answers are
//! `{"valid":true}` or `{"valid":false,"reason":"..."}`.

use serde::Deserialize;

use super::{Reason, Scheme, SigItem, Verdict, FLAG_ALLOW_HIGH_S};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonItem {
    scheme: String,
    pubkey: String,
    msg: String,
    sig: String,
    #[serde(default)]
    allow_high_s: bool,
}

/// Parse one JSON line into an item. A line that is not an item gets the
/// reason to report for it ([`Reason::BadInput`], or [`Reason::UnknownScheme`]).
pub fn parse_item(line: &str) -> Result<SigItem, Reason> {
    let j: JsonItem = serde_json::from_str(line).map_err(|_| Reason::BadInput)?;
    item_from_json(j)
}

/// Parse a JSON value (one element of a JSON-mode batch).
pub fn parse_value(v: serde_json::Value) -> Result<SigItem, Reason> {
    let j: JsonItem = serde_json::from_value(v).map_err(|_| Reason::BadInput)?;
    item_from_json(j)
}

fn item_from_json(j: JsonItem) -> Result<SigItem, Reason> {
    let scheme: Scheme = j.scheme.parse()?;
    let dec = |s: &str| hex::decode(s).map_err(|_| Reason::BadInput);
    let mut item = SigItem::new(scheme, dec(&j.pubkey)?, dec(&j.msg)?, dec(&j.sig)?);
    if j.allow_high_s {
        item.flags |= FLAG_ALLOW_HIGH_S;
    }
    Ok(item)
}

/// Render an item as a JSON line (the inverse of [`parse_item`]).
pub fn format_item(item: &SigItem) -> String {
    let mut v = serde_json::json!({
        "scheme": item.scheme.name(),
        "pubkey": hex::encode(&item.pubkey),
        "msg": hex::encode(&item.msg),
        "sig": hex::encode(&item.sig),
    });
    if item.flags & FLAG_ALLOW_HIGH_S != 0 {
        v["allow_high_s"] = serde_json::Value::Bool(true);
    }
    v.to_string()
}

/// `{"valid":true}` / `{"valid":false,"reason":"bad_signature"}`.
pub fn verdict_value(v: Verdict) -> serde_json::Value {
    match v {
        Verdict::Valid => serde_json::json!({"valid": true}),
        Verdict::Invalid(r) => serde_json::json!({"valid": false, "reason": r.name()}),
    }
}

/// One output line: `{"valid":true}` / `{"valid":false,"reason":"…"}`
/// (keys in that order).
pub fn format_verdict(v: Verdict) -> String {
    match v {
        Verdict::Valid => r#"{"valid":true}"#.to_string(),
        Verdict::Invalid(r) => format!(r#"{{"valid":false,"reason":"{}"}}"#, r.name()),
    }
}

/// Parse a verdict line back (tests, the JSON-mode client).
pub fn parse_verdict(v: &serde_json::Value) -> Option<Verdict> {
    let valid = v.get("valid")?.as_bool()?;
    if valid {
        return Some(Verdict::Valid);
    }
    let name = v.get("reason")?.as_str()?;
    Reason::ALL.into_iter().find(|r| r.name() == name).map(Verdict::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let it = SigItem::new(Scheme::Ecdsa, vec![2; 33], vec![1; 32], vec![3; 64]).allow_high_s();
        assert_eq!(parse_item(&format_item(&it)).unwrap(), it);
        assert_eq!(parse_item("{}"), Err(Reason::BadInput));
        assert_eq!(parse_item("not json"), Err(Reason::BadInput));
        assert_eq!(parse_item(r#"{"scheme":"rsa","pubkey":"","msg":"","sig":""}"#), Err(Reason::UnknownScheme));
        for v in [Verdict::Valid, Verdict::Invalid(Reason::HighS)] {
            let j: serde_json::Value = serde_json::from_str(&format_verdict(v)).unwrap();
            assert_eq!(parse_verdict(&j), Some(v));
        }
    }
}
