//! Opening a pool connection: TCP, then TLS for `stratum+ssl://` pools.
//! Failures are logged here, once, with the reason; the caller only learns
//! that the attempt failed (and backs off or fails over).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The two halves of a pool connection, plain TCP or TLS.
pub type ReadHalf = Box<dyn AsyncRead + Unpin + Send>;
pub type WriteHalf = Box<dyn AsyncWrite + Unpin + Send>;

/// Connects to `host:port` (each step bounded by `timeout`), with TLS when
/// `tls` is set; `None` when it failed (already logged).
pub async fn connect(
    host: &str,
    port: u16,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
) -> Option<(ReadHalf, WriteHalf)> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!("stratum: cannot connect to {host}:{port}: {e}");
            return None;
        }
        Err(_) => {
            tracing::warn!("stratum: connecting to {host}:{port} timed out");
            return None;
        }
    };
    let _ = stream.set_nodelay(true);
    let Some(cfg) = tls else {
        let (rd, wr) = stream.into_split();
        return Some((Box::new(rd), Box::new(wr)));
    };
    let name = match rustls::pki_types::ServerName::try_from(host.to_owned()) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!("stratum: {host} is not a name TLS can check: {e}");
            return None;
        }
    };
    match tokio::time::timeout(timeout, tokio_rustls::TlsConnector::from(cfg).connect(name, stream)).await {
        Ok(Ok(s)) => {
            let (_, session) = s.get_ref();
            tracing::info!(
                "stratum: TLS with {host}:{port} established ({:?}, {:?})",
                session.protocol_version().unwrap_or(rustls::ProtocolVersion::Unknown(0)),
                session.negotiated_cipher_suite().map(|c| c.suite())
            );
            let (rd, wr) = tokio::io::split(s);
            Some((Box::new(rd), Box::new(wr)))
        }
        Ok(Err(e)) => {
            tracing::warn!("stratum: TLS handshake with {host}:{port} failed: {e}");
            None
        }
        Err(_) => {
            tracing::warn!("stratum: TLS handshake with {host}:{port} timed out");
            None
        }
    }
}
