//! The engine: split batches give the same verdicts as one thread, every
//! submitted batch is answered once, queued batches run earliest deadline
//! first, and metrics count what was verified.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashrig::metrics::Metrics;
use hashrig::sched::{ExecPath, SigEngine, SigEngineConfig};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_batch, Scheme, SigItem};
use hashrig::topo::{PinPlan, PlanOptions, Topology};

fn engine(threads: usize, metrics: Option<Arc<Metrics>>) -> SigEngine {
    let plan = PinPlan::build(&Topology::fallback(threads), &PlanOptions::default()).unwrap();
    let mut cfg = SigEngineConfig::new(plan);
    cfg.pin = false;
    SigEngine::start(cfg, metrics).unwrap()
}

fn mixed(n: usize) -> Vec<SigItem> {
    (0..n as u64)
        .map(|i| {
            let it = valid_item(Scheme::ALL[(i % 4) as usize], i % 32);
            if i % 9 == 4 {
                mutate(&it, i)
            } else {
                it
            }
        })
        .collect()
}

#[test]
fn split_equals_inline() {
    let m = Metrics::new();
    let e = engine(3, Some(m.clone()));
    for n in [0usize, 1, 64, 65, 200, 1000] {
        let items = mixed(n);
        let rep = e.verify(&items, Some(Instant::now() + Duration::from_secs(3600)));
        assert_eq!(rep.verdicts, verify_batch(&items), "n = {n}");
        assert!(!rep.deadline_missed);
        if n > 64 {
            assert!(matches!(rep.path, ExecPath::Split { .. }), "{:?}", rep.path);
        } else {
            assert_eq!(rep.path, ExecPath::Inline);
        }
    }
    assert_eq!(e.verified_total(), 1330);
    let text = m.render();
    assert!(text.contains("hashrig_sig_verdicts_total{result=\"valid\",scheme=\"ecdsa\"}"), "{text}");
    assert!(text.contains("hashrig_sig_batch_seconds_bucket"));
    // A deadline in the past is still answered, and flagged.
    let rep = e.verify(&mixed(3), Some(Instant::now() - Duration::from_millis(1)));
    assert!(rep.deadline_missed);
    assert_eq!(rep.verdicts.len(), 3);
}

#[test]
fn submitted_batches_answered_once() {
    let e = engine(2, None);
    let (tx, rx) = mpsc::channel();
    for k in 0..40usize {
        let items = mixed(1 + k * 13 % 300);
        let want = verify_batch(&items);
        let tx = tx.clone();
        e.submit(items, None, move |rep| tx.send((k, rep.verdicts == want)).unwrap());
    }
    drop(tx);
    let mut seen = vec![0; 40];
    for (k, ok) in rx.iter() {
        assert!(ok, "batch {k}");
        seen[k] += 1;
    }
    assert!(seen.iter().all(|&c| c == 1), "{seen:?}");
}

#[test]
fn earliest_deadline_first() {
    // One worker, so one dispatcher: hold it in the first batch's answer
    // until the others are queued, then watch the order they run in.
    let e = engine(1, None);
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    let (order_tx, order_rx) = mpsc::channel();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    e.submit(mixed(1), None, move |_| {
        started_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
    });
    // The dispatcher is now inside the first batch's answer.
    started_rx.recv().unwrap();
    let now = Instant::now();
    // Queued in this order; deadlines say 3, none, 1, 2, 0.
    for (tag, d) in [(3u32, Some(30)), (9, None), (1, Some(10)), (2, Some(20)), (0, Some(5))] {
        let tx = order_tx.clone();
        e.submit(mixed(2), d.map(|ms| now + Duration::from_secs(ms)), move |_| tx.send(tag).unwrap());
    }
    drop(order_tx);
    hold_tx.send(()).unwrap();
    let order: Vec<u32> = order_rx.iter().collect();
    assert_eq!(order, vec![0, 1, 2, 3, 9]);
}

#[test]
fn queued_small_batches_coalesce_and_keep_their_own_verdicts() {
    // One dispatcher held in a first batch's answer while 40 small batches
    // (1..=7 items, every scheme, valid and invalid mixed) and one full
    // inline-size batch queue up behind it.
    let e = engine(1, None);
    let (hold_tx, hold_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    e.submit(mixed(1), None, move |_| {
        started_tx.send(()).unwrap();
        hold_rx.recv().unwrap();
    });
    started_rx.recv().unwrap();
    let (tx, rx) = mpsc::channel();
    let pool = mixed(200);
    let mut at = 0;
    for k in 0..41usize {
        let n = if k == 20 { SigEngineConfig::DEFAULT_INLINE_MAX } else { 1 + k % 7 };
        let items: Vec<SigItem> = pool.iter().cycle().skip(at).take(n).cloned().collect();
        at += n;
        // Each batch alone, through the scalar-per-batch reference.
        let want = verify_batch(&items);
        let tx = tx.clone();
        e.submit(items, None, move |rep| tx.send((k, rep.verdicts == want, rep.path)).unwrap());
    }
    drop(tx);
    hold_tx.send(()).unwrap();
    let mut seen = vec![0; 41];
    let mut coalesced = 0;
    for (k, ok, path) in rx.iter() {
        assert!(ok, "batch {k}: verdicts differ from the batch verified alone");
        seen[k] += 1;
        if path == ExecPath::Coalesced {
            coalesced += 1;
            assert_ne!(k, 20, "a full batch has no room to share");
        }
    }
    assert!(seen.iter().all(|&c| c == 1), "each answered once: {seen:?}");
    assert!(coalesced >= 30, "under load small batches coalesce ({coalesced} did)");
}

#[test]
fn an_idle_engine_does_not_coalesce() {
    let e = engine(2, None);
    for k in 0..20u64 {
        let (tx, rx) = mpsc::channel();
        e.submit(mixed(1 + (k % 3) as usize), None, move |rep| tx.send(rep.path).unwrap());
        assert_eq!(rx.recv().unwrap(), ExecPath::Inline, "one batch at a time runs alone");
    }
}
