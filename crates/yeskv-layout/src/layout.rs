//! The layout model: plain data and pure functions, no I/O, no clock, no Raft.
//!
//! A [`Layout`] is one committed version of the cluster's shape: its members (zone, capacity,
//! state, addresses), the replication factor `n`, the partition count and the
//! [`Assignment`] of every partition to its replicas (primary first). Operators change it in two
//! steps, as in Riak: they *stage* changes ([`StagedChange`]: join a node, leave gracefully, or
//! force out a dead node), look at the [`Plan`] (the new layout and every partition move it
//! causes, before anything happens), and *commit* it. The replicated state is a [`LayoutState`]:
//! the current layout plus the [`Staged`] changes, so that every node shows the same plan.
//!
//! # Commands
//!
//! Every change is a [`Command`], an entry of the Raft log; [`apply`] is the state machine. It is
//! a pure, deterministic function of the state and the command, so every replica that applies
//! the same log computes the same state. A refused command leaves the state unchanged and yields
//! the same [`LayoutError`] on every replica.
//!
//! - [`Command::Bootstrap`]: the first layout of a new cluster (only on an empty state).
//! - [`Command::Stage`]: add one change to the staged set (bumps [`Staged::revision`]).
//! - [`Command::Unstage`]: drop staged changes (bumps the revision).
//! - [`Command::Commit`]: install the next layout version.
//! - [`Command::TransferDone`]: a node has the data of partitions it was syncing.
//! - [`Command::SetBucket`]: a bucket's properties ([`BucketProps`]). Not a layout change: it
//!   moves neither the version nor the epoch, so no node sees a new layout for it.
//! - [`Command::PutKey`], [`Command::RevokeKey`]: add or drop an API key ([`crate::keys`]).
//!   Not layout changes either.
//!
//! # The version invariant
//!
//! *One version names one layout, on every node, forever.* Raft gives every replica the same
//! log; on top of that a commit carries the version and the staged revision it was planned
//! against, and [`apply`] refuses it ([`LayoutError::VersionMismatch`],
//! [`LayoutError::StagedChanged`]) unless both are still current. So two commits prepared
//! concurrently on two nodes against version `v` cannot both succeed: the first one in the log
//! makes `v + 1`, the second is refused with a clear error, and `v + 1` is exactly one layout.
//!
//! A commit also carries the new layout itself, computed once by the proposer with
//! [`yeskv_core::placement::assign`] from the previous assignment (so [`plan`] already minimises
//! moves). Replicas install it after checking it, they do not recompute it: during a rolling
//! upgrade, old and new binaries may place partitions differently, and re-running placement
//! while applying the log (or re-applying it after a restart) would fork the layout. The members
//! are recomputed and must match (that part is simple bookkeeping, not an algorithm that may
//! change), so a commit cannot install something other than the staged changes.
//!
//! # Member states
//!
//! - [`MemberState::Valid`]: an owner; holds the replicas the assignment gives it, and is a Raft
//!   voter.
//! - [`MemberState::Leaving`]: a graceful leave was committed: the node is out of the assignment
//!   (and out of the Raft voters) but stays in the layout, serving as a source of the partitions
//!   it held, until each of them is confirmed on its new holders ([`Command::TransferDone`],
//!   see [`crate::transition`]); the change that releases its last partition drops it. A
//!   forced leave (dead node) drops the node at once.
//!
//! # Epochs
//!
//! [`Layout::version`] counts commits (what operators plan against); [`Layout::epoch`] counts
//! every change of the layout, commits and transfer completions alike. *One epoch names one
//! layout*: nodes route by the layout of the newest epoch they applied.
//! - [`MemberState::Joining`]: never in a committed layout; [`LayoutState::members_view`] shows
//!   nodes with a staged join in this state (known, addresses recorded, owning nothing yet).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::de::Error as _;
use serde::ser::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use yeskv_core::bucket::BucketProps;
use yeskv_core::placement::{self, Assignment, NodeSpec, MEMBERS_MAX, PARTITIONS_MAX};
use yeskv_core::NodeId;

use crate::codec;
use crate::error::LayoutError;
use crate::keys::{self, ApiKey, KEYS_MAX};
use crate::transition::{self, Forced, Transition, Transitions};
use crate::wire;

/// Longest zone name, in bytes.
pub const ZONE_BYTES_MAX: usize = 64;
/// Longest region name, in bytes.
pub const REGION_BYTES_MAX: usize = 64;
/// The region of a node started without one. A cluster whose layout names no regions
/// ([`Layout::replication`] empty) places replicas over all its owners, whatever their region.
pub const DEFAULT_REGION: &str = "default";
/// Most regions a layout's replication may name.
pub const REGIONS_MAX: usize = 8;
/// Most replicas of a partition in one region.
pub const REGION_REPLICAS_MAX: u8 = 15;
/// Most `partitions × replicas per partition` a replication per region may give: a commit
/// entry carries the whole assignment (about 2 bytes per entry), and the layout's Raft sends up
/// to 16 entries in one message under the 16 MiB RPC frame (`service.rs`, `APPEND_ENTRIES_MAX`).
pub const ASSIGNMENT_ENTRIES_MAX: usize = 1 << 18;
/// Longest address (`host:port`), in bytes.
pub const ADDRESS_BYTES_MAX: usize = 256;
/// Longest cluster id, in bytes (the RPC handshake's limit).
pub const CLUSTER_ID_BYTES_MAX: usize = 255;
/// Most changes staged at once (joins plus leaves).
pub const STAGED_CHANGES_MAX: usize = 1024;
/// Longest bucket name whose properties can be set, in bytes (the API's hard limit on a
/// bucket name; `limits.bucket_bytes_max` may only lower it).
pub const BUCKET_BYTES_MAX: usize = 512;
/// Most buckets with properties other than the defaults. Each costs at most about 530 bytes of
/// state, so the buckets add at most about 2 MiB to a snapshot.
pub const BUCKETS_MAX: usize = 4096;

/// Where a member stands (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum MemberState {
    /// Staged to join; owns nothing yet. Only in [`LayoutState::members_view`].
    Joining,
    /// An owner.
    Valid,
    /// Left the assignment in this version; still holds data to hand off.
    Leaving,
}

impl MemberState {
    /// The lowercase name used in `/v1/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberState::Joining => "joining",
            MemberState::Valid => "valid",
            MemberState::Leaving => "leaving",
        }
    }
}

/// One member of a layout.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Member {
    /// Failure domain; replicas of a partition spread over zones. At most [`ZONE_BYTES_MAX`].
    pub zone: String,
    /// Relative weight, at least 1.
    pub capacity: u32,
    /// Owner, or leaving.
    pub state: MemberState,
    /// The node's client HTTP address (`host:port`), published in `/v1/ring`.
    pub http: String,
    /// The node's internode RPC address (`host:port`), also its Raft address.
    pub peer: String,
    /// The region (data centre, cloud region) the node's zone lives in: with
    /// [`Layout::replication`] set, each region holds its own replicas of every partition. At
    /// most [`REGION_BYTES_MAX`]; [`DEFAULT_REGION`] for a node started without one (and for
    /// every member of a layout written before regions existed, format 2 and older).
    pub region: String,
}

impl Member {
    fn from_spec(spec: &JoinSpec, state: MemberState) -> Member {
        Member {
            zone: spec.zone.clone(),
            capacity: spec.capacity,
            state,
            http: spec.http.clone(),
            peer: spec.peer.clone(),
            region: spec.region.clone(),
        }
    }
}

/// A member as formats 1 and 2 wrote it (no region).
#[derive(Deserialize)]
struct MemberV2 {
    zone: String,
    capacity: u32,
    state: MemberState,
    http: String,
    peer: String,
}

#[derive(Deserialize)]
struct MemberV3 {
    zone: String,
    capacity: u32,
    state: MemberState,
    http: String,
    peer: String,
    region: String,
}

