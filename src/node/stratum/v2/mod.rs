//! Stratum V2 (the Stratum Reference Implementation's crates at pinned
//! versions: noise_sv2, codec_sv2, framing_sv2, binary_sv2, mining_sv2,
//! common_messages_sv2, parsers_sv2, key-utils).
//!
//! - `noise`: the connection: Noise NX handshake as initiator against the
//!   pool's authority key (certificate signature and validity window checked
//!   by noise_sv2), then encrypted frames both ways.
//! - `messages`: what hashrig sends (SetupConnection, OpenStandardMiningChannel
//!   or OpenExtendedMiningChannel, SubmitSharesStandard or
//!   SubmitSharesExtended) and the pool's messages it acts on, parsed into
//!   owned values.
//! - `channel`: the job book of one channel, standard (header-only mining:
//!   the pool fixes the merkle root) or extended (hashrig rolls its part of
//!   the extranonce and builds the merkle root, as for a V1 job; opened only
//!   when the pool requires one): future jobs and SetNewPrevHash, the target
//!   per job, the CPU re-check and de-duplication of shares.
//!
//! docs/stratum.md ("Stratum V2") says what is negotiated, checked and logged.

pub mod channel;
pub mod messages;
pub mod noise;

/// A pool's authority public key as the spec and pools write it: base58check
/// of a 2-byte little-endian version (1) and the 32-byte x-only key.
pub fn parse_authority_key(s: &str) -> Result<[u8; 32], key_utils::Error> {
    let key: key_utils::Secp256k1PublicKey = s.parse()?;
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The authority key pair of the reference implementation's example pool
    /// configs (pool-config-example.toml).
    pub const SRI_EXAMPLE_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
    pub const SRI_EXAMPLE_SECRET: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";

    #[test]
    fn the_authority_key_is_the_x_only_key_of_the_pools_secret() {
        let secret: key_utils::Secp256k1SecretKey = SRI_EXAMPLE_SECRET.parse().unwrap();
        let public = key_utils::Secp256k1PublicKey::from(secret);
        assert_eq!(parse_authority_key(SRI_EXAMPLE_PUBLIC).unwrap(), public.into_bytes());
        assert_eq!(public.to_string(), SRI_EXAMPLE_PUBLIC);
        // One character changed: the checksum catches it.
        let mut broken = SRI_EXAMPLE_PUBLIC.to_owned();
        broken.replace_range(5..6, if &broken[5..6] == "A" { "B" } else { "A" });
        assert!(parse_authority_key(&broken).is_err());
        assert!(parse_authority_key("").is_err());
        assert!(parse_authority_key("0OIl").is_err());
    }
}
