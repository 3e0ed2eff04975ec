//! `hashrig run --pool stratum2+tcp://HOST:PORT/KEY` against a Stratum V2
//! pool built from the reference implementation's server-side code
//! (tests/sv2_pool: noise_sv2's responder with an authority key pair,
//! channels_sv2's StandardChannel for jobs and share validation).
//!
//! - A standard channel: shares accepted across a new block and a harder
//!   target; the miner's count is the pool's, nothing duplicated.
//! - A pool whose certificate is not signed by the URL's authority key, or
//!   whose certificate has expired, is refused: the miner closes the
//!   connection after the handshake without sending a single frame.
//! - An extended channel, on a pool that refuses REQUIRES_STANDARD_JOBS: the
//!   miner reconnects without it, rolls its part of the extranonce and builds
//!   the merkle root through the pool's merkle path; shares accepted.
//! - Failover from a V2 primary to a V1 backup (tests/pool_common, which
//!   re-hashes every share) and back to the V2 primary.

use std::net::TcpListener;
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod metrics_common;
mod pool_common;
mod run_common;
mod sv2_pool;
use metrics_common::scrape;
use run_common::HashrigRun;
use sv2_pool::{keys, other_keys, Accepted, AUTHORITY_PUBLIC, AUTHORITY_SECRET};

fn metric(body: &str, prefix: &str) -> f64 {
    body.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn start(pools: &[String], secs: &str) -> HashrigRun {
    let dir = std::env::temp_dir().join(format!("hashrig-sv2-{}-{secs}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(
        &cfg,
        "[stratum]\nretries_before_failover = 1\nbackoff_min_ms = 100\nntime_roll_secs = 1\n\
         hold_down_secs = 2\nprobe_interval_secs = 1\n",
    )
    .unwrap();
    let mut args = vec!["--duration", secs, "--user", "worker1", "--pass", "secret", "--config", cfg.to_str().unwrap()];
    for p in pools {
        args.extend(["--pool", p.as_str()]);
    }
    HashrigRun::start_small(&args, |c| {
        c.env("HASHRIG_LOG", "info");
    })
}

#[test]
fn standard_channel_shares_are_accepted_by_the_reference_pool() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("stratum2+tcp://{}/{AUTHORITY_PUBLIC}", l.local_addr().unwrap());
    let run = start(&[url], "150");
    let Accepted::Conn(mut c) = sv2_pool::accept(&l, keys(AUTHORITY_PUBLIC, AUTHORITY_SECRET), None) else {
        panic!("the miner refused the pool it was told to trust");
    };
    let (flags, vendor) = c.setup.clone().expect("SetupConnection first");
    assert_eq!(flags & 1, 1, "REQUIRES_STANDARD_JOBS");
    assert_eq!(vendor, "hashrig");
    c.serve(1, Duration::from_secs(60)); // OpenStandardMiningChannel, then shares
    assert_eq!(c.user.as_deref(), Some("worker1"));
    c.serve(3, Duration::from_secs(60));
    let first_job = c.accepted[0].0;
    // A new block: the miner switches to the new job.
    c.new_block();
    c.serve(3, Duration::from_secs(60));
    let second_job = c.accepted.last().unwrap().0;
    assert_ne!(first_job, second_job, "shares on the new block's job");
    // A harder target from now on (difficulty 2/4096): still accepted.
    let mut harder = [0u8; 32];
    harder[2..5].copy_from_slice(&[0x07, 0xff, 0xf8]);
    c.set_target(bitcoin::Target::from_be_bytes(harder));
    c.serve(2, Duration::from_secs(90));
    // Only shares in flight across the block change may be stale; nothing
    // invalid, nothing twice.
    assert!(c.rejected.iter().all(|r| r.starts_with("Stale")), "rejected: {:?}", c.rejected);
    let pool_accepted = c.accepted.len();
    let mut seen = c.accepted.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), pool_accepted, "no share twice");
    // The miner's metrics, while the connection is up.
    let addr = run.metrics_addr();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let body = loop {
        // Answer what is still coming so that the counts settle.
        let body = scrape(&addr);
        let acc = metric(&body, "hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}");
        if acc as usize == c.accepted.len() || std::time::Instant::now() > deadline {
            break body;
        }
        if let Some(f) = c.next_frame(std::time::Instant::now() + Duration::from_millis(500)) {
            c.handle(f);
        }
    };
    let m = |p: &str| metric(&body, p);
    assert_eq!(
        m("hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}") as usize,
        c.accepted.len(),
        "{}",
        body.lines().filter(|l| l.starts_with("hashrig_pool")).collect::<Vec<_>>().join("\n")
    );
    assert_eq!(m("hashrig_pool_protocol_shares_total{protocol=\"v1\""), 0.0);
    assert_eq!(m("hashrig_pool_shares_total{reason=\"duplicate\""), 0.0);
    assert_eq!(m("hashrig_hardware_errors_total"), 0.0);
    assert_eq!(m("hashrig_pool_connected{role=\"primary\"}"), 1.0);
    let lines = run.lines();
    assert!(lines.iter().any(|l| l.contains("certificate signed by the pool's authority key")));
    assert!(lines.iter().any(|l| l.contains("standard channel 1 open")));
    assert!(lines.iter().any(|l| l.contains("difficulty 0.000244")), "1/4096 at the channel's opening");
    assert!(
        lines.iter().any(|l| l.contains("difficulty 0.000488") && l.contains("from now on")),
        "2/4096 after SetTarget"
    );
    assert!(!lines.iter().any(|l| l.contains("below the floor")), "the pool's targets are above the floor");
}

