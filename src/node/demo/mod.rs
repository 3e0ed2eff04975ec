//! The embedded demo node: an in-process regtest-style chain that hashrig
//! mines when nothing else is configured, so `make run` shows real work.
//!
//! It is a small node, not a mock: its own genesis, a fresh template
//! (coinbase with BIP34 height, a few transactions) after every block, and an
//! independent check of every block it receives (`chain`) before the block
//! joins the chain it keeps in memory. Like a pool it also hands out an easier
//! share target, so the status line shows accepted shares between blocks.
//!
//! Its difficulties follow the engines, whatever their speed, so that a 2-core
//! VM and a multi-GH/s GPU both see about one block per `block_time` and a few
//! shares per second:
//! - **At start** the engines hash a first job of a difficulty no single
//!   machine meets in a second, and the node reads their hash counters for
//!   about a second: that rate sets the first share difficulty and (unless
//!   `initial_difficulty` is given) the first block's.
//! - **Then** a vardiff (`vardiff`) re-estimates the rate from the shares found,
//!   every few seconds or at once when they pour in: the share difficulty
//!   aims at `share_rate` shares per second; each block's difficulty is the
//!   estimate × `block_time`, set again within a height if the rate moves
//!   more than 3×.
//!
//! Why: a share is stale when it was found for a tip that a block has since
//! replaced, that is during the job switch that follows each block (the time
//! until every engine hashes the new job: one CPU chunk, about 10 ms, or the
//! GPU's ring of dispatches, up to 0.25 s). Stale shares are therefore about
//! switch time / block interval of all shares. With a fixed first difficulty
//! a fast GPU found blocks every few milliseconds, far shorter than its job
//! switch, and most of its shares were stale; with the block interval set
//! from the measured rate they stay at a few percent or less. A job published
//! only for a new share difficulty keeps the tip, so the shares of the job
//! before it are still accepted: only a new block makes shares stale.

mod chain;
#[cfg(test)]
mod sim;
mod vardiff;

pub use chain::{Block, DemoChain, Reject, POW_LIMIT};
pub use vardiff::{Change, Vardiff, VardiffParams};

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use crate::chain::{BlockHash, Target};
use crate::metrics::Metrics;
use crate::sched::stats::si_prefix;
use crate::sched::{Hit, PowJob, PowScheduler, Stats};
use vardiff::TWO_32;

#[derive(Clone, Debug, PartialEq)]
pub struct DemoParams {
    /// Block time the block difficulty aims at.
    pub block_time: Duration,
    /// Difficulty of the first block; `None`: from the hashrate measured at
    /// start, like every block after it.
    pub initial_difficulty: Option<f64>,
    /// Shares per second the share difficulty aims at.
    pub share_rate: f64,
    /// How often the vardiff re-estimates the hashrate from the shares.
    pub retarget: Duration,
}

impl Default for DemoParams {
    fn default() -> Self {
        DemoParams {
            block_time: Duration::from_secs(10),
            initial_difficulty: None,
            share_rate: 4.0,
            retarget: Duration::from_secs(5),
        }
    }
}

impl DemoParams {
    pub fn vardiff(&self) -> VardiffParams {
        VardiffParams { share_rate: self.share_rate, window: self.retarget }
    }
}

/// The block difficulty at which `hashrate` finds one block per `block_time`.
pub fn block_difficulty(hashrate: f64, block_time: Duration) -> f64 {
    hashrate * block_time.as_secs_f64() / TWO_32
}

/// A job's share difficulty: the vardiff's, never harder than the block's
/// (every block is also a share).
pub fn share_difficulty(vardiff: f64, block: f64) -> f64 {
    vardiff.min(block)
}

/// The rate the first job's difficulty is set for while the engines are
/// measured: no single machine finds a share of it in a second.
const GUESS_HASHRATE: f64 = 1e12;

/// The start-up measurement, from the engines' hash counters: it waits for
/// the counters to move, lets the engines settle ([`Meter::SETTLE`]: a GPU
/// grows its dispatches to its rate), then measures for [`Meter::MEASURE`].
struct Meter {
    began: Instant,
    h0: u64,
    /// (when, count) where the measurement starts, once the engines settled.
    from: Option<(Instant, u64)>,
    /// When the counters first moved.
    moved: Option<Instant>,
}

impl Meter {
    const SETTLE: Duration = Duration::from_millis(250);
    const MEASURE: Duration = Duration::from_millis(750);
    /// No hashes by then (every engine failed its self-test, say): go on
    /// from a guess, and let the vardiff find the rate once shares come.
    const GIVE_UP: Duration = Duration::from_secs(10);
    const FALLBACK: f64 = 1e6;

    fn new(now: Instant, hashes: u64) -> Meter {
        Meter { began: now, h0: hashes, from: None, moved: None }
    }

