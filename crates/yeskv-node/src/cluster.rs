//! The cluster topology: the [`Topology`] of a node in a multi-node cluster, read from the
//! layout this node last applied (`yeskv-layout`) and from the failure detector.
//!
//! The layout arrives on a `watch` channel from the layout service; each new epoch is turned
//! once into per-partition preference lists (and, for partitions in transition, their data
//! holders and write sets) (shared `Arc<[NodeId]>`, so a request never
//! allocates to find its replicas) and swapped in, and its epoch is then announced on a `watch`
//! channel ([`Topology::layout_changes`]: a write re-placed after a replica refused it by a
//! newer layout waits on it). Requests read the current snapshot under a short read lock and
//! never wait for Raft: with no leader, the last applied layout keeps serving.
//!
//! Bucket properties are not part of the layout (changing them moves no epoch, so no new
//! routing snapshot is built for them), but they come on the same channel, the layout
//! service's *applied states*: one task installs each state's buckets into the topology's
//! [`BucketTable`] ([`ClusterTopology::buckets`]) and then its layout, so routing by a layout
//! never pairs it with older bucket properties. [`Topology::bucket_props`] reads them without
//! a lock.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use yeskv_core::NodeId;
use yeskv_layout::{AppliedState, Layout};

use crate::topology::{BucketTable, Topology};

/// Whether a node is up, as the failure detector sees it.
pub type Liveness = Arc<dyn Fn(&NodeId) -> bool + Send + Sync>;

/// How long after its start a node believes the peers its failure detector has not yet heard
/// from: see [`optimistic_at_start`].
pub const STARTUP_GRACE: Duration = Duration::from_secs(10);

/// What the failure detector knows of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Heard {
    /// Up.
    Up,
    /// Seen up since this node started, and down now.
    Down,
    /// Never seen up since this node started (unknown, or only heard of through others).
    NotYet,
}

/// The failure detector's answer, made optimistic for the first `grace` of the node's life: a
/// peer the detector has not heard from yet counts as up (a node that has just started has heard
/// from nobody, and treating every peer as down then sends its reads to empty stand-ins and its
/// writes to fallbacks). A peer seen up once is judged by the detector from then on, and after
/// `grace` every peer is. A peer that really is down is then tried and fails, and the request
/// moves on to the next holder as for any failure.
pub fn optimistic_at_start(
    detector: impl Fn(&NodeId) -> Heard + Send + Sync + 'static,
    grace: Duration,
) -> Liveness {
    let started = Instant::now();
    Arc::new(move |node: &NodeId| match detector(node) {
        Heard::Up => true,
        Heard::Down => false,
        Heard::NotYet => started.elapsed() < grace,
    })
}

/// Data holders and write set of a partition in transition.
#[derive(Clone)]
struct Moving {
    data: Arc<[NodeId]>,
    writes: Arc<[NodeId]>,
}

/// The routing view of one layout epoch.
struct Snapshot {
    version: u64,
    epoch: u64,
    prefs: Vec<Arc<[NodeId]>>,
    fallbacks: Vec<Arc<[NodeId]>>,
    peers: BTreeMap<NodeId, String>,
    /// Partitions in transition (the others use the preference list).
    moving: BTreeMap<u16, Moving>,
    /// What this node is syncing: `(partition, since epoch)`.
    syncing: Vec<(u16, u64)>,
    /// Each member's region, when the layout places replicas per region (else empty).
    regions: BTreeMap<NodeId, Arc<str>>,
    /// The regions the layout places replicas in.
    replicated: Vec<Arc<str>>,
}

