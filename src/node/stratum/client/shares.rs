//! Share accounting: every share's end is counted once, by protocol, result
//! and reason, in the metrics and the status line's counters. Results and
//! protocols are enums, so a new value cannot fall into another's count.

use std::sync::atomic::Ordering;

use crate::chain::BlockHash;
use crate::sched::Hit;

use super::{Client, PoolState};
use crate::node::stratum::ShareReason;

/// The pool protocol a share was for: the `protocol` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wire {
    V1,
    V2,
}

impl Wire {
    pub(super) fn label(self) -> &'static str {
        match self {
            Wire::V1 => "v1",
            Wire::V2 => "v2",
        }
    }
}

/// How a share ended: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShareResult {
    Accepted,
    Rejected,
    /// Stale: its job was gone, or the pool said so.
    Stale,
    /// Sent, and the pool neither acknowledged nor refused it before the
    /// session ended (a V2 pool acknowledges in batches: the last batch may
    /// still be open at the stop). Neither good nor bad, so no stale count.
    Unanswered,
}

impl ShareResult {
    pub(super) fn label(self) -> &'static str {
        match self {
            ShareResult::Accepted => "accepted",
            ShareResult::Rejected => "rejected",
            ShareResult::Stale => "stale",
            ShareResult::Unanswered => "unanswered",
        }
    }

    /// A pool's refusal: stale or rejected by its reason.
    pub(super) fn refused(reason: ShareReason) -> ShareResult {
        if reason.is_stale() {
            ShareResult::Stale
        } else {
            ShareResult::Rejected
        }
    }
}

/// Shares by result over the run, for the stale ratio.
#[derive(Debug, Default)]
pub(super) struct Tally {
    accepted: u64,
    rejected: u64,
    stale: u64,
}

impl Tally {
    fn stale_ratio(&self) -> f64 {
        let total = self.accepted + self.rejected + self.stale;
        if total == 0 {
            0.0
        } else {
            self.stale as f64 / total as f64
        }
    }
}

impl Client {
    /// Counts a share's end, for a pool speaking `wire`.
    pub(super) fn outcome(&mut self, wire: Wire, result: ShareResult, reason: ShareReason) {
        self.outcomes(wire, result, reason, 1);
    }

    /// Counts `n` shares' ends at once (a V2 batch acknowledgement).
    pub(super) fn outcomes(&mut self, wire: Wire, result: ShareResult, reason: ShareReason, n: u64) {
        if n == 0 {
            return;
        }
        let label = result.label();
        self.metrics.pool_shares.with_label_values(&[label, reason.label()]).inc_by(n);
        self.metrics.pool_protocol_shares.with_label_values(&[wire.label(), label]).inc_by(n);
        // Every share is for a job of the book's pool (V1) or the channel's (V2).
        let pool = match wire {
            Wire::V1 => self.book_pool,
            Wire::V2 => self.channel_pool,
        };
        let role = pool.map_or("none", PoolState::role);
        self.metrics.pool_role_shares.with_label_values(&[role, label]).inc_by(n);
        self.metrics.shares.with_label_values(&[label]).inc_by(n);
        let counter = match result {
            ShareResult::Accepted => {
                self.tally.accepted += n;
                &self.stats.accepted
            }
            ShareResult::Rejected => {
                self.tally.rejected += n;
                &self.stats.rejected
            }
            ShareResult::Stale => {
                self.tally.stale += n;
                &self.stats.stale
            }
            ShareResult::Unanswered => return,
        };
        counter.fetch_add(n, Ordering::Relaxed);
        self.metrics.pool_stale_ratio.set(self.tally.stale_ratio());
    }

    /// A share whose hash also meets its header's network target (nBits) is
    /// a block candidate: the pool builds and submits the block, the miner
    /// counts it (log line, metric, the status line's blocks).
    pub(super) fn note_block_candidate(&mut self, wire: Wire, hit: &Hit, hash: &BlockHash) {
        let meets = hit.header.target().is_ok_and(|t| t.is_met_by(hash));
        if !meets {
            return;
        }
        self.metrics.pool_block_candidates.with_label_values(&[wire.label()]).inc();
        self.stats.blocks.fetch_add(1, Ordering::Relaxed);
        tracing::info!(
            hash = %hash,
            bits = %hit.header.bits.to_hex(),
            "stratum: block candidate: the share meets the network target; the pool submits the block"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_fixed_set() {
        let results = [ShareResult::Accepted, ShareResult::Rejected, ShareResult::Stale, ShareResult::Unanswered];
        let labels: Vec<_> = results.iter().map(|r| r.label()).collect();
        assert_eq!(labels, ["accepted", "rejected", "stale", "unanswered"]);
        assert_eq!([Wire::V1.label(), Wire::V2.label()], ["v1", "v2"]);
        assert_eq!(ShareResult::refused(ShareReason::StaleJob), ShareResult::Stale);
        assert_eq!(ShareResult::refused(ShareReason::Duplicate), ShareResult::Rejected);
    }

    #[test]
    fn the_stale_ratio_leaves_unanswered_shares_out() {
        let t = Tally { accepted: 3, rejected: 0, stale: 1 };
        assert_eq!(t.stale_ratio(), 0.25);
        assert_eq!(Tally::default().stale_ratio(), 0.0);
    }
}
