//! End-to-end tests of the transport over real TCP on 127.0.0.1 (port 0 everywhere).
//!
//! Raw-socket tests speak the wire format by hand (through the public `frame` codec) to inject
//! what a well-behaved peer never sends: corrupt frames, oversized frames, foreign versions.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use yeskv_rpc::frame::{encode_message, Frame, FrameDecoder, FrameKind};
use yeskv_rpc::{
    Connector, Error, Hello, PeerInfo, Refused, RpcClient, RpcConfig, RpcServer, TcpConnector,
    Welcome, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN,
};

const CLUSTER: &str = "test-cluster";
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Request {
    Echo(u64),
    /// Sleep this long, then answer with the id.
    Sleep {
        id: u64,
        ms: u64,
    },
    /// Sleep a random 0..=max_ms, then answer with the id.
    Jitter {
        id: u64,
        max_ms: u64,
    },
    Panic,
    /// Answer with this many bytes.
    Big(usize),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Response {
    Echo(u64),
    Done(u64),
    Big(Vec<u8>),
    /// Who called (the node id from the handshake).
    Unexpected(String),
}

type Client = RpcClient<Request, Response>;

fn config(node_id: &str) -> RpcConfig {
    RpcConfig {
        reconnect_backoff_min_ms: 10,
        reconnect_backoff_max_ms: 100,
        shutdown_grace_ms: 2_000,
        ..RpcConfig::new(CLUSTER, node_id)
    }
}

/// Tracks the handlers running at once.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
}

async fn handle(concurrency: Arc<Concurrency>, peer: PeerInfo, request: Request) -> Response {
    let running = concurrency.now.fetch_add(1, Ordering::SeqCst) + 1;
    concurrency.max.fetch_max(running, Ordering::SeqCst);
    let response = match request {
        Request::Echo(value) => Response::Echo(value),
        Request::Sleep { id, ms } => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::Done(id)
        }
        Request::Jitter { id, max_ms } => {
            let ms = rand::rng().random_range(0..=max_ms);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::Done(id)
        }
        Request::Panic => panic!("the handler was asked to panic"),
        Request::Big(bytes) => Response::Big(vec![7; bytes]),
    };
    concurrency.now.fetch_sub(1, Ordering::SeqCst);
    if peer.node_id.is_empty() {
        return Response::Unexpected("no node id".into());
    }
    response
}

struct TestServer {
    addr: String,
    server: RpcServer<Request, Response>,
    concurrency: Arc<Concurrency>,
    shutdown: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl TestServer {
    async fn start(config: RpcConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        TestServer::start_on(listener, config)
    }

    fn start_on(listener: TcpListener, config: RpcConfig) -> TestServer {
        let addr = listener.local_addr().expect("local addr").to_string();
        let server = RpcServer::new(config).expect("valid config");
        let concurrency = Arc::new(Concurrency::default());
        let (shutdown, shutdown_receiver) = oneshot::channel::<()>();
        let serving = server.clone();
        let handler_concurrency = concurrency.clone();
        let task = tokio::spawn(async move {
            serving
                .serve(
                    listener,
                    move |peer, request| handle(handler_concurrency.clone(), peer, request),
                    async move {
                        let _ = shutdown_receiver.await;
                    },
                )
                .await;
        });
        TestServer {
            addr,
            server,
            concurrency,
            shutdown: Some(shutdown),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops within its grace period")
            .expect("server task did not panic");
    }
}

fn client(node_id: &str) -> Client {
    RpcClient::new(config(node_id)).expect("valid config")
}

/// Waits until `condition` holds (polling), failing after 5 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The server counted exactly one refused handshake. It counts a refusal after sending it, so
/// the client may hear it first: wait for the count, then check it.
async fn assert_refused_once(server: &TestServer) {
    eventually("the refusal counted", || {
        server.server.stats().handshakes_refused >= 1
    })
    .await;
    assert_eq!(server.server.stats().handshakes_refused, 1);
}

// ---- raw wire helpers --------------------------------------------------------------------

async fn read_frame(stream: &mut TcpStream, buffer: &mut BytesMut) -> Option<Frame> {
    let decoder = FrameDecoder::new(yeskv_rpc::FRAME_BYTES_MAX_DEFAULT);
    loop {
        if let Some(frame) = decoder.decode(buffer).expect("valid frame from the peer") {
            return Some(frame);
        }
        let read = stream.read_buf(buffer).await.ok()?;
        if read == 0 {
            return None;
        }
    }
}

/// Reads until the peer closes; true if it did within 5 s.
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let mut sink = vec![0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_elapsed) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

fn hello(protocol_version: u16, cluster_id: &str) -> Hello {
    Hello {
        protocol_version,
        cluster_id: cluster_id.to_string(),
        node_id: "raw".to_string(),
        protocol_version_max: protocol_version,
    }
}

/// Connects and sends `hello`; returns the stream and the server's answer.
async fn raw_handshake(addr: &str, hello: &Hello) -> (TcpStream, Frame, BytesMut) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let frame = encode_message(FrameKind::Hello, 0, hello, 64 * 1024).expect("encode");
    stream.write_all(&frame).await.expect("send hello");
    let mut buffer = BytesMut::new();
    let answer = read_frame(&mut stream, &mut buffer)
        .await
        .expect("an answer to the hello");
    (stream, answer, buffer)
}

// ---- tests --------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip() {
    let server = TestServer::start(config("server")).await;
    let client = client("client");
    let response = client
        .call(&server.addr, &Request::Echo(42), CALL_TIMEOUT)
        .await
        .expect("call succeeds");
    assert_eq!(response, Response::Echo(42));

