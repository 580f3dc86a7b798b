//! Active anti-entropy: the background work that puts replicas right without a read or an
//! operator (Dynamo §4.7, Riak 3's Tictac AAE).
//!
//! Every `repair.aae_interval_ms`, this node asks each other live node that shares partitions
//! with it (both primaries) and whose node id sorts before its own for the roots of those
//! partitions' trees — one small message per peer, whatever the number of keys, which is the
//! whole cost when nothing differs. One side of each pair initiates (the sync goes both ways), so
//! a differing key is synced once per pair, not twice. For each partition whose roots differ it
//! descends: branch hashes, then the segment hashes of differing branches, then the
//! `(key, digest)` lists of differing segments, and syncs each differing key both ways by DVV
//! merge (read both, `sync`, write back to whichever side was behind). At most
//! `repair.aae_keys_per_exchange_max` keys are repaired per round; the rest wait for the next
//! one. Trees are the replicas' own (`replica/trees.rs`), updated on every write in O(1).
//!
//! This module owns the exchange messages ([`AaeRequest`]) and answers them ([`serve`]).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yeskv_core::keyspace::{key_hash, split_storage_key};
use yeskv_core::tictac::diff_keys;
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::{out_of_protocol, Liveness, NodeContext};
use crate::error::Error;
use crate::metrics;
use crate::peer::{PeerRequest, PeerResponse, RemoteError};
use crate::replica::Slot;
use crate::replication::{self, Holder};
use crate::workers::Progress;

/// An anti-entropy message (see the module docs).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum AaeRequest {
    /// The tree roots of these partitions (`None` where the tree is not ready).
    Roots {
        /// Partitions asked.
        partitions: Vec<u16>,
    },
    /// The branch hashes of one partition's tree.
    Branches {
        /// The partition.
        partition: u16,
    },
    /// The segment hashes of these branches, concatenated in the order asked.
    Segments {
        /// The partition.
        partition: u16,
        /// Branches asked.
        branches: Vec<u32>,
    },
    /// `(storage_key, digest)` of every key in these segments.
    Keys {
        /// The partition.
        partition: u16,
        /// Segments asked (tree-wide numbers).
        segments: Vec<u32>,
    },
}

impl AaeRequest {
    /// The message's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            AaeRequest::Roots { .. } => "AaeRoots",
            AaeRequest::Branches { .. } => "AaeBranches",
            AaeRequest::Segments { .. } => "AaeSegments",
            AaeRequest::Keys { .. } => "AaeKeys",
        }
    }
}

/// The answer to an [`AaeRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum AaeResponse {
    /// Tree roots (`Roots`).
    Roots(Vec<Option<u64>>),
    /// Hashes (`Branches`, `Segments`); `None`: the tree is not ready.
    Hashes(Option<Vec<u64>>),
    /// Keys and digests (`Keys`).
    Keys(Vec<(serde_bytes::ByteBuf, u64)>),
}

/// How the exchange worker paces itself.
#[derive(Clone, Debug)]
pub struct AaeSettings {
    /// Pause between exchange rounds; zero turns exchanges off.
    pub interval: Duration,
    /// Most keys repaired per round.
    pub keys_per_round_max: usize,
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

/// Sends an anti-entropy message to `peer` and returns its answer. Exchanges pick their peers
/// by the failure detector once per round, then talk to them whatever it says meanwhile.
async fn ask<E: Engine>(
    ctx: &NodeContext<E>,
    peer: &NodeId,
    request: AaeRequest,
) -> Result<AaeResponse, Error> {
    let name = request.name();
    match ctx
        .call(peer, PeerRequest::Aae(request), Liveness::Anyway)
        .await?
    {
        PeerResponse::Aae(answer) => Ok(answer),
        other => Err(out_of_protocol(peer, name, other)),
    }
}

/// `answer`, which must be hashes, as hashes (`None`: the peer's tree is not ready).
fn hashes(
    peer: &NodeId,
    request: &'static str,
    answer: AaeResponse,
) -> Result<Option<Vec<u64>>, Error> {
    match answer {
        AaeResponse::Hashes(h) => Ok(h),
        other => Err(out_of_protocol(peer, request, PeerResponse::Aae(other))),
    }
}

/// One exchange round of the worker: compares roots with every peer, repairs what differs.
/// Throttled when partitions still differed after the round spent its key budget.
pub async fn round<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &AaeSettings,
) -> Result<Progress, Error> {
    let r = exchange_round(ctx, settings.keys_per_round_max).await?;
    ::metrics::gauge!(metrics::AAE_PARTITIONS_COMPARED).set(r.partitions_compared as f64);
    ::metrics::gauge!(metrics::AAE_PARTITIONS_DIFFERING).set(r.partitions_differing as f64);
    if r.keys_repaired > 0 {
        tracing::info!(
            compared = r.partitions_compared,
            differing = r.partitions_differing,
            repaired = r.keys_repaired,
            "anti-entropy repaired keys"
        );
    }
    Ok(
        if r.keys_repaired >= settings.keys_per_round_max as u64 && r.partitions_differing > 0 {
            Progress::Throttled
        } else {
            Progress::Done
        },
    )
}

