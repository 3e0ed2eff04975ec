//! A blocking sigserve client for validators (and the CLI, tests, benches).
//!
//! ```no_run
//! # use hashrig::node::sigserve::{SigClient, ServeAddr};
//! # use hashrig::sig::{SigItem, Scheme};
//! let mut c = SigClient::connect(&"127.0.0.1:9788".parse::<ServeAddr>()?)?;
//! let verdicts = c.verify(&[SigItem::new(Scheme::Schnorr, vec![0; 32], b"m".to_vec(), vec![0; 64])], None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;

use super::addr::ServeAddr;
use super::frame::{self, EncodeError, ErrorCode, Frame, FrameError, HEADER_LEN};
use super::tls::ClientTls;
use crate::sig::{SigItem, Verdict};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("sigserve I/O: {0}")]
    Io(io::Error),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("bad frame from the server: {0}")]
    Frame(FrameError),
    #[error("server error {code:?} for request {id}: {message}")]
    Server { id: u64, code: Option<ErrorCode>, message: String },
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("sigserve TLS: {0}")]
    Tls(String),
}

// The wrapped errors are part of the message, not a `source()`, so a chain
// printed with `{:#}` names them once.
impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(e)
    }
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        ClientError::Frame(e)
    }
}

enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(b),
            Stream::Unix(s) => s.read(b),
            Stream::Tls(s) => s.read(b),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(b),
            Stream::Unix(s) => s.write(b),
            Stream::Tls(s) => s.write(b),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Where and how to (re)connect.
#[derive(Clone, Debug)]
struct Dial {
    addr: ServeAddr,
    tls: Option<ClientTls>,
}

/// How long a client keeps trying to reconnect by default: far longer than
/// a live upgrade's pause, short enough that a server gone for good shows.
pub const DEFAULT_RECONNECT_FOR: Duration = Duration::from_secs(30);

/// A connection to sigserve; requests may be pipelined with
/// [`send_batch`](Self::send_batch) / [`recv`](Self::recv).
///
/// When the connection is lost (the server stopped, or handed its socket to
/// a new process in a live upgrade), the client connects again on its own
/// and resends every batch not yet answered: verification is idempotent,
/// and each answer is still returned once. Until the server answers, the
/// client holds a copy of each batch it sent. Reconnecting stops after
/// [`DEFAULT_RECONNECT_FOR`] (see [`set_reconnect`](Self::set_reconnect)),
/// once raw bytes were sent ([`send_raw`](Self::send_raw): they cannot be
/// replayed), and after a fatal ERROR from the server (the connection was
/// broken by what we sent).
pub struct SigClient {
    stream: Option<Stream>,
    dial: Dial,
    next_id: u64,
    max_frame: usize,
    /// Encoded batches sent and not answered yet, by id (ids grow with
    /// each send, so this is also the order to resend them in).
    unanswered: BTreeMap<u64, Vec<u8>>,
    /// A PING sent and not answered (resent too).
    ping: Option<u64>,
    reconnect_for: Option<Duration>,
    read_timeout: Option<Duration>,
    stats: ReconnectStats,
}

/// What reconnecting took, for callers that watch it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReconnectStats {
    /// Connections made again after one was lost.
    pub reconnects: u64,
    /// Connection attempts that failed (refused, no such socket, TLS).
    pub failed_attempts: u64,
    /// Batches sent again on a new connection.
    pub resent: u64,
}

fn open(d: &Dial) -> Result<Stream, ClientError> {
    match (&d.tls, &d.addr) {
        (Some(t), a) => open_tls(a, t),
        (None, ServeAddr::Tcp(a)) => {
            let s = TcpStream::connect(a)?;
            s.set_nodelay(true)?;
            Ok(Stream::Tcp(s))
        }
        (None, ServeAddr::Unix(p)) => Ok(Stream::Unix(UnixStream::connect(p)?)),
    }
}

fn open_tls(addr: &ServeAddr, tls: &ClientTls) -> Result<Stream, ClientError> {
    let ServeAddr::Tcp(a) = addr else {
        return Err(ClientError::Tls("TLS needs a TCP address".into()));
    };
    let cfg = tls.config().map_err(|e| ClientError::Tls(e.to_string()))?;
    let name = match &tls.server_name {
        Some(n) => ServerName::try_from(n.clone()).map_err(|e| ClientError::Tls(format!("{n:?}: {e}")))?,
        None => ServerName::IpAddress(a.ip().into()),
    };
    let mut conn = rustls::ClientConnection::new(cfg, name).map_err(|e| ClientError::Tls(e.to_string()))?;
    let mut sock = TcpStream::connect(a)?;
    sock.set_nodelay(true)?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| ClientError::Tls(format!("handshake with {a}: {e}")))?;
    }
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock))))
}

