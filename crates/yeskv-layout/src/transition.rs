//! Partitions in motion: who has a partition's data while its holders change.
//!
//! A commit moves replicas (the assignment `R'(p)` is the *target*), but a new holder starts
//! without the data, and a former holder still has it. So the layout keeps, for every partition
//! whose holders are changing, a [`Transition`]:
//!
//! - `syncing`: members of `R'(p)` that do not have the data yet, each with the layout epoch at
//!   which it was added (so a stale completion report for an older addition is ignored);
//! - `sources`: former holders that keep the data, and keep taking writes, until every syncing
//!   member has it.
//!
//! From these, pure functions of the layout give every node the same answers:
//!
//! - the **data holders** `D(p) = (R'(p) \ syncing) ∪ sources`: the nodes trusted to hold every
//!   acknowledged write (reads count only them);
//! - the **write set** `W(p) = R'(p) ∪ sources`: every node a write goes to.
//!
//! A member that reports it has the data stays out of the data holders until the last one has
//! reported (so the data holders never outnumber the old replicas while sources remain). A
//! transition ends when the last syncing member reports it has the data
//! ([`crate::Command::TransferDone`], written through the Raft log by the receiver, as Riak's
//! `mark_handoff_complete` and Garage's sync tracker record completion in the layout). Its
//! sources are then released; a [`crate::MemberState::Leaving`] member that is a source of no
//! partition is dropped from the layout. A forced leave (dead node) removes the node from every
//! set at once; a change after which some partition would have no data holder at all is refused
//! with [`LayoutError::DataLoss`] unless the operator allowed it explicitly.
//!
//! Outside a transition `D(p) = W(p) = R'(p)`, and routing is what it was before transitions
//! existed.

use std::collections::{BTreeMap, BTreeSet};

use yeskv_core::placement::Assignment;
use yeskv_core::NodeId;

use crate::error::LayoutError;

/// One partition whose holders are changing (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Transition {
    /// Members of the target replicas without the data yet → the epoch at which each was added.
    pub syncing: BTreeMap<NodeId, u64>,
    /// Those of `syncing` that have reported the data received. They join the data holders
    /// only when the transition ends: while the sources remain, the data holders must stay at
    /// most the old replica count, or a read quorum and a write quorum among them need not
    /// overlap (a write acked by the old replica and a finished newcomer, a read answered by
    /// two sources).
    pub done: BTreeSet<NodeId>,
    /// Former holders that keep the data until every syncing member has it, in id order.
    pub sources: Vec<NodeId>,
}

impl Transition {
    /// The syncing members that have not reported yet, with their epochs.
    pub fn pending(&self) -> impl Iterator<Item = (&NodeId, &u64)> + '_ {
        self.syncing.iter().filter(|(n, _)| !self.done.contains(*n))
    }
}

/// The transitions of a layout, by partition; only partitions in motion have an entry.
pub type Transitions = BTreeMap<u16, Transition>;

/// The data holders of one partition given its target replicas and its transition, target
/// replicas first (in replica order), then sources.
pub fn data_holders(target: &[NodeId], transition: Option<&Transition>) -> Vec<NodeId> {
    match transition {
        None => target.to_vec(),
        Some(t) => target
            .iter()
            .filter(|node| !t.syncing.contains_key(*node))
            .chain(t.sources.iter())
            .cloned()
            .collect(),
    }
}

/// The write set of one partition: its target replicas (in replica order), then its sources.
pub fn write_set(target: &[NodeId], transition: Option<&Transition>) -> Vec<NodeId> {
    match transition {
        None => target.to_vec(),
        Some(t) => target.iter().chain(t.sources.iter()).cloned().collect(),
    }
}

/// What a change does to the nodes that leave by force.
pub struct Forced<'a> {
    /// Nodes removed at once (dead).
    pub removed: &'a BTreeSet<NodeId>,
    /// Of those, the ones the operator allowed to take the only copy of a partition with them.
    pub loss_allowed: &'a BTreeSet<NodeId>,
}

