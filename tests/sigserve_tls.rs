//! sigserve over TLS: a validator with a certificate from the configured CA
//! gets its verdicts; one without a certificate, one that does not trust the
//! server, and a plain-TCP client get nothing but an error. Certificates:
//! the throwaway ones of tests/data/tls (tools/gen-test-tls.sh).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hashrig::metrics::Metrics;
use hashrig::node::sigserve::{ClientTls, ServeError, ServerConfig, ServerTls, SigClient, SigServer};

mod sigserve_common;
use sigserve_common::{batch, engine, pool, server, unix_addr};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tls").join(name)
}

fn server_tls(client_ca: bool) -> ServerTls {
    ServerTls { cert: data("pool.pem"), key: data("pool.key"), client_ca: client_ca.then(|| data("ca.pem")) }
}

fn client_tls(with_cert: bool) -> ClientTls {
    ClientTls {
        ca: Some(data("ca.pem")),
        cert: with_cert.then(|| data("client.pem")),
        key: with_cert.then(|| data("client.key")),
        server_name: None,
    }
}

#[test]
fn mutual_tls_serves_validators_with_a_certificate_only() {
    let metrics = Metrics::new();
    let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
    cfg.tls = Some(server_tls(true));
    let srv = SigServer::start(cfg, engine(2), Some(metrics.clone())).unwrap();
    let addr = srv.local_addr().clone();
    let pool = pool();
    let (items, expect) = batch(&pool, 50, 3, 5);

    // With the CA's client certificate: verdicts, pipelined too.
    let mut c = SigClient::connect_tls(&addr, &client_tls(true)).unwrap();
    let got = c.verify(&items, None).unwrap();
    assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    assert!(c.ping().is_ok());
    // The certificate names "localhost" too.
    let named = ClientTls { server_name: Some("localhost".into()), ..client_tls(true) };
    assert!(SigClient::connect_tls(&addr, &named).unwrap().verify(&items[..3], None).is_ok());

    // Without a client certificate: refused (in TLS 1.3 the refusal may
    // arrive with the first read rather than in the handshake).
    let no_cert = SigClient::connect_tls(&addr, &client_tls(false)).and_then(|mut c| {
        c.set_read_timeout(Some(Duration::from_secs(10)))?;
        c.verify(&items, None)
    });
    assert!(no_cert.is_err(), "a client without a certificate got {no_cert:?}");

    // Trusting Mozilla's roots only, the client refuses the test server.
    let roots = ClientTls { ca: None, ..client_tls(true) };
    let e = SigClient::connect_tls(&addr, &roots).err().expect("unknown issuer refused");
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");

    // A name the certificate does not carry.
    let wrong = ClientTls { server_name: Some("validator.example".into()), ..client_tls(true) };
    assert!(SigClient::connect_tls(&addr, &wrong).is_err());

    // A plain-TCP client gets an error, not a hang.
    let mut plain = SigClient::connect(&addr).unwrap();
    plain.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(plain.verify(&items, None).is_err());

    let until = Instant::now() + Duration::from_secs(10);
    // At least the certificate-less and the plain client failed on the
    // server's side; both the server's counter and the metric say so.
    let failed =
        || (srv.stats().tls_handshakes_failed.load(Ordering::Relaxed), metrics.sigserve_tls_handshake_failures.get());
    while failed().0 < 2 || failed().1 < 2 {
        assert!(Instant::now() < until, "failed handshakes are counted: {:?}", failed());
        std::thread::sleep(Duration::from_millis(20));
    }
    srv.shutdown();
}

#[test]
fn tls_without_client_certificates_and_bad_settings() {
    // Encryption only: any client that trusts the server.
    let srv = server(|c| c.tls = Some(server_tls(false)));
    let pool = pool();
    let (items, expect) = batch(&pool, 20, 1, 3);
    let got = SigClient::connect_tls(srv.local_addr(), &client_tls(false)).unwrap().verify(&items, None).unwrap();
    assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    srv.shutdown();

    // TLS on a Unix socket, or with files that are not what they claim, is
    // refused at start-up.
    let mut cfg = ServerConfig::new(unix_addr("tls"));
    cfg.tls = Some(server_tls(false));
    assert!(matches!(SigServer::start(cfg, engine(1), None), Err(ServeError::Config(_))));
    for bad in [
        ServerTls { cert: data("pool.key"), ..server_tls(false) },
        ServerTls { key: data("ca.pem"), ..server_tls(false) },
        ServerTls { client_ca: Some(data("missing.pem")), ..server_tls(false) },
    ] {
        let mut cfg = ServerConfig::new("127.0.0.1:0".parse().unwrap());
        cfg.tls = Some(bad.clone());
        assert!(matches!(SigServer::start(cfg, engine(1), None), Err(ServeError::Tls(_))), "{bad:?}");
    }
    let half = ClientTls { key: None, ..client_tls(true) };
    assert!(SigClient::connect_tls(&"127.0.0.1:1".parse().unwrap(), &half).is_err());
}
