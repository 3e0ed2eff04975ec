//! The GPU engine through the scheduler, beside the CPU engine, on lavapipe:
//! every hit it reports meets the share target and rebuilds from the job's
//! template; a new job is picked up (switch latency is recorded); a lost
//! device gives its work back and mining goes on. No timing assertions.
#![cfg(feature = "gpu")]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashrig::chain::{BlockHash, CompactTarget, Target, WorkTemplate};
use hashrig::gpu::{ContextOptions, GpuContext, TuneChoice};
use hashrig::metrics::Metrics;
use hashrig::sched::{GpuConfig, GpuEngine, PowJob, PowScheduler, Stats};

fn context() -> GpuContext {
    let a = common::first_adapter();
    let opts = ContextOptions { depth: 3, hit_slots: 256, tune: TuneChoice { wg: 64, npt: 16 } };
    GpuContext::new(&a, &opts).unwrap_or_else(|e| panic!("GPU context on {}: {e}", a.summary.name))
}

fn job(id: &str, tag: &[u8], share_top: u32) -> PowJob {
    PowJob {
        id: id.into(),
        template: WorkTemplate {
            version: 0x2000_0000,
            prev_blockhash: BlockHash::ZERO,
            coinb1: tag.to_vec(),
            coinb2: Vec::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 4,
            merkle_branch: Vec::new(),
            bits: CompactTarget::from_consensus(0x207fffff),
            time: 1_700_000_000,
            version_mask: 0,
            fixed_merkle_root: None,
        },
        share_target: Target::from_hex(&format!("{share_top:08x}{}", "ff".repeat(28))).expect("target"),
        height: None,
        source: "demo",
    }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn gpu_engine_mines_switches_jobs_and_survives_device_loss() {
    let metrics = Metrics::new();
    let stats = Arc::new(Stats::new());
    let (sched, hits) = PowScheduler::new(metrics.clone());
    let stop = Arc::new(AtomicBool::new(false));
    // 1 in 2^12 nonces is a share.
    let first = sched.publish(job("a", b"gpu engine a", 0x000f_ffff));
    let ctx = context();
    let loss = ctx.loss_handle();
    let share = Arc::new(hashrig::gpu::AdapterShare::new());
    let cfg = GpuConfig { device: "gpu0".into(), dispatch_time: Duration::from_millis(10), feeder: None, share };
    let engine =
        GpuEngine::start(ctx, cfg, sched.clone(), stats.clone(), metrics.clone(), stop.clone()).expect("engine");

    let gpu_hashes = || metrics.hashes.with_label_values(&["gpu", "gpu0"]).get();
    let mut got = Vec::new();
    wait_until("GPU shares of job a", || {
        got.extend(hits.try_iter());
        got.len() >= 20
    });
    for h in &got {
        assert_eq!(h.engine, "gpu");
        assert_eq!(h.job.seq, first);
        assert!(h.job.job.share_target.is_met_by(&h.header.block_hash()));
        let rebuilt = h.job.job.template.header(h.extranonce2, 0).expect("header");
        assert_eq!(h.header.merkle_root, rebuilt.merkle_root, "hit header comes from the job's template");
        assert_eq!(h.hash, h.header.block_hash());
    }
    assert_eq!(metrics.hardware_errors.with_label_values(&["gpu", "gpu0"]).get(), 0);
    assert_eq!(metrics.self_tests.with_label_values(&["gpu", "passed"]).get(), 1);

    // A new job: the engine moves to it and records the switch.
    let second = sched.publish(job("b", b"gpu engine b", 0x000f_ffff));
    wait_until("a share of job b", || hits.try_iter().any(|h| h.job.seq == second));
    let switch = metrics.job_switch_seconds.with_label_values(&["gpu"]);
    assert!(switch.get_sample_count() >= 2, "both jobs' switches recorded");
    let rendered = metrics.render();
    assert!(rendered.contains("hashrig_gpu_dispatch_seconds_count{device=\"gpu0\"}"));
    assert!(rendered.contains("hashrig_gpu_adapter_info{"));

    // Device loss: the engine stops, says so, and gives its chunks back.
    let before = sched.current().expect("job").assigned();
    loss.mark_lost("test: simulated device loss");
    wait_until("the engine to notice the loss", || engine.is_lost());
    assert_eq!(metrics.gpu.device_lost.with_label_values(&["gpu0"]).get(), 1);
    let j = sched.current().expect("job");
    let c = sched.next_chunk(&j, 1 << 40).expect("a chunk");
    assert!(
        (c.extranonce2 << 32) + c.range.start as u64 <= before,
        "the first chunk after the loss is work the GPU gave back, not fresh nonces"
    );
    let h = gpu_hashes();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(gpu_hashes(), h, "a lost engine hashes no more");
    stop.store(true, Ordering::Relaxed);
    engine.join();
}