/// The transitions after a change that installs `next` as the target assignment at `epoch`,
/// from the current target `current` and its `transitions`.
///
/// For each partition: the data holders before the change, minus force-removed nodes, are the
/// nodes that have the data; a target replica outside them is syncing (keeping the epoch it was
/// first added at if it was syncing already), and those of them outside the new target are
/// sources. A partition whose holders would all be gone is refused with
/// [`LayoutError::DataLoss`], unless one of the removed holders was allowed to lose data: the
/// new target then starts empty and is trusted as it is.
pub fn after_change(
    current: &Assignment,
    transitions: &Transitions,
    next: &Assignment,
    forced: &Forced<'_>,
    epoch: u64,
) -> Result<Transitions, LayoutError> {
    let mut out = Transitions::new();
    let mut lost: Vec<u16> = Vec::new();
    let mut lost_on: BTreeSet<NodeId> = BTreeSet::new();
    for (partition, target) in next.iter() {
        let before = transitions.get(&partition);
        let holders_before = data_holders(current.replicas(partition), before);
        let have: Vec<NodeId> = holders_before
            .iter()
            .filter(|node| !forced.removed.contains(*node))
            .cloned()
            .collect();
        if have.is_empty() {
            let allowed = holders_before
                .iter()
                .any(|node| forced.loss_allowed.contains(node));
            if !allowed {
                lost.push(partition);
                lost_on.extend(holders_before);
            }
            continue;
        }
        let syncing: BTreeMap<NodeId, u64> = target
            .iter()
            .filter(|node| !have.contains(node))
            .map(|node| {
                let since = before
                    .and_then(|t| t.syncing.get(node).copied())
                    .unwrap_or(epoch);
                (node.clone(), since)
            })
            .collect();
        if syncing.is_empty() {
            continue;
        }
        // Reports already made for this partition still hold for members still syncing it.
        let done: BTreeSet<NodeId> = before
            .map(|t| {
                t.done
                    .iter()
                    .filter(|n| syncing.contains_key(*n))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let mut sources: Vec<NodeId> = have
            .into_iter()
            .filter(|node| !target.contains(node))
            .collect();
        sources.sort();
        if done.len() == syncing.len() {
            continue;
        }
        out.insert(
            partition,
            Transition {
                syncing,
                done,
                sources,
            },
        );
    }
    if lost.is_empty() {
        Ok(out)
    } else {
        Err(LayoutError::DataLoss {
            partitions: lost,
            holders: lost_on.iter().map(|n| n.to_string()).collect(),
        })
    }
}

/// Records that `node` has the data of `done` partitions (each with the epoch at which it was
/// added as syncing): removes it from their syncing sets, and ends each transition whose
/// syncing set becomes empty (its sources are released). A report for a partition `node` is
/// not syncing, or for another epoch than the one it is syncing since, is ignored (it is late
/// or repeated). Returns whether anything changed.
pub fn record_done(transitions: &mut Transitions, node: &NodeId, done: &[(u16, u64)]) -> bool {
    let mut changed = false;
    for (partition, since) in done {
        let Some(t) = transitions.get_mut(partition) else {
            continue;
        };
        if t.syncing.get(node) == Some(since) && t.done.insert(node.clone()) {
            changed = true;
            if t.done.len() == t.syncing.len() {
                transitions.remove(partition);
            }
        }
    }
    changed
}

/// Every node that is a source of some partition.
pub fn all_sources(transitions: &Transitions) -> BTreeSet<&NodeId> {
    transitions
        .values()
        .flat_map(|t| t.sources.iter())
        .collect()
}

/// Checks the invariants of `transitions` against the target `assignment`: every entry has a
/// syncing member; syncing members are target replicas; sources are not; no source twice.
pub fn validate(assignment: &Assignment, transitions: &Transitions) -> Result<(), String> {
    for (partition, t) in transitions {
        if u32::from(*partition) >= assignment.partitions() {
            return Err(format!(
                "transition of partition {partition}, which does not exist"
            ));
        }
        let target = assignment.replicas(*partition);
        if t.syncing.is_empty() {
            return Err(format!(
                "partition {partition} is in transition with nothing syncing"
            ));
        }
        if t.done.len() >= t.syncing.len() || t.done.iter().any(|n| !t.syncing.contains_key(n)) {
            return Err(format!(
                "partition {partition}: done members are not a proper subset of the syncing ones"
            ));
        }
        if let Some(node) = t.syncing.keys().find(|node| !target.contains(node)) {
            return Err(format!(
                "partition {partition}: {node} is syncing but not a replica"
            ));
        }
        if let Some(node) = t.sources.iter().find(|node| target.contains(node)) {
            return Err(format!(
                "partition {partition}: {node} is both a replica and a source"
            ));
        }
        if t.sources.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!(
                "partition {partition}: sources are not in strictly ascending order"
            ));
        }
    }
    Ok(())
}
