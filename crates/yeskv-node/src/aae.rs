//! Active anti-entropy and the reaper: the background work that puts replicas right without a
//! read or an operator (Dynamo §4.7, Riak 3's Tictac AAE).
//!
//! **Exchange.** Every `repair.aae_interval_ms`, this node asks each other live node that shares
//! partitions with it (both primaries) and whose node id sorts before its own for the roots of
//! those partitions' trees — one small message per peer, whatever the number of keys, which is
//! the whole cost when nothing differs. One side of each pair initiates (the sync goes both
//! ways), so a differing key is synced once per pair, not twice.
//! For each partition whose roots differ it descends: branch hashes, then the segment hashes of
//! differing branches, then the `(key, digest)` lists of differing segments, and syncs each
//! differing key both ways by DVV merge (read both, `sync`, write back to whichever side was
//! behind). At most `repair.aae_keys_per_exchange_max` keys are repaired per round; the rest wait
//! for the next one. Trees are the replicas' own (`replica.rs`), updated on every write in O(1).
//!
//! **Reaper.** A key whose every sibling is a tombstone or expired is queued when stored; once
//! the grace period (`ttl.reap_grace_secs`) has passed, the key's first primary asks every
//! primary for its object and every other member for any hint of the key and, only if all are
//! up, the primaries hold the very same object (same digest) and no hint is left anywhere,
//! tells each primary to remove it (`Reap`, checked again against the digest under the key's lock). So a
//! tombstone is never reaped while a replica could still hold the value it deleted, nor while
//! any member holds a hint that could carry it back (hints are kept until delivered, however
//! long that takes: `replica.rs`, "Hints").

use std::collections::BTreeMap;
use std::time::Duration;

use yeskv_core::codec::{decode_record, encode_record};
use yeskv_core::keyspace::{key_hash, split_storage_key};
use yeskv_core::tictac::{diff_keys, tree_digest};
use yeskv_core::{NodeId, Object};
use yeskv_storage::Engine;

use crate::coordinator::Coordinator;
use crate::error::Error;
use crate::metrics;
use crate::peer::{PeerRequest, PeerResponse};
use crate::replica::Slot;

/// How the workers pace themselves.
#[derive(Clone, Debug)]
pub struct AaeSettings {
    /// Pause between exchange rounds; zero turns exchanges off.
    pub interval: Duration,
    /// Most keys repaired per round.
    pub keys_per_round_max: usize,
    /// Pause between reaper rounds.
    pub reap_interval: Duration,
}

/// What one exchange round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExchangeRound {
    /// Partitions compared.
    pub partitions_compared: u64,
    /// Partitions whose roots differed.
    pub partitions_differing: u64,
    /// Keys found different and synced.
    pub keys_repaired: u64,
}

/// Runs the exchange worker until `stop` turns true.
pub async fn run_exchanges<E: Engine>(
    coordinator: Coordinator<E>,
    settings: AaeSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    if settings.interval.is_zero() {
        return;
    }
    crate::worker::every(settings.interval, stop, || async {
        match exchange_round(&coordinator, settings.keys_per_round_max).await {
            Ok(r) if r.keys_repaired > 0 => tracing::info!(
                compared = r.partitions_compared,
                differing = r.partitions_differing,
                repaired = r.keys_repaired,
                "anti-entropy repaired keys"
            ),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "anti-entropy round failed"),
        }
    })
    .await;
}

/// The partitions this node is a primary of, grouped by each other live primary whose id sorts
/// before this node's (the pairs this node initiates exchanges for).
fn shared_partitions<E: Engine>(c: &Coordinator<E>) -> BTreeMap<NodeId, Vec<u16>> {
    let topology = c.topology();
    let local = topology.local().clone();
    let mut by_peer: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    for p in 0..c.settings().partitions {
        let p = p as u16;
        let prefs = topology.preference(p);
        if !prefs.contains(&local) {
            continue;
        }
        for peer in prefs.iter().filter(|n| **n < local && topology.is_up(n)) {
            by_peer.entry(peer.clone()).or_default().push(p);
        }
    }
    by_peer
}

