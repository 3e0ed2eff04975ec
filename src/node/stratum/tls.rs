//! `stratum+ssl://` pools: the rustls client configuration of one pool.
//!
//! Trust, per pool (the `[[pool]]` table of the config file):
//! * default: Mozilla's root certificates (compiled in, `webpki-roots`), and
//!   the certificate must name the host of the URL;
//! * `tls_ca = "FILE"`: exactly the CA certificates in that PEM file instead
//!   (a pool with a private CA);
//! * `tls_fingerprint = "HEX"`: exactly one certificate, by the SHA-256 of
//!   its DER encoding, whatever signed it (a pool with a self-signed
//!   certificate, as xmrig's `tls-fingerprint`). The handshake signature is
//!   still checked against that certificate's key, so only the holder of
//!   its private key passes.
//!
//! Everything here is checked when the config is validated, before mining
//! starts: an unreadable CA file or a malformed fingerprint is a config error.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};

use super::PoolConfig;
use crate::node::tls::{mozilla_roots, pem_roots, provider};

/// Why a pool's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("tls_ca {path}: {why}")]
    CaFile { path: String, why: String },
    #[error("tls_fingerprint {0:?} is not 64 hex digits (the SHA-256 of the certificate)")]
    Fingerprint(String),
    #[error("tls_ca and tls_fingerprint together: give one")]
    Both,
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// The client configuration for `pool` (whose URL is a TLS one).
pub fn client_config(pool: &PoolConfig) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsConfigError::Rustls(e.to_string()))?;
    let cfg = match (&pool.tls_ca, &pool.tls_fingerprint) {
        (Some(_), Some(_)) => return Err(TlsConfigError::Both),
        (None, Some(fp)) => {
            let pinned = Pinned { sha256: parse_fingerprint(fp)?, algs: provider().signature_verification_algorithms };
            builder.dangerous().with_custom_certificate_verifier(Arc::new(pinned)).with_no_client_auth()
        }
        (Some(path), None) => {
            let roots =
                pem_roots(path).map_err(|why| TlsConfigError::CaFile { path: path.display().to_string(), why })?;
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, None) => builder.with_root_certificates(mozilla_roots()).with_no_client_auth(),
    };
    Ok(Arc::new(cfg))
}

/// 64 hex digits, colons allowed between bytes (as `openssl x509 -fingerprint` prints).
pub fn parse_fingerprint(s: &str) -> Result<[u8; 32], TlsConfigError> {
    let hex: String = s.chars().filter(|&c| c != ':').collect();
    let mut out = [0u8; 32];
    hex::decode_to_slice(&hex, &mut out).map_err(|_| TlsConfigError::Fingerprint(s.to_owned()))?;
    Ok(out)
}

/// Accepts exactly the certificate with this SHA-256, and a handshake
/// signed by its key.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if got == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the pool's certificate has SHA-256 {}, not the pinned tls_fingerprint",
                hex::encode(got)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(ca: Option<&str>, fp: Option<&str>) -> PoolConfig {
        PoolConfig {
            url: "stratum+ssl://pool.example:443".into(),
            user: "w".into(),
            pass: "x".into(),
            tls_ca: ca.map(Into::into),
            tls_fingerprint: fp.map(Into::into),
        }
    }

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        let colons = plain.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
        assert_eq!(parse_fingerprint(plain).unwrap(), parse_fingerprint(&colons.to_uppercase()).unwrap());
        for bad in ["", "00", &plain[1..], &format!("{plain}00"), &plain.replace('a', "g")] {
            assert!(parse_fingerprint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_settings_are_config_errors() {
        assert!(client_config(&pool(None, None)).is_ok());
        assert!(matches!(client_config(&pool(Some("/nonexistent.pem"), None)), Err(TlsConfigError::CaFile { .. })));
        assert!(matches!(client_config(&pool(Some("/dev/null"), None)), Err(TlsConfigError::CaFile { .. })));
        assert!(matches!(client_config(&pool(None, Some("zz"))), Err(TlsConfigError::Fingerprint(_))));
        let fp = "00".repeat(32);
        assert!(matches!(client_config(&pool(Some("/dev/null"), Some(&fp))), Err(TlsConfigError::Both)));
        assert!(client_config(&pool(None, Some(&fp))).is_ok());
    }
}
