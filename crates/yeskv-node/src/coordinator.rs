//! The coordinator: turns one client request into replica operations and a quorum decision.
//!
//! Any node coordinates any key (Dynamo §4.5, no leader on the data path). A write is applied by a
//! replica of the key, which mints the new dot with its own actor; the client is answered after
//! `w` replicas hold it durably. A read asks `r` replicas and merges what they return with DVV
//! `sync`, so the answer holds every sibling any of them had.
//!
//! This node is, for now, a cluster of one: every key's only replica is the local [`Replica`], and
//! `r`/`w` are validated against `n` then capped at the number of replicas that exist ("while the
//! cluster has fewer nodes than n, each key has one replica per node"). The cluster issue adds
//! remote replicas behind the same calls.

use std::sync::Arc;

use yeskv_core::keyspace::{key_hash, partition_of, storage_key};
use yeskv_core::{CausalContext, Object, Quorum, Version};
use yeskv_storage::Engine;

use crate::clock::Clock;
use crate::error::Error;
use crate::replica::Replica;

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
}

/// See the module docs.
pub struct Coordinator<E: Engine> {
    replica: Arc<Replica<E>>,
    clock: Arc<dyn Clock>,
    settings: Settings,
}

/// Where a key lives.
struct Placement {
    hash: u64,
    storage_key: Vec<u8>,
}

impl<E: Engine> Coordinator<E> {
    /// A coordinator over the local replica.
    pub fn new(replica: Arc<Replica<E>>, clock: Arc<dyn Clock>, settings: Settings) -> Self {
        Coordinator {
            replica,
            clock,
            settings,
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
        }
    }

    /// Resolves a requested quorum (or the default) against `n`, then caps it at the replicas
    /// that exist. An explicit number above `n` is a bad request.
    fn quorum(&self, requested: Option<Quorum>, default: u8, what: &str) -> Result<u8, Error> {
        let q = match requested {
            Some(q) => q
                .resolve(self.settings.n)
                .map_err(|e| Error::BadRequest(format!("{what} {e}")))?,
            None => default,
        };
        Ok(q.min(self.replica_count()))
    }

    /// Replicas each key has now: `min(n, nodes)`; one while this is a single node.
    fn replica_count(&self) -> u8 {
        1
    }

    /// Reads a key: the merged object of `r` replicas (empty if none has it).
    pub async fn get(&self, bucket: &[u8], key: &[u8], r: Option<Quorum>) -> Result<Object, Error> {
        let required = self.quorum(r, self.settings.r, "r")?;
        let p = self.place(bucket, key);
        let mut merged = Object::new();
        let mut succeeded = 0u8;
        let mut errors = Vec::new();
        match self.replica.read(&p.storage_key) {
            Ok(obj) => {
                merged.sync(&obj);
                succeeded += 1;
            }
            Err(e @ Error::Corrupt(_)) if required == 1 => return Err(e),
            Err(e) => errors.push(e.to_string()),
        }
        if succeeded < required {
            return Err(Error::Quorum {
                required,
                succeeded,
                errors: errors.join("; "),
            });
        }
        Ok(merged)
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
        let required = self.quorum(w, self.settings.w, "w")?;
        let p = self.place(bucket, key);
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
        let (_, dot) = self
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
        debug_assert!(required <= 1);
        Ok(ctx.with_dot(dot))
    }
}
