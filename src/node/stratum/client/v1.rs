//! One session with a Stratum V1 pool: mining.configure (version rolling),
//! subscribe (resuming the last session where the pool allows), authorize,
//! then jobs in and shares out, each answered on its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::session::{Liveness, Session};
use super::shares::{ShareResult, Wire};
use super::{agent, rate_moved, Client, End, PoolState, Protocol, CONNECT_TIMEOUT, MAX_RECONNECT_WAIT};
use super::{RATE_CHECK, STOP_WRITE_GRACE, TICK};
use crate::node::stratum::jobs::{NotSent, PoolJob, Share};
use crate::node::stratum::proto::{self, Incoming, MAX_LINE};
use crate::node::stratum::transport::{self, ReadHalf, WriteHalf};
use crate::node::stratum::ShareReason;
use crate::sched::Hit;

enum Pending {
    Configure,
    Subscribe { resumed: bool },
    Authorize,
    ExtranonceSubscribe,
    SuggestDifficulty,
    Submit(Share, Instant),
}

impl Pending {
    /// Requests the session goes on without an answer to.
    fn optional(&self) -> bool {
        matches!(self, Pending::Configure | Pending::ExtranonceSubscribe | Pending::SuggestDifficulty)
    }
}

pub(super) enum ReaderEvent {
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

/// One live V1 connection.
pub(super) struct Conn {
    idx: usize,
    wr: WriteHalf,
    pending: HashMap<u64, (Pending, Instant)>,
    configure_sent: bool,
    subscribed: bool,
    authorized: bool,
    live: Liveness,
    /// The rate the last mining.suggest_difficulty was for, and when the
    /// rate was last compared with it.
    suggested: f64,
    rate_checked: Instant,
    /// `[stratum] write_timeout_secs`.
    write_timeout: Duration,
    stop: Arc<AtomicBool>,
}

impl Session for Conn {
    type Event = ReaderEvent;

    fn liveness(&mut self) -> &mut Liveness {
        &mut self.live
    }

    fn overdue(&self, limit: Duration) -> bool {
        self.pending.values().any(|(p, t)| !p.optional() && t.elapsed() > limit)
    }

    fn awaiting_answers(&self) -> bool {
        self.pending.values().any(|(p, _)| matches!(p, Pending::Submit(..)))
    }

    async fn on_event(client: &mut Client, conn: &mut Conn, ev: Option<ReaderEvent>) -> Result<(), End> {
        match ev {
            None | Some(ReaderEvent::Closed(_)) => {
                if let Some(ReaderEvent::Closed(Some(e))) = &ev {
                    tracing::warn!("stratum: connection error: {e}");
                }
                if conn.configure_sent && !conn.subscribed {
                    if let Protocol::V1 { no_configure, .. } = &mut client.pools[conn.idx].protocol {
                        *no_configure = true;
                    }
                    return Err(End::ConfigureDropped);
                }
                let pool = &client.pools[conn.idx];
                tracing::warn!("stratum: {}:{} closed the connection", pool.host, pool.port);
                Err(End::Dropped)
            }
            Some(ReaderEvent::TooLong(n)) => {
                conn.live.last_rx = Instant::now();
                tracing::warn!("stratum: dropped a {n}-byte line from the pool (limit {MAX_LINE})");
                conn.live.bad_in_a_row += 1;
                Ok(())
            }
            Some(ReaderEvent::Line(l)) => {
                conn.live.last_rx = Instant::now();
                if l.is_empty() {
                    return Ok(());
                }
                client.handle_line(conn, &l).await
            }
        }
    }

    async fn on_hit(client: &mut Client, conn: &mut Conn, hit: Hit) -> Result<(), End> {
        // A V2 job's hit (left from before a failover) has no channel here.
        if hit.job.job.source == super::v2::SOURCE {
            client.hit_while_disconnected(hit);
            return Ok(());
        }
        let Some(share) = client.share_v1(&hit) else { return Ok(()) };
        if conn.authorized {
            client.submit(conn, share).await
        } else {
            client.queue_v1(share);
            Ok(())
        }
    }