    let stats = client.stats();
    assert_eq!(stats.len(), 1);
    assert_eq!(stats[0].addr, server.addr);
    assert_eq!(stats[0].remote_node_id.as_deref(), Some("server"));
    assert!(stats[0].connected);
    assert_eq!(
        (stats[0].calls, stats[0].errors, stats[0].timeouts),
        (1, 0, 0)
    );
    assert_eq!((stats[0].connects, stats[0].reconnects), (1, 0));
    assert!(stats[0].traffic.bytes_sent > 0 && stats[0].traffic.bytes_received > 0);
    let server_stats = server.server.stats();
    assert_eq!(server_stats.requests, 1);
    assert_eq!(server_stats.connections_open, 1);

    client.disconnect(&server.addr);
    assert!(!client.stats()[0].connected);
    assert_eq!(client.stats()[0].disconnects, 1);
    client
        .call(&server.addr, &Request::Echo(43), CALL_TIMEOUT)
        .await
        .expect("reconnects");
    assert_eq!(client.stats()[0].reconnects, 1);
    client.forget(&server.addr);
    assert!(client.stats().is_empty());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_share_one_connection_and_complete_out_of_order() {
    let server = TestServer::start(config("server")).await;
    let client = client("client");
    let started = Instant::now();
    let completions = Arc::new(std::sync::Mutex::new(Vec::new()));
    let calls = (0..1000u64).map(|id| {
        let client = client.clone();
        let addr = server.addr.clone();
        let completions = completions.clone();
        tokio::spawn(async move {
            let response = client
                .call(&addr, &Request::Jitter { id, max_ms: 20 }, CALL_TIMEOUT)
                .await
                .expect("call succeeds");
            assert_eq!(
                response,
                Response::Done(id),
                "each caller gets its own answer"
            );
            completions.lock().expect("not poisoned").push(id);
        })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.expect("caller did not panic");
    }
    let elapsed = started.elapsed();
    let completions = completions.lock().expect("not poisoned").clone();
    assert_eq!(completions.len(), 1000);
    let overtaken = completions
        .windows(2)
        .filter(|pair| pair[0] > pair[1])
        .count();
    // A connection that answered in order (head-of-line blocking) gives 0 inversions; an
    // unloaded box gives ~500, a box busy compiling beside the test ~80.
    assert!(
        overtaken > 10,
        "responses did not overtake each other ({overtaken} inversions in 1000)"
    );
    let stats = &client.stats()[0];
    assert_eq!(stats.connects, 1, "one connection carried every call");
    assert_eq!((stats.calls, stats.errors, stats.timeouts), (1000, 0, 0));
    let concurrency = server.concurrency.max.load(Ordering::SeqCst);
    assert!(
        concurrency > 100,
        "handlers ran concurrently: max {concurrency}"
    );
    // 1000 sequential sleeps of ~10 ms would take ~10 s.
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_handler_times_out_and_the_connection_stays_usable() {
    let server = TestServer::start(config("server")).await;
    let client = client("client");
    client
        .call(&server.addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect("warm-up call");
    let error = client
        .call(
            &server.addr,
            &Request::Sleep { id: 2, ms: 300 },
            Duration::from_millis(50),
        )
        .await
        .expect_err("the slow call times out");
    assert!(
        matches!(error, Error::Timeout { timeout_ms: 50 }),
        "{error}"
    );
    assert!(error.is_retryable());
    assert_eq!(
        client
            .call(&server.addr, &Request::Echo(3), CALL_TIMEOUT)
            .await
            .expect("the connection is still usable"),
        Response::Echo(3)
    );
    // The slow response still arrives, finds no caller, and is dropped and counted.
    eventually("the late response is counted", || {
        client.stats()[0].late_responses == 1
    })
    .await;
    let stats = &client.stats()[0];
    assert_eq!(stats.connects, 1, "no reconnect was needed");
    assert_eq!((stats.calls, stats.errors, stats.timeouts), (3, 0, 1));
    assert_eq!(stats.inflight, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_frame_from_a_client_closes_the_connection_and_is_counted() {
    let server = TestServer::start(config("server")).await;
    let (mut stream, answer, _) =
        raw_handshake(&server.addr, &hello(PROTOCOL_VERSION, CLUSTER)).await;
    assert_eq!(answer.kind, FrameKind::Welcome);
    let welcome = Welcome::decode(&answer.payload, PROTOCOL_VERSION).expect("welcome");
    assert_eq!(welcome.node_id, "server");

    let mut frame = encode_message(FrameKind::Request, 1, &Request::Echo(5), 1 << 20)
        .expect("encode")
        .to_vec();
    let last = frame.len() - 1;
    frame[last] ^= 0x10; // one flipped bit in the payload
    stream.write_all(&frame).await.expect("send");
    assert!(
        closed_by_peer(&mut stream).await,
        "the server closed the connection"
    );
    let stats = server.server.stats();
    assert_eq!(stats.traffic.corrupt_frames, 1);
    assert_eq!(
        stats.requests, 0,
        "the corrupt request never reached the handler"
    );
    eventually("the connection is closed", || {
        server.server.stats().connections_open == 0
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_frame_is_refused_on_both_sides() {
    let server = TestServer::start(RpcConfig {
        frame_bytes_max: 64 * 1024,
        ..config("server")
    })
    .await;

    // A raw frame header declaring 1 MiB: the server closes without reading the payload.
    let (mut stream, answer, _) =
        raw_handshake(&server.addr, &hello(PROTOCOL_VERSION, CLUSTER)).await;
    assert_eq!(answer.kind, FrameKind::Welcome);
    let mut header = BytesMut::new();
    header.put_u32_le(1024 * 1024);
    header.put_u32_le(0);
    stream.write_all(&header).await.expect("send");
    assert!(
        closed_by_peer(&mut stream).await,
        "the server closed the connection"
    );
    assert_eq!(server.server.stats().traffic.oversized_frames, 1);

    let client: Client = RpcClient::new(RpcConfig {
        frame_bytes_max: 64 * 1024,
        ..config("client")
    })
    .expect("valid config");
    // A response over the server's limit comes back as a failure; the connection survives.
    let error = client
        .call(&server.addr, &Request::Big(100_000), CALL_TIMEOUT)
        .await
        .expect_err("response too large");
    assert!(
        matches!(&error, Error::Remote { reason } if reason.contains("exceeds")),
        "{error}"
    );
    assert!(!error.is_retryable());
    assert_eq!(
        client
            .call(&server.addr, &Request::Echo(9), CALL_TIMEOUT)
            .await
            .expect("connection still usable"),
        Response::Echo(9)
    );
    assert_eq!(client.stats()[0].connects, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_fails_before_connecting() {
    #[derive(Serialize)]
    struct Blob(Vec<u8>);
    let client: RpcClient<Blob, Response> = RpcClient::new(RpcConfig {
        frame_bytes_max: 64 * 1024,
        ..config("client")
    })
    .expect("valid config");
    // Nobody listens at this address: the call must fail on size before trying to connect.
    let error = client
        .call("127.0.0.1:9", &Blob(vec![0; 100_000]), CALL_TIMEOUT)
        .await
        .expect_err("too large");
    assert!(
        matches!(
            error,
            Error::FrameTooLarge {
                frame_bytes_max: 65536,
                ..
            }
        ),
        "{error}"
    );
    assert!(!error.is_retryable());
    let stats = &client.stats()[0];
    assert_eq!(
        (stats.connects, stats.connect_errors, stats.errors),
        (0, 0, 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_of_another_cluster_is_refused() {
    let server = TestServer::start(config("server")).await;
    let stranger: Client = RpcClient::new(RpcConfig {
        reconnect_backoff_min_ms: 10_000,
        reconnect_backoff_max_ms: 10_000,
        ..RpcConfig::new("other-cluster", "stranger")
    })
    .expect("valid config");
    let error = stranger
        .call(&server.addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("refused");
    match &error {
        Error::Refused { reason } => {
            assert!(
                reason.contains("other-cluster") && reason.contains(CLUSTER),
                "{reason}"
            )
        }
        other => panic!("expected a refusal, got {other}"),
    }
    assert!(!error.is_retryable());
    // While backed off, calls fail fast with the same refusal.
    let again = stranger
        .call(&server.addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("still refused");
    assert!(matches!(again, Error::Refused { .. }), "{again}");
    assert_refused_once(&server).await;
    let stats = &stranger.stats()[0];
    assert_eq!((stats.connects, stats.connect_errors), (0, 1));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_speaking_another_protocol_version_is_refused() {
    let server = TestServer::start(config("server")).await;
    let (mut stream, answer, _) =
        raw_handshake(&server.addr, &hello(PROTOCOL_VERSION + 1, CLUSTER)).await;
    assert_eq!(answer.kind, FrameKind::Refused);
    let refused: Refused = postcard::from_bytes(&answer.payload).expect("refusal");
    assert!(
        refused
            .reason
            .contains(&format!("protocol version {}", PROTOCOL_VERSION + 1)),
        "{}",
        refused.reason
    );
    assert!(closed_by_peer(&mut stream).await);
    assert_refused_once(&server).await;
    server.stop().await;
}

/// A node of the previous release (pinned to the oldest version) and one of this release talk
/// at the older version, both ways; a request of the newer version is not sent to the older
/// node but is to a node of this release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_of_two_releases_agree_on_the_older_version_and_newer_requests_wait() {
    let pinned = |name: &str| RpcConfig {
        protocol_versions: (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION_MIN),
        ..config(name)
    };
    let old_server = TestServer::start(pinned("old-server")).await;
    let new_server = TestServer::start(config("new-server")).await;
    let new_client = client("new-client");
    let old_client: Client = RpcClient::new(pinned("old-client")).expect("valid config");

    // New → old: the connection speaks the old version; plain requests flow.
    let answer = new_client
        .call(&old_server.addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect("a call at the older version");
    assert_eq!(answer, Response::Echo(1));
    let requests_before = old_server.server.stats().requests;
    let error = new_client
        .call_since(
            &old_server.addr,
            &Request::Echo(2),
            PROTOCOL_VERSION,
            CALL_TIMEOUT,
        )
        .await
        .expect_err("a newer request is not sent to an older peer");
    assert!(
        matches!(error, Error::Unsupported { needed, agreed }
            if needed == PROTOCOL_VERSION && agreed == PROTOCOL_VERSION_MIN),
        "{error}"
    );
    assert!(error.not_sent() && !error.is_retryable(), "{error}");
    assert_eq!(
        old_server.server.stats().requests,
        requests_before,
        "nothing reached the older peer"
    );
    let stats = new_client.stats();
    assert_eq!(stats[0].protocol_version, Some(PROTOCOL_VERSION_MIN));
    assert_eq!(
        stats[0].connects, 1,
        "the refusal did not cost the connection"
    );

    // Old → new: the newer server steps down to the old client's version.
    let answer = old_client
        .call(&new_server.addr, &Request::Echo(3), CALL_TIMEOUT)
        .await
        .expect("an old client is served");
    assert_eq!(answer, Response::Echo(3));
    assert_eq!(
        old_client.stats()[0].protocol_version,
        Some(PROTOCOL_VERSION_MIN)
    );

    // New → new: the newest version, and the newer request is sent.
    let answer = new_client
        .call_since(
            &new_server.addr,
            &Request::Echo(4),
            PROTOCOL_VERSION,
            CALL_TIMEOUT,
        )
        .await
        .expect("a newer request to a newer peer");
    assert_eq!(answer, Response::Echo(4));
    let to_new = new_client
        .stats()
        .into_iter()
        .find(|s| s.addr == new_server.addr)
        .expect("stats of the newer peer");
    assert_eq!(to_new.protocol_version, Some(PROTOCOL_VERSION));
    old_server.stop().await;
    new_server.stop().await;
}

/// A server of release 0.1.0 sends a `Welcome` without a version: the client takes it as
/// the one version its `Hello` led with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_of_the_previous_release_is_understood() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let old = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buffer = BytesMut::new();
        let hello = read_frame(&mut stream, &mut buffer).await.expect("hello");
        // What 0.1.0 checks: the first field is its one version.
        let (first, _) = postcard::take_from_bytes::<u16>(&hello.payload).expect("version");
        assert_eq!(first, PROTOCOL_VERSION_MIN);
        let welcome =
            encode_message(FrameKind::Welcome, 0, &"old".to_string(), 1 << 16).expect("encode");
        stream.write_all(&welcome).await.expect("welcome");
        let request = loop {
            let frame = read_frame(&mut stream, &mut buffer).await.expect("request");
            if frame.kind == FrameKind::Request {
                break frame;
            }
        };
        let answer = encode_message(
            FrameKind::Response,
            request.request_id,
            &Response::Echo(7),
            1 << 16,
        )
        .expect("encode");
        stream.write_all(&answer).await.expect("answer");
        closed_by_peer(&mut stream).await
    });
    let client = client("client");
    let answer = client
        .call(&addr, &Request::Echo(7), CALL_TIMEOUT)
        .await
        .expect("served by an old server");
    assert_eq!(answer, Response::Echo(7));
    assert_eq!(
        client.stats()[0].protocol_version,
        Some(PROTOCOL_VERSION_MIN)
    );
    drop(client);
    old.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_reconnects_after_a_server_restart() {
    let server = TestServer::start(config("server")).await;
    let addr = server.addr.clone();
    let client = client("client");
    assert_eq!(
        client
            .call(&addr, &Request::Echo(1), CALL_TIMEOUT)
            .await
            .expect("first call"),
        Response::Echo(1)
    );
    server.stop().await;
    eventually("the client notices the disconnect", || {
        !client.stats()[0].connected
    })
    .await;
    let error = client
        .call(&addr, &Request::Echo(2), CALL_TIMEOUT)
        .await
        .expect_err("server is down");
    assert!(error.is_retryable(), "{error}");

    let listener = TcpListener::bind(&addr)
        .await
        .expect("rebind the same port");
    let server = TestServer::start_on(listener, config("server"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let response = loop {
        match client.call(&addr, &Request::Echo(3), CALL_TIMEOUT).await {
            Ok(response) => break response,
            Err(error) => {
                assert!(error.is_retryable(), "{error}");
                assert!(Instant::now() < deadline, "no reconnect: {error}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(response, Response::Echo(3));
    let stats = &client.stats()[0];
    assert_eq!(stats.reconnects, 1);
    assert!(
        stats.connect_errors >= 1 && stats.disconnects == 1,
        "{stats:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_leaves_in_fewer_writes_than_frames() {
    let server = TestServer::start(config("server")).await;
    let writes = Arc::new(AtomicU64::new(0));
    let client: RpcClient<Request, Response, CountingConnector> = RpcClient::with_connector(
        config("client"),
        CountingConnector {
            writes: writes.clone(),
        },
        7,
    )
    .expect("valid config");
    client
        .call(&server.addr, &Request::Echo(0), CALL_TIMEOUT)
        .await
        .expect("connect");
    let writes_before = writes.load(Ordering::SeqCst);
    let before = client.stats()[0].traffic.clone();
    let server_before = server.server.stats().traffic;

    let burst = (0..2000u64).map(|id| {
        let client = client.clone();
        let addr = server.addr.clone();
        tokio::spawn(async move {
            client
                .call(&addr, &Request::Echo(id), CALL_TIMEOUT)
                .await
                .expect("call")
        })
    });
    for call in burst.collect::<Vec<_>>() {
        call.await.expect("caller did not panic");
    }

    let after = client.stats()[0].traffic.clone();
    let frames = after.frames_sent - before.frames_sent;
    let batches = after.write_batches - before.write_batches;
    let syscalls = writes.load(Ordering::SeqCst) - writes_before;
    assert!(frames >= 2000);
    println!(
        "client: {frames} frames in {batches} write_all calls, {syscalls} write syscalls \
         ({:.1} frames per syscall)",
        frames as f64 / syscalls as f64
    );
    assert!(
        frames > 2 * batches,
        "client coalesced: {frames} frames / {batches} batches"
    );
    assert!(
        frames > 2 * syscalls,
        "client coalesced: {frames} frames / {syscalls} syscalls"
    );

    let server_after = server.server.stats().traffic;
    let frames = server_after.frames_sent - server_before.frames_sent;
    let batches = server_after.write_batches - server_before.write_batches;
    println!("server: {frames} frames in {batches} write_all calls");
    assert!(
        frames > 2 * batches,
        "server coalesced: {frames} frames / {batches} batches"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_answers_with_a_failure_and_the_connection_survives() {
    let server = TestServer::start(config("server")).await;
    let client = client("client");
    let error = client
        .call(&server.addr, &Request::Panic, CALL_TIMEOUT)
        .await
        .expect_err("the handler panicked");
    assert!(
        matches!(&error, Error::Remote { reason } if reason.contains("asked to panic")),
        "{error}"
    );
    assert_eq!(
        client
            .call(&server.addr, &Request::Echo(4), CALL_TIMEOUT)
            .await
            .expect("still usable"),
        Response::Echo(4)
    );
    assert_eq!(server.server.stats().handler_panics, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_cannot_decode_is_answered_with_a_failure() {
    #[derive(Serialize)]
    enum Alien {
        #[allow(dead_code)]
        A,
        #[allow(dead_code)]
        B,
        C,
        D,
        E,
        F(String),
    }
    let _ = (Alien::C, Alien::D, Alien::E);
    let server = TestServer::start(config("server")).await;
    let client: RpcClient<Alien, Response> = RpcClient::new(config("client")).expect("config");
    let error = client
        .call(&server.addr, &Alien::F("?".into()), CALL_TIMEOUT)
        .await
        .expect_err("undecodable");
    assert!(
        matches!(&error, Error::Remote { reason } if reason.contains("cannot decode request")),
        "{error}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_ones() {
    let server = TestServer::start(config("server")).await;
    let client = client("client");
    let addr = server.addr.clone();
    client
        .call(&addr, &Request::Echo(0), CALL_TIMEOUT)
        .await
        .expect("connect");
    let slow_client = client.clone();
    let slow_addr = addr.clone();
    let slow = tokio::spawn(async move {
        slow_client
            .call(&slow_addr, &Request::Sleep { id: 7, ms: 300 }, CALL_TIMEOUT)
            .await
    });
    eventually("the slow request is running", || {
        server.concurrency.now.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    server.stop().await;
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited for the handler"
    );
    assert_eq!(
        slow.await
            .expect("no panic")
            .expect("the in-flight call was answered"),
        Response::Done(7)
    );
    let error = client
        .call(&addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("the server is gone");
    assert!(error.is_retryable(), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_handlers_that_outlive_the_grace_period() {
    let server = TestServer::start(RpcConfig {
        shutdown_grace_ms: 100,
        ..config("server")
    })
    .await;
    let client = client("client");
    let addr = server.addr.clone();
    let stuck_client = client.clone();
    let stuck = tokio::spawn(async move {
        stuck_client
            .call(&addr, &Request::Sleep { id: 1, ms: 60_000 }, CALL_TIMEOUT)
            .await
    });
    eventually("the stuck request is running", || {
        server.concurrency.now.load(Ordering::SeqCst) == 1
    })
    .await;
    let started = Instant::now();
    let stats = server.server.clone();
    server.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "bounded by the grace period"
    );
    assert_eq!(stats.stats().handlers_cancelled, 1);
    let error = stuck
        .await
        .expect("no panic")
        .expect_err("cancelled on the server");
    assert!(matches!(error, Error::Disconnected { .. }), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_detected_by_keepalive() {
    // A "server" that completes the handshake, then never says anything again.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let silent = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buffer = BytesMut::new();
        let hello = read_frame(&mut stream, &mut buffer).await.expect("hello");
        assert_eq!(hello.kind, FrameKind::Hello);
        let welcome = Welcome {
            node_id: "silent".into(),
            protocol_version: PROTOCOL_VERSION,
        };
        let frame = encode_message(FrameKind::Welcome, 0, &welcome, 1 << 16).expect("encode");
        stream.write_all(&frame).await.expect("welcome");
        tokio::time::sleep(Duration::from_secs(10)).await;
        drop(stream);
    });
    let client: Client = RpcClient::new(RpcConfig {
        keepalive_interval_ms: 50,
        keepalive_timeout_ms: 300,
        ..config("client")
    })
    .expect("valid config");
    let started = Instant::now();
    let error = client
        .call(&addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("no answer");
    assert!(
        matches!(&error, Error::Disconnected { reason } if reason.contains("keepalive")),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(client.stats()[0].disconnects, 1);
    silent.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_frame_from_the_server_fails_pending_calls_and_is_counted() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let evil = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut buffer = BytesMut::new();
        read_frame(&mut stream, &mut buffer).await.expect("hello");
        let welcome = Welcome {
            node_id: "evil".into(),
            protocol_version: PROTOCOL_VERSION,
        };
        let frame = encode_message(FrameKind::Welcome, 0, &welcome, 1 << 16).expect("encode");
        stream.write_all(&frame).await.expect("welcome");
        let request = read_frame(&mut stream, &mut buffer).await.expect("request");
        let mut answer = encode_message(
            FrameKind::Response,
            request.request_id,
            &Response::Echo(1),
            1 << 16,
        )
        .expect("encode")
        .to_vec();
        answer[5] ^= 1; // break the CRC
        stream.write_all(&answer).await.expect("answer");
        closed_by_peer(&mut stream).await
    });
    let client = client("client");
    let error = client
        .call(&addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("corrupt answer");
    assert!(
        matches!(&error, Error::Disconnected { reason } if reason.contains("crc32c")),
        "{error}"
    );
    assert!(error.is_retryable());
    assert!(
        evil.await.expect("no panic"),
        "the client closed the connection"
    );
    let stats = &client.stats()[0];
    assert_eq!(stats.traffic.corrupt_frames, 1);
    assert_eq!(stats.disconnects, 1);
    assert!(!stats.connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_peer_fails_fast_while_backed_off() {
    // Bind and drop, so the port is (almost certainly) closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .to_string();
    let client: Client = RpcClient::new(RpcConfig {
        reconnect_backoff_min_ms: 10_000,
        reconnect_backoff_max_ms: 10_000,
        ..config("client")
    })
    .expect("valid config");
    let first = client
        .call(&addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("nobody listens");
    assert!(first.is_retryable(), "{first}");
    let started = Instant::now();
    let second = client
        .call(&addr, &Request::Echo(1), CALL_TIMEOUT)
        .await
        .expect_err("backed off");
    assert!(started.elapsed() < Duration::from_millis(100));
    assert!(
        matches!(&second, Error::Unreachable { reason } if reason.contains("next attempt")),
        "{second}"
    );
    let stats = &client.stats()[0];
    assert_eq!((stats.connect_errors, stats.errors, stats.calls), (1, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throughput_of_64_concurrent_callers() {
    let server = TestServer::start(config("server")).await;
    let client = client("client");
    client
        .call(&server.addr, &Request::Echo(0), CALL_TIMEOUT)
        .await
        .expect("connect");
    let duration = Duration::from_secs(2);
    let started = Instant::now();
    let callers = (0..64).map(|_| {
        let client = client.clone();
        let addr = server.addr.clone();
        tokio::spawn(async move {
            let mut calls = 0u64;
            while started.elapsed() < duration {
                let response = client
                    .call(&addr, &Request::Echo(calls), CALL_TIMEOUT)
                    .await
                    .expect("call");
                assert_eq!(response, Response::Echo(calls));
                calls += 1;
            }
            calls
        })
    });
    let mut total = 0;
    for caller in callers.collect::<Vec<_>>() {
        total += caller.await.expect("caller did not panic");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let traffic = &client.stats()[0].traffic;
    println!(
        "throughput: {total} calls in {elapsed:.2} s = {:.0} calls/s with 64 concurrent callers \
         on one connection ({:.1} frames per client write)",
        total as f64 / elapsed,
        traffic.frames_sent as f64 / traffic.write_batches as f64
    );
    assert!(total > 0);
    server.stop().await;
}

// ---- a connector that counts write syscalls (and shows the Connector seam) ----------------

struct CountingConnector {
    writes: Arc<AtomicU64>,
}

impl Connector for CountingConnector {
    type Stream = CountingStream;

    async fn connect(&self, addr: &str) -> io::Result<CountingStream> {
        Ok(CountingStream {
            inner: TcpConnector.connect(addr).await?,
            writes: self.writes.clone(),
        })
    }
}

/// A TCP stream counting the `write` calls that reached the socket (each is one syscall).
struct CountingStream {
    inner: TcpStream,
    writes: Arc<AtomicU64>,
}

impl AsyncRead for CountingStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(context, buffer)
    }
}

impl AsyncWrite for CountingStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buffer: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(context, buffer);
        if matches!(poll, Poll::Ready(Ok(_))) {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        poll
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_are_closed_before_their_handshake() {
    let server = TestServer::start(RpcConfig {
        connections_max: 2,
        ..config("server")
    })
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let (stream, answer, _) =
            raw_handshake(&server.addr, &hello(PROTOCOL_VERSION, CLUSTER)).await;
        assert_eq!(answer.kind, FrameKind::Welcome);
        held.push(stream);
    }
    let mut third = TcpStream::connect(&server.addr).await.expect("connect");
    assert!(closed_by_peer(&mut third).await, "the third is closed");
    let stats = server.server.stats();
    assert_eq!((stats.connections_refused, stats.connections_open), (1, 2));
    // Room again once one closes: a client connects and calls.
    drop(held.pop());
    let client = client("client");
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = client
            .call(&server.addr, &Request::Echo(7), CALL_TIMEOUT)
            .await
        {
            answered = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answered, Some(Response::Echo(7)));
    server.stop().await;
}

#[test]
fn the_byte_budget_must_hold_one_frame() {
    let too_small = RpcConfig {
        inflight_bytes_max: 1024,
        ..config("server")
    };
    let refused = too_small.validate();
    assert!(
        matches!(&refused, Err(yeskv_rpc::Error::InvalidConfig { reason }) if reason.contains("inflight_bytes_max")),
        "{refused:?}"
    );
}
