//! The Stratum client: one session at a time to one pool, reconnects with
//! backoff, failover to the next pool and back to the primary after a
//! hold-down. Runs on a single-threaded tokio runtime; hits from the engines
//! arrive through a bridge thread.
//!
//! - this file: the pools, the failover loop, the stop, and what both
//!   protocols share (publishing work, the difficulty floor, the rate);
//! - `session`: the event loop both sessions run (messages, hits, the tick,
//!   the drain at the stop), written once over the [`session::Session`] trait;
//! - `v1`, `v2`, `v2_messages`: the two protocols' sessions;
//! - `shares`: how each share's end is counted; `probe`: the primary probe.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use tokio::sync::mpsc;

use crate::chain::{Target, WorkTemplate};
use crate::metrics::Metrics;
use crate::sched::{Hit, PowJob, PowScheduler, Stats};

use super::jobs::{JobBook, PoolJob, Share};
use super::v2::channel::{ChannelBook, StandardJob};
use super::{parse_url, proto, tls, ClientEnv, PoolConfig, RateSource, ShareReason, StratumConfig, StratumOptions};
use shares::{ShareResult, Tally, Wire};

mod probe;
mod session;
mod shares;
mod v1;
mod v2;
mod v2_messages;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(250);
/// Bad messages in a row before the connection is given up as broken.
const MAX_BAD_IN_A_ROW: u32 = 50;
/// Longest reconnect wait a pool may ask for that is honoured.
const MAX_RECONNECT_WAIT: Duration = Duration::from_secs(600);
/// At the stop, a write the pool has not taken for this long is abandoned
/// (the stop does not wait out the whole write timeout).
const STOP_WRITE_GRACE: Duration = Duration::from_millis(500);
/// At the stop: time to submit the hits the engines left and hear the
/// pool's answers (a V2 pool's last batch acknowledgement included).
const STOP_DRAIN: Duration = Duration::from_secs(5);
/// A session that lasted this long resets the count of reconnect requests.
const SETTLED_SESSION: Duration = Duration::from_secs(60);
/// Hits between the engines' queue and the connection loop.
const HIT_BRIDGE: usize = 1024;
/// How often the measured rate is compared with what the pool was told.
const RATE_CHECK: Duration = Duration::from_secs(5);

fn agent() -> String {
    format!("hashrig/{}", env!("CARGO_PKG_VERSION"))
}

/// A pool's protocol, and what the client remembers about it between
/// sessions.
enum Protocol {
    V1 {
        /// Set for stratum+ssl:// pools.
        tls: Option<Arc<rustls::ClientConfig>>,
        /// mining.notify subscription id from the last subscribe, for resuming.
        session_id: Option<String>,
        /// The pool dropped us after mining.configure: never send it again.
        no_configure: bool,
        /// The pool refused mining.suggest_difficulty: never send it again.
        no_suggest: bool,
    },
    V2 {
        /// The key its certificate must be signed with (from the URL).
        authority: [u8; 32],
        /// The pool takes extended channels only (learned from its
        /// SetupConnection answer): open one from the next connection on.
        extended: bool,
    },
}

