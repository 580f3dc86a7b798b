//! The transport's configuration: one struct, every field documented with its unit and its
//! bounds, defaults in [`RpcConfig::new`], and [`RpcConfig::validate`] refusing nonsense before
//! a client or server is built.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::frame::{FRAME_BYTES_MAX_DEFAULT, HANDSHAKE_FRAME_BYTES_MAX};
use crate::protocol::{ID_BYTES_MAX, PROTOCOL_VERSION, PROTOCOL_VERSION_MIN};

/// Largest allowed [`RpcConfig::frame_bytes_max`]: 1 GiB (the length field could say 4 GiB, but
/// no yeskv message should come near this).
pub const FRAME_BYTES_MAX_LIMIT: usize = 1024 * 1024 * 1024;
/// Largest allowed [`RpcConfig::inflight_max`].
pub const INFLIGHT_MAX_LIMIT: usize = 1 << 20;

/// Settings of an [`crate::RpcClient`] or [`crate::RpcServer`]. The same struct serves both
/// sides; every node uses one for its client and its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RpcConfig {
    /// The cluster this node belongs to. A server refuses clients of another cluster. 1 to
    /// [`ID_BYTES_MAX`] bytes.
    pub cluster_id: String,
    /// This node's id, sent in the handshake. 1 to [`ID_BYTES_MAX`] bytes.
    pub node_id: String,
    /// Largest frame sent or accepted, header included, in bytes ([`HANDSHAKE_FRAME_BYTES_MAX`]
    /// ..= [`FRAME_BYTES_MAX_LIMIT`]; default 16 MiB). Must be the same on every node: a frame
    /// larger than the receiver's limit closes the connection. A request over the limit fails with
    /// [`Error::FrameTooLarge`] before anything is sent; a response over it is answered with a
    /// failure.
    pub frame_bytes_max: usize,
    /// Most requests in flight on one connection (1 ..= [`INFLIGHT_MAX_LIMIT`]; default 1024). On
    /// the server: handlers running at once per connection; once reached, the server stops
    /// reading that connection until one finishes (TCP backpressure). On the client: calls
    /// awaiting a response per peer; more callers wait (within their deadline) for a slot.
    pub inflight_max: usize,
    /// Deadline for TCP connect plus `Hello` → `Welcome`, in milliseconds (> 0; default 5000).
    pub handshake_timeout_ms: u64,
    /// The client pings an open connection this often, and both sides check for silence this
    /// often, in milliseconds (> 0; default 1000).
    pub keepalive_interval_ms: u64,
    /// A connection on which nothing at all arrived for this long is closed as dead (a crashed
    /// host or a half-open TCP connection), in milliseconds (> `keepalive_interval_ms`; default
    /// 10 000). Pending calls on it fail with [`Error::Disconnected`].
    pub keepalive_timeout_ms: u64,
    /// First delay before reconnecting to a peer after a failed attempt, in milliseconds (> 0;
    /// default 50). Doubles per consecutive failure, jittered.
    pub reconnect_backoff_min_ms: u64,
    /// Cap of the reconnect delay, in milliseconds (>= `reconnect_backoff_min_ms`; default 5000).
    pub reconnect_backoff_max_ms: u64,
    /// Frames queued for one connection's writer task (>= 1; default 1024). When full, callers
    /// (client) and handlers (server) wait.
    pub write_queue_frames_max: usize,
    /// The writer coalesces queued frames into one buffer of at most this many bytes before one
    /// `write_all` (>= 1; default 256 KiB). A single larger frame is written on its own.
    pub write_batch_bytes_max: usize,
    /// On server shutdown, how long in-flight handlers may run before they are cancelled, in
    /// milliseconds (default 5000; 0 cancels them at once).
    pub shutdown_grace_ms: u64,
    /// Server: most connections open at once (>= 1; default 1024). Past it a new connection
    /// is closed as soon as it is accepted, before its handshake, and counted
    /// ([`crate::ServerStats::connections_refused`]).
    pub connections_max: usize,
    /// Server: most request payload bytes held by running handlers across all connections
    /// (>= `frame_bytes_max`; default 512 MiB). A connection whose next request does not fit
    /// stops reading until handlers finish (backpressure), as with `inflight_max`.
    pub inflight_bytes_max: usize,
    /// The protocol versions this side speaks, oldest and newest (within
    /// [`PROTOCOL_VERSION_MIN`]`..=`[`PROTOCOL_VERSION`], the default). Each connection speaks the
    /// newest version both ends speak. Narrowed only to pin a node to an older version, as
    /// tests do to stand in for a node of the previous release.
    pub protocol_versions: (u16, u16),
}

impl RpcConfig {
    /// The defaults, for a node `node_id` of cluster `cluster_id`.
    pub fn new(cluster_id: impl Into<String>, node_id: impl Into<String>) -> RpcConfig {
        RpcConfig {
            cluster_id: cluster_id.into(),
            node_id: node_id.into(),
            frame_bytes_max: FRAME_BYTES_MAX_DEFAULT,
            inflight_max: 1024,
            handshake_timeout_ms: 5_000,
            keepalive_interval_ms: 1_000,
            keepalive_timeout_ms: 10_000,
            reconnect_backoff_min_ms: 50,
            reconnect_backoff_max_ms: 5_000,
            write_queue_frames_max: 1024,
            write_batch_bytes_max: 256 * 1024,
            shutdown_grace_ms: 5_000,
            connections_max: 1024,
            inflight_bytes_max: 512 * 1024 * 1024,
            protocol_versions: (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION),
        }
    }

