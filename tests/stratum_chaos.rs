//! Hostile and broken pools against `hashrig run --pool`: a difficulty far
//! below anything real (1e-12: every nonce a "share"); a primary that dies
//! mid-line and a backup that never answers mining.configure. Counts what
//! matters: shares found vs. answered or written off, peak memory, hashing.

use std::net::TcpListener;
use std::time::{Duration, Instant};

mod metrics_common;
mod pool_common;
mod run_common;
use metrics_common::scrape;
use pool_common::{accept, accept_with, Conn, Tally, D1};
use run_common::HashrigRun;

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Resident memory of process `pid`, bytes.
fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn start(pool: &TcpListener) -> HashrigRun {
    start_with(&[pool], None)
}

fn start_with(pools: &[&TcpListener], config: Option<&std::path::Path>) -> HashrigRun {
    let mut args: Vec<String> = vec!["--duration".into(), "60".into()];
    for p in pools {
        args.push("--pool".into());
        args.push(format!("stratum+tcp://{}", p.local_addr().unwrap()));
    }
    args.extend(["--user", "worker1", "--pass", "secret"].map(String::from));
    if let Some(c) = config {
        args.push("--config".into());
        args.push(c.to_str().unwrap().into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    HashrigRun::start_small(&args, |c| {
        c.env("HASHRIG_LOG", "info");
    })
}

/// Serves the miner for `d`, answering every message; returns the peak RSS
/// of `pid` seen meanwhile.
fn serve_for(c: &mut Conn, t: &mut Tally, prefix: &str, d: Duration, pid: u32) -> u64 {
    let until = Instant::now() + d;
    let mut peak = rss(pid);
    let mut last = Instant::now();
    while Instant::now() < until {
        if let Some(m) = c.recv(until) {
            c.handle(m, t, prefix);
        }
        if last.elapsed() > Duration::from_millis(100) {
            peak = peak.max(rss(pid));
            last = Instant::now();
        }
    }
    peak.max(rss(pid))
}

/// The third row: a pool sets difficulty 1e-12. The miner clamps it
/// to the floor (logged and counted), memory stays within twice what it is
/// at a normal difficulty, it keeps hashing, and every share the pool
/// accepted is one the miner counts.
#[test]
fn difficulty_1e_12_is_clamped_and_memory_stays_bounded() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut run = start(&a);
    let pid = run.pid();
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("n1", true);
    c.serve(&mut t, 3, "n1");
    let normal = serve_for(&mut c, &mut t, "n1", Duration::from_secs(2), pid);
    let addr = run.metrics_addr();
    let hashes_before = metric(&scrape(&addr), "hashrig_hashes_total{");

    c.set_difficulty(1e-12);
    c.notify("x1", true);
    let peak = serve_for(&mut c, &mut t, "x1", Duration::from_secs(4), pid);
    let body = scrape(&addr);
    let hashes_mid = metric(&body, "hashrig_hashes_total{");
    std::thread::sleep(Duration::from_millis(500));
    let hashes_after = metric(&scrape(&addr), "hashrig_hashes_total{");

    // Quiesce: a job no CPU finds shares for, then answer what is in flight.
    c.set_difficulty(1e9);
    c.notify("q1", true);
    let _ = serve_for(&mut c, &mut t, "q1", Duration::from_secs(1), pid);
    let body = scrape(&addr);
    let status = run.interrupt();
    let m = |p: &str| metric(&body, p);
    println!(
        "rss normal {} MB, peak under 1e-12 {} MB; pool accepted {} (x1: {}); hashes {hashes_before} → {hashes_mid} → {hashes_after}",
        normal >> 20,
        peak >> 20,
        t.accepted,
        t.current
    );
    assert!(status.success(), "exit status {status}");
    assert!(t.rejected.is_empty(), "rejected: {:?}", t.rejected);
    assert!(m("hashrig_pool_difficulty_clamped_total") >= 1.0, "the low difficulty is counted");
    assert!(run.printed("below the floor"), "and logged");
    assert!(t.current >= 3, "shares of the 1e-12 job are found and accepted (at the floor)");
    assert!(peak <= 2 * normal, "memory {} MB under 1e-12 vs {} MB normal", peak >> 20, normal >> 20);
    assert!(hashes_mid > hashes_before && hashes_after > hashes_mid, "the miner keeps hashing");
    // Nothing lost, nothing sent twice.
    assert_eq!(m("hashrig_pool_shares_total{reason=\"none\",result=\"accepted\"}") as usize, t.accepted);
    assert_eq!(m("hashrig_pool_shares_found_total"), m("hashrig_pool_shares_total{"));
}

/// The primary (version rolling on) dies in the middle of a line; the backup
/// never answers mining.configure. The backup's session must not inherit the
/// primary's version mask: a share with version bits there is rejected
/// (before the fix every share on the backup was).
#[test]
fn failover_to_a_backup_without_version_rolling_sends_no_version_bits() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hashrig-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(&cfg, "[stratum]\nretries_before_failover = 1\nbackoff_min_ms = 100\nhold_down_secs = 600\n")
        .unwrap();
    let mut run = start_with(&[&a, &b], Some(&cfg));
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("a1", true);
    c.serve(&mut t, 3, "a1");
    assert!(t.versions_rolled > 0, "the primary negotiated version rolling");
    // Half a message, then the primary is gone.
    c.raw("{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"a2\",");
    drop(c);
    drop(a);
    let mut cb = accept_with(&b, &[7, 7, 7, 7], "sess-b", false, false);
    let mut tb = Tally::default();
    cb.set_difficulty(D1);
    cb.notify("b1", true);
    cb.serve(&mut tb, 3, "b1");
    cb.set_difficulty(1e9);
    cb.notify("q1", true);
    let until = Instant::now() + Duration::from_secs(1);
    while let Some(m) = cb.recv(until) {
        cb.handle(m, &mut tb, "q1");
    }
    let status = run.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success());
    assert!(t.rejected.is_empty(), "primary rejected: {:?}", t.rejected);
    assert!(tb.rejected.is_empty(), "backup rejected: {:?}", tb.rejected);
}

