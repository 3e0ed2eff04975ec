//! The demo validator feed `hashrig run` starts beside the PoW demo: batches
//! of real signatures, valid and invalid mixed, through the signature engine,
//! every verdict checked against the known answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::sched::SigEngine;
use crate::sig::demo::{mutate, valid_item};
use crate::sig::{Scheme, SigItem};

/// Demo feed settings.
#[derive(Clone, Debug)]
pub struct FeedParams {
    /// Items per second to aim for.
    pub rate: f64,
    /// Items per batch.
    pub batch: usize,
    /// One item in this many is mutated (invalid).
    pub invalid_every: usize,
    /// Deadline given to each batch.
    pub deadline: Duration,
}

impl Default for FeedParams {
    fn default() -> FeedParams {
        FeedParams { rate: 5000.0, batch: 256, invalid_every: 16, deadline: Duration::from_millis(100) }
    }
}

/// What the feed has seen.
#[derive(Debug, Default)]
pub struct FeedStats {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    pub invalid: AtomicU64,
    /// Verdicts that differ from what the feed knows the answer to be: a bug.
    pub unexpected: AtomicU64,
}

/// Feed batches of real signatures, valid and invalid mixed, into `engine`
/// until `stop`; every verdict is checked against the known answer.
pub fn run_feed(engine: &SigEngine, p: &FeedParams, stats: &FeedStats, stop: &AtomicBool) {
    const POOL: u64 = 64;
    let pool: Vec<SigItem> = (0..POOL).flat_map(|i| Scheme::ALL.into_iter().map(move |s| valid_item(s, i))).collect();
    let batch = p.batch.max(1);
    let every = p.invalid_every.max(2);
    let interval = Duration::from_secs_f64(batch as f64 / p.rate.max(1.0));
    let mut next = Instant::now();
    let mut k: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let mut items = Vec::with_capacity(batch);
        let mut expect = Vec::with_capacity(batch);
        for _ in 0..batch {
            k = k.wrapping_add(1);
            let base = &pool[(k.wrapping_mul(0x9e37_79b9) % pool.len() as u64) as usize];
            if k.is_multiple_of(every as u64) {
                items.push(mutate(base, k.wrapping_mul(7)));
                expect.push(false);
            } else {
                items.push(base.clone());
                expect.push(true);
            }
        }
        let rep = engine.verify(&items, Some(Instant::now() + p.deadline));
        let mut bad = 0;
        let mut invalid = 0;
        for (v, e) in rep.verdicts.iter().zip(&expect) {
            if !v.is_valid() {
                invalid += 1;
            }
            if v.is_valid() != *e {
                bad += 1;
            }
        }
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.items.fetch_add(batch as u64, Ordering::Relaxed);
        stats.invalid.fetch_add(invalid, Ordering::Relaxed);
        if bad > 0 {
            stats.unexpected.fetch_add(bad, Ordering::Relaxed);
            tracing::error!("sig demo feed: {bad} verdict(s) differ from the known answer");
        }
        next += interval;
        let now = Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else if now - next > Duration::from_secs(1) {
            next = now; // fell behind: do not burst to catch up
        }
    }
}

/// Start [`run_feed`] on a thread of its own.
pub fn spawn_feed(
    engine: SigEngine,
    p: FeedParams,
    stats: Arc<FeedStats>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("sig-demo-feed".into()).spawn(move || run_feed(&engine, &p, &stats, &stop))
}
