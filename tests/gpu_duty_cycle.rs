//! The thermal guard's lever on the GPU engine, on lavapipe: with the duty
//! cycle in its adapter's share lowered (gpu::share), the PoW engine pauses after
//! each dispatch for `busy × (1/duty − 1)`, so the GPU is busy at most about
//! that share of the time; back at 1 it mines on without pauses.
//!
//! The bound checked follows from the pauses being sleeps of at least their
//! length (it holds however slow the machine is, while a dispatch takes
//! under `MAX_PAUSE × duty / (1 − duty)`, 167 ms at 0.25; dispatches here
//! aim at 10 ms): it is no speed measurement.
#![cfg(feature = "gpu")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashrig::chain::{BlockHash, CompactTarget, Target, WorkTemplate};
use hashrig::gpu::{AdapterShare, ContextOptions, GpuContext, TuneChoice};
use hashrig::metrics::Metrics;
use hashrig::sched::{GpuConfig, GpuEngine, PowJob, PowScheduler, Stats};

fn context() -> GpuContext {
    let a = common::first_adapter();
    let opts = ContextOptions { depth: 3, hit_slots: 256, tune: TuneChoice { wg: 64, npt: 16 } };
    GpuContext::new(&a, &opts).unwrap_or_else(|e| panic!("GPU context on {}: {e}", a.summary.name))
}

/// A job no nonce meets: pure hashing.
fn job() -> PowJob {
    PowJob {
        id: "duty".into(),
        template: WorkTemplate {
            version: 0x2000_0000,
            prev_blockhash: BlockHash::ZERO,
            coinb1: b"duty cycle".to_vec(),
            coinb2: Vec::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 4,
            merkle_branch: Vec::new(),
            bits: CompactTarget::from_consensus(0x207fffff),
            time: 1_700_000_000,
            version_mask: 0,
            fixed_merkle_root: None,
        },
        share_target: Target::ZERO,
        height: None,
        source: "demo",
    }
}

/// (dispatches, busy seconds) of `device` so far.
fn dispatches(m: &Metrics) -> (u64, f64) {
    let h = m.gpu.dispatch_seconds.with_label_values(&["gpu0"]);
    (h.get_sample_count(), h.get_sample_sum())
}

/// Busy share of the wall time over a window of at least 12 dispatches.
fn busy_share(m: &Metrics) -> (u64, f64) {
    let (n0, b0) = dispatches(m);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(60);
    while dispatches(m).0 < n0 + 12 || t0.elapsed() < Duration::from_millis(500) {
        assert!(Instant::now() < deadline, "the engine stopped dispatching");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (n1, b1) = dispatches(m);
    (n1 - n0, (b1 - b0) / t0.elapsed().as_secs_f64())
}

#[test]
fn a_lowered_duty_cycle_pauses_the_engine_and_full_restores_it() {
    let metrics = Metrics::new();
    let stats = Arc::new(Stats::new());
    let (sched, _hits) = PowScheduler::new(metrics.clone());
    let stop = Arc::new(AtomicBool::new(false));
    sched.publish(job());
    let ctx = context();
    let share = Arc::new(AdapterShare::new());
    let cfg = GpuConfig {
        device: "gpu0".into(),
        dispatch_time: Duration::from_millis(10),
        feeder: None,
        share: share.clone(),
    };
    let engine = GpuEngine::start(ctx, cfg, sched.clone(), stats, metrics.clone(), stop.clone()).expect("engine");
    let started = Instant::now();
    while dispatches(&metrics).0 < 5 {
        assert!(started.elapsed() < Duration::from_secs(60), "no dispatch within 60 s");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (n_full, full) = busy_share(&metrics);
    share.set_duty(0.25);
    busy_share(&metrics); // the dispatches in flight when it changed
    let (n_slow, slow) = busy_share(&metrics);
    share.set_duty(1.0);
    let (n_back, back) = busy_share(&metrics);
    println!(
        "busy share: full {full:.2} ({n_full} dispatches), duty 0.25 {slow:.2} ({n_slow}), back {back:.2} ({n_back})"
    );
    assert!(slow <= 0.4, "at duty 0.25 the GPU was busy {slow:.2} of the time");
    assert!(n_back >= 12, "mining goes on at full duty");
    stop.store(true, Ordering::Relaxed);
    engine.join();
}
