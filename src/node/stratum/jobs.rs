//! The job book of one pool session: the jobs the pool has sent and the
//! difficulty, extranonce and version mask each was issued under, which hits
//! are still worth sending, and which shares were already sent.
//!
//! Rules (see docs/stratum.md):
//! - mining.set_difficulty, mining.set_extranonce and mining.set_version_mask
//!   apply from the next mining.notify; every share is checked against the
//!   difficulty its job was issued under.
//! - A notify with clean_jobs, or with a new prevhash whatever the flag says,
//!   or the first job under a new extranonce1, invalidates every older job.
//! - A share (job, extranonce2, ntime, nonce, version) is sent at most once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::chain::{BlockHash, Target, WorkTemplate};
use crate::sched::Hit;

use super::proto::{Notify, SubmitFields};

/// Jobs kept per session; pools send a new one every 30-60 s, and shares for
/// jobs older than this are stale anyway.
const MAX_JOBS: usize = 16;

/// A job as issued: the pool's fields plus what applied when it arrived.
#[derive(Debug)]
pub struct PoolJob {
    pub notify: Notify,
    /// Session epoch the job belongs to (see [`JobBook::epoch`]).
    pub epoch: u64,
    /// Unique per job in this process: a job is known by this, not by the
    /// pool's id, which a pool may reuse for another job.
    pub serial: u64,
    pub template: WorkTemplate,
    pub difficulty: f64,
    pub share_target: Target,
    pub received: Instant,
}

/// Why a hit is not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// Its job was cleared (clean_jobs, new prevhash, new extranonce) or the
    /// session it belongs to is gone.
    JobGone,
    /// Already sent once.
    Duplicate,
    /// The CPU re-check failed (the engine reported something that is not a
    /// share for this job): counted, never sent.
    BadShare,
}

/// A share ready for mining.submit.
#[derive(Debug, Clone)]
pub struct Share {
    pub fields: SubmitFields,
    pub epoch: u64,
    /// [`PoolJob::serial`] of the job it was found for.
    pub job_serial: u64,
    pub difficulty: f64,
    pub hash: BlockHash,
    pub found: Instant,
}

#[derive(Debug, Default)]
pub struct JobBook {
    /// Bumped whenever jobs stop being valid as a set: a new session that did
    /// not resume, a different pool, a new extranonce1.
    pub epoch: u64,
    pub extranonce1: Vec<u8>,
    pub extranonce2_size: usize,
    /// The mask negotiated (0: no version rolling).
    pub version_mask: u32,
    pub difficulty: f64,
    pending_extranonce: Option<(Vec<u8>, usize)>,
    next_serial: u64,
    jobs: VecDeque<Arc<PoolJob>>,
    prev_blockhash: Option<BlockHash>,
    by_seq: HashMap<u64, Arc<PoolJob>>,
    sent: HashSet<SubmitFields>,
}

impl JobBook {
    pub fn new() -> JobBook {
        JobBook { difficulty: 1.0, ..JobBook::default() }
    }

    /// A new connection: what the last one negotiated (the version mask,
    /// the difficulty, an extranonce announced for the next job) does not
    /// carry over, least of all to another pool after a failover. Jobs are
    /// kept until the subscribe answer says whether the session resumed.
    pub fn begin_connection(&mut self) {
        self.version_mask = 0;
        self.difficulty = 1.0;
        self.pending_extranonce = None;
    }

    /// A fresh session (no resume): nothing issued before is valid.
    pub fn reset(&mut self, extranonce1: Vec<u8>, extranonce2_size: usize) {
        self.epoch += 1;
        self.extranonce1 = extranonce1;
        self.extranonce2_size = extranonce2_size;
        self.pending_extranonce = None;
        self.prev_blockhash = None;
        self.clear_jobs();
    }

    fn clear_jobs(&mut self) {
        self.jobs.clear();
        self.by_seq.clear();
        self.sent.clear();
    }

    pub fn set_extranonce(&mut self, extranonce1: Vec<u8>, extranonce2_size: usize) {
        self.pending_extranonce = Some((extranonce1, extranonce2_size));
    }

    pub fn has_jobs(&self) -> bool {
        !self.jobs.is_empty()
    }

