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
//!
//! A node acts only on messages of nodes in its layout ([`Dispatcher::serve_peer`]): a peer
//! that is not a member, nor becomes one within [`MEMBER_GRACE`] (a node just joined applies
//! the layout that names it moments before the others, and its first reads and writes arrive
//! in between), gets `Unavailable` and is counted in
//! `yeskv_peer_refused_total{reason="not_member"}`. The exception is `Layout` (Raft): a joining
//! node talks to the layout group before it is a member, and Raft checks its own membership. A
//! node without a layout yet (starting, joining) takes messages from anyone, as it cannot tell.
//! Who the peer is comes from the RPC handshake: with mutual TLS, the node its certificate
//! names (`yeskv-tls`); over plain TCP, the node id it announced.

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

/// How long a message of a node not in this node's layout waits for a layout that names it
/// before it is refused (module docs).
pub const MEMBER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

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

    /// Answers one message of `peer` if it may send it (module docs).
    pub async fn serve_peer(
        &self,
        peer: &yeskv_rpc::PeerInfo,
        request: PeerRequest,
    ) -> PeerResponse {
        if !matches!(request, PeerRequest::Layout(_)) {
            let topology = self.coordinator.context().topology();
            let node = yeskv_core::NodeId::new(peer.node_id.to_string()).ok();
            let is_member = || node.as_ref().is_some_and(|n| topology.is_member(n));
            let mut member = is_member();
            if !member && node.is_some() {
                let deadline = tokio::time::Instant::now() + MEMBER_GRACE;
                while !member && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    member = is_member();
                }
            }
            if !member {
                metrics::counter!(yeskv_tls::PEER_REFUSED, "reason" => "not_member").increment(1);
                tracing::debug!(peer = %peer.node_id, addr = %peer.addr, message = request.name(),
                    "refused a message of a node that is not in the layout");
                return PeerResponse::Failed(RemoteError::Unavailable(format!(
                    "node {:?} is not in this node's layout",
                    peer.node_id
                )));
            }
        }
        self.serve(request).await
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
