//! The coordinator: turns one client request into replica operations and a quorum decision.
//!
//! Any node coordinates any key (Dynamo §4.5: no leader on the data path). The key's replicas
//! come from the [`Topology`] (the layout this node last applied), never from a consensus round.
//!
//! - **Write**: if this node is a replica of the key, it applies the write with its own actor
//!   ([`Replica::coordinate`], durable locally), then sends the resulting object to the key's
//!   other replicas (`Merge`), and answers once `w` replicas — itself included — hold it durably.
//!   Replication to the rest continues in the background. If this node is not a replica, it
//!   forwards the write (`Coordinate`) to the first live replica. Only a replica the request
//!   never reached (believed down, address unknown) is skipped for the next one: after a
//!   transport failure the write may have been applied there, and applying it again elsewhere
//!   would mint a second, concurrent version of one client write, which a later write or delete
//!   carrying the context of a read of the first would not supersede (found by the simulator:
//!   a deleted value came back). Such a write answers `503` (indeterminate).
//! - **Read**: asks every replica of the key in parallel (itself directly), merges the objects
//!   with DVV `sync` as they come, and answers after `r` replies, so the answer holds every
//!   sibling any of them had.
//! - **Quorums**: `r`/`w` are validated against `n` (`400` above it), then capped at the number
//!   of replicas a key has ("while the cluster has fewer nodes than n, each key has one replica
//!   per node"). Known-down replicas count as failures at once; the pure
//!   [`QuorumTracker`] decides as soon as the outcome is certain.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use yeskv_core::codec::{decode_record, decode_token, encode_record, encode_token};
use yeskv_core::keyspace::{key_hash, key_tag, partition_of, storage_key};
use yeskv_core::{CausalContext, NodeId, Object, Outcome, Quorum, QuorumTracker, Version};
use yeskv_storage::Engine;

use crate::clock::Clock;
use crate::error::Error;
use crate::peer::{PeerClient, PeerRequest, PeerResponse, RemoteError};
use crate::replica::Replica;
use crate::topology::Topology;

/// Settings the coordinator applies to every request.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Replicas per key.
    pub n: u8,
    /// Default read quorum.
    pub r: u8,
    /// Default write quorum.
    pub w: u8,
    /// Partition count of the ring.
    pub partitions: u32,
    /// Most siblings a client write may leave.
    pub siblings_max: usize,
    /// TTL for writes without one (0 = none).
    pub default_ttl_secs: u64,
    /// Deadline of one internode call.
    pub rpc_timeout: Duration,
}

/// See the module docs.
pub struct Coordinator<E: Engine> {
    replica: Arc<Replica<E>>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    topology: Arc<dyn Topology>,
    peers: Arc<dyn PeerClient>,
}

/// A client write on its way to the replicas.
struct Write {
    /// What the client had seen.
    ctx: CausalContext,
    /// The value; `None` for a delete.
    value: Option<Vec<u8>>,
    /// TTL of the value, if the request set one.
    ttl_secs: Option<u64>,
}

/// Where a key lives.
struct Placement {
    hash: u64,
    storage_key: Vec<u8>,
    replicas: Arc<[NodeId]>,
}

