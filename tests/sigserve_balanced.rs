//! Verification servers behind a real load balancer: HAProxy in TCP mode
//! with the shipped tools/haproxy/hashrig-sigserve.cfg, health-checking
//! each server's /readyz, in front of two `hashrig run --no-mine --sigserve`
//! processes; validators (the project's SigClient) stream mixed batches
//! through it. One server is stopped with SIGTERM mid-stream (it turns
//! unready, drains, answers what it accepted), restarted, then the other is
//! killed with SIGKILL: every batch is answered exactly once and as the
//! signatures say, and no validator sees an error. mTLS passes through the
//! balancer untouched (tested once).
//!
//! HAProxy must be installed (`make deps` installs the Debian package): the
//! test fails, not skips, without it. Loopback addresses only.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hashrig::node::sigserve::frame::Frame;
use hashrig::node::sigserve::{ClientTls, ServeAddr, SigClient};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::Scheme;

mod run_common;
use run_common::HashrigRun;

/// How long a stop on SIGTERM drains here: above HAProxy's 2 checks 1 s
/// apart, with room for a loaded 2-core machine.
const DRAIN_SECS: &str = "4";

fn haproxy() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join("haproxy"))
        .find(|p| p.is_file())
        .expect("haproxy not found: install it (`make deps` installs the Debian package haproxy)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn tls_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls").join(name).to_str().unwrap().to_owned()
}

/// GET `path` on `addr` (HTTP/1.0: never chunked): the status code and
/// body, or None if nothing
/// answered within 2 s.
fn get(addr: &str, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some((code, if chunked { dechunk(body)? } else { body.to_owned() }))
}

/// A chunked body (HAProxy's stats page is chunked whatever the request).
fn dechunk(mut rest: &str) -> Option<String> {
    let mut out = String::new();
    loop {
        let (size, tail) = rest.split_once("\r\n")?;
        let n = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if n == 0 {
            return Some(out);
        }
        out.push_str(tail.get(..n)?);
        rest = tail.get(n..)?.strip_prefix("\r\n")?;
    }
}

/// Polls until `f` holds, failing with `what` after `within`.
fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
    t0.elapsed()
}

/// One `hashrig run --no-mine --sigserve` on fixed ports (a restart binds
/// the same ones).
struct Backend {
    run: HashrigRun,
    sig: String,
    metrics: String,
}

