//! `yeskv dev`: starts real node processes, prints their URLs and a ready line, stops them all on
//! SIGTERM, and a second run on the same data directory brings the data back.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::{bin, free_port, request};

/// Starts `yeskv dev` (its stderr, the nodes' logs and dev's own messages, into `data/dev.err`)
/// and reads its stdout until a line for which `stop` holds.
fn run_dev_until(
    data: &std::path::Path,
    port: u16,
    extra: &[&str],
    stop: impl Fn(&str) -> bool,
) -> (std::process::Child, Vec<String>) {
    let err = std::fs::File::create(data.join("dev.err")).expect("stderr file");
    let mut child = Command::new(bin())
        .args([
            "dev",
            "--data-dir",
            &data.display().to_string(),
            "--base-port",
            &port.to_string(),
        ])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .expect("spawn dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    for line in reader.by_ref() {
        let line = line.expect("line");
        let done = stop(&line);
        lines.push(line);
        if done {
            break;
        }
    }
    // Keep reading what dev prints next, so its stdout never breaks under it.
    std::thread::spawn(move || reader.for_each(drop));
    (child, lines)
}

fn run_dev_until_ready(data: &std::path::Path, port: u16) -> (std::process::Child, Vec<String>) {
    run_dev_until(data, port, &[], |l| l.starts_with("ready"))
}

/// What `yeskv dev` wrote to stderr so far (for failure messages).
fn dev_err(data: &std::path::Path) -> String {
    std::fs::read_to_string(data.join("dev.err")).unwrap_or_default()
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    child.wait().expect("wait")
}

/// A port whose peer port (1000 lower) is also free enough for a test.
fn dev_port() -> u16 {
    loop {
        let p = free_port();
        if p > 2100 {
            break p;
        }
    }
}

#[test]
fn dev_runs_stops_and_comes_back_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dev_port();
    let (mut child, lines) = run_dev_until_ready(dir.path(), port);
    let url = format!("127.0.0.1:{port}");
    assert!(
        lines.iter().any(|l| l.contains(&format!("http://{url}"))),
        "{lines:?}"
    );
    assert!(
        lines.last().is_some_and(|l| l.starts_with("ready")),
        "{lines:?}"
    );
    assert_eq!(request(&url, "PUT", "/v1/kv/b/k", &[], b"kept").status, 204);
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));
    assert!(
        support::try_request(&url, "GET", "/v1/health", &[], b"").is_err(),
        "node still up"
    );

    let (mut child, _) = run_dev_until_ready(dir.path(), port);
    assert_eq!(request(&url, "GET", "/v1/kv/b/k", &[], b"").text(), "kept");
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));
}

/// A SIGTERM while the cluster is still forming stops every node and exits 0 (before, dev
/// caught signals only once it was ready: an earlier one killed it and left its nodes running).
#[test]
fn dev_stops_its_nodes_on_sigterm_during_start_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dev_port();
    let url = format!("127.0.0.1:{port}");
    // The first node's line: it is up; the others may be, the cluster is not formed yet.
    let (mut child, lines) = run_dev_until(dir.path(), port, &[], |l| l.starts_with("n1 "));
    assert!(!lines.iter().any(|l| l.starts_with("ready")), "{lines:?}");
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));
    assert!(
        support::try_request(&url, "GET", "/v1/health", &[], b"").is_err(),
        "n1 still up after dev exited: {}",
        dev_err(dir.path())
    );
}

/// `--regions 3 --nodes 2`: six nodes, two per region in zones of their own, two replicas per
/// region, every partition's preference region by region.
#[test]
fn dev_with_regions_places_replicas_in_every_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dev_port();
    let (mut child, lines) =
        run_dev_until(dir.path(), port, &["--regions", "3", "--nodes", "2"], |l| {
            l.starts_with("ready")
        });
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("ready: 6 node(s)")),
        "{lines:?}: {}",
        dev_err(dir.path())
    );
    let url = format!("127.0.0.1:{}", port + 5);
    let ring = request(&url, "GET", "/v1/ring", &[], b"").json();
    assert_eq!(
        ring["replication"],
        serde_json::json!({"r1": 2, "r2": 2, "r3": 2})
    );
    let region: std::collections::BTreeMap<String, String> = ring["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["id"].as_str().expect("id").into(),
                n["region"].as_str().expect("region").into(),
            )
        })
        .collect();
    assert_eq!(region["n1"], "r1");
    assert_eq!(region["n3"], "r2");
    assert_eq!(region["n6"], "r3");
    for p in ring["partitions"].as_array().expect("partitions") {
        let regions: Vec<&str> = p["preference"]
            .as_array()
            .expect("preference")
            .iter()
            .map(|n| region[n.as_str().expect("id")].as_str())
            .collect();
        assert_eq!(regions, ["r1", "r1", "r2", "r2", "r3", "r3"], "{p}");
    }
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));
}
