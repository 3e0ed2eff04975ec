//! sigserve end to end on loopback: TCP and Unix sockets, pipelining, ping,
//! JSON mode, limits, and graceful shutdown answering what it accepted.

mod sigserve_common;
use sigserve_common::*;

use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

use hashrig::node::sigserve::frame::{self, ErrorCode, Frame};
use hashrig::node::sigserve::{ClientError, ServerConfig, SigClient, SigServer};
use hashrig::sig::{Reason, Scheme, SigItem, Verdict};

#[test]
fn tcp_batches_single_and_pipelined() {
    let srv = server(|_| {});
    let pool = pool();
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    c.ping().unwrap();
    assert_eq!(c.verify(&[], None).unwrap(), vec![]);
    for n in [1usize, 5, 64, 65, 300] {
        let (items, expect) = batch(&pool, n, n as u64, 5);
        let got = c.verify(&items, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect, "n = {n}");
    }
    // Pipelined: answers may come in any order, each exactly once.
    let mut want = std::collections::HashMap::new();
    for k in 0..20u64 {
        let (items, expect) = batch(&pool, 1 + (k as usize * 37) % 200, k, 3);
        want.insert(c.send_batch(&items, None).unwrap(), expect);
    }
    while !want.is_empty() {
        match c.recv().unwrap() {
            Frame::Verdicts { id, verdicts } => {
                let e = want.remove(&id).expect("one answer per id");
                assert_eq!(verdicts.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), e);
            }
            f => panic!("unexpected {f:?}"),
        }
    }
    srv.shutdown();
}

#[test]
fn unix_socket_and_unknown_scheme() {
    let addr = unix_addr("rt");
    let srv = SigServer::start(ServerConfig::new(addr.clone()), engine(1), None).unwrap();
    if let hashrig::node::sigserve::ServeAddr::Unix(p) = &addr {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660, "owner and group may connect, others not");
    }
    let mut c = SigClient::connect(&addr).unwrap();
    let pool = pool();
    let (items, expect) = batch(&pool, 40, 9, 4);
    let got = c.verify(&items, None).unwrap();
    assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    // An unknown scheme byte is a verdict, not a frame error.
    let mut raw = frame::encode_batch(77, 0, &items[..2]).unwrap();
    raw[frame::HEADER_LEN + frame::BATCH_HEAD] = 99;
    c.send_raw(&raw).unwrap();
    match c.recv().unwrap() {
        Frame::Verdicts { id: 77, verdicts } => {
            assert_eq!(verdicts[0], Verdict::Invalid(Reason::UnknownScheme));
            assert_eq!(verdicts[1].is_valid(), expect[1]);
        }
        f => panic!("unexpected {f:?}"),
    }
    drop(c);
    srv.shutdown();
    if let hashrig::node::sigserve::ServeAddr::Unix(p) = addr {
        assert!(!p.exists(), "socket file removed on shutdown");
    }
}

#[test]
fn too_many_items_is_answered_and_connection_stays() {
    let srv = server(|c| c.max_items = 8);
    let pool = pool();
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    let (items, _) = batch(&pool, 9, 0, 0);
    match c.verify(&items, None) {
        Err(ClientError::Server { code: Some(ErrorCode::TooManyItems), .. }) => {}
        r => panic!("{r:?}"),
    }
    let (items, expect) = batch(&pool, 8, 0, 3);
    let got = c.verify(&items, None).unwrap();
    assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
}

#[test]
fn json_mode() {
    let srv = server(|_| {});
    let hashrig::node::sigserve::ServeAddr::Tcp(a) = srv.local_addr().clone() else { unreachable!() };
    let mut s = std::net::TcpStream::connect(a).unwrap();
    let pool = pool();
    let (items, expect) = batch(&pool, 10, 3, 3);
    let arr: Vec<serde_json::Value> =
        items.iter().map(|i| serde_json::from_str(&hashrig::sig::jsonl::format_item(i)).unwrap()).collect();
    let mut arr = arr;
    arr.push(serde_json::json!({"scheme": "rsa", "pubkey": "", "msg": "", "sig": ""}));
    writeln!(s, "{}", serde_json::json!({"id": 5, "items": arr})).unwrap();
    writeln!(s, "not json").unwrap();
    // Answers come in any order: the error for the second line may pass
    // the batch being verified.
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        lines.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let v = lines.iter().find(|v| v.get("verdicts").is_some()).expect("the batch answer");
    assert_eq!(v["id"], 5);
    let got: Vec<Verdict> =
        v["verdicts"].as_array().unwrap().iter().map(|x| hashrig::sig::jsonl::parse_verdict(x).unwrap()).collect();
    assert_eq!(got[..10].iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    assert_eq!(got[10], Verdict::Invalid(Reason::UnknownScheme));
    let e = lines.iter().find(|v| v.get("error").is_some()).expect("the error line");
    assert!(e["id"].is_null());
}

#[test]
fn graceful_shutdown_answers_accepted() {
    let srv = server(|_| {});
    let pool = pool();
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let items: Vec<SigItem> = (0..2000).map(|i| hashrig::sig::demo::valid_item(Scheme::Ed25519, i % 64)).collect();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(c.send_batch(&items, None).unwrap());
    }
    let _ = &pool;
    // A PING after the batches: once its PONG is back the server has read
    // (and so accepted) every batch before it.
    c.send_raw(&frame::encode_ping(999)).unwrap();
    let mut answered = 0;
    let mut t = None;
    let mut srv = Some(srv);
    loop {
        match c.recv() {
            Ok(Frame::Verdicts { id, verdicts }) => {
                assert!(ids.contains(&id));
                assert!(verdicts.iter().all(|v| v.is_valid()));
                answered += 1;
            }
            Ok(Frame::Pong { id: 999 }) => {
                let s = srv.take().unwrap();
                t = Some(std::thread::spawn(move || s.shutdown()));
            }
            Ok(f) => panic!("unexpected {f:?}"),
            Err(_) => break, // closed after the last answer
        }
    }
    let t = t.expect("pong received before close");
    t.join().unwrap();
    assert_eq!(answered, ids.len());
}
