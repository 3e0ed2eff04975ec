//! hashrig against the Stratum V2 Reference Implementation's own pool role:
//! `pool_sv2` 0.7.0 from the crates registry, run from its own binary (built
//! by `make sri-pool` into target/sri-pool; `make test` builds it first),
//! fed by a Template Provider written from SRI's template-distribution
//! crates (tests/sri_tp).
//!
//! The pool's example settings, scaled to keep the test short: 60 shares a
//! minute and acknowledgements in batches of 10 (one every ~10 s), while
//! hashrig's response timeout is 3 s. Two miners: one on a standard
//! channel, one on an extended channel. A new block mid-run, whose nBits
//! every share meets. Shown:
//! - no session ends, on either side (one channel each, no reconnect);
//! - each channel opens with a non-zero nominal hash rate (the start-up
//!   timing of the hashing path), and the pool shows one on both;
//! - hashrig's accepted count is what the pool acknowledged, exactly, on
//!   both channels; 0 rejected on either side;
//! - after the new block every share is a block: every solution the pool
//!   passes on re-checks against its nBits at the Template Provider, and
//!   hashrig counts as many block candidates as the pool found blocks.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::Value;

mod metrics_common;
mod run_common;
mod sri_tp;
mod sv2_pool;
use metrics_common::scrape;
use run_common::HashrigRun;
use sri_tp::{Tp, EASY_BITS, HARD_BITS};
use sv2_pool::{AUTHORITY_PUBLIC, AUTHORITY_SECRET};

/// The pool binary: `HASHRIG_SRI_POOL`, else where `make sri-pool` puts it.
fn pool_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HASHRIG_SRI_POOL") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sri-pool/bin/pool_sv2");
    assert!(p.exists(), "{} is missing: build SRI's pool with `make sri-pool` (make test does)", p.display());
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

struct Pool {
    child: Child,
    log: PathBuf,
    monitoring: String,
}

impl Drop for Pool {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Pool {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET a monitoring API path, as JSON.
    fn get(&self, path: &str) -> Value {
        let mut s = TcpStream::connect(&self.monitoring).expect("the pool's monitoring server");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.monitoring).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let body = resp.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// Every channel of every client, from the monitoring API: (user, channel).
    fn channels(&self) -> Vec<(String, Value)> {
        let mut ids = Vec::new();
        collect(&self.get("/api/v1/clients"), "client_id", &mut ids);
        let mut out = Vec::new();
        for id in ids.iter().filter_map(Value::as_u64) {
            let mut objs = Vec::new();
            find_channels(&self.get(&format!("/api/v1/clients/{id}/channels")), &mut objs);
            for c in objs {
                let user = c["user_identity"].as_str().unwrap_or("").to_owned();
                out.push((user, c));
            }
        }
        out
    }

    fn channel(&self, user: &str) -> Option<Value> {
        self.channels().into_iter().find(|(u, _)| u == user).map(|(_, c)| c)
    }
}

/// Every value under `key`, anywhere in `v`.
fn collect(v: &Value, key: &str, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x.clone());
                }
                collect(x, key, out);
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect(x, key, out)),
        _ => {}
    }
}

/// Every object that describes a channel (it has a nominal hash rate).
fn find_channels(v: &Value, out: &mut Vec<Value>) {
    match v {
        Value::Object(m) if m.contains_key("nominal_hashrate") && m.contains_key("shares_accepted") => {
            out.push(v.clone())
        }
        Value::Object(m) => m.values().for_each(|x| find_channels(x, out)),
        Value::Array(a) => a.iter().for_each(|x| find_channels(x, out)),
        _ => {}
    }
}

fn start_pool(dir: &Path, tp: &Tp, shares_per_minute: f64) -> (Pool, u16) {
    let port = free_port();
    let mport = free_port();
    let cfg = dir.join("pool.toml");
    std::fs::write(
        &cfg,
        format!(
            "authority_public_key = \"{AUTHORITY_PUBLIC}\"\n\
             authority_secret_key = \"{AUTHORITY_SECRET}\"\n\
             cert_validity_sec = 3600\n\
             listen_address = \"127.0.0.1:{port}\"\n\
             coinbase_reward_script = \"addr(tb1qa0sm0hxzj0x25rh8gw5xlzwlsfvvyz8u96w3p8)\"\n\
             server_id = 1\n\
             pool_signature = \"hashrig test\"\n\
             shares_per_minute = {shares_per_minute:.1}\n\
             share_batch_size = 10\n\
             monitoring_address = \"127.0.0.1:{mport}\"\n\
             monitoring_cache_refresh_secs = 1\n\
             [template_provider_type.Sv2Tp]\n\
             address = \"{}\"\n",
            tp.addr
        ),
    )
    .unwrap();
    let log = dir.join("pool.log");
    let out = std::fs::File::create(&log).unwrap();
    let child = Command::new(pool_bin())
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("start pool_sv2");
    let pool = Pool { child, log, monitoring: format!("127.0.0.1:{mport}") };
    // Up once its monitoring server answers (it listens for miners by then).
    let until = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&pool.monitoring).is_err() || TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "pool_sv2 did not start:\n{}", pool.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    (pool, port)
}

