//! The client side: [`RpcClient`] keeps one multiplexed connection per peer address.
//!
//! A call encodes its request (in the caller's task, so encoding runs in parallel), gets the
//! peer's connection (connecting lazily, at most one attempt at a time per peer), takes one of
//! the connection's `inflight_max` slots, registers a one-shot channel under a fresh request id,
//! queues the frame for the writer task and awaits the response — all under one deadline. The
//! connection's reader task routes each response to its caller by request id, so responses may
//! come back in any order.
//!
//! Invariants:
//! - A request id is used once per connection (a counter from 1); a response is delivered to at
//!   most one caller, and only to the caller that registered that id on that connection.
//! - When a call ends for any reason (response, timeout, cancellation by dropping the future), its
//!   pending entry is gone: a drop guard removes it, so a late response finds nothing and is
//!   counted and dropped.
//! - When a connection closes, it is marked closed and its pending calls are failed with
//!   [`Error::Disconnected`] under the same lock that registers calls, so no call can be left
//!   waiting on a dead connection.
//! - After a failed connection attempt the peer is backed off (exponential, jittered, capped):
//!   calls during the backoff fail fast instead of each waiting for a connect timeout, so the
//!   node can go to another replica at once (Dynamo §4.6, sloppy quorum and hinted handoff).

use std::collections::{BTreeMap, HashMap};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::backoff::Backoff;
use crate::config::RpcConfig;
use crate::error::{Error, Result};
use crate::frame::{
    encode_frame, encode_message, Frame, FrameKind, UnsealedFrame, HANDSHAKE_FRAME_BYTES_MAX,
};
use crate::io::{run_writer, write_frame, FrameReader, WriterEnd};
use crate::protocol::{Failure, Hello, Refused, Welcome, PROTOCOL_VERSION_MIN};
use crate::stats::{bump, PeerCounters, PeerStats};
use crate::transport::{Connector, PeerIdentity, TcpConnector};

/// A client for the RPC protocol, generic over the request type `Req`, the response type `Resp`
/// and the network ([`Connector`]).
///
/// Cheap to clone (all clones share the connections). Dropping the last clone closes every
/// connection; calls still pending on them fail with [`Error::Disconnected`].
pub struct RpcClient<Req, Resp, C: Connector = TcpConnector> {
    inner: Arc<ClientInner<C>>,
    _messages: PhantomData<fn(&Req) -> Resp>,
}

impl<Req, Resp, C: Connector> Clone for RpcClient<Req, Resp, C> {
    fn clone(&self) -> Self {
        RpcClient {
            inner: self.inner.clone(),
            _messages: PhantomData,
        }
    }
}

impl<Req, Resp> RpcClient<Req, Resp, TcpConnector>
where
    Req: Serialize,
    Resp: DeserializeOwned,
{
    /// A client over real TCP, with reconnect jitter seeded from the OS.
    pub fn new(config: RpcConfig) -> Result<Self> {
        Self::with_connector(config, TcpConnector, rand::random())
    }
}

