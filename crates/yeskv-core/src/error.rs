//! The error type of `yeskv-core`: everything that can go wrong while decoding bytes that came from
//! a disk, a peer or a client. Pure functions return these; the edges decide how to report them.

/// What went wrong in a pure core operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// Stored or received bytes fail their checksum or do not parse: never serve them.
    #[error("corrupt {what}: {reason}")]
    Corrupt {
        /// Which kind of record was being decoded (`object`, `record`, ...).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// The bytes carry a format version this build does not know.
    #[error("unsupported {what} format version {version}")]
    UnsupportedFormat {
        /// Which kind of record.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// A causal context token from a client is malformed, tampered with or made for another key.
    #[error("invalid causal context: {0}")]
    InvalidContext(String),
    /// A Tictac tree's shape is invalid, or two trees (or a tree and its stored copy) that must
    /// have the same shape do not: they cannot be compared.
    #[error("tictac tree geometry: {0}")]
    TreeGeometry(String),
}

impl Error {
    pub(crate) fn corrupt(what: &'static str, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            what,
            reason: reason.into(),
        }
    }
}
