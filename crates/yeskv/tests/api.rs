//! The HTTP contract against a real `yeskv server` process: siblings, contexts, tombstones, TTL,
//! limits and forged contexts. Every rejected request is checked to have stored nothing.

mod support;

use std::time::Duration;
use support::{wait_until, Node};

fn sorted_sibling_values(r: &support::Resp) -> Vec<String> {
    use base64::Engine as _;
    let mut v: Vec<String> = r.json()["siblings"]
        .as_array()
        .expect("siblings array")
        .iter()
        .map(|s| {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(s["value"].as_str().expect("value"))
                .expect("base64");
            String::from_utf8(raw).expect("utf8")
        })
        .collect();
    v.sort();
    v
}

#[test]
fn siblings_contexts_and_tombstones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]);
    let path = "/v1/kv/carts/alice";

    assert_eq!(node.req("GET", path, &[], b"").status, 404);

    // Two writes without a context: both kept.
    let w1 = node.req("PUT", path, &[], b"phone");
    assert_eq!(w1.status, 204);
    assert!(w1.context().is_some());
    assert_eq!(node.req("PUT", path, &[], b"laptop").status, 204);
    let r = node.req("GET", path, &[], b"");
    assert_eq!(r.status, 300, "{}", r.text());
    assert_eq!(sorted_sibling_values(&r), vec!["laptop", "phone"]);
    assert_eq!(r.json()["context"].as_str(), r.context().as_deref());

    // A write with the read's context leaves one version.
    let ctx = r.context().expect("context");
    let w = node.req("PUT", path, &[("X-Causal-Context", &ctx)], b"laptop,phone");
    assert_eq!(w.status, 204);
    let r = node.req("GET", path, &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "laptop,phone");

    // JSON mode returns JSON for a single version too.
    let j = node.req("GET", path, &[("Accept", "application/json")], b"");
    assert_eq!(j.status, 200);
    assert_eq!(sorted_sibling_values(&j), vec!["laptop,phone"]);

    // A write with an older context does not remove the newer version.
    let old = node.req("PUT", path, &[("X-Causal-Context", &ctx)], b"stale");
    assert_eq!(old.status, 204);
    let r = node.req("GET", path, &[], b"");
    assert_eq!(r.status, 300);
    assert_eq!(sorted_sibling_values(&r), vec!["laptop,phone", "stale"]);

    // The context returned by a write covers that write only: writing with it replaces "stale"
    // but keeps the concurrent "laptop,phone".
    let own = old.context().expect("write context");
    assert_eq!(
        node.req("PUT", path, &[("X-Causal-Context", &own)], b"stale2")
            .status,
        204
    );
    let r = node.req("GET", path, &[], b"");
    assert_eq!(sorted_sibling_values(&r), vec!["laptop,phone", "stale2"]);

    // DELETE without a context is refused; with the read's context it deletes.
    let d = node.req("DELETE", path, &[], b"");
    assert_eq!(d.status, 428);
    assert!(d.json()["error"].is_string());
    let ctx = r.context().expect("context");
    assert_eq!(
        node.req("DELETE", path, &[("X-Causal-Context", &ctx)], b"")
            .status,
        204
    );
    let r = node.req("GET", path, &[], b"");
    assert_eq!(r.status, 404);
    assert!(
        r.context().is_some(),
        "a tombstone read still carries a context"
    );
    assert_eq!(
        node.req("GET", path, &[("Accept", "application/json")], b"")
            .status,
        404
    );

    // A write after the delete with the tombstone's context is a plain single value.
    let ctx = r.context().expect("context");
    assert_eq!(
        node.req("PUT", path, &[("X-Causal-Context", &ctx)], b"again")
            .status,
        204
    );
    let r = node.req("GET", path, &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "again"));
}

