//! Hinted handoff: giving back what this node took for a down primary (Dynamo §4.6).
//!
//! When a primary of a key was down or slow, a fallback took its copy of the write as a hint
//! (see `replica/hints.rs`). This worker, one per node, wakes every
//! `repair.handoff_interval_ms`, and for each target that the failure detector says is up again
//! sends the hints in batches (`repair.handoff_batch`, at most `repair.handoff_inflight_max` in
//! flight: back-pressure on the target). The target merges each object by DVV `sync`, which is
//! idempotent, so a retry after a lost answer is harmless. A hint is removed only after the
//! target answered that the object is durable, and only if it did not change in the meantime
//! (a write that arrived since keeps it for the next round).
//!
//! A hint is never dropped for its age (see `replica/hints.rs`): it waits, however long its
//! target is away. A hint whose object is expiring and has expired is dropped instead of
//! delivered (`crate::expiry`): its target may have dropped the record already, and it must not
//! come back there. If the target has left the layout, or no longer holds the key's partition
//! (the partition moved while it was away), the hint goes to the key's current holders instead
//! (its write set: each merges it; the hint is removed once all of them took it durably), so a
//! node that leaves for good takes nothing owed to it along, and no hint lands on a node that
//! would clean it up as a former holder's copy.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use yeskv_core::keyspace::split_storage_key;
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::NodeContext;
use crate::error::Error;
use crate::metrics;
use crate::replication;
use crate::workers::Progress;

/// How the worker paces itself.
#[derive(Clone, Debug)]
pub struct HandoffSettings {
    /// Pause between rounds.
    pub interval: Duration,
    /// Hints read and sent per batch.
    pub batch: usize,
    /// Hints in flight to one target at once.
    pub inflight_max: usize,
}

/// What one round did for one target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Hints the target took durably and that were removed here.
    pub handed_off: u64,
    /// Hints for a target that left the layout, taken by the key's current primaries and
    /// removed here.
    pub rehomed: u64,
    /// Sends that failed (the rest of the round for that target was skipped).
    pub failed: u64,
    /// Hints whose object had expired (every sibling an expired value): removed, not sent.
    pub expired: u64,
}

/// What became of one hint of a batch.
enum Outcome {
    /// Taken by its target (`rehomed`: by the key's current holders); `removed` unless it
    /// changed meanwhile.
    Delivered { removed: bool, rehomed: bool },
    /// Expired: not sent; `removed` unless it changed meanwhile.
    Expired { removed: bool },
}

/// One round of the worker: a [`round`] for every node this node holds hints for. Throttled
/// when hints are left for a target that is up (a round sends a bounded number of batches).
pub async fn worker_round<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &HandoffSettings,
) -> Result<Progress, Error> {
    let replica = ctx.replica();
    set_gauges(replica);
    let mut progress = Progress::Done;
    let mut failed = None;
    for target in replica.hint_counts().into_keys() {
        match round(ctx, &target, settings).await {
            Ok(r) => {
                let left = replica.hint_counts().get(&target).copied().unwrap_or(0);
                if r != Round::default() {
                    tracing::info!(
                        %target,
                        handed_off = r.handed_off,
                        rehomed = r.rehomed,
                        expired = r.expired,
                        failed = r.failed,
                        pending = left,
                        "hinted handoff"
                    );
                }
                if left > 0 && r.failed == 0 && (r.handed_off > 0 || r.rehomed > 0 || r.expired > 0)
                {
                    progress = Progress::Throttled;
                }
            }
            Err(e) => {
                tracing::warn!(%target, error = %e, "hinted handoff round failed");
                failed = Some(e);
            }
        }
    }
    set_gauges(replica);
    match failed {
        Some(e) => Err(e),
        None => Ok(progress),
    }
}

fn set_gauges<E: Engine>(replica: &crate::replica::Replica<E>) {
    ::metrics::gauge!(metrics::HINTS_PENDING).set(replica.hints_pending() as f64);
    ::metrics::gauge!(metrics::HINT_BYTES).set(replica.hint_bytes() as f64);
}

/// One round of handoff to `target`: batches until none is left, the target stops answering,
/// or a bounded number of batches was sent. A target that left the layout has its hints
/// delivered to the keys' current primaries instead.
pub async fn round<E: Engine>(
    ctx: &NodeContext<E>,
    target: &NodeId,
    settings: &HandoffSettings,
) -> Result<Round, Error> {
    let replica = ctx.replica();
    let topology = ctx.topology();
    let member = topology.is_member(target);
    let mut done = Round::default();
    if member && (!topology.is_up(target) || topology.peer_addr(target).is_none()) {
        return Ok(done);
    }
    let pending = replica.hint_counts().get(target).copied().unwrap_or(0);
    let batches_max = pending / settings.batch.max(1) as u64 + 2;
    for _ in 0..batches_max {
        let batch = replica.hint_batch(target, settings.batch)?;
        if batch.is_empty() {
            break;
        }
        let full = batch.len() == settings.batch;
        let now_ms = ctx.now_ms();
        let results: Vec<Result<Outcome, Error>> = stream::iter(batch)
            .map(|h| async move {
                if crate::expiry::expired(&h.object, now_ms) {
                    // Removed like a delivered hint (the book's counts follow); a write that
                    // arrived since keeps it for the next round.
                    let removed = replica.remove_hint(target, &h).await?;
                    return Ok(Outcome::Expired { removed });
                }
                let holds = member
                    && split_storage_key(&h.storage_key)
                        .is_some_and(|(p, _, _)| topology.write_set(p).contains(target));
                if holds {
                    replication::hand_off(ctx, target, &h).await?;
                } else {
                    replication::rehome(ctx, &h).await?;
                }
                ::metrics::counter!(metrics::HANDOFF_BYTES).increment(h.raw.len() as u64);
                Ok(Outcome::Delivered {
                    removed: replica.remove_hint(target, &h).await?,
                    rehomed: !holds,
                })
            })
            .buffer_unordered(settings.inflight_max.max(1))
            .collect()
            .await;
        let mut failed = false;
        for r in results {
            match r {
                Ok(Outcome::Delivered {
                    removed: true,
                    rehomed: false,
                }) => {
                    done.handed_off += 1;
                    ::metrics::counter!(metrics::HINTS_HANDED_OFF).increment(1);
                }
                Ok(Outcome::Delivered {
                    removed: true,
                    rehomed: true,
                }) => {
                    done.rehomed += 1;
                    ::metrics::counter!(metrics::HINTS_REHOMED).increment(1);
                }
                Ok(Outcome::Expired { removed: true }) => {
                    done.expired += 1;
                    crate::expiry::skipped("hint");
                }
                Ok(
                    Outcome::Delivered { removed: false, .. } | Outcome::Expired { removed: false },
                ) => {}
                Err(e) => {
                    failed = true;
                    done.failed += 1;
                    tracing::debug!(%target, error = %e, "handoff of a hint failed");
                }
            }
        }
        if failed || !full {
            break;
        }
    }
    Ok(done)
}
