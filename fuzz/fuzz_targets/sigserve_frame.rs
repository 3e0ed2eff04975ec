//! sigserve's frame parser on arbitrary bytes: never panics, never reads
//! past the input, and whatever parses re-encodes to bytes that parse to
//! the same frame.
//!
//! `cargo +nightly fuzz run sigserve_frame` (from the repository root).
#![no_main]

use hashrig::node::sigserve::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    // Take frames off the front as the server does, until the bytes run
    // out, more are needed, or an error.
    while let Ok(Some((f, used))) = frame::decode(buf, 1 << 20, 1 << 16) {
        assert!(used >= frame::HEADER_LEN && used <= buf.len());
        if let Ok(bytes) = frame::encode(&f) {
            if let Ok(Some((g, _))) = frame::decode(&bytes, usize::MAX, usize::MAX) {
                // Error messages are decoded lossily; everything else round-trips.
                if !matches!(f, frame::Frame::Error { .. }) {
                    assert_eq!(f, g);
                }
            }
        }
        buf = &buf[used..];
    }
});
