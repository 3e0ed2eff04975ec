//! Answers in each wire format: a batch's verdicts, or an error, as a
//! binary frame or a JSON line, and the `kind` label their requests carry.

use crate::node::sigserve::frame::{self, ErrorCode};
use crate::sig::{jsonl, Verdict};

/// The wire format a request came in, and its answer goes out in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Encoding {
    Binary,
    Json,
}

impl Encoding {
    /// The `kind` label of `hashrig_sigserve_frames_total`.
    pub(super) fn label(self) -> &'static str {
        match self {
            Encoding::Binary => "batch",
            Encoding::Json => "json",
        }
    }

    /// The answer to request `id`: one verdict per item.
    pub(super) fn verdicts(self, id: u64, verdicts: &[Verdict]) -> Vec<u8> {
        match self {
            Encoding::Binary => frame::encode_verdicts(id, verdicts),
            Encoding::Json => json_answer(id, verdicts),
        }
    }

    /// An error for request `id` (a JSON line carries no code).
    pub(super) fn error(self, id: u64, code: ErrorCode, msg: &str) -> Vec<u8> {
        match self {
            Encoding::Binary => frame::encode_error(id, code, msg),
            Encoding::Json => json_error(Some(id), msg),
        }
    }
}

/// `{"id":…,"error":…}` and a newline; `id` null when the line had none.
pub(super) fn json_error(id: Option<u64>, msg: &str) -> Vec<u8> {
    let mut s = serde_json::json!({"id": id, "error": msg}).to_string();
    s.push('\n');
    s.into_bytes()
}

/// `{"id":…,"verdicts":[…]}` and a newline.
pub(super) fn json_answer(id: u64, verdicts: &[Verdict]) -> Vec<u8> {
    let v: Vec<serde_json::Value> = verdicts.iter().map(|v| jsonl::verdict_value(*v)).collect();
    let mut s = serde_json::json!({"id": id, "verdicts": v}).to_string();
    s.push('\n');
    s.into_bytes()
}
