//! The node adapter's thread: started from the config, stopped with a
//! deadline, and replaced on a reload without mixing its shares with the
//! next one's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::metrics::Metrics;
use crate::node::config::Adapter;
use crate::node::demo::{DemoNode, DemoParams};
use crate::sched::{Hit, PowScheduler, Stats};

/// How long the node adapter has, once the engines are stopped (or, on a
/// reload, once its work is withdrawn), to hand on the last hits (submit
/// shares, submit or save blocks) and disconnect.
pub const ADAPTER_STOP_DEADLINE: Duration = Duration::from_secs(15);

pub struct AdapterRun {
    thread: JoinHandle<Result<(), String>>,
    stop: Arc<AtomicBool>,
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
}

impl AdapterRun {
    pub fn start(adapter: Adapter, demo: DemoParams, env: AdapterEnv) -> std::io::Result<AdapterRun> {
        let stop = Arc::new(AtomicBool::new(false));
        let astop = stop.clone();
        let thread = std::thread::Builder::new().name("adapter".into()).spawn(move || {
            let AdapterEnv { sched, hits, stats, metrics, done, first_rate } = env;
            let r: Result<(), String> = match adapter {
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
                    crate::node::stratum::run(cfg, hits, env).map_err(|e| e.to_string())
                }
                Adapter::Solo(cfg) => {
                    tracing::info!("node: solo mining on {} (getblocktemplate)", cfg.url);
                    crate::node::gbt::run(cfg, sched, hits, stats, metrics, astop.clone()).map_err(|e| e.to_string())
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
        Ok(AdapterRun { thread, stop })
    }

    /// Asks the adapter to stop and waits up to [`ADAPTER_STOP_DEADLINE`]
    /// for it to hand on what it holds; `withdraw` (on a reload, engines
    /// still running) keeps the engines off its work meanwhile, so that the
    /// last shares of its jobs still reach it and nothing new is found for
    /// them. Its error, if it gave up on its own.
    pub fn stop(self, withdraw: Option<&PowScheduler>) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        let until = Instant::now() + ADAPTER_STOP_DEADLINE;
        while !self.thread.is_finished() && Instant::now() < until {
            // An adapter may publish once more just as it is told to stop:
            // withdrawn again, so engines never mine its jobs for long.
            if let Some(s) = withdraw.filter(|s| s.current().is_some()) {
                s.withdraw();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(s) = withdraw {
            s.withdraw();
        }
        if self.thread.is_finished() {
            self.thread.join().unwrap_or_else(|_| Err("the node adapter panicked".into()))
        } else {
            tracing::error!("the node adapter did not stop within {ADAPTER_STOP_DEADLINE:?}; going on without it");
            Ok(())
        }
    }
}
