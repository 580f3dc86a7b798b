//! The distributed coordinator over real internode RPC on loopback: three in-process nodes
//! (in-memory storage, real TCP), quorum writes and reads, writes while a replica is down,
//! siblings merged across replicas, and forwarding from a node that is not a replica.

use std::sync::Arc;
use std::time::Duration;

use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::{CausalContext, NodeId, Quorum};
use yeskv_node::clock::SystemClock;
use yeskv_node::coordinator::{Coordinator, Settings};
use yeskv_node::peer::{PeerRequest, PeerResponse};
use yeskv_node::replica::Replica;
use yeskv_node::topology::StaticTopology;
use yeskv_node::Error;
use yeskv_rpc::{RpcClient, RpcConfig, RpcServer};
use yeskv_storage::MemoryEngine;

type Coord = Coordinator<Arc<MemoryEngine>>;

struct TestNode {
    id: NodeId,
    coord: Arc<Coord>,
    topology: Arc<StaticTopology>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

fn settings() -> Settings {
    Settings {
        n: 3,
        r: 2,
        w: 2,
        partitions: 256,
        siblings_max: 100,
        default_ttl_secs: 0,
        rpc_timeout: Duration::from_millis(1000),
    }
}

fn id(s: &str) -> NodeId {
    NodeId::new(s).expect("valid")
}

/// Starts nodes `names`; every partition's replicas are `replicas`.
async fn cluster(names: &[&str], replicas: &[&str]) -> Vec<TestNode> {
    let prefs: Vec<NodeId> = replicas.iter().map(|s| id(s)).collect();
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
    let mut nodes = Vec::new();
    for (name, listener) in names.iter().zip(listeners) {
        let topology = Arc::new(StaticTopology::new(id(name), prefs.clone()));
        for (other, addr) in names.iter().zip(&addrs) {
            topology.set_addr(id(other), addr.clone());
        }
        let (replica, _) = Replica::open(Arc::new(MemoryEngine::new()), id(name), 0, rand::random)
            .await
            .expect("replica");
        let rpc_cfg = RpcConfig::new("test-cluster", *name);
        let client: RpcClient<PeerRequest, PeerResponse> =
            RpcClient::new(rpc_cfg.clone()).expect("client");
        let coord = Arc::new(Coordinator::new(
            Arc::new(replica),
            Arc::new(SystemClock),
            settings(),
            topology.clone(),
            Arc::new(client),
        ));
        let server: RpcServer<PeerRequest, PeerResponse> = RpcServer::new(rpc_cfg).expect("server");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let c2 = coord.clone();
        let handle = tokio::spawn(async move {
            server
                .serve(
                    listener,
                    move |_peer, req| {
                        let c = c2.clone();
                        async move { c.serve_peer(req).await }
                    },
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await;
        });
        nodes.push(TestNode {
            id: id(name),
            coord,
            topology,
            stop: Some(stop_tx),
            server: Some(handle),
        });
    }
    nodes
}

impl TestNode {
    /// Stops serving RPC (the node is "killed" for its peers).
    async fn kill(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            let _ = h.await;
        }
    }

    fn local_values(&self, bucket: &[u8], key: &[u8]) -> Vec<Vec<u8>> {
        let p = partition_of(key_hash(bucket, key), 256);
        let obj = self
            .coord
            .replica()
            .read(&storage_key(p, bucket, key))
            .expect("read");
        values(&obj)
    }

    /// Writes `value` with `w = all` through this node.
    async fn put_all(&self, ctx: CausalContext, value: &[u8]) {
        self.coord
            .put(
                b"carts",
                b"alice",
                ctx,
                Some(value.to_vec()),
                None,
                Some(Quorum::All),
            )
            .await
            .expect("w=all");
    }
}

fn values(obj: &yeskv_core::Object) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = obj
        .siblings()
        .iter()
        .filter_map(|s| s.version.value.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_all_reaches_every_replica_and_reads_merge() {
    let nodes = cluster(&["n1", "n2", "n3"], &["n1", "n2", "n3"]).await;
    let on_every_replica = |expected: &[u8]| {
        for n in &nodes {
            assert_eq!(
                n.local_values(b"carts", b"alice"),
                vec![expected.to_vec()],
                "{}",
                n.id
            );
        }
    };
    nodes[0].put_all(CausalContext::empty(), b"phone").await;
    on_every_replica(b"phone");
    // A concurrent blind write through another node: both versions are siblings everywhere.
    nodes[1].put_all(CausalContext::empty(), b"laptop").await;
    let read = nodes[2]
        .coord
        .get(b"carts", b"alice", Some(Quorum::All))
        .await
        .expect("r=all");
    assert_eq!(values(&read), vec![b"laptop".to_vec(), b"phone".to_vec()]);
    // Writing with the read's context resolves them on every replica.
    nodes[2].put_all(read.context(), b"both").await;
    on_every_replica(b"both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_survives_one_dead_replica_but_not_two() {
    let mut nodes = cluster(&["n1", "n2", "n3"], &["n1", "n2", "n3"]).await;
    nodes[2].kill().await;
    // The failure detector has not noticed yet: the dead node times out / refuses connections.
    let coords: Vec<Arc<Coord>> = nodes.iter().map(|n| n.coord.clone()).collect();
    let put = |i: usize, q: Quorum, v: &'static [u8]| {
        let c = coords[i].clone();
        async move {
            c.put(
                b"b",
                b"k",
                CausalContext::empty(),
                Some(v.to_vec()),
                None,
                Some(q),
            )
            .await
        }
    };
    put(0, Quorum::N(2), b"v1")
        .await
        .expect("w=2 with one replica dead");
    assert!(matches!(
        put(1, Quorum::All, b"v2").await,
        Err(Error::Quorum { .. })
    ));
    let read = nodes[1]
        .coord
        .get(b"b", b"k", Some(Quorum::N(2)))
        .await
        .expect("r=2");
    assert!(values(&read).contains(&b"v1".to_vec()));
    // Once the failure detector marks it down, requests skip it without waiting.
    for n in &nodes[..2] {
        n.topology.set_up(&id("n3"), false);
    }
    let started = std::time::Instant::now();
    put(0, Quorum::N(2), b"v3").await.expect("w=2");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "should not wait on a down node"
    );
    nodes[1].kill().await;
    for n in &nodes[..1] {
        n.topology.set_up(&id("n2"), false);
    }
    assert!(matches!(
        put(0, Quorum::N(2), b"v4").await,
        Err(Error::Quorum { .. })
    ));
    put(0, Quorum::One, b"v5")
        .await
        .expect("w=1 with two replicas dead");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_a_replica_forwards() {
    // n1 holds no partition: every key lives on n2 and n3.
    let nodes = cluster(&["n1", "n2", "n3"], &["n2", "n3"]).await;
    let ctx = nodes[0]
        .coord
        .put(
            b"b",
            b"k",
            CausalContext::empty(),
            Some(b"v".to_vec()),
            None,
            Some(Quorum::N(2)),
        )
        .await
        .expect("forwarded write");
    assert!(
        nodes[0].local_values(b"b", b"k").is_empty(),
        "n1 stores nothing"
    );
    assert_eq!(nodes[1].local_values(b"b", b"k"), vec![b"v".to_vec()]);
    assert_eq!(nodes[2].local_values(b"b", b"k"), vec![b"v".to_vec()]);
    // The returned context supersedes the write when sent back through n1.
    nodes[0]
        .coord
        .put(
            b"b",
            b"k",
            ctx,
            Some(b"w".to_vec()),
            None,
            Some(Quorum::N(2)),
        )
        .await
        .expect("forwarded write");
    let read = nodes[0]
        .coord
        .get(b"b", b"k", Some(Quorum::N(2)))
        .await
        .expect("read via n1");
    assert_eq!(values(&read), vec![b"w".to_vec()]);
    // r or w above n is refused before anything happens.
    assert!(matches!(
        nodes[0].coord.get(b"b", b"k", Some(Quorum::N(4))).await,
        Err(Error::BadRequest(_))
    ));
}