impl<'de> Deserialize<'de> for Member {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Member, D::Error> {
        Ok(if codec::reading_format() < 3 {
            let m = MemberV2::deserialize(deserializer)?;
            Member {
                zone: m.zone,
                capacity: m.capacity,
                state: m.state,
                http: m.http,
                peer: m.peer,
                region: DEFAULT_REGION.into(),
            }
        } else {
            let m = MemberV3::deserialize(deserializer)?;
            Member {
                zone: m.zone,
                capacity: m.capacity,
                state: m.state,
                http: m.http,
                peer: m.peer,
                region: m.region,
            }
        })
    }
}

/// What a join records about a node. Joining a node that is already a member updates these
/// (e.g. a capacity change).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct JoinSpec {
    /// See [`Member::zone`].
    pub zone: String,
    /// See [`Member::capacity`].
    pub capacity: u32,
    /// See [`Member::http`].
    pub http: String,
    /// See [`Member::peer`].
    pub peer: String,
    /// See [`Member::region`].
    pub region: String,
}

/// A join spec as formats 1 and 2 wrote it (no region).
#[derive(Deserialize)]
struct JoinSpecV2 {
    zone: String,
    capacity: u32,
    http: String,
    peer: String,
}

#[derive(Deserialize)]
struct JoinSpecV3 {
    zone: String,
    capacity: u32,
    http: String,
    peer: String,
    region: String,
}

impl<'de> Deserialize<'de> for JoinSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JoinSpec, D::Error> {
        Ok(if codec::reading_format() < 3 {
            let s = JoinSpecV2::deserialize(deserializer)?;
            JoinSpec {
                zone: s.zone,
                capacity: s.capacity,
                http: s.http,
                peer: s.peer,
                region: DEFAULT_REGION.into(),
            }
        } else {
            let s = JoinSpecV3::deserialize(deserializer)?;
            JoinSpec {
                zone: s.zone,
                capacity: s.capacity,
                http: s.http,
                peer: s.peer,
                region: s.region,
            }
        })
    }
}

impl JoinSpec {
    /// Checks the limits of every field.
    pub fn validate(&self, node: &NodeId) -> Result<(), LayoutError> {
        let invalid = |reason: String| {
            Err(LayoutError::InvalidJoin {
                node: node.to_string(),
                reason,
            })
        };
        if self.capacity == 0 {
            return invalid("capacity must be at least 1".into());
        }
        if self.zone.len() > ZONE_BYTES_MAX {
            return invalid(format!(
                "zone of {} bytes, at most {ZONE_BYTES_MAX}",
                self.zone.len()
            ));
        }
        if self.region.is_empty() || self.region.len() > REGION_BYTES_MAX {
            return invalid(format!(
                "region must be 1 to {REGION_BYTES_MAX} bytes, got {}",
                self.region.len()
            ));
        }
        for (name, address) in [("http", &self.http), ("peer", &self.peer)] {
            if address.is_empty() || address.len() > ADDRESS_BYTES_MAX {
                return invalid(format!(
                    "{name} address must be 1 to {ADDRESS_BYTES_MAX} bytes, got {}",
                    address.len()
                ));
            }
        }
        Ok(())
    }
}

/// Replicas per region: each named region holds that many replicas of every partition (or as
/// many as it has owners), placed among its own owners. Empty: one implicit region, `n`
/// replicas over every owner. See [`validate_replication`] for the limits.
pub type Replication = BTreeMap<String, u8>;

/// Checks a replication map: at most [`REGIONS_MAX`] regions, names of 1 to
/// [`REGION_BYTES_MAX`] bytes, 1 to [`REGION_REPLICAS_MAX`] replicas each.
pub fn validate_replication(replication: &Replication) -> Result<(), LayoutError> {
    let invalid = |reason: String| Err(LayoutError::InvalidReplication { reason });
    if replication.len() > REGIONS_MAX {
        return invalid(format!(
            "{} regions, at most {REGIONS_MAX}",
            replication.len()
        ));
    }
    for (region, replicas) in replication {
        if region.is_empty() || region.len() > REGION_BYTES_MAX {
            return invalid(format!(
                "region names are 1 to {REGION_BYTES_MAX} bytes, got {}",
                region.len()
            ));
        }
        if *replicas == 0 || *replicas > REGION_REPLICAS_MAX {
            return invalid(format!(
                "region {region:?}: replicas must be 1 to {REGION_REPLICAS_MAX}, got {replicas} \
                 (leave a region out to give it none)"
            ));
        }
    }
    Ok(())
}

/// How a node leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaveMode {
    /// Hand its data to the new owners: the node becomes [`MemberState::Leaving`].
    Graceful,
    /// The node is dead: drop it at once; its replicas are rebuilt from the others. Refused if
    /// some partition would be left without any holder of its data.
    Force,
    /// As [`LeaveMode::Force`], and the operator accepts that partitions whose only copies were
    /// on this node start empty on their new holders.
    ForceAllowDataLoss,
}

impl LeaveMode {
    /// The lowercase name used in plans.
    pub fn as_str(self) -> &'static str {
        match self {
            LeaveMode::Graceful => "graceful",
            LeaveMode::Force => "force",
            LeaveMode::ForceAllowDataLoss => "force_allow_data_loss",
        }
    }

    /// Whether the node is removed at once.
    pub fn is_forced(self) -> bool {
        matches!(self, LeaveMode::Force | LeaveMode::ForceAllowDataLoss)
    }
}

/// One staged change.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StagedChange {
    /// Make `node` an owner with `spec`, or update an owner's spec.
    Join {
        /// The node.
        #[serde(with = "wire::node_id")]
        node: NodeId,
        /// Its zone, capacity and addresses.
        spec: JoinSpec,
    },
    /// Remove `node` from the owners.
    Leave {
        /// The node.
        #[serde(with = "wire::node_id")]
        node: NodeId,
        /// Graceful or forced.
        mode: LeaveMode,
    },
    /// Set the replicas per region ([`Layout::replication`]); replaces any staged one.
    Replication {
        /// Region → replicas.
        regions: Replication,
    },
}

/// The changes waiting for the next commit. A node is in at most one of the two maps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Staged {
    /// Bumped by every stage, unstage and commit: a commit names the revision it was planned
    /// against, so a change staged in between is never committed unseen.
    pub revision: u64,
    /// Nodes to make owners (or owners to update).
    #[serde(with = "wire::node_map")]
    pub joins: BTreeMap<NodeId, JoinSpec>,
    /// Nodes to remove.
    #[serde(with = "wire::node_map")]
    pub leaves: BTreeMap<NodeId, LeaveMode>,
    /// New replicas per region, if staged.
    pub replication: Option<Replication>,
}

/// Staged changes as formats 1 and 2 wrote them (no replication).
#[derive(Deserialize)]
struct StagedV2 {
    revision: u64,
    #[serde(with = "wire::node_map")]
    joins: BTreeMap<NodeId, JoinSpec>,
    #[serde(with = "wire::node_map")]
    leaves: BTreeMap<NodeId, LeaveMode>,
}

#[derive(Deserialize)]
struct StagedV3 {
    revision: u64,
    #[serde(with = "wire::node_map")]
    joins: BTreeMap<NodeId, JoinSpec>,
    #[serde(with = "wire::node_map")]
    leaves: BTreeMap<NodeId, LeaveMode>,
    replication: Option<Replication>,
}

impl<'de> Deserialize<'de> for Staged {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Staged, D::Error> {
        Ok(if codec::reading_format() < 3 {
            let s = StagedV2::deserialize(deserializer)?;
            Staged {
                revision: s.revision,
                joins: s.joins,
                leaves: s.leaves,
                replication: None,
            }
        } else {
            let s = StagedV3::deserialize(deserializer)?;
            Staged {
                revision: s.revision,
                joins: s.joins,
                leaves: s.leaves,
                replication: s.replication,
            }
        })
    }
}