/// The connection is gone (as opposed to a timeout the caller set, or a
/// protocol error): worth connecting again.
fn lost(e: &ClientError) -> bool {
    use io::ErrorKind::*;
    matches!(e, ClientError::Io(e) if matches!(e.kind(), UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | NotConnected))
}

impl SigClient {
    pub fn connect(addr: &ServeAddr) -> Result<SigClient, ClientError> {
        Self::dial(Dial { addr: addr.clone(), tls: None })
    }

    /// Connect to a TLS sigserve (a TCP address); the handshake, and so the
    /// check of the server's certificate (and of ours, when the server
    /// asks), is done before this returns.
    pub fn connect_tls(addr: &ServeAddr, tls: &ClientTls) -> Result<SigClient, ClientError> {
        Self::dial(Dial { addr: addr.clone(), tls: Some(tls.clone()) })
    }

    /// [`connect`](Self::connect), or [`connect_tls`](Self::connect_tls) when `tls` is given.
    pub fn connect_with(addr: &ServeAddr, tls: Option<&ClientTls>) -> Result<SigClient, ClientError> {
        Self::dial(Dial { addr: addr.clone(), tls: tls.cloned() })
    }

    fn dial(dial: Dial) -> Result<SigClient, ClientError> {
        let stream = open(&dial)?;
        Ok(SigClient {
            stream: Some(stream),
            dial,
            next_id: 1,
            max_frame: frame::DEFAULT_MAX_FRAME,
            unanswered: BTreeMap::new(),
            ping: None,
            reconnect_for: Some(DEFAULT_RECONNECT_FOR),
            read_timeout: None,
            stats: ReconnectStats::default(),
        })
    }

    /// Keep trying to reconnect for this long after a connection is lost
    /// (None: never; a lost connection is then an error).
    pub fn set_reconnect(&mut self, d: Option<Duration>) {
        self.reconnect_for = d;
    }

    pub fn reconnect_stats(&self) -> ReconnectStats {
        self.stats
    }

    /// Batches sent and not answered yet.
    pub fn unanswered(&self) -> usize {
        self.unanswered.len()
    }

