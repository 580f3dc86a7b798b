//! Placement: which nodes hold the replicas of each partition (the *layout*).
//!
//! The keyspace is cut into a fixed power-of-two number of equal partitions ([`crate::keyspace`],
//! Dynamo §6.2 "strategy 3"). This module decides, for a set of members with zones and capacity
//! weights, the ordered list of replicas of every partition: [`assign`] is a pure function of the
//! members, the replication factor `n`, the partition count and the previous [`Assignment`].
//!
//! # What an assignment guarantees
//!
//! Let `r = min(n, members)` be the replicas per partition and `P` the partition count.
//!
//! 1. **Distinct nodes**: every partition has exactly `r` distinct replicas.
//! 2. **Zones spread as evenly as possible**: let `c` be the smallest integer with
//!    `Σ_zones min(c, nodes in zone) ≥ r`. Every partition holds between
//!    `min(c - 1, nodes in zone)` and `min(c, nodes in zone)` replicas in each zone (see
//!    [`ZoneTarget`]). So with at least `r` zones the replicas are in `r` distinct zones, and with
//!    fewer zones every partition has a replica in *every* zone and no zone holds more than
//!    `ceil(r / zones)` of them (when each zone has that many nodes). This is Garage's "maximum
//!    zone redundancy" plus an upper cap.
//! 3. **Capacity-weighted balance, or the best the zones allow**: [`targets`] computes each node's
//!    exact (rational) *share* of the `P × r` replica slots, and each node's replica count is
//!    `floor(share)` or `ceil(share)`. The share is a water-filling with one global level `λ`:
//!    a node's share is `min(μ × capacity, P)` (a node holds a partition at most once), where
//!    `μ = λ` for every zone whose total `Σ min(λ × capacity, P)` fits the zone's slot bounds
//!    `[P × replicas_min, P × replicas_max]`, and for a zone that would fall outside them `μ` is
//!    the zone's own level that puts it exactly on the bound it hits. `λ` is chosen so that the
//!    shares sum to `P × r`. When nothing binds, `share = P × r × capacity / Σ capacity`; a zone
//!    pinned to a bound is as close to proportional as the bound allows, and the other zones
//!    share what remains in proportion to capacity. (A two-step "zones first, then nodes in the
//!    zone" water-filling is simpler but worse: a node capped at `P` inside a zone would push
//!    its excess onto its zone-mates instead of onto the whole cluster.)
//! 4. **Minimal movement**: among all assignments with properties 1–3, the one returned keeps the
//!    largest number of `(partition, node)` pairs of `previous`. This is exact, not heuristic:
//!    the slack over the optimum is zero. (Adding a fourth equal node to three, `n = 3`,
//!    `P = 256`, moves exactly 192 of 768 replicas, 25.0%, the new node's share; going from
//!    ten to eleven moves 69 of 768, 8.98%, against a fractional optimum of 69.8 = 768 / 11.)
//! 5. **Preference order**: the first replica is the *primary* (coordinator). Each node is
//!    primary of `floor(count / r)` or `ceil(count / r)` partitions, where `count` is its replica
//!    count, hence less than `1 + 1/r` away from `P × capacity / Σ capacity` when no bound
//!    binds. Among such choices, the fewest partitions change primary. Apart from the
//!    primary, the replicas that stayed keep their previous relative order and new replicas
//!    follow them.
//! 6. **Deterministic and pure**: the result depends only on the arguments (not on the order of
//!    `members`); ties are broken by a fixed hash of `(partition, node id)`, which also spreads
//!    replica sets over many node combinations when there is no previous assignment (so a failed
//!    node's load falls on many peers, not on two ring neighbours).
//!
//! # How: two min-cost flows
//!
//! The replica placement is an integral flow problem (as in Garage's layout, `src/rpc/layout`):
//!
//! ```text
//!            ┌─ min(zone z) ─────────────────────┐
//! source ────┤                                   ▼
//!            └─ extra ──▶ E(p) ── max-min(z) ──▶ G(p,z) ── 1 ──▶ node i ──┬─ floor(share) ──▶ M ─┐
//!                                                                          └─ 0 or 1 ───────▶ X ─┴▶ sink
//! ```
//!
//! `extra = r − Σ_z min(z)`; `M → sink` has capacity `Σ floor(share)` and `X → sink` the rest of
//! `P × r`, so a flow of value `P × r` saturates every edge out of the source and into `M`: it
//! meets every lower bound without a lower-bound transformation. The fractional point "every
//! partition takes `share / P` of every node" is a feasible flow, so by integrality an integral
//! flow of value `P × r` always exists: [`assign`] never fails on valid input. An edge
//! `G(p,z) → i` costs 0 if `i` held `p` before and 1 otherwise, so the cost of a flow is the
//! number of replicas that move. We start from the previous pairs that fit (cost 0, hence a
//! minimum-cost flow of its value, so zero potentials are valid) and augment along shortest paths
//! (Dijkstra with potentials, then a blocking flow on the zero-reduced-cost edges, repeated),
//! which yields a minimum-cost maximum flow: the fewest moves. Primaries are then chosen by a
//! second flow of the same shape (`partition → replica → node bounds`), where keeping the
//! natural first replica costs 0. The solver, which knows nothing of partitions or zones, is the
//! private `flow` submodule (`placement/flow.rs`); this module builds the networks and reads the
//! layout off their flows.
//!
//! Riak's claim algorithm walks the ring and hands out vnodes greedily with a "target_n" spacing
//! rule; it is fast but neither balanced to within one partition nor minimal in movement, and
//! it knows no zones. Garage's layout maximises the stored partition size by bisection over
//! max-flows and then removes negative cycles (Bellman–Ford) to approach the previous layout;
//! here balance is fixed by exact targets instead, so a single successive-shortest-path run
//! gives the exact minimum of moves.
//!
//! # Cost
//!
//! The placement graph has about `P × (members + 2 × zones)` edges. A fresh layout of 50 nodes,
//! `P = 256`, `n = 3` takes about 2 ms in release builds, and so does a change to it (the
//! flow starts from the previous pairs, so it needs only as many augmenting paths as replicas
//! move, found in a few Dijkstra passes). [`PAIRS_MAX`] and [`MEMBERS_MAX`]
//! bound memory and time.
//!
//! # Changing the partition count
//!
//! `previous` may have another partition count: each new partition inherits the replicas of the
//! previous partition holding its first hash (splitting keeps every replica in place; merging
//! keeps the replicas of the first child). [`Assignment::moves_from`] counts moves the same way.