/// One round: compares roots with every peer and repairs up to `keys_max` keys.
pub async fn exchange_round<E: Engine>(
    c: &Coordinator<E>,
    keys_max: usize,
) -> Result<ExchangeRound, Error> {
    let mut round = ExchangeRound::default();
    let mut budget = keys_max;
    for (peer, partitions) in shared_partitions(c) {
        let theirs = match call(
            c,
            &peer,
            PeerRequest::AaeRoots {
                partitions: partitions.clone(),
            },
        )
        .await
        {
            Ok(PeerResponse::AaeRoots(r)) if r.len() == partitions.len() => r,
            Ok(other) => {
                ::metrics::counter!(metrics::AAE_EXCHANGES, "result" => "failed").increment(1);
                tracing::debug!(%peer, ?other, "unexpected answer to AaeRoots");
                continue;
            }
            Err(e) => {
                ::metrics::counter!(metrics::AAE_EXCHANGES, "result" => "failed").increment(1);
                tracing::debug!(%peer, error = %e, "anti-entropy: peer unreachable");
                continue;
            }
        };
        ::metrics::counter!(metrics::AAE_BYTES).increment(10 * partitions.len() as u64);
        for (p, their_root) in partitions.iter().zip(theirs) {
            let Some(their_root) = their_root else {
                continue;
            };
            let Some(ours) = c.replica().tree_summary(*p) else {
                continue;
            };
            round.partitions_compared += 1;
            if ours.root == their_root {
                ::metrics::counter!(metrics::AAE_EXCHANGES, "result" => "equal").increment(1);
                continue;
            }
            round.partitions_differing += 1;
            if budget == 0 {
                continue;
            }
            match exchange_partition(c, &peer, *p, budget).await {
                Ok(repaired) => {
                    ::metrics::counter!(metrics::AAE_EXCHANGES, "result" => "repaired")
                        .increment(1);
                    ::metrics::counter!(metrics::AAE_KEYS_REPAIRED).increment(repaired as u64);
                    round.keys_repaired += repaired as u64;
                    budget = budget.saturating_sub(repaired.max(1));
                }
                Err(e) => {
                    ::metrics::counter!(metrics::AAE_EXCHANGES, "result" => "failed").increment(1);
                    tracing::debug!(%peer, partition = p, error = %e, "anti-entropy exchange failed");
                }
            }
        }
    }
    Ok(round)
}

async fn call<E: Engine>(
    c: &Coordinator<E>,
    node: &NodeId,
    request: PeerRequest,
) -> Result<PeerResponse, Error> {
    let addr = c
        .topology()
        .peer_addr(node)
        .ok_or_else(|| Error::Storage(format!("{node}: address unknown")))?;
    match c
        .peers()
        .call(&addr, request, c.settings().rpc_timeout)
        .await
    {
        Ok(PeerResponse::Failed(e)) => Err(e.into()),
        Ok(r) => Ok(r),
        Err(e) => Err(Error::Storage(format!("{node}: {e}"))),
    }
}

/// Descends one partition's trees with `peer` and syncs up to `keys_max` differing keys.
/// Returns the number of keys synced.
pub async fn exchange_partition<E: Engine>(
    c: &Coordinator<E>,
    peer: &NodeId,
    partition: u16,
    keys_max: usize,
) -> Result<usize, Error> {
    let theirs = match call(c, peer, PeerRequest::AaeBranches { partition }).await? {
        PeerResponse::AaeHashes(Some(h)) => h,
        _ => return Ok(0),
    };
    let differing = c
        .replica()
        .with_tree(partition, |t| t.differing_branches(&theirs))
        .ok_or_else(|| Error::Storage("tree not ready".into()))?
        .map_err(|e| Error::Storage(e.to_string()))?;
    if differing.is_empty() {
        return Ok(0);
    }
    let their_segments = match call(
        c,
        peer,
        PeerRequest::AaeSegments {
            partition,
            branches: differing.clone(),
        },
    )
    .await?
    {
        PeerResponse::AaeHashes(Some(h)) => h,
        _ => return Ok(0),
    };
    let per_branch = their_segments.len() / differing.len().max(1);
    let mut segments = Vec::new();
    for (i, b) in differing.iter().enumerate() {
        let slice = their_segments
            .get(i * per_branch..(i + 1) * per_branch)
            .ok_or_else(|| Error::Storage("short segment list".into()))?;
        let diff = c
            .replica()
            .with_tree(partition, |t| t.differing_segments(*b, slice))
            .ok_or_else(|| Error::Storage("tree not ready".into()))?
            .map_err(|e| Error::Storage(e.to_string()))?;
        segments.extend(diff);
    }
    ::metrics::counter!(metrics::AAE_BYTES)
        .increment(8 * (theirs.len() + their_segments.len()) as u64);
    if segments.is_empty() {
        return Ok(0);
    }
    let their_keys = match call(
        c,
        peer,
        PeerRequest::AaeKeys {
            partition,
            segments: segments.clone(),
        },
    )
    .await?
    {
        PeerResponse::AaeKeys(k) => k
            .into_iter()
            .map(|(k, d)| (k.into_vec(), d))
            .collect::<Vec<_>>(),
        _ => return Ok(0),
    };
    ::metrics::counter!(metrics::AAE_BYTES).increment(
        their_keys
            .iter()
            .map(|(k, _)| k.len() as u64 + 8)
            .sum::<u64>(),
    );
    let ours = c.replica().segment_keys(partition, &segments)?;
    let keys = diff_keys(&ours, &their_keys);
    let mut synced = 0;
    for key in keys.into_iter().take(keys_max) {
        sync_key(c, peer, &key).await?;
        synced += 1;
    }
    Ok(synced)
}

