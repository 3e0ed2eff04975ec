//! The GPU signature engine's trust policy and the engine's split, on
//! lavapipe, with batches that mix every kernel (Ed25519, ECDSA, BIP340): a GPU that answers wrong (a test hook flips verdicts) is caught,
//! the answers stay the CPU's, the adapter is taken off signature work and
//! the metric counts it; and with lavapipe's large fixed latency the `auto`
//! split keeps small batches on the CPU.
#![cfg(feature = "gpu")]

mod common;

use std::sync::Arc;

use hashrig::metrics::Metrics;
use hashrig::sched::sig::gpu::Refused;
use hashrig::sched::sig::EngineChoice;
use hashrig::sched::{ExecPath, GpuSigEngine, SigEngine, SigEngineConfig, TrustPolicy};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_batch, Scheme, SigItem};
use hashrig::topo::{PinPlan, PlanOptions, Topology};

fn gpu(metrics: Option<Arc<Metrics>>) -> Arc<GpuSigEngine> {
    let a = common::first_adapter();
    let share = Arc::new(hashrig::gpu::AdapterShare::new());
    GpuSigEngine::start(&a, share, TrustPolicy::default(), metrics, None)
        .unwrap_or_else(|e| panic!("{}: {e}", a.summary.name))
}

fn items(n: u64, seed: u64) -> Vec<SigItem> {
    (0..n)
        .map(|i| {
            // Every kernel: Ed25519 under both policies, ECDSA, BIP340.
            let s = [Scheme::Ed25519, Scheme::Ecdsa, Scheme::Ed25519Strict, Scheme::Schnorr][(i % 4) as usize];
            let it = valid_item(s, seed + i);
            if i % 5 == 2 {
                mutate(&it, i * 31 + seed)
            } else {
                it
            }
        })
        .collect()
}

fn metric(m: &Metrics, line_start: &str) -> f64 {
    let text = m.render();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric line {line_start:?} in:\n{text}"))
}

#[test]
fn wrong_gpu_verdicts_are_caught_and_the_adapter_taken_off() {
    let m = Metrics::new();
    let g = gpu(Some(m.clone()));
    assert!(g.is_active());
    // A healthy GPU: the CPU's verdicts, invalid ones and (while warming
    // up) every valid one re-checked.
    let batch = items(120, 0);
    let ans = g.verify(&batch).unwrap();
    assert!(!ans.mismatch);
    assert_eq!(ans.verdicts, verify_batch(&batch));
    assert_eq!(ans.rechecked, batch.len(), "warm-up dispatches re-check every verdict");
    assert_eq!(g.totals().mismatches, 0);
    assert_eq!(metric(&m, "hashrig_sig_gpu_active{"), 1.0);
    for family in ["ed25519", "ecdsa", "schnorr"] {
        let per = metric(&m, &format!("hashrig_sig_gpu_item_seconds{{device=\"gpu0\",scheme=\"{family}\"}}"));
        assert!(per > 0.0, "{family}: {per} s per item");
    }

    // Every 7th verdict flipped, as a faulty GPU would answer.
    g.inject_faults(7);
    let batch = items(90, 1000);
    let ans = g.verify(&batch).unwrap();
    assert!(ans.mismatch, "the trust policy must see the flipped verdicts");
    assert_eq!(ans.verdicts, verify_batch(&batch), "the batch is answered from the CPU");
    assert!(!g.is_active());
    assert_eq!(g.totals().mismatches, 1);
    assert_eq!(metric(&m, "hashrig_sig_gpu_mismatches_total{device=\"gpu0\"}"), 1.0);
    assert_eq!(metric(&m, "hashrig_sig_gpu_active{"), 0.0);
    // Off signature work: the GPU takes nothing more.
    assert!(matches!(g.verify(&batch), Err(Refused::Off(_))));
}

#[test]
fn a_faulty_gpu_behind_the_engine_changes_no_answer() {
    let plan = PinPlan::build(&Topology::fallback(2), &PlanOptions::default()).unwrap();
    let mut cfg = SigEngineConfig::new(plan);
    cfg.pin = false;
    cfg.engines = EngineChoice::Gpu;
    let engine = SigEngine::start(cfg, None).unwrap();
    let g = gpu(None);
    engine.add_gpu(g.clone());
    let batch = items(40, 77);
    let rep = engine.verify(&batch, None);
    assert_eq!(rep.path, ExecPath::Gpu);
    assert_eq!(rep.verdicts, verify_batch(&batch));
    // Flip every verdict whose position is a multiple of 5: a faulty GPU that
    // only corrupts "valid" answers into invalid ones is still caught by the
    // re-check of every invalid verdict, even past the warm-up.
    g.inject_faults(5);
    for round in 0..3 {
        let batch = items(40, 500 + round * 40);
        let rep = engine.verify(&batch, None);
        assert_eq!(rep.verdicts, verify_batch(&batch), "round {round}");
    }
    assert!(!g.is_active());
    // The CPU answers from then on.
    let batch = items(10, 9000);
    let rep = engine.verify(&batch, None);
    assert_eq!(rep.path, ExecPath::Inline);
    assert_eq!(rep.verdicts, verify_batch(&batch));
    assert!(engine.cpu_items_total() >= 10);
}

/// lavapipe's fixed latency is far above a CPU core's time for a small batch:
/// `auto` keeps batches of 1–64 on the CPU; `gpu` sends them to the GPU.
#[test]
fn auto_keeps_small_batches_on_the_cpu() {
    let plan = PinPlan::build(&Topology::fallback(2), &PlanOptions::default()).unwrap();
    let mut cfg = SigEngineConfig::new(plan);
    cfg.pin = false;
    let engine = SigEngine::start(cfg, None).unwrap();
    let g = gpu(None);
    let (l0, per_item) = g.model();
    assert!(l0 > 0.0 && per_item > 0.0, "calibration measured L0 {l0} and {per_item} s/item");
    engine.add_gpu(g.clone());
    for n in [1u64, 2, 8, 32, 64] {
        let batch = items(n, n * 100);
        let rep = engine.verify(&batch, None);
        assert_eq!(rep.verdicts, verify_batch(&batch));
        // The CPU wins whenever its predicted time is below the GPU's.
        let cpu_t = n as f64 * engine.cpu_item_secs();
        if cpu_t < l0 {
            assert_eq!(rep.path, ExecPath::Inline, "batch of {n}: GPU L0 {l0:.4} s, CPU {cpu_t:.6} s");
        }
    }
    assert_eq!(g.totals().items, 0, "no small batch went to lavapipe");
}
