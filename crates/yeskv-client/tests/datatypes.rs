//! The client against a real node: data types (cart, counter, set), read-modify-write with
//! [`Client::update`], sessions (TTL, touch, sliding expiry) and bucket properties.
//!
//! Each test runs one node in this process (`yeskv_node::server::run`: the server the binary
//! runs, on RocksDB in a temporary directory, real HTTP on loopback) and talks to it through a
//! ring-aware client, as an application would. The node is stopped (its shutdown future
//! resolved) at the end of the test.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use yeskv_client::{
    BucketPatch, BucketProps, Client, Conflict, Datatype, Error, ReadOptions, UpdateOptions,
    WriteOptions,
};

/// One node of its own cluster, running in this process.
struct TestNode {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), yeskv_node::Error>>>,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// Starts a node on fresh loopback ports and waits until it serves.
    async fn start() -> TestNode {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut config = yeskv_node::Config {
            node_id: "n1".into(),
            data_dir: dir.path().to_path_buf(),
            http: format!("127.0.0.1:{}", free_port()),
            peer: format!("127.0.0.1:{}", free_port()),
            ..yeskv_node::Config::default()
        };
        config.server.shutdown_drain_ms = 0;
        let url = format!("http://{}", config.http);
        let config = config.validate().expect("valid configuration");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(yeskv_node::server::run(config, None, async move {
            let _ = stopped.await;
        }));
        let node = TestNode {
            url,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        let probe = Client::new(&node.url).expect("valid URL");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !probe.health().await {
            let task = node.task.as_ref().expect("running");
            assert!(!task.is_finished(), "the node stopped while starting");
            assert!(Instant::now() < deadline, "the node did not start in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    /// A ring-aware client with this node as its seed.
    fn client(&self) -> Client {
        Client::builder()
            .node(self.url.clone())
            .build()
            .expect("valid URL")
    }

    /// Stops the node and waits for its clean shutdown.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the node stops within 30 s")
                .expect("the node task did not panic");
            result.expect("clean shutdown");
        }
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

fn datatype(datatype: Datatype) -> BucketProps {
    BucketProps {
        datatype: Some(datatype),
        ..BucketProps::default()
    }
}

/// Polls `condition` every 100 ms until it holds; fails after `timeout`.
async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cart_counter_and_set_round_trip() {
    let node = TestNode::start().await;
    let client = node.client();
    client
        .set_bucket("carts", &datatype(Datatype::Cart))
        .await
        .expect("cart bucket");
    client
        .set_bucket("views", &datatype(Datatype::Counter))
        .await
        .expect("counter bucket");
    client
        .set_bucket("tags", &datatype(Datatype::Set))
        .await
        .expect("set bucket");
    assert_eq!(
        client.bucket("carts").await.expect("props"),
        datatype(Datatype::Cart)
    );

    // Cart: adds, a concurrent add from two devices, a remove with the read's context, set.
    let carts = client.cart("carts");
    assert_eq!(carts.get("alice").await.expect("read"), None);
    carts.add("alice", "sku-1", 2).await.expect("add");
    carts.add("alice", "sku-2", 1).await.expect("add");
    let (phone, laptop) = (carts.clone(), carts.clone());
    let (first, second) = tokio::join!(
        tokio::spawn(async move { phone.add("alice", "sku-3", 1).await }),
        tokio::spawn(async move { laptop.add("alice", "sku-3", 1).await }),
    );
    first.expect("task").expect("add from the phone");
    second.expect("task").expect("add from the laptop");
    let cart = carts.get("alice").await.expect("read").expect("written");
    assert_eq!(
        cart.items.into_iter().collect::<Vec<_>>(),
        [
            ("sku-1".to_string(), 2),
            ("sku-2".to_string(), 1),
            ("sku-3".to_string(), 2)
        ]
    );
    carts
        .remove("alice", "sku-1", Some(&cart.context))
        .await
        .expect("remove");
    carts.set_qty("alice", "sku-2", 5).await.expect("set");
    let cart = carts.get("alice").await.expect("read").expect("written");
    assert_eq!(cart.items.get("sku-1"), None);
    assert_eq!(cart.items.get("sku-2"), Some(&5));
    assert_eq!(cart.items.get("sku-3"), Some(&2));

    // A remove whose context did not see an add leaves that add in place (add wins).
    let seen = carts.get("bob").await.expect("read");
    assert_eq!(seen, None);
    carts.add("bob", "sku-9", 1).await.expect("add");
    // Without a context: removes all the node holds of the item.
    carts.remove("bob", "sku-9", None).await.expect("remove");
    let before = carts.get("bob").await.expect("read").expect("written");
    carts
        .add("bob", "sku-9", 3)
        .await
        .expect("add after the read");
    carts
        .remove("bob", "sku-9", Some(&before.context))
        .await
        .expect("remove what was seen");
    let bob = carts.get("bob").await.expect("read").expect("written");
    assert_eq!(bob.items.get("sku-9"), Some(&3), "{bob:?}");

    // Counter.
    let views = client.counter("views");
    views.incr("page-1", 5).await.expect("incr");
    views.incr("page-1", -2).await.expect("decr");
    let counter = views.get("page-1").await.expect("read").expect("written");
    assert_eq!(counter.value, 3);
    assert!(!counter.context.is_empty());

    // Set.
    let tags = client.set("tags");
    tags.add("post-1", ["rust", "kv", "dynamo"])
        .await
        .expect("add");
    let set = tags
        .members("post-1")
        .await
        .expect("read")
        .expect("written");
    assert_eq!(set.members, ["dynamo", "kv", "rust"]);
    tags.remove("post-1", ["kv"], Some(&set.context))
        .await
        .expect("remove");
    let set = tags
        .members("post-1")
        .await
        .expect("read")
        .expect("written");
    assert_eq!(set.members, ["dynamo", "rust"]);

    // The untyped read names the type.
    let read = client
        .dt_read("views", "page-1", &ReadOptions::default())
        .await
        .expect("read")
        .expect("written");
    assert_eq!(read.value.datatype(), Datatype::Counter);

    // Wrong types: a read through the wrong handle, an operation of another type (the
    // server's 409 and its reason), a data type operation on a plain bucket.
    let error = client
        .counter("carts")
        .get("alice")
        .await
        .expect_err("a cart");
    assert_eq!(
        error,
        Error::WrongDatatype {
            expected: Datatype::Counter,
            found: Datatype::Cart
        }
    );
    let error = client
        .counter("carts")
        .incr("alice", 1)
        .await
        .expect_err("not a counter");
    assert!(error.is_conflict(), "{error:?}");
    assert!(
        error.reason().is_some_and(|r| r.contains("cart")),
        "{error}"
    );
    let error = client
        .cart("plain")
        .add("k", "sku", 1)
        .await
        .expect_err("plain bucket");
    assert!(error.is_conflict(), "{error:?}");
    let error = client
        .put("carts", "alice", "raw".into(), &WriteOptions::default())
        .await
        .expect_err("plain write on a cart bucket");
    assert!(error.is_conflict(), "{error:?}");
    // Malformed operations never leave the client.
    let error = carts.add("alice", "sku-1", 0).await.expect_err("qty 0");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");

    node.stop().await;
}

/// The union of the comma-separated tokens of every sibling, plus `extra`.
fn union_with(siblings: &[Bytes], extra: Option<&str>) -> Bytes {
    let mut tokens: BTreeSet<String> = siblings
        .iter()
        .flat_map(|value| {
            String::from_utf8_lossy(value)
                .split(',')
                .filter(|token| !token.is_empty())
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    if let Some(extra) = extra {
        tokens.insert(extra.to_string());
    }
    Bytes::from(tokens.into_iter().collect::<Vec<_>>().join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_merges_siblings_and_concurrent_writers() {
    let node = TestNode::start().await;
    let client = node.client();

    // A key that does not exist: the merge sees no siblings.
    let mut seen = None;
    client
        .update("profiles", "ada", |siblings| {
            seen = Some(siblings.len());
            union_with(siblings, Some("a"))
        })
        .await
        .expect("update");
    assert_eq!(seen, Some(0));

    // Two blind writes leave siblings; one update folds them into one value.
    let blind = WriteOptions::default();
    client
        .put("profiles", "ada", "b".into(), &blind)
        .await
        .expect("put");
    client
        .put("profiles", "ada", "c".into(), &blind)
        .await
        .expect("put");
    let read = client
        .get("profiles", "ada", &ReadOptions::default())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.siblings.len(), 3);
    let mut seen = 0;
    client
        .update("profiles", "ada", |siblings| {
            seen = siblings.len();
            union_with(siblings, None)
        })
        .await
        .expect("update");
    assert_eq!(seen, 3);
    let read = client
        .get("profiles", "ada", &ReadOptions::default())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.value().map(|v| v.as_ref()), Some(&b"a,b,c"[..]));

    // Concurrent updaters: none is lost. Those that raced leave siblings, which the next
    // update merges.
    let tasks: Vec<_> = (0..8)
        .map(|index| {
            let client = client.clone();
            tokio::spawn(async move {
                let token = format!("w{index}");
                client
                    .update("profiles", "ada", |siblings| {
                        union_with(siblings, Some(&token))
                    })
                    .await
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("task").expect("update");
    }
    let options = UpdateOptions {
        attempts_max: 2,
        ..UpdateOptions::default()
    };
    client
        .update_with("profiles", "ada", &options, |siblings| {
            union_with(siblings, None)
        })
        .await
        .expect("final merge");
    let read = client
        .get("profiles", "ada", &ReadOptions::default())
        .await
        .expect("read")
        .expect("found");
    let expected = "a,b,c,w0,w1,w2,w3,w4,w5,w6,w7";
    assert_eq!(
        read.value()
            .map(|v| String::from_utf8_lossy(v).into_owned()),
        Some(expected.to_string()),
        "{read:?}"
    );

    // A transient failure is retried, then reported: nothing listens on port 9.
    let unreachable = Client::builder()
        .node("http://127.0.0.1:9")
        .ring_aware(false)
        .retries(0)
        .build()
        .expect("valid");
    let options = UpdateOptions {
        attempts_max: 3,
        backoff_initial: Duration::from_millis(1),
        ..UpdateOptions::default()
    };
    let mut calls = 0;
    let error = unreachable
        .update_with("profiles", "ada", &options, |_| {
            calls += 1;
            Bytes::new()
        })
        .await
        .expect_err("nothing listens");
    assert!(matches!(error, Error::Connect(_)), "{error:?}");
    assert_eq!(calls, 0, "the read failed, so merge was never called");

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_expire_unless_touched_or_read_on_a_sliding_bucket() {
    let node = TestNode::start().await;
    let client = node.client();
    let read = |key: &'static str| {
        let client = client.clone();
        async move {
            client
                .get("sessions", key, &ReadOptions::default())
                .await
                .expect("read")
                .is_some()
        }
    };

    // A TTL per write; a touch pushes the expiry out without rewriting the value.
    client
        .put_with_ttl("sessions", "short", "s".into(), 1)
        .await
        .expect("put");
    client
        .put_with_ttl("sessions", "kept", "k".into(), 2)
        .await
        .expect("put");
    assert!(client
        .touch("sessions", "kept", Some(120))
        .await
        .expect("touch"));
    assert!(!client
        .touch("sessions", "never-written", Some(120))
        .await
        .expect("touch"));
    eventually(
        "the short session to expire",
        Duration::from_secs(10),
        || {
            let read = read("short");
            async move { !read.await }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(read("kept").await, "the touched session expired");
    assert!(!client
        .touch("sessions", "short", Some(120))
        .await
        .expect("touch"));
    // Without a TTL of its own or of the bucket, a touch has nothing to extend by.
    let error = client
        .touch("sessions", "kept", None)
        .await
        .expect_err("no TTL");
    assert_eq!(error.status(), Some(400), "{error:?}");

    // A sliding bucket: each read extends the expiry by the bucket's TTL.
    client
        .set_bucket(
            "sliding",
            &BucketProps {
                ttl_secs: Some(3),
                ttl_sliding: true,
                ..BucketProps::default()
            },
        )
        .await
        .expect("sliding bucket");
    client
        .put("sliding", "s1", "v".into(), &WriteOptions::default())
        .await
        .expect("put");
    client
        .put("sliding", "s2", "v".into(), &WriteOptions::default())
        .await
        .expect("put");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(6) {
        let found = client
            .get("sliding", "s1", &ReadOptions::default())
            .await
            .expect("read");
        assert!(found.is_some(), "s1 expired while being read");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        client
            .get("sliding", "s2", &ReadOptions::default())
            .await
            .expect("read"),
        None,
        "s2 was not read, so it expired"
    );
    // The bucket's TTL is the touch's default.
    assert!(client.touch("sliding", "s1", None).await.expect("touch"));

    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_properties_round_trip_and_refusals() {
    let node = TestNode::start().await;
    let client = node.client();
    assert_eq!(
        client.bucket("fresh").await.expect("props"),
        BucketProps::default()
    );
    let lww = BucketProps {
        conflict: Conflict::Lww,
        ttl_secs: Some(60),
        ..BucketProps::default()
    };
    client.set_bucket("last", &lww).await.expect("set");
    assert_eq!(client.bucket("last").await.expect("props"), lww);
    client
        .patch_bucket(
            "last",
            &BucketPatch {
                ttl_sliding: Some(true),
                ..BucketPatch::default()
            },
        )
        .await
        .expect("patch");
    let patched = client.bucket("last").await.expect("props");
    assert!(patched.ttl_sliding);
    assert_eq!(patched.conflict, Conflict::Lww);

    // A last-writer-wins bucket answers one value, even after blind writes.
    for value in ["one", "two"] {
        client
            .put("last", "k", Bytes::from(value), &WriteOptions::default())
            .await
            .expect("put");
    }
    let read = client
        .get("last", "k", &ReadOptions::default())
        .await
        .expect("read")
        .expect("found");
    assert_eq!(read.siblings.len(), 1);

    // Checked by the client: nothing is sent.
    let error = client
        .set_bucket(
            "last",
            &BucketProps {
                ttl_sliding: true,
                ..BucketProps::default()
            },
        )
        .await
        .expect_err("sliding without a TTL");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error:?}");
    // Refused by the server, with its reason: properties that do not hold together, and a
    // change of data type of a bucket that holds data.
    let error = client
        .patch_bucket(
            "last",
            &BucketPatch {
                datatype: Some(Some(Datatype::Cart)),
                ..BucketPatch::default()
            },
        )
        .await
        .expect_err("lww cart");
    assert_eq!(error.status(), Some(400), "{error:?}");
    let error = client
        .set_bucket("last", &datatype(Datatype::Counter))
        .await
        .expect_err("holds data");
    assert!(error.is_conflict(), "{error:?}");
    assert!(
        error.reason().is_some_and(|r| r.contains("holds data")),
        "{error}"
    );

    node.stop().await;
}
