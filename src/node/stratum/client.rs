//! The connection loop: one session at a time to one pool, reconnects with
//! backoff, failover to the next pool and back to the primary after a
//! hold-down. Runs on a single-threaded tokio runtime; hits from the engines
//! arrive through a bridge thread. A Stratum V2 pool's session is in `v2`;
//! the loop, failover, metrics and the stop are shared.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::metrics::Metrics;
use crate::sched::{Hit, PowJob, PowScheduler, Stats};

use super::jobs::{JobBook, NotSent, PoolJob, Share};
use super::proto::{self, Incoming, MAX_LINE};
use super::transport::{self, ReadHalf, WriteHalf};
use super::v2::channel::ChannelBook;
use super::{parse_url, tls, PoolConfig, ShareReason, StratumConfig, StratumOptions};

mod v2;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(250);
/// Bad messages in a row before the connection is given up as broken.
const MAX_BAD_IN_A_ROW: u32 = 50;
/// Longest client.reconnect wait honoured.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(600);
/// At the stop, a write the pool has not taken for this long is abandoned
/// (the stop does not wait out the whole write timeout).
const STOP_WRITE_GRACE: Duration = Duration::from_millis(500);
/// At the stop: time to submit the hits the engines left and hear the
/// pool's answers.
const STOP_DRAIN: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the count of reconnect requests.
const SETTLED_SESSION: Duration = Duration::from_secs(60);
/// Hits between the engines' queue and the connection loop.
const HIT_BRIDGE: usize = 1024;

fn agent() -> String {
    format!("hashrig/{}", env!("CARGO_PKG_VERSION"))
}

struct PoolState {
    cfg: PoolConfig,
    host: String,
    port: u16,
    /// Set for stratum+ssl:// pools.
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Set for stratum2+tcp:// pools: the key their certificate must be
    /// signed with.
    authority: Option<[u8; 32]>,
    /// The V2 pool takes extended channels only (learned from its
    /// SetupConnection answer): open one from the next connection on.
    v2_extended: bool,
    /// mining.notify subscription id from the last subscribe, for resuming.
    session_id: Option<String>,
    /// The pool dropped us after mining.configure: never send it again.
    no_configure: bool,
}

impl PoolState {
    fn role(idx: usize) -> &'static str {
        if idx == 0 {
            "primary"
        } else {
            "backup"
        }
    }
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq)]
enum End {
    Stopped,
    ConnectFailed,
    Dropped,
    Timeout,
    Protocol,
    AuthFailed,
    /// The pool closed the connection on mining.configure: retry without it.
    ConfigureDropped,
    /// A V2 pool refused the setup flags: retry at once as it asked.
    Renegotiate,
    Reconnect(Duration),
    PrimaryBack,
}

impl End {
    fn cause(self) -> &'static str {
        match self {
            End::ConnectFailed => "connect_failed",
            End::Dropped => "dropped",
            End::Timeout => "timeout",
            End::Reconnect(_) => "requested",
            _ => "protocol",
        }
    }
}

enum Pending {
    Configure,
    Subscribe { resumed: bool },
    Authorize,
    ExtranonceSubscribe,
    Submit(Share, Instant),
}

enum ReaderEvent {
    Line(String),
    TooLong(usize),
    Closed(Option<String>),
}

/// Reads newline-delimited messages, never holding more than [`MAX_LINE`]
/// bytes of one line: a longer line is skipped to its end and reported.
async fn reader(rd: ReadHalf, tx: mpsc::Sender<ReaderEvent>) {
    let mut r = BufReader::with_capacity(16 * 1024, rd);
    let mut buf: Vec<u8> = Vec::new();
    let mut over = 0usize;
    loop {
        let avail = match r.fill_buf().await {
            Ok(a) => a,
            Err(e) => {
                let _ = tx.send(ReaderEvent::Closed(Some(e.to_string()))).await;
                return;
            }
        };
        if avail.is_empty() {
            let _ = tx.send(ReaderEvent::Closed(None)).await;
            return;
        }
        let (take, newline) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i, true),
            None => (avail.len(), false),
        };
        if over == 0 {
            buf.extend_from_slice(&avail[..take]);
            if buf.len() > MAX_LINE {
                over = buf.len();
                buf = Vec::new();
            }
        } else {
            over += take;
        }
        r.consume(take + newline as usize);
        if newline {
            let ev = if over > 0 {
                ReaderEvent::TooLong(over)
            } else {
                ReaderEvent::Line(String::from_utf8_lossy(&buf).trim().to_owned())
            };
            buf.clear();
            over = 0;
            if tx.send(ev).await.is_err() {
                return;
            }
        }
    }
}

