//! Expiry at scale, with real processes on loopback: 3 nodes, N = 3. Thousands of sessions
//! written with `?ttl=3` expire, and a compaction on each node drops them — no reap queue, no
//! reap messages — after which every key reads `404`, the anti-entropy roots of every partition
//! agree across the replicas, and the data the nodes keep on disk has shrunk to what never
//! expires.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use support::{converged, incompressible, request, start_cluster, wait_until, Cluster};

/// Sessions written.
const SESSIONS: usize = 3_000;
/// Keys written without expiry beside them.
const KEEP: usize = 100;
/// Bytes per session value.
const VALUE_BYTES: usize = 512;
/// The test's clock-skew allowance, seconds.
const GRACE_SECS: u64 = 1;

fn config(dir: &Path) -> String {
    let path = dir.join("expiry.toml");
    std::fs::write(
        &path,
        format!(
            "[ttl]\nexpiry_grace_secs = {GRACE_SECS}\nreap_grace_secs = 20\n\
             [repair]\nhandoff_interval_ms = 200\naae_interval_ms = 200\nreap_interval_ms = 300\n"
        ),
    )
    .expect("config");
    path.display().to_string()
}

fn status(addr: &str) -> serde_json::Value {
    request(addr, "GET", "/v1/status", &[], b"").json()
}

/// The sum of a metric over the cluster's nodes.
fn total(c: &Cluster, name: &str) -> f64 {
    c.nodes.iter().map(|n| n.metric(name)).sum()
}

/// Runs `f` on `0..count` split over a few threads, one node each (round-robin).
fn spread(c: &Cluster, count: usize, f: impl Fn(&str, usize) + Sync) {
    let addrs = c.addrs();
    let threads = 6;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (f, addrs) = (&f, &addrs);
            s.spawn(move || {
                for i in (t..count).step_by(threads) {
                    f(&addrs[i % addrs.len()], i);
                }
            });
        }
    });
}

#[test]
fn expired_sessions_leave_every_replica_by_compaction_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path());
    let c = start_cluster(dir.path(), 3, &["a", "b", "c"], &["--config", &cfg]);
    // A value of its own per session: identical values would compress to nothing on disk.
    let values = incompressible(SESSIONS * VALUE_BYTES);
    let value = |i: usize| &values[i * VALUE_BYTES..(i + 1) * VALUE_BYTES];

    // The sessions (w = all, so that each replica holds one before the clock starts to count),
    // and keys that never expire.
    let started = Instant::now();
    spread(&c, SESSIONS, |addr, i| {
        let r = request(
            addr,
            "PUT",
            &format!("/v1/kv/sessions/s{i}?ttl=3&w=3"),
            &[],
            value(i),
        );
        assert_eq!(r.status, 204, "{}", r.text());
    });
    let written_in = started.elapsed();
    spread(&c, KEEP, |addr, i| {
        let r = request(addr, "PUT", &format!("/v1/kv/keep/k{i}?w=3"), &[], b"v");
        assert_eq!(r.status, 204, "{}", r.text());
    });
    assert_eq!(total(&c, "yeskv_reap_queued_total"), 0.0, "no reap entry");
    // On disk before anything expired past the grace (a compaction would drop nothing yet).
    let live = |c: &Cluster| total(c, "yeskv_storage_rocksdb_live_sst_bytes");
    for n in &c.nodes {
        assert_eq!(n.req("POST", "/v1/admin/compact", &[], b"").status, 200);
    }
    let before = live(&c);
    let dropped_early = total(&c, "yeskv_expired_records_dropped_total");
    assert!(
        before > (3 * SESSIONS * VALUE_BYTES) as f64 * 0.5 || dropped_early > 0.0,
        "the sessions are on disk: {before} bytes (written in {written_in:?})"
    );

    // Every session expires (reads hide them at once)...
    let sample = |i: usize| format!("/v1/kv/sessions/s{i}");
    wait_until("every session expired", Duration::from_secs(30), || {
        (0..SESSIONS)
            .step_by(97)
            .all(|i| request(&c.nodes[i % 3].http, "GET", &sample(i), &[], b"").status == 404)
    });
    // ...and is droppable the grace later, by each node's clock; then each node compacts.
    std::thread::sleep(Duration::from_secs(GRACE_SECS + 1));
    for n in &c.nodes {
        assert_eq!(n.req("POST", "/v1/admin/compact", &[], b"").status, 200);
    }

    // Every replica dropped every session record, by itself.
    let dropped = total(&c, "yeskv_expired_records_dropped_total");
    assert!(
        dropped >= (3 * SESSIONS) as f64,
        "{dropped} records dropped of {}",
        3 * SESSIONS
    );
    let after = live(&c);
    eprintln!("live data {before} -> {after} bytes; {dropped} records dropped");
    assert!(
        after < before / 5.0,
        "live data {before} -> {after} bytes: the sessions' space was not given back"
    );
    // Every key reads 404, the others are all there.
    spread(&c, SESSIONS, |addr, i| {
        let r = request(addr, "GET", &sample(i), &[], b"");
        assert_eq!(r.status, 404, "s{i}: {}", r.text());
    });
    spread(&c, KEEP, |addr, i| {
        let r = request(addr, "GET", &format!("/v1/kv/keep/k{i}"), &[], b"");
        assert_eq!(r.text(), "v", "k{i}");
    });
    // Replicas agree (expiring keys were never in the trees), with no reap work anywhere.
    wait_until("roots agree", Duration::from_secs(20), || {
        converged(&c.addrs())
    });
    for addr in c.addrs() {
        let s = status(&addr);
        assert_eq!(s["reap_queue_entries"], 0, "{addr}");
        assert_eq!(
            s["keys_stored"], KEEP as u64,
            "{addr}: only keys that never expire count"
        );
    }
    assert_eq!(total(&c, "yeskv_reap_queued_total"), 0.0);
    assert_eq!(total(&c, "yeskv_reap_requests_sent_total"), 0.0);
    assert_eq!(total(&c, "yeskv_tombstones_reaped_total"), 0.0);
    // A node's object cache may still hold a dropped record (hidden from reads) until it is
    // evicted; a read that finds it there repairs a replica that has dropped it, which then
    // stores nothing (`yeskv_expired_skipped_total{path="merge"}`): the roots above agree.
    eprintln!(
        "expired objects not stored by merges: {}",
        total(&c, "yeskv_expired_skipped_total")
    );
}
