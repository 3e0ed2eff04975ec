//! `stratum+ssl://` pools: hashrig mines through TLS to the test pool of
//! tests/pool_common (shares checked there with `sha2`), trusting the pool
//! through a private CA (`tls_ca`) or a pinned certificate
//! (`tls_fingerprint`), and refuses a pool it cannot verify: with Mozilla's
//! roots (the default) or a wrong pin, no byte of Stratum reaches the pool.
//!
//! The TLS side is a terminating proxy in front of the plain test pool, made
//! with rustls' server (tokio-rustls, configured as sigserve's); the certificates are the throwaway
//! ones in tests/data/tls (tools/gen-test-tls.sh).

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hashrig::node::sigserve::ServerTls;

mod pool_common;
mod run_common;
use pool_common::{accept, Tally, D1};
use run_common::HashrigRun;

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls").join(name)
}

/// A TLS listener on loopback that forwards each connection, once its
/// handshake is done, to `pool`. Returns its address.
fn tls_proxy(pool: SocketAddr) -> SocketAddr {
    // The server side of sigserve's TLS builds the same thing a pool needs.
    let cfg = ServerTls { cert: data("pool.pem"), key: data("pool.key"), client_ca: None }.config().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(cfg);
    let std_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = std_listener.local_addr().unwrap();
    std_listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends here.
                    let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(pool).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
    });
    addr
}

/// `hashrig run` on one TLS pool, with `trust` lines in its [[pool]] table.
fn start(tls_addr: SocketAddr, trust: &str, tag: &str) -> (HashrigRun, PathBuf) {
    let conf = std::env::temp_dir().join(format!("hashrig-tls-{}-{tag}.toml", std::process::id()));
    std::fs::write(
        &conf,
        format!(
            "[[pool]]\nurl = \"stratum+ssl://{tls_addr}\"\nuser = \"worker1\"\npass = \"secret\"\n{trust}\n\
             [stratum]\nbackoff_min_ms = 100\nbackoff_max_secs = 1\n"
        ),
    )
    .unwrap();
    let run =
        HashrigRun::start_small(&["--engines", "cpu", "--duration", "60", "--config", conf.to_str().unwrap()], |_| {});
    (run, conf)
}

/// Nobody connects to `pool` for `secs`.
fn assert_untouched(pool: &TcpListener, secs: u64) {
    pool.set_nonblocking(true).unwrap();
    let until = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < until {
        assert!(pool.accept().is_err(), "a connection reached the pool through TLS it should have refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    pool.set_nonblocking(false).unwrap();
}

#[test]
fn tls_pools_trusted_by_ca_or_pin_and_refused_otherwise() {
    let pool = TcpListener::bind("127.0.0.1:0").unwrap();
    let tls_addr = tls_proxy(pool.local_addr().unwrap());
    let ca = data("ca.pem");
    let pin = std::fs::read_to_string(data("pool.sha256")).unwrap().trim().to_string();

    // A private CA: the handshake verifies, shares flow and the pool accepts them.
    let (run, conf) = start(tls_addr, &format!("tls_ca = {:?}", ca.to_str().unwrap()), "ca");
    run.wait_for("TLS with", Duration::from_secs(30)); // bounded: accept() would wait forever
    let mut t = Tally::default();
    let mut c = accept(&pool, &[1, 2, 3, 4], "s-ca", false);
    c.set_difficulty(D1);
    c.notify("t1", true);
    c.serve(&mut t, 3, "t1");
    assert!(t.accepted >= 3 && t.rejected.is_empty(), "accepted {}, rejected {:?}", t.accepted, t.rejected);
    drop((c, run));
    std::fs::remove_file(conf).unwrap();

    // The certificate pinned by its SHA-256 (with colons, as openssl prints it).
    let colons = pin.as_bytes().chunks(2).map(|b| std::str::from_utf8(b).unwrap()).collect::<Vec<_>>().join(":");
    let (run, conf) = start(tls_addr, &format!("tls_fingerprint = \"{colons}\""), "pin");
    run.wait_for("TLS with", Duration::from_secs(30));
    let mut c = accept(&pool, &[5, 6, 7, 8], "s-pin", false);
    c.set_difficulty(D1);
    c.notify("p1", true);
    c.serve(&mut t, 1, "p1");
    drop((c, run));
    std::fs::remove_file(conf).unwrap();

    // Mozilla's roots do not know the test CA; a wrong pin matches nothing.
    let wrong = format!("{}{}", &pin[..63], if pin.ends_with('0') { '1' } else { '0' });
    for (trust, tag, why) in
        [("", "roots", "UnknownIssuer"), (&*format!("tls_fingerprint = \"{wrong}\""), "wrongpin", "tls_fingerprint")]
    {
        let (run, conf) = start(tls_addr, trust, tag);
        let err = run.wait_for("TLS handshake with", Duration::from_secs(30));
        assert!(err.contains(why), "{tag}: {err}");
        assert_untouched(&pool, 2);
        drop(run);
        std::fs::remove_file(conf).unwrap();
    }
}
