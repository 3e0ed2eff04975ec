//! The sigserve server: accepts validator connections over TCP or a Unix
//! socket, reads BATCH frames (or JSON lines), hands them to the
//! [`SigEngine`] and writes each answer back.
//!
//! Bounds, so that no client can make it queue without limit or stall the
//! others:
//! * a frame over `max_frame` bytes or a batch over `max_items` is refused;
//! * frame bytes are taken from a byte budget as they arrive (never from the
//!   length a header announces): first from the connection's own 64 KiB
//!   allowance, then from the global budget; a batch takes its item count
//!   from a global item budget; both are given back only once its answer is
//!   written, so a client that does not read its answers stops being read
//!   from (TCP back-pressure);
//! * a frame (or JSON line) once begun must arrive whole within
//!   `read_timeout`; a connection with nothing in flight that sends nothing
//!   for `idle_timeout` is closed;
//! * each connection has at most `max_inflight_per_conn` batches in flight
//!   and `max_queued_control` PONG/ERROR frames waiting to be written; while
//!   they are all taken the connection is not read;
//! * every write has `write_timeout`: a client that stops reading is closed,
//!   so neither it nor shutdown waits on it;
//! * at most `max_connections` connections; more are closed at once.
//!
//! Every accepted batch is answered exactly once (VERDICTS, or an ERROR
//! with its id); on shutdown the server stops accepting and reading, answers
//! what it accepted, then closes.
//!
//! Here: the [`SigServer`] handle. Beside it, each importing only those
//! listed after it (no module imports one above it or this one):
//! * `listen`: binding, inherited sockets, accepting, the TLS handshake;
//! * `conn`: one connection: the mode its first bytes pick, its reader and
//!   writer;
//! * `binary` and `json`: the two wire formats' read loops;
//! * `link`: what a connection's reader shares with its answers, the byte,
//!   item and slot budgets a frame takes as it arrives, and the submission
//!   of a batch to the engine;
//! * `answer`: an answer or error written in either wire format;
//! * `write`: one connection's writer;
//! * `ctx`: the settings, errors and counters, and what every connection
//!   of a server shares.

mod answer;
mod binary;
mod conn;
mod ctx;
mod json;
mod link;
mod listen;
mod write;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};

use super::addr::ServeAddr;
use super::frame::{self, HEADER_LEN};
use crate::metrics::Metrics;
use crate::sched::SigEngine;

use ctx::Ctx;
pub use ctx::{ServeError, ServerConfig, ServerStats, CONN_ALLOWANCE};
pub use listen::BoundListener;
use listen::{accept_loop, bind, Listener};

/// A running server; [`SigServer::shutdown`] (or drop) stops it gracefully.
pub struct SigServer {
    addr: ServeAddr,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ServerStats>,
    /// A second descriptor of the listening socket, for a live upgrade.
    listener_fd: std::os::fd::OwnedFd,
    /// Leave the Unix socket's path in place at the stop (a successor
    /// serves on it).
    keep_path: Arc<std::sync::atomic::AtomicBool>,
}

impl SigServer {
    /// Bind and start serving on a runtime of its own.
    pub fn start(cfg: ServerConfig, engine: SigEngine, metrics: Option<Arc<Metrics>>) -> Result<SigServer, ServeError> {
        Self::start_on(cfg, None, engine, metrics)
    }

