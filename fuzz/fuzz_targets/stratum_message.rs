//! The Stratum V1 parser on arbitrary lines, as a pool (or a man in the
//! middle on stratum+tcp) could send them: parse_line and every per-method
//! parser on what it yields never panic.
//!
//! `make fuzz` or `cargo +nightly fuzz run stratum_message`.
#![no_main]

use hashrig::node::stratum::proto::{self, Incoming};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let line = String::from_utf8_lossy(data);
    let _ = proto::printable(&line, 160);
    match proto::parse_line(&line) {
        Ok(Incoming::Request { params, .. }) => {
            let _ = proto::parse_notify(&params);
            if let Ok(d) = proto::parse_difficulty(&params) {
                assert!(d.is_finite() && d > 0.0);
            }
            let _ = proto::parse_set_extranonce(&params);
            let _ = proto::parse_version_mask(&params);
            let _ = proto::parse_reconnect(&params);
        }
        Ok(Incoming::Response { result, error, .. }) => {
            let _ = proto::parse_subscribe_result(&result);
            let _ = proto::parse_configure_result(&result);
            let _ = proto::error_text(&error);
        }
        Err(_) => {}
    }
});
