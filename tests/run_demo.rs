//! `hashrig run` on the embedded demo node, end to end: it mines blocks the
//! demo node accepts, serves /metrics (checked by Prometheus' own promtool),
//! prints status lines, and stops cleanly on SIGINT; with `--no-mine` it
//! serves signatures and hashes nothing.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hashrig::node::sigserve::{ServeAddr, SigClient};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::Scheme;

mod metrics_common;
mod run_common;
use run_common::{HashrigRun, BIN};

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

/// Scheduling policy of each thread of process `pid` named `name` (the
/// `policy` field of /proc/PID/task/TID/stat).
fn thread_policies(pid: u32, name: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap();
        // Fields after the parenthesised comm: state is field 3, policy 41.
        let after = stat.rsplit_once(')').unwrap().1;
        out.push(after.split_whitespace().nth(41 - 3).unwrap().parse().unwrap());
    }
    out
}

const SCHED_OTHER: u32 = 0;
const SCHED_IDLE: u32 = 5;

#[test]
fn demo_run_mines_serves_metrics_and_stops_cleanly() {
    let mut run = HashrigRun::start(
        &[
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
        ],
        |_| {},
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = run.metrics_addr();

    // Wait (bounded) until blocks were accepted and a status line was printed.
    let mut body;
    loop {
        body = scrape(&addr);
        let blocks = sample(&body, "hashrig_blocks_total{result=\"accepted\"}").unwrap_or(0.0);
        if blocks >= 2.0 && run.printed("speed 10s/60s/15m") {
            break;
        }
        assert!(Instant::now() < deadline, "no blocks or status within 60 s:\n{}\n{body}", run.lines().join("\n"));
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

    // The miner runs at idle priority, the signature pool at normal priority.
    assert_eq!(thread_policies(run.pid(), "cpu-worker-0"), [SCHED_IDLE]);
    let sig = thread_policies(run.pid(), "sig-n0-0");
    assert!(!sig.is_empty() && sig.iter().all(|&p| p == SCHED_OTHER), "{sig:?}");

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
    assert!(run.printed("demo: block accepted"), "{}", run.lines().join("\n"));

    // SIGINT: a clean stop with a final summary and exit code 0.
    let status = run.interrupt();
    assert!(status.success(), "exit status {status}");
    assert!(run.printed("stopped:"), "{}", run.lines().join("\n"));
}

/// The counts of a status line ("speed 10s/60s/15m 27.00 n/a n/a MH/s |
/// accepted 133 rejected 0 stale 1 | … | share diff 6.250001e-4").
#[derive(Debug)]
struct Status {
    /// The first figure in H/s (None: "n/a").
    speed: Option<f64>,
    accepted: u64,
    rejected: u64,
    stale: u64,
    share_diff: f64,
}

fn parse_status(line: &str) -> Status {
    let after = |key: &str| line.split(key).nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or("");
    let words: Vec<&str> = line.split("speed 10s/60s/15m ").nth(1).unwrap_or("").split_whitespace().collect();
    let unit = match words.get(3).map(|u| u.trim_end_matches("H/s")) {
        Some("k") => 1e3,
        Some("M") => 1e6,
        Some("G") => 1e9,
        Some("T") => 1e12,
        _ => 1.0,
    };
    let count = |key: &str| after(key).parse::<u64>().unwrap_or_else(|_| panic!("no {key:?} in {line:?}"));
    Status {
        speed: words.first().and_then(|w| w.parse::<f64>().ok()).map(|v| v * unit),
        accepted: count("accepted "),
        rejected: count("rejected "),
        stale: count("stale "),
        share_diff: after("share diff ").parse().unwrap_or_else(|_| panic!("no share diff in {line:?}")),
    }
}

/// `hashrig run --duration 16` on the demo at two CPU speeds far apart (the
/// scalar SHA-256d path and the fastest one here): each sets its share
/// difficulty from its own hashrate, and stale shares stay at 5% or less.
/// The counts come from the summary line and do not depend on how busy the
/// machine is: the difficulty follows whatever rate the engines get.
#[test]
fn demo_difficulty_follows_the_hashrate_and_stale_stays_low() {
    let args = |backend: Option<&'static str>| {
        let mut a = vec!["--engines", "cpu", "--sig-demo-rate", "0", "--demo-block-time", "5", "--duration", "16"];
        if let Some(b) = backend {
            a.extend(["--backend", b]);
        }
        a
    };
    // Both at once: the test takes one run's time.
    let mut runs =
        [HashrigRun::start_small(&args(Some("scalar")), |_| {}), HashrigRun::start_small(&args(None), |_| {})];
    let mut finals = Vec::new();
    for run in &mut runs {
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = run.try_wait() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(90), "--duration 16 still running after 90 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        let lines = run.lines();
        let all = lines.join("\n");
        assert!(status.success(), "exit status {status}:\n{all}");
        // The start-up measurement, and the first status line after it
        // already shows a speed.
        let measured = lines.iter().position(|l| l.contains("demo: engines measured at")).expect(&all);
        let first = lines[measured..].iter().find(|l| l.contains("speed 10s/60s/15m")).expect(&all);
        assert!(parse_status(first).speed.is_some_and(|s| s > 0.0), "{first}");

        let last = lines.iter().rev().find(|l| l.contains("stopped: speed")).expect(&all);
        let s = parse_status(last);
        let total = s.accepted + s.rejected + s.stale;
        // About 4 shares a second for 15 s, whatever the speed.
        assert!(s.accepted >= 10, "{s:?}\n{all}");
        assert_eq!(s.rejected, 0, "{all}");
        assert!(s.stale * 20 <= total, "stale above 5%: {s:?}\n{all}");
        // Shares of difficulty d take d × 2^32 hashes: about 4 per second
        // at the speed measured (within 3×: the vardiff's estimate and the
        // 10 s rate cover different spans on a noisy machine).
        let speed = s.speed.expect(&all);
        let per_second = speed / (s.share_diff * 4294967296.0);
        assert!((4.0 / 3.0..12.0).contains(&per_second), "{per_second} shares/s at {s:?}\n{all}");
        finals.push((speed, s.share_diff));
    }
    // The scalar path is several times slower: its difficulty is too.
    let (slow, fast) = (finals[0], finals[1]);
    assert!(fast.0 > 3.0 * slow.0, "scalar {} H/s vs {} H/s", slow.0, fast.0);
    assert!(fast.1 > 1.5 * slow.1, "share difficulty {} (scalar) vs {}", slow.1, fast.1);
}

/// `--no-mine`: a signature server for a validator, nothing hashed.
#[test]
fn no_mine_serves_signatures_and_hashes_nothing() {
    let mut run = HashrigRun::start(
        &[
            "--no-mine",
            "--metrics",
            "127.0.0.1:0",
            "--sigserve",
            "127.0.0.1:0",
            "--sig-demo-rate",
            "0",
            "--threads",
            "1",
        ],
        |_| {},
    );
    let metrics = run.metrics_addr();
    let listening = run.wait_for("sigserve: listening on", Duration::from_secs(30));
    let sigserve: ServeAddr = listening.split_whitespace().next().unwrap().parse().unwrap();
    let mut c = SigClient::connect(&sigserve).unwrap();
    let good = [valid_item(Scheme::Ed25519, 1), valid_item(Scheme::Ecdsa, 2), valid_item(Scheme::Schnorr, 3)];
    let mut items = good.to_vec();
    items.extend(good.iter().enumerate().map(|(i, g)| mutate(g, 8 * i as u64 + 1)));
    let verdicts = c.verify(&items, None).unwrap();
    let valid: Vec<bool> = verdicts.iter().map(|v| v.is_valid()).collect();
    assert_eq!(valid, [true, true, true, false, false, false]);

    let body = scrape(&metrics);
    assert_eq!(sample(&body, "hashrig_hashes_total").unwrap_or(0.0), 0.0, "{body}");
    assert!(thread_policies(run.pid(), "cpu-worker-0").is_empty(), "no PoW worker runs");
    let status = run.interrupt();
    assert!(status.success(), "exit status {status}");
    assert!(run.printed("not mining"), "{}", run.lines().join("\n"));
}

#[test]
fn bad_run_arguments_fail_cleanly() {
    for args in [
        vec!["run", "--demo-difficulty", "0", "--no-metrics", "--duration", "1"],
        vec!["run", "--threads", "0", "--no-metrics", "--duration", "1"],
        vec!["run", "--numa-nodes", "99", "--no-metrics", "--duration", "1"],
        vec!["run", "--metrics", "not-an-address"],
        vec!["run", "--cpu-priority", "realtime", "--no-metrics", "--duration", "1"],
        vec!["run", "--no-mine", "--engines", "cpu", "--no-metrics", "--duration", "1"],
        vec![
            "run",
            "--no-mine",
            "--pool",
            "stratum+tcp://127.0.0.1:1",
            "--user",
            "w",
            "--no-metrics",
            "--duration",
            "1",
        ],
    ] {
        let o = Command::new(BIN).args(&args).output().unwrap();
        assert!(!o.status.success(), "{args:?}");
        assert!(!o.stderr.is_empty(), "{args:?} prints why");
    }
}