mod flow;

use std::cmp::Ordering;
use std::collections::BTreeMap;

use crate::NodeId;
use flow::{Graph, GraphBuilder};

/// Most partitions a layout may have: partitions are the top bits of a 64-bit key hash, and
/// partition numbers are `u16`.
pub const PARTITIONS_MAX: u32 = 1 << 16;

/// Most members in one layout.
pub const MEMBERS_MAX: usize = 1024;

/// Largest `partitions × members`: the placement graph has one edge per pair, about 60 bytes of
/// memory each with its bookkeeping, so this bounds one computation to about 300 MB and two
/// seconds (measured: 63 nodes × 65,536 partitions or 1,023 nodes × 4,096 partitions, `n = 3`).
pub const PAIRS_MAX: u64 = 1 << 22;

/// One member of the cluster as the placement sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeSpec {
    /// The node.
    pub id: NodeId,
    /// Failure domain (rack, room, data centre). Replicas of a partition are spread over zones.
    /// Nodes with the same string are in the same zone; the empty string is a zone like any other.
    pub zone: String,
    /// Relative weight, at least 1: a node of capacity 2 gets twice the replicas of a node of
    /// capacity 1 when the zones allow it.
    pub capacity: u32,
}

impl NodeSpec {
    /// A member spec.
    pub fn new(id: NodeId, zone: impl Into<String>, capacity: u32) -> Self {
        NodeSpec {
            id,
            zone: zone.into(),
            capacity,
        }
    }
}

/// Why a layout could not be computed (all are errors in the input, except [`Self::Internal`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The member list is empty.
    #[error("a layout needs at least one member")]
    NoMembers,
    /// More members than [`MEMBERS_MAX`].
    #[error("{count} members, at most {max} are supported")]
    TooManyMembers {
        /// Members given.
        count: usize,
        /// [`MEMBERS_MAX`].
        max: usize,
    },
    /// `partitions × members` exceeds [`PAIRS_MAX`].
    #[error("{partitions} partitions × {members} members exceeds the limit of {max} pairs")]
    TooLarge {
        /// Partition count.
        partitions: u32,
        /// Members given.
        members: usize,
        /// [`PAIRS_MAX`].
        max: u64,
    },
    /// The replication factor `n` is 0.
    #[error("the replication factor n must be at least 1")]
    ZeroReplicas,
    /// The partition count is not a power of two between 1 and [`PARTITIONS_MAX`].
    #[error("partition count must be a power of two from 1 to {PARTITIONS_MAX}, got {0}")]
    InvalidPartitionCount(u32),
    /// A member has capacity 0 (remove it from the members instead).
    #[error("node {0} has capacity 0; capacities are weights of at least 1")]
    ZeroCapacity(NodeId),
    /// A node id appears twice among the members.
    #[error("node {0} is listed more than once")]
    DuplicateNode(NodeId),
    /// A table given to [`Assignment::from_replicas`] is malformed.
    #[error("invalid assignment: {0}")]
    InvalidAssignment(String),
    /// An invariant the algorithm proves did not hold: a bug, never a property of the input.
    #[error("placement bug: {0}")]
    Internal(&'static str),
}

/// The replicas of every partition, primary first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment {
    partitions: u32,
    replicas_per_partition: usize,
    /// `partitions × replicas_per_partition` node ids, row-major.
    table: Vec<NodeId>,
}

impl Assignment {
    /// Builds an assignment from explicit rows (e.g. decoded from a persisted layout). Checks
    /// the shape only: a power-of-two number of rows (at most [`PARTITIONS_MAX`]), all of the same
    /// non-zero length, each of distinct nodes. Zone and balance rules need the members and are
    /// not checked here.
    pub fn from_replicas(rows: Vec<Vec<NodeId>>) -> Result<Self, PlacementError> {
        let partitions = u32::try_from(rows.len())
            .ok()
            .filter(|p| p.is_power_of_two() && *p <= PARTITIONS_MAX)
            .ok_or_else(|| {
                PlacementError::InvalidAssignment(format!(
                    "{} partitions is not a power of two from 1 to {PARTITIONS_MAX}",
                    rows.len()
                ))
            })?;
        let width = rows.first().map_or(0, Vec::len);
        if width == 0 {
            return Err(PlacementError::InvalidAssignment(
                "partitions must have at least one replica".into(),
            ));
        }
        let mut table = Vec::with_capacity(rows.len() * width);
        for (partition, row) in rows.into_iter().enumerate() {
            if row.len() != width {
                return Err(PlacementError::InvalidAssignment(format!(
                    "partition {partition} has {} replicas, partition 0 has {width}",
                    row.len()
                )));
            }
            for (k, node) in row.iter().enumerate() {
                if row[..k].contains(node) {
                    return Err(PlacementError::InvalidAssignment(format!(
                        "partition {partition} lists {node} twice"
                    )));
                }
            }
            table.extend(row);
        }
        Ok(Assignment {
            partitions,
            replicas_per_partition: width,
            table,
        })
    }

    /// The partition count (a power of two).
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// Replicas of each partition: `min(n, members)` when computed by [`assign`].
    pub fn replicas_per_partition(&self) -> usize {
        self.replicas_per_partition
    }

    /// The replicas of `partition` in preference order, primary first.
    ///
    /// # Panics
    /// If `partition >= self.partitions()`.
    pub fn replicas(&self, partition: u16) -> &[NodeId] {
        let width = self.replicas_per_partition;
        let start = usize::from(partition) * width;
        &self.table[start..start + width]
    }

    /// The primary (first replica, the default coordinator) of `partition`.
    ///
    /// # Panics
    /// If `partition >= self.partitions()`.
    pub fn primary(&self, partition: u16) -> &NodeId {
        &self.replicas(partition)[0]
    }

