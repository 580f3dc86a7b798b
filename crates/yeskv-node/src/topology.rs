//! Topology: which nodes hold a key, where they are, and whether they are up.
//!
//! The coordinator asks a [`Topology`] and nothing else about the cluster, so the data path never
//! waits on the consensus layer: the preference lists come from the last layout this node applied,
//! liveness from the failure detector: the node's implementation is
//! [`crate::cluster::ClusterTopology`]; [`StaticTopology`] is a fixed layout for tests and the
//! simulator.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::RwLock;
use yeskv_core::NodeId;

/// What the coordinator needs to know about the cluster (see the module docs).
pub trait Topology: Send + Sync + 'static {
    /// This node.
    fn local(&self) -> &NodeId;
    /// The replicas of `partition`, primaries first (at most `n`, fewer while the cluster is
    /// smaller than `n`).
    fn preference(&self, partition: u16) -> Arc<[NodeId]>;
    /// The nodes that stand in for down primaries of `partition` (sloppy quorum), in the order
    /// to try them: every member that is not a primary, nodes in zones holding no primary
    /// first, then a per-partition rotation so that fallback load spreads over the cluster.
    fn fallbacks(&self, partition: u16) -> Arc<[NodeId]>;
    /// The internode RPC address of `node`, if known.
    fn peer_addr(&self, node: &NodeId) -> Option<String>;
    /// Whether the failure detector believes `node` is up.
    fn is_up(&self, node: &NodeId) -> bool;
    /// Whether `node` is a member of the layout (any state). True while no layout is known:
    /// nothing can be said to have left before a layout says who is in.
    fn is_member(&self, node: &NodeId) -> bool;
    /// The version of the layout the preference lists come from.
    fn layout_version(&self) -> u64;
    /// The nodes trusted to hold every acknowledged write of `partition`: its replicas that
    /// are not syncing it, then the former holders still serving it (`yeskv_layout::transition`).
    /// Reads count only these. The preference list outside a transition.
    fn data_holders(&self, partition: u16) -> Arc<[NodeId]> {
        self.preference(partition)
    }
    /// Every node a write of `partition` goes to: its replicas, then the former holders still
    /// serving it. The preference list outside a transition.
    fn write_set(&self, partition: u16) -> Arc<[NodeId]> {
        self.preference(partition)
    }
    /// Whether `partition`'s holders are changing.
    fn in_transition(&self, _partition: u16) -> bool {
        false
    }
    /// The partitions this node is receiving, each with the layout epoch since which it is.
    fn syncing(&self) -> Vec<(u16, u64)> {
        Vec::new()
    }
    /// The properties of `bucket`: a plain bucket unless the layout state says otherwise.
    fn bucket_props(&self, _bucket: &[u8]) -> yeskv_core::BucketProps {
        yeskv_core::BucketProps::default()
    }
    /// The regions the layout places replicas in (empty without regions).
    fn regions(&self) -> Vec<Arc<str>> {
        Vec::new()
    }

    /// The members of the layout.
    fn members(&self) -> Vec<NodeId> {
        Vec::new()
    }

    /// The region of `node` when the layout places replicas per region (`None` without
    /// regions, and for a node the layout does not know).
    fn region_of(&self, _node: &NodeId) -> Option<Arc<str>> {
        None
    }
}

/// A fixed layout: every partition has the same preference list; liveness is set by hand. For
/// tests and simulation.
pub struct StaticTopology {
    local: NodeId,
    prefs: Arc<[NodeId]>,
    fallbacks: Arc<[NodeId]>,
    addrs: RwLock<BTreeMap<NodeId, String>>,
    down: RwLock<BTreeSet<NodeId>>,
}

impl StaticTopology {
    /// `local` in a cluster where every partition's replicas are `prefs`.
    pub fn new(local: NodeId, prefs: Vec<NodeId>) -> Self {
        StaticTopology {
            local,
            prefs: Arc::from(prefs),
            fallbacks: Arc::from(Vec::new()),
            addrs: RwLock::new(BTreeMap::new()),
            down: RwLock::new(BTreeSet::new()),
        }
    }

    /// Sets the fallbacks of every partition.
    pub fn with_fallbacks(mut self, fallbacks: Vec<NodeId>) -> Self {
        self.fallbacks = Arc::from(fallbacks);
        self
    }

    /// Sets the RPC address of a node.
    pub fn set_addr(&self, node: NodeId, addr: String) {
        self.addrs.write().insert(node, addr);
    }

    /// Marks a node down or up.
    pub fn set_up(&self, node: &NodeId, up: bool) {
        let mut down = self.down.write();
        if up {
            down.remove(node);
        } else {
            down.insert(node.clone());
        }
    }
}

impl Topology for StaticTopology {
    fn local(&self) -> &NodeId {
        &self.local
    }
    fn preference(&self, _partition: u16) -> Arc<[NodeId]> {
        self.prefs.clone()
    }
    fn fallbacks(&self, _partition: u16) -> Arc<[NodeId]> {
        self.fallbacks.clone()
    }
    fn peer_addr(&self, node: &NodeId) -> Option<String> {
        self.addrs.read().get(node).cloned()
    }
    fn is_up(&self, node: &NodeId) -> bool {
        !self.down.read().contains(node)
    }
    fn is_member(&self, node: &NodeId) -> bool {
        self.prefs.contains(node)
            || self.fallbacks.contains(node)
            || self.addrs.read().contains_key(node)
    }
    fn layout_version(&self) -> u64 {
        1
    }
}
