//! 32-byte hashes. Bitcoin computes and stores hashes in "internal" byte order
//! but prints them reversed ("display" order). The newtypes below keep the
//! internal bytes and do the reversal in `Display`/`FromStr`, so no caller ever
//! has to remember which way round a hash is.

use sha2::{Digest, Sha256};

use super::ChainError;

/// SHA-256 of `data`, through the `sha2` crate (the project's reference for
/// everything outside the mining hot loop).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Bitcoin's double SHA-256.
pub fn sha256d(data: &[u8]) -> [u8; 32] {
    sha256(&sha256(data))
}

/// Decodes exactly `N` bytes of hex, with errors that say what was wrong.
pub fn decode_hex_array<const N: usize>(what: &'static str, s: &str) -> Result<[u8; N], ChainError> {
    let s = s.trim();
    if s.len() != 2 * N {
        return Err(ChainError::Length { what, expected: N, got_hex_chars: s.len() });
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|e| ChainError::Hex { what, reason: e.to_string() })?;
    Ok(out)
}

macro_rules! hash_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            pub const ZERO: $name = $name([0; 32]);

            /// From bytes in internal order (as hashed, as serialised).
            pub const fn from_byte_array(bytes: [u8; 32]) -> Self { $name(bytes) }
            /// Bytes in internal order.
            pub const fn to_byte_array(self) -> [u8; 32] { self.0 }
            pub const fn as_byte_array(&self) -> &[u8; 32] { &self.0 }
            /// The hash of `data` under sha256d.
            pub fn hash(data: &[u8]) -> Self { $name(sha256d(data)) }
            /// Parses hex written in internal (serialisation) order.
            pub fn from_internal_hex(s: &str) -> Result<Self, ChainError> {
                decode_hex_array::<32>(stringify!($name), s).map($name)
            }
            /// Hex in internal (serialisation) order.
            pub fn to_internal_hex(&self) -> String { hex::encode(self.0) }
        }

        /// Display order: bytes reversed, as block explorers and RPCs print it.
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut rev = self.0;
                rev.reverse();
                f.write_str(&hex::encode(rev))
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }

        /// Parses display order (the inverse of `Display`).
        impl std::str::FromStr for $name {
            type Err = ChainError;
            fn from_str(s: &str) -> Result<Self, ChainError> {
                let mut b = decode_hex_array::<32>(stringify!($name), s)?;
                b.reverse();
                Ok($name(b))
            }
        }
    };
}

hash_newtype!(
    /// A block's hash: sha256d of its 80-byte header.
    BlockHash
);
hash_newtype!(
    /// A transaction id: sha256d of the transaction without witness data.
    Txid
);
hash_newtype!(
    /// A node of a block's transaction merkle tree; the root goes in the header.
    TxMerkleNode
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_reversed_internal() {
        let h: BlockHash = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f".parse().unwrap();
        assert_eq!(h.as_byte_array()[31], 0x00);
        assert_eq!(h.as_byte_array()[0], 0x6f);
        assert_eq!(h.to_string(), "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
        assert_eq!(BlockHash::from_internal_hex(&h.to_internal_hex()).unwrap(), h);
    }

    #[test]
    fn bad_hex_is_an_error() {
        assert!("zz".parse::<BlockHash>().is_err());
        assert!("00".repeat(31).parse::<BlockHash>().is_err());
        assert!(format!("{}g", "0".repeat(63)).parse::<BlockHash>().is_err());
    }

    #[test]
    fn sha256_known_answer() {
        // FIPS 180-2 "abc".
        assert_eq!(hex::encode(sha256(b"abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
