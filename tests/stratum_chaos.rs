//! Hostile and broken pools against `hashrig run --pool`: a difficulty far
//! below anything real (1e-12: every nonce a "share"); a primary that dies
//! mid-line and a backup that never answers mining.configure; a pool that
//! stops reading; a job id reused after a reconnect. Counts what matters:
//! shares found vs. answered or written off, peak memory, hashing.

use std::net::TcpListener;
use std::time::{Duration, Instant};

mod metrics_common;
mod pool_common;
mod run_common;
use metrics_common::scrape;
use pool_common::{accept, accept_then, accept_with, Conn, Tally, D1};
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

/// A listener whose connections have a 4 KiB receive buffer: a pool that
/// stops reading fills it, and then the miner's send buffer, quickly.
fn small_rcvbuf_listener() -> TcpListener {
    use std::os::fd::AsRawFd;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let size: libc::c_int = 4096;
    // SAFETY: a valid socket and a c_int option of its size.
    let rc = unsafe {
        libc::setsockopt(
            l.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    l
}

/// The pool stops reading its socket for good (it stays open). Shares keep
/// coming; to fill the miner's send buffer (megabytes on loopback) within a
/// second rather than minutes, the pool also sends requests whose answers are
/// large: 200 mining.ping with 60 000-character ids, answered by nobody's
/// reading. The stop check and timers must not freeze.
fn stop_reading(c: &mut Conn) {
    let mut w = c.w.try_clone().unwrap();
    let id = "p".repeat(60_000);
    std::thread::spawn(move || {
        use std::io::Write;
        for i in 0..200 {
            let line = format!("{{\"id\":\"{id}{i}\",\"method\":\"mining.ping\",\"params\":[]}}\n");
            if w.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    });
}

/// A pool that stops reading: the miner's write to it stalls, times out
/// (`write_timeout_secs`, 2 s here), the connection is dropped and counted
/// (`cause="timeout"`), the miner fails over to the backup and mines on; the
/// shares it could not hand to the stalled pool are written off and counted,
/// none lost.
#[test]
fn a_pool_that_stops_reading_is_dropped_and_the_backup_mines_on() {
    let a = small_rcvbuf_listener();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hashrig-chaos-w-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(
        &cfg,
        "[stratum]\nretries_before_failover = 1\nbackoff_min_ms = 100\nhold_down_secs = 600\nwrite_timeout_secs = 2\n",
    )
    .unwrap();
    let mut run = start_with(&[&a, &b], Some(&cfg));
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("a1", true);
    c.serve(&mut t, 3, "a1");
    let stalled = Instant::now();
    stop_reading(&mut c);
    // `c` stays open and unread until the end of the test.
    let mut cb = accept(&b, &[7, 7, 7, 7], "sess-b", false);
    let failover = stalled.elapsed();
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
    let body = scrape(&run.metrics_addr());
    let status = run.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
    let m = |p: &str| metric(&body, p);
    println!(
        "failover {failover:?} after the pool stopped reading; backup accepted {}; shares found {} = with an outcome {}",
        tb.accepted,
        m("hashrig_pool_shares_found_total"),
        m("hashrig_pool_shares_total{")
    );
    assert!(status.success(), "exit status {status}");
    assert!(failover < Duration::from_secs(8), "failover took {failover:?}");
    assert!(run.printed("did not take a message within"), "the write timed out");
    assert!(m("hashrig_pool_reconnects_total{cause=\"timeout\"}") >= 1.0, "{body}");
    assert!(t.rejected.is_empty() && tb.rejected.is_empty(), "rejected: {:?} {:?}", t.rejected, tb.rejected);
    assert!(tb.current >= 3, "the backup gets shares");
    // Accepted by either pool as the miner counts them; nothing lost.
    assert_eq!(m("hashrig_pool_shares_total{reason=\"none\",result=\"accepted\"}") as usize, t.accepted + tb.accepted);
    assert_eq!(m("hashrig_pool_shares_found_total"), m("hashrig_pool_shares_total{"));
    // Per pool, as each pool counted them (/api/summary's shares_by_pool).
    assert_eq!(m("hashrig_pool_role_shares_total{result=\"accepted\",role=\"primary\"}") as usize, t.accepted);
    assert_eq!(m("hashrig_pool_role_shares_total{result=\"accepted\",role=\"backup\"}") as usize, tb.accepted);
    assert_eq!(m("hashrig_pool_role_shares_total{"), m("hashrig_pool_shares_total{"));
    drop(c);
}

/// SIGTERM while the miner is stuck writing to a pool that stopped reading
/// (the default 10 s write timeout): the stop cuts the write, exit status 0
/// and the summary within a few seconds.
#[test]
fn sigterm_while_stuck_writing_to_the_pool_stops_promptly() {
    let a = small_rcvbuf_listener();
    let mut run = start(&a);
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("a1", true);
    c.serve(&mut t, 2, "a1");
    stop_reading(&mut c);
    std::thread::sleep(Duration::from_millis(1500));
    let pid = run.pid().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = run.try_wait() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "no stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = t0.elapsed();
    println!("stopped {took:?} after SIGTERM");
    assert_eq!(status.code(), Some(0));
    assert!(run.printed("stopped: speed"), "the summary");
    assert!(run.printed("the pool has not taken a message"), "it was stuck writing");
    assert!(took < Duration::from_secs(5), "stop took {took:?} (the write timeout is 10 s)");
    drop(c);
}

/// After a reconnect (the session resumed, so its jobs stay valid), the pool
/// sends a job that reuses the old session's job id with other content
/// (`clean_jobs` false) before answering mining.authorize. The shares found
/// for the old job while disconnected must not be sent as shares of the new
/// one: the pool re-hashes every share against the job its id names now.
#[test]
fn a_job_id_reused_after_a_reconnect_gets_no_shares_of_the_old_job() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = std::env::temp_dir().join(format!("hashrig-chaos-j-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(&cfg, "[stratum]\nbackoff_min_ms = 1500\n").unwrap();
    let mut run = start_with(&[&a], Some(&cfg));
    let mut t = Tally::default();
    let mut c = accept(&a, &[8, 0, 0, 2], "sess-a", false);
    c.set_difficulty(D1);
    c.notify("j1", true);
    c.serve(&mut t, 3, "j1");
    let rolling = c.rolling;
    drop(c);
    // Disconnected for the backoff: shares of the old j1 are queued.
    let mut c = accept_then(&a, &[8, 0, 0, 2], "sess-a", true, true, |c| {
        c.rolling = rolling;
        c.set_difficulty(D1);
        // Same id, other content: one more merkle branch.
        c.notify_with("j1", false, |p| p[4] = serde_json::json!(["11".repeat(32)]));
    });
    c.serve(&mut t, 3, "j1");
    c.set_difficulty(1e9);
    c.notify("q1", true);
    let until = Instant::now() + Duration::from_secs(1);
    while let Some(m) = c.recv(until) {
        c.handle(m, &mut t, "q1");
    }
    let body = scrape(&run.metrics_addr());
    let status = run.interrupt();
    let _ = std::fs::remove_dir_all(&dir);
    let m = |p: &str| metric(&body, p);
    println!(
        "queued {} while disconnected, written off as session_changed {}; pool accepted {}",
        m("hashrig_pool_shares_queued_total"),
        m("hashrig_pool_shares_total{reason=\"session_changed\""),
        t.accepted
    );
    assert!(status.success(), "exit status {status}");
    assert!(m("hashrig_pool_shares_queued_total") >= 1.0, "shares were queued during the disconnect: {body}");
    assert!(t.rejected.is_empty(), "shares of the old j1 sent as the new j1: {:?}", t.rejected);
    assert_eq!(m("hashrig_pool_shares_found_total"), m("hashrig_pool_shares_total{"));
}