    /// Refuses settings that cannot work.
    pub fn validate(&self) -> Result<()> {
        let invalid = |reason: String| Err(Error::InvalidConfig { reason });
        for (name, id) in [("cluster_id", &self.cluster_id), ("node_id", &self.node_id)] {
            if id.is_empty() || id.len() > ID_BYTES_MAX {
                return invalid(format!(
                    "{name} must be 1 to {ID_BYTES_MAX} bytes, got {}",
                    id.len()
                ));
            }
        }
        if !(HANDSHAKE_FRAME_BYTES_MAX..=FRAME_BYTES_MAX_LIMIT).contains(&self.frame_bytes_max) {
            return invalid(format!(
                "frame_bytes_max must be {HANDSHAKE_FRAME_BYTES_MAX} ..= {FRAME_BYTES_MAX_LIMIT}, \
                 got {}",
                self.frame_bytes_max
            ));
        }
        if !(1..=INFLIGHT_MAX_LIMIT).contains(&self.inflight_max) {
            return invalid(format!(
                "inflight_max must be 1 ..= {INFLIGHT_MAX_LIMIT}, got {}",
                self.inflight_max
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return invalid("handshake_timeout_ms must be > 0".into());
        }
        if self.keepalive_interval_ms == 0 {
            return invalid("keepalive_interval_ms must be > 0".into());
        }
        if self.keepalive_timeout_ms <= self.keepalive_interval_ms {
            return invalid(format!(
                "keepalive_timeout_ms ({}) must exceed keepalive_interval_ms ({})",
                self.keepalive_timeout_ms, self.keepalive_interval_ms
            ));
        }
        if self.reconnect_backoff_min_ms == 0
            || self.reconnect_backoff_max_ms < self.reconnect_backoff_min_ms
        {
            return invalid(format!(
                "need 0 < reconnect_backoff_min_ms ({}) <= reconnect_backoff_max_ms ({})",
                self.reconnect_backoff_min_ms, self.reconnect_backoff_max_ms
            ));
        }
        if self.write_queue_frames_max == 0 {
            return invalid("write_queue_frames_max must be >= 1".into());
        }
        if self.write_batch_bytes_max == 0 {
            return invalid("write_batch_bytes_max must be >= 1".into());
        }
        if self.connections_max == 0 {
            return invalid("connections_max must be >= 1".into());
        }
        let (oldest, newest) = self.protocol_versions;
        if !(PROTOCOL_VERSION_MIN <= oldest && oldest <= newest && newest <= PROTOCOL_VERSION) {
            return invalid(format!(
                "protocol_versions must be a range within {PROTOCOL_VERSION_MIN} ..= \
                 {PROTOCOL_VERSION}, got {oldest} ..= {newest}"
            ));
        }
        if self.inflight_bytes_max < self.frame_bytes_max {
            return invalid(format!(
                "inflight_bytes_max ({}) must be >= frame_bytes_max ({}): one request must fit",
                self.inflight_bytes_max, self.frame_bytes_max
            ));
        }
        Ok(())
    }

    pub(crate) fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    pub(crate) fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }

    pub(crate) fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }

    pub(crate) fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        RpcConfig::new("cluster", "node").validate().expect("valid");
    }

    #[test]
    fn nonsense_is_refused() {
        let base = RpcConfig::new("cluster", "node");
        let cases: Vec<(&str, RpcConfig)> = vec![
            ("cluster_id", RpcConfig::new("", "node")),
            ("node_id", RpcConfig::new("cluster", "x".repeat(256))),
            (
                "frame_bytes_max",
                RpcConfig {
                    frame_bytes_max: 100,
                    ..base.clone()
                },
            ),
            (
                "inflight_max",
                RpcConfig {
                    inflight_max: 0,
                    ..base.clone()
                },
            ),
            (
                "protocol_versions",
                RpcConfig {
                    protocol_versions: (PROTOCOL_VERSION, PROTOCOL_VERSION_MIN),
                    ..base.clone()
                },
            ),
            (
                "protocol_versions",
                RpcConfig {
                    protocol_versions: (PROTOCOL_VERSION_MIN, PROTOCOL_VERSION + 1),
                    ..base.clone()
                },
            ),
            (
                "keepalive_timeout_ms",
                RpcConfig {
                    keepalive_timeout_ms: 1_000,
                    ..base.clone()
                },
            ),
            (
                "reconnect_backoff_min_ms",
                RpcConfig {
                    reconnect_backoff_max_ms: 10,
                    ..base.clone()
                },
            ),
            (
                "write_queue_frames_max",
                RpcConfig {
                    write_queue_frames_max: 0,
                    ..base.clone()
                },
            ),
        ];
        for (field, config) in cases {
            let error = config.validate().expect_err(field);
            assert!(error.to_string().contains(field), "{field}: {error}");
        }
    }
}
