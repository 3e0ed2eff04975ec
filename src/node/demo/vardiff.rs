//! The demo node's vardiff: an estimate of the engines' hashrate from the
//! shares they find, as a pool makes it, turned into a share difficulty that
//! gives a few shares per second. The node also sets its block difficulty from
//! the estimate (`hashrate × block time`), so one estimate paces both.
//!
//! Each share of difficulty `d` stands for `d × 2^32` hashes, whatever job it
//! came from, so shares of older jobs (found before a change reached the
//! engines) count at their own difficulty. The estimate is re-made every
//! `window` from the shares of that window, averaged with the last few
//! windows; a window that measures more than 2× away from the estimate
//! replaces it instead (a GPU that joined or was lost), and a window that runs
//! 4× fast retargets as soon as it holds a few shares, so a sudden flood of
//! shares is cut short within a few shares rather than a window.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Hashes per unit of difficulty.
pub const TWO_32: f64 = 4_294_967_296.0;

/// A window measuring outside `[1/JUMP, JUMP]` × the estimate replaces it.
const JUMP: f64 = 2.0;
/// Windows (the current one included) the estimate averages over.
const HISTORY: usize = 4;
/// A window this much faster than the estimate retargets early...
const EARLY_FACTOR: f64 = 4.0;
/// ...once it holds this many shares (fewer would be noise).
const EARLY_SHARES: u32 = 8;
/// The share difficulty is only changed (and a job published) when the
/// estimate moved it by more than this fraction: fewer job switches.
const DEAD_BAND: f64 = 0.25;
/// The block difficulty is set again within a height only when the estimate
/// moved this far from the one it was set from.
const REAIM: f64 = 3.0;

#[derive(Clone, Debug, PartialEq)]
pub struct VardiffParams {
    /// Shares per second aimed at.
    pub share_rate: f64,
    /// How often the estimate is re-made.
    pub window: Duration,
}

/// What a retarget asks of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// A new share difficulty: publish a job with it.
    Shares,
    /// The hashrate moved more than 3× from the one the block difficulty
    /// was set from: set the block difficulty again too, then publish.
    Blocks,
}

pub struct Vardiff {
    p: VardiffParams,
    hashrate: f64,
    share_difficulty: f64,
    /// The estimate the block difficulty was last set from.
    aimed: f64,
    window_start: Instant,
    /// Hashes the shares of the current window stand for.
    window_hashes: f64,
    window_shares: u32,
    /// (hashes, seconds) of the last closed windows.
    history: VecDeque<(f64, f64)>,
}

impl Vardiff {
    /// Starts from `hashrate` (H/s, e.g. measured at start-up), weighed as
    /// `evidence` of hashing (how long it was measured over) against the
    /// windows that follow.
    pub fn new(p: VardiffParams, hashrate: f64, evidence: Duration, now: Instant) -> Vardiff {
        let hashrate = floor(hashrate);
        let secs = evidence.as_secs_f64().max(1e-3);
        let mut v = Vardiff {
            share_difficulty: 0.0,
            hashrate,
            aimed: hashrate,
            window_start: now,
            window_hashes: 0.0,
            window_shares: 0,
            history: VecDeque::from([(hashrate * secs, secs)]),
            p,
        };
        v.share_difficulty = v.wanted_difficulty();
        v
    }

    /// The engines' hashrate as estimated now (H/s).
    pub fn hashrate(&self) -> f64 {
        self.hashrate
    }

    /// The share difficulty to hand out.
    pub fn share_difficulty(&self) -> f64 {
        self.share_difficulty
    }

    /// The block difficulty is being set from the estimate: returns it.
    pub fn aim(&mut self) -> f64 {
        self.aimed = self.hashrate;
        self.hashrate
    }

    /// A valid share of `difficulty` found (accepted or stale: either is work
    /// the engines did).
    pub fn found(&mut self, difficulty: f64, now: Instant) -> Option<Change> {
        if difficulty.is_finite() && difficulty > 0.0 {
            self.window_hashes += difficulty * TWO_32;
            self.window_shares += 1;
        }
        let secs = self.elapsed(now);
        let early = self.window_shares >= EARLY_SHARES && self.window_hashes / secs >= EARLY_FACTOR * self.hashrate;
        if early || secs >= self.p.window.as_secs_f64() {
            return self.retarget(now);
        }
        None
    }

    /// Called now and then: closes the window when it is due (with no share
    /// in it, the difficulty falls).
    pub fn tick(&mut self, now: Instant) -> Option<Change> {
        if self.elapsed(now) >= self.p.window.as_secs_f64() {
            return self.retarget(now);
        }
        None
    }