impl Staged {
    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.joins.is_empty() && self.leaves.is_empty() && self.replication.is_none()
    }

    /// Number of staged changes.
    pub fn len(&self) -> usize {
        self.joins.len() + self.leaves.len() + usize::from(self.replication.is_some())
    }
}

/// One committed layout version (see the module docs). Decoding and [`apply`] check
/// [`Layout::validate`], so a layout that came from a peer or a disk keeps its invariants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// 1 for the bootstrap layout, +1 per commit.
    pub version: u64,
    /// 1 for the bootstrap layout, +1 per change of any kind (see the module docs); never less
    /// than `version`.
    pub epoch: u64,
    /// The cluster this layout belongs to.
    pub cluster_id: String,
    /// Replication factor.
    pub n: u8,
    /// Partition count (a power of two).
    pub partitions: u32,
    /// Every member, owners and leaving nodes.
    pub members: BTreeMap<NodeId, Member>,
    /// Target replicas of every partition, primary first; only [`MemberState::Valid`] members.
    pub assignment: Assignment,
    /// Partitions whose holders are changing (see [`crate::transition`]).
    pub transitions: Transitions,
    /// Replicas per region; empty: one implicit region of `n` replicas over every owner (see
    /// [`Replication`]). With regions, a partition's replicas are listed region by region, in
    /// region name order, each region's primary first.
    pub replication: Replication,
}

impl Layout {
    /// The first layout of a new cluster: `node` owns every partition.
    pub fn bootstrap(
        cluster_id: impl Into<String>,
        n: u8,
        partitions: u32,
        node: NodeId,
        spec: JoinSpec,
    ) -> Result<Layout, LayoutError> {
        spec.validate(&node)?;
        let specs = [NodeSpec::new(
            node.clone(),
            spec.zone.clone(),
            spec.capacity,
        )];
        let assignment = placement::assign(&specs, n, partitions, None).map_err(placement_error)?;
        let layout = Layout {
            version: 1,
            epoch: 1,
            cluster_id: cluster_id.into(),
            n,
            partitions,
            members: BTreeMap::from([(node, Member::from_spec(&spec, MemberState::Valid))]),
            assignment,
            transitions: Transitions::new(),
            replication: Replication::new(),
        };
        layout.validate()?;
        Ok(layout)
    }

    /// The region of `node`, if it is a member.
    pub fn region_of(&self, node: &NodeId) -> Option<&str> {
        self.members.get(node).map(|m| m.region.as_str())
    }

    /// Replicas of every partition: `min(n, owners)` without regions, else the sum over the
    /// named regions of `min(replicas, owners in the region)`.
    pub fn replicas_per_partition(&self) -> usize {
        replicas_per_partition(&self.members, self.n, &self.replication)
    }

    /// The owners ([`MemberState::Valid`] members), by id.
    pub fn owners(&self) -> impl Iterator<Item = (&NodeId, &Member)> + '_ {
        self.members
            .iter()
            .filter(|(_, member)| member.state == MemberState::Valid)
    }

    /// The member `node`, if any.
    pub fn member(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// The transition of `partition`, if its holders are changing.
    pub fn transition(&self, partition: u16) -> Option<&Transition> {
        self.transitions.get(&partition)
    }

    /// The nodes trusted to hold every acknowledged write of `partition`: target replicas that
    /// are not syncing, then sources (see [`crate::transition`]).
    pub fn data_holders(&self, partition: u16) -> Vec<NodeId> {
        transition::data_holders(
            self.assignment.replicas(partition),
            self.transition(partition),
        )
    }

    /// Every node a write of `partition` goes to: target replicas, then sources.
    pub fn write_set(&self, partition: u16) -> Vec<NodeId> {
        transition::write_set(
            self.assignment.replicas(partition),
            self.transition(partition),
        )
    }

    /// The partitions `node` is syncing and has not reported yet, each with the epoch since
    /// which it is.
    pub fn syncing_of(&self, node: &NodeId) -> Vec<(u16, u64)> {
        self.transitions
            .iter()
            .filter(|(_, t)| !t.done.contains(node))
            .filter_map(|(p, t)| t.syncing.get(node).map(|since| (*p, *since)))
            .collect()
    }

    /// The owners as the placement sees them.
    pub fn node_specs(&self) -> Vec<NodeSpec> {
        node_specs(&self.members)
    }

    /// A 64-bit digest of the canonical encoding: two layouts with the same digest are equal
    /// (up to XXH3 collisions); cheap to compare across nodes and to log.
    pub fn digest(&self) -> u64 {
        match codec::seal(self) {
            Ok(bytes) => xxhash_rust::xxh3::xxh3_64(&bytes),
            // Only an invalid layout fails to encode; it never reaches a digest in practice.
            Err(_) => 0,
        }
    }

    /// The persisted form: [`codec`] envelope around the postcard encoding.
    pub fn encode(&self) -> Result<Vec<u8>, LayoutError> {
        codec::seal(self)
    }

    /// Reads [`Layout::encode`]'s output; checks the checksum and every invariant.
    pub fn decode(bytes: &[u8]) -> Result<Layout, LayoutError> {
        codec::open(bytes)
    }

    /// Checks the invariants every committed layout keeps:
    /// - version ≥ 1; a cluster id of 1 to [`CLUSTER_ID_BYTES_MAX`] bytes; `n` ≥ 1;
    /// - 1 to [`MEMBERS_MAX`] members, at least one owner, no [`MemberState::Joining`] member,
    ///   every member's fields within their limits, no two members with one peer address;
    /// - the assignment has `partitions` rows of `min(n, owners)` replicas, all owners.
    pub fn validate(&self) -> Result<(), LayoutError> {
        if self.version == 0 {
            return Err(LayoutError::invalid(
                "version 0 is reserved for 'no layout'",
            ));
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return Err(LayoutError::invalid(format!(
                "cluster id must be 1 to {CLUSTER_ID_BYTES_MAX} bytes"
            )));
        }
        if self.n == 0 {
            return Err(LayoutError::invalid("n must be at least 1"));
        }
        if self.epoch < self.version {
            return Err(LayoutError::invalid(format!(
                "epoch {} is below version {}",
                self.epoch, self.version
            )));
        }
        if !self.partitions.is_power_of_two() || self.partitions > PARTITIONS_MAX {
            return Err(LayoutError::invalid(format!(
                "partition count {} is not a power of two up to {PARTITIONS_MAX}",
                self.partitions
            )));
        }
        if self.members.len() > MEMBERS_MAX {
            return Err(LayoutError::invalid(format!(
                "{} members, at most {MEMBERS_MAX}",
                self.members.len()
            )));
        }
        let mut peers = BTreeMap::new();
        for (node, member) in &self.members {
            if member.state == MemberState::Joining {
                return Err(LayoutError::invalid(format!(
                    "member {node} is joining; committed layouts have owners and leaving nodes"
                )));
            }
            let spec = JoinSpec {
                zone: member.zone.clone(),
                capacity: member.capacity,
                http: member.http.clone(),
                peer: member.peer.clone(),
                region: member.region.clone(),
            };
            spec.validate(node)
                .map_err(|error| LayoutError::invalid(error.to_string()))?;
            if let Some(other) = peers.insert(member.peer.as_str(), node) {
                return Err(LayoutError::invalid(format!(
                    "members {other} and {node} share the peer address {}",
                    member.peer
                )));
            }
        }
        let owners = self.owners().count();
        if owners == 0 {
            return Err(LayoutError::invalid("no owning member"));
        }
        if self.assignment.partitions() != self.partitions {
            return Err(LayoutError::invalid(format!(
                "assignment has {} partitions, layout says {}",
                self.assignment.partitions(),
                self.partitions
            )));
        }
        validate_replication(&self.replication)
            .map_err(|error| LayoutError::invalid(error.to_string()))?;
        if let Some(region) = empty_region(&self.members, &self.replication) {
            return Err(LayoutError::invalid(format!(
                "replication names region {region:?}, which has no owner"
            )));
        }
        let width = self.replicas_per_partition();
        if self.assignment.replicas_per_partition() != width {
            return Err(LayoutError::invalid(format!(
                "assignment has {} replicas per partition, expected {width}",
                self.assignment.replicas_per_partition()
            )));
        }
        for (partition, row) in self.assignment.iter() {
            for node in row {
                match self.members.get(node) {
                    Some(member) if member.state == MemberState::Valid => {}
                    _ => {
                        return Err(LayoutError::invalid(format!(
                            "partition {partition} is assigned to {node}, which is not an owner"
                        )))
                    }
                }
            }
        }
        if !self.replication.is_empty() {
            let blocks: Vec<(&str, usize)> = self
                .replication
                .iter()
                .map(|(region, replicas)| {
                    let owners = self.owners().filter(|(_, m)| &m.region == region).count();
                    (region.as_str(), usize::from(*replicas).min(owners))
                })
                .collect();
            for (partition, row) in self.assignment.iter() {
                let mut at = 0;
                for &(region, take) in &blocks {
                    let block = row.get(at..at + take).unwrap_or_default();
                    if block.len() != take
                        || block.iter().any(|n| self.region_of(n) != Some(region))
                    {
                        return Err(LayoutError::invalid(format!(
                            "partition {partition} does not hold {take} replicas in region \
                             {region:?} in region order"
                        )));
                    }
                    at += take;
                }
            }
        }
        transition::validate(&self.assignment, &self.transitions).map_err(LayoutError::invalid)?;
        let sources = transition::all_sources(&self.transitions);
        if let Some(node) = sources.iter().find(|n| !self.members.contains_key(**n)) {
            return Err(LayoutError::invalid(format!(
                "{node} is a source of a partition but not a member"
            )));
        }
        if let Some((node, _)) = self
            .members
            .iter()
            .find(|(id, m)| m.state == MemberState::Leaving && !sources.contains(id))
        {
            return Err(LayoutError::invalid(format!(
                "{node} is leaving but holds no partition for anyone"
            )));
        }
        Ok(())
    }
}