    /// Every partition with its replicas, in partition order.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &[NodeId])> + '_ {
        // Partition numbers fit in u16: at most PARTITIONS_MAX rows.
        self.table
            .chunks(self.replicas_per_partition)
            .enumerate()
            .map(|(partition, row)| (partition as u16, row))
    }

    /// How many replicas `node` holds (partitions it is a replica of).
    pub fn owned(&self, node: &NodeId) -> usize {
        self.table.iter().filter(|n| *n == node).count()
    }

    /// How many partitions `node` is the primary of.
    pub fn primaries(&self, node: &NodeId) -> usize {
        self.iter().filter(|(_, row)| &row[0] == node).count()
    }

    /// The partitions `node` is a replica of, ascending.
    pub fn partitions_of(&self, node: &NodeId) -> Vec<u16> {
        self.iter()
            .filter(|(_, row)| row.contains(node))
            .map(|(partition, _)| partition)
            .collect()
    }

    /// Replica count and primary count of every node that holds something.
    pub fn load(&self) -> BTreeMap<NodeId, (usize, usize)> {
        let mut load = BTreeMap::new();
        for (_, row) in self.iter() {
            for (k, node) in row.iter().enumerate() {
                let entry: &mut (usize, usize) = load.entry(node.clone()).or_default();
                entry.0 += 1;
                if k == 0 {
                    entry.1 += 1;
                }
            }
        }
        load
    }

    /// Replicas that changed hands: `(partition, node)` pairs of `self` that `previous` does not
    /// have, i.e. the partition copies to transfer. If the partition counts differ, each
    /// partition is compared with the previous partition holding its first hash.
    pub fn moves_from(&self, previous: &Assignment) -> usize {
        self.iter()
            .map(|(partition, row)| {
                let before =
                    previous.replicas(previous.partition_covering(partition, self.partitions));
                row.iter().filter(|node| !before.contains(node)).count()
            })
            .sum()
    }

    /// The partition of `self` holding the first hash of `partition` among `partitions`.
    fn partition_covering(&self, partition: u16, partitions: u32) -> u16 {
        // Both counts are powers of two at most 2^16, so the quotient is below self.partitions.
        (u64::from(partition) * u64::from(self.partitions) / u64::from(partitions)) as u16
    }
}

/// The balance goal of one node: its share of the `partitions × r` replica slots.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTarget {
    /// The node's zone.
    pub zone: String,
    /// The node's capacity weight.
    pub capacity: u32,
    /// Exact share (a rational, shown as a float): see the module docs, point 3.
    pub share: f64,
    /// `floor(share)`: the fewest replicas [`assign`] gives the node.
    pub slots_min: u32,
    /// `ceil(share)`: the most replicas [`assign`] gives the node (at most the partition count).
    pub slots_max: u32,
}

/// The spread goal of one zone.
#[derive(Clone, Debug, PartialEq)]
pub struct ZoneTarget {
    /// Members in the zone.
    pub nodes: usize,
    /// Sum of their capacities.
    pub capacity: u64,
    /// Fewest replicas of each partition in this zone.
    pub replicas_min: usize,
    /// Most replicas of each partition in this zone.
    pub replicas_max: usize,
    /// Sum of the shares of its nodes (between `P × replicas_min` and `P × replicas_max`).
    pub share: f64,
}

/// What a balanced assignment looks like for some members (see [`targets`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    /// Partition count.
    pub partitions: u32,
    /// `r = min(n, members)`.
    pub replicas_per_partition: usize,
    /// Per zone, by name.
    pub zones: BTreeMap<String, ZoneTarget>,
    /// Per node, by id.
    pub nodes: BTreeMap<NodeId, NodeTarget>,
}

/// The zone bounds and per-node replica shares that [`assign`] meets, for display, for checking
/// a layout received from a peer, and for tests. Errors as [`assign`].
pub fn targets(members: &[NodeSpec], n: u8, partitions: u32) -> Result<Targets, PlacementError> {
    Ok(Plan::new(members, n, partitions)?.targets())
}

/// Computes the layout: the replicas of every partition, primary first, meeting the guarantees
/// of the module docs, with the fewest replicas moved from `previous` (if given). `previous`
/// may name nodes that are no longer members; their replicas are reassigned.
pub fn assign(
    members: &[NodeSpec],
    n: u8,
    partitions: u32,
    previous: Option<&Assignment>,
) -> Result<Assignment, PlacementError> {
    let plan = Plan::new(members, n, partitions)?;
    let previous_rows = plan.previous_rows(previous);
    let rows = plan.place_replicas(&previous_rows)?;
    let primaries = plan.choose_primaries(&rows)?;
    let width = plan.replicas;
    let mut table = Vec::with_capacity(rows.len() * width);
    for (row, primary) in rows.iter().zip(primaries) {
        table.push(plan.ids[primary].clone());
        table.extend(
            row.iter()
                .filter(|&&i| i != primary)
                .map(|&i| plan.ids[i].clone()),
        );
    }
    Ok(Assignment {
        partitions,
        replicas_per_partition: width,
        table,
    })
}

/// The layout of a cluster spread over regions: every region of `regions` (each with its replica
/// count and its members) gets its own [`assign`] over its members only, and a partition's
/// replicas are the regions' replicas one region after the other, in the order of `regions`
/// (each region's primary first within it). Every guarantee of [`assign`] holds inside each
/// region (zones spread, balance, fewest moves: `previous` may hold every region's nodes, a
/// region's placement ignores the others'). A region without members holds no replica; at
/// least one region must have members.
pub fn assign_regions(
    regions: &[(u8, Vec<NodeSpec>)],
    partitions: u32,
    previous: Option<&Assignment>,
) -> Result<Assignment, PlacementError> {
    let mut parts = Vec::with_capacity(regions.len());
    for (n, members) in regions {
        if !members.is_empty() {
            parts.push(assign(members, *n, partitions, previous)?);
        }
    }
    if parts.is_empty() {
        return Err(PlacementError::NoMembers);
    }
    let width: usize = parts.iter().map(Assignment::replicas_per_partition).sum();
    let mut table = Vec::with_capacity(partitions as usize * width);
    for partition in 0..partitions {
        for part in &parts {
            table.extend(part.replicas(partition as u16).iter().cloned());
        }
    }
    Ok(Assignment {
        partitions,
        replicas_per_partition: width,
        table,
    })
}

