//! Ring-aware routing against three scripted nodes on loopback. Each serves `GET /v1/ring` from
//! one shared, mutable layout and answers key requests (with `X-Yeskv-Layout-Version` when the
//! test says so); every request is recorded, so a test sees which node each one reached.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use support::{mock, response, Mock};
use yeskv_client::{Client, Error, ReadOptions, ReadRouting, WriteOptions, SUPPORTED_HASH};
use yeskv_core::keyspace::{key_hash, partition_of};

const PARTITIONS: u32 = 8;
const BUCKET: &str = "b";
/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

/// What the nodes publish. Partition `p` prefers node `(p + shift) mod 3`, then the next two.
struct Layout {
    version: u64,
    shift: usize,
    hash: String,
    /// Whether key responses carry `X-Yeskv-Layout-Version`.
    announce: bool,
    /// Whether `/v1/ring` exists (an older server: 404).
    has_ring: bool,
    urls: Vec<String>,
}

struct Cluster {
    nodes: Vec<Mock>,
    layout: Arc<Mutex<Layout>>,
}

impl Cluster {
    async fn start() -> Cluster {
        let layout = Arc::new(Mutex::new(Layout {
            version: 1,
            shift: 0,
            hash: SUPPORTED_HASH.to_string(),
            announce: true,
            has_ring: true,
            urls: Vec::new(),
        }));
        let mut nodes = Vec::new();
        for index in 0..3 {
            let layout = layout.clone();
            nodes.push(mock(move |request| answer(&layout, index, request)).await);
        }
        layout.lock().expect("not poisoned").urls = nodes.iter().map(|n| n.url.clone()).collect();
        Cluster { nodes, layout }
    }

    fn set_layout(&self, version: u64, shift: usize) {
        let mut layout = self.layout.lock().expect("not poisoned");
        layout.version = version;
        layout.shift = shift;
    }

    fn update(&self, change: impl FnOnce(&mut Layout)) {
        change(&mut self.layout.lock().expect("not poisoned"));
    }

    fn url(&self, index: usize) -> String {
        self.nodes[index].url.clone()
    }

    /// The node a key's preference list starts with (`rank` 0), or its `rank`-th entry.
    fn preferred(&self, key: &str, rank: usize) -> usize {
        let partition = partition_of(key_hash(BUCKET.as_bytes(), key.as_bytes()), PARTITIONS);
        let shift = self.layout.lock().expect("not poisoned").shift;
        (usize::from(partition) + shift + rank) % 3
    }

    /// The nodes that received a request for `key` with `method`, in node order.
    fn receivers(&self, method: &str, key: &str) -> Vec<usize> {
        let target = format!("/v1/kv/{BUCKET}/{key}");
        (0..self.nodes.len())
            .flat_map(|index| {
                self.nodes[index]
                    .requests()
                    .into_iter()
                    .filter(|request| request.method == method && request.target == target)
                    .map(move |_| index)
            })
            .collect()
    }

    /// How many `/v1/ring` requests the nodes received together.
    fn ring_fetches(&self) -> usize {
        self.nodes
            .iter()
            .flat_map(|node| node.requests())
            .filter(|request| request.target == "/v1/ring")
            .count()
    }
}