fn node_specs(members: &BTreeMap<NodeId, Member>) -> Vec<NodeSpec> {
    members
        .iter()
        .filter(|(_, member)| member.state == MemberState::Valid)
        .map(|(id, member)| NodeSpec::new(id.clone(), member.zone.clone(), member.capacity))
        .collect()
}

/// See [`Layout::replicas_per_partition`].
fn replicas_per_partition(
    members: &BTreeMap<NodeId, Member>,
    n: u8,
    replication: &Replication,
) -> usize {
    let owners = || members.values().filter(|m| m.state == MemberState::Valid);
    if replication.is_empty() {
        return usize::from(n).min(owners().count());
    }
    replication
        .iter()
        .map(|(region, replicas)| {
            usize::from(*replicas).min(owners().filter(|m| &m.region == region).count())
        })
        .sum()
}

/// A region `replication` names in which no member is an owner, if any.
fn empty_region<'a>(
    members: &BTreeMap<NodeId, Member>,
    replication: &'a Replication,
) -> Option<&'a str> {
    replication
        .keys()
        .find(|region| {
            !members
                .values()
                .any(|m| m.state == MemberState::Valid && &m.region == *region)
        })
        .map(String::as_str)
}

/// Refuses a replication per region that names a region without an owner among `members`, or
/// whose assignment would exceed [`ASSIGNMENT_ENTRIES_MAX`].
fn replication_fits(
    members: &BTreeMap<NodeId, Member>,
    n: u8,
    replication: &Replication,
    partitions: u32,
) -> Result<(), LayoutError> {
    if let Some(region) = empty_region(members, replication) {
        return Err(LayoutError::InvalidReplication {
            reason: format!(
                "region {region:?} would have no owning node (the replication names it: stage \
                 joins of its nodes before it, and leave all of them only after it drops the region)"
            ),
        });
    }
    let width = replicas_per_partition(members, n, replication);
    if width.saturating_mul(partitions as usize) > ASSIGNMENT_ENTRIES_MAX {
        return Err(LayoutError::InvalidReplication {
            reason: format!(
                "{width} replicas per partition × {partitions} partitions exceeds \
                 {ASSIGNMENT_ENTRIES_MAX} assignment entries"
            ),
        });
    }
    Ok(())
}

/// The target assignment for `members` (owners only are placed): one pool of `n` replicas, or
/// per region (see [`Layout::replication`]), with the fewest moves from `previous`.
fn place(
    members: &BTreeMap<NodeId, Member>,
    n: u8,
    replication: &Replication,
    partitions: u32,
    previous: Option<&Assignment>,
) -> Result<Assignment, LayoutError> {
    if replication.is_empty() {
        return placement::assign(&node_specs(members), n, partitions, previous)
            .map_err(placement_error);
    }
    replication_fits(members, n, replication, partitions)?;
    let regions: Vec<(u8, Vec<NodeSpec>)> = replication
        .iter()
        .map(|(region, replicas)| {
            let in_region: BTreeMap<NodeId, Member> = members
                .iter()
                .filter(|(_, m)| &m.region == region)
                .map(|(id, m)| (id.clone(), m.clone()))
                .collect();
            (*replicas, node_specs(&in_region))
        })
        .collect();
    placement::assign_regions(&regions, partitions, previous).map_err(placement_error)
}

fn placement_error(error: placement::PlacementError) -> LayoutError {
    LayoutError::Placement {
        reason: error.to_string(),
    }
}

/// The wire form of a layout (format 2): members in id order, the assignment and the
/// transitions as member indices.
#[derive(Serialize)]
struct LayoutWireRef<'a> {
    version: u64,
    epoch: u64,
    cluster_id: &'a str,
    n: u8,
    partitions: u32,
    members: Vec<(&'a str, &'a Member)>,
    replicas_per_partition: u16,
    table: Vec<u16>,
    transitions: Vec<TransitionWire>,
    replication: &'a Replication,
}

/// One transition on the wire: partition, syncing `(member index, since epoch)`, sources, and
/// the syncing members that reported done.
type TransitionWire = (u16, Vec<(u16, u64)>, Vec<u16>, Vec<u16>);

#[derive(Deserialize)]
struct LayoutWire {
    version: u64,
    epoch: u64,
    cluster_id: String,
    n: u8,
    partitions: u32,
    members: Vec<(String, Member)>,
    replicas_per_partition: u16,
    table: Vec<u16>,
    transitions: Vec<TransitionWire>,
    replication: Replication,
}

/// Format 2 (before regions): read with no replication per region.
#[derive(Deserialize)]
struct LayoutWireV2 {
    version: u64,
    epoch: u64,
    cluster_id: String,
    n: u8,
    partitions: u32,
    members: Vec<(String, Member)>,
    replicas_per_partition: u16,
    table: Vec<u16>,
    transitions: Vec<TransitionWire>,
}

impl From<LayoutWireV2> for LayoutWire {
    fn from(v2: LayoutWireV2) -> LayoutWire {
        LayoutWire {
            version: v2.version,
            epoch: v2.epoch,
            cluster_id: v2.cluster_id,
            n: v2.n,
            partitions: v2.partitions,
            members: v2.members,
            replicas_per_partition: v2.replicas_per_partition,
            table: v2.table,
            transitions: v2.transitions,
            replication: Replication::new(),
        }
    }
}

/// Format 1 (before transitions): read as epoch = version, nothing in transition.
#[derive(Deserialize)]
struct LayoutWireV1 {
    version: u64,
    cluster_id: String,
    n: u8,
    partitions: u32,
    members: Vec<(String, Member)>,
    replicas_per_partition: u16,
    table: Vec<u16>,
}

impl From<LayoutWireV1> for LayoutWire {
    fn from(v1: LayoutWireV1) -> LayoutWire {
        LayoutWire {
            version: v1.version,
            epoch: v1.version,
            cluster_id: v1.cluster_id,
            n: v1.n,
            partitions: v1.partitions,
            members: v1.members,
            replicas_per_partition: v1.replicas_per_partition,
            table: v1.table,
            transitions: Vec::new(),
            replication: Replication::new(),
        }
    }
}

