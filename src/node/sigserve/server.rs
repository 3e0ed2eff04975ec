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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

use super::addr::ServeAddr;
use super::frame::{self, ErrorCode, Frame, FrameError, HEADER_LEN};
use crate::metrics::Metrics;
use crate::sched::SigEngine;
use crate::sig::{jsonl, Reason, SigItem, Verdict};

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
    pub tls: Option<super::tls::ServerTls>,
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
    Tls(super::tls::TlsError),
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

struct Ctx {
    cfg: ServerConfig,
    engine: SigEngine,
    metrics: Option<Arc<Metrics>>,
    items: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    conns: Arc<Semaphore>,
    stats: Arc<ServerStats>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

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

enum Listener {
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

    fn into_tokio(self) -> std::io::Result<Listener> {
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

async fn bind(addr: &ServeAddr) -> Result<Listener, ServeError> {
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

/// Counts a connection the server closed on its own (timeouts, the limit).
fn closed(ctx: &Ctx, cause: &'static str) {
    match cause {
        "limit" => &ctx.stats.connections_refused,
        _ => &ctx.stats.connections_timed_out,
    }
    .fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &ctx.metrics {
        m.sigserve_closed.with_label_values(&[cause]).inc();
    }
}

async fn accept_loop(
    listener: Listener,
    ctx: Arc<Ctx>,
    mut stop: watch::Receiver<bool>,
    keep_path: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = accept(&listener) => match r {
                Ok(conn) => {
                    let Ok(permit) = ctx.conns.clone().try_acquire_owned() else {
                        closed(&ctx, "limit");
                        tracing::warn!("sigserve: connection limit reached, closing a new connection");
                        drop(conn);
                        continue;
                    };
                    ctx.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let (ctx, stop) = (ctx.clone(), stop.clone());
                    tasks.spawn(async move {
                        if let Some(m) = &ctx.metrics { m.sigserve_connections.inc(); }
                        match (conn, &ctx.tls) {
                            (Conn::Tcp(s), None) => { let _ = s.set_nodelay(true); serve_conn(s, &ctx, stop).await }
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
                        if let Some(m) = &ctx.metrics { m.sigserve_connections.dec(); }
                        drop(permit);
                    });
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

/// One frame on its way out, holding what bounds it until written: a
/// batch's budgets and in-flight slot, or a control-frame slot.
struct Out {
    bytes: Vec<u8>,
    _permits: Vec<OwnedSemaphorePermit>,
}

type Tx = mpsc::UnboundedSender<Out>;

/// Writes answers in order. Every write has `timeout` to finish: a client
/// that stops reading gets its connection closed (`dead` is raised, so the
/// reader stops too) instead of holding the server, at run time or at
/// shutdown. After a failed write the queue is still drained, so budgets
/// come back.
async fn write_loop<W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::UnboundedReceiver<Out>,
    timeout: Duration,
    dead: watch::Sender<bool>,
    ctx: Arc<Ctx>,
) {
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let mut ok = true;
    let mut timed_out = false;
    while let Some(o) = rx.recv().await {
        put(&mut w, &o.bytes, timeout, &mut ok, &mut timed_out).await;
        drop(o);
        while let Ok(o) = rx.try_recv() {
            put(&mut w, &o.bytes, timeout, &mut ok, &mut timed_out).await;
        }
        if ok {
            match tokio::time::timeout(timeout, w.flush()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => ok = false,
                Err(_) => (ok, timed_out) = (false, true),
            }
        }
        if !ok && !*dead.borrow() {
            let _ = dead.send(true);
            if timed_out {
                closed(&ctx, "write_timeout");
                tracing::warn!("sigserve: a client did not read its answers within {timeout:?}; closing it");
            }
        }
    }
    if ok {
        let _ = tokio::time::timeout(timeout, w.shutdown()).await;
    }
}

async fn put<W: AsyncWrite + Unpin>(w: &mut W, bytes: &[u8], timeout: Duration, ok: &mut bool, timed_out: &mut bool) {
    if !*ok {
        return;
    }
    match tokio::time::timeout(timeout, w.write_all(bytes)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => *ok = false,
        Err(_) => (*ok, *timed_out) = (false, true),
    }
}

/// Why a connection stops being read.
#[derive(Debug)]
enum Halt {
    /// The server is stopping.
    Stop,
    /// The writer gave up on this client.
    Dead,
    /// A begun frame (or line) did not arrive in time.
    ReadTimeout,
    /// Nothing in flight and nothing sent for the idle timeout.
    Idle,
    /// End of stream or a read error (`true`: inside a frame).
    Eof(bool),
}

/// What a connection's reader shares with its answers.
struct Link {
    tx: Tx,
    /// Batches in flight on this connection.
    per_conn: Arc<Semaphore>,
    /// Control frames (PONG, ERROR 5, JSON error lines) queued and not yet
    /// written: while none is free the connection is not read.
    ctrl: Arc<Semaphore>,
    /// Frame bytes this connection may hold without the global budget
    /// ([`CONN_ALLOWANCE`]), so a small batch is read even while others'
    /// large frames hold the whole budget.
    own: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    dead: watch::Receiver<bool>,
}

async fn raised(rx: &mut watch::Receiver<bool>) {
    // A dropped sender counts as raised.
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs `f` unless the server stops, the writer gives up, or `limit` passes.
async fn guarded<F: std::future::Future>(link: &mut Link, limit: Option<Duration>, f: F) -> Result<F::Output, Halt> {
    let sleep = async {
        match limit {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = raised(&mut link.stop) => Err(Halt::Stop),
        _ = raised(&mut link.dead) => Err(Halt::Dead),
        r = f => Ok(r),
        _ = sleep => Err(Halt::ReadTimeout),
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Send + 'static>(s: S, ctx: &Arc<Ctx>, stop: watch::Receiver<bool>) {
    let (rd, wr) = tokio::io::split(s);
    let (tx, rx) = mpsc::unbounded_channel();
    let (dead_tx, dead) = watch::channel(false);
    let writer = tokio::spawn(write_loop(wr, rx, ctx.cfg.write_timeout, dead_tx, ctx.clone()));
    let mut link = Link {
        tx,
        per_conn: Arc::new(Semaphore::new(ctx.cfg.max_inflight_per_conn)),
        ctrl: Arc::new(Semaphore::new(ctx.cfg.max_queued_control)),
        own: Arc::new(Semaphore::new(CONN_ALLOWANCE)),
        stop,
        dead,
    };
    let halt = read_conn(rd, ctx, &mut link).await;
    match halt {
        Halt::ReadTimeout => {
            closed(ctx, "read_timeout");
            send_fatal(ctx, &link, ErrorCode::BadFrame, "frame not received in time");
        }
        Halt::Idle => closed(ctx, "idle_timeout"),
        Halt::Eof(true) => send_fatal(ctx, &link, ErrorCode::BadFrame, "truncated frame"),
        _ => {}
    }
    drop(link);
    // Returns once every in-flight batch has been answered (their closures
    // hold the other senders).
    let _ = writer.await;
}

async fn read_conn<R: AsyncRead + Unpin>(mut rd: R, ctx: &Arc<Ctx>, link: &mut Link) -> Halt {
    // The first four bytes pick the mode: JSON lines when they start with
    // `{` and the fourth is not 0 (a binary frame's length is below 2^24,
    // so its fourth byte is always 0).
    let mut first = [0u8; 4];
    match guarded(link, Some(ctx.cfg.idle_timeout), rd.read(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Halt::Eof(false),
        Ok(Ok(n)) => {
            if n < 4 {
                match guarded(link, Some(ctx.cfg.read_timeout), rd.read_exact(&mut first[n..])).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(_)) => return Halt::Eof(true),
                    Err(h) => return h,
                }
            }
        }
        Err(Halt::ReadTimeout) => return Halt::Idle,
        Err(h) => return h,
    }
    let mut rd = BufReader::with_capacity(64 << 10, std::io::Cursor::new(first).chain(rd));
    if first[0] == b'{' && first[3] != 0 {
        json_loop(&mut rd, ctx, link).await
    } else {
        binary_loop(&mut rd, ctx, link).await
    }
}

/// An ERROR after which the connection closes: queued without a slot (one
/// per connection).
fn send_fatal(ctx: &Ctx, link: &Link, code: ErrorCode, msg: &str) {
    count_error(ctx, "batch");
    let _ = link.tx.send(Out { bytes: frame::encode_error(0, code, msg), _permits: Vec::new() });
}

fn count_error(ctx: &Ctx, kind: &str) {
    ctx.stats.errors_sent.fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &ctx.metrics {
        m.sigserve_frames.with_label_values(&[kind, "error"]).inc();
    }
}

/// A frame the connection survives (PONG, ERROR 5, a JSON error line):
/// waits for a control slot, so a client that never reads stops being read.
async fn send_ctrl(link: &mut Link, bytes: Vec<u8>) -> Result<(), Halt> {
    let sem = link.ctrl.clone();
    let permit = guarded(link, None, sem.acquire_owned()).await?.map_err(|_| Halt::Stop)?;
    let _ = link.tx.send(Out { bytes, _permits: vec![permit] });
    Ok(())
}

/// Take `n` permits, unless the server stops or the writer gives up first.
async fn take(sem: &Arc<Semaphore>, n: usize, link: &mut Link) -> Option<OwnedSemaphorePermit> {
    let n = u32::try_from(n).ok()?;
    guarded(link, None, sem.clone().acquire_many_owned(n)).await.ok()?.ok()
}

/// Waits for the next byte of a new frame or line. Only a connection with
/// nothing in flight can be idle.
async fn wait_more<R: AsyncRead + Unpin>(rd: &mut BufReader<R>, ctx: &Ctx, link: &mut Link) -> Result<(), Halt> {
    loop {
        match guarded(link, Some(ctx.cfg.idle_timeout), rd.fill_buf()).await {
            Ok(Ok(b)) if !b.is_empty() => return Ok(()),
            Ok(_) => return Err(Halt::Eof(false)),
            Err(Halt::ReadTimeout) => {
                if link.per_conn.available_permits() == ctx.cfg.max_inflight_per_conn {
                    return Err(Halt::Idle);
                }
            }
            Err(h) => return Err(h),
        }
    }
}

/// Appends exactly `n` bytes to `buf`, taking them from the byte budget as
/// they arrive (never from a length the peer announced): first from the
/// connection's own allowance, then from the global budget. Reading and
/// waiting for budget both come out of what is `left` of the frame's read
/// time, so frames that together wait on a spent budget time out and give
/// it back instead of waiting on each other for ever.
async fn read_budgeted<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Ctx,
    link: &mut Link,
    buf: &mut Vec<u8>,
    n: usize,
    permits: &mut Vec<OwnedSemaphorePermit>,
    left: &mut Duration,
) -> Result<(), Halt> {
    let end = buf.len() + n;
    while buf.len() < end {
        let t0 = Instant::now();
        let avail = match guarded(link, Some(*left), rd.fill_buf()).await? {
            Ok(b) if !b.is_empty() => b,
            _ => return Err(Halt::Eof(true)),
        };
        let k = avail.len().min(end - buf.len());
        buf.extend_from_slice(&avail[..k]);
        rd.consume(k);
        permits.push(budget(ctx, link, k, t0, left).await?);
    }
    Ok(())
}

/// `k` bytes of budget (k ≤ 64 KiB, the read buffer), within `left`.
async fn budget(
    ctx: &Ctx,
    link: &mut Link,
    k: usize,
    t0: Instant,
    left: &mut Duration,
) -> Result<OwnedSemaphorePermit, Halt> {
    let k = u32::try_from(k).map_err(|_| Halt::Eof(true))?;
    let p = match link.own.clone().try_acquire_many_owned(k) {
        Ok(p) => p,
        Err(_) => {
            let remaining = left.saturating_sub(t0.elapsed());
            guarded(link, Some(remaining), ctx.bytes.clone().acquire_many_owned(k)).await?.map_err(|_| Halt::Stop)?
        }
    };
    *left = left.saturating_sub(t0.elapsed());
    Ok(p)
}

async fn binary_loop<R: AsyncRead + Unpin>(rd: &mut BufReader<R>, ctx: &Arc<Ctx>, link: &mut Link) -> Halt {
    loop {
        if let Err(h) = wait_more(rd, ctx, link).await {
            return h;
        }
        let mut left = ctx.cfg.read_timeout;
        let mut hdr = [0u8; HEADER_LEN];
        let t0 = Instant::now();
        match guarded(link, Some(left), rd.read_exact(&mut hdr)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return Halt::Eof(true),
            Err(h) => return h,
        }
        left = left.saturating_sub(t0.elapsed());
        let (body_len, kind) = match frame::parse_header(&hdr, ctx.cfg.max_frame) {
            Ok(h) => h,
            Err(e) => {
                send_fatal(ctx, link, e.code(), &e.to_string());
                return Halt::Eof(false);
            }
        };
        let mut permits = Vec::new();
        let mut body = Vec::new();
        if let Err(h) = read_budgeted(rd, ctx, link, &mut body, body_len, &mut permits, &mut left).await {
            return h;
        }
        match frame::parse_body(kind, &body, ctx.cfg.max_items) {
            Ok(Frame::Batch(b)) => {
                drop(body);
                let deadline =
                    (b.deadline_us > 0).then(|| Instant::now() + Duration::from_micros(b.deadline_us.into()));
                if let Err(h) = submit(ctx, link, b.id, deadline, b.items, permits, Encoding::Binary).await {
                    return h;
                }
            }
            Ok(Frame::Ping { id }) => {
                drop(permits);
                if let Err(h) = send_ctrl(link, frame::encode_pong(id)).await {
                    return h;
                }
            }
            Ok(_) => {
                send_fatal(ctx, link, ErrorCode::BadFrame, "a client may only send BATCH and PING");
                return Halt::Eof(false);
            }
            Err(FrameError::TooManyItems { id, count, max }) => {
                drop(permits);
                count_error(ctx, "batch");
                let e = frame::encode_error(id, ErrorCode::TooManyItems, &format!("{count} items, limit {max}"));
                if let Err(h) = send_ctrl(link, e).await {
                    return h;
                }
            }
            Err(e) => {
                send_fatal(ctx, link, e.code(), &e.to_string());
                return Halt::Eof(false);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Encoding {
    Binary,
    Json,
}

/// Accept one parsed batch: take its budgets, queue it, and arrange its
/// answer. An error means the connection should stop reading (the server is
/// stopping: the batch is answered with ShuttingDown).
async fn submit(
    ctx: &Arc<Ctx>,
    link: &mut Link,
    id: u64,
    deadline: Option<Instant>,
    parsed: Vec<Result<SigItem, Reason>>,
    mut permits: Vec<OwnedSemaphorePermit>,
    enc: Encoding,
) -> Result<(), Halt> {
    let kind = match enc {
        Encoding::Binary => "batch",
        Encoding::Json => "json",
    };
    let shutting = |ctx: &Ctx, link: &Link| {
        count_error(ctx, kind);
        let bytes = match enc {
            Encoding::Binary => frame::encode_error(id, ErrorCode::ShuttingDown, "server is shutting down"),
            Encoding::Json => json_error(Some(id), "server is shutting down"),
        };
        let _ = link.tx.send(Out { bytes, _permits: Vec::new() });
    };
    let per_conn = link.per_conn.clone();
    let Some(conn_permit) = take(&per_conn, 1, link).await else {
        shutting(ctx, link);
        return Err(Halt::Stop);
    };
    let Some(items_permit) = take(&ctx.items, parsed.len().max(1), link).await else {
        shutting(ctx, link);
        return Err(Halt::Stop);
    };
    permits.push(conn_permit);
    permits.push(items_permit);
    ctx.stats.batches_accepted.fetch_add(1, Ordering::Relaxed);
    let mut verdicts: Vec<Verdict> = Vec::with_capacity(parsed.len());
    let mut items = Vec::with_capacity(parsed.len());
    let mut at = Vec::with_capacity(parsed.len());
    for (i, p) in parsed.into_iter().enumerate() {
        match p {
            Ok(it) => {
                verdicts.push(Verdict::Valid);
                items.push(it);
                at.push(i);
            }
            Err(r) => verdicts.push(Verdict::Invalid(r)),
        }
    }
    let tx = link.tx.clone();
    let c = ctx.clone();
    let answer = move |verdicts: Vec<Verdict>| {
        let bytes = match enc {
            Encoding::Binary => frame::encode_verdicts(id, &verdicts),
            Encoding::Json => json_answer(id, &verdicts),
        };
        c.stats.batches_answered.fetch_add(1, Ordering::Relaxed);
        c.stats.items_answered.fetch_add(verdicts.len() as u64, Ordering::Relaxed);
        if let Some(m) = &c.metrics {
            m.sigserve_frames.with_label_values(&[kind, "ok"]).inc();
        }
        let _ = tx.send(Out { bytes, _permits: permits });
    };
    if items.is_empty() {
        answer(verdicts);
    } else {
        ctx.engine.submit(items, deadline, move |rep| {
            let mut verdicts = verdicts;
            for (&i, v) in at.iter().zip(rep.verdicts) {
                verdicts[i] = v;
            }
            answer(verdicts);
        });
    }
    Ok(())
}

fn json_error(id: Option<u64>, msg: &str) -> Vec<u8> {
    let mut s = serde_json::json!({"id": id, "error": msg}).to_string();
    s.push('\n');
    s.into_bytes()
}

fn json_answer(id: u64, verdicts: &[Verdict]) -> Vec<u8> {
    let v: Vec<serde_json::Value> = verdicts.iter().map(|v| jsonl::verdict_value(*v)).collect();
    let mut s = serde_json::json!({"id": id, "verdicts": v}).to_string();
    s.push('\n');
    s.into_bytes()
}

/// How reading a JSON line ended.
enum LineEnd {
    Line,
    /// Longer than `max_frame`: the connection closes.
    TooLong,
}

/// Reads one line (without its newline; a last line may lack one), taking
/// its bytes from the byte budget as they arrive; once its first byte is
/// in, the line has `read_timeout` to finish.
async fn read_line<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Ctx,
    link: &mut Link,
    line: &mut Vec<u8>,
    permits: &mut Vec<OwnedSemaphorePermit>,
) -> Result<LineEnd, Halt> {
    wait_more(rd, ctx, link).await?;
    let mut left = ctx.cfg.read_timeout;
    loop {
        let t0 = Instant::now();
        let avail = match guarded(link, Some(left), rd.fill_buf()).await? {
            Ok(b) if !b.is_empty() => b,
            // The last line of a stream may lack its newline.
            _ => return if line.is_empty() { Err(Halt::Eof(false)) } else { Ok(LineEnd::Line) },
        };
        let (k, newline) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if line.len() + k > ctx.cfg.max_frame {
            return Ok(LineEnd::TooLong);
        }
        line.extend_from_slice(&avail[..k]);
        rd.consume(k + newline as usize);
        if k > 0 {
            permits.push(budget(ctx, link, k, t0, &mut left).await?);
        } else {
            left = left.saturating_sub(t0.elapsed());
        }
        if newline {
            return Ok(LineEnd::Line);
        }
    }
}

/// JSON debugging mode: one request per line,
/// `{"id":N,"deadline_ms":M,"items":[ITEM,...]}` → `{"id":N,"verdicts":[...]}`.
async fn json_loop<R: AsyncRead + Unpin>(rd: &mut BufReader<R>, ctx: &Arc<Ctx>, link: &mut Link) -> Halt {
    loop {
        let mut permits = Vec::new();
        let mut line = Vec::new();
        match read_line(rd, ctx, link, &mut line, &mut permits).await {
            Ok(LineEnd::Line) => {}
            Ok(LineEnd::TooLong) => {
                let _ = link.tx.send(Out { bytes: json_error(None, "line over the size limit"), _permits: Vec::new() });
                return Halt::Eof(false);
            }
            Err(Halt::Eof(_)) => return Halt::Eof(false),
            Err(h) => return h,
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let req: serde_json::Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                drop(permits);
                if let Err(h) = send_ctrl(link, json_error(None, &format!("not JSON: {e}"))).await {
                    return h;
                }
                continue;
            }
        };
        let id = req.get("id").and_then(|v| v.as_u64());
        let items = req.get("items").and_then(|v| v.as_array());
        let (Some(id), Some(items)) = (id, items) else {
            drop(permits);
            if let Err(h) = send_ctrl(link, json_error(id, "want {\"id\":N,\"items\":[...]}")).await {
                return h;
            }
            continue;
        };
        if items.len() > ctx.cfg.max_items {
            drop(permits);
            if let Err(h) = send_ctrl(link, json_error(Some(id), "too many items")).await {
                return h;
            }
            continue;
        }
        let parsed: Vec<Result<SigItem, Reason>> = items.iter().map(|v| jsonl::parse_value(v.clone())).collect();
        let deadline = req
            .get("deadline_ms")
            .and_then(|v| v.as_u64())
            .filter(|&ms| ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms.min(86_400_000)));
        drop(line);
        if let Err(h) = submit(ctx, link, id, deadline, parsed, permits, Encoding::Json).await {
            return h;
        }
    }
}
