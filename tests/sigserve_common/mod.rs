//! Shared helpers of the sigserve tests.
#![allow(dead_code)]

use hashrig::node::sigserve::{ServeAddr, ServerConfig, SigServer};
use hashrig::sched::{SigEngine, SigEngineConfig};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{Scheme, SigItem};
use hashrig::topo::{PinPlan, PlanOptions, Topology};

pub fn engine(threads: usize) -> SigEngine {
    let plan = PinPlan::build(&Topology::fallback(threads), &PlanOptions::default()).unwrap();
    let mut cfg = SigEngineConfig::new(plan);
    cfg.pin = false;
    SigEngine::start(cfg, None).unwrap()
}

pub fn server(cfg: impl FnOnce(&mut ServerConfig)) -> SigServer {
    let mut c = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg(&mut c);
    SigServer::start(c, engine(2), None).unwrap()
}

pub fn unix_addr(tag: &str) -> ServeAddr {
    let p = std::env::temp_dir().join(format!("hashrig-sigserve-{}-{tag}.sock", std::process::id()));
    ServeAddr::Unix(p)
}

/// A pool of valid items of every scheme, and a batch drawn from it with
/// every `bad_every`-th item mutated; returns the batch and expected validity.
pub fn pool() -> Vec<SigItem> {
    (0..16).flat_map(|i| Scheme::ALL.map(|s| valid_item(s, i))).collect()
}

pub fn batch(pool: &[SigItem], n: usize, salt: u64, bad_every: u64) -> (Vec<SigItem>, Vec<bool>) {
    let mut items = Vec::with_capacity(n);
    let mut expect = Vec::with_capacity(n);
    for i in 0..n as u64 {
        let k = i.wrapping_mul(2654435761).wrapping_add(salt);
        let base = &pool[(k % pool.len() as u64) as usize];
        if bad_every > 0 && (k / 7) % bad_every == 0 {
            items.push(mutate(base, k));
            expect.push(false);
        } else {
            items.push(base.clone());
            expect.push(true);
        }
    }
    (items, expect)
}
