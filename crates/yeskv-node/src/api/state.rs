//! What every HTTP handler shares: the node's coordinator, its layout and membership, limits and
//! identity, the serving state.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use metrics_exporter_prometheus::PrometheusHandle;
use yeskv_core::NodeId;
use yeskv_layout::JoinSpec;
use yeskv_storage::Engine;

use crate::config::Limits;
use crate::coordinator::Coordinator;

/// Where the node finds what a join records about a node (zone, addresses): the gossip view.
pub type Directory = Box<dyn Fn(&NodeId) -> Option<JoinSpec> + Send + Sync>;

/// Serving state, for `/v1/health`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Serving {
    /// Opening storage, not yet taking requests.
    Starting = 0,
    /// Taking requests.
    Serving = 1,
    /// Shutting down: finishing in-flight requests.
    Draining = 2,
}

/// What every handler shares.
pub struct AppState<E: Engine> {
    /// Request coordination.
    pub coordinator: Coordinator<E>,
    /// Request limits.
    pub limits: Limits,
    /// This node.
    pub node_id: NodeId,
    /// Its zone.
    pub zone: String,
    /// Its region.
    pub region: String,
    /// Its client address (as advertised).
    pub http: String,
    /// Its peer address.
    pub peer: String,
    /// Serving state.
    pub serving: AtomicU8,
    /// Prometheus renderer, if this process installed one.
    pub metrics: Option<PrometheusHandle>,
    /// When the node started.
    pub started: Instant,
    /// The cluster layout (Raft-replicated); `/v1/ring` and `/v1/status` are served from it.
    pub layout: yeskv_layout::LayoutService,
    /// The bucket properties the topology answers from, installed at once after a change made
    /// here (`api/buckets.rs`).
    pub buckets: Arc<crate::topology::BucketTable>,
    /// Gossip membership: who is up, and what newcomers announce.
    pub membership: Option<Arc<yeskv_membership::Membership>>,
    /// What a join records about a node, from the membership view.
    pub directory: Directory,
    /// Per-peer internode RPC figures, for `/metrics` (empty for a node with no peer client).
    pub peer_stats: Box<dyn Fn() -> Vec<yeskv_rpc::PeerStats> + Send + Sync>,
    /// The node's background workers, for `/v1/status`.
    pub workers: Vec<Arc<crate::workers::WorkerStatus>>,
}

impl<E: Engine> AppState<E> {
    /// The current serving state.
    pub fn serving(&self) -> Serving {
        match self.serving.load(Ordering::Acquire) {
            0 => Serving::Starting,
            1 => Serving::Serving,
            _ => Serving::Draining,
        }
    }

    /// Changes the serving state.
    pub fn set_serving(&self, s: Serving) {
        self.serving.store(s as u8, Ordering::Release);
    }
}
