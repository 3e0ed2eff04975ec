//! The pinning plan: which worker thread runs on which NUMA node, core and PU.
//!
//! Pure data computed from a [`Topology`]; nothing here touches the machine.
//!
//! Rules ([`PinPlan::build`]):
//! * one [`WorkerGroup`] per NUMA node that gets at least one worker, in
//!   ascending node order;
//! * by default one worker per physical core, on the core's first PU;
//! * with `smt`, one worker per PU: within a node, the first PUs of all cores
//!   come first, then the second siblings of all cores, and so on;
//! * with a `threads` cap below what is available, workers are dealt out to
//!   the NUMA nodes round-robin (4 threads on 4 nodes → one per node), each
//!   node taking its slots in the order above;
//! * a cap above what is available is clamped: the plan then has
//!   `clamped == true` and `requested_threads == Some(cap)`, and
//!   [`PinPlan::warnings`] gives the message for the caller to log;
//! * worker ids run `0..worker_count()` in plan order (group by group).

use std::fmt;

use super::{NumaNode, TopoError, Topology};

/// What to plan for.
#[derive(Clone, Debug, Default)]
pub struct PlanOptions {
    /// Total worker thread cap; `None` = one per physical core (or one per
    /// PU with `smt`). `Some(0)` is an error.
    pub threads: Option<usize>,
    /// Also use SMT siblings (every PU of every core).
    pub smt: bool,
    /// Restrict to these NUMA nodes (OS indices); `None` = all nodes.
    pub nodes: Option<Vec<u32>>,
}

/// Worker placement over the machine, grouped by NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PinPlan {
    /// One group per NUMA node that has workers, ascending by node.
    pub groups: Vec<WorkerGroup>,
    /// `true` when `PlanOptions::threads` asked for more workers than the
    /// selected nodes have slots for, and the plan was cut down to them.
    pub clamped: bool,
    /// The `PlanOptions::threads` the plan was built with.
    pub requested_threads: Option<usize>,
}

/// The workers placed on one NUMA node.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerGroup {
    /// OS index of the NUMA node.
    pub numa_node: u32,
    /// The node's workers, ascending by id.
    pub workers: Vec<WorkerSlot>,
}

/// Where one worker thread runs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct WorkerSlot {
    /// Worker id, `0..worker_count()` across the plan.
    pub id: usize,
    /// OS index of the NUMA node.
    pub numa_node: u32,
    /// Logical index of the physical core.
    pub core: u32,
    /// OS index of the PU (hardware thread) to bind to.
    pub pu: u32,
}

/// A candidate (core, PU) pair of a node, in the order the node hands them out.
fn node_slots(node: &NumaNode, smt: bool) -> Vec<(u32, u32)> {
    if !smt {
        return node.cores.iter().filter_map(|c| c.pus.first().map(|&pu| (c.logical_index, pu))).collect();
    }
    let width = node.cores.iter().map(|c| c.pus.len()).max().unwrap_or(0);
    (0..width)
        .flat_map(|rank| node.cores.iter().filter_map(move |c| c.pus.get(rank).map(|&pu| (c.logical_index, pu))))
        .collect()
}

impl PinPlan {
    /// Build the plan for `topo` under `opts` (rules in the [module docs](self)).
    ///
    /// # Errors
    /// * [`TopoError::ZeroThreads`] for `threads == Some(0)`;
    /// * [`TopoError::UnknownNodes`] when `nodes` names a node `topo` lacks;
    /// * [`TopoError::EmptyPlan`] when the selected nodes have no cores
    ///   (including `nodes == Some(vec![])`).
    pub fn build(topo: &Topology, opts: &PlanOptions) -> Result<PinPlan, TopoError> {
        if opts.threads == Some(0) {
            return Err(TopoError::ZeroThreads);
        }
        let selected: Vec<&NumaNode> = match &opts.nodes {
            None => topo.numa_nodes.iter().collect(),
            Some(wanted) => {
                let mut unknown: Vec<u32> = wanted.iter().copied().filter(|&w| topo.node(w).is_none()).collect();
                if !unknown.is_empty() {
                    unknown.sort_unstable();
                    unknown.dedup();
                    return Err(TopoError::UnknownNodes {
                        unknown,
                        available: topo.numa_nodes.iter().map(|n| n.os_index).collect(),
                    });
                }
                topo.numa_nodes.iter().filter(|n| wanted.contains(&n.os_index)).collect()
            }
        };

        let per_node: Vec<Vec<(u32, u32)>> = selected.iter().map(|n| node_slots(n, opts.smt)).collect();
        let available: usize = per_node.iter().map(Vec::len).sum();
        if available == 0 {
            return Err(TopoError::EmptyPlan { nodes: selected.iter().map(|n| n.os_index).collect() });
        }
        let want = opts.threads.unwrap_or(available);
        let clamped = want > available;
        let total = want.min(available);

        // Deal `total` workers round-robin over the nodes.
        let mut take = vec![0usize; per_node.len()];
        let mut dealt = 0;
        'deal: for round in 0.. {
            for (i, slots) in per_node.iter().enumerate() {
                if dealt == total {
                    break 'deal;
                }
                if round < slots.len() {
                    take[i] += 1;
                    dealt += 1;
                }
            }
        }