impl Serialize for Layout {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let index: BTreeMap<&NodeId, u16> = self
            .members
            .keys()
            .enumerate()
            .map(|(i, id)| (id, i as u16))
            .collect();
        if self.members.len() > MEMBERS_MAX {
            return Err(S::Error::custom("too many members"));
        }
        let index_of = |node: &NodeId| {
            index
                .get(node)
                .copied()
                .ok_or_else(|| S::Error::custom(format!("{node} is not a member")))
        };
        let mut table = Vec::with_capacity(
            self.assignment.partitions() as usize * self.assignment.replicas_per_partition(),
        );
        for (_, row) in self.assignment.iter() {
            for node in row {
                table.push(index_of(node)?);
            }
        }
        let mut transitions = Vec::with_capacity(self.transitions.len());
        for (partition, t) in &self.transitions {
            let mut syncing = Vec::with_capacity(t.syncing.len());
            for (node, since) in &t.syncing {
                syncing.push((index_of(node)?, *since));
            }
            let mut sources = Vec::with_capacity(t.sources.len());
            for node in &t.sources {
                sources.push(index_of(node)?);
            }
            let mut done = Vec::with_capacity(t.done.len());
            for node in &t.done {
                done.push(index_of(node)?);
            }
            transitions.push((*partition, syncing, sources, done));
        }
        LayoutWireRef {
            version: self.version,
            epoch: self.epoch,
            cluster_id: &self.cluster_id,
            n: self.n,
            partitions: self.partitions,
            members: self
                .members
                .iter()
                .map(|(id, member)| (id.as_str(), member))
                .collect(),
            replicas_per_partition: self.assignment.replicas_per_partition() as u16,
            table,
            transitions,
            replication: &self.replication,
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Layout {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Layout, D::Error> {
        let wire = match codec::reading_format() {
            1 => LayoutWire::from(LayoutWireV1::deserialize(deserializer)?),
            2 => LayoutWire::from(LayoutWireV2::deserialize(deserializer)?),
            _ => LayoutWire::deserialize(deserializer)?,
        };
        Layout::try_from(wire).map_err(D::Error::custom)
    }
}

impl TryFrom<LayoutWire> for Layout {
    type Error = LayoutError;

    fn try_from(wire: LayoutWire) -> Result<Layout, LayoutError> {
        if wire.members.len() > MEMBERS_MAX {
            return Err(LayoutError::invalid("too many members"));
        }
        if !wire.partitions.is_power_of_two() || wire.partitions > PARTITIONS_MAX {
            return Err(LayoutError::invalid(format!(
                "partition count {} is not a power of two up to {PARTITIONS_MAX}",
                wire.partitions
            )));
        }
        let width = usize::from(wire.replicas_per_partition);
        if width == 0 || width > wire.members.len() {
            return Err(LayoutError::invalid(format!(
                "{width} replicas per partition with {} members",
                wire.members.len()
            )));
        }
        if wire.table.len() != wire.partitions as usize * width {
            return Err(LayoutError::invalid(format!(
                "assignment table of {} entries, expected {} × {width}",
                wire.table.len(),
                wire.partitions
            )));
        }
        let mut ids = Vec::with_capacity(wire.members.len());
        let mut members = BTreeMap::new();
        for (id, member) in wire.members {
            let id = NodeId::new(id).map_err(|e| LayoutError::invalid(e.to_string()))?;
            if ids.last().is_some_and(|last| last >= &id) {
                return Err(LayoutError::invalid(
                    "members are not in strictly ascending order",
                ));
            }
            ids.push(id.clone());
            members.insert(id, member);
        }
        let member = |i: u16| {
            ids.get(usize::from(i))
                .cloned()
                .ok_or_else(|| LayoutError::invalid(format!("member index {i} out of range")))
        };
        let mut rows = Vec::with_capacity(wire.partitions as usize);
        for chunk in wire.table.chunks(width) {
            let row = chunk.iter().map(|&i| member(i)).collect::<Result<_, _>>()?;
            rows.push(row);
        }
        let assignment = Assignment::from_replicas(rows).map_err(placement_error)?;
        let mut transitions = Transitions::new();
        for (partition, syncing, sources, done) in wire.transitions {
            let t = Transition {
                syncing: syncing
                    .into_iter()
                    .map(|(i, since)| Ok((member(i)?, since)))
                    .collect::<Result<_, LayoutError>>()?,
                done: done.into_iter().map(member).collect::<Result<_, _>>()?,
                sources: sources.into_iter().map(member).collect::<Result<_, _>>()?,
            };
            if transitions.insert(partition, t).is_some() {
                return Err(LayoutError::invalid(format!(
                    "partition {partition} has two transitions"
                )));
            }
        }
        let layout = Layout {
            version: wire.version,
            epoch: wire.epoch,
            cluster_id: wire.cluster_id,
            n: wire.n,
            partitions: wire.partitions,
            members,
            assignment,
            transitions,
            replication: wire.replication,
        };
        layout.validate()?;
        Ok(layout)
    }
}

/// The replicated state: the committed layout (none before bootstrap), the staged changes and
/// the buckets' properties.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LayoutState {
    /// The current layout; `None` before the cluster is bootstrapped.
    pub layout: Option<Arc<Layout>>,
    /// The changes staged for the next commit.
    pub staged: Staged,
    /// The properties of every bucket whose properties differ from [`BucketProps::default`]
    /// (a bucket set back to the defaults is dropped): at most [`BUCKETS_MAX`], names of 1 to
    /// [`BUCKET_BYTES_MAX`] bytes. Not part of the layout: changing them moves no version.
    pub buckets: BTreeMap<Vec<u8>, BucketProps>,
    /// The API keys by name (at most [`KEYS_MAX`]; see [`crate::keys`]). Not part of the
    /// layout: changing them moves no version.
    pub keys: BTreeMap<String, ApiKey>,
}

/// A state as formats 1 to 3 wrote it (no buckets).
#[derive(Deserialize)]
struct LayoutStateV3 {
    layout: Option<Arc<Layout>>,
    staged: Staged,
}

#[derive(Deserialize)]
struct LayoutStateV4 {
    layout: Option<Arc<Layout>>,
    staged: Staged,
    buckets: BTreeMap<Vec<u8>, BucketProps>,
}

#[derive(Deserialize)]
struct LayoutStateV5 {
    layout: Option<Arc<Layout>>,
    staged: Staged,
    buckets: BTreeMap<Vec<u8>, BucketProps>,
    keys: BTreeMap<String, ApiKey>,
}

impl<'de> Deserialize<'de> for LayoutState {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<LayoutState, D::Error> {
        Ok(match codec::reading_format() {
            ..=3 => {
                let s = LayoutStateV3::deserialize(deserializer)?;
                LayoutState {
                    layout: s.layout,
                    staged: s.staged,
                    buckets: BTreeMap::new(),
                    keys: BTreeMap::new(),
                }
            }
            4 => {
                let s = LayoutStateV4::deserialize(deserializer)?;
                LayoutState {
                    layout: s.layout,
                    staged: s.staged,
                    buckets: s.buckets,
                    keys: BTreeMap::new(),
                }
            }
            _ => {
                let s = LayoutStateV5::deserialize(deserializer)?;
                LayoutState {
                    layout: s.layout,
                    staged: s.staged,
                    buckets: s.buckets,
                    keys: s.keys,
                }
            }
        })
    }
}

impl LayoutState {
    /// The current version, 0 before bootstrap.
    pub fn version(&self) -> u64 {
        self.layout.as_ref().map_or(0, |layout| layout.version)
    }

    /// The plan of the staged changes against the current layout.
    pub fn plan(&self) -> Result<Plan, LayoutError> {
        let layout = self.layout.as_ref().ok_or(LayoutError::NotBootstrapped)?;
        plan(layout, &self.staged)
    }

