//! Issue 16 acceptance, with real node processes (3 nodes, N = 3): server-side carts merging
//! concurrent devices across a kill -9, removed items staying removed; a plain key taking 200
//! concurrent blind writes; a last-writer-wins bucket answering one value; a sliding TTL keeping
//! a read session alive; a salted counter spreading a hot key over partitions, exactly.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{request, start_cluster, try_request, wait_until, Cluster};

fn config(dir: &Path) -> String {
    let path = dir.join("yeskv.toml");
    std::fs::write(
        &path,
        "[repair]\nhandoff_interval_ms = 200\naae_interval_ms = 200\n\
         [server]\nrpc_timeout_ms = 1000\n",
    )
    .expect("config");
    path.to_string_lossy().into_owned()
}

fn three_nodes(dir: &Path) -> Cluster {
    let cfg = config(dir);
    start_cluster(dir, 3, &["zone-a", "zone-b", "zone-c"], &["--config", &cfg])
}

/// Sets a bucket's properties and waits until every running node applies them.
fn set_bucket(c: &Cluster, bucket: &str, props: Value) {
    let r = request(
        &c.nodes[0].http,
        "PUT",
        &format!("/v1/buckets/{bucket}"),
        &[("content-type", "application/json")],
        props.to_string().as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.text());
    let want = request(
        &c.nodes[0].http,
        "GET",
        &format!("/v1/buckets/{bucket}"),
        &[],
        b"",
    )
    .json();
    for addr in c.running_addrs() {
        wait_until(
            "every node applies the bucket's properties",
            Duration::from_secs(20),
            || request(&addr, "GET", &format!("/v1/buckets/{bucket}"), &[], b"").json() == want,
        );
    }
}

/// `POST /v1/dt/{bucket}/{key}` of `op`, with `ctx` if given; the status.
fn dt_op(addr: &str, bucket: &str, key: &str, op: Value, ctx: Option<&str>) -> u16 {
    let mut headers = vec![("content-type", "application/json")];
    if let Some(c) = ctx {
        headers.push(("x-causal-context", c));
    }
    match try_request(
        addr,
        "POST",
        &format!("/v1/dt/{bucket}/{key}"),
        &headers,
        op.to_string().as_bytes(),
    ) {
        Ok(r) => r.status,
        Err(_) => 0,
    }
}

/// `GET /v1/dt/{bucket}/{key}?r=...`: the status and JSON body (`Null` for a 404).
fn dt_get(addr: &str, bucket: &str, key: &str, r: &str) -> (u16, Value) {
    let resp = request(
        addr,
        "GET",
        &format!("/v1/dt/{bucket}/{key}?r={r}"),
        &[],
        b"",
    );
    let body = match resp.status {
        200 => resp.json(),
        _ => Value::Null,
    };
    (resp.status, body)
}

fn cart_items(v: &Value) -> BTreeMap<String, i64> {
    v["items"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, q)| (k.clone(), q.as_i64().expect("qty")))
                .collect()
        })
        .unwrap_or_default()
}

