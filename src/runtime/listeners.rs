//! Listening sockets a process is given instead of binding them: by the
//! hashrig it replaces in a live upgrade (`HASHRIG_LISTEN_FDS`, by name), or
//! by systemd socket activation (`LISTEN_FDS`, matched by address). Taken
//! from the environment once, first thing in `main`, before any thread
//! exists; the variables are then removed so no other child inherits them.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;

/// `name=fd,name=fd`: the sockets an upgrading hashrig hands its successor.
pub const LISTEN_FDS_ENV: &str = "HASHRIG_LISTEN_FDS";
/// Names used in [`LISTEN_FDS_ENV`].
pub const SIGSERVE: &str = "sigserve";
pub const METRICS: &str = "metrics";
/// systemd's first passed descriptor (sd_listen_fds(3)).
const SD_LISTEN_FDS_START: RawFd = 3;

pub use crate::node::sigserve::BoundListener as Listener;

/// Why an inherited descriptor is not served.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    #[error("descriptor {0} is not open")]
    NotOpen(RawFd),
    #[error("descriptor {0} is not a listening stream socket")]
    NotListening(RawFd),
    #[error("an unnamed (or abstract) Unix socket cannot be served")]
    UnnamedUnix,
}

/// Takes ownership of `fd` if it is a listening TCP or Unix stream socket.
fn from_fd(fd: OwnedFd) -> Result<Listener, InheritError> {
    if !is_listening_stream(fd.as_raw_fd()) {
        return Err(InheritError::NotListening(fd.as_raw_fd()));
    }
    // The family decides the type: each local_addr fails on the other.
    let tcp = std::net::TcpListener::from(fd);
    if tcp.local_addr().is_ok() {
        return Ok(Listener::Tcp(tcp));
    }
    let unix = UnixListener::from(OwnedFd::from(tcp));
    let path = unix.local_addr().ok().and_then(|a| a.as_pathname().map(PathBuf::from));
    match path {
        Some(p) => Ok(Listener::Unix(unix, p)),
        None => Err(InheritError::UnnamedUnix),
    }
}

fn tcp_addr(l: &Listener) -> Option<SocketAddr> {
    match l {
        Listener::Tcp(l) => l.local_addr().ok(),
        Listener::Unix(..) => None,
    }
}

fn is_listening_stream(fd: RawFd) -> bool {
    let get = |opt: libc::c_int| -> Option<libc::c_int> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `v` and `len` are valid for writes of the sizes given;
        // getsockopt on a descriptor that is not a socket fails cleanly.
        let r = unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&mut v as *mut libc::c_int).cast(), &mut len) };
        (r == 0).then_some(v)
    };
    get(libc::SO_TYPE) == Some(libc::SOCK_STREAM) && get(libc::SO_ACCEPTCONN) == Some(1)
}

/// Sockets handed to this process, until the runtime takes them.
#[derive(Debug, Default)]
pub struct Inherited {
    /// By name (from an upgrading hashrig).
    named: Vec<(String, Listener)>,
    /// Unnamed (systemd): matched to the configured addresses.
    unnamed: Vec<Listener>,
}