struct PoolState {
    cfg: PoolConfig,
    host: String,
    port: u16,
    protocol: Protocol,
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

/// Where the failover loop stands between sessions.
struct Failover {
    idx: usize,
    failures: u32,
    on_backup_since: Option<Instant>,
    /// Reconnect requests in a row from sessions that did not last: each
    /// waits at least the backoff of that many failures, so a pool (or a
    /// man in the middle) cannot make us reconnect in a tight loop.
    asked_in_a_row: u32,
}

pub struct Client {
    pools: Vec<PoolState>,
    opts: StratumOptions,
    mask: u32,
    sched: Arc<PowScheduler>,
    stats: Arc<Stats>,
    metrics: Arc<Metrics>,
    rate: RateSource,
    /// The last non-zero rate measured: what a channel opened while the
    /// engines idle (between sessions) is told.
    last_rate: Option<f64>,
    stop: Arc<AtomicBool>,
    book: JobBook,
    /// The pool the book's jobs came from.
    book_pool: Option<usize>,
    queue: VecDeque<Share>,
    next_id: u64,
    /// The V1 job being mined, when it was last published and the ntime used.
    current: Option<(Arc<PoolJob>, Instant, u32)>,
    tally: Tally,
    publishes: u32,
    /// The last difficulty below the floor a pool asked for (logged once).
    last_clamped: f64,
    /// The channel of the current (or last) Stratum V2 session.
    channel: ChannelBook,
    /// The pool that channel is on.
    channel_pool: Option<usize>,
    /// The V2 job being mined: when it was published and the ntime used.
    current_v2: Option<(Arc<StandardJob>, Instant, u32)>,
}

impl Client {
    pub fn new(cfg: StratumConfig, env: ClientEnv) -> Client {
        let mask = if cfg.options.version_rolling { cfg.mask().unwrap_or(proto::DEFAULT_VERSION_MASK) } else { 0 };
        let pools = cfg
            .pools
            .into_iter()
            .filter_map(|p| {
                // validate() has checked the URL and the TLS settings.
                let url = parse_url(&p.url).ok()?;
                let protocol = match url.authority {
                    Some(authority) => Protocol::V2 { authority, extended: cfg.options.v2_extended_channel },
                    None => Protocol::V1 {
                        tls: if url.tls { Some(tls::client_config(&p).ok()?) } else { None },
                        session_id: None,
                        no_configure: false,
                        no_suggest: false,
                    },
                };
                Some(PoolState { cfg: p, host: url.host, port: url.port, protocol })
            })
            .collect();
        let ClientEnv { sched, stats, metrics, rate, stop } = env;
        Client {
            pools,
            opts: cfg.options,
            mask,
            sched,
            stats,
            metrics,
            rate,
            last_rate: None,
            stop,
            book: JobBook::new(),
            book_pool: None,
            queue: VecDeque::new(),
            next_id: 1,
            current: None,
            tally: Tally::default(),
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
        let bridge = spawn_bridge(hits, htx, self.stop.clone());
        let mut at = Failover { idx: 0, failures: 0, on_backup_since: None, asked_in_a_row: 0 };
        while !self.stopped() {
            let began = Instant::now();
            let end = match self.pools[at.idx].protocol {
                Protocol::V1 { .. } => self.session_v1(at.idx, &mut hrx, at.on_backup_since).await,
                Protocol::V2 { .. } => self.session_v2(at.idx, &mut hrx, at.on_backup_since).await,
            };
            if began.elapsed() >= SETTLED_SESSION {
                at.asked_in_a_row = 0;
            }
            self.metrics.pool_connected.with_label_values(&[PoolState::role(at.idx)]).set(0);
            if end == End::Stopped {
                break;
            }
            self.after_session(end, &mut at, &mut hrx).await;
        }
        self.sched.withdraw();
        self.drain_at_stop(&mut hrx).await;
        drop(hrx);
        if let Ok(Ok(lost)) = bridge.map(|b| b.join()) {
            self.sched.dropped_hits("shutdown", lost);
        }
    }

    /// What follows a session's end: back to the primary, a reconnect (at
    /// once, as asked, or after a backoff), a failover.
    async fn after_session(&mut self, end: End, at: &mut Failover, hrx: &mut mpsc::Receiver<Hit>) {
        let (host, port) = (self.pools[at.idx].host.clone(), self.pools[at.idx].port);
        if end != End::PrimaryBack {
            self.metrics.pool_reconnects.with_label_values(&[end.cause()]).inc();
        }
        match end {
            End::PrimaryBack => {
                let (host, port) = (&self.pools[0].host, self.pools[0].port);
                tracing::info!("stratum: primary pool {host}:{port} is back after the hold-down");
                self.switch(at.idx, 0);
                *at = Failover { idx: 0, failures: 0, on_backup_since: None, asked_in_a_row: at.asked_in_a_row };
            }
            End::Renegotiate => tracing::info!("stratum: reconnecting to {host}:{port} for an extended channel"),
            End::ConfigureDropped => tracing::warn!(
                "stratum: {host}:{port} closed the connection after mining.configure; reconnecting without it"
            ),
            End::Reconnect(asked) => {
                at.failures = 0;
                // The first request is honoured as asked; more in a row
                // wait at least backoff_min × 2^(n-1).
                let wait = match at.asked_in_a_row {
                    0 => asked,
                    n => asked.max(self.backoff(n - 1)),
                };
                at.asked_in_a_row = at.asked_in_a_row.saturating_add(1);
                tracing::info!("stratum: reconnecting to {host}:{port} in {wait:?} as the pool asked");
                self.idle(wait, hrx).await;
            }
            _ => {
                at.failures += 1;
                tracing::warn!("stratum: {host}:{port}: session ended ({}), attempt {}", end.cause(), at.failures);
                if at.failures >= self.opts.retries_before_failover.max(1) && self.pools.len() > 1 {
                    let next = (at.idx + 1) % self.pools.len();
                    self.switch(at.idx, next);
                    at.on_backup_since = (next != 0).then(Instant::now);
                    at.idx = next;
                    at.failures = 0;
                }
                let delay = self.backoff(at.failures);
                self.idle(delay, hrx).await;
            }
        }
    }

    /// After the last session: hits it could not send in time, and shares
    /// queued while disconnected, are not sent, and counted as such.
    async fn drain_at_stop(&mut self, hrx: &mut mpsc::Receiver<Hit>) {
        let drain_until = tokio::time::Instant::now() + STOP_DRAIN;
        while let Ok(Some(h)) = tokio::time::timeout_at(drain_until, hrx.recv()).await {
            self.hit_while_disconnected(h);
        }
        hrx.close();
        while let Ok(h) = hrx.try_recv() {
            self.hit_while_disconnected(h);
        }
        let queued = self.queue.len();
        self.queue.clear();
        self.outcomes(Wire::V1, ShareResult::Stale, ShareReason::Shutdown, queued as u64);
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
        let (f, t) = (&self.pools[from], &self.pools[to]);
        tracing::warn!(
            "stratum: failover {} {}:{} → {} {}:{}",
            PoolState::role(from),
            f.host,
            f.port,
            PoolState::role(to),
            t.host,
            t.port
        );
        let queued = self.queue.len() as u64;
        self.queue.clear();
        self.outcomes(Wire::V1, ShareResult::Stale, ShareReason::SessionChanged, queued);
        self.current = None;
        self.current_v2 = None;
        self.sched.withdraw();
    }

    /// Waits `d` while disconnected, still taking hits (V1 ones are queued).
    async fn idle(&mut self, d: Duration, hrx: &mut mpsc::Receiver<Hit>) {
        let deadline = tokio::time::Instant::now() + d;
        while !self.stopped() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                Some(h) = hrx.recv() => self.hit_while_disconnected(h),
                _ = tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + TICK)) => {}
            }
        }
    }

    /// A hit with no session to send it on: a V1 share waits for the
    /// reconnect; a V2 one cannot (the next connection's channel never
    /// issued its job).
    fn hit_while_disconnected(&mut self, hit: Hit) {
        if hit.job.job.source == v2::SOURCE {
            if self.share_v2(&hit).is_some() {
                self.metrics.pool_shares_queued.inc();
                self.outcome(Wire::V2, ShareResult::Stale, ShareReason::SessionChanged);
            }
        } else if let Some(share) = self.share_v1(&hit) {
            self.queue_v1(share);
        }
    }

    /// Hands work to the engines. Each publish (new job, ntime roll) starts
    /// at other version bits, so that rolling shows from the first share
    /// rather than only after a header's 2^32 nonces (the scheduler rolls
    /// the rest). The job's sequence number, for the book.
    fn publish_work(
        &mut self,
        id: String,
        mut template: WorkTemplate,
        share_target: Target,
        source: &'static str,
    ) -> u64 {
        if template.version_mask != 0 {
            self.publishes = self.publishes.wrapping_add(1);
            let m = template.version_mask;
            let start = (self.publishes << m.trailing_zeros()) & m;
            template.version = (template.version as u32 ^ start) as i32;
        }
        self.sched.publish(PowJob { id, template, share_target, height: None, source })
    }

    /// A difficulty a pool asked for: below `[stratum] min_difficulty` it is
    /// counted and logged (once per value), and the floor is what is mined.
    /// True when clamped.
    fn below_floor(&mut self, asked: f64) -> bool {
        self.metrics.pool_difficulty.set(asked);
        let floor = self.opts.min_difficulty;
        if asked >= floor {
            return false;
        }
        self.metrics.pool_difficulty_clamped.inc();
        if asked != self.last_clamped {
            tracing::warn!(
                "stratum: the pool set difficulty {asked:e}, below the floor {floor:e} \
                 ([stratum] min_difficulty); mining at {floor:e}"
            );
        }
        self.last_clamped = asked;
        true
    }

    /// The engines' measured rate, H/s (none while they idle).
    fn measured_rate(&mut self) -> Option<f64> {
        let r = (self.rate)().filter(|r| r.is_finite() && *r > 0.0);
        self.last_rate = r.or(self.last_rate);
        r
    }

    /// The rate to announce when opening a channel: the measured one, else
    /// the last measured (the engines idled between sessions).
    fn rate_to_announce(&mut self) -> Option<f64> {
        self.measured_rate().or(self.last_rate)
    }
}

/// True when the measured rate is more than twice, or less than half, the
/// rate last announced (nothing announced yet: any measurement).
fn rate_moved(announced: f64, measured: f64) -> bool {
    if announced <= 0.0 {
        return measured > 0.0;
    }
    measured > 2.0 * announced || measured < announced / 2.0
}

/// The thread that moves hits from the engines' queue onto the loop's
/// channel. At the stop the engines have already been joined: it forwards
/// whatever they left, then closes the channel. Its result: hits it could
/// not hand on.
fn spawn_bridge(
    hits: Receiver<Hit>,
    htx: mpsc::Sender<Hit>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<u64>> {
    std::thread::Builder::new().name("stratum-hits".into()).spawn(move || loop {
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
    })
}

#[cfg(test)]
mod tests {
    use super::rate_moved;

    #[test]
    fn the_rate_is_announced_again_past_a_factor_of_two() {
        assert!(rate_moved(0.0, 1.0), "the first measurement");
        assert!(!rate_moved(0.0, 0.0));
        assert!(!rate_moved(100.0, 200.0));
        assert!(!rate_moved(100.0, 50.0));
        assert!(rate_moved(100.0, 201.0));
        assert!(rate_moved(100.0, 49.0));
    }
}
