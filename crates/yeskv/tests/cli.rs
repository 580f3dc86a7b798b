//! The command-line client against a real node: put/get/delete round trips with contexts,
//! stdin values, labelled siblings, JSON output, data types (`dt`), `touch`, and one-line
//! errors with non-zero exit status.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};
use support::{bin, Node};

fn yeskv(node: &Node, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(bin())
        .args(args)
        .args(["--node", &format!("http://{}", node.http)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write stdin");
    }
    drop(child.stdin.take());
    child.wait_with_output().expect("wait")
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn put_get_delete_round_trip() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]);

    let ctx1 = ok(&yeskv(&node, &["put", "carts", "bob", "book"], None));
    assert!(!ctx1.trim().is_empty(), "put prints the new context");
    assert_eq!(ok(&yeskv(&node, &["get", "carts", "bob"], None)), "book");

    // A blind second put makes siblings; get labels them.
    ok(&yeskv(&node, &["put", "carts", "bob", "pen"], None));
    let out = ok(&yeskv(&node, &["get", "carts", "bob"], None));
    assert!(
        out.contains("sibling 1 of 2") && out.contains("sibling 2 of 2"),
        "{out}"
    );
    assert!(out.contains("book") && out.contains("pen"));

    // get --json, then put --context with its context resolves the siblings (value from stdin).
    let json: serde_json::Value =
        serde_json::from_str(&ok(&yeskv(&node, &["get", "--json", "carts", "bob"], None)))
            .expect("json");
    let ctx = json["context"].as_str().expect("context");
    assert_eq!(json["siblings"].as_array().map(Vec::len), Some(2));
    ok(&yeskv(
        &node,
        &["put", "carts", "bob", "-", "--context", ctx],
        Some(b"book,pen"),
    ));
    assert_eq!(
        ok(&yeskv(&node, &["get", "carts", "bob"], None)),
        "book,pen"
    );

    // delete reads first, then deletes what it read.
    ok(&yeskv(&node, &["delete", "carts", "bob"], None));
    let out = yeskv(&node, &["get", "carts", "bob"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not found"), "{err}");
}

/// The stderr of a failed command: exactly one line.
fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    err
}

#[test]
fn data_types_and_touch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]);
    for (bucket, datatype) in [("carts", "cart"), ("views", "counter"), ("tags", "set")] {
        ok(&yeskv(
            &node,
            &["bucket", "set", bucket, "--datatype", datatype],
            None,
        ));
    }

    // Cart: add (QTY defaults to 1), get as lines and JSON, remove with the read's context.
    let ctx = ok(&yeskv(
        &node,
        &["dt", "add", "carts", "ada", "sku-1", "2"],
        None,
    ));
    assert!(
        !ctx.trim().is_empty(),
        "an operation prints the new context"
    );
    ok(&yeskv(&node, &["dt", "add", "carts", "ada", "sku-2"], None));
    assert_eq!(
        ok(&yeskv(&node, &["dt", "get", "carts", "ada"], None)),
        "sku-1\t2\nsku-2\t1\n"
    );
    let json: serde_json::Value = serde_json::from_str(&ok(&yeskv(
        &node,
        &["dt", "get", "--json", "carts", "ada"],
        None,
    )))
    .expect("json");
    assert_eq!(json["type"], "cart");
    let ctx = json["context"].as_str().expect("context");
    ok(&yeskv(
        &node,
        &["dt", "remove", "carts", "ada", "sku-1", "--context", ctx],
        None,
    ));
    ok(&yeskv(
        &node,
        &["dt", "set", "carts", "ada", "sku-2", "4"],
        None,
    ));
    assert_eq!(
        ok(&yeskv(&node, &["dt", "get", "carts", "ada"], None)),
        "sku-2\t4\n"
    );

    // Counter (a negative increment) and set.
    ok(&yeskv(&node, &["dt", "incr", "views", "p1", "5"], None));
    ok(&yeskv(&node, &["dt", "incr", "views", "p1", "-2"], None));
    assert_eq!(
        ok(&yeskv(&node, &["dt", "get", "views", "p1"], None)),
        "3\n"
    );
    ok(&yeskv(
        &node,
        &["dt", "sadd", "tags", "p1", "b", "a", "c"],
        None,
    ));
    ok(&yeskv(&node, &["dt", "srem", "tags", "p1", "b"], None));
    assert_eq!(
        ok(&yeskv(&node, &["dt", "get", "tags", "p1"], None)),
        "a\nc\n"
    );

    // Refusals: one line, non-zero.
    let err = failed(&yeskv(&node, &["dt", "incr", "carts", "ada", "1"], None));
    assert!(err.contains("409"), "{err}");
    let err = failed(&yeskv(&node, &["dt", "get", "carts", "nobody"], None));
    assert!(err.contains("not found"), "{err}");
    let err = failed(&yeskv(&node, &["dt", "add", "plain", "k", "sku"], None));
    assert!(err.contains("plain bucket"), "{err}");

    // touch: extends a live key's expiry; a missing key is 'not found'.
    ok(&yeskv(
        &node,
        &["put", "sessions", "s1", "v", "--ttl", "2"],
        None,
    ));
    ok(&yeskv(
        &node,
        &["touch", "sessions", "s1", "--ttl", "120"],
        None,
    ));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(ok(&yeskv(&node, &["get", "sessions", "s1"], None)), "v");
    let err = failed(&yeskv(
        &node,
        &["touch", "sessions", "nope", "--ttl", "60"],
        None,
    ));
    assert!(err.contains("not found"), "{err}");
    let err = failed(&yeskv(&node, &["touch", "sessions", "s1"], None));
    assert!(err.contains("400") && err.contains("ttl"), "{err}");
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &[]);
    let out = yeskv(&node, &["put", "b", "k", "v", "--context", "forged"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("400") && err.contains("context"), "{err}");

    let out = yeskv(&node, &["get", "b", "k", "--r", "7"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "{err}");

    // Nothing listening: a clear connection error.
    let out = Command::new(bin())
        .args([
            "get",
            "b",
            "k",
            "--node",
            &format!("http://127.0.0.1:{}", support::free_port()),
        ])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim().lines().count(),
        1
    );
}

#[test]
fn cluster_status_shows_members_and_layout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(dir.path(), &["--zone", "eu-1"]);
    let out = Command::new(bin())
        .args([
            "cluster",
            "status",
            "--node",
            &format!("http://{}", node.http),
        ])
        .output()
        .expect("run");
    let text = ok(&out);
    assert!(text.contains("layout version 1"), "{text}");
    assert!(
        text.contains("n1") && text.contains("eu-1") && text.contains("100.0%"),
        "{text}"
    );
}
