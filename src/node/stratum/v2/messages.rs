//! The Stratum V2 messages hashrig sends, and the pool's messages it acts on,
//! parsed (by parsers_sv2) into owned values so that the frame's buffer can
//! go back to the decoder at once.

use common_messages_sv2::{Protocol, SetupConnection};
use mining_sv2::{
    OpenExtendedMiningChannel, OpenStandardMiningChannel, SubmitSharesExtended, SubmitSharesStandard, UpdateChannel,
};
use parsers_sv2::{AnyMessage, CommonMessages, Mining};

use super::channel::JobWork;
use crate::chain::Target;

/// SetupConnection flag (mining protocol): the miner takes standard
/// (header-only) jobs.
pub const REQUIRES_STANDARD_JOBS: u32 = 1;
/// SetupConnection.Success flag: the pool accepts no change to the version.
pub const REQUIRES_FIXED_VERSION: u32 = 1;
/// SetupConnection.Success flag: the pool accepts extended channels only.
pub const REQUIRES_EXTENDED_CHANNELS: u32 = 1 << 1;
/// The version bits BIP320 leaves to miners, what a standard channel may roll.
pub const BIP320_VERSION_MASK: u32 = 0x1fff_e000;

/// A pool message, owned.
#[derive(Debug, Clone, PartialEq)]
pub enum FromPool {
    SetupSuccess {
        used_version: u16,
        flags: u32,
    },
    SetupError {
        flags: u32,
        code: String,
    },
    ChannelOpened {
        request_id: u32,
        channel_id: u32,
        target: Target,
        extranonce_prefix: Vec<u8>,
    },
    ExtendedChannelOpened {
        request_id: u32,
        channel_id: u32,
        target: Target,
        extranonce_size: u16,
        extranonce_prefix: Vec<u8>,
        group_channel_id: u32,
    },
    ChannelError {
        request_id: u32,
        code: String,
    },
    /// NewMiningJob or NewExtendedMiningJob.
    NewJob {
        channel_id: u32,
        job_id: u32,
        /// None: a future job, mined from the SetNewPrevHash that names it.
        min_ntime: Option<u32>,
        version: u32,
        work: JobWork,
    },
    SetExtranoncePrefix {
        channel_id: u32,
        extranonce_prefix: Vec<u8>,
    },
    PrevHash {
        channel_id: u32,
        job_id: u32,
        /// In header byte order.
        prev_hash: [u8; 32],
        min_ntime: u32,
        nbits: u32,
    },
    SetTarget {
        channel_id: u32,
        max_target: Target,
    },
    SubmitSuccess {
        channel_id: u32,
        last_sequence_number: u32,
        accepted: u32,
    },
    SubmitError {
        channel_id: u32,
        sequence_number: u32,
        code: String,
    },
    Reconnect {
        host: String,
        port: u16,
    },
    CloseChannel {
        channel_id: u32,
        reason: String,
    },
    UpdateChannelError {
        channel_id: u32,
        code: String,
    },
    /// A valid message a standard-channel miner has no use for (logged).
    Ignored(&'static str),
}

fn target(le: [u8; 32]) -> Target {
    Target::from_u256(crate::chain::uint::U256::from_le_bytes(&le))
}

fn text(s: &[u8]) -> String {
    super::super::proto::printable(&String::from_utf8_lossy(s), 255)
}

/// Parses one frame's payload; an error names what was wrong.
pub fn parse(header: framing_sv2::header::Header, payload: &mut [u8]) -> Result<FromPool, String> {
    let msg = AnyMessage::try_from((header, payload))
        .map_err(|e| format!("message type {:#04x}: {e:?}", header.msg_type()))?;
    Ok(match msg {
        AnyMessage::Common(CommonMessages::SetupConnectionSuccess(m)) => {
            FromPool::SetupSuccess { used_version: m.used_version, flags: m.flags }
        }
        AnyMessage::Common(CommonMessages::SetupConnectionError(m)) => {
            FromPool::SetupError { flags: m.flags, code: text(m.error_code.as_bytes()) }
        }
        AnyMessage::Common(CommonMessages::Reconnect(m)) => {
            FromPool::Reconnect { host: text(m.new_host.as_bytes()), port: m.new_port }
        }
        AnyMessage::Common(CommonMessages::ChannelEndpointChanged(_)) => FromPool::Ignored("ChannelEndpointChanged"),
        AnyMessage::Mining(Mining::OpenStandardMiningChannelSuccess(m)) => FromPool::ChannelOpened {
            request_id: m.request_id,
            channel_id: m.channel_id,
            target: target(m.target.to_array()),
            extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
        },
        AnyMessage::Mining(Mining::OpenExtendedMiningChannelSuccess(m)) => FromPool::ExtendedChannelOpened {
            request_id: m.request_id,
            channel_id: m.channel_id,
            target: target(m.target.to_array()),
            extranonce_size: m.extranonce_size,
            extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
            group_channel_id: m.group_channel_id,
        },
        AnyMessage::Mining(Mining::OpenMiningChannelError(m)) => {
            FromPool::ChannelError { request_id: m.request_id, code: text(m.error_code.as_bytes()) }
        }
        AnyMessage::Mining(Mining::NewMiningJob(m)) => FromPool::NewJob {
            channel_id: m.channel_id,
            job_id: m.job_id,
            min_ntime: m.min_ntime.into_inner(),
            version: m.version,
            work: JobWork::Header { merkle_root: m.merkle_root.to_array() },
        },
        AnyMessage::Mining(Mining::NewExtendedMiningJob(m)) => FromPool::NewJob {
            channel_id: m.channel_id,
            job_id: m.job_id,
            min_ntime: m.min_ntime.into_inner(),
            version: m.version,
            work: JobWork::Coinbase {
                prefix: m.coinbase_tx_prefix.as_bytes().to_vec(),
                suffix: m.coinbase_tx_suffix.as_bytes().to_vec(),
                merkle_path: m.merkle_path.into_inner().into_iter().map(|h| h.to_array()).collect(),
                version_rolling: m.version_rolling_allowed,
            },
        },
        AnyMessage::Mining(Mining::SetExtranoncePrefix(m)) => FromPool::SetExtranoncePrefix {
            channel_id: m.channel_id,
            extranonce_prefix: m.extranonce_prefix.as_bytes().to_vec(),
        },
        AnyMessage::Mining(Mining::SetNewPrevHash(m)) => FromPool::PrevHash {
            channel_id: m.channel_id,
            job_id: m.job_id,
            prev_hash: m.prev_hash.to_array(),
            min_ntime: m.min_ntime,
            nbits: m.nbits,
        },
        AnyMessage::Mining(Mining::SetTarget(m)) => {
            FromPool::SetTarget { channel_id: m.channel_id, max_target: target(m.maximum_target.to_array()) }
        }
        AnyMessage::Mining(Mining::SubmitSharesSuccess(m)) => FromPool::SubmitSuccess {
            channel_id: m.channel_id,
            last_sequence_number: m.last_sequence_number,
            accepted: m.new_submits_accepted_count,
        },
        AnyMessage::Mining(Mining::SubmitSharesError(m)) => FromPool::SubmitError {
            channel_id: m.channel_id,
            sequence_number: m.sequence_number,
            code: text(m.error_code.as_bytes()),
        },
        AnyMessage::Mining(Mining::CloseChannel(m)) => {
            FromPool::CloseChannel { channel_id: m.channel_id, reason: text(m.reason_code.as_bytes()) }
        }
        AnyMessage::Mining(Mining::SetGroupChannel(_)) => FromPool::Ignored("SetGroupChannel"),
        AnyMessage::Mining(Mining::UpdateChannelError(m)) => {
            FromPool::UpdateChannelError { channel_id: m.channel_id, code: text(m.error_code.as_bytes()) }
        }
        _ => FromPool::Ignored("a message not meant for a mining client"),
    })
}

/// SetupConnection for the mining protocol, version 2 only, with `flags`
/// ([`REQUIRES_STANDARD_JOBS`] or none). `host`/`port` are the pool's as we
/// dialled them; the strings are cut to the protocol's 255 bytes.
pub fn setup_connection<'a>(
    host: &'a str,
    port: u16,
    vendor: &'a str,
    firmware: &'a str,
    flags: u32,
) -> AnyMessage<'a> {
    let s = |v: &'a str| {
        let mut end = v.len().min(255);
        while !v.is_char_boundary(end) {
            end -= 1;
        }
        v.as_bytes()[..end].try_into().expect("at most 255 bytes")
    };
    AnyMessage::Common(CommonMessages::SetupConnection(SetupConnection {
        protocol: Protocol::MiningProtocol,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: s(host),
        endpoint_port: port,
        vendor: s(vendor),
        hardware_version: s(""),
        firmware: s(firmware),
        device_id: s(""),
    }))
}

