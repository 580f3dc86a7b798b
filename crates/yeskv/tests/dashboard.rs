//! The Grafana dashboard (`deploy/grafana/yeskv.json`) and the Prometheus alert rules
//! (`deploy/prometheus/alerts.yml`) query only metrics the nodes export: a real cluster of
//! three nodes in two regions (two replicas in r1, one in r2, RESP on) takes writes, reads,
//! deletes, a counter increment and a RESP command, and every metric name in every query must
//! then be in the `/metrics` text of one of its nodes. A panel whose metric was renamed or never
//! existed would stay empty in front of an operator; this is where that fails instead.

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use support::{free_port, request, start_cluster_each, wait_until};

/// The repository's root (this crate is `crates/yeskv`).
fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every PromQL expression of the dashboard: each panel's targets, and the template queries.
fn dashboard_queries() -> Vec<String> {
    let path = repo().join("deploy/grafana/yeskv.json");
    let text = std::fs::read_to_string(&path).expect("deploy/grafana/yeskv.json");
    let dash: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut out = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = panels.pop() {
        if let Some(inner) = p["panels"].as_array() {
            panels.extend(inner);
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(t["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["definition"].as_str() {
            out.push(q.to_owned());
        }
    }
    out
}

/// Every `expr:` of the alert rules (one line each).
fn alert_queries() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml"))
        .expect("deploy/prometheus/alerts.yml");
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("expr:"))
        .map(|e| e.trim().to_owned())
        .collect()
}

/// The metric names a PromQL expression refers to: every identifier that starts `yeskv_`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find("yeskv_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if boundary {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// The metric names of a Prometheus text exposition (samples, not `# HELP` lines).
fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_metric_the_dashboard_and_alerts_query_is_exported() {
    let queries: Vec<String> = dashboard_queries()
        .into_iter()
        .chain(alert_queries())
        .collect();
    let wanted: BTreeSet<String> = queries.iter().flat_map(|q| metric_names(q)).collect();
    assert!(
        wanted.len() > 60,
        "the dashboard and the alerts query {} metrics: did parsing fail?",
        wanted.len()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let resp_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let c = start_cluster_each(dir.path(), 3, &["r1/a", "r1/b", "r2/a"], |i| {
        vec!["--resp".into(), format!("127.0.0.1:{}", resp_ports[i])]
    });
    let addrs = c.addrs();
    let r = request(
        &addrs[0],
        "POST",
        "/v1/cluster/replication",
        &[],
        br#"{"r1": 2, "r2": 1}"#,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = request(&addrs[0], "POST", "/v1/cluster/commit", &[], b"");
    assert_eq!(r.status, 200, "{}", r.text());
    for addr in &addrs {
        wait_until(
            "the replication is applied",
            Duration::from_secs(60),
            || request(addr, "GET", "/v1/ring", &[], b"").json()["replication"]["r2"] == 1,
        );
    }

    // Traffic that makes every subsystem record: writes (replicated in r1, queued for r2),
    // reads, a delete (a tombstone for the reaper), a counter, a RESP command.
    let r = request(
        &addrs[0],
        "PUT",
        "/v1/buckets/hits",
        &[("content-type", "application/json")],
        br#"{"datatype": "counter"}"#,
    );
    assert_eq!(r.status, 204, "{}", r.text());
    for i in 0..200 {
        let addr = &addrs[i % 2];
        let r = request(addr, "PUT", &format!("/v1/kv/b/k{i}"), &[], b"v");
        assert_eq!(r.status, 204, "{}", r.text());
        let r = request(addr, "GET", &format!("/v1/kv/b/k{i}"), &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let read = request(&addrs[0], "GET", "/v1/kv/b/k0", &[], b"");
    let ctx = read.context().expect("a read's context");
    let r = request(
        &addrs[0],
        "DELETE",
        "/v1/kv/b/k0",
        &[("x-causal-context", &ctx)],
        b"",
    );
    assert_eq!(r.status, 204, "{}", r.text());
    wait_until(
        "the counter bucket is known",
        Duration::from_secs(20),
        || {
            request(
                &addrs[1],
                "POST",
                "/v1/dt/hits/h",
                &[("content-type", "application/json")],
                br#"{"op": "incr", "by": 1}"#,
            )
            .status
                == 204
        },
    );
    let mut s = TcpStream::connect(("127.0.0.1", resp_ports[0])).expect("RESP connect");
    s.write_all(b"*1\r\n$4\r\nPING\r\n").expect("RESP write");
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).expect("RESP read");
    assert_eq!(&pong, b"+PONG\r\n");

    // What r2 was sent arrives (the delivery histogram is recorded on delivery).
    wait_until("writes reach r2", Duration::from_secs(60), || {
        let text = request(&addrs[0], "GET", "/metrics", &[], b"").text();
        text.lines()
            .any(|l| l.starts_with("yeskv_xr_delivery_seconds_count") && !l.ends_with(" 0"))
    });

    let mut have = BTreeSet::new();
    for addr in &addrs {
        let r = request(addr, "GET", "/metrics", &[], b"");
        assert_eq!(r.status, 200);
        have.extend(exported(&r.text()));
    }
    let missing: Vec<&String> = wanted.iter().filter(|m| !have.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "metrics the dashboard or the alerts query but no node exports: {missing:?}"
    );
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"histogram_quantile(0.99, sum by (le) (rate(yeskv_http_request_duration_seconds_bucket{instance=~"$i"}[1m]))) / yeskv_keys_stored"#,
    );
    let want: BTreeSet<String> = [
        "yeskv_http_request_duration_seconds_bucket",
        "yeskv_keys_stored",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(names, want);
    assert!(metric_names("rate(not_yeskv_x[1m])").is_empty());
}
