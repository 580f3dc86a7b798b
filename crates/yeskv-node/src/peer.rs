//! The internode protocol: the envelope of every message one node sends another, and the client
//! seam those messages go through.
//!
//! Each subsystem owns its messages and answers them: replication (`replication.rs`: reads,
//! merges, hints, forwarded writes), anti-entropy (`aae.rs`), the reaper (`reaper.rs`),
//! transfers (`transfer.rs`), bucket properties (`buckets.rs`) and the layout's Raft group
//! (`yeskv-layout`). This module only wraps them, so that one connection
//! carries all of them, and [`crate::dispatch`] hands each to its subsystem.
//!
//! Objects travel as stored records (`yeskv_core::codec::encode_record`: format byte + CRC32C),
//! so a replica verifies what it merges end to end, on top of the RPC frame checksum. Causal
//! contexts travel as the same checksummed tokens clients hold. Messages are postcard-encoded by
//! `yeskv-rpc`, whose handshake carries the protocol version (bumped whenever these enums change
//! shape).
//!
//! ## What fits in one frame
//! A message carries at most one object (`Merge`, `MergeHint`, a `Read`'s or `ReadHints`'
//! answer; read repair, anti-entropy and handoff each send one object per message) or a
//! transfer batch of at most `transfer.batch_bytes` (and never more than one record past it:
//! `Replica::scan_records`). Around the object, a message adds at most
//! [`ENVELOPE_BYTES_MAX`]: the frame header, the enum tags, the storage key (bucket and key up
//! to 512 bytes each), a node id, length prefixes; a forwarded `Coordinate` carries a value and
//! a context token (16 KiB at most) instead. So a node whose `limits.object_bytes_max` plus
//! [`ENVELOPE_BYTES_MAX`] fits `server.rpc_frame_bytes_max` (checked at start) can move every
//! object a write made.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::aae::{AaeRequest, AaeResponse};
use crate::buckets::{BucketRequest, BucketResponse};
use crate::reaper::{ReapRequest, ReapResponse};
use crate::replication::{ReplicationRequest, ReplicationResponse};
use crate::transfer::{TransferRequest, TransferResponse};

/// Most bytes a peer message adds around the one object record (or one transfer batch's
/// records) it carries, frame header included; see the module docs. Generous: the largest
/// envelope of a message with an object is about 1.1 KiB, of a forwarded `Coordinate` about
/// 17.5 KiB.
pub const ENVELOPE_BYTES_MAX: usize = 64 * 1024;

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
    /// Questions about a bucket before its properties change (`buckets.rs`).
    Buckets(BucketRequest),
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
            PeerRequest::Buckets(r) => r.name(),
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
    /// The answer to a `Buckets` message.
    Buckets(BucketResponse),
}

/// Why a remote request failed, preserving what the client must see.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum RemoteError {
    /// Refused because of what the key or its bucket holds (`409`: another data type).
    Conflict(String),
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
    /// The write would leave the key's object over `limits.object_bytes_max`.
    ObjectTooLarge {
        /// The object's bytes after the write.
        bytes: u64,
        /// Its siblings after the write.
        siblings: u32,
        /// The limit.
        max: u64,
    },
}

