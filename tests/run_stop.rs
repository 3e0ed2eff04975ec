//! How `hashrig run` stops: SIGTERM (systemd, docker, kill(1)) as SIGINT
//! after sigserve's drain (batches answered meanwhile), with exit status 0,
//! the final summary and every accepted sigserve batch answered; SIGHUP
//! does not kill it. And numbers on the command line
//! that used to panic are clear errors.

use std::process::Command;
use std::time::{Duration, Instant};

use hashrig::node::sigserve::{ServeAddr, SigClient};
use hashrig::sig::demo::valid_item;
use hashrig::sig::Scheme;

mod run_common;
use run_common::{HashrigRun, BIN};

fn signal(pid: u32, sig: &str) {
    assert!(Command::new("kill").args([sig, &pid.to_string()]).status().unwrap().success());
}

fn wait_exit(run: &mut HashrigRun, within: Duration) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = run.try_wait() {
            return s;
        }
        assert!(t0.elapsed() < within, "still running {within:?} after the signal:\n{}", run.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_stops_cleanly_and_sighup_does_not_kill() {
    let mut run = HashrigRun::start_small(
        &[
            "--sigserve",
            "127.0.0.1:0",
            "--demo-difficulty",
            "0.0001",
            "--demo-block-time",
            "1",
            "--duration",
            "120", // a backstop
        ],
        |_| {},
    );
    let listening = run.wait_for("sigserve: listening on", Duration::from_secs(30));
    let sigserve: ServeAddr = listening.split_whitespace().next().unwrap().parse().unwrap();
    run.wait_for("speed 10s/60s/15m", Duration::from_secs(30));

    signal(run.pid(), "-HUP");
    run.wait_for("SIGHUP", Duration::from_secs(10));
    std::thread::sleep(Duration::from_millis(300));
    assert!(run.try_wait().is_none(), "SIGHUP killed the process");
    let mut c = SigClient::connect(&sigserve).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    assert!(c.verify(&[valid_item(Scheme::Ed25519, 1)], None).unwrap()[0].is_valid(), "still serving");

    // Batches in flight when SIGTERM arrives are answered.
    let items: Vec<_> = (0..256).map(|i| valid_item(Scheme::Ecdsa, i)).collect();
    let ids: Vec<u64> = (0..4).map(|_| c.send_batch(&items, None).unwrap()).collect();
    signal(run.pid(), "-TERM");
    let mut answered = 0;
    for _ in &ids {
        match c.recv() {
            Ok(hashrig::node::sigserve::frame::Frame::Verdicts { verdicts, .. }) => {
                assert!(verdicts.iter().all(|v| v.is_valid()));
                answered += 1;
            }
            other => panic!("batch not answered: {other:?}"),
        }
    }
    assert_eq!(answered, ids.len());
    let status = wait_exit(&mut run, Duration::from_secs(20));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(run.printed("stopping (signal)"), "{}", run.lines().join("\n"));
    assert!(run.printed("stopped: speed"), "the final summary:\n{}", run.lines().join("\n"));
}

#[test]
fn out_of_range_numbers_are_errors_not_panics() {
    for args in [
        vec!["run", "--no-metrics", "--duration", "inf"],
        vec!["run", "--no-metrics", "--duration", "1e300"],
        vec!["run", "--no-metrics", "--duration", "NaN"],
        vec!["run", "--no-metrics", "--duration", "1", "--demo-block-time", "1e300"],
        vec!["bench", "pow", "--seconds", "1e300"],
        vec!["bench", "sig", "--seconds", "1e300"],
        vec!["bench", "sig", "--max-batch", "18446744073709551615"],
        vec!["verify", "--input", "-", "--batch", "18446744073709551615"],
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?} prints why: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    // Stratum settings near u64::MAX in the config file.
    let dir = std::env::temp_dir().join(format!("hashrig-limits-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("hashrig.toml");
    std::fs::write(&cfg, "[stratum]\nbackoff_max_secs = 18446744073709551615\nbackoff_min_ms = 18446744073709551615\n")
        .unwrap();
    let o = Command::new(BIN)
        .args(["run", "--no-metrics", "--duration", "1", "--pool", "stratum+tcp://127.0.0.1:1", "--user", "w"])
        .args(["--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("backoff") && !err.contains("panicked"), "{err}");
}
