//! The Redis-protocol listener end to end, with real processes: a 3-node cluster with `--resp`
//! on every node, driven by `redis-cli`, `redis-benchmark` and the Python `redis` client (all
//! installed by `scripts/setup`), raw sockets for malformed input, and a node with API keys and
//! TLS. `docs/resp.md` states the rules these tests hold the listener to.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};
use support::*;

/// `redis-cli`'s output (raw mode: values one per line, nil an empty line, errors as their
/// text; the last newline removed) for `args`
/// against `port`, with `extra` options (`-3`, `--tls` …) and `REDISCLI_AUTH` = `auth`.
fn cli_with(port: u16, extra: &[&str], auth: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new("redis-cli");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .args(args)
        .env_remove("REDISCLI_AUTH");
    if let Some(key) = auth {
        command.env("REDISCLI_AUTH", key);
    }
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("redis-cli not runnable ({e}): run scripts/setup"));
    assert!(
        out.status.success(),
        "redis-cli {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // One line per value: the last newline ends the last line (a nil is an empty line).
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

fn cli(port: u16, args: &[&str]) -> String {
    cli_with(port, &[], None, args)
}

/// Sets a bucket's properties over HTTP and waits until every node applied them.
fn set_bucket(cluster: &Cluster, bucket: &str, props: Value) {
    let path = format!("/v1/buckets/{bucket}");
    let headers = [("content-type", "application/json")];
    let r = cluster.nodes[0].req("PUT", &path, &headers, props.to_string().as_bytes());
    assert_eq!(r.status, 204, "{}", r.text());
    let want = cluster.nodes[0].req("GET", &path, &[], b"").json();
    for n in &cluster.nodes {
        wait_until(
            "every node applies the bucket",
            Duration::from_secs(20),
            || n.req("GET", &path, &[], b"").json() == want,
        );
    }
}

/// Sends `bytes` on a fresh connection and returns everything the node answers until it
/// closes the connection (or 10 s pass).
fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(bytes).expect("write");
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// Reads from `s` until `want` complete lines (CRLF-terminated) arrived.
fn read_lines(s: &mut TcpStream, want: usize) -> String {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while answer.windows(2).filter(|w| w == b"\r\n").count() < want {
        let n = s.read(&mut chunk).expect("read");
        assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&answer).into_owned()
}

/// Where `scripts/setup` installs the Python `redis` package.
fn python_path() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    Path::new(&home).join(".cache/yeskv-tools/python")
}

