//! The sigserve wire format (docs/sigserve-protocol.md): pure encoding and
//! parsing, no I/O, so it can be fuzzed and tested on garbage.
//!
//! Every frame: `len: u32 LE` (bytes after this field) ‖ `version: u8` ‖
//! `kind: u8` ‖ body. All integers little-endian.

use crate::sig::{Reason, Scheme, SigItem, Verdict};

pub const VERSION: u8 = 1;
/// Bytes of `len ‖ version ‖ kind`.
pub const HEADER_LEN: usize = 6;
/// Hard cap on `len`: below 2^24, so the fourth byte of every frame is 0
/// (that is how a connection's first bytes tell binary from JSON mode).
pub const MAX_FRAME_LIMIT: usize = (1 << 24) - 1;
/// Default cap on `len` (16 MiB − 1).
pub const DEFAULT_MAX_FRAME: usize = MAX_FRAME_LIMIT;

pub const KIND_BATCH: u8 = 0x01;
pub const KIND_PING: u8 = 0x02;
pub const KIND_VERDICTS: u8 = 0x81;
pub const KIND_PONG: u8 = 0x82;
pub const KIND_ERROR: u8 = 0xE0;

/// Bytes of an item's fixed part: scheme, flags, pk_len, sig_len, msg_len.
pub const ITEM_HEAD: usize = 10;
/// Bytes of a batch body before its items: id, deadline_us, count.
pub const BATCH_HEAD: usize = 16;

/// ERROR codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The frame could not be parsed; the server closes the connection.
    BadFrame = 1,
    /// `len` is over the server's limit; the connection is closed.
    TooLarge = 2,
    /// Unsupported protocol version; the connection is closed.
    BadVersion = 3,
    /// Unknown frame kind; the connection is closed.
    UnknownKind = 4,
    /// The batch has more items than the server takes; that batch is not
    /// accepted, the connection stays open.
    TooManyItems = 5,
    /// The server is shutting down and accepts no new batch.
    ShuttingDown = 6,
}

impl ErrorCode {
    pub fn from_u16(c: u16) -> Option<ErrorCode> {
        use ErrorCode::*;
        [BadFrame, TooLarge, BadVersion, UnknownKind, TooManyItems, ShuttingDown].into_iter().find(|e| *e as u16 == c)
    }
    /// Whether the server closes the connection after sending it.
    pub fn is_fatal(self) -> bool {
        matches!(self, ErrorCode::BadFrame | ErrorCode::TooLarge | ErrorCode::BadVersion | ErrorCode::UnknownKind)
    }
}

/// Why bytes are not a frame.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {len} is over the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame length {0} is shorter than version and kind")]
    TooShort(usize),
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("malformed {0} frame")]
    Malformed(&'static str),
    /// A well-formed batch with more items than the server takes.
    #[error("batch {id} has {count} items, over the limit of {max}")]
    TooManyItems { id: u64, count: usize, max: usize },
}

impl FrameError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::TooLarge,
            FrameError::BadVersion(_) => ErrorCode::BadVersion,
            FrameError::UnknownKind(_) => ErrorCode::UnknownKind,
            FrameError::TooShort(_) | FrameError::Malformed(_) => ErrorCode::BadFrame,
            FrameError::TooManyItems { .. } => ErrorCode::TooManyItems,
        }
    }
}

/// A batch request. Items whose scheme byte is unknown are kept as `Err` so
/// they get a verdict ([`Reason::UnknownScheme`]) instead of failing the frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchRequest {
    pub id: u64,
    /// Deadline in µs after the server reads the frame; 0 = none.
    pub deadline_us: u32,
    pub items: Vec<Result<SigItem, Reason>>,
}

/// Any frame, either direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    Batch(BatchRequest),
    Ping { id: u64 },
    Verdicts { id: u64, verdicts: Vec<Verdict> },
    Pong { id: u64 },
    Error { id: u64, code: u16, message: String },
}

/// Parse `len ‖ version ‖ kind`: the body length that follows, and the kind.
pub fn parse_header(h: &[u8; HEADER_LEN], max_frame: usize) -> Result<(usize, u8), FrameError> {
    let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
    if len > max_frame.min(MAX_FRAME_LIMIT) {
        return Err(FrameError::TooLarge { len, max: max_frame.min(MAX_FRAME_LIMIT) });
    }
    if len < 2 {
        return Err(FrameError::TooShort(len));
    }
    if h[4] != VERSION {
        return Err(FrameError::BadVersion(h[4]));
    }
    let kind = h[5];
    if !matches!(kind, KIND_BATCH | KIND_PING | KIND_VERDICTS | KIND_PONG | KIND_ERROR) {
        return Err(FrameError::UnknownKind(kind));
    }
    Ok((len - 2, kind))
}

