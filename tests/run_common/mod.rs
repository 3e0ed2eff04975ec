//! A `hashrig run` child process for integration tests: its stdout lines
//! are echoed (so a failing test shows them) and collected; it is killed
//! when the test ends, passed or not.
#![allow(dead_code)] // not every test that includes this module needs all of it

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_hashrig");

pub struct HashrigRun {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl HashrigRun {
    /// `hashrig run ARGS…`; configure the command further with `cmd`.
    pub fn start(args: &[&str], cmd: impl FnOnce(&mut Command)) -> HashrigRun {
        let mut c = Command::new(BIN);
        c.arg("run").args(args).stdout(Stdio::piped()).stderr(Stdio::inherit());
        cmd(&mut c);
        let mut child = c.spawn().expect("start hashrig run");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                println!("hashrig: {line}");
                sink.lock().unwrap().push(line);
            }
        });
        HashrigRun { child, lines, reader: Some(reader) }
    }

    /// [`start`](Self::start) with what the adapter tests share: metrics on
    /// an ephemeral port, one unpinned worker, a status line every second,
    /// and the worker at normal priority: at idle priority it gets no CPU
    /// while the test (and other tests) run, and timed waits flake.
    pub fn start_small(args: &[&str], cmd: impl FnOnce(&mut Command)) -> HashrigRun {
        let small = [
            "--metrics",
            "127.0.0.1:0",
            "--threads",
            "1",
            "--no-pin",
            "--status-interval",
            "1",
            "--cpu-priority",
            "normal",
        ];
        Self::start(&[&small[..], args].concat(), cmd)
    }

    /// The lines printed so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    pub fn printed(&self, text: &str) -> bool {
        self.lines.lock().unwrap().iter().any(|l| l.contains(text))
    }

    /// What follows `marker` on the first line that has it, waiting up to `within`.
    pub fn wait_for(&self, marker: &str, within: Duration) -> String {
        let until = Instant::now() + within;
        loop {
            if let Some(rest) = self.lines.lock().unwrap().iter().find_map(|l| l.split(marker).nth(1)) {
                return rest.trim().to_string();
            }
            assert!(
                Instant::now() < until,
                "hashrig printed no {marker:?} within {within:?}:\n{}",
                self.lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// HOST:PORT of the /metrics endpoint the child printed.
    pub fn metrics_addr(&self) -> String {
        self.wait_for("metrics: http://", Duration::from_secs(30)).trim_end_matches("/metrics").to_string()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if it has exited (then every line it printed is in).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let s = self.child.try_wait().unwrap()?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Some(s)
    }

    /// SIGINT, then the exit status (a clean stop takes at most 20 s), once
    /// every line it printed is in.
    pub fn interrupt(&mut self) -> ExitStatus {
        let st = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status().unwrap();
        assert!(st.success());
        let t0 = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(t0.elapsed() < Duration::from_secs(20), "did not stop after SIGINT");
            std::thread::sleep(Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join(); // EOF: the child has exited
        }
        status
    }
}

impl Drop for HashrigRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