/// The partitions this node holds the data of (it is one of their data holders: replicas not
/// receiving them, and former holders still serving them), grouped by each other live data
/// holder whose id sorts before this node's (the pairs this node initiates exchanges for). A
/// node still receiving a partition is synced by its transfer worker instead: what it holds is
/// not trusted until then, and must not be pushed to the holders.
fn shared_partitions<E: Engine>(ctx: &NodeContext<E>) -> BTreeMap<NodeId, Vec<u16>> {
    let topology = ctx.topology();
    let local = topology.local().clone();
    let mut by_peer: BTreeMap<NodeId, Vec<u16>> = BTreeMap::new();
    for p in 0..ctx.settings().partitions {
        let p = p as u16;
        let holders = topology.data_holders(p);
        if !holders.contains(&local) {
            continue;
        }
        for peer in holders.iter().filter(|n| **n < local && topology.is_up(n)) {
            by_peer.entry(peer.clone()).or_default().push(p);
        }
    }
    by_peer
}

/// One round: compares roots with every peer and repairs up to `keys_max` keys.
pub async fn exchange_round<E: Engine>(
    ctx: &NodeContext<E>,
    keys_max: usize,
) -> Result<ExchangeRound, Error> {
    let mut round = ExchangeRound::default();
    let mut budget = keys_max;
    for (peer, partitions) in shared_partitions(ctx) {
        let roots = ask(
            ctx,
            &peer,
            AaeRequest::Roots {
                partitions: partitions.clone(),
            },
        )
        .await;
        let theirs = match roots {
            Ok(AaeResponse::Roots(r)) if r.len() == partitions.len() => r,
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
            let Some(ours) = ctx.replica().tree_summary(*p) else {
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
            match exchange_partition(ctx, &peer, *p, budget).await {
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

/// Descends one partition's trees with `peer` and syncs up to `keys_max` differing keys.
/// Returns the number of keys synced.
pub async fn exchange_partition<E: Engine>(
    ctx: &NodeContext<E>,
    peer: &NodeId,
    partition: u16,
    keys_max: usize,
) -> Result<usize, Error> {
    let answer = ask(ctx, peer, AaeRequest::Branches { partition }).await?;
    let Some(theirs) = hashes(peer, "AaeBranches", answer)? else {
        return Err(Error::NotServing(
            "the peer is rebuilding its tree of this partition",
        ));
    };
    let differing = ctx
        .replica()
        .with_tree(partition, |t| t.differing_branches(&theirs))
        .ok_or(Error::NotServing("rebuilding its tree of this partition"))?
        .map_err(|e| Error::Protocol {
            node: peer.clone(),
            request: "AaeBranches",
            answer: e.to_string(),
        })?;
    if differing.is_empty() {
        return Ok(0);
    }
    let answer = ask(
        ctx,
        peer,
        AaeRequest::Segments {
            partition,
            branches: differing.clone(),
        },
    )
    .await?;
    let Some(their_segments) = hashes(peer, "AaeSegments", answer)? else {
        return Err(Error::NotServing(
            "the peer is rebuilding its tree of this partition",
        ));
    };
    let per_branch = their_segments.len() / differing.len().max(1);
    let mut segments = Vec::new();
    for (i, b) in differing.iter().enumerate() {
        let slice = their_segments
            .get(i * per_branch..(i + 1) * per_branch)
            .ok_or_else(|| Error::Protocol {
                node: peer.clone(),
                request: "AaeSegments",
                answer: format!(
                    "{} segment hashes for {} branches",
                    their_segments.len(),
                    differing.len()
                ),
            })?;
        let diff = ctx
            .replica()
            .with_tree(partition, |t| t.differing_segments(*b, slice))
            .ok_or(Error::NotServing("rebuilding its tree of this partition"))?
            .map_err(|e| Error::Protocol {
                node: peer.clone(),
                request: "AaeSegments",
                answer: e.to_string(),
            })?;
        segments.extend(diff);
    }
    ::metrics::counter!(metrics::AAE_BYTES)
        .increment(8 * (theirs.len() + their_segments.len()) as u64);
    if segments.is_empty() {
        return Ok(0);
    }
    let their_keys = match ask(
        ctx,
        peer,
        AaeRequest::Keys {
            partition,
            segments: segments.clone(),
        },
    )
    .await?
    {
        AaeResponse::Keys(k) => k
            .into_iter()
            .map(|(k, d)| (k.into_vec(), d))
            .collect::<Vec<_>>(),
        other => return Err(out_of_protocol(peer, "AaeKeys", PeerResponse::Aae(other))),
    };
    ::metrics::counter!(metrics::AAE_BYTES).increment(
        their_keys
            .iter()
            .map(|(k, _)| k.len() as u64 + 8)
            .sum::<u64>(),
    );
    let ours = ctx.replica().segment_keys(partition, &segments)?;
    let keys = diff_keys(&ours, &their_keys);
    let mut synced = 0;
    let mut first_error = None;
    for key in keys.into_iter().take(keys_max) {
        // One key that cannot be synced does not stop the others; the exchange still fails
        // (after them) so that nobody takes the partition for synced.
        match sync_key(ctx, peer, &key).await {
            Ok(()) => synced += 1,
            Err(e) => {
                tracing::debug!(%peer, partition, error = %e, "anti-entropy: a key failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(synced),
    }
}

/// Syncs one key with `peer` both ways: read both objects, merge, write back where behind.
pub async fn sync_key<E: Engine>(
    ctx: &NodeContext<E>,
    peer: &NodeId,
    storage_key: &[u8],
) -> Result<(), Error> {
    let (_, bucket, key) = split_storage_key(storage_key)
        .ok_or_else(|| Error::Corrupt("a storage key does not parse".into()))?;
    let hash = key_hash(bucket, key);
    // A corrupt copy on either side counts as missing: the other side's copy replaces it.
    let missing_if_corrupt = |read: Result<yeskv_core::Object, Error>| match read {
        Err(Error::Corrupt(_)) => Ok(yeskv_core::Object::new()),
        other => other,
    };
    let local = missing_if_corrupt(ctx.replica().read(storage_key))?;
    let holder = Holder::Primary(peer.clone());
    let remote = missing_if_corrupt(
        replication::read(ctx, &holder, storage_key, &[], Liveness::Anyway).await,
    )?;
    let mut merged = local.clone();
    merged.sync(&remote);
    if merged != local {
        ctx.replica()
            .merge(Slot::Own, hash, storage_key, &remote, ctx.now_ms())
            .await?;
    }
    if merged != remote {
        let record = yeskv_core::codec::encode_record(&merged, None);
        ::metrics::counter!(metrics::AAE_BYTES).increment(record.len() as u64);
        replication::send_merge(ctx, &holder, hash, storage_key, &record, Liveness::Anyway).await?;
    }
    Ok(())
}

/// Answers a peer's anti-entropy message. The request is checked first (partitions that
/// exist, no more branches or segments than a tree has: a peer cannot make one request cost
/// more than a whole tree), and answered off the async workers: a `Keys` request scans a whole
/// partition under its tree's lock.
pub async fn serve<E: Engine>(ctx: &NodeContext<E>, request: AaeRequest) -> PeerResponse {
    if let Err(reason) = check(&request, ctx.settings().partitions) {
        return PeerResponse::Failed(RemoteError::BadRequest(format!(
            "{}: {reason}",
            request.name()
        )));
    }
    let replica = ctx.replica().clone();
    crate::workers::off_async("anti-entropy answer", move || answer(&replica, request))
        .await
        .unwrap_or_else(|e| PeerResponse::Failed(RemoteError::from(e)))
}

/// Why `request` asks for more than any tree of a cluster of `partitions` partitions has.
fn check(request: &AaeRequest, partitions: u32) -> Result<(), String> {
    let geometry = yeskv_core::tictac::TreeGeometry::default();
    let partition_ok = |p: u16| {
        if u32::from(p) < partitions {
            Ok(())
        } else {
            Err(format!(
                "partition {p} does not exist (the cluster has {partitions})"
            ))
        }
    };
    match request {
        AaeRequest::Roots { partitions: asked } => {
            if asked.len() > partitions as usize {
                return Err(format!(
                    "{} partitions asked; the cluster has {partitions}",
                    asked.len()
                ));
            }
            asked.iter().try_for_each(|p| partition_ok(*p))
        }
        AaeRequest::Branches { partition } => partition_ok(*partition),
        AaeRequest::Segments {
            partition,
            branches,
        } => {
            partition_ok(*partition)?;
            if branches.len() > geometry.branches() as usize {
                return Err(format!(
                    "{} branches asked; a tree has {}",
                    branches.len(),
                    geometry.branches()
                ));
            }
            Ok(())
        }
        AaeRequest::Keys {
            partition,
            segments,
        } => {
            partition_ok(*partition)?;
            if segments.len() > geometry.segments() as usize {
                return Err(format!(
                    "{} segments asked; a tree has {}",
                    segments.len(),
                    geometry.segments()
                ));
            }
            Ok(())
        }
    }
}

/// The answer to a checked request.
fn answer<E: Engine>(replica: &crate::replica::Replica<E>, request: AaeRequest) -> PeerResponse {
    let answer = match request {
        AaeRequest::Roots { partitions } => AaeResponse::Roots(
            partitions
                .iter()
                .map(|p| replica.tree_summary(*p).map(|s| s.root))
                .collect(),
        ),
        AaeRequest::Branches { partition } => {
            AaeResponse::Hashes(replica.with_tree(partition, |t| t.branches().to_vec()))
        }
        AaeRequest::Segments {
            partition,
            branches,
        } => AaeResponse::Hashes(
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
        AaeRequest::Keys {
            partition,
            segments,
        } => match replica.segment_keys(partition, &segments) {
            Ok(keys) => AaeResponse::Keys(
                keys.into_iter()
                    .map(|(k, d)| (serde_bytes::ByteBuf::from(k), d))
                    .collect(),
            ),
            Err(e) => return PeerResponse::Failed(RemoteError::from(e)),
        },
    };
    PeerResponse::Aae(answer)
}
