//! One session with a Stratum V2 pool: Noise handshake against the URL's
//! authority key, SetupConnection, a standard channel (or an extended one
//! when the pool requires it) opened with the measured hashrate, then jobs
//! in and shares out. Shares go through the same re-check, de-duplication
//! and metrics as V1's (protocol "v2"). The pool's messages are handled in
//! `v2_messages`.
//!
//! Acknowledgements: a V2 pool answers shares in batches (one
//! SubmitShares.Success for every N shares, `last_sequence_number` and
//! `new_submits_accepted_count`), so a share is pending until a success
//! covers it or an error names it, and liveness is judged on the connection
//! (`idle_timeout_secs`), never on a share's wait. What is still pending
//! when the session ends is counted "unanswered".
//!
//! A channel does not outlive its connection, so shares found while
//! disconnected from a V2 pool cannot be sent on the next one: they are
//! counted stale (`session_changed`), never sent to a channel that did not
//! issue their job.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mining_sv2::SubmitSharesStandard;
use tokio::sync::mpsc;

use super::session::{Liveness, Session};
use super::shares::{ShareResult, Wire};
use super::{agent, rate_moved, Client, End, PoolState, Protocol, CONNECT_TIMEOUT, RATE_CHECK, STOP_WRITE_GRACE};
use crate::chain::Target;
use crate::node::stratum::transport;
use crate::node::stratum::v2::channel::{NotSent, Share, StandardJob};
use crate::node::stratum::v2::messages::{self, REQUIRES_STANDARD_JOBS};
use crate::node::stratum::v2::noise::{self, HandshakeError, Incoming, Sender};
use crate::node::stratum::ShareReason;
use crate::sched::Hit;

/// The jobs metric's label of V2 work, and how a hit is known as a V2 one.
pub(super) const SOURCE: &str = "stratum2";
/// The handshake is two messages; a pool that takes longer is not answering.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Stage {
    /// SetupConnection sent, waiting for its answer.
    Setup,
    /// OpenStandardMiningChannel (or OpenExtendedMiningChannel) sent.
    Opening,
    Mining,
}

pub(super) struct V2Conn {
    pub(super) idx: usize,
    snd: Sender,
    pub(super) stage: Stage,
    /// When the request of the current stage was sent.
    pub(super) asked: Instant,
    next_seq: u32,
    /// Submits awaiting the pool's word, by sequence number.
    pending: BTreeMap<u32, (Share, Instant)>,
    pub(super) live: Liveness,
    write_timeout: Duration,
    /// The nominal hash rate the pool was last told (opening or
    /// UpdateChannel), and when the measured rate was last compared.
    pub(super) announced: f32,
    rate_checked: Instant,
}

impl Session for V2Conn {
    type Event = Incoming;

    fn liveness(&mut self) -> &mut Liveness {
        &mut self.live
    }

    fn overdue(&self, limit: Duration) -> bool {
        self.stage != Stage::Mining && self.asked.elapsed() > limit
    }

    fn awaiting_answers(&self) -> bool {
        !self.pending.is_empty()
    }

    async fn on_event(client: &mut Client, conn: &mut V2Conn, ev: Option<Incoming>) -> Result<(), End> {
        match ev {
            None | Some(Incoming::Closed(_)) => {
                if let Some(Incoming::Closed(Some(e))) = &ev {
                    tracing::warn!("stratum: connection error: {e}");
                }
                let pool = &client.pools[conn.idx];
                tracing::warn!("stratum: {}:{} closed the connection", pool.host, pool.port);
                Err(End::Dropped)
            }
            Some(Incoming::Bad(e)) => {
                conn.live.last_rx = Instant::now();
                conn.live.bad_in_a_row += 1;
                tracing::warn!("stratum: bad message from the pool: {e}");
                Ok(())
            }
            Some(Incoming::Message(m)) => {
                conn.live.last_rx = Instant::now();
                client.on_message_v2(conn, m).await
            }
        }
    }

    async fn on_hit(client: &mut Client, conn: &mut V2Conn, hit: Hit) -> Result<(), End> {
        // A V1 job's hit (left from before a failover) waits for its pool.
        if hit.job.job.source != SOURCE {
            client.hit_while_disconnected(hit);
            return Ok(());
        }
        let Some(share) = client.share_v2(&hit) else { return Ok(()) };
        if conn.stage == Stage::Mining && client.channel.share_is_live(&share) {
            client.submit_v2(conn, share).await
        } else {
            client.metrics.pool_shares_queued.inc();
            client.outcome(Wire::V2, ShareResult::Stale, ShareReason::SessionChanged);
            Ok(())
        }
    }

