//! `hashrig scan` end to end: real headers, a differential check against
//! Python's hashlib (a SHA-256 nobody here wrote), range edges, bad input.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");
const B100K: &str = "0100000050120119172a610421a6c3011dd330d9df07b63616c2cc1f1cd00200000000006657a9252aacd5c0b2940996ecff952228c3067cc38d4885efb5a4ac4247e9f337221b4d4c86041b0f2b5710";
const B100K_NONCE: u32 = 274148111;
const B100K_HASH: &str = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506";

fn scan(args: &[&str]) -> Output {
    Command::new(BIN).arg("scan").args(args).output().expect("run hashrig")
}

fn stdout_lines(o: &Output) -> Vec<String> {
    String::from_utf8(o.stdout.clone()).unwrap().lines().map(String::from).collect()
}

fn hits(o: &Output) -> Vec<(u32, String)> {
    stdout_lines(o)
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
            (v["nonce"].as_u64().unwrap() as u32, v["hash"].as_str().unwrap().to_string())
        })
        .collect()
}

#[test]
fn real_block_nonce_is_found_exactly() {
    let start = (B100K_NONCE - 50_000).to_string();
    for threads in ["1", "2"] {
        let o = scan(&["--header", B100K, "--start", &start, "--count", "100000", "--threads", threads]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(hits(&o), vec![(B100K_NONCE, B100K_HASH.to_string())]);
        assert_eq!(stdout_lines(&o)[0], format!("{{\"nonce\":{B100K_NONCE},\"hash\":\"{B100K_HASH}\"}}"));
    }
}

#[test]
fn range_just_missing_the_nonce_finds_nothing() {
    let start = (B100K_NONCE - 1000).to_string();
    let o = scan(&["--header", B100K, "--start", &start, "--count", "1000"]);
    assert!(o.status.success());
    assert!(hits(&o).is_empty());
    let start = (B100K_NONCE + 1).to_string();
    let o = scan(&["--header", B100K, "--start", &start, "--count", "1000"]);
    assert!(hits(&o).is_empty());
    let o = scan(&["--header", B100K, "--start", &B100K_NONCE.to_string(), "--count", "0"]);
    assert!(o.status.success() && hits(&o).is_empty());
}

/// Expected hits from Python's hashlib for an easy target.
fn hashlib_hits(header: &str, start: u64, count: u64, target_hex: &str) -> Vec<(u32, String)> {
    let script = r#"
import hashlib, struct, sys
hdr = bytes.fromhex(sys.argv[1]); start = int(sys.argv[2]); count = int(sys.argv[3])
target = int(sys.argv[4], 16)
end = min(start + count, 1 << 32)
for n in range(start, end):
    h = hashlib.sha256(hashlib.sha256(hdr[:76] + struct.pack('<I', n)).digest()).digest()
    if int.from_bytes(h, 'little') <= target:
        print(n, h[::-1].hex())
"#;
    let o = Command::new("python3")
        .args(["-c", script, header, &start.to_string(), &count.to_string(), target_hex])
        .output()
        .expect("python3 is needed for the differential test (make test installs it)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut p = l.split(' ');
            (p.next().unwrap().parse().unwrap(), p.next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn easy_target_matches_hashlib() {
    // Top 8 bits zero: about one nonce in 256 is a hit.
    let target = format!("00{}", "f".repeat(62));
    let headers = [
        B100K.to_string(),
        // Genesis with a different version and time: arbitrary but real-shaped.
        "0100000000000000000000000000000000000000000000000000000000000000000000003ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a29ab5f49ffff001d1dac2b7c".to_string(),
    ];
    for (i, h) in headers.iter().enumerate() {
        let start: u64 = [12_345, 0][i];
        let count = 30_001;
        let expect = hashlib_hits(h, start, count, &target);
        assert!(expect.len() > 50, "easy target gives many hits");
        let o =
            scan(&["--header", h, "--start", &start.to_string(), "--count", &count.to_string(), "--target", &target]);
        assert!(o.status.success());
        assert_eq!(hits(&o), expect);
    }
}

#[test]
fn range_ending_at_the_last_nonce() {
    let target = format!("0{}", "f".repeat(63)); // one in 16
    let start: u64 = 0xffff_ffff - 4000;
    let expect = hashlib_hits(B100K, start, 10_000, &target);
    assert!(expect.iter().any(|(n, _)| *n > 0xffff_ff00));
    let o = scan(&["--header", B100K, "--start", &start.to_string(), "--count", "10000", "--target", &target]);
    assert!(o.status.success());
    assert_eq!(hits(&o), expect, "clamped at 0xffffffff, nothing wrapped to 0");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonces stop at 0xffffffff"));
}

#[test]
fn bits_option_sets_the_target() {
    // 0x2000ffff: target 0x00ffff << 232 → top byte zero, about one in 256.
    let start = 7u64;
    let target = format!("0000ffff{}", "0".repeat(56));
    let expect = hashlib_hits(B100K, start, 20_000, &target);
    let o = scan(&["--header", B100K, "--start", "7", "--count", "20000", "--bits", "1f00ffff"]);
    assert!(o.status.success());
    assert_eq!(hits(&o), expect);
}

#[test]
fn malformed_input_exits_2_with_a_message() {
    // Each case: a header argument, then everything after it.
    let bad_hex = format!("{}zz", &B100K[..158]);
    let zeros = "0".repeat(64);
    let with = |header: &str, rest: &[&str]| -> Vec<String> {
        let mut v = vec!["--header".to_string(), header.to_string()];
        v.extend(rest.iter().map(|s| s.to_string()));
        v
    };
    let one = ["--start", "0", "--count", "1"];
    let cases: Vec<Vec<String>> = vec![
        with(&B100K[..158], &one),
        with(&bad_hex, &one),
        with(B100K, &["--start", "-1", "--count", "1"]),
        with(B100K, &["--start", "4294967296", "--count", "1"]),
        with(B100K, &["--start", "0", "--count", "x"]),
        with(B100K, &[&one[..], &["--bits", "1d00ff"]].concat()),
        with(B100K, &[&one[..], &["--bits", "04923456"]].concat()),
        with(B100K, &[&one[..], &["--target", "ff"]].concat()),
        with(B100K, &[&one[..], &["--bits", "1d00ffff", "--target", zeros.as_str()]].concat()),
        with(B100K, &[&one[..], &["--threads", "0"]].concat()),
        with(B100K, &[&one[..], &["--engine", "quantum"]].concat()),
        one.iter().map(|s| s.to_string()).collect(),
    ];
    for args in cases {
        let refs: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let o = scan(&refs);
        assert_eq!(o.status.code(), Some(2), "args {args:?}");
        assert!(o.stdout.is_empty(), "no hits printed for {args:?}");
        assert!(!o.stderr.is_empty(), "an error message for {args:?}");
    }
}
