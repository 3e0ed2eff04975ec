//! `hashrig run --pool A --pool B` against a test pool that speaks Stratum V1
//! as real pools do: BIP310 configure, subscribe with session resume,
//! difficulty changes, clean jobs, extranonce changes, garbage, a reconnect
//! request, a dropped connection with failover to B and back to A.
//!
//! The pool checks every share itself with the `sha2` crate (not hashrig's
//! hashing or header code) against the difficulty its job was issued under,
//! and refuses duplicates. Jobs are the real mining.notify in
//! tests/data/stratum_notify.jsonl.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const MASK: u32 = 0x1fff_e000;
const D1: f64 = 1.0 / 4096.0;

fn sha256d(b: &[u8]) -> [u8; 32] {
    Sha256::digest(Sha256::digest(b)).into()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

#[derive(Clone)]
struct Job {
    params: Vec<Value>,
    diff: f64,
    en1: Vec<u8>,
    sent: Instant,
}

#[derive(Default)]
struct Tally {
    accepted: usize,
    rejected: Vec<String>,
    versions_rolled: usize,
    seen: HashSet<(String, String, String, String, String)>,
}

struct Conn {
    r: BufReader<TcpStream>,
    w: TcpStream,
    en1: Vec<u8>,
    jobs: HashMap<String, Job>,
    diff: f64,
    session: String,
}

fn notify_template() -> Vec<Value> {
    let line = include_str!("data/stratum_notify.jsonl").lines().next().unwrap();
    let v: Value = serde_json::from_str(line).unwrap();
    v["params"].as_array().unwrap().clone()
}

impl Conn {
    fn send(&mut self, v: Value) {
        let mut s = v.to_string();
        s.push('\n');
        self.w.write_all(s.as_bytes()).unwrap();
    }
    fn raw(&mut self, s: &str) {
        self.w.write_all(s.as_bytes()).unwrap();
    }
    /// Next message, or None on EOF / timeout.
    fn recv(&mut self, until: Instant) -> Option<Value> {
        loop {
            if Instant::now() > until {
                return None;
            }
            let mut line = String::new();
            match self.r.read_line(&mut line) {
                Ok(0) => return None,
                Ok(_) => return Some(serde_json::from_str(&line).expect("the miner sends JSON")),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
                Err(_) => return None,
            }
        }
    }
    fn set_difficulty(&mut self, d: f64) {
        self.diff = d;
        self.send(json!({"id": null, "method": "mining.set_difficulty", "params": [d]}));
    }
    fn notify(&mut self, id: &str, clean: bool) {
        let mut p = notify_template();
        p[0] = json!(id);
        p[8] = json!(clean);
        self.jobs
            .insert(id.into(), Job { params: p.clone(), diff: self.diff, en1: self.en1.clone(), sent: Instant::now() });
        self.send(json!({"id": null, "method": "mining.notify", "params": p}));
    }
    /// Handles what the miner sends until `want` more shares are accepted.
    fn serve(&mut self, t: &mut Tally, want: usize, job_prefix: &str) {
        let goal = t.accepted + want;
        let until = Instant::now() + Duration::from_secs(90);
        while t.accepted < goal {
            let m =
                self.recv(until).unwrap_or_else(|| panic!("pool: no more shares (have {}, want {goal})", t.accepted));
            self.handle(m, t, job_prefix);
        }
    }
    fn handle(&mut self, m: Value, t: &mut Tally, job_prefix: &str) {
        let id = m["id"].clone();
        match m["method"].as_str().unwrap_or("") {
            "mining.submit" => {
                let p = m["params"].as_array().unwrap().clone();
                let verdict = self.check(&p, t);
                match verdict {
                    Ok(()) => {
                        let job = p[1].as_str().unwrap();
                        if job.starts_with(job_prefix) {
                            t.accepted += 1;
                        } else {
                            t.accepted += 1; // a share for an older, still valid job
                        }
                        self.send(json!({"id": id, "result": true, "error": null}));
                    }
                    Err(e) => {
                        t.rejected.push(e.clone());
                        self.send(json!({"id": id, "result": null, "error": [23, e, null]}));
                    }
                }
            }
            "mining.extranonce.subscribe" => self.send(json!({"id": id, "result": true, "error": null})),
            "" => {} // an answer to our requests (client.get_version)
            other => panic!("pool: unexpected {other} mid-session"),
        }
    }
    /// The pool's own share check: sha2 directly, header built here.
    fn check(&self, p: &[Value], t: &mut Tally) -> Result<(), String> {
        let s = |i: usize| p.get(i).and_then(Value::as_str).ok_or(format!("param {i}")).map(str::to_owned);
        let (job_id, en2, ntime, nonce) = (s(1)?, s(2)?, s(3)?, s(4)?);
        let vbits = s(5).ok();
        let key = (job_id.clone(), en2.clone(), ntime.clone(), nonce.clone(), vbits.clone().unwrap_or_default());
        if !t.seen.insert(key) {
            return Err("Duplicate share".into());
        }
        let job = self.jobs.get(&job_id).ok_or("Job not found")?;
        let en2b = hex::decode(&en2).map_err(|_| "bad en2")?;
        if en2b.len() != 4 {
            return Err("extranonce2 of the wrong size".into());
        }
        let jp = &job.params;
        let mut cb = hex::decode(jp[2].as_str().unwrap()).unwrap();
        cb.extend_from_slice(&job.en1);
        cb.extend_from_slice(&en2b);
        cb.extend_from_slice(&hex::decode(jp[3].as_str().unwrap()).unwrap());
        let mut root = sha256d(&cb);
        for b in jp[4].as_array().unwrap() {
            let mut buf = root.to_vec();
            buf.extend_from_slice(&hex::decode(b.as_str().unwrap()).unwrap());
            root = sha256d(&buf);
        }
        let job_version = u32::from_str_radix(jp[5].as_str().unwrap(), 16).unwrap();
        let mut version = job_version;
        if let Some(v) = &vbits {
            let v = u32::from_str_radix(v, 16).map_err(|_| "bad version bits")?;
            if v & !MASK != 0 {
                return Err("version bits outside the mask".into());
            }
            version = (job_version & !MASK) | v;
            if version != job_version {
                t.versions_rolled += 1;
            }
        }
        let job_ntime = u32::from_str_radix(jp[7].as_str().unwrap(), 16).unwrap();
        let nt = u32::from_str_radix(&ntime, 16).map_err(|_| "bad ntime")?;
        if nt < job_ntime || (nt - job_ntime) as u64 > job.sent.elapsed().as_secs() + 1 {
            return Err(format!("ntime {nt} rolled faster than real time"));
        }
        let mut header = Vec::with_capacity(80);
        header.extend_from_slice(&version.to_le_bytes());
        // Stratum's prevhash: 4-byte words, each byte-swapped.
        for w in hex::decode(jp[1].as_str().unwrap()).unwrap().chunks(4) {
            header.extend(w.iter().rev());
        }
        header.extend_from_slice(&root);
        header.extend_from_slice(&nt.to_le_bytes());
        header.extend_from_slice(&u32::from_str_radix(jp[6].as_str().unwrap(), 16).unwrap().to_le_bytes());
        header.extend_from_slice(&u32::from_str_radix(&nonce, 16).map_err(|_| "bad nonce")?.to_le_bytes());
        let hash = sha256d(&header);
        // hash as a number (little-endian) against diff1 / difficulty.
        let value = hash.iter().rev().fold(0f64, |acc, b| acc * 256.0 + *b as f64);
        let target = 65535.0 * 2f64.powi(208) / job.diff;
        if value > target {
            return Err("Low difficulty share".into());
        }
        let _ = now();
        Ok(())
    }
}

/// Accepts a miner connection and does the handshake; skips connections
/// that close at once (the miner's probes of a returning primary).
fn accept(l: &TcpListener, en1: &[u8], session: &str, expect_resume: bool) -> Conn {
    loop {
        let (s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut c = Conn {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            en1: en1.to_vec(),
            jobs: HashMap::new(),
            diff: D1,
            session: session.into(),
        };
        let until = Instant::now() + Duration::from_secs(30);
        let mut authorized = false;
        let mut probe = false;
        while !authorized {
            let Some(m) = c.recv(until) else {
                probe = true;
                break;
            };
            let id = m["id"].clone();
            match m["method"].as_str().unwrap() {
                "mining.configure" => {
                    assert_eq!(m["params"][0], json!(["version-rolling"]));
                    c.send(json!({"id": id, "result": {"version-rolling": true, "version-rolling.mask": "1fffe000"}, "error": null}));
                }
                "mining.subscribe" => {
                    let resumed = m["params"].get(1).and_then(Value::as_str) == Some(c.session.as_str());
                    assert_eq!(resumed, expect_resume, "session resume: {m}");
                    let sid = c.session.clone();
                    let en1 = hex::encode(&c.en1);
                    c.send(json!({"id": id, "result": [[["mining.set_difficulty", "d"], ["mining.notify", sid]], en1, 4], "error": null}));
                }
                "mining.authorize" => {
                    assert_eq!(m["params"], json!(["worker1", "secret"]));
                    c.send(json!({"id": id, "result": true, "error": null}));
                    authorized = true;
                }
                "mining.extranonce.subscribe" => c.send(json!({"id": id, "result": true, "error": null})),
                other => panic!("pool: unexpected {other} in the handshake"),
            }
        }
        if !probe {
            return c;
        }
    }
}

mod metrics_common;
mod run_common;
use metrics_common::scrape;
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
    drop(c);
    let mut c = accept(&a, &[8, 0, 0, 9], "sess-a", true);
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
    // on the way, none sent twice (the pools refuse duplicates).
    assert_eq!(m("hashrig_pool_shares_total{reason=\"none\",result=\"accepted\"}") as usize, pool_accepted);
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
