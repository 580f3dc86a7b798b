//! The distributed coordinator over real internode RPC on loopback: three in-process nodes
//! (in-memory storage, real TCP), quorum writes and reads, writes while a replica is down,
//! siblings merged across replicas, and forwarding from a node that is not a replica.

mod common;

use common::{id, settings};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::{CausalContext, NodeId, Quorum};
use yeskv_node::clock::{Clock, SystemClock};
use yeskv_node::context::{NodeContext, Settings};
use yeskv_node::coordinator::Coordinator;
use yeskv_node::node::NodeBuilder;
use yeskv_node::peer::{PeerRequest, PeerResponse, RemoteError};
use yeskv_node::replica::Replica;
use yeskv_node::topology::{StaticTopology, Topology};
use yeskv_node::Error;
use yeskv_rpc::{RpcClient, RpcConfig, RpcServer};
use yeskv_storage::MemoryEngine;

type Coord = Coordinator<Arc<MemoryEngine>>;

struct TestNode {
    id: NodeId,
    coord: Arc<Coord>,
    topology: Arc<StaticTopology>,
    /// While false, the node's RPC server refuses every request (it is unreachable).
    reachable: Arc<AtomicBool>,
    /// Requests refused while unreachable.
    refused: Arc<AtomicU64>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

/// Starts nodes `names`; every partition's replicas are `replicas`, the others its fallbacks.
async fn cluster(names: &[&str], replicas: &[&str]) -> Vec<TestNode> {
    cluster_with(names, replicas, 0).await
}

/// As [`cluster`], with a tombstone grace period of `reap_grace_ms`.
async fn cluster_with(names: &[&str], replicas: &[&str], reap_grace_ms: u64) -> Vec<TestNode> {
    cluster_settings(
        names,
        replicas,
        reap_grace_ms,
        settings(),
        Arc::new(SystemClock),
    )
    .await
}

/// As [`cluster_with`], with these coordinator settings.
async fn cluster_settings(
    names: &[&str],
    replicas: &[&str],
    reap_grace_ms: u64,
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Vec<TestNode> {
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
        let fallbacks: Vec<NodeId> = names
            .iter()
            .filter(|n| !replicas.contains(n))
            .map(|n| id(n))
            .collect();
        let topology =
            Arc::new(StaticTopology::new(id(name), prefs.clone()).with_fallbacks(fallbacks));
        for (other, addr) in names.iter().zip(&addrs) {
            topology.set_addr(id(other), addr.clone());
        }
        let (replica, _) = Replica::open(
            Arc::new(MemoryEngine::new()),
            id(name),
            reap_grace_ms,
            rand::random,
        )
        .await
        .expect("replica");
        for p in replica.init_trees(256) {
            replica.rebuild_tree(p).expect("empty tree");
        }
        let rpc_cfg = RpcConfig::new("test-cluster", *name);
        let client: RpcClient<PeerRequest, PeerResponse> =
            RpcClient::new(rpc_cfg.clone()).expect("client");
        // The node as the server and the simulator build it; no background workers (the tests
        // run rounds themselves), and a server of the test's own in front of its dispatcher so
        // that a node can be made unreachable.
        let node = NodeBuilder::new(NodeContext::new(
            Arc::new(replica),
            topology.clone(),
            Arc::new(client),
            clock.clone(),
            settings.clone(),
        ))
        .build();
        let coord = Arc::new(node.coordinator().clone());
        let dispatcher = node.dispatcher().clone();
        let server: RpcServer<PeerRequest, PeerResponse> = RpcServer::new(rpc_cfg).expect("server");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let reachable = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicU64::new(0));
        let (reach2, refused2) = (reachable.clone(), refused.clone());
        let handle = tokio::spawn(async move {
            server
                .serve(
                    listener,
                    move |_peer, req| {
                        let d = dispatcher.clone();
                        let (reach, refused) = (reach2.clone(), refused2.clone());
                        async move {
                            if !reach.load(Ordering::SeqCst) {
                                refused.fetch_add(1, Ordering::SeqCst);
                                return PeerResponse::Failed(RemoteError::Unavailable(
                                    "unreachable (test)".into(),
                                ));
                            }
                            d.serve(req).await
                        }
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
            reachable,
            refused,
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

    /// Marks `node` down (or up) in this node's failure detector.
    fn sees(&self, node: &str, up: bool) {
        self.topology.set_up(&id(node), up);
    }

    /// Makes this node unreachable (its RPC server refuses everything) or reachable again. A
    /// coordinator tries even a primary it believes down before failing a quorum, so a node
    /// that must miss writes has to be unreachable, not only believed down.
    fn reachable(&self, on: bool) {
        self.reachable.store(on, Ordering::SeqCst);
    }

    /// Waits until this node has refused `n` requests in all: every write's replication to it
    /// has run its course (replication finishes in the background after the client's answer).
    async fn refused_at_least(&self, n: u64) {
        eventually("refused requests", || {
            self.refused.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    /// The root of the anti-entropy tree of the partition of `key`.
    fn root(&self, bucket: &[u8], key: &[u8]) -> u64 {
        let p = partition_of(key_hash(bucket, key), 256);
        self.coord
            .replica()
            .tree_summary(p)
            .expect("tree ready")
            .root
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

/// Reads that ask `r` replicas first: the coordinator's own copy and one more; a replica that
/// fails (dead, not yet known down) is replaced by the next, so the read still
/// answers and holds every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_asking_r_replicas_replace_a_failed_one() {
    let s = Settings {
        read_all_every: 1_000_000,
        ..settings()
    };
    let mut nodes = cluster_settings(
        &["n1", "n2", "n3"],
        &["n1", "n2", "n3"],
        0,
        s,
        Arc::new(SystemClock),
    )
    .await;
    // The first read of a coordinator asks all; spend it.
    let _ = get(&nodes[0], b"warm", Quorum::N(2)).await;
    let ctx = put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v1"),
        Quorum::All,
    )
    .await
    .expect("w=all");
    let read = get(&nodes[0], b"k", Quorum::N(2)).await.expect("r=2");
    assert_eq!(values(&read), vec![b"v1".to_vec()]);
    // n2 dies; n1 still believes it up: n1's read asks itself and n2, n2 fails, n3 answers.
    nodes[1].kill().await;
    put(&nodes[0], b"k", ctx, Some(b"v2"), Quorum::N(2))
        .await
        .expect("w=2 with n2 dead");
    for _ in 0..5 {
        let read = get(&nodes[0], b"k", Quorum::N(2))
            .await
            .expect("r=2 with n2 dead");
        assert_eq!(values(&read), vec![b"v2".to_vec()]);
    }
    // r=all still needs every replica.
    assert!(get(&nodes[0], b"k", Quorum::All).await.is_err());
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
    let read = get(&nodes[1], b"k", Quorum::N(2)).await.expect("r=2");
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
    let read = get(&nodes[0], b"k", Quorum::N(2))
        .await
        .expect("read via n1");
    assert_eq!(values(&read), vec![b"w".to_vec()]);
    // r or w above n is refused before anything happens.
    assert!(matches!(
        get(&nodes[0], b"k", Quorum::N(4)).await,
        Err(Error::BadRequest(_))
    ));
}

/// A node whose own disk refuses writes (full) hands the writes it coordinates to another
/// primary: the key's other replicas still make `w`, nothing is written on the full node, and
/// the answer's context works like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_storage_refuses_hands_the_write_to_another_primary() {
    let nodes = cluster(&["n1", "n2", "n3"], &["n1", "n2", "n3"]).await;
    nodes[0].coord.replica().engine().fail_writes(true);
    let ctx = put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v1"),
        Quorum::N(2),
    )
    .await
    .expect("w=2 through the full node");
    assert!(
        nodes[0].local_values(b"b", b"k").is_empty(),
        "n1 wrote nothing"
    );
    assert_eq!(nodes[1].local_values(b"b", b"k"), vec![b"v1".to_vec()]);
    // n1 still reads (its own empty copy plus the others) and its context supersedes.
    put(&nodes[0], b"k", ctx, Some(b"v2"), Quorum::N(2))
        .await
        .expect("second write through the full node");
    let read = get(&nodes[1], b"k", Quorum::N(2)).await.expect("read");
    assert_eq!(values(&read), vec![b"v2".to_vec()], "one value, no sibling");
    // w=all cannot be made without n1's disk: refused, 503-class.
    let all = put(
        &nodes[0],
        b"k2",
        CausalContext::empty(),
        Some(b"x"),
        Quorum::All,
    )
    .await;
    assert!(
        all.is_err_and(|e| e.is_retryable()),
        "w=all needs the full node"
    );
    // Once the disk has room again, n1 coordinates and stores writes itself.
    nodes[0].coord.replica().engine().fail_writes(false);
    put(
        &nodes[0],
        b"k3",
        CausalContext::empty(),
        Some(b"y"),
        Quorum::All,
    )
    .await
    .expect("w=all after the disk recovered");
    assert_eq!(nodes[0].local_values(b"b", b"k3"), vec![b"y".to_vec()]);
}

async fn put(
    node: &TestNode,
    key: &[u8],
    ctx: CausalContext,
    value: Option<&[u8]>,
    w: Quorum,
) -> Result<CausalContext, Error> {
    node.coord
        .put(b"b", key, ctx, value.map(|v| v.to_vec()), None, Some(w))
        .await
}

async fn get(node: &TestNode, key: &[u8], r: Quorum) -> Result<yeskv_core::Object, Error> {
    node.coord.get(b"b", key, Some(r)).await
}

/// Polls `cond` every 10 ms for up to 5 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn handoff_settings() -> yeskv_node::handoff::HandoffSettings {
    yeskv_node::handoff::HandoffSettings {
        interval: Duration::from_millis(10),
        batch: 2,
        inflight_max: 4,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sloppy_quorum_takes_writes_for_down_primaries_and_hands_them_off() {
    // Primaries n1..n3, fallbacks n4 and n5. n2 and n3 are down for everyone.
    let nodes = cluster(&["n1", "n2", "n3", "n4", "n5"], &["n1", "n2", "n3"]).await;
    for n in &nodes {
        n.sees("n2", false);
        n.sees("n3", false);
    }
    nodes[1].reachable(false);
    nodes[2].reachable(false);
    // w=3 with two primaries down: n1 plus two fallbacks.
    for i in 0..5u8 {
        let key = [b'k', i];
        put(
            &nodes[0],
            &key,
            CausalContext::empty(),
            Some(&[i]),
            Quorum::All,
        )
        .await
        .expect("sloppy w=all");
    }
    let hints: u64 = nodes[3..]
        .iter()
        .map(|n| n.coord.replica().hints_pending())
        .sum();
    assert_eq!(hints, 10, "each write left a hint for n2 and one for n3");
    assert!(nodes[1].local_values(b"b", b"k\x00").is_empty());
    // Through a node that is no primary, with every primary down: it stands in itself.
    for n in &nodes {
        n.sees("n1", false);
    }
    nodes[0].reachable(false);
    put(
        &nodes[4],
        b"lonely",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::N(2),
    )
    .await
    .expect("w=2 with every primary down");
    // Reads consult the stand-ins.
    let read = get(&nodes[4], b"lonely", Quorum::N(2))
        .await
        .expect("r=2 through stand-ins");
    assert_eq!(values(&read), vec![b"v".to_vec()]);
    // n5 stands in for n1 itself; n2's and n3's copies race for the one fallback left (n4),
    // and the primary whose copy lost was tried itself, which refused.
    eventually("a primary tried itself", || {
        nodes[1].refused.load(Ordering::SeqCst) + nodes[2].refused.load(Ordering::SeqCst) >= 1
    })
    .await;
    let (missed, kept) = if nodes[2].refused.load(Ordering::SeqCst) >= 1 {
        (2, 1)
    } else {
        (1, 2)
    };
    // The primaries come back: handoff delivers every hint, then removes it.
    for n in &nodes[..3] {
        n.reachable(true);
    }
    for n in &nodes {
        n.sees("n1", true);
        n.sees("n2", true);
        n.sees("n3", true);
    }
    for n in &nodes[3..] {
        for target in ["n1", "n2", "n3"] {
            yeskv_node::handoff::round(n.coord.context(), &id(target), &handoff_settings())
                .await
                .expect("handoff");
        }
    }
    for n in &nodes {
        assert_eq!(n.coord.replica().hints_pending(), 0, "{} drained", n.id);
    }
    for i in 0..5u8 {
        let key = [b'k', i];
        for n in &nodes[..3] {
            assert_eq!(
                n.local_values(b"b", &key),
                vec![vec![i]],
                "{} has k{i}",
                n.id
            );
        }
    }
    // "lonely" had stand-ins for n1 (n5 itself) and one of n2, n3 (n4) only. Handoff
    // delivers what was held; anti-entropy brings the primary that missed it the rest.
    for n in [&nodes[0], &nodes[kept]] {
        assert_eq!(
            n.local_values(b"b", b"lonely"),
            vec![b"v".to_vec()],
            "{}",
            n.id
        );
    }
    assert!(nodes[missed].local_values(b"b", b"lonely").is_empty());
    yeskv_node::aae::exchange_round(nodes[missed].coord.context(), 100)
        .await
        .expect("aae");
    assert_eq!(
        nodes[missed].local_values(b"b", b"lonely"),
        vec![b"v".to_vec()]
    );
}

/// A clock the test moves by hand (every node shares it).
struct ManualClock(AtomicU64);

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// A write acknowledged while every primary of its key was cut off lives only as hints on two
/// stand-ins, and a later write merged into the same hints must survive however long the
/// primaries stay away. Hints used to be dropped once their *first* write was older than an age
/// limit (30 min by default), taking every later write merged into them along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_kept_only_as_hints_survive_an_outage_of_any_length() {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_700_000_000_000)));
    let nodes = cluster_settings(
        &["n1", "n2", "n3", "n4", "n5"],
        &["n1", "n2", "n3"],
        0,
        settings(),
        clock.clone(),
    )
    .await;
    for n in &nodes {
        for p in ["n1", "n2", "n3"] {
            n.sees(p, false);
        }
    }
    for n in &nodes[..3] {
        n.reachable(false);
    }
    // Through n4 (no primary): it stands in for n1 itself, n5 takes n2's copy as a hint.
    let ctx = put(
        &nodes[3],
        b"cart",
        CausalContext::empty(),
        Some(b"v1"),
        Quorum::N(2),
    )
    .await
    .expect("w=2 through stand-ins");
    // Ten minutes later, the next write of the key lands in the same two hints.
    clock.0.fetch_add(10 * 60_000, Ordering::SeqCst);
    put(&nodes[3], b"cart", ctx, Some(b"v2"), Quorum::N(2))
        .await
        .expect("w=2 through stand-ins again");
    // The primaries come back a day after the first write.
    clock.0.fetch_add(24 * 3_600_000, Ordering::SeqCst);
    for n in &nodes[..3] {
        n.reachable(true);
    }
    for n in &nodes {
        for p in ["n1", "n2", "n3"] {
            n.sees(p, true);
        }
    }
    for n in &nodes[3..] {
        for target in ["n1", "n2", "n3"] {
            yeskv_node::handoff::round(n.coord.context(), &id(target), &handoff_settings())
                .await
                .expect("handoff");
        }
        assert_eq!(n.coord.replica().hints_pending(), 0, "{} drained", n.id);
    }
    // n4 held n1's copy both times; n5 took the copy of n2 or of n3, whichever slot asked it
    // first in each write. The last write is on two primaries: nothing of it was dropped.
    let last: Vec<&str> = nodes[..3]
        .iter()
        .filter(|n| n.local_values(b"b", b"cart") == vec![b"v2".to_vec()])
        .map(|n| n.id.as_str())
        .collect();
    assert!(
        last.len() >= 2 && last.contains(&"n1"),
        "the last write reached only {last:?} from its stand-ins"
    );
}

/// A hint whose target left the layout goes to the key's current primaries instead: nothing
/// owed to a node that is gone for good is lost with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_for_a_node_that_left_go_to_the_current_primaries() {
    let nodes = cluster(&["n1", "n2", "n3", "n4"], &["n1", "n2", "n3"]).await;
    for n in &nodes {
        n.sees("n3", false);
    }
    nodes[2].reachable(false);
    put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::All,
    )
    .await
    .expect("w=all with n3's copy as a hint on n4");
    assert_eq!(nodes[3].coord.replica().hints_pending(), 1);
    assert!(nodes[3].local_values(b"b", b"k").is_empty());
    // n3 leaves the layout for good: n4's topology no longer knows it, and the key's primaries
    // are n1, n2 and n4 itself.
    let n4_view = Arc::new(StaticTopology::new(
        id("n4"),
        vec![id("n1"), id("n2"), id("n4")],
    ));
    for other in ["n1", "n2", "n4"] {
        let addr = nodes[3].topology.peer_addr(&id(other)).expect("address");
        n4_view.set_addr(id(other), addr);
    }
    let n4_after = NodeContext::new(
        nodes[3].coord.replica().clone(),
        n4_view,
        nodes[3].coord.context().peers().clone(),
        Arc::new(SystemClock),
        settings(),
    );
    let round = yeskv_node::handoff::round(&n4_after, &id("n3"), &handoff_settings())
        .await
        .expect("handoff");
    assert_eq!(round.rehomed, 1);
    assert_eq!(nodes[3].coord.replica().hints_pending(), 0);
    assert_eq!(nodes[3].local_values(b"b", b"k"), vec![b"v".to_vec()]);
}

/// A node that has heard from nobody yet (just restarted) or wrongly suspects its peers still
/// makes the quorum: before failing, the coordinator tries the primaries it believes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_false_suspicion_does_not_fail_a_quorum() {
    let nodes = cluster(&["n1", "n2", "n3"], &["n1", "n2", "n3"]).await;
    nodes[0].sees("n2", false);
    nodes[0].sees("n3", false);
    let ctx = put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::All,
    )
    .await
    .expect("w=all with both peers wrongly believed down");
    for n in &nodes {
        assert_eq!(n.local_values(b"b", b"k"), vec![b"v".to_vec()], "{}", n.id);
    }
    let read = get(&nodes[0], b"k", Quorum::All)
        .await
        .expect("r=all with both peers wrongly believed down");
    assert_eq!(values(&read), vec![b"v".to_vec()]);
    put(&nodes[0], b"k", ctx, Some(b"w"), Quorum::N(2))
        .await
        .expect("w=2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fewer_live_nodes_than_w_is_refused() {
    let nodes = cluster(&["n1", "n2", "n3", "n4"], &["n1", "n2", "n3"]).await;
    for n in &nodes {
        n.sees("n2", false);
        n.sees("n3", false);
        n.sees("n4", false);
    }
    for n in &nodes[1..] {
        n.reachable(false);
    }
    assert!(matches!(
        put(
            &nodes[0],
            b"k",
            CausalContext::empty(),
            Some(b"v"),
            Quorum::N(2)
        )
        .await,
        Err(Error::Quorum { .. })
    ));
    put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::One,
    )
    .await
    .expect("w=1 on the one live node");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_repair_brings_a_stale_replica_up_to_date() {
    let nodes = cluster(&["n1", "n2", "n3"], &["n1", "n2", "n3"]).await;
    nodes[0].sees("n3", false);
    nodes[2].reachable(false);
    put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::N(2),
    )
    .await
    .expect("w=2");
    nodes[2].refused_at_least(1).await;
    assert!(nodes[2].local_values(b"b", b"k").is_empty(), "n3 missed it");
    nodes[2].reachable(true);
    nodes[0].sees("n3", true);
    let read = get(&nodes[0], b"k", Quorum::All).await.expect("r=all");
    assert_eq!(values(&read), vec![b"v".to_vec()]);
    eventually("read repair of n3", || {
        nodes[2].local_values(b"b", b"k") == vec![b"v".to_vec()]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_finds_and_repairs_missing_keys_both_ways() {
    let nodes = cluster(&["n1", "n2", "n3"], &["n1", "n2", "n3"]).await;
    // n3 misses 20 writes; n1 misses 5 others (written through n2 while n1 was unreachable).
    nodes[0].sees("n3", false);
    nodes[2].reachable(false);
    for i in 0..20u8 {
        put(
            &nodes[0],
            &[b'a', i],
            CausalContext::empty(),
            Some(&[i]),
            Quorum::N(2),
        )
        .await
        .expect("w=2");
    }
    // A write's replication to the other replicas finishes in the background: wait until n3
    // has refused all 20 before it becomes reachable again.
    nodes[2].refused_at_least(20).await;
    nodes[2].reachable(true);
    nodes[1].sees("n1", false);
    nodes[0].reachable(false);
    for i in 0..5u8 {
        put(
            &nodes[1],
            &[b'z', i],
            CausalContext::empty(),
            Some(&[i]),
            Quorum::N(2),
        )
        .await
        .expect("w=2");
    }
    nodes[0].refused_at_least(5).await;
    nodes[0].reachable(true);
    assert_ne!(
        nodes[0].root(b"b", &[b'a', 0]),
        nodes[2].root(b"b", &[b'a', 0])
    );
    // One round on n3: with n1 it receives the 20 keys it lacked and gives n1 the 5 that n1
    // lacked (n3 had them from n2's writes): keys flow both ways.
    let r = yeskv_node::aae::exchange_round(nodes[2].coord.context(), 10_000)
        .await
        .expect("round");
    assert!(r.keys_repaired >= 25, "{r:?}");
    for i in 0..20u8 {
        for n in &nodes {
            assert_eq!(n.local_values(b"b", &[b'a', i]), vec![vec![i]], "{}", n.id);
        }
    }
    for i in 0..5u8 {
        for n in &nodes {
            assert_eq!(n.local_values(b"b", &[b'z', i]), vec![vec![i]], "{}", n.id);
        }
    }
    nodes[0].sees("n3", true);
    nodes[1].sees("n1", true);
    // Every partition's roots now agree, and another round finds nothing.
    for p in 0..256u16 {
        let roots: Vec<_> = nodes
            .iter()
            .map(|n| n.coord.replica().tree_summary(p).expect("ready").root)
            .collect();
        assert!(
            roots.windows(2).all(|w| w[0] == w[1]),
            "partition {p}: {roots:?}"
        );
    }
    for n in &nodes {
        let r = yeskv_node::aae::exchange_round(n.coord.context(), 10_000)
            .await
            .expect("round");
        assert_eq!(r.keys_repaired, 0);
        assert_eq!(r.partitions_differing, 0);
    }
    // One side of each pair initiates: n1 (lowest id) none, n3 (highest) both of its pairs.
    let first = yeskv_node::aae::exchange_round(nodes[0].coord.context(), 10_000)
        .await
        .expect("round");
    assert_eq!(first.partitions_compared, 0, "{first:?}");
    let last = yeskv_node::aae::exchange_round(nodes[2].coord.context(), 10_000)
        .await
        .expect("round");
    assert_eq!(last.partitions_compared, 2 * 256, "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_reaped_only_when_every_primary_holds_them() {
    let nodes = cluster_with(&["n1", "n2", "n3"], &["n1", "n2", "n3"], 0).await;
    let ctx = put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::All,
    )
    .await
    .expect("write");
    // The delete misses n3.
    nodes[0].sees("n3", false);
    nodes[2].reachable(false);
    put(&nodes[0], b"k", ctx, None, Quorum::N(2))
        .await
        .expect("delete");
    nodes[2].refused_at_least(1).await;
    nodes[2].reachable(true);
    nodes[0].sees("n3", true);
    let retry = Duration::from_millis(1);
    // n3 still holds the value: no reaping (it could come back from n3).
    assert_eq!(
        yeskv_node::reaper::reap_round(nodes[0].coord.context(), retry)
            .await
            .expect("reap"),
        0
    );
    assert_eq!(nodes[2].local_values(b"b", b"k"), vec![b"v".to_vec()]);
    // Anti-entropy (n3 initiates with n1 and n2: the higher id of a pair does) gives n3 the
    // tombstone; then every primary holds it and it is reaped.
    yeskv_node::aae::exchange_round(nodes[2].coord.context(), 100)
        .await
        .expect("aae");
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        yeskv_node::reaper::reap_round(nodes[0].coord.context(), retry)
            .await
            .expect("reap"),
        1
    );
    let sk = storage_key(partition_of(key_hash(b"b", b"k"), 256), b"b", b"k");
    for n in &nodes {
        assert!(
            n.coord.replica().read(&sk).expect("read").is_empty(),
            "{} reaped",
            n.id
        );
        assert_eq!(n.root(b"b", b"k"), 0, "{}: tree empty again", n.id);
    }
    let read = get(&nodes[1], b"k", Quorum::All).await.expect("read");
    assert!(values(&read).is_empty(), "the value stays deleted");
}

/// A tombstone due by its timestamps is still held by the reaper for the hold (here the 60 ms
/// grace) of its own monotonic time from when it first saw it due: a timestamp written by a
/// clock that runs behind would otherwise let it go while a replication of the deleted value
/// is still in flight (simulator seed 21980). Fails without the hold: the first round reaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reaper_holds_a_due_tombstone_by_its_own_clock() {
    let nodes = cluster_with(&["n1", "n2", "n3"], &["n1", "n2", "n3"], 60).await;
    let ctx = put(
        &nodes[0],
        b"k",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::All,
    )
    .await
    .expect("write");
    put(&nodes[0], b"k", ctx, None, Quorum::All)
        .await
        .expect("delete");
    // Past the grace by the tombstone's timestamp: due.
    tokio::time::sleep(Duration::from_millis(80)).await;
    let retry = Duration::from_millis(1);
    let mut seen = yeskv_node::reaper::Sightings::default();
    let round = |seen: &mut yeskv_node::reaper::Sightings| {
        let coord = nodes[0].coord.clone();
        let mut taken = std::mem::take(seen);
        async move {
            let (n, _) = yeskv_node::reaper::reap_round_with(coord.context(), retry, &mut taken)
                .await
                .expect("reap");
            (n, taken)
        }
    };
    let (first, s) = round(&mut seen).await;
    seen = s;
    assert_eq!(first, 0, "reaped at first sight");
    tokio::time::sleep(Duration::from_millis(80)).await;
    let (second, _) = round(&mut seen).await;
    assert_eq!(second, 1, "held past the hold, then reaped");
}

/// An expiring write held only as hints for two primaries that were away until after it expired
/// is dropped by handoff, not delivered; anti-entropy then finds the primary that holds the
/// expired record and the two that never got it equal (expiring keys are in no tree), and a
/// read with read repair finds nothing and writes nothing back. Fails if hints of expired
/// objects are delivered, if anti-entropy counts expiring keys, or if a merge stores an expired
/// object into a copy that holds nothing of the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_write_never_comes_back_through_hints_repair_or_anti_entropy() {
    let clock = Arc::new(ManualClock(AtomicU64::new(1_700_000_000_000)));
    let nodes = cluster_settings(
        &["n1", "n2", "n3", "n4", "n5"],
        &["n1", "n2", "n3"],
        0,
        settings(),
        clock.clone(),
    )
    .await;
    for n in &nodes {
        n.sees("n2", false);
        n.sees("n3", false);
    }
    nodes[1].reachable(false);
    nodes[2].reachable(false);
    // A 10 s session, w = all: n1 and two hints (on n4 and n5) for n2 and n3.
    nodes[0]
        .coord
        .put(
            b"b",
            b"sess",
            CausalContext::empty(),
            Some(b"cart".to_vec()),
            Some(10),
            Some(Quorum::All),
        )
        .await
        .expect("sloppy w=all");
    let hints = || -> u64 {
        nodes[3..]
            .iter()
            .map(|n| n.coord.replica().hints_pending())
            .sum()
    };
    assert_eq!(hints(), 2);
    // A value that never expires, written the same way, is delivered as ever.
    put(
        &nodes[0],
        b"keep",
        CausalContext::empty(),
        Some(b"v"),
        Quorum::All,
    )
    .await
    .expect("sloppy w=all");
    assert_eq!(hints(), 4);
    let p = partition_of(key_hash(b"b", b"sess"), 256);
    let sk = storage_key(p, b"b", b"sess");
    // n2 and n3 come back 11 s later: the session has expired.
    clock.0.fetch_add(11_000, Ordering::SeqCst);
    for n in &nodes[1..3] {
        n.reachable(true);
    }
    for n in &nodes {
        n.sees("n2", true);
        n.sees("n3", true);
    }
    let mut expired = 0;
    for n in &nodes[3..] {
        for target in ["n2", "n3"] {
            let r = yeskv_node::handoff::round(n.coord.context(), &id(target), &handoff_settings())
                .await
                .expect("handoff");
            expired += r.expired;
        }
    }
    assert_eq!(
        (expired, hints()),
        (2, 0),
        "expired hints dropped, others delivered"
    );
    for n in &nodes[1..3] {
        assert!(
            n.coord.replica().read(&sk).expect("read").is_empty(),
            "{} got the expired session",
            n.id
        );
        assert_eq!(n.local_values(b"b", b"keep"), vec![b"v".to_vec()]);
    }
    // n1 still holds the expired record; its tree and theirs agree all the same.
    assert!(!nodes[0].coord.replica().read(&sk).expect("read").is_empty());
    for n in &nodes[1..3] {
        assert_eq!(
            n.root(b"b", b"sess"),
            nodes[0].root(b"b", b"sess"),
            "{}",
            n.id
        );
        let r = yeskv_node::aae::exchange_round(n.coord.context(), 100)
            .await
            .expect("aae");
        assert_eq!(r.keys_repaired, 0, "{}: nothing to repair", n.id);
    }
    // A read of all three finds nothing, and repairs nothing into the empty copies.
    let read = get(&nodes[1], b"sess", Quorum::All).await.expect("read");
    assert!(read.visible(clock.now_ms()).next().is_none());
    tokio::time::sleep(Duration::from_millis(50)).await;
    for n in &nodes[1..3] {
        assert!(
            n.coord.replica().read(&sk).expect("read").is_empty(),
            "{} got the expired session by read repair",
            n.id
        );
    }
}

/// A peer's message naming a key is checked as a client's request is: a storage key that does
/// not parse, names a partition that is not its key's, carries a wrong key hash (it selects
/// the stripe lock), or a bucket or key over the stored-name limits is refused with a reason
/// and changes nothing; so is an anti-entropy request asking for more than a tree has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_messages_naming_bad_keys_are_refused_and_change_nothing() {
    use yeskv_node::aae::AaeRequest;
    use yeskv_node::dispatch::Dispatcher;
    use yeskv_node::replication::{MergeItem, ReplicationRequest};

    let nodes = cluster(&["n1"], &["n1"]).await;
    let dispatcher = Dispatcher::new((*nodes[0].coord).clone(), None);
    nodes[0].put_all(CausalContext::empty(), b"phone").await;
    let written = nodes[0]
        .coord
        .get(b"carts", b"alice", Some(Quorum::All))
        .await
        .expect("reads");
    let record = yeskv_core::codec::encode_record(&written, None);
    let hash = key_hash(b"carts", b"mallory");
    let good = storage_key(partition_of(hash, 256), b"carts", b"mallory");
    let other_partition = storage_key(partition_of(hash, 256) ^ 1, b"carts", b"mallory");
    let long_key = vec![b'k'; 600];
    let long = storage_key(
        partition_of(key_hash(b"carts", &long_key), 256),
        b"carts",
        &long_key,
    );
    let merge = |key_hash: u64, storage_key: Vec<u8>| {
        PeerRequest::Replication(ReplicationRequest::Merge {
            key_hash,
            storage_key,
            record: record.clone(),
        })
    };
    let refused = [
        ("malformed", merge(hash, vec![0, 1, 0])),
        ("wrong partition", merge(hash, other_partition)),
        ("wrong hash", merge(hash ^ 1, good.clone())),
        (
            "long key",
            merge(key_hash(b"carts", &long_key), long.clone()),
        ),
        (
            "batch item",
            PeerRequest::Replication(ReplicationRequest::MergeMany {
                objects: vec![MergeItem {
                    key_hash: hash ^ 1,
                    storage_key: good.clone(),
                    record: record.clone(),
                }],
            }),
        ),
        (
            "read",
            PeerRequest::Replication(ReplicationRequest::Read {
                storage_key: vec![0, 1],
            }),
        ),
        (
            "aae keys",
            PeerRequest::Aae(AaeRequest::Keys {
                partition: 0,
                segments: vec![0; 1 << 12],
            }),
        ),
        (
            "aae partition",
            PeerRequest::Aae(AaeRequest::Branches { partition: 256 }),
        ),
    ];
    for (what, request) in refused {
        match dispatcher.serve(request).await {
            PeerResponse::Failed(RemoteError::BadRequest(reason)) => {
                assert!(!reason.is_empty(), "{what}")
            }
            other => panic!("{what}: {other:?}"),
        }
    }
    assert!(nodes[0].local_values(b"carts", b"mallory").is_empty());
    // The same merge with the right hash and partition is taken.
    if let PeerResponse::Failed(e) = dispatcher.serve(merge(hash, good)).await {
        panic!("a good merge was refused: {e:?}");
    }
    assert_eq!(
        nodes[0].local_values(b"carts", b"mallory"),
        vec![b"phone".to_vec()]
    );
}
