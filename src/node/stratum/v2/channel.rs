//! The job book of one Stratum V2 channel: standard (header-only mining: the
//! pool fixes the merkle root; hashrig rolls nonce, BIP320 version bits and
//! time) or extended (the pool sends the coinbase around the extranonce and
//! the merkle path; hashrig also rolls its part of the extranonce and builds
//! the merkle root, as for a V1 job).
//!
//! Rules (see docs/stratum.md, "Stratum V2"):
//! - A NewMiningJob without min_ntime is a future job: mined only once the
//!   SetNewPrevHash naming it arrives. One with min_ntime builds on the
//!   current prevhash at once.
//! - SetNewPrevHash invalidates every job but the one it names.
//! - A share must meet the stricter of the target its job was issued under
//!   and the channel's target when it is found (SetTarget applies to what is
//!   submitted next; pools differ on which they check, both hold this way).
//! - A share (job, nonce, ntime, version) is sent at most once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::chain::{BlockHash, CompactTarget, Target, TxMerkleNode, WorkTemplate};
use crate::sched::Hit;

/// Jobs kept per channel (future and active); pools send a few per block.
const MAX_JOBS: usize = 32;

/// A job ready to mine.
#[derive(Debug, Clone, PartialEq)]
pub struct StandardJob {
    pub channel_id: u32,
    pub job_id: u32,
    /// Channel epoch (see [`ChannelBook::epoch`]).
    pub epoch: u64,
    pub template: WorkTemplate,
    /// The share target when the job was issued.
    pub target: Target,
}

/// What a job fixes besides version and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobWork {
    /// NewMiningJob (standard channel): the merkle root, header byte order.
    Header { merkle_root: [u8; 32] },
    /// NewExtendedMiningJob: the coinbase (without witness) before and after
    /// the extranonce, the merkle path (internal byte order), and whether
    /// version bits may roll.
    Coinbase { prefix: Vec<u8>, suffix: Vec<u8>, merkle_path: Vec<[u8; 32]>, version_rolling: bool },
}

/// A job the pool sent, before or after its prevhash.
#[derive(Debug, Clone)]
struct Pending {
    version: u32,
    work: JobWork,
    min_ntime: Option<u32>,
    /// The extranonce prefix in force when the job came.
    extranonce_prefix: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSent {
    /// Its job was invalidated (new prevhash, new channel).
    JobGone,
    Duplicate,
    /// A real hit for the target the job was published with, but the pool
    /// has since set a harder one (SetTarget): not a share any more.
    BelowTarget,
    /// Fails the CPU re-check: never sent.
    BadShare,
}

/// A share ready for SubmitSharesStandard, or SubmitSharesExtended when it
/// carries the extranonce hashrig rolled.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Share {
    pub channel_id: u32,
    pub job_id: u32,
    pub nonce: u32,
    pub ntime: u32,
    pub version: u32,
    /// Extended channels: the rolled part of the extranonce (after the
    /// pool's prefix), `extranonce_size` bytes.
    pub extranonce: Option<Vec<u8>>,
    pub epoch: u64,
    pub hash: BlockHash,
}

#[derive(Debug, Default)]
pub struct ChannelBook {
    /// Bumped on every new channel: nothing of an older one is valid.
    pub epoch: u64,
    pub channel_id: u32,
    /// The channel's share target now (after the floor).
    pub target: Target,
    /// Version bits hashrig may roll (0: the pool fixed the version).
    pub version_mask: u32,
    /// Extended channels: the pool's part of the extranonce (for jobs from
    /// now on) and the size of hashrig's part.
    pub extranonce_prefix: Vec<u8>,
    pub extranonce_size: usize,
    /// Extended jobs may come for this group channel too.
    pub group_channel_id: Option<u32>,
    pending: HashMap<u32, Pending>,
    /// The current chain tip: prevhash, min_ntime, nbits.
    tip: Option<([u8; 32], u32, u32)>,
    active: HashMap<u32, Arc<StandardJob>>,
    by_seq: HashMap<u64, Arc<StandardJob>>,
    sent: HashSet<SentKey>,
}

/// What makes a share unique: job, nonce, ntime, version, extranonce.
type SentKey = (u32, u32, u32, u32, Option<Vec<u8>>);