/// OpenStandardMiningChannel for `user`; `max_target` bounds the easiest
/// target we take (the `[stratum] min_difficulty` floor), little-endian.
pub fn open_standard_channel<'a>(
    request_id: u32,
    user: &'a str,
    nominal_hash_rate: f32,
    max_target: &'a [u8; 32],
) -> Result<AnyMessage<'a>, String> {
    let user_identity =
        user.as_bytes().try_into().map_err(|_| "the worker name is longer than 255 bytes".to_owned())?;
    Ok(AnyMessage::Mining(Mining::OpenStandardMiningChannel(OpenStandardMiningChannel {
        request_id,
        user_identity,
        nominal_hash_rate,
        max_target: max_target.into(),
    })))
}

/// OpenExtendedMiningChannel: as [`open_standard_channel`], asking for at
/// least `min_extranonce_size` bytes of extranonce to roll.
pub fn open_extended_channel<'a>(
    request_id: u32,
    user: &'a str,
    nominal_hash_rate: f32,
    max_target: &'a [u8; 32],
    min_extranonce_size: u16,
) -> Result<AnyMessage<'a>, String> {
    let user_identity =
        user.as_bytes().try_into().map_err(|_| "the worker name is longer than 255 bytes".to_owned())?;
    Ok(AnyMessage::Mining(Mining::OpenExtendedMiningChannel(OpenExtendedMiningChannel {
        request_id,
        user_identity,
        nominal_hash_rate,
        max_target: max_target.into(),
        min_extranonce_size,
    })))
}

