//! The reaper: physically removes tombstones once that is safe.
//!
//! A key whose every sibling is a tombstone or expiring, with at least one tombstone, is queued
//! when stored (`replica/reap.rs`; a key whose every sibling is an expiring value is not: the
//! storage engine drops it on each replica by itself, `crate::expiry`); once the grace period
//! (`ttl.reap_grace_secs`) has passed, the key's first
//! primary asks every primary for its object and every other member for any hint of the key and,
//! only if all are up, the primaries hold the very same object (same digest) and no hint is left
//! anywhere, tells each primary to remove it ([`ReapRequest`], checked again against the digest
//! under the key's lock). So a tombstone is never reaped while a replica could still hold the
//! value it deleted, nor while any member holds a hint that could carry it back (hints are kept
//! until delivered, however long that takes: `replica/hints.rs`).
//!
//! This module owns the reap message and answers it ([`serve`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use yeskv_core::keyspace::{key_hash, split_storage_key};
use yeskv_core::tictac::tree_digest;
use yeskv_core::{NodeId, Object};
use yeskv_storage::Engine;

use crate::context::{out_of_protocol, Liveness, NodeContext};
use crate::error::Error;
use crate::peer::{PeerRequest, PeerResponse, RemoteError};
use crate::replication::{self, Holder};
use crate::workers::Progress;

/// Remove a reapable key (tombstones / expired past the grace period) if its object still has
/// `digest`: sent by the key's first primary once every primary holds the same object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReapRequest {
    /// The key's hash.
    pub key_hash: u64,
    /// The key's storage key.
    #[serde(with = "serde_bytes")]
    pub storage_key: Vec<u8>,
    /// The digest every primary reported.
    pub digest: u64,
}

/// The answer to a [`ReapRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub struct ReapResponse {
    /// Whether the key was removed (it may have changed since).
    pub reaped: bool,
}

/// How the reaper paces itself.
#[derive(Clone, Debug)]
pub struct ReaperSettings {
    /// Pause between reaper rounds (and before a key it could not reap is looked at again).
    pub interval: Duration,
}

/// Answers a reap message of another node.
pub async fn serve<E: Engine>(ctx: &NodeContext<E>, request: ReapRequest) -> PeerResponse {
    match ctx
        .replica()
        .reap(
            request.key_hash,
            &request.storage_key,
            request.digest,
            ctx.now_ms(),
        )
        .await
    {
        Ok(reaped) => PeerResponse::Reap(ReapResponse { reaped }),
        Err(e) => PeerResponse::Failed(RemoteError::from(e)),
    }
}

/// The reaper's state between rounds: when it first saw each due key ([`Sightings`]).
#[derive(Default)]
pub struct Reaper {
    sightings: Sightings,
}

impl Reaper {
    /// One round of the worker (see [`reap_round_with`]).
    pub async fn round<E: Engine>(
        &mut self,
        ctx: &NodeContext<E>,
        settings: &ReaperSettings,
    ) -> Result<Progress, Error> {
        let (n, full) = reap_round_with(ctx, settings.interval, &mut self.sightings).await?;
        if n > 0 {
            tracing::info!(reaped = n, "reaped tombstones and expired keys");
        }
        Ok(if full {
            Progress::Throttled
        } else {
            Progress::Done
        })
    }
}

/// Entries examined per reaper round.
const REAP_BATCH: usize = 1024;

/// The least time the reaper holds a due tombstone, by its own monotonic clock, before removing
/// it (unless the grace period itself is shorter); see [`Sightings`].
const REAP_HOLD_MIN: Duration = Duration::from_secs(10);

/// When the reaper first saw each due key, with the object's digest then (a rewrite starts the
/// hold over). The grace period is judged by the versions' timestamps, written by the
/// coordinator's clock: a coordinator whose clock runs behind makes a fresh tombstone look old,
/// and one whose own clock jumps forward ages it at once. A version still in flight when the
/// delete was acknowledged (a replication to an unreachable primary waiting out its timeout,
/// then taken by a fallback as a hint) would then land after the tombstone is gone and come
/// back (simulator seed 21980: a tombstone stamped 3.5 s early was reaped 110 ms after the
/// delete; the value came back by handoff 190 ms later). So the key's first primary also holds
/// each due key for `min(grace, max(REAP_HOLD_MIN, 10 × rpc_timeout))` of monotonic time —
/// longer than any write's replication with its fallbacks takes — and checks for hints only
/// then. In memory only: after a restart every due key is held again.
pub type Sightings = std::collections::HashMap<Vec<u8>, (Option<u64>, tokio::time::Instant)>;

/// [`reap_round_with`] with no earlier sightings: reaps only when the hold is zero (a zero
/// grace period, as in tests).
pub async fn reap_round<E: Engine>(
    ctx: &NodeContext<E>,
    retry_after: Duration,
) -> Result<u64, Error> {
    Ok(reap_round_with(ctx, retry_after, &mut Sightings::default())
        .await?
        .0)
}

