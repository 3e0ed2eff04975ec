//! A blocking sigserve client for validators (and the CLI, tests, benches).
//!
//! ```no_run
//! # use hashrig::node::sigserve::{SigClient, ServeAddr};
//! # use hashrig::sig::{SigItem, Scheme};
//! let mut c = SigClient::connect(&"127.0.0.1:9788".parse::<ServeAddr>()?)?;
//! let verdicts = c.verify(&[SigItem::new(Scheme::Schnorr, vec![0; 32], b"m".to_vec(), vec![0; 64])], None)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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

/// One connection; requests may be pipelined with
/// [`send_batch`](Self::send_batch) / [`recv`](Self::recv).
pub struct SigClient {
    stream: Stream,
    next_id: u64,
    max_frame: usize,
}

impl SigClient {
    pub fn connect(addr: &ServeAddr) -> Result<SigClient, ClientError> {
        let stream = match addr {
            ServeAddr::Tcp(a) => {
                let s = TcpStream::connect(a)?;
                s.set_nodelay(true)?;
                Stream::Tcp(s)
            }
            ServeAddr::Unix(p) => Stream::Unix(UnixStream::connect(p)?),
        };
        Ok(SigClient { stream, next_id: 1, max_frame: frame::DEFAULT_MAX_FRAME })
    }

    /// Connect to a TLS sigserve (a TCP address); the handshake, and so the
    /// check of the server's certificate (and of ours, when the server
    /// asks), is done before this returns.
    pub fn connect_tls(addr: &ServeAddr, tls: &ClientTls) -> Result<SigClient, ClientError> {
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
        let stream = Stream::Tls(Box::new(rustls::StreamOwned::new(conn, sock)));
        Ok(SigClient { stream, next_id: 1, max_frame: frame::DEFAULT_MAX_FRAME })
    }

    /// [`connect`](Self::connect), or [`connect_tls`](Self::connect_tls) when `tls` is given.
    pub fn connect_with(addr: &ServeAddr, tls: Option<&ClientTls>) -> Result<SigClient, ClientError> {
        match tls {
            Some(t) => Self::connect_tls(addr, t),
            None => Self::connect(addr),
        }
    }

    /// Give up reading an answer after this long (None: wait forever).
    pub fn set_read_timeout(&mut self, t: Option<Duration>) -> Result<(), ClientError> {
        match &self.stream {
            Stream::Tcp(s) => s.set_read_timeout(t)?,
            Stream::Unix(s) => s.set_read_timeout(t)?,
            Stream::Tls(s) => s.sock.set_read_timeout(t)?,
        }
        Ok(())
    }

    /// Send raw bytes (tests of the server's parser).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        Ok(())
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
        self.stream.write_all(&f)?;
        self.stream.flush()?;
        Ok(id)
    }

    /// Read the next frame from the server.
    pub fn recv(&mut self) -> Result<Frame, ClientError> {
        let mut hdr = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut hdr)?;
        let (len, kind) = frame::parse_header(&hdr, self.max_frame)?;
        let mut body = vec![0u8; len];
        self.stream.read_exact(&mut body)?;
        Ok(frame::parse_body(kind, &body, usize::MAX)?)
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
        self.stream.write_all(&frame::encode_ping(id))?;
        self.stream.flush()?;
        match self.recv()? {
            Frame::Pong { id: got } if got == id => Ok(t.elapsed()),
            other => Err(ClientError::Protocol(format!("unexpected frame {other:?}"))),
        }
    }
}
