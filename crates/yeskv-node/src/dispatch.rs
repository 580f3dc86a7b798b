//! The one place a peer's message arrives: each goes to the subsystem that owns it.
//!
//! | message | answered by |
//! |---|---|
//! | `Replication` (`Read`, `ReadHints`, `Merge`, `MergeHint`, `Coordinate`) | [`crate::replication::serve`] |
//! | `Aae` (roots, branches, segments, keys) | [`crate::aae::serve`] |
//! | `Reap` | [`crate::reaper::serve`] |
//! | `Transfer` (batches, sizes) | [`crate::transfer::serve`] |
//! | `Buckets` (does this node hold a bucket's keys) | [`crate::buckets::serve`] |
//! | `Layout` (Raft) | the layout service, when the node runs one |

use std::sync::Arc;

use futures_util::future::BoxFuture;
use yeskv_storage::Engine;

use crate::coordinator::Coordinator;
use crate::peer::{PeerRequest, PeerResponse, RemoteError};

/// Answers the layout group's messages (the node's `yeskv_layout::LayoutService`).
pub type LayoutHandler = Arc<
    dyn Fn(yeskv_layout::RaftRpc) -> BoxFuture<'static, yeskv_layout::RaftRpcResponse>
        + Send
        + Sync,
>;

/// See the module docs.
pub struct Dispatcher<E: Engine> {
    coordinator: Coordinator<E>,
    layout: Option<LayoutHandler>,
}

impl<E: Engine> Clone for Dispatcher<E> {
    fn clone(&self) -> Self {
        Dispatcher {
            coordinator: self.coordinator.clone(),
            layout: self.layout.clone(),
        }
    }
}

impl<E: Engine> Dispatcher<E> {
    /// A dispatcher over the node's coordinator (and its context), with the layout service if
    /// the node runs one.
    pub fn new(coordinator: Coordinator<E>, layout: Option<LayoutHandler>) -> Self {
        Dispatcher {
            coordinator,
            layout,
        }
    }

    /// Answers one message of a peer.
    pub async fn serve(&self, request: PeerRequest) -> PeerResponse {
        let ctx = self.coordinator.context();
        match request {
            PeerRequest::Replication(r) => crate::replication::serve(&self.coordinator, r).await,
            PeerRequest::Aae(r) => crate::aae::serve(ctx, r).await,
            PeerRequest::Reap(r) => crate::reaper::serve(ctx, r).await,
            PeerRequest::Transfer(r) => crate::transfer::serve(ctx, r),
            PeerRequest::Buckets(r) => crate::buckets::serve(ctx, r).await,
            PeerRequest::Layout(rpc) => match &self.layout {
                Some(handle) => PeerResponse::Layout(handle(rpc).await),
                None => PeerResponse::Failed(RemoteError::BadRequest(
                    "this node runs no layout service".into(),
                )),
            },
        }
    }
}
