//! The server side: [`RpcServer::serve`] accepts connections, shakes hands, and runs every
//! request in its own task so a slow request never blocks the ones behind it.
//!
//! Per connection: one reader loop (this connection's task), one writer task, and one task per
//! request in flight. The reader takes one of `inflight_max` slots *before* it starts a handler;
//! when all are taken it stops reading, and TCP flow control pushes back on the client.
//!
//! Shutdown (when the `shutdown` future completes): stop accepting (the listener is dropped),
//! stop reading requests, tell every client `GoAway`, let running handlers finish and their
//! responses be written for up to `shutdown_grace_ms`, then cancel what is left and close.

use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::RpcConfig;
use crate::error::{Error, Result};
use crate::frame::{encode_frame, encode_message, Frame, FrameKind, HANDSHAKE_FRAME_BYTES_MAX};
use crate::io::{run_writer, write_frame, CatchUnwind, FrameReader};
use crate::protocol::{check_hello, check_identity, Failure, Hello, Refused, Welcome};
use crate::stats::{bump, ServerCounters, ServerStats};
use crate::transport::{Listener, PeerIdentity, Stream};

/// How long the accept loop pauses after an accept error (for example too many open files)
/// before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Longest failure reason sent to a client, in bytes.
const FAILURE_REASON_BYTES_MAX: usize = 1024;

/// Who sent a request: the client node as it introduced itself in its `Hello`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The client's node id.
    pub node_id: Arc<str>,
    /// The address the connection came from.
    pub addr: SocketAddr,
    /// The protocol version the connection speaks.
    pub protocol_version: u16,
}

/// Answers requests. Implemented for every `Fn(PeerInfo, Req) -> impl Future<Output = Resp>`;
/// implement it on a struct for handlers with state.
///
/// Each request runs in its own task; a panic is caught and answered with
/// [`Error::Remote`] on the caller's side. On shutdown a handler still running after the grace
/// period is cancelled (dropped at an `.await`), so handlers must be cancel-safe.
pub trait Handler<Req, Resp>: Send + Sync + 'static {
    /// Answers one request from `peer`.
    fn handle(&self, peer: PeerInfo, request: Req) -> impl Future<Output = Resp> + Send;
}

impl<Req, Resp, F, Fut> Handler<Req, Resp> for F
where
    F: Fn(PeerInfo, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Resp> + Send,
{
    fn handle(&self, peer: PeerInfo, request: Req) -> impl Future<Output = Resp> + Send {
        self(peer, request)
    }
}

/// The server side of the protocol, generic over the request type `Req` and the response type
/// `Resp`. Cheap to clone: clones share counters (keep one to read [`RpcServer::stats`] while
/// another serves).
pub struct RpcServer<Req, Resp> {
    shared: Arc<ServerShared>,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req, Resp> Clone for RpcServer<Req, Resp> {
    fn clone(&self) -> Self {
        RpcServer {
            shared: self.shared.clone(),
            _messages: PhantomData,
        }
    }
}

struct ServerShared {
    config: RpcConfig,
    counters: ServerCounters,
    /// One permit per open connection (`connections_max`).
    connections: Arc<Semaphore>,
    /// One permit per request payload byte held by a running handler (`inflight_bytes_max`).
    bytes: Arc<Semaphore>,
}

impl<Req, Resp> RpcServer<Req, Resp>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// A server with this configuration (validated).
    pub fn new(config: RpcConfig) -> Result<Self> {
        config.validate()?;
        let connections = Arc::new(Semaphore::new(config.connections_max));
        let bytes = Arc::new(Semaphore::new(
            config.inflight_bytes_max.min(Semaphore::MAX_PERMITS),
        ));
        Ok(RpcServer {
            shared: Arc::new(ServerShared {
                config,
                counters: ServerCounters::default(),
                connections,
                bytes,
            }),
            _messages: PhantomData,
        })
    }

    /// A snapshot of the server's counters (all `serve` calls of this server and its clones).
    pub fn stats(&self) -> ServerStats {
        self.shared.counters.snapshot()
    }

    /// The configuration this server runs with.
    pub fn config(&self) -> &RpcConfig {
        &self.shared.config
    }

    /// Accepts connections from `listener` and answers their requests with `handler` until
    /// `shutdown` completes; then shuts down gracefully (see the module doc) and returns once
    /// every connection is closed: at most about `shutdown_grace_ms` after `shutdown`.
    ///
    /// Accept errors are logged and retried after a short pause; they never end the server.
    pub async fn serve<L, H, S>(&self, mut listener: L, handler: H, shutdown: S)
    where
        L: Listener,
        H: Handler<Req, Resp>,
        S: Future<Output = ()> + Send,
    {
        let handler = Arc::new(handler);
        let stop = CancellationToken::new();
        let abort = CancellationToken::new();
        let tracker = TaskTracker::new();
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, addr)) => {
                        let Ok(slot) = self.shared.connections.clone().try_acquire_owned() else {
                            bump(&self.shared.counters.connections_refused);
                            debug!(peer = %addr, max = self.shared.config.connections_max,
                                "connection closed: connections_max open");
                            drop(stream);
                            continue;
                        };
                        bump(&self.shared.counters.connections_accepted);
                        let connection = ServerConnection {
                            shared: self.shared.clone(),
                            handler: handler.clone(),
                            addr,
                            stop: stop.clone(),
                            abort: abort.clone(),
                            tracker: tracker.clone(),
                            _messages: PhantomData,
                        };
                        let identity = L::peer_identity(&stream);
                        tracker.spawn(async move {
                            connection.run(stream, identity).await;
                            drop(slot);
                        });
                    }
                    Err(error) => {
                        warn!(%error, "accept failed; pausing");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
        drop(listener);
        info!(
            connections = self.stats().connections_open,
            "rpc server shutting down"
        );
        stop.cancel();
        tracker.close();
        let grace = self.shared.config.shutdown_grace();
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            warn!(
                grace_ms = grace.as_millis() as u64,
                "shutdown grace period over; cancelling the remaining handlers"
            );
            abort.cancel();
            tracker.wait().await;
        }
    }
}

