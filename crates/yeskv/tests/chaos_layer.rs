//! The test-only chaos layer of a real node: absent unless `[chaos] enabled = true`; when on,
//! `POST /v1/admin/chaos` sets the delay, `GET` shows it, and out-of-range values are refused.

mod support;

use support::Node;

#[test]
fn chaos_endpoint_only_when_configured() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut plain = Node::start(&dir.path().join("plain"), &[]);
    let r = plain.req("POST", "/v1/admin/chaos", &[], br#"{"delay_ms": 10}"#);
    assert_eq!(
        r.status, 404,
        "a node without [chaos] must not have the endpoint"
    );
    plain.stop();

    let config = dir.path().join("chaos.toml");
    std::fs::write(&config, "[chaos]\nenabled = true\n").expect("write config");
    let node = Node::start(
        &dir.path().join("chaos"),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let json = [("content-type", "application/json")];
    let set = node.req(
        "POST",
        "/v1/admin/chaos",
        &json,
        br#"{"delay_ms": 120, "jitter_ms": 30}"#,
    );
    assert_eq!(set.status, 200, "{}", set.text());
    let shown = node.req("GET", "/v1/admin/chaos", &[], b"").json();
    assert_eq!(shown["delay_ms"], 120);
    assert_eq!(shown["jitter_ms"], 30);
    let too_big = node.req("POST", "/v1/admin/chaos", &json, br#"{"delay_ms": 60001}"#);
    assert_eq!(too_big.status, 400);
    let unknown = node.req("POST", "/v1/admin/chaos", &json, br#"{"drop": 1}"#);
    assert_eq!(unknown.status, 400);
    // A single node still serves with the layer on (its delay only touches internode calls).
    let put = node.req("PUT", "/v1/kv/b/k", &[], b"v");
    assert_eq!(put.status, 204);
}
