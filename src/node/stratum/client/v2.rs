//! One session with a Stratum V2 pool: Noise handshake against the URL's
//! authority key, SetupConnection, a standard channel (or an extended one
//! when the pool requires it), then jobs in and shares out. Shares go through
//! the same re-check, de-duplication and metrics as V1's (protocol "v2").
//!
//! A channel does not outlive its connection, so shares found while
//! disconnected from a V2 pool cannot be sent on the next one: they are
//! counted stale (`session_changed`), never sent to a channel that did not
//! issue their job.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mining_sv2::SubmitSharesStandard;
use tokio::sync::mpsc;

use super::{agent, transport, Client, End, PoolState, CONNECT_TIMEOUT, MAX_BAD_IN_A_ROW, TICK};
use super::{PrimaryProbe, STOP_DRAIN, STOP_WRITE_GRACE};
use crate::chain::Target;
use crate::node::stratum::v2::channel::{NotSent, Share, StandardJob};
use crate::node::stratum::v2::messages::{self, FromPool, BIP320_VERSION_MASK, REQUIRES_STANDARD_JOBS};
use crate::node::stratum::v2::noise::{self, HandshakeError, Incoming, Sender};
use crate::node::stratum::ShareReason;
use crate::sched::{Hit, PowJob};

/// The jobs metric's label of V2 work, and how a hit is known as a V2 one.
pub(super) const SOURCE: &str = "stratum2";
/// The handshake is two messages; a pool that takes longer is not answering.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The request id of our one channel per connection.
const OPEN_REQUEST: u32 = 1;
/// Extranonce bytes asked for on an extended channel: 2^32 coinbases per
/// job (× version rolls × 2^32 nonces).
const MIN_EXTRANONCE_SIZE: u16 = 4;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Stage {
    /// SetupConnection sent, waiting for its answer.
    Setup,
    /// OpenStandardMiningChannel sent.
    Opening,
    Mining,
}

pub(super) struct V2Conn {
    idx: usize,
    snd: Sender,
    stage: Stage,
    /// When the request of the current stage was sent.
    asked: Instant,
    next_seq: u32,
    /// Submits awaiting the pool's answer, by sequence number.
    pending: BTreeMap<u32, (Share, Instant)>,
    bad_in_a_row: u32,
    last_rx: Instant,
    write_timeout: Duration,
}

/// SubmitShares.Error codes of the spec, as share reasons.
fn reason_for(code: &str) -> ShareReason {
    match code {
        "stale-share" | "invalid-job-id" => ShareReason::StaleJob,
        "difficulty-too-low" => ShareReason::LowDifficulty,
        "duplicate-share" => ShareReason::Duplicate,
        "invalid-channel-id" => ShareReason::Unauthorized,
        "invalid-timestamp" | "invalid-version" => ShareReason::BadTimeOrVersion,
        other => ShareReason::from_pool_error(other),
    }
}