    async fn on_tick(client: &mut Client, conn: &mut V2Conn) -> Result<(), End> {
        client.roll_ntime_v2();
        let due = conn.announced <= 0.0 || conn.rate_checked.elapsed() >= RATE_CHECK;
        if conn.stage == Stage::Mining && due {
            conn.rate_checked = Instant::now();
            client.announce_rate(conn).await?;
        }
        Ok(())
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
        let Protocol::V2 { authority, extended } = self.pools[idx].protocol else { return End::Protocol };
        tracing::info!("stratum: connecting to {} pool {host}:{port} (Stratum V2)", PoolState::role(idx));
        let Some((rd, wr)) = transport::connect(&host, port, None, CONNECT_TIMEOUT).await else {
            return End::ConnectFailed;
        };
        let (tx, mut rx) = mpsc::channel(256);
        let (snd, reader) = match noise::handshake(rd, wr, authority, HANDSHAKE_TIMEOUT, tx).await {
            Ok(x) => x,
            Err(e) => return handshake_failed(&host, port, e),
        };
        tracing::info!("stratum: {host}:{port}: Noise channel up, certificate signed by the pool's authority key");
        let mut conn = V2Conn {
            idx,
            snd,
            stage: Stage::Setup,
            asked: Instant::now(),
            next_seq: 0,
            pending: BTreeMap::new(),
            live: Liveness::new(),
            write_timeout: Duration::from_secs(self.opts.write_timeout_secs.max(1)),
            announced: 0.0,
            rate_checked: Instant::now(),
        };
        let flags = if extended { 0 } else { REQUIRES_STANDARD_JOBS };
        let firmware = agent();
        let setup = messages::setup_connection(&host, port, "hashrig", &firmware, flags);
        let end = match self.send_v2(&mut conn, setup).await {
            Ok(()) => self.drive(&mut conn, &mut rx, hrx, on_backup_since).await,
            Err(end) => end,
        };
        reader.abort();
        // Neither accepted nor refused: the pool's batch was still open.
        let unanswered = conn.pending.len() as u64;
        if unanswered > 0 {
            tracing::info!("stratum: {unanswered} share(s) sent were not acknowledged before the session ended");
        }
        self.outcomes(Wire::V2, ShareResult::Unanswered, ShareReason::NoAnswer, unanswered);
        // The channel dies with the connection: its work is worth nothing.
        if self.current_v2.take().is_some() {
            self.sched.withdraw();
        }
        end
    }