    fn elapsed(&self, now: Instant) -> f64 {
        now.saturating_duration_since(self.window_start).as_secs_f64().max(1e-3)
    }

    fn wanted_difficulty(&self) -> f64 {
        self.hashrate / (self.p.share_rate.max(1e-9) * TWO_32)
    }

    fn retarget(&mut self, now: Instant) -> Option<Change> {
        let secs = self.elapsed(now);
        // No share at all: at most half a share's work was done (the next
        // windows find the real rate once shares come again).
        let hashes = if self.window_shares == 0 { 0.5 * self.share_difficulty * TWO_32 } else { self.window_hashes };
        let rate = hashes / secs;
        if rate > JUMP * self.hashrate || rate < self.hashrate / JUMP {
            self.history.clear();
        }
        self.history.push_back((hashes, secs));
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        let (h, s) = self.history.iter().fold((0.0, 0.0), |(h, s), (wh, ws)| (h + wh, s + ws));
        self.hashrate = floor(h / s);
        self.window_start = now;
        self.window_hashes = 0.0;
        self.window_shares = 0;

        let want = self.wanted_difficulty();
        let change = if self.hashrate > REAIM * self.aimed || self.hashrate < self.aimed / REAIM {
            self.aimed = self.hashrate;
            Some(Change::Blocks)
        } else if (want / self.share_difficulty - 1.0).abs() > DEAD_BAND {
            Some(Change::Shares)
        } else {
            None
        };
        if change.is_some() {
            self.share_difficulty = want;
        }
        change
    }
}

