//! A write placed by a layout older than its replicas': the race of a partition's transition
//! ending (its former holders released) while a coordinator still routes by the transition.
//!
//! Five in-process nodes over real internode RPC on loopback. Partition by partition the
//! picture is the same: `n4` coordinates by the transition's layout (replicas `n4 n5 n6`, data
//! holders `n4 n2 n3`, write set all five), every other node already applied the next one,
//! where the transition ended (`n4 n5 n6` everywhere). `n2` and `n3` refuse the copy by their
//! layout; with `w = 2` the write can only reach its data-holder quorum under the newer layout,
//! once `n4` applies it too.

mod common;

use common::{id, settings};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::{CausalContext, NodeId, Quorum};
use yeskv_node::clock::SystemClock;
use yeskv_node::context::NodeContext;
use yeskv_node::coordinator::Coordinator;
use yeskv_node::node::NodeBuilder;
use yeskv_node::peer::{PeerRequest, PeerResponse};
use yeskv_node::replica::Replica;
use yeskv_node::topology::{Routes, Topology};
use yeskv_node::Error;
use yeskv_rpc::{RpcClient, RpcConfig, RpcServer};
use yeskv_storage::MemoryEngine;

type Coord = Coordinator<Arc<MemoryEngine>>;

fn ids(names: &[&str]) -> Arc<[NodeId]> {
    names.iter().map(|n| id(n)).collect()
}

/// The transition's layout (epoch 2): `n5` and `n6` receiving, `n2` and `n3` its sources.
fn in_transition() -> Routes {
    Routes {
        epoch: 2,
        replicas: ids(&["n4", "n5", "n6"]),
        data: ids(&["n4", "n2", "n3"]),
        writes: ids(&["n4", "n5", "n6", "n2", "n3"]),
    }
}

/// The next layout (epoch 3): the transition ended, its sources released.
fn ended() -> Routes {
    let holders = ids(&["n4", "n5", "n6"]);
    Routes {
        epoch: 3,
        replicas: holders.clone(),
        data: holders.clone(),
        writes: holders,
    }
}

/// When a node installs the next layout.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Never.
    Never,
    /// Once a request of it starts waiting for a newer layout (it subscribes to its layout
    /// changes); installed by another task, so the wait itself is woken by the change.
    WhenWaitedFor,
}

/// One layout for every partition, replaced by hand; every node up, no fallbacks.
struct Routed {
    local: NodeId,
    routes: RwLock<Routes>,
    addrs: RwLock<BTreeMap<NodeId, String>>,
    epochs: tokio::sync::watch::Sender<u64>,
    next: Mutex<Option<Routes>>,
    me: std::sync::Weak<Routed>,
}

impl Routed {
    fn new(local: &str, routes: Routes) -> Arc<Routed> {
        let epoch = routes.epoch;
        Arc::new_cyclic(|me| Routed {
            local: id(local),
            routes: RwLock::new(routes),
            addrs: RwLock::new(BTreeMap::new()),
            epochs: tokio::sync::watch::channel(epoch).0,
            next: Mutex::new(None),
            me: me.clone(),
        })
    }

    fn install(&self, routes: Routes) {
        let epoch = routes.epoch;
        *self.routes.write() = routes;
        self.epochs.send_replace(epoch);
    }
}

impl Topology for Routed {
    fn local(&self) -> &NodeId {
        &self.local
    }
    fn preference(&self, _: u16) -> Arc<[NodeId]> {
        self.routes.read().replicas.clone()
    }
    fn fallbacks(&self, _: u16) -> Arc<[NodeId]> {
        Arc::from(Vec::new())
    }
    fn peer_addr(&self, node: &NodeId) -> Option<String> {
        self.addrs.read().get(node).cloned()
    }
    fn is_up(&self, _: &NodeId) -> bool {
        true
    }
    fn is_member(&self, _: &NodeId) -> bool {
        true
    }
    fn layout_version(&self) -> u64 {
        self.routes.read().epoch
    }
    fn data_holders(&self, _: u16) -> Arc<[NodeId]> {
        self.routes.read().data.clone()
    }
    fn write_set(&self, _: u16) -> Arc<[NodeId]> {
        self.routes.read().writes.clone()
    }
    fn in_transition(&self, _: u16) -> bool {
        let r = self.routes.read();
        r.data != r.writes
    }
    fn routes(&self, _: u16) -> Routes {
        self.routes.read().clone()
    }
    fn layout_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        let changes = self.epochs.subscribe();
        if let Some(next) = self.next.lock().take() {
            let this = self.me.upgrade().expect("alive");
            tokio::spawn(async move { this.install(next) });
        }
        changes
    }
}

struct TestNode {
    coord: Coord,
    topology: Arc<Routed>,
}