impl Inherited {
    /// Reads and removes `HASHRIG_LISTEN_FDS`, or systemd's `LISTEN_FDS`
    /// (when `LISTEN_PID` is this process). Call before any thread exists
    /// (it changes the environment). Descriptors that are not listening
    /// sockets are logged later by [`Inherited::warnings`] and closed.
    pub fn from_env() -> (Inherited, Vec<String>) {
        let mut out = Inherited::default();
        let mut warnings = Vec::new();
        if let Ok(list) = std::env::var(LISTEN_FDS_ENV) {
            std::env::remove_var(LISTEN_FDS_ENV);
            for entry in list.split(',').filter(|e| !e.is_empty()) {
                let Some((name, fd)) = entry.split_once('=') else {
                    warnings.push(format!("{LISTEN_FDS_ENV}: {entry:?} is not NAME=FD"));
                    continue;
                };
                match fd.parse::<RawFd>() {
                    Ok(fd) if fd > 2 => match take_fd(fd).and_then(from_fd) {
                        Ok(l) => out.named.push((name.to_owned(), l)),
                        Err(e) => warnings.push(format!("{LISTEN_FDS_ENV} {name}: {e}")),
                    },
                    _ => warnings.push(format!("{LISTEN_FDS_ENV}: {entry:?}: not a descriptor above 2")),
                }
            }
        }
        let for_us = std::env::var("LISTEN_PID").ok().and_then(|p| p.parse::<u32>().ok()) == Some(std::process::id());
        if let (true, Ok(n)) = (for_us, std::env::var("LISTEN_FDS")) {
            match n.parse::<RawFd>() {
                Ok(n) if (0..=1024).contains(&n) => {
                    for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + n {
                        match take_fd(fd).and_then(from_fd) {
                            Ok(l) => out.unnamed.push(l),
                            Err(e) => warnings.push(format!("LISTEN_FDS: {e}")),
                        }
                    }
                }
                _ => warnings.push(format!("LISTEN_FDS={n:?} is not a count")),
            }
        }
        for v in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
            std::env::remove_var(v);
        }
        (out, warnings)
    }

    /// The sigserve socket: by name (then it is ours to remove at the end),
    /// else a systemd socket at `want` (systemd's: `true`).
    pub fn take_sigserve(&mut self, want: &crate::node::sigserve::ServeAddr) -> Option<(Listener, bool)> {
        use crate::node::sigserve::ServeAddr;
        if let Some(i) = self.named.iter().position(|(n, _)| n == SIGSERVE) {
            return Some((self.named.remove(i).1, false));
        }
        let i = self.unnamed.iter().position(|l| match (l, want) {
            (Listener::Tcp(t), ServeAddr::Tcp(a)) => t.local_addr().ok() == Some(*a),
            (Listener::Unix(_, p), ServeAddr::Unix(w)) => p == w,
            _ => false,
        })?;
        Some((self.unnamed.remove(i), true))
    }

    /// The metrics socket: by name, else a systemd TCP socket at `want`.
    pub fn take_metrics(&mut self, want: SocketAddr) -> Option<std::net::TcpListener> {
        let l = if let Some(i) = self.named.iter().position(|(n, _)| n == METRICS) {
            self.named.remove(i).1
        } else {
            let i = self.unnamed.iter().position(|l| tcp_addr(l) == Some(want))?;
            self.unnamed.remove(i)
        };
        match l {
            Listener::Tcp(t) => Some(t),
            Listener::Unix(..) => None,
        }
    }

    /// Sockets nobody took (closed when this is dropped), for a warning.
    pub fn leftover(&self) -> Vec<String> {
        let name = |l: &Listener| match l {
            Listener::Tcp(t) => t.local_addr().map_or_else(|_| "?".into(), |a| a.to_string()),
            Listener::Unix(_, p) => format!("unix:{}", p.display()),
        };
        self.named.iter().map(|(n, l)| format!("{n} ({})", name(l))).chain(self.unnamed.iter().map(name)).collect()
    }
}

/// Owns an inherited descriptor, marking it close-on-exec so that it goes
/// no further than this process unless handed on on purpose.
fn take_fd(fd: RawFd) -> Result<OwnedFd, InheritError> {
    // SAFETY: F_GETFD/F_SETFD only read and set the descriptor's flags; a
    // descriptor that is not open fails with EBADF and is not taken.
    let ok = unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0
        && unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0;
    if !ok {
        return Err(InheritError::NotOpen(fd));
    }
    // SAFETY: the descriptor is open and was handed to this process to own
    // (by the environment variable naming it); nothing else in the process
    // knows its number, so it has exactly one owner from here on.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
