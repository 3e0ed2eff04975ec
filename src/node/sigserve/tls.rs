//! TLS for sigserve over TCP: the server's certificate, and optionally the
//! CA whose client certificates it requires (mutual TLS: only validators
//! holding such a certificate may connect). The client side trusts the CA
//! it is given (or Mozilla's roots) and may present its own certificate.
//!
//! rustls on the `ring` provider, TLS 1.2 and 1.3; PEM files throughout.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("TLS setup: {0}")]
    Rustls(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path) -> impl Fn(String) -> TlsError + '_ {
    move |why| TlsError::File { path: path.display().to_string(), why }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = file_err(path);
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path)(e.to_string()))
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for c in certs(path)? {
        roots.add(c).map_err(|e| file_err(path)(e.to_string()))?;
    }
    Ok(roots)
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
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Rustls(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let cfg = builder.with_single_cert(certs(&self.cert)?, key(&self.key)?).map_err(|e| TlsError::File {
            path: format!("{} / {}", self.cert.display(), self.key.display()),
            why: e.to_string(),
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
            Some(ca) => roots(ca)?,
            None => RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() },
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots);
        let cfg = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => builder
                .with_client_auth_cert(certs(c)?, key(k)?)
                .map_err(|e| TlsError::File { path: c.display().to_string(), why: e.to_string() })?,
            (None, None) => builder.with_no_client_auth(),
            _ => return Err(TlsError::Rustls("a client certificate needs both the cert and the key file".into())),
        };
        Ok(Arc::new(cfg))
    }
}
