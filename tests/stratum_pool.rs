//! `hashrig run --pool A --pool B` against a test pool that speaks Stratum V1
//! as real pools do: BIP310 configure, subscribe with session resume,
//! difficulty changes, clean jobs, extranonce changes, garbage, a reconnect
//! request, a dropped connection with failover to B and back to A.
//!
//! The pool checks every share itself with the `sha2` crate (not hashrig's
//! hashing or header code) against the difficulty its job was issued under,
//! and refuses duplicates. Jobs are the real mining.notify in
//! tests/data/stratum_notify.jsonl.

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::json;

mod metrics_common;
mod pool_common;
mod run_common;
use metrics_common::scrape;
use pool_common::{accept, Tally, D1};
use run_common::HashrigRun;

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[test]
fn pool_session_with_failover_loses_and_duplicates_nothing() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hashrig-stratum-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(
        &cfg,
        "[stratum]\nretries_before_failover = 1\nbackoff_min_ms = 100\nhold_down_secs = 2\nprobe_interval_secs = 1\nntime_roll_secs = 1\n",
    )
    .unwrap();
    let run = HashrigRun::start_small(
        &[
            "--duration",
            "170",
            "--pool",
            &format!("stratum+tcp://{a_addr}"),
            "--pool",
            &format!("stratum+tcp://{}", b.local_addr().unwrap()),
            "--user",
            "worker1",
            "--pass",
            "secret",
            "--config",
            cfg.to_str().unwrap(),
        ],
        |c| {
            c.env("HASHRIG_LOG", "info");
        },
    );
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("a1", true);
    c.serve(&mut t, 3, "a1");
    // Harder difficulty from the next job; a1's shares still count at D1.
    c.set_difficulty(2.0 * D1);
    c.notify("a2", false);
    c.serve(&mut t, 3, "a2");
    // A new extranonce1 from the next job.
    c.en1 = vec![8, 0, 0, 9];
    c.send(json!({"id": null, "method": "mining.set_extranonce", "params": ["08000009", 4]}));
    c.notify("a3", false);
    c.serve(&mut t, 3, "a3");
    // Garbage of every kind, then a clean job.
    c.raw("this is not json\n");
    c.raw("{\"id\":null,\"method\":\"mining.notify\",\"params\":[1,2]}\n");
    c.raw(&format!("{{\"id\":null,\"method\":\"client.show_message\",\"params\":[\"{}\"]}}\n", "x".repeat(70_000)));
    c.raw("{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[\"a\"]}\n[]\n\n");
    c.send(json!({"id": 77, "method": "client.get_version", "params": []}));
    c.send(json!({"id": null, "method": "client.show_message", "params": ["hello miner"]}));
    c.notify("a4", true);
    c.serve(&mut t, 3, "a4");
    // The pool asks for a reconnect: same host, session resumed.
    c.send(json!({"id": null, "method": "client.reconnect", "params": []}));
    // A pool that resumes a session keeps its jobs: a share for a4 found
    // just before the reconnect and sent just after it is still good.
    let jobs = std::mem::take(&mut c.jobs);
    drop(c);
    let mut c = accept(&a, &[8, 0, 0, 9], "sess-a", true);
    c.jobs = jobs;
    c.set_difficulty(D1);
    c.notify("a5", true);
    c.serve(&mut t, 3, "a5");
    // A dies: the connection drops and nothing listens. Failover to B.
    drop(c);
    drop(a);
    let mut cb = accept(&b, &[7, 7, 7, 7], "sess-b", false);
    cb.set_difficulty(D1);
    cb.notify("b1", true);
    cb.serve(&mut t, 3, "b1");
    // A returns; after the hold-down the miner goes back to it.
    let a = TcpListener::bind(a_addr).unwrap();
    let (stx, srx) = mpsc::channel();
    let serve_b = std::thread::spawn(move || {
        let mut t = Tally::default();
        let until = Instant::now() + Duration::from_secs(60);
        while let Some(m) = cb.recv(until) {
            cb.handle(m, &mut t, "b1");
            if srx.try_recv().is_ok() {
                break;
            }
        }
        t
    });
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a2", false);
    c.set_difficulty(D1);
    c.notify("a6", true);
    c.serve(&mut t, 3, "a6");
    let _ = stx.send(());
    let tb = serve_b.join().unwrap();
    // Quiesce: a job no CPU finds shares for, then answer what is in flight.
    c.set_difficulty(1e9);
    c.notify("a7", true);
    let quiet = Instant::now() + Duration::from_secs(2);
    while let Some(m) = c.recv(quiet) {
        c.handle(m, &mut t, "a6");
    }

    let addr = run.metrics_addr();
    // Let in-flight answers land, then compare both sides.
    std::thread::sleep(Duration::from_millis(500));
    let body = scrape(&addr);
    let lines = run.lines();
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);

    let pool_accepted = t.accepted + tb.accepted;
    let m = |p: &str| metric(&body, p);
    println!(
        "pool accepted {pool_accepted}, versions rolled {}, client:\n{}",
        t.versions_rolled,
        body.lines().filter(|l| l.starts_with("hashrig_pool")).collect::<Vec<_>>().join("\n")
    );
    assert!(t.rejected.is_empty() && tb.rejected.is_empty(), "rejected: {:?} {:?}", t.rejected, tb.rejected);
    assert!(pool_accepted >= 21);
    assert!(t.versions_rolled > 0, "version rolling used");
    // The miner's count of accepted shares is the pools' count: none lost
    // on the way, none sent twice (the pools refuse duplicates). A share the
    // pool credited just before it dropped the connection may have lost its
    // answer with it: the miner counts that one as in flight ("no_answer"),
    // never as accepted twice or not at all.
    let accepted = m("hashrig_pool_shares_total{reason=\"none\",result=\"accepted\"}") as usize;
    let no_answer = m("hashrig_pool_shares_total{reason=\"no_answer\"") as usize;
    assert!(
        accepted <= pool_accepted && pool_accepted <= accepted + no_answer,
        "miner: {accepted} accepted, {no_answer} without an answer; pools: {pool_accepted} accepted"
    );
    assert_eq!(m("hashrig_pool_shares_total{reason=\"duplicate\""), 0.0);
    assert_eq!(m("hashrig_pool_shares_total{reason=\"low_difficulty\""), 0.0);
    // Every share found ends as accepted or stale (job cleared, session gone,
    // or in flight when a connection dropped): none disappears.
    let found = m("hashrig_pool_shares_found_total");
    let ended = m("hashrig_pool_shares_total{");
    assert_eq!(found, ended, "every share found has an outcome");
    assert_eq!(m("hashrig_pool_failovers_total{direction=\"to_backup\"}"), 1.0);
    assert_eq!(m("hashrig_pool_failovers_total{direction=\"to_primary\"}"), 1.0);
    assert!(m("hashrig_pool_reconnects_total{cause=\"requested\"}") >= 1.0);
    assert_eq!(m("hashrig_pool_connected{role=\"primary\"}"), 1.0);
    assert!(lines.iter().any(|l| l.contains("hello miner")), "client.show_message logged");
    assert!(lines.iter().any(|l| l.contains("version rolling on, mask 1fffe000")));
}