/// Why a connection's read loop ended.
enum ReadEnd {
    /// Server shutdown: finish in-flight requests, then close.
    Stopped,
    /// The connection is unusable (closed by the client, broken, corrupt, idle).
    Closed(String),
}

/// Everything one connection's tasks share.
struct ServerConnection<H, Req, Resp> {
    shared: Arc<ServerShared>,
    handler: Arc<H>,
    addr: SocketAddr,
    /// Graceful shutdown: stop reading requests.
    stop: CancellationToken,
    /// End of the grace period: cancel handlers and writers.
    abort: CancellationToken,
    tracker: TaskTracker,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<H, Req, Resp> ServerConnection<H, Req, Resp>
where
    H: Handler<Req, Resp>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    async fn run<S: Stream>(self, stream: S, identity: PeerIdentity) {
        let counters = &self.shared.counters;
        let config = &self.shared.config;
        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut reader = FrameReader::new(
            read_half,
            HANDSHAKE_FRAME_BYTES_MAX,
            counters.traffic.clone(),
        );
        let handshake = tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            handshake = tokio::time::timeout(
                config.handshake_timeout(),
                self.handshake(&mut reader, &mut write_half, &identity),
            ) => Some(handshake),
        };
        let hello = match handshake {
            Some(Ok(Ok(accepted))) => accepted,
            Some(Ok(Err(error @ Error::Refused { .. }))) => {
                bump(&counters.handshakes_refused);
                info!(peer = %self.addr, %error, "refused a connection");
                bump(&counters.connections_closed);
                return;
            }
            Some(Ok(Err(error))) => {
                bump(&counters.handshakes_failed);
                debug!(peer = %self.addr, %error, "handshake failed");
                bump(&counters.connections_closed);
                return;
            }
            Some(Err(_elapsed)) => {
                bump(&counters.handshakes_failed);
                debug!(peer = %self.addr, "handshake timed out");
                bump(&counters.connections_closed);
                return;
            }
            None => {
                bump(&counters.connections_closed);
                return;
            }
        };
        reader.set_frame_bytes_max(config.frame_bytes_max);
        let (hello, protocol_version) = hello;
        let peer = PeerInfo {
            node_id: Arc::from(hello.node_id.as_str()),
            addr: self.addr,
            protocol_version,
        };
        debug!(peer = %self.addr, node_id = %peer.node_id, protocol_version, "client connected");

