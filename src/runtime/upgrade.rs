//! Live binary upgrade, the nginx way: the running hashrig starts the binary
//! at its own path with its own arguments, handing it the listening sockets
//! (named in `HASHRIG_LISTEN_FDS`) and the write end of a pipe
//! (`HASHRIG_READY_FD`). The successor writes one byte there once it
//! serves; only then does the old process stop accepting, answer what it
//! has read, hand on what it has found and exit 0. A successor that exits,
//! closes the pipe without the byte, or says nothing within the timeout is
//! stopped and the old process runs on.
//!
//! Also here: the pid file each process rewrites, and the readiness and
//! main-pid notes to systemd (`NOTIFY_SOCKET`), so that a `Type=notify`
//! service follows the upgrade to the new process.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::listeners::LISTEN_FDS_ENV;

/// The write end of the readiness pipe, in the successor.
pub const READY_FD_ENV: &str = "HASHRIG_READY_FD";
/// How long a successor has to start serving.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary and arguments this process was started with, recorded at
/// start: after a package upgrade `/proc/self/exe` names the deleted old
/// file, while the path holds the new one.
#[derive(Clone, Debug)]
pub struct SelfExec {
    pub exe: PathBuf,
    pub args: Vec<std::ffi::OsString>,
}

impl SelfExec {
    pub fn current() -> std::io::Result<SelfExec> {
        Ok(SelfExec { exe: std::env::current_exe()?, args: std::env::args_os().skip(1).collect() })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("cannot start {0}: {1}")]
    Spawn(PathBuf, std::io::Error),
    #[error("cannot pass the sockets on: {0}")]
    Fds(std::io::Error),
    #[error("the new process exited ({0}) before it was ready")]
    Exited(std::process::ExitStatus),
    #[error("the new process was not ready within {0:?}")]
    Timeout(Duration),
    #[error("the new process closed the readiness pipe without saying it was ready")]
    NoReady,
}

/// Starts the successor with `fds` (name, socket) and waits until it says
/// it is ready. On any failure the successor is killed and reaped.
pub fn spawn_successor(
    exec: &SelfExec,
    fds: Vec<(&'static str, OwnedFd)>,
    timeout: Duration,
) -> Result<u32, UpgradeError> {
    let (mut ready_rx, ready_tx) = pipe().map_err(UpgradeError::Fds)?;
    let list = fds.iter().map(|(n, fd)| format!("{n}={}", fd.as_raw_fd())).collect::<Vec<_>>().join(",");
    let pass: Vec<RawFd> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).chain([ready_tx.as_raw_fd()]).collect();
    let mut cmd = Command::new(&exec.exe);
    cmd.args(&exec.args).env(LISTEN_FDS_ENV, list).env(READY_FD_ENV, ready_tx.as_raw_fd().to_string());
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls fcntl (async-signal-safe) on descriptors this process owns
    // (kept open until after spawn returns), clearing close-on-exec so that
    // they, and no others, survive the exec.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            for &fd in &pass {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| UpgradeError::Spawn(exec.exe.clone(), e))?;
    // Ours are copies now: the successor holds the sockets, and the pipe's
    // write end must be its alone, so that its exit reads as end of file.
    drop(fds);
    drop(ready_tx);
    match wait_ready(&mut ready_rx, &mut child, timeout) {
        Ok(()) => Ok(child.id()),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(e)
        }
    }
}

fn wait_ready(rx: &mut std::fs::File, child: &mut Child, timeout: Duration) -> Result<(), UpgradeError> {
    let until = Instant::now() + timeout;
    let fd = rx.as_raw_fd();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(UpgradeError::Timeout(timeout));
        }
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(200) as libc::c_int;
        // SAFETY: one valid pollfd, count 1.
        let n = unsafe { libc::poll(&mut p, 1, ms) };
        if n > 0 {
            let mut b = [0u8; 1];
            return match rx.read(&mut b) {
                Ok(1) => Ok(()),
                // End of file: it exited, or it does not know the pipe
                // (an older hashrig) and closed it.
                _ => match child.try_wait() {
                    Ok(Some(st)) => Err(UpgradeError::Exited(st)),
                    _ => {
                        std::thread::sleep(Duration::from_millis(100));
                        match child.try_wait() {
                            Ok(Some(st)) => Err(UpgradeError::Exited(st)),
                            _ => Err(UpgradeError::NoReady),
                        }
                    }
                },
            };
        }
        if let Ok(Some(st)) = child.try_wait() {
            return Err(UpgradeError::Exited(st));
        }
    }
}

/// A pipe whose ends are close-on-exec.
fn pipe() -> std::io::Result<(std::fs::File, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (std::fs::File::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// In a successor: the readiness pipe, taken from the environment (call
/// before any thread exists).
pub fn take_ready_pipe() -> Option<std::fs::File> {
    let v = std::env::var(READY_FD_ENV).ok()?;
    std::env::remove_var(READY_FD_ENV);
    let fd: RawFd = v.parse().ok().filter(|&fd| fd > 2)?;
    // SAFETY: fcntl only reads/sets flags; an unopened descriptor fails.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return None;
    }
    // SAFETY: the descriptor is open and was handed to this process alone
    // (named by the variable just removed).
    Some(unsafe { std::fs::File::from_raw_fd(fd) })
}

/// Tells the predecessor (if any) and systemd (if it asked) that this
/// process serves.
pub fn notify_ready(pipe: Option<std::fs::File>) {
    if let Some(mut p) = pipe {
        let _ = p.write_all(b"R");
    }
    sd_notify(&format!("MAINPID={}\nREADY=1\n", std::process::id()));
}

/// A note to systemd's `NOTIFY_SOCKET` (sd_notify(3)); nothing without one.
pub fn sd_notify(msg: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        #[cfg(target_os = "linux")]
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(msg.as_bytes(), &a))
        }
        _ => sock.send_to(msg.as_bytes(), Path::new(&path)),
    };
    if let Err(e) = sent {
        tracing::debug!("sd_notify: {e}");
    }
}

/// Writes this process's pid to `path` (replacing it whole, so a reader
/// never sees half a number).
pub fn write_pid_file(path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

/// Removes the pid file if it still names this process (a successor has
/// rewritten it otherwise).
pub fn remove_pid_file(path: &Path) {
    let ours =
        std::fs::read_to_string(path).ok().and_then(|s| s.trim().parse::<u32>().ok()) == Some(std::process::id());
    if ours {
        let _ = std::fs::remove_file(path);
    }
}