    /// Give up reading an answer after this long (None: wait forever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        self.read_timeout = t;
        match &self.stream {
            Some(s) => Self::apply_timeout(s, t),
            None => Ok(()),
        }
    }

    fn apply_timeout(s: &Stream, t: Option<Duration>) -> Result<(), ClientError> {
        match s {
            Stream::Tcp(s) => s.set_read_timeout(t)?,
            Stream::Unix(s) => s.set_read_timeout(t)?,
            Stream::Tls(s) => s.sock.set_read_timeout(t)?,
        }
        Ok(())
    }

    /// Send raw bytes (tests of the server's parser). From then on a lost
    /// connection is an error: raw bytes cannot be replayed.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.reconnect_for = None;
        let s = self.stream.as_mut().ok_or_else(|| ClientError::Io(io::ErrorKind::NotConnected.into()))?;
        s.write_all(bytes)?;
        s.flush()?;
        Ok(())
    }

    /// Writes `bytes` on the connection; a lost connection is restored (and
    /// everything unanswered, `bytes` included when tracked, resent).
    fn write_tracked(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        let r = match self.stream.as_mut() {
            Some(s) => s.write_all(bytes).and_then(|_| s.flush()).map_err(ClientError::Io),
            None => Err(ClientError::Io(io::ErrorKind::NotConnected.into())),
        };
        match r {
            Err(e) if lost(&e) && self.reconnect_for.is_some() => self.restore(),
            r => r,
        }
    }

    /// Connects again and resends what is unanswered, in the order sent.
    fn restore(&mut self) -> Result<(), ClientError> {
        let Some(limit) = self.reconnect_for else {
            return Err(ClientError::Io(io::ErrorKind::NotConnected.into()));
        };
        self.stream = None;
        let until = Instant::now() + limit;
        let mut wait = Duration::from_millis(5);
        loop {
            match open(&self.dial) {
                Ok(mut s) => {
                    Self::apply_timeout(&s, self.read_timeout)?;
                    self.stats.reconnects += 1;
                    let mut sent = Ok(());
                    for f in self.unanswered.values() {
                        sent = s.write_all(f);
                        if sent.is_err() {
                            break;
                        }
                        self.stats.resent += 1;
                    }
                    if let (Ok(()), Some(id)) = (&sent, self.ping) {
                        sent = s.write_all(&frame::encode_ping(id));
                    }
                    match sent.and_then(|_| s.flush()) {
                        Ok(()) => {
                            self.stream = Some(s);
                            return Ok(());
                        }
                        // Lost again while resending: start over.
                        Err(e) if Instant::now() < until => tracing::debug!("sigserve client: resend failed: {e}"),
                        Err(e) => return Err(ClientError::Io(e)),
                    }
                }
                Err(e) => {
                    self.stats.failed_attempts += 1;
                    if Instant::now() >= until {
                        return Err(e);
                    }
                }
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(200));
        }
    }

    /// Send a batch without waiting; returns its id.
    pub fn send_batch(&mut self, items: &[SigItem], deadline: Option<Duration>) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let us = deadline.map_or(0, |d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX).max(1));
        let f = frame::encode_batch(id, us, items)?;
        if f.len() - 4 > frame::MAX_FRAME_LIMIT {
            return Err(ClientError::Protocol(format!("batch of {} bytes is over the frame limit; split it", f.len())));
        }
        if self.reconnect_for.is_some() {
            self.unanswered.insert(id, f.clone());
        }
        self.write_tracked(&f)?;
        Ok(id)
    }

    fn read_frame(&mut self) -> Result<Frame, ClientError> {
        let s = self.stream.as_mut().ok_or_else(|| ClientError::Io(io::ErrorKind::NotConnected.into()))?;
        let mut hdr = [0u8; HEADER_LEN];
        s.read_exact(&mut hdr)?;
        let (len, kind) = frame::parse_header(&hdr, self.max_frame)?;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body)?;
        Ok(frame::parse_body(kind, &body, usize::MAX)?)
    }

    /// Read the next frame from the server: each batch's answer once, across
    /// reconnects.
    pub fn recv(&mut self) -> Result<Frame, ClientError> {
        loop {
            let f = match self.read_frame() {
                Ok(f) => f,
                Err(e) if lost(&e) && self.reconnect_for.is_some() => {
                    self.restore()?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let tracking = self.reconnect_for.is_some();
            match &f {
                Frame::Verdicts { id, .. } if tracking && self.unanswered.remove(id).is_none() => {
                    // An answer already delivered (cannot happen with a
                    // server that answers each batch once): never twice.
                    continue;
                }
                Frame::Error { id, code, .. } if tracking => match ErrorCode::from_u16(*code) {
                    // Not taken by a server on its way out: resent to the
                    // one that takes over once this connection closes.
                    Some(ErrorCode::ShuttingDown) if self.unanswered.contains_key(id) => continue,
                    Some(c) if c.is_fatal() => {
                        self.reconnect_for = None;
                        self.unanswered.remove(id);
                    }
                    _ => {
                        self.unanswered.remove(id);
                    }
                },
                Frame::Pong { id } if self.ping == Some(*id) => self.ping = None,
                _ => {}
            }
            return Ok(f);
        }
    }

    /// Send one batch and wait for its verdicts (one per item, in order).
    pub fn verify(&mut self, items: &[SigItem], deadline: Option<Duration>) -> Result<Vec<Verdict>, ClientError> {
        let id = self.send_batch(items, deadline)?;
        match self.recv()? {
            Frame::Verdicts { id: got, verdicts } if got == id && verdicts.len() == items.len() => Ok(verdicts),
            Frame::Verdicts { id: got, verdicts } => Err(ClientError::Protocol(format!(
                "asked {id} ({} items), got answer {got} ({} items)",
                items.len(),
                verdicts.len()
            ))),
            Frame::Error { id, code, message } => {
                Err(ClientError::Server { id, code: ErrorCode::from_u16(code), message })
            }
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }

    /// Round trip of a PING.
    pub fn ping(&mut self) -> Result<Duration, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let t = Instant::now();
        self.ping = Some(id);
        self.write_tracked(&frame::encode_ping(id))?;
        match self.recv()? {
            Frame::Pong { id: got } if got == id => Ok(t.elapsed()),
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }
}
