//! A Stratum V2 pool for integration tests, built from the reference
//! implementation's server-side code: the Noise responder of noise_sv2 /
//! codec_sv2 with an authority key pair, and channels_sv2's StandardChannel,
//! which builds the jobs from a template (NewTemplate / SetNewPrevHash as a
//! Template Provider sends them) and validates every share (job, ntime,
//! version bits, target, duplicates) as SRI's pool does.
#![allow(dead_code)] // not every test that includes this module needs all of it

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bitcoin::{Amount, ScriptBuf, Target, TxOut};
use channels_sv2::extranonce_manager::ExtranonceAllocator;
use channels_sv2::server::extended::ExtendedChannel;
use channels_sv2::server::share_accounting::{ShareValidationError, ShareValidationResult};
use channels_sv2::server::standard::StandardChannel;
use codec_sv2::{
    Decoded, Decrypted, Handshake, NoiseDecoder, NoiseEncoder, TransportDecryptState, TransportEncryptState,
};
use common_messages_sv2::{Protocol, SetupConnection, SetupConnectionError, SetupConnectionSuccess};
use framing_sv2::framing::MessageFrame;
use mining_sv2::{
    NewMiningJob, OpenExtendedMiningChannelSuccess, OpenStandardMiningChannelSuccess, SetNewPrevHash, SetTarget,
    SubmitSharesError, SubmitSharesStandard, SubmitSharesSuccess,
};
use noise_sv2::{Responder, ELLSWIFT_ENCODING_SIZE};
use parsers_sv2::{AnyMessage, AnyMessageOwned, CommonMessages, Mining, MiningOwned};
use template_distribution_sv2::{NewTemplateOwned, SetNewPrevHashOwned};

/// The authority key pair of the reference implementation's example pool
/// configs (pool-config-example.toml), base58check.
pub const AUTHORITY_PUBLIC: &str = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72";
pub const AUTHORITY_SECRET: &str = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n";

/// Difficulty 1/4096 as a target: 0xffff × 2^220 (about a share per 2^20 hashes).
pub fn easy_target() -> Target {
    let mut be = [0u8; 32];
    be[2] = 0x0f;
    be[3] = 0xff;
    be[4] = 0xf0;
    Target::from_be_bytes(be)
}

pub fn keys(public: &str, secret: &str) -> ([u8; 32], [u8; 32]) {
    let p: key_utils::Secp256k1PublicKey = public.parse().unwrap();
    let s: key_utils::Secp256k1SecretKey = secret.parse().unwrap();
    (p.into_bytes(), s.into_bytes())
}

/// A second key pair: a pool that is not the one the URL names.
pub fn other_keys() -> ([u8; 32], [u8; 32]) {
    let secp = bitcoin::secp256k1::Secp256k1::new();
    let secret = [7u8; 32];
    let sk = bitcoin::secp256k1::SecretKey::from_slice(&secret).unwrap();
    (sk.x_only_public_key(&secp).0.serialize(), secret)
}

/// One accepted connection after the Noise handshake.
pub struct PoolConn {
    stream: TcpStream,
    enc: NoiseEncoder,
    dec: NoiseDecoder,
    tx: TransportEncryptState,
    rx: Option<TransportDecryptState>,
    pub channel: Option<StandardChannel>,
    pub extended: Option<ExtendedChannel>,
    /// Refuse REQUIRES_STANDARD_JOBS and require extended channels, as a
    /// pool that does not serve header-only jobs does.
    pub extended_only: bool,
    allocator: ExtranonceAllocator,
    template_id: u64,
    /// Shares the channel accepted, by job id.
    pub accepted: Vec<(u32, u32)>,
    /// Rejections, with the channel's error code.
    pub rejected: Vec<String>,
    pub setup: Option<(u32, String)>,
    pub user: Option<String>,
    /// Nominal hash rates of the miner's UpdateChannel messages.
    pub nominal_rates: Vec<f32>,
}

