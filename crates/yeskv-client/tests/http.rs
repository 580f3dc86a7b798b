//! The client against a scripted HTTP/1.1 server on loopback: what goes on the wire (paths,
//! headers, bodies) and how each kind of answer is understood.

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use support::{mock, response};
use yeskv_client::{Client, Error, Quorum, ReadOptions, WriteOptions};

#[tokio::test]
async fn get_sends_encoded_path_and_parses_json() {
    let server = mock(|_| {
        response(
            "200 OK",
            &[
                ("content-type", "application/json"),
                ("x-causal-context", "ctx-1"),
            ],
            r#"{"context":"ctx-1","siblings":[{"value":"aGVsbG8=","deleted":false}]}"#,
        )
    })
    .await;
    let client = Client::new(&server.url).expect("valid");
    let read = client
        .get(
            "my bucket",
            "a/b",
            &ReadOptions {
                r: Some(Quorum::Quorum),
            },
        )
        .await
        .expect("ok")
        .expect("found");
    assert_eq!(read.context, "ctx-1");
    assert_eq!(
        read.value().map(|value| value.as_ref()),
        Some(&b"hello"[..])
    );

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].target, "/v1/kv/my%20bucket/a%2Fb?r=quorum");
    // Reads ask for the raw form: one version comes back as bytes, siblings as 300 JSON.
    assert_eq!(requests[0].header("accept"), None);
}

#[tokio::test]
async fn siblings_come_back_as_a_conflict() {
    let server = mock(|_| {
        response(
            "300 Multiple Choices",
            &[("content-type", "application/json"), ("x-causal-context", "c2")],
            r#"{"context":"c2","siblings":[{"value":"YQ==","deleted":false},{"value":null,"deleted":true}]}"#,
        )
    })
    .await;
    let client = Client::new(&server.url).expect("valid");
    let read = client
        .get("b", "k", &ReadOptions::default())
        .await
        .expect("ok")
        .expect("found");
    assert!(read.is_conflict());
    assert_eq!(read.values().count(), 1);
    assert!(read.siblings[1].is_deleted());
    assert_eq!(server.requests()[0].target, "/v1/kv/b/k");
}

#[tokio::test]
async fn not_found_keeps_the_tombstone_context() {
    let server = mock(|_| {
        response(
            "404 Not Found",
            &[("x-causal-context", "tomb")],
            r#"{"error":"not found"}"#,
        )
    })
    .await;
    let client = Client::new(&server.url).expect("valid");
    assert_eq!(
        client.get("b", "k", &ReadOptions::default()).await,
        Ok(None)
    );
    let read = client
        .read("b", "k", &ReadOptions::default())
        .await
        .expect("ok");
    assert!(read.siblings.is_empty());
    assert_eq!(read.context, "tomb");
}

#[tokio::test]
async fn put_sends_value_context_and_options() {
    let server = mock(|_| response("204 No Content", &[("x-causal-context", "new-ctx")], "")).await;
    let client = Client::new(&server.url).expect("valid");
    let context = client
        .put(
            "b",
            "k",
            Bytes::from_static(b"\x00value"),
            &WriteOptions {
                context: Some("old-ctx".into()),
                w: Some(Quorum::All),
                ttl_secs: Some(30),
            },
        )
        .await
        .expect("ok");
    assert_eq!(context, "new-ctx");
    let request = &server.requests()[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.target, "/v1/kv/b/k?w=all&ttl=30");
    assert_eq!(request.header("x-causal-context"), Some("old-ctx"));
    assert_eq!(request.body, b"\x00value");
}

#[tokio::test]
async fn put_without_context_header_is_an_invalid_response() {
    let server = mock(|_| response("204 No Content", &[], "")).await;
    let client = Client::new(&server.url).expect("valid");
    let error = client
        .put("b", "k", Bytes::new(), &WriteOptions::default())
        .await
        .expect_err("no context");
    assert!(matches!(error, Error::InvalidResponse(_)), "{error:?}");
    assert_eq!(server.requests()[0].header("x-causal-context"), None);
}

#[tokio::test]
async fn error_reason_comes_from_the_json_body() {
    let server = mock(|_| {
        response(
            "400 Bad Request",
            &[("content-type", "application/json")],
            r#"{"error":"r must be between 1 and n (3)"}"#,
        )
    })
    .await;
    let client = Client::new(&server.url).expect("valid");
    let error = client
        .get(
            "b",
            "k",
            &ReadOptions {
                r: Some(Quorum::N(9)),
            },
        )
        .await
        .expect_err("bad r");
    assert_eq!(
        error,
        Error::Http {
            status: 400,
            reason: "r must be between 1 and n (3)".into()
        }
    );
    assert_eq!(
        error.to_string(),
        "server said 400: r must be between 1 and n (3)"
    );
}

#[tokio::test]
async fn delete_latest_deletes_what_it_read() {
    let server = mock(|request| match request.method.as_str() {
        "GET" => response(
            "200 OK",
            &[
                ("content-type", "application/json"),
                ("x-causal-context", "seen"),
            ],
            r#"{"context":"seen","siblings":[{"value":"eA==","deleted":false}]}"#,
        ),
        _ => response("204 No Content", &[], ""),
    })
    .await;
    let client = Client::new(&server.url).expect("valid");
    let deleted = client
        .delete_latest(
            "b",
            "k",
            &ReadOptions::default(),
            &WriteOptions {
                w: Some(Quorum::One),
                ..WriteOptions::default()
            },
        )
        .await
        .expect("ok");
    assert!(deleted);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[1].method, "DELETE");
    assert_eq!(requests[1].target, "/v1/kv/b/k?w=one");
    assert_eq!(requests[1].header("x-causal-context"), Some("seen"));
}

#[tokio::test]
async fn connections_are_kept_alive() {
    let server = mock(|_| response("204 No Content", &[("x-causal-context", "c")], "")).await;
    let client = Client::new(&server.url).expect("valid");
    for _ in 0..20 {
        client
            .put("b", "k", Bytes::from_static(b"v"), &WriteOptions::default())
            .await
            .expect("ok");
    }
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let server = mock(|_| None).await;
    let client = Client::builder()
        .node(server.url.clone())
        .timeout(Duration::from_millis(200))
        .retries(0)
        .build()
        .expect("valid");
    let error = client
        .put("b", "k", Bytes::new(), &WriteOptions::default())
        .await
        .expect_err("silent");
    assert_eq!(error, Error::Timeout);
    assert!(error.is_retryable());
}

#[tokio::test]
async fn connect_failures_fail_over_to_the_next_node() {
    let server = mock(|_| response("200 OK", &[("content-type", "application/json")], "{}")).await;
    // Port 9 on loopback: nothing listens there.
    let client = Client::builder()
        .nodes(["http://127.0.0.1:9".to_string(), server.url.clone()])
        .build()
        .expect("valid");
    for _ in 0..4 {
        assert_eq!(client.status().await, Ok(serde_json::json!({})));
    }
    assert_eq!(server.requests().len(), 4);
    assert!(!client.for_node(0).expect("node 0").health().await);
}
