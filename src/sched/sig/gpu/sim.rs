//! A simulated signature device: a fixed latency L0 and a rate R, so the
//! scheduler, the trust policy and the metrics can be exercised (and a
//! buyer can ask "what would a device like this add to my server?") on a
//! machine without a GPU: `--simulate-gpu L0_MS:RATE`.
//!
//! **Timing model.** The device is one server that works through its
//! dispatches in order: a dispatch of n items occupies it for n / R from
//! when it is submitted or the previous one ends, whichever is later, and
//! its verdicts are readable L0 after that (the fixed part, launch and read
//! back, overlaps the next dispatch's work as on a pipelined GPU). An
//! isolated dispatch therefore answers after L0 + n / R, the model the
//! scheduler predicts with. Waiting for it sleeps: the simulation takes no
//! CPU time while it "computes".
//!
//! **Verdicts** are the CPU path's (`sig::verify_one`), remembered per
//! distinct item (a bounded table), so a benchmark that cycles through a
//! pool of items costs a lookup per item, not a verification. Faults can be
//! injected: flipped verdicts, a lost device, a stalled dispatch.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rayon::prelude::*;

use super::device::{DeviceAnswer, DeviceError, DeviceInfo, InFlight, SigDevice, SIM_INDEX_BASE};
use crate::sig::{verify_one, Reason, SigItem, Verdict};

/// Faults a simulated device injects, counted from the end of the engine's
/// start-up self-test (a device wrong from the start is refused there).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimFaults {
    /// Flip the verdict of every n-th item of each dispatch (0: never).
    pub flip_every: u32,
    /// The device is lost at this dispatch (counted from 1).
    pub lose_at: Option<u64>,
    /// This dispatch never finishes (counted from 1): the engine's timeout
    /// must catch it.
    pub stall_at: Option<u64>,
}

/// `L0_MS:RATE[:FAULT,...]`, e.g. `6:600000` or `0.5:5000000:flip=7`.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSpec {
    pub l0: Duration,
    /// Items per second.
    pub rate: f64,
    pub faults: SimFaults,
}

impl FromStr for SimSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<SimSpec, String> {
        let usage = "expected L0_MS:RATE[:FAULT,...] (e.g. 6:600000; faults flip=N, lose=N, stall=N)";
        let mut parts = s.splitn(3, ':');
        let (Some(l0), Some(rate)) = (parts.next(), parts.next()) else {
            return Err(format!("{s:?}: {usage}"));
        };
        let l0: f64 = l0.trim().parse().map_err(|_| format!("{s:?}: L0 {l0:?} is not a number of ms; {usage}"))?;
        let rate: f64 =
            rate.trim().parse().map_err(|_| format!("{s:?}: rate {rate:?} is not items per second; {usage}"))?;
        if !(0.0..=60_000.0).contains(&l0) {
            return Err(format!("{s:?}: L0 must be 0 to 60000 ms"));
        }
        if !(rate.is_finite() && (1.0..=1e12).contains(&rate)) {
            return Err(format!("{s:?}: the rate must be 1 to 1e12 items per second"));
        }
        let mut faults = SimFaults::default();
        for f in parts.next().into_iter().flat_map(|x| x.split(',')).filter(|f| !f.is_empty()) {
            let (k, v) = f.split_once('=').ok_or_else(|| format!("{s:?}: fault {f:?}: {usage}"))?;
            let n: u64 = v.parse().map_err(|_| format!("{s:?}: fault {f:?}: {v:?} is not a count"))?;
            if n == 0 {
                return Err(format!("{s:?}: fault {f:?}: counts start at 1"));
            }
            match k {
                "flip" => faults.flip_every = u32::try_from(n).map_err(|_| format!("{s:?}: flip={n} is too large"))?,
                "lose" => faults.lose_at = Some(n),
                "stall" => faults.stall_at = Some(n),
                _ => return Err(format!("{s:?}: unknown fault {k:?}; {usage}")),
            }
        }
        Ok(SimSpec { l0: Duration::from_secs_f64(l0 / 1e3), rate, faults })
    }
}

