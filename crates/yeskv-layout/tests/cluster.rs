//! Layout clusters of real `LayoutService`s talking over TCP on 127.0.0.1, in one process.
//!
//! Every wait is a condition polled until a deadline (never a bare sleep), and every test
//! finishes by checking the version invariant: across all nodes' applied histories, one version
//! always has one layout digest.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use yeskv_core::NodeId;
use yeskv_layout::store::MemoryStore;
use yeskv_layout::{
    raft_id, Error, JoinSpec, Layout, LayoutConfig, LayoutError, LayoutService, LayoutTransport,
    LeaveMode, RaftRpc, RaftRpcResponse, StorageConfig,
};
use yeskv_rpc::{RpcClient, RpcConfig};

const CLUSTER: &str = "test-cluster";
const WAIT: Duration = Duration::from_secs(20);

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

fn id(name: &str) -> NodeId {
    NodeId::new(name).expect("valid id")
}

fn rpc_config(name: &str) -> RpcConfig {
    RpcConfig {
        reconnect_backoff_min_ms: 20,
        reconnect_backoff_max_ms: 200,
        shutdown_grace_ms: 100,
        handshake_timeout_ms: 1_000,
        ..RpcConfig::new(CLUSTER, name)
    }
}

/// Settings for fast tests: elections within about half a second.
fn layout_config(name: &str, addr: SocketAddr, storage: StorageConfig) -> LayoutConfig {
    LayoutConfig {
        heartbeat_interval_ms: 50,
        election_timeout_min_ms: 300,
        election_timeout_max_ms: 600,
        request_timeout_ms: 10_000,
        learner_catch_up_timeout_ms: 3_000,
        reconcile_interval_ms: 200,
        ..LayoutConfig::new(id(name), CLUSTER, addr.to_string(), storage)
    }
}

