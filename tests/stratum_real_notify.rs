//! A real mainnet `mining.notify` (solo.ckpool.org, block 925350), decoded by
//! our Stratum parser and coinbase code and checked against what the pool's
//! message means, as published beside it and as rust-bitcoin (a second
//! implementation) reads the assembled coinbase.

use bitcoin::consensus::deserialize;
use hashrig::chain::coinbase;
use hashrig::node::stratum::proto::{parse_line, parse_notify, Incoming};

fn notify() -> hashrig::node::stratum::proto::Notify {
    let line = include_str!("data/stratum_notify_ckpool.jsonl").lines().next().unwrap();
    let Incoming::Request { method, params, .. } = parse_line(line).expect("valid line") else {
        panic!("a notification is a request without id")
    };
    assert_eq!(method, "mining.notify");
    parse_notify(&params).expect("valid notify")
}

#[test]
fn header_fields_decode_as_published() {
    let n = notify();
    // Stratum sends prevhash as 8 byte-swapped words; the published decoding:
    assert_eq!(n.prev_blockhash.to_string(), "0000000000000000000189f858336592081b230c87fb44c633c6373820547715");
    assert_eq!(n.version, 0x2000_0000);
    assert_eq!(n.bits.to_consensus(), 0x1701e2a0);
    assert_eq!(n.ntime, 1_764_209_801); // 2025-11-27 02:16:41 UTC
    assert!(n.clean_jobs);
    assert!(n.merkle_branch.is_empty());
    // Difficulty of nBits 1701e2a0 from its definition: 0xffff·2^208 over
    // 0x01e2a0·2^(8·(0x17−3)) = 0xffff·2^48 / 0x01e2a0 ≈ 149.3 T.
    let d = hashrig::chain::Target::from_compact(n.bits).unwrap().difficulty();
    let expect = 65535.0 * 2f64.powi(48) / 123_552.0;
    assert!((d - expect).abs() / expect < 1e-12, "{d} vs {expect}");
}

#[test]
fn coinbase_assembles_into_the_real_transaction() {
    let n = notify();
    // ckpool's scriptSig ends with a 12-byte push for extranonce1 ‖ extranonce2.
    let tx_bytes = coinbase::assemble(&n.coinb1, &[0; 4], &[0; 8], &n.coinb2);
    let ss = coinbase::coinbase_script_sig(&tx_bytes).unwrap();
    assert_eq!(coinbase::parse_bip34_height(ss).unwrap(), 925_350);

    let tx: bitcoin::Transaction = deserialize(&tx_bytes).expect("rust-bitcoin parses the assembled coinbase");
    assert!(tx.is_coinbase());
    assert_eq!(tx.output.len(), 3);
    let payout = bitcoin::Address::from_script(&tx.output[0].script_pubkey, bitcoin::Network::Bitcoin).unwrap();
    assert_eq!(payout.to_string(), "bc1qnp980s5fpp8l94p5cvttmtdqy8rvrq74qly2yrfmzkdsntqzlc5qkc4rkq");
    // The witness commitment output (OP_RETURN aa21a9ed…).
    assert!(tx.output[2].script_pubkey.as_bytes().starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]));
    // Our txid is rust-bitcoin's.
    assert_eq!(coinbase::txid(&tx_bytes).to_string(), tx.compute_txid().to_string());
}