/// Two devices edit one cart through two nodes while the third is killed and restarted: every
/// node converges to the add-wins result, removed items stay removed.
#[test]
fn carts_merge_two_devices_across_a_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = three_nodes(dir.path());
    set_bucket(&c, "carts", json!({ "datatype": "cart" }));
    let (a, b) = (c.nodes[0].http.clone(), c.nodes[1].http.clone());
    // The wrong data type and malformed operations are refused and change nothing.
    assert_eq!(
        dt_op(&a, "carts", "c1", json!({"op": "incr", "by": 1}), None),
        409
    );
    assert_eq!(
        dt_op(&a, "carts", "c1", json!({"op": "add", "item": "x"}), None),
        400
    );
    assert_eq!(
        dt_op(
            &a,
            "carts",
            "c1",
            json!({"op": "add", "item": "x", "qty": 1, "z": 0}),
            None
        ),
        400
    );
    assert_eq!(dt_get(&a, "carts", "c1", "all").0, 404);
    let r = request(&a, "PUT", "/v1/kv/carts/c1", &[], b"raw");
    assert_eq!(r.status, 409, "{}", r.text());

    // Device A adds a0..a39 through n1 and removes every fourth after reading the cart; device
    // B adds b0..b39 through n2; both add "shared" once. n3 is killed a third of the way in.
    let barrier = Arc::new(Barrier::new(3));
    let device = |addr: String, prefix: &'static str, removes: bool, barrier: Arc<Barrier>| {
        std::thread::spawn(move || {
            let mut removed = Vec::new();
            assert_eq!(
                dt_op(
                    &addr,
                    "carts",
                    "c1",
                    json!({"op": "add", "item": "shared", "qty": 1}),
                    None
                ),
                204
            );
            for i in 0..40 {
                if i == 13 {
                    barrier.wait();
                }
                let item = format!("{prefix}{i}");
                let status = dt_op(
                    &addr,
                    "carts",
                    "c1",
                    json!({"op": "add", "item": item, "qty": 1}),
                    None,
                );
                assert_eq!(status, 204, "add {item}");
                if removes && i % 4 == 3 {
                    let gone = format!("{prefix}{}", i - 2);
                    let read = request(&addr, "GET", "/v1/dt/carts/c1", &[], b"");
                    assert_eq!(read.status, 200);
                    let ctx = read.context().expect("context");
                    assert!(
                        cart_items(&read.json()).contains_key(&gone),
                        "{gone} read back"
                    );
                    let status = dt_op(
                        &addr,
                        "carts",
                        "c1",
                        json!({"op": "remove", "item": gone}),
                        Some(&ctx),
                    );
                    assert_eq!(status, 204, "remove {gone}");
                    removed.push(gone);
                }
            }
            removed
        })
    };
    let da = device(a.clone(), "a", true, barrier.clone());
    let db = device(b.clone(), "b", false, barrier.clone());
    barrier.wait();
    c.nodes[2].kill9();
    let removed = da.join().expect("device a");
    db.join().expect("device b");
    assert_eq!(removed.len(), 10);
    c.nodes[2].restart();
    c.wait_all_up(c.version, Duration::from_secs(60));

    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for i in 0..40 {
        expected.insert(format!("a{i}"), 1);
        expected.insert(format!("b{i}"), 1);
    }
    for r in &removed {
        expected.remove(r);
    }
    expected.insert("shared".into(), 2);
    // Hints and anti-entropy bring n3's copy back; every node then answers the same cart with
    // r=all, and with r=1 from its own copy.
    for addr in c.addrs() {
        wait_until(
            "every node answers the add-wins cart",
            Duration::from_secs(60),
            || {
                let (status, body) = dt_get(&addr, "carts", "c1", "all");
                status == 200 && cart_items(&body) == expected
            },
        );
    }
    wait_until(
        "each replica holds the whole cart",
        Duration::from_secs(60),
        || {
            c.addrs().iter().all(|addr| {
                let (status, body) = dt_get(addr, "carts", "c1", "1");
                status == 200 && cart_items(&body) == expected
            })
        },
    );
    assert_eq!(dt_get(&a, "carts", "c1", "all").1["type"], "cart");
    // Removed items stay removed across another kill -9 and restart of every node in turn.
    for i in 0..3 {
        c.nodes[i].kill9();
        c.nodes[i].restart();
        c.wait_all_up(c.version, Duration::from_secs(60));
    }
    for addr in c.addrs() {
        let (status, body) = dt_get(&addr, "carts", "c1", "all");
        assert_eq!((status, cart_items(&body)), (200, expected.clone()));
    }
}