impl Client {
    pub(super) async fn session_v2(
        &mut self,
        idx: usize,
        hrx: &mut mpsc::Receiver<Hit>,
        on_backup_since: Option<Instant>,
    ) -> End {
        let (host, port) = (self.pools[idx].host.clone(), self.pools[idx].port);
        let authority = self.pools[idx].authority.expect("a V2 pool has an authority key");
        tracing::info!("stratum: connecting to {} pool {host}:{port} (Stratum V2)", PoolState::role(idx));
        let Some((rd, wr)) = transport::connect(&host, port, None, CONNECT_TIMEOUT).await else {
            return End::ConnectFailed;
        };
        let (tx, mut rx) = mpsc::channel(256);
        let (snd, reader) = match noise::handshake(rd, wr, authority, HANDSHAKE_TIMEOUT, tx).await {
            Ok(x) => x,
            Err(HandshakeError::Refused(why)) => {
                tracing::error!(
                    "stratum: REFUSED {host}:{port}: its certificate does not check against the authority key \
                     of the pool URL ({why}); nothing is sent to it"
                );
                return End::AuthFailed;
            }
            Err(HandshakeError::Timeout(t)) => {
                tracing::warn!("stratum: {host}:{port}: no Noise handshake answer within {t:?}");
                return End::Timeout;
            }
            Err(e) => {
                tracing::warn!("stratum: {host}:{port}: Noise handshake failed: {e}");
                return End::Dropped;
            }
        };
        tracing::info!("stratum: {host}:{port}: Noise channel up, certificate signed by the pool's authority key");
        let mut conn = V2Conn {
            idx,
            snd,
            stage: Stage::Setup,
            asked: Instant::now(),
            next_seq: 0,
            pending: BTreeMap::new(),
            bad_in_a_row: 0,
            last_rx: Instant::now(),
            write_timeout: Duration::from_secs(self.opts.write_timeout_secs.max(1)),
        };
        let end = self.drive_v2(&mut conn, &mut rx, hrx, on_backup_since).await;
        reader.abort();
        for _ in 0..conn.pending.len() {
            self.outcome_for("v2", "stale", ShareReason::NoAnswer);
        }
        // The channel dies with the connection: its work is worth nothing.
        if self.current_v2.take().is_some() {
            self.sched.withdraw();
        }
        end
    }

