//! The encrypted connection to a Stratum V2 pool: the Noise NX handshake as
//! initiator (codec_sv2 / noise_sv2, nothing hand-rolled), then frames both
//! ways. The pool's certificate is checked by noise_sv2 against the authority
//! key from the URL, validity window included; any failure ends the attempt:
//! there is no unauthenticated or plain-text fallback.

use std::time::Duration;

use codec_sv2::{
    Decoded, Decrypted, Handshake, InitiatorSent, NoiseDecoder, NoiseEncoder, TransportDecryptState,
    TransportEncryptState,
};
use framing_sv2::framing::MessageFrame;
use noise_sv2::Initiator;
use parsers_sv2::AnyMessage;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::messages::{self, FromPool};
use crate::node::stratum::transport::{ReadHalf, WriteHalf};

/// Why the handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The pool's certificate is not signed by the authority key of the URL,
    /// or is outside its validity window: not the pool we were told to trust.
    #[error("the pool's certificate does not check against its authority key: {0}")]
    Refused(String),
    #[error("connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("the pool did not complete the handshake within {0:?}")]
    Timeout(Duration),
    #[error("handshake: {0}")]
    Protocol(String),
}

/// What the reader task hands the session.
#[derive(Debug)]
pub enum Incoming {
    Message(FromPool),
    /// A frame that did not parse (counted as a bad message, not fatal).
    Bad(String),
    /// The connection ended (`Some`: with an error, e.g. a frame that failed
    /// to decrypt, after which the stream cannot be trusted).
    Closed(Option<String>),
}

/// The sending half of an established connection.
pub struct Sender {
    wr: WriteHalf,
    enc: NoiseEncoder,
    state: TransportEncryptState,
}

impl Sender {
    /// Encrypts and writes one message (bounded by the caller's timers).
    pub async fn send(&mut self, msg: AnyMessage<'_>) -> Result<(), String> {
        let bytes = {
            let frame: MessageFrame<AnyMessage<'_>> =
                msg.try_into().map_err(|e| format!("cannot frame a message: {e:?}"))?;
            let out = self.enc.encode_transport(frame, &mut self.state).map_err(|e| format!("cannot encrypt: {e}"))?;
            AsRef::<[u8]>::as_ref(&out).to_vec()
        };
        self.wr.write_all(&bytes).await.map_err(|e| e.to_string())?;
        self.wr.flush().await.map_err(|e| e.to_string())
    }
}

/// Runs the handshake on a fresh connection; on success returns the sending
/// half and starts a task that decrypts and parses the pool's frames into
/// `tx`.
pub async fn handshake(
    mut rd: ReadHalf,
    mut wr: WriteHalf,
    authority: [u8; 32],
    timeout: Duration,
    tx: mpsc::Sender<Incoming>,
) -> Result<(Sender, tokio::task::JoinHandle<()>), HandshakeError> {
    let mut enc = NoiseEncoder::new();
    let mut dec = NoiseDecoder::new();
    let initiator = Initiator::from_raw_k(authority).map_err(|e| HandshakeError::Protocol(format!("{e:?}")))?;
    let (first, sent) =
        Handshake::initiator(initiator).step_0().map_err(|e| HandshakeError::Protocol(e.to_string()))?;
    let exchange = async {
        wr.write_all(enc.encode_handshake(first).as_ref()).await?;
        wr.flush().await?;
        loop {
            match dec.next_handshake_frame::<InitiatorSent>() {
                Ok(Decoded::Frame(m)) => return Ok(m),
                Ok(Decoded::Incomplete(_)) => {
                    rd.read_exact(dec.writable()).await?;
                }
                Err(e) => return Err(HandshakeError::Protocol(e.to_string())),
            }
        }
    };
    let reply = tokio::time::timeout(timeout, exchange).await.map_err(|_| HandshakeError::Timeout(timeout))??;
    let reply: [u8; noise_sv2::INITIATOR_EXPECTED_HANDSHAKE_MESSAGE_SIZE] =
        reply.payload().try_into().map_err(|_| HandshakeError::Protocol("reply of the wrong size".into()))?;
    // step_2 verifies the certificate: the pool's static key signed by the
    // authority key, now within [valid_from, not_valid_after].
    let transport = sent.step_2(reply).map_err(|e| match e {
        codec_sv2::Error::NoiseSv2Error(noise_sv2::Error::InvalidCertificate(_)) => {
            HandshakeError::Refused("signature or validity window".into())
        }
        other => HandshakeError::Refused(other.to_string()),
    })?;
    let (enc_state, dec_state) = transport.split();
    let reader = tokio::spawn(reader(rd, dec, dec_state, tx));
    Ok((Sender { wr, enc, state: enc_state }, reader))
}

async fn reader(mut rd: ReadHalf, mut dec: NoiseDecoder, mut state: TransportDecryptState, tx: mpsc::Sender<Incoming>) {
    loop {
        let ev = match dec.next_transport_frame(state) {
            Ok(Decrypted::Frame(mut frame, s)) => {
                state = s;
                let header = frame.header();
                match messages::parse(header, frame.payload()) {
                    Ok(m) => Incoming::Message(m),
                    Err(e) => Incoming::Bad(e),
                }
            }
            Ok(Decrypted::Incomplete(_, s)) => {
                state = s;
                if let Err(e) = rd.read_exact(dec.writable()).await {
                    let why = (e.kind() != std::io::ErrorKind::UnexpectedEof).then(|| e.to_string());
                    let _ = tx.send(Incoming::Closed(why)).await;
                    return;
                }
                continue;
            }
            Err(e) => {
                let _ = tx.send(Incoming::Closed(Some(format!("undecryptable or malformed frame: {e}")))).await;
                return;
            }
        };
        if tx.send(ev).await.is_err() {
            return;
        }
    }
}