#[test]
fn forged_and_foreign_contexts_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]);
    node.req("PUT", "/v1/kv/b/k", &[], b"v1");
    node.req("PUT", "/v1/kv/b/other", &[], b"x");
    let ctx = node
        .req("GET", "/v1/kv/b/k", &[], b"")
        .context()
        .expect("ctx");
    let foreign = node
        .req("GET", "/v1/kv/b/other", &[], b"")
        .context()
        .expect("ctx");

    let mut forged = ctx.clone().into_bytes();
    let mid = forged.len() / 2;
    forged[mid] = if forged[mid] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).expect("ascii");
    for bad in [
        forged.as_str(),
        "not-a-token",
        "!!!",
        foreign.as_str(),
        &ctx[..ctx.len() - 3],
    ] {
        let r = node.req("PUT", "/v1/kv/b/k", &[("X-Causal-Context", bad)], b"evil");
        assert_eq!(r.status, 400, "context {bad:?}: {}", r.text());
        assert!(r.json()["error"]
            .as_str()
            .expect("reason")
            .contains("context"));
        let d = node.req("DELETE", "/v1/kv/b/k", &[("X-Causal-Context", bad)], b"");
        assert_eq!(d.status, 400);
    }
    let r = node.req("GET", "/v1/kv/b/k", &[], b"");
    assert_eq!((r.status, r.text().as_str()), (200, "v1"));
}

#[test]
fn limits_answer_4xx_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]);
    let big_key = "k".repeat(513);
    let big_bucket = "b".repeat(513);
    let cases: Vec<(String, Vec<u8>, u16)> = vec![
        (format!("/v1/kv/b/{big_key}"), b"v".to_vec(), 413),
        (format!("/v1/kv/{big_bucket}/k"), b"v".to_vec(), 413),
        ("/v1/kv/b/bigvalue".into(), vec![b'x'; (1 << 20) + 1], 413),
        ("/v1/kv/b/k1?w=4".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/k1?w=0".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/k1?w=most".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/k1?ttl=-5".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/k1?ttl=0".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/k1?color=blue".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/k1/extra".into(), b"v".to_vec(), 400),
        ("/v1/kv/b/".into(), b"v".to_vec(), 400),
    ];
    for (path, body, status) in &cases {
        let r = node.req("PUT", path, &[], body);
        assert_eq!(r.status, *status, "PUT {path}: {}", r.text());
        assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));
    }
    // Nothing was stored under any of those names.
    for path in [
        format!("/v1/kv/b/{}", "k".repeat(512)),
        "/v1/kv/b/bigvalue".into(),
        "/v1/kv/b/k1".into(),
    ] {
        assert_eq!(node.req("GET", &path, &[], b"").status, 404, "{path}");
    }
    assert_eq!(node.req("GET", "/v1/kv/b/k1?r=9", &[], b"").status, 400);
    // Exactly at the limits is fine.
    let ok = node.req(
        "PUT",
        &format!("/v1/kv/b/{}", "k".repeat(512)),
        &[],
        &vec![b'x'; 1 << 20],
    );
    assert_eq!(ok.status, 204);
    // A key with bytes that are not UTF-8 works.
    assert_eq!(
        node.req("PUT", "/v1/kv/b/%FF%00%2F", &[], b"bin").status,
        204
    );
    assert_eq!(
        node.req("GET", "/v1/kv/b/%FF%00%2F", &[], b"").text(),
        "bin"
    );
}