    async fn on_tick(client: &mut Client, conn: &mut Conn) -> Result<(), End> {
        client.roll_ntime();
        if conn.authorized && conn.rate_checked.elapsed() >= RATE_CHECK {
            conn.rate_checked = Instant::now();
            client.suggest_difficulty(conn).await?;
        }
        Ok(())
    }
}

impl Client {
    pub(super) async fn session_v1(
        &mut self,
        idx: usize,
        hrx: &mut mpsc::Receiver<Hit>,
        on_backup_since: Option<Instant>,
    ) -> End {
        let (host, port) = (self.pools[idx].host.clone(), self.pools[idx].port);
        let tls = match &self.pools[idx].protocol {
            Protocol::V1 { tls, .. } => tls.clone(),
            Protocol::V2 { .. } => None,
        };
        tracing::info!("stratum: connecting to {} pool {host}:{port}", PoolState::role(idx));
        let Some((rd, wr)) = transport::connect(&host, port, tls, CONNECT_TIMEOUT).await else {
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
            live: Liveness::new(),
            suggested: 0.0,
            rate_checked: Instant::now(),
            write_timeout: Duration::from_secs(self.opts.write_timeout_secs.max(1)),
            stop: self.stop.clone(),
        };
        let end = match self.handshake(&mut conn).await {
            Ok(()) => self.drive(&mut conn, &mut lrx, hrx, on_backup_since).await,
            Err(end) => end,
        };
        reader.abort();
        // Submits never answered: the pool may or may not have them, and a
        // share is never sent twice, so they are written off.
        let unanswered = conn.pending.drain().filter(|(_, (p, _))| matches!(p, Pending::Submit(..))).count();
        self.outcomes(Wire::V1, ShareResult::Stale, ShareReason::NoAnswer, unanswered as u64);
        end
    }

    /// Pipelined as miners do: configure, subscribe, authorize.
    async fn handshake(&mut self, conn: &mut Conn) -> Result<(), End> {
        let idx = conn.idx;
        let (user, pass) = (self.pools[idx].cfg.user.clone(), self.pools[idx].cfg.pass.clone());
        let (resume, no_configure) = match &self.pools[idx].protocol {
            Protocol::V1 { session_id, no_configure, .. } => {
                (session_id.clone().filter(|_| self.book_pool == Some(idx)), *no_configure)
            }
            Protocol::V2 { .. } => (None, true),
        };
        self.book.begin_connection();
        if self.mask != 0 && !no_configure {
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
        let resumed = resume.is_some();
        self.send(conn, "mining.subscribe", Value::Array(sub), Pending::Subscribe { resumed }).await?;
        self.send(conn, "mining.authorize", json!([user, pass]), Pending::Authorize).await
    }

    async fn send(&mut self, conn: &mut Conn, method: &str, params: Value, what: Pending) -> Result<(), End> {
        let id = self.next_id;
        self.next_id += 1;
        let line = proto::request(id, method, params);
        conn.pending.insert(id, (what, Instant::now()));
        write_line(conn, &line).await
    }

    async fn handle_line(&mut self, conn: &mut Conn, line: &str) -> Result<(), End> {
        let msg = match proto::parse_line(line) {
            Ok(m) => m,
            Err(e) => {
                conn.live.bad_in_a_row += 1;
                tracing::warn!("stratum: bad message from the pool ({e}): {}", proto::printable(line, 160));
                return Ok(());
            }
        };
        match msg {
            Incoming::Response { id, result, error } => {
                let Some((what, _sent)) = conn.pending.remove(&id) else {
                    tracing::debug!("stratum: answer to unknown request id {id}");
                    return Ok(());
                };
                self.on_response(conn, what, result, error).await
            }
            Incoming::Request { id, method, params } => self.on_request(conn, id, &method, params).await,
        }
    }

    async fn on_response(&mut self, conn: &mut Conn, what: Pending, result: Value, error: Value) -> Result<(), End> {
        let ok = error.is_null();
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
                conn.live.bad_in_a_row = 0;
            }
            Pending::Subscribe { resumed } => self.on_subscribed(conn, resumed, ok, &result, &error).await?,
            Pending::Authorize => self.on_authorized(conn, ok && result.as_bool() == Some(true), &error).await?,
            Pending::ExtranonceSubscribe => {
                if !ok || result.as_bool() == Some(false) {
                    let why = proto::error_text(&error);
                    tracing::info!("stratum: the pool does not take mining.extranonce.subscribe ({why})");
                }
            }
            Pending::SuggestDifficulty => {
                if !ok || result.as_bool() == Some(false) {
                    let why = proto::error_text(&error);
                    tracing::info!("stratum: the pool does not take mining.suggest_difficulty ({why})");
                    if let Protocol::V1 { no_suggest, .. } = &mut self.pools[conn.idx].protocol {
                        *no_suggest = true;
                    }
                }
            }
            Pending::Submit(share, t) => {
                conn.live.bad_in_a_row = 0;
                self.on_submit_answer(share, t, ok && result.as_bool() == Some(true), &error);
            }
        }
        Ok(())
    }

