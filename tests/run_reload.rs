//! Config reload of a running `hashrig run` (SIGHUP, and `--watch`): a new
//! pool list moves the shares to the new pool in the same process while
//! the old pool still gets the shares of its own jobs; a new thread count
//! restarts the PoW workers; an invalid file keeps the running config and
//! is counted; a key that needs a restart is named in the log.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod metrics_common;
mod pool_common;
mod run_common;
use metrics_common::scrape;
use pool_common::{accept, Tally, D1};
use run_common::HashrigRun;

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn signal(pid: u32, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

/// Threads of process `pid` whose name starts with `prefix`.
fn threads_named(pid: u32, prefix: &str) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).unwrap_or_default().starts_with(prefix))
        .count()
}

/// A pool on its own thread: one connection, one job, every message
/// answered until `stop`; the tally when it ends.
fn serve_pool(
    l: TcpListener,
    en1: [u8; 4],
    job: &'static str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Tally> {
    std::thread::spawn(move || {
        let mut t = Tally::default();
        let mut c = accept(&l, &en1, job, false);
        c.set_difficulty(D1);
        c.notify(job, true);
        while !stop.load(Ordering::Relaxed) {
            match c.recv(Instant::now() + Duration::from_millis(200)) {
                Some(m) => c.handle(m, &mut t, job),
                // Timeout, or the miner left (then recv returns at once).
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        // What the miner still sends (the last shares of this pool's job),
        // until it leaves or for a second.
        let until = Instant::now() + Duration::from_secs(1);
        while let Some(m) = c.recv(until) {
            c.handle(m, &mut t, job);
        }
        t
    })
}

fn wait_until(what: &str, within: Duration, run: &HashrigRun, mut f: impl FnMut() -> bool) {
    let until = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < until, "{what} within {within:?}:\n{}", run.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_moves_pools_restarts_workers_and_keeps_a_bad_config_out() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("hashrig-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    let file = |pool: std::net::SocketAddr, threads: usize, extra: &str| {
        format!(
            "[[pool]]\nurl = \"stratum+tcp://{pool}\"\nuser = \"worker1\"\npass = \"secret\"\n\
             [stratum]\nbackoff_min_ms = 100\n[cpu]\nthreads = {threads}\npriority = \"normal\"\npin = false\n{extra}"
        )
    };
    std::fs::write(&cfg, file(a_addr, 1, "")).unwrap();
    let run = HashrigRun::start(
        &[
            "--metrics",
            "127.0.0.1:0",
            "--status-interval",
            "1",
            "--duration",
            "170",
            "--config",
            cfg.to_str().unwrap(),
            "--watch",
        ],
        |_| {},
    );
    let stop_a = Arc::new(AtomicBool::new(false));
    let pool_a = serve_pool(a, [1, 0, 0, 1], "ja", stop_a.clone());
    let metrics = run.metrics_addr();
    let accepted = |addr: &str| metric(&scrape(addr), "hashrig_pool_shares_total{reason=\"none\",result=\"accepted\"}");
    wait_until("3 shares accepted by pool A", Duration::from_secs(60), &run, || accepted(&metrics) >= 3.0);
    assert_eq!(threads_named(run.pid(), "cpu-worker"), 1);

    // New pool and two threads: same process, shares to B, A keeps its own.
    let stop_b = Arc::new(AtomicBool::new(false));
    let pool_b = serve_pool(b, [2, 0, 0, 2], "jb", stop_b.clone());
    std::fs::write(&cfg, file(b_addr, 2, "")).unwrap();
    signal(run.pid(), "-HUP");
    run.wait_for("reload: restarting the PoW workers: 1 → 2 workers", Duration::from_secs(20));
    run.wait_for("reload: applied (", Duration::from_secs(30));
    assert_eq!(threads_named(run.pid(), "cpu-worker"), 2);
    let before = accepted(&metrics);
    wait_until("3 shares accepted by pool B", Duration::from_secs(60), &run, || accepted(&metrics) >= before + 3.0);
    stop_a.store(true, Ordering::Relaxed);
    let ta = pool_a.join().unwrap();

    // An invalid file: the running config stays, the error is counted.
    std::fs::write(&cfg, "[cpu]\nthreads = \"many\"\n").unwrap();
    signal(run.pid(), "-HUP");
    run.wait_for("reload: keeping the running config", Duration::from_secs(10));
    let body = scrape(&metrics);
    assert_eq!(metric(&body, "hashrig_config_reloads_total{result=\"invalid\"}"), 1.0, "{body}");
    let before = accepted(&metrics);
    wait_until("mining goes on on pool B", Duration::from_secs(60), &run, || accepted(&metrics) >= before + 2.0);
    assert_eq!(threads_named(run.pid(), "cpu-worker"), 2);

    // A key that needs a restart, picked up by --watch: named, not applied.
    std::fs::write(&cfg, file(b_addr, 2, "[sigserve]\naddr = \"127.0.0.1:0\"\n")).unwrap();
    run.wait_for("needs a restart (or a live upgrade, SIGUSR2) to take effect: sigserve.addr", Duration::from_secs(10));
    assert!(!run.printed("sigserve: listening"), "sigserve is not started by a reload");

    stop_b.store(true, Ordering::Relaxed);
    let tb = pool_b.join().unwrap();
    let body = scrape(&metrics);
    let lines = run.lines();
    drop(run);
    let _ = std::fs::remove_dir_all(&dir);
    // Each pool checked every share against its own jobs: a share of A's
    // job sent to B would be "Job not found" there.
    assert!(ta.rejected.is_empty() && tb.rejected.is_empty(), "rejected: {:?} {:?}", ta.rejected, tb.rejected);
    assert!(ta.accepted >= 3 && tb.accepted >= 5, "A {} B {}", ta.accepted, tb.accepted);
    // No share found on A's job was lost in the switch.
    assert_eq!(metric(&body, "hashrig_pool_shares_total{reason=\"shutdown\""), 0.0, "{body}");
    assert_eq!(metric(&body, "hashrig_pool_shares_total{reason=\"job_gone\""), 0.0, "{body}");
    assert_eq!(metric(&body, "hashrig_config_reloads_total{result=\"applied\"}"), 1.0, "{body}");
    assert!(lines.iter().filter(|l| l.contains("stratum: connecting to primary pool")).count() == 2);
}