    /// [`start`](Self::start), serving on `bound` when given (a socket
    /// handed over by a predecessor or by systemd) instead of binding.
    pub fn start_on(
        cfg: ServerConfig,
        bound: Option<BoundListener>,
        engine: SigEngine,
        metrics: Option<Arc<Metrics>>,
    ) -> Result<SigServer, ServeError> {
        if cfg.max_frame > frame::MAX_FRAME_LIMIT {
            return Err(ServeError::Config(
                "max_frame must be below 16 MiB (the mode detection needs a zero fourth byte)",
            ));
        }
        if cfg.max_frame < HEADER_LEN
            || cfg.max_items == 0
            || cfg.max_inflight_per_conn == 0
            || cfg.max_connections == 0
            || cfg.max_queued_control == 0
            || cfg.read_timeout.is_zero()
            || cfg.idle_timeout.is_zero()
            || cfg.write_timeout.is_zero()
        {
            return Err(ServeError::Config("limits must be positive"));
        }
        if cfg.max_inflight_items < cfg.max_items || cfg.max_inflight_bytes < cfg.max_frame {
            return Err(ServeError::Config("in-flight budgets must hold at least one largest batch"));
        }
        let tls = match (&cfg.tls, &cfg.addr) {
            (Some(_), ServeAddr::Unix(_)) => {
                return Err(ServeError::Config("TLS is for TCP addresses; a Unix socket is guarded by its file mode"))
            }
            (Some(t), _) => Some(tokio_rustls::TlsAcceptor::from(t.config().map_err(ServeError::Tls)?)),
            (None, _) => None,
        };
        // One I/O thread is plenty: verification runs on the engine's pools.
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(ServeError::Runtime)?;
        let listener = match bound {
            Some(b) => {
                let _in_rt = rt.enter();
                b.into_tokio().map_err(|e| ServeError::Bind { addr: cfg.addr.clone(), reason: e })?
            }
            None => rt.block_on(bind(&cfg.addr))?,
        };
        let listener_fd = {
            use std::os::fd::AsFd;
            match &listener {
                Listener::Tcp(l) => l.as_fd().try_clone_to_owned(),
                Listener::Unix(l, _) => l.as_fd().try_clone_to_owned(),
            }
            .map_err(|e| ServeError::Bind { addr: cfg.addr.clone(), reason: e })?
        };
        let keep_path = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let addr = match &listener {
            Listener::Tcp(l) => {
                ServeAddr::Tcp(l.local_addr().map_err(|e| ServeError::Bind { addr: cfg.addr.clone(), reason: e })?)
            }
            Listener::Unix(_, p) => ServeAddr::Unix(p.clone()),
        };
        let stats = Arc::new(ServerStats::default());
        let clamp = |n: usize| n.min(Semaphore::MAX_PERMITS).min(u32::MAX as usize);
        let ctx = Arc::new(Ctx {
            items: Arc::new(Semaphore::new(clamp(cfg.max_inflight_items))),
            bytes: Arc::new(Semaphore::new(clamp(cfg.max_inflight_bytes))),
            conns: Arc::new(Semaphore::new(clamp(cfg.max_connections))),
            tls,
            cfg,
            engine,
            metrics,
            stats: stats.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let keep = keep_path.clone();
        let thread = std::thread::Builder::new()
            .name("sigserve".into())
            .spawn(move || {
                rt.block_on(accept_loop(listener, ctx, stop_rx, keep));
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServeError::Runtime)?;
        Ok(SigServer { addr, stop, thread: Some(thread), stats, listener_fd, keep_path })
    }

    /// A second descriptor of the listening socket (close-on-exec), to hand
    /// to a successor.
    pub fn listener_dup(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.listener_fd.try_clone()
    }

    /// Leave a Unix socket's path in place at the stop: it belongs to
    /// whoever bound it (systemd socket activation).
    pub fn leave_path_at_stop(&self) {
        self.keep_path.store(true, Ordering::SeqCst);
    }

    /// [`shutdown`](Self::shutdown) after a successor took the socket: the
    /// same graceful stop, but a Unix socket's path stays (it is the
    /// successor's now).
    pub fn shutdown_handed_over(self) {
        self.keep_path.store(true, Ordering::SeqCst);
        self.shutdown();
    }

    /// The address bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> &ServeAddr {
        &self.addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// The counters, to read after [`SigServer::shutdown`].
    pub fn shared_stats(&self) -> Arc<ServerStats> {
        self.stats.clone()
    }

    /// Stop accepting and reading, answer every accepted batch, close.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SigServer {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}
