//! Consensus types against real mainnet headers.

use hashrig::chain::{BlockHash, Header, Target};

fn headers() -> Vec<(u32, String, BlockHash)> {
    include_str!("data/mainnet_headers.tsv")
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f[0].parse().unwrap(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

#[test]
fn fixtures_are_present() {
    assert!(headers().len() >= 2);
}

#[test]
fn round_trip_hash_and_target() {
    for (height, hex, hash) in headers() {
        let h = Header::from_hex(&hex).unwrap();
        assert_eq!(h.to_hex(), hex, "round trip at {height}");
        assert_eq!(h.block_hash(), hash, "hash at {height}");
        let target = h.target().unwrap();
        assert!(target.is_met_by(&hash), "target met at {height}");
        assert_eq!(h.check_pow(Target::DIFF1).unwrap(), hash);
        assert_eq!(target.to_compact(), h.bits, "nBits canonical at {height}");
        // One nonce off no longer meets the target (these are real, hard targets).
        let mut other = h;
        other.nonce = other.nonce.wrapping_add(1);
        assert!(other.check_pow(Target::DIFF1).is_err());
    }
}

#[test]
fn block_100000_difficulty() {
    let (_, hex, _) = headers().into_iter().find(|(h, _, _)| *h == 100_000).unwrap();
    let h = Header::from_hex(&hex).unwrap();
    // Published difficulty of block 100000: 14484.1623612254.
    assert!((h.target().unwrap().difficulty() - 14484.1623612254).abs() < 1e-6);
    assert_eq!(h.prev_blockhash.to_string(), "000000000002d01c1fccc21636b607dfd930d31d01c3a62104612a1719011250");
}
