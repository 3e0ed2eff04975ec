//! Coinbase transactions as miners see them: split around the extranonce into
//! `coinb1` and `coinb2`, the way Stratum sends them, so one code path serves
//! pools, getblocktemplate and the demo node.
//!
//! The serialisation is the legacy (non-witness) one: that is what the txid
//! and so the merkle root commit to.

use super::hash::Txid;
use super::ChainError;

/// Bitcoin's CompactSize.
pub fn write_varint(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_le_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_le_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_le_bytes());
        }
    }
}

/// Reads a CompactSize at `*pos`, advancing it. Errors on truncation.
pub fn read_varint(b: &[u8], pos: &mut usize) -> Result<u64, ChainError> {
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], ChainError> {
        let s = b.get(*pos..*pos + n).ok_or(ChainError::Truncated("varint"))?;
        *pos += n;
        Ok(s)
    };
    let first = take(pos, 1)?[0];
    Ok(match first {
        0xfd => u16::from_le_bytes(take(pos, 2)?.try_into().unwrap()) as u64,
        0xfe => u32::from_le_bytes(take(pos, 4)?.try_into().unwrap()) as u64,
        0xff => u64::from_le_bytes(take(pos, 8)?.try_into().unwrap()),
        n => n as u64,
    })
}

/// The script bytes of `CScript() << height`, as BIP34 requires at the start
/// of the coinbase scriptSig: OP_0 for 0, OP_1..OP_16 for 1..16, otherwise a
/// minimal little-endian number push (with a sign byte when the top bit is set).
pub fn bip34_height_push(height: u32) -> Vec<u8> {
    match height {
        0 => vec![0x00],
        1..=16 => vec![0x50 + height as u8],
        _ => {
            let mut num = Vec::new();
            let mut v = height;
            while v > 0 {
                num.push((v & 0xff) as u8);
                v >>= 8;
            }
            if num.last().unwrap() & 0x80 != 0 {
                num.push(0);
            }
            let mut out = vec![num.len() as u8];
            out.extend_from_slice(&num);
            out
        }
    }
}

/// Reads the BIP34 height back from a scriptSig that starts with it.
pub fn parse_bip34_height(script_sig: &[u8]) -> Result<u32, ChainError> {
    let op = *script_sig.first().ok_or(ChainError::Truncated("coinbase scriptSig"))?;
    match op {
        0x00 => Ok(0),
        0x51..=0x60 => Ok((op - 0x50) as u32),
        1..=5 => {
            let n = op as usize;
            let bytes = script_sig.get(1..1 + n).ok_or(ChainError::Truncated("BIP34 height"))?;
            if bytes[n - 1] & 0x80 != 0 {
                return Err(ChainError::Invalid("negative BIP34 height"));
            }
            let mut v: u64 = 0;
            for (i, b) in bytes.iter().enumerate() {
                v |= (*b as u64) << (8 * i);
            }
            // Must be minimally encoded to match `CScript() << height`.
            if bip34_height_push(v as u32) != script_sig[..1 + n] || v > u32::MAX as u64 {
                return Err(ChainError::Invalid("BIP34 height not minimally encoded"));
            }
            Ok(v as u32)
        }
        _ => Err(ChainError::Invalid("coinbase scriptSig does not start with a height push")),
    }
}

/// A transaction output for the coinbase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxOut {
    pub value: u64,
    pub script_pubkey: Vec<u8>,
}

/// A coinbase split around its extranonce: `coinb1 ‖ extranonce ‖ coinb2`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoinbaseParts {
    pub coinb1: Vec<u8>,
    pub coinb2: Vec<u8>,
}

/// Builds a coinbase paying `outputs`, with scriptSig
/// `height push ‖ push(extranonce of extranonce_len bytes) ‖ push(tag)`.
pub fn build(height: u32, extranonce_len: usize, tag: &[u8], outputs: &[TxOut]) -> Result<CoinbaseParts, ChainError> {
    if extranonce_len == 0 || extranonce_len > 75 || tag.len() > 75 {
        return Err(ChainError::Invalid("extranonce must be 1..=75 bytes and tag at most 75"));
    }
    let height_push = bip34_height_push(height);
    let script_len = height_push.len() + 1 + extranonce_len + if tag.is_empty() { 0 } else { 1 + tag.len() };
    if script_len > 100 {
        return Err(ChainError::Invalid("coinbase scriptSig over 100 bytes"));
    }
    let mut c1 = Vec::with_capacity(64);
    c1.extend_from_slice(&1u32.to_le_bytes()); // version
    c1.push(1); // one input
    c1.extend_from_slice(&[0u8; 32]); // null prevout hash
    c1.extend_from_slice(&u32::MAX.to_le_bytes()); // prevout index
    write_varint(&mut c1, script_len as u64);
    c1.extend_from_slice(&height_push);
    c1.push(extranonce_len as u8); // direct push of the extranonce bytes

    let mut c2 = Vec::with_capacity(64);
    if !tag.is_empty() {
        c2.push(tag.len() as u8);
        c2.extend_from_slice(tag);
    }
    c2.extend_from_slice(&u32::MAX.to_le_bytes()); // sequence
    write_varint(&mut c2, outputs.len() as u64);
    for o in outputs {
        c2.extend_from_slice(&o.value.to_le_bytes());
        write_varint(&mut c2, o.script_pubkey.len() as u64);
        c2.extend_from_slice(&o.script_pubkey);
    }
    c2.extend_from_slice(&0u32.to_le_bytes()); // lock time
    Ok(CoinbaseParts { coinb1: c1, coinb2: c2 })
}

