//! sigserve: the validator adapter. A node connects over a Unix socket or
//! TCP (loopback by default), sends batches of signatures in length-prefixed
//! binary frames (or JSON lines, for debugging) and gets one verdict per item
//! back. The protocol is documented byte for byte in
//! `docs/sigserve-protocol.md`.
//!
//! * [`frame`]: the wire format, pure (fuzzed: `fuzz/fuzz_targets/frame.rs`).
//! * [`server`]: [`SigServer`], bounded and back-pressured.
//! * [`client`]: [`SigClient`], blocking, for validators.
//! * [`tls`]: TLS and client certificates for TCP addresses.

pub mod addr;
pub mod client;
pub mod frame;
pub mod server;
pub mod tls;

pub use addr::{ServeAddr, DEFAULT_ADDR};
pub use client::{ClientError, ReconnectStats, SigClient};
pub use server::{BoundListener, ServeError, ServerConfig, ServerStats, SigServer};
pub use tls::{ClientTls, ServerTls};
