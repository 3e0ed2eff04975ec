//! The status line: logged every `status_interval` (live), and at the stop.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::worker::Worker;
use super::RuntimeError;
use crate::metrics::Metrics;
use crate::sched::{RateMeter, SigEngine, Stats};

pub(super) fn spawn(
    mining: bool,
    stats: &Arc<Stats>,
    metrics: &Arc<Metrics>,
    sig_engine: &SigEngine,
    every: &Arc<AtomicU64>,
) -> Result<Worker, RuntimeError> {
    let mut sig_rate = RateMeter::new(sig_engine.clone());
    let (stats, metrics, every) = (stats.clone(), metrics.clone(), every.clone());
    Worker::spawn("status", move |stop| {
        let mut last = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(250));
            stats.sample();
            if last.elapsed() >= Duration::from_secs(every.load(Ordering::Relaxed)) {
                last = Instant::now();
                if mining {
                    tracing::info!("{} | sig {}", status_line(&stats, &metrics), sig_rate.line());
                } else {
                    tracing::info!("sig {}", sig_rate.line());
                }
            }
        }
    })
    .map_err(|e| RuntimeError::start("status thread", e))
}

pub(super) fn status_line(stats: &Stats, metrics: &Metrics) -> String {
    format!(
        "{} | accepted {} rejected {} stale {} | hw errors {} | blocks {} | mining height {} share diff {}",
        stats.speed_line(),
        stats.accepted.load(Ordering::Relaxed),
        stats.rejected.load(Ordering::Relaxed),
        stats.stale.load(Ordering::Relaxed),
        stats.hw_errors.load(Ordering::Relaxed),
        stats.blocks.load(Ordering::Relaxed),
        metrics.chain_height.get(),
        fmt_difficulty(metrics.share_difficulty.get()),
    )
}

/// Six significant digits whatever the magnitude (demo difficulties are tiny).
fn fmt_difficulty(d: f64) -> String {
    if d >= 1.0 {
        format!("{d:.0}")
    } else {
        format!("{d:.6e}")
    }
}