/// One live connection.
struct Conn {
    idx: usize,
    wr: WriteHalf,
    pending: HashMap<u64, (Pending, Instant)>,
    configure_sent: bool,
    subscribed: bool,
    authorized: bool,
    bad_in_a_row: u32,
    last_rx: Instant,
    /// `[stratum] write_timeout_secs`.
    write_timeout: Duration,
    stop: Arc<AtomicBool>,
}

pub struct Client {
    pools: Vec<PoolState>,
    opts: StratumOptions,
    mask: u32,
    sched: Arc<PowScheduler>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    book: JobBook,
    /// The pool the book's jobs came from.
    book_pool: Option<usize>,
    queue: VecDeque<Share>,
    next_id: u64,
    /// The job being mined, when it was last published and the ntime used.
    current: Option<(Arc<PoolJob>, Instant, u32)>,
    outcomes: [u64; 3],
    publishes: u32,
    /// The last difficulty below the floor a pool asked for (logged once).
    last_clamped: f64,
    /// The channel of the current (or last) Stratum V2 session.
    channel: ChannelBook,
    /// The pool that channel is on.
    channel_pool: Option<usize>,
    /// The V2 job being mined: when it was published and the ntime used.
    current_v2: Option<(Arc<super::v2::channel::StandardJob>, Instant, u32)>,
}

