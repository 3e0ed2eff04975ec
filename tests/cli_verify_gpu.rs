//! `hashrig verify --engine gpu` end to end on lavapipe: a JSON-lines file
//! of every scheme (valid, bit-flipped, malformed, the BIP340 vectors) in,
//! one verdict line per item out, equal to `--engine cpu`'s and to the
//! library's `verify_one`, and the summary line says the GPU verified them
//! with no mismatch.
#![cfg(feature = "gpu")]

use std::io::Write;
use std::process::{Command, Stdio};

use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::{verify_one, Scheme, SigItem, Verdict};

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");

fn json_line(it: &SigItem) -> String {
    let mut v = serde_json::json!({
        "scheme": it.scheme.name(),
        "pubkey": hex::encode(&it.pubkey),
        "msg": hex::encode(&it.msg),
        "sig": hex::encode(&it.sig),
    });
    if it.flags & hashrig::sig::FLAG_ALLOW_HIGH_S != 0 {
        v["allow_high_s"] = serde_json::json!(true);
    }
    v.to_string()
}

fn expected(v: Verdict) -> String {
    match v {
        Verdict::Valid => r#"{"valid":true}"#.to_string(),
        Verdict::Invalid(r) => format!(r#"{{"valid":false,"reason":"{}"}}"#, r.name()),
    }
}

fn run(engine: &[&str], input: &str) -> (Vec<String>, String) {
    let mut child = Command::new(BIN)
        .args(["verify", "--input", "-"])
        .args(engine)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hashrig runs");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "hashrig verify {engine:?} failed:\n{stderr}");
    (String::from_utf8(out.stdout).unwrap().lines().map(String::from).collect(), stderr)
}

#[test]
fn gpu_verdicts_equal_the_cpu_path_through_the_cli() {
    let mut items = Vec::new();
    for (k, scheme) in Scheme::ALL.into_iter().enumerate() {
        for i in 0..30u64 {
            let v = valid_item(scheme, 0xc11_0000 + 100 * k as u64 + i);
            items.push(mutate(&v, i * 11 + k as u64));
            items.push(v);
        }
    }
    let csv =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/bip340_test_vectors.csv")).unwrap();
    for line in csv.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let f: Vec<&str> = line.split(',').collect();
        items.push(SigItem::new(
            Scheme::Schnorr,
            hex::decode(f[2]).unwrap(),
            hex::decode(f[4]).unwrap(),
            hex::decode(f[5]).unwrap(),
        ));
    }
    let input: String = items.iter().map(|it| json_line(it) + "\n").collect();
    let want: Vec<String> = items.iter().map(|it| expected(verify_one(it))).collect();
    let (cpu, _) = run(&["--engine", "cpu"], &input);
    let (gpu, stderr) = run(&["--engine", "gpu", "--gpu-allow-software", "--batch", "64"], &input);
    assert_eq!(cpu, want, "the CLI's CPU verdicts are the library's");
    assert_eq!(gpu, want, "the CLI's GPU verdicts are the library's");
    // Every item went to the GPU, and the trust policy found nothing.
    let summary = stderr.lines().find(|l| l.starts_with("engine gpu0")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(summary.contains(&format!(": {} items verified", items.len())), "{summary}");
    assert!(summary.ends_with(" 0 mismatches"), "{summary}");
    let valid = want.iter().filter(|w| w.contains("true")).count();
    assert!(valid > 100 && items.len() - valid > 100, "{valid} valid of {}", items.len());
}