impl<Req, Resp, C> RpcClient<Req, Resp, C>
where
    Req: Serialize,
    Resp: DeserializeOwned,
    C: Connector,
{
    /// A client over any network. `rng_seed` seeds the reconnect jitter: the same seed gives the
    /// same delays (for deterministic simulation).
    pub fn with_connector(config: RpcConfig, connector: C, rng_seed: u64) -> Result<Self> {
        config.validate()?;
        Ok(RpcClient {
            inner: Arc::new(ClientInner {
                config,
                connector,
                rng: Mutex::new(StdRng::seed_from_u64(rng_seed)),
                peers: Mutex::new(HashMap::new()),
                closed: CancellationToken::new(),
            }),
            _messages: PhantomData,
        })
    }

    /// Sends `request` to the node at `addr` (`"host:port"`) and waits for its response, for at
    /// most `timeout` in total (connecting, waiting for a slot, sending and receiving).
    ///
    /// Errors: [`Error::Timeout`] when the deadline passes (the request may still run on the
    /// peer; its response will be dropped); [`Error::Disconnected`] or [`Error::Io`] when the peer
    /// cannot be reached or the connection breaks; [`Error::Refused`] when the peer refuses the
    /// handshake; [`Error::FrameTooLarge`] / [`Error::Encode`] before anything is sent;
    /// [`Error::Decode`] if the response is not a `Resp`; [`Error::Remote`] if the peer could not
    /// handle the request. See [`Error::is_retryable`].
    pub async fn call(&self, addr: &str, request: &Req, timeout: Duration) -> Result<Resp> {
        self.call_since(addr, request, PROTOCOL_VERSION_MIN, timeout)
            .await
    }

    /// [`RpcClient::call`] for a request introduced in protocol version `since`: sent only on a
    /// connection that agreed on `since` or later; to a peer of an older release it fails with
    /// [`Error::Unsupported`] before anything is sent.
    pub async fn call_since(
        &self,
        addr: &str,
        request: &Req,
        since: u16,
        timeout: Duration,
    ) -> Result<Resp> {
        let peer = self.inner.peer(addr);
        bump(&peer.counters.calls);
        let deadline = Instant::now() + timeout;
        let call = self.inner.call(&peer, request, since);
        let result = match tokio::time::timeout_at(deadline, call).await {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Timeout {
                timeout_ms: timeout.as_millis().try_into().unwrap_or(u64::MAX),
            }),
        };
        match &result {
            Ok(_) => {}
            Err(Error::Timeout { .. }) => bump(&peer.counters.timeouts),
            Err(_) => bump(&peer.counters.errors),
        }
        result
    }

    /// A snapshot of every peer's counters, sorted by address.
    pub fn stats(&self) -> Vec<PeerStats> {
        let peers: Vec<Arc<Peer>> = self.inner.peers.lock().values().cloned().collect();
        let mut stats: Vec<PeerStats> = peers
            .iter()
            .map(|peer| {
                let usable = peer.usable();
                let inflight = usable.as_ref().map_or(0, |connection| {
                    connection
                        .inflight_max
                        .saturating_sub(connection.slots.available_permits())
                        as u64
                });
                peer.counters.snapshot(
                    &peer.addr,
                    peer.remote_node_id.lock().clone(),
                    usable
                        .as_ref()
                        .map(|connection| connection.protocol_version),
                    inflight,
                )
            })
            .collect();
        stats.sort_by(|a, b| a.addr.cmp(&b.addr));
        stats
    }

    /// Closes the connection to `addr`, if any (pending calls fail with
    /// [`Error::Disconnected`]); the next call connects again. Counters are kept.
    pub fn disconnect(&self, addr: &str) {
        let peer = self.inner.peers.lock().get(addr).cloned();
        if let Some(peer) = peer {
            let connection = peer.current.lock().take();
            if let Some(connection) = connection {
                connection.close("closed by the caller");
            }
        }
    }

    /// Closes the connection to `addr` and drops its counters: for a node that left the
    /// cluster (the peer table would otherwise keep one entry per address ever called).
    pub fn forget(&self, addr: &str) {
        self.disconnect(addr);
        self.inner.peers.lock().remove(addr);
    }

    /// The configuration this client runs with.
    pub fn config(&self) -> &RpcConfig {
        &self.inner.config
    }
}

/// State shared by all clones of one client.
struct ClientInner<C> {
    config: RpcConfig,
    connector: C,
    rng: Mutex<StdRng>,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Parent of every connection's token: cancelled when the last client clone is dropped.
    closed: CancellationToken,
}

impl<C> Drop for ClientInner<C> {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// One peer address: its counters, its current connection and its reconnect state.
struct Peer {
    addr: String,
    counters: Arc<PeerCounters>,
    current: Mutex<Option<Arc<Connection>>>,
    remote_node_id: Mutex<Option<String>>,
    /// Held while connecting: one attempt per peer at a time; callers queue behind it.
    reconnect: tokio::sync::Mutex<Reconnect>,
}

struct Reconnect {
    backoff: Backoff,
    /// No attempt before this instant (set after a failure).
    retry_at: Option<Instant>,
    /// The last failure, replayed to calls during the backoff.
    last_error: Option<Error>,
}

impl Peer {
    /// The current connection if it accepts new calls.
    fn usable(&self) -> Option<Arc<Connection>> {
        self.current
            .lock()
            .as_ref()
            .filter(|connection| connection.is_usable())
            .cloned()
    }
}

impl<C: Connector> ClientInner<C> {
    fn peer(&self, addr: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get(addr) {
            return peer.clone();
        }
        let peer = Arc::new(Peer {
            addr: addr.to_string(),
            counters: Arc::new(PeerCounters::default()),
            current: Mutex::new(None),
            remote_node_id: Mutex::new(None),
            reconnect: tokio::sync::Mutex::new(Reconnect {
                backoff: Backoff::new(
                    self.config.reconnect_backoff_min_ms,
                    self.config.reconnect_backoff_max_ms,
                ),
                retry_at: None,
                last_error: None,
            }),
        });
        peers.insert(addr.to_string(), peer.clone());
        peer
    }

    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: &Arc<Peer>,
        request: &Req,
        since: u16,
    ) -> Result<Resp> {
        let unsealed = UnsealedFrame::encode(request, self.config.frame_bytes_max)?;
        let connection = self.connection(peer).await.map_err(Error::before_sending)?;
        if connection.protocol_version < since {
            return Err(Error::Unsupported {
                needed: since,
                agreed: connection.protocol_version,
            });
        }
        let _slot = connection
            .slots
            .acquire()
            .await
            .map_err(|_| connection.closed_error())?;
        let request_id = connection.next_request_id.fetch_add(1, Ordering::Relaxed);
        let response = connection.register(request_id)?;
        let mut guard = PendingGuard {
            connection: &connection,
            request_id,
            armed: true,
        };
        connection
            .queue
            .send(unsealed.seal(FrameKind::Request, request_id))
            .await
            .map_err(|_| connection.closed_error())?;
        let payload = response.await.map_err(|_| connection.closed_error())??;
        guard.armed = false;
        postcard::from_bytes(&payload).map_err(|error| Error::Decode {
            reason: error.to_string(),
        })
    }

