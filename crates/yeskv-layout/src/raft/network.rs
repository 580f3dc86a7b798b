//! The layout group's messages and openraft's `RaftNetwork` over `yeskv-rpc`.
//!
//! A [`RaftRpc`] names the Raft id it is meant for (a node answers [`RaftRpcResponse::WrongNode`]
//! to a message for another id, e.g. after an address was reused) and carries either a Raft
//! protocol message (append entries, vote, install snapshot) or a [`Forward`]: a change a node
//! asks the leader to make on its behalf (stage, unstage, commit, a bucket's properties).
//!
//! The node multiplexes these with its data-path RPC: it wraps [`RaftRpc`] in its own request
//! enum, hands it to [`crate::LayoutService::handle`] in its server, and implements
//! [`yeskv_rpc::Call`] of the layout's messages over its own client, which makes it a
//! [`LayoutTransport`]. A plain `RpcClient<RaftRpc, RaftRpcResponse>` is one too (the standalone
//! server of [`crate::LayoutService::serve`] and the tests).
//!
//! ```
//! use std::time::Duration;
//! use serde::{Deserialize, Serialize};
//! use yeskv_layout::{LayoutService, RaftRpc, RaftRpcResponse, TransportFuture};
//! use yeskv_rpc::{Call, RpcClient};
//!
//! // The node's own messages, with the layout group's inside.
//! #[derive(Serialize, Deserialize)]
//! enum NodeRequest { Ping, Layout(RaftRpc) }
//! #[derive(Serialize, Deserialize)]
//! enum NodeResponse { Pong, Layout(RaftRpcResponse) }
//!
//! struct NodeTransport(RpcClient<NodeRequest, NodeResponse>);
//!
//! impl Call<RaftRpc, RaftRpcResponse> for NodeTransport {
//!     fn call<'a>(&'a self, addr: &'a str, request: RaftRpc, timeout: Duration) -> TransportFuture<'a> {
//!         Box::pin(async move {
//!             match self.0.call(addr, &NodeRequest::Layout(request), timeout).await? {
//!                 NodeResponse::Layout(response) => Ok(response),
//!                 NodeResponse::Pong => Err(yeskv_rpc::Error::Decode {
//!                     reason: "expected a layout response".into(),
//!                 }),
//!             }
//!         })
//!     }
//! }
//!
//! // In the node's RPC handler:
//! async fn handle(layout: &LayoutService, request: NodeRequest) -> NodeResponse {
//!     match request {
//!         NodeRequest::Ping => NodeResponse::Pong,
//!         NodeRequest::Layout(rpc) => NodeResponse::Layout(layout.handle(rpc).await),
//!     }
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    Fatal, InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use yeskv_core::bucket::BucketProps;
use yeskv_core::NodeId;

use super::{Applied, PeerNode, RaftId, TypeConfig};
use crate::error::LayoutError;
use crate::layout::StagedChange;
use crate::wire;

/// One message of the layout group, addressed to one Raft id.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RaftRpc {
    /// The Raft id the sender means to reach.
    pub to: RaftId,
    /// The message.
    pub body: RaftRequest,
}

/// The messages of the layout group.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Raft: replicate entries / heartbeat.
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    /// Raft: request a vote.
    Vote(VoteRequest<RaftId>),
    /// Raft: one chunk of a snapshot.
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    /// A change for the leader to make.
    Forward(Forward),
}

/// The largest layout snapshot a node receives, in bytes: 64 MiB.
///
/// openraft writes each `InstallSnapshot` chunk into an in-memory buffer at the chunk's
/// offset, so a chunk at offset 2^40 would make the receiver allocate a terabyte and abort. A
/// chunk whose end (`offset + data.len()`) lies past this bound is refused before openraft sees
/// it ([`check_snapshot_chunk`]). A layout snapshot is the members, their zones and states, the
/// partition assignment and the bucket properties: kilobytes for hundreds of nodes, so the bound
/// leaves room for thousands of buckets with properties. A leader whose snapshot outgrew it
/// could not bring a new member up to date; the state machine warns when it builds one.
pub const SNAPSHOT_BYTES_MAX: u64 = 64 * 1024 * 1024;

/// An `InstallSnapshot` chunk that would make the snapshot larger than [`SNAPSHOT_BYTES_MAX`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "snapshot chunk of {chunk_bytes} bytes at offset {offset} ends past the largest layout \
     snapshot a node accepts ({SNAPSHOT_BYTES_MAX} bytes)"
)]
pub struct SnapshotChunkTooLarge {
    /// The chunk's offset in the snapshot.
    pub offset: u64,
    /// The chunk's length.
    pub chunk_bytes: u64,
}