impl Snapshot {
    fn of(local: &NodeId, layout: &Layout) -> Snapshot {
        let prefs: Vec<Arc<[NodeId]>> = (0..layout.partitions)
            .map(|p| Arc::from(layout.assignment.replicas(p as u16).to_vec()))
            .collect();
        let moving = layout
            .transitions
            .keys()
            .map(|p| {
                let moving = Moving {
                    data: Arc::from(layout.data_holders(*p)),
                    writes: Arc::from(layout.write_set(*p)),
                };
                (*p, moving)
            })
            .collect();
        // A former holder still serving a partition is in its write set: it answers as itself,
        // so it never also stands in for another holder (one disk counted twice).
        let fallbacks = prefs
            .iter()
            .enumerate()
            .map(|(p, primaries)| {
                let p = p as u16;
                let exclude = match layout.transition(p) {
                    Some(_) => layout.write_set(p),
                    None => primaries.to_vec(),
                };
                Arc::from(fallback_order(layout, p, &exclude))
            })
            .collect();
        let peers = layout
            .members
            .iter()
            .map(|(id, m)| (id.clone(), m.peer.clone()))
            .collect();
        Snapshot {
            version: layout.version,
            epoch: layout.epoch,
            prefs,
            fallbacks,
            peers,
            moving,
            syncing: layout.syncing_of(local),
            replicated: layout
                .replication
                .keys()
                .map(|r| Arc::from(r.as_str()))
                .collect(),
            regions: if layout.replication.is_empty() {
                BTreeMap::new()
            } else {
                layout
                    .members
                    .iter()
                    .map(|(id, m)| (id.clone(), Arc::from(m.region.as_str())))
                    .collect()
            },
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
    buckets: Arc<BucketTable>,
    keys: Arc<crate::auth::KeyTable>,
    /// The epoch of each layout installed ([`Topology::layout_changes`]).
    epochs: tokio::sync::watch::Sender<u64>,
}

impl ClusterTopology {
    /// A topology for `local` that follows the layout service's applied `states` (spawns a
    /// task on the current runtime) and asks `liveness` whether a node is up.
    ///
    /// One task installs each state, its bucket properties before its layout: a request that
    /// routes by a layout reads the bucket properties of that state or of a newer one, never
    /// older (a node that has just been given its first layout never takes a typed bucket for
    /// a plain one).
    pub fn follow(
        local: NodeId,
        mut states: tokio::sync::watch::Receiver<Arc<AppliedState>>,
        liveness: Liveness,
    ) -> Arc<ClusterTopology> {
        let topology = Arc::new(ClusterTopology {
            local,
            snapshot: RwLock::new(None),
            liveness,
            buckets: Arc::default(),
            keys: Arc::default(),
            epochs: tokio::sync::watch::channel(0).0,
        });
        let current = states.borrow_and_update().clone();
        topology.install(&current);
        let weak = Arc::downgrade(&topology);
        tokio::spawn(async move {
            while states.changed().await.is_ok() {
                let Some(t) = weak.upgrade() else { return };
                let applied = states.borrow_and_update().clone();
                t.install(&applied);
            }
        });
        topology
    }

    /// Installs `applied`: its buckets, then its layout if it is not the one routed by.
    fn install(&self, applied: &AppliedState) {
        self.buckets.install(applied);
        self.keys.install(applied);
        let Some(layout) = applied.state.layout.as_deref() else {
            return;
        };
        let unchanged = self
            .snap()
            .is_some_and(|s| s.version == layout.version && s.epoch == layout.epoch);
        if unchanged {
            return;
        }
        let snap = Arc::new(Snapshot::of(&self.local, layout));
        tracing::info!(
            version = snap.version,
            epoch = snap.epoch,
            moving = snap.moving.len(),
            "routing by layout"
        );
        let epoch = snap.epoch;
        *self.snapshot.write() = Some(snap);
        // After the snapshot is in: a waiter woken by it routes by it.
        self.epochs.send_replace(epoch);
    }

    /// The bucket properties [`Topology::bucket_props`] answers from (installed with each
    /// applied state; a node that changed a bucket also installs its own change at once).
    pub fn buckets(&self) -> &Arc<BucketTable> {
        &self.buckets
    }

    /// The API keys requests are checked against (installed with each applied state, like
    /// the buckets; see [`crate::auth`]).
    pub fn keys(&self) -> &Arc<crate::auth::KeyTable> {
        &self.keys
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

    fn layout_epoch(&self) -> u64 {
        self.snap().map_or(0, |s| s.epoch)
    }

    fn layout_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    fn routes(&self, partition: u16) -> crate::topology::Routes {
        let Some(s) = self.snap() else {
            let none: Arc<[NodeId]> = Arc::from(Vec::new());
            return crate::topology::Routes {
                epoch: 0,
                replicas: none.clone(),
                data: none.clone(),
                writes: none,
            };
        };
        let replicas = s
            .prefs
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()));
        let (data, writes) = match s.moving.get(&partition) {
            Some(m) => (m.data.clone(), m.writes.clone()),
            None => (replicas.clone(), replicas.clone()),
        };
        crate::topology::Routes {
            epoch: s.epoch,
            replicas,
            data,
            writes,
        }
    }

    fn data_holders(&self, partition: u16) -> Arc<[NodeId]> {
        match self.snap().and_then(|s| s.moving.get(&partition).cloned()) {
            Some(moving) => moving.data,
            None => self.preference(partition),
        }
    }

    fn write_set(&self, partition: u16) -> Arc<[NodeId]> {
        match self.snap().and_then(|s| s.moving.get(&partition).cloned()) {
            Some(moving) => moving.writes,
            None => self.preference(partition),
        }
    }

    fn in_transition(&self, partition: u16) -> bool {
        self.snap()
            .is_some_and(|s| s.moving.contains_key(&partition))
    }

    fn syncing(&self) -> Vec<(u16, u64)> {
        self.snap().map(|s| s.syncing.clone()).unwrap_or_default()
    }

    fn region_of(&self, node: &NodeId) -> Option<Arc<str>> {
        self.snap()?.regions.get(node).cloned()
    }

    fn regions(&self) -> Vec<Arc<str>> {
        self.snap()
            .map(|s| s.replicated.clone())
            .unwrap_or_default()
    }

    fn members(&self) -> Vec<NodeId> {
        self.snap()
            .map(|s| s.peers.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn bucket_props(&self, bucket: &[u8]) -> yeskv_core::bucket::BucketProps {
        self.buckets.props(bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_not_yet_heard_from_count_as_up_during_the_grace_only() {
        let n2 = NodeId::new("n2").expect("id");
        let at_start = optimistic_at_start(|_| Heard::NotYet, Duration::from_secs(60));
        assert!(at_start(&n2), "not heard from yet: up");
        let down = optimistic_at_start(|_| Heard::Down, Duration::from_secs(60));
        assert!(!down(&n2), "seen up, then down: down");
        let up = optimistic_at_start(|_| Heard::Up, Duration::ZERO);
        assert!(up(&n2));
        let later = optimistic_at_start(|_| Heard::NotYet, Duration::ZERO);
        assert!(!later(&n2), "after the grace the detector decides");
    }

    #[tokio::test]
    async fn each_state_installs_its_buckets_with_its_layout() {
        use yeskv_core::bucket::{BucketProps, Datatype};
        use yeskv_layout::{Command, JoinSpec, LayoutState};

        let n1 = NodeId::new("n1").expect("id");
        let spec = JoinSpec {
            zone: "z1".into(),
            capacity: 1,
            http: "127.0.0.1:1".into(),
            peer: "127.0.0.1:2".into(),
            region: "r1".into(),
        };
        let layout = Layout::bootstrap("c", 1, 16, n1.clone(), spec).expect("layout");
        let cart = BucketProps {
            datatype: Some(Datatype::Cart),
            ..BucketProps::default()
        };
        let typed = LayoutState::default()
            .apply(&Command::SetBucket {
                bucket: b"carts".to_vec(),
                props: cart.clone(),
            })
            .expect("applies");
        let applied = |index: u64, state: LayoutState| {
            Arc::new(AppliedState {
                applied_index: index,
                state,
            })
        };
        // The node starts with no layout: every bucket is plain, nothing routes.
        let (sender, receiver) = tokio::sync::watch::channel(applied(0, LayoutState::default()));
        let topology = ClusterTopology::follow(n1.clone(), receiver, Arc::new(|_: &NodeId| true));
        assert_eq!(topology.layout_version(), 0);
        assert_eq!(topology.bucket_props(b"carts"), BucketProps::default());
        // Its first layout comes in a state that also types a bucket: whoever sees the one
        // sees the other.
        let mut joined = typed.clone();
        joined.layout = Some(Arc::new(layout.clone()));
        sender.send_replace(applied(2, joined.clone()));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while topology.layout_version() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never installed");
            tokio::task::yield_now().await;
        }
        assert_eq!(topology.bucket_props(b"carts"), cart);
        assert_eq!(&*topology.preference(0), std::slice::from_ref(&n1));
        // A bucket change alone leaves the routing snapshot as it was.
        let before = topology.snap().expect("routing");
        let plain = joined
            .apply(&Command::SetBucket {
                bucket: b"carts".to_vec(),
                props: BucketProps::default(),
            })
            .expect("applies");
        sender.send_replace(applied(3, plain));
        while topology.bucket_props(b"carts") != BucketProps::default() {
            assert!(tokio::time::Instant::now() < deadline, "never installed");
            tokio::task::yield_now().await;
        }
        assert!(Arc::ptr_eq(&before, &topology.snap().expect("routing")));
    }
}
