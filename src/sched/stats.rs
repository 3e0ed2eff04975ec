//! Run-wide counters for the status line, and hashrate over sliding windows
//! (10 s / 60 s / 15 min, as the miners people know print them).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Default)]
pub struct Stats {
    pub hashes: AtomicU64,
    pub accepted: AtomicU64,
    pub rejected: AtomicU64,
    pub stale: AtomicU64,
    pub hw_errors: AtomicU64,
    pub blocks: AtomicU64,
    samples: Mutex<VecDeque<(Instant, u64)>>,
}

/// Longest window kept (15 min) plus slack for one sample interval.
const HISTORY: Duration = Duration::from_secs(15 * 60 + 5);

/// The window of [`Stats::live_rate`], and the least of it that counts.
pub const LIVE_WINDOW: Duration = Duration::from_secs(10);
pub const LIVE_MIN_SPAN: Duration = Duration::from_secs(2);

impl Stats {
    pub fn new() -> Stats {
        let s = Stats::default();
        s.samples.lock().push_back((Instant::now(), 0));
        s
    }

    /// Records the current hash count; call about once a second.
    pub fn sample(&self) {
        self.sample_at(Instant::now(), self.hashes.load(Ordering::Relaxed));
    }

    fn sample_at(&self, now: Instant, total: u64) {
        let mut q = self.samples.lock();
        q.push_back((now, total));
        while q.len() > 2 && q.front().is_some_and(|(t, _)| now.duration_since(*t) > HISTORY) {
            q.pop_front();
        }
    }

    /// Hashes per second over the last `window`, from the samples. `None`
    /// until the run has lasted most of the window (a 15 min rate after 20 s
    /// would be a lie).
    pub fn rate(&self, window: Duration) -> Option<f64> {
        let q = self.samples.lock();
        let (t_last, h_last) = *q.back()?;
        let (t_first, _) = *q.front()?;
        if t_last.duration_since(t_first) < window.mul_f64(0.9) {
            return None;
        }
        // The oldest sample still inside the window.
        let (t0, h0) = *q.iter().find(|(t, _)| t_last.duration_since(*t) <= window)?;
        let dt = t_last.duration_since(t0).as_secs_f64();
        if dt <= 0.0 {
            return None;
        }
        Some((h_last - h0) as f64 / dt)
    }

    /// Hashes per second since hashing began (from the last sample at which
    /// the count had not moved yet: engines start after the counters do), for
    /// a run shorter than the shortest window. `None` before any hash.
    pub fn rate_so_far(&self) -> Option<f64> {
        let q = self.samples.lock();
        let (t_last, h_last) = *q.back()?;
        let (_, h_first) = *q.front()?;
        let (t0, h0) = *q.iter().rev().find(|(_, h)| *h == h_first)?;
        let dt = t_last.duration_since(t0).as_secs_f64();
        (dt > 0.0 && h_last > h0).then(|| (h_last - h0) as f64 / dt)
    }

    /// The live hashrate: over the last [`LIVE_WINDOW`], or over what the
    /// run has of it once that spans [`LIVE_MIN_SPAN`]; `None` before. What
    /// a pool is told the miner does (Stratum V2 channels, V1's
    /// mining.suggest_difficulty), so it moves with the engines: a GPU
    /// joining, a thermal guard lowering its duty cycle.
    pub fn live_rate(&self) -> Option<f64> {
        let q = self.samples.lock();
        let (t_last, h_last) = *q.back()?;
        let (t0, h0) = *q.iter().find(|(t, _)| t_last.duration_since(*t) <= LIVE_WINDOW)?;
        let dt = t_last.duration_since(t0);
        if dt < LIVE_MIN_SPAN {
            return None;
        }
        Some((h_last - h0) as f64 / dt.as_secs_f64())
    }

    /// The hashrate part of the status line: "10s/60s/15m 41.2 40.9 n/a MH/s".
    /// Until the run has lasted 10 s, the first figure is the rate so far,
    /// so the first status line already shows a speed.
    pub fn speed_line(&self) -> String {
        let mut rates = [10, 60, 900].map(|s| self.rate(Duration::from_secs(s)));
        rates[0] = rates[0].or_else(|| self.rate_so_far());
        let max = rates.iter().flatten().cloned().fold(0.0, f64::max);
        let (div, prefix) = si_prefix(max);
        let f = |r: Option<f64>| r.map_or("n/a".to_string(), |v| format!("{:.2}", v / div));
        format!("speed 10s/60s/15m {} {} {} {prefix}H/s", f(rates[0]), f(rates[1]), f(rates[2]))
    }
}

/// A divisor and SI prefix that keep a rate readable: 4.2e9 → (1e9, "G").
pub fn si_prefix(rate: f64) -> (f64, &'static str) {
    match rate {
        r if r >= 1e12 => (1e12, "T"),
        r if r >= 1e9 => (1e9, "G"),
        r if r >= 1e6 => (1e6, "M"),
        r if r >= 1e3 => (1e3, "k"),
        _ => (1.0, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_need_history_and_average_correctly() {
        let s = Stats::new();
        let t0 = Instant::now();
        s.samples.lock().clear();
        for i in 0..=60u64 {
            // 1000 H/s for the first 50 s, then 2000 H/s.
            let total = if i <= 50 { i * 1000 } else { 50_000 + (i - 50) * 2000 };
            s.sample_at(t0 + Duration::from_secs(i), total);
        }
        assert_eq!(s.rate(Duration::from_secs(10)).unwrap(), 2000.0);
        assert_eq!(s.rate(Duration::from_secs(60)).unwrap(), 70_000.0 / 60.0);
        assert!(s.rate(Duration::from_secs(900)).is_none());
        assert!(s.speed_line().contains("n/a"));
    }

    #[test]
    fn a_short_run_shows_its_rate_so_far() {
        let s = Stats::new();
        let t0 = Instant::now();
        s.samples.lock().clear();
        assert_eq!(s.rate_so_far(), None);
        // Engines start 1 s after the counters; 2000 hashes in the next second.
        for (ms, total) in [(0, 0), (500, 0), (1000, 0), (1250, 300), (2000, 2000)] {
            s.sample_at(t0 + Duration::from_millis(ms), total);
        }
        assert!(s.rate(Duration::from_secs(10)).is_none());
        assert_eq!(s.rate_so_far(), Some(2000.0));
        assert!(s.speed_line().starts_with("speed 10s/60s/15m 2.00 n/a n/a kH/s"), "{}", s.speed_line());
    }

    #[test]
    fn the_live_rate_needs_two_seconds_and_follows_the_last_ten() {
        let s = Stats::new();
        let t0 = Instant::now();
        s.samples.lock().clear();
        s.sample_at(t0, 0);
        s.sample_at(t0 + Duration::from_secs(1), 500);
        assert_eq!(s.live_rate(), None, "one second is not a measurement");
        s.sample_at(t0 + Duration::from_secs(2), 1000);
        assert_eq!(s.live_rate(), Some(500.0));
        // 500 H/s to 12 s, then 4000 H/s: the last 10 s are what counts.
        for i in 3..=12u64 {
            s.sample_at(t0 + Duration::from_secs(i), i * 500);
        }
        for i in 13..=22u64 {
            s.sample_at(t0 + Duration::from_secs(i), 6000 + (i - 12) * 4000);
        }
        assert_eq!(s.live_rate(), Some(4000.0));
    }
}