/// `coinb1 ‖ extranonce1 ‖ extranonce2 ‖ coinb2`.
pub fn assemble(coinb1: &[u8], extranonce1: &[u8], extranonce2: &[u8], coinb2: &[u8]) -> Vec<u8> {
    let mut tx = Vec::with_capacity(coinb1.len() + extranonce1.len() + extranonce2.len() + coinb2.len());
    tx.extend_from_slice(coinb1);
    tx.extend_from_slice(extranonce1);
    tx.extend_from_slice(extranonce2);
    tx.extend_from_slice(coinb2);
    tx
}

/// The scriptSig of a legacy-serialised coinbase, checking the input shape.
pub fn coinbase_script_sig(tx: &[u8]) -> Result<&[u8], ChainError> {
    let head = tx.get(..5).ok_or(ChainError::Truncated("coinbase"))?;
    if head[4] != 1 {
        return Err(ChainError::Invalid("coinbase must have exactly one input"));
    }
    let prevout = tx.get(5..41).ok_or(ChainError::Truncated("coinbase prevout"))?;
    if prevout[..32] != [0u8; 32] || prevout[32..] != [0xff; 4] {
        return Err(ChainError::Invalid("coinbase input must spend the null prevout"));
    }
    let mut pos = 41;
    let len = read_varint(tx, &mut pos)? as usize;
    if !(2..=100).contains(&len) {
        return Err(ChainError::Invalid("coinbase scriptSig must be 2..=100 bytes"));
    }
    tx.get(pos..pos + len).ok_or(ChainError::Truncated("coinbase scriptSig"))
}

pub fn txid(tx: &[u8]) -> Txid {
    Txid::hash(tx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bip34_pushes_match_core() {
        // CScript() << n, from Bitcoin Core's script encoding rules.
        assert_eq!(bip34_height_push(0), vec![0x00]);
        assert_eq!(bip34_height_push(1), vec![0x51]);
        assert_eq!(bip34_height_push(16), vec![0x60]);
        assert_eq!(bip34_height_push(17), vec![0x01, 0x11]);
        assert_eq!(bip34_height_push(127), vec![0x01, 0x7f]);
        assert_eq!(bip34_height_push(128), vec![0x02, 0x80, 0x00]);
        assert_eq!(bip34_height_push(227_931), vec![0x03, 0x5b, 0x7a, 0x03]); // BIP34 activation height
        assert_eq!(bip34_height_push(8_388_608), vec![0x04, 0x00, 0x00, 0x80, 0x00]);
        for h in [0, 1, 16, 17, 255, 256, 65535, 227_931, 840_000, 8_388_608, u32::MAX] {
            assert_eq!(parse_bip34_height(&bip34_height_push(h)).unwrap(), h);
        }
        assert!(parse_bip34_height(&[0x02, 0x05, 0x00]).is_err()); // not minimal
        assert!(parse_bip34_height(&[0x03, 0x01]).is_err()); // truncated
        assert!(parse_bip34_height(&[]).is_err());
    }

    #[test]
    fn split_coinbase_reassembles() {
        let out = TxOut { value: 50_0000_0000, script_pubkey: vec![0x51] };
        let parts = build(500, 8, b"/hashrig/", &[out]).unwrap();
        let tx = assemble(&parts.coinb1, &[1, 2, 3, 4], &[5, 6, 7, 8], &parts.coinb2);
        let ss = coinbase_script_sig(&tx).unwrap();
        assert_eq!(parse_bip34_height(ss).unwrap(), 500);
        assert_eq!(&ss[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert!(build(1, 0, b"", &[]).is_err());
    }

    #[test]
    fn varint_round_trip_and_truncation() {
        for n in [0u64, 0xfc, 0xfd, 0xffff, 0x10000, 0xffff_ffff, 0x1_0000_0000] {
            let mut v = Vec::new();
            write_varint(&mut v, n);
            let mut pos = 0;
            assert_eq!(read_varint(&v, &mut pos).unwrap(), n);
            assert_eq!(pos, v.len());
            let mut pos = 0;
            if v.len() > 1 {
                assert!(read_varint(&v[..v.len() - 1], &mut pos).is_err());
            }
        }
    }
}