    /// The state after `command`; see [`apply`].
    pub fn apply(&self, command: &Command) -> Result<LayoutState, LayoutError> {
        apply(self, command)
    }

    /// The properties of `bucket`: the defaults for a bucket never set.
    pub fn bucket_props(&self, bucket: &[u8]) -> BucketProps {
        self.buckets.get(bucket).cloned().unwrap_or_default()
    }

    /// Every node the layout knows of with its state for display: the committed members, plus
    /// nodes with a staged join (not yet members) as [`MemberState::Joining`].
    pub fn members_view(&self) -> BTreeMap<NodeId, Member> {
        let mut view = self
            .layout
            .as_ref()
            .map(|layout| layout.members.clone())
            .unwrap_or_default();
        for (node, spec) in &self.staged.joins {
            view.entry(node.clone())
                .or_insert_with(|| Member::from_spec(spec, MemberState::Joining));
        }
        view
    }

    /// The state as stored in a snapshot.
    pub fn encode(&self) -> Result<Vec<u8>, LayoutError> {
        codec::seal(self)
    }

    /// Reads [`LayoutState::encode`]'s output.
    pub fn decode(bytes: &[u8]) -> Result<LayoutState, LayoutError> {
        codec::open(bytes)
    }
}

/// An entry of the layout's Raft log (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// The first layout of a new cluster; refused unless the state is empty.
    Bootstrap {
        /// Version 1.
        layout: Layout,
    },
    /// Stage one change.
    Stage {
        /// The change.
        change: StagedChange,
    },
    /// Drop the staged changes of these nodes, or all of them if `nodes` is empty.
    Unstage {
        /// The nodes whose staged changes to drop.
        #[serde(with = "wire::node_ids")]
        nodes: Vec<NodeId>,
    },
    /// Install `layout` as the next version, if nothing moved since it was planned.
    Commit {
        /// The version the plan was made against; the commit is refused unless it is current.
        expected_version: u64,
        /// The staged revision the plan was made against; refused unless it is current.
        expected_staged_revision: u64,
        /// The planned layout (version `expected_version + 1`).
        layout: Box<Layout>,
    },
    /// `node` has the data of these partitions (each with the epoch since which it was
    /// syncing it): they leave its syncing sets (see [`crate::transition`]). Written by the
    /// receiving node when a transfer is complete; late or repeated reports change nothing.
    TransferDone {
        /// The node that received the partitions.
        #[serde(with = "wire::node_id")]
        node: NodeId,
        /// `(partition, since epoch)` pairs.
        partitions: Vec<(u16, u64)>,
    },
    /// Set `bucket`'s properties (all of them; the proposer patched the current ones). Refused
    /// only for invalid properties or name, or past [`BUCKETS_MAX`] buckets; whether the bucket
    /// may change its data type (it must hold no data) is checked by the node before it
    /// proposes. Appended last: postcard encodes the variant's index.
    SetBucket {
        /// The bucket's name.
        bucket: Vec<u8>,
        /// Its new properties.
        props: BucketProps,
    },
    /// Add the API key `name`. Refused if a key of that name (or with that hash) exists, past
    /// [`KEYS_MAX`] keys, or for an invalid name or key ([`crate::keys`]). Appended last.
    PutKey {
        /// The key's name.
        name: String,
        /// Its hash and permissions.
        key: ApiKey,
    },
    /// Drop the API key `name`; refused if there is none.
    RevokeKey {
        /// The key's name.
        name: String,
    },
}

impl Command {
    /// A commit of `plan`.
    pub fn commit(plan: &Plan) -> Command {
        Command::Commit {
            expected_version: plan.base_version,
            expected_staged_revision: plan.staged.revision,
            layout: Box::new(plan.layout.clone()),
        }
    }
}

/// The state after `command`, or why `command` is refused (the state is then unchanged).
/// Deterministic: it depends only on its arguments.
pub fn apply(state: &LayoutState, command: &Command) -> Result<LayoutState, LayoutError> {
    match command {
        Command::Bootstrap { layout } => apply_bootstrap(state, layout),
        Command::Stage { change } => apply_stage(state, change),
        Command::Unstage { nodes } => apply_unstage(state, nodes),
        Command::Commit {
            expected_version,
            expected_staged_revision,
            layout,
        } => apply_commit(state, *expected_version, *expected_staged_revision, layout),
        Command::TransferDone { node, partitions } => apply_transfer_done(state, node, partitions),
        Command::SetBucket { bucket, props } => apply_set_bucket(state, bucket, props),
        Command::PutKey { name, key } => apply_put_key(state, name, key),
        Command::RevokeKey { name } => apply_revoke_key(state, name),
    }
}

/// [`Command::PutKey`]: adds a key that is valid and new (by name and by hash).
fn apply_put_key(
    state: &LayoutState,
    name: &str,
    key: &ApiKey,
) -> Result<LayoutState, LayoutError> {
    let invalid = |reason: String| {
        Err(LayoutError::InvalidKey {
            name: name.to_string(),
            reason,
        })
    };
    if let Err(reason) = keys::validate_name(name).and_then(|()| key.validate()) {
        return invalid(reason);
    }
    if state.keys.contains_key(name) {
        return Err(LayoutError::KeyExists {
            name: name.to_string(),
        });
    }
    if state.keys.values().any(|k| k.hash == key.hash) {
        return invalid("another key has the same secret".to_string());
    }
    if state.keys.len() >= KEYS_MAX {
        return invalid(format!(
            "a cluster has at most {KEYS_MAX} keys; revoke one first"
        ));
    }
    let mut next = state.clone();
    next.keys.insert(name.to_string(), key.clone());
    Ok(next)
}

/// [`Command::RevokeKey`]: drops a key that exists.
fn apply_revoke_key(state: &LayoutState, name: &str) -> Result<LayoutState, LayoutError> {
    if !state.keys.contains_key(name) {
        return Err(LayoutError::UnknownKey {
            name: name.to_string(),
        });
    }
    let mut next = state.clone();
    next.keys.remove(name);
    Ok(next)
}

/// [`Command::SetBucket`]: records `bucket`'s properties, or drops its entry when they are the
/// defaults (so a bucket never set and one set back to the defaults are the same state). The
/// layout and the staged changes are untouched: no version, epoch or revision moves.
fn apply_set_bucket(
    state: &LayoutState,
    bucket: &[u8],
    props: &BucketProps,
) -> Result<LayoutState, LayoutError> {
    let invalid = |reason: String| {
        Err(LayoutError::InvalidBucket {
            bucket: String::from_utf8_lossy(bucket).into_owned(),
            reason,
        })
    };
    if bucket.is_empty() || bucket.len() > BUCKET_BYTES_MAX {
        return invalid(format!(
            "a bucket name is 1 to {BUCKET_BYTES_MAX} bytes, got {}",
            bucket.len()
        ));
    }
    if let Err(e) = props.validate() {
        return invalid(e.to_string());
    }
    let mut buckets = state.buckets.clone();
    if *props == BucketProps::default() {
        buckets.remove(bucket);
    } else {
        if !buckets.contains_key(bucket) && buckets.len() >= BUCKETS_MAX {
            return invalid(format!(
                "at most {BUCKETS_MAX} buckets can have properties set; set one back to the \
                 defaults first"
            ));
        }
        buckets.insert(bucket.to_vec(), props.clone());
    }
    Ok(LayoutState {
        layout: state.layout.clone(),
        staged: state.staged.clone(),
        buckets,
        keys: state.keys.clone(),
    })
}