/// Validated members, indexed by their position in id order, with the targets computed.
struct Plan {
    /// Node ids, ascending.
    ids: Vec<NodeId>,
    /// Zone index of each node.
    zone_of: Vec<usize>,
    /// Zone names, ascending.
    zone_names: Vec<String>,
    /// Nodes of each zone, ascending.
    zone_members: Vec<Vec<usize>>,
    capacity: Vec<u64>,
    partitions: u32,
    /// `r = min(n, members)`.
    replicas: usize,
    /// Fewest replicas of one partition per zone.
    zone_min: Vec<usize>,
    /// Most replicas of one partition per zone.
    zone_max: Vec<usize>,
    /// Exact share of each node.
    share: Vec<Ratio>,
    /// `floor(share)`.
    slots_min: Vec<u32>,
    /// `ceil(share)`.
    slots_max: Vec<u32>,
}

impl Plan {
    fn new(members: &[NodeSpec], n: u8, partitions: u32) -> Result<Self, PlacementError> {
        if !partitions.is_power_of_two() || partitions > PARTITIONS_MAX {
            return Err(PlacementError::InvalidPartitionCount(partitions));
        }
        if n == 0 {
            return Err(PlacementError::ZeroReplicas);
        }
        if members.is_empty() {
            return Err(PlacementError::NoMembers);
        }
        if members.len() > MEMBERS_MAX {
            return Err(PlacementError::TooManyMembers {
                count: members.len(),
                max: MEMBERS_MAX,
            });
        }
        if u64::from(partitions) * members.len() as u64 > PAIRS_MAX {
            return Err(PlacementError::TooLarge {
                partitions,
                members: members.len(),
                max: PAIRS_MAX,
            });
        }
        let mut sorted: Vec<&NodeSpec> = members.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        for pair in sorted.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(PlacementError::DuplicateNode(pair[0].id.clone()));
            }
        }
        if let Some(node) = sorted.iter().find(|m| m.capacity == 0) {
            return Err(PlacementError::ZeroCapacity(node.id.clone()));
        }

        let mut zone_index: BTreeMap<&str, usize> =
            sorted.iter().map(|m| (m.zone.as_str(), 0)).collect();
        for (k, index) in zone_index.values_mut().enumerate() {
            *index = k;
        }
        let zone_names: Vec<String> = zone_index.keys().map(|z| z.to_string()).collect();
        let zone_of: Vec<usize> = sorted.iter().map(|m| zone_index[m.zone.as_str()]).collect();
        let mut zone_members = vec![Vec::new(); zone_names.len()];
        for (i, &z) in zone_of.iter().enumerate() {
            zone_members[z].push(i);
        }
        let capacity: Vec<u64> = sorted.iter().map(|m| u64::from(m.capacity)).collect();
        let replicas = usize::from(n).min(sorted.len());
        let zone_sizes: Vec<usize> = zone_members.iter().map(Vec::len).collect();
        let (zone_min, zone_max) = zone_spread(&zone_sizes, replicas);
        let share = water_fill(
            &zone_members,
            &capacity,
            u64::from(partitions),
            &zone_min,
            &zone_max,
            replicas,
        )?;
        // Shares are at most `partitions`, so floor and ceil fit in u32.
        let slots_min: Vec<u32> = share.iter().map(|s| s.floor() as u32).collect();
        let slots_max: Vec<u32> = share.iter().map(|s| s.ceil() as u32).collect();
        let slots = u64::from(partitions) * replicas as u64;
        let floor_sum: u64 = slots_min.iter().map(|&s| u64::from(s)).sum();
        let ceil_sum: u64 = slots_max.iter().map(|&s| u64::from(s)).sum();
        if floor_sum > slots || ceil_sum < slots {
            return Err(PlacementError::Internal(
                "node shares do not sum to the slot count",
            ));
        }
        Ok(Plan {
            ids: sorted.iter().map(|m| m.id.clone()).collect(),
            zone_of,
            zone_names,
            zone_members,
            capacity,
            partitions,
            replicas,
            zone_min,
            zone_max,
            share,
            slots_min,
            slots_max,
        })
    }

    fn targets(&self) -> Targets {
        let mut zones = BTreeMap::new();
        for (z, name) in self.zone_names.iter().enumerate() {
            let members = &self.zone_members[z];
            zones.insert(
                name.clone(),
                ZoneTarget {
                    nodes: members.len(),
                    capacity: members.iter().map(|&i| self.capacity[i]).sum(),
                    replicas_min: self.zone_min[z],
                    replicas_max: self.zone_max[z],
                    share: members.iter().map(|&i| self.share[i].to_f64()).sum(),
                },
            );
        }
        let nodes = self
            .ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let target = NodeTarget {
                    zone: self.zone_names[self.zone_of[i]].clone(),
                    // Capacities came in as u32.
                    capacity: self.capacity[i] as u32,
                    share: self.share[i].to_f64(),
                    slots_min: self.slots_min[i],
                    slots_max: self.slots_max[i],
                };
                (id.clone(), target)
            })
            .collect();
        Targets {
            partitions: self.partitions,
            replicas_per_partition: self.replicas,
            zones,
            nodes,
        }
    }

    /// The previous replicas of every partition as member indices, in previous order, without
    /// nodes that left (and without duplicates, should `previous` have been built by hand).
    fn previous_rows(&self, previous: Option<&Assignment>) -> Vec<Vec<usize>> {
        let Some(previous) = previous else {
            return vec![Vec::new(); self.partitions as usize];
        };
        (0..self.partitions)
            .map(|partition| {
                // partition < 2^16.
                let before = previous
                    .replicas(previous.partition_covering(partition as u16, self.partitions));
                let mut row: Vec<usize> = Vec::with_capacity(before.len());
                for id in before {
                    if let Ok(i) = self.ids.binary_search(id) {
                        if !row.contains(&i) {
                            row.push(i);
                        }
                    }
                }
                row
            })
            .collect()
    }

    /// The replica set of every partition, in *natural order*: kept replicas in their previous
    /// order, then new ones in tie-break order. Minimum-cost flow, see the module docs.
    fn place_replicas(
        &self,
        previous_rows: &[Vec<usize>],
    ) -> Result<Vec<Vec<usize>>, PlacementError> {
        let slots = self.partitions as usize * self.replicas;
        let mut network = self.replica_network(previous_rows);
        let mut placed = self.keep_previous_pairs(&mut network, previous_rows);
        placed += network
            .graph
            .min_cost_flow(SOURCE, SINK, (slots - placed) as u64) as usize;
        if placed != slots {
            return Err(PlacementError::Internal(
                "replica flow did not fill every slot",
            ));
        }
        let rows = network.replica_rows();
        if rows.iter().any(|row| row.len() != self.replicas) {
            return Err(PlacementError::Internal(
                "a partition did not get r replicas",
            ));
        }
        Ok(rows)
    }

    /// The replica network of the module docs, with no flow yet. The pair edges of each
    /// partition are added in natural order: previous replicas first (cost 0), then the other
    /// nodes by affinity (cost 1); the order of edges is the solver's tie-break.
    fn replica_network(&self, previous_rows: &[Vec<usize>]) -> ReplicaNetwork {
        let partitions = self.partitions as usize;
        let node_count = self.ids.len();
        let zone_count = self.zone_names.len();
        let extra = self.replicas - self.zone_min.iter().sum::<usize>();
        let vertex = ReplicaVertices {
            nodes: node_count,
            partitions,
            zones: zone_count,
        };
        let mut graph = GraphBuilder::new(vertex.count());
        let bounds = self.replica_node_bounds(&mut graph, vertex);

        let node_hash: Vec<u64> = self
            .ids
            .iter()
            .map(|id| xxhash_rust::xxh3::xxh3_64(id.as_str().as_bytes()))
            .collect();
        let mut source_extra = Vec::with_capacity(partitions);
        let mut group_base = Vec::with_capacity(partitions * zone_count);
        let mut group_extra = Vec::with_capacity(partitions * zone_count);
        let mut pair_edges: Vec<u32> = Vec::with_capacity(partitions * node_count);
        let mut was_replica = vec![false; node_count];
        let mut order: Vec<usize> = Vec::with_capacity(node_count);
        for (p, previous_row) in previous_rows.iter().enumerate() {
            source_extra.push(graph.edge(SOURCE, vertex.extra(p), extra as u32, 0));
            for z in 0..zone_count {
                group_base.push(graph.edge(SOURCE, vertex.group(p, z), self.zone_min[z] as u32, 0));
                let room = (self.zone_max[z] - self.zone_min[z]).min(extra);
                group_extra.push(graph.edge(vertex.extra(p), vertex.group(p, z), room as u32, 0));
            }
            for &i in previous_row {
                was_replica[i] = true;
                let e = graph.edge(vertex.group(p, self.zone_of[i]), vertex.node(i), 1, 0);
                pair_edges.push(e as u32);
            }
            order.clear();
            order.extend((0..node_count).filter(|&i| !was_replica[i]));
            order.sort_by_key(|&i| (affinity(p, node_hash[i]), i));
            for &i in &order {
                let e = graph.edge(vertex.group(p, self.zone_of[i]), vertex.node(i), 1, 1);
                pair_edges.push(e as u32);
            }
            for &i in previous_row {
                was_replica[i] = false;
            }
        }
        ReplicaNetwork {
            graph: graph.build(),
            vertex,
            bounds,
            source_extra,
            group_base,
            group_extra,
            pair_edges,
        }
    }

    /// The edges that hold each node's replica count between `floor(share)` and `ceil(share)`:
    /// all node → `M` edges, then all node → `X` edges, then `M → sink` and `X → sink`.
    fn replica_node_bounds(&self, graph: &mut GraphBuilder, vertex: ReplicaVertices) -> NodeBounds {
        let node_count = self.ids.len();
        let slots = self.partitions as usize * self.replicas;
        // Counts below are at most slots = partitions × replicas ≤ 2^16 × MEMBERS_MAX < 2^32.
        let mandatory_of: Vec<usize> = (0..node_count)
            .map(|i| graph.edge(vertex.node(i), MANDATORY, self.slots_min[i], 0))
            .collect();
        let optional_of: Vec<usize> = (0..node_count)
            .map(|i| {
                graph.edge(
                    vertex.node(i),
                    OPTIONAL,
                    self.slots_max[i] - self.slots_min[i],
                    0,
                )
            })
            .collect();
        let floor_sum: usize = self.slots_min.iter().map(|&s| s as usize).sum();
        let mandatory_out = graph.edge(MANDATORY, SINK, floor_sum as u32, 0);
        let optional_out = graph.edge(OPTIONAL, SINK, (slots - floor_sum) as u32, 0);
        NodeBounds {
            mandatory_of,
            optional_of,
            mandatory_out,
            optional_out,
        }
    }

    /// Starts the flow from every previous pair that fits (a flow of cost 0, hence of minimum
    /// cost for its value); returns how many pairs it kept.
    fn keep_previous_pairs(
        &self,
        network: &mut ReplicaNetwork,
        previous_rows: &[Vec<usize>],
    ) -> usize {
        let node_count = self.ids.len();
        let zone_count = self.zone_names.len();
        let graph = &mut network.graph;
        let mut placed = 0;
        for (p, previous_row) in previous_rows.iter().enumerate() {
            for (k, &i) in previous_row.iter().enumerate() {
                let z = self.zone_of[i];
                let group_base = network.group_base[p * zone_count + z];
                let group_extra = network.group_extra[p * zone_count + z];
                let source_extra = network.source_extra[p];
                let zone_path = if graph.residual(group_base) > 0 {
                    [Some(group_base), None]
                } else if graph.residual(group_extra) > 0 && graph.residual(source_extra) > 0 {
                    [Some(source_extra), Some(group_extra)]
                } else {
                    continue;
                };
                let Some(node_path) = network.bounds.path(graph, i) else {
                    continue;
                };
                let pair = network.pair_edges[p * node_count + k] as usize;
                for e in zone_path
                    .into_iter()
                    .flatten()
                    .chain([pair])
                    .chain(node_path)
                {
                    graph.push(e, 1);
                }
                placed += 1;
            }
        }
        placed
    }

    /// The primary of every partition: node `i` is primary of `floor(count_i / r)` or
    /// `ceil(count_i / r)` partitions, with the fewest partitions whose primary is not the
    /// first replica in natural order.
    fn choose_primaries(&self, rows: &[Vec<usize>]) -> Result<Vec<usize>, PlacementError> {
        let partitions = rows.len();
        let node_count = self.ids.len();
        let replicas = self.replicas;
        let mut count = vec![0usize; node_count];
        for row in rows {
            for &i in row {
                count[i] += 1;
            }
        }
        let node_vertex = |i: usize| FIRST_NODE + i;
        let partition_vertex = |p: usize| FIRST_NODE + node_count + p;
        let mut graph = GraphBuilder::new(FIRST_NODE + node_count + partitions);
        // All counts are at most `partitions` ≤ 2^16.
        let mut floor_sum = 0;
        let mut mandatory_of = Vec::with_capacity(node_count);
        let mut optional_of = Vec::with_capacity(node_count);
        for (i, &c) in count.iter().enumerate() {
            let (low, high) = (c / replicas, c.div_ceil(replicas));
            floor_sum += low;
            mandatory_of.push(graph.edge(node_vertex(i), MANDATORY, low as u32, 0));
            optional_of.push(graph.edge(node_vertex(i), OPTIONAL, (high - low) as u32, 0));
        }
        let bounds = NodeBounds {
            mandatory_of,
            optional_of,
            mandatory_out: graph.edge(MANDATORY, SINK, floor_sum as u32, 0),
            optional_out: graph.edge(OPTIONAL, SINK, (partitions - floor_sum) as u32, 0),
        };
        let mut choice_start = Vec::with_capacity(partitions + 1);
        let mut choice_edges = Vec::with_capacity(partitions * replicas);
        let mut source_of = Vec::with_capacity(partitions);
        for (p, row) in rows.iter().enumerate() {
            source_of.push(graph.edge(SOURCE, partition_vertex(p), 1, 0));
            choice_start.push(choice_edges.len());
            for (k, &i) in row.iter().enumerate() {
                let cost = if k == 0 { 0 } else { 1 };
                choice_edges.push((graph.edge(partition_vertex(p), node_vertex(i), 1, cost), i));
            }
        }
        choice_start.push(choice_edges.len());
        let mut graph = graph.build();

        let mut chosen = 0;
        for (p, row) in rows.iter().enumerate() {
            let Some(node_path) = bounds.path(&graph, row[0]) else {
                continue;
            };
            for e in [source_of[p], choice_edges[choice_start[p]].0]
                .into_iter()
                .chain(node_path)
            {
                graph.push(e, 1);
            }
            chosen += 1;
        }
        chosen += graph.min_cost_flow(SOURCE, SINK, (partitions - chosen) as u64) as usize;
        if chosen != partitions {
            return Err(PlacementError::Internal(
                "primary flow did not cover every partition",
            ));
        }
        (0..partitions)
            .map(|p| {
                choice_edges[choice_start[p]..choice_start[p + 1]]
                    .iter()
                    .find(|&&(e, _)| graph.flow(e) > 0)
                    .map(|&(_, i)| i)
                    .ok_or(PlacementError::Internal("a partition has no primary"))
            })
            .collect()
    }
}