/// What node `index` answers.
fn answer(layout: &Mutex<Layout>, index: usize, request: &support::Recorded) -> Option<String> {
    let layout = layout.lock().expect("not poisoned");
    if request.target == "/v1/ring" {
        if !layout.has_ring {
            return response("404 Not Found", &[], r#"{"error":"no such endpoint"}"#);
        }
        return response(
            "200 OK",
            &[("content-type", "application/json")],
            &ring_json(&layout).to_string(),
        );
    }
    let version = layout.version.to_string();
    let mut headers = vec![("x-causal-context", "ctx")];
    if layout.announce {
        headers.push(("x-yeskv-layout-version", version.as_str()));
    }
    match request.method.as_str() {
        "GET" => response("200 OK", &headers, &format!("node-{index}")),
        _ => response("204 No Content", &headers, ""),
    }
}

fn ring_json(layout: &Layout) -> serde_json::Value {
    let ids = ["a", "b", "c"];
    let partitions: Vec<_> = (0..PARTITIONS as usize)
        .map(|p| {
            let first = p + layout.shift;
            serde_json::json!({
                "id": p,
                "preference": [ids[first % 3], ids[(first + 1) % 3], ids[(first + 2) % 3]],
            })
        })
        .collect();
    // Addresses as the server publishes them (`host:port`), except one full URL.
    let http = |index: usize| -> String {
        let url = layout.urls.get(index).cloned().unwrap_or_default();
        if index == 1 {
            url
        } else {
            url.trim_start_matches("http://").to_string()
        }
    };
    serde_json::json!({
        "version": layout.version,
        "n": 2,
        "partition_count": PARTITIONS,
        "partitions": partitions,
        "nodes": [
            {"id": "a", "http": http(0), "zone": "z1"},
            {"id": "b", "http": http(1), "zone": "z2"},
            {"id": "c", "http": http(2), "zone": "z3"},
        ],
        "hash": layout.hash,
    })
}

async fn put(client: &Client, key: &str) {
    client
        .put(
            BUCKET,
            key,
            Bytes::from_static(b"v"),
            &WriteOptions::default(),
        )
        .await
        .expect("put succeeds");
}

/// Waits until `condition` holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn key_requests_go_to_the_first_preference_node() {
    let cluster = Cluster::start().await;
    // Older servers do not announce their layout version: that must not matter.
    cluster.update(|layout| layout.announce = false);
    let client = Client::builder()
        .node(cluster.url(0))
        .build()
        .expect("valid");
    assert_eq!(client.ring_version(), None);

    // Concurrent first requests share one ring fetch, and all of them are routed by it.
    let mut tasks = Vec::new();
    for index in 0..8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            put(&client, &format!("first-{index}")).await
        }));
    }
    for task in tasks {
        task.await.expect("no panic");
    }
    assert_eq!(cluster.ring_fetches(), 1);
    assert_eq!(client.ring_version(), Some(1));
    assert_eq!(
        client.known_nodes(),
        [cluster.url(0), cluster.url(1), cluster.url(2)]
    );
    for index in 0..8 {
        let key = format!("first-{index}");
        assert_eq!(
            cluster.receivers("PUT", &key),
            [cluster.preferred(&key, 0)],
            "{key}"
        );
    }

    for index in 0..24 {
        let key = format!("key-{index}");
        let expected = cluster.preferred(&key, 0);
        assert_eq!(client.route(BUCKET, &key), cluster.url(expected));
        put(&client, &key).await;
        let read = client
            .get(BUCKET, &key, &ReadOptions::default())
            .await
            .expect("get succeeds")
            .expect("found");
        assert_eq!(
            read.value().map(|value| value.as_ref()),
            Some(format!("node-{expected}").as_bytes())
        );
        client
            .delete(BUCKET, &key, &WriteOptions::default())
            .await
            .expect("delete succeeds");
        for method in ["PUT", "GET", "DELETE"] {
            assert_eq!(
                cluster.receivers(method, &key),
                [expected],
                "{method} {key}"
            );
        }
    }
    assert_eq!(cluster.ring_fetches(), 1);
    assert_eq!(client.ring_error(), None);
    let ring = client.cached_ring().expect("cached");
    assert_eq!(ring.partition_count(), PARTITIONS);
    assert_eq!(ring.nodes()[2].zone.as_deref(), Some("z3"));
}

#[tokio::test]
async fn a_down_node_is_skipped_for_the_next_preference_node() {
    let cluster = Cluster::start().await;
    let client = Client::builder()
        .node(cluster.url(1))
        // Moving past a refused connection is routing, not a retry: it works without retries.
        .retries(0)
        .node_cooldown(Duration::from_secs(1))
        .build()
        .expect("valid");
    assert_eq!(client.refresh_ring().await, Ok(1));
    cluster.nodes[0].stop().await;

    let keys: Vec<String> = (0..)
        .map(|index| format!("key-{index}"))
        .filter(|key| cluster.preferred(key, 0) == 0)
        .take(6)
        .collect();
    for key in &keys {
        put(&client, key).await;
        let second = cluster.preferred(key, 1);
        assert_eq!(cluster.receivers("PUT", key), [second], "{key}");
        // Node a is cooling down: the next request goes to the second node directly.
        assert_eq!(client.route(BUCKET, key), cluster.url(second));
    }
    // After the cool-down node a is tried again.
    eventually("the cool-down of node a to end", || {
        client.route(BUCKET, &keys[0]) == cluster.url(0)
    })
    .await;
    let key = &keys[1];
    put(&client, key).await;
    assert_eq!(
        cluster.receivers("PUT", key),
        [cluster.preferred(key, 1)].repeat(2),
        "a is still down, so the put moved on again"
    );
}

#[tokio::test]
async fn a_newer_announced_layout_is_fetched_and_followed() {
    let cluster = Cluster::start().await;
    let client = Client::builder()
        .node(cluster.url(0))
        .build()
        .expect("valid");
    put(&client, "before").await;
    assert_eq!(client.ring_version(), Some(1));
    assert_eq!(
        cluster.receivers("PUT", "before"),
        [cluster.preferred("before", 0)]
    );

    // A new layout: every partition's preference list moves one node on.
    cluster.set_layout(2, 1);
    // Routed by the cached ring (version 1); its answer announces version 2.
    let key = "during";
    let old_first = (cluster.preferred(key, 0) + 2) % 3;
    put(&client, key).await;
    assert_eq!(cluster.receivers("PUT", key), [old_first]);
    eventually("the client to fetch layout 2", || {
        client.ring_version() == Some(2)
    })
    .await;
    assert_eq!(cluster.ring_fetches(), 2);

    for index in 0..12 {
        let key = format!("after-{index}");
        put(&client, &key).await;
        assert_eq!(
            cluster.receivers("PUT", &key),
            [cluster.preferred(&key, 0)],
            "{key}"
        );
    }
    // Answers announcing the version the client has trigger nothing.
    assert_eq!(cluster.ring_fetches(), 2);
}