/// At least one hash per second: difficulties stay positive and finite.
fn floor(hashrate: f64) -> f64 {
    if hashrate.is_finite() {
        hashrate.max(1.0)
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// A start counted as one window's worth of evidence.
    const W: Duration = Duration::from_secs(5);

    fn params() -> VardiffParams {
        VardiffParams { share_rate: 4.0, window: Duration::from_secs(5) }
    }

    /// Seconds until the next share at `hashrate` and share difficulty `d`
    /// (shares are a Poisson process: each hash is one with probability
    /// 1 / (d × 2^32)).
    fn next_share(rng: &mut StdRng, hashrate: f64, d: f64) -> f64 {
        let u: f64 = rng.random();
        -(1.0 - u).ln() * d * TWO_32 / hashrate
    }

    /// Feeds shares from engines hashing at `hashrate` for `seconds` of a
    /// fake clock (ticks every 200 ms); returns the changes asked for.
    fn run(v: &mut Vardiff, rng: &mut StdRng, t: &mut Instant, hashrate: f64, seconds: f64) -> Vec<Change> {
        let end = *t + Duration::from_secs_f64(seconds);
        let mut changes = Vec::new();
        let mut next = *t + Duration::from_secs_f64(next_share(rng, hashrate, v.share_difficulty()));
        let mut tick = *t + Duration::from_millis(200);
        while next.min(tick) < end {
            if next < tick {
                *t = next;
                let d = v.share_difficulty();
                changes.extend(v.found(d, *t));
                next = *t + Duration::from_secs_f64(next_share(rng, hashrate, v.share_difficulty()));
            } else {
                *t = tick;
                changes.extend(v.tick(*t));
                tick += Duration::from_millis(200);
                // The rate (or the difficulty) may have changed: the process
                // is memoryless, so draw the next share afresh.
                next = *t + Duration::from_secs_f64(next_share(rng, hashrate, v.share_difficulty()));
            }
        }
        *t = end;
        changes
    }

    fn target_difficulty(hashrate: f64) -> f64 {
        hashrate / (4.0 * TWO_32)
    }

    #[test]
    fn a_steady_rate_keeps_its_difficulty_and_few_jobs() {
        for (seed, hashrate) in [(1, 2e7), (2, 7e9), (3, 1e12)] {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut t = Instant::now();
            let mut v = Vardiff::new(params(), hashrate, W, t);
            let changes = run(&mut v, &mut rng, &mut t, hashrate, 300.0);
            let ratio = v.share_difficulty() / target_difficulty(hashrate);
            assert!((0.7..1.4).contains(&ratio), "{hashrate}: difficulty off by {ratio}");
            // 60 windows: a job for a difficulty change in few of them, and
            // the block difficulty never set again.
            assert!(changes.len() <= 12, "{hashrate}: {changes:?}");
            assert!(!changes.contains(&Change::Blocks), "{hashrate}: {changes:?}");
        }
    }

    #[test]
    fn a_start_far_off_is_corrected_in_the_first_window_or_sooner() {
        let mut rng = StdRng::seed_from_u64(4);
        // A start-up measurement 1000× too low: shares flood in, and a
        // handful of them retarget (the block difficulty too).
        let t0 = Instant::now();
        let mut t = t0;
        let mut v = Vardiff::new(params(), 7e6, W, t);
        let changes = run(&mut v, &mut rng, &mut t, 7e9, 0.05);
        assert_eq!(changes.first(), Some(&Change::Blocks), "{changes:?}");
        let ratio = v.hashrate() / 7e9;
        assert!((0.3..3.0).contains(&ratio), "estimate off by {ratio} after 50 ms");

        // 1000× too high: no shares; each window without one lowers the
        // difficulty 40-fold (half a share against 20 expected).
        let mut v = Vardiff::new(params(), 7e12, W, t);
        let changes = run(&mut v, &mut rng, &mut t, 7e9, 12.0);
        assert_eq!(changes.first(), Some(&Change::Blocks));
        assert!(v.hashrate() < 7e12 / 100.0, "{}", v.hashrate());
        run(&mut v, &mut rng, &mut t, 7e9, 30.0);
        let ratio = v.share_difficulty() / target_difficulty(7e9);
        assert!((0.5..2.0).contains(&ratio), "off by {ratio} after 42 s");
    }

    #[test]
    fn a_gpu_joining_and_leaving_is_followed() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut t = Instant::now();
        let mut v = Vardiff::new(params(), 2e7, W, t);
        run(&mut v, &mut rng, &mut t, 2e7, 30.0);
        // 350× more hashes: followed within a second.
        let c = run(&mut v, &mut rng, &mut t, 7e9, 1.0);
        assert!(c.contains(&Change::Blocks), "{c:?}");
        assert!((0.4..2.5).contains(&(v.hashrate() / 7e9)), "{}", v.hashrate());
        run(&mut v, &mut rng, &mut t, 7e9, 30.0);
        assert!((0.6..1.6).contains(&(v.hashrate() / 7e9)), "{}", v.hashrate());
        // The GPU is lost: back to the CPU's rate within a few windows.
        let c = run(&mut v, &mut rng, &mut t, 2e7, 25.0);
        assert!(c.contains(&Change::Blocks), "{c:?}");
        assert!((0.4..2.5).contains(&(v.hashrate() / 2e7)), "{}", v.hashrate());
    }

    #[test]
    fn each_share_counts_at_its_own_difficulty() {
        let t0 = Instant::now();
        let mut v = Vardiff::new(params(), 1e9, W, t0);
        // 20 shares over one window, 16 of them from an older job at a 4×
        // easier difficulty: the estimate is the work they stand for.
        let d = v.share_difficulty();
        let mut hashes = 0.0;
        for i in 0..20u32 {
            let di = if i % 5 == 0 { d } else { d / 4.0 };
            hashes += di * TWO_32;
            let at = t0 + Duration::from_millis(250 * i as u64 + 10);
            assert_eq!(v.found(di, at), None, "share {i}");
        }
        let c = v.tick(t0 + Duration::from_secs(5));
        let window_rate = hashes / 5.0;
        // Outside 2× of the start: the window alone is the estimate.
        assert!(window_rate < 1e9 / 2.0);
        assert_eq!(v.hashrate(), window_rate);
        assert_eq!(c, Some(Change::Shares));
        assert_eq!(v.share_difficulty(), window_rate / (4.0 * TWO_32));
    }

    #[test]
    fn small_moves_publish_nothing_and_windows_average() {
        let t0 = Instant::now();
        let mut v = Vardiff::new(params(), 1e9, W, t0);
        let d = v.share_difficulty();
        // 23 shares where 20 were expected: 1.15× the estimate.
        for i in 0..23u64 {
            assert_eq!(v.found(d, t0 + Duration::from_millis(200 * i + 10)), None);
        }
        assert_eq!(v.tick(t0 + Duration::from_secs(5)), None, "inside the dead band");
        // Averaged with the start (one window's worth): 1.075×.
        assert!((v.hashrate() / 1e9 - 1.075).abs() < 1e-9, "{}", v.hashrate());
        assert_eq!(v.share_difficulty(), d, "unchanged until it moves by a quarter");
    }

    #[test]
    fn the_difficulty_stays_positive_and_finite() {
        let t0 = Instant::now();
        let mut v = Vardiff::new(params(), 0.0, W, t0);
        assert!(v.share_difficulty() > 0.0 && v.share_difficulty().is_finite());
        for w in 1..20u64 {
            v.tick(t0 + Duration::from_secs(5 * w));
        }
        assert!(v.hashrate() >= 1.0 && v.share_difficulty() > 0.0);
        let mut v = Vardiff::new(params(), f64::INFINITY, W, t0);
        assert!(v.share_difficulty().is_finite());
        assert_eq!(v.found(f64::NAN, t0), None);
    }
}
