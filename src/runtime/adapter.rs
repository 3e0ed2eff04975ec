//! The node adapter's thread: started from the config, stopped with a
//! deadline, and replaced on a reload without mixing its shares with the
//! next one's. An adapter still running past its deadline stays owned by
//! the runtime, and no other starts until it has ended: two adapters never
//! publish to the same scheduler.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::metrics::Metrics;
use crate::node::config::Adapter;
use crate::node::demo::{DemoNode, DemoParams};
use crate::sched::{Hit, PowScheduler, Stats};

use super::worker::Worker;

/// How long the node adapter has, once the engines are stopped (or, on a
/// reload, once its work is withdrawn), to hand on the last hits (submit
/// shares, submit or save blocks) and disconnect.
pub const ADAPTER_STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Why the node adapter ended.
#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error(transparent)]
    Stratum(#[from] crate::node::stratum::StratumError),
    #[error(transparent)]
    Gbt(#[from] crate::node::gbt::GbtError),
    #[error("the node adapter panicked")]
    Panicked,
}

/// How many adapter threads run now, and the most that ever ran at once
/// (one: a reload never starts an adapter beside one that still runs).
#[derive(Debug, Default)]
pub struct AdapterCount {
    running: AtomicUsize,
    most: AtomicUsize,
}

impl AdapterCount {
    pub fn running(&self) -> usize {
        self.running.load(Ordering::SeqCst)
    }

    pub fn most_at_once(&self) -> usize {
        self.most.load(Ordering::SeqCst)
    }

    fn enter(self: &Arc<Self>) -> impl Drop + Send + 'static {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        Leave(self.clone())
    }
}

struct Leave(Arc<AdapterCount>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

pub struct AdapterRun {
    worker: Worker<Result<(), AdapterError>>,
}

/// What asking an adapter to stop came to.
pub enum Stopped {
    /// It ended; its error if it had given up on its own.
    Ended(Result<(), AdapterError>),
    /// Still running past the deadline: the caller keeps it, and starts no
    /// other adapter until it has ended.
    Late(AdapterRun),
}

/// What the adapter needs from the runtime.
pub struct AdapterEnv {
    pub sched: Arc<PowScheduler>,
    pub hits: Receiver<Hit>,
    pub stats: Arc<Stats>,
    pub metrics: Arc<Metrics>,
    /// Raised when the adapter gives up on its own (e.g. the node refused
    /// our RPC credentials): the whole run stops.
    pub done: Arc<AtomicBool>,
    /// The engines' rate as timed at start-up, until the live one is
    /// measured (None on a reload: the live rate exists by then).
    pub first_rate: Option<f64>,
    pub count: Arc<AdapterCount>,
}

impl AdapterRun {
    pub fn start(adapter: Adapter, demo: DemoParams, env: AdapterEnv) -> std::io::Result<AdapterRun> {
        // Counted from before the thread exists to after it has ended.
        let live = env.count.enter();
        let worker = Worker::spawn("adapter", move |astop| {
            let _live = live;
            let AdapterEnv { sched, hits, stats, metrics, done, first_rate, count: _ } = env;
            let r: Result<(), AdapterError> = match adapter {
                Adapter::Pool(cfg) => {
                    tracing::info!(
                        "node: Stratum pool(s) {}",
                        cfg.pools.iter().map(|p| p.url.as_str()).collect::<Vec<_>>().join(", ")
                    );
                    // The pool is told the engines' live rate (the start-up
                    // timing until there is one).
                    let live = stats.clone();
                    let rate: crate::node::stratum::RateSource = Arc::new(move || live.live_rate().or(first_rate));
                    let env = crate::node::stratum::ClientEnv { sched, stats, metrics, rate, stop: astop.clone() };
                    crate::node::stratum::run(cfg, hits, env).map_err(AdapterError::from)
                }
                Adapter::Solo(cfg) => {
                    tracing::info!("node: solo mining on {} (getblocktemplate)", cfg.url);
                    crate::node::gbt::run(cfg, sched, hits, stats, metrics, astop.clone()).map_err(AdapterError::from)
                }
                Adapter::Demo => {
                    tracing::info!("node: embedded demo chain (no --pool or --node configured)");
                    DemoNode::new(demo).run(sched, hits, stats, metrics, astop.clone());
                    Ok(())
                }
            };
            if !astop.load(Ordering::Relaxed) {
                done.store(true, Ordering::Relaxed);
            }
            r
        })?;
        Ok(AdapterRun { worker })
    }

    pub fn is_finished(&self) -> bool {
        self.worker.is_finished()
    }

    /// Asks the adapter to stop and waits up to `deadline` for it to hand
    /// on what it holds; `withdraw` (on a reload, engines still running)
    /// keeps the engines off its work meanwhile, so that the last shares of
    /// its jobs still reach it and nothing new is found for them.
    pub fn stop(self, withdraw: Option<&PowScheduler>, deadline: Duration) -> Stopped {
        let r = self.worker.stop_within(deadline, || {
            // An adapter may publish once more just as it is told to stop:
            // withdrawn again, so engines never mine its jobs for long.
            if let Some(s) = withdraw.filter(|s| s.current().is_some()) {
                s.withdraw();
            }
        });
        if let Some(s) = withdraw {
            s.withdraw();
        }
        match r {
            Ok(r) => Stopped::Ended(r.unwrap_or(Err(AdapterError::Panicked))),
            Err(worker) => Stopped::Late(AdapterRun { worker }),
        }
    }
}