fn miner(dir: &Path, port: u16, user: &str, extended: bool) -> HashrigRun {
    let stratum = format!(
        "[stratum]\nresponse_timeout_secs = 3\nidle_timeout_secs = 120\nretries_before_failover = 1\n\
         v2_extended_channel = {extended}\n"
    );
    miner_with(dir, port, user, &stratum)
}

fn miner_with(dir: &Path, port: u16, user: &str, stratum: &str) -> HashrigRun {
    let cfg = dir.join(format!("{user}.toml"));
    std::fs::write(&cfg, stratum).unwrap();
    let url = format!("stratum2+tcp://127.0.0.1:{port}/{AUTHORITY_PUBLIC}");
    let args = ["--duration", "600", "--user", user, "--config", cfg.to_str().unwrap(), "--pool", &url];
    HashrigRun::start_small(&args, |c| {
        c.env("HASHRIG_LOG", "info");
    })
}

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

const ACCEPTED: &str = "hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}";
const CANDIDATES: &str = "hashrig_pool_block_candidates_total{protocol=\"v2\"}";

fn as_u64(c: &Value, key: &str) -> u64 {
    c[key].as_u64().unwrap_or_else(|| panic!("{key} in {c}"))
}

/// Waits until `ok` holds, polling every 200 ms; the last state on failure.
fn wait_until(within: Duration, what: &str, mut ok: impl FnMut() -> Result<(), String>) {
    let until = Instant::now() + within;
    loop {
        match ok() {
            Ok(()) => return,
            Err(state) if Instant::now() > until => panic!("{what} within {within:?}: {state}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn hashrig_keeps_its_sessions_on_the_reference_pool_with_batched_acknowledgements() {
    let dir = std::env::temp_dir().join(format!("hashrig-sri-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tp = Tp::start(HARD_BITS);
    let (pool, port) = start_pool(&dir, &tp, 60.0);
    let miners = [("std", miner(&dir, port, "std", false)), ("ext", miner(&dir, port, "ext", true))];
    let addrs: Vec<(&str, String)> = miners.iter().map(|(u, m)| (*u, m.metrics_addr())).collect();

    // Two batches acknowledged on each channel; the pool knows each
    // miner's rate by then.
    wait_until(Duration::from_secs(90), "two acknowledged batches per miner", || {
        let got: Vec<f64> = addrs.iter().map(|(_, a)| metric(&scrape(a), ACCEPTED)).collect();
        if got.iter().all(|n| *n >= 20.0) {
            Ok(())
        } else {
            Err(format!("accepted {got:?}\npool log tail:\n{}", tail(&pool.log(), 30)))
        }
    });
    // What the pool acknowledged is what hashrig counted (no block yet:
    // the pool's open batch is its accepted count modulo the batch size).
    for (user, addr) in &addrs {
        wait_until(Duration::from_secs(30), "hashrig's accepted = the pool's acknowledged", || {
            let c = pool.channel(user).ok_or(format!("no channel of {user} at the pool"))?;
            let acked = as_u64(&c, "shares_accepted") - as_u64(&c, "last_batch_accepted") % 10;
            let ours = metric(&scrape(addr), ACCEPTED) as u64;
            if ours == acked {
                Ok(())
            } else {
                Err(format!("{user}: hashrig {ours}, pool {acked} ({c})"))
            }
        });
        let c = pool.channel(user).unwrap();
        assert!(c["nominal_hashrate"].as_f64().unwrap() > 0.0, "{user}: the pool's view of its rate: {c}");
        assert_eq!(as_u64(&c, "shares_rejected"), 0, "{user}: {c}");
    }

    // A new block whose nBits every share meets: each share is a block.
    tp.new_block(EASY_BITS);
    wait_until(Duration::from_secs(60), "block candidates on both channels", || {
        let got: Vec<f64> = addrs.iter().map(|(_, a)| metric(&scrape(a), CANDIDATES)).collect();
        if got.iter().all(|n| *n >= 3.0) {
            Ok(())
        } else {
            Err(format!("candidates {got:?}"))
        }
    });
    // Every block the pool found is one hashrig counted, and each checks
    // against its nBits at the Template Provider. Every block is
    // acknowledged at once, so the counts meet.
    wait_until(Duration::from_secs(30), "the same blocks and shares on both sides", || {
        let mut state = String::new();
        let mut equal = true;
        for (user, addr) in &addrs {
            let c = pool.channel(user).ok_or(format!("no channel of {user} at the pool"))?;
            let body = scrape(addr);
            let (ours, theirs) = (metric(&body, CANDIDATES) as u64, as_u64(&c, "blocks_found"));
            let (acc, pool_acc) = (metric(&body, ACCEPTED) as u64, as_u64(&c, "shares_accepted"));
            equal &= ours == theirs && acc == pool_acc;
            state += &format!("{user}: blocks {ours}/{theirs} accepted {acc}/{pool_acc}; ");
        }
        let valid = tp.counts.valid_solutions.load(Ordering::Relaxed);
        let invalid = tp.counts.invalid_solutions.load(Ordering::Relaxed);
        let total: u64 = pool.channels().iter().map(|(_, c)| as_u64(c, "blocks_found")).sum();
        equal &= valid == total;
        if equal {
            Ok(())
        } else {
            Err(format!("{state} solutions at the TP {valid} (invalid {invalid}), blocks at the pool {total}"))
        }
    });
    assert_eq!(tp.counts.invalid_solutions.load(Ordering::Relaxed), 0);
    assert_eq!(tp.counts.setups.load(Ordering::Relaxed), 1);

    for (user, addr) in &addrs {
        let body = scrape(addr);
        let m = |p: &str| metric(&body, p);
        assert_eq!(m("hashrig_pool_reconnects_total"), 0.0, "{user}: no session ended");
        assert_eq!(m("hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"rejected\""), 0.0, "{user}");
        assert_eq!(m("hashrig_hardware_errors_total"), 0.0, "{user}");
        let c = pool.channel(user).unwrap();
        assert_eq!(as_u64(&c, "shares_rejected"), 0, "{user}: {c}");
    }
    // One channel per miner for the whole run, each of the kind asked for.
    let chans = pool.get("/api/v1/clients");
    let mut ids = Vec::new();
    collect(&chans, "client_id", &mut ids);
    assert_eq!(ids.len(), 2, "two clients, never reconnected: {chans}");
    for (user, m) in &miners {
        let lines = m.lines();
        let kind = if *user == "ext" { "extended channel" } else { "standard channel" };
        assert_eq!(lines.iter().filter(|l| l.contains(kind) && l.contains(" open as ")).count(), 1, "{user}");
        assert!(!lines.iter().any(|l| l.contains("session ended")), "{user}");
        // The opening carries the rate timed at start-up (UpdateChannel
        // follows only when the live rate moves past a factor of 2).
        let opening = lines.iter().find_map(|l| l.split("opening a channel with nominal hash rate ").nth(1));
        let rate: f64 = opening.and_then(|r| r.split_whitespace().next()?.parse().ok()).expect("the opening's rate");
        assert!(rate > 0.0, "{user}: opened with {rate} H/s");
    }
    let log = pool.log();
    assert!(!log.contains("SeenSharesBudgetExhausted"), "{}", tail(&log, 40));
    drop(miners);
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The issue's own check, too long for every run (`cargo test --test
/// sri_pool -- --ignored`): the pool's example settings unscaled (6 shares a
/// minute, batches of 10: one acknowledgement per ~100 s), hashrig's
/// defaults (30-s response timeout), 100 s of mining: no session ends on
/// either side, a non-zero nominal rate in the pool's view, 0 rejected.
#[test]
#[ignore]
fn example_settings_for_100_seconds() {
    let dir = std::env::temp_dir().join(format!("hashrig-sri-example-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tp = Tp::start(HARD_BITS);
    let (pool, port) = start_pool(&dir, &tp, 6.0);
    let m = miner_with(&dir, port, "rig", "");
    let addr = m.metrics_addr();
    std::thread::sleep(Duration::from_secs(100));
    wait_until(Duration::from_secs(15), "hashrig's accepted = the pool's acknowledged", || {
        let c = pool.channel("rig").ok_or_else(|| "no channel of rig at the pool".to_owned())?;
        let acked = as_u64(&c, "shares_accepted") - as_u64(&c, "last_batch_accepted") % 10;
        let ours = metric(&scrape(&addr), ACCEPTED) as u64;
        if ours == acked {
            Ok(())
        } else {
            Err(format!("hashrig {ours}, pool {acked} ({c})"))
        }
    });
    let c = pool.channel("rig").expect("the miner's channel, still open");
    println!("after 100 s, the pool's view of the channel: {c}");
    let body = scrape(&addr);
    assert!(c["nominal_hashrate"].as_f64().unwrap() > 0.0, "{c}");
    assert_eq!(as_u64(&c, "shares_rejected"), 0, "{c}");
    assert_eq!(metric(&body, "hashrig_pool_reconnects_total"), 0.0, "no session ended");
    assert!(!m.lines().iter().any(|l| l.contains("session ended")));
}
