//! Listening: binding a TCP address or a Unix socket (or serving on one
//! inherited), accepting within `max_connections`, the TLS handshake.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit};

use super::conn::serve_conn;
use super::ctx::{closed, CloseCause, Ctx, ServeError};
use crate::node::sigserve::addr::ServeAddr;

pub(super) enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

/// A socket already bound and listening (inherited from a predecessor or
/// from systemd), to serve instead of binding `ServerConfig::addr`.
#[derive(Debug)]
pub enum BoundListener {
    Tcp(std::net::TcpListener),
    Unix(std::os::unix::net::UnixListener, std::path::PathBuf),
}

impl BoundListener {
    /// A second descriptor for the same socket, to hand on.
    pub fn dup(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        match self {
            BoundListener::Tcp(l) => l.try_clone().map(Into::into),
            BoundListener::Unix(l, _) => l.try_clone().map(Into::into),
        }
    }

    pub(super) fn into_tokio(self) -> std::io::Result<Listener> {
        Ok(match self {
            BoundListener::Tcp(l) => {
                l.set_nonblocking(true)?;
                Listener::Tcp(tokio::net::TcpListener::from_std(l)?)
            }
            BoundListener::Unix(l, p) => {
                l.set_nonblocking(true)?;
                Listener::Unix(tokio::net::UnixListener::from_std(l)?, p)
            }
        })
    }
}

pub(super) async fn bind(addr: &ServeAddr) -> Result<Listener, ServeError> {
    let err = |e| ServeError::Bind { addr: addr.clone(), reason: e };
    match addr {
        ServeAddr::Tcp(a) => Ok(Listener::Tcp(tokio::net::TcpListener::bind(a).await.map_err(err)?)),
        ServeAddr::Unix(p) => {
            use std::os::unix::fs::FileTypeExt;
            if let Ok(md) = std::fs::symlink_metadata(p) {
                if !md.file_type().is_socket() {
                    return Err(ServeError::PathInUse(p.clone()));
                }
                // A socket left behind by an earlier run: replace it if
                // nobody answers on it.
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    return Err(err(std::io::Error::new(std::io::ErrorKind::AddrInUse, "a server is listening there")));
                }
                let _ = std::fs::remove_file(p);
            }
            // Connecting needs write permission on the socket: the owner and
            // its group (e.g. the validator's), nobody else, whatever the
            // umask. The socket is bound in a private (0700) directory beside
            // the path, given its mode there, then renamed into place, so it
            // is never reachable with a looser mode.
            use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
            let parent = p.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let tmp = parent.join(format!(".{name}.{}.tmp", std::process::id()));
            let _ = std::fs::remove_dir_all(&tmp);
            std::fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(err)?;
            let staged = tmp.join("s");
            let bound = (|| {
                let l = tokio::net::UnixListener::bind(&staged)?;
                std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o660))?;
                std::fs::rename(&staged, p)?;
                Ok(l)
            })();
            let _ = std::fs::remove_dir_all(&tmp);
            let l = bound.map_err(err)?;
            Ok(Listener::Unix(l, p.clone()))
        }
    }
}

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn tls_failed(ctx: &Ctx) {
    ctx.stats.tls_handshakes_failed.fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &ctx.metrics {
        m.sigserve_tls_handshake_failures.inc();
    }
}

/// Accepts until `stop`, each connection on a task of its own; then waits
/// for every connection to answer what it accepted and close.
pub(super) async fn accept_loop(
    listener: Listener,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    keep_path: Arc<AtomicBool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = accept(&listener) => match r {
                Ok(conn) => {
                    if let Some(permit) = admit(&ctx) {
                        tasks.spawn(serve_accepted(conn, ctx.clone(), stop.clone(), permit));
                    }
                }
                Err(e) => {
                    tracing::warn!("sigserve: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    // No more accepts here: a successor (or nobody) takes new connections.
    let unix_path = match listener {
        Listener::Unix(_, p) => Some(p),
        Listener::Tcp(_) => None,
    };
    // Graceful: connections see `stop` too, stop reading, answer and close.
    while tasks.join_next().await.is_some() {}
    if let Some(p) = unix_path.filter(|_| !keep_path.load(Ordering::SeqCst)) {
        let _ = std::fs::remove_file(p);
    }
}

/// A connection slot, or None (the connection is then dropped: closed at
/// once) when `max_connections` are open.
fn admit(ctx: &Ctx) -> Option<OwnedSemaphorePermit> {
    let Ok(permit) = ctx.conns.clone().try_acquire_owned() else {
        closed(ctx, CloseCause::Limit);
        tracing::warn!("sigserve: connection limit reached, closing a new connection");
        return None;
    };
    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
    Some(permit)
}

/// One accepted connection, from the TLS handshake (when configured) to its
/// close; `permit` is its connection slot.
async fn serve_accepted(conn: Conn, ctx: Arc<Ctx>, stop: watch::Receiver<bool>, permit: OwnedSemaphorePermit) {
    if let Some(m) = &ctx.metrics {
        m.sigserve_connections.inc();
    }
    match (conn, &ctx.tls) {
        (Conn::Tcp(s), None) => {
            let _ = s.set_nodelay(true);
            serve_conn(s, &ctx, stop).await
        }
        (Conn::Tcp(s), Some(acceptor)) => {
            let _ = s.set_nodelay(true);
            let peer = s.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
            // Bounded, so a silent client cannot hold a connection slot.
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(s)).await {
                Ok(Ok(t)) => serve_conn(t, &ctx, stop).await,
                Ok(Err(e)) => {
                    tls_failed(&ctx);
                    tracing::warn!("sigserve: TLS handshake with {peer} failed: {e}");
                }
                Err(_) => {
                    tls_failed(&ctx);
                    tracing::warn!("sigserve: TLS handshake with {peer} timed out");
                }
            }
        }
        (Conn::Unix(s), _) => serve_conn(s, &ctx, stop).await,
    }
    if let Some(m) = &ctx.metrics {
        m.sigserve_connections.dec();
    }
    drop(permit);
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<Conn> {
    match l {
        Listener::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
        Listener::Unix(l, _) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
    }
}
