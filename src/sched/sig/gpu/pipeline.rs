//! The GPU engine's threads: the feeder (coalesce, place canaries, encode,
//! submit) and the completion thread (wait, judge by the trust policy,
//! learn, answer), and the start-up calibration they rely on.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use rayon::prelude::*;

use super::device::DeviceInfo;
use super::model::Model;
use super::trust::Canaries;
use super::{DeviceError, Flight, GpuAnswer, Job, Refused, Shared};
use crate::sig::{verify_one, Family, PerFamily, Reason, SigItem, Verdict};

/// A dispatch whose verdicts came back, for the trust policy.
struct Dispatched {
    jobs: Vec<Job>,
    canaries: Vec<(usize, usize)>,
    predicted: f64,
    wall: Duration,
}

fn interleave<'a>(jobs: &'a [Job], at: &[(usize, usize)], canaries: &'a Canaries) -> Vec<&'a SigItem> {
    let n: usize = jobs.iter().map(|j| j.range.len()).sum();
    let mut real = jobs.iter().flat_map(|j| j.items().iter());
    let mut at = at.iter().peekable();
    (0..n + at.len())
        .filter_map(|p| match at.peek() {
            Some(&&(q, c)) if q == p => {
                at.next();
                Some(&canaries.items[c].0)
            }
            _ => real.next(),
        })
        .collect()
}

