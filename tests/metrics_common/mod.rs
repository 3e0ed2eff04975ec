//! Scraping a running hashrig's `/metrics` in integration tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// GET /metrics from `addr`: the response head and body.
pub fn get_metrics(addr: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).expect("connect to /metrics");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").expect("HTTP response");
    (head.to_owned(), body.to_owned())
}

/// The body of a scrape.
#[allow(dead_code)] // not every test that includes this module needs it
pub fn scrape(addr: &str) -> String {
    get_metrics(addr).1
}