        let (queue, queue_receiver) = mpsc::channel(config.write_queue_frames_max);
        let writer_cancel = self.abort.child_token();
        let writer = tokio::spawn(run_writer(
            write_half,
            queue_receiver,
            writer_cancel.clone(),
            config.write_batch_bytes_max,
            counters.traffic.clone(),
        ));
        let end = self.read_requests(&mut reader, &peer, &queue).await;
        match end {
            ReadEnd::Stopped => {
                // Best effort: a full queue means the client is busy reading responses anyway.
                let _ = queue.try_send(connection_frame(FrameKind::GoAway));
            }
            ReadEnd::Closed(reason) => {
                debug!(peer = %self.addr, %reason, "connection closed");
                writer_cancel.cancel();
            }
        }
        // The writer drains until every handler of this connection has dropped its sender.
        drop(queue);
        let _ = writer.await;
        bump(&counters.connections_closed);
    }

    /// Reads the `Hello` and answers `Welcome` or `Refused` (also when the node id it announces
    /// is not the one the network proved); the accepted `Hello` and the protocol version agreed.
    async fn handshake<R, W>(
        &self,
        reader: &mut FrameReader<R>,
        writer: &mut W,
        identity: &PeerIdentity,
    ) -> Result<(Hello, u16)>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let traffic = &self.shared.counters.traffic;
        let frame = reader.next_frame().await?.ok_or_else(|| {
            Error::disconnected("the client closed the connection before its hello")
        })?;
        if frame.kind != FrameKind::Hello {
            bump(&traffic.corrupt_frames);
            return Err(Error::corrupt(format!(
                "expected a hello, got a {:?} frame",
                frame.kind
            )));
        }
        let config = &self.shared.config;
        let checked = check_hello(&frame.payload, &config.cluster_id, config.protocol_versions)
            .and_then(|(hello, agreed)| match check_identity(&hello, identity) {
                Ok(()) => Ok((hello, agreed)),
                Err(refusal) => {
                    bump(&self.shared.counters.identity_refused);
                    metrics::counter!("yeskv_peer_refused_total", "reason" => "identity")
                        .increment(1);
                    Err(refusal)
                }
            });
        match checked {
            Ok((hello, agreed)) => {
                let welcome = Welcome {
                    node_id: config.node_id.clone(),
                    protocol_version: agreed,
                };
                let welcome =
                    encode_message(FrameKind::Welcome, 0, &welcome, HANDSHAKE_FRAME_BYTES_MAX)?;
                write_frame(writer, &welcome, traffic).await?;
                Ok((hello, agreed))
            }
            Err(reason) => {
                let refused = Refused {
                    reason: truncate(reason.0, FAILURE_REASON_BYTES_MAX),
                };
                let frame =
                    encode_message(FrameKind::Refused, 0, &refused, HANDSHAKE_FRAME_BYTES_MAX)?;
                write_frame(writer, &frame, traffic).await?;
                Err(Error::Refused {
                    reason: refused.reason,
                })
            }
        }
    }

    /// The read loop: starts a handler task per request, answers pings, watches for silence.
    async fn read_requests<R: AsyncRead + Unpin>(
        &self,
        reader: &mut FrameReader<R>,
        peer: &PeerInfo,
        queue: &mpsc::Sender<Bytes>,
    ) -> ReadEnd {
        let counters = &self.shared.counters;
        let config = &self.shared.config;
        let slots = Arc::new(Semaphore::new(config.inflight_max));
        let keepalive_timeout = config.keepalive_timeout();
        let mut ticker = tokio::time::interval_at(
            Instant::now() + config.keepalive_interval(),
            config.keepalive_interval(),
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_received = Instant::now();
        loop {
            let frame = tokio::select! {
                biased;
                _ = self.stop.cancelled() => return ReadEnd::Stopped,
                frame = reader.next_frame() => frame,
                _ = ticker.tick() => {
                    let silent = last_received.elapsed();
                    if silent >= keepalive_timeout {
                        bump(&counters.idle_closed);
                        return ReadEnd::Closed(format!(
                            "nothing received for {} ms (keepalive timeout)",
                            silent.as_millis()
                        ));
                    }
                    continue;
                }
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => return ReadEnd::Closed("the client closed the connection".into()),
                Err(error) => {
                    warn!(peer = %self.addr, %error, "closing connection");
                    return ReadEnd::Closed(error.to_string());
                }
            };
            last_received = Instant::now();
            match frame.kind {
                FrameKind::Request => {
                    bump(&counters.requests);
                    let slot = tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return ReadEnd::Stopped,
                        slot = slots.clone().acquire_owned() => match slot {
                            Ok(slot) => slot,
                            Err(_closed) => return ReadEnd::Closed("slots closed".into()),
                        },
                    };
                    // Frames are at most `frame_bytes_max` <= `inflight_bytes_max` (and 1 GiB,
                    // which fits a u32), so one always fits once others finish.
                    let room = frame
                        .payload
                        .len()
                        .clamp(1, self.shared.config.inflight_bytes_max);
                    let room = u32::try_from(room).unwrap_or(u32::MAX);
                    let bytes = tokio::select! {
                        biased;
                        _ = self.stop.cancelled() => return ReadEnd::Stopped,
                        bytes = self.shared.bytes.clone().acquire_many_owned(room) => match bytes {
                            Ok(bytes) => bytes,
                            Err(_closed) => return ReadEnd::Closed("byte budget closed".into()),
                        },
                    };
                    self.tracker.spawn(handle_request(
                        self.shared.clone(),
                        self.handler.clone(),
                        peer.clone(),
                        frame,
                        queue.clone(),
                        self.abort.clone(),
                        (slot, bytes),
                    ));
                }
                FrameKind::Ping => {
                    let _ = queue.try_send(connection_frame(FrameKind::Pong));
                }
                other => {
                    bump(&counters.traffic.corrupt_frames);
                    return ReadEnd::Closed(format!("unexpected {other:?} frame from a client"));
                }
            }
        }
    }
}