    /// The peer's usable connection, connecting if there is none and the peer is not backed off.
    async fn connection(&self, peer: &Arc<Peer>) -> Result<Arc<Connection>> {
        if let Some(connection) = peer.usable() {
            return Ok(connection);
        }
        let mut reconnect = peer.reconnect.lock().await;
        if let Some(connection) = peer.usable() {
            return Ok(connection);
        }
        let now = Instant::now();
        if let Some(retry_at) = reconnect.retry_at.filter(|retry_at| now < *retry_at) {
            let wait_ms = (retry_at - now).as_millis();
            return Err(match &reconnect.last_error {
                Some(Error::Refused { reason }) => Error::Refused {
                    reason: reason.clone(),
                },
                last_error => Error::disconnected(format!(
                    "{} is unreachable ({}); next attempt in {wait_ms} ms",
                    peer.addr,
                    last_error
                        .as_ref()
                        .map_or_else(|| "no error recorded".to_string(), ToString::to_string)
                )),
            });
        }
        let attempt =
            match tokio::time::timeout(self.config.handshake_timeout(), self.establish(peer)).await
            {
                Ok(attempt) => attempt,
                Err(_elapsed) => Err(Error::Timeout {
                    timeout_ms: self.config.handshake_timeout_ms,
                }),
            };
        match attempt {
            Ok(connection) => {
                reconnect.backoff.reset();
                reconnect.retry_at = None;
                reconnect.last_error = None;
                bump(&peer.counters.connects);
                *peer.current.lock() = Some(connection.clone());
                Ok(connection)
            }
            Err(error) => {
                bump(&peer.counters.connect_errors);
                let delay = reconnect.backoff.next_delay(&mut *self.rng.lock());
                debug!(peer = %peer.addr, %error, delay_ms = delay.as_millis() as u64,
                    "connection attempt failed; backing off");
                reconnect.retry_at = Some(Instant::now() + delay);
                reconnect.last_error = Some(replayable(&error));
                Err(error)
            }
        }
    }

