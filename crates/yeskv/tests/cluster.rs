//! A real cluster of `yeskv server` processes on loopback, formed the operator's way (seeds,
//! staged join, commit): quorum writes and reads through different nodes, a node killed with
//! `kill -9` marked down within 10 s while `w=2`/`r=2` keep working through every survivor, and
//! the killed node serving again after a restart. Nothing acknowledged is lost. A key's object
//! never outgrows what the internode frame carries: past `limits.object_bytes_max` a write is
//! refused with `413` (issue 14).

mod support;

use std::time::{Duration, Instant};
use support::{request, start_cluster, try_request, wait_until};

fn put(addr: &str, key: &str, w: &str, value: &str) -> u16 {
    match try_request(
        addr,
        "PUT",
        &format!("/v1/kv/carts/{key}?w={w}"),
        &[],
        value.as_bytes(),
    ) {
        Ok(r) => r.status,
        Err(_) => 0,
    }
}

fn get(addr: &str, key: &str, r: &str) -> (u16, String) {
    let resp = request(addr, "GET", &format!("/v1/kv/carts/{key}?r={r}"), &[], b"");
    (resp.status, resp.text())
}

fn quorum_and_kill9(count: usize, zones: &[&str]) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = start_cluster(dir.path(), count, zones, &[]);
    let addrs: Vec<String> = c.nodes.iter().map(|n| n.http.clone()).collect();

    // Placement: replicas of each partition in distinct zones when there are enough zones.
    let ring = request(&addrs[0], "GET", "/v1/ring", &[], b"").json();
    let zone_of: std::collections::HashMap<String, String> = ring["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap_or_default().to_string(),
                n["zone"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    for p in ring["partitions"].as_array().expect("partitions") {
        let prefs: Vec<&str> = p["preference"]
            .as_array()
            .expect("prefs")
            .iter()
            .filter_map(|x| x.as_str())
            .collect();
        assert_eq!(prefs.len(), 3.min(count));
        let zones_used: std::collections::HashSet<&String> =
            prefs.iter().map(|n| &zone_of[*n]).collect();
        assert_eq!(
            zones_used.len(),
            prefs.len().min(zones.len()),
            "partition {}",
            p["id"]
        );
    }

    // w=all through each node, r=all through the next one.
    let mut acked: Vec<(String, String)> = Vec::new();
    for (i, a) in addrs.iter().enumerate() {
        let key = format!("all-{i}");
        assert_eq!(put(a, &key, "all", &key), 204);
        acked.push((key.clone(), key.clone()));
        let (status, value) = get(&addrs[(i + 1) % addrs.len()], &key, "all");
        assert_eq!((status, value.as_str()), (200, key.as_str()));
    }

    // kill -9 one node; the survivors mark it down within 10 s.
    let victim = 1;
    let killed_at = Instant::now();
    c.nodes[victim].kill9();
    for (i, a) in addrs.iter().enumerate().filter(|(i, _)| *i != victim) {
        wait_until(
            "the killed node marked down",
            Duration::from_secs(10),
            || {
                let s = request(a, "GET", "/v1/status", &[], b"").json();
                s["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["id"] == format!("n{}", victim + 1) && m["status"] == "down")
            },
        );
        let _ = i;
    }
    eprintln!(
        "{count} nodes: killed node marked down after {:?}",
        killed_at.elapsed()
    );
    // w=2 and r=2 through every remaining node.
    for (i, a) in addrs.iter().enumerate().filter(|(i, _)| *i != victim) {
        for k in 0..20 {
            let key = format!("after-kill-{i}-{k}");
            assert_eq!(put(a, &key, "2", &key), 204, "w=2 via n{}", i + 1);
            acked.push((key.clone(), key.clone()));
            assert_eq!(get(a, &key, "2"), (200, key.clone()));
        }
    }

    // Restarted, the node serves, and every acknowledged write reads back through it.
    c.nodes[victim].restart();
    wait_until(
        "the restarted node is up everywhere",
        Duration::from_secs(20),
        || {
            addrs.iter().all(|a| {
                let s = request(a, "GET", "/v1/status", &[], b"").json();
                s["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .all(|m| m["status"] == "up")
            })
        },
    );
    for (key, value) in &acked {
        assert_eq!(
            get(&addrs[victim], key, "2"),
            (200, value.clone()),
            "{key} via the restarted node"
        );
    }
}

#[test]
fn three_nodes_quorums_and_kill9() {
    quorum_and_kill9(3, &["default"]);
}

#[test]
fn six_nodes_in_three_zones_quorums_and_kill9() {
    quorum_and_kill9(6, &["zone-a", "zone-b", "zone-c"]);
}

/// The crash window: two of five nodes are killed with `kill -9` while writes with `w=2` keep
/// arriving through the three survivors. From the kill onwards no write is refused: a write
/// forwarded to a dead primary (the connection is refused, so the request was never sent) goes
/// to the next primary at once, and a replica that cannot be reached is replaced by a fallback,
/// before and after the failure detector marks the dead nodes down.
#[test]
fn no_write_is_refused_while_two_of_five_nodes_die() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = start_cluster(dir.path(), 5, &["a", "b", "c"], &[]);
    let survivors: Vec<String> = c.addrs()[..3].to_vec();
    let write = |i: usize| {
        let key = format!("crash-{i}");
        (key.clone(), put(&survivors[i % 3], &key, "2", &key))
    };
    for i in 0..100 {
        assert_eq!(write(i).1, 204, "before the kill");
    }
    c.nodes[3].kill9();
    c.nodes[4].kill9();
    let killed = Instant::now();
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    let mut i = 100;
    while killed.elapsed() < Duration::from_secs(8) {
        let (key, status) = write(i);
        if status == 204 {
            acked.push(key);
        } else {
            refused.push((key, status));
        }
        i += 1;
    }
    eprintln!(
        "after the kill: {} writes acknowledged, {} refused",
        acked.len(),
        refused.len()
    );
    assert!(
        refused.is_empty(),
        "writes refused after the kill: {refused:?}"
    );
    for key in &acked {
        assert_eq!(get(&survivors[0], key, "2"), (200, key.clone()));
    }
}

/// A record corrupted on one replica's disk is never served, and the first read that finds it
/// replaces it with the other replicas' copy (read repair): later reads through that node find
/// a good record.
#[test]
fn a_corrupt_replica_is_replaced_by_read_repair() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = start_cluster(dir.path(), 3, &["a", "b", "c"], &[]);
    let addrs = c.addrs();
    let value = support::incompressible(4096);
    let put = request(&addrs[0], "PUT", "/v1/kv/b/victim?w=all", &[], &value);
    assert_eq!(put.status, 204, "{}", put.text());
    assert!(
        c.nodes[1].stop().success(),
        "clean stop flushes to SST files"
    );
    let needle = &value[1000..1064];
    let flipped = support::flip_in_sst(&c.nodes[1].data_dir.join("db"), needle);
    assert_eq!(flipped, 1, "value bytes not found in exactly one SST file");
    c.nodes[1].restart();
    c.wait_all_up(c.version, Duration::from_secs(30));
    // Read through the damaged node: its own copy first, found corrupt, the others answer.
    let r = request(&addrs[1], "GET", "/v1/kv/b/victim?r=2", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, value);
    wait_until("the corrupt copy replaced", Duration::from_secs(20), || {
        c.nodes[1].metric("yeskv_corrupt_records_replaced_total") >= 1.0
    });
    let corrupt_seen = c.nodes[1].metric("yeskv_corrupt_records_total");
    for _ in 0..5 {
        let r = request(&addrs[1], "GET", "/v1/kv/b/victim?r=1", &[], b"");
        assert_eq!((r.status, &r.body), (200, &value));
    }
    assert_eq!(
        c.nodes[1].metric("yeskv_corrupt_records_total"),
        corrupt_seen,
        "reads found the record corrupt again"
    );
}

/// The hot-key outage: one key takes 5,000 read-modify-writes (`w=2`) while its three primaries
/// are stopped, all acknowledged by the two nodes left standing in for them. Each write reads the
/// key and writes with its context, so the value is a counter that never forks. After the heal
/// the key reads back with the last count through every node, its context stays small (the
/// stand-ins' actors are per outage, not per write: one per write grew a token past 16 KiB after
/// ~900 writes, and the key refused every write with a context from then on), and a write with
/// that context is taken and replaces it.
#[test]
fn a_hot_key_takes_five_thousand_writes_while_its_primaries_are_down() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = start_cluster(dir.path(), 5, &["a", "b", "c"], &[]);
    let addrs = c.addrs();
    let key = "hot-cart";
    // The key's primaries, from the ring.
    let ring = request(&addrs[0], "GET", "/v1/ring", &[], b"").json();
    let partitions = ring["partitions"].as_array().expect("partitions");
    let hash = yeskv_core::keyspace::key_hash(b"carts", key.as_bytes());
    let p = yeskv_core::keyspace::partition_of(hash, partitions.len() as u32);
    let primaries: Vec<String> = partitions[usize::from(p)]["preference"]
        .as_array()
        .expect("preference")
        .iter()
        .map(|n| n.as_str().expect("id").to_string())
        .collect();
    let (down, up): (Vec<usize>, Vec<usize>) =
        (0..5).partition(|i| primaries.contains(&format!("n{}", i + 1)));
    assert_eq!((down.len(), up.len()), (3, 2), "{primaries:?}");
    for i in &down {
        c.nodes[*i].stop();
    }
    let standing: Vec<String> = up.iter().map(|i| addrs[*i].clone()).collect();
    for addr in &standing {
        for node in &primaries {
            wait_until(
                &format!("{node} down at {addr}"),
                Duration::from_secs(20),
                || {
                    request(addr, "GET", "/v1/status", &[], b"").json()["members"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|m| m["id"] == node.as_str() && m["status"] == "down")
                },
            );
        }
    }
    const WRITES: u64 = 5000;
    let path = format!("/v1/kv/carts/{key}");
    let mut longest_token = 0;
    for i in 1..=WRITES {
        let addr = &standing[(i % 2) as usize];
        let read = request(addr, "GET", &format!("{path}?r=1"), &[], b"");
        let context = if i == 1 {
            assert_eq!(read.status, 404, "the key is new: {}", read.text());
            String::new()
        } else {
            assert_eq!(read.status, 200, "read {i}: {}", read.text());
            assert_eq!(
                read.text(),
                (i - 1).to_string(),
                "read {i} saw the last write"
            );
            read.context().expect("context")
        };
        longest_token = longest_token.max(context.len());
        let headers: &[(&str, &str)] = if context.is_empty() {
            &[]
        } else {
            &[("X-Causal-Context", &context)]
        };
        let write = request(
            addr,
            "PUT",
            &format!("{path}?w=2"),
            headers,
            i.to_string().as_bytes(),
        );
        assert_eq!(write.status, 204, "write {i}: {}", write.text());
    }
    eprintln!("{WRITES} writes with the primaries down; longest context token {longest_token} B");
    for i in &down {
        c.nodes[*i].restart();
    }
    wait_until("hints handed off", Duration::from_secs(60), || {
        addrs.iter().all(|a| {
            request(a, "GET", "/v1/status", &[], b"").json()["hints_pending"].as_u64() == Some(0)
        })
    });
    let mut context = String::new();
    for addr in &addrs {
        let read = request(addr, "GET", &format!("{path}?r=all"), &[], b"");
        assert_eq!(
            (read.status, read.text()),
            (200, WRITES.to_string()),
            "through {addr}"
        );
        context = read.context().expect("context");
    }
    eprintln!("after the heal: context token {} B", context.len());
    assert!(context.len() < 1024, "context token of {} B", context.len());
    let write = request(
        &addrs[0],
        "PUT",
        &format!("{path}?w=all"),
        &[("X-Causal-Context", &context)],
        b"healed",
    );
    assert_eq!(write.status, 204, "{}", write.text());
    assert_eq!(get(&addrs[1], key, "all"), (200, "healed".to_string()));
}

