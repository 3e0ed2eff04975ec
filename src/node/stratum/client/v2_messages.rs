//! What the client does with each Stratum V2 pool message: the setup and
//! the channel's opening (with the measured hashrate), jobs and targets,
//! share acknowledgements, the pool's requests.

use std::time::Instant;

use super::v2::{Stage, V2Conn};
use super::{Client, End, PoolState, Protocol};
use crate::chain::Target;
use crate::node::stratum::v2::channel::JobWork;
use crate::node::stratum::v2::messages::{self, FromPool, BIP320_VERSION_MASK};

/// The request id of our one channel per connection.
const OPEN_REQUEST: u32 = 1;
/// Extranonce bytes asked for on an extended channel: 2^32 coinbases per
/// job (× version rolls × 2^32 nonces).
const MIN_EXTRANONCE_SIZE: u16 = 4;

/// A channel the pool opened for us.
struct Opened {
    channel_id: u32,
    target: Target,
    extranonce_prefix: Vec<u8>,
    /// Extended channels: the bytes we roll, and the group, if any.
    extended: Option<(usize, u32)>,
}

impl Client {
    pub(super) async fn on_message_v2(&mut self, conn: &mut V2Conn, m: FromPool) -> Result<(), End> {
        // Messages for our channel, once it is open.
        let ch = (conn.stage == Stage::Mining).then_some(self.channel.channel_id);
        let opening = conn.stage == Stage::Opening;
        match m {
            FromPool::SetupSuccess { used_version, flags } if conn.stage == Stage::Setup => {
                self.on_setup(conn, used_version, flags).await?
            }
            FromPool::SetupError { flags, code } => return Err(self.on_setup_refused(conn.idx, flags, &code)),
            FromPool::ChannelOpened { request_id: OPEN_REQUEST, channel_id, target, extranonce_prefix } if opening => {
                self.on_opened(conn, Opened { channel_id, target, extranonce_prefix, extended: None })?
            }
            FromPool::ExtendedChannelOpened {
                request_id: OPEN_REQUEST,
                channel_id,
                target,
                extranonce_size,
                extranonce_prefix,
                group_channel_id,
            } if opening => {
                let extended = Some((extranonce_size as usize, group_channel_id));
                self.on_opened(conn, Opened { channel_id, target, extranonce_prefix, extended })?
            }
            FromPool::ChannelError { code, .. } => {
                tracing::error!(
                    "stratum: the pool refused the channel for {:?}: {code}",
                    self.pools[conn.idx].cfg.user
                );
                return Err(End::AuthFailed);
            }
            FromPool::SetExtranoncePrefix { channel_id, extranonce_prefix } if ch == Some(channel_id) => {
                self.on_extranonce_prefix(extranonce_prefix)
            }
            FromPool::NewJob { channel_id, job_id, min_ntime, version, work }
                if ch.is_some() && self.channel.addresses(channel_id) =>
            {
                self.on_new_job(job_id, min_ntime, version, work)
            }
            FromPool::PrevHash { channel_id, job_id, prev_hash, min_ntime, nbits }
                if ch.is_some() && self.channel.addresses(channel_id) =>
            {
                self.on_prev_hash(job_id, prev_hash, min_ntime, nbits)
            }
            FromPool::SetTarget { channel_id, max_target } if ch == Some(channel_id) => self.on_set_target(max_target),
            FromPool::SubmitSuccess { channel_id, last_sequence_number, accepted } if ch == Some(channel_id) => {
                self.on_acknowledged(conn, last_sequence_number, accepted)
            }
            FromPool::SubmitError { channel_id, sequence_number, code } if ch == Some(channel_id) => {
                self.on_share_refused(conn, sequence_number, &code)
            }
            FromPool::UpdateChannelError { channel_id, code } if ch == Some(channel_id) => {
                tracing::warn!("stratum: the pool refused the channel's new nominal hash rate: {code}")
            }
            FromPool::Reconnect { host, port } => {
                return self.on_reconnect(conn.idx, Some(host).filter(|h| !h.is_empty()), Some(port), 0);
            }
            FromPool::CloseChannel { channel_id, reason } if ch == Some(channel_id) => {
                tracing::warn!("stratum: the pool closed channel {channel_id}: {reason}");
                return Err(End::Protocol);
            }
            FromPool::Ignored(what) => {
                tracing::debug!("stratum: ignoring {what}");
                return Ok(());
            }
            other => {
                conn.live.bad_in_a_row += 1;
                tracing::warn!("stratum: unexpected message from the pool: {other:?}");
                return Ok(());
            }
        }
        conn.live.bad_in_a_row = 0;
        Ok(())
    }

