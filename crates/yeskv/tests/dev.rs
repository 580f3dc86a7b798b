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
/// region, every partition's preference region by region. With `--wan-delay-ms`, every node
/// holds a WAN rule to each other region, and a write that must reach other regions
/// (`w=each_quorum`) waits for it.
#[test]
fn dev_with_regions_places_replicas_in_every_region() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dev_port();
    let flags = [
        "--regions",
        "3",
        "--nodes",
        "2",
        "--wan-delay-ms",
        "40",
        "--wan-jitter-ms",
        "5",
    ];
    let (mut child, lines) = run_dev_until(dir.path(), port, &flags, |l| l.starts_with("ready"));
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

    // The WAN: each node's rules name the two other regions, both ways.
    for (node, to) in [(0, ["r2", "r3"]), (2, ["r1", "r3"]), (5, ["r1", "r2"])] {
        let url = format!("127.0.0.1:{}", port + node);
        let chaos = request(&url, "GET", "/v1/admin/chaos", &[], b"").json();
        let rules = chaos["wan"].as_array().expect("wan rules");
        let names: Vec<&str> = rules
            .iter()
            .map(|r| r["to"].as_str().expect("to"))
            .collect();
        assert_eq!(names, to, "n{}: {chaos}", node + 1);
        assert!(
            rules
                .iter()
                .all(|r| r["delay_ms"] == 40 && r["jitter_ms"] == 5 && r["loss"] == 0.0),
            "{chaos}"
        );
        assert_eq!(chaos["delay_ms"], 0, "{chaos}");
    }
    // n1 holds every key of r1 (two replicas on two nodes), and an each_quorum write needs the
    // replicas of r2 and r3: it waits at least one WAN delay.
    let n1 = format!("127.0.0.1:{port}");
    for i in 0..3 {
        let started = std::time::Instant::now();
        let put = request(
            &n1,
            "PUT",
            &format!("/v1/kv/wan/k{i}?w=each_quorum"),
            &[],
            b"v",
        );
        assert_eq!(put.status, 204, "{}", put.text());
        let took = started.elapsed();
        assert!(
            took >= std::time::Duration::from_millis(40),
            "an each_quorum write took {took:?} with 40 ms between regions"
        );
    }
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));
}

/// `yeskv dev --secure`: HTTPS with keys required, from a CA, node certificates, a keyring and an
/// admin key it creates in the data directory (secrets 0600); the CLI reaches it the way the
/// ready line says (`YESKV_NODE`, `YESKV_CA`, `YESKV_KEY`), plain HTTP and no key do not. A
/// second run reuses the same material and the data comes back.
#[test]
fn dev_secure_serves_https_with_keys_from_its_data_directory() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = dev_port();
    let ready = |l: &str| l.starts_with("ready");
    let (mut child, lines) = run_dev_until(dir.path(), port, &["--secure"], ready);
    let url = format!("https://127.0.0.1:{port}");
    assert!(
        lines
            .last()
            .is_some_and(|l| l.starts_with("ready: 3 node(s)")),
        "{lines:?}: {}",
        dev_err(dir.path())
    );
    assert!(lines.iter().any(|l| l.contains(&url)), "{lines:?}");
    let ca = dir.path().join("ca.pem");
    let admin_key_file = dir.path().join("admin.key");
    for secret in [
        admin_key_file.clone(),
        dir.path().join("ca.key"),
        dir.path().join("cluster.keys"),
        dir.path().join("certs/n2/node.key"),
    ] {
        let mode = std::fs::metadata(&secret)
            .expect("exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{}", secret.display());
    }
    // What the ready lines tell the user to run.
    let text = lines.join("\n");
    for said in [
        format!("YESKV_CA={}", ca.display()),
        format!("$(cat {})", admin_key_file.display()),
        format!("curl --cacert {}", ca.display()),
    ] {
        assert!(text.contains(&said), "{said} not in {text}");
    }
    let admin = std::fs::read_to_string(&admin_key_file).expect("admin key");
    let cli = |key: Option<&str>, args: &[&str]| {
        let mut cmd = Command::new(bin());
        cmd.args(args)
            .env("YESKV_NODE", &url)
            .env("YESKV_CA", &ca)
            .env_remove("YESKV_KEY");
        if let Some(key) = key {
            cmd.env("YESKV_KEY", key.trim());
        }
        cmd.output().expect("run the CLI")
    };
    let put = cli(Some(&admin), &["put", "demo", "greeting", "hello"]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let get = cli(Some(&admin), &["get", "demo", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");
    // No key: refused with a 401; plain HTTP: no answer.
    let refused = cli(None, &["get", "demo", "greeting"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let plain = format!("127.0.0.1:{port}");
    assert!(
        !support::try_request(&plain, "GET", "/v1/health", &[], b"").is_ok_and(|r| r.status == 200),
        "plain HTTP answered"
    );
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));

    let (mut child, lines) = run_dev_until(dir.path(), port, &["--secure"], ready);
    assert!(
        lines.last().is_some_and(|l| l.starts_with("ready")),
        "{lines:?}: {}",
        dev_err(dir.path())
    );
    assert_eq!(
        std::fs::read_to_string(&admin_key_file).expect("admin key"),
        admin,
        "the admin key was replaced"
    );
    let get = cli(Some(&admin), &["get", "demo", "greeting"]);
    assert_eq!(String::from_utf8_lossy(&get.stdout).trim(), "hello");
    let status = sigterm(&mut child);
    assert!(status.success(), "{status}: {}", dev_err(dir.path()));
}