    async fn on_subscribed(
        &mut self,
        conn: &mut Conn,
        resumed: bool,
        ok: bool,
        result: &Value,
        error: &Value,
    ) -> Result<(), End> {
        let idx = conn.idx;
        let sub = match (ok, proto::parse_subscribe_result(result)) {
            (true, Ok(s)) => s,
            (_, parsed) => {
                let why =
                    if ok { parsed.err().map(|e| e.to_string()).unwrap_or_default() } else { proto::error_text(error) };
                tracing::error!("stratum: mining.subscribe failed: {why}");
                // Perhaps it was the session id it did not like.
                if let Protocol::V1 { session_id, .. } = &mut self.pools[idx].protocol {
                    *session_id = None;
                }
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
        if let Protocol::V1 { session_id, .. } = &mut self.pools[idx].protocol {
            *session_id = sub.session_id.clone();
        }
        conn.subscribed = true;
        conn.live.bad_in_a_row = 0;
        tracing::info!(
            "stratum: subscribed, extranonce1 {} extranonce2 size {}{}",
            hex::encode(&sub.extranonce1),
            sub.extranonce2_size,
            if resumed { ", session resumed" } else { "" }
        );
        if self.opts.extranonce_subscribe {
            self.send(conn, "mining.extranonce.subscribe", json!([]), Pending::ExtranonceSubscribe).await?;
        }
        Ok(())
    }

    async fn on_authorized(&mut self, conn: &mut Conn, ok: bool, error: &Value) -> Result<(), End> {
        let idx = conn.idx;
        let pool = &self.pools[idx];
        if !ok {
            tracing::error!("stratum: the pool refused worker {:?} ({})", pool.cfg.user, proto::error_text(error));
            return Err(End::AuthFailed);
        }
        tracing::info!("stratum: authorised as {:?} on {}:{}", pool.cfg.user, pool.host, pool.port);
        conn.authorized = true;
        conn.live.bad_in_a_row = 0;
        self.metrics.pool_connected.with_label_values(&[PoolState::role(idx)]).set(1);
        self.suggest_difficulty(conn).await?;
        self.flush_queue(conn).await
    }

    fn on_submit_answer(&mut self, share: Share, sent: Instant, accepted: bool, error: &Value) {
        let rtt = sent.elapsed().as_secs_f64();
        self.metrics.pool_submit_seconds.observe(rtt);
        let (job, nonce) = (&share.fields.job_id, share.fields.nonce);
        if accepted {
            self.outcome(Wire::V1, ShareResult::Accepted, ShareReason::None);
            tracing::debug!(job = %job, nonce, "stratum: share accepted ({:.0} ms)", rtt * 1e3);
        } else {
            let text = if error.is_null() { "rejected without a reason".to_owned() } else { proto::error_text(error) };
            let reason = ShareReason::from_pool_error(&text);
            self.outcome(Wire::V1, ShareResult::refused(reason), reason);
            tracing::warn!(job = %job, nonce, "stratum: share rejected: {text}");
        }
    }

    /// mining.suggest_difficulty for one share per `suggest_difficulty_secs`
    /// at the measured rate: after authorising, and again when the rate
    /// moved by more than 2x, on pools that did not refuse it.
    async fn suggest_difficulty(&mut self, conn: &mut Conn) -> Result<(), End> {
        let secs = self.opts.suggest_difficulty_secs;
        let refused = matches!(self.pools[conn.idx].protocol, Protocol::V1 { no_suggest: true, .. });
        let Some(rate) = self.measured_rate().filter(|_| secs > 0 && !refused) else { return Ok(()) };
        if !rate_moved(conn.suggested, rate) {
            return Ok(());
        }
        conn.suggested = rate;
        let d = (rate * secs as f64 / 4_294_967_296.0).max(self.opts.min_difficulty);
        tracing::info!("stratum: suggesting difficulty {d:.6} for {rate:.3e} H/s");
        self.send(conn, "mining.suggest_difficulty", json!([d]), Pending::SuggestDifficulty).await
    }

    async fn on_request(&mut self, conn: &mut Conn, id: Value, method: &str, params: Value) -> Result<(), End> {
        let parsed = match method {
            "mining.notify" => proto::parse_notify(&params).map(|n| self.on_notify(n)),
            "mining.set_difficulty" => proto::parse_difficulty(&params).map(|d| self.on_set_difficulty(d)),
            "mining.set_extranonce" => match proto::parse_set_extranonce(&params) {
                Ok((en1, size)) => {
                    tracing::info!("stratum: extranonce1 {} size {size} from the next job", hex::encode(&en1));
                    self.book.set_extranonce(en1, size);
                    if !id.is_null() {
                        write_line(conn, &proto::response(&id, json!(true))).await?;
                    }
                    Ok(())
                }
                Err(e) => Err(e),
            },
            "mining.set_version_mask" => proto::parse_version_mask(&params).map(|m| {
                let m = m & self.mask;
                tracing::info!("stratum: version mask {m:08x} from the next job");
                self.book.version_mask = m;
            }),
            "client.reconnect" => match proto::parse_reconnect(&params) {
                Ok(r) => return self.on_reconnect(conn.idx, r.host, r.port, r.wait_secs),
                Err(e) => Err(e),
            },
            _ => return self.on_other_request(conn, id, method, params).await,
        };
        match parsed {
            Ok(()) => conn.live.bad_in_a_row = 0,
            Err(e) => {
                conn.live.bad_in_a_row += 1;
                tracing::warn!("stratum: bad {method} from the pool: {e}");
            }
        }
        Ok(())
    }

    /// The requests that need no parsing of their own.
    async fn on_other_request(&mut self, conn: &mut Conn, id: Value, method: &str, params: Value) -> Result<(), End> {
        match method {
            "client.get_version" => write_line(conn, &proto::response(&id, json!(agent()))).await?,
            "mining.ping" => write_line(conn, &proto::response(&id, json!("pong"))).await?,
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
                    write_line(conn, &s).await?;
                }
            }
        }
        Ok(())
    }