impl std::fmt::Display for SimSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "simulated GPU (L0 {} ms, {} items/s)", self.l0.as_secs_f64() * 1e3, self.rate)
    }
}

/// Remembered verdicts at most; the table starts again when full.
const MEMO_MAX: usize = 1 << 16;

pub struct SimDevice {
    info: DeviceInfo,
    spec: SimSpec,
    /// When the modelled device finishes what it was given so far.
    busy_until: Mutex<Instant>,
    /// Dispatches since the engine started using the device (faults count
    /// from there); none before.
    dispatches: AtomicU64,
    armed: std::sync::atomic::AtomicBool,
    memo: Mutex<HashMap<u64, Verdict>>,
}

impl SimDevice {
    pub fn new(spec: SimSpec, n: usize) -> SimDevice {
        SimDevice {
            info: DeviceInfo { name: spec.to_string(), index: SIM_INDEX_BASE + n, software: false, simulated: true },
            spec,
            busy_until: Mutex::new(Instant::now()),
            dispatches: AtomicU64::new(0),
            armed: std::sync::atomic::AtomicBool::new(false),
            memo: Mutex::new(HashMap::new()),
        }
    }

    fn key(it: &SigItem) -> u64 {
        let mut h = DefaultHasher::new();
        (it.scheme.name(), it.flags, &it.pubkey, &it.msg, &it.sig).hash(&mut h);
        h.finish()
    }

    /// The CPU path's verdicts, from the table where known.
    fn verdicts(&self, items: &[&SigItem]) -> Vec<Verdict> {
        let keys: Vec<u64> = items.iter().map(|it| Self::key(it)).collect();
        let mut out: Vec<Option<Verdict>> = {
            let memo = self.memo.lock();
            keys.iter().map(|k| memo.get(k).copied()).collect()
        };
        let missing: Vec<usize> = (0..items.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let computed: Vec<Verdict> = missing.par_iter().map(|&i| verify_one(items[i])).collect();
            let mut memo = self.memo.lock();
            if memo.len() + missing.len() > MEMO_MAX {
                memo.clear();
            }
            for (&i, v) in missing.iter().zip(computed) {
                memo.insert(keys[i], v);
                out[i] = Some(v);
            }
        }
        out.into_iter().map(|v| v.unwrap_or(Verdict::Invalid(Reason::BadSignature))).collect()
    }
}

struct SimFlight {
    verdicts: Vec<Option<Verdict>>,
    ready: Instant,
    stalled: bool,
}

impl InFlight for SimFlight {
    fn wait(self: Box<Self>, timeout: Duration) -> Result<DeviceAnswer, DeviceError> {
        let now = Instant::now();
        if self.stalled || self.ready.saturating_duration_since(now) > timeout {
            std::thread::sleep(timeout);
            return Err(DeviceError::Timeout(timeout));
        }
        std::thread::sleep(self.ready.saturating_duration_since(now));
        Ok(DeviceAnswer { verdicts: self.verdicts, ready: self.ready })
    }
}

