//! # yeskv-layout: the cluster layout, changed by consensus
//!
//! The *layout* is the shape of the cluster: its members (zone, capacity, state, addresses),
//! the replication factor, the partition count, the assignment of every partition to its
//! replicas, and a version number. Every node routes by it, so it must never diverge: two nodes
//! that both say "version 7" must mean the same layout. This crate keeps it in a Raft log
//! (openraft 0.9) among the owning nodes, the way Cassandra moved its ring onto a consensus log
//! (CEP-21, "transactional cluster metadata") after years of gossip-propagated ring changes that
//! could diverge.
//!
//! ## Why Raft for the layout only
//!
//! yeskv's data path is Dynamo's: leaderless, sloppy quorums, hinted handoff, read repair
//! (Dynamo §4). A user read or write never touches this crate's Raft group: it routes with the
//! layout the node already applied ([`LayoutService::current`], a `watch` channel read that
//! never blocks and needs no leader). So a cluster that lost its Raft majority still serves all
//! reads and writes; only membership changes wait until a majority of owners is back. Layout
//! changes are rare, small and must be totally ordered: exactly what consensus is for, and the
//! one thing Dynamo-style gossip gets wrong (two operators committing concurrently could produce
//! two rings of one version).
//!
//! ## The commands and the version invariant
//!
//! The replicated state is a [`LayoutState`]: the committed [`Layout`] plus the [`Staged`]
//! changes, and the buckets' properties (cluster-wide, consistent, and read by every request
//! from the last applied state; they are not part of the layout and move no version). Log
//! entries are [`Command`]s: `Bootstrap`, `Stage`, `Unstage`, `Commit`, `TransferDone`,
//! `SetBucket`, `PutKey`, `RevokeKey` (API keys: [`keys`]). The state machine is the pure function [`layout::apply`]. A `Commit` carries
//! the version and staged revision it was planned against and is refused unless both are still
//! current, so two commits prepared concurrently on different nodes never give two layouts of
//! one version: the second is refused with [`LayoutError::VersionMismatch`]. It also carries
//! the planned layout itself, so replicas never re-run placement while applying the log (see
//! [`layout`]).
//!
//! ## Modules, bottom up
//!
//! - [`layout`]: the pure model: layouts, staged changes, plans (via
//!   [`yeskv_core::placement::assign`], fewest moves), commands, [`apply`].
//! - [`transition`]: partitions in motion: syncing members, sources, data holders and write
//!   sets, completion.
//! - [`codec`]: the versioned, checksummed envelope of everything persisted.
//! - [`store`]: durable Raft state: [`store::MemoryStore`] for tests, [`store::FileStore`]
//!   (append + fsync, CRC per record, torn tail tolerated) for nodes.
//! - [`raft`]: the openraft glue: log store, state machine, network over `yeskv-rpc`
//!   ([`RaftRpc`]).
//! - [`LayoutService`]: what the node starts and calls: `bootstrap_single`, `stage_join`,
//!   `stage_leave`, `plan`, `commit`, `set_bucket`, `current`, `bucket_props`, `subscribe`,
//!   `subscribe_state`, `handle`.
//! - [`LayoutConfig`]: its settings.

#![deny(missing_docs)]

pub mod codec;
mod config;
mod error;
pub mod keys;
pub mod layout;
pub mod raft;
mod service;
pub mod store;
pub mod transition;
mod wire;

pub use config::{LayoutConfig, StorageConfig};
pub use error::{Error, LayoutError, Result};
pub use keys::{Access, ApiKey, KEYS_MAX, KEY_BUCKETS_MAX, KEY_NAME_BYTES_MAX};
pub use layout::{
    apply, plan, Command, JoinSpec, Layout, LayoutState, LeaveMode, Member, MemberState,
    OwnedChange, PartitionMove, Plan, Replication, Staged, StagedChange, ASSIGNMENT_ENTRIES_MAX,
    BUCKETS_MAX, BUCKET_BYTES_MAX, DEFAULT_REGION, REGIONS_MAX, REGION_BYTES_MAX,
    REGION_REPLICAS_MAX,
};
pub use raft::state_machine::AppliedState;
pub use raft::{
    check_snapshot_chunk, raft_id, Forward, ForwardError, ForwardReply, LayoutTransport, PeerNode,
    RaftId, RaftRequest, RaftRpc, RaftRpcResponse, SnapshotChunkTooLarge, TransportFuture,
    SNAPSHOT_BYTES_MAX,
};
pub use service::LayoutService;
pub use transition::{Transition, Transitions};
