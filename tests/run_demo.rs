//! `hashrig run` on the embedded demo node, end to end: it mines blocks the
//! demo node accepts, serves /metrics (checked by Prometheus' own promtool),
//! prints status lines, and stops cleanly on SIGINT.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");

mod metrics_common;

fn scrape(addr: &str) -> String {
    let (head, body) = metrics_common::get_metrics(addr);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(body: &str, prefix: &str) -> Option<f64> {
    body.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn demo_run_mines_serves_metrics_and_stops_cleanly() {
    let mut child = Command::new(BIN)
        .args([
            "run",
            "--metrics",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--status-interval",
            "1",
            "--demo-difficulty",
            "0.0001",
            "--demo-block-time",
            "1",
            "--duration",
            "120", // a backstop: the test stops it long before
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start hashrig run");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let l = rx.recv_timeout(Duration::from_secs(30)).expect("hashrig prints the metrics address");
        lines.push(l.clone());
        if let Some(rest) = l.split("metrics: http://").nth(1) {
            break rest.trim_end_matches("/metrics").trim().to_string();
        }
    };

    // Wait (bounded) until blocks were accepted and a status line was printed.
    let mut body;
    loop {
        while let Ok(l) = rx.try_recv() {
            lines.push(l);
        }
        body = scrape(&addr);
        let blocks = sample(&body, "hashrig_blocks_total{result=\"accepted\"}").unwrap_or(0.0);
        let status = lines.iter().any(|l| l.contains("speed 10s/60s/15m"));
        if blocks >= 2.0 && status {
            break;
        }
        assert!(Instant::now() < deadline, "no blocks or status within 60 s:\n{}\n{body}", lines.join("\n"));
        std::thread::sleep(Duration::from_millis(300));
    }

    // Counters, labels and info series are there, with real values.
    assert!(sample(&body, "hashrig_hashes_total{device=\"numa0\",engine=\"cpu\"}").unwrap() > 0.0, "{body}");
    assert!(sample(&body, "hashrig_shares_total{result=\"accepted\"}").unwrap() >= 2.0);
    assert!(sample(&body, "hashrig_jobs_total{source=\"demo\"}").unwrap() >= 3.0);
    assert!(sample(&body, "hashrig_self_tests_total{engine=\"cpu\",result=\"passed\"}").unwrap() >= 1.0);
    assert!(sample(&body, "hashrig_job_switch_seconds_count{engine=\"cpu\"}").unwrap() >= 1.0);
    assert!(body.contains("hashrig_worker_info{"));
    assert!(sample(&body, "hashrig_chain_height").unwrap() >= 3.0);
    assert_eq!(sample(&body, "hashrig_hardware_errors_total{device=\"numa0\",engine=\"cpu\"}").unwrap_or(0.0), 0.0);

    // Prometheus' own checker accepts the exposition (warnings count as failures).
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is needed (make test installs Debian's prometheus package)");
    promtool.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let pt = promtool.wait_with_output().unwrap();
    let pt_text = format!("{}{}", String::from_utf8_lossy(&pt.stdout), String::from_utf8_lossy(&pt.stderr));
    assert!(pt.status.success() && pt_text.trim().is_empty(), "promtool: {pt_text}");

    // Blocks in the log are ones the node accepted.
    assert!(lines.iter().any(|l| l.contains("demo: block accepted")), "{}", lines.join("\n"));

    // SIGINT: a clean stop with a final summary and exit code 0.
    let st = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "did not stop after SIGINT");
        std::thread::sleep(Duration::from_millis(50));
    };
    while let Ok(l) = rx.recv_timeout(Duration::from_secs(2)) {
        lines.push(l);
    }
    assert!(status.success(), "exit status {status}");
    assert!(lines.iter().any(|l| l.contains("stopped:")), "{}", lines.join("\n"));
}

#[test]
fn bad_run_arguments_fail_cleanly() {
    for args in [
        vec!["run", "--demo-difficulty", "0", "--no-metrics", "--duration", "1"],
        vec!["run", "--threads", "0", "--no-metrics", "--duration", "1"],
        vec!["run", "--numa-nodes", "99", "--no-metrics", "--duration", "1"],
        vec!["run", "--metrics", "not-an-address"],
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?} prints why");
    }
}
