//! The layout's Raft group, on [openraft](https://docs.rs/openraft/0.9) (0.9, the stable line).
//!
//! openraft runs the protocol (elections, replication, joint-consensus membership changes,
//! snapshots); this module supplies the three things it needs from an application:
//!
//! - [`log_store`]: the log and the vote, kept in memory and written through to a durable
//!   [`crate::store::RaftStore`] before openraft is told they are persisted;
//! - [`state_machine`]: the [`crate::LayoutState`], advanced by [`crate::layout::apply`], and
//!   its snapshots; it publishes every applied state to the node without any lock the Raft
//!   engine could hold;
//! - [`network`]: openraft's `RaftNetwork` over `yeskv-rpc`, as the [`RaftRpc`] messages.
//!
//! Raft node ids are 64-bit numbers ([`raft_id`]: XXH3 of the yeskv node id), because openraft
//! needs `Copy` ids; the node's name and peer address travel as the Raft node data
//! ([`PeerNode`]).

// openraft's error types (`StorageError`, `RaftError`) are large, and its traits impose them on
// every method here; boxing them in our own signatures would only add conversions.
#![allow(clippy::result_large_err)]

use std::io::Cursor;

use serde::{Deserialize, Serialize};
use yeskv_core::NodeId;

use crate::error::LayoutError;
use crate::layout::Command;

pub mod log_store;
pub mod network;
pub mod state_machine;

pub use network::{
    check_snapshot_chunk, Forward, ForwardError, ForwardReply, LayoutTransport, RaftRequest,
    RaftRpc, RaftRpcResponse, SnapshotChunkTooLarge, TransportFuture, SNAPSHOT_BYTES_MAX,
};

/// The number Raft knows a node by.
pub type RaftId = u64;

openraft::declare_raft_types!(
    /// openraft's type configuration of the layout group.
    pub TypeConfig:
        D = Command,
        R = CommandOutcome,
        NodeId = RaftId,
        Node = PeerNode,
);

/// A running layout Raft node.
pub type LayoutRaft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log position (term, leader, index).
pub type LogId = openraft::LogId<RaftId>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::Vote<RaftId>;
/// What a snapshot covers.
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, PeerNode>;
/// A membership config and the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<RaftId, PeerNode>;

/// The Raft id of a yeskv node: XXH3-64 of its id, never 0. Every node computes the same id
/// for the same name, so a joining node knows its Raft id before anyone tells it. (Two members
/// with colliding ids would have to be 2^-64 unlucky; the service refuses such a join.)
pub fn raft_id(node: &NodeId) -> RaftId {
    match xxhash_rust::xxh3::xxh3_64(node.as_str().as_bytes()) {
        0 => 1,
        id => id,
    }
}

/// The Raft node data: who a Raft id is and where to reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// The yeskv node id.
    pub name: String,
    /// Its internode RPC address (`host:port`).
    pub addr: String,
}

/// What applying a command did, as far as the proposer cares.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The layout version after the entry (0 before bootstrap).
    pub version: u64,
    /// The staged revision after the entry.
    pub staged_revision: u64,
}

/// The state machine's answer to one log entry: identical on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandOutcome {
    /// The new version and revision, or why the command was refused (state unchanged).
    pub result: Result<Applied, LayoutError>,
}

/// A snapshot as stored: what it covers and the encoded [`crate::LayoutState`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredSnapshot {
    /// Last log id included, membership, snapshot id.
    pub meta: SnapshotMeta,
    /// [`crate::LayoutState::encode`] of the state at `meta.last_log_id`.
    pub data: Vec<u8>,
}

/// The `Cursor` the declared snapshot data type names; kept used for the macro above.
#[allow(dead_code)]
type SnapshotData = Cursor<Vec<u8>>;

#[cfg(test)]
mod tests;
