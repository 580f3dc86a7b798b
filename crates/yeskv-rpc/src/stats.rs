//! Counters, kept beside the code they count, and the plain snapshots the node exports (to
//! Prometheus). Counters are monotonic `u64`s (relaxed atomics: each is exact on its own, a
//! snapshot is not one instant across counters); gauges are marked as such.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Adds one to a counter.
pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Adds `amount` to a counter.
pub(crate) fn add(counter: &AtomicU64, amount: u64) {
    counter.fetch_add(amount, Ordering::Relaxed);
}

fn read(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

/// Byte and frame counters of the connections of one peer (client side) or of a whole server.
#[derive(Debug, Default)]
pub(crate) struct TrafficCounters {
    pub(crate) bytes_sent: AtomicU64,
    pub(crate) bytes_received: AtomicU64,
    pub(crate) frames_sent: AtomicU64,
    pub(crate) frames_received: AtomicU64,
    pub(crate) write_batches: AtomicU64,
    pub(crate) corrupt_frames: AtomicU64,
    pub(crate) oversized_frames: AtomicU64,
}

impl TrafficCounters {
    pub(crate) fn snapshot(&self) -> TrafficStats {
        TrafficStats {
            bytes_sent: read(&self.bytes_sent),
            bytes_received: read(&self.bytes_received),
            frames_sent: read(&self.frames_sent),
            frames_received: read(&self.frames_received),
            write_batches: read(&self.write_batches),
            corrupt_frames: read(&self.corrupt_frames),
            oversized_frames: read(&self.oversized_frames),
        }
    }
}

/// Traffic of one peer's connections (client) or of all connections (server), since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    /// Bytes written to the sockets.
    pub bytes_sent: u64,
    /// Bytes read from the sockets.
    pub bytes_received: u64,
    /// Frames written (handshake and keepalive frames included).
    pub frames_sent: u64,
    /// Valid frames read.
    pub frames_received: u64,
    /// `write_all` calls of the writer tasks; `frames_sent / write_batches` is the coalescing
    /// factor (handshake frames, written before the writer task starts, count here too).
    pub write_batches: u64,
    /// Frames that failed their checksum or carried an unknown or unexpected kind; each closed
    /// its connection.
    pub corrupt_frames: u64,
    /// Frames over `frame_bytes_max`; each closed its connection.
    pub oversized_frames: u64,
}

/// Counters of one peer of an [`crate::RpcClient`].
#[derive(Debug, Default)]
pub(crate) struct PeerCounters {
    pub(crate) traffic: Arc<TrafficCounters>,
    pub(crate) calls: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) connects: AtomicU64,
    pub(crate) connect_errors: AtomicU64,
    pub(crate) disconnects: AtomicU64,
    pub(crate) late_responses: AtomicU64,
}

/// A snapshot of one peer of an [`crate::RpcClient`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's address, as passed to [`crate::RpcClient::call`].
    pub addr: String,
    /// The node id the peer announced in its last `Welcome`, if it ever answered.
    pub remote_node_id: Option<String>,
    /// Gauge: a connection is open and accepting new calls.
    pub connected: bool,
    /// The protocol version the open connection speaks (`None` while there is none).
    pub protocol_version: Option<u16>,
    /// Gauge: calls awaiting a response on the current connection.
    pub inflight: u64,
    /// Calls made (each ends as a success, an error or a timeout).
    pub calls: u64,
    /// Calls that failed with an error other than a timeout.
    pub errors: u64,
    /// Calls that hit their deadline.
    pub timeouts: u64,
    /// Connections established (handshake completed).
    pub connects: u64,
    /// Connections established after the first one: `connects - 1`, or 0.
    pub reconnects: u64,
    /// Connection attempts that failed (connect error, handshake refused or timed out).
    pub connect_errors: u64,
    /// Established connections that closed (broken, corrupt, idle, peer shutdown).
    pub disconnects: u64,
    /// Responses that arrived after their call had timed out; dropped.
    pub late_responses: u64,
    /// Bytes and frames.
    pub traffic: TrafficStats,
}

impl PeerCounters {
    pub(crate) fn snapshot(
        &self,
        addr: &str,
        remote_node_id: Option<String>,
        protocol_version: Option<u16>,
        inflight: u64,
    ) -> PeerStats {
        let connected = protocol_version.is_some();
        let connects = read(&self.connects);
        PeerStats {
            addr: addr.to_string(),
            remote_node_id,
            connected,
            protocol_version,
            inflight,
            calls: read(&self.calls),
            errors: read(&self.errors),
            timeouts: read(&self.timeouts),
            connects,
            reconnects: connects.saturating_sub(1),
            connect_errors: read(&self.connect_errors),
            disconnects: read(&self.disconnects),
            late_responses: read(&self.late_responses),
            traffic: self.traffic.snapshot(),
        }
    }
}

/// Counters of an [`crate::RpcServer`].
#[derive(Debug, Default)]
pub(crate) struct ServerCounters {
    pub(crate) traffic: Arc<TrafficCounters>,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections_closed: AtomicU64,
    pub(crate) handshakes_refused: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) identity_refused: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) failures_sent: AtomicU64,
    pub(crate) handler_panics: AtomicU64,
    pub(crate) handlers_cancelled: AtomicU64,
    pub(crate) idle_closed: AtomicU64,
}

/// A snapshot of an [`crate::RpcServer`]'s counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted by the listener.
    pub connections_accepted: u64,
    /// Connections closed at once because `connections_max` were open (not counted as
    /// accepted).
    pub connections_refused: u64,
    /// Gauge: connections open now (accepted and not yet closed).
    pub connections_open: u64,
    /// Handshakes refused (other cluster, other protocol version, bad node id).
    pub handshakes_refused: u64,
    /// Handshakes that failed otherwise (timeout, garbage, disconnect).
    pub handshakes_failed: u64,
    /// Handshakes refused because the node id announced is not the one the network proved (a
    /// certificate naming another node, or no node); counted in `handshakes_refused` too.
    pub identity_refused: u64,
    /// Requests received and handed to the handler.
    pub requests: u64,
    /// `Failure` answers sent (request did not decode, handler panicked, response too large).
    pub failures_sent: u64,
    /// Handler invocations that panicked (each answered with a `Failure`).
    pub handler_panics: u64,
    /// Handlers cancelled because the shutdown grace period ran out.
    pub handlers_cancelled: u64,
    /// Connections closed because nothing arrived within the keepalive timeout.
    pub idle_closed: u64,
    /// Bytes and frames.
    pub traffic: TrafficStats,
}

impl ServerCounters {
    pub(crate) fn snapshot(&self) -> ServerStats {
        let accepted = read(&self.connections_accepted);
        ServerStats {
            connections_accepted: accepted,
            connections_refused: read(&self.connections_refused),
            connections_open: accepted.saturating_sub(read(&self.connections_closed)),
            handshakes_refused: read(&self.handshakes_refused),
            handshakes_failed: read(&self.handshakes_failed),
            identity_refused: read(&self.identity_refused),
            requests: read(&self.requests),
            failures_sent: read(&self.failures_sent),
            handler_panics: read(&self.handler_panics),
            handlers_cancelled: read(&self.handlers_cancelled),
            idle_closed: read(&self.idle_closed),
            traffic: self.traffic.snapshot(),
        }
    }
}
