//! The GPU's cost model: a fixed latency L0 per dispatch and a time per
//! item for each kernel family (Ed25519, ECDSA, BIP340: their costs
//! differ), measured at start and then learnt from every dispatch as
//! moving averages.
//!
//! With several dispatches in flight a dispatch's wall time includes the
//! wait behind the one before it, so the model learns from the time the
//! device was busy with it: from its submission or the previous dispatch's
//! answer, whichever is later, to its own answer. An isolated dispatch (the
//! device idle when it was submitted) pays L0 on top of its items; a
//! back-to-back one hides its L0 behind the previous one's work.

use std::time::Instant;

use crate::sig::{Family, PerFamily, SigItem};

/// Measured fixed latency and time per item of each family.
#[derive(Clone, Copy, Debug, Default)]
pub struct Model {
    pub l0: f64,
    pub per_item: PerFamily<f64>,
}

impl Model {
    /// Predicted seconds of kernel work for `items` (without L0).
    pub fn work<'a>(&self, items: impl IntoIterator<Item = &'a SigItem>) -> f64 {
        items.into_iter().map(|i| self.per_item[i.scheme.family()]).sum()
    }

    /// Learns from one dispatch of `batch` submitted at `submitted`, answered
    /// at `ready`, the previous dispatch having been answered at `prev_ready`.
    pub fn learn(&mut self, batch: &[&SigItem], submitted: Instant, ready: Instant, prev_ready: Option<Instant>) {
        let isolated = prev_ready.is_none_or(|p| p <= submitted);
        let from = match prev_ready {
            Some(p) if p > submitted => p,
            _ => submitted,
        };
        let busy = ready.saturating_duration_since(from).as_secs_f64();
        if batch.len() <= 8 {
            if isolated {
                self.l0 = 0.8 * self.l0 + 0.2 * busy;
            }
            return;
        }
        let predicted = self.work(batch.iter().copied());
        if predicted <= 0.0 {
            return;
        }
        let work = if isolated { (busy - self.l0).max(busy * 0.25) } else { busy };
        let ratio = (work / predicted).clamp(0.1, 10.0);
        for f in Family::ALL {
            if batch.iter().any(|i| i.scheme.family() == f) {
                self.per_item[f] *= 0.8 + 0.2 * ratio;
            }
        }
    }
}