/// Checks that a snapshot chunk of `chunk_bytes` bytes at `offset` ends within
/// [`SNAPSHOT_BYTES_MAX`] (pure; [`crate::LayoutService::handle`] calls it on every chunk).
pub fn check_snapshot_chunk(offset: u64, chunk_bytes: usize) -> Result<(), SnapshotChunkTooLarge> {
    let chunk_bytes = chunk_bytes as u64;
    match offset.checked_add(chunk_bytes) {
        Some(end) if end <= SNAPSHOT_BYTES_MAX => Ok(()),
        _ => Err(SnapshotChunkTooLarge {
            offset,
            chunk_bytes,
        }),
    }
}

/// The answer to a chunk [`check_snapshot_chunk`] refused: a write error on the receiver's
/// snapshot, whose message names the bound (the leader logs it; openraft's `InstallSnapshot`
/// answer has no variant for "too large").
pub(crate) fn snapshot_refused(
    rpc: &InstallSnapshotRequest<TypeConfig>,
    error: &SnapshotChunkTooLarge,
) -> RaftError<RaftId, InstallSnapshotError> {
    let io = StorageIOError::write_snapshot(Some(rpc.meta.signature()), error);
    RaftError::Fatal(Fatal::StorageError(StorageError::from(io)))
}

/// A change a node asks the leader to make.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Forward {
    /// Stage one change.
    Stage(StagedChange),
    /// Drop the staged changes of these nodes (all if empty).
    Unstage(#[serde(with = "wire::node_ids")] Vec<NodeId>),
    /// Commit the staged changes, if the layout is still at `expected_version` (when given).
    Commit {
        /// The version the caller planned against; `None` commits whatever is staged now.
        expected_version: Option<u64>,
    },
    /// A node has the data of partitions it was syncing ([`crate::Command::TransferDone`]).
    TransferDone {
        /// The node.
        #[serde(with = "wire::node_id")]
        node: NodeId,
        /// `(partition, since epoch)` pairs.
        partitions: Vec<(u16, u64)>,
    },
    /// Set a bucket's properties ([`crate::Command::SetBucket`]).
    SetBucket {
        /// The bucket.
        bucket: Vec<u8>,
        /// Its new properties (all of them).
        props: BucketProps,
    },
    /// Nothing to change: the leader confirms it still leads and answers the index of its last
    /// committed entry (Raft's read index), which the caller then waits to have applied
    /// ([`crate::LayoutService::catch_up`]).
    ReadIndex,
    /// Add an API key ([`crate::Command::PutKey`]).
    PutKey {
        /// Its name.
        name: String,
        /// Its hash and permissions.
        key: crate::keys::ApiKey,
    },
    /// Drop an API key ([`crate::Command::RevokeKey`]).
    RevokeKey {
        /// Its name.
        name: String,
    },
}

/// The leader's answer to a [`Forward`] that was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardReply {
    /// Index of the log entry that made the change; the caller waits until it applied it too.
    pub log_index: u64,
    /// Version and staged revision after it.
    pub applied: Applied,
}

/// Why a [`Forward`] was not applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ForwardError {
    /// The receiver is not the leader; `leader` is who it thinks is.
    #[error("not the layout leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's Raft id and node, if known.
        leader: Option<(RaftId, PeerNode)>,
    },
    /// The state machine refused the change.
    #[error(transparent)]
    Rejected(LayoutError),
    /// A joining node did not catch up in time.
    #[error("joining node {node} did not catch up: {reason}")]
    JoiningNodeUnreachable {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// Anything else (Raft stopped, membership change in progress, ...); retryable.
    #[error("{reason}")]
    Failed {
        /// Why.
        reason: String,
    },
}

/// Answers to [`RaftRpc`], variant by variant.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRpcResponse {
    /// To [`RaftRequest::AppendEntries`].
    AppendEntries(Result<AppendEntriesResponse<RaftId>, RaftError<RaftId>>),
    /// To [`RaftRequest::Vote`].
    Vote(Result<VoteResponse<RaftId>, RaftError<RaftId>>),
    /// To [`RaftRequest::InstallSnapshot`].
    InstallSnapshot(
        Result<InstallSnapshotResponse<RaftId>, RaftError<RaftId, InstallSnapshotError>>,
    ),
    /// To [`RaftRequest::Forward`].
    Forward(Result<ForwardReply, ForwardError>),
    /// The message was for another Raft id than the receiver's.
    WrongNode {
        /// The receiver's Raft id.
        node: RaftId,
    },
}

/// A call in flight on a [`LayoutTransport`].
pub type TransportFuture<'a> = yeskv_rpc::CallFuture<'a, RaftRpcResponse>;

