//! The frame parser and the live server on garbage: random bytes, truncated
//! frames, oversized lengths, bad versions and kinds, and random mutations
//! of valid frames. The parser never panics; the server answers with an
//! ERROR frame or closes, and keeps serving other connections.

mod sigserve_common;
use sigserve_common::*;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use hashrig::node::sigserve::frame::{self, ErrorCode, Frame, FrameError};
use hashrig::node::sigserve::SigClient;
use rand::{Rng, RngCore, SeedableRng};

const MAX: usize = 1 << 20;

fn valid_frames() -> Vec<Vec<u8>> {
    let pool = pool();
    let mut v: Vec<Vec<u8>> =
        (0..8).map(|n| frame::encode_batch(n as u64, 1000, &batch(&pool, n, n as u64, 2).0).unwrap()).collect();
    v.push(frame::encode_ping(3));
    v.push(frame::encode_verdicts(4, &[hashrig::sig::Verdict::Valid]));
    v.push(frame::encode_error(5, ErrorCode::BadFrame, "x"));
    v
}

#[test]
fn parser_round_trips() {
    for f in valid_frames() {
        let (parsed, used) = frame::decode(&f, MAX, 1 << 16).unwrap().unwrap();
        assert_eq!(used, f.len());
        assert_eq!(frame::encode(&parsed).unwrap(), f);
        // Every strict prefix is "need more bytes", never an error or panic.
        for cut in 0..f.len() {
            assert_eq!(frame::decode(&f[..cut], MAX, 1 << 16), Ok(None), "prefix {cut}");
        }
    }
}

#[test]
fn parser_random_bytes_and_mutations() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf00d);
    let frames = valid_frames();
    for i in 0..20_000 {
        let mut buf = if i % 2 == 0 {
            let mut b = vec![0u8; rng.random_range(0..200)];
            rng.fill_bytes(&mut b);
            if b.len() >= 6 && rng.random_bool(0.5) {
                // A plausible header, so the body parser gets exercised.
                let len = (b.len() - 4) as u32;
                b[..4].copy_from_slice(&len.to_le_bytes());
                b[4] = frame::VERSION;
                b[5] = [frame::KIND_BATCH, frame::KIND_PING, frame::KIND_VERDICTS, frame::KIND_ERROR]
                    [rng.random_range(0..4)];
            }
            b
        } else {
            frames[rng.random_range(0..frames.len())].clone()
        };
        if i % 2 == 1 {
            for _ in 0..rng.random_range(1..4) {
                if buf.is_empty() {
                    break;
                }
                let at = rng.random_range(0..buf.len());
                buf[at] ^= 1 << rng.random_range(0..8);
            }
        }
        if let Ok(Some((f, used))) = frame::decode(&buf, MAX, 1 << 16) {
            assert!(used <= buf.len());
            let _ = frame::encode(&f);
        }
    }
}

#[test]
fn parser_limits() {
    let mut f = frame::encode_ping(1);
    f[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(frame::decode(&f, MAX, 10), Err(FrameError::TooLarge { .. })));
    let mut f = frame::encode_ping(1);
    f[4] = 9;
    assert_eq!(frame::decode(&f, MAX, 10), Err(FrameError::BadVersion(9)));
    let mut f = frame::encode_ping(1);
    f[5] = 0x55;
    assert_eq!(frame::decode(&f, MAX, 10), Err(FrameError::UnknownKind(0x55)));
    // A count far beyond what the body holds is refused before allocating.
    let mut f = frame::encode_batch(1, 0, &[]).unwrap();
    let at = frame::HEADER_LEN + 12;
    f[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(frame::decode(&f, MAX, usize::MAX), Err(FrameError::Malformed(_))));
}

/// Read everything the server sends until it closes (or 10 s pass).
fn drain(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn server_survives_garbage() {
    let srv = server(|c| c.max_frame = 64 << 10);
    let hashrig::node::sigserve::ServeAddr::Tcp(addr) = srv.local_addr().clone() else { unreachable!() };
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    // Oversized length: ERROR TooLarge, then closed.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0xff, 0xff, 0xff, 0x7f, 1, 1]).unwrap();
    let out = drain(s);
    match frame::decode(&out, MAX, 0) {
        Ok(Some((Frame::Error { code, .. }, _))) => assert_eq!(code, ErrorCode::TooLarge as u16),
        r => panic!("{r:?}"),
    }

    // Truncated frame, then the client half-closes: ERROR BadFrame, closed.
    let f = frame::encode_batch(1, 0, &batch(&pool(), 3, 0, 0).0).unwrap();
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&f[..f.len() - 5]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let out = drain(s);
    assert!(matches!(frame::decode(&out, MAX, 0), Ok(Some((Frame::Error { .. }, _)))), "{out:?}");

    // Random garbage on many connections: the server never hangs on them
    // (each gets an error and/or is closed, or waits for more bytes until
    // we hang up).
    for i in 0..50 {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut b = vec![0u8; rng.random_range(1..300)];
        rng.fill_bytes(&mut b);
        if b[0] == b'{' {
            b[0] = 0;
        }
        let _ = s.write_all(&b);
        if i % 2 == 0 {
            let _ = s.shutdown(std::net::Shutdown::Write);
            let _ = drain(s);
        }
    }

    // Still serving.
    let mut c = SigClient::connect(srv.local_addr()).unwrap();
    let (items, expect) = batch(&pool(), 30, 1, 3);
    let got = c.verify(&items, None).unwrap();
    assert_eq!(got.iter().map(|v| v.is_valid()).collect::<Vec<_>>(), expect);
    srv.shutdown();
}
