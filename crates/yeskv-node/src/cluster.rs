//! The cluster topology: the [`Topology`] of a node in a multi-node cluster, read from the
//! layout this node last applied (`yeskv-layout`) and from the failure detector.
//!
//! The layout arrives on a `watch` channel from the layout service; each new version is turned
//! once into per-partition preference lists (shared `Arc<[NodeId]>`, so a request never
//! allocates to find its replicas) and swapped in. Requests read the current snapshot under a
//! short read lock and never wait for Raft: with no leader, the last applied layout keeps
//! serving.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::RwLock;
use yeskv_core::NodeId;
use yeskv_layout::Layout;

use crate::topology::Topology;

/// Whether a node is up, as the failure detector sees it.
pub type Liveness = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// The routing view of one layout version.
struct Snapshot {
    version: u64,
    prefs: Vec<Arc<[NodeId]>>,
    fallbacks: Vec<Arc<[NodeId]>>,
    peers: BTreeMap<NodeId, String>,
}

impl Snapshot {
    fn of(layout: &Layout) -> Snapshot {
        let prefs: Vec<Arc<[NodeId]>> = (0..layout.partitions)
            .map(|p| Arc::from(layout.assignment.replicas(p as u16).to_vec()))
            .collect();
        let fallbacks = prefs
            .iter()
            .enumerate()
            .map(|(p, primaries)| Arc::from(fallback_order(layout, p as u16, primaries)))
            .collect();
        let peers = layout
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.peer.clone()))
            .collect();
        Snapshot {
            version: layout.version,
            prefs,
            fallbacks,
            peers,
        }
    }
}

fn fallback_order(layout: &Layout, partition: u16, primaries: &[NodeId]) -> Vec<NodeId> {
    yeskv_core::placement::fallback_order(
        layout.members.iter().map(|(id, m)| (id, m.zone.as_str())),
        partition,
        primaries,
    )
}

/// See the module docs.
pub struct ClusterTopology {
    local: NodeId,
    snapshot: RwLock<Option<Arc<Snapshot>>>,
    liveness: Liveness,
}

impl ClusterTopology {
    /// A topology for `local` that follows `layouts` (spawns a task on the current runtime)
    /// and asks `liveness` whether a node is up.
    pub fn follow(
        local: NodeId,
        mut layouts: tokio::sync::watch::Receiver<Option<Arc<Layout>>>,
        liveness: Liveness,
    ) -> Arc<ClusterTopology> {
        let topology = Arc::new(ClusterTopology {
            local,
            snapshot: RwLock::new(None),
            liveness,
        });
        let current = layouts.borrow_and_update().clone();
        topology.install(current.as_deref());
        let weak = Arc::downgrade(&topology);
        tokio::spawn(async move {
            while layouts.changed().await.is_ok() {
                let Some(t) = weak.upgrade() else { return };
                let layout = layouts.borrow_and_update().clone();
                t.install(layout.as_deref());
            }
        });
        topology
    }

    fn install(&self, layout: Option<&Layout>) {
        if let Some(layout) = layout {
            let snap = Arc::new(Snapshot::of(layout));
            tracing::info!(version = snap.version, "routing by layout");
            *self.snapshot.write() = Some(snap);
        }
    }

    fn snap(&self) -> Option<Arc<Snapshot>> {
        self.snapshot.read().clone()
    }
}

impl Topology for ClusterTopology {
    fn local(&self) -> &NodeId {
        &self.local
    }

    fn preference(&self, partition: u16) -> Arc<[NodeId]> {
        match self.snap() {
            Some(s) => s
                .prefs
                .get(usize::from(partition))
                .cloned()
                .unwrap_or_else(|| Arc::from(Vec::new())),
            // No layout yet (a node that joined the gossip but owns nothing and has not
            // received a layout): no replica is known, requests answer 503.
            None => Arc::from(Vec::new()),
        }
    }

    fn fallbacks(&self, partition: u16) -> Arc<[NodeId]> {
        self.snap()
            .and_then(|s| s.fallbacks.get(usize::from(partition)).cloned())
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    fn peer_addr(&self, node: &NodeId) -> Option<String> {
        self.snap()?.peers.get(node).cloned()
    }

    fn is_up(&self, node: &NodeId) -> bool {
        node == &self.local || (self.liveness)(node)
    }

    fn is_member(&self, node: &NodeId) -> bool {
        self.snap().is_none_or(|s| s.peers.contains_key(node))
    }

    fn layout_version(&self) -> u64 {
        self.snap().map_or(0, |s| s.version)
    }
}