        let mut next_id = 0;
        let mut groups = Vec::new();
        for ((node, slots), count) in selected.iter().zip(&per_node).zip(take) {
            if count == 0 {
                continue;
            }
            let workers = slots[..count]
                .iter()
                .map(|&(core, pu)| {
                    let slot = WorkerSlot { id: next_id, numa_node: node.os_index, core, pu };
                    next_id += 1;
                    slot
                })
                .collect();
            groups.push(WorkerGroup { numa_node: node.os_index, workers });
        }
        Ok(PinPlan { groups, clamped, requested_threads: opts.threads })
    }

    /// Total number of workers.
    pub fn worker_count(&self) -> usize {
        self.groups.iter().map(|g| g.workers.len()).sum()
    }

    /// All workers in id order.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerSlot> + '_ {
        self.groups.iter().flat_map(|g| g.workers.iter())
    }

    /// Messages the caller should log as warnings (currently: the thread
    /// count was clamped). Empty when there is nothing to report.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.clamped {
            out.push(format!(
                "requested {} worker threads but only {} CPU slots are available; using {}",
                self.requested_threads.map_or_else(|| "?".to_owned(), |t| t.to_string()),
                self.worker_count(),
                self.worker_count()
            ));
        }
        out
    }
}

/// A table, one block per NUMA node:
///
/// ```text
/// pin plan: 3 workers on 2 NUMA nodes
/// NUMA node 0: 2 workers
///   worker  core    PU
///        0     0     0
///        1     1     2
/// NUMA node 1: 1 worker
///   worker  core    PU
///        2     8    16
/// ```
impl fmt::Display for PinPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.worker_count();
        write!(f, "pin plan: {} on {}", super::plural(n, "worker"), super::plural(self.groups.len(), "NUMA node"))?;
        if self.clamped {
            if let Some(req) = self.requested_threads {
                write!(f, " (clamped from {req} requested)")?;
            }
        }
        for group in &self.groups {
            write!(
                f,
                "\nNUMA node {}: {}\n  worker  core    PU",
                group.numa_node,
                super::plural(group.workers.len(), "worker")
            )?;
            for w in &group.workers {
                write!(f, "\n  {:>6} {:>5} {:>5}", w.id, w.core, w.pu)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Core, NumaNode, Topology, TopologySource};
    use super::*;

    /// Two nodes with uneven core counts and a 2-way SMT core mix.
    fn uneven() -> Topology {
        let core = |l: u32, pus: &[u32]| Core { logical_index: l, pus: pus.to_vec() };
        Topology {
            source: TopologySource::Fallback,
            numa_nodes: vec![
                NumaNode { os_index: 0, package: 0, cores: vec![core(0, &[0, 4]), core(1, &[1])] },
                NumaNode { os_index: 3, package: 1, cores: vec![core(2, &[2, 5]), core(3, &[3, 6]), core(4, &[7])] },
                NumaNode { os_index: 5, package: 1, cores: vec![] },
            ],
            pci: Vec::new(),
        }
    }

    #[test]
    fn uneven_round_robin_and_smt_order() {
        let t = uneven();
        let p = PinPlan::build(&t, &PlanOptions { threads: Some(4), ..Default::default() }).unwrap();
        let per: Vec<usize> = p.groups.iter().map(|g| g.workers.len()).collect();
        assert_eq!(per, [2, 2]);
        let p = PinPlan::build(&t, &PlanOptions { smt: true, ..Default::default() }).unwrap();
        let pus: Vec<u32> = p.workers().map(|w| w.pu).collect();
        assert_eq!(pus, [0, 1, 4, 2, 3, 7, 5, 6]);
        assert!(p.workers().enumerate().all(|(i, w)| w.id == i));
        let p = PinPlan::build(&t, &PlanOptions { threads: Some(100), ..Default::default() }).unwrap();
        assert!(p.clamped);
        assert_eq!(p.worker_count(), 5);
        assert_eq!(p.warnings().len(), 1);
    }

    #[test]
    fn memoryless_node_selected_alone_is_empty() {
        let t = uneven();
        let err = PinPlan::build(&t, &PlanOptions { nodes: Some(vec![5]), ..Default::default() }).unwrap_err();
        assert!(matches!(err, TopoError::EmptyPlan { .. }), "{err}");
        let err = PinPlan::build(&t, &PlanOptions { nodes: Some(vec![]), ..Default::default() }).unwrap_err();
        assert!(matches!(err, TopoError::EmptyPlan { .. }), "{err}");
        let err = PinPlan::build(&Topology::fallback(0), &PlanOptions::default()).unwrap_err();
        assert!(matches!(err, TopoError::EmptyPlan { .. }), "{err}");
    }
}
