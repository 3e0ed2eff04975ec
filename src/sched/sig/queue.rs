//! The engine's queue: batches by deadline, taken by dispatcher threads,
//! small ones coalesced under load.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{BatchReport, Done, ExecPath, Inner};
use crate::sig::SigItem;

pub(super) struct Queued {
    deadline: Option<Instant>,
    seq: u64,
    submitted: Instant,
    items: Vec<SigItem>,
    done: Done,
}

impl Queued {
    fn key(&self) -> (bool, Option<Instant>, u64) {
        (self.deadline.is_none(), self.deadline, self.seq)
    }
}
impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    // BinaryHeap is a max-heap: the earliest deadline must compare greatest.
    fn cmp(&self, o: &Self) -> CmpOrdering {
        o.key().cmp(&self.key())
    }
}

#[derive(Default)]
pub(super) struct Queue {
    heap: BinaryHeap<Queued>,
    /// Set at shutdown: dispatchers finish what is queued, then exit.
    pub(super) closing: bool,
}

impl Inner {
    pub(super) fn enqueue(&self, items: Vec<SigItem>, deadline: Option<Instant>, done: Done) {
        let n = items.len();
        let q =
            Queued { deadline, seq: self.seq.fetch_add(1, Ordering::Relaxed), submitted: Instant::now(), items, done };
        let mut g = self.queue.lock();
        if g.closing {
            // Stopped: answered here, on the caller's thread.
            drop(g);
            let Queued { items, deadline, submitted, done, .. } = q;
            self.queued_items.fetch_add(n, Ordering::Relaxed);
            self.answer_queued(Arc::new(items), deadline, submitted, done);
            return;
        }
        self.queued_items.fetch_add(n, Ordering::Relaxed);
        self.heap_items.fetch_add(n, Ordering::Relaxed);
        g.heap.push(q);
        drop(g);
        self.ready.notify_one();
        self.publish_queued();
    }

    fn publish_queued(&self) {
        if let Some(m) = &self.metrics {
            m.sig_queued_items.set(self.queued_items.load(Ordering::Relaxed) as i64);
        }
    }

    /// Runs a queued batch; its items leave the queue count when answered.
    fn answer_queued(&self, items: Arc<Vec<SigItem>>, deadline: Option<Instant>, since: Instant, done: Done) {
        let n = items.len();
        let me = self.me.clone();
        self.start(
            items,
            deadline,
            since,
            Box::new(move |r| {
                if let Some(me) = me.upgrade() {
                    me.queued_items.fetch_sub(n, Ordering::Relaxed);
                    me.publish_queued();
                }
                done(r)
            }),
        );
    }

    /// A dispatcher: take the most urgent batch, run it (handing any GPU
    /// part over without waiting), and go on; exit once the engine is
    /// closing and the queue is empty.
    ///
    /// Under load small batches are coalesced: with at least two batches
    /// queued per dispatcher, a dispatcher takes its share of them (queued
    /// ÷ dispatchers, in deadline order) while they fit in `inline_max`
    /// items together, verifies them as one batch (one Ed25519 batch
    /// equation, one hand-off) and answers each with exactly its own
    /// verdicts. An idle engine never coalesces, so a lone small batch
    /// keeps its own latency.
    pub(super) fn dispatch(&self) {
        loop {
            let mut taken = {
                let mut g = self.queue.lock();
                let first = loop {
                    if let Some(q) = g.heap.pop() {
                        break q;
                    }
                    if g.closing {
                        return;
                    }
                    self.ready.wait(&mut g);
                };
                // A fair share of the queue: as many batches as every
                // dispatcher would get, so coalescing never leaves another
                // dispatcher without work.
                let share = (g.heap.len() + 1) / self.dispatchers.max(1);
                let mut n = first.items.len();
                let mut taken = vec![first];
                while n < self.cfg.inline_max && taken.len() < share {
                    match g.heap.peek() {
                        Some(next) if n + next.items.len() <= self.cfg.inline_max => {
                            n += next.items.len();
                            taken.extend(g.heap.pop());
                        }
                        _ => break,
                    }
                }
                let taken_items: usize = taken.iter().map(|q| q.items.len()).sum();
                self.heap_items.fetch_sub(taken_items, Ordering::Relaxed);
                taken
            };
            if taken.len() == 1 {
                let Queued { items, deadline, submitted, done, .. } = taken.pop().expect("one batch");
                self.answer_queued(Arc::new(items), deadline, submitted, done);
            } else {
                self.run_coalesced(taken);
            }
        }
    }

    /// Several small queued batches verified as one, answered one by one.
    fn run_coalesced(&self, mut taken: Vec<Queued>) {
        let lens: Vec<usize> = taken.iter().map(|q| q.items.len()).collect();
        let mut all = Vec::with_capacity(lens.iter().sum());
        for q in &mut taken {
            all.append(&mut q.items);
        }
        let deadline = taken.iter().filter_map(|q| q.deadline).min();
        let since = taken.iter().map(|q| q.submitted).min().unwrap_or_else(Instant::now);
        let parts = Mutex::new(Some(taken));
        let all = Arc::new(all);
        let me = self.me.clone();
        let items = all.clone();
        self.start_as(
            all,
            deadline,
            since,
            Box::new(move |r: BatchReport| {
                let Some(taken) = parts.lock().take() else { return };
                // A coalesced group the CPU ran inline is labelled as coalesced.
                let path = if r.path == ExecPath::Inline { ExecPath::Coalesced } else { r.path };
                let end = Instant::now();
                let mut at = 0;
                for (q, len) in taken.into_iter().zip(lens) {
                    let report = BatchReport {
                        verdicts: r.verdicts[at..at + len].to_vec(),
                        path,
                        elapsed: end.saturating_duration_since(q.submitted),
                        deadline_missed: q.deadline.is_some_and(|d| end > d),
                    };
                    if let Some(me) = me.upgrade() {
                        me.queued_items.fetch_sub(len, Ordering::Relaxed);
                        me.publish_queued();
                        if let Some(m) = &me.metrics {
                            super::report::record(m, &items[at..at + len], &report);
                        }
                    }
                    at += len;
                    (q.done)(report);
                }
            }),
            false,
        );
    }
}