impl ChannelBook {
    /// A channel was opened: forget everything of the last one.
    pub fn open(&mut self, channel_id: u32, target: Target, version_mask: u32) {
        self.epoch += 1;
        self.channel_id = channel_id;
        self.target = target;
        self.version_mask = version_mask;
        self.extranonce_prefix.clear();
        self.extranonce_size = 0;
        self.group_channel_id = None;
        self.pending.clear();
        self.tip = None;
        self.active.clear();
        self.by_seq.clear();
        self.sent.clear();
    }

    /// An extended channel was opened: [`open`](Self::open), then the
    /// extranonce layout.
    pub fn open_extended(
        &mut self,
        channel_id: u32,
        target: Target,
        version_mask: u32,
        extranonce_prefix: Vec<u8>,
        extranonce_size: usize,
        group_channel_id: u32,
    ) {
        self.open(channel_id, target, version_mask);
        self.extranonce_prefix = extranonce_prefix;
        self.extranonce_size = extranonce_size;
        self.group_channel_id = Some(group_channel_id).filter(|&g| g != channel_id);
    }

    /// Whether a job or prevhash for `channel_id` is ours.
    pub fn addresses(&self, channel_id: u32) -> bool {
        channel_id == self.channel_id || Some(channel_id) == self.group_channel_id
    }

    /// NewMiningJob / NewExtendedMiningJob: the job to mine now, if it is not
    /// a future one.
    pub fn on_new_job(
        &mut self,
        job_id: u32,
        min_ntime: Option<u32>,
        version: u32,
        work: JobWork,
    ) -> Option<Arc<StandardJob>> {
        if self.pending.len() >= MAX_JOBS {
            // Oldest ids first: pools count job ids up.
            if let Some(&old) = self.pending.keys().min() {
                self.pending.remove(&old);
            }
        }
        let extranonce_prefix = self.extranonce_prefix.clone();
        self.pending.insert(job_id, Pending { version, work, min_ntime, extranonce_prefix });
        match (min_ntime, self.tip) {
            (Some(t), Some((prev, _, nbits))) => Some(self.activate(job_id, prev, t, nbits)),
            _ => None,
        }
    }

    /// SetNewPrevHash: the named job is the one to mine; every other is gone.
    /// None when the pool named a job it never sent.
    pub fn on_prev_hash(
        &mut self,
        job_id: u32,
        prev_hash: [u8; 32],
        min_ntime: u32,
        nbits: u32,
    ) -> Option<Arc<StandardJob>> {
        self.tip = Some((prev_hash, min_ntime, nbits));
        self.active.clear();
        self.by_seq.clear();
        self.sent.clear();
        let named = self.pending.remove(&job_id);
        self.pending.clear();
        let p = named?;
        self.pending.insert(job_id, p);
        Some(self.activate(job_id, prev_hash, min_ntime, nbits))
    }

    fn activate(&mut self, job_id: u32, prev: [u8; 32], min_ntime: u32, nbits: u32) -> Arc<StandardJob> {
        let p = &self.pending[&job_id];
        let mut template = WorkTemplate {
            version: p.version as i32,
            prev_blockhash: BlockHash::from_byte_array(prev),
            coinb1: Vec::new(),
            coinb2: Vec::new(),
            extranonce1: Vec::new(),
            extranonce2_size: 0,
            merkle_branch: Vec::new(),
            bits: CompactTarget::from_consensus(nbits),
            time: p.min_ntime.unwrap_or(min_ntime).max(min_ntime),
            version_mask: self.version_mask,
            fixed_merkle_root: None,
        };
        match &p.work {
            JobWork::Header { merkle_root } => {
                template.fixed_merkle_root = Some(TxMerkleNode::from_byte_array(*merkle_root))
            }
            JobWork::Coinbase { prefix, suffix, merkle_path, version_rolling } => {
                template.coinb1 = prefix.clone();
                template.extranonce1 = p.extranonce_prefix.clone();
                template.extranonce2_size = self.extranonce_size;
                template.coinb2 = suffix.clone();
                template.merkle_branch = merkle_path.clone();
                if !version_rolling {
                    template.version_mask = 0;
                }
            }
        }
        let job = Arc::new(StandardJob {
            channel_id: self.channel_id,
            job_id,
            epoch: self.epoch,
            template,
            target: self.target,
        });
        self.active.insert(job_id, job.clone());
        job
    }

    /// The scheduler published `job` as sequence `seq`.
    pub fn published(&mut self, seq: u64, job: &Arc<StandardJob>) {
        self.by_seq.insert(seq, job.clone());
    }

    pub fn is_live(&self, job: &StandardJob) -> bool {
        job.epoch == self.epoch && self.active.get(&job.job_id).is_some_and(|j| j.template == job.template)
    }