    /// Sends one message, within `write_timeout_secs` (a stop cuts it short).
    async fn send_v2(&self, conn: &mut V2Conn, msg: parsers_sv2::AnyMessage<'_>) -> Result<(), End> {
        let limit = if self.stopped() { STOP_WRITE_GRACE.max(Duration::from_millis(1)) } else { conn.write_timeout };
        match tokio::time::timeout(limit, conn.snd.send(msg)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!("stratum: cannot send to the pool: {e}");
                Err(End::Dropped)
            }
            Err(_) => {
                tracing::warn!("stratum: the pool did not take a message within {limit:?}");
                Err(if self.stopped() { End::Stopped } else { End::Timeout })
            }
        }
    }

    /// The easiest target taken from a pool (`[stratum] min_difficulty`).
    fn floor_target(&self) -> Target {
        Target::from_difficulty(self.opts.min_difficulty).unwrap_or(Target::DIFF1)
    }

    /// A pool's target, clamped to the floor (logged once per value, counted).
    fn clamp_target(&mut self, asked: Target) -> Target {
        let floor = self.floor_target();
        self.metrics.pool_difficulty.set(asked.difficulty());
        if asked > floor {
            self.metrics.pool_difficulty_clamped.inc();
            let d = asked.difficulty();
            if d != self.last_clamped {
                tracing::warn!(
                    "stratum: the pool set difficulty {d:e}, below the floor {:e} ([stratum] min_difficulty); \
                     mining at the floor",
                    self.opts.min_difficulty
                );
            }
            self.last_clamped = d;
            return floor;
        }
        asked
    }

    async fn drive_v2(
        &mut self,
        conn: &mut V2Conn,
        rx: &mut mpsc::Receiver<Incoming>,
        hrx: &mut mpsc::Receiver<Hit>,
        on_backup_since: Option<Instant>,
    ) -> End {
        let (host, port) = (self.pools[conn.idx].host.clone(), self.pools[conn.idx].port);
        let firmware = agent();
        let flags = if self.pools[conn.idx].v2_extended { 0 } else { REQUIRES_STANDARD_JOBS };
        if let Err(e) = self.send_v2(conn, messages::setup_connection(&host, port, "hashrig", &firmware, flags)).await {
            return e;
        }
        let mut tick = tokio::time::interval(TICK);
        let mut probe = PrimaryProbe::new();
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    match ev {
                        None | Some(Incoming::Closed(_)) => {
                            if let Some(Incoming::Closed(Some(e))) = &ev {
                                tracing::warn!("stratum: connection error: {e}");
                            }
                            tracing::warn!("stratum: {host}:{port} closed the connection");
                            return End::Dropped;
                        }
                        Some(Incoming::Bad(e)) => {
                            conn.last_rx = Instant::now();
                            conn.bad_in_a_row += 1;
                            tracing::warn!("stratum: bad message from the pool: {e}");
                        }
                        Some(Incoming::Message(m)) => {
                            conn.last_rx = Instant::now();
                            if let Err(end) = self.on_message_v2(conn, m).await {
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
                    if let Err(end) = self.hit_in_v2_session(h, conn).await {
                        return end;
                    }
                }
                _ = tick.tick() => {
                    if self.stopped() {
                        return self.finish_v2(conn, rx, hrx).await;
                    }
                    let limit = Duration::from_secs(self.opts.response_timeout_secs.max(1));
                    let late_submit = conn.pending.values().any(|(_, t)| t.elapsed() > limit);
                    if late_submit || (conn.stage != Stage::Mining && conn.asked.elapsed() > limit) {
                        tracing::warn!("stratum: no answer from the pool within {limit:?}");
                        return End::Timeout;
                    }
                    if conn.last_rx.elapsed() > Duration::from_secs(self.opts.idle_timeout_secs.max(1)) {
                        tracing::warn!("stratum: nothing from the pool for {}s", self.opts.idle_timeout_secs);
                        return End::Timeout;
                    }
                    self.roll_ntime_v2();
                    if let Some(since) = on_backup_since {
                        if probe.primary_back(since, &self.opts, &self.pools[0].host, self.pools[0].port).await {
                            return End::PrimaryBack;
                        }
                    }
                }
            }
        }
    }

    /// The stop: submit what the engines left, wait for the answers, for at
    /// most [`STOP_DRAIN`].
    async fn finish_v2(
        &mut self,
        conn: &mut V2Conn,
        rx: &mut mpsc::Receiver<Incoming>,
        hrx: &mut mpsc::Receiver<Hit>,
    ) -> End {
        let deadline = tokio::time::Instant::now() + STOP_DRAIN;
        let mut hits_open = true;
        while hits_open || !conn.pending.is_empty() {
            tokio::select! {
                h = hrx.recv(), if hits_open => match h {
                    Some(h) => {
                        if self.hit_in_v2_session(h, conn).await.is_err() {
                            break;
                        }
                    }
                    None => hits_open = false,
                },
                ev = rx.recv() => match ev {
                    Some(Incoming::Message(m)) => {
                        if self.on_message_v2(conn, m).await.is_err() {
                            break;
                        }
                    }
                    Some(Incoming::Bad(_)) => {}
                    None | Some(Incoming::Closed(_)) => break,
                },
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("stratum: stopping with shares unanswered after {STOP_DRAIN:?}");
                    break;
                }
            }
        }
        End::Stopped
    }

    async fn on_message_v2(&mut self, conn: &mut V2Conn, m: FromPool) -> Result<(), End> {
        let idx = conn.idx;
        // Messages for our channel, once it is open.
        let ch = (conn.stage == Stage::Mining).then_some(self.channel.channel_id);
        match m {
            FromPool::SetupSuccess { used_version, flags } if conn.stage == Stage::Setup => {
                conn.bad_in_a_row = 0;
                if flags & messages::REQUIRES_EXTENDED_CHANNELS != 0 {
                    self.pools[idx].v2_extended = true;
                }
                let extended = self.pools[idx].v2_extended;
                let mask =
                    if flags & messages::REQUIRES_FIXED_VERSION != 0 { 0 } else { BIP320_VERSION_MASK & self.mask };
                tracing::info!(
                    "stratum: Stratum V2 version {used_version}, flags {flags:#x}; {} channel; version rolling {}",
                    if extended { "extended" } else { "standard" },
                    if mask != 0 { format!("on, mask {mask:08x}") } else { "off".into() }
                );
                self.channel.version_mask = mask;
                let user = self.pools[idx].cfg.user.clone();
                let floor = self.floor_target().to_le_bytes();
                let rate = self.stats.rate(Duration::from_secs(60)).unwrap_or(0.0) as f32;
                let msg = if extended {
                    messages::open_extended_channel(OPEN_REQUEST, &user, rate, &floor, MIN_EXTRANONCE_SIZE)
                } else {
                    messages::open_standard_channel(OPEN_REQUEST, &user, rate, &floor)
                };
                let msg = msg.map_err(|e| {
                    tracing::error!("stratum: cannot open a channel: {e}");
                    End::AuthFailed
                })?;
                self.send_v2(conn, msg).await?;
                conn.stage = Stage::Opening;
                conn.asked = Instant::now();
            }
            FromPool::SetupError { code, .. }
                if code == "unsupported-feature-flags" && !self.pools[idx].v2_extended =>
            {
                // It would not promise standard jobs: extended it is.
                tracing::info!("stratum: the pool does not offer standard jobs only ({code})");
                self.pools[idx].v2_extended = true;
                return Err(End::Renegotiate);
            }
            FromPool::SetupError { flags, code } => {
                tracing::error!("stratum: the pool refused the connection setup: {code} (flags {flags:#x})");
                return Err(End::Protocol);
            }
            FromPool::ChannelOpened { request_id: OPEN_REQUEST, channel_id, target, extranonce_prefix }
                if conn.stage == Stage::Opening =>
            {
                conn.bad_in_a_row = 0;
                let target = self.clamp_target(target);
                let mask = self.channel.version_mask;
                self.channel.open(channel_id, target, mask);
                conn.stage = Stage::Mining;
                self.channel_pool = Some(idx);
                self.metrics.pool_connected.with_label_values(&[PoolState::role(idx)]).set(1);
                tracing::info!(
                    "stratum: standard channel {channel_id} open as {:?} on {}:{}, difficulty {}, extranonce prefix {}",
                    self.pools[idx].cfg.user,
                    self.pools[idx].host,
                    self.pools[idx].port,
                    target.difficulty(),
                    hex::encode(&extranonce_prefix)
                );
            }
            FromPool::ExtendedChannelOpened {
                request_id: OPEN_REQUEST,
                channel_id,
                target,
                extranonce_size,
                extranonce_prefix,
                group_channel_id,
            } if conn.stage == Stage::Opening => {
                conn.bad_in_a_row = 0;
                let size = extranonce_size as usize;
                if size == 0 || size + extranonce_prefix.len() > 32 {
                    tracing::error!(
                        "stratum: the pool gave an extranonce of {size} bytes after a {}-byte prefix; not an extranonce one can roll",
                        extranonce_prefix.len()
                    );
                    return Err(End::Protocol);
                }
                let target = self.clamp_target(target);
                let mask = self.channel.version_mask;
                self.channel.open_extended(channel_id, target, mask, extranonce_prefix.clone(), size, group_channel_id);
                conn.stage = Stage::Mining;
                self.channel_pool = Some(idx);
                self.metrics.pool_connected.with_label_values(&[PoolState::role(idx)]).set(1);
                tracing::info!(
                    "stratum: extended channel {channel_id} open as {:?} on {}:{}, difficulty {}, extranonce prefix {}, {size} extranonce bytes to roll",
                    self.pools[idx].cfg.user,
                    self.pools[idx].host,
                    self.pools[idx].port,
                    target.difficulty(),
                    hex::encode(&extranonce_prefix)
                );
            }
            FromPool::SetExtranoncePrefix { channel_id, extranonce_prefix } if ch == Some(channel_id) => {
                conn.bad_in_a_row = 0;
                if extranonce_prefix.len() + self.channel.extranonce_size > 32 {
                    tracing::warn!("stratum: ignored an extranonce prefix of {} bytes", extranonce_prefix.len());
                } else {
                    tracing::info!("stratum: extranonce prefix {} from the next job", hex::encode(&extranonce_prefix));
                    self.channel.extranonce_prefix = extranonce_prefix;
                }
            }
            FromPool::ChannelError { code, .. } => {
                tracing::error!("stratum: the pool refused the channel for {:?}: {code}", self.pools[idx].cfg.user);
                return Err(End::AuthFailed);
            }
            FromPool::NewJob { channel_id, job_id, min_ntime, version, work }
                if ch.is_some() && self.channel.addresses(channel_id) =>
            {
                conn.bad_in_a_row = 0;
                tracing::debug!(job_id, future = min_ntime.is_none(), "stratum: new job");
                if let Some(job) = self.channel.on_new_job(job_id, min_ntime, version, work) {
                    let time = job.template.time;
                    self.publish_v2(&job, time);
                }
            }
            FromPool::PrevHash { channel_id, job_id, prev_hash, min_ntime, nbits }
                if ch.is_some() && self.channel.addresses(channel_id) =>
            {
                conn.bad_in_a_row = 0;
                match self.channel.on_prev_hash(job_id, prev_hash, min_ntime, nbits) {
                    Some(job) => {
                        tracing::debug!(job_id, "stratum: new prevhash");
                        self.publish_v2(&job, job.template.time);
                    }
                    None => {
                        tracing::warn!("stratum: SetNewPrevHash names job {job_id}, which the pool never sent");
                        self.current_v2 = None;
                        self.sched.withdraw();
                    }
                }
            }
            FromPool::SetTarget { channel_id, max_target } if ch == Some(channel_id) => {
                conn.bad_in_a_row = 0;
                let t = self.clamp_target(max_target);
                if t != self.channel.target {
                    tracing::info!("stratum: difficulty {} from now on", t.difficulty());
                    self.channel.target = t;
                    // The engines report hits for the new target from now.
                    if let Some((job, _, time)) = self.current_v2.clone() {
                        if self.channel.is_live(&job) {
                            self.publish_v2(&job, time);
                        }
                    }
                }
            }
            FromPool::SubmitSuccess { channel_id, last_sequence_number, accepted } if ch == Some(channel_id) => {
                conn.bad_in_a_row = 0;
                // One success may acknowledge a batch: every submit up to
                // its sequence number that was not rejected on its own.
                let done: Vec<u32> = conn.pending.range(..=last_sequence_number).map(|(s, _)| *s).collect();
                if done.len() != accepted as usize {
                    tracing::debug!(accepted, answered = done.len(), "stratum: acknowledged count differs");
                }
                for seq in done {
                    let (share, t) = conn.pending.remove(&seq).expect("listed above");
                    self.metrics.pool_submit_seconds.observe(t.elapsed().as_secs_f64());
                    self.outcome_for("v2", "accepted", ShareReason::None);
                    tracing::debug!(job = share.job_id, nonce = share.nonce, "stratum: share accepted");
                }
            }
            FromPool::SubmitError { channel_id, sequence_number, code } if ch == Some(channel_id) => {
                conn.bad_in_a_row = 0;
                if let Some((share, t)) = conn.pending.remove(&sequence_number) {
                    self.metrics.pool_submit_seconds.observe(t.elapsed().as_secs_f64());
                    let reason = reason_for(&code);
                    self.outcome_for("v2", if reason.is_stale() { "stale" } else { "rejected" }, reason);
                    tracing::warn!(job = share.job_id, nonce = share.nonce, "stratum: share rejected: {code}");
                } else {
                    tracing::debug!(sequence_number, "stratum: rejection of an unknown submit");
                }
            }
            FromPool::Reconnect { host, port } => {
                let pool = &mut self.pools[idx];
                let same_host = host.is_empty() || host.eq_ignore_ascii_case(&pool.host);
                if !same_host && !self.opts.allow_foreign_reconnect {
                    tracing::warn!("stratum: ignored Reconnect to another host ({host:?})");
                    return Ok(());
                }
                if !host.is_empty() {
                    pool.host = host;
                }
                if port != 0 {
                    pool.port = port;
                }
                return Err(End::Reconnect(Duration::ZERO));
            }
            FromPool::CloseChannel { channel_id, reason } if ch == Some(channel_id) => {
                tracing::warn!("stratum: the pool closed channel {channel_id}: {reason}");
                return Err(End::Protocol);
            }
            FromPool::Ignored(what) => tracing::debug!("stratum: ignoring {what}"),
            other => {
                conn.bad_in_a_row += 1;
                tracing::warn!("stratum: unexpected message from the pool: {other:?}");
            }
        }
        Ok(())
    }

    fn publish_v2(&mut self, job: &std::sync::Arc<StandardJob>, time: u32) {
        if self.stopped() {
            return;
        }
        // A V1 job still published (a failover) is not ours any more.
        self.current = None;
        let mut template = job.template.clone();
        template.time = time;
        if template.version_mask != 0 {
            self.publishes = self.publishes.wrapping_add(1);
            let m = template.version_mask;
            let start = (self.publishes << m.trailing_zeros()) & m;
            template.version = (template.version as u32 ^ start) as i32;
        }
        let seq = self.sched.publish(PowJob {
            id: job.job_id.to_string(),
            template,
            share_target: job.target.min(self.channel.target),
            height: None,
            source: SOURCE,
        });
        self.channel.published(seq, job);
        self.current_v2 = Some((job.clone(), Instant::now(), time));
    }

    /// Moves ntime forward with the clock, as for V1 jobs.
    fn roll_ntime_v2(&mut self) {
        let every = self.opts.ntime_roll_secs;
        let Some((job, last, time)) = self.current_v2.clone() else { return };
        if every == 0 || last.elapsed() < Duration::from_secs(every) || !self.channel.is_live(&job) {
            return;
        }
        let now_time = time.saturating_add(last.elapsed().as_secs() as u32);
        if now_time > time {
            self.publish_v2(&job, now_time);
        }
    }

    /// A hit while connected to a V2 pool: a V1 job's (left from before a
    /// failover) goes the V1 way, as found while disconnected.
    async fn hit_in_v2_session(&mut self, h: Hit, conn: &mut V2Conn) -> Result<(), End> {
        if h.job.job.source == SOURCE {
            self.on_hit_v2(h, Some(conn)).await
        } else {
            self.on_hit(h, None).await
        }
    }

    pub(super) async fn on_hit_v2(&mut self, hit: Hit, conn: Option<&mut V2Conn>) -> Result<(), End> {
        let share = match self.channel.share_for_hit(&hit) {
            Ok(s) => s,
            Err(NotSent::JobGone) => {
                self.metrics.pool_shares_found.inc();
                self.outcome_for("v2", "stale", ShareReason::JobGone);
                return Ok(());
            }
            Err(NotSent::Duplicate) => {
                tracing::warn!(nonce = hit.header.nonce, "stratum: the same share came twice; sent once");
                return Ok(());
            }
            Err(NotSent::BelowTarget) => {
                tracing::debug!(nonce = hit.header.nonce, "stratum: hit below the pool's new target; not a share");
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
            Some(conn) if conn.stage == Stage::Mining && self.channel.share_is_live(&share) => {
                let seq = conn.next_seq;
                conn.next_seq = conn.next_seq.wrapping_add(1);
                let en = share.extranonce.clone();
                let (channel_id, job_id, nonce, ntime, version) =
                    (share.channel_id, share.job_id, share.nonce, share.ntime, share.version);
                conn.pending.insert(seq, (share, Instant::now()));
                let msg = match &en {
                    Some(en) => {
                        messages::submit_extended(channel_id, seq, job_id, nonce, ntime, version, en).map_err(|e| {
                            tracing::error!("stratum: cannot submit: {e}");
                            End::Protocol
                        })?
                    }
                    None => messages::submit_standard(SubmitSharesStandard {
                        channel_id,
                        sequence_number: seq,
                        job_id,
                        nonce,
                        ntime,
                        version,
                    }),
                };
                self.send_v2(conn, msg).await
            }
            _ => {
                // Found while disconnected: the next connection opens a new
                // channel, which never issued this share's job.
                self.metrics.pool_shares_queued.inc();
                self.outcome_for("v2", "stale", ShareReason::SessionChanged);
                Ok(())
            }
        }
    }
}