impl Client {
    pub fn new(
        cfg: StratumConfig,
        sched: Arc<PowScheduler>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) -> Client {
        let mask = if cfg.options.version_rolling { cfg.mask().unwrap_or(proto::DEFAULT_VERSION_MASK) } else { 0 };
        let pools = cfg
            .pools
            .into_iter()
            .filter_map(|p| {
                // validate() has checked the URL and the TLS settings.
                let url = parse_url(&p.url).ok()?;
                let tls = if url.tls { Some(tls::client_config(&p).ok()?) } else { None };
                Some(PoolState {
                    cfg: p,
                    host: url.host,
                    port: url.port,
                    tls,
                    authority: url.authority,
                    v2_extended: false,
                    session_id: None,
                    no_configure: false,
                })
            })
            .collect();
        Client {
            pools,
            opts: cfg.options,
            mask,
            sched,
            stats,
            metrics,
            stop,
            book: JobBook::new(),
            book_pool: None,
            queue: VecDeque::new(),
            next_id: 1,
            current: None,
            outcomes: [0; 3],
            publishes: 0,
            last_clamped: 0.0,
            channel: ChannelBook::default(),
            channel_pool: None,
            current_v2: None,
        }
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Runs sessions until `stop`, failing over between pools.
    pub async fn run(mut self, hits: Receiver<Hit>) {
        if self.pools.is_empty() {
            return;
        }
        // Bounded: when the loop falls behind, the bridge waits, the
        // scheduler's bounded queue fills and engines drop (and count) hits.
        let (htx, mut hrx) = mpsc::channel(HIT_BRIDGE);
        let stop = self.stop.clone();
        let bridge = std::thread::Builder::new().name("stratum-hits".into()).spawn(move || {
            // At the stop the engines have already been joined: forward
            // whatever they left, then close the channel.
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                match hits.recv_timeout(Duration::from_millis(100)) {
                    Ok(h) => {
                        if htx.blocking_send(h).is_err() {
                            return 1 + hits.try_iter().count() as u64;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) if stopping => return 0,
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return 0,
                }
            }
        });
        let mut idx = 0usize;
        let mut failures = 0u32;
        let mut on_backup_since: Option<Instant> = None;
        // client.reconnect requests in a row from sessions that did not last:
        // each waits at least the backoff of that many failures, so a pool
        // (or a man in the middle) cannot make us reconnect in a tight loop.
        let mut asked_in_a_row = 0u32;
        while !self.stopped() {
            let began = Instant::now();
            let end = if self.pools[idx].authority.is_some() {
                self.session_v2(idx, &mut hrx, on_backup_since).await
            } else {
                self.session(idx, &mut hrx, on_backup_since).await
            };
            if began.elapsed() >= SETTLED_SESSION {
                asked_in_a_row = 0;
            }
            self.metrics.pool_connected.with_label_values(&[PoolState::role(idx)]).set(0);
            let pool = &self.pools[idx];
            match end {
                End::Stopped => break,
                End::PrimaryBack => {
                    tracing::info!(
                        "stratum: primary pool {}:{} is back after the hold-down",
                        self.pools[0].host,
                        self.pools[0].port
                    );
                    self.switch(idx, 0);
                    idx = 0;
                    failures = 0;
                    on_backup_since = None;
                }
                End::Renegotiate => {
                    self.metrics.pool_reconnects.with_label_values(&[end.cause()]).inc();
                    tracing::info!("stratum: reconnecting to {}:{} for an extended channel", pool.host, pool.port);
                }
                End::ConfigureDropped => {
                    self.metrics.pool_reconnects.with_label_values(&[end.cause()]).inc();
                    tracing::warn!(
                        "stratum: {}:{} closed the connection after mining.configure; reconnecting without it",
                        pool.host,
                        pool.port
                    );
                }
                End::Reconnect(asked) => {
                    self.metrics.pool_reconnects.with_label_values(&[end.cause()]).inc();
                    failures = 0;
                    // The first request is honoured as asked; more in a row
                    // wait at least backoff_min × 2^(n-1).
                    let wait = match asked_in_a_row {
                        0 => asked,
                        n => asked.max(self.backoff(n - 1)),
                    };
                    asked_in_a_row = asked_in_a_row.saturating_add(1);
                    tracing::info!(
                        "stratum: reconnecting to {}:{} in {:?} as the pool asked",
                        pool.host,
                        pool.port,
                        wait
                    );
                    self.idle(wait, &mut hrx).await;
                }
                _ => {
                    self.metrics.pool_reconnects.with_label_values(&[end.cause()]).inc();
                    failures += 1;
                    tracing::warn!(
                        "stratum: {}:{}: session ended ({}), attempt {failures}",
                        pool.host,
                        pool.port,
                        end.cause()
                    );
                    if failures >= self.opts.retries_before_failover.max(1) && self.pools.len() > 1 {
                        let next = (idx + 1) % self.pools.len();
                        self.switch(idx, next);
                        on_backup_since = (next != 0).then(Instant::now);
                        idx = next;
                        failures = 0;
                    }
                    let delay = self.backoff(failures);
                    self.idle(delay, &mut hrx).await;
                }
            }
        }
        self.sched.withdraw();
        // Hits the last session could not send in time, and shares queued
        // while disconnected: not sent, and counted as such.
        let drain_until = tokio::time::Instant::now() + STOP_DRAIN;
        while let Ok(Some(h)) = tokio::time::timeout_at(drain_until, hrx.recv()).await {
            let _ = self.on_hit(h, None).await;
        }
        hrx.close();
        while let Ok(h) = hrx.try_recv() {
            let _ = self.on_hit(h, None).await;
        }
        drop(hrx);
        if let Ok(Ok(lost)) = bridge.map(|b| b.join()) {
            self.sched.dropped_hits("shutdown", lost);
        }
        let queued = self.queue.len();
        for _ in 0..queued {
            self.outcome("stale", ShareReason::Shutdown);
        }
        self.queue.clear();
        if queued > 0 {
            tracing::warn!("stratum: {queued} share(s) found while disconnected were not sent before the stop");
        }
    }

    /// backoff_min × 2^n, at most backoff_max.
    fn backoff(&self, n: u32) -> Duration {
        Duration::from_millis(self.opts.backoff_min_ms.max(1))
            .saturating_mul(1 << n.min(16))
            .min(Duration::from_secs(self.opts.backoff_max_secs.max(1)))
    }

    /// Moves from pool `from` to pool `to`: work and queued shares of `from`
    /// are of no use on `to`.
    fn switch(&mut self, from: usize, to: usize) {
        let direction = if to == 0 { "to_primary" } else { "to_backup" };
        self.metrics.pool_failovers.with_label_values(&[direction]).inc();
        tracing::warn!(
            "stratum: failover {} {}:{} → {} {}:{}",
            PoolState::role(from),
            self.pools[from].host,
            self.pools[from].port,
            PoolState::role(to),
            self.pools[to].host,
            self.pools[to].port
        );
        for _ in 0..self.queue.len() {
            self.outcome("stale", ShareReason::SessionChanged);
        }
        self.queue.clear();
        self.current = None;
        self.current_v2 = None;
        self.sched.withdraw();
    }

    /// Waits `d` while disconnected, still taking hits (they are queued).
    async fn idle(&mut self, d: Duration, hrx: &mut mpsc::Receiver<Hit>) {
        let deadline = tokio::time::Instant::now() + d;
        while !self.stopped() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                Some(h) = hrx.recv() => { let _ = self.on_hit(h, None).await; }
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + TICK)) => {}
            }
        }
    }

    fn outcome(&mut self, result: &'static str, reason: ShareReason) {
        self.outcome_for("v1", result, reason)
    }

    /// Counts a share's end, for a pool speaking `protocol` ("v1", "v2").
    fn outcome_for(&mut self, protocol: &'static str, result: &'static str, reason: ShareReason) {
        self.metrics.pool_shares.with_label_values(&[result, reason.label()]).inc();
        self.metrics.pool_protocol_shares.with_label_values(&[protocol, result]).inc();
        // Every share is for a job of the book's pool (V1) or the channel's (V2).
        let pool = if protocol == "v2" { self.channel_pool } else { self.book_pool };
        let role = pool.map_or("none", PoolState::role);
        self.metrics.pool_role_shares.with_label_values(&[role, result]).inc();
        self.metrics.shares.with_label_values(&[result]).inc();
        let i = match result {
            "accepted" => {
                self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                0
            }
            "rejected" => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                1
            }
            _ => {
                self.stats.stale.fetch_add(1, Ordering::Relaxed);
                2
            }
        };
        self.outcomes[i] += 1;
        let total: u64 = self.outcomes.iter().sum();
        self.metrics.pool_stale_ratio.set(self.outcomes[2] as f64 / total as f64);
    }

    async fn send(&mut self, conn: &mut Conn, method: &str, params: Value, what: Pending) -> Result<(), End> {
        let id = self.next_id;
        self.next_id += 1;
        let line = proto::request(id, method, params);
        conn.pending.insert(id, (what, Instant::now()));
        Self::write_line(conn, &line).await
    }

    async fn reply(conn: &mut Conn, line: String) -> Result<(), End> {
        Self::write_line(conn, &line).await
    }

    /// Writes one message; the flush pushes TLS records out at once. A pool
    /// that stops reading gets `write_timeout_secs`, not the loop's timers;
    /// a stop cuts a write that has waited [`STOP_WRITE_GRACE`].
    async fn write_line(conn: &mut Conn, line: &str) -> Result<(), End> {
        let limit = conn.write_timeout;
        let stop = conn.stop.clone();
        let began = tokio::time::Instant::now();
        let write = async {
            conn.wr.write_all(line.as_bytes()).await?;
            conn.wr.flush().await
        };
        tokio::pin!(write);
        loop {
            let wake = (began + limit).min(tokio::time::Instant::now() + TICK);
            tokio::select! {
                r = &mut write => return r.map_err(|_| End::Dropped),
                _ = tokio::time::sleep_until(wake) => {
                    let waited = began.elapsed();
                    if waited >= limit {
                        tracing::warn!("stratum: the pool did not take a message within {limit:?}");
                        return Err(End::Timeout);
                    }
                    if stop.load(Ordering::Relaxed) && waited >= STOP_WRITE_GRACE {
                        tracing::warn!("stratum: stopping; the pool has not taken a message for {waited:.1?}");
                        return Err(End::Stopped);
                    }
                }
            }
        }
    }

    async fn session(&mut self, idx: usize, hrx: &mut mpsc::Receiver<Hit>, on_backup_since: Option<Instant>) -> End {
        let (host, port) = (self.pools[idx].host.clone(), self.pools[idx].port);
        tracing::info!("stratum: connecting to {} pool {host}:{port}", PoolState::role(idx));
        let Some((rd, wr)) = transport::connect(&host, port, self.pools[idx].tls.clone(), CONNECT_TIMEOUT).await else {
            return End::ConnectFailed;
        };
        let (ltx, mut lrx) = mpsc::channel(256);
        let reader = tokio::spawn(reader(rd, ltx));
        let mut conn = Conn {
            idx,
            wr,
            pending: HashMap::new(),
            configure_sent: false,
            subscribed: false,
            authorized: false,
            bad_in_a_row: 0,
            last_rx: Instant::now(),
            write_timeout: Duration::from_secs(self.opts.write_timeout_secs.max(1)),
            stop: self.stop.clone(),
        };
        let end = self.drive(&mut conn, &mut lrx, hrx, on_backup_since).await;
        reader.abort();
        // Submits never answered: the pool may or may not have them, and a
        // share is never sent twice, so they are written off.
        for (_, (p, _)) in conn.pending.drain() {
            if let Pending::Submit(..) = p {
                self.outcome("stale", ShareReason::NoAnswer);
            }
        }
        end
    }

    async fn drive(
        &mut self,
        conn: &mut Conn,
        lrx: &mut mpsc::Receiver<ReaderEvent>,
        hrx: &mut mpsc::Receiver<Hit>,
        on_backup_since: Option<Instant>,
    ) -> End {
        let idx = conn.idx;
        let pool = &self.pools[idx];
        let (user, pass) = (pool.cfg.user.clone(), pool.cfg.pass.clone());
        let resume = if self.book_pool == Some(idx) { pool.session_id.clone() } else { None };
        self.book.begin_connection();
        // Pipelined as miners do: configure, subscribe, authorize.
        let r: Result<(), End> = async {
            if self.mask != 0 && !self.pools[idx].no_configure {
                conn.configure_sent = true;
                let params = json!([["version-rolling"], {
                    "version-rolling.mask": format!("{:08x}", self.mask),
                    "version-rolling.min-bit-count": 2
                }]);
                self.send(conn, "mining.configure", params, Pending::Configure).await?;
            }
            let mut sub = vec![json!(agent())];
            if let Some(s) = &resume {
                sub.push(json!(s));
            }
            self.send(conn, "mining.subscribe", Value::Array(sub), Pending::Subscribe { resumed: resume.is_some() })
                .await?;
            self.send(conn, "mining.authorize", json!([user, pass]), Pending::Authorize).await
        }
        .await;
        if let Err(e) = r {
            return e;
        }
        let mut tick = tokio::time::interval(TICK);
        let mut probe = PrimaryProbe::new();
        loop {
            tokio::select! {
                ev = lrx.recv() => {
                    match ev {
                        None | Some(ReaderEvent::Closed(_)) => {
                            if let Some(ReaderEvent::Closed(Some(e))) = &ev {
                                tracing::warn!("stratum: connection error: {e}");
                            }
                            if conn.configure_sent && !conn.subscribed {
                                self.pools[idx].no_configure = true;
                                return End::ConfigureDropped;
                            }
                            tracing::warn!("stratum: {}:{} closed the connection", self.pools[idx].host, self.pools[idx].port);
                            return End::Dropped;
                        }
                        Some(ReaderEvent::TooLong(n)) => {
                            conn.last_rx = Instant::now();
                            tracing::warn!("stratum: dropped a {n}-byte line from the pool (limit {MAX_LINE})");
                            conn.bad_in_a_row += 1;
                        }
                        Some(ReaderEvent::Line(l)) => {
                            conn.last_rx = Instant::now();
                            if l.is_empty() {
                                continue;
                            }
                            if let Err(end) = self.handle_line(conn, &l).await {
                                return end;
                            }
                        }
                    }
                    if conn.bad_in_a_row > MAX_BAD_IN_A_ROW {
                        tracing::error!("stratum: {MAX_BAD_IN_A_ROW} bad messages in a row; reconnecting");
                        return End::Protocol;
                    }
                }
                Some(h) = hrx.recv() => {
                    if let Err(end) = self.on_hit(h, Some(conn)).await {
                        return end;
                    }
                }
                _ = tick.tick() => {
                    if self.stopped() {
                        return self.finish(conn, lrx, hrx).await;
                    }
                    let limit = Duration::from_secs(self.opts.response_timeout_secs.max(1));
                    let late = conn.pending.values().any(|(p, t)| {
                        !matches!(p, Pending::Configure | Pending::ExtranonceSubscribe) && t.elapsed() > limit
                    });
                    if late {
                        tracing::warn!("stratum: no answer from the pool within {limit:?}");
                        return End::Timeout;
                    }
                    if conn.last_rx.elapsed() > Duration::from_secs(self.opts.idle_timeout_secs.max(1)) {
                        tracing::warn!("stratum: nothing from the pool for {}s", self.opts.idle_timeout_secs);
                        return End::Timeout;
                    }
                    self.roll_ntime();
                    if let Some(since) = on_backup_since {
                        if probe.primary_back(since, &self.opts, &self.pools[0].host, self.pools[0].port).await {
                            return End::PrimaryBack;
                        }
                    }
                }
            }
        }
    }

    /// The stop, connected: submit the hits the engines left (the bridge
    /// closes the channel once they are all through) and wait for the
    /// pool's answers, for at most [`STOP_DRAIN`].
    async fn finish(
        &mut self,
        conn: &mut Conn,
        lrx: &mut mpsc::Receiver<ReaderEvent>,
        hrx: &mut mpsc::Receiver<Hit>,
    ) -> End {
        let deadline = tokio::time::Instant::now() + STOP_DRAIN;
        let mut hits_open = true;
        loop {
            let submits_pending = conn.pending.values().any(|(p, _)| matches!(p, Pending::Submit(..)));
            if !hits_open && !submits_pending {
                break;
            }
            tokio::select! {
                h = hrx.recv(), if hits_open => match h {
                    Some(h) => {
                        if self.on_hit(h, Some(conn)).await.is_err() {
                            break;
                        }
                    }
                    None => hits_open = false,
                },
                ev = lrx.recv() => match ev {
                    Some(ReaderEvent::Line(l)) if !l.is_empty() => {
                        if self.handle_line(conn, &l).await.is_err() {
                            break;
                        }
                    }
                    Some(ReaderEvent::Line(_)) | Some(ReaderEvent::TooLong(_)) => {}
                    None | Some(ReaderEvent::Closed(_)) => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("stratum: stopping with shares unanswered after {STOP_DRAIN:?}");
                    break;
                }
            }
        }
        End::Stopped
    }

    async fn handle_line(&mut self, conn: &mut Conn, line: &str) -> Result<(), End> {
        let msg = match proto::parse_line(line) {
            Ok(m) => m,
            Err(e) => {
                conn.bad_in_a_row += 1;
                tracing::warn!("stratum: bad message from the pool ({e}): {}", proto::printable(line, 160));
                return Ok(());
            }
        };
        match msg {
            Incoming::Response { id, result, error } => {
                let Some((what, sent)) = conn.pending.remove(&id) else {
                    tracing::debug!("stratum: answer to unknown request id {id}");
                    return Ok(());
                };
                self.on_response(conn, what, sent, result, error).await
            }
            Incoming::Request { id, method, params } => self.on_request(conn, id, &method, params).await,
        }
    }

    async fn on_response(
        &mut self,
        conn: &mut Conn,
        what: Pending,
        sent: Instant,
        result: Value,
        error: Value,
    ) -> Result<(), End> {
        let ok = error.is_null();
        let idx = conn.idx;
        match what {
            Pending::Configure => {
                let mask = if ok { proto::parse_configure_result(&result) } else { None };
                let mask = mask.map(|m| m & self.mask).unwrap_or(0);
                self.book.version_mask = mask;
                if mask != 0 {
                    tracing::info!("stratum: version rolling on, mask {mask:08x}");
                } else {
                    tracing::info!("stratum: the pool does not offer version rolling ({})", proto::error_text(&error));
                }
                conn.bad_in_a_row = 0;
            }
            Pending::Subscribe { resumed } => {
                let sub = match (ok, proto::parse_subscribe_result(&result)) {
                    (true, Ok(s)) => s,
                    (_, parsed) => {
                        let why = if ok {
                            parsed.err().map(|e| e.to_string()).unwrap_or_default()
                        } else {
                            proto::error_text(&error)
                        };
                        tracing::error!("stratum: mining.subscribe failed: {why}");
                        // Perhaps it was the session id it did not like.
                        self.pools[idx].session_id = None;
                        return Err(End::Protocol);
                    }
                };
                let same = self.book_pool == Some(idx)
                    && sub.extranonce1 == self.book.extranonce1
                    && sub.extranonce2_size == self.book.extranonce2_size;
                let resumed = resumed && same;
                if !resumed {
                    self.book.reset(sub.extranonce1.clone(), sub.extranonce2_size);
                    self.current = None;
                    self.sched.withdraw();
                }
                self.book_pool = Some(idx);
                self.pools[idx].session_id = sub.session_id.clone();
                conn.subscribed = true;
                conn.bad_in_a_row = 0;
                tracing::info!(
                    "stratum: subscribed, extranonce1 {} extranonce2 size {}{}",
                    hex::encode(&sub.extranonce1),
                    sub.extranonce2_size,
                    if resumed { ", session resumed" } else { "" }
                );
                if self.opts.extranonce_subscribe {
                    self.send(conn, "mining.extranonce.subscribe", json!([]), Pending::ExtranonceSubscribe).await?;
                }
            }
            Pending::Authorize => {
                if !(ok && result.as_bool() == Some(true)) {
                    tracing::error!(
                        "stratum: the pool refused worker {:?} ({})",
                        self.pools[idx].cfg.user,
                        proto::error_text(&error)
                    );
                    return Err(End::AuthFailed);
                }
                conn.authorized = true;
                conn.bad_in_a_row = 0;
                self.metrics.pool_connected.with_label_values(&[PoolState::role(idx)]).set(1);
                tracing::info!(
                    "stratum: authorised as {:?} on {}:{}",
                    self.pools[idx].cfg.user,
                    self.pools[idx].host,
                    self.pools[idx].port
                );
                self.flush_queue(conn).await?;
            }
            Pending::ExtranonceSubscribe => {
                if !ok || result.as_bool() == Some(false) {
                    tracing::info!(
                        "stratum: the pool does not take mining.extranonce.subscribe ({})",
                        proto::error_text(&error)
                    );
                }
            }
            Pending::Submit(share, t) => {
                let rtt = t.elapsed().as_secs_f64();
                let _ = sent;
                self.metrics.pool_submit_seconds.observe(rtt);
                conn.bad_in_a_row = 0;
                if ok && result.as_bool() == Some(true) {
                    self.outcome("accepted", ShareReason::None);
                    tracing::debug!(job = %share.fields.job_id, nonce = share.fields.nonce, "stratum: share accepted ({:.0} ms)", rtt * 1e3);
                } else {
                    let text = if ok { "rejected without a reason".to_owned() } else { proto::error_text(&error) };
                    let reason = ShareReason::from_pool_error(&text);
                    self.outcome(if reason.is_stale() { "stale" } else { "rejected" }, reason);
                    tracing::warn!(job = %share.fields.job_id, nonce = share.fields.nonce, "stratum: share rejected: {text}");
                }
            }
        }
        Ok(())
    }

    async fn on_request(&mut self, conn: &mut Conn, id: Value, method: &str, params: Value) -> Result<(), End> {
        let idx = conn.idx;
        let bad = |conn: &mut Conn, e: proto::ProtoError| {
            conn.bad_in_a_row += 1;
            tracing::warn!("stratum: bad {method} from the pool: {e}");
        };
        match method {
            "mining.notify" => match proto::parse_notify(&params) {
                Ok(n) => {
                    conn.bad_in_a_row = 0;
                    let (job, clean) = self.book.on_notify(n, Instant::now());
                    tracing::debug!(job = %job.notify.job_id, clean, difficulty = job.difficulty, "stratum: new job");
                    self.publish(&job, job.template.time);
                }
                Err(e) => bad(conn, e),
            },
            "mining.set_difficulty" => match proto::parse_difficulty(&params) {
                Ok(asked) => {
                    conn.bad_in_a_row = 0;
                    let floor = self.opts.min_difficulty;
                    let d = if asked < floor {
                        self.metrics.pool_difficulty_clamped.inc();
                        if asked != self.last_clamped {
                            tracing::warn!(
                                "stratum: the pool set difficulty {asked:e}, below the floor {floor:e} \
                                 ([stratum] min_difficulty); mining at {floor:e}"
                            );
                        }
                        self.last_clamped = asked;
                        floor
                    } else {
                        asked
                    };
                    if d != self.book.difficulty {
                        tracing::info!("stratum: difficulty {d} from the next job");
                    }
                    self.book.difficulty = d;
                    self.metrics.pool_difficulty.set(asked);
                }
                Err(e) => bad(conn, e),
            },
            "mining.set_extranonce" => match proto::parse_set_extranonce(&params) {
                Ok((en1, size)) => {
                    conn.bad_in_a_row = 0;
                    tracing::info!("stratum: extranonce1 {} size {size} from the next job", hex::encode(&en1));
                    self.book.set_extranonce(en1, size);
                    if !id.is_null() {
                        Self::reply(conn, proto::response(&id, json!(true))).await?;
                    }
                }
                Err(e) => bad(conn, e),
            },
            "mining.set_version_mask" => match proto::parse_version_mask(&params) {
                Ok(m) => {
                    conn.bad_in_a_row = 0;
                    let m = m & self.mask;
                    tracing::info!("stratum: version mask {m:08x} from the next job");
                    self.book.version_mask = m;
                }
                Err(e) => bad(conn, e),
            },
            "client.reconnect" => match proto::parse_reconnect(&params) {
                Ok(r) => {
                    let pool = &mut self.pools[idx];
                    let same_host = r.host.as_ref().is_none_or(|h| h.eq_ignore_ascii_case(&pool.host));
                    if !same_host && !self.opts.allow_foreign_reconnect {
                        tracing::warn!("stratum: ignored client.reconnect to another host ({:?})", r.host);
                        return Ok(());
                    }
                    if let Some(h) = r.host {
                        pool.host = h;
                    }
                    if let Some(p) = r.port.filter(|p| *p != 0) {
                        pool.port = p;
                    }
                    return Err(End::Reconnect(Duration::from_secs(r.wait_secs).min(MAX_RECONNECT_WAIT)));
                }
                Err(e) => bad(conn, e),
            },
            "client.get_version" => Self::reply(conn, proto::response(&id, json!(agent()))).await?,
            "mining.ping" => Self::reply(conn, proto::response(&id, json!("pong"))).await?,
            "client.show_message" => {
                let text = params.get(0).and_then(Value::as_str).unwrap_or("");
                tracing::info!("stratum: message from the pool: {}", proto::printable(text, 300));
            }
            other => {
                tracing::debug!("stratum: ignoring unknown method {}", proto::printable(other, 60));
                if !id.is_null() {
                    let mut s =
                        json!({"id": id, "result": null, "error": [20, "unsupported method", null]}).to_string();
                    s.push('\n');
                    Self::reply(conn, s).await?;
                }
            }
        }
        Ok(())
    }

    fn publish(&mut self, job: &Arc<PoolJob>, time: u32) {
        // Stopping: the engines are stopped, or (on a reload) about to mine
        // the next adapter's work; none of ours any more.
        if self.stopped() {
            return;
        }
        let mut template = job.template.clone();
        template.time = time;
        // Each publish (new job, ntime roll) starts at other version bits, so
        // that rolling shows from the first share rather than only after a
        // header's 2^32 nonces (the scheduler rolls the rest).
        if template.version_mask != 0 {
            self.publishes = self.publishes.wrapping_add(1);
            let m = template.version_mask;
            let start = (self.publishes << m.trailing_zeros()) & m;
            template.version = (template.version as u32 ^ start) as i32;
        }
        let seq = self.sched.publish(PowJob {
            id: job.notify.job_id.clone(),
            template,
            share_target: job.share_target,
            height: None,
            source: "stratum",
        });
        self.book.published(seq, job);
        self.current = Some((job.clone(), Instant::now(), time));
    }

    /// Moves ntime forward with the clock on long-lived jobs: never ahead of
    /// the job's ntime plus the real time since it arrived.
    fn roll_ntime(&mut self) {
        let every = self.opts.ntime_roll_secs;
        let Some((job, last, time)) = self.current.clone() else { return };
        if every == 0 || last.elapsed() < Duration::from_secs(every) || !self.book.is_live(&job) {
            return;
        }
        let now_time = job.template.time.saturating_add(job.received.elapsed().as_secs() as u32);
        if now_time > time {
            tracing::debug!(job = %job.notify.job_id, "stratum: ntime rolled to {now_time:08x}");
            self.publish(&job, now_time);
        }
    }

    async fn on_hit(&mut self, hit: Hit, conn: Option<&mut Conn>) -> Result<(), End> {
        if hit.job.job.source == v2::SOURCE {
            return self.on_hit_v2(hit, None).await;
        }
        let share = match self.book.share_for_hit(&hit) {
            Ok(s) => s,
            Err(NotSent::JobGone) => {
                self.metrics.pool_shares_found.inc();
                self.outcome("stale", ShareReason::JobGone);
                return Ok(());
            }
            Err(NotSent::Duplicate) => {
                tracing::warn!(nonce = hit.header.nonce, "stratum: the same share came twice; sent once");
                return Ok(());
            }
            Err(NotSent::BadShare) => {
                self.metrics.hardware_errors.with_label_values(&[hit.engine, &hit.device]).inc();
                self.stats.hw_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(nonce = hit.header.nonce, "stratum: hit fails the share re-check; not sent");
                return Ok(());
            }
        };
        self.metrics.pool_shares_found.inc();
        match conn {
            Some(conn) if conn.authorized => self.submit(conn, share).await,
            _ => {
                self.metrics.pool_shares_queued.inc();
                if self.queue.len() >= self.opts.max_queued_shares.max(1) {
                    self.queue.pop_front();
                    self.outcome("stale", ShareReason::SessionChanged);
                }
                self.queue.push_back(share);
                Ok(())
            }
        }
    }

    async fn submit(&mut self, conn: &mut Conn, share: Share) -> Result<(), End> {
        let params = share.fields.params(&self.pools[conn.idx].cfg.user);
        self.send(conn, "mining.submit", params, Pending::Submit(share, Instant::now())).await
    }

    /// After authorisation: sends the shares found while disconnected whose
    /// jobs the pool still knows (a resumed session); the rest are stale.
    async fn flush_queue(&mut self, conn: &mut Conn) -> Result<(), End> {
        while let Some(share) = self.queue.pop_front() {
            if self.book.share_is_live(&share) {
                self.submit(conn, share).await?;
            } else {
                self.outcome("stale", ShareReason::SessionChanged);
            }
        }
        Ok(())
    }
}

