//! Never say no, and heal — with real processes on loopback:
//! - 5 nodes, N=3, two killed: every `w=2` write is acknowledged (sloppy quorum); the hints
//!   drain to the restarted nodes; every replica of every partition reports the same
//!   `merkle_root`; deletes made while replicas were down stay deleted, also after the
//!   tombstones are reaped; a node whose data directory was wiped is refilled by anti-entropy.
//! - the cart workload under repeated `kill -9` loses no acknowledged add (judged by the
//!   `yeskv-check` checkers, as the simulator and the chaos runner are).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{request, sibling_values, start_cluster, try_request, wait_until, Cluster};

/// Short grace and fast background work, so the test sees reaping and repair within seconds.
fn config(dir: &Path) -> String {
    let path = dir.join("repair.toml");
    std::fs::write(
        &path,
        "[ttl]\nreap_grace_secs = 20\n\
         [repair]\nhandoff_interval_ms = 200\n\
         aae_interval_ms = 200\nreap_interval_ms = 300\n\
         [server]\nrpc_timeout_ms = 1000\n",
    )
    .expect("config");
    path.display().to_string()
}

/// 5 nodes in 3 zones, formed with the test configuration.
fn five_nodes(dir: &Path) -> Cluster {
    let cfg = config(dir);
    start_cluster(dir, 5, &["zone-a", "zone-b", "zone-c"], &["--config", &cfg])
}

fn status(addr: &str) -> serde_json::Value {
    request(addr, "GET", "/v1/status", &[], b"").json()
}

fn sees_down(addr: &str, node: &str) -> bool {
    status(addr)["members"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|m| m["id"] == node && m["status"] == "down")
}

/// Every partition has 3 replicas reporting one and the same root (among running nodes).
fn converged(c: &Cluster) -> bool {
    support::converged(&c.running_addrs())
}

fn hints_pending(c: &Cluster) -> u64 {
    c.nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| {
            status(&n.http)["hints_pending"]
                .as_u64()
                .expect("hints_pending")
        })
        .sum()
}

fn metric_sum(c: &Cluster, prefix: &str) -> f64 {
    c.nodes
        .iter()
        .filter(|n| n.child.is_some())
        .map(|n| n.metric(prefix))
        .sum()
}

fn put(addr: &str, key: &str, q: &str, value: &str, ctx: Option<&str>) -> u16 {
    let headers: Vec<(&str, &str)> = ctx.map(|c| ("X-Causal-Context", c)).into_iter().collect();
    match try_request(
        addr,
        "PUT",
        &format!("/v1/kv/b/{key}?w={q}"),
        &headers,
        value.as_bytes(),
    ) {
        Ok(r) => r.status,
        Err(_) => 0,
    }
}

fn get(addr: &str, key: &str, r: &str) -> support::Resp {
    request(addr, "GET", &format!("/v1/kv/b/{key}?r={r}"), &[], b"")
}