impl SigDevice for SimDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn started(&self) {
        self.dispatches.store(0, Ordering::Relaxed);
        self.armed.store(true, Ordering::Relaxed);
    }

    fn max_in_flight(&self) -> usize {
        3
    }

    fn max_items(&self) -> usize {
        1 << 20
    }

    fn submit(&self, items: &[&SigItem]) -> Result<Box<dyn InFlight>, DeviceError> {
        let no = self.dispatches.fetch_add(1, Ordering::Relaxed) + 1;
        let none = SimFaults::default();
        let f = if self.armed.load(Ordering::Relaxed) { &self.spec.faults } else { &none };
        if f.lose_at.is_some_and(|at| no >= at) {
            return Err(DeviceError::Lost(format!("simulated loss at dispatch {no}")));
        }
        let mut verdicts: Vec<Option<Verdict>> = self.verdicts(items).into_iter().map(Some).collect();
        if f.flip_every > 0 {
            for (i, v) in verdicts.iter_mut().enumerate() {
                if (i as u32).is_multiple_of(f.flip_every) {
                    *v = v.map(|v| if v.is_valid() { Verdict::Invalid(Reason::BadSignature) } else { Verdict::Valid });
                }
            }
        }
        let work = Duration::from_secs_f64(items.len() as f64 / self.spec.rate);
        let ready = {
            let mut busy = self.busy_until.lock();
            let start = (*busy).max(Instant::now());
            *busy = start + work;
            *busy + self.spec.l0
        };
        Ok(Box::new(SimFlight { verdicts, ready, stalled: f.stall_at == Some(no) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_bad_ones_say_why() {
        let s: SimSpec = "6:600000".parse().unwrap();
        assert_eq!(s.l0, Duration::from_millis(6));
        assert_eq!(s.rate, 600000.0);
        assert_eq!(s.faults, SimFaults::default());
        let s: SimSpec = "0.5:5e6:flip=7,lose=3,stall=2".parse().unwrap();
        assert_eq!(s.l0, Duration::from_micros(500));
        assert_eq!(s.faults, SimFaults { flip_every: 7, lose_at: Some(3), stall_at: Some(2) });
        for bad in ["", "6", "x:1", "6:y", "-1:5", "6:0", "6:inf", "6:100:flip", "6:100:flip=0", "6:100:melt=2"] {
            let e = bad.parse::<SimSpec>().unwrap_err();
            assert!(e.contains(bad) || bad.is_empty(), "{bad:?}: {e}");
        }
    }

    #[test]
    fn an_isolated_dispatch_answers_after_l0_plus_work_and_back_to_back_ones_overlap_l0() {
        let d = SimDevice::new("20:1000".parse().unwrap(), 0);
        let it = crate::sig::demo::valid_item(crate::sig::Scheme::Ed25519, 1);
        let t0 = Instant::now();
        let a = d.submit(&[&it; 10]).unwrap(); // 10 ms of work + 20 ms
        let b = d.submit(&[&it; 10]).unwrap(); // queued behind: ends at 20 + 20 ms
        let ra = a.wait(Duration::from_secs(5)).unwrap();
        let rb = b.wait(Duration::from_secs(5)).unwrap();
        let (ta, tb) = (ra.ready - t0, rb.ready - t0);
        assert!(ta >= Duration::from_millis(30) && ta < Duration::from_millis(45), "{ta:?}");
        assert!(tb >= Duration::from_millis(40) && tb < Duration::from_millis(55), "{tb:?}");
        assert!(Instant::now() >= t0 + Duration::from_millis(40), "waiting sleeps until ready");
        assert!(ra.verdicts.iter().all(|v| *v == Some(Verdict::Valid)));
    }

    #[test]
    fn faults_flip_lose_and_stall() {
        let it = crate::sig::demo::valid_item(crate::sig::Scheme::Ecdsa, 2);
        let d = SimDevice::new("0:1000000:flip=2,stall=2,lose=3".parse().unwrap(), 0);
        // Not armed before the engine's start-up is done.
        assert!(d
            .submit(&[&it; 4])
            .unwrap()
            .wait(Duration::from_secs(1))
            .unwrap()
            .verdicts
            .iter()
            .all(|v| v.unwrap().is_valid()));
        d.started();
        let a = d.submit(&[&it; 4]).unwrap().wait(Duration::from_secs(1)).unwrap();
        let flipped = a.verdicts.iter().filter(|v| !v.unwrap().is_valid()).count();
        assert_eq!(flipped, 2);
        let b = d.submit(&[&it]).unwrap().wait(Duration::from_millis(20));
        assert!(matches!(b, Err(DeviceError::Timeout(_))));
        assert!(matches!(d.submit(&[&it]).err(), Some(DeviceError::Lost(_))));
    }
}
