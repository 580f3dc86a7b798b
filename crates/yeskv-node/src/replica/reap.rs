//! Reaping: the queue of keys that will become reapable, and removing one.
//!
//! A store of an object that will become reapable (all tombstones or expiring, one tombstone at
//! least) queues `(reap_at, key)` in `meta`; the reaper (`reaper.rs`) removes the key through
//! [`Replica::reap`] only once every primary holds the same object and the grace period has
//! passed. An *expiring* object (every sibling a value with an expiry) is not queued: the
//! storage engine's compaction filter drops it on each replica by itself (`crate::expiry`), and
//! [`Replica::reap`] never removes one (it is in no tree, so no digest matches).
//!
//! [`Replica::clear_partition`] removes a whole partition's keys the same way (tree updated per
//! key), for a partition this node starts receiving anew (`crate::transfer`).

use yeskv_core::tictac::tree_digest;
use yeskv_core::Object;
use yeskv_storage::{Engine, Space, WriteBatch};

use super::Replica;
use crate::error::Error;

/// Prefix of a reap-queue entry in `meta` (then reap_at u64 BE, then the storage key).
pub const META_REAP_QUEUE: &[u8] = b"rq/";

/// A reap-queue entry: (queue key, reap_at, storage key).
pub type ReapEntry = (Vec<u8>, u64, Vec<u8>);

impl<E: Engine> Replica<E> {
    /// Reap-queue entries due at `now_ms` (up to `limit`): `(queue key, reap_at, storage key)`.
    pub fn reap_due(&self, now_ms: u64, limit: usize) -> Result<Vec<ReapEntry>, Error> {
        let start = META_REAP_QUEUE.to_vec();
        let mut end = META_REAP_QUEUE.to_vec();
        end.extend_from_slice(&now_ms.saturating_add(1).to_be_bytes());
        let rows = self.engine.scan(Space::Meta, &start, &end, limit)?;
        Ok(rows
            .into_iter()
            .filter_map(|(k, _)| {
                let rest = k.get(META_REAP_QUEUE.len()..)?;
                let at = u64::from_be_bytes(rest.get(..8)?.try_into().ok()?);
                let sk = rest.get(8..)?.to_vec();
                Some((k, at, sk))
            })
            .collect())
    }

    /// Entries in the reap queue, due or not, counted up to `limit` (a scan of the queue).
    pub fn reap_queue_len(&self, limit: usize) -> Result<usize, Error> {
        let start = META_REAP_QUEUE.to_vec();
        let mut end = META_REAP_QUEUE.to_vec();
        end.extend_from_slice(&[0xff; 9]);
        Ok(self.engine.scan(Space::Meta, &start, &end, limit)?.len())
    }

    /// Removes reap-queue entries.
    pub fn reap_dequeue(&self, keys: Vec<Vec<u8>>) -> Result<(), Error> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        for k in keys {
            b.delete(Space::Meta, k);
        }
        drop(self.commit(b)?);
        Ok(())
    }

    /// Moves reap-queue entries to a later instant (a primary was down or behind).
    pub fn reap_requeue(&self, entries: Vec<(Vec<u8>, Vec<u8>)>, at_ms: u64) -> Result<(), Error> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut b = WriteBatch::new();
        for (old, storage_key) in entries {
            b.delete(Space::Meta, old);
            b.put(Space::Meta, reap_queue_key(at_ms, &storage_key), Vec::new());
        }
        drop(self.commit(b)?);
        Ok(())
    }

    /// Whether the object is reapable at `now_ms` (every sibling a tombstone or expired, past
    /// the grace period).
    pub fn reapable(&self, obj: &Object, now_ms: u64) -> bool {
        !obj.is_empty()
            && obj
                .reap_at_ms(self.reap_grace_ms)
                .is_some_and(|t| t <= now_ms)
    }

    /// Physically removes the key if its object still has digest `expected` and is reapable.
    /// Returns whether it was removed.
    pub async fn reap(
        &self,
        key_hash: u64,
        storage_key: &[u8],
        expected: u64,
        now_ms: u64,
    ) -> Result<bool, Error> {
        let durable = {
            let _guard = self.stripe(key_hash).lock();
            let obj = self.load(storage_key)?;
            let digest = tree_digest(storage_key, &obj);
            if digest != Some(expected) || !self.reapable(&obj, now_ms) {
                return Ok(false);
            }
            tracing::trace!(node = %self.actor.node, key = %String::from_utf8_lossy(storage_key), ?obj, "reap");
            let mut b = WriteBatch::new();
            b.delete(Space::Data, storage_key.to_vec());
            self.commit_tracked(b, storage_key, digest, None)?
        };
        durable.wait().await?;
        metrics::counter!(crate::metrics::TOMBSTONES_REAPED).increment(1);
        Ok(true)
    }
}

pub(super) fn reap_queue_key(reap_at: u64, storage_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(META_REAP_QUEUE.len() + 8 + storage_key.len());
    k.extend_from_slice(META_REAP_QUEUE);
    k.extend_from_slice(&reap_at.to_be_bytes());
    k.extend_from_slice(storage_key);
    k
}