    /// Rebuilds the hit's header from the job as published and re-checks it
    /// on the CPU: same header, version bits only inside the mask, ntime not
    /// below the job's, hash within the target.
    pub fn share_for_hit(&mut self, hit: &Hit) -> Result<Share, NotSent> {
        let job = self.by_seq.get(&hit.job.seq).cloned().ok_or(NotSent::JobGone)?;
        if !self.is_live(&job) {
            return Err(NotSent::JobGone);
        }
        let t = &job.template;
        let published = &hit.job.job.template;
        if published.fixed_merkle_root != t.fixed_merkle_root
            || published.prev_blockhash != t.prev_blockhash
            || published.coinb1 != t.coinb1
            || published.extranonce1 != t.extranonce1
            || published.merkle_branch != t.merkle_branch
        {
            return Err(NotSent::BadShare);
        }
        let mut header = published.header(hit.extranonce2, hit.header.nonce).map_err(|_| NotSent::BadShare)?;
        header.time = hit.header.time;
        if header != hit.header
            || header.time < t.time
            || (header.version as u32 ^ t.version as u32) & !t.version_mask != 0
        {
            return Err(NotSent::BadShare);
        }
        let hash = header.block_hash();
        if !hit.job.job.share_target.is_met_by(&hash) {
            return Err(NotSent::BadShare);
        }
        if !job.target.min(self.target).is_met_by(&hash) {
            return Err(NotSent::BelowTarget);
        }
        let extranonce = if t.fixed_merkle_root.is_some() {
            None
        } else {
            let (en2, _) = published.split_roll(hit.extranonce2);
            Some(t.extranonce2_bytes(en2).map_err(|_| NotSent::BadShare)?)
        };
        let share = Share {
            channel_id: job.channel_id,
            job_id: job.job_id,
            nonce: header.nonce,
            ntime: header.time,
            version: header.version as u32,
            extranonce,
            epoch: job.epoch,
            hash,
        };
        if !self.sent.insert((share.job_id, share.nonce, share.ntime, share.version, share.extranonce.clone())) {
            return Err(NotSent::Duplicate);
        }
        Ok(share)
    }

