//! Errors of this crate.
//!
//! Two enums, for two audiences:
//!
//! - [`LayoutError`]: why the pure model refused a change or a decoding. It is plain data
//!   (serde), because a rejection computed by the Raft leader's state machine travels back to the
//!   node that forwarded the request, and because the state machine's answer to a log entry is
//!   part of what every replica computes identically.
//! - [`Error`]: what can go wrong when the node *asks* for a change through [`crate::LayoutService`]:
//!   a rejection, no leader within the deadline, an unreachable peer, a storage failure.
//!   [`Error::is_retryable`] tells the caller whether asking again may succeed.

use serde::{Deserialize, Serialize};

/// `partitions` for a message: all of them up to 16, then a count of the rest.
pub(crate) fn partition_list(partitions: &[u16]) -> String {
    let shown: Vec<String> = partitions.iter().take(16).map(u16::to_string).collect();
    let mut out = format!("partition {}", shown.join(", "));
    if partitions.len() > 16 {
        out.push_str(&format!(" and {} more", partitions.len() - 16));
    }
    out
}

/// Why the layout model refused a command, a plan or a decoding. Deterministic: the same state
/// and command give the same error on every node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum LayoutError {
    /// No layout exists yet: the cluster has not been bootstrapped (or this node has not caught
    /// up with it).
    #[error("the cluster has no layout yet (not bootstrapped)")]
    NotBootstrapped,
    /// `Bootstrap` on a state that already has a layout.
    #[error("the cluster is already bootstrapped (layout version {version})")]
    AlreadyBootstrapped {
        /// Version of the existing layout.
        version: u64,
    },
    /// A commit was prepared against another layout version than the current one: someone else
    /// committed first. This is what keeps one version from ever naming two layouts.
    #[error(
        "the layout changed: this commit expected version {expected} but the layout is at \
         version {current}; review the plan and commit again"
    )]
    VersionMismatch {
        /// The version the commit was prepared against.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// The staged changes changed between planning and committing.
    #[error(
        "the staged changes changed (revision {current}, the commit was planned at revision \
         {expected}); review the plan and commit again"
    )]
    StagedChanged {
        /// The staged revision the commit was planned against.
        expected: u64,
        /// The current staged revision.
        current: u64,
    },
    /// `commit` with nothing staged.
    #[error("nothing is staged: stage a join or a leave first")]
    NothingStaged,
    /// A leave names a node that is not a member.
    #[error("node {node} is not a member of the layout")]
    UnknownNode {
        /// The node.
        node: String,
    },
    /// A graceful leave of a node that is already leaving.
    #[error("node {node} is already leaving")]
    AlreadyLeaving {
        /// The node.
        node: String,
    },
    /// `unstage` of a node with no staged change.
    #[error("node {node} has no staged change")]
    NotStaged {
        /// The node.
        node: String,
    },
    /// The change would leave partitions without any node that holds their data: every holder
    /// is being removed by force. Refused unless the operator allowed the loss.
    #[error(
        "the change would leave {} partition(s) without any copy of their data ({}), whose only \
         holders {} are being removed by force; bring a holder back, or allow the loss \
         explicitly (leave --force --allow-data-loss)",
        partitions.len(),
        crate::error::partition_list(partitions),
        holders.join(", ")
    )]
    DataLoss {
        /// The partitions that would lose their data.
        partitions: Vec<u16>,
        /// The removed nodes that held them.
        holders: Vec<String>,
    },
    /// The staged changes would leave no owner.
    #[error("the staged changes would leave the cluster without any owning node")]
    NoOwnersLeft,
    /// A join's zone, capacity or addresses are unacceptable.
    #[error("invalid join of {node}: {reason}")]
    InvalidJoin {
        /// The node.
        node: String,
        /// What is wrong.
        reason: String,
    },
    /// More staged changes than [`crate::layout::STAGED_CHANGES_MAX`].
    #[error("at most {max} changes can be staged at once")]
    TooManyStaged {
        /// The limit.
        max: usize,
    },
    /// The placement refused the members (too many, too large, ...).
    #[error("placement failed: {reason}")]
    Placement {
        /// The placement's explanation.
        reason: String,
    },
    /// A layout breaks an invariant (see [`crate::Layout::validate`]).
    #[error("invalid layout: {reason}")]
    InvalidLayout {
        /// Which invariant.
        reason: String,
    },
    /// A layout or command of another cluster.
    #[error("layout of cluster {got:?} offered to cluster {expected:?}")]
    ClusterMismatch {
        /// This cluster.
        expected: String,
        /// The other one.
        got: String,
    },
    /// Persisted or received bytes failed their checksum or do not decode.
    #[error("corrupt layout data: {reason}")]
    Corrupt {
        /// What was wrong.
        reason: String,
    },
    /// Bytes in a format version this build does not know (written by a newer build).
    #[error("unsupported layout format {found} (this build reads formats 1 to {supported})")]
    UnsupportedFormat {
        /// The format byte found.
        found: u8,
        /// The format this build writes and reads.
        supported: u8,
    },
    /// A replication per region that breaks a limit, or that names a region without owners.
    #[error("invalid replication: {reason}")]
    InvalidReplication {
        /// What is wrong.
        reason: String,
    },
    /// A bucket's properties or name that break a rule or a limit
    /// ([`crate::Command::SetBucket`]).
    #[error("invalid properties for bucket {bucket:?}: {reason}")]
    InvalidBucket {
        /// The bucket's name (lossy UTF-8).
        bucket: String,
        /// What is wrong.
        reason: String,
    },
    /// An API key's name or permissions that break a rule or a limit
    /// ([`crate::Command::PutKey`]).
    #[error("invalid API key {name:?}: {reason}")]
    InvalidKey {
        /// The key's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// An API key of that name exists already.
    #[error("an API key named {name:?} exists already")]
    KeyExists {
        /// The key's name.
        name: String,
    },
    /// No API key of that name.
    #[error("no API key named {name:?}")]
    UnknownKey {
        /// The key's name.
        name: String,
    },
}

