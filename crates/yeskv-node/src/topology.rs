//! Topology: which nodes hold a key, where they are, and whether they are up.
//!
//! The coordinator asks a [`Topology`] and nothing else about the cluster, so the data path never
//! waits on the consensus layer: the preference lists come from the last layout this node applied,
//! liveness from the failure detector: the node's implementation is
//! [`crate::cluster::ClusterTopology`]; [`StaticTopology`] is a fixed layout for tests and the
//! simulator.
//!
//! It also answers every request's first question, what its bucket is
//! ([`Topology::bucket_props`]), from a [`BucketTable`]: the buckets' properties of the layout
//! state this node last applied, swapped in whole when it changes and read without a lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::RwLock;
use yeskv_core::bucket::BucketProps;
use yeskv_core::NodeId;
use yeskv_layout::AppliedState;

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
    /// The epoch of the layout the preference lists come from: it moves with every change of
    /// the layout (a commit, and a transfer completion, which moves no version).
    fn layout_epoch(&self) -> u64 {
        self.layout_version()
    }
    /// A receiver that is told the epoch of every layout this node installs from now on
    /// ([`Topology::layout_epoch`]), for a request that must wait for a newer layout. A
    /// topology whose layout never changes answers one whose sender is gone (`changed()` fails
    /// at once: nothing to wait for).
    fn layout_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(self.layout_epoch()).1
    }
    /// Everything a request of `partition` routes by, from one layout: a layout installed
    /// between the reads of its parts never mixes two layouts' sets.
    fn routes(&self, partition: u16) -> Routes {
        Routes {
            epoch: self.layout_epoch(),
            replicas: self.preference(partition),
            data: self.data_holders(partition),
            writes: self.write_set(partition),
        }
    }
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

    /// The properties of `bucket` in the layout state this node last applied
    /// ([`BucketProps::default`] for a bucket never set). Called by every request: it never
    /// blocks, takes no lock and needs no Raft leader.
    fn bucket_props(&self, _bucket: &[u8]) -> BucketProps {
        BucketProps::default()
    }
}

/// The sets of one partition in one layout ([`Topology::routes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Routes {
    /// The layout's epoch.
    pub epoch: u64,
    /// Its replicas ([`Topology::preference`]).
    pub replicas: Arc<[NodeId]>,
    /// Its data holders ([`Topology::data_holders`]).
    pub data: Arc<[NodeId]>,
    /// Its write set ([`Topology::write_set`]).
    pub writes: Arc<[NodeId]>,
}

/// What a [`BucketTable`] holds: the buckets of one applied layout state.
#[derive(Default)]
struct InstalledBuckets {
    /// The log index of the state they come from (0: none yet).
    applied_index: u64,
    buckets: BTreeMap<Vec<u8>, BucketProps>,
}

/// The buckets' properties as this node last applied them (`yeskv_layout::LayoutState`'s
/// `buckets`), for [`Topology::bucket_props`].
///
/// Readers load the current table through an [`ArcSwap`] (no lock, no write to shared memory
/// beyond arc-swap's per-thread debt slot) and look the bucket up in a `BTreeMap`. A new table
/// is built only when an applied state's buckets differ from the installed ones (bucket changes
/// are operator actions: rare) and swapped in whole. Two paths install: the task of
/// [`crate::cluster::ClusterTopology::follow`], on every state the layout service publishes, and
/// the node that made a change, at once after the change applied ([`BucketTable::install`]), so
/// that it reads its own write. An older state never replaces a newer one.
#[derive(Default)]
pub struct BucketTable {
    current: ArcSwap<InstalledBuckets>,
    /// Serialises installs (readers never take it).
    installing: parking_lot::Mutex<()>,
}

impl BucketTable {
    /// The properties of `bucket` ([`BucketProps::default`] for a bucket never set).
    pub fn props(&self, bucket: &[u8]) -> BucketProps {
        self.current
            .load()
            .buckets
            .get(bucket)
            .cloned()
            .unwrap_or_default()
    }

    /// Installs the buckets of `applied`, unless a state at least as new is installed.
    pub fn install(&self, applied: &AppliedState) {
        let _one_at_a_time = self.installing.lock();
        let current = self.current.load();
        if applied.applied_index <= current.applied_index && current.applied_index > 0 {
            return;
        }
        let buckets = if applied.state.buckets == current.buckets {
            current.buckets.clone()
        } else {
            tracing::info!(
                buckets = applied.state.buckets.len(),
                applied_index = applied.applied_index,
                "bucket properties changed"
            );
            applied.state.buckets.clone()
        };
        self.current.store(Arc::new(InstalledBuckets {
            applied_index: applied.applied_index,
            buckets,
        }));
    }

    /// Sets one bucket's properties by hand (tests and the simulator, which run no layout
    /// service).
    pub fn set(&self, bucket: &[u8], props: BucketProps) {
        let _one_at_a_time = self.installing.lock();
        let current = self.current.load();
        let mut buckets = current.buckets.clone();
        buckets.insert(bucket.to_vec(), props);
        self.current.store(Arc::new(InstalledBuckets {
            applied_index: current.applied_index,
            buckets,
        }));
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
    buckets: Arc<BucketTable>,
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
            buckets: Arc::default(),
        }
    }

    /// The bucket properties it answers ([`BucketTable::set`] them).
    pub fn buckets(&self) -> &Arc<BucketTable> {
        &self.buckets
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
    fn bucket_props(&self, bucket: &[u8]) -> BucketProps {
        self.buckets.props(bucket)
    }
}

#[cfg(test)]
mod tests {
    use yeskv_core::bucket::Datatype;
    use yeskv_layout::{Command, LayoutState};

    use super::*;

    fn applied(index: u64, state: &LayoutState) -> AppliedState {
        AppliedState {
            applied_index: index,
            state: state.clone(),
        }
    }

    #[test]
    fn the_table_follows_applied_states_and_never_goes_back() {
        let table = BucketTable::default();
        assert_eq!(table.props(b"likes"), BucketProps::default());
        let counter = BucketProps {
            datatype: Some(Datatype::Counter),
            ..BucketProps::default()
        };
        let set = LayoutState::default()
            .apply(&Command::SetBucket {
                bucket: b"likes".to_vec(),
                props: counter.clone(),
            })
            .expect("applies");
        table.install(&applied(7, &set));
        assert_eq!(table.props(b"likes"), counter);
        assert_eq!(table.props(b"other"), BucketProps::default());
        // An older state (a late notification) does not undo it.
        table.install(&applied(6, &LayoutState::default()));
        assert_eq!(table.props(b"likes"), counter);
        table.install(&applied(8, &LayoutState::default()));
        assert_eq!(table.props(b"likes"), BucketProps::default());
    }
}