/// Issue 14, "Objects past the frame": twenty blind 1 MiB writes to one key, through each node in
/// turn. Blind writes pile up siblings; once the object would pass `limits.object_bytes_max`
/// (8 MiB) a write is refused with `413` and stores nothing (before the limit, the object grew
/// past the 16 MiB internode frame: writes answered `503` and `r=all` reads failed for good).
/// Every acknowledged write replicated: `r=all` reads through every node answer all of them, and
/// the replicas converge. A write with the read's context replaces the siblings.
#[test]
fn an_object_is_refused_past_its_limit_and_always_replicates() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = start_cluster(dir.path(), 3, &["a", "b", "c"], &[]);
    let addrs = c.addrs();
    let path = "/v1/kv/big/pile";
    let value = |i: usize| {
        let mut v = support::incompressible(1 << 20);
        v[..8].copy_from_slice(&(i as u64).to_le_bytes());
        v
    };
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = request(&addrs[i % 3], "PUT", &format!("{path}?w=2"), &[], &value(i));
        if r.status == 413 {
            let error = r.json()["error"].as_str().unwrap_or_default().to_string();
            assert!(
                error.contains("limits.object_bytes_max") && error.contains("bytes"),
                "the refusal names the limit and the sizes: {error}"
            );
            if !statuses.contains(&413) {
                eprintln!("first refusal: {error}");
            }
        }
        statuses.push(r.status);
    }
    let acked = statuses.iter().filter(|s| **s == 204).count();
    let refused = statuses.iter().filter(|s| **s == 413).count();
    eprintln!("20 blind 1 MiB writes: {acked} acknowledged, {refused} refused: {statuses:?}");
    assert_eq!(acked + refused, 20, "only 204 or 413: {statuses:?}");
    assert!((1..20).contains(&acked), "{statuses:?}");

    // Every node reads the whole object from every replica: exactly the acknowledged writes.
    let mut context = String::new();
    for addr in &addrs {
        let r = request(
            addr,
            "GET",
            &format!("{path}?r=all"),
            &[("accept", "application/json")],
            b"",
        );
        assert_eq!(r.status, 200, "r=all through {addr}: {}", r.text());
        let siblings = r.json()["siblings"].as_array().cloned().unwrap_or_default();
        assert_eq!(siblings.len(), acked, "r=all through {addr}");
        context = r.context().expect("a read carries a context");
    }
    wait_until("the replicas converge", Duration::from_secs(30), || {
        support::converged(&addrs)
    });

    // The way out: write back with the read's context, which supersedes every sibling.
    let r = request(
        &addrs[1],
        "PUT",
        &format!("{path}?w=2"),
        &[("x-causal-context", &context)],
        b"merged",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    for addr in &addrs {
        let r = request(addr, "GET", &format!("{path}?r=all"), &[], b"");
        assert_eq!(
            (r.status, r.text()),
            (200, "merged".into()),
            "through {addr}"
        );
    }
}