/// A cursor that never reads past the end.
struct Rd<'a>(&'a [u8]);
impl<'a> Rd<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            u64::from_le_bytes(a)
        })
    }
}

/// Parse the body of a frame of `kind` (as [`parse_header`] returned it).
/// `max_items` caps a batch's count before anything is allocated for it.
pub fn parse_body(kind: u8, body: &[u8], max_items: usize) -> Result<Frame, FrameError> {
    let mut r = Rd(body);
    let f = match kind {
        KIND_BATCH => {
            let bad = FrameError::Malformed("batch");
            let id = r.u64().ok_or(bad.clone())?;
            let deadline_us = r.u32().ok_or(bad.clone())?;
            let count = r.u32().ok_or(bad.clone())? as usize;
            // Every item takes at least ITEM_HEAD bytes: a count the body
            // cannot hold is malformed, and never sizes an allocation.
            if count > r.0.len() / ITEM_HEAD {
                return Err(bad);
            }
            if count > max_items {
                return Err(FrameError::TooManyItems { id, count, max: max_items });
            }
            let mut items = Vec::with_capacity(count);
            for _ in 0..count {
                let scheme = r.u8().ok_or(bad.clone())?;
                let flags = r.u8().ok_or(bad.clone())?;
                let pk_len = r.u16().ok_or(bad.clone())? as usize;
                let sig_len = r.u16().ok_or(bad.clone())? as usize;
                let msg_len = r.u32().ok_or(bad.clone())? as usize;
                let pk = r.take(pk_len).ok_or(bad.clone())?;
                let sig = r.take(sig_len).ok_or(bad.clone())?;
                let msg = r.take(msg_len).ok_or(bad.clone())?;
                items.push(match Scheme::from_wire(scheme) {
                    Some(s) => {
                        Ok(SigItem { scheme: s, pubkey: pk.to_vec(), msg: msg.to_vec(), sig: sig.to_vec(), flags })
                    }
                    None => Err(Reason::UnknownScheme),
                });
            }
            Frame::Batch(BatchRequest { id, deadline_us, items })
        }
        KIND_PING => Frame::Ping { id: r.u64().ok_or(FrameError::Malformed("ping"))? },
        KIND_PONG => Frame::Pong { id: r.u64().ok_or(FrameError::Malformed("pong"))? },
        KIND_VERDICTS => {
            let bad = FrameError::Malformed("verdicts");
            let id = r.u64().ok_or(bad.clone())?;
            let count = r.u32().ok_or(bad.clone())? as usize;
            let codes = r.take(count).ok_or(bad.clone())?;
            let verdicts = codes.iter().map(|&c| Verdict::from_code(c).ok_or(bad.clone())).collect::<Result<_, _>>()?;
            Frame::Verdicts { id, verdicts }
        }
        KIND_ERROR => {
            let bad = FrameError::Malformed("error");
            let id = r.u64().ok_or(bad.clone())?;
            let code = r.u16().ok_or(bad.clone())?;
            let n = r.u16().ok_or(bad.clone())? as usize;
            let msg = r.take(n).ok_or(bad.clone())?;
            Frame::Error { id, code, message: String::from_utf8_lossy(msg).into_owned() }
        }
        other => return Err(FrameError::UnknownKind(other)),
    };
    if !r.0.is_empty() {
        return Err(FrameError::Malformed("frame (trailing bytes)"));
    }
    Ok(f)
}

/// Take one whole frame off the front of `buf`: `Ok(None)` when more bytes
/// are needed, else the frame and how many bytes it used.
pub fn decode(buf: &[u8], max_frame: usize, max_items: usize) -> Result<Option<(Frame, usize)>, FrameError> {
    let Some(h) = buf.get(..HEADER_LEN) else { return Ok(None) };
    let mut hdr = [0u8; HEADER_LEN];
    hdr.copy_from_slice(h);
    let (body_len, kind) = parse_header(&hdr, max_frame)?;
    let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + body_len) else { return Ok(None) };
    Ok(Some((parse_body(kind, body, max_items)?, HEADER_LEN + body_len)))
}