/// One request's task: decode, handle, encode, queue the answer.
async fn handle_request<H, Req, Resp>(
    shared: Arc<ServerShared>,
    handler: Arc<H>,
    peer: PeerInfo,
    frame: Frame,
    queue: mpsc::Sender<Bytes>,
    abort: CancellationToken,
    _held: (OwnedSemaphorePermit, OwnedSemaphorePermit),
) where
    H: Handler<Req, Resp>,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let request_id = frame.request_id;
    let answer = async {
        let request = match postcard::from_bytes::<Req>(&frame.payload) {
            Ok(request) => request,
            Err(error) => {
                return failure_frame(
                    &shared,
                    request_id,
                    format!("cannot decode request: {error}"),
                )
            }
        };
        // The handler is called inside the future, so a panic before its first await is caught too.
        let handled = CatchUnwind::new(async { handler.handle(peer, request).await }).await;
        match handled {
            Ok(response) => match encode_message(
                FrameKind::Response,
                request_id,
                &response,
                shared.config.frame_bytes_max,
            ) {
                Ok(frame) => frame,
                Err(error) => failure_frame(
                    &shared,
                    request_id,
                    format!("cannot encode response: {error}"),
                ),
            },
            Err(panic) => {
                bump(&shared.counters.handler_panics);
                warn!(request_id, panic = %panic, "rpc handler panicked");
                failure_frame(&shared, request_id, format!("handler panicked: {panic}"))
            }
        }
    };
    let answer = tokio::select! {
        biased;
        _ = abort.cancelled() => {
            bump(&shared.counters.handlers_cancelled);
            return;
        }
        answer = answer => answer,
    };
    // Fails only if the writer is gone (connection closed): the answer has nowhere to go.
    let _ = queue.send(answer).await;
}

/// A `Failure` answer for `request_id`.
fn failure_frame(shared: &ServerShared, request_id: u64, reason: String) -> Bytes {
    bump(&shared.counters.failures_sent);
    let failure = Failure {
        reason: truncate(reason, FAILURE_REASON_BYTES_MAX),
    };
    // Cannot fail: the reason is bounded far below the smallest allowed frame_bytes_max.
    encode_message(
        FrameKind::Failure,
        request_id,
        &failure,
        HANDSHAKE_FRAME_BYTES_MAX,
    )
    .unwrap_or_default()
}

/// An empty connection-level frame (`GoAway`, `Pong`).
fn connection_frame(kind: FrameKind) -> Bytes {
    // Cannot fail: an empty frame is 17 bytes.
    Bytes::from(encode_frame(kind, 0, &[], HANDSHAKE_FRAME_BYTES_MAX).unwrap_or_default())
}

/// Cuts `text` to at most `bytes_max` bytes, on a character boundary.
fn truncate(mut text: String, bytes_max: usize) -> String {
    if text.len() > bytes_max {
        let mut end = bytes_max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_respects_character_boundaries() {
        assert_eq!(truncate("héllo".to_string(), 2), "h");
        assert_eq!(truncate("héllo".to_string(), 3), "hé");
        assert_eq!(truncate("short".to_string(), 100), "short");
    }
}
