//! A rolling upgrade from the previous release, with real processes: a 3-node cluster of the
//! previous release (built from its tag by `scripts/prev-release`) serves writes, counters and
//! read-modify-write carts while each node in turn is stopped, restarted on this build's binary
//! over the same data directory and waited for; buckets are created through the Raft layout
//! while the releases are mixed; one node is then rolled back to the previous release and
//! upgraded again, still under load. Afterwards every acknowledged write is still there: each
//! key's value, each cart's last acknowledged value, the counter at least at its acknowledged
//! increments. Along the way the nodes must agree on the internode protocol: a connection
//! between an upgraded node and an old one speaks the old version, between two upgraded ones
//! the new version. The nodes' logs are kept in `${CARGO_TARGET_DIR:-target}/upgrade-logs/`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{
    bin, converged, request, sibling_values, start_cluster_program, try_request, wait_until,
    Cluster,
};

/// This build's release (the workspace version).
const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The previous release's `yeskv` binary, built (once, cached outside the clone) by
/// `scripts/prev-release`.
fn previous_release() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(root.join("scripts/prev-release"))
        .current_dir(&root)
        .stderr(Stdio::inherit())
        .output()
        .expect("run scripts/prev-release");
    assert!(
        out.status.success(),
        "scripts/prev-release failed: {}",
        out.status
    );
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let path = PathBuf::from(path.lines().last().unwrap_or_default());
    assert!(path.is_file(), "no binary at {}", path.display());
    path
}

fn version_of(program: &Path) -> String {
    let out = Command::new(program)
        .arg("--version")
        .output()
        .expect("--version");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn status(addr: &str) -> Value {
    request(addr, "GET", "/v1/status", &[], b"").json()
}

/// What the load saw: writes acknowledged (to be found later) and writes a node answered with
/// an error (not acknowledged, so not checked; counted to bound the unavailability).
#[derive(Default)]
struct Outcome {
    /// `(key, value)` of each acknowledged unique-key write.
    acked: Vec<(String, String)>,
    /// `(cart, value)`: each cart's last acknowledged value.
    carts: Vec<(String, String)>,
    /// Counter increments acknowledged, and those that failed (may or may not have counted).
    increments_acked: i64,
    increments_failed: i64,
    /// Requests answered with an error status, as "what: status body".
    refused: Vec<String>,
    /// Requests no node could be reached for (every node tried).
    unreachable: usize,
}

/// Sends one request to the first node of `addrs` (from `start`) that answers at all: a node
/// being restarted refuses connections, and a client with several endpoints tries the next.
fn send(
    addrs: &[String],
    start: usize,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Option<support::Resp> {
    (0..addrs.len()).find_map(|k| {
        try_request(
            &addrs[(start + k) % addrs.len()],
            method,
            path,
            headers,
            body,
        )
        .ok()
    })
}

/// Unique keys through the nodes in turn, `w=2`, until `stop`.
fn key_writer(t: usize, addrs: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let mut out = Outcome::default();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let (key, value) = (format!("k{t}-{i}"), format!("v{t}-{i}"));
            let path = format!("/v1/kv/up/{key}?w=2");
            match send(&addrs, t + i, "PUT", &path, &[], value.as_bytes()) {
                Some(r) if r.status == 204 => out.acked.push((key, value)),
                Some(r) => out
                    .refused
                    .push(format!("PUT {key}: {} {}", r.status, r.text())),
                None => out.unreachable += 1,
            }
            i += 1;
        }
        out
    })
}

/// Read-modify-write of a few carts with their causal context, each write superseding the one
/// it read, until `stop`; remembers each cart's last acknowledged value.
fn cart_writer(addrs: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let mut out = Outcome::default();
        let mut last: Vec<Option<String>> = vec![None; 5];
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let cart = i % last.len();
            let path = format!("/v1/kv/carts/cart{cart}");
            let context = match send(&addrs, i, "GET", &path, &[], b"") {
                Some(r) if matches!(r.status, 200 | 300 | 404) => r.context(),
                Some(r) => {
                    out.refused
                        .push(format!("GET cart{cart}: {} {}", r.status, r.text()));
                    i += 1;
                    continue;
                }
                None => {
                    out.unreachable += 1;
                    i += 1;
                    continue;
                }
            };
            let value = format!("cart{cart}-{i}");
            let mut headers = Vec::new();
            if let Some(c) = context.as_deref() {
                headers.push(("x-causal-context", c));
            }
            match send(&addrs, i, "PUT", &path, &headers, value.as_bytes()) {
                Some(r) if r.status == 204 => last[cart] = Some(value),
                Some(r) => out
                    .refused
                    .push(format!("PUT cart{cart}: {} {}", r.status, r.text())),
                None => out.unreachable += 1,
            }
            i += 1;
        }
        out.carts = last
            .into_iter()
            .enumerate()
            .filter_map(|(c, v)| Some((format!("cart{c}"), v?)))
            .collect();
        out
    })
}

