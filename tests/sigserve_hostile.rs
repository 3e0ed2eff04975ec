//! Hostile sigserve clients on loopback: idle half frames, frames that never
//! finish, never-reading pipeliners and connection floods. None of them may
//! stall a real client, hold the server's budgets, or keep shutdown waiting.

mod sigserve_common;
use sigserve_common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hashrig::node::sigserve::frame::{self, ErrorCode, Frame};
use hashrig::node::sigserve::{ServeAddr, SigClient};

fn tcp(srv: &hashrig::node::sigserve::SigServer) -> std::net::SocketAddr {
    match srv.local_addr() {
        ServeAddr::Tcp(a) => *a,
        other => panic!("not TCP: {other}"),
    }
}

/// The first row: 96 connections each announce a 16 MiB frame (or
/// start a JSON line) and send nothing more; some send part of the body.
/// With the default limits (16 MiB frames, 256 MiB budget) a real client's
/// one-signature batch still gets its verdict within 3 s.
#[test]
fn ninety_six_half_frames_do_not_stall_a_client() {
    let srv = server(|_| {});
    let addr = tcp(&srv);
    let mut hostile = Vec::new();
    for i in 0..96 {
        let mut s = TcpStream::connect(addr).unwrap();
        match i % 4 {
            // A JSON line that never ends.
            0 => s.write_all(b"{\"id\":1,\"items\":[").unwrap(),
            // A header announcing 16 MiB - 1 bytes, then part of the body.
            1 => {
                s.write_all(&[0xff, 0xff, 0xff, 0x00, 1, 1]).unwrap();
                s.write_all(&vec![0u8; 256 << 10]).unwrap();
            }
            // A header announcing 16 MiB - 1 bytes, nothing else.
            _ => s.write_all(&[0xff, 0xff, 0xff, 0x00, 1, 1]).unwrap(),
        }
        hostile.push(s);
    }
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (items, expect) = batch(&pool(), 1, 3, 0);
    let got = c.verify(&items, None).expect("a verdict despite 96 hostile connections");
    let took = t0.elapsed();
    assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    assert!(took < Duration::from_secs(3), "verdict after {took:?}");
    drop(hostile);
    srv.shutdown();
}

/// A frame begun and not finished is closed after the read timeout, with an
/// ERROR; the connection's budget comes back.
#[test]
fn unfinished_frame_is_closed_after_the_read_timeout() {
    let srv = server(|c| c.read_timeout = Duration::from_millis(300));
    let addr = tcp(&srv);
    let f = frame::encode_batch(1, 0, &batch(&pool(), 3, 0, 0).0).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&f[..f.len() / 2]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("closed by the server, not by our read timeout");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    match frame::decode(&out, 1 << 20, 0) {
        Ok(Some((Frame::Error { code, .. }, _))) => assert_eq!(code, ErrorCode::BadFrame as u16),
        r => panic!("{r:?}"),
    }
    // The same for a JSON line that never ends.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"{\"id\":2,\"items\":[").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("closed by the server");
    assert_eq!(srv.stats().connections_timed_out.load(Ordering::Relaxed), 2);
    srv.shutdown();
}

/// A connection with nothing in flight that sends nothing is closed after
/// the idle timeout; one whose batch is still being answered is not.
#[test]
fn idle_connection_is_closed() {
    let srv = server(|c| c.idle_timeout = Duration::from_millis(300));
    let addr = tcp(&srv);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = Instant::now();
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("closed by the server");
    assert!(out.is_empty() && t0.elapsed() < Duration::from_secs(3));
    // A client that talks within the timeout keeps its connection.
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(100));
        c.ping().unwrap();
    }
    assert_eq!(srv.stats().connections_timed_out.load(Ordering::Relaxed), 1);
    srv.shutdown();
}

/// A client that pipelines batches and PINGs and never reads its answers:
/// once the socket buffers are full the server stops reading it (bounded
/// queue), closes it when a write times out, keeps serving others, and
/// shuts down without waiting on it.
#[test]
fn never_reading_pipeliner_is_cut_off() {
    let srv = server(|c| {
        c.write_timeout = Duration::from_millis(500);
        c.max_queued_control = 8;
    });
    let addr = tcp(&srv);
    let s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_millis(300))).unwrap();
    let (items, _) = batch(&pool(), 16, 1, 0);
    let batches: Vec<u8> = (0..4).flat_map(|i| frame::encode_batch(i, 0, &items).unwrap()).collect();
    let pings: Vec<u8> = (0..4096).flat_map(frame::encode_ping).collect();
    let writer = std::thread::spawn(move || {
        let mut s = s;
        let mut sent = 0usize;
        s.write_all(&batches).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        // Write until the server stops taking bytes, then closes.
        while Instant::now() < until {
            match s.write_all(&pings) {
                Ok(()) => sent += pings.len(),
                Err(_) => break,
            }
        }
        (s, sent)
    });
    let (s, sent) = writer.join().unwrap();
    let t0 = Instant::now();
    while srv.stats().connections_timed_out.load(Ordering::Relaxed) == 0 {
        assert!(t0.elapsed() < Duration::from_secs(5), "not cut off after {sent} bytes of PINGs");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Others are still served.
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let (items, expect) = batch(&pool(), 4, 2, 2);
    assert_eq!(c.verify(&items, None).unwrap().iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    let st = srv.shared_stats();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        srv.shutdown();
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("shutdown does not wait on a client that never reads");
    drop(s);
    // Every batch accepted was answered (the answers to the cut-off client
    // were dropped with its connection, not left in a queue).
    let accepted = st.batches_accepted.load(Ordering::Relaxed);
    assert!(accepted >= 5, "{accepted}");
    assert_eq!(accepted, st.batches_answered.load(Ordering::Relaxed));
}

/// More connections than `max_connections`: the extra ones are closed at
/// once and counted; the server keeps serving.
#[test]
fn connection_flood_is_capped() {
    let srv = server(|c| c.max_connections = 8);
    let addr = tcp(&srv);
    let held: Vec<TcpStream> = (0..8).map(|_| TcpStream::connect(addr).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..12 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 1];
        assert!(matches!(s.read(&mut b), Ok(0) | Err(_)), "an extra connection is closed");
    }
    assert_eq!(srv.stats().connections_refused.load(Ordering::Relaxed), 12);
    drop(held);
    std::thread::sleep(Duration::from_millis(100));
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    c.ping().unwrap();
    srv.shutdown();
}
