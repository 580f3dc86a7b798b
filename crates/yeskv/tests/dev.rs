//! `yeskv dev`: starts real node processes, prints their URLs and a ready line, stops them all on
//! SIGTERM, and a second run on the same data directory brings the data back.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use support::{bin, free_port, request};

fn run_dev_until_ready(data: &std::path::Path, port: u16) -> (std::process::Child, Vec<String>) {
    let mut child = Command::new(bin())
        .args([
            "dev",
            "--data-dir",
            &data.display().to_string(),
            "--base-port",
            &port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dev");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        let ready = line.starts_with("ready");
        lines.push(line);
        if ready {
            break;
        }
    }
    (child, lines)
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    child.wait().expect("wait")
}

#[test]
fn dev_runs_stops_and_comes_back_with_its_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A port whose peer port (1000 lower) is also free enough for a test.
    let port = loop {
        let p = free_port();
        if p > 2100 {
            break p;
        }
    };
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
    assert!(sigterm(&mut child).success());
    assert!(
        support::try_request(&url, "GET", "/v1/health", &[], b"").is_err(),
        "node still up"
    );

    let (mut child, _) = run_dev_until_ready(dir.path(), port);
    assert_eq!(request(&url, "GET", "/v1/kv/b/k", &[], b"").text(), "kept");
    assert!(sigterm(&mut child).success());
}
