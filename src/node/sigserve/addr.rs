//! Where sigserve listens / a client connects: TCP or a Unix socket path.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::str::FromStr;

/// The default: TCP on loopback.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9788";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServeAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

#[derive(Debug, thiserror::Error)]
#[error("not an address: {0:?} (want HOST:PORT, unix:PATH, or a path containing '/')")]
pub struct AddrError(pub String);

impl FromStr for ServeAddr {
    type Err = AddrError;
    /// `unix:PATH`, or anything containing `/` is a Unix socket path;
    /// otherwise `HOST:PORT` (resolved; the first address is used).
    fn from_str(s: &str) -> Result<ServeAddr, AddrError> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(AddrError(s.into()));
            }
            return Ok(ServeAddr::Unix(PathBuf::from(p)));
        }
        if s.contains('/') {
            return Ok(ServeAddr::Unix(PathBuf::from(s)));
        }
        s.to_socket_addrs().ok().and_then(|mut a| a.next()).map(ServeAddr::Tcp).ok_or_else(|| AddrError(s.into()))
    }
}

impl fmt::Display for ServeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServeAddr::Tcp(a) => write!(f, "{a}"),
            ServeAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl ServeAddr {
    /// Loopback TCP or a Unix socket: reachable from this machine only.
    pub fn is_local(&self) -> bool {
        match self {
            ServeAddr::Tcp(a) => a.ip().is_loopback(),
            ServeAddr::Unix(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        assert_eq!("127.0.0.1:9".parse::<ServeAddr>().unwrap(), ServeAddr::Tcp(([127, 0, 0, 1], 9).into()));
        assert_eq!("unix:x.sock".parse::<ServeAddr>().unwrap(), ServeAddr::Unix("x.sock".into()));
        assert_eq!("/tmp/x.sock".parse::<ServeAddr>().unwrap(), ServeAddr::Unix("/tmp/x.sock".into()));
        assert!("nonsense".parse::<ServeAddr>().is_err());
        assert!(DEFAULT_ADDR.parse::<ServeAddr>().unwrap().is_local());
    }
}