/// How the layout group reaches other nodes: one request, one response, within a timeout. A
/// plain [`yeskv_rpc::RpcClient`] of the layout's messages is one; a node carries them on its own
/// client instead (see the module docs).
pub trait LayoutTransport: yeskv_rpc::Call<RaftRpc, RaftRpcResponse> {}

impl<T: yeskv_rpc::Call<RaftRpc, RaftRpcResponse>> LayoutTransport for T {}

/// openraft's network factory: one [`Connection`] per target.
#[derive(Clone)]
pub(crate) struct Network {
    pub(crate) transport: Arc<dyn LayoutTransport>,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: RaftId, node: &PeerNode) -> Connection {
        Connection {
            transport: self.transport.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

/// openraft's network to one target.
pub(crate) struct Connection {
    transport: Arc<dyn LayoutTransport>,
    target: RaftId,
    addr: String,
}

/// A transport failure as openraft understands it: a peer we cannot reach is `Unreachable`
/// (openraft backs off), anything else a `Network` error.
fn transport_error<E: std::error::Error>(
    error: &yeskv_rpc::Error,
) -> RPCError<RaftId, PeerNode, E> {
    match error {
        yeskv_rpc::Error::Disconnected { .. }
        | yeskv_rpc::Error::Unreachable { .. }
        | yeskv_rpc::Error::Io(_)
        | yeskv_rpc::Error::Refused { .. } => RPCError::Unreachable(Unreachable::new(error)),
        _ => RPCError::Network(NetworkError::new(error)),
    }
}

fn unexpected<E: std::error::Error>(what: &str) -> RPCError<RaftId, PeerNode, E> {
    RPCError::Network(NetworkError::new(&std::io::Error::other(format!(
        "unexpected response to {what}"
    ))))
}

impl Connection {
    async fn send(
        &self,
        body: RaftRequest,
        timeout: Duration,
    ) -> Result<RaftRpcResponse, yeskv_rpc::Error> {
        let request = RaftRpc {
            to: self.target,
            body,
        };
        self.transport.call(&self.addr, request, timeout).await
    }
}

impl RaftNetwork<TypeConfig> for Connection {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<RaftId>, RPCError<RaftId, PeerNode, RaftError<RaftId>>> {
        match self
            .send(RaftRequest::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftRpcResponse::AppendEntries(Ok(response))) => Ok(response),
            Ok(RaftRpcResponse::AppendEntries(Err(error))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Ok(_) => Err(unexpected("append entries")),
            Err(error) => Err(transport_error(&error)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<RaftId>,
        RPCError<RaftId, PeerNode, RaftError<RaftId, InstallSnapshotError>>,
    > {
        match self
            .send(RaftRequest::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RaftRpcResponse::InstallSnapshot(Ok(response))) => Ok(response),
            Ok(RaftRpcResponse::InstallSnapshot(Err(error))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Ok(_) => Err(unexpected("install snapshot")),
            Err(error) => Err(transport_error(&error)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> Result<VoteResponse<RaftId>, RPCError<RaftId, PeerNode, RaftError<RaftId>>> {
        match self.send(RaftRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(RaftRpcResponse::Vote(Ok(response))) => Ok(response),
            Ok(RaftRpcResponse::Vote(Err(error))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, error)))
            }
            Ok(_) => Err(unexpected("vote")),
            Err(error) => Err(transport_error(&error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_chunk_of_the_issue_is_refused_and_the_bound_itself_is_accepted() {
        // Issue 17: a chunk at offset 2^40 made the receiver allocate ~1 TiB and abort.
        let error = check_snapshot_chunk(1 << 40, 16).expect_err("offset 2^40");
        assert_eq!(
            error,
            SnapshotChunkTooLarge {
                offset: 1 << 40,
                chunk_bytes: 16
            }
        );
        assert!(error.to_string().contains("67108864 bytes"), "{error}");
        check_snapshot_chunk(0, SNAPSHOT_BYTES_MAX as usize).expect("a whole snapshot at 0");
        check_snapshot_chunk(SNAPSHOT_BYTES_MAX, 0).expect("an empty last chunk");
        check_snapshot_chunk(SNAPSHOT_BYTES_MAX, 1).expect_err("one byte past");
        check_snapshot_chunk(u64::MAX, 1).expect_err("an offset that overflows");
    }

    proptest! {
        #[test]
        fn a_chunk_is_accepted_exactly_when_it_ends_within_the_bound(
            offset in prop_oneof![0..2 * SNAPSHOT_BYTES_MAX, any::<u64>()],
            chunk_bytes in 0usize..1 << 20,
        ) {
            let end = u128::from(offset) + chunk_bytes as u128;
            prop_assert_eq!(
                check_snapshot_chunk(offset, chunk_bytes).is_ok(),
                end <= u128::from(SNAPSHOT_BYTES_MAX)
            );
        }
    }
}