fn frame(kind: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&((body.len() + 2) as u32).to_le_bytes());
    out.push(VERSION);
    out.push(kind);
    out.extend_from_slice(&body);
    out
}

/// Why an item cannot be put on the wire.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("item {index}: a field is longer than the wire format allows")]
pub struct EncodeError {
    pub index: usize,
}

/// Encode a BATCH frame.
pub fn encode_batch(id: u64, deadline_us: u32, items: &[SigItem]) -> Result<Vec<u8>, EncodeError> {
    let size: usize = items.iter().map(|i| ITEM_HEAD + i.pubkey.len() + i.sig.len() + i.msg.len()).sum();
    let mut b = Vec::with_capacity(BATCH_HEAD + size);
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&deadline_us.to_le_bytes());
    b.extend_from_slice(&(items.len() as u32).to_le_bytes());
    for (index, it) in items.iter().enumerate() {
        let pk = u16::try_from(it.pubkey.len()).map_err(|_| EncodeError { index })?;
        let sig = u16::try_from(it.sig.len()).map_err(|_| EncodeError { index })?;
        let msg = u32::try_from(it.msg.len()).map_err(|_| EncodeError { index })?;
        b.push(it.scheme.wire());
        b.push(it.flags);
        b.extend_from_slice(&pk.to_le_bytes());
        b.extend_from_slice(&sig.to_le_bytes());
        b.extend_from_slice(&msg.to_le_bytes());
        b.extend_from_slice(&it.pubkey);
        b.extend_from_slice(&it.sig);
        b.extend_from_slice(&it.msg);
    }
    Ok(frame(KIND_BATCH, b))
}

pub fn encode_verdicts(id: u64, verdicts: &[Verdict]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + verdicts.len());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(verdicts.len() as u32).to_le_bytes());
    b.extend(verdicts.iter().map(|v| v.code()));
    frame(KIND_VERDICTS, b)
}

pub fn encode_ping(id: u64) -> Vec<u8> {
    frame(KIND_PING, id.to_le_bytes().to_vec())
}

pub fn encode_pong(id: u64) -> Vec<u8> {
    frame(KIND_PONG, id.to_le_bytes().to_vec())
}

pub fn encode_error(id: u64, code: ErrorCode, message: &str) -> Vec<u8> {
    let m = &message.as_bytes()[..message.len().min(1024)];
    let mut b = Vec::with_capacity(12 + m.len());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&(code as u16).to_le_bytes());
    b.extend_from_slice(&(m.len() as u16).to_le_bytes());
    b.extend_from_slice(m);
    frame(KIND_ERROR, b)
}

/// Encode any frame (the inverse of [`decode`]).
pub fn encode(f: &Frame) -> Result<Vec<u8>, EncodeError> {
    Ok(match f {
        Frame::Batch(b) => {
            // Unknown-scheme placeholders cannot be re-encoded; send them as
            // scheme byte 0 with empty fields.
            let mut out = Vec::new();
            out.extend_from_slice(&b.id.to_le_bytes());
            out.extend_from_slice(&b.deadline_us.to_le_bytes());
            out.extend_from_slice(&(b.items.len() as u32).to_le_bytes());
            let known: Vec<SigItem> = b.items.iter().filter_map(|i| i.as_ref().ok().cloned()).collect();
            if known.len() == b.items.len() {
                return encode_batch(b.id, b.deadline_us, &known);
            }
            for (index, it) in b.items.iter().enumerate() {
                match it {
                    Ok(it) => {
                        let one = encode_batch(0, 0, std::slice::from_ref(it)).map_err(|_| EncodeError { index })?;
                        out.extend_from_slice(&one[HEADER_LEN + BATCH_HEAD..]);
                    }
                    Err(_) => out.extend_from_slice(&[0u8; ITEM_HEAD]),
                }
            }
            frame(KIND_BATCH, out)
        }
        Frame::Ping { id } => encode_ping(*id),
        Frame::Pong { id } => encode_pong(*id),
        Frame::Verdicts { id, verdicts } => encode_verdicts(*id, verdicts),
        Frame::Error { id, code, message } => {
            let m = &message.as_bytes()[..message.len().min(u16::MAX as usize)];
            let mut b = Vec::new();
            b.extend_from_slice(&id.to_le_bytes());
            b.extend_from_slice(&code.to_le_bytes());
            b.extend_from_slice(&(m.len() as u16).to_le_bytes());
            b.extend_from_slice(m);
            frame(KIND_ERROR, b)
        }
    })
}