    /// Takes a mining.notify. Returns the job and whether it invalidated the
    /// older ones.
    pub fn on_notify(&mut self, notify: Notify, now: Instant) -> (Arc<PoolJob>, bool) {
        let mut clean = notify.clean_jobs || self.prev_blockhash.is_some_and(|p| p != notify.prev_blockhash);
        if let Some((en1, size)) = self.pending_extranonce.take() {
            if en1 != self.extranonce1 || size != self.extranonce2_size {
                self.extranonce1 = en1;
                self.extranonce2_size = size;
                self.epoch += 1;
                clean = true;
            }
        }
        if clean {
            self.clear_jobs();
        }
        self.prev_blockhash = Some(notify.prev_blockhash);
        let share_target = Target::from_difficulty(self.difficulty).unwrap_or(Target::DIFF1);
        let template = WorkTemplate {
            version: notify.version,
            prev_blockhash: notify.prev_blockhash,
            coinb1: notify.coinb1.clone(),
            coinb2: notify.coinb2.clone(),
            extranonce1: self.extranonce1.clone(),
            extranonce2_size: self.extranonce2_size,
            merkle_branch: notify.merkle_branch.clone(),
            bits: notify.bits,
            time: notify.ntime,
            version_mask: self.version_mask,
            fixed_merkle_root: None,
        };
        // A pool that reuses a job id replaces the old job.
        self.jobs.retain(|j| j.notify.job_id != notify.job_id);
        self.next_serial += 1;
        let job = Arc::new(PoolJob {
            notify,
            epoch: self.epoch,
            serial: self.next_serial,
            template,
            difficulty: self.difficulty,
            share_target,
            received: now,
        });
        self.jobs.push_back(job.clone());
        while self.jobs.len() > MAX_JOBS {
            self.jobs.pop_front();
        }
        let live: HashSet<*const PoolJob> = self.jobs.iter().map(Arc::as_ptr).collect();
        self.by_seq.retain(|_, j| live.contains(&Arc::as_ptr(j)));
        (job, clean)
    }

    /// The newest job.
    pub fn latest(&self) -> Option<Arc<PoolJob>> {
        self.jobs.back().cloned()
    }

    /// Records that scheduler job `seq` mines `job`.
    pub fn published(&mut self, seq: u64, job: &Arc<PoolJob>) {
        self.by_seq.insert(seq, job.clone());
    }

    /// Is this job still one the pool will take shares for?
    pub fn is_live(&self, job: &Arc<PoolJob>) -> bool {
        job.epoch == self.epoch && self.jobs.iter().any(|j| Arc::ptr_eq(j, job))
    }

    /// The pool job behind a scheduler job, if it is still live.
    pub fn job_for_seq(&self, seq: u64) -> Option<Arc<PoolJob>> {
        self.by_seq.get(&seq).filter(|j| self.is_live(j)).cloned()
    }

    /// Turns a hit into a share: finds its job, rebuilds the header from the
    /// job's own template and re-checks it against the job's share target,
    /// and refuses anything already sent.
    pub fn share_for_hit(&mut self, hit: &Hit) -> Result<Share, NotSent> {
        let job = self.job_for_seq(hit.job.seq).ok_or(NotSent::JobGone)?;
        let t = &job.template;
        // The template as published may differ from the job's in ntime (rolled)
        // and in the version it starts from; both are in the hit's header and
        // both are checked: ntime not below the job's, version bits only
        // inside the mask.
        let published = &hit.job.job.template;
        let (en2, version) = published.split_roll(hit.extranonce2);
        if (version as u32 ^ t.version as u32) & !t.version_mask != 0 {
            return Err(NotSent::BadShare);
        }
        let mut header = published.header(hit.extranonce2, hit.header.nonce).map_err(|_| NotSent::BadShare)?;
        header.time = hit.header.time;
        if header != hit.header
            || header.time < t.time
            || published.coinb1 != t.coinb1
            || published.extranonce1 != t.extranonce1
        {
            return Err(NotSent::BadShare);
        }
        let hash = header.block_hash();
        if !job.share_target.is_met_by(&hash) {
            return Err(NotSent::BadShare);
        }
        let fields = SubmitFields {
            job_id: job.notify.job_id.clone(),
            extranonce2: t.extranonce2_bytes(en2).map_err(|_| NotSent::BadShare)?,
            ntime: header.time,
            nonce: header.nonce,
            version_bits: (t.version_mask != 0).then_some(version as u32 & t.version_mask),
        };
        if !self.sent.insert(fields.clone()) {
            return Err(NotSent::Duplicate);
        }
        Ok(Share {
            fields,
            epoch: job.epoch,
            job_serial: job.serial,
            difficulty: job.difficulty,
            hash,
            found: Instant::now(),
        })
    }