    /// The rate once measured (`Err` with a guess when nothing hashed).
    fn poll(&mut self, now: Instant, hashes: u64) -> Option<Result<f64, f64>> {
        if self.moved.is_none() && hashes > self.h0 {
            self.moved = Some(now);
        }
        match (self.moved, self.from) {
            (None, _) if now.duration_since(self.began) >= Self::GIVE_UP => Some(Err(Self::FALLBACK)),
            (Some(m), None) if now.duration_since(m) >= Self::SETTLE => {
                self.from = Some((now, hashes));
                None
            }
            (_, Some((t0, n0))) if now.duration_since(t0) >= Self::MEASURE => {
                Some(Ok(hashes.saturating_sub(n0) as f64 / now.duration_since(t0).as_secs_f64()))
            }
            _ => None,
        }
    }
}

/// The demo as a node adapter: publishes jobs, takes hits, checks shares,
/// submits blocks to the embedded chain.
pub struct DemoNode {
    pub chain: DemoChain,
    params: DemoParams,
    extranonce2_size: usize,
    /// Jobs published so far (each one's coinbase carries its number).
    jobs: u32,
    /// `None` while the start-up measurement runs.
    vardiff: Option<Vardiff>,
    /// Shares accepted at the current height (a repeat is rejected).
    seen: HashSet<BlockHash>,
}

/// What the node loop needs from the runtime.
struct Env<'a> {
    sched: &'a PowScheduler,
    stats: &'a Stats,
    metrics: &'a Metrics,
    stop: &'a AtomicBool,
}

impl DemoNode {
    pub fn new(params: DemoParams) -> DemoNode {
        DemoNode {
            chain: DemoChain::new(block_difficulty(GUESS_HASHRATE, params.block_time)),
            params,
            extranonce2_size: 4,
            jobs: 0,
            vardiff: None,
            seen: HashSet::new(),
        }
    }

    fn publish(&mut self, env: &Env) {
        if env.stop.load(Ordering::Relaxed) {
            return; // stopping: the engines are stopped or the work withdrawn
        }
        let (template, _) = self.chain.template(self.extranonce2_size, self.jobs);
        self.jobs = self.jobs.wrapping_add(1);
        let block_target = self.chain.next_target();
        let vardiff =
            self.vardiff.as_ref().map_or(GUESS_HASHRATE / (self.params.share_rate * TWO_32), |v| v.share_difficulty());
        let share = share_difficulty(vardiff, block_target.difficulty());
        let share_target = Target::from_difficulty(share).unwrap_or(Target::MAX).max(block_target);
        let height = self.chain.height() + 1;
        env.sched.publish(PowJob {
            id: format!("demo-{height}-{}", self.jobs),
            template,
            share_target,
            height: Some(height),
            source: "demo",
        });
    }

    /// The start-up measurement is done: difficulties from `hashrate` on.
    fn start_pacing(&mut self, measured: Result<f64, f64>, env: &Env) {
        let now = Instant::now();
        let hashrate = match measured {
            Ok(r) => r,
            Err(guess) => {
                tracing::warn!("demo: no engine hashed within {:?}; starting from a guess", Meter::GIVE_UP);
                guess
            }
        };
        let mut v = Vardiff::new(self.params.vardiff(), hashrate, Meter::MEASURE, now);
        let first = self.params.initial_difficulty.unwrap_or(block_difficulty(v.aim(), self.params.block_time));
        self.chain.set_difficulty(first);
        let (div, prefix) = si_prefix(v.hashrate());
        tracing::info!(
            "demo: engines measured at {:.2} {prefix}H/s; share difficulty {:.6e} (~{} shares/s), first block difficulty {:.6e} (~one per {:?})",
            v.hashrate() / div,
            v.share_difficulty(),
            self.params.share_rate,
            self.chain.next_target().difficulty(),
            self.params.block_time,
        );
        self.vardiff = Some(v);
        self.publish(env);
    }

    /// Applies what the vardiff asked for.
    fn apply(&mut self, change: Option<Change>, env: &Env) {
        let Some(change) = change else { return };
        let Some(v) = self.vardiff.as_mut() else { return };
        if change == Change::Blocks {
            let d = block_difficulty(v.aim(), self.params.block_time);
            self.chain.set_difficulty(d);
            let (div, prefix) = si_prefix(v.hashrate());
            tracing::info!(
                "demo: hashrate now ~{:.2} {prefix}H/s; block difficulty {:.6e}, share difficulty {:.6e}",
                v.hashrate() / div,
                self.chain.next_target().difficulty(),
                v.share_difficulty()
            );
        }
        self.publish(env);
    }