impl Shared {
    pub(super) fn on_host<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match &self.host {
            Some(p) => p.install(f),
            None => f(),
        }
    }

    /// One dispatch, waited for: the self-test and the first measurements.
    fn run_once(&self, batch: &[&SigItem]) -> Result<(Vec<Option<Verdict>>, Duration), DeviceError> {
        let t0 = Instant::now();
        let f = self.on_host(|| self.dev.submit(batch))?;
        let a = f.wait(Duration::from_secs(600))?;
        Ok((a.verdicts, a.ready.saturating_duration_since(t0)))
    }

    /// Self-test and first measurements: every canary once (all must match
    /// the CPU), then L0 from single-item dispatches and the time per item
    /// of each family from one larger dispatch of its canaries.
    pub(super) fn calibrate(&self, info: &DeviceInfo) -> Result<(), DeviceError> {
        let all: Vec<&SigItem> = self.canaries.items.iter().map(|(i, _)| i).collect();
        let (got, _) = self.run_once(&all)?;
        for ((it, want), g) in self.canaries.items.iter().zip(&got) {
            if *g != Some(*want) {
                return Err(DeviceError::Driver(format!(
                    "self-test: {} known answer: GPU {g:?}, CPU {want:?} (key {})",
                    it.scheme,
                    hex::encode(&it.pubkey)
                )));
            }
        }
        let mut l0 = f64::INFINITY;
        for _ in 0..3 {
            l0 = l0.min(self.run_once(&all[1..2])?.1.as_secs_f64());
        }
        let n = if info.software { 256 } else { 16384 };
        let mut per_item = PerFamily::<f64>::default();
        for f in Family::ALL {
            let own: Vec<&SigItem> = all.iter().copied().filter(|i| i.scheme.family() == f).collect();
            let big: Vec<&SigItem> = (0..n).map(|i| own[i % own.len()]).collect();
            let wall = self.run_once(&big)?.1.as_secs_f64();
            per_item[f] = ((wall - l0).max(wall * 0.5)) / n as f64;
        }
        *self.model.lock() = Model { l0, per_item };
        self.publish_model();
        tracing::info!(
            adapter = %info.name,
            "signatures on {}: L0 {:.2} ms; verifies/s: Ed25519 {:.0}, ECDSA {:.0}, BIP340 {:.0}",
            self.label,
            l0 * 1e3,
            1.0 / per_item.ed25519,
            1.0 / per_item.ecdsa,
            1.0 / per_item.schnorr
        );
        Ok(())
    }

    fn publish_model(&self) {
        if let Some(m) = &self.metrics {
            let md = *self.model.lock();
            m.sig_gpu.l0_seconds.with_label_values(&[&self.label]).set(md.l0);
            for (f, secs) in md.per_item.iter() {
                m.sig_gpu.item_seconds.with_label_values(&[self.label.as_str(), f.name()]).set(*secs);
            }
        }
    }

    fn take_off(&self, why: String) {
        if self.active.swap(false, Ordering::AcqRel) {
            tracing::error!(adapter = %self.dev.info().name, "{} taken off signature work: {why}", self.label);
            *self.off_reason.lock() = why;
            // Mining on the adapter gets its full ring back.
            self.dev.release();
            if let Some(m) = &self.metrics {
                m.sig_gpu.active.with_label_values(&[&self.label, &self.dev.info().name]).set(0);
            }
        }
    }

    fn unbook(&self, jobs: &[Job]) {
        let ns: u64 = jobs.iter().map(|j| j.booked_ns).sum();
        self.backlog_ns.fetch_sub(ns.min(self.backlog_ns.load(Ordering::Relaxed)), Ordering::Relaxed);
    }

    /// Answers `jobs` with a refusal (the callers verify on the CPU).
    pub(super) fn refuse(&self, jobs: Vec<Job>, why: Refused) {
        self.unbook(&jobs);
        for j in jobs {
            (j.reply)(Err(why.clone()));
        }
    }

    /// The feeder: every queued job that fits goes into the next dispatch.
    pub(super) fn feed(&self, tx: crossbeam_channel::Sender<Flight>) {
        let k = self.policy.canaries.min(self.canaries.items.len());
        loop {
            let jobs = {
                let mut q = self.queue.lock();
                while q.jobs.is_empty() && !q.closing {
                    self.more.wait(&mut q);
                }
                if q.jobs.is_empty() {
                    return;
                }
                let mut n = 0;
                let mut jobs = Vec::new();
                while let Some(j) = q.jobs.front() {
                    if !jobs.is_empty() && n + j.range.len() + k > self.max_dispatch {
                        break;
                    }
                    n += j.range.len();
                    jobs.extend(q.jobs.pop_front());
                }
                jobs
            };
            if !self.active.load(Ordering::Acquire) {
                let why = self.off_reason.lock().clone();
                self.refuse(jobs, Refused::Off(why));
                continue;
            }
            let n: usize = jobs.iter().map(|j| j.range.len()).sum();
            let canaries = self.canaries.place(jobs.iter().flat_map(|j| j.items().iter()), n, k);
            let predicted = {
                let m = *self.model.lock();
                m.l0 + self.backlog_ns.load(Ordering::Relaxed) as f64 * 1e-9
            };
            let hold = self.dev.hold_adapter();
            let submitted = Instant::now();
            let res = {
                let batch = interleave(&jobs, &canaries, &self.canaries);
                self.on_host(|| self.dev.submit(&batch))
            };
            self.dispatches.fetch_add(1, Ordering::Relaxed);
            match res {
                Ok(flight) => {
                    let f = Flight { flight, jobs, canaries, submitted, predicted, _hold: hold };
                    if let Err(e) = tx.send(f) {
                        // The completion thread is gone: nobody will answer.
                        self.take_off("the completion thread stopped".into());
                        self.refuse(e.into_inner().jobs, Refused::Off("the completion thread stopped".into()));
                    }
                }
                Err(e) => {
                    self.device_failed(&e);
                    self.refuse(jobs, Refused::Device(e));
                }
            }
        }
    }

    fn device_failed(&self, e: &DeviceError) {
        self.take_off(format!("device error: {e}"));
        if let Some(m) = &self.metrics {
            m.gpu.device_lost.with_label_values(&[&self.label]).inc();
        }
    }

    /// The completion thread: each dispatch in order, judged and answered.
    pub(super) fn complete(&self, rx: crossbeam_channel::Receiver<Flight>) {
        let mut prev_ready: Option<Instant> = None;
        while let Ok(Flight { flight, jobs, canaries, submitted, predicted, _hold }) = rx.recv() {
            let batch = interleave(&jobs, &canaries, &self.canaries);
            let work = self.model.lock().work(batch.iter().copied());
            let res = flight.wait(dispatch_timeout(predicted + work, self.policy.hung_after));
            drop(_hold);
            match res {
                Ok(ans) => {
                    self.model.lock().learn(&batch, submitted, ans.ready, prev_ready);
                    drop(batch);
                    self.publish_model();
                    prev_ready = Some(ans.ready);
                    let d =
                        Dispatched { jobs, canaries, predicted, wall: ans.ready.saturating_duration_since(submitted) };
                    self.judge(d, ans.verdicts);
                }
                Err(e) => {
                    self.device_failed(&e);
                    self.refuse(jobs, Refused::Device(e));
                }
            }
        }
    }

    /// Canaries, re-checks, answers: the trust policy on one dispatch.
    fn judge(&self, f: Dispatched, mut got: Vec<Option<Verdict>>) {
        let wall = f.wall;
        let every = self.fault_every.load(Ordering::Relaxed);
        if every > 0 {
            for (i, g) in got.iter_mut().enumerate() {
                if (i as u32).is_multiple_of(every) {
                    *g = g.map(|v| if v.is_valid() { Verdict::Invalid(Reason::BadSignature) } else { Verdict::Valid });
                }
            }
        }
        let mut mismatch = None;
        for &(pos, c) in &f.canaries {
            let want = self.canaries.items[c].1;
            if got.get(pos).copied().flatten() != Some(want) {
                mismatch = Some(format!("canary: GPU {:?}, known answer {want:?}", got.get(pos)));
            }
        }
        self.count_recheck("canary", f.canaries.len());
        // The real items' verdicts, in job order, and which the CPU must see.
        let mut at = f.canaries.iter().map(|c| c.0).peekable();
        let mut verdicts = Vec::with_capacity(got.len().saturating_sub(f.canaries.len()));
        for (p, g) in got.into_iter().enumerate() {
            if at.peek() == Some(&p) {
                at.next();
            } else {
                verdicts.push(g);
            }
        }
        let items: Vec<&SigItem> = f.jobs.iter().flat_map(|j| j.items().iter()).collect();
        let n = items.len();
        let warm = self.take_warm(n as u64) as usize;
        let sample = self.policy.sample_one_in.max(1);
        let mut rng = rand::rng();
        let mut out = vec![Verdict::Valid; n];
        let mut recheck = Vec::new();
        let (mut n_invalid, mut n_sampled) = (0, 0);
        for (i, g) in verdicts.iter().enumerate().take(n) {
            match g {
                // No kernel for the item: the CPU answers it.
                None => out[i] = verify_one(items[i]),
                Some(v) => {
                    out[i] = *v;
                    if !v.is_valid() {
                        n_invalid += 1;
                        recheck.push(i);
                    } else if i < warm || rng.random_range(0..sample) == 0 {
                        n_sampled += 1;
                        recheck.push(i);
                    }
                }
            }
        }
        if verdicts.len() != n {
            mismatch.get_or_insert(format!("{} verdicts for {n} items", verdicts.len()));
        }
        if mismatch.is_none() && !recheck.is_empty() {
            let cpu = self.verify_on_host(&recheck.iter().map(|&i| items[i]).collect::<Vec<_>>());
            if let Some((&i, c)) = recheck.iter().zip(&cpu).find(|(&i, c)| out[i] != **c) {
                mismatch = Some(format!("item {i}: GPU {:?}, CPU {c:?}", out[i]));
            }
        }
        self.count_recheck("invalid", n_invalid);
        self.count_recheck("sampled", n_sampled);
        self.rechecked.fetch_add((n_invalid + n_sampled) as u64, Ordering::Relaxed);
        let mismatched = mismatch.is_some();
        if let Some(why) = mismatch {
            self.mismatches.fetch_add(1, Ordering::Relaxed);
            if let Some(m) = &self.metrics {
                m.sig_gpu.mismatches.with_label_values(&[&self.label]).inc();
            }
            self.take_off(format!("verdict mismatch ({why}); this dispatch was answered from the CPU"));
            out = self.verify_on_host(&items);
        }
        self.items.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            let g = &m.sig_gpu;
            g.batch_seconds.with_label_values(&[&self.label]).observe(wall.as_secs_f64());
            let predicted = f.predicted + self.model.lock().work(items.iter().copied());
            if predicted > 0.0 {
                g.prediction_ratio.with_label_values(&[&self.label]).observe(wall.as_secs_f64() / predicted);
            }
            g.engine_items.with_label_values(&[&self.label]).inc_by(n as u64);
        }
        drop(items);
        self.unbook(&f.jobs);
        let mut start = 0;
        let mut is_rechecked = vec![false; n];
        for &i in &recheck {
            is_rechecked[i] = true;
        }
        for j in f.jobs {
            let len = j.range.len();
            let rechecked =
                if mismatched { len } else { is_rechecked[start..start + len].iter().filter(|x| **x).count() };
            let ans = GpuAnswer { verdicts: out[start..start + len].to_vec(), wall, rechecked, mismatch: mismatched };
            start += len;
            (j.reply)(Ok(ans));
        }
    }

    /// Items of the warm-up this dispatch takes (at most `n`).
    fn take_warm(&self, n: u64) -> u64 {
        let mut left = self.warm_left.load(Ordering::Relaxed);
        loop {
            let take = left.min(n);
            if take == 0 {
                return 0;
            }
            match self.warm_left.compare_exchange(left, left - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }

    /// The CPU path's verdicts on the host pool's threads.
    fn verify_on_host(&self, items: &[&SigItem]) -> Vec<Verdict> {
        self.on_host(|| {
            if items.len() <= 16 {
                return items.iter().map(|i| verify_one(i)).collect();
            }
            items.par_iter().map(|i| verify_one(i)).collect()
        })
    }

    fn count_recheck(&self, why: &str, n: usize) {
        if n > 0 {
            if let Some(m) = &self.metrics {
                m.sig_gpu.rechecks.with_label_values(&[&self.label, why]).inc_by(n as u64);
            }
        }
    }
}

/// How long a dispatch may run before the device counts as hung: ten times
/// the prediction, never below `floor`.
fn dispatch_timeout(predicted: f64, floor: Duration) -> Duration {
    Duration::from_secs_f64((10.0 * predicted).clamp(floor.as_secs_f64(), 3600.0_f64.max(floor.as_secs_f64())))
}