/// Syncs one key with `peer` both ways: read both objects, merge, write back where behind.
pub async fn sync_key<E: Engine>(
    c: &Coordinator<E>,
    peer: &NodeId,
    storage_key: &[u8],
) -> Result<(), Error> {
    let (_, bucket, key) = split_storage_key(storage_key)
        .ok_or_else(|| Error::Storage("malformed storage key".into()))?;
    let hash = key_hash(bucket, key);
    let local = c.replica().read(storage_key)?;
    let remote = match call(
        c,
        peer,
        PeerRequest::Read {
            storage_key: storage_key.to_vec(),
        },
    )
    .await?
    {
        PeerResponse::Object(None) => Object::new(),
        PeerResponse::Object(Some(rec)) => {
            decode_record(&rec).map_err(|e| Error::Corrupt(format!("object from {peer}: {e}")))?
        }
        other => return Err(Error::Storage(format!("unexpected answer {other:?}"))),
    };
    let mut merged = local.clone();
    merged.sync(&remote);
    if merged != local {
        c.replica()
            .merge(Slot::Own, hash, storage_key, &remote, c.now_ms())
            .await?;
    }
    if merged != remote {
        let record = encode_record(&merged, None);
        ::metrics::counter!(metrics::AAE_BYTES).increment(record.len() as u64);
        match call(
            c,
            peer,
            PeerRequest::Merge {
                key_hash: hash,
                storage_key: storage_key.to_vec(),
                record,
            },
        )
        .await?
        {
            PeerResponse::Merged => {}
            other => return Err(Error::Storage(format!("unexpected answer {other:?}"))),
        }
    }
    Ok(())
}

/// Answers the anti-entropy and reaper requests of other nodes.
pub async fn serve<E: Engine>(c: &Coordinator<E>, request: PeerRequest) -> PeerResponse {
    let replica = c.replica();
    match request {
        PeerRequest::AaeRoots { partitions } => PeerResponse::AaeRoots(
            partitions
                .iter()
                .map(|p| replica.tree_summary(*p).map(|s| s.root))
                .collect(),
        ),
        PeerRequest::AaeBranches { partition } => {
            PeerResponse::AaeHashes(replica.with_tree(partition, |t| t.branches().to_vec()))
        }
        PeerRequest::AaeSegments {
            partition,
            branches,
        } => PeerResponse::AaeHashes(
            replica
                .with_tree(partition, |t| {
                    let mut out = Vec::new();
                    for b in &branches {
                        out.extend_from_slice(t.segments_of_branch(*b).ok()?);
                    }
                    Some(out)
                })
                .flatten(),
        ),
        PeerRequest::AaeKeys {
            partition,
            segments,
        } => match replica.segment_keys(partition, &segments) {
            Ok(keys) => PeerResponse::AaeKeys(
                keys.into_iter()
                    .map(|(k, d)| (serde_bytes::ByteBuf::from(k), d))
                    .collect(),
            ),
            Err(e) => PeerResponse::Failed(e.into()),
        },
        PeerRequest::Reap {
            key_hash,
            storage_key,
            digest,
        } => match replica
            .reap(key_hash, &storage_key, digest, c.now_ms())
            .await
        {
            Ok(done) => PeerResponse::Reaped(done),
            Err(e) => PeerResponse::Failed(e.into()),
        },
        _ => PeerResponse::Failed(crate::peer::RemoteError::BadRequest(
            "not an anti-entropy request".into(),
        )),
    }
}

