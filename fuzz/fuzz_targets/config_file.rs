//! `hashrig run --config FILE` on arbitrary text: the TOML loader and the
//! resolution into an adapter (URL, TLS, [stratum] limits) return errors,
//! never panic, and an error never quotes the file (it may hold a password).
//!
//! `make fuzz` or `cargo +nightly fuzz run config_file`.
#![no_main]

use hashrig::node::config::{resolve, AdapterArgs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Paths in a config are opened (tls_ca); keep the fuzzer off devices.
    if text.contains("/dev") || text.contains("/proc") || text.contains("/sys") {
        return;
    }
    if let Err(e) = resolve(&AdapterArgs::default(), Some(text)) {
        let msg = e.to_string();
        if let Some(secret) = text.lines().find_map(|l| l.trim().strip_prefix("pass = \"")) {
            let secret = secret.trim_end_matches('"');
            if secret.len() >= 8 && msg.starts_with("--config") {
                assert!(!msg.contains(secret), "a TOML error quoted the password");
            }
        }
    }
});