/// [`Command::TransferDone`]: records the completed partitions; when that ends transitions,
/// their sources are released and leaving members that are a source of nothing any more are
/// dropped. The epoch grows only if something changed, so a repeated report is a no-op.
fn apply_transfer_done(
    state: &LayoutState,
    node: &NodeId,
    done: &[(u16, u64)],
) -> Result<LayoutState, LayoutError> {
    let current = state.layout.as_ref().ok_or(LayoutError::NotBootstrapped)?;
    let mut transitions = current.transitions.clone();
    if !transition::record_done(&mut transitions, node, done) {
        return Ok(state.clone());
    }
    let mut next = (**current).clone();
    next.epoch += 1;
    next.members = drop_released(next.members, &transitions);
    next.transitions = transitions;
    next.validate()?;
    Ok(LayoutState {
        layout: Some(Arc::new(next)),
        staged: state.staged.clone(),
        buckets: state.buckets.clone(),
        keys: state.keys.clone(),
    })
}

/// `members` without the leaving members that are a source of no partition in `transitions`.
fn drop_released(
    members: BTreeMap<NodeId, Member>,
    transitions: &Transitions,
) -> BTreeMap<NodeId, Member> {
    let sources = transition::all_sources(transitions);
    members
        .into_iter()
        .filter(|(id, m)| m.state != MemberState::Leaving || sources.contains(id))
        .collect()
}

/// [`Command::Bootstrap`]: installs `layout` as version 1 and clears the staged changes.
/// Refused once a layout exists, and unless `layout` is a valid version 1 whose members are
/// all owners, so every cluster starts from the same kind of first layout.
fn apply_bootstrap(state: &LayoutState, layout: &Layout) -> Result<LayoutState, LayoutError> {
    if let Some(current) = &state.layout {
        return Err(LayoutError::AlreadyBootstrapped {
            version: current.version,
        });
    }
    if layout.version != 1 {
        return Err(LayoutError::invalid(format!(
            "a bootstrap layout has version 1, got {}",
            layout.version
        )));
    }
    layout.validate()?;
    if layout
        .members
        .values()
        .any(|member| member.state != MemberState::Valid)
    {
        return Err(LayoutError::invalid("a bootstrap layout has only owners"));
    }
    Ok(LayoutState {
        layout: Some(Arc::new(layout.clone())),
        staged: Staged {
            revision: state.staged.revision + 1,
            ..Staged::default()
        },
        buckets: state.buckets.clone(),
        keys: state.keys.clone(),
    })
}

/// [`Command::Stage`]: adds `change` to the staged changes and bumps the staged revision.
/// Refused before bootstrap, and when the change itself or the limits on staged changes and
/// members would be broken, so a plan is never made from a staging that cannot commit.
fn apply_stage(state: &LayoutState, change: &StagedChange) -> Result<LayoutState, LayoutError> {
    let layout = state.layout.as_ref().ok_or(LayoutError::NotBootstrapped)?;
    let mut staged = state.staged.clone();
    match change {
        StagedChange::Join { node, spec } => stage_join(layout, &mut staged, node, spec)?,
        StagedChange::Leave { node, mode } => stage_leave(layout, &mut staged, node, *mode)?,
        StagedChange::Replication { regions } => {
            validate_replication(regions)?;
            // Every named region must have an owner once the staged joins and leaves apply
            // (stage the joins of a new region's nodes first), and the assignment must fit.
            replication_fits(
                &next_members(layout, &staged)?,
                layout.n,
                regions,
                layout.partitions,
            )?;
            staged.replication = Some(regions.clone());
        }
    }
    check_staged_limits(layout, &staged)?;
    staged.revision += 1;
    Ok(LayoutState {
        layout: state.layout.clone(),
        staged,
        buckets: state.buckets.clone(),
        keys: state.keys.clone(),
    })
}

/// Stages `node` joining with `spec`, replacing any staged leave of it. Refused if `spec` is
/// invalid or its peer address is already used by another member or staged join: two nodes
/// on one address could not be told apart.
fn stage_join(
    layout: &Layout,
    staged: &mut Staged,
    node: &NodeId,
    spec: &JoinSpec,
) -> Result<(), LayoutError> {
    spec.validate(node)?;
    let peer_taken = layout
        .members
        .iter()
        .map(|(id, member)| (id, &member.peer))
        .chain(staged.joins.iter().map(|(id, spec)| (id, &spec.peer)))
        .find(|(id, peer)| *id != node && **peer == spec.peer);
    if let Some((other, _)) = peer_taken {
        return Err(LayoutError::InvalidJoin {
            node: node.to_string(),
            reason: format!("peer address {} is used by {other}", spec.peer),
        });
    }
    staged.leaves.remove(node);
    staged.joins.insert(node.clone(), spec.clone());
    Ok(())
}

/// Stages `node` leaving in `mode`. A node that is only a staged join has that join dropped
/// instead; a member has any staged join replaced by the leave. Refused for a node the layout
/// and the staging do not know, and for a graceful leave of a member already leaving.
fn stage_leave(
    layout: &Layout,
    staged: &mut Staged,
    node: &NodeId,
    mode: LeaveMode,
) -> Result<(), LayoutError> {
    match layout.members.get(node) {
        None => {
            if staged.joins.remove(node).is_none() {
                return Err(LayoutError::UnknownNode {
                    node: node.to_string(),
                });
            }
        }
        Some(member) => {
            if member.state == MemberState::Leaving && mode == LeaveMode::Graceful {
                return Err(LayoutError::AlreadyLeaving {
                    node: node.to_string(),
                });
            }
            staged.joins.remove(node);
            staged.leaves.insert(node.clone(), mode);
        }
    }
    Ok(())
}

/// Refuses `staged` if it holds more than [`STAGED_CHANGES_MAX`] changes or would bring the
/// layout past [`MEMBERS_MAX`] members, the bounds every plan and commit rely on.
fn check_staged_limits(layout: &Layout, staged: &Staged) -> Result<(), LayoutError> {
    if staged.len() > STAGED_CHANGES_MAX {
        return Err(LayoutError::TooManyStaged {
            max: STAGED_CHANGES_MAX,
        });
    }
    let new_members = staged
        .joins
        .keys()
        .filter(|node| !layout.members.contains_key(*node))
        .count();
    if layout.members.len() + new_members > MEMBERS_MAX {
        return Err(LayoutError::Placement {
            reason: format!("more than {MEMBERS_MAX} members"),
        });
    }
    Ok(())
}

/// [`Command::Unstage`]: drops the staged changes of `nodes` (all of them if `nodes` is empty)
/// and bumps the staged revision. Refused if one of `nodes` has nothing staged, so a typo is
/// reported rather than silently ignored.
fn apply_unstage(state: &LayoutState, nodes: &[NodeId]) -> Result<LayoutState, LayoutError> {
    let mut staged = state.staged.clone();
    if nodes.is_empty() {
        staged.joins.clear();
        staged.leaves.clear();
        staged.replication = None;
    }
    for node in nodes {
        let joined = staged.joins.remove(node).is_some();
        let left = staged.leaves.remove(node).is_some();
        if !joined && !left {
            return Err(LayoutError::NotStaged {
                node: node.to_string(),
            });
        }
    }
    staged.revision += 1;
    Ok(LayoutState {
        layout: state.layout.clone(),
        staged,
        buckets: state.buckets.clone(),
        keys: state.keys.clone(),
    })
}

/// [`Command::Commit`]: installs `proposed` as the next version and clears the staged changes.
/// Refused unless the plan was made against the current version and staged revision and
/// `proposed` is a valid successor, so a plan that raced another change never lands.
fn apply_commit(
    state: &LayoutState,
    expected_version: u64,
    expected_staged_revision: u64,
    proposed: &Layout,
) -> Result<LayoutState, LayoutError> {
    let current = state.layout.as_ref().ok_or(LayoutError::NotBootstrapped)?;
    if expected_version != current.version {
        return Err(LayoutError::VersionMismatch {
            expected: expected_version,
            current: current.version,
        });
    }
    if state.staged.is_empty() {
        return Err(LayoutError::NothingStaged);
    }
    if expected_staged_revision != state.staged.revision {
        return Err(LayoutError::StagedChanged {
            expected: expected_staged_revision,
            current: state.staged.revision,
        });
    }
    check_successor(current, &state.staged, proposed)?;
    Ok(LayoutState {
        layout: Some(Arc::new(proposed.clone())),
        staged: Staged {
            revision: state.staged.revision + 1,
            ..Staged::default()
        },
        buckets: state.buckets.clone(),
        keys: state.keys.clone(),
    })
}