/// Runs the reaper until `stop` turns true.
pub async fn run_reaper<E: Engine>(
    coordinator: Coordinator<E>,
    settings: AaeSettings,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let sightings = parking_lot::Mutex::new(Sightings::default());
    crate::worker::every(settings.reap_interval, stop, || async {
        let mut seen = std::mem::take(&mut *sightings.lock());
        let result = reap_round_with(&coordinator, settings.reap_interval, &mut seen).await;
        *sightings.lock() = seen;
        match result {
            Ok(n) if n > 0 => tracing::info!(reaped = n, "reaped tombstones and expired keys"),
            Ok(_) => {}
            Err(e) => tracing::debug!(error = %e, "reaper round failed"),
        }
    })
    .await;
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
    c: &Coordinator<E>,
    retry_after: Duration,
) -> Result<u64, Error> {
    reap_round_with(c, retry_after, &mut Sightings::default()).await
}

/// One reaper round: handles the due entries of the queue. Returns keys reaped.
pub async fn reap_round_with<E: Engine>(
    c: &Coordinator<E>,
    retry_after: Duration,
    sightings: &mut Sightings,
) -> Result<u64, Error> {
    let replica = c.replica();
    let hold = Duration::from_millis(replica.reap_grace_ms())
        .min(REAP_HOLD_MIN.max(c.settings().rpc_timeout * 10));
    let now = c.now_ms();
    let due = replica.reap_due(now, REAP_BATCH)?;
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
        if !replica.reapable(&obj, now) {
            // Rewritten since (a newer entry exists if it will become reapable) or gone.
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
        match reap_key(c, &storage_key, &obj, now).await {
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
    Ok(reaped)
}

enum ReapOutcome {
    Reaped,
    /// Not this node's job (not the key's first primary).
    NotMine,
    /// A primary is down or holds something else: try again later.
    NotYet,
}

async fn reap_key<E: Engine>(
    c: &Coordinator<E>,
    storage_key: &[u8],
    obj: &Object,
    now: u64,
) -> Result<ReapOutcome, Error> {
    let (partition, bucket, key) = split_storage_key(storage_key)
        .ok_or_else(|| Error::Storage("malformed storage key".into()))?;
    let hash = key_hash(bucket, key);
    let topology = c.topology();
    let prefs = topology.preference(partition);
    if prefs.first() != Some(topology.local()) {
        return Ok(ReapOutcome::NotMine);
    }
    let Some(digest) = tree_digest(storage_key, obj) else {
        return Ok(ReapOutcome::NotMine);
    };
    let others: Vec<&NodeId> = prefs.iter().skip(1).collect();
    for node in &others {
        if !topology.is_up(node) {
            return Ok(ReapOutcome::NotYet);
        }
        let theirs = match call(
            c,
            node,
            PeerRequest::Read {
                storage_key: storage_key.to_vec(),
            },
        )
        .await?
        {
            PeerResponse::Object(Some(rec)) => decode_record(&rec)
                .map_err(|e| Error::Corrupt(format!("object from {node}: {e}")))?,
            PeerResponse::Object(None) => Object::new(),
            other => return Err(Error::Storage(format!("unexpected answer {other:?}"))),
        };
        if tree_digest(storage_key, &theirs) != Some(digest) {
            return Ok(ReapOutcome::NotYet);
        }
    }
    // No other node may still hold a hint of the key: a hint goes to the primaries later, and
    // an old version in it (a stand-in may have taken it after the tombstone was written, so
    // the hint's age says nothing about its versions') would come back once the tombstone
    // that covers it is gone (found by the simulator, seed 1269). So every member must be up
    // and hold no hint of the key.
    let targets: Vec<String> = prefs.iter().map(|n| n.as_str().to_string()).collect();
    for node in topology.fallbacks(partition).iter() {
        if !topology.is_up(node) {
            return Ok(ReapOutcome::NotYet);
        }
        match call(
            c,
            node,
            PeerRequest::ReadHints {
                targets: targets.clone(),
                storage_key: storage_key.to_vec(),
            },
        )
        .await?
        {
            PeerResponse::Object(None) => {}
            PeerResponse::Object(Some(_)) => return Ok(ReapOutcome::NotYet),
            other => return Err(Error::Storage(format!("unexpected answer {other:?}"))),
        }
    }
    for node in &others {
        match call(
            c,
            node,
            PeerRequest::Reap {
                key_hash: hash,
                storage_key: storage_key.to_vec(),
                digest,
            },
        )
        .await?
        {
            PeerResponse::Reaped(_) => {}
            other => return Err(Error::Storage(format!("unexpected answer {other:?}"))),
        }
    }
    c.replica().reap(hash, storage_key, digest, now).await?;
    Ok(ReapOutcome::Reaped)
}
