//! The sigserve server: accepts validator connections over TCP or a Unix
//! socket, reads BATCH frames (or JSON lines), hands them to the
//! [`SigEngine`] and writes each answer back.
//!
//! Bounds, so that no client can make it queue without limit:
//! * a frame over `max_frame` bytes or a batch over `max_items` is refused;
//! * reading a frame first takes its size from a global byte budget, and a
//!   batch takes its item count from a global item budget; both are given
//!   back only once its answer is written, so a client that does not read
//!   its answers stops being read from (TCP back-pressure);
//! * each connection has at most `max_inflight_per_conn` batches in flight;
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
}

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
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl SigServer {
    /// Bind and start serving on a runtime of its own.
    pub fn start(cfg: ServerConfig, engine: SigEngine, metrics: Option<Arc<Metrics>>) -> Result<SigServer, ServeError> {
        if cfg.max_frame > frame::MAX_FRAME_LIMIT {
            return Err(ServeError::Config(
                "max_frame must be below 16 MiB (the mode detection needs a zero fourth byte)",
            ));
        }
        if cfg.max_frame < HEADER_LEN
            || cfg.max_items == 0
            || cfg.max_inflight_per_conn == 0
            || cfg.max_connections == 0
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
        let listener = rt.block_on(bind(&cfg.addr))?;
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
        let thread = std::thread::Builder::new()
            .name("sigserve".into())
            .spawn(move || {
                rt.block_on(accept_loop(listener, ctx, stop_rx));
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .map_err(ServeError::Runtime)?;
        Ok(SigServer { addr, stop, thread: Some(thread), stats })
    }

    /// The address bound (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> &ServeAddr {
        &self.addr
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
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
            let l = tokio::net::UnixListener::bind(p).map_err(err)?;
            // Connecting needs write permission on the socket: the owner and
            // its group (e.g. the validator's), nobody else, whatever the umask.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660)).map_err(err)?;
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

async fn accept_loop(listener: Listener, ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            r = accept(&listener) => match r {
                Ok(conn) => {
                    let Ok(permit) = ctx.conns.clone().try_acquire_owned() else {
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
    // Graceful: connections see `stop` too, stop reading, answer and close.
    while tasks.join_next().await.is_some() {}
    if let Listener::Unix(_, p) = &listener {
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

/// One answer on its way out, holding the budget of its batch until written.
struct Out {
    bytes: Vec<u8>,
    _permits: Vec<OwnedSemaphorePermit>,
}

type Tx = mpsc::UnboundedSender<Out>;

async fn write_loop<W: AsyncWrite + Unpin>(w: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut w = BufWriter::with_capacity(64 << 10, w);
    let mut ok = true;
    while let Some(o) = rx.recv().await {
        ok = ok && w.write_all(&o.bytes).await.is_ok();
        drop(o);
        while let Ok(o) = rx.try_recv() {
            ok = ok && w.write_all(&o.bytes).await.is_ok();
        }
        ok = ok && w.flush().await.is_ok();
        // After a write error keep draining, so budgets are given back.
    }
    if ok {
        let _ = w.shutdown().await;
    }
}

async fn serve_conn<S: AsyncRead + AsyncWrite + Send + 'static>(s: S, ctx: &Arc<Ctx>, mut stop: watch::Receiver<bool>) {
    let (rd, wr) = tokio::io::split(s);
    let (tx, rx) = mpsc::unbounded_channel();
    let writer = tokio::spawn(write_loop(wr, rx));
    let per_conn = Arc::new(Semaphore::new(ctx.cfg.max_inflight_per_conn));
    // The first four bytes pick the mode: JSON lines when they start with
    // `{` and the fourth is not 0 (a binary frame's length is below 2^24,
    // so its fourth byte is always 0).
    let mut rd = rd;
    let mut first = [0u8; 4];
    let got = tokio::select! {
        biased;
        _ = stop.changed() => false,
        r = rd.read_exact(&mut first) => r.is_ok(),
    };
    if got {
        let mut rd = BufReader::with_capacity(64 << 10, std::io::Cursor::new(first).chain(rd));
        if first[0] == b'{' && first[3] != 0 {
            json_loop(&mut rd, ctx, &tx, &per_conn, &mut stop).await;
        } else {
            binary_loop(&mut rd, ctx, &tx, &per_conn, &mut stop).await;
        }
    } else if !*stop.borrow() {
        send_error(ctx, &tx, 0, ErrorCode::BadFrame, "truncated frame header", "batch");
    }
    drop(tx);
    // Returns once every in-flight batch has been answered (their closures
    // hold the other senders).
    let _ = writer.await;
}

fn send_error(ctx: &Ctx, tx: &Tx, id: u64, code: ErrorCode, msg: &str, kind: &str) {
    ctx.stats.errors_sent.fetch_add(1, Ordering::Relaxed);
    if let Some(m) = &ctx.metrics {
        m.sigserve_frames.with_label_values(&[kind, "error"]).inc();
    }
    let _ = tx.send(Out { bytes: frame::encode_error(id, code, msg), _permits: Vec::new() });
}

/// Take `n` permits, unless the server stops first.
async fn take(sem: &Arc<Semaphore>, n: usize, stop: &mut watch::Receiver<bool>) -> Option<OwnedSemaphorePermit> {
    let n = u32::try_from(n).ok()?;
    tokio::select! {
        biased;
        _ = stop.changed() => None,
        p = sem.clone().acquire_many_owned(n) => p.ok(),
    }
}

async fn binary_loop<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Arc<Ctx>,
    tx: &Tx,
    per_conn: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) {
    loop {
        // Clean end of stream between frames?
        let more = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = rd.fill_buf() => matches!(r, Ok(b) if !b.is_empty()),
        };
        if !more {
            return;
        }
        let mut hdr = [0u8; HEADER_LEN];
        let read = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = rd.read_exact(&mut hdr) => r,
        };
        if read.is_err() {
            return send_error(ctx, tx, 0, ErrorCode::BadFrame, "truncated frame header", "batch");
        }
        let (body_len, kind) = match frame::parse_header(&hdr, ctx.cfg.max_frame) {
            Ok(h) => h,
            Err(e) => return send_error(ctx, tx, 0, e.code(), &e.to_string(), "batch"),
        };
        let Some(bytes_permit) = take(&ctx.bytes, body_len.max(1), stop).await else { return };
        let mut body = vec![0u8; body_len];
        let read = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = rd.read_exact(&mut body) => r,
        };
        if read.is_err() {
            return send_error(ctx, tx, 0, ErrorCode::BadFrame, "truncated frame", "batch");
        }
        match frame::parse_body(kind, &body, ctx.cfg.max_items) {
            Ok(Frame::Batch(b)) => {
                drop(body);
                let deadline =
                    (b.deadline_us > 0).then(|| Instant::now() + Duration::from_micros(b.deadline_us.into()));
                if !submit(ctx, tx, per_conn, stop, b.id, deadline, b.items, bytes_permit, Encoding::Binary).await {
                    return;
                }
            }
            Ok(Frame::Ping { id }) => {
                let _ = tx.send(Out { bytes: frame::encode_pong(id), _permits: Vec::new() });
            }
            Ok(_) => {
                return send_error(ctx, tx, 0, ErrorCode::BadFrame, "a client may only send BATCH and PING", "batch")
            }
            Err(FrameError::TooManyItems { id, count, max }) => {
                send_error(ctx, tx, id, ErrorCode::TooManyItems, &format!("{count} items, limit {max}"), "batch");
            }
            Err(e) => return send_error(ctx, tx, 0, e.code(), &e.to_string(), "batch"),
        }
    }
}

#[derive(Clone, Copy)]
enum Encoding {
    Binary,
    Json,
}

/// Accept one parsed batch: take its budgets, queue it, and arrange its
/// answer. Returns false when the connection should stop reading (the
/// server is stopping; the batch is answered with ShuttingDown).
#[allow(clippy::too_many_arguments)]
async fn submit(
    ctx: &Arc<Ctx>,
    tx: &Tx,
    per_conn: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
    id: u64,
    deadline: Option<Instant>,
    parsed: Vec<Result<SigItem, Reason>>,
    bytes_permit: OwnedSemaphorePermit,
    enc: Encoding,
) -> bool {
    let kind = match enc {
        Encoding::Binary => "batch",
        Encoding::Json => "json",
    };
    let shutting = |ctx: &Ctx| match enc {
        Encoding::Binary => send_error(ctx, tx, id, ErrorCode::ShuttingDown, "server is shutting down", kind),
        Encoding::Json => {
            let _ = tx.send(Out { bytes: json_error(Some(id), "server is shutting down"), _permits: Vec::new() });
        }
    };
    let Some(conn_permit) = take(per_conn, 1, stop).await else {
        shutting(ctx);
        return false;
    };
    let Some(items_permit) = take(&ctx.items, parsed.len().max(1), stop).await else {
        shutting(ctx);
        return false;
    };
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
    let tx = tx.clone();
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
        let _ = tx.send(Out { bytes, _permits: vec![conn_permit, items_permit, bytes_permit] });
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
    true
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

/// JSON debugging mode: one request per line,
/// `{"id":N,"deadline_ms":M,"items":[ITEM,...]}` → `{"id":N,"verdicts":[...]}`.
async fn json_loop<R: AsyncRead + Unpin>(
    rd: &mut BufReader<R>,
    ctx: &Arc<Ctx>,
    tx: &Tx,
    per_conn: &Arc<Semaphore>,
    stop: &mut watch::Receiver<bool>,
) {
    let limit = ctx.cfg.max_frame;
    loop {
        let Some(bytes_permit) = take(&ctx.bytes, limit, stop).await else { return };
        let mut line = Vec::new();
        let mut limited = (&mut *rd).take(limit as u64 + 1);
        let r = tokio::select! {
            biased;
            _ = stop.changed() => return,
            r = limited.read_until(b'\n', &mut line) => r,
        };
        match r {
            Ok(0) | Err(_) => return,
            Ok(_) if line.len() > limit => {
                let _ = tx.send(Out { bytes: json_error(None, "line over the size limit"), _permits: Vec::new() });
                return;
            }
            Ok(_) => {}
        }
        if line.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        let req: serde_json::Value = match serde_json::from_slice(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Out { bytes: json_error(None, &format!("not JSON: {e}")), _permits: Vec::new() });
                continue;
            }
        };
        let id = req.get("id").and_then(|v| v.as_u64());
        let items = req.get("items").and_then(|v| v.as_array());
        let (Some(id), Some(items)) = (id, items) else {
            let _ = tx.send(Out { bytes: json_error(id, "want {\"id\":N,\"items\":[...]}"), _permits: Vec::new() });
            continue;
        };
        if items.len() > ctx.cfg.max_items {
            let _ = tx.send(Out { bytes: json_error(Some(id), "too many items"), _permits: Vec::new() });
            continue;
        }
        let parsed: Vec<Result<SigItem, Reason>> = items.iter().map(|v| jsonl::parse_value(v.clone())).collect();
        let deadline = req
            .get("deadline_ms")
            .and_then(|v| v.as_u64())
            .filter(|&ms| ms > 0)
            .map(|ms| Instant::now() + Duration::from_millis(ms.min(86_400_000)));
        drop(line);
        if !submit(ctx, tx, per_conn, stop, id, deadline, parsed, bytes_permit, Encoding::Json).await {
            return;
        }
    }
}