/// What a handshake attempt ended as, seen from the pool.
pub enum Accepted {
    /// The client completed the handshake and sent a first frame.
    Conn(Box<PoolConn>),
    /// The client closed the connection after the pool's handshake reply,
    /// without sending a single frame.
    ClosedAfterHandshake,
}

fn now() -> u32 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as u32
}

/// Accepts one miner connection and runs the responder side of the
/// handshake with `authority` (public, secret), skipping connections that
/// close before their first handshake message (the miner's TCP probes of a
/// returning primary). `cert_now` backdates the certificate: its validity
/// window is [cert_now, cert_now + 1 h].
pub fn accept(l: &TcpListener, authority: ([u8; 32], [u8; 32]), cert_now: Option<u32>) -> Accepted {
    accept_as(l, authority, cert_now, false)
}

/// [`accept`], as a pool that takes extended channels only when
/// `extended_only`.
pub fn accept_as(
    l: &TcpListener,
    authority: ([u8; 32], [u8; 32]),
    cert_now: Option<u32>,
    extended_only: bool,
) -> Accepted {
    let mut c = accept_noise(l, authority, cert_now);
    c.extended_only = extended_only;
    // The client's first frame, or its refusal (a closed connection).
    match c.next_frame(Instant::now() + Duration::from_secs(30)) {
        Some(first) => {
            c.handle(first);
            Accepted::Conn(Box::new(c))
        }
        None => Accepted::ClosedAfterHandshake,
    }
}

/// Accepts one connection and runs the responder side of the Noise
/// handshake with `authority`, skipping connections that close before their
/// first handshake message; the connection, ready for transport frames.
pub fn accept_noise(l: &TcpListener, authority: ([u8; 32], [u8; 32]), cert_now: Option<u32>) -> PoolConn {
    loop {
        let (mut stream, _) = l.accept().unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut enc = NoiseEncoder::new();
        let mut dec = NoiseDecoder::new();
        let first = loop {
            match dec.next_handshake_frame::<Responder>().unwrap() {
                Decoded::Frame(m) => break Some(m),
                Decoded::Incomplete(_) => {
                    if stream.read_exact(dec.writable()).is_err() {
                        break None;
                    }
                }
            }
        };
        let Some(first) = first else { continue };
        let responder = Responder::from_authority_kp(&authority.0, &authority.1, Duration::from_secs(3600)).unwrap();
        let re_pub: [u8; ELLSWIFT_ENCODING_SIZE] = first.payload().try_into().unwrap();
        let hs = Handshake::responder(responder);
        let (reply, transport) = match cert_now {
            None => hs.step_1(re_pub).unwrap(),
            Some(t) => hs.step_1_with_now_rng(re_pub, t, &mut rand_08::thread_rng()).unwrap(),
        };
        stream.write_all(enc.encode_handshake(reply).as_ref()).unwrap();
        let (tx, rx) = transport.split();
        return PoolConn {
            stream,
            enc,
            dec,
            tx,
            rx: Some(rx),
            channel: None,
            extended: None,
            extended_only: false,
            allocator: ExtranonceAllocator::new(b"hr".to_vec(), 8, 256).unwrap(),
            template_id: 0,
            accepted: Vec::new(),
            rejected: Vec::new(),
            setup: None,
            user: None,
            nominal_rates: Vec::new(),
        };
    }
}

/// A frame as received: header and payload, to parse with parsers_sv2.
pub struct Frame {
    header: framing_sv2::header::Header,
    payload: Vec<u8>,
}

impl Frame {
    /// The frame's message, parsed.
    pub fn message(&mut self) -> AnyMessage<'_> {
        AnyMessage::try_from((self.header, self.payload.as_mut_slice())).expect("the peer sends valid frames")
    }
}

impl PoolConn {
    pub fn send_owned(&mut self, msg: AnyMessageOwned) {
        let frame: MessageFrame<AnyMessageOwned> = msg.try_into().unwrap();
        let out = self.enc.encode_transport(frame, &mut self.tx).unwrap();
        self.stream.write_all(AsRef::<[u8]>::as_ref(&out)).unwrap();
    }

