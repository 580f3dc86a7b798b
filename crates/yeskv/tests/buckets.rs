//! Bucket properties on a real 3-node cluster: set through one node, seen by every node, kept
//! across a restart; a `PUT` keeps the fields it does not name and refuses unknown fields and
//! bad values (`400`); the data type of a bucket that holds a key (a tombstone too) cannot
//! change (`409`), of an empty one it can; a member that cannot be asked makes a type change
//! `503`. A restarted node serves only once it has caught up with changes it missed, a node not
//! in the layout serves no key, a joined one serves by the types it was given with its layout.
//! And the CLI's `yeskv bucket set/get`.

mod support;

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{json, Value};
use support::{bin, request, start_cluster, wait_until};

const WAIT: Duration = Duration::from_secs(20);

fn props(addr: &str, bucket: &str) -> Value {
    let resp = request(addr, "GET", &format!("/v1/buckets/{bucket}"), &[], b"");
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

/// `PUT /v1/buckets/{bucket}` with `body`: the status and the JSON error, if any.
fn set(addr: &str, bucket: &str, body: &str) -> (u16, Value) {
    let resp = request(
        addr,
        "PUT",
        &format!("/v1/buckets/{bucket}"),
        &[("content-type", "application/json")],
        body.as_bytes(),
    );
    let error = if resp.body.is_empty() {
        Value::Null
    } else {
        resp.json()
    };
    (resp.status, error)
}

fn defaults() -> Value {
    json!({"datatype": null, "conflict": "siblings", "ttl_secs": null, "ttl_sliding": false,
           "salt": 1})
}

fn yeskv(addr: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .args(["--node", &format!("http://{addr}")])
        .output()
        .expect("runs")
}

#[test]
fn bucket_properties_are_cluster_wide_checked_and_durable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = start_cluster(dir.path(), 3, &["a", "b", "c"], &[]);
    let addrs = c.addrs();

    // A bucket never set has the defaults, on every node.
    for a in &addrs {
        assert_eq!(props(a, "likes"), defaults());
    }

    // Set on n1: n1 answers with them at once, every node soon.
    let (status, error) = set(
        &addrs[0],
        "likes",
        r#"{"datatype": "counter", "salt": 8, "ttl_secs": 3600}"#,
    );
    assert_eq!(status, 204, "{error}");
    let counter = json!({"datatype": "counter", "conflict": "siblings", "ttl_secs": 3600,
                         "ttl_sliding": false, "salt": 8});
    assert_eq!(props(&addrs[0], "likes"), counter, "the node that set them");
    for a in &addrs {
        wait_until("every node has the bucket's properties", WAIT, || {
            props(a, "likes") == counter
        });
    }

    // Missing fields keep their values (through another node).
    let (status, error) = set(&addrs[1], "likes", r#"{"ttl_sliding": true}"#);
    assert_eq!(status, 204, "{error}");
    let sliding = json!({"datatype": "counter", "conflict": "siblings", "ttl_secs": 3600,
                         "ttl_sliding": true, "salt": 8});
    assert_eq!(props(&addrs[1], "likes"), sliding);
    for a in &addrs {
        wait_until("every node has the patched properties", WAIT, || {
            props(a, "likes") == sliding
        });
    }

    // Unknown fields, wrong types and values, contradictions: 400 naming the field; nothing
    // changes.
    for (body, names) in [
        (r#"{"colour": "red"}"#, "colour"),
        (r#"{"conflict": "newest"}"#, "conflict"),
        (r#"{"salt": "8"}"#, "salt"),
        (r#"{"ttl_secs": -5}"#, "ttl_secs"),
        (r#"{"salt": 65}"#, "salt"),
        (r#"{"conflict": "lww"}"#, "lww"),
        (r#"{"ttl_secs": null}"#, "ttl_sliding"),
        ("not json", "JSON"),
    ] {
        let (status, error) = set(&addrs[2], "likes", body);
        assert_eq!(status, 400, "{body}: {error}");
        let message = error["error"].as_str().unwrap_or_default();
        assert!(message.contains(names), "{body}: {message}");
    }
    assert_eq!(props(&addrs[2], "likes"), sliding);

    // The data type of an empty bucket changes; of one holding a key, it does not.
    let (status, error) = set(&addrs[2], "likes", r#"{"datatype": "set"}"#);
    assert_eq!(status, 204, "{error}");
    assert_eq!(props(&addrs[2], "likes")["datatype"], "set");

    let write = request(&addrs[0], "PUT", "/v1/kv/carts/alice", &[], b"phone");
    assert_eq!(write.status, 204, "{}", write.text());
    let (status, error) = set(&addrs[1], "carts", r#"{"datatype": "cart"}"#);
    assert_eq!(status, 409, "{error}");
    assert!(
        error["error"]
            .as_str()
            .unwrap_or_default()
            .contains("holds data"),
        "{error}"
    );
    assert_eq!(props(&addrs[1], "carts"), defaults());
    // Other properties of a bucket with data still change.
    let (status, error) = set(&addrs[1], "carts", r#"{"ttl_secs": 60}"#);
    assert_eq!(status, 204, "{error}");

    // A key whose only version is a tombstone is still a key of the bucket.
    let put = request(&addrs[0], "PUT", "/v1/kv/gone/k", &[], b"v");
    assert_eq!(put.status, 204);
    let ctx = put.context().expect("context");
    let delete = request(
        &addrs[0],
        "DELETE",
        "/v1/kv/gone/k",
        &[("x-causal-context", &ctx)],
        b"",
    );
    assert_eq!(delete.status, 204);
    assert_eq!(
        request(&addrs[0], "GET", "/v1/kv/gone/k", &[], b"").status,
        404
    );
    let (status, error) = set(&addrs[2], "gone", r#"{"datatype": "counter"}"#);
    assert_eq!(status, 409, "{error}");

    // The CLI: get prints the JSON; set prints the result; a refusal is one line and exit 1.
    let out = yeskv(&addrs[0], &["bucket", "get", "likes"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(printed["datatype"], "set");
    let out = yeskv(
        &addrs[1],
        &[
            "bucket",
            "set",
            "sessions",
            "--ttl",
            "1800",
            "--sliding",
            "true",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (&printed["ttl_secs"], &printed["ttl_sliding"]),
        (&json!(1800), &json!(true))
    );
    let out = yeskv(
        &addrs[1],
        &["bucket", "set", "carts", "--datatype", "counter"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("409") && stderr.contains("holds data"),
        "{stderr}"
    );
    let out = yeskv(&addrs[1], &["bucket", "set", "carts", "--salt", "x"]);
    assert!(!out.status.success());

    // A restarted node has the properties as soon as it serves (rebuilt from its layout log
    // before the HTTP port opens).
    c.nodes[2].stop();
    c.nodes[2].restart();
    let restarted = c.nodes[2].http.clone();
    assert_eq!(props(&restarted, "likes")["datatype"], "set");
    assert_eq!(props(&restarted, "sessions")["ttl_secs"], 1800);
    assert_eq!(props(&restarted, "carts")["ttl_secs"], 60);

    // A member that cannot be asked: no type change (it might hold the bucket's data), 503.
    c.nodes[2].kill9();
    let (status, error) = set(&addrs[0], "empty", r#"{"datatype": "cart"}"#);
    assert_eq!(status, 503, "{error}");
    assert!(
        error["error"].as_str().unwrap_or_default().contains("n3"),
        "{error}"
    );
    assert_eq!(props(&addrs[0], "empty"), defaults());
    // Changes that keep the type need no member but the layout's majority.
    let (status, error) = set(&addrs[0], "empty", r#"{"conflict": "lww"}"#);
    assert_eq!(status, 204, "{error}");

    // The killed node missed that change: its own layout log ends before it. It answers its
    // health (and so serves keys) only once it has caught up with the layout group's commit
    // index, so its first answer already has the change.
    c.nodes[2].restart();
    assert_eq!(props(&addrs[2], "empty")["conflict"], "lww");

    // A node that is not in the layout yet serves no key (it knows no bucket's type: it
    // would take the set bucket for a plain one and store raw bytes in it); it answers its
    // health, so that it can be joined.
    let seed = c.nodes[0]
        .args
        .iter()
        .skip_while(|a| *a != "--peer")
        .nth(1)
        .expect("n1's peer address")
        .clone();
    let n4 = support::Node::start(
        &dir.path().join("n4"),
        &["--node-id", "n4", "--zone", "a", "--seed", &seed],
    );
    for (method, path) in [("GET", "/v1/dt/likes/k"), ("PUT", "/v1/kv/likes/k")] {
        let resp = n4.req(method, path, &[], b"raw bytes");
        assert_eq!(resp.status, 503, "{method} {path}: {}", resp.text());
        assert!(
            resp.text().contains("not in the cluster's layout"),
            "{}",
            resp.text()
        );
    }
    let join = json!({ "nodes": ["n4"] }).to_string();
    wait_until("n4 in n1's gossip view", WAIT, || {
        request(&addrs[0], "POST", "/v1/cluster/join", &[], join.as_bytes()).status == 200
    });
    let commit = request(&addrs[0], "POST", "/v1/cluster/commit", &[], b"");
    assert_eq!(commit.status, 200, "{}", commit.text());
    // Once it serves keys, it serves them by the set type it was given with its layout.
    let mut first = None;
    wait_until("n4 serves keys", WAIT, || {
        let resp = n4.req("GET", "/v1/dt/likes/never-written", &[], b"");
        let serving = resp.status != 503;
        first = Some(resp);
        serving
    });
    let first = first.expect("answered");
    assert_eq!(first.status, 404, "{}", first.text());
    assert_eq!(props(&n4.http, "likes")["datatype"], "set");
}