/// `n2` … `n6`; `n4` routes by the transition (and installs the next layout as `next` says),
/// the others by the layout that ended it.
async fn cluster(next: Next) -> BTreeMap<&'static str, TestNode> {
    let names = ["n2", "n3", "n4", "n5", "n6"];
    let mut listeners = Vec::new();
    for _ in names {
        listeners.push(
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind"),
        );
    }
    let addrs: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().expect("addr").to_string())
        .collect();
    let mut nodes = BTreeMap::new();
    for (name, listener) in names.into_iter().zip(listeners) {
        let topology = match name {
            "n4" => {
                let t = Routed::new(name, in_transition());
                if next == Next::WhenWaitedFor {
                    *t.next.lock() = Some(ended());
                }
                t
            }
            _ => Routed::new(name, ended()),
        };
        for (other, addr) in names.iter().zip(&addrs) {
            topology.addrs.write().insert(id(other), addr.clone());
        }
        let (replica, _) = Replica::open(Arc::new(MemoryEngine::new()), id(name), 0, rand::random)
            .await
            .expect("replica");
        for p in replica.init_trees(256) {
            replica.rebuild_tree(p).expect("empty tree");
        }
        let rpc_cfg = RpcConfig::new("test-cluster", name);
        let client: RpcClient<PeerRequest, PeerResponse> =
            RpcClient::new(rpc_cfg.clone()).expect("client");
        let node = NodeBuilder::new(NodeContext::new(
            Arc::new(replica),
            topology.clone(),
            Arc::new(client),
            Arc::new(SystemClock),
            settings(),
        ))
        .build();
        let dispatcher = node.dispatcher().clone();
        let server: RpcServer<PeerRequest, PeerResponse> = RpcServer::new(rpc_cfg).expect("server");
        tokio::spawn(async move {
            server
                .serve(
                    listener,
                    move |_peer, req| {
                        let d = dispatcher.clone();
                        async move { d.serve(req).await }
                    },
                    std::future::pending::<()>(),
                )
                .await;
        });
        nodes.insert(
            name,
            TestNode {
                coord: node.coordinator().clone(),
                topology,
            },
        );
    }
    nodes
}

impl TestNode {
    /// The values of this node's own copy of `key`.
    fn values(&self, key: &[u8]) -> Vec<Vec<u8>> {
        let p = partition_of(key_hash(b"b", key), 256);
        let obj = self
            .coord
            .replica()
            .read(&storage_key(p, b"b", key))
            .expect("read");
        obj.siblings()
            .iter()
            .filter_map(|s| s.version.value.clone())
            .collect()
    }
}

async fn put(node: &TestNode, key: &[u8], value: &[u8]) -> Result<CausalContext, Error> {
    node.coord
        .put(
            b"b",
            key,
            CausalContext::default(),
            Some(value.to_vec()),
            None,
            Some(Quorum::Quorum),
        )
        .await
}

/// Waits (polling every 10 ms, up to 5 s) until `node` holds `value` for `key`: replication
/// beyond the quorum goes on after the client's answer.
async fn holds(node: &TestNode, key: &[u8], value: &[u8]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while node.values(key) != [value.to_vec()] {
        assert!(
            std::time::Instant::now() < deadline,
            "never held {value:?}: {:?}",
            node.values(key)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_by_newer_layouts_is_re_placed_by_the_coordinators_next_one() {
    let nodes = cluster(Next::WhenWaitedFor).await;
    let n4 = &nodes["n4"];
    put(n4, b"k", b"v1")
        .await
        .expect("taken: n4, n5 and n6 hold it, the data holders of the newer layout");
    assert_eq!(n4.topology.layout_epoch(), 3, "the coordinator moved on");
    // The same object everywhere (one version, one dot), on the holders that end the
    // transition; the released sources took nothing.
    for holder in ["n4", "n5", "n6"] {
        holds(&nodes[holder], b"k", b"v1").await;
        let p = partition_of(key_hash(b"b", b"k"), 256);
        let obj = nodes[holder]
            .coord
            .replica()
            .read(&storage_key(p, b"b", b"k"))
            .expect("read");
        assert_eq!(obj.siblings().len(), 1, "{holder}");
        let dots: u64 = obj.clock().iter().map(|(_, counter)| counter).sum();
        assert_eq!(dots, 1, "one dot minted, as {holder} holds it");
    }
    for released in ["n2", "n3"] {
        assert!(nodes[released].values(b"k").is_empty(), "{released}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_whose_layout_never_moves_on_fails_the_write_in_bounded_time() {
    let nodes = cluster(Next::Never).await;
    let started = std::time::Instant::now();
    let answer = put(&nodes["n4"], b"k", b"v1").await;
    assert!(
        matches!(answer, Err(Error::Quorum { .. })),
        "no data-holder quorum in its layout: {answer:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        started.elapsed()
    );
}
