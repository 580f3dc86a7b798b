//! Mutual TLS and peer identity over real TCP: the RPC layer on `yeskv-tls`'s listener and
//! connector, with certificates made by `yeskv-tls`'s issuer.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use yeskv_rpc::{PeerInfo, RpcClient, RpcConfig, RpcServer};
use yeskv_tls::connector::ExpectedNode;
use yeskv_tls::{
    issue_node, new_ca, CaPems, NodeConnector, Role, TlsConnector, TlsFiles, TlsListener, TlsState,
};

const CLUSTER: &str = "c";
const TIMEOUT: Duration = Duration::from_secs(5);

/// Writes `ca` and a certificate for `node_id` signed by it under `dir/name`.
fn files(dir: &Path, name: &str, ca: &CaPems, node_id: &str) -> TlsFiles {
    let out = dir.join(name);
    std::fs::create_dir_all(&out).expect("dir");
    let node = issue_node(&ca.key, node_id, &[]).expect("issue");
    let files = TlsFiles {
        cert: out.join("node.pem"),
        key: out.join("node.key"),
        ca: out.join("ca.pem"),
    };
    std::fs::write(&files.cert, node.cert).expect("write");
    std::fs::write(&files.key, node.key).expect("write");
    std::fs::write(&files.ca, &ca.cert).expect("write");
    files
}

struct Server {
    addr: String,
    handled: Arc<AtomicU64>,
    rpc: RpcServer<String, String>,
    state: Arc<TlsState>,
}

/// An RPC server for node `node_id` with mutual TLS; answers `"<peer node id>:<request>"`.
async fn serve(files: TlsFiles, node_id: &str) -> Server {
    let state = TlsState::load(files, node_id).expect("server material");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr").to_string();
    let listener = TlsListener::new(tcp, state.clone(), Role::Rpc).expect("listener");
    let rpc: RpcServer<String, String> =
        RpcServer::new(RpcConfig::new(CLUSTER, node_id)).expect("server");
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();
    let server = rpc.clone();
    tokio::spawn(async move {
        server
            .serve(
                listener,
                move |peer: PeerInfo, request: String| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { format!("{}:{request}", peer.node_id) }
                },
                std::future::pending::<()>(),
            )
            .await;
    });
    Server {
        addr,
        handled,
        rpc,
        state,
    }
}

/// A client announcing `announced` in its hello, with the certificate of `files` (made for
/// `cert_node`), expecting `expected` at every address (None: anyone of the CA).
fn client(
    files: TlsFiles,
    cert_node: &str,
    announced: &str,
    expected: Option<&str>,
) -> RpcClient<String, String, NodeConnector> {
    let state = TlsState::load(files, cert_node).expect("client material");
    let expected = expected.map(str::to_string);
    let expected: ExpectedNode = Arc::new(move |_addr: &str| expected.clone());
    RpcClient::with_connector(
        RpcConfig::new(CLUSTER, announced),
        NodeConnector::Tls(TlsConnector::new(state, expected)),
        1,
    )
    .expect("client")
}

#[tokio::test]
async fn nodes_of_the_cluster_ca_talk_and_are_known_by_their_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca().expect("ca");
    let server = serve(files(dir.path(), "n1", &ca, "n1"), "n1").await;
    let n2 = client(files(dir.path(), "n2", &ca, "n2"), "n2", "n2", Some("n1"));
    let answer = n2.call(&server.addr, &"hi".to_string(), TIMEOUT).await;
    assert_eq!(answer.expect("answered"), "n2:hi");
    assert_eq!(server.handled.load(Ordering::SeqCst), 1);
    // Any node of the CA, when the caller does not know whom it reaches (a seed).
    let seed_caller = client(files(dir.path(), "n3", &ca, "n3"), "n3", "n3", None);
    let answer = seed_caller
        .call(&server.addr, &"x".to_string(), TIMEOUT)
        .await;
    assert_eq!(answer.expect("answered"), "n3:x");
}

