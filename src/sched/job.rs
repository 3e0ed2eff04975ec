//! The PoW half of the scheduler: one current job, a sequence number that
//! every engine checks between chunks, and a nonce cursor engines pull from.
//!
//! Engines pull; nothing is pushed to them. A chunk is a range of nonces of
//! one header (one extranonce2); the cursor walks (extranonce2, nonce) so that
//! when a header's 2^32 nonces run out the next chunk simply comes from the
//! next extranonce2. No nonce is handed out twice and none is skipped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex, RwLock};

use crate::chain::{BlockHash, Header, Target, WorkTemplate};
use crate::metrics::Metrics;
use crate::pow::NonceRange;

/// Work as a node adapter hands it over.
#[derive(Clone, Debug)]
pub struct PowJob {
    /// The adapter's own id for the job (Stratum job id, template id).
    pub id: String,
    pub template: WorkTemplate,
    /// What counts as a result worth reporting (the share target; for solo
    /// mining, the block target).
    pub share_target: Target,
    /// Height of the block this job builds, when known.
    pub height: Option<u32>,
    /// Metrics label of the adapter ("demo", "stratum", "gbt").
    pub source: &'static str,
}

/// A job once published: its sequence number and the nonce cursor.
#[derive(Debug)]
pub struct ActiveJob {
    pub seq: u64,
    pub job: PowJob,
    pub published: Instant,
    /// Next unassigned (extranonce2 << 32 | nonce).
    cursor: AtomicU64,
    /// Roll indexes available: extranonce2 values × rolled versions (see
    /// `WorkTemplate::split_roll`), capped at 2^32: 2^64 nonces per job.
    en2_limit: u64,
}

impl ActiveJob {
    /// Nonces handed out so far.
    pub fn assigned(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }
}

/// A range of nonces of one header, handed to one engine.
#[derive(Clone, Debug)]
pub struct Chunk {
    pub job: Arc<ActiveJob>,
    pub extranonce2: u64,
    pub range: NonceRange,
}

/// A result an engine found and re-checked on the CPU.
#[derive(Clone, Debug)]
pub struct Hit {
    pub job: Arc<ActiveJob>,
    pub extranonce2: u64,
    pub header: Header,
    pub hash: BlockHash,
    pub engine: &'static str,
    pub device: String,
}

pub struct PowScheduler {
    seq: AtomicU64,
    current: RwLock<Option<Arc<ActiveJob>>>,
    wake: (Mutex<u64>, Condvar),
    hits: Sender<Hit>,
    metrics: Arc<Metrics>,
    /// Chunks an engine gave back unscanned (a lost GPU); served first.
    returned: Mutex<Vec<Chunk>>,
    has_returned: AtomicBool,
}

impl PowScheduler {
    /// A scheduler and the receiving end of its hits (for the node adapter).
    pub fn new(metrics: Arc<Metrics>) -> (Arc<PowScheduler>, Receiver<Hit>) {
        // Hits are rare (shares, not hashes), but a share target a pool set
        // absurdly low makes every nonce one: the channel is bounded, and a
        // full channel drops (and counts) the hit rather than stall a worker.
        let (tx, rx) = crossbeam_channel::bounded(HIT_QUEUE);
        let s = PowScheduler {
            seq: AtomicU64::new(0),
            current: RwLock::new(None),
            wake: (Mutex::new(0), Condvar::new()),
            hits: tx,
            metrics,
            returned: Mutex::new(Vec::new()),
            has_returned: AtomicBool::new(false),
        };
        (Arc::new(s), rx)
    }

    /// Makes `job` the current job. Engines see it within one chunk; the
    /// returned sequence number identifies it in hits.
    pub fn publish(&self, job: PowJob) -> u64 {
        self.metrics.jobs.with_label_values(&[job.source]).inc();
        self.metrics.share_difficulty.set(job.share_target.difficulty());
        if let Some(h) = job.height {
            self.metrics.chain_height.set(h as i64);
        }
        let en2_limit = job.template.roll_space().min(1 << 32);
        let mut cur = self.current.write();
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        *cur = Some(Arc::new(ActiveJob { seq, job, published: Instant::now(), cursor: AtomicU64::new(0), en2_limit }));
        self.seq.store(seq, Ordering::Release);
        drop(cur);
        self.notify(seq);
        seq
    }

    /// No valid work (e.g. the pool is gone): engines idle until the next job.
    pub fn withdraw(&self) {
        let mut cur = self.current.write();
        *cur = None;
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        self.seq.store(seq, Ordering::Release);
        drop(cur);
        self.notify(seq);
    }