/// Checks that `proposed` is a valid next version of `current` with `staged` applied: same
/// cluster, `n` and partition count, and exactly the layout [`successor`] makes from the
/// staged changes and the proposed assignment. The assignment is checked for shape and
/// ownership, not recomputed (see the module docs); members, transitions and epoch are.
fn check_successor(
    current: &Layout,
    staged: &Staged,
    proposed: &Layout,
) -> Result<(), LayoutError> {
    if proposed.cluster_id != current.cluster_id {
        return Err(LayoutError::ClusterMismatch {
            expected: current.cluster_id.clone(),
            got: proposed.cluster_id.clone(),
        });
    }
    if proposed.version != current.version + 1 {
        return Err(LayoutError::invalid(format!(
            "the layout after version {} must have version {}, got {}",
            current.version,
            current.version + 1,
            proposed.version
        )));
    }
    if proposed.n != current.n || proposed.partitions != current.partitions {
        return Err(LayoutError::invalid(
            "a commit does not change n or the partition count",
        ));
    }
    let members = next_members(current, staged)?;
    let expected = successor(current, staged, members, proposed.assignment.clone())?;
    if expected != *proposed {
        return Err(LayoutError::invalid(
            "the proposed layout is not the staged changes applied to the current layout",
        ));
    }
    Ok(())
}

/// The layout after `staged` is applied to `current`, given the members ([`next_members`]) and
/// the new target assignment: one version and one epoch later, with the transitions of the
/// change ([`transition::after_change`]) and without the leaving members it releases.
fn successor(
    current: &Layout,
    staged: &Staged,
    members: BTreeMap<NodeId, Member>,
    assignment: Assignment,
) -> Result<Layout, LayoutError> {
    let removed: BTreeSet<NodeId> = staged
        .leaves
        .iter()
        .filter(|(_, mode)| mode.is_forced())
        .map(|(node, _)| node.clone())
        .collect();
    let loss_allowed: BTreeSet<NodeId> = staged
        .leaves
        .iter()
        .filter(|(_, mode)| **mode == LeaveMode::ForceAllowDataLoss)
        .map(|(node, _)| node.clone())
        .collect();
    let epoch = current.epoch + 1;
    let transitions = transition::after_change(
        &current.assignment,
        &current.transitions,
        &assignment,
        &Forced {
            removed: &removed,
            loss_allowed: &loss_allowed,
        },
        epoch,
    )?;
    let next = Layout {
        version: current.version + 1,
        epoch,
        cluster_id: current.cluster_id.clone(),
        n: current.n,
        partitions: current.partitions,
        members: drop_released(members, &transitions),
        assignment,
        transitions,
        replication: staged
            .replication
            .clone()
            .unwrap_or_else(|| current.replication.clone()),
    };
    next.validate()?;
    Ok(next)
}

/// The members after `staged` is applied to `layout`: graceful leaves become
/// [`MemberState::Leaving`] (as do members already leaving: [`successor`] drops those that
/// hold nothing for anyone), forced leaves are dropped, joins become (or stay) owners with
/// their new spec.
fn next_members(layout: &Layout, staged: &Staged) -> Result<BTreeMap<NodeId, Member>, LayoutError> {
    let mut members = layout.members.clone();
    for (node, mode) in &staged.leaves {
        if !layout.members.contains_key(node) {
            return Err(LayoutError::UnknownNode {
                node: node.to_string(),
            });
        }
        if mode.is_forced() {
            members.remove(node);
        } else if let Some(member) = members.get_mut(node) {
            member.state = MemberState::Leaving;
        }
    }
    for (node, spec) in &staged.joins {
        members.insert(node.clone(), Member::from_spec(spec, MemberState::Valid));
    }
    if !members.values().any(|m| m.state == MemberState::Valid) {
        return Err(LayoutError::NoOwnersLeft);
    }
    Ok(members)
}

/// One replica changing hands in a plan. `from` is `None` when a partition gains a replica (the
/// cluster grew towards `n` members: copy from any current replica); `to` is `None` when it loses
/// one (the cluster shrank below `n`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionMove {
    /// The partition.
    pub partition: u16,
    /// The replica that gives it up.
    #[serde(with = "option_node_id")]
    pub from: Option<NodeId>,
    /// The replica that takes it.
    #[serde(with = "option_node_id")]
    pub to: Option<NodeId>,
}

mod option_node_id {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use yeskv_core::NodeId;

    pub(crate) fn serialize<S: Serializer>(id: &Option<NodeId>, s: S) -> Result<S::Ok, S::Error> {
        match id {
            Some(id) => s.serialize_some(id.as_str()),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeId>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|id| NodeId::new(id).map_err(D::Error::custom))
            .transpose()
    }
}

/// Replicas a node holds before and after a plan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedChange {
    /// Replicas held in the current layout.
    pub before: usize,
    /// Replicas held in the planned layout.
    pub after: usize,
}

/// What committing the staged changes would do, before anything happens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The version the plan is made against.
    pub base_version: u64,
    /// The staged changes (and their revision) it applies.
    pub staged: Staged,
    /// The layout a commit installs (version `base_version + 1`).
    pub layout: Layout,
    /// Every replica that changes hands, by partition: the fewest possible.
    pub moves: Vec<PartitionMove>,
    /// Replica counts before and after, for every node in either layout.
    pub owned: BTreeMap<NodeId, OwnedChange>,
}

impl Plan {
    /// Number of replicas to copy to a new holder.
    pub fn transfers(&self) -> usize {
        self.moves.iter().filter(|m| m.to.is_some()).count()
    }
}

/// The plan of `staged` against `layout`: the new layout (placement from the previous
/// assignment, hence the fewest moves) and the moves. Refused if nothing is staged, if no owner
/// would remain, or if placement refuses the members.
pub fn plan(layout: &Layout, staged: &Staged) -> Result<Plan, LayoutError> {
    if staged.is_empty() {
        return Err(LayoutError::NothingStaged);
    }
    let members = next_members(layout, staged)?;
    let replication = staged.replication.as_ref().unwrap_or(&layout.replication);
    let assignment = place(
        &members,
        layout.n,
        replication,
        layout.partitions,
        Some(&layout.assignment),
    )?;
    let next = successor(layout, staged, members, assignment)?;
    let moves = moves_between(&layout.assignment, &next.assignment);
    let mut owned: BTreeMap<NodeId, OwnedChange> = BTreeMap::new();
    for (node, (replicas, _)) in layout.assignment.load() {
        owned.entry(node).or_default().before = replicas;
    }
    for (node, (replicas, _)) in next.assignment.load() {
        owned.entry(node).or_default().after = replicas;
    }
    for node in layout.members.keys().chain(next.members.keys()) {
        owned.entry(node.clone()).or_default();
    }
    Ok(Plan {
        base_version: layout.version,
        staged: staged.clone(),
        layout: next,
        moves,
        owned,
    })
}

/// The replicas that change hands from `before` to `after` (same partition count), paired per
/// partition in replica order.
pub fn moves_between(before: &Assignment, after: &Assignment) -> Vec<PartitionMove> {
    let mut moves = Vec::new();
    for (partition, new_row) in after.iter() {
        let old_row = before.replicas(partition);
        let mut gone = old_row.iter().filter(|node| !new_row.contains(node));
        let mut came = new_row.iter().filter(|node| !old_row.contains(node));
        loop {
            match (gone.next(), came.next()) {
                (None, None) => break,
                (from, to) => moves.push(PartitionMove {
                    partition,
                    from: from.cloned(),
                    to: to.cloned(),
                }),
            }
        }
    }
    moves
}

#[cfg(test)]
#[path = "layout_tests.rs"]
mod tests;
