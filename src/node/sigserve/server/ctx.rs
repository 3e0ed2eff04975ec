//! What the rest of the server builds on: its settings, errors and
//! counters, and what every connection of one server shares ([`Ctx`]), with
//! the count of connections the server closes on its own.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::metrics::Metrics;
use crate::node::sigserve::addr::ServeAddr;
use crate::node::sigserve::frame;
use crate::node::sigserve::tls::{ServerTls, TlsError};
use crate::sched::SigEngine;

/// Server settings; [`ServerConfig::new`] gives the defaults.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub addr: ServeAddr,
    /// Largest frame (and JSON line) accepted, bytes.
    pub max_frame: usize,
    /// Most items in one batch.
    pub max_items: usize,
    /// Items accepted and not yet answered, over all connections.
    pub max_inflight_items: usize,
    /// Frame bytes read and not yet answered, over all connections.
    pub max_inflight_bytes: usize,
    /// Batches in flight per connection.
    pub max_inflight_per_conn: usize,
    pub max_connections: usize,
    /// A frame (or JSON line) whose first byte has arrived must arrive whole
    /// within this, or the connection is closed.
    pub read_timeout: Duration,
    /// A connection with no batch in flight that sends nothing for this long
    /// is closed.
    pub idle_timeout: Duration,
    /// A write to the client that does not finish within this closes the
    /// connection (the client does not read its answers).
    pub write_timeout: Duration,
    /// PONG and non-fatal ERROR frames queued per connection; while they are
    /// all unwritten the connection is not read.
    pub max_queued_control: usize,
    /// TLS on a TCP address (with client certificates when it names a CA).
    pub tls: Option<ServerTls>,
}

impl ServerConfig {
    pub fn new(addr: ServeAddr) -> ServerConfig {
        ServerConfig {
            addr,
            max_frame: frame::DEFAULT_MAX_FRAME,
            max_items: 65_536,
            max_inflight_items: 262_144,
            max_inflight_bytes: 256 << 20,
            max_inflight_per_conn: 64,
            max_connections: 1024,
            read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(10),
            max_queued_control: 64,
            tls: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot start the sigserve runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: ServeAddr, reason: std::io::Error },
    #[error("{0} exists and is not a socket; not replacing it")]
    PathInUse(std::path::PathBuf),
    #[error("invalid server config: {0}")]
    Config(&'static str),
    #[error("sigserve TLS: {0}")]
    Tls(TlsError),
}

/// Counters of one server (the Prometheus metrics carry the same, by label).
#[derive(Debug, Default)]
pub struct ServerStats {
    pub connections: AtomicU64,
    pub batches_accepted: AtomicU64,
    pub batches_answered: AtomicU64,
    pub items_answered: AtomicU64,
    pub errors_sent: AtomicU64,
    pub tls_handshakes_failed: AtomicU64,
    /// Connections closed for a read, idle or write timeout.
    pub connections_timed_out: AtomicU64,
    /// Connections closed on accept because `max_connections` were open.
    pub connections_refused: AtomicU64,
}

/// Frame bytes each connection may hold outside the global byte budget.
pub const CONN_ALLOWANCE: usize = 64 << 10;

/// What every connection of one server shares.
pub(super) struct Ctx {
    pub(super) cfg: ServerConfig,
    pub(super) engine: SigEngine,
    pub(super) metrics: Option<Arc<Metrics>>,
    /// Items accepted and not yet answered (`max_inflight_items`).
    pub(super) items: Arc<Semaphore>,
    /// Frame bytes read and not yet answered (`max_inflight_bytes`).
    pub(super) bytes: Arc<Semaphore>,
    /// Open connections (`max_connections`).
    pub(super) conns: Arc<Semaphore>,
    pub(super) stats: Arc<ServerStats>,
    pub(super) tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Why the server closed a connection on its own: the `cause` label of
/// `hashrig_sigserve_closed_total`, and which [`ServerStats`] counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum CloseCause {
    /// A begun frame (or line) did not arrive within `read_timeout`.
    ReadTimeout,
    /// Nothing in flight and nothing sent for `idle_timeout`.
    IdleTimeout,
    /// The client did not take its answers within `write_timeout`.
    WriteTimeout,
    /// Refused on accept: `max_connections` were open.
    Limit,
}

impl CloseCause {
    fn label(self) -> &'static str {
        match self {
            CloseCause::ReadTimeout => "read_timeout",
            CloseCause::IdleTimeout => "idle_timeout",
            CloseCause::WriteTimeout => "write_timeout",
            CloseCause::Limit => "limit",
        }
    }
}

/// Counts a connection the server closed on its own.
pub(super) fn closed(ctx: &Ctx, cause: CloseCause) {
    let counter = match cause {
        CloseCause::Limit => &ctx.stats.connections_refused,
        CloseCause::ReadTimeout | CloseCause::IdleTimeout | CloseCause::WriteTimeout => {
            &ctx.stats.connections_timed_out
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &ctx.metrics {
        m.sigserve_closed.with_label_values(&[cause.label()]).inc();
    }
}