impl From<crate::error::Error> for RemoteError {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        match e {
            E::HistoryTooLong { actors, max } => RemoteError::HistoryTooLong {
                actors: actors as u32,
                max: max as u32,
            },
            E::Conflict(m) => RemoteError::Conflict(m),
            E::ObjectTooLarge {
                bytes,
                siblings,
                max,
            } => RemoteError::ObjectTooLarge {
                bytes: bytes as u64,
                siblings: siblings as u32,
                max: max as u64,
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
            RemoteError::Conflict(m) => E::Conflict(m),
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
            RemoteError::ObjectTooLarge {
                bytes,
                siblings,
                max,
            } => E::ObjectTooLarge {
                bytes: usize::try_from(bytes).unwrap_or(usize::MAX),
                siblings: siblings as usize,
                max: usize::try_from(max).unwrap_or(usize::MAX),
            },
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

/// The node's internode RPC client: over plain TCP or mutual TLS ([`yeskv_tls::NodeConnector`]).
pub type PeerRpcClient = yeskv_rpc::RpcClient<PeerRequest, PeerResponse, yeskv_tls::NodeConnector>;

/// The layout group's transport: Raft messages ride the node's own internode RPC client.
pub struct LayoutOverPeers(pub PeerRpcClient);

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

#[cfg(test)]
mod tests {
    use serde_bytes::ByteBuf;
    use yeskv_rpc::frame::encode_message;
    use yeskv_rpc::{FrameKind, FRAME_BYTES_MAX_LIMIT};

    use super::*;
    use crate::error::Error;

    /// Bytes of the frame that carries `message`.
    fn frame_bytes<T: Serialize>(kind: FrameKind, message: &T) -> usize {
        encode_message(kind, u64::MAX, message, FRAME_BYTES_MAX_LIMIT)
            .expect("encodes")
            .len()
    }

    /// The largest envelope of every message that carries an object (or a value), with the
    /// longest bucket, key, node id and context token there can be, stays within
    /// [`ENVELOPE_BYTES_MAX`].
    #[test]
    fn every_message_with_an_object_fits_its_envelope() {
        let limits = crate::config::Limits::default();
        let record = vec![0xa5u8; limits.object_bytes_max];
        let long = vec![b'k'; 512];
        let storage_key = yeskv_core::keyspace::storage_key(u16::MAX, &long, &long);
        let node = "n".repeat(64);
        let requests = [
            ReplicationRequest::Merge {
                key_hash: u64::MAX,
                storage_key: storage_key.clone(),
                record: record.clone(),
            },
            ReplicationRequest::MergeHint {
                target: node.clone(),
                key_hash: u64::MAX,
                storage_key: storage_key.clone(),
                record: record.clone(),
            },
        ];
        let mut largest = 0;
        for request in requests {
            let frame = frame_bytes(FrameKind::Request, &PeerRequest::Replication(request));
            largest = largest.max(frame - record.len());
        }
        let answer = PeerResponse::Replication(ReplicationResponse::Object(Some(ByteBuf::from(
            record.clone(),
        ))));
        largest = largest.max(frame_bytes(FrameKind::Response, &answer) - record.len());
        let batch = PeerResponse::Transfer(TransferResponse::Batch(crate::transfer::Batch {
            records: vec![(ByteBuf::from(storage_key.clone()), ByteBuf::from(record))],
            next: Some(ByteBuf::from(storage_key.clone())),
            checksum: u32::MAX,
        }));
        let batch_bytes = frame_bytes(FrameKind::Response, &batch);
        largest = largest.max(batch_bytes - limits.object_bytes_max - storage_key.len());
        let value = vec![0x5au8; limits.value_bytes_max];
        let coordinate = PeerRequest::Replication(ReplicationRequest::Coordinate {
            bucket: long.clone(),
            key: long,
            context: "A".repeat(yeskv_core::codec::TOKEN_LEN_MAX),
            body: crate::coordinator::WriteBody::Value(value.clone()),
            ttl_secs: Some(u64::MAX),
            w: u8::MAX,
            scope: crate::coordinator::Scope::Local("r".repeat(yeskv_layout::REGION_BYTES_MAX)),
        });
        let coordinate = frame_bytes(FrameKind::Request, &coordinate) - value.len();
        largest = largest.max(coordinate);
        eprintln!("largest envelope: {largest} bytes (a forwarded write: {coordinate})");
        assert!(largest <= ENVELOPE_BYTES_MAX, "{largest}");
    }

    /// A replica's refusal for the object limit reaches the coordinator that forwarded the write
    /// as the same refusal (`413`), not as a bad request or an unavailable peer.
    #[test]
    fn an_object_limit_refusal_crosses_the_wire() {
        let refusal = Error::ObjectTooLarge {
            bytes: 9 << 20,
            siblings: 9,
            max: 8 << 20,
        };
        let node = yeskv_core::NodeId::new("n2").expect("valid");
        let back = RemoteError::from(refusal).at(&node);
        assert!(matches!(
            back,
            Error::ObjectTooLarge {
                bytes: 9437184,
                siblings: 9,
                max: 8388608
            }
        ));
        assert_eq!(back.status(), axum::http::StatusCode::PAYLOAD_TOO_LARGE);
        assert!(back.to_string().contains("limits.object_bytes_max"));
    }
}
