//! The layout service's configuration: one struct, every field documented with its unit and
//! bounds, defaults in [`LayoutConfig::new`], [`LayoutConfig::validate`] refusing nonsense.

use std::path::PathBuf;

use yeskv_core::NodeId;

use crate::error::{Error, Result};
use crate::layout::{ADDRESS_BYTES_MAX, CLUSTER_ID_BYTES_MAX};
use crate::store::MemoryStore;

/// Where the layout's Raft state lives.
#[derive(Clone, Debug)]
pub enum StorageConfig {
    /// A directory of its own ([`crate::store::FileStore`]); the node passes `data_dir/layout/`.
    Directory(PathBuf),
    /// Memory only ([`MemoryStore`]; tests). Clones share contents, so a test can restart a
    /// node "from disk" by passing a clone.
    Memory(MemoryStore),
}

/// Settings of a [`crate::LayoutService`].
#[derive(Clone, Debug)]
pub struct LayoutConfig {
    /// This node.
    pub node_id: NodeId,
    /// The cluster; a layout of another cluster is refused. 1 to 255 bytes.
    pub cluster_id: String,
    /// This node's internode RPC address (`host:port`), where the Raft messages arrive. Must
    /// match the `peer` address the node is joined with.
    pub peer_addr: String,
    /// Where the Raft log, vote and snapshot are kept.
    pub storage: StorageConfig,
    /// The leader sends heartbeats this often, in milliseconds (> 0; default 250).
    pub heartbeat_interval_ms: u64,
    /// A follower that heard no heartbeat for a random time between this and
    /// `election_timeout_max_ms` starts an election, in milliseconds (> `heartbeat_interval_ms`;
    /// default 1000).
    pub election_timeout_min_ms: u64,
    /// See `election_timeout_min_ms` (> it; default 2000).
    pub election_timeout_max_ms: u64,
    /// Deadline of one stage / unstage / commit call, finding and reaching the leader included,
    /// in milliseconds (> 0; default 10 000).
    pub request_timeout_ms: u64,
    /// How long a commit waits for joining nodes to catch up with the log before giving up, in
    /// milliseconds (> 0, at most `request_timeout_ms`; default 5000).
    pub learner_catch_up_timeout_ms: u64,
    /// Build a snapshot (and purge the log) after this many applied entries (>= 1; default 128).
    pub snapshot_logs_since_last: u64,
    /// Entries kept in the log after a snapshot, so a briefly lagging follower catches up from
    /// the log rather than by snapshot (default 128).
    pub logs_kept_after_snapshot: u64,
    /// On the leader, how often Raft voters are reconciled with the layout's owners, in
    /// milliseconds (> 0; default 1000). Commits reconcile at once; this repairs a membership
    /// change that failed halfway (e.g. a leader change during a commit).
    pub reconcile_interval_ms: u64,
}

impl LayoutConfig {
    /// The defaults for `node_id` of `cluster_id`, reachable at `peer_addr`.
    pub fn new(
        node_id: NodeId,
        cluster_id: impl Into<String>,
        peer_addr: impl Into<String>,
        storage: StorageConfig,
    ) -> LayoutConfig {
        LayoutConfig {
            node_id,
            cluster_id: cluster_id.into(),
            peer_addr: peer_addr.into(),
            storage,
            heartbeat_interval_ms: 250,
            election_timeout_min_ms: 1_000,
            election_timeout_max_ms: 2_000,
            request_timeout_ms: 10_000,
            learner_catch_up_timeout_ms: 5_000,
            snapshot_logs_since_last: 128,
            logs_kept_after_snapshot: 128,
            reconcile_interval_ms: 1_000,
        }
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        if self.cluster_id.is_empty() || self.cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return invalid(format!(
                "cluster_id must be 1 to {CLUSTER_ID_BYTES_MAX} bytes"
            ));
        }
        if self.peer_addr.is_empty() || self.peer_addr.len() > ADDRESS_BYTES_MAX {
            return invalid(format!("peer_addr must be 1 to {ADDRESS_BYTES_MAX} bytes"));
        }
        if self.heartbeat_interval_ms == 0 {
            return invalid("heartbeat_interval_ms must be > 0".into());
        }
        if self.election_timeout_min_ms <= self.heartbeat_interval_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return invalid(format!(
                "need heartbeat_interval_ms ({}) < election_timeout_min_ms ({}) < \
                 election_timeout_max_ms ({})",
                self.heartbeat_interval_ms,
                self.election_timeout_min_ms,
                self.election_timeout_max_ms
            ));
        }
        if self.request_timeout_ms == 0 {
            return invalid("request_timeout_ms must be > 0".into());
        }
        if self.learner_catch_up_timeout_ms == 0
            || self.learner_catch_up_timeout_ms > self.request_timeout_ms
        {
            return invalid(format!(
                "learner_catch_up_timeout_ms must be 1 ..= request_timeout_ms ({})",
                self.request_timeout_ms
            ));
        }
        if self.snapshot_logs_since_last == 0 {
            return invalid("snapshot_logs_since_last must be >= 1".into());
        }
        if self.reconcile_interval_ms == 0 {
            return invalid("reconcile_interval_ms must be > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LayoutConfig {
        LayoutConfig::new(
            NodeId::new("n1").expect("id"),
            "c",
            "127.0.0.1:1",
            StorageConfig::Memory(MemoryStore::new()),
        )
    }

    #[test]
    fn defaults_are_valid_and_nonsense_is_refused() {
        config().validate().expect("valid");
        let cases: Vec<(&str, LayoutConfig)> = vec![
            (
                "cluster_id",
                LayoutConfig {
                    cluster_id: String::new(),
                    ..config()
                },
            ),
            (
                "election_timeout_min_ms",
                LayoutConfig {
                    election_timeout_min_ms: 100,
                    ..config()
                },
            ),
            (
                "learner_catch_up_timeout_ms",
                LayoutConfig {
                    learner_catch_up_timeout_ms: 0,
                    ..config()
                },
            ),
            (
                "snapshot_logs_since_last",
                LayoutConfig {
                    snapshot_logs_since_last: 0,
                    ..config()
                },
            ),
        ];
        for (field, config) in cases {
            let error = config.validate().expect_err(field);
            assert!(error.to_string().contains(field), "{field}: {error}");
        }
    }
}
