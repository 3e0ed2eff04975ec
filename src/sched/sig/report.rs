//! What the engine answers for a batch, and what it counts of it.

use std::time::{Duration, Instant};

use super::SigEngine;
use crate::metrics::Metrics;
use crate::sig::{scheme_label, size_class, Scheme, SigItem, Verdict};

/// How a batch was run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecPath {
    Inline,
    /// Verified in one go with other small queued batches.
    Coalesced,
    Split {
        groups: usize,
        chunks: usize,
    },
    /// Verified on a GPU.
    Gpu,
    /// The head on the CPU, the last `gpu_items` on a GPU.
    GpuSplit {
        gpu_items: usize,
    },
}

impl ExecPath {
    pub fn label(self) -> &'static str {
        match self {
            ExecPath::Inline => "inline",
            ExecPath::Coalesced => "coalesced",
            ExecPath::Split { .. } => "split",
            ExecPath::Gpu => "gpu",
            ExecPath::GpuSplit { .. } => "gpu_split",
        }
    }
}

/// The answer for a batch.
#[derive(Clone, Debug)]
pub struct BatchReport {
    /// One verdict per item, in order.
    pub verdicts: Vec<Verdict>,
    pub path: ExecPath,
    /// From submission (or the call) to the last verdict.
    pub elapsed: Duration,
    /// Finished after its deadline.
    pub deadline_missed: bool,
}

pub(super) fn record(m: &Metrics, items: &[SigItem], rep: &BatchReport) {
    let label = scheme_label(items);
    m.sig_batch_seconds.with_label_values(&[label, size_class(items.len())]).observe(rep.elapsed.as_secs_f64());
    m.sig_batches.with_label_values(&[rep.path.label()]).inc();
    if rep.deadline_missed {
        m.sig_deadline_missed.with_label_values(&[label]).inc();
    }
    // Count locally, then one add per (scheme, result).
    let mut counts = [[0u64; 3]; 4];
    for (it, v) in items.iter().zip(&rep.verdicts) {
        let s = Scheme::ALL.iter().position(|x| *x == it.scheme).unwrap_or(0);
        let r = match v {
            Verdict::Valid => 0,
            Verdict::Invalid(r) if r.is_malformed() => 2,
            Verdict::Invalid(_) => 1,
        };
        counts[s][r] += 1;
    }
    for (s, row) in counts.iter().enumerate() {
        for (r, &c) in row.iter().enumerate() {
            if c > 0 {
                let result = ["valid", "invalid", "malformed"][r];
                m.sig_verdicts.with_label_values(&[Scheme::ALL[s].name(), result]).inc_by(c);
            }
        }
    }
}

/// Verifies per second between two calls, for status lines.
pub struct RateMeter {
    engine: SigEngine,
    last: (Instant, u64),
}

impl RateMeter {
    pub fn new(engine: SigEngine) -> RateMeter {
        let n = engine.verified_total();
        RateMeter { engine, last: (Instant::now(), n) }
    }

    /// Items verified per second since the previous call.
    pub fn rate(&mut self) -> f64 {
        let now = (Instant::now(), self.engine.verified_total());
        let dt = now.0.saturating_duration_since(self.last.0).as_secs_f64();
        let r = if dt > 0.0 { (now.1 - self.last.1) as f64 / dt } else { 0.0 };
        self.last = now;
        r
    }

    /// `"12.3 k verifies/s"`.
    pub fn line(&mut self) -> String {
        let r = self.rate();
        if r >= 1000.0 {
            format!("{:.1} k verifies/s", r / 1000.0)
        } else {
            format!("{r:.0} verifies/s")
        }
    }
}