/// A plain key takes 200 concurrent blind writes: every one is acknowledged, every one is a
/// sibling, and the key is flagged past `limits.siblings_max` instead of refusing.
#[test]
fn a_plain_key_takes_200_concurrent_blind_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = three_nodes(dir.path());
    let addrs = Arc::new(c.addrs());
    let barrier = Arc::new(Barrier::new(20));
    let writers: Vec<_> = (0..20)
        .map(|t| {
            let (addrs, barrier) = (addrs.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let mut flagged = 0;
                for i in 0..10 {
                    let addr = &addrs[(t + i) % addrs.len()];
                    let value = format!("w{t}-{i}");
                    let r = request(addr, "PUT", "/v1/kv/plain/hot", &[], value.as_bytes());
                    assert_eq!(r.status, 204, "{value}: {}", r.text());
                    flagged += usize::from(r.header("x-yeskv-siblings").is_some());
                }
                flagged
            })
        })
        .collect();
    let flagged: usize = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    assert!(flagged > 0, "writes past siblings_max are flagged");
    let r = request(
        &c.nodes[0].http,
        "GET",
        "/v1/kv/plain/hot?r=all",
        &[("accept", "application/json")],
        b"",
    );
    assert_eq!(r.status, 200);
    let siblings = r.json()["siblings"].as_array().expect("siblings").len();
    assert_eq!(siblings, 200);
    assert!(r.header("x-yeskv-siblings").is_some());
    let over: f64 = c
        .nodes
        .iter()
        .map(|n| n.metric("yeskv_siblings_over_limit_total"))
        .sum();
    assert!(over > 0.0);
    // The way out: a write with the read's context replaces them all.
    let ctx = r.context().expect("context");
    let w = request(
        &c.nodes[1].http,
        "PUT",
        "/v1/kv/plain/hot",
        &[("x-causal-context", &ctx)],
        b"merged",
    );
    assert_eq!(w.status, 204);
    let r = request(&c.nodes[2].http, "GET", "/v1/kv/plain/hot?r=all", &[], b"");
    assert_eq!((r.status, r.text()), (200, "merged".to_string()));
}

/// A last-writer-wins bucket answers one value: the latest write, whichever node took it.
#[test]
fn an_lww_bucket_answers_one_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = three_nodes(dir.path());
    set_bucket(&c, "prefs", json!({ "conflict": "lww" }));
    let addrs = c.addrs();
    let barrier = Arc::new(Barrier::new(3));
    let writers: Vec<_> = addrs
        .iter()
        .enumerate()
        .map(|(i, addr)| {
            let (addr, barrier) = (addr.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for j in 0..20 {
                    let r = request(
                        &addr,
                        "PUT",
                        "/v1/kv/prefs/theme",
                        &[],
                        format!("v{i}-{j}").as_bytes(),
                    );
                    assert_eq!(r.status, 204);
                }
            })
        })
        .collect();
    writers.into_iter().for_each(|w| w.join().expect("writer"));
    let mut seen = BTreeSet::new();
    for addr in &addrs {
        let r = request(addr, "GET", "/v1/kv/prefs/theme?r=all", &[], b"");
        assert_eq!(r.status, 200, "one value, never 300: {}", r.text());
        seen.insert(r.text());
    }
    assert_eq!(
        seen.len(),
        1,
        "every node answers the same winner: {seen:?}"
    );
    // A later write wins, without a context, on any node.
    let w = request(&addrs[2], "PUT", "/v1/kv/prefs/theme", &[], b"dark");
    assert_eq!(w.status, 204);
    for addr in &addrs {
        let r = request(addr, "GET", "/v1/kv/prefs/theme?r=all", &[], b"");
        assert_eq!((r.status, r.text()), (200, "dark".to_string()));
    }
}