#[test]
fn a_pool_that_is_not_the_authority_keys_is_refused() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("stratum2+tcp://{}/{AUTHORITY_PUBLIC}", l.local_addr().unwrap());
    let run = start(&[url], "60");
    // Another pool's key (a man in the middle with his own key pair).
    assert!(
        matches!(sv2_pool::accept(&l, other_keys(), None), Accepted::ClosedAfterHandshake),
        "the miner went on with a pool the authority key did not sign"
    );
    // The right key, but a certificate that expired an hour ago.
    let expired = (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() - 7200) as u32;
    assert!(
        matches!(
            sv2_pool::accept(&l, keys(AUTHORITY_PUBLIC, AUTHORITY_SECRET), Some(expired)),
            Accepted::ClosedAfterHandshake
        ),
        "the miner took an expired certificate"
    );
    // The real pool afterwards: the miner mines there.
    let Accepted::Conn(mut c) = sv2_pool::accept(&l, keys(AUTHORITY_PUBLIC, AUTHORITY_SECRET), None) else {
        panic!("the miner refused the right pool");
    };
    c.serve(2, Duration::from_secs(60));
    let refused = run.lines().iter().filter(|l| l.contains("REFUSED")).count();
    assert_eq!(refused, 2, "both refusals logged");
    let body = scrape(&run.metrics_addr());
    assert!(metric(&body, "hashrig_pool_reconnects_total{cause=\"protocol\"}") >= 2.0);
}

