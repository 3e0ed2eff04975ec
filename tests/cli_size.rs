//! `hashrig size` end to end: profiles on disk in, machine counts out, and
//! clean errors for what cannot be answered.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");

const PROFILE: &str = r#"
[machine]
cpu_model = "test"
packages = 1
numa_nodes = 1
cores = 8
pus = 16
kernel = "k"

[pow_cpu]
hashrig_version = "0.1.0"
date = "2026-11-22"
command = "hashrig bench pow"
backend = "sha-ni"
threads = 8
seconds = 5.0
per_thread_hashes_per_sec = 25e6
all_threads_hashes_per_sec = 200e6
scaling = 8.0

[[pow_gpu]]
hashrig_version = "0.1.0"
date = "2026-11-22"
command = "hashrig bench pow --engine all"
device = "gpu0"
adapter = "Test GPU"
tune = "workgroup 256 x 64 nonces/thread"
seconds = 5.0
hashes_per_sec = 4e9
dispatch_seconds = 0.02
with_cpu = true
total_hashes_per_sec = 4.2e9

[sig]
hashrig_version = "0.1.0"
date = "2026-11-22"
command = "hashrig bench sig"
seconds_per_point = 1.0

[[sig.points]]
scheme = "ed25519"
batch = 64
threads = 8
p50_seconds = 0.001
p99_seconds = 0.002
items_per_sec = 60000.0
saturated_items_per_sec = 400000.0
"#;

fn size(args: &[&str]) -> std::process::Output {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("hashrig-size-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rig.toml"), PROFILE).unwrap();
    let out = Command::new(BIN).arg("size").args(args).arg("--profiles").arg(&dir).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    out
}

#[test]
fn counts_machines_from_the_profiles() {
    // 4.2 GH/s a machine: 100 GH/s takes 24.
    let o = size(&["--hashrate", "100GH/s"]);
    assert!(o.status.success());
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(text.contains("rig: 24 machines"), "{text}");
    // 1M ed25519/s at 400k a machine: 3 machines, and their CPUs are then
    // 83% busy with signatures, so 10 GH/s still fits (3 × 4 GH/s GPUs).
    let o = size(&["--hashrate", "10G", "--sigs", "1M", "--scheme", "ed25519", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["results"][0]["machines"], 3, "{v}");
    assert_eq!(v["results"][0]["capacity"]["sigs"], serde_json::json!([400000.0, 64]));
}

#[test]
fn unanswerable_and_bad_requests_are_clear() {
    // Only ed25519 was measured, and only at batch 64.
    let o = size(&["--sigs", "1000", "--scheme", "ecdsa"]);
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout).contains("cannot tell: no ecdsa point"));
    let o = size(&["--sigs", "1000", "--batch", "16"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("cannot tell"));
    for bad in [&[][..], &["--hashrate", "fast"], &["--sigs", "-5"], &["--sigs", "1k", "--scheme", "rsa"]] {
        let o = size(bad);
        assert!(!o.status.success(), "{bad:?}");
        assert!(!o.stderr.is_empty(), "{bad:?} says why");
    }
}
