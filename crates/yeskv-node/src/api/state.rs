//! What every HTTP handler shares: the node's coordinator, its layout and membership, limits and
//! identity, the serving state.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
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
    /// Bounds on request bodies: time to arrive, bytes in flight ([`super::BodyLimits`]).
    pub bodies: super::BodyLimits,
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
    /// Whether this node has caught up with the layout group since it started (see
    /// [`AppState::keys_gate`]).
    pub caught_up: AtomicBool,
    /// Prometheus renderer, if this process installed one.
    pub metrics: Option<PrometheusHandle>,
    /// When the node started.
    pub started: Instant,
    /// The cluster layout (Raft-replicated); `/v1/ring` and `/v1/status` are served from it.
    pub layout: yeskv_layout::LayoutService,
    /// The bucket properties the topology answers from, installed at once after a change made
    /// here (`api/buckets.rs`).
    pub buckets: Arc<crate::topology::BucketTable>,
    /// Whether requests need a key, which are open, and the API keys they are checked
    /// against ([`crate::auth`]; `api/keys.rs` installs a change made here at once).
    pub guard: Arc<crate::auth::Guard>,
    /// Gossip membership: who is up, and what newcomers announce.
    pub membership: Option<Arc<yeskv_membership::Membership>>,
    /// What a join records about a node, from the membership view.
    pub directory: Directory,
    /// Per-peer internode RPC figures, for `/metrics` (empty for a node with no peer client).
    pub peer_stats: Box<dyn Fn() -> Vec<yeskv_rpc::PeerStats> + Send + Sync>,
    /// The internode server's counters (connections, refusals).
    pub peer_server_stats: Box<dyn Fn() -> yeskv_rpc::ServerStats + Send + Sync>,
    /// Where this node's backup checkpoints go (`<data_dir>/backups`, [`crate::backup`]).
    pub backups: std::path::PathBuf,
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

    /// Whether this node may serve a request on a key now, and why not. Not while it starts,
    /// not before it is given a layout (a node waiting to be joined owns nothing and knows no
    /// bucket's type), and not before it has caught up (`server.rs::start_catch_up`: at once
    /// for a node given its first layout; for one restarted on a layout of its own, once it
    /// applied the leader's commit index, [`yeskv_layout::LayoutService::catch_up`], bounded by
    /// the layout's request timeout): a node restarted or rejoined after a bucket was typed
    /// would otherwise take it for a plain bucket for a moment, and store raw bytes in a cart
    /// bucket.
    pub fn keys_gate(&self) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        match self.serving() {
            Serving::Starting => return Err(Error::NotServing("starting")),
            Serving::Serving | Serving::Draining => {}
        }
        if self.coordinator.context().topology().layout_version() == 0 {
            return Err(Error::NotServing(
                "not in the cluster's layout yet (join it with POST /v1/cluster/join)",
            ));
        }
        if !self.caught_up.load(Ordering::Acquire) {
            return Err(Error::NotServing("catching up with the cluster's layout"));
        }
        Ok(())
    }

    /// Marks this node caught up with the layout group (keys are served from now on).
    pub fn set_caught_up(&self) {
        self.caught_up.store(true, Ordering::Release);
    }

    /// Whether the node has a layout but has not caught up with it yet (`/v1/health` answers
    /// `503 catching-up` then; with no layout it answers `200`, so that it can be joined).
    pub fn catching_up(&self) -> bool {
        !self.caught_up.load(Ordering::Acquire)
            && self.coordinator.context().topology().layout_version() > 0
    }
}
