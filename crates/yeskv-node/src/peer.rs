//! The internode protocol: the envelope of every message one node sends another, and the client
//! seam those messages go through.
//!
//! Each subsystem owns its messages and answers them: replication (`replication.rs`: reads,
//! merges, hints, forwarded writes), anti-entropy (`aae.rs`), the reaper (`reaper.rs`) and the
//! layout's Raft group (`yeskv-layout`). This module only wraps them, so that one connection
//! carries all of them, and [`crate::dispatch`] hands each to its subsystem.
//!
//! Objects travel as stored records (`yeskv_core::codec::encode_record`: format byte + CRC32C),
//! so a replica verifies what it merges end to end, on top of the RPC frame checksum. Causal
//! contexts travel as the same checksummed tokens clients hold. Messages are postcard-encoded by
//! `yeskv-rpc`, whose handshake carries the protocol version (bumped whenever these enums change
//! shape).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aae::{AaeRequest, AaeResponse};
use crate::reaper::{ReapRequest, ReapResponse};
use crate::replication::{ReplicationRequest, ReplicationResponse};
use crate::transfer::{TransferRequest, TransferResponse};

/// A request from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A message of the layout's Raft group (`yeskv-layout`).
    Layout(yeskv_layout::RaftRpc),
    /// Reads, merges, hints and forwarded writes (`replication.rs`).
    Replication(ReplicationRequest),
    /// Anti-entropy exchanges (`aae.rs`).
    Aae(AaeRequest),
    /// Tombstone reaping (`reaper.rs`).
    Reap(ReapRequest),
    /// Partition transfers (`transfer.rs`).
    Transfer(TransferRequest),
}

impl PeerRequest {
    /// The request's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            PeerRequest::Layout(_) => "Layout",
            PeerRequest::Replication(r) => r.name(),
            PeerRequest::Aae(r) => r.name(),
            PeerRequest::Reap(_) => "Reap",
            PeerRequest::Transfer(r) => r.name(),
        }
    }
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The answer to a `Layout` message.
    Layout(yeskv_layout::RaftRpcResponse),
    /// The answer to a `Replication` message.
    Replication(ReplicationResponse),
    /// The answer to an `Aae` message.
    Aae(AaeResponse),
    /// The answer to a `Reap` message.
    Reap(ReapResponse),
    /// The answer to a `Transfer` message.
    Transfer(TransferResponse),
    /// The request failed on the remote node.
    Failed(RemoteError),
}

/// Why a remote request failed, preserving what the client must see.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteError {
    /// The write would exceed the sibling limit.
    TooManySiblings {
        /// Siblings the write would leave.
        count: u32,
        /// The limit.
        max: u32,
    },
    /// The write would make the key's clock too long.
    HistoryTooLong {
        /// Actors the write would leave.
        actors: u32,
        /// The limit.
        max: u32,
    },
    /// The remote's stored record is corrupt.
    Corrupt(String),
    /// The remote could not reach its quorum.
    Quorum {
        /// Needed.
        required: u8,
        /// Reached.
        succeeded: u8,
        /// Why the others failed.
        errors: String,
    },
    /// The request was malformed (e.g. a context token that does not decode).
    BadRequest(String),
    /// Refused before anything was written (storage, shutting down, not a replica).
    Unavailable(String),
    /// Applied, but not known to be durable (see `Error::Indeterminate`).
    Indeterminate(String),
}

impl From<crate::error::Error> for RemoteError {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        match e {
            E::HistoryTooLong { actors, max } => RemoteError::HistoryTooLong {
                actors: actors as u32,
                max: max as u32,
            },
            E::TooManySiblings { count, max } => RemoteError::TooManySiblings {
                count: count as u32,
                max: max as u32,
            },
            E::Corrupt(m) => RemoteError::Corrupt(m),
            E::Quorum {
                required,
                succeeded,
                errors,
            } => RemoteError::Quorum {
                required,
                succeeded,
                errors,
            },
            E::BadRequest(m) | E::TooLarge(m) => RemoteError::BadRequest(m),
            E::InvalidContext(e) => RemoteError::BadRequest(e.to_string()),
            E::ContextRequired => RemoteError::BadRequest("context required".into()),
            E::HintsFull(m) => RemoteError::Unavailable(format!("hints full: {m}")),
            E::Indeterminate(m) => RemoteError::Indeterminate(m),
            other => RemoteError::Unavailable(other.to_string()),
        }
    }
}

impl RemoteError {
    /// The error this node acts on when `node` answered with `self`.
    pub fn at(self, node: &yeskv_core::NodeId) -> crate::error::Error {
        use crate::error::Error as E;
        match self {
            RemoteError::HistoryTooLong { actors, max } => E::HistoryTooLong {
                actors: actors as usize,
                max: max as usize,
            },
            RemoteError::TooManySiblings { count, max } => E::TooManySiblings {
                count: count as usize,
                max: max as usize,
            },
            RemoteError::Corrupt(m) => E::Corrupt(m),
            RemoteError::Quorum {
                required,
                succeeded,
                errors,
            } => E::Quorum {
                required,
                succeeded,
                errors,
            },
            RemoteError::BadRequest(m) => E::BadRequest(m),
            RemoteError::Unavailable(reason) => E::PeerRefused {
                node: node.clone(),
                reason,
            },
            RemoteError::Indeterminate(m) => E::Indeterminate(m),
        }
    }
}

/// A call in flight on a [`PeerClient`].
pub type CallFuture<'a> = yeskv_rpc::CallFuture<'a, PeerResponse>;

/// How a node reaches other nodes: real TCP RPC in the product (a
/// [`yeskv_rpc::RpcClient`] of these messages), a simulated network in the simulator, either
/// wrapped in a chaos layer. Errors are transport failures.
pub trait PeerClient: yeskv_rpc::Call<PeerRequest, PeerResponse> {}

impl<T: yeskv_rpc::Call<PeerRequest, PeerResponse>> PeerClient for T {}

/// The layout group's transport: Raft messages ride the node's own internode RPC client.
pub struct LayoutOverPeers(pub yeskv_rpc::RpcClient<PeerRequest, PeerResponse>);

impl yeskv_rpc::Call<yeskv_layout::RaftRpc, yeskv_layout::RaftRpcResponse> for LayoutOverPeers {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: yeskv_layout::RaftRpc,
        timeout: Duration,
    ) -> yeskv_layout::TransportFuture<'a> {
        Box::pin(async move {
            match self
                .0
                .call(addr, &PeerRequest::Layout(request), timeout)
                .await?
            {
                PeerResponse::Layout(response) => Ok(response),
                other => Err(yeskv_rpc::Error::Decode {
                    reason: format!("expected a layout answer, got {other:?}"),
                }),
            }
        })
    }
}
