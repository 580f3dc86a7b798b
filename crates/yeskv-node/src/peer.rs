//! The internode protocol: the messages one node sends another on the data path, and the client
//! seam the coordinator sends them through.
//!
//! Objects travel as stored records (`yeskv_core::codec::encode_record`: format byte + CRC32C),
//! so a replica verifies what it merges end to end, on top of the RPC frame checksum. Causal
//! contexts travel as the same checksummed tokens clients hold. Messages are postcard-encoded by
//! `yeskv-rpc`, whose handshake carries the protocol version.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

/// A request from one node to another.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum PeerRequest {
    /// A message of the layout's Raft group (`yeskv-layout`), multiplexed on the same
    /// connections as the data path.
    Layout(yeskv_layout::RaftRpc),
    /// Return the local object of a key (as a record), if any.
    Read {
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
    },
    /// Merge this object into the local replica (DVV sync) and answer once durable.
    Merge {
        /// The key's hash (selects the stripe lock).
        key_hash: u64,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
        /// The object, as a checksummed record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
    /// Coordinate a client write: the receiver is a replica of the key; it applies the write
    /// with its own actor and replicates it to the key's other replicas.
    Coordinate {
        /// Bucket.
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
        /// Key.
        #[serde(with = "serde_bytes")]
        key: Vec<u8>,
        /// The client's context token (empty = none).
        context: String,
        /// The value; `None` for a delete.
        value: Option<serde_bytes::ByteBuf>,
        /// TTL of the value.
        ttl_secs: Option<u64>,
        /// Durable acknowledgements required (already resolved and capped).
        w: u8,
    },
    /// Return the merge of the hints held for any of `targets` for this key, if any (sloppy
    /// quorum reads).
    ReadHints {
        /// The primaries the hints may be for.
        targets: Vec<String>,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
    },
    /// Anti-entropy: the tree roots of these partitions (`None` where the tree is not ready).
    AaeRoots {
        /// Partitions asked.
        partitions: Vec<u16>,
    },
    /// Anti-entropy: the branch hashes of one partition's tree.
    AaeBranches {
        /// The partition.
        partition: u16,
    },
    /// Anti-entropy: the segment hashes of these branches, concatenated in the order asked.
    AaeSegments {
        /// The partition.
        partition: u16,
        /// Branches asked.
        branches: Vec<u32>,
    },
    /// Anti-entropy: `(storage_key, digest)` of every key in these segments.
    AaeKeys {
        /// The partition.
        partition: u16,
        /// Segments asked (tree-wide numbers).
        segments: Vec<u32>,
    },
    /// Remove a reapable key (tombstones / expired past the grace period) if its object still has
    /// `digest`: sent by the key's first primary once every primary holds the same object.
    Reap {
        /// The key's hash.
        key_hash: u64,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
        /// The digest every primary reported.
        digest: u64,
    },
    /// Merge this object into the hint held for `target` (a stand-in write for a down primary)
    /// and answer once durable.
    MergeHint {
        /// The primary the hint is for.
        target: String,
        /// The key's hash (selects the stripe lock).
        key_hash: u64,
        /// The key's storage key.
        #[serde(with = "serde_bytes")]
        storage_key: Vec<u8>,
        /// The object, as a checksummed record.
        #[serde(with = "serde_bytes")]
        record: Vec<u8>,
    },
}

/// The answer to a [`PeerRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum PeerResponse {
    /// The answer to a `Layout` message.
    Layout(yeskv_layout::RaftRpcResponse),
    /// The object of a `Read`, as a record (`None`: never written here).
    Object(Option<serde_bytes::ByteBuf>),
    /// A `Merge` is durable.
    Merged,
    /// A `Coordinate` reached its quorum; the client's new context token.
    Coordinated {
        /// The context token to hand to the client.
        context: String,
    },
    /// The request failed on the remote node.
    Failed(RemoteError),
    /// Tree roots (`AaeRoots`).
    AaeRoots(Vec<Option<u64>>),
    /// Hashes (`AaeBranches`, `AaeSegments`); `None`: the tree is not ready.
    AaeHashes(Option<Vec<u64>>),
    /// Keys and digests (`AaeKeys`).
    AaeKeys(Vec<(serde_bytes::ByteBuf, u64)>),
    /// Whether a `Reap` removed the key.
    Reaped(bool),
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

impl From<RemoteError> for crate::error::Error {
    fn from(e: RemoteError) -> Self {
        use crate::error::Error as E;
        match e {
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
            RemoteError::Unavailable(m) => E::Storage(m),
            RemoteError::Indeterminate(m) => E::Indeterminate(m),
        }
    }
}

/// How the coordinator reaches other nodes: real TCP RPC in the product, a simulated network in
/// the simulator. Errors are transport failures (timeouts, disconnects), as text.
pub trait PeerClient: Send + Sync + 'static {
    /// Sends `request` to the node at `addr` and waits at most `timeout` for the answer.
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse, String>>;
}

impl<C: yeskv_rpc::Connector> PeerClient for yeskv_rpc::RpcClient<PeerRequest, PeerResponse, C> {
    fn call<'a>(
        &'a self,
        addr: &'a str,
        request: PeerRequest,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<PeerResponse, String>> {
        Box::pin(async move {
            yeskv_rpc::RpcClient::call(self, addr, &request, timeout)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// The layout group's transport: Raft messages ride the node's own internode RPC client.
pub struct LayoutOverPeers(pub yeskv_rpc::RpcClient<PeerRequest, PeerResponse>);

impl yeskv_layout::LayoutTransport for LayoutOverPeers {
    fn call(
        &self,
        addr: String,
        request: yeskv_layout::RaftRpc,
        timeout: Duration,
    ) -> yeskv_layout::TransportFuture<'_> {
        Box::pin(async move {
            match self
                .0
                .call(&addr, &PeerRequest::Layout(request), timeout)
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