#[test]
fn failover_from_v2_to_v1_and_back() {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = a.local_addr().unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let v2 = format!("stratum2+tcp://{a_addr}/{AUTHORITY_PUBLIC}");
    let v1 = format!("stratum+tcp://{}", b.local_addr().unwrap());
    let run = start(&[v2, v1], "120");
    let authority = keys(AUTHORITY_PUBLIC, AUTHORITY_SECRET);
    let Accepted::Conn(mut c) = sv2_pool::accept(&a, authority, None) else { panic!("refused") };
    c.serve(3, Duration::from_secs(60));
    let first_session = c.accepted.len();
    // The V2 primary dies: nothing listens. Failover to the V1 backup.
    drop(c);
    drop(a);
    let mut t = pool_common::Tally::default();
    let mut cb = pool_common::accept(&b, &[7, 7, 7, 7], "sess-b", false);
    cb.set_difficulty(pool_common::D1);
    cb.notify("b1", true);
    cb.serve(&mut t, 3, "b1");
    // The primary returns; after the hold-down the miner goes back to it,
    // while the backup keeps answering what is in flight.
    let a = TcpListener::bind(a_addr).unwrap();
    let (stx, srx) = mpsc::channel();
    let serve_b = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(60);
        while let Some(m) = cb.recv(until) {
            cb.handle(m, &mut t, "b1");
            if srx.try_recv().is_ok() {
                break;
            }
        }
        t
    });
    let Accepted::Conn(mut c) = sv2_pool::accept(&a, authority, None) else { panic!("refused") };
    c.serve(3, Duration::from_secs(60));
    let _ = stx.send(());
    let t = serve_b.join().unwrap();
    let mut v2_accepted = first_session + c.accepted.len();
    assert!(
        t.rejected.is_empty() && c.rejected.iter().all(|r| r.starts_with("Stale")),
        "{:?} {:?}",
        t.rejected,
        c.rejected
    );

    let addr = run.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = scrape(&addr);
        let got = metric(&body, "hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}") as usize;
        if got == v2_accepted || Instant::now() > deadline {
            break body;
        }
        if let Some(f) = c.next_frame(Instant::now() + Duration::from_millis(500)) {
            c.handle(f);
            v2_accepted = first_session + c.accepted.len();
        }
    };
    let m = |p: &str| metric(&body, p);
    let pools = body.lines().filter(|l| l.starts_with("hashrig_pool")).collect::<Vec<_>>().join("\n");
    assert_eq!(
        m("hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}") as usize,
        v2_accepted,
        "{pools}"
    );
    // The V1 backup's answers: every share it accepted, some perhaps in
    // flight when the miner left (counted no_answer, never twice).
    let v1_accepted = m("hashrig_pool_protocol_shares_total{protocol=\"v1\",result=\"accepted\"}") as usize;
    assert!(v1_accepted <= t.accepted && t.accepted >= 3, "{pools}");
    assert!(m("hashrig_jobs_total{source=\"stratum2\"}") >= 2.0, "V2 jobs, before and after");
    // The V2 pool is the primary: what it credited, by role too.
    assert_eq!(
        m("hashrig_pool_role_shares_total{result=\"accepted\",role=\"primary\"}") as usize,
        v2_accepted,
        "{pools}"
    );
    assert_eq!(
        m("hashrig_pool_role_shares_total{result=\"accepted\",role=\"backup\"}") as usize,
        v1_accepted,
        "{pools}"
    );
    assert!(m("hashrig_jobs_total{source=\"stratum\"}") >= 1.0, "the V1 backup's job");
    assert_eq!(m("hashrig_pool_failovers_total{direction=\"to_backup\"}"), 1.0, "{pools}");
    assert_eq!(m("hashrig_pool_failovers_total{direction=\"to_primary\"}"), 1.0, "{pools}");
    assert_eq!(m("hashrig_pool_shares_total{reason=\"duplicate\""), 0.0);
    assert_eq!(m("hashrig_hardware_errors_total"), 0.0);
    assert_eq!(m("hashrig_pool_connected{role=\"primary\"}"), 1.0, "{pools}");
}

#[test]
fn extended_channel_on_a_pool_that_requires_it() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("stratum2+tcp://{}/{AUTHORITY_PUBLIC}", l.local_addr().unwrap());
    let run = start(&[url], "90");
    let authority = keys(AUTHORITY_PUBLIC, AUTHORITY_SECRET);
    // First connection: standard jobs asked for, refused by the pool.
    let Accepted::Conn(c) = sv2_pool::accept_as(&l, authority, None, true) else { panic!("refused") };
    assert_eq!(c.setup.as_ref().unwrap().0 & 1, 1);
    assert!(c.extended.is_none());
    // Second: no REQUIRES_STANDARD_JOBS, an extended channel.
    let Accepted::Conn(mut c) = sv2_pool::accept_as(&l, authority, None, true) else { panic!("refused") };
    assert_eq!(c.setup.as_ref().unwrap().0 & 1, 0, "no REQUIRES_STANDARD_JOBS the second time");
    c.serve(3, Duration::from_secs(60));
    assert!(c.extended.is_some(), "shares on an extended channel");
    c.new_block();
    c.serve(3, Duration::from_secs(60));
    assert!(c.rejected.iter().all(|r| r.starts_with("Stale")), "rejected: {:?}", c.rejected);
    let addr = run.metrics_addr();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let body = scrape(&addr);
        let got = metric(&body, "hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}") as usize;
        if got == c.accepted.len() || Instant::now() > deadline {
            break body;
        }
        if let Some(f) = c.next_frame(Instant::now() + Duration::from_millis(500)) {
            c.handle(f);
        }
    };
    let m = |p: &str| metric(&body, p);
    assert_eq!(m("hashrig_pool_protocol_shares_total{protocol=\"v2\",result=\"accepted\"}") as usize, c.accepted.len());
    assert_eq!(m("hashrig_hardware_errors_total"), 0.0);
    assert_eq!(m("hashrig_pool_shares_total{reason=\"duplicate\""), 0.0);
    let lines = run.lines();
    assert!(lines.iter().any(|l| l.contains("extended channel 1 open")), "extended channel logged");
}
