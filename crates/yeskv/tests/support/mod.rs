//! Test support: start real `yeskv server` processes on loopback and talk HTTP/1.1 to them with
//! a tiny blocking client (one connection per request), so tests see exact statuses and headers.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use yeskv_client::http1::{self, Http1Response};

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_yeskv")
}

/// A free loopback port (bound then released).
///
/// Drawn below the kernel's ephemeral range (32768 and up by default), not from it: a node
/// restarted on its port after `kill -9` must not find the port taken meanwhile as the local
/// end of some outgoing connection (seen once: "Address already in use" on a restart).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Test binaries run side by side: each starts at its own offset.
    let base = std::process::id().wrapping_mul(7_919);
    for _ in 0..COUNT {
        let i = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (FIRST + base.wrapping_add(i.wrapping_mul(97)) % COUNT) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + COUNT)
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// An HTTP response: the shared HTTP/1.1 reader's, with what the tests ask of it.
#[derive(Debug, Clone)]
pub struct Resp(pub Http1Response);

impl std::ops::Deref for Resp {
    type Target = Http1Response;
    fn deref(&self) -> &Http1Response {
        &self.0
    }
}

impl Resp {
    pub fn context(&self) -> Option<String> {
        self.header("x-causal-context").map(str::to_string)
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// Sends one request; `Err` on connection failure (e.g. the node is down).
pub fn try_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Resp> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = http1::request_bytes(method, path, addr, headers, body);
    let head_len = request.len() - body.len();
    s.write_all(&request[..head_len])?;
    // A server may answer (e.g. 413 from Content-Length) and close before the whole body is
    // sent: a failed body write is fine as long as a response can be read.
    let body_written = s.write_all(body);
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() {
        body_written?;
        read?;
    }
    Http1Response::parse(&raw)
        .map(Resp)
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// Sends one request and panics on connection failure.
pub fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_request(addr, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} {path} on {addr}: {e}"))
}

/// When set, nodes started from then on log to `{dir}/{data dir name}.log` instead of the
/// test's stderr (for a test whose nodes are expected to log loudly).
pub static NODE_LOG_DIR: std::sync::Mutex<Option<PathBuf>> = std::sync::Mutex::new(None);

/// A running node process.
pub struct Node {
    pub child: Option<Child>,
    pub http: String,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    /// The `yeskv` binary it runs: this build's, or another release's (the upgrade test).
    pub program: PathBuf,
    /// Where its log (stderr) goes, appended across restarts; `None`: the test's stderr.
    pub log: Option<PathBuf>,
}

impl Node {
    /// Starts `yeskv server` with a fresh port and the given extra args, waits for health.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        Node::start_program(Path::new(bin()), data_dir, extra)
    }

