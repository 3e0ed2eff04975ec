//! getblocktemplate answers as a node (or anything on the RPC port) could
//! send them: the template builder checks every transaction, the witness
//! commitment and the amounts, and returns an error, never panics.
//!
//! `make fuzz` or `cargo +nightly fuzz run gbt_template`.
#![no_main]

use hashrig::node::gbt::{build_template, payout_script};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else { return };
    let payout = payout_script("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", "regtest").expect("a valid address");
    let _ = build_template(&v, &payout, b"/hashrig/");
});