impl<E: Engine> Coordinator<E> {
    /// A coordinator over the local replica, reaching others through `peers`.
    pub fn new(
        replica: Arc<Replica<E>>,
        clock: Arc<dyn Clock>,
        settings: Settings,
        topology: Arc<dyn Topology>,
        peers: Arc<dyn PeerClient>,
    ) -> Self {
        Coordinator {
            replica,
            clock,
            settings,
            topology,
            peers,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The local replica.
    pub fn replica(&self) -> &Arc<Replica<E>> {
        &self.replica
    }

    /// The topology.
    pub fn topology(&self) -> &Arc<dyn Topology> {
        &self.topology
    }

    /// The clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    fn place(&self, bucket: &[u8], key: &[u8]) -> Placement {
        let hash = key_hash(bucket, key);
        let partition = partition_of(hash, self.settings.partitions);
        Placement {
            hash,
            storage_key: storage_key(partition, bucket, key),
            replicas: self.topology.preference(partition),
        }
    }

    /// Resolves a requested quorum (or the default) against `n`, then caps it at `replicas`.
    fn quorum(
        &self,
        requested: Option<Quorum>,
        default: u8,
        replicas: usize,
        what: &str,
    ) -> Result<u8, Error> {
        let q = match requested {
            Some(q) => q
                .resolve(self.settings.n)
                .map_err(|e| Error::BadRequest(format!("{what} {e}")))?,
            None => default,
        };
        Ok(q.min(replicas.min(usize::from(u8::MAX)) as u8).max(1))
    }

    fn is_local(&self, node: &NodeId) -> bool {
        node == self.topology.local()
    }

    /// Reads one replica's object: locally, or by RPC.
    async fn read_replica(&self, node: &NodeId, storage_key: &[u8]) -> Result<Object, String> {
        if self.is_local(node) {
            return self.replica.read(storage_key).map_err(|e| e.to_string());
        }
        if !self.topology.is_up(node) {
            return Err(format!("{node}: down"));
        }
        let addr = self
            .topology
            .peer_addr(node)
            .ok_or_else(|| format!("{node}: address unknown"))?;
        let req = PeerRequest::Read {
            storage_key: storage_key.to_vec(),
        };
        match self.peers.call(&addr, req, self.settings.rpc_timeout).await {
            Ok(PeerResponse::Object(None)) => Ok(Object::new()),
            Ok(PeerResponse::Object(Some(rec))) => {
                decode_record(&rec).map_err(|e| format!("{node}: {e}"))
            }
            Ok(PeerResponse::Failed(e)) => Err(format!("{node}: {}", Error::from(e))),
            Ok(other) => Err(format!("{node}: unexpected answer {other:?}")),
            Err(e) => Err(format!("{node}: {e}")),
        }
    }

    /// Reads a key: the merged object of the first `r` replicas to answer (empty if none has it).
    pub async fn get(&self, bucket: &[u8], key: &[u8], r: Option<Quorum>) -> Result<Object, Error> {
        let p = self.place(bucket, key);
        let required = self.quorum(r, self.settings.r, p.replicas.len(), "r")?;
        let mut tracker = QuorumTracker::new(required, p.replicas.len() as u8);
        let mut pending: FuturesUnordered<_> = p
            .replicas
            .iter()
            .map(|node| self.read_replica(node, &p.storage_key))
            .collect();
        let mut merged = Object::new();
        let mut corrupt = None;
        while let Some(result) = pending.next().await {
            let outcome = match result {
                Ok(obj) => {
                    merged.sync(&obj);
                    tracker.success()
                }
                Err(e) => {
                    if e.contains("corrupt") {
                        corrupt = Some(e.clone());
                    }
                    tracker.failure(e)
                }
            };
            match outcome {
                Outcome::Reached => return Ok(merged),
                Outcome::Impossible => {
                    // A lone replica that is corrupt is reported as such, not as a quorum miss.
                    if let (Some(c), 1) = (corrupt, required) {
                        return Err(Error::Corrupt(c));
                    }
                    return Err(quorum_error(&tracker));
                }
                Outcome::Pending => {}
            }
        }
        Err(quorum_error(&tracker))
    }

    /// Writes a value (or, with `value = None`, a tombstone) superseding what `ctx` covers.
    /// Returns the context the client holds afterwards: `ctx` plus the new write's dot.
    pub async fn put(
        &self,
        bucket: &[u8],
        key: &[u8],
        ctx: CausalContext,
        value: Option<Vec<u8>>,
        ttl_secs: Option<u64>,
        w: Option<Quorum>,
    ) -> Result<CausalContext, Error> {
        let p = self.place(bucket, key);
        let required = self.quorum(w, self.settings.w, p.replicas.len(), "w")?;
        let write = Write {
            ctx,
            value,
            ttl_secs,
        };
        if p.replicas.iter().any(|n| self.is_local(n)) {
            return self.coordinate_local(&p, write, required).await;
        }
        self.forward(bucket, key, &p, write, required).await
    }

    /// Applies a write as one of the key's replicas and replicates it (see the module docs).
    async fn coordinate_local(
        &self,
        p: &Placement,
        write: Write,
        required: u8,
    ) -> Result<CausalContext, Error> {
        let Write {
            ctx,
            value,
            ttl_secs,
        } = write;
        let now = self.clock.now_ms();
        let version = match value {
            None => Version::tombstone(now),
            Some(v) => {
                let ttl = ttl_secs.or(match self.settings.default_ttl_secs {
                    0 => None,
                    t => Some(t),
                });
                Version::value(
                    v,
                    now,
                    ttl.map(|t| now.saturating_add(t.saturating_mul(1000))),
                )
            }
        };
        let (obj, dot) = self
            .replica
            .coordinate(
                p.hash,
                &p.storage_key,
                &ctx,
                version,
                now,
                self.settings.siblings_max,
            )
            .await?;
        let after = ctx.with_dot(dot);
        let mut tracker = QuorumTracker::new(required, p.replicas.len() as u8);
        if tracker.success() == Outcome::Reached && p.replicas.len() == 1 {
            return Ok(after);
        }
        // Replicate to every other replica; each send runs to completion in its own task so
        // replicas beyond the quorum still receive the write after the client is answered.
        let record = encode_record(&obj, None);
        let (tx, mut rx) = tokio::sync::mpsc::channel(p.replicas.len());
        for node in p.replicas.iter().filter(|n| !self.is_local(n)) {
            let tx = tx.clone();
            let node = node.clone();
            let addr = self.topology.peer_addr(&node);
            let up = self.topology.is_up(&node);
            let peers = self.peers.clone();
            let timeout = self.settings.rpc_timeout;
            let req = PeerRequest::Merge {
                key_hash: p.hash,
                storage_key: p.storage_key.clone(),
                record: record.clone(),
            };
            tokio::spawn(async move {
                let result = match (addr, up) {
                    (_, false) => Err(format!("{node}: down")),
                    (None, _) => Err(format!("{node}: address unknown")),
                    (Some(addr), true) => match peers.call(&addr, req, timeout).await {
                        Ok(PeerResponse::Merged) => Ok(()),
                        Ok(PeerResponse::Failed(e)) => Err(format!("{node}: {}", Error::from(e))),
                        Ok(other) => Err(format!("{node}: unexpected answer {other:?}")),
                        Err(e) => Err(format!("{node}: {e}")),
                    },
                };
                if let Err(e) = &result {
                    tracing::debug!(error = %e, "replication to a replica failed");
                }
                let _ = tx.send(result).await;
            });
        }
        drop(tx);
        if tracker.outcome() == Outcome::Reached {
            return Ok(after);
        }
        while let Some(result) = rx.recv().await {
            let outcome = match result {
                Ok(()) => tracker.success(),
                Err(e) => tracker.failure(e),
            };
            match outcome {
                Outcome::Reached => return Ok(after),
                Outcome::Impossible => return Err(quorum_error(&tracker)),
                Outcome::Pending => {}
            }
        }
        Err(quorum_error(&tracker))
    }

    /// Sends a write to the first live replica of the key in preference order; moves on to the
    /// next only past replicas the request never reached (see the module docs).
    async fn forward(
        &self,
        bucket: &[u8],
        key: &[u8],
        p: &Placement,
        write: Write,
        required: u8,
    ) -> Result<CausalContext, Error> {
        let tag = key_tag(bucket, key);
        let token = encode_token(&write.ctx, tag);
        let mut errors = Vec::new();
        for node in p.replicas.iter() {
            if !self.topology.is_up(node) {
                errors.push(format!("{node}: down"));
                continue;
            }
            let Some(addr) = self.topology.peer_addr(node) else {
                errors.push(format!("{node}: address unknown"));
                continue;
            };
            let req = PeerRequest::Coordinate {
                bucket: bucket.to_vec(),
                key: key.to_vec(),
                context: token.clone(),
                value: write.value.clone().map(serde_bytes::ByteBuf::from),
                ttl_secs: write.ttl_secs,
                w: required,
            };
            // A forwarded write waits for its own replication round: allow two RPC deadlines.
            match self
                .peers
                .call(&addr, req, self.settings.rpc_timeout * 2)
                .await
            {
                Ok(PeerResponse::Coordinated { context }) => {
                    return decode_token(&context, tag).map_err(Error::InvalidContext);
                }
                Ok(PeerResponse::Failed(e)) => return Err(e.into()),
                // The replica got the request: whatever happened there, the write may have been
                // applied, so it must not be applied again by another replica (see the module
                // docs). The client is told the outcome is unknown.
                Ok(other) => {
                    errors.push(format!("{node}: unexpected answer {other:?}"));
                    break;
                }
                Err(e) => {
                    errors.push(format!(
                        "{node}: {e} (the write may have been applied there)"
                    ));
                    break;
                }
            }
        }
        Err(Error::Quorum {
            required,
            succeeded: 0,
            errors: errors.join("; "),
        })
    }

    /// Answers a data-path request from another node (`Layout` messages are answered by the
    /// layout service, see `server.rs`).
    pub async fn serve_peer(&self, request: PeerRequest) -> PeerResponse {
        match request {
            PeerRequest::Layout(_) => PeerResponse::Failed(RemoteError::BadRequest(
                "layout messages are not served by the coordinator".into(),
            )),
            PeerRequest::Read { storage_key } => match self.replica.read(&storage_key) {
                Ok(obj) if obj.is_empty() => PeerResponse::Object(None),
                Ok(obj) => PeerResponse::Object(Some(serde_bytes::ByteBuf::from(encode_record(
                    &obj, None,
                )))),
                Err(e) => PeerResponse::Failed(e.into()),
            },
            PeerRequest::Merge {
                key_hash,
                storage_key,
                record,
            } => {
                let incoming = match decode_record(&record) {
                    Ok(o) => o,
                    Err(e) => {
                        return PeerResponse::Failed(RemoteError::Corrupt(format!(
                            "incoming object: {e}"
                        )))
                    }
                };
                match self.replica.merge(key_hash, &storage_key, &incoming).await {
                    Ok(_) => PeerResponse::Merged,
                    Err(e) => PeerResponse::Failed(e.into()),
                }
            }
            PeerRequest::Coordinate {
                bucket,
                key,
                context,
                value,
                ttl_secs,
                w,
            } => {
                let tag = key_tag(&bucket, &key);
                let ctx = match decode_token(&context, tag) {
                    Ok(c) => c,
                    Err(e) => return PeerResponse::Failed(RemoteError::BadRequest(e.to_string())),
                };
                let p = self.place(&bucket, &key);
                if !p.replicas.iter().any(|n| self.is_local(n)) {
                    return PeerResponse::Failed(RemoteError::Unavailable(format!(
                        "{} is not a replica of this key in layout {}",
                        self.topology.local(),
                        self.topology.layout_version()
                    )));
                }
                let w = w.clamp(1, p.replicas.len().max(1) as u8);
                let write = Write {
                    ctx,
                    value: value.map(|v| v.into_vec()),
                    ttl_secs,
                };
                match self.coordinate_local(&p, write, w).await {
                    Ok(after) => PeerResponse::Coordinated {
                        context: encode_token(&after, tag),
                    },
                    Err(e) => PeerResponse::Failed(e.into()),
                }
            }
        }
    }
}

fn quorum_error(t: &QuorumTracker) -> Error {
    Error::Quorum {
        required: t.required(),
        succeeded: t.succeeded(),
        errors: t.errors().join("; "),
    }
}