/// One node: its service and its standalone RPC server.
struct TestNode {
    name: String,
    addr: SocketAddr,
    storage: StorageConfig,
    service: LayoutService,
    stop_server: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

impl TestNode {
    async fn start_with(
        name: &str,
        addr: Option<SocketAddr>,
        storage: StorageConfig,
        tune: impl FnOnce(LayoutConfig) -> LayoutConfig,
    ) -> TestNode {
        let listener =
            TcpListener::bind(addr.unwrap_or_else(|| "127.0.0.1:0".parse().expect("addr")))
                .await
                .expect("binds");
        let addr = listener.local_addr().expect("local addr");
        let client: RpcClient<RaftRpc, RaftRpcResponse> =
            RpcClient::new(rpc_config(name)).expect("client");
        let transport: Arc<dyn LayoutTransport> = Arc::new(client);
        let config = tune(layout_config(name, addr, storage.clone()));
        let service = LayoutService::start(config, transport)
            .await
            .expect("starts");
        let (stop_server, stopped) = oneshot::channel::<()>();
        let server_service = service.clone();
        let rpc = rpc_config(name);
        let server = tokio::spawn(async move {
            server_service
                .serve(listener, rpc, async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serves");
        });
        TestNode {
            name: name.to_string(),
            addr,
            storage,
            service,
            stop_server: Some(stop_server),
            server: Some(server),
        }
    }

    fn spec(&self, zone: &str, capacity: u32) -> JoinSpec {
        JoinSpec {
            zone: zone.into(),
            capacity,
            http: format!("127.0.0.1:{}", 10_000 + self.addr.port() % 50_000),
            peer: self.addr.to_string(),
            region: "default".into(),
        }
    }

    /// Stops the server and the Raft node, as a crash would (the store stays).
    async fn stop(&mut self) {
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        self.service.shutdown().await.expect("shuts down");
        if let Some(server) = self.server.take() {
            server.await.expect("server task");
        }
    }

    /// Starts again on the same address from the same store.
    async fn restart(&mut self) {
        self.restart_with(|config| config).await;
    }

    async fn restart_with(&mut self, tune: fn(LayoutConfig) -> LayoutConfig) {
        let fresh =
            TestNode::start_with(&self.name, Some(self.addr), self.storage.clone(), tune).await;
        *self = fresh;
    }

    fn version(&self) -> u64 {
        self.service.current().map_or(0, |layout| layout.version)
    }
}

async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn memory() -> StorageConfig {
    StorageConfig::Memory(MemoryStore::new())
}

/// n1 bootstraps, n2 and n3 join through stage + commit; returns the three nodes with every
/// node at version 2 and voting.
async fn three_node_cluster(storages: [StorageConfig; 3]) -> Vec<TestNode> {
    three_node_cluster_with(storages, |config| config).await
}

async fn three_node_cluster_with(
    storages: [StorageConfig; 3],
    tune: fn(LayoutConfig) -> LayoutConfig,
) -> Vec<TestNode> {
    let [s1, s2, s3] = storages;
    let n1 = TestNode::start_with("n1", None, s1, tune).await;
    let n2 = TestNode::start_with("n2", None, s2, tune).await;
    let n3 = TestNode::start_with("n3", None, s3, tune).await;
    assert!(
        n2.service.current().is_none(),
        "a joining node knows no layout yet"
    );

    let first = Layout::bootstrap(CLUSTER, 3, 64, id("n1"), n1.spec("a", 1)).expect("layout");
    let layout = n1
        .service
        .bootstrap_single(first)
        .await
        .expect("bootstraps");
    assert_eq!(layout.version, 1);
    assert_eq!(layout.assignment.owned(&id("n1")), 64);

    let staged = n1
        .service
        .stage_join(id("n2"), n2.spec("b", 1))
        .await
        .expect("stages");
    assert_eq!(staged.joins.len(), 1);
    n1.service
        .stage_join(id("n3"), n3.spec("c", 1))
        .await
        .expect("stages");
    let plan = n1.service.plan().expect("plans");
    assert_eq!(plan.base_version, 1);
    assert_eq!(plan.transfers(), 128, "every partition gains two replicas");
    assert_eq!(
        n1.service.current().expect("layout").version,
        1,
        "plan changes nothing"
    );

    let committed = n1.service.commit(Some(1)).await.expect("commits");
    assert_eq!(committed.version, 2);
    assert_eq!(committed.owners().count(), 3);
    let nodes = vec![n1, n2, n3];
    eventually("every node at version 2", || {
        nodes.iter().all(|n| n.version() == 2)
    })
    .await;
    let voters = [raft_id(&id("n1")), raft_id(&id("n2")), raft_id(&id("n3"))];
    eventually("the three owners vote", || {
        let metrics = nodes[0].service.metrics();
        let membership = metrics.membership_config.membership();
        let current: Vec<u64> = membership.voter_ids().collect();
        let mut expected = voters.to_vec();
        expected.sort_unstable();
        current == expected
    })
    .await;
    nodes
}

/// The version invariant across nodes: no version with two digests, no node that saw a fork.
fn assert_one_layout_per_version(nodes: &[&TestNode]) {
    let mut seen: BTreeMap<u64, (u64, String)> = BTreeMap::new();
    for node in nodes {
        assert_eq!(
            node.service.forks(),
            0,
            "{} applied a version twice",
            node.name
        );
        for (version, digest) in node.service.applied_history() {
            match seen.get(&version) {
                Some((other, who)) => assert_eq!(
                    *other, digest,
                    "version {version}: {who} and {} applied different layouts",
                    node.name
                ),
                None => {
                    seen.insert(version, (digest, node.name.clone()));
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_with_a_node_down_applies_and_the_node_catches_up_from_disk() {
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let storages = [0, 1, 2].map(|i| StorageConfig::Directory(dirs[i].path().join("layout")));
    let mut nodes = three_node_cluster(storages).await;
    let started = Instant::now();

    // n3 goes down; n2 (a follower) stages a capacity change and commits it, forwarded to the
    // leader, with only n1 and n2 up.
    nodes[2].stop().await;
    let n1_spec = nodes[0].spec("a", 2);
    nodes[1]
        .service
        .stage_join(id("n1"), n1_spec)
        .await
        .expect("stages with one node down");
    let layout = nodes[1]
        .service
        .commit(Some(2))
        .await
        .expect("commits with one node down");
    assert_eq!(layout.version, 3);
    assert_eq!(layout.members[&id("n1")].capacity, 2);
    eventually("n1 and n2 at version 3", || {
        nodes[0].version() == 3 && nodes[1].version() == 3
    })
    .await;
    assert_eq!(
        nodes[2].version(),
        2,
        "the stopped node still shows what it knew"
    );

    // n3 restarts from its directory: it knows version 2 at once, then catches up to 3.
    nodes[2].restart().await;
    assert_eq!(
        nodes[2].version(),
        2,
        "the restarted node recovered its layout from disk"
    );
    eventually("n3 catches up to version 3", || nodes[2].version() == 3).await;
    let digests: Vec<u64> = nodes
        .iter()
        .map(|n| n.service.current().expect("layout").digest())
        .collect();
    assert!(
        digests.windows(2).all(|w| w[0] == w[1]),
        "one layout everywhere: {digests:?}"
    );

    // All three restart at once (a full cluster restart): the layout survives and the group
    // elects a leader again and accepts changes.
    for node in nodes.iter_mut() {
        node.stop().await;
    }
    for node in nodes.iter_mut() {
        node.restart().await;
        assert_eq!(node.version(), 3);
    }
    let spec = nodes[2].spec("c", 3);
    nodes[2]
        .service
        .stage_join(id("n3"), spec)
        .await
        .expect("stages after restart");
    let layout = nodes[2]
        .service
        .commit(None)
        .await
        .expect("commits after restart");
    assert_eq!(layout.version, 4);
    eventually("every node at version 4", || {
        nodes.iter().all(|n| n.version() == 4)
    })
    .await;
    assert_one_layout_per_version(&nodes.iter().collect::<Vec<_>>());
    eprintln!(
        "down-node scenario after formation: {:?}",
        started.elapsed()
    );
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_from_two_nodes_never_make_two_layouts_of_one_version() {
    init_tracing();
    let mut nodes = three_node_cluster([memory(), memory(), memory()]).await;
    let mut successes = 0;
    for round in 0..4u32 {
        // One change is staged; n2 and n3 both commit it at once, both against the version they
        // see.
        let version = nodes[0].version();
        let spec = nodes[0].spec("a", 1 + round % 2 + 1);
        nodes[0]
            .service
            .stage_join(id("n1"), spec)
            .await
            .expect("stages");
        eventually("n2 and n3 see the staged change", || {
            nodes[1..]
                .iter()
                .all(|n| !n.service.state().state.staged.is_empty())
        })
        .await;
        let expected = if round % 2 == 0 { Some(version) } else { None };
        let (a, b) = tokio::join!(
            nodes[1].service.commit(expected),
            nodes[2].service.commit(expected)
        );
        let outcomes = [a, b];
        let won: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(
            won.len(),
            1,
            "round {round}: exactly one commit wins: {outcomes:?}"
        );
        assert_eq!(won[0].version, version + 1);
        successes += 1;
        let lost = outcomes
            .iter()
            .find_map(|o| o.as_ref().err())
            .expect("one commit lost");
        match lost {
            Error::Rejected(LayoutError::VersionMismatch { expected, current }) => {
                assert_eq!((*expected, *current), (version, version + 1));
                assert!(lost.is_retryable());
            }
            Error::Rejected(LayoutError::NothingStaged) => assert!(expected.is_none()),
            other => panic!("round {round}: unexpected refusal {other:?}"),
        }
        eventually("every node at the new version", || {
            nodes.iter().all(|n| n.version() == version + 1)
        })
        .await;
    }
    assert_eq!(successes, 4);
    assert_one_layout_per_version(&nodes.iter().collect::<Vec<_>>());
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_answers_without_a_leader_and_changes_wait_for_a_majority() {
    init_tracing();
    let tune = |c: LayoutConfig| LayoutConfig {
        request_timeout_ms: 2_000,
        learner_catch_up_timeout_ms: 1_000,
        ..c
    };
    let mut nodes = three_node_cluster_with([memory(), memory(), memory()], tune).await;
    // Keep n1 and stop the two others: no majority, so no leader can act.
    nodes[1].stop().await;
    nodes[2].stop().await;
    let survivor = &nodes[0];

    let started = Instant::now();
    for _ in 0..1000 {
        let layout = survivor.service.current().expect("layout without a leader");
        assert_eq!(layout.version, 2);
    }
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "current() must not wait: {:?}",
        started.elapsed()
    );
    assert!(matches!(
        survivor.service.plan(),
        Err(Error::Rejected(LayoutError::NothingStaged))
    ));

    // A change cannot be made: it fails with a retryable error by the deadline.
    let started = Instant::now();
    let refused = survivor
        .service
        .stage_leave(id("n3"), LeaveMode::Force)
        .await;
    assert!(
        matches!(refused, Err(Error::NoLeader { .. })),
        "{refused:?}"
    );
    assert!(refused.as_ref().err().is_some_and(Error::is_retryable));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Meanwhile the layout is still there.
    assert_eq!(survivor.service.current().expect("layout").version, 2);

    // The others come back: a leader is elected and changes work again.
    nodes[1].restart_with(tune).await;
    nodes[2].restart_with(tune).await;
    let spec = nodes[1].spec("b", 2);
    nodes[0]
        .service
        .stage_join(id("n2"), spec)
        .await
        .expect("stages");
    let layout = nodes[0].service.commit(None).await.expect("commits");
    assert_eq!(layout.version, 3);
    eventually("every node at version 3", || {
        nodes.iter().all(|n| n.version() == 3)
    })
    .await;
    assert_one_layout_per_version(&nodes.iter().collect::<Vec<_>>());
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leave_drops_the_voter_and_an_unreachable_join_fails_cleanly() {
    init_tracing();
    let mut nodes = three_node_cluster([memory(), memory(), memory()]).await;

    // A join of a node nobody can reach fails before anything is committed.
    let ghost = JoinSpec {
        zone: "d".into(),
        capacity: 1,
        http: "127.0.0.1:1".into(),
        peer: "127.0.0.1:1".into(),
        region: "default".into(),
    };
    nodes[0]
        .service
        .stage_join(id("ghost"), ghost)
        .await
        .expect("stages");
    let refused = nodes[0].service.commit(None).await;
    assert!(
        matches!(refused, Err(Error::JoiningNodeUnreachable { ref node, .. }) if node == "ghost"),
        "{refused:?}"
    );
    assert_eq!(nodes[0].version(), 2);
    nodes[0].service.unstage(vec![]).await.expect("unstages");
    eventually("the ghost learner is dropped", || {
        nodes.iter().all(|n| {
            n.service
                .metrics()
                .membership_config
                .membership()
                .get_node(&raft_id(&id("ghost")))
                .is_none()
        })
    })
    .await;

    // The joined nodes report their partitions synced (in a node, the transfer worker does so
    // once it has the data): nothing is in transition any more.
    for node in &nodes {
        let layout = node.service.current().expect("layout");
        let syncing = layout.syncing_of(&id(&node.name));
        if !syncing.is_empty() {
            node.service.transfer_done(syncing).await.expect("recorded");
        }
    }
    eventually("no partition in transition", || {
        nodes.iter().all(|n| {
            n.service
                .current()
                .is_some_and(|layout| layout.transitions.is_empty())
        })
    })
    .await;
    let settled = nodes[0].service.current().expect("layout");
    assert_eq!(settled.version, 2, "completions are not commits");
    assert!(settled.epoch > settled.version);

    // The leader itself leaves gracefully: it is out of the assignment, no longer votes, and
    // hands the leadership over. The two others hold every partition (n = 3), so it has
    // nothing to hand off and leaves the members at once.
    eventually("a leader", || nodes.iter().any(|n| n.service.is_leader())).await;
    let leader = nodes
        .iter()
        .position(|n| n.service.is_leader())
        .expect("a leader");
    nodes.swap(leader, 2);
    let leaver = id(&nodes[2].name);
    nodes[0]
        .service
        .stage_leave(leaver.clone(), LeaveMode::Graceful)
        .await
        .expect("stages");
    let plan = nodes[0].service.plan().expect("plans");
    assert!(plan
        .moves
        .iter()
        .all(|m| m.from.as_ref() == Some(&leaver) || m.to.is_none()));
    let layout = nodes[0].service.commit(None).await.expect("commits");
    assert_eq!(layout.version, 3);
    assert!(!layout.members.contains_key(&leaver));
    assert!(layout.transitions.is_empty());
    let mut remaining = vec![raft_id(&id(&nodes[0].name)), raft_id(&id(&nodes[1].name))];
    remaining.sort_unstable();
    eventually("the two remaining owners are the only voters", || {
        nodes[..2].iter().all(|n| {
            let metrics = n.service.metrics();
            let voters: Vec<u64> = metrics.membership_config.membership().voter_ids().collect();
            voters == remaining
        })
    })
    .await;
    eventually("a remaining owner leads", || {
        nodes[..2].iter().any(|n| n.service.is_leader())
    })
    .await;

    // With the leaver gone, the two owners still commit.
    nodes[2].stop().await;
    let name = nodes[0].name.clone();
    let spec = nodes[0].spec("a", 3);
    nodes[1]
        .service
        .stage_join(id(&name), spec)
        .await
        .expect("stages");
    let layout = nodes[1].service.commit(None).await.expect("commits");
    assert_eq!(layout.version, 4);
    assert!(
        !layout.members.contains_key(&leaver),
        "the leaving node is dropped"
    );
    assert_one_layout_per_version(&nodes[..2].iter().collect::<Vec<_>>());
    for node in nodes.iter_mut().take(2) {
        node.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_far_behind_catches_up_by_snapshot() {
    init_tracing();
    let tune = |c: LayoutConfig| LayoutConfig {
        snapshot_logs_since_last: 4,
        logs_kept_after_snapshot: 0,
        ..c
    };
    let n1 = TestNode::start_with("n1", None, memory(), tune).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut n2 = TestNode::start_with(
        "n2",
        None,
        StorageConfig::Directory(dir.path().to_path_buf()),
        tune,
    )
    .await;
    let n3 = TestNode::start_with("n3", None, memory(), tune).await;
    let first = Layout::bootstrap(CLUSTER, 3, 16, id("n1"), n1.spec("a", 1)).expect("layout");
    n1.service
        .bootstrap_single(first)
        .await
        .expect("bootstraps");
    n1.service
        .stage_join(id("n2"), n2.spec("b", 1))
        .await
        .expect("stages");
    n1.service
        .stage_join(id("n3"), n3.spec("c", 1))
        .await
        .expect("stages");
    n1.service.commit(None).await.expect("commits");
    eventually("all at version 2", || {
        [&n1, &n2, &n3].iter().all(|n| n.version() == 2)
    })
    .await;

    let n2_last_index = n2.service.metrics().last_log_index.expect("n2 has a log");
    n2.stop().await;
    for capacity in 2..8 {
        n1.service
            .stage_join(id("n1"), n1.spec("a", capacity))
            .await
            .expect("stages");
        n1.service.commit(None).await.expect("commits");
    }
    let target = n1.version();
    assert_eq!(target, 8);
    eventually("n1 purged the log n2 is missing", || {
        n1.service
            .metrics()
            .purged
            .is_some_and(|purged| purged.index > n2_last_index + 1)
    })
    .await;

    n2 = TestNode::start_with("n2", Some(n2.addr), n2.storage.clone(), tune).await;
    eventually("n2 catches up by snapshot", || n2.version() == target).await;
    assert_one_layout_per_version(&[&n1, &n2, &n3]);
    for mut node in [n1, n2, n3] {
        node.stop().await;
    }
}

/// A bucket's properties set through any node reach every node, are refused when invalid,
/// survive a restart from disk, and are not a layout change: no version or epoch moves and the
/// layout channel stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_properties_are_replicated_without_a_new_layout() {
    use yeskv_core::bucket::{BucketProps, Datatype};
    init_tracing();
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let storages = [0, 1, 2].map(|i| StorageConfig::Directory(dirs[i].path().to_path_buf()));
    let mut nodes = three_node_cluster(storages).await;
    let before: Vec<(u64, u64)> = nodes
        .iter()
        .map(|n| {
            let layout = n.service.current().expect("layout");
            (layout.version, layout.epoch)
        })
        .collect();
    let mut layouts: Vec<_> = nodes.iter().map(|n| n.service.subscribe()).collect();
    for receiver in &mut layouts {
        receiver.borrow_and_update();
    }

    let counter = BucketProps {
        datatype: Some(Datatype::Counter),
        salt: 8,
        ..BucketProps::default()
    };
    // Through a follower (n3 never leads here unless elected; either way it works).
    nodes[2]
        .service
        .set_bucket(b"likes".to_vec(), counter.clone())
        .await
        .expect("sets");
    assert_eq!(
        nodes[2].service.bucket_props(b"likes"),
        counter,
        "the proposer reads its own change"
    );
    eventually("every node has the bucket's properties", || {
        nodes
            .iter()
            .all(|n| n.service.bucket_props(b"likes") == counter)
    })
    .await;
    assert_eq!(
        nodes[0].service.bucket_props(b"other"),
        BucketProps::default()
    );
    for (node, (version, epoch)) in nodes.iter().zip(&before) {
        let layout = node.service.current().expect("layout");
        assert_eq!((layout.version, layout.epoch), (*version, *epoch));
    }
    for receiver in &layouts {
        assert!(
            !receiver.has_changed().expect("open"),
            "a bucket change is not a new layout"
        );
    }

    let invalid = BucketProps {
        ttl_sliding: true,
        ..BucketProps::default()
    };
    let refused = nodes[1]
        .service
        .set_bucket(b"likes".to_vec(), invalid)
        .await;
    assert!(
        matches!(
            refused,
            Err(Error::Rejected(LayoutError::InvalidBucket { .. }))
        ),
        "{refused:?}"
    );
    assert_eq!(nodes[1].service.bucket_props(b"likes"), counter);

    // A restart rebuilds the state from snapshot + log: the properties are there before any
    // leader is found.
    nodes[1].stop().await;
    nodes[1].restart().await;
    assert_eq!(nodes[1].service.bucket_props(b"likes"), counter);
    assert_one_layout_per_version(&nodes.iter().collect::<Vec<_>>());
    for node in nodes.iter_mut() {
        node.stop().await;
    }
}

/// `catch_up`: a node restarted after missing a change applies it before `catch_up` returns
/// (its own log ends before it, so only the leader's read index tells it there is more); with
/// no majority, `catch_up` fails by the request timeout instead of waiting for a leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_applies_what_a_restarted_node_missed_and_gives_up_without_a_leader() {
    use yeskv_core::bucket::{BucketProps, Datatype};
    init_tracing();
    let tune = |c: LayoutConfig| LayoutConfig {
        request_timeout_ms: 2_000,
        learner_catch_up_timeout_ms: 1_000,
        ..c
    };
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let storages = [0, 1, 2].map(|i| StorageConfig::Directory(dirs[i].path().to_path_buf()));
    let mut nodes = three_node_cluster_with(storages, tune).await;
    nodes[2].stop().await;
    let cart = BucketProps {
        datatype: Some(Datatype::Cart),
        ..BucketProps::default()
    };
    nodes[0]
        .service
        .set_bucket(b"carts".to_vec(), cart.clone())
        .await
        .expect("sets with n1 and n2");
    let committed = nodes[0].service.state().applied_index;

    nodes[2].restart_with(tune).await;
    let reached = nodes[2].service.catch_up().await.expect("catches up");
    assert!(reached >= committed, "{reached} < {committed}");
    assert_eq!(nodes[2].service.bucket_props(b"carts"), cart);

    // No majority: n1 alone cannot learn the commit index, and says so by the deadline.
    nodes[1].stop().await;
    nodes[2].stop().await;
    let started = Instant::now();
    let lonely = nodes[0].service.catch_up().await;
    assert!(matches!(lonely, Err(Error::NoLeader { .. })), "{lonely:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    nodes[0].stop().await;
}

/// Issue 17: an `InstallSnapshot` chunk at offset 2^40 made the receiver allocate ~1 TiB and
/// abort. It is now refused with a reason naming the bound, before openraft buffers anything; the
/// node keeps working, and a chunk within the bound still reaches openraft.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_chunk_past_the_bound_is_refused_and_the_node_keeps_working() {
    use openraft::raft::InstallSnapshotRequest;
    use yeskv_layout::raft::{SnapshotMeta, Vote};
    use yeskv_layout::{RaftRequest, SNAPSHOT_BYTES_MAX};
    init_tracing();
    let mut n1 = TestNode::start_with("n1", None, memory(), |c| c).await;
    let first = Layout::bootstrap(CLUSTER, 3, 16, id("n1"), n1.spec("a", 1)).expect("layout");
    n1.service
        .bootstrap_single(first)
        .await
        .expect("bootstraps");
    let chunk = |offset: u64| RaftRpc {
        to: raft_id(&id("n1")),
        body: RaftRequest::InstallSnapshot(InstallSnapshotRequest {
            vote: Vote::new(0, raft_id(&id("n2"))),
            meta: SnapshotMeta {
                snapshot_id: "forged".into(),
                ..SnapshotMeta::default()
            },
            offset,
            data: vec![7; 16],
            done: false,
        }),
    };
    let refusal = |response: RaftRpcResponse| match response {
        RaftRpcResponse::InstallSnapshot(Err(error)) => Some(error.to_string()),
        _ => None,
    };
    let refused = refusal(n1.service.handle(chunk(1 << 40)).await).expect("refused");
    assert!(
        refused.contains(&format!("({SNAPSHOT_BYTES_MAX} bytes)")),
        "the reason names the bound: {refused}"
    );
    // Within the bound, openraft answers (here: the stale vote is refused by Raft, not by us).
    let answered = n1.service.handle(chunk(1024)).await;
    if let Some(reason) = refusal(answered) {
        assert!(!reason.contains("largest layout snapshot"), "{reason}");
    }
    n1.service
        .stage_join(id("n1"), n1.spec("a", 2))
        .await
        .expect("the node still takes changes");
    let layout = n1.service.commit(None).await.expect("commits");
    assert_eq!(layout.version, 2);
    n1.stop().await;
}