    pub fn send(&mut self, msg: AnyMessage<'_>) {
        let frame: MessageFrame<AnyMessage<'_>> = msg.try_into().unwrap();
        let out = self.enc.encode_transport(frame, &mut self.tx).unwrap();
        self.stream.write_all(AsRef::<[u8]>::as_ref(&out)).unwrap();
    }

    /// True once bytes wait to be read (within `wait`): then
    /// [`PoolConn::next_frame`] can be called without a deadline cutting a
    /// frame in half (the decoder cannot resume a half-read frame).
    pub fn readable(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait.max(Duration::from_millis(1)))).unwrap();
        // Ok(0) is the end of the stream: next_frame then says so.
        self.stream.peek(&mut [0u8; 1]).is_ok()
    }

    /// The next frame, or None when the client closed the connection (or
    /// the time is up).
    pub fn next_frame(&mut self, until: Instant) -> Option<Frame> {
        loop {
            let left = until.checked_duration_since(Instant::now())?;
            self.stream.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            let state = self.rx.take()?;
            match self.dec.next_transport_frame(state).ok()? {
                Decrypted::Frame(mut f, s) => {
                    self.rx = Some(s);
                    return Some(Frame { header: f.header(), payload: f.payload().to_vec() });
                }
                Decrypted::Incomplete(_, s) => {
                    self.rx = Some(s);
                    self.stream.read_exact(self.dec.writable()).ok()?;
                }
            }
        }
    }

    /// Answers what the client sends: SetupConnection, OpenStandardMiningChannel
    /// (then the first job), SubmitSharesStandard.
    pub fn handle(&mut self, mut f: Frame) {
        let msg = AnyMessage::try_from((f.header, f.payload.as_mut_slice())).expect("the client sends valid frames");
        match msg {
            AnyMessage::Common(CommonMessages::SetupConnection(SetupConnection {
                protocol, flags, vendor, ..
            })) => {
                assert_eq!(protocol, Protocol::MiningProtocol);
                self.setup = Some((flags, String::from_utf8_lossy(vendor.as_bytes()).into_owned()));
                if self.extended_only && flags & 1 != 0 {
                    self.send(AnyMessage::Common(CommonMessages::SetupConnectionError(SetupConnectionError {
                        flags: 1,
                        error_code: b"unsupported-feature-flags".as_slice().try_into().unwrap(),
                    })));
                    return;
                }
                self.send(AnyMessage::Common(CommonMessages::SetupConnectionSuccess(SetupConnectionSuccess {
                    used_version: 2,
                    // REQUIRES_EXTENDED_CHANNELS
                    flags: if self.extended_only { 2 } else { 0 },
                })));
            }
            AnyMessage::Mining(Mining::OpenStandardMiningChannel(m)) => {
                let user = String::from_utf8_lossy(m.user_identity.as_bytes()).into_owned();
                let max_target = Target::from_le_bytes(m.max_target.to_array());
                let prefix = self.allocator.allocate_standard().unwrap();
                let mut ch = StandardChannel::new_for_pool(
                    1,
                    user.clone(),
                    prefix,
                    max_target,
                    m.nominal_hash_rate.max(1.0),
                    1,
                    60.0,
                    "hashrig test pool".into(),
                    None,
                )
                .unwrap();
                ch.set_target(easy_target().min(max_target)).unwrap();
                let target = ch.get_target().to_le_bytes();
                let prefix = ch.get_extranonce_prefix().to_vec();
                self.send(AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(
                    OpenStandardMiningChannelSuccess {
                        request_id: m.request_id,
                        channel_id: 1,
                        target: (&target).into(),
                        extranonce_prefix: prefix.as_slice().try_into().unwrap(),
                        group_channel_id: 0,
                    },
                )));
                self.user = Some(user);
                self.channel = Some(ch);
                self.new_block();
            }
            AnyMessage::Mining(Mining::OpenExtendedMiningChannel(m)) => {
                assert!(self.extended_only, "an extended channel only where the pool requires one");
                let user = String::from_utf8_lossy(m.user_identity.as_bytes()).into_owned();
                let max_target = Target::from_le_bytes(m.max_target.to_array());
                let rollable = m.min_extranonce_size.max(4);
                let prefix = self.allocator.allocate_extended(rollable as usize).unwrap();
                let mut ch = ExtendedChannel::new_for_pool(
                    1,
                    user.clone(),
                    prefix,
                    max_target,
                    m.nominal_hash_rate.max(1.0),
                    true,
                    rollable,
                    1,
                    60.0,
                    "hashrig test pool".into(),
                    None,
                )
                .unwrap();
                ch.set_target(easy_target().min(max_target)).unwrap();
                let target = ch.get_target().to_le_bytes();
                let prefix = ch.get_extranonce_prefix().to_vec();
                self.send(AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(
                    OpenExtendedMiningChannelSuccess {
                        request_id: m.request_id,
                        channel_id: 1,
                        target: (&target).into(),
                        extranonce_size: ch.get_rollable_extranonce_size(),
                        extranonce_prefix: prefix.as_slice().try_into().unwrap(),
                        group_channel_id: 0,
                    },
                )));
                self.user = Some(user);
                self.extended = Some(ch);
                self.new_block();
            }
            AnyMessage::Mining(Mining::SubmitSharesStandard(s)) => self.check_share(s),
            // The miner's measured rate, once it has one; the pool keeps its
            // target (it may answer with SetTarget, and need not).
            AnyMessage::Mining(Mining::UpdateChannel(u)) => self.nominal_rates.push(u.nominal_hash_rate),
            AnyMessage::Mining(Mining::SubmitSharesExtended(s)) => {
                let (channel_id, seq, job_id, nonce) = (s.channel_id, s.sequence_number, s.job_id, s.nonce);
                let ch = self.extended.as_mut().expect("extended shares only on an extended channel");
                let r = ch.validate_share(s.into_owned());
                self.answer(r, channel_id, seq, job_id, nonce);
            }
            other => panic!("unexpected message from the client: {other:?}"),
        }
    }

    fn check_share(&mut self, s: SubmitSharesStandard) {
        let ch = self.channel.as_mut().expect("shares only on an open channel");
        let r = ch.validate_share(s.as_owned());
        self.answer(r, s.channel_id, s.sequence_number, s.job_id, s.nonce);
    }

    fn answer(
        &mut self,
        r: Result<ShareValidationResult, ShareValidationError>,
        channel_id: u32,
        sequence_number: u32,
        job_id: u32,
        nonce: u32,
    ) {
        match r {
            Ok(ShareValidationResult::Valid(_)) | Ok(ShareValidationResult::BlockFound(..)) => {
                self.accepted.push((job_id, nonce));
                self.send(AnyMessage::Mining(Mining::SubmitSharesSuccess(SubmitSharesSuccess {
                    channel_id,
                    last_sequence_number: sequence_number,
                    new_submits_accepted_count: 1,
                    new_shares_sum: 1,
                })));
            }
            Err(e) => {
                let code = format!("{e:?}");
                let wire = match e {
                    ShareValidationError::Stale(c)
                    | ShareValidationError::Invalid(c)
                    | ShareValidationError::InvalidJobId(c)
                    | ShareValidationError::DoesNotMeetTarget(c)
                    | ShareValidationError::DuplicateShare(c) => c,
                    _ => "invalid-share",
                };
                self.rejected.push(code);
                self.send(AnyMessage::Mining(Mining::SubmitSharesError(SubmitSharesError {
                    channel_id,
                    sequence_number,
                    error_code: wire.as_bytes().try_into().unwrap(),
                })));
            }
        }
    }

    /// A new block: a future template, then its SetNewPrevHash, as a
    /// Template Provider sends them; the channel turns them into a
    /// NewMiningJob and a SetNewPrevHash for the client.
    pub fn new_block(&mut self) {
        self.template_id += 1;
        let id = self.template_id;
        let template = NewTemplateOwned {
            template_id: id,
            future_template: true,
            version: 0x2000_0000,
            coinbase_tx_version: 2,
            coinbase_prefix: vec![3, 0x10, 0x27, id as u8].try_into().unwrap(),
            coinbase_tx_input_sequence: 0xffff_fffe,
            coinbase_tx_value_remaining: 50_0000_0000,
            coinbase_tx_outputs_count: 0,
            coinbase_tx_outputs: vec![].try_into().unwrap(),
            coinbase_tx_locktime: 0,
            // Two other transactions' branch: an extended channel's miner
            // builds the merkle root through it.
            merkle_path: vec![[0x11u8; 32].into(), [0x22u8; 32].into()].try_into().unwrap(),
        };
        let payout = vec![TxOut { value: Amount::from_sat(50_0000_0000), script_pubkey: ScriptBuf::from(vec![0x51]) }];
        let mut prev = [0u8; 32];
        prev[..8].copy_from_slice(&(id * 0x9e37_79b9).to_le_bytes());
        let ntime = now();
        let snph = SetNewPrevHashOwned {
            template_id: id,
            prev_hash: prev.into(),
            header_timestamp: ntime,
            n_bits: 0x1d00ffff,
            target: [0xff; 32].into(),
        };
        if let Some(ch) = self.extended.as_mut() {
            ch.on_new_template(template, payout).unwrap();
            let job_id = ch.get_future_job_id_from_template_id(id).unwrap();
            let job = ch.get_future_job(job_id).unwrap().get_job_message().clone();
            ch.on_set_new_prev_hash(snph).unwrap();
            let channel_id = ch.get_channel_id();
            self.send_owned(AnyMessageOwned::Mining(MiningOwned::NewExtendedMiningJob(job)));
            self.send(AnyMessage::Mining(Mining::SetNewPrevHash(SetNewPrevHash {
                channel_id,
                job_id,
                prev_hash: (&prev).into(),
                min_ntime: ntime,
                nbits: 0x1d00ffff,
            })));
            return;
        }
        let ch = self.channel.as_mut().unwrap();
        ch.on_new_template(template, payout).unwrap();
        let job_id = ch.get_future_job_id_from_template_id(id).unwrap();
        let job = ch.get_future_job(job_id).unwrap().get_job_message().clone();
        ch.on_set_new_prev_hash(snph).unwrap();
        let channel_id = ch.get_channel_id();
        let merkle_root = job.merkle_root.as_array().to_owned();
        self.send(AnyMessage::Mining(Mining::NewMiningJob(NewMiningJob {
            channel_id,
            job_id,
            min_ntime: binary_sv2::Sv2Option::new(None),
            version: job.version,
            merkle_root: (&merkle_root).into(),
        })));
        self.send(AnyMessage::Mining(Mining::SetNewPrevHash(SetNewPrevHash {
            channel_id,
            job_id,
            prev_hash: (&prev).into(),
            min_ntime: ntime,
            nbits: 0x1d00ffff,
        })));
    }

    /// Lowers the share target (a harder difficulty) with SetTarget.
    pub fn set_target(&mut self, t: Target) {
        let channel_id = match (self.channel.as_mut(), self.extended.as_mut()) {
            (Some(ch), _) => {
                ch.set_target(t).unwrap();
                ch.get_channel_id()
            }
            (_, Some(ch)) => {
                ch.set_target(t).unwrap();
                ch.get_channel_id()
            }
            _ => panic!("no channel"),
        };
        let le = t.to_le_bytes();
        self.send(AnyMessage::Mining(Mining::SetTarget(SetTarget { channel_id, maximum_target: (&le).into() })));
    }

    /// Serves the client until `want` more shares are accepted (panics after
    /// `within`).
    pub fn serve(&mut self, want: usize, within: Duration) {
        let goal = self.accepted.len() + want;
        let until = Instant::now() + within;
        while self.accepted.len() < goal {
            let f = self.next_frame(until).unwrap_or_else(|| {
                panic!("{} of {want} shares within {within:?} (rejected: {:?})", self.accepted.len(), self.rejected)
            });
            self.handle(f);
        }
    }
}
