//! The node's error enum: what can go wrong serving a request, and how each maps to HTTP.
//!
//! Each variant says what happened and where: this node's own storage refusing
//! ([`Error::Storage`]) is not a peer that could not be asked ([`Error::PeerDown`],
//! [`Error::NoAddress`]), a call that failed in transport ([`Error::Transport`], which may have
//! run there), a peer that refused before doing anything ([`Error::PeerRefused`]) or a peer that
//! answered out of protocol ([`Error::Protocol`]). The coordinator acts on the difference: a write
//! its own storage refused goes to another primary; a forwarded write whose call failed in
//! transport must not.

use axum::http::StatusCode;
use yeskv_core::NodeId;

/// What went wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Malformed request (bad quorum, bad TTL, empty key, ...): nothing was written.
    #[error("{0}")]
    BadRequest(String),
    /// A key, bucket or value over its configured limit: nothing was written.
    #[error("{0}")]
    TooLarge(String),
    /// The causal context token is malformed, tampered with, or from another key.
    #[error(transparent)]
    InvalidContext(yeskv_core::Error),
    /// A DELETE came without `X-Causal-Context`.
    #[error(
        "DELETE needs the X-Causal-Context of a read: a delete supersedes exactly what was read"
    )]
    ContextRequired,
    /// Refused because of what the key or its bucket holds (an operation of another data
    /// type, a plain value where a data type was expected): nothing was written.
    #[error("{0}")]
    Conflict(String),
    /// An admin resource that does not exist (a backup, a backup's file).
    #[error("{0}")]
    NotFound(String),
    /// The write would leave the key's clock naming more actors than a context token carries
    /// ([`yeskv_core::codec::CLOCK_ACTORS_MAX`]).
    #[error("the key's causal history would name {actors} writers (limit {max}): its context could no longer be handed out; nothing was written")]
    HistoryTooLong {
        /// Actors the write would leave in the clock.
        actors: usize,
        /// The limit.
        max: usize,
    },
    /// The write would leave the key's object larger than `limits.object_bytes_max` (as
    /// stored); nothing was written.
    #[error("the key's object would be {bytes} bytes with this write ({siblings} siblings), over limits.object_bytes_max of {max} bytes; writes without a context keep every sibling: read the key and write back with the read's X-Causal-Context to replace them")]
    ObjectTooLarge {
        /// The object's bytes after the write.
        bytes: usize,
        /// Its siblings after the write.
        siblings: usize,
        /// The configured limit.
        max: usize,
    },
    /// Stored data failed its checksum: reported, never served.
    #[error("stored record is corrupt and was not served: {0}")]
    Corrupt(String),
    /// Fewer replicas answered than the request's quorum.
    #[error("quorum not reached: {succeeded} of {required} required replicas answered ({errors})")]
    Quorum {
        /// Replies the request needed.
        required: u8,
        /// Replies that came.
        succeeded: u8,
        /// What the others said.
        errors: String,
    },
    /// This node's storage refused the operation (disk full, I/O error): nothing was written.
    #[error("storage unavailable: {0}")]
    Storage(String),
    /// The write was applied here but could not be made durable (a WAL fsync failed, the
    /// storage was reopened): it may or may not survive, so it must not be applied again by
    /// another replica (a second version of one client write).
    #[error("write outcome unknown: {0}")]
    Indeterminate(String),
    /// This node holds its limit of hints for a down primary and will not stand in for it.
    #[error("hints full: {0}")]
    HintsFull(String),
    /// The node is starting or shutting down.
    #[error("node is {0}")]
    NotServing(&'static str),
    /// The failure detector believes the peer is down, so it was not asked.
    #[error("{0} is believed down")]
    PeerDown(NodeId),
    /// The peer's internode address is not in the layout, so it could not be asked.
    #[error("{0} has no known address")]
    NoAddress(NodeId),
    /// The call to a peer failed in transport (timeout, broken connection): the request may
    /// have run there.
    #[error("call to {node} failed: {source}")]
    Transport {
        /// The peer called.
        node: NodeId,
        /// What the transport said.
        source: yeskv_rpc::Error,
    },
    /// The peer refused the request before doing anything (its storage refused, it is not a
    /// replica of the key in its layout, it is shutting down).
    #[error("{node} refused: {reason}")]
    PeerRefused {
        /// The peer.
        node: NodeId,
        /// Its reason.
        reason: String,
    },
    /// The peer answered with a message this request does not expect.
    #[error("{node} answered {request} out of protocol: {answer}")]
    Protocol {
        /// The peer.
        node: NodeId,
        /// What was asked.
        request: &'static str,
        /// What came back.
        answer: String,
    },
    /// This node cannot start (its data directory belongs to another node, a port is taken,
    /// storage does not open), or its HTTP server failed.
    #[error("{0}")]
    Startup(String),
    /// The layout service could not make a change the node asked for (no leader, refused).
    #[error("layout change failed: {0}")]
    Layout(String),
    /// The node has no room for the request now (its in-flight byte budget is full): nothing
    /// was done; retry.
    #[error("busy: {0}")]
    Busy(String),
    /// The request's body did not arrive in time: nothing was done.
    #[error("{0}")]
    BodyTimeout(String),
    /// Writes queued for another region could not all be delivered (its nodes down, cut off,
    /// or refusing); they stay queued (`crate::xr`).
    #[error("cross-region replication: {0}")]
    Undelivered(String),
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::InvalidContext(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) | Error::ObjectTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ContextRequired => StatusCode::PRECONDITION_REQUIRED,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Conflict(_) | Error::HistoryTooLong { .. } => StatusCode::CONFLICT,
            Error::Corrupt(_) | Error::Startup(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Quorum { .. }
            | Error::Storage(_)
            | Error::Indeterminate(_)
            | Error::NotServing(_)
            | Error::HintsFull(_)
            | Error::PeerDown(_)
            | Error::NoAddress(_)
            | Error::Transport { .. }
            | Error::PeerRefused { .. }
            | Error::Protocol { .. }
            | Error::Layout(_)
            | Error::Busy(_)
            | Error::Undelivered(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Whether the request certainly never reached the peer (no connection could be made), so
    /// another node may do it instead without making it twice.
    pub fn not_sent(&self) -> bool {
        matches!(self, Error::Transport { source, .. } if source.not_sent())
    }

    /// Whether the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        self.status() == StatusCode::SERVICE_UNAVAILABLE
    }

    /// The peer this error is about, if it is about one.
    pub fn peer(&self) -> Option<&NodeId> {
        match self {
            Error::PeerDown(n) | Error::NoAddress(n) => Some(n),
            Error::Transport { node, .. }
            | Error::PeerRefused { node, .. }
            | Error::Protocol { node, .. } => Some(node),
            _ => None,
        }
    }

    /// What `node` did, in one phrase that names it once: for a quorum's list of failures.
    pub fn of(&self, node: &NodeId) -> String {
        match self.peer() {
            Some(n) if n == node => self.to_string(),
            _ => format!("{node}: {self}"),
        }
    }
}

impl From<yeskv_storage::Error> for Error {
    fn from(e: yeskv_storage::Error) -> Self {
        match e {
            yeskv_storage::Error::Corrupt(m) => Error::Corrupt(m),
            yeskv_storage::Error::Uncertain(m) => Error::Indeterminate(m),
            other => Error::Storage(other.to_string()),
        }
    }
}
