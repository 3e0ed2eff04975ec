//! CPU execution: one rayon pool per NUMA worker group, batches verified
//! inline on the calling thread or split over the groups in proportion to
//! their measured rates, and the CPU's cost per item learnt from the CPU
//! time the verification used (not wall time × threads, which over-costs
//! the CPU when a batch has fewer chunks than threads or the machine is
//! contended).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rayon::prelude::*;

use super::{ExecPath, Inner};
use crate::sig::{verify_batch, SigItem, Verdict};

pub(super) struct Group {
    pub(super) pool: rayon::ThreadPool,
    pub(super) threads: usize,
    /// Measured items/s of the whole group (f64 bits); 0 until measured.
    pub(super) rate: AtomicU64,
}

/// CPU time of the calling thread, in seconds (None where the clock fails:
/// then nothing is learnt, rather than a thread's whole life in one batch).
pub(super) fn thread_cpu_secs() -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    ok.then_some(ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9)
}

/// CPU seconds `f` used on the calling thread, with its result.
fn cpu_timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t0 = thread_cpu_secs();
    let out = f();
    let secs = match (t0, thread_cpu_secs()) {
        (Some(a), Some(b)) => (b - a).max(0.0),
        _ => 0.0,
    };
    (out, secs)
}

impl Inner {
    pub(super) fn threads(&self) -> usize {
        self.groups.iter().map(|g| g.threads).sum()
    }

    /// Verdicts for `items` on the CPU: inline when small, else split.
    pub(super) fn execute_cpu(&self, items: &[SigItem]) -> (Vec<Verdict>, ExecPath) {
        let threads = self.threads();
        let n = items.len();
        let (out, cpu_secs) = if n <= self.cfg.inline_max || threads <= 1 {
            let (v, secs) = cpu_timed(|| verify_batch(items));
            ((v, ExecPath::Inline), secs)
        } else {
            self.split(items)
        };
        // The CPU's time per item, per family, for routing.
        self.costs.learn_cpu(items, cpu_secs);
        self.cpu_items.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.sig_gpu.engine_items.with_label_values(&["cpu"]).inc_by(n as u64);
        }
        out
    }

    /// Split over the groups (shares by measured rate), each share in one
    /// chunk per thread of at least `chunk_min` items. Also returns the
    /// CPU seconds all chunks used.
    fn split(&self, items: &[SigItem]) -> ((Vec<Verdict>, ExecPath), f64) {
        let n = items.len();
        let measured = self.groups.iter().all(|g| g.rate.load(Ordering::Relaxed) != 0);
        let weight =
            |g: &Group| if measured { f64::from_bits(g.rate.load(Ordering::Relaxed)) } else { g.threads as f64 };
        let total: f64 = self.groups.iter().map(weight).sum();
        let mut shares = Vec::with_capacity(self.groups.len());
        let mut start = 0;
        for (i, g) in self.groups.iter().enumerate() {
            let len = if i + 1 == self.groups.len() {
                n - start
            } else {
                ((n as f64 * weight(g) / total) as usize).min(n - start)
            };
            shares.push(start..start + len);
            start += len;
        }
        let chunk_min = self.cfg.chunk_min.max(1);
        let cpu_ns = AtomicU64::new(0);
        let mut out = vec![Verdict::Valid; n];
        let mut chunks = 0;
        let mut groups_used = 0;
        {
            let mut outs: Vec<&mut [Verdict]> = Vec::new();
            let mut rest: &mut [Verdict] = &mut out;
            for r in &shares {
                let (a, b) = rest.split_at_mut(r.len());
                outs.push(a);
                rest = b;
            }
            let jobs: Vec<_> = self
                .groups
                .iter()
                .zip(shares.iter())
                .zip(outs)
                .filter(|((_, r), _)| !r.is_empty())
                .map(|((g, r), o)| {
                    let chunk = r.len().div_ceil(g.threads).max(chunk_min);
                    chunks += r.len().div_ceil(chunk);
                    groups_used += 1;
                    (g, &items[r.clone()], o, chunk)
                })
                .collect();
            let cpu_ns = &cpu_ns;
            let run_group = |g: &Group, part: &[SigItem], o: &mut [Verdict], chunk: usize| {
                let t0 = Instant::now();
                g.pool.install(|| {
                    part.par_chunks(chunk).zip(o.par_chunks_mut(chunk)).for_each(|(src, dst)| {
                        let (v, secs) = cpu_timed(|| verify_batch(src));
                        dst.copy_from_slice(&v);
                        cpu_ns.fetch_add((secs * 1e9) as u64, Ordering::Relaxed);
                    })
                });
                let secs = t0.elapsed().as_secs_f64();
                if secs > 0.0 && part.len() >= chunk_min {
                    let r = part.len() as f64 / secs;
                    let old = f64::from_bits(g.rate.load(Ordering::Relaxed));
                    let new = if old > 0.0 { 0.8 * old + 0.2 * r } else { r };
                    g.rate.store(new.to_bits(), Ordering::Relaxed);
                }
            };
            let mut jobs = jobs.into_iter();
            if let Some(first) = jobs.next() {
                std::thread::scope(|s| {
                    for (g, part, o, chunk) in jobs {
                        s.spawn(move || run_group(g, part, o, chunk));
                    }
                    let (g, part, o, chunk) = first;
                    run_group(g, part, o, chunk);
                });
            }
        }
        let secs = cpu_ns.load(Ordering::Relaxed) as f64 * 1e-9;
        ((out, ExecPath::Split { groups: groups_used, chunks }), secs)
    }
}
