//! Live answers of real nodes against the OpenAPI document they serve (`GET /v1/openapi.json`).
//!
//! Two nodes started with `--auth`: `n1` creates the cluster, `n2` waits in its gossip until
//! the test joins it. Every described operation is called at least once for success and once
//! for an error, and each answer is checked against the document ([`Spec::check`]):
//!
//! - the operation (method and path template) is described, and the status is one of its
//!   responses;
//! - the `Content-Type` is one the response describes (none for a response without content);
//! - every `X-…` and `WWW-Authenticate` header of the answer is described for that response,
//!   and its value fits the header's schema;
//! - a JSON body validates against the response's schema (JSON Schema draft 2020-12, the
//!   dialect of OpenAPI 3.1, with `$ref`s resolved inside the document).
//!
//! Finally the test checks that every operation of the document was exercised.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};
use support::{admin_key, free_port, wait_until, Node, Resp};

/// The document, and which of its operations the test called.
struct Spec {
    doc: Value,
    called: BTreeSet<(String, String)>,
}

impl Spec {
    /// Checks `resp`, the answer to `method` on a path of `template` (module docs); panics
    /// naming what does not fit.
    fn check(&mut self, method: &str, template: &str, resp: &Resp) {
        let method = method.to_ascii_lowercase();
        let what = format!("{} {template} -> {}", method.to_uppercase(), resp.status);
        let operation = &self.doc["paths"][template][&method];
        assert!(operation.is_object(), "{what}: operation not described");
        self.called.insert((method.clone(), template.to_string()));
        let described = &operation["responses"][resp.status.to_string()];
        assert!(
            described.is_object(),
            "{what}: status not described (body: {})",
            resp.text()
        );
        // Content type.
        let content_type = resp.header("content-type").unwrap_or("");
        let media = |t: &str| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        };
        let content = described["content"].as_object();
        let schema = match content {
            None => {
                assert!(
                    resp.body.is_empty(),
                    "{what}: a body ({content_type}) where none is described: {}",
                    resp.text()
                );
                None
            }
            Some(content) => {
                let (_, entry) = content
                    .iter()
                    .find(|(t, _)| media(t) == media(content_type))
                    .unwrap_or_else(|| {
                        panic!(
                            "{what}: content type {content_type:?} not described (described: {:?})",
                            content.keys().collect::<Vec<_>>()
                        )
                    });
                entry.get("schema")
            }
        };
        // Headers.
        let headers = described["headers"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (name, value) in &resp.headers {
            let name = name.to_ascii_lowercase();
            if !(name.starts_with("x-") || name == "www-authenticate") {
                continue;
            }
            let header = headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
                .map(|(_, h)| h)
                .unwrap_or_else(|| panic!("{what}: header {name} not described"));
            let instance = match header["schema"]["type"].as_str() {
                Some("integer") => json!(value.parse::<i64>().unwrap_or_else(|_| panic!(
                    "{what}: header {name}: {value:?} is not an integer"
                ))),
                _ => json!(value),
            };
            self.validate(&what, &header["schema"], &instance);
        }
        // Body.
        if media(content_type) == "application/json" {
            let body: Value = serde_json::from_slice(&resp.body)
                .unwrap_or_else(|e| panic!("{what}: the body is not JSON ({e}): {}", resp.text()));
            if let Some(schema) = schema {
                self.validate(&what, schema, &body);
            }
        }
    }

    /// Validates `instance` against `schema`, a schema of the document (its `$ref`s resolve
    /// inside the document).
    fn validate(&self, what: &str, schema: &Value, instance: &Value) {
        let mut root = schema.clone();
        let Some(object) = root.as_object_mut() else {
            return;
        };
        object.insert(
            "$schema".into(),
            json!("https://json-schema.org/draft/2020-12/schema"),
        );
        object.insert("components".into(), self.doc["components"].clone());
        let validator = jsonschema::draft202012::new(&root)
            .unwrap_or_else(|e| panic!("{what}: the schema does not compile: {e}"));
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect();
        assert!(
            errors.is_empty(),
            "{what}: the answer does not match its schema: {errors:?}\nanswer: {instance}\nschema: {schema}"
        );
    }