    /// Is a share made earlier (e.g. queued while disconnected) still valid?
    /// Its own job must be live, not merely one with the same id.
    pub fn share_is_live(&self, share: &Share) -> bool {
        share.epoch == self.epoch && self.jobs.iter().any(|j| j.serial == share.job_serial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::CompactTarget;

    fn notify(id: &str, prev: u8, clean: bool) -> Notify {
        Notify {
            job_id: id.into(),
            prev_blockhash: BlockHash::from_byte_array([prev; 32]),
            coinb1: vec![1, 2, 3],
            coinb2: vec![4, 5],
            merkle_branch: vec![[9; 32]],
            version: 0x2000_0000,
            bits: CompactTarget::from_consensus(0x1d00ffff),
            ntime: 1000,
            clean_jobs: clean,
        }
    }

    #[test]
    fn difficulty_and_extranonce_apply_from_the_next_job() {
        let now = Instant::now();
        let mut b = JobBook::new();
        b.reset(vec![0xaa], 4);
        b.difficulty = 2.0;
        let (j1, _) = b.on_notify(notify("1", 1, true), now);
        b.difficulty = 4.0;
        assert_eq!(j1.difficulty, 2.0);
        b.set_extranonce(vec![0xbb], 4);
        assert_eq!(b.extranonce1, vec![0xaa]);
        let (j2, clean) = b.on_notify(notify("2", 1, false), now);
        assert!(clean, "a new extranonce1 invalidates older jobs");
        assert_eq!((j2.difficulty, j2.template.extranonce1.clone()), (4.0, vec![0xbb]));
        assert!(!b.is_live(&j1) && b.is_live(&j2));
    }

    /// A share of `job` (issued under a difficulty every hash meets).
    fn share_for(b: &mut JobBook, job: &Arc<PoolJob>) -> Share {
        let (sched, _hits) = crate::sched::PowScheduler::new(crate::metrics::Metrics::new());
        let seq = sched.publish(crate::sched::PowJob {
            id: job.notify.job_id.clone(),
            template: job.template.clone(),
            share_target: job.share_target,
            height: None,
            source: "stratum",
        });
        b.published(seq, job);
        let header = job.template.header(0, 7).unwrap();
        let hit = Hit {
            job: sched.current().unwrap(),
            extranonce2: 0,
            hash: header.block_hash(),
            header,
            engine: "cpu",
            device: "numa0".into(),
        };
        b.share_for_hit(&hit).unwrap()
    }

    #[test]
    fn a_reused_job_id_does_not_revive_shares_of_the_old_job() {
        let now = Instant::now();
        let mut b = JobBook::new();
        b.reset(vec![0xaa], 4);
        b.difficulty = 1e-30;
        let (j1, _) = b.on_notify(notify("7", 1, true), now);
        let share = share_for(&mut b, &j1);
        assert!(b.share_is_live(&share));
        // The pool sends another job under the same id (same prevhash, not clean).
        let (j2, clean) = b.on_notify(notify("7", 1, false), now);
        assert!(!clean && b.is_live(&j2));
        assert!(!b.share_is_live(&share), "a queued share of the old job 7 is not a share of the new job 7");
    }

    #[test]
    fn a_new_connection_does_not_inherit_mask_or_difficulty() {
        let mut b = JobBook::new();
        b.reset(vec![0xaa], 4);
        b.version_mask = 0x1fff_e000;
        b.difficulty = 1e6;
        b.set_extranonce(vec![0xbb], 8);
        b.begin_connection();
        assert_eq!((b.version_mask, b.difficulty), (0, 1.0));
        let (j, _) = b.on_notify(notify("1", 1, true), Instant::now());
        assert_eq!((j.template.version_mask, j.difficulty, j.template.extranonce2_size), (0, 1.0, 4));
    }

    #[test]
    fn prevhash_change_is_clean_whatever_the_flag() {
        let now = Instant::now();
        let mut b = JobBook::new();
        b.reset(vec![], 4);
        let (j1, _) = b.on_notify(notify("1", 1, false), now);
        let (_, clean) = b.on_notify(notify("2", 1, false), now);
        assert!(!clean && b.is_live(&j1));
        let (_, clean) = b.on_notify(notify("3", 2, false), now);
        assert!(clean && !b.is_live(&j1));
    }
}
