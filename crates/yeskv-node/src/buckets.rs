//! Bucket properties on the node: what a change of them asks the other nodes.
//!
//! A bucket's properties (`yeskv_core::bucket::BucketProps`) live in the layout service's
//! replicated state (`yeskv_layout::Command::SetBucket`), so every node applies the same ones;
//! every request reads them from the topology without waiting on anything
//! ([`crate::topology::Topology::bucket_props`], fed by [`crate::topology::BucketTable`]).
//! Operators change them with `PUT /v1/buckets/{bucket}` (`api/buckets.rs`).
//!
//! A change of a bucket's **data type** is allowed only while the bucket holds no data anywhere:
//! values stored as opaque bytes would otherwise be read as a counter's state, or the reverse.
//! So before proposing one, the node asks every member of the layout ([`BucketRequest::HoldsData`],
//! answered by [`serve`]) whether it stores any key of the bucket
//! (`Replica::holds_bucket`: its own copies and the hints it keeps for others, tombstones
//! included, since they are still keys). Every member must answer: one that is believed down
//! or does not answer in time might hold the bucket's only copies, so the change is then
//! refused as unavailable ([`Holders::unasked`]), never decided on a guess.
//!
//! The check and the proposal are two steps, not one transaction: a first write arriving
//! between them lands in a bucket whose type then changes. Types are meant to be chosen before
//! a bucket is used; the check stops the mistake of retyping a bucket in use, it does not fence
//! concurrent writers.
//!
//! This module owns the bucket message and answers it ([`serve`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::{out_of_protocol, Liveness, NodeContext};
use crate::error::Error;
use crate::peer::{PeerRequest, PeerResponse, RemoteError};

/// How long a member may take to tell whether it holds a bucket: one seek per partition (up to
/// 65,536) of its own data and of its hints, far longer than a data-path call.
pub const HOLDS_DATA_TIMEOUT: Duration = Duration::from_secs(30);

/// A question about a bucket, for one node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum BucketRequest {
    /// Does this node store any key of `bucket` (own copies or hints, tombstones included)?
    HoldsData {
        /// The bucket's name.
        #[serde(with = "serde_bytes")]
        bucket: Vec<u8>,
    },
}

impl BucketRequest {
    /// The request's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            BucketRequest::HoldsData { .. } => "HoldsData",
        }
    }
}

/// The answer to a [`BucketRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum BucketResponse {
    /// To `HoldsData`: whether the node stores any key of the bucket.
    HoldsData(bool),
}

/// Answers a bucket message of another node.
pub async fn serve<E: Engine>(ctx: &NodeContext<E>, request: BucketRequest) -> PeerResponse {
    match request {
        BucketRequest::HoldsData { bucket } => match holds_here(ctx, bucket).await {
            Ok(holds) => PeerResponse::Buckets(BucketResponse::HoldsData(holds)),
            Err(e) => PeerResponse::Failed(RemoteError::from(e)),
        },
    }
}

/// Whether this node stores any key of `bucket`, scanned off the async threads.
async fn holds_here<E: Engine>(ctx: &NodeContext<E>, bucket: Vec<u8>) -> Result<bool, Error> {
    if bucket.is_empty() || bucket.len() > yeskv_layout::BUCKET_BYTES_MAX {
        return Err(Error::BadRequest(format!(
            "a bucket name is 1 to {} bytes, got {}",
            yeskv_layout::BUCKET_BYTES_MAX,
            bucket.len()
        )));
    }
    let replica = ctx.replica().clone();
    let partitions = ctx.settings().partitions;
    crate::workers::off_async("scanning for a bucket's keys", move || {
        replica.holds_bucket(&bucket, partitions)
    })
    .await?
}

/// What the members of the layout said about a bucket.
#[derive(Debug, Default)]
pub struct Holders {
    /// The members that store a key of it.
    pub holding: Vec<NodeId>,
    /// The members that could not be asked (down, unreachable, failed), with why.
    pub unasked: Vec<(NodeId, String)>,
}

/// Asks every member of the layout, and this node, whether it stores any key of `bucket` (see
/// the module docs); all at once, each within [`HOLDS_DATA_TIMEOUT`].
pub async fn holders<E: Engine>(ctx: &NodeContext<E>, bucket: &[u8]) -> Holders {
    let local = ctx.local().clone();
    let mut members = ctx.topology().members();
    if !members.contains(&local) {
        members.push(local.clone());
    }
    let answers = futures_util::future::join_all(members.into_iter().map(|node| async {
        let answer = if node == local {
            holds_here(ctx, bucket.to_vec()).await
        } else {
            holds_at(ctx, &node, bucket).await
        };
        (node, answer)
    }))
    .await;
    let mut out = Holders::default();
    for (node, answer) in answers {
        match answer {
            Ok(true) => out.holding.push(node),
            Ok(false) => {}
            Err(e) => {
                tracing::debug!(%node, error = %e, "could not tell whether it holds a bucket");
                let reason = e.of(&node);
                out.unasked.push((node, reason));
            }
        }
    }
    out
}

/// Asks `node` whether it stores any key of `bucket`.
async fn holds_at<E: Engine>(
    ctx: &NodeContext<E>,
    node: &NodeId,
    bucket: &[u8],
) -> Result<bool, Error> {
    let request = PeerRequest::Buckets(BucketRequest::HoldsData {
        bucket: bucket.to_vec(),
    });
    match ctx
        .call_within(node, request, Liveness::IfUp, HOLDS_DATA_TIMEOUT)
        .await?
    {
        PeerResponse::Buckets(BucketResponse::HoldsData(holds)) => Ok(holds),
        other => Err(out_of_protocol(node, "HoldsData", other)),
    }
}
