//! Start-up, configuration and shutdown of the real binary: bad configs are refused with one
//! line, SIGTERM stops cleanly and keeps the actor epoch, `kill -9` changes it, and a record
//! corrupted on disk is reported and counted, never served.

mod support;

use std::process::Command;
use support::{bin, Node};

fn refused(args: &[&str], config: Option<&str>) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(bin());
    cmd.arg("server")
        .args(["--data-dir", &dir.path().display().to_string()]);
    if let Some(text) = config {
        let p = dir.path().join("c.toml");
        std::fs::write(&p, text).expect("write config");
        cmd.args(["--config", &p.display().to_string()]);
    }
    let out = cmd.args(args).output().expect("run");
    assert!(
        !out.status.success(),
        "{args:?} {config:?} should be refused"
    );
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "one line expected, got {err:?}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

#[test]
fn bad_configuration_is_refused_with_one_line() {
    assert!(refused(&[], Some("r = 4\n")).contains("r must be between 1 and n"));
    assert!(refused(&[], Some("colour = \"red\"\n")).contains("colour"));
    assert!(refused(&["--http", "127.0.0.1:70000"], None).contains("http address"));
    assert!(refused(&["--sync", "sometimes"], None).contains("sync"));
    assert!(refused(&["--node-id", "bad id"], None).contains("node_id"));
    assert!(refused(&["--config", "/nonexistent/yeskv.toml"], None).contains("cannot read config"));
}

#[test]
fn sigterm_is_clean_and_keeps_the_epoch_kill9_changes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), &[]);
    let actor = |n: &Node| {
        n.req("GET", "/v1/status", &[], b"").json()["actor"]
            .as_str()
            .expect("actor")
            .to_string()
    };
    let a1 = actor(&node);
    node.req("PUT", "/v1/kv/b/k", &[], b"v");
    let status = node.stop();
    assert!(status.success(), "SIGTERM exit: {status}");
    node.restart();
    assert_eq!(actor(&node), a1, "clean restart keeps the actor epoch");
    let ring = node.req("GET", "/v1/ring", &[], b"").json();
    assert_eq!(
        ring["version"], 1,
        "the persisted layout comes back, not a new cluster"
    );
    assert_eq!(node.req("GET", "/v1/kv/b/k", &[], b"").text(), "v");
    node.kill9();
    node.restart();
    let a3 = actor(&node);
    assert_ne!(a3, a1, "after kill -9 a new epoch is chosen");
    // The new actor's writes are siblings of, not replacements for, the old ones.
    node.req("PUT", "/v1/kv/b/k", &[], b"w");
    assert_eq!(node.req("GET", "/v1/kv/b/k", &[], b"").status, 300);
}

#[test]
fn corrupt_record_on_disk_is_reported_never_served() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut node = Node::start(dir.path(), &[]);
    let value = support::incompressible(4096);
    assert_eq!(node.req("PUT", "/v1/kv/b/victim", &[], &value).status, 204);
    assert_eq!(
        node.req("PUT", "/v1/kv/b/bystander", &[], b"fine").status,
        204
    );
    assert!(node.stop().success()); // flushes memtables to SST files

    let needle = &value[1000..1064];
    let flipped = support::flip_in_sst(&dir.path().join("db"), needle);
    let ssts: Vec<_> = std::fs::read_dir(dir.path().join("db"))
        .expect("db dir")
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    assert_eq!(
        flipped, 1,
        "value bytes not found in exactly one SST file: {ssts:?}"
    );

    node.restart();
    let before = node.metric("yeskv_corrupt_records_total");
    let r = node.req("GET", "/v1/kv/b/victim", &[], b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.json()["error"]
        .as_str()
        .expect("reason")
        .contains("corrupt"));
    assert!(!r.body.windows(needle.len()).any(|w| w == needle));
    let after = node.metric("yeskv_corrupt_records_total");
    assert!(
        after >= before + 1.0,
        "corruption not counted ({before} -> {after})"
    );
    // A write over the corrupt record is refused too, and the value is still never served.
    assert_eq!(node.req("PUT", "/v1/kv/b/victim", &[], b"new").status, 500);
    assert_eq!(node.req("GET", "/v1/kv/b/victim", &[], b"").status, 500);
}
