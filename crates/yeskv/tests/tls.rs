//! TLS end to end, with real processes: certificates made by `yeskv cert`, a 3-node cluster
//! serving HTTPS and talking mutual TLS, the CLI with `--ca`, a peer claiming another node's id
//! refused at the handshake, plain HTTP refused, a node of another CA kept out, certificate
//! reload on SIGHUP, and the secure-by-default rule. (The RPC identity checks are also tested
//! one by one over real TCP in `crates/yeskv-tls/tests/mtls.rs`.)

mod support;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{bin, free_port, try_request, wait_until, Resp};
use yeskv_client::http1::{request_bytes, Http1Response};
use yeskv_node::buckets::BucketRequest;
use yeskv_node::peer::{PeerRequest, PeerResponse};

fn yeskv(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env_remove("YESKV_CA")
        .env_remove("YESKV_NODE")
        .output()
        .expect("run yeskv")
}

fn ok(args: &[&str]) -> String {
    let out = yeskv(args);
    assert!(
        out.status.success(),
        "yeskv {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// One HTTPS request (blocking rustls, trusting `ca`): the response and the serial of the
/// certificate the node served.
fn https(
    ca: &Path,
    addr: &str,
    method: &str,
    target: &str,
    body: &[u8],
) -> std::io::Result<(Resp, String)> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("ca cert")).expect("root");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").expect("name");
    let mut connection =
        rustls::ClientConnection::new(Arc::new(config), name).map_err(std::io::Error::other)?;
    let mut tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut tls = rustls::Stream::new(&mut connection, &mut tcp);
    tls.write_all(&request_bytes(method, target, addr, &[], body))?;
    let mut raw = Vec::new();
    match tls.read_to_end(&mut raw) {
        Ok(_) => {}
        // The node closes without close_notify after `Connection: close`; the body is whole.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
        Err(e) => return Err(e),
    }
    let serial = connection
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|leaf| yeskv_tls::identity::serial_of(leaf).expect("serial"))
        .unwrap_or_default();
    let response = Http1Response::parse(&raw).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok((Resp(response), serial))
}

/// A node process with TLS (the support's `Node` speaks plain HTTP).
struct TlsNode {
    child: Child,
    http: String,
    peer: String,
}