/// Increments of the counter `counts/visits`, until `stop`.
fn counter_writer(addrs: Vec<String>, stop: Arc<AtomicBool>) -> JoinHandle<Outcome> {
    std::thread::spawn(move || {
        let mut out = Outcome::default();
        let mut i = 0;
        let op = json!({"op": "incr", "by": 1}).to_string();
        let headers = [("content-type", "application/json")];
        while !stop.load(Ordering::Relaxed) {
            match send(
                &addrs,
                i,
                "POST",
                "/v1/dt/counts/visits",
                &headers,
                op.as_bytes(),
            ) {
                Some(r) if r.status == 204 => out.increments_acked += 1,
                Some(r) => {
                    out.increments_failed += 1;
                    out.refused
                        .push(format!("incr visits: {} {}", r.status, r.text()));
                }
                None => out.unreachable += 1,
            }
            i += 1;
        }
        out
    })
}

fn put_bucket(addr: &str, bucket: &str, props: &Value) {
    let r = request(
        addr,
        "PUT",
        &format!("/v1/buckets/{bucket}"),
        &[("content-type", "application/json")],
        props.to_string().as_bytes(),
    );
    assert_eq!(
        r.status,
        204,
        "PUT /v1/buckets/{bucket} on {addr}: {}",
        r.text()
    );
}

/// Waits until every node reports `bucket` with a `datatype` of `counter`.
fn wait_bucket_everywhere(c: &Cluster, bucket: &str) {
    for addr in c.addrs() {
        wait_until(
            &format!("bucket {bucket} on {addr}"),
            Duration::from_secs(30),
            || {
                let r = request(&addr, "GET", &format!("/v1/buckets/{bucket}"), &[], b"");
                r.status == 200 && r.json()["datatype"] == "counter"
            },
        );
    }
}