#[tokio::test]
async fn a_hello_claiming_another_node_than_the_certificate_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca().expect("ca");
    let server = serve(files(dir.path(), "n1", &ca, "n1"), "n1").await;
    // A valid certificate for n2, announcing n3.
    let impostor = client(files(dir.path(), "n2", &ca, "n2"), "n2", "n3", Some("n1"));
    let error = impostor
        .call(&server.addr, &"write".to_string(), TIMEOUT)
        .await
        .expect_err("refused");
    let text = error.to_string();
    assert!(text.contains("\"n3\"") && text.contains("\"n2\""), "{text}");
    assert_eq!(server.handled.load(Ordering::SeqCst), 0, "nothing handled");
    let stats = server.rpc.stats();
    assert_eq!(stats.identity_refused, 1, "{stats:?}");
}

#[tokio::test]
async fn a_certificate_of_another_ca_cannot_connect_either_way() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca().expect("ca");
    let other = new_ca().expect("other ca");
    let server = serve(files(dir.path(), "n1", &ca, "n1"), "n1").await;
    // A client of another CA: the server refuses its certificate.
    let foreign = client(files(dir.path(), "x", &other, "n2"), "n2", "n2", None);
    let result = foreign
        .call(&server.addr, &"write".to_string(), TIMEOUT)
        .await;
    assert!(result.is_err(), "{result:?}");
    // A server of another CA: the client refuses its certificate.
    let foreign_server = serve(files(dir.path(), "y", &other, "n9"), "n9").await;
    let n2 = client(files(dir.path(), "n2", &ca, "n2"), "n2", "n2", None);
    let result = n2
        .call(&foreign_server.addr, &"write".to_string(), TIMEOUT)
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(server.handled.load(Ordering::SeqCst), 0);
    assert_eq!(foreign_server.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_caller_refuses_a_server_that_is_not_the_node_it_meant_to_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca().expect("ca");
    let server = serve(files(dir.path(), "n1", &ca, "n1"), "n1").await;
    let n2 = client(files(dir.path(), "n2", &ca, "n2"), "n2", "n2", Some("n7"));
    let error = n2
        .call(&server.addr, &"write".to_string(), TIMEOUT)
        .await
        .expect_err("refused");
    let text = error.to_string();
    assert!(text.contains("\"n7\"") && text.contains("\"n1\""), "{text}");
    assert_eq!(server.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn reload_takes_a_new_certificate_and_keeps_the_old_one_on_a_bad_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = new_ca().expect("ca");
    let files = files(dir.path(), "n1", &ca, "n1");
    let server = serve(files.clone(), "n1").await;
    let first = server.state.current().serial.clone();

    std::fs::write(&files.cert, "not a certificate").expect("write");
    assert!(server.state.reload().is_err());
    assert_eq!(server.state.current().serial, first, "kept");

    let renewed = issue_node(&ca.key, "n1", &[]).expect("issue");
    std::fs::write(&files.cert, renewed.cert).expect("write");
    std::fs::write(&files.key, renewed.key).expect("write");
    let second = server.state.reload().expect("reloaded");
    assert_ne!(second, first);
    assert_eq!(server.state.current().serial, second);
    // New connections use it, and still work.
    let n2 = client(
        self::files(dir.path(), "n2", &ca, "n2"),
        "n2",
        "n2",
        Some("n1"),
    );
    assert_eq!(
        n2.call(&server.addr, &"again".to_string(), TIMEOUT)
            .await
            .expect("answered"),
        "n2:again"
    );
    // A certificate for another node is refused on reload.
    let other = issue_node(&ca.key, "n5", &[]).expect("issue");
    std::fs::write(&files.cert, other.cert).expect("write");
    std::fs::write(&files.key, other.key).expect("write");
    let error = server.state.reload().expect_err("another node's");
    assert!(error.to_string().contains("\"n5\""), "{error}");
    assert_eq!(server.state.current().serial, second);
}