/// The fixed vertices of both placement networks; node `i` is vertex `FIRST_NODE + i`.
const SOURCE: usize = 0;
const SINK: usize = 1;
/// Collects each node's mandatory units (`floor` of its bound) on their way to the sink.
const MANDATORY: usize = 2;
/// Collects each node's optional unit (the one between `floor` and `ceil`).
const OPTIONAL: usize = 3;
const FIRST_NODE: usize = 4;

/// Vertex numbers of the replica network: the fixed vertices, the nodes, then one `E(p)` per
/// partition, then one `G(p, z)` per partition and zone.
#[derive(Clone, Copy)]
struct ReplicaVertices {
    nodes: usize,
    partitions: usize,
    zones: usize,
}

impl ReplicaVertices {
    /// How many vertices the network has.
    fn count(self) -> usize {
        FIRST_NODE + self.nodes + self.partitions * (1 + self.zones)
    }

    /// Node `i`.
    fn node(self, i: usize) -> usize {
        FIRST_NODE + i
    }

    /// `E(p)`: the replicas of partition `p` beyond every zone's minimum.
    fn extra(self, p: usize) -> usize {
        FIRST_NODE + self.nodes + p
    }

    /// `G(p, z)`: the replicas of partition `p` in zone `z`.
    fn group(self, p: usize, z: usize) -> usize {
        FIRST_NODE + self.nodes + self.partitions + p * self.zones + z
    }
}

