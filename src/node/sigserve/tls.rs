//! TLS for sigserve over TCP: the server's certificate, and optionally the
//! CA whose client certificates it requires (mutual TLS: only validators
//! holding such a certificate may connect). The client side trusts the CA
//! it is given (or Mozilla's roots) and may present its own certificate.
//!
//! rustls on the `ring` provider, TLS 1.2 and 1.3; PEM files throughout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;

use crate::node::tls::{mozilla_roots, pem_certs, pem_key, pem_roots, provider};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("TLS setup: {0}")]
    Rustls(String),
}

/// Names the file a PEM helper failed on.
fn in_file<T>(path: &Path, r: Result<T, String>) -> Result<T, TlsError> {
    r.map_err(|why| TlsError::File { path: path.display().to_string(), why })
}

/// The server side: its certificate chain and key; with `client_ca`, a
/// client must present a certificate that CA signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl ServerTls {
    pub fn config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(in_file(ca, pem_roots(ca))?), provider())
                        .build()
                        .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let chain = in_file(&self.cert, pem_certs(&self.cert))?;
        let cfg = builder.with_single_cert(chain, in_file(&self.key, pem_key(&self.key))?).map_err(|e| {
            TlsError::File { path: format!("{} / {}", self.cert.display(), self.key.display()), why: e.to_string() }
        })?;
        Ok(Arc::new(cfg))
    }
}

/// The client side: whom to trust (`ca`, else Mozilla's roots) and,
/// for a server that asks, a certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the IP
    /// address connected to).
    pub server_name: Option<String>,
}

impl ClientTls {
    pub fn config(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = match &self.ca {
            Some(ca) => in_file(ca, pem_roots(ca))?,
            None => mozilla_roots(),
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        let cfg = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(in_file(c, pem_certs(c))?, in_file(k, pem_key(k))?)
                .map_err(|e| TlsError::File { path: c.display().to_string(), why: e.to_string() })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::Rustls("a client certificate needs both the cert and the key file".into())),
        };
        Ok(Arc::new(cfg))
    }
}
