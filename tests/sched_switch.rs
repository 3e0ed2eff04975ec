//! The scheduler's PoW half through the real CPU engine: every hit is
//! re-checked and belongs to the job it claims, a new job reaches the worker
//! and, once it has, no stale work follows; exhausted jobs roll extranonce2.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashrig::chain::{BlockHash, CompactTarget, Target, WorkTemplate};
use hashrig::metrics::Metrics;
use hashrig::pow;
use hashrig::sched::{cpu, CpuConfig, CpuEngine, PowJob, PowScheduler, Stats};
use hashrig::topo::{PinPlan, PlanOptions, Topology, WorkerPriority};

fn job(tag: &[u8], en2_size: usize, target: Target) -> PowJob {
    PowJob {
        id: String::from_utf8_lossy(tag).into_owned(),
        template: WorkTemplate {
            version: 0x2000_0000,
            prev_blockhash: BlockHash::hash(tag),
            coinb1: tag.to_vec(),
            coinb2: b"coinb2".to_vec(),
            extranonce1: vec![0xab, 0xcd],
            extranonce2_size: en2_size,
            merkle_branch: vec![[1; 32], [2; 32]],
            bits: CompactTarget::from_consensus(0x207fffff),
            time: 1_700_000_000,
            version_mask: 0,
            fixed_merkle_root: None,
        },
        share_target: target,
        height: Some(1),
        source: "demo",
    }
}

fn one_worker() -> PinPlan {
    PinPlan::build(&Topology::fallback(1), &PlanOptions { threads: Some(1), ..Default::default() }).unwrap()
}

#[test]
fn new_job_replaces_old_and_hits_are_genuine() {
    let metrics = Metrics::new();
    let stats = Arc::new(Stats::new());
    let (sched, hits) = PowScheduler::new(metrics.clone());
    let stop = Arc::new(AtomicBool::new(false));
    // One hash in 256 is a hit: plenty of traffic to watch.
    let easy = Target::from_hex(&format!("00{}", "f".repeat(62))).unwrap();
    let a = sched.publish(job(b"job-a", 4, easy));
    let engine = CpuEngine::start(
        CpuConfig {
            plan: one_worker(),
            backend: pow::detect(),
            chunk_time: cpu::DEFAULT_CHUNK_TIME,
            pin: false,
            priority: WorkerPriority::Normal,
        },
        sched.clone(),
        stats.clone(),
        metrics.clone(),
        stop.clone(),
    )
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_a = 0;
    while seen_a < 20 {
        let h = hits.recv_timeout(Duration::from_secs(10)).expect("hits for job a");
        assert_eq!(h.job.seq, a);
        seen_a += 1;
        assert!(Instant::now() < deadline);
    }
    let b = sched.publish(job(b"job-b", 4, easy));
    let mut seen_b = 0;
    let mut keys = HashSet::new();
    while seen_b < 20 {
        let h = hits.recv_timeout(Duration::from_secs(10)).expect("hits for job b");
        if seen_b > 0 {
            // One worker, FIFO channel: once it has moved to b, nothing from a follows.
            assert_eq!(h.job.seq, b, "stale hit after the switch");
        }
        if h.job.seq == b {
            seen_b += 1;
            // The hit is what it says: header from job b's template with its
            // extranonce2, hash recomputed independently, target met.
            let expect = h.job.job.template.header(h.extranonce2, h.header.nonce).unwrap();
            assert_eq!(h.header, expect);
            assert_eq!(h.hash, h.header.block_hash());
            assert!(easy.is_met_by(&h.hash));
            assert!(keys.insert((h.extranonce2, h.header.nonce)), "no duplicate hits");
        }
        assert!(Instant::now() < deadline);
    }
    assert!(metrics.job_switch_seconds.with_label_values(&["cpu"]).get_sample_count() >= 2);
    stop.store(true, Ordering::Relaxed);
    engine.join();
    assert_eq!(stats.hw_errors.load(Ordering::Relaxed), 0);
}

#[test]
fn exhausted_extranonce_space_idles_until_next_job() {
    // A 1-byte extranonce2 and a worker that would need 2^40 hashes to finish:
    // instead check the cursor directly hands out every en2 in order.
    let metrics = Metrics::new();
    let (sched, _hits) = PowScheduler::new(metrics);
    sched.publish(job(b"roll", 1, Target::ZERO));
    let j = sched.current().unwrap();
    let mut en2s = Vec::new();
    while let Some(c) = sched.next_chunk(&j, 1 << 32) {
        assert_eq!(c.range.start, 0);
        assert_eq!(c.range.end, 1 << 32);
        en2s.push(c.extranonce2);
    }
    assert_eq!(en2s, (0..256).collect::<Vec<u64>>());
    // Each extranonce2 gives a different header (fresh nonce space).
    let roots: HashSet<_> = en2s.iter().map(|e| j.job.template.header(*e, 0).unwrap().merkle_root).collect();
    assert_eq!(roots.len(), 256);

    // The space is spent: a worker started now idles (hashes nothing, never
    // re-hashes a nonce) until the next job, then hashes it.
    let stats = Arc::new(Stats::new());
    let stop = Arc::new(AtomicBool::new(false));
    let engine = CpuEngine::start(
        CpuConfig {
            plan: one_worker(),
            backend: pow::detect(),
            chunk_time: cpu::DEFAULT_CHUNK_TIME,
            pin: false,
            priority: WorkerPriority::Normal,
        },
        sched.clone(),
        stats.clone(),
        Metrics::new(),
        stop.clone(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(stats.hashes.load(Ordering::Relaxed), 0, "a worker hashed an exhausted job");
    sched.publish(job(b"next", 4, Target::ZERO));
    let until = Instant::now() + Duration::from_secs(10);
    while stats.hashes.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < until, "the worker did not take the next job");
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Ordering::Relaxed);
    engine.join();
}