/// While mining on a backup pool: a TCP connect to the primary every
/// `probe_interval_secs` once `hold_down_secs` have passed since the
/// failover (at most one probe in flight), for both protocols' sessions.
struct PrimaryProbe {
    task: Option<tokio::task::JoinHandle<bool>>,
    last: Instant,
}

impl PrimaryProbe {
    fn new() -> PrimaryProbe {
        PrimaryProbe { task: None, last: Instant::now() }
    }

    /// True once a probe reached the primary; starts the next when due.
    async fn primary_back(&mut self, since: Instant, opts: &StratumOptions, host: &str, port: u16) -> bool {
        if let Some(p) = self.task.take_if(|p| p.is_finished()) {
            if p.await.unwrap_or(false) {
                return true;
            }
        }
        let hold = Duration::from_secs(opts.hold_down_secs);
        let every = Duration::from_secs(opts.probe_interval_secs.max(1));
        if self.task.is_none()
            && since.elapsed() >= hold
            && self.last.elapsed() >= every.min(hold.max(Duration::from_secs(1)))
        {
            self.last = Instant::now();
            let host = host.to_string();
            self.task = Some(tokio::spawn(async move {
                let connect = TcpStream::connect((host.as_str(), port));
                matches!(tokio::time::timeout(Duration::from_secs(5), connect).await, Ok(Ok(_)))
            }));
        }
        false
    }
}
