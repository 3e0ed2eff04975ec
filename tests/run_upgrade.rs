//! Live binary upgrade (SIGUSR2) of `hashrig run`, three times in a row,
//! while validators pipeline signature batches: every batch is answered
//! exactly once and correctly, no connection is refused, every old process
//! exits 0. And a miner upgraded in the middle of a pool session loses no
//! share: the pool gets every share the old process found.
//!
//! The test makes itself a child subreaper, so that each new process (a
//! child of the old one) becomes its child when the old one exits and its
//! exit status can be read.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hashrig::node::sigserve::frame::Frame;
use hashrig::node::sigserve::{ServeAddr, SigClient};
use hashrig::sig::demo::{mutate, valid_item};
use hashrig::sig::Scheme;

mod pool_common;
use pool_common::{accept, Tally, D1};

const BIN: &str = env!("CARGO_BIN_EXE_hashrig");

/// A `hashrig run` and every process that takes over from it, writing to
/// one stdout pipe; lines are collected as they come.
struct Family {
    lines: Arc<Mutex<Vec<String>>>,
    first: u32,
    pid_file: std::path::PathBuf,
}

impl Family {
    fn start(args: &[&str], pid_file: &Path) -> Family {
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag.
        assert_eq!(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }, 0);
        // Reaped with waitpid (exit_code), as its successors are.
        #[allow(clippy::zombie_processes)]
        let mut child = Command::new(BIN)
            .arg("run")
            .args(args)
            .args(["--pid-file", pid_file.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("hashrig: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        Family { lines, first: child.id(), pid_file: pid_file.to_owned() }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, marker: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            if let Some(rest) = self.lines().iter().find_map(|l| l.split(marker).nth(1).map(str::to_owned)) {
                return rest.trim().to_owned();
            }
            assert!(Instant::now() < until, "no {marker:?} within {within:?}:\n{}", self.lines().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The pid in the pid file, once it is there.
    fn current(&self) -> u32 {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(p) = std::fs::read_to_string(&self.pid_file).ok().and_then(|s| s.trim().parse().ok()) {
                return p;
            }
            assert!(Instant::now() < until, "no pid file");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGUSR2 to the current process; the new one's pid once it has
    /// rewritten the pid file, and the old one's exit code.
    fn upgrade(&self) -> (u32, i32) {
        let old = self.current();
        signal(old, libc::SIGUSR2);
        let until = Instant::now() + Duration::from_secs(60);
        let new = loop {
            let p = self.current();
            if p != old {
                break p;
            }
            assert!(Instant::now() < until, "no new process:\n{}", self.lines().join("\n"));
            std::thread::sleep(Duration::from_millis(20));
        };
        (new, exit_code(old, Duration::from_secs(30)))
    }
}

impl Drop for Family {
    fn drop(&mut self) {
        // Whatever still runs (a failed test): stop it.
        if let Some(p) = std::fs::read_to_string(&self.pid_file).ok().and_then(|s| s.trim().parse::<i32>().ok()) {
            // SAFETY: kill with a pid and a signal number.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // SAFETY: as above.
        unsafe { libc::kill(self.first as i32, libc::SIGKILL) };
    }
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill with a pid and a signal number.
    assert_eq!(unsafe { libc::kill(pid as i32, sig) }, 0);
}

/// Waits for child `pid` (ours directly or by the subreaper) to exit.
fn exit_code(pid: u32, within: Duration) -> i32 {
    let until = Instant::now() + within;
    loop {
        let mut status = 0;
        // SAFETY: waitpid on one pid, status written to a local.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 {
            assert!(libc::WIFEXITED(status), "pid {pid} did not exit normally: status {status:#x}");
            return libc::WEXITSTATUS(status);
        }
        assert!(r == 0, "waitpid {pid}: {}", std::io::Error::last_os_error());
        assert!(Instant::now() < until, "pid {pid} still running after {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What one pipelining validator saw.
#[derive(Debug, Default)]
struct Seen {
    batches: u64,
    wrong: Vec<String>,
    longest_pause: Duration,
    reconnects: u64,
    failed_attempts: u64,
}

/// Keeps `window` batches in flight until `stop`, then collects the rest.
/// Each batch mixes valid and broken signatures in a pattern its id fixes,
/// so every answer is checked item by item.
fn validator(addr: ServeAddr, seed: u64, stop: Arc<AtomicBool>) -> Seen {
    let mut c = SigClient::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let window = 4;
    let mut expect = std::collections::HashMap::new();
    let mut seen = Seen::default();
    let schemes = [Scheme::Ed25519, Scheme::Ecdsa, Scheme::Schnorr];
    let send = |c: &mut SigClient, n: u64, expect: &mut std::collections::HashMap<u64, Vec<bool>>| {
        let items: Vec<_> = (0..12u64)
            .map(|i| {
                let it = valid_item(schemes[((n + i) % 3) as usize], seed * 1000 + i);
                if (n + i).is_multiple_of(5) {
                    mutate(&it, n + i)
                } else {
                    it
                }
            })
            .collect();
        let id = c.send_batch(&items, None).unwrap();
        expect.insert(id, (0..12u64).map(|i| !(n + i).is_multiple_of(5)).collect());
    };
    let mut n = 0;
    for _ in 0..window {
        send(&mut c, n, &mut expect);
        n += 1;
    }
    let mut last = Instant::now();
    while !expect.is_empty() {
        match c.recv() {
            Ok(Frame::Verdicts { id, verdicts }) => {
                seen.longest_pause = seen.longest_pause.max(last.elapsed());
                last = Instant::now();
                seen.batches += 1;
                match expect.remove(&id) {
                    None => seen.wrong.push(format!("answer to {id}: not asked, or answered twice")),
                    Some(want) => {
                        let got: Vec<bool> = verdicts.iter().map(|v| v.is_valid()).collect();
                        if got != want {
                            seen.wrong.push(format!("batch {id}: {got:?}, want {want:?}"));
                        }
                    }
                }
                if !stop.load(Ordering::Relaxed) {
                    send(&mut c, n, &mut expect);
                    n += 1;
                }
            }
            other => {
                seen.wrong.push(format!("{other:?}"));
                break;
            }
        }
    }
    let st = c.reconnect_stats();
    (seen.reconnects, seen.failed_attempts) = (st.reconnects, st.failed_attempts);
    seen
}

#[test]
fn three_upgrades_under_pipelined_validators_answer_every_batch_once() {
    let dir = std::env::temp_dir().join(format!("hashrig-upgrade-sig-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fam = Family::start(
        &[
            "--no-mine",
            "--sigserve",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--no-pin",
            "--sig-demo-rate",
            "0",
            "--sig-engines",
            "cpu",
        ],
        &dir.join("hashrig.pid"),
    );
    let listening = fam.wait_for("sigserve: listening on", Duration::from_secs(30));
    let addr: ServeAddr = listening.split_whitespace().next().unwrap().parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || validator(addr, i, stop))
        })
        .collect();
    let mut pids = vec![fam.current()];
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        let (new, code) = fam.upgrade();
        assert_eq!(code, 0, "the old process exits 0:\n{}", fam.lines().join("\n"));
        pids.push(new);
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let last = fam.current();
    signal(last, libc::SIGTERM);
    assert_eq!(exit_code(last, Duration::from_secs(30)), 0);
    let _ = std::fs::remove_dir_all(&dir);
    let pause = seen.iter().map(|s| s.longest_pause).max().unwrap();
    println!("processes {pids:?}; per validator: {seen:?}; longest pause a validator saw: {pause:?}");
    for s in &seen {
        assert!(s.wrong.is_empty(), "{:?}", s.wrong);
        assert!(s.batches > 10, "{s:?}");
        assert_eq!(s.failed_attempts, 0, "no connection refused: {s:?}");
    }
    assert!(seen.iter().map(|s| s.reconnects).sum::<u64>() >= 3, "the validators moved with the upgrades: {seen:?}");
    assert_eq!(pids.iter().collect::<std::collections::HashSet<_>>().len(), 4, "four processes in turn");
}

#[test]
fn a_miner_upgraded_during_a_pool_session_loses_no_share() {
    let pool = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("stratum+tcp://{}", pool.local_addr().unwrap());
    let dir = std::env::temp_dir().join(format!("hashrig-upgrade-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fam = Family::start(
        &[
            "--pool",
            &url,
            "--user",
            "worker1",
            "--pass",
            "secret",
            "--metrics",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--no-pin",
            "--cpu-priority",
            "normal",
            "--sig-demo-rate",
            "0",
        ],
        &dir.join("hashrig.pid"),
    );
    // One thread per miner connection: the old process's and the new one's.
    let tallies: Arc<Mutex<Vec<(u8, Tally)>>> = Arc::default();
    let shares_old = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (t2, counter) = (tallies.clone(), shares_old.clone());
    std::thread::spawn(move || {
        for k in 0..2u8 {
            let mut c = accept(&pool, &[9, 0, 0, k], "sess", false);
            let (t2, counter) = (t2.clone(), counter.clone());
            std::thread::spawn(move || {
                let mut t = Tally::default();
                c.set_difficulty(D1);
                c.notify(if k == 0 { "old" } else { "new" }, true);
                let until = Instant::now() + Duration::from_secs(150);
                // Until the miner leaves (or the test is over).
                while let Some(m) = c.recv(until) {
                    c.handle(m, &mut t, "x");
                    if k == 0 {
                        counter.store(t.accepted, Ordering::Relaxed);
                    }
                }
                t2.lock().unwrap().push((k, t));
            });
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    while shares_old.load(Ordering::Relaxed) < 3 {
        assert!(Instant::now() < until, "no shares:\n{}", fam.lines().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
    let old = fam.current();
    let (new, code) = fam.upgrade();
    assert_eq!(code, 0, "the old process exits 0");
    assert_ne!(old, new);
    // The old process's own account of its shares, from its last line.
    let summary = fam.wait_for("stopped: speed", Duration::from_secs(10));
    let count = |key: &str| -> usize {
        let rest = summary.split(&format!("{key} ")).nth(1).unwrap_or_else(|| panic!("{key} in {summary}"));
        rest.split_whitespace().next().unwrap().parse().unwrap()
    };
    let (accepted, rejected, stale) = (count("accepted"), count("rejected"), count("stale"));
    // The new process mines on: its connection gets shares too.
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let n = fam.lines().iter().filter(|l| l.contains("stratum: authorised")).count();
        if n >= 2 {
            break;
        }
        assert!(Instant::now() < until, "the new process did not connect");
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(new, libc::SIGTERM);
    assert_eq!(exit_code(new, Duration::from_secs(30)), 0);
    let _ = std::fs::remove_dir_all(&dir);
    let until = Instant::now() + Duration::from_secs(10);
    while tallies.lock().unwrap().len() < 2 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = tallies.lock().unwrap();
    let old_pool = &t.iter().find(|(k, _)| *k == 0).expect("the old connection's tally").1;
    println!("old process: accepted {accepted} rejected {rejected} stale {stale}; pool got {}", old_pool.accepted);
    assert!(old_pool.rejected.is_empty(), "{:?}", old_pool.rejected);
    // Every share the old process found reached the pool and was taken:
    // none left unsent at its exit, none stale, none rejected.
    assert_eq!((rejected, stale), (0, 0));
    assert_eq!(accepted, old_pool.accepted, "shares the old process found = shares the pool got from it");
}

#[test]
fn a_successor_that_fails_leaves_the_old_process_serving() {
    let dir = std::env::temp_dir().join(format!("hashrig-upgrade-fail-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("sig.sock");
    let cfg = dir.join("hashrig.toml");
    std::fs::write(&cfg, "[cpu]\nthreads = 1\n").unwrap();
    let fam = Family::start(
        &[
            "--no-mine",
            "--sigserve",
            &format!("unix:{}", sock.display()),
            "--metrics",
            "127.0.0.1:0",
            "--no-pin",
            "--sig-demo-rate",
            "0",
            "--sig-engines",
            "cpu",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &dir.join("hashrig.pid"),
    );
    fam.wait_for("sigserve: listening on", Duration::from_secs(30));
    let addr: ServeAddr = format!("unix:{}", sock.display()).parse().unwrap();
    let mut c = SigClient::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let item = valid_item(Scheme::Schnorr, 7);
    assert!(c.verify(std::slice::from_ref(&item), None).unwrap()[0].is_valid());
    let first = fam.current();
    // The new process cannot start: its config file is broken now.
    std::fs::write(&cfg, "[cpu]\nthreads = \"many\"\n").unwrap();
    signal(first, libc::SIGUSR2);
    fam.wait_for("upgrade failed, running on: the new process exited", Duration::from_secs(60));
    assert_eq!(fam.current(), first, "the pid file still names the old process");
    assert!(c.verify(std::slice::from_ref(&item), None).unwrap()[0].is_valid(), "still serving");
    assert_eq!(c.reconnect_stats().reconnects, 0, "the connection was never dropped");
    // Fixed: the next upgrade goes through, on the same Unix socket.
    std::fs::write(&cfg, "[cpu]\nthreads = 1\n").unwrap();
    let (new, code) = fam.upgrade();
    assert_eq!(code, 0);
    assert!(c.verify(std::slice::from_ref(&item), None).unwrap()[0].is_valid(), "served by the new process");
    assert_eq!(c.reconnect_stats().reconnects, 1);
    assert!(sock.exists(), "the handed-over socket keeps its path");
    signal(new, libc::SIGTERM);
    assert_eq!(exit_code(new, Duration::from_secs(30)), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

/// systemd socket activation: a listening socket at descriptor 3,
/// LISTEN_FDS=1 and LISTEN_PID naming the process.
#[test]
fn sockets_from_systemd_are_served() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let fd = l.as_raw_fd();
    let mut cmd = Command::new("sh");
    // `exec` keeps the shell's pid, so $$ is hashrig's pid.
    cmd.args(["-c", "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"", BIN, "run", "--no-mine", "--no-metrics"])
        .args(["--sigserve", &addr.to_string(), "--threads", "1", "--no-pin", "--sig-demo-rate", "0"])
        .args(["--sig-engines", "cpu", "--duration", "60"])
        .stdout(Stdio::piped());
    // SAFETY: dup2 and fcntl (async-signal-safe) on a descriptor this
    // process owns: onto 3, without close-on-exec there.
    unsafe {
        cmd.pre_exec(move || {
            if (fd == 3 || libc::dup2(fd, 3) == 3) && libc::fcntl(3, libc::F_SETFD, 0) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(l);
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            println!("hashrig: {line}");
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let done = line.contains("sigserve: listening on");
        seen.push(line);
        if done {
            break;
        }
    }
    let listening = seen.last().cloned().unwrap_or_default();
    assert!(listening.contains(&format!("{addr} (plain, socket from systemd)")), "{}", seen.join("\n"));
    let mut c = SigClient::connect(&ServeAddr::Tcp(addr)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    assert!(c.verify(&[valid_item(Scheme::Ed25519, 3)], None).unwrap()[0].is_valid());
    signal(child.id(), libc::SIGTERM);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