impl Backend {
    fn start(sig_port: u16, metrics_port: u16, tls: bool) -> Backend {
        let sig = format!("127.0.0.1:{sig_port}");
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut args: Vec<String> = [
            "--no-mine",
            "--sigserve",
            &sig,
            "--metrics",
            &metrics,
            "--threads",
            "1",
            "--no-pin",
            "--sig-demo-rate",
            "0",
            "--sig-engines",
            "cpu",
            "--status-interval",
            "60",
            "--sigserve-drain-secs",
            DRAIN_SECS,
        ]
        .map(str::to_owned)
        .to_vec();
        if tls {
            for (flag, file) in [
                ("--sigserve-tls-cert", "pool.pem"),
                ("--sigserve-tls-key", "pool.key"),
                ("--sigserve-client-ca", "ca.pem"),
            ] {
                args.push(flag.into());
                args.push(tls_file(file));
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let b = Backend { run: HashrigRun::start(&args, |_| {}), sig, metrics };
        wait_until(&format!("{} ready", b.sig), Duration::from_secs(30), || b.readyz() == Some(200));
        b
    }

    fn readyz(&self) -> Option<u16> {
        get(&self.metrics, "/readyz").map(|(c, _)| c)
    }

    /// Binary batches this process answered (its own counter).
    fn answered(&self) -> f64 {
        let Some((200, text)) = get(&self.metrics, "/metrics") else { return 0.0 };
        text.lines()
            .filter(|l| l.starts_with("hashrig_sigserve_frames_total{") && l.contains("kind=\"batch\""))
            .filter(|l| l.contains("result=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn signal(&self, sig: &str) {
        let pid = self.run.pid().to_string();
        assert!(Command::new("kill").args([sig, &pid]).status().unwrap().success());
    }

    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.run.try_wait() {
                return s;
            }
            assert!(t0.elapsed() < within, "{} still running after {within:?}", self.sig);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// HAProxy with the shipped config, the addresses in its environment.
struct Balancer {
    child: Child,
    front: String,
    stats: String,
}

impl Balancer {
    fn start(a: &Backend, b: &Backend) -> Balancer {
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/haproxy/hashrig-sigserve.cfg");
        let front = format!("127.0.0.1:{}", free_port());
        let stats = format!("127.0.0.1:{}", free_port());
        let port = |m: &str| m.rsplit(':').next().unwrap().to_owned();
        let child = Command::new(haproxy())
            .arg("-db") // foreground
            .arg("-f")
            .arg(&cfg)
            .env("HASHRIG_LB_BIND", &front)
            .env("HASHRIG_LB_STATS", &stats)
            .env("HASHRIG_SIG1", &a.sig)
            .env("HASHRIG_SIG1_CHECK_PORT", port(&a.metrics))
            .env("HASHRIG_SIG2", &b.sig)
            .env("HASHRIG_SIG2_CHECK_PORT", port(&b.metrics))
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start haproxy");
        let lb = Balancer { child, front, stats };
        lb.wait_status("sig1", "UP");
        lb.wait_status("sig2", "UP");
        lb
    }

    /// The server's status on the stats page ("UP", "DOWN", "UP 1/2", …).
    fn status(&self, server: &str) -> String {
        let Some((200, csv)) = get(&self.stats, "/stats;csv") else { return "no stats".into() };
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next().unwrap_or("").trim_start_matches("# ").split(',').collect();
        let col = |name: &str| header.iter().position(|h| *h == name);
        let (Some(px), Some(sv), Some(st)) = (col("pxname"), col("svname"), col("status")) else {
            return "no status column".into();
        };
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .find(|f| f.get(px) == Some(&"sigserve") && f.get(sv) == Some(&server))
            .and_then(|f| f.get(st).map(|s| s.to_string()))
            .unwrap_or_else(|| "absent".into())
    }

    fn wait_status(&self, server: &str, want: &str) {
        let t0 = Instant::now();
        loop {
            let last = self.status(server);
            if last == want {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "HAProxy: {server} is {last:?}, not {want:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> ServeAddr {
        self.front.parse().unwrap()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one validator saw.
#[derive(Debug, Default)]
struct Seen {
    batches: u64,
    /// Wrong verdicts, answers to batches not asked or answered twice.
    wrong: Vec<String>,
    /// Errors the client returned to its caller.
    errors: Vec<String>,
    reconnects: u64,
    resent: u64,
}

/// Keeps 4 batches of 12 mixed items in flight until `stop`, then collects
/// the rest; every answer is checked item by item against the pattern its
/// id fixes (every fifth signature broken).
fn validator(addr: ServeAddr, tls: Option<ClientTls>, seed: u64, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    let mut c = match SigClient::connect_with(&addr, tls.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            seen.errors.push(format!("connect: {e}"));
            return seen;
        }
    };
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let schemes = [Scheme::Ed25519, Scheme::Ecdsa, Scheme::Schnorr];
    let mut expect: HashMap<u64, Vec<bool>> = HashMap::new();
    let mut n = 0u64;
    let mut send = |c: &mut SigClient, expect: &mut HashMap<u64, Vec<bool>>| {
        let items: Vec<_> = (0..12u64)
            .map(|i| {
                let it = valid_item(schemes[((n + i) % 3) as usize], seed * 1000 + (n + i) % 40);
                if (n + i).is_multiple_of(5) {
                    mutate(&it, n + i)
                } else {
                    it
                }
            })
            .collect();
        let want = (0..12u64).map(|i| !(n + i).is_multiple_of(5)).collect();
        n += 1;
        c.send_batch(&items, None).map(|id| {
            expect.insert(id, want);
        })
    };
    for _ in 0..4 {
        if let Err(e) = send(&mut c, &mut expect) {
            seen.errors.push(format!("send: {e}"));
            return seen;
        }
    }
    while !expect.is_empty() {
        match c.recv() {
            Ok(Frame::Verdicts { id, verdicts }) => {
                seen.batches += 1;
                match expect.remove(&id) {
                    None => seen.wrong.push(format!("answer to {id}: not asked, or answered twice")),
                    Some(want) => {
                        let got: Vec<bool> = verdicts.iter().map(|v| v.is_valid()).collect();
                        if got != want {
                            seen.wrong.push(format!("batch {id}: {got:?}, want {want:?}"));
                        }
                    }
                }
                if !stop.load(Ordering::Relaxed) {
                    if let Err(e) = send(&mut c, &mut expect) {
                        seen.errors.push(format!("send: {e}"));
                        break;
                    }
                }
            }
            other => {
                seen.errors.push(format!("recv: {other:?}"));
                break;
            }
        }
    }
    let st = c.reconnect_stats();
    (seen.reconnects, seen.resent) = (st.reconnects, st.resent);
    seen
}

fn validators(
    lb: &Balancer,
    tls: Option<ClientTls>,
    n: u64,
    stop: &Arc<AtomicBool>,
) -> Vec<std::thread::JoinHandle<Seen>> {
    (0..n)
        .map(|i| {
            let (addr, tls, stop) = (lb.addr(), tls.clone(), stop.clone());
            let v = std::thread::spawn(move || validator(addr, tls, i + 1, stop));
            // One at a time, so that leastconn spreads them over both.
            std::thread::sleep(Duration::from_millis(100));
            v
        })
        .collect()
}

fn check(seen: &[Seen]) {
    println!("per validator: {seen:?}");
    for s in seen {
        assert!(s.errors.is_empty(), "a validator saw an error: {s:?}");
        assert!(s.wrong.is_empty(), "{s:?}");
        assert!(s.batches >= 5, "{s:?}");
    }
}

#[test]
fn sigterm_drains_and_sigkill_loses_no_batch_behind_haproxy() {
    let (sig_a, met_a) = (free_port(), free_port());
    let mut a = Backend::start(sig_a, met_a, false);
    let mut b = Backend::start(free_port(), free_port(), false);
    let (_, body) = get(&a.metrics, "/readyz").unwrap();
    assert!(body.contains("\"ready\":true") && body.contains("\"sigserve\":\"listening\""), "{body}");
    assert_eq!(get(&a.metrics, "/healthz").map(|(c, _)| c), Some(200));
    let lb = Balancer::start(&a, &b);

    let stop = Arc::new(AtomicBool::new(false));
    let clients = validators(&lb, None, 4, &stop);
    wait_until("both servers answer batches", Duration::from_secs(30), || a.answered() > 0.0 && b.answered() > 0.0);

    // SIGTERM to A mid-stream: unready first, still answering.
    a.signal("-TERM");
    let unready = wait_until("A's /readyz answers 503", Duration::from_secs(5), || a.readyz() == Some(503));
    let (_, body) = get(&a.metrics, "/readyz").unwrap_or_default();
    let during = a.answered();
    wait_until("A answers batches while draining", Duration::from_secs(10), || a.answered() > during);
    assert!(body.contains("\"draining\":true"), "{body}");
    lb.wait_status("sig1", "DOWN");
    let status = a.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(a.run.printed("SIGTERM: draining for 4.0 s"), "{}", a.run.lines().join("\n"));
    println!("A unready {unready:?} after SIGTERM (polled every 20 ms)");

    // A again, on the same ports; HAProxy takes it back once it is ready.
    a = Backend::start(sig_a, met_a, false);
    lb.wait_status("sig1", "UP");

    // SIGKILL to B: no goodbye; what it had not answered is resent to A.
    b.signal("-KILL");
    let _ = b.wait_exit(Duration::from_secs(10));
    wait_until("the new A answers the validators", Duration::from_secs(30), || a.answered() >= 40.0);
    lb.wait_status("sig2", "DOWN");

    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    check(&seen);
    for s in &seen {
        assert!(s.reconnects >= 1, "every validator was on B when it died: {s:?}");
    }
    assert!(seen.iter().map(|s| s.resent).sum::<u64>() > 0, "{seen:?}");
    let st = a.run.interrupt();
    assert!(st.success(), "{st}");
}

#[test]
fn mutual_tls_passes_through_the_balancer() {
    let mut a = Backend::start(free_port(), free_port(), true);
    let b = Backend::start(free_port(), free_port(), true);
    let lb = Balancer::start(&a, &b);
    let tls = ClientTls {
        ca: Some(tls_file("ca.pem").into()),
        cert: Some(tls_file("client.pem").into()),
        key: Some(tls_file("client.key").into()),
        server_name: Some("localhost".into()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let clients = validators(&lb, Some(tls.clone()), 2, &stop);
    wait_until("both TLS servers answer batches", Duration::from_secs(30), || a.answered() > 0.0 && b.answered() > 0.0);

    // The servers still demand a client certificate through the balancer.
    let no_cert = ClientTls { cert: None, key: None, ..tls.clone() };
    let refused = SigClient::connect_tls(&lb.addr(), &no_cert).and_then(|mut c| {
        c.set_reconnect(None);
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.verify(&[valid_item(Scheme::Ed25519, 1)], None)
    });
    assert!(refused.is_err(), "a client without a certificate got {refused:?}");

    // A drains and stops; its validator moves to B over TLS.
    a.signal("-TERM");
    assert_eq!(a.wait_exit(Duration::from_secs(30)).code(), Some(0));
    let at = b.answered();
    wait_until("B answers both validators", Duration::from_secs(30), || b.answered() >= at + 20.0);
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    check(&seen);
    assert!(seen.iter().any(|s| s.reconnects >= 1), "the validator on A moved: {seen:?}");
}