    /// SetupConnection.Success: open the channel, standard unless the pool
    /// requires extended ones, with the measured hashrate.
    async fn on_setup(&mut self, conn: &mut V2Conn, used_version: u16, flags: u32) -> Result<(), End> {
        let idx = conn.idx;
        let required = flags & messages::REQUIRES_EXTENDED_CHANNELS != 0;
        let extended = match &mut self.pools[idx].protocol {
            Protocol::V2 { extended, .. } => {
                *extended |= required;
                *extended
            }
            Protocol::V1 { .. } => required,
        };
        let mask = if flags & messages::REQUIRES_FIXED_VERSION != 0 { 0 } else { BIP320_VERSION_MASK & self.mask };
        tracing::info!(
            "stratum: Stratum V2 version {used_version}, flags {flags:#x}; {} channel; version rolling {}",
            if extended { "extended" } else { "standard" },
            if mask != 0 { format!("on, mask {mask:08x}") } else { "off".into() }
        );
        self.channel.version_mask = mask;
        let user = self.pools[idx].cfg.user.clone();
        let floor = self.floor_target().to_le_bytes();
        // Nothing measured nor timed (no CPU engine, the first connection
        // of the run): 0, and UpdateChannel follows the first measurement.
        let rate = self.rate_to_announce().unwrap_or(0.0) as f32;
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
        tracing::info!("stratum: opening a channel with nominal hash rate {rate:.4e} H/s");
        conn.announced = rate;
        conn.stage = Stage::Opening;
        conn.asked = Instant::now();
        Ok(())
    }

    /// SetupConnection.Error: an `unsupported-feature-flags` refusal of
    /// standard jobs means the pool wants extended channels (reconnect for
    /// one); anything else ends the session.
    fn on_setup_refused(&mut self, idx: usize, flags: u32, code: &str) -> End {
        if let Protocol::V2 { extended: extended @ false, .. } = &mut self.pools[idx].protocol {
            if code == "unsupported-feature-flags" {
                tracing::info!("stratum: the pool does not offer standard jobs only ({code})");
                *extended = true;
                return End::Renegotiate;
            }
        }
        tracing::error!("stratum: the pool refused the connection setup: {code} (flags {flags:#x})");
        End::Protocol
    }

    fn on_opened(&mut self, conn: &mut V2Conn, o: Opened) -> Result<(), End> {
        let idx = conn.idx;
        let prefix_len = o.extranonce_prefix.len();
        if let Some((size, _)) = o.extended {
            if size == 0 || size + prefix_len > 32 {
                tracing::error!(
                    "stratum: the pool gave an extranonce of {size} bytes after a {prefix_len}-byte prefix; \
                     not an extranonce one can roll"
                );
                return Err(End::Protocol);
            }
        }
        let target = self.clamp_target(o.target);
        let mask = self.channel.version_mask;
        let prefix = hex::encode(&o.extranonce_prefix);
        let (kind, rolled) = match o.extended {
            None => {
                self.channel.open(o.channel_id, target, mask);
                ("standard", String::new())
            }
            Some((size, group)) => {
                self.channel.open_extended(o.channel_id, target, mask, o.extranonce_prefix, size, group);
                ("extended", format!(", {size} extranonce bytes to roll"))
            }
        };
        conn.stage = Stage::Mining;
        self.channel_pool = Some(idx);
        self.metrics.pool_connected.with_label_values(&[PoolState::role(idx)]).set(1);
        let pool = &self.pools[idx];
        tracing::info!(
            "stratum: {kind} channel {} open as {:?} on {}:{}, difficulty {}, extranonce prefix {prefix}{rolled}",
            o.channel_id,
            pool.cfg.user,
            pool.host,
            pool.port,
            target.difficulty(),
        );
        Ok(())
    }

    fn on_extranonce_prefix(&mut self, prefix: Vec<u8>) {
        if prefix.len() + self.channel.extranonce_size > 32 {
            tracing::warn!("stratum: ignored an extranonce prefix of {} bytes", prefix.len());
        } else {
            tracing::info!("stratum: extranonce prefix {} from the next job", hex::encode(&prefix));
            self.channel.extranonce_prefix = prefix;
        }
    }

    fn on_new_job(&mut self, job_id: u32, min_ntime: Option<u32>, version: u32, work: JobWork) {
        tracing::debug!(job_id, future = min_ntime.is_none(), "stratum: new job");
        if let Some(job) = self.channel.on_new_job(job_id, min_ntime, version, work) {
            let time = job.template.time;
            self.publish_v2(&job, time);
        }
    }

    /// SetNewPrevHash: a new block to build on. Its nBits is the network
    /// target that makes a share a block candidate.
    fn on_prev_hash(&mut self, job_id: u32, prev_hash: [u8; 32], min_ntime: u32, nbits: u32) {
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

    fn on_set_target(&mut self, max_target: Target) {
        let t = self.clamp_target(max_target);
        if t == self.channel.target {
            return;
        }
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