impl LayoutError {
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        LayoutError::InvalidLayout {
            reason: reason.into(),
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        LayoutError::Corrupt {
            reason: reason.into(),
        }
    }

    /// Whether the same request may succeed if prepared again: a concurrent commit or stage
    /// moved the state on (re-plan and retry), as opposed to a request that is wrong in itself.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            LayoutError::VersionMismatch { .. } | LayoutError::StagedChanged { .. }
        )
    }
}

/// What went wrong in a [`crate::LayoutService`] call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The layout model refused the change (the Raft log recorded the refusal; nothing changed).
    #[error(transparent)]
    Rejected(#[from] LayoutError),
    /// No Raft leader could be found or reached before the deadline (a majority of the owning
    /// nodes is down or partitioned). User data reads and writes are unaffected.
    #[error("no layout leader reachable within {timeout_ms} ms: {reason}")]
    NoLeader {
        /// The deadline that passed.
        timeout_ms: u64,
        /// The last obstacle seen.
        reason: String,
    },
    /// A joining node did not catch up with the Raft log in time, so the commit that would make it
    /// an owner was not attempted.
    #[error("node {node} did not catch up with the layout log within {timeout_ms} ms: {reason}")]
    JoiningNodeUnreachable {
        /// The joining node.
        node: String,
        /// The deadline.
        timeout_ms: u64,
        /// The last obstacle seen.
        reason: String,
    },
    /// The durable Raft store failed (disk full, I/O error, corrupt file).
    #[error("layout store: {0}")]
    Storage(#[from] crate::store::StoreError),
    /// The Raft engine failed or stopped (shut down, fatal storage error).
    #[error("raft: {reason}")]
    Raft {
        /// The engine's explanation.
        reason: String,
    },
    /// The configuration is nonsense; see [`crate::LayoutConfig::validate`].
    #[error("invalid layout configuration: {reason}")]
    InvalidConfig {
        /// Which field and why.
        reason: String,
    },
}

impl Error {
    /// Whether the same call may succeed if made again: leader elections, unreachable peers and
    /// concurrent changes pass; refusals of the request itself, storage and configuration errors
    /// do not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Rejected(error) => error.is_retryable(),
            Error::NoLeader { .. } | Error::JoiningNodeUnreachable { .. } => true,
            Error::Storage(_) | Error::Raft { .. } | Error::InvalidConfig { .. } => false,
        }
    }

    pub(crate) fn raft(error: impl std::fmt::Display) -> Self {
        Error::Raft {
            reason: error.to_string(),
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
