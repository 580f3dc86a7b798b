//! The node's error enum: what can go wrong serving a request, and how each maps to HTTP.

use axum::http::StatusCode;

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
    /// The write would leave more siblings than `limits.siblings_max`.
    #[error("key would hold {count} siblings (limit {max}); read it, merge the siblings, and write back with the read's X-Causal-Context")]
    TooManySiblings {
        /// Siblings the write would leave.
        count: usize,
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
    /// The storage engine refused the operation (disk full, I/O error): nothing was written.
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
}

impl Error {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) | Error::InvalidContext(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::ContextRequired => StatusCode::PRECONDITION_REQUIRED,
            Error::TooManySiblings { .. } => StatusCode::CONFLICT,
            Error::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Error::Quorum { .. }
            | Error::Storage(_)
            | Error::Indeterminate(_)
            | Error::NotServing(_)
            | Error::HintsFull(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the same request may succeed if retried.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Quorum { .. }
                | Error::Storage(_)
                | Error::Indeterminate(_)
                | Error::NotServing(_)
                | Error::HintsFull(_)
        )
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