#[test]
fn ttl_expires_and_compaction_removes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[ttl]\nreap_grace_secs = 0\nexpiry_grace_secs = 0\n[repair]\nreap_interval_ms = 100\n",
    )
    .expect("config");
    let cfg = cfg.display().to_string();
    let node = Node::start(&dir.path().join("data"), &["--config", &cfg]);

    assert_eq!(
        node.req("PUT", "/v1/kv/sessions/s1?ttl=1", &[], b"cart")
            .status,
        204
    );
    assert_eq!(
        node.req("PUT", "/v1/kv/sessions/keep", &[], b"forever")
            .status,
        204
    );
    assert_eq!(node.req("GET", "/v1/kv/sessions/s1", &[], b"").status, 200);
    // A session that keeps writing stays alive: rewrite with a fresh TTL.
    let ctx = node.req("GET", "/v1/kv/sessions/s2", &[], b"").context();
    assert!(ctx.is_none());
    node.req("PUT", "/v1/kv/sessions/s2?ttl=1", &[], b"a");
    let ctx = node
        .req("GET", "/v1/kv/sessions/s2", &[], b"")
        .context()
        .expect("ctx");
    node.req(
        "PUT",
        "/v1/kv/sessions/s2?ttl=3600",
        &[("X-Causal-Context", &ctx)],
        b"b",
    );

    wait_until("s1 to expire", Duration::from_secs(10), || {
        node.req("GET", "/v1/kv/sessions/s1", &[], b"").status == 404
    });
    assert_eq!(node.req("GET", "/v1/kv/sessions/s2", &[], b"").text(), "b");
    assert_eq!(
        node.req("GET", "/v1/kv/sessions/keep", &[], b"").text(),
        "forever"
    );

    // Keys that expire are in no anti-entropy tree (s1 and s2); the reaper has nothing to do
    // with them: they queue no reap entry. A compaction drops s1 (expired past the grace of
    // 0 s) and nothing else.
    let keys = || -> u64 {
        node.req("GET", "/v1/status", &[], b"").json()["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|p| p["keys"].as_u64().unwrap_or(0))
            .sum()
    };
    assert_eq!(keys(), 1, "only keep counts");
    assert_eq!(node.metric("yeskv_reap_queued_total"), 0.0);
    assert_eq!(node.metric("yeskv_expired_records_dropped_total"), 0.0);
    assert_eq!(node.req("POST", "/v1/admin/compact", &[], b"").status, 200);
    assert_eq!(node.metric("yeskv_expired_records_dropped_total"), 1.0);
    assert_eq!(node.metric("yeskv_tombstones_reaped_total"), 0.0);
    let status = node.req("GET", "/v1/status", &[], b"").json();
    assert_eq!(status["reap_queue_entries"], 0);
    assert_eq!(status["expiry"]["dropped"]["records"], 1);
    assert_eq!(node.req("GET", "/v1/kv/sessions/s1", &[], b"").status, 404);
    assert_eq!(node.req("GET", "/v1/kv/sessions/s2", &[], b"").text(), "b");
    assert_eq!(
        node.req("GET", "/v1/kv/sessions/keep", &[], b"").text(),
        "forever"
    );
}

#[test]
fn status_health_ring_and_metrics() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--zone", "eu-1"]);
    let s = node.req("GET", "/v1/status", &[], b"").json();
    assert_eq!(s["node"], "n1");
    assert_eq!(s["zone"], "eu-1");
    assert_eq!(s["members"][0]["status"], "up");
    assert_eq!(s["hints_pending"], 0);
    let ring = node.req("GET", "/v1/ring", &[], b"").json();
    assert_eq!(ring["partitions"].as_array().map(Vec::len), Some(256));
    // A node started without seeds creates a cluster whose first layout it owns alone.
    assert_eq!(ring["version"], 1);
    assert_eq!(ring["nodes"][0]["id"], "n1");
    assert_eq!(ring["nodes"][0]["zone"], "eu-1");
    assert_eq!(ring["partitions"][7]["preference"][0], "n1");
    assert_eq!(s["members"][0]["owns"], 256);
    assert_eq!(s["partitions"].as_array().map(Vec::len), Some(256));
    assert!(
        dir.path().join("layout").is_dir(),
        "layout persisted in the data dir"
    );
    assert!(ring["hash"].as_str().expect("hash").contains("xxh3"));
    assert_eq!(node.req("GET", "/v1/health", &[], b"").status, 200);
    node.req("PUT", "/v1/kv/b/k", &[], b"v");
    node.req("PUT", "/v1/kv/b/k2", &[], b"v");
    node.req("GET", "/v1/kv/b/k", &[], b"");
    let m = node.req("GET", "/metrics", &[], b"").text();
    for name in [
        "yeskv_http_requests_total",
        "yeskv_http_request_duration_seconds_bucket",
        "yeskv_storage_rocksdb_memtable_bytes",
        "yeskv_storage_rocksdb_pending_compaction_bytes",
        "yeskv_storage_rocksdb_stall_micros_total",
        "yeskv_corrupt_records_total",
    ] {
        assert!(m.contains(name), "/metrics lacks {name}");
    }
    // Both PUTs counted in one series (the node keeps each series' handle after first use).
    let puts = m
        .lines()
        .find(|l| {
            l.starts_with("yeskv_http_requests_total")
                && l.contains("method=\"PUT\"")
                && l.contains("status=\"204\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(puts, Some(2.0), "PUT 204 count in {m}");
    let nf = node.req("GET", "/v1/nothing", &[], b"");
    assert_eq!(nf.status, 404);
    assert!(nf.json()["error"].is_string());
}
