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
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
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
