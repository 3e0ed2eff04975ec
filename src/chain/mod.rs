//! Consensus types: the header, targets and difficulty, merkle roots,
//! coinbase assembly. Byte order is a property of the types (see `hash`).

pub mod coinbase;
pub mod hash;
pub mod header;
pub mod merkle;
pub mod target;
pub mod uint;
pub mod work;

pub use hash::{sha256d, BlockHash, TxMerkleNode, Txid};
pub use header::{Header, PowError};
pub use target::{CompactError, CompactTarget, Target};
pub use uint::U256;
pub use work::WorkTemplate;

/// Errors from parsing or building consensus data.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChainError {
    #[error("{what}: expected {expected} bytes ({} hex characters), got {got_hex_chars} hex characters", 2 * expected)]
    Length { what: &'static str, expected: usize, got_hex_chars: usize },
    #[error("{what}: bad hex ({reason})")]
    Hex { what: &'static str, reason: String },
    #[error("truncated {0}")]
    Truncated(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("difficulty must be a positive finite number, got {0}")]
    Difficulty(f64),
}