    /// [`Node::start`] of the `yeskv` binary at `program`.
    pub fn start_program(program: &Path, data_dir: &Path, extra: &[&str]) -> Node {
        let port = free_port();
        let http = format!("127.0.0.1:{port}");
        let has = |flag: &str| extra.contains(&flag);
        let mut args: Vec<String> = vec![
            "server".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--http".into(),
            http.clone(),
        ];
        if !has("--node-id") {
            args.extend(["--node-id".into(), "n1".into()]);
        }
        if !has("--peer") {
            args.extend(["--peer".into(), format!("127.0.0.1:{}", free_port())]);
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut node = Node {
            child: None,
            http,
            data_dir: data_dir.to_path_buf(),
            args,
            program: program.to_path_buf(),
            log: NODE_LOG_DIR.lock().expect("lock").as_ref().map(|dir| {
                let name = data_dir.file_name().unwrap_or_default().to_string_lossy();
                dir.join(format!("{name}.log"))
            }),
        };
        node.spawn();
        node
    }

    fn spawn(&mut self) {
        let stderr = match &self.log {
            Some(path) => Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .unwrap_or_else(|e| panic!("log file {}: {e}", path.display())),
            ),
            None => Stdio::inherit(),
        };
        let child = Command::new(&self.program)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn yeskv server");
        self.child = Some(child);
        let http = self.http.clone();
        let mut exited = None;
        wait_until("node health", Duration::from_secs(60), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    exited = Some(st);
                    return true;
                }
            }
            matches!(try_request(&http, "GET", "/v1/health", &[], b""), Ok(r) if r.status == 200)
        });
        if let Some(st) = exited {
            panic!("node exited during start: {st}");
        }
    }

    /// Restarts the node with the same arguments (same port and data dir).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the node first");
        self.spawn();
    }

    /// SIGKILL, no warning.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        c.wait().expect("wait")
    }

    pub fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
        request(&self.http, method, path, headers, body)
    }

    /// Value of a metric line starting with `prefix` in `/metrics` (summing matching series).
    pub fn metric(&self, prefix: &str) -> f64 {
        let text = self.req("GET", "/metrics", &[], b"").text();
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A cluster of real node processes.
pub struct Cluster {
    pub nodes: Vec<Node>,
    /// The layout version the cluster was formed with.
    pub version: u64,
}

/// Starts `count` nodes (zones assigned round-robin from `zones`, each `ZONE` or `REGION/ZONE`;
/// `extra` args for every node,
/// e.g. `--config FILE`), forms the cluster the operator's way (seed, staged join, commit) and
/// waits until every node applied the layout and sees every other up.
pub fn start_cluster(dir: &Path, count: usize, zones: &[&str], extra: &[&str]) -> Cluster {
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    start_cluster_each(dir, count, zones, |_| extra.clone())
}

/// [`start_cluster`] with each node's extra args from `extra_of(index)` (e.g. a port of its
/// own for `--resp`).
pub fn start_cluster_each(
    dir: &Path,
    count: usize,
    zones: &[&str],
    extra_of: impl Fn(usize) -> Vec<String>,
) -> Cluster {
    start_cluster_program(Path::new(bin()), dir, count, zones, extra_of)
}

/// [`start_cluster_each`] of nodes running the `yeskv` binary at `program`.
pub fn start_cluster_program(
    program: &Path,
    dir: &Path,
    count: usize,
    zones: &[&str],
    extra_of: impl Fn(usize) -> Vec<String>,
) -> Cluster {
    let peer1 = format!("127.0.0.1:{}", free_port());
    let mut nodes = Vec::new();
    for i in 0..count {
        let id = format!("n{}", i + 1);
        let data = dir.join(&id);
        // A zone `REGION/ZONE` puts the node in that region too.
        let zone = zones[i % zones.len()];
        let mut args: Vec<String> = vec!["--node-id".into(), id.clone()];
        match zone.split_once('/') {
            Some((region, zone)) => args.extend([
                "--region".into(),
                region.into(),
                "--zone".into(),
                zone.into(),
            ]),
            None => args.extend(["--zone".into(), zone.into()]),
        }
        if i == 0 {
            args.extend(["--peer".into(), peer1.clone()]);
        } else {
            args.extend(["--seed".into(), peer1.clone()]);
        }
        args.extend(extra_of(i));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nodes.push(Node::start_program(program, &data, &args));
    }
    let first = nodes[0].http.clone();
    let joiners: Vec<String> = (2..=count).map(|i| format!("n{i}")).collect();
    if !joiners.is_empty() {
        let body = serde_json::json!({ "nodes": joiners }).to_string();
        wait_until(
            "newcomers in n1's gossip view",
            Duration::from_secs(20),
            || request(&first, "POST", "/v1/cluster/join", &[], body.as_bytes()).status == 200,
        );
        let commit = request(&first, "POST", "/v1/cluster/commit", &[], b"");
        assert_eq!(commit.status, 200, "{}", commit.text());
    }
    let version = request(&first, "GET", "/v1/ring", &[], b"").json()["version"]
        .as_u64()
        .expect("version");
    let cluster = Cluster { nodes, version };
    cluster.wait_all_up(version, Duration::from_secs(30));
    cluster
}

impl Cluster {
    /// Waits until every running node applied layout `version`, sees every member up and no
    /// partition in transfer (every new holder has received its partitions).
    pub fn wait_all_up(&self, version: u64, timeout: Duration) {
        let count = self.nodes.len();
        for n in self.nodes.iter().filter(|n| n.child.is_some()) {
            wait_until(
                "every node applies the layout and sees all up",
                timeout,
                || {
                    let ring = n.req("GET", "/v1/ring", &[], b"");
                    let status = n.req("GET", "/v1/status", &[], b"").json();
                    let members = status["members"].as_array().cloned().unwrap_or_default();
                    ring.status == 200
                        && ring.json()["version"].as_u64() == Some(version)
                        && members.len() == count
                        && members.iter().all(|m| m["status"] == "up")
                        && status["transfers"]["partitions_pending"] == 0
                },
            );
        }
    }

    /// The HTTP addresses of the nodes.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.http.clone()).collect()
    }

    /// The HTTP addresses of the nodes that are running.
    pub fn running_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.http.clone())
            .collect()
    }
}

/// `Bearer KEY`, the value of an `Authorization` header.
pub fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

