//! The hardware profile loader (hw-profiles/*.toml, read by `hashrig size`)
//! on arbitrary text: an error, never a panic; what loads re-serialises.
//!
//! `make fuzz` or `cargo +nightly fuzz run hw_profile`.
#![no_main]

use hashrig::profile::HwProfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(p) = toml::from_str::<HwProfile>(text) {
        let _ = toml::to_string(&p);
    }
});
