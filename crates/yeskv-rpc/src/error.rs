//! The one error enum of `yeskv-rpc`.
//!
//! Every variant names what went wrong, not where. [`Error::is_retryable`] tells the caller
//! whether sending the *same* request again (perhaps on a fresh connection, perhaps to another
//! replica) may succeed; whether a retry is *safe* is the caller's business: a [`Error::Timeout`]
//! or [`Error::Disconnected`] may hide a request that the peer did execute, while
//! [`Error::Unreachable`] and [`Error::Refused`] say the request was never sent.

/// What went wrong in an RPC call, a handshake or a connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The call's deadline passed before its response arrived; the pending entry was removed and
    /// a late response will be dropped. The peer may have executed the request.
    #[error("timed out after {timeout_ms} ms")]
    Timeout {
        /// The timeout the call was given.
        timeout_ms: u64,
    },
    /// The connection is gone (closed by the peer, broken, idle past the keepalive timeout, or
    /// the peer is being backed off after failed connection attempts). Calls pending on a
    /// connection that closes fail with this error.
    #[error("disconnected: {reason}")]
    Disconnected {
        /// Why the connection is gone.
        reason: String,
    },
    /// No connection to the peer could be made (connection refused, connect or handshake timed
    /// out, the peer is backed off after failed attempts): the request was **not sent**, so the
    /// peer did not execute it.
    #[error("unreachable, not sent: {reason}")]
    Unreachable {
        /// Why no connection could be made.
        reason: String,
    },
    /// The peer refused the handshake (other cluster, other protocol version) or we refused its
    /// answer. Retrying will not help until someone changes a configuration. The request was
    /// not sent.
    #[error("handshake refused: {reason}")]
    Refused {
        /// The reason the refusing side gave.
        reason: String,
    },
    /// A frame failed its checksum or does not parse. The connection it came on is closed; the
    /// message is never delivered.
    #[error("corrupt frame: {reason}")]
    Corrupt {
        /// What was wrong with it.
        reason: String,
    },
    /// A frame is larger than [`crate::RpcConfig::frame_bytes_max`]: refused before it is sent, or
    /// (when received) the connection is closed.
    #[error("frame of {frame_bytes} bytes or more exceeds the maximum of {frame_bytes_max} bytes")]
    FrameTooLarge {
        /// The frame's size in bytes (when encoding: the size at which encoding stopped).
        frame_bytes: u64,
        /// The configured maximum.
        frame_bytes_max: u64,
    },
    /// An I/O error on the socket (connect, read, write).
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A value could not be encoded with postcard.
    #[error("cannot encode message: {reason}")]
    Encode {
        /// postcard's explanation.
        reason: String,
    },
    /// A payload passed its checksum but does not decode as the expected type (a peer speaking
    /// another message schema).
    #[error("cannot decode message: {reason}")]
    Decode {
        /// postcard's explanation.
        reason: String,
    },
    /// The peer received the request but could not answer it: the request did not decode there,
    /// the handler panicked, or the response could not be encoded.
    #[error("the peer failed to handle the request: {reason}")]
    Remote {
        /// The peer's explanation.
        reason: String,
    },
    /// The request is of a protocol version newer than the one the connection to the peer
    /// speaks (a peer of an older release): it was **not sent**. The caller does without it
    /// or falls back to what the older version offers.
    #[error("not sent: the request needs protocol version {needed}, the peer speaks {agreed}")]
    Unsupported {
        /// The version that introduced the request.
        needed: u16,
        /// The version the connection agreed on.
        agreed: u16,
    },
    /// The configuration is nonsense; see [`crate::RpcConfig::validate`].
    #[error("invalid rpc configuration: {reason}")]
    InvalidConfig {
        /// Which field and why.
        reason: String,
    },
}

impl Error {
    /// Whether the same request may succeed if sent again (after a reconnect, or to another
    /// replica): transient network conditions are, configuration and schema mismatches are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Timeout { .. }
            | Error::Disconnected { .. }
            | Error::Unreachable { .. }
            | Error::Corrupt { .. }
            | Error::Io(_) => true,
            Error::Refused { .. }
            | Error::FrameTooLarge { .. }
            | Error::Encode { .. }
            | Error::Decode { .. }
            | Error::Remote { .. }
            | Error::Unsupported { .. }
            | Error::InvalidConfig { .. } => false,
        }
    }

    /// Whether the request certainly did not reach the peer (no connection was made).
    pub fn not_sent(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. } | Error::Refused { .. } | Error::Unsupported { .. }
        )
    }

    /// `self`, a failure to get a connection, as the error of a call that was never sent:
    /// [`Error::Unreachable`] (a refused handshake stays [`Error::Refused`]).
    pub(crate) fn before_sending(self) -> Self {
        match self {
            Error::Refused { .. } | Error::Unreachable { .. } => self,
            other => Error::Unreachable {
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn disconnected(reason: impl Into<String>) -> Self {
        Error::Disconnected {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        Error::Corrupt {
            reason: reason.into(),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_errors_are_retryable_and_configuration_errors_are_not() {
        assert!(Error::Timeout { timeout_ms: 5 }.is_retryable());
        assert!(Error::disconnected("x").is_retryable());
        assert!(Error::corrupt("x").is_retryable());
        assert!(Error::Io(std::io::ErrorKind::ConnectionReset.into()).is_retryable());
        assert!(!Error::Refused { reason: "x".into() }.is_retryable());
        assert!(!Error::FrameTooLarge {
            frame_bytes: 2,
            frame_bytes_max: 1
        }
        .is_retryable());
        assert!(!Error::Decode { reason: "x".into() }.is_retryable());
        assert!(!Error::Remote { reason: "x".into() }.is_retryable());
    }
}