    fn notify(&self, seq: u64) {
        let (m, cv) = &self.wake;
        *m.lock() = seq;
        cv.notify_all();
    }

    /// The sequence number of the current job (0 before the first).
    pub fn current_seq(&self) -> u64 {
        self.seq.load(Ordering::Acquire)
    }

    pub fn current(&self) -> Option<Arc<ActiveJob>> {
        self.current.read().clone()
    }

    /// Is `seq` still the current job? Engines call this between chunks.
    pub fn is_current(&self, seq: u64) -> bool {
        self.current_seq() == seq
    }

    /// Blocks until the sequence moves past `seen` or `timeout` passes.
    pub fn wait_for_change(&self, seen: u64, timeout: Duration) {
        let (m, cv) = &self.wake;
        let mut g = m.lock();
        if *g == seen {
            cv.wait_for(&mut g, timeout);
        }
    }

    /// Takes up to `want` nonces of `job`, never crossing a header's 2^32
    /// boundary. `None` when the job's whole space is handed out.
    pub fn next_chunk(&self, job: &Arc<ActiveJob>, want: u64) -> Option<Chunk> {
        let want = want.max(1);
        if self.has_returned.load(Ordering::Acquire) {
            if let Some(c) = self.take_returned(job, want) {
                return Some(c);
            }
        }
        let mut cur = job.cursor.load(Ordering::Relaxed);
        loop {
            let en2 = cur >> 32;
            if en2 >= job.en2_limit {
                return None;
            }
            let nonce = cur & 0xffff_ffff;
            let take = want.min((1u64 << 32) - nonce);
            match job.cursor.compare_exchange_weak(cur, cur + take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => {
                    return Some(Chunk {
                        job: job.clone(),
                        extranonce2: en2,
                        range: NonceRange { start: nonce as u32, end: nonce + take },
                    })
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Gives back a chunk an engine could not scan (its device was lost): the
    /// next `next_chunk` calls for the same job hand it out again, split to
    /// their size. Chunks of an older job are dropped.
    pub fn return_chunk(&self, chunk: Chunk) {
        if chunk.range.is_empty() || !self.is_current(chunk.job.seq) {
            return;
        }
        self.returned.lock().push(chunk);
        self.has_returned.store(true, Ordering::Release);
    }

    fn take_returned(&self, job: &Arc<ActiveJob>, want: u64) -> Option<Chunk> {
        let mut r = self.returned.lock();
        r.retain(|c| c.job.seq == job.seq);
        let out = r.pop().map(|mut c| {
            if c.range.len() > want {
                let rest = Chunk {
                    job: c.job.clone(),
                    extranonce2: c.extranonce2,
                    range: NonceRange { start: (c.range.start as u64 + want) as u32, end: c.range.end },
                };
                c.range.end = c.range.start as u64 + want;
                r.push(rest);
            }
            c
        });
        self.has_returned.store(!r.is_empty(), Ordering::Release);
        out
    }

    /// Hands a re-checked hit to the node adapter; with [`HIT_QUEUE`] hits
    /// waiting already, drops it and counts it
    /// (`hashrig_hits_dropped_total{reason="queue_full"}`).
    pub fn report(&self, hit: Hit) {
        match self.hits.try_send(hit) {
            Ok(()) => {}
            Err(crossbeam_channel::TrySendError::Full(_)) => self.dropped_hits("queue_full", 1),
            // The adapter only goes away at shutdown; a hit then has nowhere to go.
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => {}
        }
    }

    /// Counts hits an engine found and did not report.
    pub fn dropped_hits(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.metrics.hits_dropped.with_label_values(&[reason]).inc_by(n);
        }
    }
}

/// Hits waiting for the node adapter before more are dropped.
pub const HIT_QUEUE: usize = 4096;
/// Hits an engine reports from one chunk (or GPU dispatch); more are dropped
/// and counted (`reason="chunk_cap"`). Chunks are sized to expect at most a
/// quarter of this ([`hit_bounded_chunk`]).
pub const MAX_HITS_PER_CHUNK: usize = 256;

/// Largest chunk in which a share target of `difficulty` is expected to give
/// at most `MAX_HITS_PER_CHUNK / 4` hits (one hit per 2^32 × difficulty
/// nonces), never below `min`: keeps the hit list of a chunk small even when
/// every nonce is a hit.
pub fn hit_bounded_chunk(difficulty: f64, min: u64) -> u64 {
    let n = (MAX_HITS_PER_CHUNK / 4) as f64 * 4_294_967_296.0 * difficulty;
    if n.is_finite() && n < u64::MAX as f64 {
        (n as u64).max(min)
    } else {
        u64::MAX
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{BlockHash, CompactTarget};

    fn job(en2_size: usize) -> PowJob {
        PowJob {
            id: "t".into(),
            template: WorkTemplate {
                version: 1,
                prev_blockhash: BlockHash::ZERO,
                coinb1: vec![],
                coinb2: vec![],
                extranonce1: vec![],
                extranonce2_size: en2_size,
                merkle_branch: vec![],
                bits: CompactTarget::from_consensus(0x207fffff),
                time: 0,
                version_mask: 0,
                fixed_merkle_root: None,
            },
            share_target: Target::MAX,
            height: None,
            source: "demo",
        }
    }

    #[test]
    fn chunks_cover_the_space_without_gaps_or_overlap() {
        let (s, _rx) = PowScheduler::new(Metrics::new());
        s.publish(job(1));
        let j = s.current().unwrap();
        let mut expect: u64 = 0;
        let mut n = 0;
        // 3 does not divide 2^32: chunks must stop at the boundary and resume at en2+1.
        let want = (1u64 << 32) / 3 + 7;
        while let Some(c) = s.next_chunk(&j, want) {
            assert_eq!((c.extranonce2 << 32) | c.range.start as u64, expect);
            assert!(c.range.end <= 1 << 32);
            expect = (c.extranonce2 << 32) + c.range.end;
            n += 1;
        }
        assert_eq!(expect, 256u64 << 32, "one-byte extranonce2 gives 256 headers");
        assert_eq!(n, 256 * 3, "two full chunks and the remainder per header");
    }

    #[test]
    fn returned_chunks_are_served_first_and_split() {
        let (s, _rx) = PowScheduler::new(Metrics::new());
        s.publish(job(1));
        let j = s.current().unwrap();
        let a = s.next_chunk(&j, 1000).unwrap();
        let b = s.next_chunk(&j, 1000).unwrap();
        s.return_chunk(a.clone());
        let c1 = s.next_chunk(&j, 600).unwrap();
        let c2 = s.next_chunk(&j, 600).unwrap();
        assert_eq!((c1.range.start, c1.range.end), (0, 600));
        assert_eq!((c2.range.start, c2.range.end), (600, 1000));
        let c3 = s.next_chunk(&j, 10).unwrap();
        assert_eq!(c3.range.start as u64, b.range.end, "then the cursor again");
        // A chunk of an old job is dropped.
        s.publish(job(1));
        s.return_chunk(b);
        let j2 = s.current().unwrap();
        assert_eq!(s.next_chunk(&j2, 10).unwrap().range.start, 0);
    }

    #[test]
    fn chunks_are_bounded_by_the_expected_hits() {
        assert_eq!(hit_bounded_chunk(1e-12, 1024), 1024);
        assert_eq!(hit_bounded_chunk(1.0, 1024), 64 << 32);
        assert_eq!(hit_bounded_chunk(f64::INFINITY, 1024), u64::MAX);
        assert_eq!(hit_bounded_chunk(1e30, 1024), u64::MAX);
    }

    #[test]
    fn a_full_hit_queue_drops_and_counts() {
        let metrics = Metrics::new();
        let (s, rx) = PowScheduler::new(metrics.clone());
        let seq = s.publish(job(4));
        let job = s.current().unwrap();
        assert_eq!(job.seq, seq);
        let hit = Hit {
            job: job.clone(),
            extranonce2: 0,
            header: job.job.template.header(0, 0).unwrap(),
            hash: BlockHash::from_byte_array([0; 32]),
            engine: "cpu",
            device: "numa0".into(),
        };
        for _ in 0..HIT_QUEUE + 10 {
            s.report(hit.clone());
        }
        assert_eq!(rx.len(), HIT_QUEUE);
        assert_eq!(metrics.hits_dropped.with_label_values(&["queue_full"]).get(), 10);
    }

    #[test]
    fn publish_bumps_sequence_and_withdraw_clears() {
        let (s, _rx) = PowScheduler::new(Metrics::new());
        assert_eq!(s.current_seq(), 0);
        let a = s.publish(job(4));
        let b = s.publish(job(4));
        assert!(b > a && s.is_current(b) && !s.is_current(a));
        s.withdraw();
        assert!(s.current().is_none() && !s.is_current(b));
    }
}