    /// A share found before a reconnect is worth sending only on the same
    /// channel with its job still live (never, across a new channel).
    pub fn share_is_live(&self, share: &Share) -> bool {
        share.epoch == self.epoch && self.active.contains_key(&share.job_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Header;
    use crate::metrics::Metrics;
    use crate::sched::{PowJob, PowScheduler};

    /// About one hash in 512 meets it.
    fn easy() -> Target {
        Target::from_u256(Target::REGTEST_LIMIT.to_u256().shr_bits(8))
    }

    fn hdr(b: u8) -> JobWork {
        JobWork::Header { merkle_root: [b; 32] }
    }

    fn book() -> ChannelBook {
        let mut b = ChannelBook::default();
        b.open(7, easy(), 0x1fff_e000);
        b
    }

    /// Publishes `job` and searches nonces on the CPU for a hit, as an engine would.
    fn hit_for(b: &mut ChannelBook, job: &Arc<StandardJob>, start: u32) -> Hit {
        let (sched, _rx) = PowScheduler::new(Metrics::new());
        let seq = sched.publish(PowJob {
            id: job.job_id.to_string(),
            template: job.template.clone(),
            share_target: job.target,
            height: None,
            source: "test",
        });
        b.published(seq, job);
        let active = sched.current().expect("published");
        for nonce in start.. {
            let header = job.template.header(0, nonce).unwrap();
            let hash = header.block_hash();
            if job.target.is_met_by(&hash) {
                return Hit { job: active, extranonce2: 0, header, hash, engine: "cpu", device: "test".into() };
            }
        }
        unreachable!()
    }

    #[test]
    fn future_jobs_wait_for_their_prevhash_and_others_are_cleared() {
        let mut b = book();
        assert!(b.on_new_job(1, None, 0x2000_0000, hdr(1)).is_none());
        assert!(b.on_new_job(2, None, 0x2000_0000, hdr(2)).is_none());
        let job = b.on_prev_hash(2, [9; 32], 1000, 0x207fffff).expect("job 2 is named");
        assert_eq!(job.template.fixed_merkle_root, Some(TxMerkleNode::from_byte_array([2; 32])));
        assert_eq!(job.template.prev_blockhash, BlockHash::from_byte_array([9; 32]));
        assert_eq!(job.template.time, 1000);
        // A job with min_ntime builds on the current tip at once.
        let now = b.on_new_job(3, Some(1005), 0x2000_0000, hdr(3)).expect("not a future job");
        assert_eq!(now.template.time, 1005);
        // A prevhash naming a job never sent: nothing to mine, all cleared.
        assert!(b.on_prev_hash(99, [8; 32], 2000, 0x207fffff).is_none());
        assert!(!b.is_live(&job) && !b.is_live(&now));
    }

    #[test]
    fn a_hit_is_rechecked_and_sent_once() {
        let mut b = book();
        b.on_new_job(1, None, 0x2000_0000, hdr(1));
        let job = b.on_prev_hash(1, [9; 32], 1000, 0x207fffff).unwrap();
        let hit = hit_for(&mut b, &job, 0);
        let share = b.share_for_hit(&hit).expect("a real share");
        assert_eq!((share.channel_id, share.job_id, share.nonce, share.ntime), (7, 1, hit.header.nonce, 1000));
        assert_eq!(b.share_for_hit(&hit), Err(NotSent::Duplicate));
        // An engine that reports a header that does not meet the target.
        let mut bad = hit_for(&mut b, &job, hit.header.nonce + 1);
        let miss = (0..).find(|&n| !job.target.is_met_by(&job.template.header(0, n).unwrap().block_hash())).unwrap();
        bad.header.nonce = miss;
        assert_eq!(b.share_for_hit(&bad), Err(NotSent::BadShare));
        // ntime below the job's min_ntime.
        let mut early = hit_for(&mut b, &job, hit.header.nonce + 1);
        early.header.time -= 1;
        assert_eq!(b.share_for_hit(&early), Err(NotSent::BadShare));
        // Version bits outside the mask.
        let mut off_mask = hit_for(&mut b, &job, hit.header.nonce + 1);
        off_mask.header.version ^= 1;
        assert_eq!(b.share_for_hit(&off_mask), Err(NotSent::BadShare));
    }

    #[test]
    fn extended_jobs_roll_the_extranonce_after_the_pools_prefix() {
        let mut b = ChannelBook::default();
        b.open_extended(3, easy(), 0x1fff_e000, vec![0xaa, 0xbb], 4, 9);
        assert!(b.addresses(3) && b.addresses(9) && !b.addresses(4));
        let work = JobWork::Coinbase {
            prefix: vec![1, 2, 3],
            suffix: vec![4, 5],
            merkle_path: vec![[6; 32]],
            version_rolling: false,
        };
        b.on_new_job(5, None, 0x2000_0000, work);
        let job = b.on_prev_hash(5, [9; 32], 1000, 0x207fffff).unwrap();
        let t = &job.template;
        assert_eq!(
            (t.coinb1.as_slice(), t.extranonce1.as_slice(), t.extranonce2_size),
            (&[1, 2, 3][..], &[0xaa, 0xbb][..], 4)
        );
        assert_eq!(t.version_mask, 0, "the job does not allow version rolling");
        assert_eq!(t.fixed_merkle_root, None);
        // A new prefix applies to the next jobs only.
        b.extranonce_prefix = vec![0xcc];
        assert_eq!(b.active[&5].template.extranonce1, vec![0xaa, 0xbb]);
        let hit = hit_for(&mut b, &job, 0);
        let share = b.share_for_hit(&hit).unwrap();
        assert_eq!(share.extranonce, Some(vec![0, 0, 0, 0]), "the first extranonce counter, 4 bytes");
        assert_eq!(b.share_for_hit(&hit), Err(NotSent::Duplicate));
    }

    #[test]
    fn a_stricter_target_applies_to_the_next_shares_and_a_new_prevhash_ends_the_job() {
        let mut b = book();
        b.on_new_job(1, None, 0x2000_0000, hdr(1));
        let job = b.on_prev_hash(1, [9; 32], 1000, 0x207fffff).unwrap();
        let hit = hit_for(&mut b, &job, 0);
        b.target = Target::from_u256(crate::chain::uint::U256::from_u64(1));
        assert_eq!(b.share_for_hit(&hit), Err(NotSent::BelowTarget));
        b.target = easy();
        let hit2 = hit_for(&mut b, &job, hit.header.nonce + 1);
        b.on_new_job(2, None, 0x2000_0000, hdr(2));
        b.on_prev_hash(2, [8; 32], 1100, 0x207fffff);
        assert_eq!(b.share_for_hit(&hit2), Err(NotSent::JobGone));
        let _: Header = hit2.header;
    }
}