#[test]
fn redis_clients_on_a_three_node_cluster() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster = start_cluster_each(dir.path(), 3, &["a", "b", "c"], |i| {
        vec!["--resp".into(), format!("127.0.0.1:{}", ports[i])]
    });
    for &port in &ports {
        assert_eq!(cli(port, &["PING"]), "PONG");
        wait_until("the node serves keys", Duration::from_secs(30), || {
            cli(port, &["SET", "probe", "1"]) == "OK"
        });
    }
    let [p1, p2, p3] = [ports[0], ports[1], ports[2]];

    // Written through RESP on one node, read through RESP and HTTP on the others.
    assert_eq!(cli(p1, &["SET", "greeting", "hello"]), "OK");
    assert_eq!(cli(p2, &["GET", "greeting"]), "hello");
    let http = cluster.nodes[2].req("GET", "/v1/kv/default/greeting", &[], b"");
    assert_eq!((http.status, http.text()), (200, "hello".to_string()));
    assert_eq!(cli(p3, &["SET", "app:user:1", "ada"]), "OK");
    let http = cluster.nodes[0].req("GET", "/v1/kv/app/user%3A1", &[], b"");
    assert_eq!((http.status, http.text()), (200, "ada".to_string()));

    // Sequential SETs replace, whichever node each goes through: no siblings left.
    for (port, value) in [(p1, "v1"), (p2, "v2"), (p3, "v3"), (p1, "v4")] {
        assert_eq!(cli(port, &["SET", "seq", value]), "OK");
    }
    for &port in &ports {
        assert_eq!(cli(port, &["GET", "seq"]), "v4");
    }
    let http = cluster.nodes[1].req("GET", "/v1/kv/default/seq?r=all", &[], b"");
    assert_eq!((http.status, http.text()), (200, "v4".to_string()));

    // DEL, EXISTS, MSET, MGET.
    assert_eq!(cli(p2, &["EXISTS", "greeting", "nope"]), "1");
    assert_eq!(cli(p2, &["DEL", "greeting", "nope"]), "1");
    assert_eq!(cli(p3, &["EXISTS", "greeting"]), "0");
    assert_eq!(cli(p1, &["GET", "greeting"]), "");
    assert_eq!(cli(p1, &["MSET", "m:a", "1", "m:b", "2"]), "OK");
    assert_eq!(cli(p2, &["MGET", "m:a", "m:b", "m:c"]), "1\n2\n");

    // EXPIRE, TTL, PERSIST; EX and PX on SET; an expired key reads as missing.
    assert_eq!(cli(p1, &["SET", "t", "v"]), "OK");
    assert_eq!(cli(p2, &["TTL", "t"]), "-1");
    assert_eq!(cli(p2, &["TTL", "missing"]), "-2");
    assert_eq!(cli(p3, &["EXPIRE", "t", "100"]), "1");
    let ttl: i64 = cli(p1, &["TTL", "t"]).parse().expect("a number");
    assert!((95..=100).contains(&ttl), "{ttl}");
    assert_eq!(cli(p1, &["EXPIRE", "t", "50", "NX"]), "0");
    assert_eq!(cli(p2, &["PERSIST", "t"]), "1");
    assert_eq!(cli(p3, &["TTL", "t"]), "-1");
    assert_eq!(cli(p3, &["GET", "t"]), "v");
    assert_eq!(cli(p1, &["SET", "px", "v", "PX", "1500"]), "OK");
    let pttl: i64 = cli(p2, &["PTTL", "px"]).parse().expect("a number");
    assert!(
        pttl > 0 && pttl <= 2000,
        "PX rounds up to whole seconds: {pttl}"
    );
    assert_eq!(cli(p1, &["SET", "short", "v", "EX", "1"]), "OK");
    wait_until(
        "an expired key reads as missing",
        Duration::from_secs(15),
        || cli(p2, &["GET", "short"]).is_empty(),
    );
    assert_eq!(cli(p3, &["TTL", "short"]), "-2");

    // Siblings made over HTTP (two blind PUTs) are never answered as one value.
    for value in ["a", "b"] {
        let r = cluster.nodes[0].req("PUT", "/v1/kv/default/sib", &[], value.as_bytes());
        assert_eq!(r.status, 204, "{}", r.text());
    }
    let sib = cli(p2, &["GET", "sib"]);
    assert!(
        sib.starts_with("SIBLINGS key has 2 concurrent values")
            && sib.contains("/v1/kv/default/sib"),
        "{sib}"
    );
    assert!(cli(p3, &["MGET", "seq", "sib"]).starts_with("SIBLINGS"));
    // Once every replica holds both, a SET replaces them.
    wait_until("replicas converge", Duration::from_secs(30), || {
        converged(&cluster.addrs())
    });
    assert_eq!(cli(p3, &["SET", "sib", "resolved"]), "OK");
    assert_eq!(cli(p1, &["GET", "sib"]), "resolved");

    // Data types: counter, set and cart buckets.
    set_bucket(&cluster, "c", json!({"datatype": "counter"}));
    set_bucket(&cluster, "s", json!({"datatype": "set"}));
    set_bucket(&cluster, "cart", json!({"datatype": "cart"}));
    assert_eq!(cli(p1, &["INCRBY", "c:hits", "5"]), "5");
    assert_eq!(cli(p2, &["INCR", "c:hits"]), "6");
    assert_eq!(cli(p3, &["DECRBY", "c:hits", "2"]), "4");
    assert_eq!(cli(p1, &["GET", "c:hits"]), "4");
    let http = cluster.nodes[1].req("GET", "/v1/dt/c/hits", &[], b"");
    assert_eq!(http.json()["value"], 4, "{}", http.text());
    assert_eq!(cli(p1, &["SADD", "s:tags", "a", "b"]), "2");
    assert_eq!(cli(p2, &["SADD", "s:tags", "b", "c"]), "1");
    assert_eq!(cli(p3, &["SMEMBERS", "s:tags"]), "a\nb\nc");
    assert_eq!(cli(p1, &["SREM", "s:tags", "a", "z"]), "1");
    assert_eq!(cli(p2, &["SCARD", "s:tags"]), "2");
    assert_eq!(cli(p2, &["SISMEMBER", "s:tags", "c"]), "1");
    assert_eq!(
        cli(p1, &["HSET", "cart:ann", "apple", "2", "pear", "1"]),
        "2"
    );
    assert_eq!(cli(p2, &["HINCRBY", "cart:ann", "apple", "3"]), "5");
    assert_eq!(cli(p3, &["HINCRBY", "cart:ann", "apple", "-1"]), "4");
    assert_eq!(cli(p1, &["HGETALL", "cart:ann"]), "apple\n4\npear\n1");
    assert_eq!(cli(p2, &["HDEL", "cart:ann", "pear", "plum"]), "1");
    assert_eq!(cli(p3, &["HGET", "cart:ann", "pear"]), "");
    let http = cluster.nodes[0].req("GET", "/v1/dt/cart/ann", &[], b"");
    assert_eq!(http.json()["items"], json!({"apple": 4}), "{}", http.text());
    assert!(cli(p1, &["INCR", "seq"]).starts_with("WRONGTYPE"));
    assert!(cli(p1, &["SADD", "c:hits", "x"]).starts_with("WRONGTYPE"));
    assert!(cli(p1, &["SET", "c:hits", "1"]).starts_with("WRONGTYPE"));

    // Connection commands.
    let info = cli(p2, &["INFO"]);
    assert!(
        info.contains("node_id:n2") && info.contains("role:yeskv"),
        "{info}"
    );
    let hello = cli_with(p3, &["-3"], None, &["HELLO", "3"]);
    assert!(
        hello.contains("proto") && hello.contains("yeskv"),
        "{hello}"
    );
    assert!(cli(p1, &["SELECT", "1"]).contains("YESKV.BUCKET"));
    assert_eq!(
        cli(p1, &["NOSUCH", "a"]).trim_end_matches('\n'),
        "ERR unknown command 'NOSUCH', with args beginning with: 'a' "
    );
    assert_eq!(
        cli(p1, &["GET"]).trim_end_matches('\n'),
        "ERR wrong number of arguments for 'get' command"
    );

    python_client(&ports);
    benchmark(&cluster, p2);
    bad_input(p1, p3);
    for node in &cluster.nodes {
        assert!(node.metric("yeskv_resp_commands_total{command=\"set\"}") > 0.0);
    }
}

