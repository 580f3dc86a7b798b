//! Coalescing of a coordinator's replica writes per peer: many `Merge`s become one `MergeMany`.
//!
//! Every client write sends its object to the key's other primaries. Sent one by one, each copy
//! is its own internode frame, its own task on the receiver, its own engine write and its own
//! wait for the receiver's group commit, and its own answer. [`MergeQueues`] gives each peer a
//! queue: a merge is sent at once while fewer than [`INFLIGHT_MAX`] batches to that peer are in
//! flight (so a lone write, or a lightly loaded node, is never delayed), and otherwise waits for
//! one to come back and leaves with everything queued behind it (at most [`BATCH_ITEMS_MAX`]
//! objects or [`BATCH_BYTES_MAX`] bytes) as one `MergeMany`. The batch size follows the load:
//! one under light load, more as writes arrive faster than a round trip.
//!
//! The receiver treats a `MergeMany` as that many `Merge`s (`replication::merge_many`): each
//! object is checked before any is applied, each is merged under its key's stripe lock, all
//! share one group commit, and each is answered on its own (taken, or refused because the
//! receiver holds no copy of its partition). A caller learns its own object's outcome only, and
//! an error of the whole batch (transport, timeout, the peer's storage) is every caller's.
//!
//! Invariants:
//! - Every queued merge is answered: sent in a batch whose outcome reaches it, or failed if its
//!   batch's driver is dropped (the answer channel closes). A batch's driver is whoever found
//!   a free slot: the caller itself, or a task started when a batch ended with merges still
//!   queued; the slot is given back (and the queue's next batch started) when the driver ends,
//!   however it ends, so a queue never stalls.
//! - A merge's answer is its own object's: indices in the answer are the batch's positions.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use yeskv_core::NodeId;
use yeskv_storage::Engine;

use crate::context::NodeContext;
use crate::error::Error;
use crate::replication::{send_merge_many, MergeItem};

/// Batches in flight to one peer before merges queue (see the module docs).
pub const INFLIGHT_MAX: usize = 2;
/// Most objects in one coalesced batch.
pub const BATCH_ITEMS_MAX: usize = 256;
/// Most record bytes in one coalesced batch (one larger object goes alone).
pub const BATCH_BYTES_MAX: usize = 1 << 20;

/// The per-peer queues of one node (see the module docs).
#[derive(Default)]
pub struct MergeQueues {
    peers: Mutex<HashMap<NodeId, Arc<PeerQueue>>>,
}

#[derive(Default)]
struct PeerQueue {
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    queued: Vec<Queued>,
    inflight: usize,
}

struct Queued {
    item: MergeItem,
    answer: oneshot::Sender<Result<(), String>>,
}

impl QueueState {
    /// Takes the next batch off the front of the queue.
    fn take_batch(&mut self) -> Vec<Queued> {
        let mut bytes = 0;
        let mut n = 0;
        for q in &self.queued {
            let len = q.item.record.len() + q.item.storage_key.len();
            if n == BATCH_ITEMS_MAX || (n > 0 && bytes + len > BATCH_BYTES_MAX) {
                break;
            }
            bytes += len;
            n += 1;
        }
        self.queued.drain(..n).collect()
    }
}

impl MergeQueues {
    fn queue(&self, node: &NodeId) -> Arc<PeerQueue> {
        self.peers.lock().entry(node.clone()).or_default().clone()
    }

    /// Merges `item` into `node`'s own copy of its key, coalesced with other merges to that
    /// node (see the module docs). `Ok` once the node answered that the object is durable.
    pub async fn merge<E: Engine>(
        &self,
        ctx: &NodeContext<E>,
        node: &NodeId,
        item: MergeItem,
    ) -> Result<(), Error> {
        let queue = self.queue(node);
        let (tx, rx) = oneshot::channel();
        let batch = {
            let mut s = queue.state.lock();
            s.queued.push(Queued { item, answer: tx });
            if s.inflight < INFLIGHT_MAX {
                s.inflight += 1;
                Some(s.take_batch())
            } else {
                None
            }
        };
        if let Some(batch) = batch {
            drive(ctx.clone(), node.clone(), queue, batch).await;
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(Error::PeerRefused {
                node: node.clone(),
                reason,
            }),
            Err(_) => Err(Error::NotServing("stopping (a merge batch was abandoned)")),
        }
    }
}

/// Gives a batch slot back when its driver ends, and starts the queue's next batch if merges
/// wait (module docs, invariants).
struct Slot<E: Engine> {
    ctx: NodeContext<E>,
    node: NodeId,
    queue: Arc<PeerQueue>,
}

impl<E: Engine> Drop for Slot<E> {
    fn drop(&mut self) {
        let next = {
            let mut s = self.queue.state.lock();
            s.inflight -= 1;
            if s.queued.is_empty() {
                None
            } else {
                s.inflight += 1;
                Some(s.take_batch())
            }
        };
        let Some(batch) = next else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let (ctx, node, queue) = (self.ctx.clone(), self.node.clone(), self.queue.clone());
                handle.spawn(drive(ctx, node, queue, batch));
            }
            // No runtime (the node is gone): dropping the batch fails its merges.
            Err(_) => self.queue.state.lock().inflight -= 1,
        }
    }
}

/// Sends one batch and answers each of its merges.
async fn drive<E: Engine>(
    ctx: NodeContext<E>,
    node: NodeId,
    queue: Arc<PeerQueue>,
    batch: Vec<Queued>,
) {
    let _slot = Slot {
        ctx: ctx.clone(),
        node: node.clone(),
        queue,
    };
    let (items, answers): (Vec<MergeItem>, Vec<_>) =
        batch.into_iter().map(|q| (q.item, q.answer)).unzip();
    crate::metrics::merge_batch(items.len());
    match send_merge_many(&ctx, &node, items).await {
        Ok(refused) => {
            let mut refused = refused.into_iter().peekable();
            for (i, answer) in answers.into_iter().enumerate() {
                let outcome = if refused.next_if_eq(&(i as u32)).is_some() {
                    Err(format!(
                        "{} (merge {i} of a batch)",
                        crate::replication::NOT_IN_WRITE_SET
                    ))
                } else {
                    Ok(())
                };
                let _ = answer.send(outcome);
            }
        }
        Err(e) => {
            let reason = e.to_string();
            for answer in answers {
                let _ = answer.send(Err(reason.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(bytes: usize) -> Queued {
        let (answer, _) = oneshot::channel();
        Queued {
            item: MergeItem {
                key_hash: 0,
                storage_key: Vec::new(),
                record: vec![0; bytes],
            },
            answer,
        }
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes_and_never_empty() {
        let mut s = QueueState {
            queued: (0..BATCH_ITEMS_MAX + 3).map(|_| queued(10)).collect(),
            inflight: 0,
        };
        assert_eq!(s.take_batch().len(), BATCH_ITEMS_MAX);
        assert_eq!(s.take_batch().len(), 3);
        assert!(s.take_batch().is_empty());
        // One object over the byte bound still goes (alone); the next ones fill a batch.
        s.queued = vec![queued(BATCH_BYTES_MAX + 1), queued(BATCH_BYTES_MAX / 2)];
        s.queued.push(queued(BATCH_BYTES_MAX / 2));
        s.queued.push(queued(1));
        assert_eq!(s.take_batch().len(), 1);
        assert_eq!(s.take_batch().len(), 2);
        assert_eq!(s.take_batch().len(), 1);
    }
}