/// The pool goes away and hashrig keeps finding shares for its job (queued
/// for a resumed session); then SIGTERM. The queued shares are counted as
/// not sent (they used to vanish uncounted) and the stop is clean.
#[test]
fn shares_queued_at_the_stop_are_counted() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hashrig-chaos-q-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(&cfg, "[stratum]\nbackoff_min_ms = 5000\n").unwrap();
    let mut run = start_with(&[&a], Some(&cfg));
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("a1", true);
    c.serve(&mut t, 2, "a1");
    drop(c);
    drop(a);
    // Disconnected, mining on: shares pile up in the queue.
    std::thread::sleep(Duration::from_millis(1500));
    let pid = run.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0));
    let lines = run.lines();
    assert!(
        lines.iter().any(|l| l.contains("found while disconnected were not sent before the stop")),
        "{}",
        lines.join("\n")
    );
    assert!(lines.iter().any(|l| l.contains("stopped: speed")));
}

/// A pool (or a man in the middle) that answers every connection with
/// client.reconnect at once: hashrig backs off between the reconnects
/// instead of reconnecting in a tight loop.
#[test]
fn a_reconnect_storm_is_backed_off() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hashrig-chaos-r-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(&cfg, "[stratum]\nbackoff_min_ms = 100\n").unwrap();
    let mut run = start_with(&[&a], Some(&cfg));
    let sessions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n = sessions.clone();
    std::thread::spawn(move || loop {
        let mut c = accept(&a, &[8, 0, 0, 2], "", false);
        n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        c.send(serde_json::json!({"id": null, "method": "client.reconnect", "params": []}));
    });
    std::thread::sleep(Duration::from_secs(3));
    let count = sessions.load(std::sync::atomic::Ordering::Relaxed);
    let status = run.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(status.success());
    // The first at once, then 100 ms doubling: 0.1 + 0.2 + 0.4 + 0.8 + 1.6 s,
    // about 6 sessions in 3 s (it used to be hundreds).
    assert!((2..=9).contains(&count), "{count} sessions in 3 s");
}