/// The edges that bound how much flow each node takes: `mandatory_of[i]` (node → `M`, the
/// floor of its bound) and `optional_of[i]` (node → `X`, at most one more), then `M → sink`
/// and `X → sink`.
struct NodeBounds {
    mandatory_of: Vec<usize>,
    optional_of: Vec<usize>,
    mandatory_out: usize,
    optional_out: usize,
}

impl NodeBounds {
    /// The edges from node `i` to the sink that can take one more unit now, mandatory ones
    /// first; `None` when node `i` is full.
    fn path(&self, graph: &Graph, i: usize) -> Option<[usize; 2]> {
        if graph.residual(self.mandatory_of[i]) > 0 && graph.residual(self.mandatory_out) > 0 {
            Some([self.mandatory_of[i], self.mandatory_out])
        } else if graph.residual(self.optional_of[i]) > 0 && graph.residual(self.optional_out) > 0 {
            Some([self.optional_of[i], self.optional_out])
        } else {
            None
        }
    }
}

/// The replica network of one placement, built, with the ids of the edges it pushes on or reads.
struct ReplicaNetwork {
    graph: Graph,
    vertex: ReplicaVertices,
    bounds: NodeBounds,
    /// Per partition: source → `E(p)`.
    source_extra: Vec<usize>,
    /// Per partition and zone: source → `G(p, z)` (the zone's minimum).
    group_base: Vec<usize>,
    /// Per partition and zone: `E(p)` → `G(p, z)` (the zone's room above its minimum).
    group_extra: Vec<usize>,
    /// The `nodes` pair edges `G(p, zone of i)` → node `i` of each partition, in natural order.
    /// Stored as u32 (edge ids are below 2^32 by [`PAIRS_MAX`]) since this is the one per-pair
    /// table besides the graph.
    pair_edges: Vec<u32>,
}

impl ReplicaNetwork {
    /// The nodes each partition's flow goes to, in natural order.
    fn replica_rows(&self) -> Vec<Vec<usize>> {
        let node_count = self.vertex.nodes;
        (0..self.vertex.partitions)
            .map(|p| {
                self.pair_edges[p * node_count..(p + 1) * node_count]
                    .iter()
                    .filter(|&&e| self.graph.flow(e as usize) > 0)
                    .map(|&e| self.graph.head_of(e as usize) - self.vertex.node(0))
                    .collect::<Vec<usize>>()
            })
            .collect()
    }
}