/// Starts `ids` with `extra` args: the first creates the cluster (and gets `first_extra`),
/// the others seed from it (the first node's `--peer` is in its `args`).
pub fn start_nodes(dir: &Path, ids: &[&str], extra: &[&str], first_extra: &[&str]) -> Vec<Node> {
    let peer1 = format!("127.0.0.1:{}", free_port());
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let mut args = vec!["--node-id", id];
        if i == 0 {
            args.extend(["--peer", &peer1]);
            args.extend(first_extra);
        } else {
            args.extend(["--seed", &peer1]);
        }
        args.extend(extra);
        nodes.push(Node::start(&dir.join(id), &args));
    }
    nodes
}

/// Joins `n2..` with the admin key and waits until every node applied the layout and sees
/// every other up.
pub fn form(nodes: &[Node], admin: &str) {
    let auth = bearer(admin);
    let headers = [("authorization", auth.as_str())];
    let first = &nodes[0];
    let joiners: Vec<String> = (2..=nodes.len()).map(|i| format!("n{i}")).collect();
    let body = serde_json::json!({ "nodes": joiners }).to_string();
    wait_until(
        "newcomers in n1's gossip view",
        Duration::from_secs(30),
        || {
            first
                .req("POST", "/v1/cluster/join", &headers, body.as_bytes())
                .status
                == 200
        },
    );
    let plan = first.req("GET", "/v1/cluster/plan", &headers, b"");
    assert_eq!(plan.status, 200, "{}", plan.text());
    let commit = first.req("POST", "/v1/cluster/commit", &headers, b"");
    assert_eq!(commit.status, 200, "{}", commit.text());
    let version = commit.json()["version"].as_u64().unwrap_or(2);
    for n in nodes {
        wait_until(
            "every node applies the layout, all up",
            Duration::from_secs(60),
            || {
                let status = n.req("GET", "/v1/status", &headers, b"").json();
                let members = status["members"].as_array().cloned().unwrap_or_default();
                status["layout_version"].as_u64() >= Some(version)
                    && members.len() == nodes.len()
                    && members.iter().all(|m| m["status"] == "up")
                    && n.req("GET", "/v1/health", &[], b"").status == 200
            },
        );
    }
}

/// `len` incompressible bytes (xorshift), so a value's bytes appear verbatim in an SST file.
pub fn incompressible(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 32) as u8
        })
        .collect()
}

/// Flips a byte inside `needle` in every SST file of the database `db` that holds it (the node
/// must be stopped); returns how many files were changed.
pub fn flip_in_sst(db: &Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for entry in std::fs::read_dir(db).expect("db dir") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("sst") {
            continue;
        }
        let mut bytes = std::fs::read(&path).expect("read sst");
        if let Some(pos) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[pos + 10] ^= 0xff;
            std::fs::write(&path, &bytes).expect("write sst");
            flipped += 1;
        }
    }
    flipped
}

/// partition → (node → anti-entropy root, `None` while its tree is not ready) over the nodes at
/// `addrs`, from their `/v1/status`.
pub fn roots(addrs: &[String]) -> BTreeMap<u64, BTreeMap<String, Option<String>>> {
    let mut out: BTreeMap<u64, BTreeMap<String, Option<String>>> = BTreeMap::new();
    for addr in addrs {
        let s = request(addr, "GET", "/v1/status", &[], b"").json();
        let node = s["node"].as_str().unwrap_or_default().to_string();
        for p in s["partitions"].as_array().into_iter().flatten() {
            out.entry(p["id"].as_u64().expect("id"))
                .or_default()
                .insert(node.clone(), p["merkle_root"].as_str().map(str::to_string));
        }
    }
    out
}

/// Every partition has 3 replicas among the nodes at `addrs`, reporting one and the same root.
pub fn converged(addrs: &[String]) -> bool {
    converged_over(addrs, 3)
}

/// Every partition has `replicas` replicas among the nodes at `addrs`, reporting one and the
/// same root.
pub fn converged_over(addrs: &[String], replicas: usize) -> bool {
    roots(addrs).values().all(|by_node| {
        let first = by_node.values().next().cloned().flatten();
        by_node.len() == replicas && first.is_some() && by_node.values().all(|r| *r == first)
    })
}

/// The visible sibling values of a JSON-mode read (`Accept: application/json`; tombstones left
/// out); none unless it answered 200.
pub fn sibling_values(r: &Resp) -> Vec<String> {
    use base64::Engine as _;
    if r.status != 200 {
        return Vec::new();
    }
    r.json()["siblings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["value"].as_str())
        .filter_map(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
        .map(|v| String::from_utf8_lossy(&v).into_owned())
        .collect()
}

/// Waits (up to `timeout`) for the admin key a node started with `--admin-key-file FILE`
/// writes to `file`, and returns it.
pub fn admin_key(file: &Path, timeout: Duration) -> String {
    wait_until("the admin key file", timeout, || file.exists());
    std::fs::read_to_string(file)
        .expect("admin key")
        .trim()
        .to_string()
}