/// A sliding TTL keeps a key that is read alive past three times its TTL; a key not read
/// expires; `?touch` extends a key explicitly.
#[test]
fn a_sliding_ttl_keeps_a_read_session_alive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = three_nodes(dir.path());
    set_bucket(
        &c,
        "sessions",
        json!({ "ttl_secs": 3, "ttl_sliding": true }),
    );
    let (a, b) = (c.nodes[0].http.clone(), c.nodes[1].http.clone());
    for key in ["read", "idle", "touched"] {
        let r = request(
            &a,
            "PUT",
            &format!("/v1/kv/sessions/{key}"),
            &[],
            b"user=42",
        );
        assert_eq!(r.status, 204);
    }
    let start = Instant::now();
    let mut reads = 0;
    // Read "read" every second (a third of its TTL) for over three TTLs, through either node;
    // touch "touched" every second through the other.
    while start.elapsed() < Duration::from_secs(10) {
        let r = request(
            if reads % 2 == 0 { &a } else { &b },
            "GET",
            "/v1/kv/sessions/read",
            &[],
            b"",
        );
        assert_eq!(
            (r.status, r.text()),
            (200, "user=42".to_string()),
            "after {:?}",
            start.elapsed()
        );
        let t = request(&b, "POST", "/v1/kv/sessions/touched?touch", &[], b"");
        assert_eq!(t.status, 204, "{}", t.text());
        reads += 1;
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(
        request(&a, "GET", "/v1/kv/sessions/idle?r=all", &[], b"").status,
        404
    );
    assert_eq!(
        request(&a, "GET", "/v1/kv/sessions/read?r=all", &[], b"").status,
        200
    );
    assert_eq!(
        request(&a, "GET", "/v1/kv/sessions/touched?r=all", &[], b"").status,
        200
    );
    // A touch of an expired key brings nothing back.
    assert_eq!(
        request(&a, "POST", "/v1/kv/sessions/idle?touch", &[], b"").status,
        404
    );
    let sliding: f64 = c
        .nodes
        .iter()
        .map(|n| n.metric("yeskv_touches_total{reason=\"sliding\""))
        .sum();
    assert!(sliding > 0.0);
    // Left alone, the read key expires too, on every node. Any read would extend it, so the
    // test lets the TTL pass unread (the passage of time is what is tested), then reads once.
    std::thread::sleep(Duration::from_secs(4));
    for addr in c.addrs() {
        let r = request(&addr, "GET", "/v1/kv/sessions/read?r=1", &[], b"");
        assert_eq!(r.status, 404, "on {addr}: {}", r.text());
    }
}

/// A zipfian counter workload on a bucket with `salt = 16`: the hottest key's writes spread over
/// at least 8 partitions and every counter ends exact.
#[test]
fn a_salted_counter_spreads_a_hot_key_and_stays_exact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = three_nodes(dir.path());
    set_bucket(&c, "hits", json!({ "datatype": "counter", "salt": 16 }));
    let addrs = Arc::new(c.addrs());
    // Zipf-like: key k gets 1/(k+1) of the increments (k = 0..5), increments of 1..=3.
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let addrs = addrs.clone();
            std::thread::spawn(move || {
                let mut sums = BTreeMap::new();
                let mut x: u64 = 0x9E37_79B9 + t as u64;
                for i in 0..300 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let k = match x % 120 {
                        0..=48 => 0,
                        49..=72 => 1,
                        73..=88 => 2,
                        89..=100 => 3,
                        101..=110 => 4,
                        _ => 5,
                    };
                    let by = (x % 3) as i64 + 1 - if x.is_multiple_of(10) { 4 } else { 0 };
                    let addr = &addrs[(t + i) % addrs.len()];
                    let status = dt_op(
                        addr,
                        "hits",
                        &format!("sale{k}"),
                        json!({"op": "incr", "by": by}),
                        None,
                    );
                    assert_eq!(status, 204);
                    *sums.entry(k).or_insert(0i64) += by;
                }
                sums
            })
        })
        .collect();
    let mut expected: BTreeMap<usize, i64> = BTreeMap::new();
    for w in writers {
        for (k, v) in w.join().expect("writer") {
            *expected.entry(k).or_default() += v;
        }
    }
    // The hottest key's sub-keys, as the nodes' hot-key trackers saw them: their partitions.
    let mut partitions: BTreeMap<u64, u64> = BTreeMap::new();
    for addr in addrs.iter() {
        let hot = request(addr, "GET", "/v1/hot", &[], b"").json();
        for k in hot["keys"].as_array().expect("keys") {
            let key = k["key"].as_str().unwrap_or_default();
            if key.ends_with("sale0") {
                *partitions
                    .entry(k["partition"].as_u64().expect("partition"))
                    .or_default() += k["ops"].as_u64().expect("ops");
            }
        }
    }
    eprintln!("sale0 operations per partition (all nodes): {partitions:?}");
    assert!(
        partitions.len() >= 8,
        "spread over {} partitions: {partitions:?}",
        partitions.len()
    );
    // Read after the counts above: a read asks every sub-key.
    for (k, v) in &expected {
        for addr in addrs.iter() {
            let (status, body) = dt_get(addr, "hits", &format!("sale{k}"), "all");
            assert_eq!(status, 200);
            assert_eq!(body["value"].as_i64(), Some(*v), "sale{k} on {addr}");
            assert_eq!(body["type"], "counter");
        }
    }
}