    fn on_notify(&mut self, n: proto::Notify) {
        let (job, clean) = self.book.on_notify(n, Instant::now());
        tracing::debug!(job = %job.notify.job_id, clean, difficulty = job.difficulty, "stratum: new job");
        self.publish(&job, job.template.time);
    }

    fn on_set_difficulty(&mut self, asked: f64) {
        let d = if self.below_floor(asked) { self.opts.min_difficulty } else { asked };
        if d != self.book.difficulty {
            tracing::info!("stratum: difficulty {d} from the next job");
        }
        self.book.difficulty = d;
    }

    /// A pool's request to reconnect (V1 client.reconnect, V2 Reconnect):
    /// to the same host unless `[stratum] allow_foreign_reconnect`.
    pub(super) fn on_reconnect(
        &mut self,
        idx: usize,
        host: Option<String>,
        port: Option<u16>,
        wait_secs: u64,
    ) -> Result<(), End> {
        let pool = &mut self.pools[idx];
        let same_host = host.as_ref().is_none_or(|h| h.eq_ignore_ascii_case(&pool.host));
        if !same_host && !self.opts.allow_foreign_reconnect {
            tracing::warn!("stratum: ignored a reconnect request to another host ({host:?})");
            return Ok(());
        }
        if let Some(h) = host {
            pool.host = h;
        }
        if let Some(p) = port.filter(|p| *p != 0) {
            pool.port = p;
        }
        Err(End::Reconnect(Duration::from_secs(wait_secs).min(MAX_RECONNECT_WAIT)))
    }

    fn publish(&mut self, job: &Arc<PoolJob>, time: u32) {
        // Stopping: the engines are stopped, or (on a reload) about to mine
        // the next adapter's work; none of ours any more.
        if self.stopped() {
            return;
        }
        let mut template = job.template.clone();
        template.time = time;
        let seq = self.publish_work(job.notify.job_id.clone(), template, job.share_target, "stratum");
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

    /// A V1 hit as a share: re-checked, de-duplicated, counted as found (and
    /// as a block candidate); `None` when it is not one to send.
    pub(super) fn share_v1(&mut self, hit: &Hit) -> Option<Share> {
        match self.book.share_for_hit(hit) {
            Ok(share) => {
                self.metrics.pool_shares_found.inc();
                self.note_block_candidate(Wire::V1, hit, &share.hash);
                Some(share)
            }
            Err(NotSent::JobGone) => {
                self.metrics.pool_shares_found.inc();
                self.outcome(Wire::V1, ShareResult::Stale, ShareReason::JobGone);
                None
            }
            Err(NotSent::Duplicate) => {
                tracing::warn!(nonce = hit.header.nonce, "stratum: the same share came twice; sent once");
                None
            }
            Err(NotSent::BadShare) => {
                self.hardware_error(hit);
                None
            }
        }
    }

    /// A hit that fails the CPU's re-check of its share.
    pub(super) fn hardware_error(&mut self, hit: &Hit) {
        self.metrics.hardware_errors.with_label_values(&[hit.engine, &hit.device]).inc();
        self.stats.hw_errors.fetch_add(1, Ordering::Relaxed);
        tracing::error!(nonce = hit.header.nonce, "stratum: hit fails the share re-check; not sent");
    }

    /// Keeps a share for the next session (oldest dropped past the cap).
    pub(super) fn queue_v1(&mut self, share: Share) {
        self.metrics.pool_shares_queued.inc();
        if self.queue.len() >= self.opts.max_queued_shares.max(1) {
            self.queue.pop_front();
            self.outcome(Wire::V1, ShareResult::Stale, ShareReason::SessionChanged);
        }
        self.queue.push_back(share);
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
                self.outcome(Wire::V1, ShareResult::Stale, ShareReason::SessionChanged);
            }
        }
        Ok(())
    }
}

/// Writes one message; the flush pushes TLS records out at once. A pool
/// that stops reading gets `write_timeout_secs`, not the loop's timers; a
/// stop cuts a write that has waited [`STOP_WRITE_GRACE`].
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
