//! The command-line client against a real node: put/get/delete round trips with contexts,
//! stdin values, labelled siblings, JSON output, and one-line errors with non-zero exit status.

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