/// The Python client, RESP2 and RESP3: a pipeline of 1000 commands and the data types.
fn python_client(ports: &[u16]) {
    let python = python_path();
    let found = Command::new("python3")
        .args(["-c", "import redis"])
        .env("PYTHONPATH", &python)
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!(
            "SKIPPED: the Python redis package is not in {} (scripts/setup installs it)",
            python.display()
        );
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/resp/client.py");
    for (port, protocol) in [(ports[0], "2"), (ports[1], "3")] {
        let out = Command::new("python3")
            .arg(&script)
            .args([&port.to_string(), protocol])
            .env("PYTHONPATH", &python)
            .output()
            .expect("python3");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok",
            "RESP{protocol}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// `redis-benchmark -P 16` completes without an error answer, and what it wrote is readable.
fn benchmark(cluster: &Cluster, port: u16) {
    let node = &cluster.nodes[1];
    let errors_before = node.metric("yeskv_resp_errors_total");
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(["-t", "set,get", "-n", "20000", "-P", "16", "-q", "-d", "8"])
        .output()
        .unwrap_or_else(|e| panic!("redis-benchmark not runnable ({e}): run scripts/setup"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("SET: ") && text.contains("GET: ") && !text.contains("rror"),
        "{text}"
    );
    assert_eq!(
        node.metric("yeskv_resp_errors_total"),
        errors_before,
        "{text}"
    );
    assert!(node.metric("yeskv_resp_commands_total{command=\"set\"}") >= 20000.0);
    // It writes `key:__rand_int__` (bucket `key`) with 8 bytes of its data: the same through
    // RESP and HTTP on another node.
    let value = cli(port, &["GET", "key:__rand_int__"]);
    assert_eq!(value.len(), 8, "{value:?}");
    let http = cluster.nodes[0].req("GET", "/v1/kv/key/__rand_int__", &[], b"");
    assert_eq!((http.status, http.text()), (200, value));
}

/// Malformed and oversized input is answered with an error and changes nothing; pipelined
/// commands split anywhere are answered in order.
fn bad_input(port: u16, other: u16) {
    assert_eq!(cli(port, &["SET", "kept", "before"]), "OK");
    // A bulk past the command limit: refused from its header, the connection closed.
    let answer = raw_exchange(port, b"*3\r\n$3\r\nSET\r\n$4\r\nkept\r\n$99999999\r\nxx");
    assert_eq!(answer, "-ERR Protocol error: invalid bulk length\r\n");
    // Not a bulk string where one belongs.
    let answer = raw_exchange(port, b"*3\r\n$3\r\nSET\r\n$4\r\nkept\r\n:5\r\n");
    assert_eq!(answer, "-ERR Protocol error: expected '$', got ':'\r\n");
    // A nesting that would overflow a recursive decoder's stack.
    let answer = raw_exchange(port, &b"*1\r\n".repeat(100_000));
    assert_eq!(answer, "-ERR Protocol error: expected '$', got '*'\r\n");
    // The commands before a malformed one are answered; nothing after it runs.
    let answer = raw_exchange(port, b"PING\r\n*1\r\n$x\r\nSET kept after\r\n");
    assert_eq!(
        answer,
        "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"
    );
    // A value over limits.value_bytes_max (1 MiB), within a command's slack: an error, the
    // connection stays.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let value = vec![b'x'; (1 << 20) + 1];
    let mut set = format!("*3\r\n$3\r\nSET\r\n$4\r\nkept\r\n${}\r\n", value.len()).into_bytes();
    set.extend_from_slice(&value);
    set.extend_from_slice(b"\r\n");
    s.write_all(&set).expect("write");
    let answer = read_lines(&mut s, 1);
    assert!(
        answer.starts_with("-ERR value is 1048577 bytes, limit 1048576"),
        "{answer}"
    );
    // A pipeline cut in the middle of a bulk string, sent in two pieces.
    let pipeline = b"*3\r\n$3\r\nSET\r\n$2\r\npp\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$2\r\npp\r\n";
    s.write_all(&pipeline[..25]).expect("write");
    s.flush().expect("flush");
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&pipeline[25..]).expect("write");
    assert_eq!(read_lines(&mut s, 3), "+OK\r\n$5\r\nhello\r\n");
    // Nothing of the refused commands was written.
    assert_eq!(cli(other, &["GET", "kept"]), "before");
}

/// A node with API keys and TLS: the RESP port speaks TLS, needs `AUTH` before anything, and
/// applies the key's bucket permissions.
#[test]
fn resp_with_api_keys_and_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yeskv = |key: Option<&str>, args: &[&str]| -> String {
        let mut command = Command::new(bin());
        command
            .args(args)
            .env_remove("YESKV_KEY")
            .env_remove("YESKV_CA");
        if let Some(key) = key {
            command.env("YESKV_KEY", key);
        }
        let out = command.output().expect("yeskv");
        assert!(
            out.status.success(),
            "yeskv {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let path = |p: &Path| p.to_str().expect("utf-8").to_string();
    let ca_dir = dir.path().join("ca");
    yeskv(None, &["cert", "init", "--dir", &path(&ca_dir)]);
    let certs = dir.path().join("certs");
    yeskv(
        None,
        &[
            "cert",
            "issue",
            "--ca-dir",
            &path(&ca_dir),
            "--node-id",
            "n1",
            "--out",
            &path(&certs),
        ],
    );
    let ca = ca_dir.join("ca.pem");
    let admin_file = dir.path().join("admin.key");
    let (http, resp) = (free_port(), free_port());
    let mut child: Child = Command::new(bin())
        .args([
            "server",
            "--node-id",
            "n1",
            "--data-dir",
            &path(&dir.path().join("n1")),
        ])
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--peer", &format!("127.0.0.1:{}", free_port())])
        .args(["--resp", &format!("127.0.0.1:{resp}"), "--auth"])
        .args(["--admin-key-file", &path(&admin_file)])
        .args(["--tls-cert", &path(&certs.join("node.pem"))])
        .args(["--tls-key", &path(&certs.join("node.key"))])
        .args(["--tls-ca", &path(&ca)])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    struct Kill<'a>(&'a mut Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _kill = Kill(&mut child);
    let tls = ["--tls", "--cacert", ca.to_str().expect("utf-8")];
    let as_key = |key: Option<&str>, args: &[&str]| cli_with(resp, &tls, key, args);
    let admin = admin_key(&admin_file, Duration::from_secs(60));
    wait_until(
        "the admin key works over RESP",
        Duration::from_secs(60),
        || {
            Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &resp.to_string()])
                .args(tls)
                .args(["SET", "b:k", "v"])
                .env("REDISCLI_AUTH", &admin)
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "OK")
        },
    );
    // Plain text on the TLS port gets no answer (the handshake fails).
    assert!(!raw_exchange(resp, b"PING\r\n").contains("PONG"));
    // No key: NOAUTH for everything but AUTH, HELLO … AUTH and QUIT.
    assert_eq!(
        as_key(None, &["GET", "b:k"]).trim_end_matches('\n'),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        as_key(None, &["PING"]).trim_end_matches('\n'),
        "NOAUTH Authentication required."
    );
    assert!(as_key(None, &["HELLO", "3"]).starts_with("NOAUTH HELLO must be called"));
    assert!(as_key(None, &["AUTH", "ykv_wrong"]).starts_with("WRONGPASS"));
    // A read-only key reads, and cannot write.
    let reader = yeskv(
        Some(&admin),
        &[
            "--ca",
            &path(&ca),
            "key",
            "create",
            "reader",
            "--bucket",
            "b=read",
            "--node",
            &format!("https://127.0.0.1:{http}"),
        ],
    );
    assert!(reader.starts_with("ykv_"), "{reader}");
    assert_eq!(as_key(Some(&reader), &["GET", "b:k"]), "v");
    assert_eq!(
        as_key(Some(&reader), &["SET", "b:k", "w"]).trim_end_matches('\n'),
        "NOPERM this API key may not write bucket 'b'"
    );
    assert!(as_key(Some(&reader), &["GET", "other:k"]).starts_with("NOPERM"));
    let hello = as_key(None, &["HELLO", "3", "AUTH", "reader", &reader]);
    assert!(hello.contains("yeskv"), "{hello}");
    assert_eq!(as_key(Some(&admin), &["GET", "b:k"]), "v");
}