#[tokio::test]
async fn the_ring_is_refreshed_periodically() {
    let cluster = Cluster::start().await;
    cluster.update(|layout| layout.announce = false);
    let client = Client::builder()
        .node(cluster.url(2))
        .ring_refresh_interval(Duration::from_millis(50))
        .build()
        .expect("valid");
    put(&client, "k").await;
    assert_eq!(client.ring_version(), Some(1));
    cluster.set_layout(7, 2);
    // Nothing announces the change; requests made after the interval start a refresh.
    let deadline = Instant::now() + PATIENCE;
    while client.ring_version() != Some(7) {
        assert!(Instant::now() < deadline, "the ring was never refreshed");
        put(&client, "k").await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    put(&client, "new").await;
    assert_eq!(
        cluster.receivers("PUT", "new"),
        [cluster.preferred("new", 0)]
    );
}

#[tokio::test]
async fn spread_reads_use_the_primaries_and_writes_the_first() {
    let cluster = Cluster::start().await;
    let client = Client::builder()
        .node(cluster.url(0))
        .read_routing(ReadRouting::Spread)
        .build()
        .expect("valid");
    let key = "hot";
    for _ in 0..6 {
        client
            .get(BUCKET, key, &ReadOptions::default())
            .await
            .expect("get succeeds");
        put(&client, key).await;
    }
    let mut primaries = vec![cluster.preferred(key, 0), cluster.preferred(key, 1)];
    primaries.sort_unstable();
    let mut readers = cluster.receivers("GET", key);
    readers.dedup();
    assert_eq!(
        readers, primaries,
        "n = 2: reads rotate over both primaries"
    );
    assert_eq!(
        cluster.receivers("PUT", key),
        [cluster.preferred(key, 0)].repeat(6)
    );
}

#[tokio::test]
async fn ring_aware_false_round_robins() {
    let cluster = Cluster::start().await;
    let client = Client::builder()
        .nodes((0..3).map(|index| cluster.url(index)))
        .ring_aware(false)
        .build()
        .expect("valid");
    for index in 0..6 {
        put(&client, &format!("k{index}")).await;
    }
    for index in 0..6 {
        assert_eq!(cluster.receivers("PUT", &format!("k{index}")), [index % 3]);
    }
    assert_eq!(cluster.ring_fetches(), 0);
    assert_eq!(client.ring_version(), None);
    assert!(matches!(
        client.refresh_ring().await,
        Err(Error::InvalidArgument(_))
    ));
}

#[tokio::test]
async fn an_unknown_hash_function_falls_back_to_round_robin() {
    let cluster = Cluster::start().await;
    cluster.update(|layout| layout.hash = "sha1(bucket/key) mod 2^64".into());
    let client =
        Client::with_nodes((0..3).map(|index| cluster.url(index)).collect()).expect("valid");
    for index in 0..6 {
        put(&client, &format!("k{index}")).await;
    }
    for index in 0..6 {
        assert_eq!(cluster.receivers("PUT", &format!("k{index}")), [index % 3]);
    }
    assert_eq!(client.ring_version(), None);
    let error = client.ring_error().expect("the reason is kept");
    assert!(matches!(error, Error::InvalidResponse(_)), "{error:?}");
    assert!(
        error.to_string().contains("unusable ring layout"),
        "{error}"
    );
    assert!(error.to_string().contains("sha1(bucket/key)"), "{error}");
    assert!(error.to_string().contains("not supported"), "{error}");
    assert!(matches!(
        client.refresh_ring().await,
        Err(Error::InvalidResponse(_))
    ));

    // Once the cluster publishes a ring the client can use, it routes by it.
    cluster.update(|layout| layout.hash = SUPPORTED_HASH.into());
    assert_eq!(client.refresh_ring().await, Ok(1));
    put(&client, "routed").await;
    assert_eq!(
        cluster.receivers("PUT", "routed"),
        [cluster.preferred("routed", 0)]
    );
}

#[tokio::test]
async fn a_server_without_a_ring_is_used_round_robin() {
    let cluster = Cluster::start().await;
    cluster.update(|layout| layout.has_ring = false);
    let client =
        Client::with_nodes((0..3).map(|index| cluster.url(index)).collect()).expect("valid");
    for index in 0..6 {
        put(&client, &format!("k{index}")).await;
    }
    for index in 0..6 {
        assert_eq!(cluster.receivers("PUT", &format!("k{index}")), [index % 3]);
    }
    // Each seed was asked once, not again on every request.
    assert_eq!(cluster.ring_fetches(), 3);
    assert_eq!(
        client.ring_error().and_then(|error| error.status()),
        Some(404)
    );
}

#[tokio::test]
async fn unreachable_seeds_leave_requests_failing_as_before() {
    // Port 9 on loopback: nothing listens there.
    let client = Client::builder()
        .node("http://127.0.0.1:9")
        .retries(0)
        .build()
        .expect("valid");
    let error = client
        .put(BUCKET, "k", Bytes::new(), &WriteOptions::default())
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert!(matches!(client.ring_error(), Some(Error::Connect(_))));
    assert_eq!(client.ring_version(), None);
}