/// Per-partition replica bounds of each zone: `c` is the smallest integer with
/// `Σ min(c, size) ≥ r`; zone `z` holds between `min(c − 1, size_z)` and `min(c, size_z)`
/// replicas of every partition. Returns `(min, max)` per zone.
fn zone_spread(zone_sizes: &[usize], replicas: usize) -> (Vec<usize>, Vec<usize>) {
    let mut c = 1;
    // Terminates: at c = max size the sum is the member count, which is at least r.
    while zone_sizes.iter().map(|&s| s.min(c)).sum::<usize>() < replicas {
        c += 1;
    }
    let min = zone_sizes.iter().map(|&s| s.min(c - 1)).collect();
    let max = zone_sizes.iter().map(|&s| s.min(c)).collect();
    (min, max)
}

/// The exact share of every node (module docs, point 3). `zone_min`/`zone_max` are per
/// partition; the zone slot bounds are `partitions ×` those.
fn water_fill(
    zone_members: &[Vec<usize>],
    capacity: &[u64],
    partitions: u64,
    zone_min: &[usize],
    zone_max: &[usize],
    replicas: usize,
) -> Result<Vec<Ratio>, PlacementError> {
    let slots = partitions * replicas as u64;
    let low: Vec<u64> = zone_min.iter().map(|&m| partitions * m as u64).collect();
    let high: Vec<u64> = zone_max.iter().map(|&m| partitions * m as u64).collect();
    let capacity_desc: Vec<Vec<u64>> = zone_members
        .iter()
        .map(|members| {
            let mut caps: Vec<u64> = members.iter().map(|&i| capacity[i]).collect();
            caps.sort_unstable_by(|a, b| b.cmp(a));
            caps
        })
        .collect();
    let level_low: Vec<Ratio> = (0..zone_members.len())
        .map(|z| zone_level(&capacity_desc[z], partitions, low[z]))
        .collect();
    let level_high: Vec<Ratio> = (0..zone_members.len())
        .map(|z| zone_level(&capacity_desc[z], partitions, high[z]))
        .collect();

    // Σ_z clamp(fill_z(λ), low_z, high_z), as a numerator over λ.den.
    let total = |lambda: Ratio| -> u128 {
        (0..zone_members.len())
            .map(|z| {
                let fill = zone_fill(&capacity_desc[z], partitions, lambda);
                fill.clamp(
                    u128::from(low[z]) * lambda.den,
                    u128::from(high[z]) * lambda.den,
                )
            })
            .sum()
    };
    // `total` is piecewise linear and non-decreasing; its breakpoints are where a node reaches
    // `partitions` or a zone reaches a bound.
    let mut breakpoints: Vec<Ratio> = vec![Ratio::ZERO];
    breakpoints.extend(
        capacity
            .iter()
            .map(|&c| Ratio::new(partitions.into(), c.into())),
    );
    breakpoints.extend(level_low.iter().copied());
    breakpoints.extend(level_high.iter().copied());
    breakpoints.sort();
    breakpoints.dedup();
    let reached = |lambda: &Ratio| total(*lambda) <= u128::from(slots) * lambda.den;
    // total(0) = Σ low ≤ slots, so at least one breakpoint is reached.
    let j = breakpoints.partition_point(reached).saturating_sub(1);
    let at = breakpoints[j];
    let lambda = if total(at) == u128::from(slots) * at.den {
        at
    } else {
        // Strictly between two breakpoints `at` and `next`, total(λ) = α λ + β.
        let next = *breakpoints.get(j + 1).ok_or(PlacementError::Internal(
            "water level above the last breakpoint",
        ))?;
        let (mut alpha, mut beta) = (0u128, 0u128);
        for (z, members) in zone_members.iter().enumerate() {
            if level_low[z] >= next {
                beta += u128::from(low[z]);
            } else if level_high[z] <= at {
                beta += u128::from(high[z]);
            } else {
                for &i in members {
                    if Ratio::new(partitions.into(), capacity[i].into()) <= at {
                        beta += u128::from(partitions);
                    } else {
                        alpha += u128::from(capacity[i]);
                    }
                }
            }
        }
        if alpha == 0 || beta > u128::from(slots) {
            return Err(PlacementError::Internal("water level segment is flat"));
        }
        Ratio::new(u128::from(slots) - beta, alpha)
    };

    let mut share = vec![Ratio::ZERO; capacity.len()];
    for (z, members) in zone_members.iter().enumerate() {
        let fill = zone_fill(&capacity_desc[z], partitions, lambda);
        let level = if fill < u128::from(low[z]) * lambda.den {
            level_low[z]
        } else if fill > u128::from(high[z]) * lambda.den {
            level_high[z]
        } else {
            lambda
        };
        for &i in members {
            let wanted = level.times(capacity[i]);
            share[i] = wanted.min(Ratio::new(partitions.into(), 1));
        }
    }
    Ok(share)
}

/// `Σ min(λ × c, partitions)` over a zone's capacities, as a numerator over `λ.den`.
fn zone_fill(capacity_desc: &[u64], partitions: u64, lambda: Ratio) -> u128 {
    capacity_desc
        .iter()
        .map(|&c| (lambda.num * u128::from(c)).min(u128::from(partitions) * lambda.den))
        .sum()
}

/// The smallest `λ` with `Σ min(λ × c, partitions) = budget` over a zone's capacities (sorted
/// descending); `budget` is at most `partitions × len`.
fn zone_level(capacity_desc: &[u64], partitions: u64, budget: u64) -> Ratio {
    let mut rest: u64 = capacity_desc.iter().sum();
    for (k, &c) in capacity_desc.iter().enumerate() {
        // The k largest capacities are capped at `partitions`; the others share the rest.
        let remaining = budget.saturating_sub(k as u64 * partitions);
        let lambda = Ratio::new(remaining.into(), rest.into());
        if lambda.num * u128::from(c) <= u128::from(partitions) * lambda.den {
            return lambda;
        }
        rest -= c;
    }
    // Every node capped: the level where the smallest capacity reaches `partitions`.
    let smallest = capacity_desc.last().copied().unwrap_or(1);
    Ratio::new(partitions.into(), smallest.into())
}