/// One reaper round: handles the due entries of the queue. Returns the keys reaped, and
/// whether the round took a full batch (more may be due).
pub async fn reap_round_with<E: Engine>(
    ctx: &NodeContext<E>,
    retry_after: Duration,
    sightings: &mut Sightings,
) -> Result<(u64, bool), Error> {
    let replica = ctx.replica();
    let hold = Duration::from_millis(replica.reap_grace_ms())
        .min(REAP_HOLD_MIN.max(ctx.settings().rpc_timeout * 10));
    let now = ctx.now_ms();
    let due = replica.reap_due(now, REAP_BATCH)?;
    let full = due.len() == REAP_BATCH;
    let mut done_entries = Vec::new();
    let mut retry = Vec::new();
    let mut reaped = 0;
    for (entry, _, storage_key) in due {
        let obj = match replica.read(&storage_key) {
            Ok(o) => o,
            Err(_) => {
                retry.push((entry, storage_key));
                continue;
            }
        };
        if !replica.reapable(&obj, now) || obj.expires_at_ms().is_some() {
            // Rewritten since (a newer entry exists if it will become reapable) or gone; or
            // expiring (an entry an earlier build queued): compaction drops it, not the reaper.
            sightings.remove(&storage_key);
            done_entries.push(entry);
            continue;
        }
        let digest = tree_digest(&storage_key, &obj);
        let seen_now = tokio::time::Instant::now();
        let first = sightings
            .entry(storage_key.clone())
            .or_insert((digest, seen_now));
        if first.0 != digest {
            *first = (digest, seen_now);
        }
        if seen_now.duration_since(first.1) < hold {
            retry.push((entry, storage_key));
            continue;
        }
        match reap_key(ctx, &storage_key, &obj, now).await {
            Ok(ReapOutcome::Reaped) => {
                reaped += 1;
                sightings.remove(&storage_key);
                done_entries.push(entry);
            }
            Ok(ReapOutcome::NotMine) => {
                sightings.remove(&storage_key);
                done_entries.push(entry);
            }
            Ok(ReapOutcome::NotYet) | Err(_) => retry.push((entry, storage_key)),
        }
    }
    replica.reap_dequeue(done_entries)?;
    replica.reap_requeue(retry, now.saturating_add(retry_after.as_millis() as u64))?;
    Ok((reaped, full))
}

enum ReapOutcome {
    Reaped,
    /// Not this node's job (not the key's first primary).
    NotMine,
    /// A primary is down or holds something else: try again later.
    NotYet,
}

async fn reap_key<E: Engine>(
    ctx: &NodeContext<E>,
    storage_key: &[u8],
    obj: &Object,
    now: u64,
) -> Result<ReapOutcome, Error> {
    let (partition, bucket, key) = split_storage_key(storage_key)
        .ok_or_else(|| Error::Corrupt("a storage key in the reap queue does not parse".into()))?;
    let hash = key_hash(bucket, key);
    let topology = ctx.topology();
    let prefs = topology.preference(partition);
    if prefs.first() != Some(topology.local()) {
        return Ok(ReapOutcome::NotMine);
    }
    // While the partition moves, a copy of the value a tombstone deleted may be on its way to a
    // new holder: nothing of it is reaped until every new holder has the partition.
    if topology.in_transition(partition) {
        return Ok(ReapOutcome::NotYet);
    }
    let Some(digest) = tree_digest(storage_key, obj) else {
        return Ok(ReapOutcome::NotMine);
    };
    let others: Vec<&NodeId> = prefs.iter().skip(1).collect();
    for node in &others {
        if !topology.is_up(node) {
            return Ok(ReapOutcome::NotYet);
        }
        let holder = Holder::Primary((*node).clone());
        let theirs = replication::read(ctx, &holder, storage_key, &[], Liveness::Anyway).await?;
        if tree_digest(storage_key, &theirs) != Some(digest) {
            return Ok(ReapOutcome::NotYet);
        }
    }
    // No other node may still hold a hint of the key: a hint goes to the primaries later, and
    // an old version in it (a stand-in may have taken it after the tombstone was written, so
    // the hint's age says nothing about its versions') would come back once the tombstone
    // that covers it is gone (found by the simulator, seed 1269). So every member must be up
    // and hold no hint of the key.
    for node in topology.fallbacks(partition).iter() {
        if !topology.is_up(node) {
            return Ok(ReapOutcome::NotYet);
        }
        let stand_in = Holder::StandIn {
            node: node.clone(),
            for_primary: topology.local().clone(),
        };
        let hints =
            replication::read(ctx, &stand_in, storage_key, &prefs, Liveness::Anyway).await?;
        if !hints.is_empty() {
            return Ok(ReapOutcome::NotYet);
        }
    }
    for node in &others {
        let request = ReapRequest {
            key_hash: hash,
            storage_key: storage_key.to_vec(),
            digest,
        };
        ::metrics::counter!(crate::metrics::REAP_REQUESTS_SENT).increment(1);
        match ctx
            .call(node, PeerRequest::Reap(request), Liveness::Anyway)
            .await?
        {
            PeerResponse::Reap(ReapResponse { .. }) => {}
            other => return Err(out_of_protocol(node, "Reap", other)),
        }
    }
    ctx.replica().reap(hash, storage_key, digest, now).await?;
    Ok(ReapOutcome::Reaped)
}