    /// Sends one message, within `write_timeout_secs` (a stop cuts it short).
    pub(super) async fn send_v2(&self, conn: &mut V2Conn, msg: parsers_sv2::AnyMessage<'_>) -> Result<(), End> {
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
    pub(super) fn floor_target(&self) -> Target {
        Target::from_difficulty(self.opts.min_difficulty).unwrap_or(Target::DIFF1)
    }

    /// A pool's target, clamped to the floor.
    pub(super) fn clamp_target(&mut self, asked: Target) -> Target {
        if self.below_floor(asked.difficulty()) {
            self.floor_target()
        } else {
            asked
        }
    }

    /// UpdateChannel when the measured rate moved by more than 2x from what
    /// the pool was last told (or it was told nothing yet).
    async fn announce_rate(&mut self, conn: &mut V2Conn) -> Result<(), End> {
        let Some(rate) = self.measured_rate() else { return Ok(()) };
        if !rate_moved(conn.announced as f64, rate) {
            return Ok(());
        }
        let floor = self.floor_target().to_le_bytes();
        let channel_id = self.channel.channel_id;
        tracing::info!("stratum: channel {channel_id}: nominal hash rate {rate:.4e} H/s (UpdateChannel)");
        conn.announced = rate as f32;
        self.send_v2(conn, messages::update_channel(channel_id, rate as f32, &floor)).await
    }

    pub(super) fn publish_v2(&mut self, job: &Arc<StandardJob>, time: u32) {
        if self.stopped() {
            return;
        }
        // A V1 job still published (a failover) is not ours any more.
        self.current = None;
        let mut template = job.template.clone();
        template.time = time;
        let target = job.target.min(self.channel.target);
        let seq = self.publish_work(job.job_id.to_string(), template, target, SOURCE);
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

    /// A V2 hit as a share: re-checked, de-duplicated, counted as found (and
    /// as a block candidate); `None` when it is not one to send.
    pub(super) fn share_v2(&mut self, hit: &Hit) -> Option<Share> {
        match self.channel.share_for_hit(hit) {
            Ok(share) => {
                self.metrics.pool_shares_found.inc();
                self.note_block_candidate(Wire::V2, hit, &share.hash);
                Some(share)
            }
            Err(NotSent::JobGone) => {
                self.metrics.pool_shares_found.inc();
                self.outcome(Wire::V2, ShareResult::Stale, ShareReason::JobGone);
                None
            }
            Err(NotSent::Duplicate) => {
                tracing::warn!(nonce = hit.header.nonce, "stratum: the same share came twice; sent once");
                None
            }
            Err(NotSent::BelowTarget) => {
                tracing::debug!(nonce = hit.header.nonce, "stratum: hit below the pool's new target; not a share");
                None
            }
            Err(NotSent::BadShare) => {
                self.hardware_error(hit);
                None
            }
        }
    }

    async fn submit_v2(&mut self, conn: &mut V2Conn, share: Share) -> Result<(), End> {
        let seq = conn.next_seq;
        conn.next_seq = conn.next_seq.wrapping_add(1);
        let (channel_id, job_id, nonce, ntime, version) =
            (share.channel_id, share.job_id, share.nonce, share.ntime, share.version);
        let en = share.extranonce.clone();
        let msg = match &en {
            Some(en) => messages::submit_extended(channel_id, seq, job_id, nonce, ntime, version, en).map_err(|e| {
                tracing::error!("stratum: cannot submit: {e}");
                End::Protocol
            })?,
            None => messages::submit_standard(SubmitSharesStandard {
                channel_id,
                sequence_number: seq,
                job_id,
                nonce,
                ntime,
                version,
            }),
        };
        conn.pending.insert(seq, (share, Instant::now()));
        self.send_v2(conn, msg).await
    }

    /// SubmitShares.Success: every pending share up to `last_seq` is
    /// answered; the pool accepted `accepted` of them (the others it
    /// refused with their own SubmitShares.Error, already counted). A
    /// difference is counted as the pool says: `accepted` accepted, any
    /// covered share beyond that unanswered.
    pub(super) fn on_acknowledged(&mut self, conn: &mut V2Conn, last_seq: u32, accepted: u32) {
        let covered: Vec<u32> = conn.pending.range(..=last_seq).map(|(s, _)| *s).collect();
        for seq in &covered {
            if let Some((share, t)) = conn.pending.remove(seq) {
                self.metrics.pool_submit_seconds.observe(t.elapsed().as_secs_f64());
                tracing::debug!(job = share.job_id, nonce = share.nonce, seq, "stratum: share acknowledged");
            }
        }
        let (n, accepted) = (covered.len() as u64, accepted as u64);
        if n != accepted {
            tracing::debug!(
                accepted,
                covered = n,
                "stratum: the pool's accepted count differs from the shares covered"
            );
        }
        self.outcomes(Wire::V2, ShareResult::Accepted, ShareReason::None, accepted);
        self.outcomes(Wire::V2, ShareResult::Unanswered, ShareReason::NoAnswer, n.saturating_sub(accepted));
    }

    /// SubmitShares.Error for one share.
    pub(super) fn on_share_refused(&mut self, conn: &mut V2Conn, seq: u32, code: &str) {
        let Some((share, t)) = conn.pending.remove(&seq) else {
            tracing::debug!(seq, "stratum: rejection of an unknown submit");
            return;
        };
        self.metrics.pool_submit_seconds.observe(t.elapsed().as_secs_f64());
        let reason = reason_for(code);
        self.outcome(Wire::V2, ShareResult::refused(reason), reason);
        tracing::warn!(job = share.job_id, nonce = share.nonce, "stratum: share rejected: {code}");
    }
}

fn handshake_failed(host: &str, port: u16, e: HandshakeError) -> End {
    match e {
        HandshakeError::Refused(why) => {
            tracing::error!(
                "stratum: REFUSED {host}:{port}: its certificate does not check against the authority key \
                 of the pool URL ({why}); nothing is sent to it"
            );
            End::AuthFailed
        }
        HandshakeError::Timeout(t) => {
            tracing::warn!("stratum: {host}:{port}: no Noise handshake answer within {t:?}");
            End::Timeout
        }
        e => {
            tracing::warn!("stratum: {host}:{port}: Noise handshake failed: {e}");
            End::Dropped
        }
    }
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