/// Tie-break rank of a node for a partition: a fixed mix of the partition number and the hash
/// of the node id (SplitMix64 finaliser), so that ties do not always favour the same nodes.
fn affinity(partition: usize, node_hash: u64) -> u64 {
    let mut z = node_hash ^ (partition as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A non-negative rational in lowest terms. With at most 2^16 partitions, 2^10 members and
/// capacities below 2^32, every numerator and denominator the water-filling forms is below
/// 2^58 and every product or sum of products compared is below 2^70, far inside `u128`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ratio {
    num: u128,
    den: u128,
}

impl Ratio {
    const ZERO: Ratio = Ratio { num: 0, den: 1 };

    fn new(num: u128, den: u128) -> Self {
        debug_assert!(den > 0);
        let g = gcd(num, den);
        Ratio {
            num: num / g,
            den: den / g,
        }
    }

    fn times(self, factor: u64) -> Self {
        Ratio::new(self.num * u128::from(factor), self.den)
    }

    fn floor(self) -> u128 {
        self.num / self.den
    }

    fn ceil(self) -> u128 {
        self.num.div_ceil(self.den)
    }

    fn to_f64(self) -> f64 {
        self.num as f64 / self.den as f64
    }
}

impl Ord for Ratio {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.num * other.den).cmp(&(other.num * self.den))
    }
}

impl PartialOrd for Ratio {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, zone: &str, capacity: u32) -> NodeSpec {
        NodeSpec::new(NodeId::new(name).expect("valid id"), zone, capacity)
    }

    #[test]
    fn zone_spread_examples() {
        // r = 3 over 3+ zones: one per zone.
        assert_eq!(zone_spread(&[4, 4, 4], 3), (vec![0, 0, 0], vec![1, 1, 1]));
        // r = 3 over 2 zones: 1 or 2 each.
        assert_eq!(zone_spread(&[4, 4], 3), (vec![1, 1], vec![2, 2]));
        // A lone node in its own zone holds every partition.
        assert_eq!(zone_spread(&[1, 10], 3), (vec![1, 1], vec![1, 2]));
        // r = 5, zones of 1 and 10: the small zone cannot hold 3, the big one takes 4.
        assert_eq!(zone_spread(&[1, 10], 5), (vec![1, 3], vec![1, 4]));
    }

    #[test]
    fn shares_are_proportional_when_unconstrained() {
        let members = [node("a", "z", 1), node("b", "z", 2), node("c", "z", 1)];
        let t = targets(&members, 2, 256).expect("valid");
        assert_eq!(t.nodes[&NodeId::new("a").expect("id")].share, 128.0);
        assert_eq!(t.nodes[&NodeId::new("b").expect("id")].share, 256.0);
        // b would want 256 of 512 anyway; now make it want more than one per partition.
        let members = [node("a", "z", 1), node("b", "z", 4), node("c", "z", 1)];
        let t = targets(&members, 2, 256).expect("valid");
        assert_eq!(t.nodes[&NodeId::new("b").expect("id")].share, 256.0);
        assert_eq!(t.nodes[&NodeId::new("a").expect("id")].share, 128.0);
    }

    #[test]
    fn capped_node_spills_onto_whole_cluster() {
        // The example of the module docs: zone A = {4, 1}, zone B = {1, 1, 1, 1}, r = 3.
        let members = [
            node("a1", "A", 4),
            node("a2", "A", 1),
            node("b1", "B", 1),
            node("b2", "B", 1),
            node("b3", "B", 1),
            node("b4", "B", 1),
        ];
        let t = targets(&members, 3, 128).expect("valid");
        let share = |id: &str| t.nodes[&NodeId::new(id).expect("id")].share;
        assert_eq!(share("a1"), 128.0);
        // The remaining 2 × 128 slots go to the five capacity-1 nodes equally.
        assert!((share("a2") - 51.2).abs() < 1e-9);
        assert!((share("b1") - 51.2).abs() < 1e-9);
    }
}

/// The sloppy-quorum stand-ins of one partition (Dynamo §4.6): every member that is not one of
/// its `primaries`, those in zones without a primary first (a zone outage takes primaries and
/// same-zone fallbacks together), then by a hash of (partition, node) so that each partition
/// spreads its fallback load differently. `members` are `(node, zone)` pairs.
pub fn fallback_order<'a>(
    members: impl IntoIterator<Item = (&'a NodeId, &'a str)>,
    partition: u16,
    primaries: &[NodeId],
) -> Vec<NodeId> {
    let members: Vec<(&NodeId, &str)> = members.into_iter().collect();
    let primary_zones: Vec<&str> = members
        .iter()
        .filter(|(id, _)| primaries.contains(id))
        .map(|(_, z)| *z)
        .collect();
    let mut rest: Vec<(bool, u64, NodeId)> = members
        .iter()
        .filter(|(id, _)| !primaries.contains(id))
        .map(|(id, zone)| {
            let rank = crate::keyspace::key_hash(&partition.to_be_bytes(), id.as_str().as_bytes());
            (primary_zones.contains(zone), rank, (*id).clone())
        })
        .collect();
    rest.sort();
    rest.into_iter().map(|(_, _, id)| id).collect()
}

#[cfg(test)]
mod fallback_tests {
    use super::*;

    #[test]
    fn fallbacks_exclude_primaries_and_prefer_other_zones() {
        let ids: Vec<NodeId> = (1..=6)
            .map(|i| NodeId::new(format!("n{i}")).expect("id"))
            .collect();
        let zones = ["a", "b", "a", "b", "c", "c"];
        let members: Vec<(&NodeId, &str)> = ids.iter().zip(zones).collect();
        let primaries = vec![ids[0].clone(), ids[1].clone()];
        for p in 0..64u16 {
            let f = fallback_order(members.iter().copied(), p, &primaries);
            assert_eq!(f.len(), 4);
            assert!(f.iter().all(|n| !primaries.contains(n)));
            // Zone c holds no primary: its nodes come first.
            let first_two: Vec<&str> = f[..2].iter().map(|n| n.as_str()).collect();
            assert!(
                first_two.contains(&"n5") && first_two.contains(&"n6"),
                "{first_two:?}"
            );
        }
        // The rotation differs between partitions.
        let firsts: std::collections::BTreeSet<NodeId> = (0..64u16)
            .map(|p| fallback_order(members.iter().copied(), p, &primaries)[0].clone())
            .collect();
        assert_eq!(firsts.len(), 2);
    }
}
