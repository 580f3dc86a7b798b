//! The one error enum of `yeskv-membership`.

use std::net::SocketAddr;

use yeskv_core::NodeId;

/// What went wrong starting, running or asking the membership.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is nonsense; see [`crate::MembershipConfig::validate`].
    #[error("invalid membership configuration: {reason}")]
    InvalidConfig {
        /// Which field and why.
        reason: String,
    },
    /// The gossip socket could not be opened (address in use, no such interface).
    #[error("cannot open the gossip socket on {addr}: {reason}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The transport's explanation.
        reason: String,
    },
    /// The gossip task failed to start or ended with an error.
    #[error("gossip failed: {reason}")]
    Gossip {
        /// chitchat's explanation.
        reason: String,
    },
    /// A node's layout version only moves forward.
    #[error("layout version {requested} is older than the {current} this node holds")]
    LayoutVersionRegressed {
        /// The version the node holds.
        current: u64,
        /// The version asked for.
        requested: u64,
    },
    /// A member that is up cannot be forgotten (it would come straight back), nor can the local
    /// node.
    #[error("cannot forget {id}: {reason}")]
    CannotForget {
        /// The member.
        id: NodeId,
        /// Why not.
        reason: &'static str,
    },
}

impl Error {
    /// Whether trying the same thing again later may succeed: a busy port may be freed, a
    /// configuration or a request that breaks a rule stays wrong.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Bind { .. } | Error::Gossip { .. } => true,
            Error::InvalidConfig { .. }
            | Error::LayoutVersionRegressed { .. }
            | Error::CannotForget { .. } => false,
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retryable() {
        let addr: SocketAddr = "127.0.0.1:1".parse().expect("literal");
        assert!(Error::Bind {
            addr,
            reason: "in use".into()
        }
        .is_retryable());
        assert!(!Error::InvalidConfig { reason: "x".into() }.is_retryable());
        assert!(!Error::LayoutVersionRegressed {
            current: 2,
            requested: 1
        }
        .is_retryable());
    }
}