    /// Runs until `stop` is set, then takes the hits still queued (the
    /// engines are stopped first, so nothing found is left behind).
    pub fn run(
        mut self,
        sched: Arc<PowScheduler>,
        hits: Receiver<Hit>,
        stats: Arc<Stats>,
        metrics: Arc<Metrics>,
        stop: Arc<AtomicBool>,
    ) {
        let env = Env { sched: &sched, stats: &stats, metrics: &metrics, stop: &stop };
        let mut meter = Some(Meter::new(Instant::now(), stats.hashes.load(Ordering::Relaxed)));
        tracing::info!("demo: measuring the engines' hashrate (about a second)");
        self.publish(&env);
        loop {
            let wait = if meter.is_some() { Duration::from_millis(50) } else { Duration::from_millis(200) };
            let hit = if stop.load(Ordering::Relaxed) {
                match hits.try_recv() {
                    Ok(h) => Some(h),
                    Err(_) => break,
                }
            } else {
                match hits.recv_timeout(wait) {
                    Ok(h) => Some(h),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let now = Instant::now();
            if let Some(hit) = hit {
                self.on_hit(hit, now, &env);
            }
            if let Some(m) = meter.as_mut() {
                if let Some(measured) = m.poll(now, stats.hashes.load(Ordering::Relaxed)) {
                    meter = None;
                    self.start_pacing(measured, &env);
                }
            } else if let Some(v) = self.vardiff.as_mut() {
                let change = v.tick(now);
                self.apply(change, &env);
            }
        }
    }

    fn count_share(&self, result: &str, env: &Env) {
        env.metrics.shares.with_label_values(&[result]).inc();
        let counter = match result {
            "accepted" => &env.stats.accepted,
            "rejected" => &env.stats.rejected,
            _ => &env.stats.stale,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn on_hit(&mut self, hit: Hit, now: Instant, env: &Env) {
        let job = &hit.job.job;
        let difficulty = job.share_target.difficulty();
        // Work for a tip a block has replaced: stale, yet work the engines
        // did, so the vardiff counts it.
        if job.template.prev_blockhash != self.chain.tip_hash() {
            self.count_share("stale", env);
            let change = self.vardiff.as_mut().and_then(|v| v.found(difficulty, now));
            self.apply(change, env);
            return;
        }
        // The "pool" side checks the share itself, as a real pool would.
        let hash = hit.header.block_hash();
        let dup = !self.seen.insert(hash);
        if dup || !job.share_target.is_met_by(&hash) {
            self.count_share("rejected", env);
            tracing::warn!(nonce = hit.header.nonce, dup, "demo: share rejected");
            return;
        }
        self.count_share("accepted", env);
        let change = self.vardiff.as_mut().and_then(|v| v.found(difficulty, now));
        // A block only with the nBits the chain wants now: a job from before
        // the block difficulty was set again finds shares, not blocks.
        if hit.header.bits == self.chain.next_bits() && self.chain.next_target().is_met_by(&hash) {
            self.submit(&hit, env);
        } else {
            self.apply(change, env);
        }
    }

    fn submit(&mut self, hit: &Hit, env: &Env) {
        let coinbase = match hit.job.job.template.coinbase(hit.extranonce2) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("demo: cannot rebuild coinbase: {e}");
                return;
            }
        };
        let mut txs = vec![coinbase];
        txs.extend(chain::demo_transactions(self.chain.height() + 1));
        let block = Block { header: hit.header, txs };
        match self.chain.submit(&block) {
            Ok(hash) => {
                env.metrics.blocks.with_label_values(&["accepted"]).inc();
                env.stats.blocks.fetch_add(1, Ordering::Relaxed);
                if let Some(v) = self.vardiff.as_mut() {
                    self.chain.set_difficulty(block_difficulty(v.aim(), self.params.block_time));
                }
                tracing::info!(
                    height = self.chain.height(),
                    %hash,
                    txs = block.txs.len(),
                    engine = hit.engine,
                    "demo: block accepted, next difficulty {:.6e}",
                    self.chain.next_target().difficulty()
                );
                self.seen.clear();
                self.publish(env);
            }
            Err(e) => {
                env.metrics.blocks.with_label_values(&["rejected"]).inc();
                tracing::error!("demo: block rejected: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_up_meter_waits_settles_and_measures() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut m = Meter::new(t0, 1000);
        // Nothing hashed yet: no answer, however long (short of giving up).
        assert_eq!(m.poll(at(2000), 1000), None);
        // The counters move at 2.0 s; the engines settle for 250 ms...
        assert_eq!(m.poll(at(2000), 1500), None);
        assert_eq!(m.poll(at(2100), 9_000), None);
        assert_eq!(m.poll(at(2250), 10_000), None);
        // ...then 750 ms are measured: 1.5 M hashes in 0.75 s.
        assert_eq!(m.poll(at(2900), 500_000), None);
        assert_eq!(m.poll(at(3000), 1_510_000), Some(Ok(2e6)));

        let mut idle = Meter::new(t0, 7);
        assert_eq!(idle.poll(at(9_999), 7), None);
        assert_eq!(idle.poll(at(10_000), 7), Some(Err(Meter::FALLBACK)));
    }

    #[test]
    fn difficulties_follow_the_rate_and_a_share_never_outranks_a_block() {
        // 7 GH/s for 10 s: 7e10 hashes, difficulty 7e10 / 2^32.
        let d = block_difficulty(7e9, Duration::from_secs(10));
        assert!((d - 7e10 / 4294967296.0).abs() < 1e-9);
        assert_eq!(share_difficulty(0.5, 2.0), 0.5);
        assert_eq!(share_difficulty(3.0, 2.0), 2.0);
    }
}
