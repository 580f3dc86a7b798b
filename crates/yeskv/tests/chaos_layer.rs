//! The test-only chaos layer of a real node: absent unless `[chaos] enabled = true`; when on,
//! `POST /v1/admin/chaos` sets the delay and the WAN rules, `GET` shows them, and out-of-range
//! values are refused with a reason, changing nothing. `[chaos] wan` in the config turns the
//! layer on by itself.

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

    // WAN rules: set beside the delay, shown, kept by a POST without them.
    let set = node.req(
        "POST",
        "/v1/admin/chaos",
        &json,
        br#"{"delay_ms": 5, "wan": [{"to": "r2", "delay_ms": 40, "jitter_ms": 5, "loss": 0.25}]}"#,
    );
    assert_eq!(set.status, 200, "{}", set.text());
    let expected = serde_json::json!({
        "delay_ms": 5,
        "jitter_ms": 0,
        "wan": [{"to": "r2", "delay_ms": 40, "jitter_ms": 5, "loss": 0.25}],
    });
    assert_eq!(
        node.req("GET", "/v1/admin/chaos", &[], b"").json(),
        expected
    );
    for (body, why) in [
        (&br#"{"wan": [{"to": "r2", "loss": 1.5}]}"#[..], "loss"),
        (br#"{"wan": [{"to": "", "delay_ms": 1}]}"#, "region name"),
        (br#"{"wan": [{"to": "r2", "delay_ms": 60001}]}"#, "at most"),
        (br#"{"wan": [{"to": "r2"}, {"to": "r2"}]}"#, "twice"),
        (br#"{"wan": [{"to": "r2", "drop": 1}]}"#, "unknown field"),
        (
            br#"{"delay_ms": 1, "wan": [{"to": "r2", "loss": -1}]}"#,
            "loss",
        ),
    ] {
        let r = node.req("POST", "/v1/admin/chaos", &json, body);
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(body));
        let reason = r.json()["error"].as_str().unwrap_or_default().to_string();
        assert!(
            reason.contains(why),
            "{}: {reason}",
            String::from_utf8_lossy(body)
        );
        assert_eq!(
            node.req("GET", "/v1/admin/chaos", &[], b"").json(),
            expected,
            "a refused body changed the settings"
        );
    }
    let kept = node.req("POST", "/v1/admin/chaos", &json, br#"{"delay_ms": 0}"#);
    assert_eq!(kept.json()["wan"], expected["wan"]);
    let cleared = node.req("POST", "/v1/admin/chaos", &json, br#"{"wan": []}"#);
    assert_eq!(cleared.json()["wan"], serde_json::json!([]));
    // A single node still serves with the layer on (its delay only touches internode calls).
    let put = node.req("PUT", "/v1/kv/b/k", &[], b"v");
    assert_eq!(put.status, 204);
}

/// `[chaos] wan` alone turns the layer on; the node keeps the links from its own region.
#[test]
fn wan_links_in_the_config_turn_the_layer_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wan.toml");
    std::fs::write(
        &config,
        "region = \"r2\"\n[chaos]\nwan = [\n  {from = \"r1\", to = \"r2\", delay_ms = 40},\n  \
         {from = \"r2\", to = \"r1\", delay_ms = 41, jitter_ms = 3, loss = 0.01},\n]\n",
    )
    .expect("write config");
    let node = Node::start(
        &dir.path().join("n"),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let shown = node.req("GET", "/v1/admin/chaos", &[], b"");
    assert_eq!(shown.status, 200, "{}", shown.text());
    assert_eq!(
        shown.json()["wan"],
        serde_json::json!([{"to": "r1", "delay_ms": 41, "jitter_ms": 3, "loss": 0.01}])
    );
}