/// Waits until the node at `addr` (this build) reports, for every member, the release it runs
/// and the protocol version its connection to it speaks: the new version between two upgraded
/// nodes, the previous release's between an upgraded node and an old one.
fn wait_versions_seen(addr: &str, upgraded: &[bool], ids: &[String]) {
    let want: Vec<(String, Value, Value)> = ids
        .iter()
        .zip(upgraded)
        .map(|(id, &up)| {
            let (release, protocol) = if up {
                (json!(RELEASE), json!(yeskv_rpc::PROTOCOL_VERSION))
            } else {
                (Value::Null, json!(yeskv_rpc::PROTOCOL_VERSION_MIN))
            };
            (id.clone(), release, protocol)
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = status(addr);
        let members = s["members"].as_array().cloned().unwrap_or_default();
        let ok = want.iter().all(|(id, release, protocol)| {
            members.iter().any(|m| {
                m["id"] == json!(id) && m["release"] == *release && m["protocol"] == *protocol
            })
        });
        if ok {
            return;
        }
        let last = json!(members
            .iter()
            .map(|m| json!([m["id"], m["release"], m["protocol"], m["status"]]))
            .collect::<Vec<_>>());
        assert!(
            Instant::now() < deadline,
            "{addr} never saw releases and protocols {want:?}; last: {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_cluster_of_the_previous_release_upgrades_node_by_node_under_load_and_loses_nothing() {
    let previous = previous_release();
    let (old_version, new_version) = (version_of(&previous), version_of(Path::new(bin())));
    eprintln!(
        "upgrading from {old_version} ({}) to {new_version}",
        previous.display()
    );
    assert_ne!(
        old_version, new_version,
        "the previous release is another version"
    );

    let dir = tempfile::tempdir().expect("tempdir");
    // The nodes log (loudly, while peers restart) to files kept as test artefacts.
    let logs = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
        .join("upgrade-logs");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).expect("log directory");
    *support::NODE_LOG_DIR.lock().expect("lock") = Some(logs.clone());
    eprintln!("node logs in {}", logs.display());
    let mut c = start_cluster_program(&previous, dir.path(), 3, &["a", "b", "c"], |_| vec![]);
    let addrs = c.addrs();
    let ids: Vec<String> = (1..=3).map(|i| format!("n{i}")).collect();
    for addr in &addrs {
        assert!(
            status(addr).get("release").is_none(),
            "the cluster runs the previous release, which does not report one"
        );
    }
    put_bucket(&addrs[0], "counts", &json!({ "datatype": "counter" }));
    wait_bucket_everywhere(&c, "counts");

    let stop = Arc::new(AtomicBool::new(false));
    let mut load: Vec<JoinHandle<Outcome>> = (0..3)
        .map(|t| key_writer(t, addrs.clone(), stop.clone()))
        .collect();
    load.push(cart_writer(addrs.clone(), stop.clone()));
    load.push(counter_writer(addrs.clone(), stop.clone()));
    wait_until("load under way", Duration::from_secs(30), || {
        status(&addrs[0])["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3)
            && request(&addrs[0], "GET", "/v1/dt/counts/visits", &[], b"").status == 200
    });

    // Stops node `i` (SIGTERM), starts it on `program` over the same data directory and ports,
    // and waits until every node is up and every upgraded node sees the releases and protocols.
    let restart_on = |c: &mut Cluster, i: usize, program: &Path, upgraded: &mut [bool; 3]| {
        let node = &mut c.nodes[i];
        let exit = node.stop();
        assert!(
            exit.success(),
            "n{} stops cleanly on SIGTERM: {exit}",
            i + 1
        );
        node.program = program.to_path_buf();
        node.restart();
        upgraded[i] = program == Path::new(bin());
        c.wait_all_up(c.version, Duration::from_secs(60));
        for (j, addr) in addrs.iter().enumerate() {
            if upgraded[j] {
                wait_versions_seen(addr, upgraded, &ids);
            }
        }
    };
    let mut upgraded = [false; 3];
    for i in 0..3 {
        let started = Instant::now();
        restart_on(&mut c, i, Path::new(bin()), &mut upgraded);
        assert_eq!(status(&addrs[i])["release"], json!(RELEASE));
        if i < 2 {
            // The layout (Raft) while the releases are mixed: a bucket created through an
            // upgraded node and one through an old node reach every node.
            let (new, old) = (&addrs[i], &addrs[2]);
            put_bucket(
                new,
                &format!("via-new-{i}"),
                &json!({ "datatype": "counter" }),
            );
            put_bucket(
                old,
                &format!("via-old-{i}"),
                &json!({ "datatype": "counter" }),
            );
            wait_bucket_everywhere(&c, &format!("via-new-{i}"));
            wait_bucket_everywhere(&c, &format!("via-old-{i}"));
        }
        eprintln!(
            "n{} upgraded and back in {:.1} s",
            i + 1,
            started.elapsed().as_secs_f64()
        );
    }

    // A rollback and a second upgrade of one node (no format changed between the releases, so
    // the previous release opens the directory this build wrote), still under load.
    restart_on(&mut c, 2, &previous, &mut upgraded);
    assert!(
        status(&addrs[2]).get("release").is_none(),
        "n3 runs the previous release again"
    );
    restart_on(&mut c, 2, Path::new(bin()), &mut upgraded);
    eprintln!("n3 rolled back to {old_version} and upgraded again");

    stop.store(true, Ordering::Relaxed);
    let mut all = Outcome::default();
    for handle in load {
        let out = handle.join().expect("load thread");
        all.acked.extend(out.acked);
        all.carts.extend(out.carts);
        all.increments_acked += out.increments_acked;
        all.increments_failed += out.increments_failed;
        all.refused.extend(out.refused);
        all.unreachable += out.unreachable;
    }
    eprintln!(
        "load: {} writes acked, {} carts, {} increments acked ({} failed), {} refused, {} \
         unreachable",
        all.acked.len(),
        all.carts.len(),
        all.increments_acked,
        all.increments_failed,
        all.refused.len(),
        all.unreachable
    );
    for r in all.refused.iter().take(10) {
        eprintln!("  refused: {r}");
    }
    assert!(all.acked.len() >= 300, "too little load to prove anything");
    assert_eq!(all.unreachable, 0, "some request found no node up");
    let attempted = all.acked.len() + all.refused.len();
    assert!(
        all.refused.len() * 100 <= attempted,
        "more than 1% of requests refused during the upgrade: {} of {attempted}",
        all.refused.len()
    );

    wait_until(
        "every partition's replicas agree",
        Duration::from_secs(120),
        || converged(&addrs),
    );
    // `value` at `path` through `addr`, as the value or a sibling; else what was read instead.
    let missing = |addr: &str, path: &str, value: &str| -> Option<String> {
        let r = request(addr, "GET", path, &[("accept", "application/json")], b"");
        let found = sibling_values(&r).iter().any(|v| v == value);
        (!found).then(|| format!("{path}={value} via {addr}: {} {}", r.status, r.text()))
    };
    let mut lost = Vec::new();
    for (n, (key, value)) in all.acked.iter().enumerate() {
        let addr = &addrs[n % addrs.len()];
        lost.extend(missing(addr, &format!("/v1/kv/up/{key}"), value));
    }
    for (cart, value) in &all.carts {
        for addr in &addrs {
            lost.extend(missing(addr, &format!("/v1/kv/carts/{cart}"), value));
        }
    }
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for addr in &addrs {
        let r = request(addr, "GET", "/v1/dt/counts/visits?r=all", &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let value = r.json()["value"].as_i64().expect("counter value");
        assert!(
            value >= all.increments_acked && value <= all.increments_acked + all.increments_failed,
            "visits is {value} via {addr}: {} increments acked, {} failed",
            all.increments_acked,
            all.increments_failed
        );
    }
    for addr in &addrs {
        assert_eq!(
            status(addr)["release"],
            json!(RELEASE),
            "{addr} runs this build"
        );
    }
}