#[test]
fn five_nodes_two_dead_take_every_write_then_heal() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = five_nodes(dir.path());
    let addrs = c.addrs();
    let version = c.version;
    // Keys to delete later, written while everything is up.
    for i in 0..50 {
        assert_eq!(
            put(&addrs[i % 5], &format!("del-{i}"), "all", "doomed", None),
            204
        );
    }

    // Two nodes die.
    c.nodes[3].kill9();
    c.nodes[4].kill9();
    for a in &addrs[..3] {
        wait_until("n4 and n5 marked down", Duration::from_secs(10), || {
            sees_down(a, "n4") && sees_down(a, "n5")
        });
    }
    // 300 of 300 writes with w=2 are acknowledged.
    let mut acked = 0;
    for i in 0..300 {
        let key = format!("k-{i}");
        if put(&addrs[i % 3], &key, "2", &key, None) == 204 {
            acked += 1;
        }
    }
    assert_eq!(
        acked, 300,
        "every w=2 write acknowledged with two of five nodes dead"
    );
    // Deletes while they are down: read the context, delete with it.
    for i in 0..50 {
        let key = format!("del-{i}");
        let r = get(&addrs[i % 3], &key, "2");
        assert_eq!(r.status, 200, "{key}");
        let ctx = r.context().expect("context");
        let d = request(
            &addrs[i % 3],
            "DELETE",
            &format!("/v1/kv/b/{key}?w=2"),
            &[("X-Causal-Context", &ctx)],
            b"",
        );
        assert_eq!(d.status, 204, "{key}: {}", d.text());
    }
    let pending = hints_pending(&c);
    assert!(pending > 0, "fallbacks hold hints for the dead nodes");
    eprintln!("hints pending while n4, n5 are down: {pending}");

    // They come back: hints drain, every replica converges.
    let healed = Instant::now();
    c.nodes[3].restart();
    c.nodes[4].restart();
    c.wait_all_up(version, Duration::from_secs(30));
    wait_until("hints drained", Duration::from_secs(30), || {
        hints_pending(&c) == 0
    });
    // A handoff round removes each hint as it is delivered and counts the batch once all of
    // it is: the count may trail the pending gauge by a batch for a moment.
    wait_until(
        "every hint counted as handed off",
        Duration::from_secs(10),
        || metric_sum(&c, "yeskv_hints_handed_off_total") >= pending as f64,
    );
    eprintln!("hints drained {:?} after the restart", healed.elapsed());
    wait_until(
        "every replica reports the same merkle_root",
        Duration::from_secs(60),
        || converged(&c),
    );
    eprintln!("converged {:?} after the restart", healed.elapsed());
    for i in 0..300 {
        let key = format!("k-{i}");
        let r = get(&addrs[3 + i % 2], &key, "all");
        assert_eq!(
            (r.status, r.text()),
            (200, key.clone()),
            "{key} through a restarted node"
        );
    }
    for i in 0..50 {
        assert_eq!(
            get(&addrs[3 + i % 2], &format!("del-{i}"), "all").status,
            404
        );
    }

    // The grace period passes and every primary holds each tombstone: they are reaped, and
    // the deleted values stay deleted.
    wait_until("tombstones reaped", Duration::from_secs(60), || {
        metric_sum(&c, "yeskv_tombstones_reaped_total") >= 150.0
    });
    for i in 0..50 {
        for a in &addrs {
            assert_eq!(
                get(a, &format!("del-{i}"), "all").status,
                404,
                "del-{i} via {a}"
            );
        }
    }
    wait_until("converged after reaping", Duration::from_secs(30), || {
        converged(&c)
    });

    // A node loses its whole data directory: it comes back with a new actor epoch and empty
    // replicas, and anti-entropy refills it.
    let epoch_before = status(&addrs[1])["actor"]
        .as_str()
        .expect("actor")
        .to_string();
    c.nodes[1].kill9();
    std::fs::remove_dir_all(&c.nodes[1].data_dir).expect("wipe");
    c.nodes[1].restart();
    let refill = Instant::now();
    wait_until(
        "the wiped node is refilled",
        Duration::from_secs(90),
        || {
            converged(&c)
                && status(&addrs[1])["partitions"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["keys"].as_u64().unwrap_or(0) > 0))
        },
    );
    eprintln!("wiped node refilled in {:?}", refill.elapsed());
    assert_ne!(
        status(&addrs[1])["actor"].as_str(),
        Some(epoch_before.as_str())
    );
    // Exactly its share: for every partition it holds, as many keys as another replica of it.
    let per_partition = |addr: &str| -> BTreeMap<u64, u64> {
        status(addr)["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| {
                (
                    p["id"].as_u64().expect("id"),
                    p["keys"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let mine = per_partition(&addrs[1]);
    let mut checked = 0;
    for a in addrs.iter().filter(|a| **a != addrs[1]) {
        for (p, k) in per_partition(a) {
            if let Some(m) = mine.get(&p) {
                assert_eq!(*m, k, "partition {p}: n2 has {m} keys, {a} has {k}");
                checked += 1;
            }
        }
    }
    let keys: u64 = mine.values().sum();
    assert!(
        checked > 0 && keys > 0,
        "n2 holds its share again: {keys} keys"
    );
    eprintln!("wiped node holds {keys} keys again, equal to its co-replicas in {checked} partition replicas");
}

/// One cart client: read the cart (r=2), union the siblings' items, add a new item, write back
/// with the read's context (w=2). Records the history the checkers judge.
fn cart_client(
    process: u64,
    addrs: Vec<String>,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<yeskv_check::history::Event>>>,
    start: Instant,
) {
    use yeskv_check::history::{Event, Op, Status};
    let mut n = 0u64;
    // This client's last acknowledged add to each cart: a read that misses it is stale.
    let mut last: std::collections::HashMap<String, String> = Default::default();
    while !stop.load(Ordering::Relaxed) {
        let cart = format!("cart-{}", n % 3);
        let item = format!("p{process}-i{n}");
        let addr = &addrs[(process as usize + n as usize) % addrs.len()];
        n += 1;
        let mut op = Op::CartAdd {
            cart: cart.clone(),
            item: item.clone(),
            stale: false,
        };
        let event = |op: &Op, status: Status, error: Option<String>| Event {
            process,
            time_ms: start.elapsed().as_millis() as u64,
            status,
            op: op.clone(),
            node: Some(addr.clone()),
            error,
        };
        let read = match try_request(
            addr,
            "GET",
            &format!("/v1/kv/carts/{cart}?r=2"),
            &[("Accept", "application/json")],
            b"",
        ) {
            Ok(r) if r.status == 200 || r.status == 404 => r,
            _ => continue, // nothing was written: not an operation
        };
        let ctx = read.context();
        let mut items: std::collections::BTreeSet<String> = Default::default();
        for v in sibling_values(&read) {
            items.extend(v.split(',').filter(|x| !x.is_empty()).map(str::to_string));
        }
        let stale = last.get(&cart).is_some_and(|l| !items.contains(l));
        items.insert(item.clone());
        let body = items.into_iter().collect::<Vec<_>>().join(",");
        history
            .lock()
            .expect("history")
            .push(event(&op, Status::Invoke, None));
        op = Op::CartAdd {
            cart: cart.clone(),
            item: item.clone(),
            stale,
        };
        let headers: Vec<(&str, &str)> = ctx
            .as_deref()
            .map(|c| ("X-Causal-Context", c))
            .into_iter()
            .collect();
        let done = match try_request(
            addr,
            "PUT",
            &format!("/v1/kv/carts/{cart}?w=2"),
            &headers,
            body.as_bytes(),
        ) {
            Ok(r) if r.status == 204 => {
                last.insert(cart.clone(), item.clone());
                event(&op, Status::Ok, None)
            }
            Ok(r) if (400..500).contains(&r.status) => event(&op, Status::Fail, Some(r.text())),
            Ok(r) => event(
                &op,
                Status::Info,
                Some(format!("{} {}", r.status, r.text())),
            ),
            Err(e) => event(&op, Status::Info, Some(e.to_string())),
        };
        history.lock().expect("history").push(done);
    }
}

#[test]
fn cart_adds_survive_repeated_kill9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = five_nodes(dir.path());
    let addrs = c.addrs();
    let version = c.version;
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|p| {
            let (a, s, h) = (addrs.clone(), stop.clone(), history.clone());
            std::thread::spawn(move || cart_client(p, a, s, h, start))
        })
        .collect();
    // Kill -9 and restart a different node four times while the clients run.
    for round in 0..4 {
        std::thread::sleep(Duration::from_millis(800));
        let victim = 1 + round % 4;
        c.nodes[victim].kill9();
        std::thread::sleep(Duration::from_millis(1200));
        c.nodes[victim].restart();
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().expect("client");
    }
    let healed_at_ms = start.elapsed().as_millis() as u64;
    c.wait_all_up(version, Duration::from_secs(30));
    wait_until("replicas converge", Duration::from_secs(60), || {
        converged(&c)
    });
    let mut h = yeskv_check::history::History {
        events: std::mem::take(&mut *history.lock().expect("history")),
        healed_at_ms: Some(healed_at_ms),
        ..Default::default()
    };
    for cart in ["cart-0", "cart-1", "cart-2"] {
        // r=all answers once every replica does (a node just restarted may need a moment).
        let mut r = None;
        wait_until("a final r=all read", Duration::from_secs(30), || {
            r = try_request(
                &addrs[0],
                "GET",
                &format!("/v1/kv/carts/{cart}?r=all"),
                &[("Accept", "application/json")],
                b"",
            )
            .ok()
            .filter(|r| r.status == 200 || r.status == 404);
            r.is_some()
        });
        let r = r.expect("final read");
        let values = sibling_values(&r);
        h.final_reads.push(yeskv_check::history::FinalRead {
            key: cart.to_string(),
            node: "merged".into(),
            values,
            time_ms: None,
        });
    }
    let options = yeskv_check::Options {
        check_convergence: false,
        ..Default::default()
    };
    let report = yeskv_check::check(&h, &options);
    eprintln!(
        "carts under kill -9: ops {}, acked {}, indeterminate {}, lost {}",
        report.ops, report.acked, report.indeterminate, report.lost
    );
    assert!(
        report.acked > 50,
        "the workload made progress: {}",
        report.acked
    );
    assert!(
        report.ok(),
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
}
