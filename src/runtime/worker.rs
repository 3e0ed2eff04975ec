//! One thread the runtime runs, with the flag that asks it to stop. Every
//! thread the runtime starts is held as a `Worker` and joined at the stop:
//! none is left running behind it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Worker<T = ()> {
    thread: JoinHandle<T>,
    stop: Arc<AtomicBool>,
}

impl<T: Send + 'static> Worker<T> {
    /// Starts `f` on a thread named `name`; `f` gets the stop flag to watch.
    pub fn spawn(name: &str, f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static) -> std::io::Result<Worker<T>> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new().name(name.into()).spawn(move || f(flag))?;
        Ok(Worker { thread, stop })
    }
}

impl<T> Worker<T> {
    /// A thread started elsewhere that watches `stop`.
    pub fn from_parts(thread: JoinHandle<T>, stop: Arc<AtomicBool>) -> Worker<T> {
        Worker { thread, stop }
    }

    /// Asks the thread to stop; returns at once.
    pub fn ask_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }

    /// Asks it to stop and waits for it; `Err` if it panicked.
    pub fn stop(self) -> std::thread::Result<T> {
        self.ask_stop();
        self.thread.join()
    }

    /// Asks it to stop and waits up to `deadline`, calling `meanwhile` every
    /// 20 ms; the thread's result, or the worker back if it is still running
    /// (the caller keeps owning it).
    pub fn stop_within(self, deadline: Duration, mut meanwhile: impl FnMut()) -> Result<std::thread::Result<T>, Self> {
        self.ask_stop();
        let until = Instant::now() + deadline;
        while !self.thread.is_finished() && Instant::now() < until {
            meanwhile();
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.thread.is_finished() {
            Ok(self.thread.join())
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_stops_when_asked_and_a_stuck_one_is_handed_back() {
        let w = Worker::spawn("t-ok", |stop| {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
            7
        })
        .unwrap();
        assert_eq!(w.stop().unwrap(), 7);

        let release = Arc::new(AtomicBool::new(false));
        let r = release.clone();
        let w = Worker::spawn("t-stuck", move |_stop| {
            while !r.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .unwrap();
        let w = w.stop_within(Duration::from_millis(50), || {}).expect_err("ignores its stop flag");
        assert!(!w.is_finished());
        release.store(true, Ordering::Relaxed);
        assert!(w.stop_within(Duration::from_secs(30), || {}).is_ok());
    }
}
