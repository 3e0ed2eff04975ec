//! Load on loopback: many clients sending pipelined batches for a bounded
//! time; every batch answered once, correctly, nothing lost. CI runs it for
//! a few seconds; `HASHRIG_SIGSERVE_LOAD_SECS=60 cargo test --release --test
//! sigserve_load` runs the minute the issue asks for.

mod sigserve_common;
use sigserve_common::*;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashrig::node::sigserve::frame::Frame;
use hashrig::node::sigserve::SigClient;

#[test]
fn many_clients_nothing_lost() {
    let secs: f64 = std::env::var("HASHRIG_SIGSERVE_LOAD_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let clients: usize = std::env::var("HASHRIG_SIGSERVE_LOAD_CLIENTS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    // Small budgets so back-pressure is exercised, not just queueing.
    let srv = server(|c| {
        c.max_items = 512;
        c.max_inflight_items = 2048;
        c.max_inflight_per_conn = 4;
    });
    let addr = srv.local_addr().clone();
    let pool = Arc::new(pool());
    let batches = Arc::new(AtomicU64::new(0));
    let items_done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let handles: Vec<_> = (0..clients)
        .map(|k| {
            let (addr, pool, batches, items_done) = (addr.clone(), pool.clone(), batches.clone(), items_done.clone());
            std::thread::spawn(move || {
                let mut c = SigClient::connect(&addr).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                let mut outstanding: HashMap<u64, Vec<bool>> = HashMap::new();
                let mut salt = k as u64 * 1_000_003;
                while Instant::now() < end || !outstanding.is_empty() {
                    while Instant::now() < end && outstanding.len() < 3 {
                        salt += 1;
                        let n = 1 + (salt as usize * 7919) % 400;
                        let (items, expect) = batch(&pool, n, salt, 6);
                        let id = c.send_batch(&items, Some(Duration::from_millis(50))).unwrap();
                        outstanding.insert(id, expect);
                    }
                    if outstanding.is_empty() {
                        break;
                    }
                    match c.recv().unwrap() {
                        Frame::Verdicts { id, verdicts } => {
                            let want = outstanding.remove(&id).expect("an answer for an outstanding id, once");
                            let got: Vec<bool> = verdicts.iter().map(|v| v.is_valid()).collect();
                            assert_eq!(got, want, "client {k} batch {id}");
                            batches.fetch_add(1, Ordering::Relaxed);
                            items_done.fetch_add(got.len() as u64, Ordering::Relaxed);
                        }
                        f => panic!("client {k}: unexpected {f:?}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let st = srv.stats();
    let accepted = st.batches_accepted.load(Ordering::Relaxed);
    let answered = st.batches_answered.load(Ordering::Relaxed);
    assert_eq!(accepted, answered);
    assert_eq!(answered, batches.load(Ordering::Relaxed));
    eprintln!(
        "load: {clients} clients, {secs} s: {answered} batches, {} items answered",
        items_done.load(Ordering::Relaxed)
    );
    assert!(answered > 0);
    srv.shutdown();
}