impl Drop for TlsNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TlsNode {
    fn start(dir: &Path, id: &str, certs: &Path, ca: &Path, seed: Option<&str>) -> TlsNode {
        let http = format!("127.0.0.1:{}", free_port());
        let peer = format!("127.0.0.1:{}", free_port());
        let mut args: Vec<String> = [
            "server",
            "--node-id",
            id,
            "--data-dir",
            path(&dir.join(id)),
            "--http",
            &http,
            "--peer",
            &peer,
            "--tls-cert",
            path(&certs.join("node.pem")),
            "--tls-key",
            path(&certs.join("node.key")),
            "--tls-ca",
            path(ca),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if let Some(seed) = seed {
            args.extend(["--seed".to_string(), seed.to_string()]);
        }
        let child = Command::new(bin())
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let node = TlsNode { child, http, peer };
        wait_until(
            "HTTPS health",
            Duration::from_secs(60),
            || matches!(https(ca, &node.http, "GET", "/v1/health", b""), Ok((r, _)) if r.status == 200),
        );
        node
    }

    fn req(&self, ca: &Path, method: &str, target: &str, body: &[u8]) -> Resp {
        https(ca, &self.http, method, target, body)
            .unwrap_or_else(|e| panic!("{method} {target} on {}: {e}", self.http))
            .0
    }

    fn metric(&self, ca: &Path, prefix: &str) -> f64 {
        self.req(ca, "GET", "/metrics", b"")
            .text()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// `yeskv cert issue` for `id` into `dir/id-certs`.
fn issue(ca_dir: &Path, dir: &Path, id: &str) -> PathBuf {
    let out = dir.join(format!("{id}-certs"));
    ok(&[
        "cert",
        "issue",
        "--ca-dir",
        path(ca_dir),
        "--node-id",
        id,
        "--out",
        path(&out),
    ]);
    out
}

#[test]
fn a_tls_cluster_serves_https_keeps_strangers_out_and_reloads_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("ca");
    ok(&["cert", "init", "--dir", path(&ca_dir)]);
    let ca = ca_dir.join("ca.pem");
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(ca_dir.join("ca.key"))
        .expect("key")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the CA key is private");
    let again = yeskv(&["cert", "init", "--dir", path(&ca_dir)]);
    assert!(!again.status.success(), "init never overwrites a CA");

    // Three nodes, formed the operator's way over HTTPS.
    let n1 = TlsNode::start(
        dir.path(),
        "n1",
        &issue(&ca_dir, dir.path(), "n1"),
        &ca,
        None,
    );
    let n2 = TlsNode::start(
        dir.path(),
        "n2",
        &issue(&ca_dir, dir.path(), "n2"),
        &ca,
        Some(&n1.peer),
    );
    let n3 = TlsNode::start(
        dir.path(),
        "n3",
        &issue(&ca_dir, dir.path(), "n3"),
        &ca,
        Some(&n1.peer),
    );
    let join = serde_json::json!({ "nodes": ["n2", "n3"] }).to_string();
    wait_until(
        "newcomers in n1's gossip view",
        Duration::from_secs(20),
        || {
            n1.req(&ca, "POST", "/v1/cluster/join", join.as_bytes())
                .status
                == 200
        },
    );
    let commit = n1.req(&ca, "POST", "/v1/cluster/commit", b"");
    assert_eq!(commit.status, 200, "{}", commit.text());
    let version = n1.req(&ca, "GET", "/v1/ring", b"").json()["version"]
        .as_u64()
        .expect("version");
    for node in [&n1, &n2, &n3] {
        wait_until(
            "every node applies the layout and sees all up",
            Duration::from_secs(30),
            || {
                let ring = node.req(&ca, "GET", "/v1/ring", b"");
                let status = node.req(&ca, "GET", "/v1/status", b"").json();
                let members = status["members"].as_array().cloned().unwrap_or_default();
                ring.status == 200
                    && ring.json()["version"].as_u64() == Some(version)
                    && members.len() == 3
                    && members.iter().all(|m| m["status"] == "up")
                    && status["transfers"]["partitions_pending"] == 0
            },
        );
    }

    // The CLI over HTTPS with --ca: written through one node, read through another, with all
    // replicas answering (the write replicated over mutual TLS).
    let url = |n: &TlsNode| format!("https://{}", n.http);
    ok(&[
        "--ca",
        path(&ca),
        "put",
        "--node",
        &url(&n1),
        "--w",
        "all",
        "tls",
        "k",
        "secret",
    ]);
    let read = ok(&[
        "--ca",
        path(&ca),
        "get",
        "--node",
        &url(&n2),
        "--r",
        "all",
        "tls",
        "k",
    ]);
    assert_eq!(read.trim(), "secret");
    // YESKV_CA does the same as --ca.
    let out = Command::new(bin())
        .args(["get", "--node", &url(&n3), "tls", "k"])
        .env("YESKV_CA", &ca)
        .output()
        .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "secret");
    // Without a CA, the CLI refuses in one line.
    let out = yeskv(&["get", "--node", &url(&n1), "tls", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--ca") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );

    // A peer claiming another node's id: n2's certificate announcing n3 on n1's peer port is
    // refused at the handshake (counted as `identity`) and nothing is served; the same
    // certificate announcing n2 is answered.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let n2_certs = dir.path().join("n2-certs");
    let peer_client = |announced: &str| {
        let state = yeskv_tls::TlsState::load(
            yeskv_tls::TlsFiles {
                cert: n2_certs.join("node.pem"),
                key: n2_certs.join("node.key"),
                ca: ca.clone(),
            },
            "n2",
        )
        .expect("n2's certificate");
        let expected: yeskv_tls::connector::ExpectedNode =
            std::sync::Arc::new(|_: &str| Some("n1".to_string()));
        yeskv_rpc::RpcClient::<PeerRequest, PeerResponse, _>::with_connector(
            yeskv_rpc::RpcConfig::new("yeskv", announced),
            yeskv_tls::NodeConnector::Tls(yeskv_tls::TlsConnector::new(state, expected)),
            1,
        )
        .expect("client")
    };
    let ask = PeerRequest::Buckets(BucketRequest::HoldsData {
        bucket: b"tls".to_vec(),
    });
    let identity = "yeskv_peer_refused_total{reason=\"identity\"}";
    let before = n1.metric(&ca, identity);
    let refused = runtime
        .block_on(async {
            peer_client("n3")
                .call(&n1.peer, &ask, Duration::from_secs(5))
                .await
        })
        .expect_err("an impostor is refused");
    let text = refused.to_string();
    assert!(text.contains("n3") && text.contains("n2"), "{text}");
    wait_until("the impostor counted", Duration::from_secs(10), || {
        n1.metric(&ca, identity) > before
    });
    let answered = runtime.block_on(async {
        peer_client("n2")
            .call(&n1.peer, &ask, Duration::from_secs(5))
            .await
    });
    assert!(answered.is_ok(), "{answered:?}");

    // Plain HTTP to an HTTPS port gets no HTTP answer, and is counted.
    let before = n1.metric(&ca, "yeskv_peer_refused_total{reason=\"tls\"}");
    let plain = try_request(&n1.http, "GET", "/v1/kv/tls/k", &[], b"");
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    wait_until(
        "the refused handshake counted",
        Duration::from_secs(10),
        || n1.metric(&ca, "yeskv_peer_refused_total{reason=\"tls\"}") > before,
    );

    // A node with a certificate of another CA: the cluster's nodes refuse it and it refuses
    // them, so even staged into the layout it never gets the layout nor serves a key.
    let other_ca_dir = dir.path().join("other-ca");
    ok(&["cert", "init", "--dir", path(&other_ca_dir)]);
    let other_ca = other_ca_dir.join("ca.pem");
    let stranger = TlsNode::start(
        dir.path(),
        "n4",
        &issue(&other_ca_dir, dir.path(), "n4"),
        &other_ca,
        Some(&n1.peer),
    );
    let refused_before = n1.metric(&ca, "yeskv_peer_refused_total{reason=\"tls\"}");
    let join = serde_json::json!({ "nodes": ["n4"] }).to_string();
    wait_until(
        "the stranger in n1's gossip view",
        Duration::from_secs(20),
        || {
            n1.req(&ca, "POST", "/v1/cluster/join", join.as_bytes())
                .status
                == 200
        },
    );
    // The layout group cannot reach it (mutual TLS fails both ways), so the join does not
    // commit: the stranger never becomes a member.
    let commit = n1.req(&ca, "POST", "/v1/cluster/commit", b"");
    assert_ne!(commit.status, 200, "{}", commit.text());
    eprintln!(
        "commit with a stranger: {} {}",
        commit.status,
        commit.text()
    );
    let ring = n1.req(&ca, "GET", "/v1/ring", b"").json();
    assert_eq!(ring["version"].as_u64(), Some(version), "{ring}");
    assert!(!ring.to_string().contains("\"n4\""), "{ring}");
    wait_until(
        "n1's calls to the stranger refused",
        Duration::from_secs(30),
        || {
            n1.metric(&ca, "yeskv_peer_refused_total{reason=\"tls\"}") > refused_before
                && stranger.metric(&other_ca, "yeskv_peer_refused_total{reason=\"tls\"}") > 0.0
        },
    );
    assert_ne!(
        stranger.req(&other_ca, "GET", "/v1/ring", b"").status,
        200,
        "no layout reached it"
    );
    let put = stranger.req(&other_ca, "PUT", "/v1/kv/tls/stranger", b"x");
    assert!(
        put.status >= 500,
        "a node without a layout stores nothing: {}",
        put.status
    );
    drop(stranger);

    // SIGHUP: a bad file is refused (the old certificate stays), a new one is taken.
    let n1_certs = dir.path().join("n1-certs");
    let (_, first_serial) = https(&ca, &n1.http, "GET", "/v1/health", b"").expect("https");
    std::fs::write(n1_certs.join("node.pem"), "garbage").expect("write");
    let hup = |node: &TlsNode| {
        let status = Command::new("kill")
            .args(["-HUP", &node.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };
    hup(&n1);
    let (_, still) = https(&ca, &n1.http, "GET", "/v1/health", b"").expect("still serving");
    assert_eq!(still, first_serial);
    let renewal = dir.path().join("renewal");
    ok(&[
        "cert",
        "issue",
        "--ca-dir",
        path(&ca_dir),
        "--node-id",
        "n1",
        "--out",
        path(&renewal),
    ]);
    std::fs::copy(renewal.join("node.key"), n1_certs.join("node.key")).expect("copy");
    std::fs::copy(renewal.join("node.pem"), n1_certs.join("node.pem")).expect("copy");
    let pem = std::fs::read(renewal.join("node.pem")).expect("read");
    let new_serial =
        yeskv_tls::identity::serial_of(&CertificateDer::from_pem_slice(&pem).expect("pem"))
            .expect("serial");
    assert_ne!(new_serial, first_serial);
    hup(&n1);
    wait_until(
        "n1 serves the renewed certificate",
        Duration::from_secs(10),
        || matches!(https(&ca, &n1.http, "GET", "/v1/health", b""), Ok((r, s)) if r.status == 200 && s == new_serial),
    );
    // The renewed n1 still talks to its peers: a write needing every replica goes through.
    ok(&[
        "--ca",
        path(&ca),
        "put",
        "--node",
        &url(&n1),
        "--w",
        "3",
        "tls",
        "k2",
        "after-reload",
    ]);
    let read = ok(&[
        "--ca",
        path(&ca),
        "get",
        "--node",
        &url(&n3),
        "--r",
        "3",
        "tls",
        "k2",
    ]);
    assert_eq!(read.trim(), "after-reload");
}

#[test]
fn a_reachable_address_without_tls_needs_insecure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let http = format!("0.0.0.0:{port}");
    let data = dir.path().join("n1");
    let out = yeskv(&[
        "server",
        "--node-id",
        "n1",
        "--data-dir",
        path(&data),
        "--http",
        &http,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without TLS on {http}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&http) && stderr.contains("--insecure") && stderr.contains("--tls-cert"),
        "{stderr}"
    );

    let peer = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(bin())
        .args([
            "server",
            "--node-id",
            "n1",
            "--data-dir",
            path(&data),
            "--http",
            &http,
        ])
        .args(["--peer", &peer, "--insecure"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let local = format!("127.0.0.1:{port}");
    let mut exited = None;
    wait_until(
        "the --insecure node's health",
        Duration::from_secs(60),
        || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            matches!(try_request(&local, "GET", "/v1/health", &[], b""), Ok(r) if r.status == 200)
        },
    );
    let _ = child.kill();
    let _ = child.wait();
    assert!(exited.is_none(), "--insecure node exited: {exited:?}");
}