/// UpdateChannel: the channel's new nominal hash rate, with the same
/// easiest target as at its opening.
pub fn update_channel(channel_id: u32, nominal_hash_rate: f32, max_target: &[u8; 32]) -> AnyMessage<'_> {
    AnyMessage::Mining(Mining::UpdateChannel(UpdateChannel {
        channel_id,
        nominal_hash_rate,
        maximum_target: max_target.into(),
    }))
}

/// SubmitSharesExtended; `extranonce` is hashrig's part (at most 32 bytes).
#[allow(clippy::too_many_arguments)]
pub fn submit_extended(
    channel_id: u32,
    sequence_number: u32,
    job_id: u32,
    nonce: u32,
    ntime: u32,
    version: u32,
    extranonce: &[u8],
) -> Result<AnyMessage<'_>, String> {
    Ok(AnyMessage::Mining(Mining::SubmitSharesExtended(SubmitSharesExtended {
        channel_id,
        sequence_number,
        job_id,
        nonce,
        ntime,
        version,
        extranonce: extranonce.try_into().map_err(|_| "extranonce longer than 32 bytes".to_owned())?,
    })))
}

pub fn submit_standard(share: SubmitSharesStandard) -> AnyMessage<'static> {
    AnyMessage::Mining(Mining::SubmitSharesStandard(share))
}

#[cfg(test)]
mod tests {
    use super::*;
    use framing_sv2::framing::{EncodableFrame, MessageFrame};
    use framing_sv2::header::Header;
    use mining_sv2::SetTarget;

    /// Serialises a message as a frame would carry it: header, payload.
    fn wire(msg: AnyMessage<'_>) -> (Header, Vec<u8>) {
        let frame: MessageFrame<AnyMessage<'_>> = msg.try_into().unwrap();
        let header = frame.header();
        let mut b = vec![0u8; frame.encoded_length()];
        frame.encode_into(&mut b).unwrap();
        (header, b[Header::SIZE..].to_vec())
    }

    #[test]
    fn a_target_keeps_its_byte_order_through_the_codec() {
        // Difficulty 1 as a little-endian U256, as SetTarget carries it.
        let le = Target::DIFF1.to_le_bytes();
        let (h, mut p) =
            wire(AnyMessage::Mining(Mining::SetTarget(SetTarget { channel_id: 4, maximum_target: (&le).into() })));
        assert_eq!(parse(h, &mut p), Ok(FromPool::SetTarget { channel_id: 4, max_target: Target::DIFF1 }));
    }

    #[test]
    fn update_channel_carries_the_rate_and_the_target() {
        let le = Target::DIFF1.to_le_bytes();
        let (h, mut p) = wire(update_channel(9, 3.5e7, &le));
        let AnyMessage::Mining(Mining::UpdateChannel(m)) = AnyMessage::try_from((h, p.as_mut_slice())).unwrap() else {
            panic!("not an UpdateChannel");
        };
        assert_eq!((m.channel_id, m.nominal_hash_rate), (9, 3.5e7));
        assert_eq!(m.maximum_target.to_array(), le);
    }

    #[test]
    fn garbage_payloads_are_errors_not_panics() {
        let (h, p) =
            wire(AnyMessage::Mining(Mining::SetTarget(SetTarget { channel_id: 4, maximum_target: (&[7; 32]).into() })));
        for n in 0..p.len() {
            let mut short = p[..n].to_vec();
            assert!(parse(h, &mut short).is_err(), "{n} bytes");
        }
        // An unknown message type.
        let mut b = [0u8, 0, 0x7f, 1, 0, 0];
        let h = Header::from_bytes(&b).unwrap();
        assert!(parse(h, &mut b[Header::SIZE..]).is_err());
    }
}
