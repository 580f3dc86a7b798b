//! Receiving partitions: the worker that fills the partitions this node is syncing and reports
//! them complete to the layout.
//!
//! When a commit makes this node a new holder of a partition, the layout lists it as *syncing*
//! that partition (`yeskv_layout::transition`): it takes the partition's writes but reads do
//! not count its answers, and the former holders keep serving it as *sources*. Every
//! `transfer.interval`, this worker takes each partition it is syncing and runs full
//! anti-entropy exchanges (`aae::exchange_partition`, no key budget) with the partition's data
//! holders until an exchange finds nothing left to copy. A partition is complete once that holds
//! for every data holder: a write acknowledged with `w = 1` may be on one of them only (a holder
//! that is down holds the transfer until it is back, or is forced out of the layout). The complete
//! partitions are then reported through [`LayoutControl::transfer_done`], which records them in
//! the replicated layout; when a partition's last syncing holder reports, its sources are
//! released and a leaving node that is a source of nothing more leaves the layout.
//!
//! Before it first syncs a partition it is receiving (per layout epoch of the addition, and
//! again after a restart), the node removes whatever it still holds of that partition
//! ([`crate::replica::Replica::clear_partition`]): data left from an earlier time as its holder
//! may be older than the holders' (a value whose tombstone they have since reaped), and syncing
//! it would bring it back. Nothing acknowledged is lost by that: a write the node took while
//! receiving also reached a quorum of the data holders. A node that restarts mid-transfer
//! therefore copies the partition again. Writes keep arriving during the transfer (the node is
//! in the write set), and merges are idempotent DVV syncs, so copying and writing never race.
//!
//! Copying goes key by key through the anti-entropy exchange, with checksummed records; a
//! streaming range copy is the planned faster path (`docs/design/data-movement.md`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::NodeContext;
use crate::error::Error;
use crate::metrics;
use crate::workers::Progress;

/// How the layout learns that this node has received partitions.
pub trait LayoutControl: Send + Sync + 'static {
    /// Records that this node has the data of `partitions` (each with the layout epoch since
    /// which it was syncing it). A late or repeated report must change nothing.
    fn transfer_done(&self, partitions: Vec<(u16, u64)>) -> BoxFuture<'static, Result<(), Error>>;
}

/// How the transfer worker paces itself.
#[derive(Clone)]
pub struct TransferSettings {
    /// Pause between rounds.
    pub interval: Duration,
    /// Most exchanges with one holder for one partition in one round (each copies every
    /// differing key it finds).
    pub exchanges_per_holder_max: usize,
    /// Where completions are reported.
    pub control: Arc<dyn LayoutControl>,
}

/// What syncing one partition with its data holders found.
#[derive(Debug, PartialEq, Eq)]
enum Synced {
    /// Every live data holder, and a majority of them, has nothing this node lacks.
    Complete,
    /// Not yet: too few holders reachable, or keys were still being copied.
    Pending,
}

/// The receiving worker's memory: the partitions it has cleared (see the module docs).
#[derive(Default)]
pub struct Receiving {
    cleared: parking_lot::Mutex<HashSet<(u16, u64)>>,
}

impl Receiving {
    /// Clears `partition` unless it was cleared for this addition (`since`) already.
    async fn clear_once<E: Engine>(
        &self,
        ctx: &NodeContext<E>,
        partition: u16,
        since: u64,
    ) -> Result<(), Error> {
        if self.cleared.lock().contains(&(partition, since)) {
            return Ok(());
        }
        let removed = ctx.replica().clear_partition(partition).await?;
        if removed > 0 {
            tracing::info!(
                partition,
                removed,
                "cleared what this node held of a partition it receives anew"
            );
        }
        self.cleared.lock().insert((partition, since));
        Ok(())
    }
}

/// One round: syncs every partition this node is receiving, reports the complete ones.
pub async fn round<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    receiving: &Receiving,
) -> Result<Progress, Error> {
    let syncing = ctx.topology().syncing();
    receiving
        .cleared
        .lock()
        .retain(|entry| syncing.contains(entry));
    if syncing.is_empty() {
        return Ok(Progress::Done);
    }
    let mut complete = Vec::new();
    let mut errors = Vec::new();
    for (partition, since) in &syncing {
        let synced = match receiving.clear_once(ctx, *partition, *since).await {
            Ok(()) => sync_partition(ctx, settings, *partition).await,
            Err(e) => Err(e),
        };
        match synced {
            Ok(Synced::Complete) => complete.push((*partition, *since)),
            Ok(Synced::Pending) => {}
            Err(e) => {
                tracing::debug!(partition, error = %e, "transfer: partition not synced");
                errors.push(e);
            }
        }
    }
    ::metrics::gauge!(metrics::TRANSFER_PARTITIONS_PENDING)
        .set((syncing.len() - complete.len()) as f64);
    let done = complete.len();
    if done > 0 {
        let count = done;
        settings.control.transfer_done(complete).await?;
        ::metrics::counter!(metrics::TRANSFER_PARTITIONS_DONE).increment(count as u64);
        tracing::info!(
            partitions = count,
            left = syncing.len() - count,
            "received partitions; reported to the layout"
        );
    }
    // A round where every partition failed is a failed round (its first error is shown in
    // the worker's status); otherwise the partitions left wait for the next round.
    if errors.len() == syncing.len() {
        if let Some(first) = errors.into_iter().next() {
            return Err(first);
        }
    }
    Ok(if done == syncing.len() {
        Progress::Done
    } else {
        Progress::Throttled
    })
}

/// Syncs one partition with each data holder that is up until an exchange copies nothing.
async fn sync_partition<E: Engine>(
    ctx: &NodeContext<E>,
    settings: &TransferSettings,
    partition: u16,
) -> Result<Synced, Error> {
    let topology = ctx.topology();
    let local = topology.local().clone();
    let holders: Vec<NodeId> = topology
        .data_holders(partition)
        .iter()
        .filter(|n| **n != local)
        .cloned()
        .collect();
    if holders.is_empty() {
        // Nobody has the data (it was lost with the operator's consent): nothing to copy.
        return Ok(Synced::Complete);
    }
    if ctx.replica().tree_summary(partition).is_none() {
        return Ok(Synced::Pending);
    }
    let mut synced = 0;
    for holder in &holders {
        if !topology.is_up(holder) {
            continue;
        }
        let mut settled = false;
        for _ in 0..settings.exchanges_per_holder_max {
            let copied = crate::aae::exchange_partition(ctx, holder, partition, usize::MAX).await?;
            ::metrics::counter!(metrics::TRANSFER_KEYS).increment(copied as u64);
            if copied == 0 {
                settled = true;
                break;
            }
        }
        if !settled {
            return Ok(Synced::Pending);
        }
        synced += 1;
    }
    Ok(if synced == holders.len() {
        Synced::Complete
    } else {
        Synced::Pending
    })
}