    /// Connects, shakes hands and starts the connection's reader and writer tasks.
    async fn establish(&self, peer: &Arc<Peer>) -> Result<Arc<Connection>> {
        let config = &self.config;
        let traffic = peer.counters.traffic.clone();
        let stream = self.connector.connect(&peer.addr).await?;
        let identity = C::peer_identity(&stream);
        let (read_half, mut write_half) = tokio::io::split(stream);
        let mut reader = FrameReader::new(read_half, HANDSHAKE_FRAME_BYTES_MAX, traffic.clone());
        let (oldest, newest) = config.protocol_versions;
        let hello = Hello {
            protocol_version: oldest,
            cluster_id: config.cluster_id.clone(),
            node_id: config.node_id.clone(),
            protocol_version_max: newest,
        };
        let hello = encode_message(FrameKind::Hello, 0, &hello, HANDSHAKE_FRAME_BYTES_MAX)?;
        write_frame(&mut write_half, &hello, &traffic).await?;
        let frame = reader.next_frame().await?.ok_or_else(|| {
            Error::disconnected("the peer closed the connection during the handshake")
        })?;
        let welcome: Welcome = match frame.kind {
            FrameKind::Welcome => Welcome::decode(&frame.payload, oldest)
                .map_err(|error| Error::corrupt(format!("malformed welcome: {error}")))?,
            FrameKind::Refused => {
                let reason = postcard::from_bytes::<Refused>(&frame.payload).map_or_else(
                    |error| format!("(the refusal did not decode: {error})"),
                    |refused| refused.reason,
                );
                return Err(Error::Refused { reason });
            }
            other => {
                bump(&traffic.corrupt_frames);
                return Err(Error::corrupt(format!(
                    "expected a welcome, got a {other:?} frame"
                )));
            }
        };
        if let PeerIdentity::Node(proved) = &identity {
            if *proved != welcome.node_id {
                return Err(Error::Refused {
                    reason: format!(
                        "{} welcomes as node {:?} but its certificate is node {proved:?}'s",
                        peer.addr, welcome.node_id
                    ),
                });
            }
        }
        if !(oldest..=newest).contains(&welcome.protocol_version) {
            return Err(Error::Refused {
                reason: format!(
                    "{} welcomes at protocol version {}, which this node (speaking {oldest} to \
                     {newest}) did not offer",
                    peer.addr, welcome.protocol_version
                ),
            });
        }
        reader.set_frame_bytes_max(config.frame_bytes_max);
        *peer.remote_node_id.lock() = Some(welcome.node_id.clone());

        let (queue, queue_receiver) = mpsc::channel(config.write_queue_frames_max);
        let connection = Arc::new(Connection {
            queue,
            pending: Mutex::new(PendingCalls {
                calls: BTreeMap::new(),
                closed: None,
            }),
            next_request_id: AtomicU64::new(1),
            slots: Semaphore::new(config.inflight_max),
            inflight_max: config.inflight_max,
            protocol_version: welcome.protocol_version,
            draining: AtomicBool::new(false),
            cancel: self.closed.child_token(),
            counters: peer.counters.clone(),
        });
        debug!(peer = %peer.addr, remote_node_id = %welcome.node_id,
            protocol_version = welcome.protocol_version, "connected");

        let writer_connection = connection.clone();
        let batch_bytes_max = config.write_batch_bytes_max;
        let addr = peer.addr.clone();
        tokio::spawn(async move {
            let end = run_writer(
                write_half,
                queue_receiver,
                writer_connection.cancel.clone(),
                batch_bytes_max,
                traffic,
            )
            .await;
            let reason = match end {
                WriterEnd::Failed(error) => format!("write failed: {error}"),
                WriterEnd::Drained | WriterEnd::Cancelled => "closed".to_string(),
            };
            if writer_connection.close(&reason) {
                debug!(peer = %addr, %reason, "connection closed");
            }
        });
        tokio::spawn(read_responses(
            reader,
            connection.clone(),
            peer.addr.clone(),
            config.keepalive_interval(),
            config.keepalive_timeout(),
        ));
        Ok(connection)
    }
}

/// An error to replay to calls made while the peer is backed off (the original, not being
/// `Clone`, went to the call that made the attempt).
fn replayable(error: &Error) -> Error {
    match error {
        Error::Refused { reason } => Error::Refused {
            reason: reason.clone(),
        },
        other => Error::disconnected(other.to_string()),
    }
}

