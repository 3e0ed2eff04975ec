//! Process signals for `hashrig run`: SIGINT asks for a clean stop now;
//! SIGTERM (what systemd, docker, Kubernetes and kill(1) send) for the same
//! stop after sigserve's drain (a second SIGTERM: now); SIGHUP reloads the
//! config file; SIGUSR2 starts a live binary upgrade.
//!
//! The handlers only set flags (all an async-signal handler may do); the
//! run loop polls them with [`take`].

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
static TERM: AtomicBool = AtomicBool::new(false);
static HUP: AtomicBool = AtomicBool::new(false);
static USR2: AtomicBool = AtomicBool::new(false);

/// What arrived since the last call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// SIGINT.
    pub stop: bool,
    /// SIGTERM.
    pub terminate: bool,
    /// SIGHUP.
    pub hangup: bool,
    /// SIGUSR2.
    pub upgrade: bool,
}

#[cfg(unix)]
extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

#[cfg(unix)]
extern "C" fn on_term(_: libc::c_int) {
    TERM.store(true, Ordering::SeqCst);
}

#[cfg(unix)]
extern "C" fn on_hup(_: libc::c_int) {
    HUP.store(true, Ordering::SeqCst);
}

#[cfg(unix)]
extern "C" fn on_usr2(_: libc::c_int) {
    USR2.store(true, Ordering::SeqCst);
}

/// A signal whose handler could not be installed.
#[derive(Debug, thiserror::Error)]
#[error("cannot handle {signal}")]
pub struct SignalError {
    pub signal: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// Installs the handlers; an error names the signal that could not be taken.
#[cfg(unix)]
pub fn install() -> Result<(), SignalError> {
    let set = |sig: libc::c_int, name: &'static str, f: extern "C" fn(libc::c_int)| {
        // SAFETY: a zeroed sigaction is a valid "no flags, empty mask"
        // value; the handler only stores to an atomic, which is
        // async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = f as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            if libc::sigaction(sig, &sa, std::ptr::null_mut()) != 0 {
                return Err(SignalError { signal: name, source: std::io::Error::last_os_error() });
            }
        }
        Ok(())
    };
    set(libc::SIGINT, "SIGINT", on_stop)?;
    set(libc::SIGTERM, "SIGTERM", on_term)?;
    set(libc::SIGHUP, "SIGHUP", on_hup)?;
    set(libc::SIGUSR2, "SIGUSR2", on_usr2)?;
    Ok(())
}

#[cfg(not(unix))]
pub fn install() -> Result<(), SignalError> {
    ctrlc::set_handler(|| STOP.store(true, Ordering::SeqCst))
        .map_err(|e| SignalError { signal: "Ctrl-C", source: std::io::Error::other(e) })
}

/// Takes the signals that arrived since the last call.
pub fn take() -> Pending {
    Pending {
        stop: STOP.swap(false, Ordering::SeqCst),
        terminate: TERM.swap(false, Ordering::SeqCst),
        hangup: HUP.swap(false, Ordering::SeqCst),
        upgrade: USR2.swap(false, Ordering::SeqCst),
    }
}