    /// Every operation of the document that was not called.
    fn uncalled(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (path, item) in self.doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                if !self.called.contains(&(method.clone(), path.clone())) {
                    missing.push(format!("{} {path}", method.to_uppercase()));
                }
            }
        }
        missing
    }
}

#[test]
fn live_answers_match_the_served_openapi_document() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin_file = dir.path().join("admin.key");
    let peer1 = format!("127.0.0.1:{}", free_port());
    let n1 = Node::start(
        &dir.path().join("n1"),
        &[
            "--node-id",
            "n1",
            "--peer",
            &peer1,
            "--auth",
            "--admin-key-file",
            admin_file.to_str().expect("utf-8"),
        ],
    );
    let n2 = Node::start(
        &dir.path().join("n2"),
        &["--node-id", "n2", "--seed", &peer1, "--auth"],
    );
    let admin = format!("Bearer {}", admin_key(&admin_file, Duration::from_secs(30)));
    let admin = [("authorization", admin.as_str())];
    wait_until("the admin key registered", Duration::from_secs(30), || {
        n1.req("GET", "/v1/admin/keys", &admin, b"").status == 200
    });

    // The document, open to anyone.
    let served = n1.req("GET", "/v1/openapi.json", &[], b"");
    assert_eq!(served.status, 200, "{}", served.text());
    let mut spec = Spec {
        doc: served.json(),
        called: BTreeSet::new(),
    };
    assert_eq!(spec.doc["openapi"], "3.1.0");
    spec.check("GET", "/v1/openapi.json", &served);
    let mut call = |node: &Node,
                    method: &str,
                    path: &str,
                    template: &str,
                    headers: &[(&str, &str)],
                    body: &[u8],
                    expect: u16|
     -> Resp {
        let resp = node.req(method, path, headers, body);
        assert_eq!(
            resp.status,
            expect,
            "{method} {path}: expected {expect}, got {}: {}",
            resp.status,
            resp.text()
        );
        spec.check(method, template, &resp);
        resp
    };
    let kv = "/v1/kv/{bucket}/{key}";
    let dt = "/v1/dt/{bucket}/{key}";
    let bucket = "/v1/buckets/{bucket}";

    // Node endpoints.
    call(&n1, "GET", "/v1/health", "/v1/health", &[], b"", 200);
    call(&n1, "GET", "/metrics", "/metrics", &[], b"", 200);
    call(&n1, "GET", "/v1/status", "/v1/status", &admin, b"", 200);
    call(&n1, "GET", "/v1/status", "/v1/status", &[], b"", 401);
    call(&n1, "GET", "/v1/ring", "/v1/ring", &admin, b"", 200);
    call(&n2, "GET", "/v1/ring", "/v1/ring", &admin, b"", 401);
    call(&n1, "GET", "/v1/hot", "/v1/hot", &admin, b"", 200);
    call(
        &n1,
        "POST",
        "/v1/admin/compact",
        "/v1/admin/compact",
        &admin,
        b"",
        200,
    );
    call(
        &n1,
        "POST",
        "/v1/admin/compact",
        "/v1/admin/compact",
        &[],
        b"",
        401,
    );

    // API keys.
    let keys = "/v1/admin/keys";
    let created = call(
        &n1,
        "POST",
        keys,
        keys,
        &admin,
        br#"{"name": "reader", "buckets": {"b": "read"}}"#,
        200,
    );
    let reader = format!("Bearer {}", created.json()["key"].as_str().expect("key"));
    let reader = [("authorization", reader.as_str())];
    call(
        &n1,
        "POST",
        keys,
        keys,
        &admin,
        br#"{"name": "reader", "admin": true}"#,
        409,
    );
    call(&n1, "POST", keys, keys, &admin, br#"{"name": "x"}"#, 400);
    call(&n1, "GET", keys, keys, &admin, b"", 200);
    call(&n1, "GET", keys, keys, &reader, b"", 403);

    // Keys and values.
    let put = call(&n1, "PUT", "/v1/kv/b/k", kv, &admin, b"one", 204);
    let context = put.context().expect("context");
    call(&n1, "GET", "/v1/kv/b/k", kv, &admin, b"", 200);
    call(&n1, "GET", "/v1/kv/b/k", kv, &reader, b"", 200);
    let json_mode = [admin[0], ("accept", "application/json")];
    call(&n1, "GET", "/v1/kv/b/k", kv, &json_mode, b"", 200);
    call(&n1, "PUT", "/v1/kv/b/k", kv, &admin, b"two", 204);
    let siblings = call(&n1, "GET", "/v1/kv/b/k", kv, &admin, b"", 300);
    call(&n1, "GET", "/v1/kv/b/k?r=most", kv, &admin, b"", 400);
    call(&n1, "GET", "/v1/kv/b/missing", kv, &admin, b"", 404);
    call(&n1, "GET", "/v1/kv/b/k", kv, &[], b"", 401);
    call(&n1, "PUT", "/v1/kv/b/k", kv, &reader, b"no", 403);
    let long_key = format!("/v1/kv/b/{}", "k".repeat(513));
    call(&n1, "PUT", &long_key, kv, &admin, b"v", 413);
    call(&n1, "PUT", "/v1/kv/b/k?ttl=0", kv, &admin, b"v", 400);
    let with_context = [admin[0], ("x-causal-context", context.as_str())];
    call(&n1, "PUT", "/v1/kv/b/k2", kv, &with_context, b"v", 400);
    call(&n1, "DELETE", "/v1/kv/b/k", kv, &admin, b"", 428);
    call(&n1, "DELETE", "/v1/kv/b/k?w=x", kv, &admin, b"", 400);
    let all = siblings.context().expect("context");
    let covering = [admin[0], ("x-causal-context", all.as_str())];
    call(&n1, "DELETE", "/v1/kv/b/k", kv, &covering, b"", 204);
    call(&n1, "GET", "/v1/kv/b/k", kv, &admin, b"", 404);
    call(&n1, "PUT", "/v1/kv/b/session", kv, &admin, b"s", 204);
    call(
        &n1,
        "POST",
        "/v1/kv/b/session?touch&ttl=60",
        kv,
        &admin,
        b"",
        204,
    );
    call(
        &n1,
        "POST",
        "/v1/kv/b/gone?touch&ttl=60",
        kv,
        &admin,
        b"",
        404,
    );
    call(&n1, "POST", "/v1/kv/b/session?touch", kv, &admin, b"", 400);

    // Buckets and data types.
    call(&n1, "GET", "/v1/buckets/carts", bucket, &admin, b"", 200);
    call(&n1, "GET", "/v1/buckets/carts", bucket, &[], b"", 401);
    let long_bucket = format!("/v1/buckets/{}", "b".repeat(513));
    call(&n1, "GET", &long_bucket, bucket, &admin, b"", 413);
    let cart = br#"{"datatype": "cart"}"#;
    call(&n1, "PUT", "/v1/buckets/carts", bucket, &admin, cart, 204);
    call(
        &n1,
        "PUT",
        "/v1/buckets/carts",
        bucket,
        &admin,
        br#"{"colour": 1}"#,
        400,
    );
    call(&n1, "PUT", "/v1/buckets/carts", bucket, &reader, cart, 403);
    call(&n1, "GET", "/v1/buckets/carts", bucket, &admin, b"", 200);
    let add = br#"{"op": "add", "item": "sku", "qty": 2}"#;
    call(&n1, "POST", "/v1/dt/carts/c1", dt, &admin, add, 204);
    call(&n1, "GET", "/v1/dt/carts/c1", dt, &admin, b"", 200);
    call(&n1, "GET", "/v1/dt/carts/none", dt, &admin, b"", 404);
    call(&n1, "GET", "/v1/dt/b/k", dt, &admin, b"", 409);
    call(
        &n1,
        "POST",
        "/v1/dt/carts/c1",
        dt,
        &admin,
        br#"{"op": "incr", "by": 1}"#,
        409,
    );
    call(
        &n1,
        "POST",
        "/v1/dt/carts/c1",
        dt,
        &admin,
        br#"{"op": 1}"#,
        400,
    );
    call(&n1, "POST", "/v1/dt/carts/c1", dt, &reader, add, 403);
    call(&n1, "GET", "/v1/kv/carts/c1", kv, &admin, b"", 409);
    let counter = br#"{"datatype": "counter"}"#;
    call(
        &n1,
        "PUT",
        "/v1/buckets/carts",
        bucket,
        &admin,
        counter,
        409,
    );

    // Backups: a checkpoint, one of its files, deletion; the import a restore sends.
    let backup = "/v1/admin/backups/{id}";
    let file = "/v1/admin/backups/{id}/{file}";
    let import = "/v1/admin/import";
    let taken = call(
        &n1,
        "POST",
        "/v1/admin/backups/b1",
        backup,
        &admin,
        b"",
        200,
    );
    let name = taken.json()["files"][0]["name"]
        .as_str()
        .expect("a file")
        .to_string();
    call(
        &n1,
        "POST",
        "/v1/admin/backups/b1",
        backup,
        &admin,
        b"",
        409,
    );
    call(
        &n1,
        "POST",
        "/v1/admin/backups/.b",
        backup,
        &admin,
        b"",
        400,
    );
    call(
        &n1,
        "POST",
        "/v1/admin/backups/b2",
        backup,
        &reader,
        b"",
        403,
    );
    call(
        &n1,
        "GET",
        &format!("/v1/admin/backups/b1/{name}"),
        file,
        &admin,
        b"",
        200,
    );
    call(
        &n1,
        "GET",
        "/v1/admin/backups/b1/NONE",
        file,
        &admin,
        b"",
        404,
    );
    call(
        &n1,
        "DELETE",
        "/v1/admin/backups/b1",
        backup,
        &admin,
        b"",
        204,
    );
    call(
        &n1,
        "DELETE",
        "/v1/admin/backups/b1",
        backup,
        &admin,
        b"",
        404,
    );
    call(&n1, "POST", import, import, &admin, b"", 200);
    call(&n1, "POST", import, import, &admin, b"\x00\x05ab", 400);
    call(&n1, "POST", import, import, &[], b"", 401);

    // Revoking the key.
    call(
        &n1,
        "DELETE",
        "/v1/admin/keys/reader",
        "/v1/admin/keys/{name}",
        &admin,
        b"",
        204,
    );
    call(
        &n1,
        "DELETE",
        "/v1/admin/keys/reader",
        "/v1/admin/keys/{name}",
        &admin,
        b"",
        404,
    );
    call(&n1, "GET", "/v1/kv/b/session", kv, &reader, b"", 401);

    // Cluster changes: nothing staged, bad requests, then n2 joins.
    let plan = "/v1/cluster/plan";
    let join = "/v1/cluster/join";
    let leave = "/v1/cluster/leave";
    let commit = "/v1/cluster/commit";
    let replication = "/v1/cluster/replication";
    call(&n1, "GET", plan, plan, &admin, b"", 409);
    call(&n1, "POST", commit, commit, &admin, b"", 409);
    call(&n1, "GET", plan, plan, &[], b"", 401);
    call(
        &n1,
        "POST",
        join,
        join,
        &admin,
        br#"{"nodes": ["n9"]}"#,
        400,
    );
    call(&n1, "POST", leave, leave, &admin, br#"{"nodes": []}"#, 400);
    call(&n1, "POST", replication, replication, &admin, b"[1]", 400);
    let n2_up = br#"{"nodes": ["n2"]}"#;
    wait_until("n2 in n1's gossip view", Duration::from_secs(20), || {
        n1.req("GET", "/v1/status", &admin, b"").json()["members"]
            .as_array()
            .is_some_and(|m| m.len() == 2)
    });
    call(&n1, "POST", join, join, &admin, n2_up, 200);
    call(&n1, "GET", plan, plan, &admin, b"", 200);
    call(&n1, "POST", commit, commit, &admin, b"", 200);
    wait_until("n2 applies the layout", Duration::from_secs(30), || {
        n2.req("GET", "/v1/ring", &admin, b"").status == 200
    });
    call(&n2, "GET", "/v1/ring", "/v1/ring", &admin, b"", 200);
    call(
        &n1,
        "POST",
        replication,
        replication,
        &admin,
        br#"{"r1": 2}"#,
        400,
    );
    call(&n1, "POST", replication, replication, &admin, b"{}", 200);
    call(&n1, "POST", leave, leave, &admin, n2_up, 200);

    let uncalled = spec.uncalled();
    assert!(
        uncalled.is_empty(),
        "operations never exercised: {uncalled:?}"
    );
}