/// The reader task of a client connection: routes responses, sends keepalive pings, and closes
/// the connection on end of stream, a corrupt frame or silence.
async fn read_responses<R: tokio::io::AsyncRead + Unpin>(
    mut reader: FrameReader<R>,
    connection: Arc<Connection>,
    addr: String,
    keepalive_interval: Duration,
    keepalive_timeout: Duration,
) {
    let mut ticker =
        tokio::time::interval_at(Instant::now() + keepalive_interval, keepalive_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_received = Instant::now();
    let reason = loop {
        tokio::select! {
            biased;
            _ = connection.cancel.cancelled() => break "closed".to_string(),
            frame = reader.next_frame() => match frame {
                Ok(Some(frame)) => {
                    last_received = Instant::now();
                    if let Err(error) = connection.on_frame(frame) {
                        break error.to_string();
                    }
                }
                Ok(None) => break "the peer closed the connection".to_string(),
                Err(error) => break error.to_string(),
            },
            _ = ticker.tick() => {
                let silent = last_received.elapsed();
                if silent >= keepalive_timeout {
                    break format!(
                        "nothing received for {} ms (keepalive timeout)",
                        silent.as_millis()
                    );
                }
                // A full queue means frames are flowing anyway; skip this ping.
                let _ = connection.queue.try_send(ping_frame());
            }
        }
    };
    if connection.close(&reason) {
        debug!(peer = %addr, %reason, "connection closed");
    }
}

fn ping_frame() -> Bytes {
    static PING: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    PING.get_or_init(|| {
        Bytes::from(
            encode_frame(FrameKind::Ping, 0, &[], HANDSHAKE_FRAME_BYTES_MAX).unwrap_or_default(),
        )
    })
    .clone()
}

/// One established client connection.
struct Connection {
    /// Frames for the writer task.
    queue: mpsc::Sender<Bytes>,
    pending: Mutex<PendingCalls>,
    next_request_id: AtomicU64,
    /// `inflight_max` permits; a call holds one until it ends.
    slots: Semaphore,
    inflight_max: usize,
    /// The protocol version agreed in the handshake.
    protocol_version: u16,
    /// The server sent `GoAway`: no new calls here (pending ones still complete).
    draining: AtomicBool,
    /// Cancelled when the connection closes; stops the reader and writer tasks.
    cancel: CancellationToken,
    counters: Arc<PeerCounters>,
}

struct PendingCalls {
    /// By request id. Ordered, so closing a connection fails its calls in the order they were
    /// made: the wake-up order then depends on nothing random (the simulator replays it).
    calls: BTreeMap<u64, oneshot::Sender<Result<Bytes>>>,
    /// `Some(reason)` once the connection is closed: no call may register any more.
    closed: Option<String>,
}

impl Connection {
    fn is_usable(&self) -> bool {
        !self.cancel.is_cancelled() && !self.draining.load(Ordering::Relaxed)
    }

    fn closed_error(&self) -> Error {
        let reason = self.pending.lock().closed.clone();
        Error::disconnected(reason.unwrap_or_else(|| "connection closed".to_string()))
    }

    /// Registers a call; fails if the connection is already closed.
    fn register(&self, request_id: u64) -> Result<oneshot::Receiver<Result<Bytes>>> {
        let (sender, receiver) = oneshot::channel();
        let mut pending = self.pending.lock();
        if let Some(reason) = &pending.closed {
            return Err(Error::disconnected(reason.clone()));
        }
        pending.calls.insert(request_id, sender);
        Ok(receiver)
    }

    /// Hands a response (or failure) to its caller; counts it as late if the caller is gone.
    fn complete(&self, request_id: u64, result: Result<Bytes>) {
        let sender = self.pending.lock().calls.remove(&request_id);
        let delivered = sender.is_some_and(|sender| sender.send(result).is_ok());
        if !delivered {
            bump(&self.counters.late_responses);
        }
    }

    /// Handles one frame from the server; an error closes the connection.
    fn on_frame(&self, frame: Frame) -> Result<()> {
        match frame.kind {
            FrameKind::Response => self.complete(frame.request_id, Ok(frame.payload)),
            FrameKind::Failure => {
                let reason = postcard::from_bytes::<Failure>(&frame.payload).map_or_else(
                    |error| format!("(the failure did not decode: {error})"),
                    |failure| failure.reason,
                );
                self.complete(frame.request_id, Err(Error::Remote { reason }));
            }
            FrameKind::Pong => {}
            FrameKind::GoAway => self.draining.store(true, Ordering::Relaxed),
            FrameKind::Hello
            | FrameKind::Welcome
            | FrameKind::Refused
            | FrameKind::Request
            | FrameKind::Ping => {
                bump(&self.counters.traffic.corrupt_frames);
                return Err(Error::corrupt(format!(
                    "unexpected {:?} frame from the server",
                    frame.kind
                )));
            }
        }
        Ok(())
    }

    /// Closes the connection: no more registrations, every pending call fails with
    /// [`Error::Disconnected`], the tasks stop. Returns whether this call did the closing.
    fn close(&self, reason: &str) -> bool {
        let calls = {
            let mut pending = self.pending.lock();
            if pending.closed.is_some() {
                return false;
            }
            pending.closed = Some(reason.to_string());
            std::mem::take(&mut pending.calls)
        };
        // Counted before any caller learns of the close, so its stats already show it.
        bump(&self.counters.disconnects);
        self.slots.close();
        self.cancel.cancel();
        for (_, sender) in calls {
            let _ = sender.send(Err(Error::disconnected(reason)));
        }
        true
    }
}

/// Removes a call's pending entry when the call ends without a response (timeout, error, or the
/// caller dropping the future).
struct PendingGuard<'a> {
    connection: &'a Connection,
    request_id: u64,
    armed: bool,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.connection
                .pending
                .lock()
                .calls
                .remove(&self.request_id);
        }
    }
}
