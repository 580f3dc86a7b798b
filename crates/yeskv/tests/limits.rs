//! Limits on the client port, against a real node: a client that sends its whole body before
//! reading (Python's `urllib`) reads its `413` and reason; a body that stops arriving gets `408`;
//! connections trickling their headers (slowloris) are closed by the header timeout and do not
//! stop a normal client from writing; past `server.http_connections_max`, new connections are
//! closed at once and counted; unknown HTTP methods share one metrics label.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use support::{wait_until, Node};

fn node_with(dir: &std::path::Path, config: &str) -> Node {
    let cfg = dir.join("node.toml");
    std::fs::write(&cfg, config).expect("config");
    let cfg = cfg.display().to_string();
    Node::start(&dir.join("data"), &["--config", &cfg])
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let mut buf = [0u8; 512];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            // The server may answer (408, 413) before it closes: keep reading.
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn a_client_that_sends_its_whole_body_first_reads_its_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with(dir.path(), "[limits]\nvalue_bytes_max = 1048576\n");
    let script = r#"
import sys, urllib.request, urllib.error, json
url = "http://" + sys.argv[1] + "/v1/kv/b/big"
req = urllib.request.Request(url, data=b"x" * (4 << 20), method="PUT")
try:
    urllib.request.urlopen(req, timeout=30)
    print("accepted")
except urllib.error.HTTPError as e:
    print(e.code, json.loads(e.read())["error"])
"#;
    let out = Command::new("python3")
        .args(["-c", script, &node.http])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.starts_with("413 ") && stdout.contains("limit 1048576"),
        "{stdout}{stderr}"
    );
    assert_eq!(node.req("GET", "/v1/kv/b/big", &[], b"").status, 404);
}

#[test]
fn bodies_and_headers_that_stop_arriving_are_cut_off() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with(
        dir.path(),
        "[server]\nhttp_header_timeout_ms = 1000\nhttp_body_timeout_ms = 1000\n",
    );
    // A body announced as 100 bytes of which 10 come: 408, nothing written.
    let mut slow_body = TcpStream::connect(&node.http).expect("connects");
    write!(
        slow_body,
        "PUT /v1/kv/b/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789"
    )
    .expect("writes");
    slow_body
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut answer = [0u8; 64];
    let n = slow_body.read(&mut answer).expect("an answer");
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(node.req("GET", "/v1/kv/b/slow", &[], b"").status, 404);

    // Headers that never end, and a kept-alive connection left idle: both closed.
    let mut slow_headers = TcpStream::connect(&node.http).expect("connects");
    write!(slow_headers, "GET /v1/kv/b/k HTTP/1.1\r\nHost: x\r\n").expect("writes");
    let mut idle = TcpStream::connect(&node.http).expect("connects");
    let started = Instant::now();
    assert!(closed_within(&mut slow_headers, Duration::from_secs(10)));
    assert!(closed_within(&mut idle, Duration::from_secs(10)));
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn two_thousand_slow_connections_do_not_stop_a_normal_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with(dir.path(), "[server]\nhttp_header_timeout_ms = 3000\n");
    // 2,000 connections, each sending the start of a request and then one header byte at a
    // time, slower than any header timeout allows.
    let mut slow: Vec<TcpStream> = (0..2000)
        .map(|_| {
            let mut s = TcpStream::connect(&node.http).expect("connects");
            s.write_all(b"PUT /v1/kv/b/slow HTTP/1.1\r\nX-Slow: ")
                .expect("writes");
            s
        })
        .collect();
    let trickle_until = Instant::now() + Duration::from_secs(2);
    let mut latencies = Vec::new();
    let mut i = 0u32;
    while Instant::now() < trickle_until || latencies.len() < 200 {
        for s in slow.iter_mut().skip(i as usize % 50).step_by(50) {
            let _ = s.write_all(b"a");
        }
        let started = Instant::now();
        let resp = node.req("PUT", &format!("/v1/kv/b/k{i}"), &[], b"v");
        latencies.push(started.elapsed());
        assert_eq!(resp.status, 204, "{}", resp.text());
        i += 1;
    }
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    eprintln!(
        "{} writes beside 2000 slow connections: p50 {:?}, p99 {:?}",
        latencies.len(),
        latencies[latencies.len() / 2],
        p99
    );
    // The slow ones are closed by the header timeout (3 s from their start).
    for s in slow.iter_mut().take(100) {
        assert!(closed_within(s, Duration::from_secs(10)));
    }
}

#[test]
fn connections_past_the_cap_are_closed_and_unknown_methods_share_a_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = node_with(dir.path(), "[server]\nhttp_connections_max = 20\n");
    let mut open: Vec<TcpStream> = (0..30)
        .map(|_| TcpStream::connect(&node.http).expect("connects"))
        .collect();
    let closed = open
        .iter_mut()
        .filter_map(|s| closed_within(s, Duration::from_millis(300)).then_some(()))
        .count();
    assert!(closed >= 10, "{closed} of 30 closed with a cap of 20");
    drop(open);
    wait_until("room again", Duration::from_secs(10), || {
        support::try_request(&node.http, "GET", "/v1/health", &[], b"")
            .is_ok_and(|r| r.status == 200)
    });
    assert!(node.metric("yeskv_http_connections_refused_total") >= 10.0);

    for method in ["FOO", "BAR", "BAZ"] {
        let resp = node.req(method, "/v1/kv/b/k", &[], b"");
        assert_eq!(resp.status, 405, "{method}");
    }
    let metrics = node.req("GET", "/metrics", &[], b"").text();
    assert!(metrics.contains("method=\"OTHER\""), "{metrics}");
    for method in ["FOO", "BAR", "BAZ"] {
        assert!(!metrics.contains(&format!("method=\"{method}\"")));
    }
}
